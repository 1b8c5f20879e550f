//! The flags' value types: clap parses sizes, durations, rates and choices into these, so a
//! bad value is refused by clap naming its flag (`invalid value '5XB' for '--segment-size
//! <SIZE>': ...`) before anything else runs, and the rest of the sensor never reads text.
//!
//! Rules: each type keeps the text it was given besides its value, so messages quote what
//! the user typed; parsing is `podcap_format::units`' (the API and the targeting file read
//! the same forms).
use std::{fmt, str::FromStr, time::Duration};

use crate::{store::MinFree, units};

/// A size (`50MB`, `64MiB`, `1GB`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    text: String,
}

impl FromStr for Size {
    type Err = units::UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            bytes: units::parse_size(text)?,
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A duration (`30s`, `5m`, `1h30m`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub duration: Duration,
    text: String,
}

impl FromStr for Span {
    type Err = units::UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            duration: units::parse_duration(text)?,
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Bytes per second (`20MB/s`; the `/s` may be left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_second: u64,
}

impl FromStr for Rate {
    type Err = units::UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            bytes_per_second: units::parse_size(text.strip_suffix("/s").unwrap_or(text))?,
        })
    }
}

/// Why a flag's value was refused (clap says which flag).
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error("{0}, or a percentage from 1% to 99%")]
    SizeOrPercent(units::UnitError),
    #[error("{0:?} is not a percentage from 1% to 99%")]
    Percent(String),
    #[error(transparent)]
    Unit(#[from] units::UnitError),
    #[error("{0:?} is not between 1MiB and 1GiB")]
    RingSize(String),
    #[error("{0:?} is not an address like 127.0.0.1:9090 or [::]:9090")]
    Address(String),
}

/// `--listen`: an address and port.
pub(super) fn listen(text: &str) -> Result<std::net::SocketAddr, ValueError> {
    text.parse().map_err(|_| ValueError::Address(text.to_owned()))
}

/// `--min-free`: a size, or a percentage of the file system from 1 % to 99 %.
pub(super) fn min_free(text: &str) -> Result<MinFree, ValueError> {
    match text.trim().strip_suffix('%') {
        Some(number) => match number.trim().parse::<u8>() {
            Ok(percent) if (1..=99).contains(&percent) => Ok(MinFree::Percent(percent)),
            _ => Err(ValueError::Percent(number.to_owned())),
        },
        None => units::parse_size(text)
            .map(MinFree::Bytes)
            .map_err(ValueError::SizeOrPercent),
    }
}

/// `--ring-size`: a size from 1 MiB to 1 GiB.
pub(super) fn ring_size(text: &str) -> Result<usize, ValueError> {
    let bytes = units::parse_size(text)?;
    match usize::try_from(bytes) {
        Ok(bytes) if (1 << 20..=1 << 30).contains(&bytes) => Ok(bytes),
        _ => Err(ValueError::RingSize(text.to_owned())),
    }
}

/// `--compress`: how finished segments are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// As written.
    #[default]
    None,
    /// Gzip (`.pcapng.gz`, which Wireshark reads).
    Gzip,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_text_and_bad_ones_say_why() {
        let size: Size = "64MiB".parse().unwrap();
        assert_eq!((size.bytes, size.to_string()), (64 << 20, "64MiB".to_owned()));
        let span: Span = "1h30m".parse().unwrap();
        assert_eq!(span.duration, Duration::from_mins(90));
        assert_eq!("20MB/s".parse::<Rate>().unwrap().bytes_per_second, 20_000_000);
        assert!("5XB"
            .parse::<Size>()
            .unwrap_err()
            .to_string()
            .contains("invalid size \"5XB\""));
        assert_eq!(min_free("10%").unwrap(), MinFree::Percent(10));
        assert_eq!(min_free("2GB").unwrap(), MinFree::Bytes(2_000_000_000));
        let refused = |e: ValueError| e.to_string();
        assert!(refused(min_free("100%").unwrap_err()).contains("1% to 99%"));
        assert!(refused(min_free("lots").unwrap_err()).contains("invalid size \"lots\""));
        assert_eq!(ring_size("64MiB").unwrap(), 64 << 20);
        assert!(refused(ring_size("2GiB").unwrap_err()).contains("between 1MiB and 1GiB"));
    }
}
