//! The current time, as a value passed in rather than read from the system inside domain code.
//!
//! Production uses [`Clock::system`]. Tests use [`Clock::following_tokio`]: it starts at a chosen
//! wall-clock instant and advances with Tokio's clock, so a test on paused time
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) moves sweeps, escalations,
//! digests and heartbeats forward by hours without sleeping.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    System,
    FollowsTokio {
        start: DateTime<Utc>,
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that reads `start` now and then advances exactly as Tokio's clock does (paused
    /// and advanced by tests, or real time otherwise).
    pub fn following_tokio(start: DateTime<Utc>) -> Self {
        Self(Source::FollowsTokio {
            start,
            origin: tokio::time::Instant::now(),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => Utc::now(),
            Source::FollowsTokio { start, origin } => {
                let elapsed =
                    chrono::Duration::from_std(origin.elapsed()).unwrap_or(chrono::Duration::MAX);
                *start + elapsed
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_tokio_advances_with_paused_time() {
        let start: DateTime<Utc> = "2026-12-03T09:00:00Z".parse().expect("time");
        let clock = Clock::following_tokio(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), start + chrono::Duration::hours(1));
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let before = Utc::now();
        let read = Clock::system().now();
        assert!(read >= before && read <= Utc::now());
    }
}
