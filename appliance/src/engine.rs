//! Which uplink carries the practice's traffic.
//!
//! Design: a pure state machine. The driver feeds it `(now, Input)` and carries out the returned
//! [`Action`]s; it sleeps until [`Engine::next_deadline`] and then feeds [`Input::Tick`]. Nothing
//! here reads a clock or touches a socket, so hours of link behaviour replay in microseconds in tests.
//!
//! Each uplink's health is an enum ([`Health`]) carrying its own counters:
//! - A probe *round* sends one probe to every target through the uplink. A round passes when a
//!   majority of targets answer, so one dead or rate-limited target never fails an uplink.
//! - [`DOWN_AFTER_FAILED_ROUNDS`] consecutive failed rounds mark it down; a lost carrier marks it
//!   down at once.
//! - [`UP_AFTER_PASSED_ROUNDS`] consecutive passed rounds mark it up again.
//! - The active uplink is the most preferred (lowest priority number) uplink that is up. Moving away
//!   from a failed active uplink happens immediately; moving back to a preferred uplink waits until
//!   it has been up for the failback clean period, so a line that flaps does not drag traffic back
//!   and forth.

use std::time::{Duration, Instant};

use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::UplinkHealth;

/// Two failed rounds: one lost round is common on a lossy line; two in a row at a 1 s probe interval
/// still detects a dead uplink in about two seconds.
pub const DOWN_AFTER_FAILED_ROUNDS: u32 = 2;
/// Three clean rounds before an uplink counts as up again, so a single lucky answer from a dying
/// line does not resurrect it.
pub const UP_AFTER_PASSED_ROUNDS: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct UplinkSpec {
    pub name: String,
    pub priority: u8,
    pub metered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No round completed yet.
    Unknown,
    Up {
        since: Instant,
        failed_rounds: u32,
    },
    Down {
        since: Instant,
        passed_rounds: u32,
        carrier_lost: bool,
    },
}

impl Health {
    pub fn as_wire(self) -> UplinkHealth {
        match self {
            Health::Unknown => UplinkHealth::Unknown,
            Health::Up {
                failed_rounds: 0, ..
            } => UplinkHealth::Up,
            Health::Up { .. } => UplinkHealth::Degraded,
            Health::Down { .. } => UplinkHealth::Down,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One probe round through `uplink` (index into the specs): how many targets answered.
    ProbeRound {
        uplink: usize,
        answered: usize,
        sent: usize,
    },
    Carrier {
        uplink: usize,
        up: bool,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Route the practice's traffic through this uplink (`None`: no uplink is usable).
    Activate(Option<String>),
    Emit(ApplianceEvent),
}

#[derive(Debug)]
pub struct Engine {
    specs: Vec<UplinkSpec>,
    health: Vec<Health>,
    active: Option<usize>,
    failback_clean_period: Duration,
}

impl Engine {
    pub fn new(specs: Vec<UplinkSpec>, failback_clean_period: Duration) -> Self {
        let health = vec![Health::Unknown; specs.len()];
        Self {
            specs,
            health,
            active: None,
            failback_clean_period,
        }
    }

    pub fn specs(&self) -> &[UplinkSpec] {
        &self.specs
    }

    pub fn health(&self, uplink: usize) -> Health {
        self.health.get(uplink).copied().unwrap_or(Health::Unknown)
    }

    pub fn active(&self) -> Option<&str> {
        self.active.map(|i| self.specs[i].name.as_str())
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::ProbeRound {
                uplink,
                answered,
                sent,
            } if uplink < self.specs.len() => {
                let passed = sent > 0 && answered * 2 > sent;
                self.record_round(now, uplink, passed, &mut actions);
            }
            Input::Carrier { uplink, up } if uplink < self.specs.len() => {
                if !up && !matches!(self.health[uplink], Health::Down { .. }) {
                    self.health[uplink] = Health::Down {
                        since: now,
                        passed_rounds: 0,
                        carrier_lost: true,
                    };
                    actions.push(self.event(
                        EventKind::UplinkDown,
                        Some(uplink),
                        "carrier lost".into(),
                    ));
                } else if let Health::Down { carrier_lost, .. } = &mut self.health[uplink] {
                    // Carrier back: probes still have to prove the uplink before it is used.
                    *carrier_lost = !up;
                }
            }
            Input::ProbeRound { .. } | Input::Carrier { .. } | Input::Tick => {}
        }
        self.select(now, &mut actions);
        actions
    }

    /// When the engine next needs a [`Input::Tick`]: the moment a preferred uplink completes its
    /// clean period.
    pub fn next_deadline(&self) -> Option<Instant> {
        let active_priority = self.active.map(|i| self.specs[i].priority);
        self.specs
            .iter()
            .zip(&self.health)
            .filter(|(spec, _)| active_priority.is_none_or(|p| spec.priority < p))
            .filter_map(|(_, health)| match health {
                Health::Up { since, .. } => Some(*since + self.failback_clean_period),
                _ => None,
            })
            .min()
    }

    fn record_round(
        &mut self,
        now: Instant,
        uplink: usize,
        passed: bool,
        actions: &mut Vec<Action>,
    ) {
        let next = match (self.health[uplink], passed) {
            (Health::Unknown, true) => Health::Up {
                since: now,
                failed_rounds: 0,
            },
            (Health::Unknown, false) => Health::Down {
                since: now,
                passed_rounds: 0,
                carrier_lost: false,
            },
            (Health::Up { since, .. }, true) => Health::Up {
                since,
                failed_rounds: 0,
            },
            (
                Health::Up {
                    since,
                    failed_rounds,
                },
                false,
            ) => {
                if failed_rounds + 1 >= DOWN_AFTER_FAILED_ROUNDS {
                    actions.push(self.event(
                        EventKind::UplinkDown,
                        Some(uplink),
                        format!("{DOWN_AFTER_FAILED_ROUNDS} consecutive probe rounds without a majority of targets answering"),
                    ));
                    Health::Down {
                        since: now,
                        passed_rounds: 0,
                        carrier_lost: false,
                    }
                } else {
                    Health::Up {
                        since,
                        failed_rounds: failed_rounds + 1,
                    }
                }
            }
            (
                Health::Down {
                    carrier_lost: true,
                    since,
                    ..
                },
                _,
            ) => Health::Down {
                since,
                passed_rounds: 0,
                carrier_lost: true,
            },
            (
                Health::Down {
                    since,
                    passed_rounds,
                    ..
                },
                true,
            ) => {
                if passed_rounds + 1 >= UP_AFTER_PASSED_ROUNDS {
                    actions.push(self.event(
                        EventKind::UplinkUp,
                        Some(uplink),
                        format!("{UP_AFTER_PASSED_ROUNDS} consecutive clean probe rounds"),
                    ));
                    Health::Up {
                        since: now,
                        failed_rounds: 0,
                    }
                } else {
                    Health::Down {
                        since,
                        passed_rounds: passed_rounds + 1,
                        carrier_lost: false,
                    }
                }
            }
            (Health::Down { since, .. }, false) => Health::Down {
                since,
                passed_rounds: 0,
                carrier_lost: false,
            },
        };
        self.health[uplink] = next;
    }

    fn select(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let is_up = |i: usize| matches!(self.health[i], Health::Up { .. });
        let best_up = (0..self.specs.len())
            .filter(|&i| is_up(i))
            .min_by_key(|&i| (self.specs[i].priority, i));
        let choice = match (self.active, best_up) {
            // Failing over away from a dead active uplink is never delayed.
            (Some(active), _) if !is_up(active) => best_up,
            (Some(active), Some(best))
                if self.specs[best].priority < self.specs[active].priority =>
            {
                let clean_since = match self.health[best] {
                    Health::Up { since, .. } => since,
                    _ => now,
                };
                if now.duration_since(clean_since) >= self.failback_clean_period {
                    Some(best)
                } else {
                    Some(active)
                }
            }
            (Some(active), _) => Some(active),
            (None, best) => best,
        };
        if choice == self.active {
            return;
        }
        let from = self.active.map(|i| self.specs[i].name.clone());
        let to = choice.map(|i| self.specs[i].name.clone());
        let kind = match (self.active, choice) {
            (Some(old), Some(new)) if self.specs[new].priority < self.specs[old].priority => {
                EventKind::Failback
            }
            _ => EventKind::Failover,
        };
        let reason = match (kind, &from) {
            (_, None) => "first usable uplink".to_owned(),
            (EventKind::Failback, _) => format!(
                "preferred uplink clean for {} s",
                self.failback_clean_period.as_secs()
            ),
            _ if choice.is_none() => "no uplink is usable".to_owned(),
            _ => "active uplink down".to_owned(),
        };
        self.active = choice;
        actions.push(Action::Activate(to.clone()));
        if from.is_some() {
            actions.push(Action::Emit(ApplianceEvent {
                kind,
                uplink: None,
                from,
                to,
                reason,
            }));
        }
    }

    fn event(&self, kind: EventKind, uplink: Option<usize>, reason: String) -> Action {
        Action::Emit(ApplianceEvent {
            kind,
            uplink: uplink.map(|i| self.specs[i].name.clone()),
            from: None,
            to: None,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Duration = Duration::from_secs(30);

    fn engine() -> Engine {
        Engine::new(
            vec![
                UplinkSpec {
                    name: "fiber".into(),
                    priority: 0,
                    metered: false,
                },
                UplinkSpec {
                    name: "lte".into(),
                    priority: 1,
                    metered: true,
                },
            ],
            CLEAN,
        )
    }

    fn round(engine: &mut Engine, now: Instant, uplink: usize, answered: usize) -> Vec<Action> {
        engine.handle(
            now,
            Input::ProbeRound {
                uplink,
                answered,
                sent: 3,
            },
        )
    }

    fn kinds(actions: &[Action]) -> Vec<EventKind> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(e) => Some(e.kind),
                Action::Activate(_) => None,
            })
            .collect()
    }

    /// Both uplinks healthy from t0; returns t0.
    fn healthy(engine: &mut Engine) -> Instant {
        let t0 = Instant::now();
        round(engine, t0, 0, 3);
        round(engine, t0, 1, 3);
        t0
    }

    #[test]
    fn the_preferred_uplink_becomes_active_once_it_answers() {
        let mut engine = engine();
        let t0 = Instant::now();
        assert_eq!(
            round(&mut engine, t0, 0, 3),
            vec![Action::Activate(Some("fiber".into()))]
        );
        assert_eq!(engine.active(), Some("fiber"));
    }

    #[test]
    fn one_dead_target_out_of_three_never_fails_an_uplink() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        for s in 1..100 {
            let actions = round(&mut engine, t0 + Duration::from_secs(s), 0, 2);
            assert!(actions.is_empty(), "{actions:?}");
        }
        assert_eq!(engine.active(), Some("fiber"));
    }

    #[test]
    fn a_single_lost_round_does_not_fail_over() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        assert!(round(&mut engine, t0 + Duration::from_secs(1), 0, 0).is_empty());
        assert!(round(&mut engine, t0 + Duration::from_secs(2), 0, 3).is_empty());
        assert_eq!(engine.active(), Some("fiber"));
    }

    #[test]
    fn two_failed_rounds_fail_over_to_the_backup_at_once() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        round(&mut engine, t0 + Duration::from_secs(1), 0, 0);
        let actions = round(&mut engine, t0 + Duration::from_secs(2), 0, 0);
        assert_eq!(
            kinds(&actions),
            vec![EventKind::UplinkDown, EventKind::Failover]
        );
        assert!(actions.contains(&Action::Activate(Some("lte".into()))));
        assert_eq!(engine.active(), Some("lte"));
    }

    #[test]
    fn losing_carrier_fails_over_without_waiting_for_probes() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        let actions = engine.handle(
            t0 + Duration::from_millis(10),
            Input::Carrier {
                uplink: 0,
                up: false,
            },
        );
        assert_eq!(
            kinds(&actions),
            vec![EventKind::UplinkDown, EventKind::Failover]
        );
        assert_eq!(engine.active(), Some("lte"));
    }

    #[test]
    fn failback_waits_for_the_clean_period_and_its_deadline_is_announced() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        round(&mut engine, t0 + Duration::from_secs(1), 0, 0);
        round(&mut engine, t0 + Duration::from_secs(2), 0, 0);
        for s in 3..6 {
            round(&mut engine, t0 + Duration::from_secs(s), 0, 3);
        }
        // Up again at t0+5 s: failback is due at t0+35 s, not before.
        assert_eq!(
            engine.next_deadline(),
            Some(t0 + Duration::from_secs(5) + CLEAN)
        );
        assert!(
            engine
                .handle(t0 + Duration::from_secs(34), Input::Tick)
                .is_empty()
        );
        let actions = engine.handle(t0 + Duration::from_secs(35), Input::Tick);
        assert_eq!(kinds(&actions), vec![EventKind::Failback]);
        assert_eq!(engine.active(), Some("fiber"));
        assert_eq!(engine.next_deadline(), None);
    }

    #[test]
    fn a_flap_during_the_clean_period_restarts_it() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        round(&mut engine, t0 + Duration::from_secs(1), 0, 0);
        round(&mut engine, t0 + Duration::from_secs(2), 0, 0);
        for s in 3..6 {
            round(&mut engine, t0 + Duration::from_secs(s), 0, 3);
        }
        round(&mut engine, t0 + Duration::from_secs(20), 0, 0);
        round(&mut engine, t0 + Duration::from_secs(21), 0, 0);
        assert!(
            engine
                .handle(t0 + Duration::from_secs(36), Input::Tick)
                .is_empty()
        );
        assert_eq!(engine.active(), Some("lte"));
    }

    #[test]
    fn with_every_uplink_down_nothing_is_active() {
        let mut engine = engine();
        let t0 = healthy(&mut engine);
        engine.handle(
            t0,
            Input::Carrier {
                uplink: 0,
                up: false,
            },
        );
        let actions = engine.handle(
            t0,
            Input::Carrier {
                uplink: 1,
                up: false,
            },
        );
        assert!(actions.contains(&Action::Activate(None)));
        assert_eq!(engine.active(), None);
    }
}
