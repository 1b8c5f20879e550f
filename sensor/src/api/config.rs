//! `GET/PATCH /api/v1/config`: the recording settings (rules in `crate::config::settings`), and
//! the dry run that says what a retention change would retire.
use axum::{extract::State, Json};
use podcap_api::settings::{ConfigQuery, Settings, SettingsChange};

use super::{slices::read_view, wire, ApiState, AppError, Params};
use crate::{
    config::settings::{Retired, SettingsError},
    store::{index::SegmentRecord, retention},
    sys, units,
};

pub(super) async fn get_config(State(state): State<ApiState>) -> Result<Json<Settings>, AppError> {
    Ok(Json(wire::settings(state.settings.view())))
}

pub(super) async fn patch_config(
    State(state): State<ApiState>,
    Params(query): Params<ConfigQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Settings>, AppError> {
    let change: SettingsChange = super::json_body(&body, "config")?;
    let change = wire::settings_change(change);
    let settings = &state.settings;
    let invalid = |e: SettingsError| match e {
        SettingsError::Persist { .. } => {
            AppError::Internal(format!("{e}: {:?}", std::error::Error::source(&e)))
        }
        other => AppError::BadRequest(other.to_string()),
    };
    if query.dry_run {
        let (max_size, max_time) = settings.check(&change).map_err(invalid)?;
        let mut view = settings.view();
        view.enabled = change.enabled.unwrap_or(view.enabled);
        view.max_size = change.max_size.clone().unwrap_or(view.max_size);
        view.max_time = change.max_time.clone().unwrap_or(view.max_time);
        view.dry_run = Some(true);
        view.would_retire = Some(would_retire(&state, max_size, max_time));
        return Ok(Json(wire::settings(view)));
    }
    let view = settings.apply_api(&change).map_err(invalid)?;
    log::info!(
        "settings changed through the API: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(Json(wire::settings(view)))
}

/// What retention would retire now under `max_size` and `max_time`.
fn would_retire(state: &ApiState, max_size: u64, max_time: std::time::Duration) -> Retired {
    let horizon = sys::realtime_ns().saturating_sub(units::duration_ns(max_time));
    let retired = |records: &[SegmentRecord], active_bytes: u64| {
        retention::to_retire(records, active_bytes, max_size, horizon, |r| {
            state.archive.as_ref().is_some_and(|a| a.ledger.holds(r.seq))
        })
        .iter()
        .fold(Retired::default(), |sum, r| Retired {
            segments: sum.segments + 1,
            bytes: sum.bytes.saturating_add(r.bytes),
            packets: sum.packets.saturating_add(r.packets),
        })
    };
    let view = read_view(state);
    let active = view.unfinished().map(|a| a.bytes).sum();
    retired(view.index.records(), active)
}
