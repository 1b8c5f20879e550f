//! Segment file names: the one place that knows how a segment is named on disk.
//!
//! Rules:
//! - A segment is `podcap-<seq>.pcapng` when finished, `.pcapng.active` while written,
//!   `.pcapng.gz` when compressed; `<seq>` is exactly [`SEQ_DIGITS`] decimal digits, so
//!   sequence numbers run from 1 to [`MAX_SEQ`]. Any other name (`podcap-18446744073709551615.pcapng`,
//!   `podcap-+5.pcapng`, a name with a path in it) is not the store's: it is never read,
//!   counted, renamed or deleted, and it cannot move the sequence.
//! - Files that could not be repaired live in [`QUARANTINE_DIR`] under the same names; the
//!   index names them `quarantine/<name>`.
//! - The spare (a retired segment kept to be overwritten) is [`SPARE_NAME`], never a
//!   segment name.
use std::path::{Path, PathBuf};

/// Prefix of every segment file.
pub const PREFIX: &str = "podcap-";
/// Digits of a sequence number in a file name.
pub const SEQ_DIGITS: usize = 10;
/// The largest sequence number a name can carry.
pub const MAX_SEQ: u64 = 9_999_999_999;
/// Subdirectory of files the store could not repair (still served, still retired).
pub const QUARANTINE_DIR: &str = "quarantine";
/// The file retention keeps to be overwritten as the next segment.
pub const SPARE_NAME: &str = "podcap-spare.recycle";

const ACTIVE_SUFFIX: &str = ".pcapng.active";
const FINISHED_SUFFIX: &str = ".pcapng";
/// Suffix of a compressed finished segment.
pub const GZIP_SUFFIX: &str = ".pcapng.gz";

/// What state a segment file's name says it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Being written (or left so by a crash).
    Active,
    /// Finished, plain pcapng.
    Finished,
    /// Finished and gzip-compressed.
    Gzip,
}

/// A segment's file name, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentName {
    pub seq: u64,
    pub kind: Kind,
}

impl SegmentName {
    #[must_use]
    pub fn active(seq: u64) -> Self {
        Self {
            seq,
            kind: Kind::Active,
        }
    }

    #[must_use]
    pub fn finished(seq: u64) -> Self {
        Self {
            seq,
            kind: Kind::Finished,
        }
    }

    /// Parses a bare file name; `None` for anything that is not one of the store's names.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PREFIX)?;
        let digits = rest.get(..SEQ_DIGITS)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let kind = match &rest[SEQ_DIGITS..] {
            ACTIVE_SUFFIX => Kind::Active,
            FINISHED_SUFFIX => Kind::Finished,
            GZIP_SUFFIX => Kind::Gzip,
            _ => return None,
        };
        let seq: u64 = digits.parse().ok()?;
        (1..=MAX_SEQ).contains(&seq).then_some(Self { seq, kind })
    }

    /// The file name.
    #[must_use]
    pub fn file_name(&self) -> String {
        let suffix = match self.kind {
            Kind::Active => ACTIVE_SUFFIX,
            Kind::Finished => FINISHED_SUFFIX,
            Kind::Gzip => GZIP_SUFFIX,
        };
        format!("{PREFIX}{:0width$}{suffix}", self.seq, width = SEQ_DIGITS)
    }

    /// The file's path in the store `dir`.
    #[must_use]
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name())
    }

    /// The same segment under another state's name.
    #[must_use]
    pub fn with_kind(self, kind: Kind) -> Self {
        Self { kind, ..self }
    }
}

/// How the index names a file: `podcap-<seq>.pcapng[.gz]`, or `quarantine/<that>`.
/// Returns the name and whether it is in quarantine; `None` for anything else (a record
/// naming another path is damage, not a file to open).
#[must_use]
pub fn parse_indexed(file: &str) -> Option<(SegmentName, bool)> {
    match file.split_once('/') {
        None => SegmentName::parse(file).map(|n| (n, false)),
        Some((QUARANTINE_DIR, name)) => SegmentName::parse(name).map(|n| (n, true)),
        Some(_) => None,
    }
}

/// How the index names the file `name` in quarantine.
#[must_use]
pub fn quarantined(name: &SegmentName) -> String {
    format!("{QUARANTINE_DIR}/{}", name.file_name())
}

/// The next sequence number after `highest`, if names can still carry it.
#[must_use]
pub fn next_seq(highest: u64) -> Option<u64> {
    highest.checked_add(1).filter(|&seq| seq <= MAX_SEQ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stores_own_names_parse() {
        assert_eq!(
            SegmentName::parse("podcap-0000000042.pcapng"),
            Some(SegmentName::finished(42))
        );
        assert_eq!(
            SegmentName::parse("podcap-0000000042.pcapng.active").map(|n| n.kind),
            Some(Kind::Active)
        );
        assert_eq!(
            SegmentName::parse("podcap-9999999999.pcapng.gz").map(|n| (n.seq, n.kind)),
            Some((MAX_SEQ, Kind::Gzip))
        );
        for stray in [
            "podcap-18446744073709551615.pcapng",
            "podcap-18446744073709551616.pcapng",
            "podcap-42.pcapng",
            "podcap-+000000042.pcapng",
            "podcap-0000000000.pcapng",
            "podcap-00000000042.pcapng",
            "podcap-0000000042.pcapng.tmp",
            "podcap-0000000042.pcapng.gz.tmp",
            "podcap-spare.recycle",
            "index.tsv",
            "podcap-٠٠٠٠٠٠٠٠٠١.pcapng",
        ] {
            assert_eq!(SegmentName::parse(stray), None, "{stray}");
        }
        let name = SegmentName::active(7);
        assert_eq!(SegmentName::parse(&name.file_name()), Some(name));
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        assert_eq!(next_seq(0), Some(1));
        assert_eq!(next_seq(MAX_SEQ - 1), Some(MAX_SEQ));
        assert_eq!(next_seq(MAX_SEQ), None);
        assert_eq!(next_seq(u64::MAX), None);
    }

    #[test]
    fn indexed_names_are_the_store_or_its_quarantine() {
        assert_eq!(
            parse_indexed("quarantine/podcap-0000000003.pcapng"),
            Some((SegmentName::finished(3), true))
        );
        assert_eq!(
            parse_indexed("podcap-0000000003.pcapng"),
            Some((SegmentName::finished(3), false))
        );
        for bad in [
            "../podcap-0000000003.pcapng",
            "other/podcap-0000000003.pcapng",
            "quarantine/../podcap-0000000003.pcapng",
            "quarantine/x/podcap-0000000003.pcapng",
            "/etc/passwd",
        ] {
            assert_eq!(parse_indexed(bad), None, "{bad}");
        }
    }
}
