//! Stopping: one [`Shutdown`] handle that every stage polls.
//!
//! Rules:
//! - A stop is asked for by SIGTERM or SIGINT (the handlers in `sys` set a flag) or by
//!   [`Shutdown::request`] (the run ending, an embedder, a test); every clone of a handle
//!   sees both, and nothing else stops a stage.
//! - A stop is never undone.
//! - Stages poll [`Shutdown::requested`] at least every 100 ms, then finish their own work
//!   (the writer closes the active segment, the API drains its connections within its
//!   grace); what they hand each other goes through their own channels.
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::sys;

/// Tells every stage when to stop; clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every stage holding a clone of this handle to stop.
    pub fn request(&self) {
        // Relaxed: a lone flag polled on its own; the stages synchronise through their own
        // channels when they stop, so nothing else hangs on this store.
        self.requested.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for, through this handle or by a signal.
    #[must_use]
    pub fn requested(&self) -> bool {
        // Relaxed: see `request`.
        self.requested.load(Ordering::Relaxed) || sys::stop_requested()
    }
}

#[cfg(test)]
mod tests {
    use super::Shutdown;

    #[test]
    fn every_clone_sees_a_request_and_it_is_never_undone() {
        let shutdown = Shutdown::new();
        let stage = shutdown.clone();
        assert!(!stage.requested());
        shutdown.request();
        assert!(stage.requested() && shutdown.requested());
        stage.request();
        assert!(shutdown.requested());
    }
}
