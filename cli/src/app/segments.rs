//! `podcap segments`: what each sensor's store holds.
use std::process::ExitCode;

use anyhow::Result;
use podcap_format::units;

use super::{for_each_sensor, reach, Connection};
use crate::{discovery::Role, output::Output};

pub(super) fn segments_command(connection: &Connection, output: Output) -> Result<ExitCode> {
    let reached = reach(connection, Role::Read)?;
    let token = &reached.token;
    let mut nodes = Vec::new();
    let rows = std::sync::Mutex::new(Vec::new());
    let code = for_each_sensor(&reached, |sensor| {
        let list = sensor.get_json("/api/v1/segments", token.as_deref())?;
        let list = list.as_array().cloned().unwrap_or_default();
        let bytes: u64 = list.iter().filter_map(|s| s["bytes"].as_u64()).sum();
        let oldest = list.iter().filter_map(|s| s["first_ns"].as_u64()).min();
        let newest = list.iter().filter_map(|s| s["last_ns"].as_u64()).max();
        if output.structured() {
            let time = |ns: Option<u64>| ns.map(units::format_rfc3339_ns);
            let segments: Vec<serde_json::Value> = list
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s["name"],
                        "first": time(s["first_ns"].as_u64()),
                        "last": time(s["last_ns"].as_u64()),
                        "packets": s["packets"],
                        "bytes": s["bytes"],
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
                        oldest.map_or("-".into(), units::format_utc_compact),
                        newest.map_or("-".into(), units::format_utc_compact),
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
            crate::table::render(&["NODE", "SEGMENTS", "SIZE", "OLDEST", "NEWEST"], &rows)
        );
    }
    Ok(code)
}
