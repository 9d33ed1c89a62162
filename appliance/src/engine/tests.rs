//! Scripted `(now, input)` sequences against the engine, and long simulations in simulated time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const FIBER: usize = 0;
const LTE: usize = 1;

fn specs() -> Vec<UplinkSpec> {
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
    ]
}

/// A simulated network around the engine: every probe is answered after `rtt` with the uplink's and
/// target's answer probability, otherwise reported lost after the probe timeout.
struct Sim {
    engine: Engine,
    now: Instant,
    rng: StdRng,
    rtt: Duration,
    /// Answer probability per uplink per target.
    answer: Vec<Vec<f64>>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    inputs: HashMap<u64, Input>,
    seq: u64,
    actions: Vec<(Instant, Action)>,
    probes: Vec<Vec<Instant>>,
}

impl Sim {
    fn new(config: EngineConfig, seed: u64) -> Self {
        let now = Instant::now();
        let targets = config.targets;
        let uplinks = config.uplinks.len();
        Sim {
            engine: Engine::new(now, config),
            now,
            rng: StdRng::seed_from_u64(seed),
            rtt: Duration::from_millis(20),
            answer: vec![vec![1.0; targets]; uplinks],
            queue: BinaryHeap::new(),
            inputs: HashMap::new(),
            seq: 0,
            actions: Vec::new(),
            probes: vec![Vec::new(); uplinks],
        }
    }

    fn push(&mut self, at: Instant, input: Input) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.inputs.insert(self.seq, input);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            if let Action::Probe { uplink, target } = action {
                self.probes[uplink].push(self.now);
                let p = self.answer[uplink][target];
                if p > 0.0 && self.rng.gen_bool(p.min(1.0)) {
                    let at = self.now + self.rtt;
                    self.push(
                        at,
                        Input::ProbeAnswered {
                            uplink,
                            target,
                            rtt: self.rtt,
                        },
                    );
                } else {
                    let at = self.now + self.engine.config().probe_timeout;
                    self.push(at, Input::ProbeLost { uplink, target });
                }
            } else {
                self.actions.push((self.now, action));
            }
        }
    }

    /// Feeds an input now (e.g. carrier loss or a drill command).
    fn input(&mut self, input: Input) {
        let actions = self.engine.handle(self.now, input);
        self.apply(actions);
    }

    /// Runs the simulation for `span`.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let queued = self.queue.peek().map(|Reverse((t, _))| *t);
            let deadline = self.engine.next_deadline();
            let next = match (queued, deadline) {
                (Some(q), Some(d)) => q.min(d),
                (Some(q), None) => q,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            let input = match queued {
                Some(q) if q <= next => {
                    let Some(Reverse((_, seq))) = self.queue.pop() else {
                        break;
                    };
                    self.inputs.remove(&seq).unwrap_or(Input::Tick)
                }
                _ => Input::Tick,
            };
            let actions = self.engine.handle(self.now, input);
            self.apply(actions);
        }
        self.now = end;
        let actions = self.engine.handle(self.now, Input::Tick);
        self.apply(actions);
    }

    fn events(&self, kind: EventKind) -> Vec<(Instant, ApplianceEvent)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Emit(e) if e.kind == kind => Some((*t, e.clone())),
                _ => None,
            })
            .collect()
    }

    fn last_answer(&self, uplink: usize) -> Option<Instant> {
        self.engine.uplinks[uplink]
            .last_answer
            .iter()
            .flatten()
            .max()
            .copied()
    }
}

fn sim() -> Sim {
    let mut sim = Sim::new(EngineConfig::new(specs(), 4), 7);
    sim.run_for(Duration::from_secs(5));
    sim
}

#[test]
fn the_preferred_uplink_becomes_active_as_soon_as_it_answers() {
    let mut sim = Sim::new(EngineConfig::new(specs(), 4), 1);
    let start = sim.now;
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    let (at, _) = sim
        .actions
        .iter()
        .find(|(_, a)| matches!(a, Action::Activate { .. }))
        .expect("activated");
    assert!(
        at.duration_since(start) <= sim.rtt,
        "activated on the first answer"
    );
}

#[test]
fn at_start_the_preferred_uplink_is_chosen_even_when_the_backup_answers_first() {
    let mut sim = Sim::new(EngineConfig::new(specs(), 4), 1);
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_millis(300));
    assert_eq!(sim.engine.active(), None, "the primary has no verdict yet");
    sim.answer[FIBER] = vec![1.0; 4];
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    assert!(
        sim.events(EventKind::Failback).is_empty() && sim.events(EventKind::Failover).is_empty()
    );
}

#[test]
fn a_dead_primary_at_start_delays_service_on_the_backup_by_at_most_two_seconds() {
    let mut sim = Sim::new(EngineConfig::new(specs(), 4), 1);
    let start = sim.now;
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.engine.active_name(), Some("lte"));
    let (at, _) = sim
        .actions
        .iter()
        .find(|(_, a)| matches!(a, Action::Activate { .. }))
        .expect("activated");
    assert!(*at - start <= Duration::from_secs(2), "{:?}", *at - start);
}

#[test]
fn a_blackholed_uplink_is_declared_down_one_silence_window_after_its_last_answer() {
    let mut sim = sim();
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_secs(3));
    let failovers = sim.events(EventKind::Failover);
    assert_eq!(failovers.len(), 1);
    let (at, event) = &failovers[0];
    assert_eq!(
        (event.from.as_deref(), event.to.as_deref()),
        (Some("fiber"), Some("lte"))
    );
    let last = sim.last_answer(FIBER).expect("fiber answered before");
    assert_eq!(*at - last, sim.engine.config().silence_window);
    assert!(
        sim.actions
            .iter()
            .any(|(t, a)| t == at && *a == Action::FlushFlows { uplink: FIBER })
    );
    assert_eq!(sim.engine.active_name(), Some("lte"));
}

#[test]
fn one_dead_target_never_fails_an_uplink() {
    let mut sim = sim();
    sim.answer[FIBER][2] = 0.0;
    sim.run_for(Duration::from_secs(600));
    assert!(sim.events(EventKind::Failover).is_empty());
    assert_eq!(
        sim.engine.wire_health(sim.now, FIBER),
        UplinkHealth::Degraded
    );
}

#[test]
fn losing_carrier_fails_over_at_once() {
    let mut sim = sim();
    sim.input(Input::Carrier {
        uplink: FIBER,
        up: false,
    });
    let kinds: Vec<_> = sim
        .actions
        .iter()
        .filter(|(t, _)| *t == sim.now)
        .filter_map(|(_, a)| match a {
            Action::Emit(e) => Some(e.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![EventKind::UplinkDown, EventKind::Failover]);
    assert_eq!(sim.engine.active_name(), Some("lte"));
}

#[test]
fn carrier_back_is_not_enough_probes_must_prove_the_uplink() {
    let mut sim = sim();
    sim.input(Input::Carrier {
        uplink: FIBER,
        up: false,
    });
    sim.run_for(Duration::from_secs(5));
    sim.input(Input::Carrier {
        uplink: FIBER,
        up: true,
    });
    assert!(matches!(
        sim.engine.health(FIBER),
        Some(Health::Down { .. })
    ));
    sim.run_for(Duration::from_secs(3));
    assert!(matches!(sim.engine.health(FIBER), Some(Health::Up { .. })));
}

#[test]
fn failback_waits_for_the_clean_period_then_moves_flows_off_the_metered_backup() {
    let mut sim = sim();
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_secs(10));
    sim.answer[FIBER] = vec![1.0; 4];
    sim.run_for(Duration::from_secs(60));
    let ups = sim.events(EventKind::UplinkUp);
    let failbacks = sim.events(EventKind::Failback);
    assert_eq!((ups.len(), failbacks.len()), (1, 1));
    assert_eq!(failbacks[0].0 - ups[0].0, Duration::from_secs(30));
    let at = failbacks[0].0;
    assert!(
        sim.actions
            .iter()
            .any(|(t, a)| *t == at && *a == Action::FlushFlows { uplink: LTE })
    );
    assert_eq!(sim.engine.active_name(), Some("fiber"));
}

#[test]
fn fail_back_now_returns_to_a_recovered_primary_without_waiting_for_the_hold() {
    let mut sim = sim();
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_secs(10));
    sim.answer[FIBER] = vec![1.0; 4];
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.engine.active_name(),
        Some("lte"),
        "still inside the hold"
    );
    sim.input(Input::FailBackNow);
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    let failbacks = sim.events(EventKind::Failback);
    assert_eq!(failbacks.len(), 1);
    assert!(failbacks[0].1.reason.contains("operator"));
}

#[test]
fn fail_back_now_does_nothing_while_the_primary_is_down() {
    let mut sim = sim();
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_secs(10));
    sim.input(Input::FailBackNow);
    assert_eq!(sim.engine.active_name(), Some("lte"));
    assert!(sim.events(EventKind::Failback).is_empty());
}

#[test]
fn a_retuned_clean_period_applies_to_the_next_failback() {
    let mut sim = sim();
    let config = sim.engine.config().clone();
    sim.input(Input::Retune(Tunables {
        silence_window: config.silence_window,
        quorum: config.quorum,
        recovery_period: config.recovery_period,
        failback_clean_period: Duration::from_secs(10),
        max_failback_hold: Duration::from_secs(60),
        metered_standby_interval: config.metered_standby_interval,
    }));
    sim.answer[FIBER] = vec![0.0; 4];
    sim.run_for(Duration::from_secs(10));
    sim.answer[FIBER] = vec![1.0; 4];
    sim.run_for(Duration::from_secs(30));
    let ups = sim.events(EventKind::UplinkUp);
    let failbacks = sim.events(EventKind::Failback);
    assert_eq!(failbacks.len(), 1);
    assert_eq!(failbacks[0].0 - ups[0].0, Duration::from_secs(10));
}

#[test]
fn a_flapping_primary_is_damped_with_a_doubling_failback_hold() {
    let mut sim = sim();
    // The primary fails for 5 s every 45 s, ten times.
    for _ in 0..10 {
        sim.answer[FIBER] = vec![0.0; 4];
        sim.run_for(Duration::from_secs(5));
        sim.answer[FIBER] = vec![1.0; 4];
        sim.run_for(Duration::from_secs(40));
    }
    let failovers = sim.events(EventKind::Failover).len();
    let failbacks = sim.events(EventKind::Failback).len();
    // Without damping there would be ten of each; the hold doubles (30, 60, 120 s …) after each
    // failure soon after a failback, so traffic stays on the backup.
    assert!(failbacks <= 2, "failbacks: {failbacks}");
    assert!(failovers <= 2, "failovers: {failovers}");
    assert!(sim.engine.failback_hold(FIBER) >= Some(Duration::from_secs(60)));
    // Once the line is stable, traffic comes back.
    sim.run_for(Duration::from_secs(20 * 60));
    assert_eq!(sim.engine.active_name(), Some("fiber"));
}

#[test]
fn the_failback_hold_never_exceeds_its_maximum() {
    let mut sim = sim();
    for _ in 0..30 {
        sim.answer[FIBER] = vec![0.0; 4];
        sim.run_for(Duration::from_secs(3));
        sim.answer[FIBER] = vec![1.0; 4];
        let hold = sim.engine.failback_hold(FIBER).unwrap_or_default();
        sim.run_for(hold + Duration::from_secs(3));
    }
    assert_eq!(
        sim.engine.failback_hold(FIBER),
        Some(sim.engine.config().max_failback_hold)
    );
}

#[test]
fn a_drill_moves_traffic_to_the_backup_and_back_without_waiting_for_a_clean_period() {
    // An unmetered backup is probed at full rate all along, so traffic moves at once.
    let mut specs = specs();
    specs[LTE].metered = false;
    let mut sim = Sim::new(EngineConfig::new(specs, 4), 7);
    sim.run_for(Duration::from_secs(5));
    let start = sim.now;
    sim.input(Input::StartDrill {
        duration: Duration::from_secs(60),
    });
    assert_eq!(sim.engine.active_name(), Some("lte"));
    assert!(sim.engine.drill_running());
    sim.run_for(Duration::from_secs(61));
    let started = sim.events(EventKind::DrillStarted);
    let finished = sim.events(EventKind::DrillFinished);
    assert_eq!((started.len(), finished.len()), (1, 1));
    assert_eq!(finished[0].0 - start, Duration::from_secs(60));
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    assert_eq!(sim.events(EventKind::Failback)[0].0, finished[0].0);
}

/// A simulation whose metered LTE backup is on its probe budget and last answered at least two
/// seconds ago, as at the start of most real drills.
fn sim_with_a_stale_budgeted_backup() -> Sim {
    let mut sim = sim();
    for _ in 0..600 {
        if sim
            .last_answer(LTE)
            .is_some_and(|at| sim.now.saturating_duration_since(at) >= Duration::from_secs(2))
        {
            return sim;
        }
        sim.run_for(Duration::from_millis(100));
    }
    panic!("the metered backup kept answering within two seconds: not on its budget");
}

#[test]
fn a_drill_rechecks_a_metered_backup_probed_on_its_budget_at_full_rate_before_moving_traffic() {
    let mut sim = sim_with_a_stale_budgeted_backup();
    let start = sim.now;
    let probes_before = sim.probes[LTE].len();
    sim.input(Input::StartDrill {
        duration: Duration::from_secs(60),
    });
    assert!(sim.events(EventKind::DrillFailed).is_empty());
    assert_eq!(
        sim.engine.active_name(),
        Some("fiber"),
        "traffic waits for the re-check"
    );
    sim.run_for(Duration::from_millis(300));
    let moved = sim.events(EventKind::Failover);
    assert_eq!(moved.len(), 1, "traffic moved to the re-checked backup");
    assert!(moved[0].0 - start <= Duration::from_millis(100));
    assert_eq!(sim.engine.active_name(), Some("lte"));
    assert!(
        sim.probes[LTE].len() - probes_before >= 5,
        "the backup is probed at full rate"
    );
    sim.run_for(Duration::from_secs(61));
    assert!(sim.events(EventKind::DrillFailed).is_empty());
    let finished = sim.events(EventKind::DrillFinished);
    assert_eq!(finished.len(), 1);
    assert_eq!(
        finished[0].0 - moved[0].0,
        Duration::from_secs(60),
        "the drill lasts its duration on the backup"
    );
    assert_eq!(sim.engine.active_name(), Some("fiber"));
}

#[test]
fn a_metered_backup_silent_when_rechecked_fails_the_drill_with_that_reason_and_traffic_stays() {
    let mut sim = sim_with_a_stale_budgeted_backup();
    sim.answer[LTE] = vec![0.0; 4];
    sim.input(Input::StartDrill {
        duration: Duration::from_secs(60),
    });
    sim.run_for(Duration::from_secs(2));
    let failed = sim.events(EventKind::DrillFailed);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .1
            .reason
            .contains("did not answer when re-checked at full rate"),
        "{}",
        failed[0].1.reason
    );
    assert!(sim.events(EventKind::Failover).is_empty());
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    assert!(!sim.engine.drill_running());
}

#[test]
fn a_drill_is_refused_without_a_healthy_backup() {
    let mut sim = sim();
    sim.input(Input::Carrier {
        uplink: LTE,
        up: false,
    });
    sim.input(Input::StartDrill {
        duration: Duration::from_secs(60),
    });
    let refused = sim.events(EventKind::DrillFailed);
    assert_eq!(refused.len(), 1);
    assert!(refused[0].1.reason.contains("refused"));
    assert_eq!(sim.engine.active_name(), Some("fiber"));
}

#[test]
fn a_drill_is_aborted_when_the_backup_fails() {
    let mut sim = sim();
    sim.input(Input::StartDrill {
        duration: Duration::from_secs(600),
    });
    sim.run_for(Duration::from_secs(5));
    sim.input(Input::Carrier {
        uplink: LTE,
        up: false,
    });
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    assert!(!sim.engine.drill_running());
    assert!(
        sim.events(EventKind::DrillFailed)[0]
            .1
            .reason
            .contains("aborted")
    );
}

#[test]
fn with_every_uplink_down_nothing_is_active_and_the_first_to_recover_is_used_at_once() {
    let mut sim = sim();
    sim.input(Input::Carrier {
        uplink: FIBER,
        up: false,
    });
    sim.input(Input::Carrier {
        uplink: LTE,
        up: false,
    });
    assert_eq!(sim.engine.active(), None);
    sim.input(Input::Carrier {
        uplink: LTE,
        up: true,
    });
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.engine.active_name(), Some("lte"));
}

#[test]
fn the_metered_standby_budget_holds_over_a_simulated_month() {
    let mut config = EngineConfig::new(specs(), 4);
    // The primary's cadence is irrelevant here; a slow one keeps the month quick to simulate.
    config.probe_spacing = Duration::from_secs(1);
    config.silence_window = Duration::from_secs(5);
    let interval = config.metered_standby_interval;
    let mut sim = Sim::new(config, 3);
    sim.run_for(Duration::from_secs(30 * 24 * 3600));
    let probes = &sim.probes[LTE];
    let bytes = probes.len() as u64 * crate::probe_cost::ICMP_ECHO_BYTES;
    let max_gap = probes
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "metered standby: one probe every {:?}; {} probes = {:.1} MB in 30 days; largest gap {:?}",
        interval,
        probes.len(),
        bytes as f64 / 1e6,
        max_gap
    );
    // The health probes' share of the budget; the rest is for application checks.
    assert!(
        bytes <= crate::probe_cost::health_budget_bytes(METERED_MONTHLY_BUDGET_BYTES),
        "{bytes} bytes"
    );
    assert!(max_gap <= METERED_MAX_STALENESS, "{max_gap:?}");
    assert!(sim.events(EventKind::Failover).is_empty());
}

#[test]
fn the_budgeted_interval_is_the_fastest_that_fits_the_budget() {
    let interval = metered_standby_interval(
        METERED_MONTHLY_BUDGET_BYTES,
        crate::probe_cost::ICMP_ECHO_BYTES,
        METERED_MAX_STALENESS,
    );
    assert_eq!(interval, Duration::from_millis(4900));
    assert!(
        monthly_probe_bytes(interval, crate::probe_cost::ICMP_ECHO_BYTES)
            <= METERED_MONTHLY_BUDGET_BYTES
    );
    // A budget too small for the staleness goal keeps the budget.
    assert_eq!(
        metered_standby_interval(1_000_000, 56, METERED_MAX_STALENESS),
        Duration::from_millis(145_200)
    );
}

#[test]
fn twenty_four_hours_at_ten_percent_loss_with_one_dead_target_cause_no_failover() {
    let mut sim = Sim::new(EngineConfig::new(specs(), 4), 24);
    // 10 % loss each way: 81 % of probes answered; target 3 never answers.
    sim.answer[FIBER] = vec![0.81, 0.81, 0.81, 0.0];
    sim.answer[LTE] = vec![0.81, 0.81, 0.81, 0.0];
    sim.run_for(Duration::from_secs(24 * 3600));
    assert_eq!(sim.events(EventKind::UplinkDown).len(), 0);
    assert_eq!(sim.events(EventKind::Failover).len(), 0);
    assert_eq!(sim.engine.active_name(), Some("fiber"));
    assert!(
        sim.probes[FIBER].len() > 2_000_000,
        "the primary was probed at full cadence"
    );
}
