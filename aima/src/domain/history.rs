//! The last hour, a minute at a time: gateway requests, errors, completion tokens and
//! how fast they came, and the GPU and host memory services claimed. The dashboard's
//! charts read it (`GET /api/v1/history`). Pure bookkeeping; the gateway feeds it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// Minutes kept.
pub const MINUTES_KEPT: usize = 60;

/// One minute.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Minute {
    pub start: DateTime<Utc>,
    /// Requests that ended in this minute, and how many of them failed (status ≥ 400).
    pub requests: u64,
    pub errors: u64,
    pub completion_tokens: u64,
    /// Time spent generating those tokens (after a stream's first token).
    pub generating: Duration,
    /// The most memory claimed on each GPU (by index) in this minute, MiB.
    pub gpu_claimed_mib: BTreeMap<u32, u64>,
    /// The most host memory claimed by engines on the CPU in this minute, MiB.
    pub host_claimed_mib: Option<u64>,
}

impl Minute {
    /// Completion tokens per second of generating in this minute.
    pub fn tokens_per_second(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // token counts stay far below 2^52
        (!self.generating.is_zero())
            .then(|| self.completion_tokens as f64 / self.generating.as_secs_f64())
    }
}

/// The last [`MINUTES_KEPT`] minutes, oldest first.
#[derive(Debug, Default)]
pub struct History {
    minutes: VecDeque<Minute>,
}

impl History {
    /// The minute `now` falls in, begun if it is new.
    fn minute(&mut self, now: DateTime<Utc>) -> &mut Minute {
        let start = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        if self.minutes.back().is_none_or(|m| m.start < start) {
            self.minutes.push_back(Minute {
                start,
                ..Minute::default()
            });
            while self.minutes.len() > MINUTES_KEPT {
                self.minutes.pop_front();
            }
        }
        // A clock stepped back lands in the newest minute.
        self.minutes.back_mut().expect("a minute was just ensured")
    }

    /// A request ended.
    pub fn request(
        &mut self,
        now: DateTime<Utc>,
        status: u16,
        completion: u64,
        generating: Duration,
    ) {
        let minute = self.minute(now);
        minute.requests += 1;
        if status >= 400 {
            minute.errors += 1;
        }
        minute.completion_tokens += completion;
        minute.generating += generating;
    }

    /// What the services claim now.
    pub fn memory(&mut self, now: DateTime<Utc>, gpus: &BTreeMap<u32, u64>, host: Option<u64>) {
        let minute = self.minute(now);
        for (index, mib) in gpus {
            let most = minute.gpu_claimed_mib.entry(*index).or_default();
            *most = (*most).max(*mib);
        }
        if let Some(host) = host {
            minute.host_claimed_mib = Some(minute.host_claimed_mib.unwrap_or(0).max(host));
        }
    }

    /// The minutes of the last hour before `now`, oldest first.
    pub fn last_hour(&self, now: DateTime<Utc>) -> Vec<Minute> {
        let since = now - TimeDelta::minutes(MINUTES_KEPT as i64);
        self.minutes
            .iter()
            .filter(|m| m.start + TimeDelta::minutes(1) > since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_memory_land_in_their_minute_and_an_hour_is_kept() {
        let t0: DateTime<Utc> = "2026-12-03T10:00:10Z".parse().expect("time");
        let mut history = History::default();
        history.request(t0, 200, 100, Duration::from_secs(2));
        history.request(t0 + TimeDelta::seconds(30), 503, 0, Duration::ZERO);
        history.memory(t0, &BTreeMap::from([(0, 1000)]), None);
        history.memory(
            t0 + TimeDelta::seconds(5),
            &BTreeMap::from([(0, 800), (1, 5)]),
            Some(7),
        );
        history.request(t0 + TimeDelta::seconds(60), 200, 10, Duration::from_secs(1));
        let minutes = history.last_hour(t0 + TimeDelta::seconds(61));
        assert_eq!(minutes.len(), 2);
        assert_eq!((minutes[0].requests, minutes[0].errors), (2, 1));
        assert_eq!(minutes[0].tokens_per_second(), Some(50.0));
        assert_eq!(
            minutes[0].gpu_claimed_mib,
            BTreeMap::from([(0, 1000), (1, 5)])
        );
        assert_eq!(minutes[0].host_claimed_mib, Some(7));
        assert_eq!(
            minutes[1].start,
            "2026-12-03T10:01:00Z".parse::<DateTime<Utc>>().expect("t")
        );
        // Two hours on, one minute is left, and only the newest sixty are ever kept.
        for m in 0..100 {
            history.request(t0 + TimeDelta::minutes(120 + m), 200, 1, Duration::ZERO);
        }
        let later = history.last_hour(t0 + TimeDelta::minutes(220));
        assert_eq!(later.len(), MINUTES_KEPT);
        assert_eq!(later[0].tokens_per_second(), None);
    }
}
