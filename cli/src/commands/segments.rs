//! `podcap segments`: what each sensor's store holds. Times are RFC 3339, as every list of
//! the CLI prints them; `AGE` is how far back the store reaches (its oldest packet), as
//! kubectl prints ages.
use std::process::ExitCode;

use anyhow::Result;
use podcap_api::Segment;
use podcap_format::units;

use super::{reach, Connection};
use crate::reached::for_each_sensor;
use crate::{discovery::Role, output::Output};

pub(super) fn segments_command(connection: &Connection, output: Output) -> Result<ExitCode> {
    let reached = reach(connection, Role::Read)?;
    let token = &reached.token;
    let mut nodes = Vec::new();
    let rows = std::sync::Mutex::new(Vec::new());
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let code = for_each_sensor(&reached, |sensor| {
        let list: Vec<Segment> = sensor.get("/api/v1/segments", token.as_deref())?;
        let bytes: u64 = list.iter().map(|s| s.bytes).fold(0, u64::saturating_add);
        let oldest = list.iter().map(|s| s.first_ns).min();
        let newest = list.iter().map(|s| s.last_ns).max();
        if output.structured() {
            let time = |ns: Option<u64>| ns.map(units::format_rfc3339_ns);
            let segments: Vec<serde_json::Value> = list
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "first": time(Some(s.first_ns)),
                        "last": time(Some(s.last_ns)),
                        "packets": s.packets,
                        "bytes": s.bytes,
                    })
                })
                .collect();
            nodes.push(serde_json::json!({
                "node": sensor.label, "segments": segments, "bytes": bytes,
                "oldest": time(oldest), "newest": time(newest),
            }));
        } else {
            rows.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(crate::table::Row {
                    cells: vec![
                        sensor.label.clone(),
                        list.len().to_string(),
                        units::format_size(bytes),
                        oldest.map_or("-".into(), units::format_rfc3339),
                        newest.map_or("-".into(), units::format_rfc3339),
                        oldest.map_or("-".into(), |then| crate::age::format_age(now_ns, then)),
                    ],
                    notes: Vec::new(),
                });
        }
        Ok(())
    });
    if output.structured() {
        crate::output::print(&serde_json::json!({ "nodes": nodes }), output)?;
    } else {
        let rows = rows
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        print!(
            "{}",
            crate::table::render(&["NODE", "SEGMENTS", "SIZE", "OLDEST", "NEWEST", "AGE"], &rows)
        );
    }
    Ok(code)
}
