//! Self-healing: when a service that was running fails, whether AIMA starts it again and
//! after how long. Kubernetes' numbers: 10 s, doubling, capped at 5 min, forgotten after
//! 10 min of healthy running. Pure: the clock and the failure come in as values.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{FailureCause, Invalid};

/// `--restart`: what AIMA does when a running service's engine stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never: the service stays `failed`.
    No,
    /// After a crash, an OOM kill, a vanished container or a failed health probe; at
    /// most `max` restarts in a row.
    OnFailure { max: u32 },
    /// As `on-failure`, and after a clean exit too; without limit.
    Always,
}

impl RestartPolicy {
    pub const DEFAULT: Self = Self::OnFailure { max: 5 };
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for RestartPolicy {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            Invalid::new(
                "restart",
                format!(
                    "restart policy '{s}' is not one of no, on-failure, on-failure:MAX (MAX 1 or more), always"
                ),
            )
        };
        match s.split_once(':') {
            None if s == "no" => Ok(Self::No),
            None if s == "always" => Ok(Self::Always),
            None if s == "on-failure" => Ok(Self::DEFAULT),
            Some(("on-failure", max)) if max.bytes().all(|b| b.is_ascii_digit()) => {
                match max.parse::<u32>() {
                    Ok(max) if max >= 1 => Ok(Self::OnFailure { max }),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::OnFailure { max } => write!(f, "on-failure:{max}"),
            Self::Always => f.write_str("always"),
        }
    }
}

/// The back-off between restarts: `first`, doubling, capped at 30 × `first`; a service
/// that ran healthy for 60 × `first` starts counting afresh (10 s, 5 min and 10 min by
/// default; `AIMA_RESTART_BACKOFF` scales all three, so tests need not wait minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    pub fn cap(self) -> Duration {
        self.first * 30
    }

    /// Healthy running this long forgets earlier failures.
    pub fn reset_after(self) -> Duration {
        self.first * 60
    }

    /// The wait before restart number `attempt` of a row (1-based).
    pub fn delay(self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        (self.first * 2u32.pow(doublings)).min(self.cap())
    }
}

/// A service's restart bookkeeping, persisted so it survives the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restarts {
    /// Restarts ever (the RESTARTS column).
    pub total: u32,
    /// Restarts since the service last ran healthy long enough; MAX applies to these.
    pub in_a_row: u32,
    /// When the pending restart is due (status `backoff`).
    pub next_at: Option<DateTime<Utc>>,
    /// The exit code of the last engine that stopped, when there was one.
    pub last_exit_code: Option<i64>,
    /// When the service last turned `running`.
    pub running_since: Option<DateTime<Utc>>,
}

impl Restarts {
    /// Whether a start under way was begun by the restart policy: a start someone asked
    /// for begins a new row (0 in a row), a policy's restart counts itself in the row. A
    /// daemon killed during such a start leaves it to the policy, not to the operator.
    pub fn began_by_policy(&self) -> bool {
        self.in_a_row > 0
    }
}

/// How a service's engine is judged healthy: how long its start may take, and how often
/// and how patiently it is probed once running (docker's `--health-interval` and
/// `--health-retries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChecks {
    /// From container start to a healthy answer; `None`: the engine catalog's default.
    pub start_timeout: Option<Duration>,
    pub interval: Duration,
    /// Misses in a row before a running service is declared unhealthy.
    pub retries: u32,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self {
            start_timeout: None,
            interval: Duration::from_secs(2),
            retries: 5,
        }
    }
}

impl HealthChecks {
    /// Settings from what the caller gave (durations such as `30s`, `20m`); what is
    /// absent keeps `base`'s value.
    pub fn with(
        base: Self,
        start_timeout: Option<&str>,
        interval: Option<&str>,
        retries: Option<u32>,
    ) -> Result<Self, Invalid> {
        let duration = super::service::positive_duration;
        if retries.is_some_and(|n| !(1..=1000).contains(&n)) {
            return Err(Invalid::new(
                "health_retries",
                "health-retries must be 1 to 1000 missed probes in a row",
            ));
        }
        let interval = match interval {
            Some(text) => duration("health_interval", text)?,
            None => base.interval,
        };
        if interval < Duration::from_millis(100) {
            return Err(Invalid::new(
                "health_interval",
                "health-interval under 100ms would flood the engine; give 100ms or more",
            ));
        }
        Ok(Self {
            start_timeout: match start_timeout {
                Some(text) => Some(duration("start_timeout", text)?),
                None => base.start_timeout,
            },
            interval,
            retries: retries.unwrap_or(base.retries),
        })
    }
}

/// What to do about a failure of a service that was running (or restarting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Wait `delay`, then start again; this is restart number `attempt` in a row.
    Restart { attempt: u32, delay: Duration },
    /// Stay `failed`, with this reason.
    Fail(String),
}

/// The verdict on a failure, given the policy and the restarts so far. `clean_exit`: the
/// engine exited with code 0 by itself. `now` decides whether the service had run
/// healthy long enough to forget earlier failures.
pub fn verdict(
    policy: RestartPolicy,
    backoff: Backoff,
    restarts: &Restarts,
    cause: FailureCause,
    clean_exit: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> Verdict {
    let restartable = match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure { .. } => !clean_exit,
        RestartPolicy::Always => true,
    };
    if !restartable || !cause.can_recover_by_itself() {
        return Verdict::Fail(reason.to_owned());
    }
    let healthy_long_enough = restarts.running_since.is_some_and(|since| {
        (now - since)
            .to_std()
            .is_ok_and(|ran| ran >= backoff.reset_after())
    });
    let before = if healthy_long_enough {
        0
    } else {
        restarts.in_a_row
    };
    if let RestartPolicy::OnFailure { max } = policy
        && before >= max
    {
        return Verdict::Fail(format!("gave up after {before} restarts: {reason}"));
    }
    let attempt = before + 1;
    Verdict::Restart {
        attempt,
        delay: backoff.delay(attempt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn policies_read_and_print_as_docker_writes_them() {
        for (text, policy) in [
            ("no", RestartPolicy::No),
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure { max: 5 }),
            ("on-failure:3", RestartPolicy::OnFailure { max: 3 }),
        ] {
            assert_eq!(text.parse::<RestartPolicy>(), Ok(policy), "{text}");
        }
        assert_eq!(
            RestartPolicy::OnFailure { max: 3 }.to_string(),
            "on-failure:3"
        );
        for bad in [
            "",
            "yes",
            "on-failure:0",
            "on-failure:-1",
            "on-failure:x",
            "always:3",
            "unless-stopped",
        ] {
            let err = bad.parse::<RestartPolicy>().expect_err(bad);
            assert_eq!(err.field, "restart");
            assert!(err.message.contains("on-failure:MAX"), "{err}");
        }
    }

    #[test]
    fn back_off_doubles_from_ten_seconds_to_five_minutes() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (1..=8).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff.delay(u32::MAX).as_secs(), 300);
        assert_eq!(backoff.reset_after().as_secs(), 600);
        let fast = Backoff {
            first: Duration::from_millis(500),
        };
        assert_eq!(fast.delay(3), Duration::from_secs(2));
        assert_eq!(fast.cap(), Duration::from_secs(15));
    }

    #[test]
    fn a_crash_is_restarted_until_max_in_a_row_then_given_up() {
        let policy = RestartPolicy::OnFailure { max: 2 };
        let mut restarts = Restarts {
            running_since: Some(at(0)),
            ..Restarts::default()
        };
        let crash = |r: &Restarts| {
            verdict(
                policy,
                Backoff::default(),
                r,
                FailureCause::Crashed,
                false,
                "exit 3",
                at(5),
            )
        };
        assert_eq!(
            crash(&restarts),
            Verdict::Restart {
                attempt: 1,
                delay: Duration::from_secs(10)
            }
        );
        restarts.in_a_row = 1;
        assert_eq!(
            crash(&restarts),
            Verdict::Restart {
                attempt: 2,
                delay: Duration::from_secs(20)
            }
        );
        restarts.in_a_row = 2;
        assert_eq!(
            crash(&restarts),
            Verdict::Fail("gave up after 2 restarts: exit 3".into())
        );
        // Ten minutes of healthy running forget the row.
        let later = verdict(
            policy,
            Backoff::default(),
            &restarts,
            FailureCause::Crashed,
            false,
            "exit 3",
            at(600),
        );
        assert_eq!(
            later,
            Verdict::Restart {
                attempt: 1,
                delay: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn what_no_restart_can_fix_and_what_the_policy_excludes_stay_failed() {
        let restarts = Restarts::default();
        let judge = |policy, cause, clean| {
            verdict(
                policy,
                Backoff::default(),
                &restarts,
                cause,
                clean,
                "why",
                at(0),
            )
        };
        let fail = Verdict::Fail("why".into());
        assert_eq!(judge(RestartPolicy::No, FailureCause::Crashed, false), fail);
        assert_eq!(
            judge(RestartPolicy::DEFAULT, FailureCause::ImageMissing, false),
            fail
        );
        assert_eq!(
            judge(RestartPolicy::Always, FailureCause::PortHeld, false),
            fail
        );
        assert_eq!(
            judge(RestartPolicy::DEFAULT, FailureCause::Crashed, true),
            fail
        );
        assert!(matches!(
            judge(RestartPolicy::Always, FailureCause::Crashed, true),
            Verdict::Restart { attempt: 1, .. }
        ));
        for cause in [
            FailureCause::Unhealthy,
            FailureCause::Vanished,
            FailureCause::OutOfMemory,
        ] {
            assert!(matches!(
                judge(RestartPolicy::DEFAULT, cause, false),
                Verdict::Restart { .. }
            ));
        }
        // Always has no limit.
        let many = Restarts {
            in_a_row: 1000,
            ..Restarts::default()
        };
        assert!(matches!(
            verdict(
                RestartPolicy::Always,
                Backoff::default(),
                &many,
                FailureCause::Crashed,
                false,
                "why",
                at(0)
            ),
            Verdict::Restart { attempt: 1001, .. }
        ));
    }
}
