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
    #[error("invalid time {input:?}: expected RFC 3339, like 2026-11-23T16:00:00Z")]
    Time { input: String },
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 time (`2026-11-23T16:00:00Z`, `…:00.5+01:00`) into ns since the epoch.
pub fn parse_rfc3339(input: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Time {
        input: input.to_owned(),
    };
    let b = input.trim().as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, UnitError> {
        let digits = b.get(from..from + len).ok_or_else(err)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(err());
        }
        std::str::from_utf8(digits)
            .map_err(|_| err())?
            .parse()
            .map_err(|_| err())
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(err());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&month)
        || !(1..=days_in_month).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(err());
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return Err(err());
        }
        let kept = digits.min(9);
        nanos = num(start, kept)? * 10i64.pow(9 - kept as u32);
    }
    let offset_secs = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() && b[at + 3] == b':' => {
            let minutes = num(at + 1, 2)? * 60 + num(at + 4, 2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return Err(err()),
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(ns).map_err(|_| err())
}

/// Formats ns since the epoch as a compact UTC time for file names (`20261123T160000Z`).
#[must_use]
pub fn format_utc_compact(ns: u64) -> String {
    let (year, month, day, secs) = civil_from_ns(ns);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Formats ns since the epoch as RFC 3339 in UTC, to the second (`2026-11-23T16:00:00Z`).
#[must_use]
pub fn format_rfc3339(ns: u64) -> String {
    let (year, month, day, secs) = civil_from_ns(ns);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Formats ns since the epoch as RFC 3339 in UTC to the nanosecond
/// (`2026-11-23T16:00:00.000000001Z`): exact, and read back by [`parse_rfc3339`]. JSON
/// carries times this way because tools such as `jq` round integers above 2^53.
#[must_use]
pub fn format_rfc3339_ns(ns: u64) -> String {
    let seconds = format_rfc3339(ns);
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:09}Z", ns % 1_000_000_000)
}

/// (year, month, day, seconds into the day) of ns since the epoch, in UTC.
fn civil_from_ns(ns: u64) -> (i64, i64, i64, i64) {
    let secs = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem)
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
            "yesterday",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(999), "999 B");
        assert_eq!(format_size(1_500_000), "1.5 MB");
    }
}
