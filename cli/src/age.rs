//! Ages as kubectl prints them in its `AGE` column (`duration.HumanDuration`): `45s`,
//! `5m12s` under 10 minutes, `42m` under 3 hours, `3h5m` under 8 hours, `30h` under 2
//! days, `3d4h` under 8 days, `20d` under 2 years, then `3y`. A time in the future (a
//! clock ahead of this one) is `0s`.

/// The age of `then_ns` at `now_ns` (nanoseconds since the epoch).
#[must_use]
pub fn format_age(now_ns: u64, then_ns: u64) -> String {
    let seconds = now_ns.saturating_sub(then_ns) / 1_000_000_000;
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => with_rest(minutes, "m", s % 60, "s"),
        s if s < 3 * 3600 => format!("{minutes}m"),
        s if s < 8 * 3600 => with_rest(hours, "h", minutes % 60, "m"),
        s if s < 48 * 3600 => format!("{hours}h"),
        s if s < 8 * 86_400 => with_rest(days, "d", hours % 24, "h"),
        s if s < 2 * 365 * 86_400 => format!("{days}d"),
        _ => format!("{}y", days / 365),
    }
}

fn with_rest(whole: u64, unit: &str, rest: u64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{whole}{unit}")
    } else {
        format!("{whole}{unit}{rest}{rest_unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::format_age;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let now = 2_000_000_000 * S;
        for (seconds, shown) in [
            (0, "0s"),
            (45, "45s"),
            (312, "5m12s"),
            (300, "5m"),
            (2520, "42m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 300, "3h5m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (2 * 86_400, "2d"),
            (20 * 86_400, "20d"),
            (3 * 365 * 86_400, "3y"),
        ] {
            assert_eq!(format_age(now, now - seconds * S), shown, "{seconds} s");
        }
        assert_eq!(format_age(now, now + 10 * S), "0s");
    }
}
