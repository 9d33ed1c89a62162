//! The scheduler over scripted time, and a month of a metered standby's probing and checking.

use stayopen_shared::compliance::AppTier;

use super::*;
use crate::config::ProbeKind;
use crate::engine::{Engine, EngineConfig, Input, UplinkSpec};
use crate::probe_cost::{Exchange, MONTH};

const FIBER: usize = 0;
const LTE: usize = 1;
const MINUTE: Duration = Duration::from_secs(60);

fn uplinks(lte_metered: bool) -> Vec<UplinkInfo> {
    vec![
        UplinkInfo {
            name: "fiber".into(),
            metered: false,
        },
        UplinkInfo {
            name: "lte".into(),
            metered: lte_metered,
        },
    ]
}

fn app(name: &str, endpoints: Vec<AppEndpoint>) -> CriticalApp {
    CriticalApp {
        name: name.into(),
        tier: AppTier::Tier1,
        endpoints,
    }
}

fn https(url: &str) -> AppEndpoint {
    AppEndpoint::Https { url: url.into() }
}

/// The demo's register: three HTTPS applications, the lab's HL7 port and the portal's name.
fn demo_apps() -> Vec<CriticalApp> {
    vec![
        app("EHR", vec![https("https://ehr.example/health")]),
        app("e-Prescribing", vec![https("https://erx.example/status")]),
        app(
            "Lab interface",
            vec![AppEndpoint::Tcp {
                host: "lab.example".into(),
                port: 2575,
            }],
        ),
        app("Telemedicine", vec![https("https://tele.example/")]),
        app(
            "Patient portal",
            vec![AppEndpoint::Dns {
                name: "portal.example".into(),
            }],
        ),
    ]
}

fn checks(now: Instant, lte_metered: bool, apps: Vec<CriticalApp>) -> AppChecks {
    let mut checks = AppChecks::new(now, uplinks(lte_metered));
    checks.set_policy(now, apps, MINUTE, 30_000_000);
    checks
}

/// Runs the scheduler from `t0` for `span`, answering every check after 30 ms (or failing it with
/// `fail`'s reason), and returns every check started with its time.
fn run(
    checks: &mut AppChecks,
    t0: Instant,
    span: Duration,
    active: Option<usize>,
    fail: impl Fn(&CheckRequest) -> Option<String>,
) -> Vec<(Instant, CheckRequest)> {
    let mut now = t0;
    let mut started = Vec::new();
    let mut pending: Vec<(Instant, CheckRequest)> = Vec::new();
    while now < t0 + span {
        pending.sort_by_key(|(at, _)| *at);
        while pending.first().is_some_and(|(at, _)| *at <= now) {
            let (_, request) = pending.remove(0);
            let outcome = match fail(&request) {
                Some(reason) => Err(reason),
                None => Ok(Duration::from_millis(30)),
            };
            checks.record(now, request.id, outcome);
        }
        for request in checks.poll(now, active) {
            started.push((now, request));
            pending.push((now + Duration::from_millis(30), request));
        }
        let next = [
            checks.next_deadline(now, active),
            pending.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(t0 + span);
        now = next.max(now + Duration::from_millis(1));
    }
    started
}

#[test]
fn every_app_is_checked_through_the_active_uplink_every_interval() {
    let t0 = Instant::now();
    let mut checks = checks(t0, true, demo_apps());
    let started = run(&mut checks, t0, 10 * MINUTE, Some(FIBER), |_| None);
    let through_fiber: Vec<_> = started.iter().filter(|(_, r)| r.uplink == FIBER).collect();
    assert_eq!(through_fiber.len(), 5 * 10, "five apps, ten intervals");
    let ehr: Vec<Instant> = through_fiber
        .iter()
        .filter(|(_, r)| r.app == 0)
        .map(|(at, _)| *at)
        .collect();
    assert!(ehr.windows(2).all(|w| w[1] - w[0] == MINUTE), "{ehr:?}");
    assert!(checks.latest(0, FIBER).is_some_and(|r| r.reachable));
}

#[test]
fn a_standby_that_is_not_metered_is_checked_at_the_same_cadence() {
    let t0 = Instant::now();
    let mut checks = checks(t0, false, demo_apps());
    let started = run(&mut checks, t0, 10 * MINUTE, Some(FIBER), |_| None);
    assert_eq!(started.iter().filter(|(_, r)| r.uplink == LTE).count(), 50);
}

#[test]
fn a_metered_standby_is_checked_within_the_app_checks_share_of_the_budget() {
    let t0 = Instant::now();
    let mut checks = checks(t0, true, demo_apps());
    let day = Duration::from_secs(24 * 3600);
    let started = run(&mut checks, t0, day, Some(FIBER), |_| None);
    let bytes: u64 = started
        .iter()
        .filter(|(_, r)| r.uplink == LTE)
        .map(|(_, r)| Exchange::of_endpoint(&demo_apps()[r.app].endpoints[r.endpoint]).bytes())
        .sum();
    let share_per_day = probe_cost::app_check_budget_bytes(30_000_000) / 30;
    assert!(bytes <= share_per_day, "{bytes} > {share_per_day}");
    assert!(
        bytes >= share_per_day * 9 / 10,
        "the share is used: {bytes} of {share_per_day}"
    );
    // Every application got its turn through the standby.
    for app in 0..5 {
        assert!(checks.latest(app, LTE).is_some(), "app {app}");
    }
}

#[test]
fn an_app_is_reachable_when_any_endpoint_answers_and_unreachable_with_every_reason() {
    let t0 = Instant::now();
    let lab = app(
        "Lab interface",
        vec![
            AppEndpoint::Tcp {
                host: "lab.example".into(),
                port: 2575,
            },
            AppEndpoint::Tcp {
                host: "lab-backup.example".into(),
                port: 2575,
            },
        ],
    );
    let mut checks = checks(t0, false, vec![lab]);
    // The first endpoint refuses through both uplinks; the second only through the LTE.
    run(&mut checks, t0, Duration::from_secs(1), Some(FIBER), |r| {
        (r.endpoint == 0 || r.uplink == LTE).then(|| {
            let host = if r.endpoint == 0 { "lab" } else { "lab-backup" };
            format!("tcp {host}.example:2575: connection refused")
        })
    });
    let fiber = checks.latest(0, FIBER).expect("checked through fibre");
    assert!(fiber.reachable);
    assert_eq!(fiber.latency, Some(Duration::from_millis(30)));
    let lte = checks.latest(0, LTE).expect("checked through lte");
    assert!(!lte.reachable);
    assert_eq!(
        lte.reason.as_deref(),
        Some(
            "tcp lab.example:2575: connection refused; tcp lab-backup.example:2575: connection refused"
        )
    );
    let reported = checks.reachability(t0 + Duration::from_secs(10));
    assert_eq!(reported.len(), 2);
    let lte_report = reported.iter().find(|r| r.uplink == "lte").expect("lte");
    assert_eq!(
        (
            lte_report.app.as_str(),
            lte_report.reachable,
            lte_report.age_secs
        ),
        ("Lab interface", false, 9)
    );
}

#[test]
fn check_now_starts_a_fresh_round_whose_results_a_drill_reads() {
    let t0 = Instant::now();
    let mut checks = checks(t0, true, demo_apps());
    run(&mut checks, t0, Duration::from_secs(1), Some(FIBER), |_| {
        None
    });
    let moved = t0 + Duration::from_secs(30);
    assert!(
        !checks.all_checked_since(LTE, moved),
        "nothing through the budgeted standby since"
    );
    checks.check_now(LTE);
    // Traffic is on the LTE now: it is the active uplink.
    run(&mut checks, moved, Duration::from_secs(1), Some(LTE), |r| {
        (r.app == 2).then(|| "tcp lab.example:2575: connection refused".into())
    });
    assert!(checks.all_checked_since(LTE, moved));
    let results = checks.results_since(LTE, moved);
    assert_eq!(results.len(), 5);
    assert!(results[0].1.as_ref().is_some_and(|r| r.reachable));
    assert!(results[2].1.as_ref().is_some_and(|r| !r.reachable));
}

#[test]
fn a_new_register_keeps_the_results_of_the_apps_that_stay() {
    let t0 = Instant::now();
    let mut checks = checks(t0, false, demo_apps());
    run(&mut checks, t0, Duration::from_secs(1), Some(FIBER), |_| {
        None
    });
    let mut apps = demo_apps();
    apps.remove(1);
    checks.set_policy(t0 + MINUTE, apps, MINUTE, 30_000_000);
    assert_eq!(checks.apps().len(), 4);
    assert!(checks.latest(1, FIBER).is_some(), "the lab's result stays");
    // An outcome of a check of the old register is ignored.
    checks.record(t0 + MINUTE, 1, Ok(Duration::from_millis(1)));
}

fn meter_with_backup(t0: Instant) -> DrillMeter {
    let mut meter = DrillMeter::start(t0, Some(Uuid::from_u128(9)));
    let moved = t0 + Duration::from_millis(180);
    meter.traffic_on_backup(moved, moved, LTE, "lte");
    meter.ended(t0 + Duration::from_secs(60));
    meter.traffic_back(t0 + Duration::from_millis(60_040));
    meter
}

fn result(t0: Instant, reachable: bool, reason: Option<&str>) -> Option<AppResult> {
    Some(AppResult {
        started: t0,
        finished: t0,
        reachable,
        latency: reachable.then_some(Duration::from_millis(95)),
        reason: reason.map(str::to_owned),
    })
}

#[test]
fn a_drill_whose_apps_all_answered_through_the_backup_passes_with_its_switchover_and_failback() {
    let t0 = Instant::now();
    let meter = meter_with_backup(t0);
    let (report, failure) = meter.report(&[
        ("EHR".into(), result(t0, true, None)),
        ("Lab interface".into(), result(t0, true, None)),
    ]);
    assert_eq!(failure, None);
    assert!(report.passed);
    assert_eq!(report.command_id, Some(Uuid::from_u128(9)));
    assert_eq!(report.backup.as_deref(), Some("lte"));
    assert_eq!(report.switchover_ms, Some(180));
    assert_eq!(report.failback_ms, Some(40));
    assert_eq!(report.apps.len(), 2);
    assert_eq!(report.apps[0].latency_ms, Some(95.0));
}

#[test]
fn a_drill_fails_naming_each_app_unreachable_through_the_backup_and_why() {
    let t0 = Instant::now();
    let meter = meter_with_backup(t0);
    let (report, failure) = meter.report(&[
        ("EHR".into(), result(t0, true, None)),
        (
            "Lab interface".into(),
            result(t0, false, Some("tcp lab.example:2575: connection refused")),
        ),
        ("Telemedicine".into(), None),
    ]);
    assert!(!report.passed);
    assert_eq!(
        failure.as_deref(),
        Some(
            "Lab interface unreachable through lte: tcp lab.example:2575: connection refused; \
             Telemedicine unreachable through lte: no check through lte finished before the drill ended"
        )
    );
}

#[test]
fn a_drill_without_critical_apps_passes_on_the_switchover_alone() {
    let t0 = Instant::now();
    let (report, failure) = meter_with_backup(t0).report(&[]);
    assert!(report.passed && failure.is_none());
    assert!(report.apps.is_empty());
    let never_moved = DrillMeter::start(t0, None).report(&[]);
    assert!(!never_moved.0.passed);
    assert_eq!(
        never_moved.1.as_deref(),
        Some("traffic never moved to the backup")
    );
}

/// The testbed's probe targets: four ICMP echoes, a TCP handshake, an HTTPS GET, a DNS query.
fn mixed_targets() -> Vec<ProbeKind> {
    let mut targets: Vec<ProbeKind> = (10..14)
        .map(|i| ProbeKind::Icmp {
            address: format!("203.0.113.{i}").parse().expect("ip"),
        })
        .collect();
    targets.push(ProbeKind::Tcp {
        address: "203.0.113.30:80".parse().expect("addr"),
    });
    targets.push(ProbeKind::Http {
        url: "https://203.0.113.30/health".into(),
        ca_file: None,
    });
    targets.push(ProbeKind::Dns {
        server: "203.0.113.30".parse().expect("ip"),
        name: "ehr.example".into(),
    });
    targets
}

#[test]
fn a_month_of_health_probes_and_app_checks_on_a_metered_standby_stays_within_the_budget() {
    let budget = 30_000_000;
    let targets = mixed_targets();
    let costs = probe_cost::target_costs(&targets);
    let specs = vec![
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
    ];
    let mut config =
        EngineConfig::new(specs, targets.len()).with_target_costs(costs.clone(), budget);
    // The primary's cadence is irrelevant here; a slow one keeps the month quick to simulate.
    config.probe_spacing = Duration::from_secs(2);
    config.silence_window = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut engine = Engine::new(t0, config);
    let mut checks = AppChecks::new(t0, uplinks(true));
    checks.set_policy(t0, demo_apps(), MINUTE, budget);

    let mut now = t0;
    let mut probe_bytes = 0u64;
    let mut check_bytes = 0u64;
    let mut answers: Vec<(Instant, Input)> = Vec::new();
    let mut outcomes: Vec<(Instant, u64)> = Vec::new();
    let mut input = Input::Tick;
    while now < t0 + MONTH {
        for action in engine.handle(now, input) {
            if let crate::engine::Action::Probe { uplink, target } = action {
                if uplink == LTE {
                    probe_bytes += costs[target];
                }
                answers.push((
                    now + Duration::from_millis(20),
                    Input::ProbeAnswered {
                        uplink,
                        target,
                        rtt: Duration::from_millis(20),
                    },
                ));
            }
        }
        for request in checks.poll(now, engine.active()) {
            if request.uplink == LTE {
                let endpoint = checks.endpoint(&request).expect("endpoint");
                check_bytes += Exchange::of_endpoint(endpoint).bytes();
            }
            outcomes.push((now + Duration::from_millis(50), request.id));
        }
        while let Some(i) = outcomes.iter().position(|(at, _)| *at <= now) {
            let (_, id) = outcomes.swap_remove(i);
            checks.record(now, id, Ok(Duration::from_millis(50)));
        }
        let next_answer = answers.iter().map(|(at, _)| *at).min();
        let next = [
            engine.next_deadline(),
            checks.next_deadline(now, engine.active()),
            next_answer,
            outcomes.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1))
        .max(now);
        now = next;
        input = match answers.iter().position(|(at, _)| *at <= now) {
            Some(i) => answers.swap_remove(i).1,
            None => Input::Tick,
        };
    }
    let total = probe_bytes + check_bytes;
    println!(
        "a month on a metered standby: health probes {:.2} MB, app checks {:.2} MB, total {:.2} MB of {:.0} MB",
        probe_bytes as f64 / 1e6,
        check_bytes as f64 / 1e6,
        total as f64 / 1e6,
        budget as f64 / 1e6
    );
    assert_eq!(
        engine.active_name(),
        Some("fiber"),
        "the fibre carried traffic all month"
    );
    assert!(
        probe_bytes <= probe_cost::health_budget_bytes(budget),
        "{probe_bytes}"
    );
    assert!(
        check_bytes <= probe_cost::app_check_budget_bytes(budget),
        "{check_bytes}"
    );
    assert!(total <= budget, "{total} > {budget}");
    assert!(total >= budget * 9 / 10, "the budget is used: {total}");
    for app in 0..5 {
        assert!(checks.latest(app, LTE).is_some_and(|r| r.reachable));
    }
}
