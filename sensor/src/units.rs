//! Human sizes (`50MB`, `1GiB`) and durations (`30s`, `5m`, `1h30m`), as tcpdump and
//! Kubernetes users write them.
//!
//! Rules: decimal suffixes (`KB`, `MB`, `GB`, `TB`) are powers of 1000 as in tcpdump's `-C`;
//! binary ones (`KiB`, `MiB`, `GiB`, `TiB`) and Kubernetes quantities (`Ki`, `Mi`, `Gi`) are
//! powers of 1024. A bare number is bytes or seconds. Zero, overflow, unknown units and
//! empty input are errors that quote the input.
use std::time::Duration;

/// A size or duration that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("invalid size {input:?}: expected a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), like 50MB")]
    Size { input: String },
    #[error(
        "invalid duration {input:?}: expected numbers with units (ms, s, m, h, d), like 30s, 5m or 1h30m"
    )]
    Duration { input: String },
    #[error("{input:?} must be greater than zero")]
    Zero { input: String },
}

/// Parses a size in bytes.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size {
        input: input.to_owned(),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(err());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    let bytes = if let Some((whole, fraction)) = number.split_once('.') {
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err())?
        };
        if fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let scale = 10u64.pow(fraction.len() as u32);
        let fraction: u64 = fraction.parse().map_err(|_| err())?;
        whole
            .checked_mul(multiplier)
            .and_then(|w| w.checked_add(fraction.checked_mul(multiplier)? / scale))
            .ok_or_else(err)?
    } else {
        number
            .parse::<u64>()
            .map_err(|_| err())?
            .checked_mul(multiplier)
            .ok_or_else(err)?
    };
    if bytes == 0 {
        return Err(UnitError::Zero {
            input: input.to_owned(),
        });
    }
    Ok(bytes)
}

/// Parses a duration; several terms add up (`1h30m`).
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration {
        input: input.to_owned(),
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = rest.parse().map_err(|_| err())?;
        return nonzero(Duration::from_secs(secs), input);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let term = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" | "sec" => Duration::from_secs(value),
            "m" | "min" => Duration::from_secs(value.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(err)?),
            "d" => Duration::from_secs(value.checked_mul(86_400).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(term).ok_or_else(err)?;
        rest = &rest[unit_len..];
    }
    nonzero(total, input)
}

fn nonzero(duration: Duration, input: &str) -> Result<Duration, UnitError> {
    if duration.is_zero() {
        Err(UnitError::Zero {
            input: input.to_owned(),
        })
    } else {
        Ok(duration)
    }
}

/// Formats bytes for people (`12.3 MB`).
#[must_use]
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256KB"), Ok(256_000));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 2 mb "), Ok(2_000_000));
    }

    #[test]
    fn bad_sizes_name_the_input() {
        for bad in [
            "",
            "MB",
            "5XB",
            "-1MB",
            "1.MB",
            "99999999999999999999TB",
            "1..5MB",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert_eq!(parse_size("0MB"), Err(UnitError::Zero { input: "0MB".into() }));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_mins(5)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_hours(48)));
    }

    #[test]
    fn bad_durations() {
        for bad in ["", "h", "5x", "1h30", "m5", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(parse_duration("0s"), Err(UnitError::Zero { .. })));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(999), "999 B");
        assert_eq!(format_size(1_500_000), "1.5 MB");
    }
}
