//! When a recording job records: Kubeshark's Traffic Recorder schedule, computed from a
//! clock the caller gives (so every case is a unit test).
//!
//! Rules:
//! - Iteration `k` (from 0) starts at `first + k × 24 h` and records for `duration`
//!   (`[start, start + duration)`); `days` iterations (0: every day, forever).
//! - `first` is the job's creation time when it has no start time; with a start time
//!   (`HH:MM`, UTC) it is the first such minute at or after the creation (so a job made at
//!   08:50 for 08:45 starts tomorrow); with an RFC 3339 time, that moment (later
//!   iterations at the same time of day).
//! - A job that records every day may not record longer than a day (its iterations would
//!   overlap); one iteration may.
//! - Iteration `k`'s folder expires `expire` after it ends (never without `expire`).
//! - Everything is a function of (job, now): a restart in the middle of an iteration finds
//!   the same iteration, and goes on from where its copy had got to.
use std::time::Duration;

use podcap_format::recording::{self, StartAt};

use crate::units;

const DAY_NS: u64 = 86_400_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The start cannot be used, in `podcap_format::recording::parse_start`'s words.
    #[error("{0}")]
    Start(String),
    #[error("duration: a job that records every day records at most 24h")]
    TooLong,
}

/// When a job's first iteration starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the job's creation.
    Now,
    /// At this minute after midnight UTC (`HH:MM`).
    Daily(u32),
    /// At this moment (ns since the epoch).
    At(u64),
}

/// A job's schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub start: Start,
    /// Iterations; 0: forever.
    pub days: u32,
    pub duration_ns: u64,
    pub expire_ns: Option<u64>,
    /// When the job was made.
    pub created_ns: u64,
}

/// Where a job stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for iteration `iteration`, which starts at `start_ns`.
    Scheduled { iteration: u32, start_ns: u64 },
    /// Recording iteration `iteration`, `[start_ns, end_ns)`.
    Recording {
        iteration: u32,
        start_ns: u64,
        end_ns: u64,
    },
    /// Every iteration has ended.
    Finished,
}

/// Parses `HH:MM` (UTC) or an RFC 3339 time (`podcap_format::recording::parse_start`).
pub fn parse_start(text: &str) -> Result<Start, ScheduleError> {
    match recording::parse_start(text) {
        Ok(StartAt::Daily(minute)) => Ok(Start::Daily(minute)),
        Ok(StartAt::Moment(ns)) => Ok(Start::At(ns)),
        Err(reason) => Err(ScheduleError::Start(reason)),
    }
}

impl Schedule {
    /// A schedule, checked.
    pub fn new(
        start: Start,
        days: u32,
        duration: Duration,
        expire: Option<Duration>,
        created_ns: u64,
    ) -> Result<Self, ScheduleError> {
        let duration_ns = units::duration_ns(duration);
        if days != 1 && duration_ns > DAY_NS {
            return Err(ScheduleError::TooLong);
        }
        Ok(Self {
            start,
            days,
            duration_ns,
            expire_ns: expire.map(units::duration_ns),
            created_ns,
        })
    }

    /// When iteration 0 starts.
    #[must_use]
    pub fn first_start_ns(&self) -> u64 {
        let minute = match self.start {
            Start::Now => return self.created_ns,
            Start::At(ns) => return ns,
            Start::Daily(minute) => minute,
        };
        let midnight = self.created_ns - self.created_ns % DAY_NS;
        let today = midnight.saturating_add(u64::from(minute) * 60_000_000_000);
        if today >= self.created_ns {
            today
        } else {
            today.saturating_add(DAY_NS)
        }
    }

    /// When iteration `k` starts (`None` past the last one, or past the clock's range).
    #[must_use]
    pub fn start_of(&self, k: u32) -> Option<u64> {
        if self.days != 0 && k >= self.days {
            return None;
        }
        u64::from(k)
            .checked_mul(DAY_NS)
            .and_then(|offset| self.first_start_ns().checked_add(offset))
    }

    /// Where the job stands at `now_ns`.
    #[must_use]
    pub fn phase(&self, now_ns: u64) -> Phase {
        let first = self.first_start_ns();
        if now_ns < first {
            return Phase::Scheduled {
                iteration: 0,
                start_ns: first,
            };
        }
        // The latest iteration started at or before now.
        let k = u32::try_from((now_ns - first) / DAY_NS).unwrap_or(u32::MAX);
        let Some(start) = self.start_of(k) else {
            return Phase::Finished;
        };
        let end = start.saturating_add(self.duration_ns);
        if now_ns < end {
            return Phase::Recording {
                iteration: k,
                start_ns: start,
                end_ns: end,
            };
        }
        match k
            .checked_add(1)
            .and_then(|next| Some((next, self.start_of(next)?)))
        {
            Some((iteration, start_ns)) => Phase::Scheduled { iteration, start_ns },
            None => Phase::Finished,
        }
    }

    /// When iteration `k`'s folder expires (`None`: kept until the job is deleted).
    #[must_use]
    pub fn expiry_of(&self, k: u32) -> Option<u64> {
        let end = self.start_of(k)?.saturating_add(self.duration_ns);
        self.expire_ns.map(|expire| end.saturating_add(expire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000_000_000;
    const HOUR: u64 = 60 * MINUTE;
    /// 2026-11-30T00:00:00Z.
    const MIDNIGHT: u64 = 1_795_996_800_000_000_000;

    fn schedule(
        start: Option<&str>,
        days: u32,
        duration: &str,
        expire: Option<&str>,
        created: u64,
    ) -> Schedule {
        Schedule::new(
            start.map_or(Start::Now, |s| parse_start(s).unwrap()),
            days,
            units::parse_duration(duration).unwrap(),
            expire.map(|e| units::parse_duration(e).unwrap()),
            created,
        )
        .unwrap()
    }

    #[test]
    fn midnight_is_midnight() {
        assert_eq!(units::format_rfc3339(MIDNIGHT), "2026-11-30T00:00:00Z");
    }

    #[test]
    fn start_times_are_hh_mm_utc() {
        assert_eq!(parse_start("08:45"), Ok(Start::Daily(525)));
        assert_eq!(parse_start("00:00"), Ok(Start::Daily(0)));
        assert_eq!(parse_start("23:59"), Ok(Start::Daily(1439)));
        assert_eq!(parse_start("2026-11-30T00:00:00Z"), Ok(Start::At(MIDNIGHT)));
        assert!(parse_start("2026-02-31T00:00:00Z").is_err());
        for bad in ["8:45", "24:00", "12:60", "0845", "08:45:00", "", "ab:cd", "-1:00"] {
            let Err(ScheduleError::Start(reason)) = parse_start(bad) else {
                panic!("{bad} accepted");
            };
            assert!(
                reason.contains(&format!("{bad:?}")) && reason.contains("HH:MM"),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_far_future_start_is_refused_for_what_it_is() {
        let error = parse_start("2999-01-01T00:00:00Z").unwrap_err().to_string();
        assert!(error.contains("too far in the future"), "{error}");
        assert!(!error.contains("RFC 3339 time"), "it is one: {error}");
        assert!(matches!(parse_start("2500-01-01T00:00:00Z"), Ok(Start::At(_))));
    }

    #[test]
    fn without_a_start_time_it_records_at_once() {
        let created = MIDNIGHT + 10 * HOUR;
        let once = schedule(None, 1, "1h", None, created);
        assert_eq!(
            once.phase(created),
            Phase::Recording {
                iteration: 0,
                start_ns: created,
                end_ns: created + HOUR
            }
        );
        assert_eq!(once.phase(created + HOUR - 1), once.phase(created));
        assert_eq!(once.phase(created + HOUR), Phase::Finished);
        assert_eq!(once.phase(u64::MAX), Phase::Finished);
    }

    #[test]
    fn a_start_time_before_now_means_tomorrow_and_after_now_today() {
        let created = MIDNIGHT + 8 * HOUR + 50 * MINUTE;
        let later_today = schedule(Some("09:00"), 1, "10m", None, created);
        assert_eq!(later_today.first_start_ns(), MIDNIGHT + 9 * HOUR);
        assert_eq!(
            later_today.phase(created),
            Phase::Scheduled {
                iteration: 0,
                start_ns: MIDNIGHT + 9 * HOUR
            }
        );
        let tomorrow = schedule(Some("08:45"), 1, "10m", None, created);
        assert_eq!(
            tomorrow.first_start_ns(),
            MIDNIGHT + 24 * HOUR + 8 * HOUR + 45 * MINUTE
        );
        // Exactly now is today.
        let now = schedule(Some("08:50"), 1, "10m", None, created);
        assert!(matches!(
            now.phase(created),
            Phase::Recording { iteration: 0, .. }
        ));
    }

    #[test]
    fn iterations_zero_one_and_n() {
        let created = MIDNIGHT + 6 * HOUR;
        let at = |day: u64, hour: u64| MIDNIGHT + day * 24 * HOUR + hour * HOUR;
        // One: recorded on the first day only.
        let once = schedule(Some("07:00"), 1, "1h", None, created);
        assert!(matches!(
            once.phase(at(0, 7)),
            Phase::Recording { iteration: 0, .. }
        ));
        assert_eq!(once.phase(at(0, 8)), Phase::Finished);
        assert_eq!(once.phase(at(1, 7)), Phase::Finished);
        // Three: days 0, 1, 2; scheduled between them.
        let three = schedule(Some("07:00"), 3, "1h", None, created);
        assert_eq!(
            three.phase(at(0, 9)),
            Phase::Scheduled {
                iteration: 1,
                start_ns: at(1, 7)
            }
        );
        assert!(matches!(
            three.phase(at(2, 7)),
            Phase::Recording { iteration: 2, .. }
        ));
        assert_eq!(three.phase(at(2, 8)), Phase::Finished);
        assert_eq!(three.phase(at(3, 7)), Phase::Finished);
        // Zero: every day, forever.
        let forever = schedule(Some("07:00"), 0, "1h", None, created);
        assert!(matches!(
            forever.phase(at(400, 7) + 1),
            Phase::Recording { iteration: 400, .. }
        ));
        assert_eq!(
            forever.phase(at(400, 8)),
            Phase::Scheduled {
                iteration: 401,
                start_ns: at(401, 7)
            }
        );
    }

    #[test]
    fn an_rfc_3339_start_is_that_moment_then_daily() {
        let created = MIDNIGHT + HOUR;
        let job = schedule(Some("2026-11-30T01:00:05Z"), 2, "4s", Some("3s"), created);
        assert_eq!(
            job.phase(created),
            Phase::Scheduled {
                iteration: 0,
                start_ns: created + 5_000_000_000
            }
        );
        assert!(matches!(
            job.phase(created + 6_000_000_000),
            Phase::Recording { iteration: 0, .. }
        ));
        assert_eq!(job.start_of(1), Some(created + 5_000_000_000 + 24 * HOUR));
        assert_eq!(job.expiry_of(0), Some(created + 12_000_000_000));
    }

    #[test]
    fn iterations_across_midnight() {
        let created = MIDNIGHT + 20 * HOUR;
        let nightly = schedule(Some("23:30"), 2, "1h", Some("2h"), created);
        let start = MIDNIGHT + 23 * HOUR + 30 * MINUTE;
        assert_eq!(
            nightly.phase(MIDNIGHT + 24 * HOUR + 10 * MINUTE),
            Phase::Recording {
                iteration: 0,
                start_ns: start,
                end_ns: start + HOUR
            }
        );
        assert_eq!(nightly.expiry_of(0), Some(start + 3 * HOUR));
        assert_eq!(nightly.expiry_of(1), Some(start + 24 * HOUR + 3 * HOUR));
        assert_eq!(nightly.expiry_of(2), None, "there is no third iteration");
    }

    #[test]
    fn a_restart_in_the_middle_finds_the_same_iteration() {
        let created = MIDNIGHT + HOUR;
        let job = schedule(None, 0, "2h", None, created);
        let before = job.phase(created + 30 * MINUTE);
        // The same schedule rebuilt from what was stored, asked again later.
        let rebuilt = schedule(None, 0, "2h", None, created);
        assert_eq!(rebuilt.phase(created + 30 * MINUTE), before);
        assert!(matches!(
            rebuilt.phase(created + 24 * HOUR + 90 * MINUTE),
            Phase::Recording { iteration: 1, .. }
        ));
    }

    #[test]
    fn every_day_is_at_most_a_day_long_and_no_expiry_keeps_it() {
        let day = units::parse_duration("25h").unwrap();
        assert_eq!(
            Schedule::new(Start::Now, 0, day, None, MIDNIGHT),
            Err(ScheduleError::TooLong)
        );
        assert_eq!(
            Schedule::new(Start::Now, 2, day, None, MIDNIGHT),
            Err(ScheduleError::TooLong)
        );
        assert!(Schedule::new(Start::Now, 1, day, None, MIDNIGHT).is_ok());
        assert_eq!(schedule(None, 1, "1h", None, MIDNIGHT).expiry_of(0), None);
    }
}
