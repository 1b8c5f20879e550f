//! The sensor's own process as the kernel counts it, read at scrape time from `/proc/self`
//! the way the Prometheus client libraries do (Python's `ProcessCollector`, Go's
//! `processCollector` through procfs), so the `process_*` families mean what they mean
//! for every other program Prometheus scrapes.
//!
//! Rules: nothing is cached; each call reads `/proc/self/stat` (CPU time, start time in
//! clock ticks since boot), `/proc/stat` (`btime`, the boot time), `/proc/self/statm`
//! (resident pages) and `/proc/self/fd` (open descriptors). A file that does not read as
//! the kernel writes it is an `InvalidData` error, never a panic or a made-up value.
use std::io;

/// What the kernel says about this process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// User and system CPU time spent, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Reads this process's statistics now.
pub fn process_stats() -> io::Result<ProcessStats> {
    let ticks_per_second = sysconf(libc::_SC_CLK_TCK)?;
    let page_size = sysconf(libc::_SC_PAGESIZE)?;
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat")?)?;
    let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat")?)?;
    let resident_pages = parse_statm_resident(&std::fs::read_to_string("/proc/self/statm")?)?;
    // The directory's own descriptor, open while it is listed, is counted too, as the
    // client libraries count it.
    let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(ProcessStats {
        start_time_seconds: ticks_as_seconds(
            boot_time
                .saturating_mul(ticks_per_second)
                .saturating_add(stat.start),
            ticks_per_second,
        ),
        cpu_seconds: ticks_as_seconds(stat.user.saturating_add(stat.system), ticks_per_second),
        resident_memory_bytes: resident_pages.saturating_mul(page_size),
        open_fds,
    })
}

/// A positive `sysconf` value.
fn sysconf(name: libc::c_int) -> io::Result<u64> {
    // SAFETY: sysconf takes any name and returns -1 for one it does not know.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| io::Error::other(format!("sysconf({name}) gave {value}")))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a gauge's value: ticks are far below 2^52"
)]
fn ticks_as_seconds(ticks: u64, ticks_per_second: u64) -> f64 {
    ticks as f64 / ticks_per_second as f64
}

/// The fields of `/proc/self/stat` the families need, in clock ticks: CPU time in user
/// and system mode, and the start since boot.
#[derive(Debug, PartialEq, Eq)]
struct Ticks {
    user: u64,
    system: u64,
    start: u64,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// `/proc/PID/stat`: the command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted after its last `)`: utime is field 14,
/// stime 15, starttime 22 (proc(5)).
fn parse_stat(text: &str) -> io::Result<Ticks> {
    let (_, after_name) = text
        .rsplit_once(')')
        .ok_or_else(|| invalid("/proc/self/stat has no command name"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |number: usize| -> io::Result<u64> {
        fields
            .get(number - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| invalid(&format!("/proc/self/stat field {number} is not a number")))
    };
    Ok(Ticks {
        user: field(14)?,
        system: field(15)?,
        start: field(22)?,
    })
}

/// `btime` of `/proc/stat`: the boot time in seconds since the Unix epoch.
fn parse_boot_time(text: &str) -> io::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| invalid("/proc/stat has no btime"))
}

/// The second field of `/proc/self/statm`: resident pages.
fn parse_statm_resident(text: &str) -> io::Result<u64> {
    text.split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| invalid("/proc/self/statm has no resident size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line =
            "4242 (podcap (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123456 1000 10";
        assert_eq!(
            parse_stat(line).unwrap(),
            Ticks {
                user: 250,
                system: 75,
                start: 123_456,
            }
        );
        assert!(parse_stat("4242 podcap S 1").is_err());
        assert!(parse_stat("4242 (podcap) S 1 2").is_err());
    }

    #[test]
    fn boot_time_and_resident_pages() {
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n").unwrap(),
            1_700_000_000
        );
        assert!(parse_boot_time("cpu 1 2 3\n").is_err());
        assert_eq!(parse_statm_resident("5000 1234 300 1 0 900 0\n").unwrap(), 1234);
        assert!(parse_statm_resident("5000").is_err());
    }

    #[test]
    #[expect(clippy::cast_precision_loss, reason = "seconds since 1970 are far below 2^52")]
    fn this_process_reads_as_started_in_the_past_with_memory_and_descriptors() {
        let stats = process_stats().unwrap();
        let now = crate::sys::realtime_ns() / 1_000_000_000;
        assert!(
            stats.start_time_seconds > 1.0e9 && stats.start_time_seconds <= now as f64 + 1.0,
            "{stats:?}"
        );
        assert!(stats.resident_memory_bytes > 0, "{stats:?}");
        assert!(stats.open_fds >= 3, "{stats:?}");
        assert!(stats.cpu_seconds >= 0.0, "{stats:?}");
    }
}
