//! The sensors a command reached, and the one way to ask them all: [`for_each_sensor`]
//! (in turn, a failure named and the others still asked) and [`run_bounded`] (at most
//! `--parallel` at once, results in the sensors' order).
use std::{process::ExitCode, thread};

use anyhow::Result;

use crate::{discovery::Cluster, source::Sensor};

/// The sensors a command talks to, and what keeps the way to them open.
pub(crate) struct Reached {
    pub(crate) sensors: Vec<Sensor>,
    /// Sensors that exist but cannot be asked, with the reason.
    pub(crate) unreachable: Vec<(String, String)>,
    pub(crate) token: Option<String>,
    /// Sensors asked at once (`--parallel`).
    pub(crate) parallel: usize,
    /// Holds the port-forwards open while the command runs.
    pub(crate) _cluster: Option<Cluster>,
}

impl Reached {
    /// Names the unreachable sensors; true if there were any.
    pub(crate) fn report_unreachable(&self) -> bool {
        for (label, reason) in &self.unreachable {
            eprintln!("podcap: sensor {label} failed: {reason}");
        }
        !self.unreachable.is_empty()
    }
}

/// Runs `ask` for every sensor in turn; a sensor that fails is named with its reason and
/// the others still asked; the exit status says whether any failed.
pub(crate) fn for_each_sensor(reached: &Reached, mut ask: impl FnMut(&Sensor) -> Result<()>) -> ExitCode {
    let mut failed = reached.report_unreachable();
    for sensor in &reached.sensors {
        if let Err(e) = ask(sensor) {
            eprintln!("podcap: {}: {e:#}", sensor.label);
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `work(0..count)` on at most `parallel` threads; results in index order.
pub(crate) fn run_bounded<T: Send>(
    count: usize,
    parallel: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    use std::sync::{atomic::AtomicUsize, Mutex};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..count).map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..parallel.min(count) {
            scope.spawn(|| loop {
                // Relaxed: the counter only hands out indices; results are published by the
                // mutex and the scope's join.
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let result = work(n);
                if let Ok(mut slots) = results.lock() {
                    slots[n] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("the download did not run"))))
        .collect()
}
