//! The body of every error the API answers (4xx and 5xx): `{"error": "…"}`, a message for
//! people that names what was wrong; a 5xx says no more than that the sensor's log has it.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: String,
}
