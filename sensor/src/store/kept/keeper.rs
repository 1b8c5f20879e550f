//! The keeper thread: runs the recording jobs every [`POLL`] (first bringing them in line
//! with the targeting document's, when a targeting file is followed) and expires
//! snapshots every [`SNAPSHOT_EXPIRY_INTERVAL`] (listing them does too).
//!
//! Rules: the capture path never waits for it; it stops within 100 ms of a stop request;
//! a failure of one round is logged and the next round tries again.
use std::{
    io,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use super::{
    recordings::{JobDoc, Recordings, POLL},
    snapshots::Snapshots,
};
use crate::{shutdown::Shutdown, store::SharedView, sys};

/// How often expired snapshots are looked for.
pub const SNAPSHOT_EXPIRY_INTERVAL: Duration = Duration::from_secs(10);

/// The jobs the targeting document wants, asked once per round.
pub type WantedJobs = Box<dyn Fn() -> Vec<JobDoc> + Send>;

/// Starts the keeper of `snapshots` and `recordings`, which copy from the store through
/// `view`. With `wanted_jobs` (a targeting file is followed) the document's jobs are
/// synced before each round; without it, a restart deletes none.
pub fn spawn(
    snapshots: Arc<Snapshots>,
    recordings: Arc<Recordings>,
    view: SharedView,
    wanted_jobs: Option<WantedJobs>,
    stop: Shutdown,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("podcap-keeper".into())
        .spawn(move || {
            let mut expired_at = Instant::now();
            let mut polled_at = Instant::now();
            while !stop.requested() {
                thread::sleep(Duration::from_millis(100));
                if polled_at.elapsed() >= POLL {
                    polled_at = Instant::now();
                    if let Some(wanted_jobs) = &wanted_jobs {
                        recordings.sync_targeting(&wanted_jobs(), sys::realtime_ns());
                    }
                    recordings.poll(&view, sys::realtime_ns());
                }
                if expired_at.elapsed() >= SNAPSHOT_EXPIRY_INTERVAL {
                    expired_at = Instant::now();
                    if let Err(e) = snapshots.expire(sys::realtime_ns()) {
                        log::warn!("snapshots: expiring: {e}");
                    }
                }
            }
        })
}
