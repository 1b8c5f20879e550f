//! Human sizes (`50MB`, `1GiB`) and durations (`30s`, `5m`, `1h30m`), as tcpdump and
//! Kubernetes users write them.
//!
//! Rules: decimal suffixes (`KB`, `MB`, `GB`, `TB`) are powers of 1000 as in tcpdump's `-C`;
//! binary ones (`KiB`, `MiB`, `GiB`, `TiB`) and Kubernetes quantities (`Ki`, `Mi`, `Gi`) are
//! powers of 1024. A bare number is refused with an example of the right form: `5` could
//! be bytes, tcpdump's megabytes or seconds, and a wrong guess can wipe a store. Zero,
//! overflow, unknown units and empty input are errors that quote the input too.
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
    #[error("invalid time {input:?} ({reason}): expected RFC 3339, like 2026-11-23T16:00:00Z")]
    Time { input: String, reason: String },
    #[error("time {input:?} is {reason}: podcap counts time in nanoseconds since 1970 in 64 bits, from 1970-01-01 to {}", format_rfc3339(u64::MAX))]
    TimeOutOfRange { input: String, reason: &'static str },
    #[error("{input:?} must be greater than zero")]
    Zero { input: String },
    #[error("{input:?} has no unit: give one, like {input}MB, {input}MiB or {input}Gi for a size, {input}s, {input}m or {input}h for a duration")]
    NoUnit { input: String },
    #[error("{input:?} reaches back before 1970: give a shorter duration")]
    BeforeEpoch { input: String },
}

/// Now, in ns since the Unix epoch (the system clock; 0 before 1970).
#[must_use]
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, duration_ns)
}

/// Nanoseconds of `duration`, saturating at `u64::MAX` (584 years).
#[must_use]
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The start of "the last `input`" before `now_ns`: an error (never a wrap) when that lies
/// before the epoch.
pub fn parse_last(input: &str, now_ns: u64) -> Result<u64, UnitError> {
    let span = duration_ns(parse_duration(input)?);
    now_ns.checked_sub(span).ok_or_else(|| UnitError::BeforeEpoch {
        input: input.to_owned(),
    })
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
    if unit.trim().is_empty() {
        return Err(UnitError::NoUnit {
            input: text.to_owned(),
        });
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
        return Err(UnitError::NoUnit {
            input: rest.to_owned(),
        });
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

/// Parses an RFC 3339 time (`2026-11-23T16:00:00Z`, `…:00.5+01:00`) into ns since the
/// epoch. Parsed by jiff, which also takes the other ISO 8601 forms with an offset
/// (`20261123T160000Z`, `+01`); a date that does not exist (February 31st) is refused,
/// naming why, and so is a time without its offset.
pub fn parse_rfc3339(input: &str) -> Result<u64, UnitError> {
    let err = |reason: &str| UnitError::Time {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let timestamp: jiff::Timestamp = input
        .trim()
        .parse()
        .map_err(|e: jiff::Error| err(&e.to_string()))?;
    let out_of_range = |reason| UnitError::TimeOutOfRange {
        input: input.to_owned(),
        reason,
    };
    let ns = timestamp.as_nanosecond();
    if ns < 0 {
        return Err(out_of_range("before 1970"));
    }
    u64::try_from(ns).map_err(|_| out_of_range("too far in the future"))
}

/// `ns` since the epoch as a time (saturating at jiff's upper bound, the year 9999).
fn timestamp(ns: u64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::MAX)
}

/// Formats ns since the epoch as a compact UTC time for file names (`20261123T160000Z`).
#[must_use]
pub fn format_utc_compact(ns: u64) -> String {
    timestamp(ns).strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Formats ns since the epoch as RFC 3339 in UTC, to the second (`2026-11-23T16:00:00Z`).
#[must_use]
pub fn format_rfc3339(ns: u64) -> String {
    timestamp(ns).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Formats ns since the epoch as RFC 3339 in UTC to the nanosecond
/// (`2026-11-23T16:00:00.000000001Z`): exact, and read back by [`parse_rfc3339`]. JSON
/// carries times this way because tools such as `jq` round integers above 2^53.
#[must_use]
pub fn format_rfc3339_ns(ns: u64) -> String {
    timestamp(ns).strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// Formats bytes exactly, in the largest decimal unit they reach, with every digit needed
/// (`1.024 MB`, `50 MB`, `1.048576 MB`): for limits, where a rounded figure could look
/// equal to a value it refuses.
#[must_use]
pub fn format_size_exact(bytes: u64) -> String {
    const UNITS: [(&str, u64, usize); 4] = [
        ("TB", 1_000_000_000_000, 12),
        ("GB", 1_000_000_000, 9),
        ("MB", 1_000_000, 6),
        ("KB", 1_000, 3),
    ];
    for (unit, scale, digits) in UNITS {
        if bytes >= scale {
            let (whole, rest) = (bytes / scale, bytes % scale);
            if rest == 0 {
                return format!("{whole} {unit}");
            }
            let fraction = format!("{rest:0digits$}");
            return format!("{whole}.{} {unit}", fraction.trim_end_matches('0'));
        }
    }
    format!("{bytes} B")
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
        assert_eq!(parse_size("4096B"), Ok(4096));
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
    fn bare_numbers_are_refused_with_an_example() {
        let err = parse_size("5").unwrap_err();
        assert_eq!(err, UnitError::NoUnit { input: "5".into() });
        assert!(err.to_string().contains("like 5MB"), "{err}");
        let err = parse_duration("10").unwrap_err();
        assert!(err.to_string().contains("10s"), "{err}");
    }

    #[test]
    fn the_last_duration_never_wraps() {
        let now = 1_795_449_600_000_000_000;
        assert_eq!(parse_last("5m", now), Ok(now - 300_000_000_000));
        assert_eq!(
            parse_last("213504d", now),
            Err(UnitError::BeforeEpoch {
                input: "213504d".into()
            })
        );
        assert!(parse_last("99999999999999d", now).is_err());
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_mins(5)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
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
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2026-11-23T16:00:00Z"),
            Ok(1_795_449_600_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T17:00:00.5+01:00"),
            Ok(1_795_449_600_500_000_000)
        );
        assert_eq!(format_utc_compact(1_795_449_600_500_000_000), "20261123T160000Z");
        assert_eq!(format_utc_compact(0), "19700101T000000Z");
        assert_eq!(format_rfc3339(1_795_449_600_500_000_000), "2026-11-23T16:00:00Z");
        assert_eq!(
            format_rfc3339_ns(1_795_449_600_000_000_001),
            "2026-11-23T16:00:00.000000001Z"
        );
        assert_eq!(
            parse_rfc3339(&format_rfc3339_ns(1_795_449_600_123_456_789)),
            Ok(1_795_449_600_123_456_789)
        );
        let Err(refused) = parse_rfc3339("2026-02-31T00:00:00Z") else {
            panic!("February 31st accepted");
        };
        assert!(
            refused.to_string().contains("day"),
            "the refusal says why: {refused}"
        );
        assert!(parse_rfc3339("2028-02-29T00:00:00Z").is_ok(), "a leap day");
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-02-31T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-23T16:00:00",
            "2026-11-23T16:00:00.Z",
            "1969-12-31T23:59:59Z",
            "yesterday",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_valid_time_out_of_range_is_refused_for_that_reason() {
        let refused = parse_rfc3339("2999-01-01T00:00:00Z").unwrap_err();
        assert!(matches!(refused, UnitError::TimeOutOfRange { .. }), "{refused:?}");
        let text = refused.to_string();
        assert!(
            text.contains("too far in the future") && text.contains("to 2554-07-21T23:34:33Z"),
            "{text}"
        );
        assert!(!text.contains("expected RFC 3339"), "it is RFC 3339: {text}");
        let refused = parse_rfc3339("1969-12-31T23:59:59Z").unwrap_err().to_string();
        assert!(refused.contains("before 1970"), "{refused}");
        let last = format_rfc3339_ns(u64::MAX);
        assert_eq!(parse_rfc3339(&last), Ok(u64::MAX), "the last moment is accepted");
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(999), "999 B");
        assert_eq!(format_size(1_500_000), "1.5 MB");
    }

    #[test]
    fn exact_sizes_read_back_as_the_same_bytes() {
        for (bytes, text) in [
            (1_024_000, "1.024 MB"),
            (50_000_000, "50 MB"),
            (1 << 20, "1.048576 MB"),
            (256_000, "256 KB"),
            (8_000_000_001, "8.000000001 GB"),
            (999, "999 B"),
            (1_500_000_000_000, "1.5 TB"),
        ] {
            assert_eq!(format_size_exact(bytes), text);
            assert_eq!(parse_size(&text.replace(' ', "")), Ok(bytes), "{text}");
        }
    }
}
