//! Login throttling: failed sign-ins are limited per account and per client address, so a password
//! cannot be guessed online and one address cannot spray many accounts.
//!
//! Pure logic; time is a parameter. Limits: 5 failures per account and 20 per address within a
//! 15-minute sliding window (OWASP's guidance for interactive logins); a success clears the
//! account's failures.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_FAILURES_PER_ACCOUNT: usize = 5;
pub const MAX_FAILURES_PER_ADDRESS: usize = 20;
/// Beyond this many tracked keys the oldest windows are pruned, bounding memory under a flood.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<String, VecDeque<Instant>>,
}

fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

impl LoginThrottle {
    /// `Err(retry_after)` when this account or address has too many recent failures.
    pub fn check(&mut self, now: Instant, email: &str, address: &str) -> Result<(), Duration> {
        let mut wait = None;
        for (key, limit) in [
            (account_key(email), MAX_FAILURES_PER_ACCOUNT),
            (address_key(address), MAX_FAILURES_PER_ADDRESS),
        ] {
            if let Some(times) = self.failures.get_mut(&key) {
                while times
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
                {
                    times.pop_front();
                }
                if times.len() >= limit {
                    // Allowed again when the oldest failure in the window ages out.
                    let until = times.front().map_or(Duration::ZERO, |t| {
                        WINDOW.saturating_sub(now.saturating_duration_since(*t))
                    });
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    pub fn record_failure(&mut self, now: Instant, email: &str, address: &str) {
        if self.failures.len() >= MAX_KEYS {
            self.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
            });
        }
        for key in [account_key(email), address_key(address)] {
            self.failures.entry(key).or_default().push_back(now);
        }
    }

    pub fn record_success(&mut self, email: &str) {
        self.failures.remove(&account_key(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_attempt_on_an_account_within_the_window_is_refused_until_the_oldest_failure_ages_out()
     {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(
                throttle.check(t0 + Duration::from_secs(i), "A@x.example", "192.0.2.7"),
                Ok(())
            );
            throttle.record_failure(t0 + Duration::from_secs(i), "a@x.example", "192.0.2.7");
        }
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            throttle.check(later, "a@x.example", "198.51.100.9"),
            Err(WINDOW - Duration::from_secs(60))
        );
        assert_eq!(
            throttle.check(t0 + WINDOW, "a@x.example", "198.51.100.9"),
            Ok(())
        );
    }

    #[test]
    fn one_address_cannot_spray_many_accounts() {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..20 {
            throttle.record_failure(t0, &format!("user{i}@x.example"), "203.0.113.5");
        }
        assert!(
            throttle
                .check(t0, "fresh@x.example", "203.0.113.5")
                .is_err()
        );
        assert_eq!(throttle.check(t0, "fresh@x.example", "203.0.113.6"), Ok(()));
    }

    #[test]
    fn a_success_clears_the_accounts_failures() {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.record_failure(t0, "a@x.example", "192.0.2.7");
        }
        throttle.record_success("a@x.example");
        for _ in 0..4 {
            throttle.record_failure(t0, "a@x.example", "192.0.2.7");
        }
        assert_eq!(throttle.check(t0, "a@x.example", "192.0.2.8"), Ok(()));
    }
}
