//! The TLS secrets a slice delivers: exactly those of the sessions whose ClientHello it
//! delivers, placed as the segment placed them.
//!
//! Rules:
//! - Only a slice asked for them carries secrets (the API asks for the admin token); every
//!   other slice leaves the segments' Decryption Secrets Blocks out, as before.
//! - A Decryption Secrets Block read from a segment is split into key log lines. A line
//!   waits, indexed by its client random, until the slice delivers the ClientHello with that
//!   random; it then goes out in a DSB just before that packet, so a reader that decrypts in
//!   one pass (`tshark -r`) has the keys first, as it had in the segment (the writer puts a
//!   session's secrets before its packets). A line read after its ClientHello went out (the
//!   writer wrote it late) goes out when it is read, after it, as in the segment.
//! - A line whose ClientHello the slice does not deliver (another window, interface, pod or
//!   filter) never goes out.
//! - Bounded: at most [`MAX_WAITING_BYTES`] of lines wait and [`MAX_DELIVERED`] delivered
//!   randoms are remembered; a line beyond either bound is left out and counted
//!   ([`SliceSecrets::left_out`]), never written for a session it may not belong to.
use std::{
    collections::{HashMap, HashSet},
    io::Write,
};

use podcap_format::pcapng::{
    read::{Block, Section},
    secrets::{key_log_lines, parse_decryption_secrets, ClientRandom, SECRETS_TLS_KEY_LOG},
};

use super::{Run, SliceError, Slicer};
use crate::store::index::SegmentRecord;

/// Bytes of key log lines waiting for their ClientHello.
pub(super) const MAX_WAITING_BYTES: usize = 16 << 20;
/// ClientHellos delivered whose secrets were not read yet.
pub(super) const MAX_DELIVERED: usize = 1 << 20;

/// Key log lines to write, and how many lines they are (the slicer counts them in its
/// statistics).
pub(super) type Lines = (Vec<u8>, u64);

/// The secrets state of one slice.
#[derive(Debug, Default)]
pub(super) struct SliceSecrets {
    /// Per client random: its lines, and how many.
    waiting: HashMap<ClientRandom, (Vec<u8>, u64)>,
    waiting_bytes: usize,
    delivered: HashSet<ClientRandom>,
    /// Lines left out because a bound was reached.
    pub(super) left_out: u64,
}

impl SliceSecrets {
    /// Takes the key log of a segment's DSB; returns the lines to write now (those of
    /// sessions whose ClientHello already went out), the rest wait.
    pub(super) fn read_key_log(&mut self, key_log: &[u8]) -> Lines {
        let (mut now, mut now_count) = (Vec::new(), 0);
        for (random, line) in key_log_lines(key_log) {
            let newline_missing = !line.ends_with(b"\n");
            let bytes = line.len() + usize::from(newline_missing);
            let target = if self.delivered.contains(&random) {
                now_count += 1;
                &mut now
            } else if self.waiting_bytes.saturating_add(bytes) <= MAX_WAITING_BYTES {
                self.waiting_bytes += bytes;
                let (lines, count) = self.waiting.entry(random).or_default();
                *count += 1;
                lines
            } else {
                self.left_out += 1;
                continue;
            };
            target.extend_from_slice(line);
            if newline_missing {
                target.push(b'\n');
            }
        }
        (now, now_count)
    }

    /// Whether a ClientHello with `random` has lines waiting to go out before it.
    pub(super) fn waiting_for(&self, random: &ClientRandom) -> bool {
        self.waiting.contains_key(random)
    }

    /// The slice delivers the ClientHello with `random`: the lines to write just before it
    /// (empty if none waited); later lines of its session go out as they are read.
    pub(super) fn deliver(&mut self, random: ClientRandom) -> Lines {
        if self.delivered.len() < MAX_DELIVERED {
            self.delivered.insert(random);
        }
        let lines = self.waiting.remove(&random).unwrap_or_default();
        self.waiting_bytes = self.waiting_bytes.saturating_sub(lines.0.len());
        lines
    }
}

impl Slicer {
    /// A segment's Decryption Secrets Block: its lines wait for their ClientHello, or go
    /// out now if it went out already. One that cannot be read is damage, noted.
    pub(super) fn read_secrets(&mut self, block: &Block<'_>, section: &Section, record: &SegmentRecord) {
        let Some(secrets) = &mut self.secrets else {
            return;
        };
        match parse_decryption_secrets(block, section) {
            Ok(Some(dsb)) if dsb.secrets_type == SECRETS_TLS_KEY_LOG => {
                let (now, count) = secrets.read_key_log(dsb.data);
                self.stats.secrets_written += count;
                if !now.is_empty() {
                    self.blocks.decryption_secrets(SECRETS_TLS_KEY_LOG, &now);
                }
            }
            // Secrets of another kind: podcap writes none, and passes none on.
            Ok(_) => {}
            Err(e) => {
                let reason = format!("decryption secrets: {}", super::reason_of(&e));
                self.note_damage(record, block.offset, Some(block.raw.len() as u64), reason);
            }
        }
    }

    /// The ClientHello with `random` goes out: the secrets waiting for it go out just
    /// before it (after everything gathered so far).
    pub(super) fn deliver_secrets(
        &mut self,
        random: ClientRandom,
        chunk: &[u8],
        run: &mut Run,
        out: &mut impl Write,
    ) -> Result<(), SliceError> {
        let Some(secrets) = &mut self.secrets else {
            return Ok(());
        };
        let (key_log, count) = secrets.deliver(random);
        self.stats.secrets_written += count;
        if !key_log.is_empty() {
            self.end_run(chunk, run, out)?;
            self.blocks.decryption_secrets(SECRETS_TLS_KEY_LOG, &key_log);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use podcap_format::pcapng::secrets::key_log_line;

    use super::*;

    #[test]
    fn lines_wait_for_their_hello_and_only_theirs_go_out() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut secrets = SliceSecrets::default();
        let log = format!(
            "{}{}{}",
            key_log_line("CLIENT_TRAFFIC_SECRET_0", &a, b"a0"),
            key_log_line("SERVER_TRAFFIC_SECRET_0", &a, b"a1"),
            key_log_line("CLIENT_TRAFFIC_SECRET_0", &b, b"b0"),
        );
        assert_eq!(
            secrets.read_key_log(log.as_bytes()),
            (Vec::new(), 0),
            "nothing delivered yet"
        );
        assert!(secrets.waiting_for(&a) && secrets.waiting_for(&b));
        let (out, count) = secrets.deliver(a);
        assert_eq!(count, 2);
        assert_eq!(
            out,
            format!(
                "{}{}",
                key_log_line("CLIENT_TRAFFIC_SECRET_0", &a, b"a0"),
                key_log_line("SERVER_TRAFFIC_SECRET_0", &a, b"a1")
            )
            .into_bytes()
        );
        assert!(!secrets.waiting_for(&a), "each line goes out once");
        assert_eq!(secrets.deliver(a), (Vec::new(), 0), "b's line never went out");
    }

    #[test]
    fn a_line_read_after_its_hello_goes_out_at_once() {
        let a = [7u8; 32];
        let mut secrets = SliceSecrets::default();
        assert_eq!(secrets.deliver(a), (Vec::new(), 0));
        let line = key_log_line("CLIENT_RANDOM", &a, b"master");
        // Without its newline, as the last line of a block may be.
        let out = secrets.read_key_log(line.trim_end().as_bytes());
        assert_eq!(out, (line.as_bytes().to_vec(), 1));
        let other = key_log_line("CLIENT_RANDOM", &[8u8; 32], b"x");
        assert_eq!(
            secrets.read_key_log(other.as_bytes()),
            (Vec::new(), 0),
            "not delivered: waits"
        );
    }
}
