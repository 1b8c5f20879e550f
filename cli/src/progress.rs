//! Download progress: bytes and packets per sensor, drawn on a terminal only.
//!
//! Rules: downloads report through [`Tally`] (atomics, relaxed: they are display counters
//! that nothing else reads); [`Board`] redraws one line per sensor every 200 ms on stderr
//! through indicatif when it is a terminal that can move its cursor, and draws nothing
//! otherwise (a pipe, a file, `TERM=dumb`); a failed download says so. Packets are counted by walking the
//! pcapng block headers as the bytes pass, without parsing the packets.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use podcap_format::units::format_size;

/// One sensor's counters.
#[derive(Debug, Default)]
pub struct Tally {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
    pub done: AtomicBool,
    /// The download failed (shown as such, not as still running).
    pub failed: AtomicBool,
    /// The sensor left the TLS secrets asked for out: the token is not its admin token.
    pub secrets_withheld: AtomicBool,
    /// The sensor's answer carries TLS secrets (it said `included`).
    pub secrets_included: AtomicBool,
}

/// Counts Enhanced Packet Blocks in a pcapng byte stream fed in arbitrary pieces.
#[derive(Debug, Default)]
pub struct BlockCounter {
    header: [u8; 8],
    have: usize,
    /// Bytes of the current block's body still to pass.
    skip: u64,
    pub packets: u64,
}

impl BlockCounter {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (8 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 8 {
                self.have = 0;
                let block_type =
                    u32::from_le_bytes([self.header[0], self.header[1], self.header[2], self.header[3]]);
                let total =
                    u32::from_le_bytes([self.header[4], self.header[5], self.header[6], self.header[7]]);
                if block_type == podcap_format::pcapng::BLOCK_EPB {
                    self.packets += 1;
                }
                // Sensors write little-endian sections; a bad length stops the counting,
                // not the download (the merge reports real damage).
                self.skip = u64::from(total)
                    .saturating_sub(8)
                    .max(if total < 12 { u64::MAX } else { 0 });
            }
        }
    }
}

/// The progress display of a set of downloads.
pub struct Board {
    stop: Arc<AtomicBool>,
    painter: Option<thread::JoinHandle<()>>,
}

impl Board {
    /// Starts drawing `labels`' tallies if `draw` (stderr is a terminal) and the terminal
    /// can move its cursor (`TERM` is not `dumb`).
    #[must_use]
    pub fn start(labels: Vec<String>, tallies: Vec<Arc<Tally>>, draw: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let capable = std::env::var("TERM").map_or(true, |term| term != "dumb");
        let painter = (draw && capable).then(|| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || paint(&labels, &tallies, &stop))
        });
        Self { stop, painter }
    }

    /// Draws the final state and stops.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.painter.take() {
            let _ = p.join();
        }
    }
}

/// One line per sensor through indicatif (lines cut to the terminal's width, redrawn in
/// place), every 200 ms until `stop`, then the final state.
fn paint(labels: &[String], tallies: &[Arc<Tally>], stop: &AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<ProgressBar> = labels
        .iter()
        .map(|label| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{label}:"));
            bar
        })
        .collect();
    loop {
        let last = stop.load(Ordering::Relaxed);
        for (bar, tally) in bars.iter().zip(tallies) {
            let state = if tally.failed.load(Ordering::Relaxed) {
                "failed"
            } else if tally.done.load(Ordering::Relaxed) {
                "done"
            } else {
                "…"
            };
            bar.set_message(format!(
                "{}, {} {state}",
                crate::output::count(tally.packets.load(Ordering::Relaxed), "packet"),
                format_size(tally.bytes.load(Ordering::Relaxed)),
            ));
        }
        if last {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    for bar in &bars {
        bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podcap_format::pcapng::{BlockWriter, Direction, InterfaceDescription, LINKTYPE_ETHERNET};

    #[test]
    fn counts_packets_across_any_split() {
        let mut w = BlockWriter::default();
        w.section_header("t");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: String::new(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        for i in 0..37u32 {
            w.packet(
                0,
                u64::from(i),
                60 + i,
                &vec![7; 60 + i as usize],
                Direction::Inbound,
            );
        }
        for piece in [1, 3, 7, 8, 13, 4096] {
            let mut c = BlockCounter::default();
            for chunk in w.bytes().chunks(piece) {
                c.feed(chunk);
            }
            assert_eq!(c.packets, 37, "pieces of {piece}");
        }
    }
}
