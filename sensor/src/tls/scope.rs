//! Which TLS secrets reach the disk: only those of sessions whose ClientHello a captured
//! interface carried (the writer tells [`Scope::saw_hello`] of every ClientHello it
//! writes).
//!
//! Rules: a ClientHello's random is remembered for [`SESSION_TIME`] (at most
//! [`MAX_SESSIONS`], the oldest forgotten first). A secret whose random was seen is
//! written; one whose random was not seen waits [`PENDING_TIME`] (its ClientHello may still
//! be on its way through the ring) and is then dropped and counted: the session was not
//! recorded, so its secret has no business on the disk. A line is written once, though
//! both ends of a session report it (written lines are remembered for [`SESSION_TIME`],
//! at most [`MAX_KEPT_BYTES`]).
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use podcap_format::pcapng::secrets::{key_log_line, ClientRandom};

/// One secret of one session, as a key log line names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub label: String,
    pub random: ClientRandom,
    pub secret: Vec<u8>,
}

/// The writer's end of the secrets' own channel from the collector (`tls/mod.rs`), and
/// where it counts what became of them: the collector and the writer share only this
/// module's types, neither imports the other.
#[derive(Debug)]
pub struct SecretsInbox {
    pub incoming: mpsc::Receiver<Secret>,
    pub counts: Arc<SharedCounts>,
}

/// How long a session's ClientHello and secrets are kept in mind.
pub const SESSION_TIME: Duration = Duration::from_mins(10);
/// How long after a ClientHello its session's secrets usually arrive (a round trip or
/// two): the writer keeps the packets buffered that long, so the secrets go in before them.
pub const SECRETS_FOLLOW_WITHIN: Duration = Duration::from_millis(200);
/// How long a secret waits for its ClientHello.
pub const PENDING_TIME: Duration = Duration::from_secs(5);
/// ClientHellos remembered at most.
pub const MAX_SESSIONS: usize = 1 << 16;
/// Bytes of key log lines remembered at most, to write each once (the oldest go first).
pub const MAX_KEPT_BYTES: usize = 1 << 20;

/// What became of the secrets offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecretCounts {
    /// Written into the store.
    pub written: u64,
    /// Of those, written after packets of their session had left the buffer (a reader
    /// that decrypts in one pass, such as `tshark` without `-2`, misses that session).
    pub late: u64,
    /// Dropped: no captured ClientHello has their random.
    pub not_recorded: u64,
}

/// Secrets the collector may have sent that the writer has not taken yet (~10 MiB).
pub const MAX_IN_FLIGHT: u64 = 65_536;

/// [`SecretCounts`] where the API reads them (statistics: `Relaxed`), and the secrets on
/// their way from the collector to the writer.
#[derive(Debug, Default)]
pub struct SharedCounts {
    /// Sent by the collector, not yet taken by the writer: the collector sends no more than
    /// [`MAX_IN_FLIGHT`] (`Relaxed`: a bound; the secrets travel through the channel).
    pub in_flight: AtomicU64,
    written: AtomicU64,
    late: AtomicU64,
    not_recorded: AtomicU64,
}

impl SharedCounts {
    pub fn set(&self, counts: SecretCounts) {
        self.written.store(counts.written, Relaxed);
        self.late.store(counts.late, Relaxed);
        self.not_recorded.store(counts.not_recorded, Relaxed);
    }

    #[must_use]
    pub fn get(&self) -> SecretCounts {
        SecretCounts {
            written: self.written.load(Relaxed),
            late: self.late.load(Relaxed),
            not_recorded: self.not_recorded.load(Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub struct Scope {
    seen: HashMap<ClientRandom, Instant>,
    seen_order: VecDeque<(Instant, ClientRandom)>,
    /// Secrets whose ClientHello was seen, to write at the next [`Scope::ready`].
    ready: Vec<Secret>,
    /// Secrets waiting for their ClientHello, by random, and in arrival order for expiry.
    pending: HashMap<ClientRandom, Vec<(Instant, Secret)>>,
    pending_order: VecDeque<(Instant, ClientRandom)>,
    /// Key log lines written in the last [`SESSION_TIME`], with when (at most
    /// [`MAX_KEPT_BYTES`]): what is not written twice.
    kept: VecDeque<(Instant, String)>,
    /// The same lines, to write each once (both ends of a session report its secrets).
    kept_lines: HashSet<String>,
    kept_bytes: usize,
    pub counts: SecretCounts,
}

impl Scope {
    /// A ClientHello with `random` was captured.
    pub fn saw_hello(&mut self, random: ClientRandom, now: Instant) {
        if self.seen.insert(random, now).is_none() {
            self.seen_order.push_back((now, random));
        }
        if let Some(waiting) = self.pending.remove(&random) {
            self.ready.extend(waiting.into_iter().map(|(_, secret)| secret));
        }
        while self.seen_order.len() > MAX_SESSIONS {
            if let Some((_, old)) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// A secret a probe read; see [`Scope::ready`].
    pub fn offer(&mut self, secret: Secret, now: Instant) {
        if self.seen.contains_key(&secret.random) {
            self.ready.push(secret);
        } else {
            self.pending_order.push_back((now, secret.random));
            self.pending.entry(secret.random).or_default().push((now, secret));
        }
    }

    /// The key log lines to write now: the secrets whose ClientHello was seen, with when
    /// the earliest of those ClientHellos was (the secrets belong before it). Forgets what
    /// is older than its time, counting the secrets dropped. Costs what changed, not what
    /// waits.
    pub fn ready(&mut self, now: Instant) -> (String, Instant) {
        let mut lines = String::new();
        let mut earliest = now;
        for secret in std::mem::take(&mut self.ready) {
            let hello_at = self.seen.get(&secret.random).copied().unwrap_or(now);
            let line = key_log_line(&secret.label, &secret.random, &secret.secret);
            if self.kept_lines.insert(line.clone()) {
                lines.push_str(&line);
                self.kept_bytes += line.len();
                self.kept.push_back((now, line));
                self.counts.written += 1;
                earliest = earliest.min(hello_at);
            }
        }
        while let Some(&(since, random)) = self.pending_order.front() {
            if now.duration_since(since) < PENDING_TIME {
                break;
            }
            self.pending_order.pop_front();
            if let Some(waiting) = self.pending.get_mut(&random) {
                let before = waiting.len();
                waiting.retain(|(at, _)| now.duration_since(*at) < PENDING_TIME);
                self.counts.not_recorded += (before - waiting.len()) as u64;
                if waiting.is_empty() {
                    self.pending.remove(&random);
                }
            }
        }
        while self
            .seen_order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= SESSION_TIME)
        {
            if let Some((_, old)) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        while self.kept.front().is_some_and(|(at, _)| {
            now.duration_since(*at) >= SESSION_TIME || self.kept_bytes > MAX_KEPT_BYTES
        }) {
            if let Some((_, line)) = self.kept.pop_front() {
                self.kept_bytes -= line.len();
                self.kept_lines.remove(&line);
            }
        }
        (lines, earliest)
    }

    /// At the end: the secrets still waiting will never meet their ClientHello.
    pub fn give_up_waiting(&mut self) {
        let waiting: usize = self.pending.values().map(Vec::len).sum();
        self.counts.not_recorded += waiting as u64;
        self.pending.clear();
        self.pending_order.clear();
    }

    /// Counts secrets written after their session's first packets.
    pub fn count_late(&mut self, lines: usize) {
        self.counts.late += lines as u64;
    }

    /// Whether any secret is to be written or waits for its ClientHello.
    #[must_use]
    pub fn waiting(&self) -> bool {
        !self.ready.is_empty() || !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(random: u8) -> Secret {
        Secret {
            label: "CLIENT_TRAFFIC_SECRET_0".into(),
            random: [random; 32],
            secret: vec![random; 32],
        }
    }

    #[test]
    fn only_secrets_of_recorded_sessions_are_written() {
        let start = Instant::now();
        let mut scope = Scope::default();
        scope.saw_hello([1; 32], start);
        scope.offer(secret(1), start);
        // The other end of the session reports the same secret: written once.
        scope.offer(secret(1), start);
        scope.offer(secret(2), start);
        let (lines, hello_at) = scope.ready(start);
        assert_eq!(lines.lines().count(), 1, "{lines}");
        assert_eq!(hello_at, start);
        assert!(lines.contains(&"01".repeat(32)));
        // Session 2's hello comes late, but within the wait.
        scope.saw_hello([2; 32], start + Duration::from_secs(1));
        assert_eq!(scope.ready(start + Duration::from_secs(1)).0.lines().count(), 1);
        // Session 3's never comes.
        scope.offer(secret(3), start);
        assert!(scope.ready(start + Duration::from_secs(2)).0.is_empty());
        assert!(scope.waiting());
        assert!(scope.ready(start + PENDING_TIME).0.is_empty());
        assert!(!scope.waiting());
        assert_eq!(
            scope.counts,
            SecretCounts {
                written: 2,
                late: 0,
                not_recorded: 1
            }
        );
        // Ten minutes on, nothing is kept and the hellos are forgotten.
        let later = start + SESSION_TIME + Duration::from_secs(2);
        assert!(scope.ready(later).0.is_empty());
        scope.offer(secret(1), later);
        assert!(scope.ready(later + PENDING_TIME).0.is_empty());
        assert_eq!(scope.counts.not_recorded, 2);
    }
}
