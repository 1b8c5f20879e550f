//! Flushes on demand: "until now" means until the request.
//!
//! Rules:
//! - A reader whose window reaches into the present asks ([`FlushGate::flush`]) and waits,
//!   at most [`FLUSH_WAIT`], until the writer has written (and published in the store's
//!   view) every packet it had received when the request arrived.
//! - The writer serves a request one pass of its loop after it saw it: that pass drains
//!   what the kernel had delivered by then, so a packet captured before the request is in
//!   the file when the reader goes on. Requests seen together are served by one write.
//! - A writer that finishes answers every request from then on at once: what it wrote is
//!   all there is.
//! - A write that fails still answers (the reader goes on with what is on disk; the store's
//!   state says writes fail); a writer that does not answer in time (stopping, stuck on a
//!   disk) leaves the reader with what is on disk, and the reader says so.
//! - Orderings: the request counter is `Relaxed`, because the answer travels through the
//!   mutex: the writer publishes the view, then raises `served` under the lock; the reader
//!   sees `served` under the same lock, then reads the view.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Condvar, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

/// A window ending less than this before the request may want packets still in the
/// writer's buffer (written at least once a second): it asks for a flush.
pub const FLUSH_REACH: Duration = Duration::from_secs(2);
/// The longest a reader waits for the writer's flush.
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Requests to flush, shared by the readers (the API) and the writer.
#[derive(Debug, Default)]
pub struct FlushGate {
    /// Requests made so far.
    asked: AtomicU64,
    /// Requests served so far.
    served: Mutex<u64>,
    answered: Condvar,
}

impl FlushGate {
    /// Asks the writer to write what it has received, and waits up to `wait`; whether it
    /// did in time.
    pub fn flush(&self, wait: Duration) -> bool {
        let ticket = self.asked.fetch_add(1, Relaxed) + 1;
        let deadline = Instant::now() + wait;
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        while *served < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            served = self
                .answered
                .wait_timeout(served, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// A gate with no writer behind it (a store read as its manifest says, or a writer
    /// that finished): every request is answered at once, since nothing more will be
    /// written.
    #[must_use]
    pub fn without_writer() -> Self {
        let gate = Self::default();
        gate.writer_stopped();
        gate
    }

    /// The writer's side: it writes nothing more; every request, now and later, is
    /// answered at once.
    pub fn writer_stopped(&self) {
        self.served(u64::MAX);
    }

    /// The writer's side: the requests made so far (to serve after its next pass).
    #[must_use]
    pub fn asked(&self) -> u64 {
        self.asked.load(Relaxed)
    }

    /// The writer's side: requests up to `ticket` are served (the view is published).
    pub fn served(&self, ticket: u64) {
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        if ticket > *served {
            *served = ticket;
            self.answered.notify_all();
        }
    }

    /// The writer's side: whether a request waits that `ticket` does not cover.
    #[must_use]
    pub fn waiting_beyond(&self, ticket: u64) -> bool {
        self.asked() > ticket
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_request_is_answered_when_served_and_not_before() {
        let gate = Arc::new(FlushGate::default());
        assert!(!gate.flush(Duration::from_millis(50)), "nobody serves it");
        let writer = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let mut served = 1; // the request that timed out
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if gate.waiting_beyond(served) {
                        served = gate.asked();
                        gate.served(served);
                        return served;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                served
            })
        };
        assert!(gate.flush(Duration::from_secs(10)));
        assert_eq!(writer.join().unwrap(), 2);
    }
}
