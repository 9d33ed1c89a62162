//! Whether the cloud can hear its appliances, and since when: an appliance is declared offline only
//! when the cloud could have heard it and did not.
//!
//! Design: `last_seen` stops moving for every appliance at once whenever the cloud itself is deaf —
//! the process restarted, the broker restarted or is unreachable, PostgreSQL is down and ingest is
//! retrying. Judging silence then raises an "appliance offline" alert for the whole fleet. So the
//! heartbeat sweep asks [`Hearing::may_declare_offline`]: not while deaf, and not until a grace
//! period has passed since hearing resumed, long enough for a fleet to reconnect (the appliances'
//! reconnect backoff tops out at 30 s, with jitter) and for ingest to drain what queued meanwhile.
//! A cloud start counts as hearing resumed. Time is a parameter; the sweep passes the wall clock.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug)]
pub struct Hearing {
    grace: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Why the cloud cannot hear now, if it cannot.
    deaf: Option<&'static str>,
    /// When hearing last resumed (or the cloud started).
    since: DateTime<Utc>,
}

impl Hearing {
    /// A cloud that starts hearing at `now`, declaring nobody offline for `grace` after any
    /// resumption.
    pub fn new(now: DateTime<Utc>, grace: std::time::Duration) -> Self {
        Self {
            grace: Duration::from_std(grace).unwrap_or(Duration::MAX),
            state: Mutex::new(State {
                deaf: None,
                since: now,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cloud cannot hear its appliances (`why` is a stable reason for the log).
    pub fn deaf(&self, why: &'static str) {
        let mut state = self.state();
        if state.deaf.is_none() {
            tracing::warn!(
                why,
                "the cloud cannot hear its appliances; nobody is declared offline meanwhile"
            );
        }
        state.deaf = Some(why);
    }

    /// The cloud hears its appliances again (a message was stored, the broker is connected).
    pub fn hearing(&self, now: DateTime<Utc>) {
        let mut state = self.state();
        if let Some(why) = state.deaf.take() {
            tracing::info!(
                was = why,
                grace_secs = self.grace.num_seconds(),
                "the cloud hears its appliances again"
            );
            state.since = now;
        }
    }

    /// True when silence can be held against an appliance.
    pub fn may_declare_offline(&self, now: DateTime<Utc>) -> bool {
        let state = *self.state();
        state.deaf.is_none() && now >= state.since + self.grace
    }
}

/// A fleet-wide silence: at least this many appliances went silent together ...
pub const FLEET_SILENCE_MIN: i64 = 5;

/// ... and they are at least half of the appliances believed online. Then the cloud, not the
/// fleet, has lost its hearing (a blocked broker port, a network fault in front of the cloud).
pub fn is_fleet_wide_silence(silent: i64, online: i64) -> bool {
    silent >= FLEET_SILENCE_MIN && silent * 2 >= online
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn nobody_is_declared_offline_during_the_grace_period_after_a_start() {
        let hearing = Hearing::new(at(0), std::time::Duration::from_secs(90));
        assert!(!hearing.may_declare_offline(at(89)));
        assert!(hearing.may_declare_offline(at(90)));
    }

    #[test]
    fn deafness_suspends_judgement_and_the_grace_restarts_when_hearing_resumes() {
        let hearing = Hearing::new(at(0), std::time::Duration::from_secs(90));
        hearing.deaf("database");
        assert!(!hearing.may_declare_offline(at(500)));
        hearing.deaf("database");
        hearing.hearing(at(600));
        assert!(!hearing.may_declare_offline(at(689)));
        assert!(hearing.may_declare_offline(at(690)));
        hearing.hearing(at(700));
        assert!(
            hearing.may_declare_offline(at(701)),
            "hearing while hearing changes nothing"
        );
    }

    #[test]
    fn a_few_silent_boxes_are_theirs_but_most_of_the_fleet_at_once_is_the_clouds() {
        assert!(
            !is_fleet_wide_silence(1, 1),
            "one box of one is its own problem"
        );
        assert!(!is_fleet_wide_silence(4, 5));
        assert!(!is_fleet_wide_silence(5, 20));
        assert!(is_fleet_wide_silence(10, 20));
        assert!(is_fleet_wide_silence(20, 20));
    }
}
