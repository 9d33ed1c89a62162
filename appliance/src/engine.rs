//! Which uplink carries the practice's traffic, when to probe, and when to move flows.
//!
//! Design: a pure state machine. The driver feeds it `(now, Input)` and carries out the returned
//! [`Action`]s; it sleeps until [`Engine::next_deadline`] and then feeds [`Input::Tick`]. Nothing
//! here reads a clock or touches a socket, so a simulated day of probing replays in a second.
//!
//! **Probing.** The engine schedules every probe itself ([`Action::Probe`]): each uplink is probed
//! through itself, rotating over the targets. An uplink that carries traffic, or that costs nothing
//! to probe, gets one probe every [`EngineConfig::probe_spacing`] (40 ms: with four targets each
//! target sees a probe every 160 ms). A metered uplink on standby is probed on a budget: the health
//! probes' share of the monthly budget ([`crate::probe_cost`]), spent at
//! [`EngineConfig::metered_standby_interval`] per probe of mean cost, each budgeted probe followed by
//! a pause in proportion to its own cost ([`EngineConfig::target_bytes`]) — an HTTPS target costs a
//! hundred and fifty ICMP echoes, so it waits that much longer and the month's total holds whatever
//! the mix of targets.
//!
//! **Detection.** An uplink is usable while at least [`EngineConfig::quorum`] targets have answered
//! within the last [`EngineConfig::silence_window`]. A lost probe on its own proves nothing: only
//! silence across the quorum does. The deadline at which the quorum would be lost is exact (the
//! quorum-th most recent answer plus the window), so a blackholed uplink is declared down 700 ms
//! after its last answer, not at the next polling tick. Because any live target keeps the uplink up,
//! one dead or rate-limited target never fails it; with 10 % loss each way (81 % of probes answered)
//! and three live targets, all three stay silent for 700 ms with probability ≈ (0.19^4.4)^3 ≈ 3e-10
//! per check — once in several hundred simulated years. Loss of carrier marks an uplink down at once.
//!
//! **Recovery and failback.** A down uplink counts as up again after its quorum has held without a
//! break for [`EngineConfig::recovery_period`] (2 s: one lucky answer through a dying line is not
//! enough). Traffic moves back to a more preferred uplink only after it has been up for the
//! failback hold, which starts at [`EngineConfig::failback_clean_period`] (30 s, longer than a
//! DSL/cable retrain plus DHCP) and doubles, up to [`EngineConfig::max_failback_hold`], each time
//! the uplink fails again within [`FLAP_MEMORY`] of being failed back to. Failing over away from a
//! dead active uplink is never delayed by that damping.
//!
//! **Flows.** When traffic leaves an uplink because it failed, the flows NATed out of it are flushed
//! ([`Action::FlushFlows`]) so clients reconnect at once instead of hanging on a dead path. When
//! traffic leaves a metered uplink, its flows are flushed too, so nothing stays stranded on the
//! expensive link.
//!
//! **Drills.** A drill forces traffic onto the best backup for a given time and then moves it back;
//! it is an input like any other and produces `drill_started` / `drill_finished` events. A backup
//! probed on its budget is re-checked at full cadence first and traffic moves only once it has
//! answered: its last budgeted answer is seconds old by design, which says nothing about whether it
//! is dead, and judging it by the short silence window would fail every drill of a metered backup.

use std::time::{Duration, Instant};

use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::UplinkHealth;

/// A day of flapping is remembered for this long: failing again within it doubles the failback hold.
pub const FLAP_MEMORY: Duration = Duration::from_secs(10 * 60);
/// After this long up without a failure the failback hold returns to the base clean period.
pub const FLAP_FORGIVENESS: Duration = Duration::from_secs(60 * 60);

/// The default monthly budget of a metered uplink on standby (`policy.metered_budget_mb`), shared
/// between health probes and application checks ([`crate::probe_cost`]).
pub const METERED_MONTHLY_BUDGET_BYTES: u64 = 30_000_000;
/// The oldest a metered standby uplink's health should be (met with ICMP targets at the default
/// budget; a budget or a target mix that cannot meet it keeps the budget).
pub const METERED_MAX_STALENESS: Duration = Duration::from_secs(10);
const MONTH: Duration = crate::probe_cost::MONTH;

/// The slowest probe cadence on a metered standby uplink that stays within `budget_bytes` a month,
/// capped at `max_staleness`. Errs on the side of the budget.
pub fn metered_standby_interval(
    budget_bytes: u64,
    bytes_per_probe: u64,
    max_staleness: Duration,
) -> Duration {
    let probes_allowed = (budget_bytes / bytes_per_probe.max(1)).max(1);
    let fastest = Duration::from_secs_f64(MONTH.as_secs_f64() / probes_allowed as f64);
    // Round up to whole 100 ms so the figure in the log is the figure in effect.
    let fastest = Duration::from_millis(fastest.as_millis().div_ceil(100) as u64 * 100);
    fastest
        .max(Duration::from_millis(100))
        .min(max_staleness)
        .max(fastest)
}

/// Bytes a month that probing every `interval` costs.
pub fn monthly_probe_bytes(interval: Duration, bytes_per_probe: u64) -> u64 {
    (MONTH.as_secs_f64() / interval.as_secs_f64()) as u64 * bytes_per_probe
}

#[derive(Debug, Clone, PartialEq)]
pub struct UplinkSpec {
    pub name: String,
    pub priority: u8,
    pub metered: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub uplinks: Vec<UplinkSpec>,
    /// Probe targets per uplink.
    pub targets: usize,
    /// Time between two probes on one uplink (the targets take turns).
    pub probe_spacing: Duration,
    /// A probe not answered within this is lost.
    pub probe_timeout: Duration,
    pub silence_window: Duration,
    /// Targets that must have answered within the silence window.
    pub quorum: usize,
    pub recovery_period: Duration,
    pub failback_clean_period: Duration,
    pub max_failback_hold: Duration,
    /// Probe cadence of a metered uplink on standby, for a probe of the targets' mean cost.
    pub metered_standby_interval: Duration,
    /// What a probe of each target costs (IP bytes, both ways; [`crate::probe_cost`]): on a budget,
    /// the pause after a probe is `metered_standby_interval` scaled by its target's cost over the
    /// mean.
    pub target_bytes: Vec<u64>,
}

impl EngineConfig {
    /// Defaults for `uplinks` probed through `targets` targets each.
    pub fn new(uplinks: Vec<UplinkSpec>, targets: usize) -> Self {
        let targets = targets.max(1);
        Self {
            uplinks,
            targets,
            probe_spacing: Duration::from_millis(40),
            probe_timeout: Duration::from_millis(1000),
            silence_window: Duration::from_millis(700),
            quorum: 1,
            recovery_period: Duration::from_secs(2),
            failback_clean_period: Duration::from_secs(30),
            max_failback_hold: Duration::from_secs(15 * 60),
            metered_standby_interval: metered_standby_interval(
                crate::probe_cost::health_budget_bytes(METERED_MONTHLY_BUDGET_BYTES),
                crate::probe_cost::ICMP_ECHO_BYTES,
                METERED_MAX_STALENESS,
            ),
            target_bytes: vec![crate::probe_cost::ICMP_ECHO_BYTES; targets],
        }
    }

    /// Probes `targets` of these costs (one per target); the metered standby cadence follows their
    /// mean within the health probes' share of `budget_bytes` a month.
    pub fn with_target_costs(mut self, target_bytes: Vec<u64>, budget_bytes: u64) -> Self {
        self.targets = target_bytes.len().max(1);
        self.metered_standby_interval = metered_standby_interval(
            crate::probe_cost::health_budget_bytes(budget_bytes),
            crate::probe_cost::mean_cost(&target_bytes),
            METERED_MAX_STALENESS,
        );
        self.target_bytes = target_bytes;
        self
    }

    /// The pause after a budgeted probe of `target`.
    fn budgeted_pause(&self, target: usize) -> Duration {
        let mean = crate::probe_cost::mean_cost(&self.target_bytes);
        let cost = self.target_bytes.get(target).copied().unwrap_or(mean);
        self.metered_standby_interval
            .mul_f64(cost as f64 / mean.max(1) as f64)
    }

    /// The longest pause after a budgeted probe.
    fn longest_budgeted_pause(&self) -> Duration {
        (0..self.targets)
            .map(|t| self.budgeted_pause(t))
            .max()
            .unwrap_or(self.metered_standby_interval)
            .max(self.metered_standby_interval)
    }

    /// How long a metered standby uplink may stay silent before it counts as down: ten probe
    /// intervals (≈ 49 s). On a budget, few probes fit in any window; with 10 % loss each way, ten
    /// straight losses happen with probability 0.19^10 ≈ 6e-8 per probe — about once in three
    /// years. A standby's verdict matters only when the primary fails, and from that moment it is
    /// probed at full cadence.
    fn metered_silence_window(&self) -> Duration {
        self.metered_standby_interval * 10
    }
}

/// Health of one uplink. Each state carries what its transitions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet.
    Unknown {
        since: Instant,
    },
    Up {
        since: Instant,
    },
    /// `recovering_since`: the quorum has held without a break since then.
    Down {
        since: Instant,
        recovering_since: Option<Instant>,
        carrier_lost: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    ProbeAnswered {
        uplink: usize,
        target: usize,
        rtt: Duration,
    },
    ProbeLost {
        uplink: usize,
        target: usize,
    },
    Carrier {
        uplink: usize,
        up: bool,
    },
    StartDrill {
        duration: Duration,
    },
    StopDrill,
    /// An operator asks to return to the most preferred healthy uplink without waiting for the
    /// failback hold (ends a running drill too).
    FailBackNow,
    /// New detection and failback settings from the cloud's policy.
    Retune(Tunables),
    Tick,
}

/// The settings a policy may change while the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    pub silence_window: Duration,
    pub quorum: usize,
    pub recovery_period: Duration,
    pub failback_clean_period: Duration,
    pub max_failback_hold: Duration,
    pub metered_standby_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send one probe through `uplink` to `target`; report the outcome as an input.
    Probe {
        uplink: usize,
        target: usize,
    },
    /// Route the LAN's traffic through this uplink (`None`: no uplink is usable).
    Activate {
        uplink: Option<usize>,
    },
    /// Delete the connection-tracking state of flows NATed out of this uplink.
    FlushFlows {
        uplink: usize,
    },
    Emit(ApplianceEvent),
}

#[derive(Debug, Clone)]
struct UplinkState {
    health: Health,
    /// Last answer per target.
    last_answer: Vec<Option<Instant>>,
    /// Probes lost in a row per target; a budgeted uplink skips targets that stopped answering.
    consecutive_losses: Vec<u32>,
    /// When the uplink last moved from budgeted to full-cadence probing: the short silence window
    /// counts from then, not from an answer that was old by design.
    fast_since: Option<Instant>,
    next_probe_at: Instant,
    next_target: usize,
    /// Current failback hold and when traffic last failed back to this uplink.
    failback_hold: Duration,
    failed_back_at: Option<Instant>,
    /// Probes sent and answered since the last [`Engine::take_counts`].
    sent: u64,
    answered: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Drill {
    /// How long traffic stays on the backup once it has moved.
    duration: Duration,
    phase: DrillPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrillPhase {
    /// The backup was probed on its budget, so its last answers may be seconds old: it is probed at
    /// full cadence from `since`, and traffic moves once a quorum of its targets has answered since
    /// then. If it stays silent for a silence window, the drill fails for that reason.
    Rechecking { backup: usize, since: Instant },
    /// Traffic is on the backup until `until`.
    OnBackup { until: Instant },
}

#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    uplinks: Vec<UplinkState>,
    active: Option<usize>,
    drill: Option<Drill>,
}

impl Engine {
    pub fn new(now: Instant, config: EngineConfig) -> Self {
        let uplinks = config
            .uplinks
            .iter()
            .map(|_| UplinkState {
                health: Health::Unknown { since: now },
                last_answer: vec![None; config.targets],
                consecutive_losses: vec![0; config.targets],
                fast_since: None,
                next_probe_at: now,
                next_target: 0,
                failback_hold: config.failback_clean_period,
                failed_back_at: None,
                sent: 0,
                answered: 0,
            })
            .collect();
        Self {
            config,
            uplinks,
            active: None,
            drill: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn specs(&self) -> &[UplinkSpec] {
        &self.config.uplinks
    }

    pub fn health(&self, uplink: usize) -> Option<Health> {
        self.uplinks.get(uplink).map(|u| u.health)
    }

    pub fn active(&self) -> Option<usize> {
        self.active
    }

    pub fn active_name(&self) -> Option<&str> {
        self.active.map(|i| self.config.uplinks[i].name.as_str())
    }

    pub fn drill_running(&self) -> bool {
        self.drill.is_some()
    }

    /// The backup a drill has moved the practice's traffic to, while it is there.
    pub fn drill_on_backup(&self) -> Option<usize> {
        match self.drill {
            Some(Drill {
                phase: DrillPhase::OnBackup { .. },
                ..
            }) => self.active,
            _ => None,
        }
    }

    /// The failback hold now in force for `uplink` (grows while it flaps).
    pub fn failback_hold(&self, uplink: usize) -> Option<Duration> {
        self.uplinks.get(uplink).map(|u| u.failback_hold)
    }

    /// Health as telemetry reports it: an up uplink with a silent target is degraded.
    pub fn wire_health(&self, now: Instant, uplink: usize) -> UplinkHealth {
        let Some(state) = self.uplinks.get(uplink) else {
            return UplinkHealth::Unknown;
        };
        match state.health {
            Health::Unknown { .. } => UplinkHealth::Unknown,
            Health::Down { .. } => UplinkHealth::Down,
            Health::Up { .. } => {
                let window = self.silence_window(uplink);
                let all_live = state
                    .last_answer
                    .iter()
                    .all(|a| a.is_some_and(|t| now.saturating_duration_since(t) <= window));
                if all_live {
                    UplinkHealth::Up
                } else {
                    UplinkHealth::Degraded
                }
            }
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::ProbeAnswered {
                uplink,
                target,
                rtt: _,
            } => {
                if let Some(state) = self.uplinks.get_mut(uplink)
                    && target < state.last_answer.len()
                {
                    state.last_answer[target] = Some(now);
                    state.consecutive_losses[target] = 0;
                    state.answered += 1;
                }
            }
            Input::ProbeLost { uplink, target } => {
                if let Some(losses) = self
                    .uplinks
                    .get_mut(uplink)
                    .and_then(|s| s.consecutive_losses.get_mut(target))
                {
                    *losses = losses.saturating_add(1);
                }
            }
            Input::Carrier { uplink, up } => self.carrier(now, uplink, up, &mut actions),
            Input::StartDrill { duration } => self.start_drill(now, duration, &mut actions),
            Input::StopDrill => {
                if self.drill.take().is_some() {
                    self.finish_drill("stopped by command", &mut actions);
                }
            }
            Input::FailBackNow => self.fail_back_now(now, &mut actions),
            Input::Retune(tunables) => self.retune(tunables),
            Input::Tick => {}
        }
        for uplink in 0..self.uplinks.len() {
            self.update_health(now, uplink, &mut actions);
        }
        self.advance_drill(now, &mut actions);
        self.select(now, &mut actions);
        self.schedule_probes(now, &mut actions);
        actions
    }

    /// The next moment the engine must be given an [`Input::Tick`] (or any input).
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        for (i, state) in self.uplinks.iter().enumerate() {
            consider(state.next_probe_at);
            match state.health {
                Health::Up { .. } => {
                    if let Some(lost_at) = self.quorum_lost_at(i) {
                        consider(lost_at);
                    }
                }
                Health::Unknown { since } => {
                    consider(self.unknown_verdict_at(i, since));
                    if let Some(lost_at) = self.quorum_lost_at(i) {
                        consider(lost_at);
                    }
                }
                Health::Down {
                    recovering_since: Some(since),
                    carrier_lost: false,
                    ..
                } => {
                    consider(since + self.config.recovery_period);
                }
                Health::Down { .. } => {}
            }
            if let Some(due) = self.failback_due(i) {
                consider(due);
            }
        }
        if let Some(Drill {
            phase: DrillPhase::OnBackup { until },
            ..
        }) = self.drill
        {
            consider(until);
        }
        deadline
    }

    /// Probes sent and answered per uplink since the last call, for telemetry.
    pub fn take_counts(&mut self, uplink: usize) -> (u64, u64) {
        self.uplinks
            .get_mut(uplink)
            .map(|s| (std::mem::take(&mut s.sent), std::mem::take(&mut s.answered)))
            .unwrap_or_default()
    }

    fn silence_window(&self, uplink: usize) -> Duration {
        if self.probes_on_budget(uplink) {
            self.config.metered_silence_window()
        } else {
            self.config.silence_window
        }
    }

    /// A metered uplink is probed on its monthly budget while another uplink carries the traffic.
    /// With nothing active, every uplink is probed at full cadence to restore service sooner.
    fn probes_on_budget(&self, uplink: usize) -> bool {
        self.config.uplinks[uplink].metered
            && self.active.is_some()
            && self.active != Some(uplink)
            && !self.rechecking(uplink)
    }

    /// Whether a drill is re-checking `uplink` at full cadence before moving traffic to it.
    fn rechecking(&self, uplink: usize) -> bool {
        matches!(
            self.drill,
            Some(Drill {
                phase: DrillPhase::Rechecking { backup, .. },
                ..
            }) if backup == uplink
        )
    }

    /// Whether a quorum of `uplink`'s targets has answered at or after `since`.
    fn answered_since(&self, uplink: usize, since: Instant) -> bool {
        let fresh = self.uplinks[uplink]
            .last_answer
            .iter()
            .flatten()
            .filter(|&&at| at >= since)
            .count();
        fresh >= self.config.quorum.max(1)
    }

    /// When the quorum of answers within the window runs out, given no further answers.
    fn quorum_lost_at(&self, uplink: usize) -> Option<Instant> {
        let state = &self.uplinks[uplink];
        let quorum = self.config.quorum.max(1);
        let window = self.silence_window(uplink);
        let quorum_answer = if quorum == 1 {
            // The common case, on the hot path: no allocation.
            state.last_answer.iter().flatten().max().copied()?
        } else {
            let mut answers: Vec<Instant> = state.last_answer.iter().flatten().copied().collect();
            if answers.len() < quorum {
                return None;
            }
            answers.sort_unstable_by(|a, b| b.cmp(a));
            answers[quorum - 1]
        };
        let lost_at = quorum_answer + window;
        Some(match state.fast_since {
            Some(since) if !self.probes_on_budget(uplink) => lost_at.max(since + window),
            _ => lost_at,
        })
    }

    /// An uplink that never answered is declared down once a full silence window plus a probe
    /// timeout has passed since the engine started.
    fn unknown_verdict_at(&self, uplink: usize, since: Instant) -> Instant {
        since + self.silence_window(uplink) + self.config.probe_timeout
    }

    fn quorum_holds(&self, now: Instant, uplink: usize) -> bool {
        self.quorum_lost_at(uplink)
            .is_some_and(|lost_at| now < lost_at)
    }

    fn update_health(&mut self, now: Instant, uplink: usize, actions: &mut Vec<Action>) {
        let holds = self.quorum_holds(now, uplink);
        let window = self.silence_window(uplink);
        let next = match self.uplinks[uplink].health {
            Health::Unknown { .. } if holds => Health::Up { since: now },
            Health::Unknown { since } if now >= self.unknown_verdict_at(uplink, since) => {
                Health::Down {
                    since: now,
                    recovering_since: None,
                    carrier_lost: false,
                }
            }
            health @ Health::Unknown { .. } => health,
            health @ Health::Up { .. } if holds => health,
            Health::Up { .. } => {
                let reason = format!(
                    "fewer than {} of {} targets answered within {} ms",
                    self.config.quorum.max(1),
                    self.config.targets,
                    window.as_millis()
                );
                self.note_failure(now, uplink);
                actions.push(self.uplink_event(EventKind::UplinkDown, uplink, reason));
                Health::Down {
                    since: now,
                    recovering_since: None,
                    carrier_lost: false,
                }
            }
            health @ Health::Down {
                carrier_lost: true, ..
            } => health,
            Health::Down {
                since,
                recovering_since,
                carrier_lost: false,
            } => match (holds, recovering_since) {
                (false, _) => Health::Down {
                    since,
                    recovering_since: None,
                    carrier_lost: false,
                },
                (true, None) => Health::Down {
                    since,
                    recovering_since: Some(now),
                    carrier_lost: false,
                },
                (true, Some(start))
                    if now.saturating_duration_since(start) >= self.config.recovery_period =>
                {
                    let reason = format!(
                        "targets answered without a break for {} s",
                        self.config.recovery_period.as_secs_f64()
                    );
                    actions.push(self.uplink_event(EventKind::UplinkUp, uplink, reason));
                    Health::Up { since: now }
                }
                (true, Some(start)) => Health::Down {
                    since,
                    recovering_since: Some(start),
                    carrier_lost: false,
                },
            },
        };
        self.uplinks[uplink].health = next;
    }

    /// Damping: failing again soon after traffic came back doubles the hold before the next failback.
    fn note_failure(&mut self, now: Instant, uplink: usize) {
        let base = self.config.failback_clean_period;
        let max = self.config.max_failback_hold;
        let state = &mut self.uplinks[uplink];
        match state.failed_back_at {
            Some(at) if now.saturating_duration_since(at) <= FLAP_MEMORY => {
                state.failback_hold = (state.failback_hold * 2).min(max);
            }
            Some(at) if now.saturating_duration_since(at) >= FLAP_FORGIVENESS => {
                state.failback_hold = base
            }
            _ => {}
        }
    }

    fn carrier(&mut self, now: Instant, uplink: usize, up: bool, actions: &mut Vec<Action>) {
        let Some(state) = self.uplinks.get(uplink) else {
            return;
        };
        match (state.health, up) {
            (Health::Down { since, .. }, false) => {
                self.uplinks[uplink].health = Health::Down {
                    since,
                    recovering_since: None,
                    carrier_lost: true,
                };
            }
            (_, false) => {
                self.note_failure(now, uplink);
                self.uplinks[uplink].health = Health::Down {
                    since: now,
                    recovering_since: None,
                    carrier_lost: true,
                };
                // Answers from before the carrier loss prove nothing about the link after it.
                self.uplinks[uplink]
                    .last_answer
                    .iter_mut()
                    .for_each(|a| *a = None);
                actions.push(self.uplink_event(
                    EventKind::UplinkDown,
                    uplink,
                    "carrier lost".into(),
                ));
            }
            (Health::Down { since, .. }, true) => {
                // Probes still have to prove the uplink before traffic uses it.
                self.uplinks[uplink].health = Health::Down {
                    since,
                    recovering_since: None,
                    carrier_lost: false,
                };
            }
            (_, true) => {}
        }
    }

    fn is_up(&self, uplink: usize) -> bool {
        matches!(self.uplinks[uplink].health, Health::Up { .. })
    }

    /// The most preferred uplink that is up.
    fn best_up(&self) -> Option<usize> {
        (0..self.uplinks.len())
            .filter(|&i| self.is_up(i))
            .min_by_key(|&i| (self.config.uplinks[i].priority, i))
    }

    /// The best up uplink other than the most preferred one: where a drill sends traffic.
    fn best_backup(&self) -> Option<usize> {
        let primary =
            (0..self.uplinks.len()).min_by_key(|&i| (self.config.uplinks[i].priority, i))?;
        (0..self.uplinks.len())
            .filter(|&i| i != primary && self.is_up(i))
            .min_by_key(|&i| (self.config.uplinks[i].priority, i))
    }

    /// When a more preferred uplink than the active one completes its failback hold.
    fn failback_due(&self, uplink: usize) -> Option<Instant> {
        let active = self.active?;
        if self.drill.is_some()
            || self.config.uplinks[uplink].priority >= self.config.uplinks[active].priority
        {
            return None;
        }
        match self.uplinks[uplink].health {
            Health::Up { since } => Some(since + self.uplinks[uplink].failback_hold),
            _ => None,
        }
    }

    fn start_drill(&mut self, now: Instant, duration: Duration, actions: &mut Vec<Action>) {
        let refuse = |reason: &str| {
            Action::Emit(ApplianceEvent {
                kind: EventKind::DrillFailed,
                uplink: None,
                from: None,
                to: None,
                reason: format!("drill refused: {reason}"),
                drill: None,
            })
        };
        if self.drill.is_some() {
            actions.push(refuse("a drill is already running"));
            return;
        }
        let (Some(active), Some(backup)) = (self.active, self.best_backup()) else {
            actions.push(refuse("no healthy backup uplink"));
            return;
        };
        if Some(active) != self.best_up() {
            actions.push(refuse("the practice is already on a backup uplink"));
            return;
        }
        let recheck = self.probes_on_budget(backup);
        let reason = if recheck {
            format!(
                "failover drill for {} s; re-checking the backup at full rate first",
                duration.as_secs()
            )
        } else {
            format!("failover drill for {} s", duration.as_secs())
        };
        actions.push(Action::Emit(ApplianceEvent {
            kind: EventKind::DrillStarted,
            uplink: None,
            from: Some(self.config.uplinks[active].name.clone()),
            to: Some(self.config.uplinks[backup].name.clone()),
            reason,
            drill: None,
        }));
        if recheck {
            // The short silence window counts from now, not from the last budgeted answer.
            self.uplinks[backup].fast_since = Some(now);
            self.drill = Some(Drill {
                duration,
                phase: DrillPhase::Rechecking { backup, since: now },
            });
        } else {
            self.move_to_drill_backup(now, active, backup, duration, actions);
        }
    }

    fn move_to_drill_backup(
        &mut self,
        now: Instant,
        active: usize,
        backup: usize,
        duration: Duration,
        actions: &mut Vec<Action>,
    ) {
        self.drill = Some(Drill {
            duration,
            phase: DrillPhase::OnBackup {
                until: now + duration,
            },
        });
        self.switch(
            active,
            Some(backup),
            EventKind::Failover,
            "drill".into(),
            actions,
        );
    }

    /// Moves a drill on: from re-checking the backup to traffic on it (or to a failed drill), and
    /// from traffic on the backup to its end.
    fn advance_drill(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(drill) = self.drill else {
            return;
        };
        match drill.phase {
            DrillPhase::Rechecking { backup, since } => {
                if !self.is_up(backup) {
                    self.drill = None;
                    actions.push(Action::Emit(ApplianceEvent {
                        kind: EventKind::DrillFailed,
                        uplink: Some(self.config.uplinks[backup].name.clone()),
                        from: self.active_name().map(str::to_owned),
                        to: Some(self.config.uplinks[backup].name.clone()),
                        reason: format!(
                            "drill failed: the backup uplink did not answer when re-checked at full rate within {} ms",
                            self.config.silence_window.as_millis()
                        ),
                        drill: None,
                    }));
                } else if self.answered_since(backup, since)
                    && let Some(active) = self.active
                {
                    self.move_to_drill_backup(now, active, backup, drill.duration, actions);
                }
            }
            DrillPhase::OnBackup { until } if now >= until => {
                self.drill = None;
                self.finish_drill("drill time elapsed", actions);
            }
            DrillPhase::OnBackup { .. } => {}
        }
    }

    fn finish_drill(&mut self, reason: &str, actions: &mut Vec<Action>) {
        actions.push(Action::Emit(ApplianceEvent {
            kind: EventKind::DrillFinished,
            uplink: None,
            from: self.active_name().map(str::to_owned),
            to: self.best_up().map(|i| self.config.uplinks[i].name.clone()),
            reason: reason.to_owned(),
            drill: None,
        }));
        // Selection right after moves traffic back to the best uplink: the primary never failed,
        // so no clean period applies.
        if let (Some(active), Some(best)) = (self.active, self.best_up())
            && best != active
        {
            self.switch(
                active,
                Some(best),
                EventKind::Failback,
                "drill over".into(),
                actions,
            );
            self.uplinks[best].failed_back_at = None;
        }
    }

    fn fail_back_now(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.drill.take().is_some() {
            self.finish_drill("stopped: fail back requested", actions);
        }
        let (Some(active), Some(best)) = (self.active, self.best_up()) else {
            return;
        };
        if self.config.uplinks[best].priority < self.config.uplinks[active].priority {
            self.switch(
                active,
                Some(best),
                EventKind::Failback,
                "fail back requested by an operator".into(),
                actions,
            );
            self.uplinks[best].failed_back_at = Some(now);
        }
    }

    fn retune(&mut self, tunables: Tunables) {
        let old_base = self.config.failback_clean_period;
        self.config.silence_window = tunables.silence_window;
        self.config.quorum = tunables.quorum.clamp(1, self.config.targets);
        self.config.recovery_period = tunables.recovery_period;
        self.config.failback_clean_period = tunables.failback_clean_period;
        self.config.max_failback_hold = tunables.max_failback_hold;
        self.config.metered_standby_interval = tunables.metered_standby_interval;
        for state in &mut self.uplinks {
            // A hold that was not grown by flapping follows the new base; a grown one keeps its
            // damping but never exceeds the new maximum.
            state.failback_hold = if state.failback_hold == old_base {
                tunables.failback_clean_period
            } else {
                state.failback_hold.min(tunables.max_failback_hold)
            };
        }
    }

    fn select(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let best = self.best_up();
        match self.active {
            None => {
                // At start, a more preferred uplink that has no verdict yet is waited for, so the
                // practice does not begin on the backup merely because it answered first.
                let undecided_preferred = best.is_some_and(|b| {
                    (0..self.uplinks.len()).any(|i| {
                        matches!(self.uplinks[i].health, Health::Unknown { .. })
                            && self.config.uplinks[i].priority < self.config.uplinks[b].priority
                    })
                });
                if let Some(best) = best.filter(|_| !undecided_preferred) {
                    self.active = Some(best);
                    actions.push(Action::Activate { uplink: Some(best) });
                }
            }
            Some(active) if !self.is_up(active) => {
                if let Some(drill) = self.drill.take() {
                    let reason = match drill.phase {
                        DrillPhase::OnBackup { .. } => "drill aborted: the backup uplink failed",
                        DrillPhase::Rechecking { .. } => {
                            "drill aborted: the primary uplink failed before traffic moved"
                        }
                    };
                    actions.push(Action::Emit(ApplianceEvent {
                        kind: EventKind::DrillFailed,
                        uplink: None,
                        from: Some(self.config.uplinks[active].name.clone()),
                        to: best.map(|i| self.config.uplinks[i].name.clone()),
                        reason: reason.into(),
                        drill: None,
                    }));
                }
                let reason = match best {
                    Some(_) => "active uplink down".to_owned(),
                    None => "no uplink is usable".to_owned(),
                };
                // Failing over is never delayed: damping applies only to failing back.
                self.switch(active, best, EventKind::Failover, reason, actions);
            }
            Some(active) => {
                let Some(best) = best.filter(|&b| b != active) else {
                    return;
                };
                if self.drill.is_some() {
                    return;
                }
                if self.config.uplinks[best].priority < self.config.uplinks[active].priority
                    && self.failback_due(best).is_some_and(|due| now >= due)
                {
                    let hold = self.uplinks[best].failback_hold;
                    self.switch(
                        active,
                        Some(best),
                        EventKind::Failback,
                        format!("preferred uplink clean for {} s", hold.as_secs()),
                        actions,
                    );
                    self.uplinks[best].failed_back_at = Some(now);
                }
            }
        }
    }

    fn switch(
        &mut self,
        from: usize,
        to: Option<usize>,
        kind: EventKind,
        reason: String,
        actions: &mut Vec<Action>,
    ) {
        self.active = to;
        actions.push(Action::Activate { uplink: to });
        // Flows on a failed uplink would hang; flows on a metered one would keep costing money.
        if !self.is_up(from) || self.config.uplinks[from].metered || kind == EventKind::Failover {
            actions.push(Action::FlushFlows { uplink: from });
        }
        actions.push(Action::Emit(ApplianceEvent {
            kind,
            uplink: None,
            from: Some(self.config.uplinks[from].name.clone()),
            to: to.map(|i| self.config.uplinks[i].name.clone()),
            reason,
            drill: None,
        }));
    }

    fn schedule_probes(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let longest_budgeted = self.config.longest_budgeted_pause();
        for uplink in 0..self.uplinks.len() {
            let on_budget = self.probes_on_budget(uplink);
            let interval = if on_budget {
                longest_budgeted
            } else {
                self.config.probe_spacing
            };
            let targets = self.config.targets;
            let pauses: Vec<Duration> = if on_budget {
                (0..targets)
                    .map(|t| self.config.budgeted_pause(t))
                    .collect()
            } else {
                Vec::new()
            };
            let state = &mut self.uplinks[uplink];
            match (on_budget, state.fast_since) {
                (true, _) => state.fast_since = None,
                (false, None) => state.fast_since = Some(now),
                (false, Some(_)) => {}
            }
            if matches!(
                state.health,
                Health::Down {
                    carrier_lost: true,
                    ..
                }
            ) {
                // Nothing can be sent on a link without carrier; the carrier-up input resumes.
                state.next_probe_at = now + interval;
                continue;
            }
            if now >= state.next_probe_at {
                // On a budget, spend probes only on targets that still answer (unless none do).
                let target = (0..targets)
                    .map(|k| (state.next_target + k) % targets)
                    .find(|&t| !on_budget || state.consecutive_losses[t] < 3)
                    .unwrap_or(state.next_target);
                state.next_target = (target + 1) % targets;
                state.sent += 1;
                // On a budget, the pause pays for this probe's bytes.
                let interval = pauses.get(target).copied().unwrap_or(interval);
                // Never let a backlog build up: the next probe is one interval from now.
                state.next_probe_at = (state.next_probe_at + interval).max(now + interval / 2);
                actions.push(Action::Probe { uplink, target });
            } else if state.next_probe_at > now + interval {
                // The uplink moved to a faster cadence (it became active).
                state.next_probe_at = now + interval;
            }
        }
    }

    fn uplink_event(&self, kind: EventKind, uplink: usize, reason: String) -> Action {
        Action::Emit(ApplianceEvent {
            kind,
            uplink: Some(self.config.uplinks[uplink].name.clone()),
            from: None,
            to: None,
            reason,
            drill: None,
        })
    }
}

#[cfg(test)]
mod tests;
