//! What checking the critical applications costs on a metered standby, from the cost model per
//! probe kind (`stayopen_appliance::probe_cost`), for the demo's five-application register and the
//! default 30 MB budget. Run: `cargo bench -p stayopen-appliance --bench app_check_budget`.

use std::time::{Duration, Instant};

use stayopen_appliance::app_checks::{AppChecks, UplinkInfo};
use stayopen_appliance::config::ProbeKind;
use stayopen_appliance::engine::{self, EngineConfig, UplinkSpec};
use stayopen_appliance::probe_cost::{self, Exchange, MONTH};
use stayopen_shared::compliance::{AppEndpoint, AppTier};
use stayopen_shared::policy::{CriticalApp, Policy};

fn app(name: &str, endpoint: AppEndpoint) -> CriticalApp {
    CriticalApp {
        name: name.into(),
        tier: AppTier::Tier1,
        endpoints: vec![endpoint],
    }
}

fn https(url: &str) -> AppEndpoint {
    AppEndpoint::Https { url: url.into() }
}

fn demo_register() -> Vec<CriticalApp> {
    vec![
        app("EHR", https("https://ehr.example.com/health")),
        app("e-Prescribing", https("https://erx.example.com/status")),
        app(
            "Lab interface",
            AppEndpoint::Tcp {
                host: "lab.example.com".into(),
                port: 2575,
            },
        ),
        app("Telemedicine", https("https://telehealth.example.com/")),
        app(
            "Patient portal",
            AppEndpoint::Dns {
                name: "portal.example.com".into(),
            },
        ),
    ]
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}

/// Runs the scheduler for a month with the fibre active and counts what went through the LTE.
fn simulate_month(apps: &[CriticalApp], budget: u64, interval: Duration) -> (u64, u64) {
    let t0 = Instant::now();
    let uplinks = vec![
        UplinkInfo {
            name: "fiber".into(),
            metered: false,
        },
        UplinkInfo {
            name: "lte".into(),
            metered: true,
        },
    ];
    let mut checks = AppChecks::new(t0, uplinks);
    checks.set_policy(t0, apps.to_vec(), interval, budget);
    let (mut bytes, mut count) = (0, 0);
    let mut now = t0;
    while now < t0 + MONTH {
        for request in checks.poll(now, Some(0)) {
            if request.uplink == 1 {
                let endpoint = checks.endpoint(&request).expect("endpoint");
                bytes += Exchange::of_endpoint(endpoint).bytes();
                count += 1;
            }
            checks.record(now, request.id, Ok(Duration::from_millis(80)));
        }
        now = checks
            .next_deadline(now, Some(0))
            .unwrap_or(t0 + MONTH)
            .max(now + Duration::from_millis(1));
    }
    (bytes, count)
}

fn main() {
    let policy = Policy::default();
    let budget = u64::from(policy.metered_budget_mb) * 1_000_000;
    println!("cost model per probe kind (IPv4, IP bytes both ways):");
    for (kind, exchange) in [
        ("ICMP echo", Exchange::IcmpEcho),
        ("TCP handshake + close", Exchange::TcpConnect),
        (
            "DNS A query + answer (24-char name)",
            Exchange::DnsQuery {
                name_len: probe_cost::TYPICAL_DNS_NAME_LEN,
            },
        ),
        (
            "HTTPS GET incl. TLS (4 kB chain)",
            Exchange::HttpsGet {
                chain_bytes: probe_cost::TYPICAL_CERT_CHAIN_BYTES,
            },
        ),
    ] {
        println!("  {kind:<38} {:>6} bytes", exchange.bytes());
    }

    let health = probe_cost::health_budget_bytes(budget);
    let apps_share = probe_cost::app_check_budget_bytes(budget);
    println!(
        "\nmetered budget {:.0} MB a month: health probes {:.1} MB ({} %), app checks {:.1} MB",
        mb(budget),
        mb(health),
        probe_cost::HEALTH_BUDGET_PCT,
        mb(apps_share)
    );

    let spec = |name: &str, priority, metered| UplinkSpec {
        name: name.into(),
        priority,
        metered,
    };
    let testbed_targets: Vec<ProbeKind> = vec![
        ProbeKind::Icmp {
            address: "203.0.113.10".parse().expect("ip"),
        },
        ProbeKind::Icmp {
            address: "203.0.113.11".parse().expect("ip"),
        },
        ProbeKind::Icmp {
            address: "203.0.113.12".parse().expect("ip"),
        },
        ProbeKind::Icmp {
            address: "203.0.113.13".parse().expect("ip"),
        },
        ProbeKind::Tcp {
            address: "203.0.113.30:80".parse().expect("addr"),
        },
        ProbeKind::Http {
            url: "https://203.0.113.30/health".into(),
            ca_file: None,
        },
        ProbeKind::Dns {
            server: "203.0.113.30".parse().expect("ip"),
            name: "ehr.example".into(),
        },
    ];
    println!("\nhealth probes on a metered standby:");
    for (label, targets) in [
        (
            "4 ICMP targets (the simulated fleet)",
            vec![
                ProbeKind::Icmp {
                    address: "203.0.113.10".parse().expect("ip")
                };
                4
            ],
        ),
        ("4 ICMP + TCP + HTTPS + DNS (the testbed)", testbed_targets),
    ] {
        let costs = probe_cost::target_costs(&targets);
        let config = EngineConfig::new(
            vec![spec("fiber", 0, false), spec("lte", 1, true)],
            targets.len(),
        )
        .with_target_costs(costs.clone(), budget);
        let mean = probe_cost::mean_cost(&costs);
        let interval = config.metered_standby_interval;
        println!(
            "  {label:<42} mean {mean:>5} bytes/probe, one probe every {} on average, {:.2} MB a month",
            human(interval),
            mb(engine::monthly_probe_bytes(interval, mean))
        );
    }

    let register = demo_register();
    let round: u64 = register
        .iter()
        .map(|a| Exchange::of_endpoint(&a.endpoints[0]).bytes())
        .sum();
    let interval = Duration::from_secs(u64::from(policy.app_check_interval_secs));
    let (bytes, checks) = simulate_month(&register, budget, interval);
    let per_app = MONTH / (checks.max(1) as u32) * register.len() as u32;
    println!("\napp checks for the demo's 5-app register (3 HTTPS, 1 TCP, 1 DNS):");
    println!("  one round of all five                  {round} bytes");
    println!(
        "  on the active uplink                   every app every {}: {:.2} MB a month",
        human(interval),
        mb(round * (MONTH.as_secs() / interval.as_secs()))
    );
    println!(
        "  on a metered standby (simulated month) {checks} checks, each app about every {}: {:.2} MB a month",
        human(per_app),
        mb(bytes)
    );
    let probes = {
        let config = EngineConfig::new(vec![spec("fiber", 0, false), spec("lte", 1, true)], 4)
            .with_target_costs(vec![probe_cost::ICMP_ECHO_BYTES; 4], budget);
        engine::monthly_probe_bytes(config.metered_standby_interval, probe_cost::ICMP_ECHO_BYTES)
    };
    println!(
        "\nall standby probing on a metered uplink (4 ICMP targets + the 5 apps): {:.2} MB + {:.2} MB = {:.2} MB a month of the {:.0} MB budget",
        mb(probes),
        mb(bytes),
        mb(probes + bytes),
        mb(budget)
    );
}
