//! What the sensor is told to do, in three kinds:
//! - `flags`: the command line, validated into a [`Config`] before anything is attached;
//! - `settings`: the recording settings that change while it runs (`/api/v1/config`, the
//!   targeting file's `pcapdump`, flags at start), with one precedence;
//! - `targeting`: the targeting file (what to record, Kubeshark's keys), followed while it
//!   changes.
pub mod flags;
pub mod settings;
pub mod targeting;

pub use flags::{Args, Config, ConfigError, Kubernetes};
