use super::*;

const KEEPALIVE: Duration = Duration::from_secs(1);

fn relay() -> RelayAssignment {
    RelayAssignment {
        relay: "relay-1".into(),
        endpoint: "203.0.113.50:51820".into(),
        public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        inner_address: Ipv4Addr::new(100, 96, 0, 2),
    }
}

fn settings(mode: TunnelMode, redundant: bool) -> TunnelSettings {
    TunnelSettings {
        mode,
        relay: Some(relay()),
        critical: vec![Destination::parse("203.0.113.60:5004").expect("valid")],
        redundant,
        metered_cap_bytes: 1_000_000,
    }
}

fn fiber_and_lte(lte_healthy: bool, lte_used: u64) -> Vec<UplinkView> {
    vec![
        UplinkView {
            healthy: true,
            metered: false,
            duplicate_bytes: 0,
        },
        UplinkView {
            healthy: lte_healthy,
            metered: true,
            duplicate_bytes: lte_used,
        },
    ]
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

/// A core that completed its handshake at t0 + 0.1 s and is up at t0 + 0.2 s.
fn up_core(t0: Instant, redundant: bool) -> TunnelCore {
    let mut core = TunnelCore::new(
        t0,
        TunnelTimings::for_keepalive(KEEPALIVE),
        settings(TunnelMode::Critical, redundant),
    );
    let seen = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.1)),
    };
    let (plan, events) = core.update(secs(t0, 0.2), Some(0), &fiber_and_lte(true, 0), seen);
    assert_eq!(plan.state, TunnelState::Up);
    assert!(events.is_empty(), "{events:?}");
    core
}

#[test]
fn without_a_relay_or_with_mode_off_the_tunnel_is_off_and_steers_nothing() {
    let t0 = Instant::now();
    for s in [
        TunnelSettings {
            relay: None,
            ..settings(TunnelMode::All, true)
        },
        settings(TunnelMode::Off, true),
    ] {
        let mut core = TunnelCore::new(t0, TunnelTimings::for_keepalive(KEEPALIVE), s);
        let (plan, events) = core.update(t0, Some(0), &fiber_and_lte(true, 0), Observed::default());
        assert_eq!(plan, TunnelPlan::off());
        assert!(events.is_empty());
    }
}

#[test]
fn before_the_first_handshake_the_tunnel_is_connecting_flows_leave_directly_and_a_handshake_starts()
{
    let t0 = Instant::now();
    let mut core = TunnelCore::new(
        t0,
        TunnelTimings::for_keepalive(KEEPALIVE),
        settings(TunnelMode::All, false),
    );
    let (plan, events) = core.update(t0, Some(1), &fiber_and_lte(true, 0), Observed::default());
    assert_eq!(plan.state, TunnelState::Connecting);
    assert!(!plan.steer);
    assert_eq!(plan.outer, Some(1), "handshakes leave by the active uplink");
    assert!(plan.handshake_now);
    assert!(events.is_empty());
    let (again, _) = core.update(
        secs(t0, 0.5),
        Some(1),
        &fiber_and_lte(true, 0),
        Observed::default(),
    );
    assert!(
        !again.handshake_now,
        "no new handshake within the retry interval"
    );
}

#[test]
fn a_completed_handshake_brings_the_tunnel_up_and_steers_flows_into_it_without_an_event() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let seen = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 1.0)),
    };
    let (plan, events) = core.update(secs(t0, 1.1), Some(0), &fiber_and_lte(true, 0), seen);
    assert!(plan.steer);
    assert!(!plan.handshake_now);
    assert!(events.is_empty());
}

#[test]
fn no_handshake_within_the_timeout_falls_back_to_direct_nat_with_one_event() {
    let t0 = Instant::now();
    let mut core = TunnelCore::new(
        t0,
        TunnelTimings::for_keepalive(KEEPALIVE),
        settings(TunnelMode::Critical, false),
    );
    let uplinks = fiber_and_lte(true, 0);
    let (plan, events) = core.update(secs(t0, 9.9), Some(0), &uplinks, Observed::default());
    assert_eq!(plan.state, TunnelState::Connecting);
    assert!(events.is_empty());
    let (plan, events) = core.update(secs(t0, 10.0), Some(0), &uplinks, Observed::default());
    assert_eq!(plan.state, TunnelState::FallbackDirect);
    assert!(!plan.steer);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::TunnelFallback);
    assert!(events[0].reason.contains("relay-1"), "{}", events[0].reason);
    let (_, events) = core.update(secs(t0, 11.0), Some(0), &uplinks, Observed::default());
    assert!(events.is_empty(), "the fallback is reported once");
}

#[test]
fn a_relay_silent_for_two_keepalives_and_the_margin_falls_back_to_direct_nat() {
    let t0 = Instant::now();
    let mut core = up_core(t0, true);
    let last = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.1)),
    };
    let uplinks = fiber_and_lte(true, 0);
    let (plan, events) = core.update(secs(t0, 3.1), Some(0), &uplinks, last);
    assert_eq!(
        plan.state,
        TunnelState::Up,
        "3.0 s of silence is still within 2 × 1 s + 1 s"
    );
    assert!(events.is_empty());
    assert!(
        plan.handshake_now,
        "a quiet relay is asked for a new handshake first"
    );
    let (plan, events) = core.update(secs(t0, 3.2), Some(0), &uplinks, last);
    assert_eq!(plan.state, TunnelState::FallbackDirect);
    assert!(!plan.steer, "steering is removed: flows leave directly");
    assert!(plan.duplicate_on.is_empty());
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::TunnelFallback]
    );
    let (retry, _) = core.update(secs(t0, 5.2), Some(0), &uplinks, last);
    assert!(retry.handshake_now, "the appliance keeps trying the relay");
}

#[test]
fn a_silent_relay_with_no_usable_uplink_is_not_a_relay_fallback() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let last = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.1)),
    };
    let (plan, events) = core.update(secs(t0, 5.0), None, &fiber_and_lte(false, 0), last);
    assert_eq!(plan.state, TunnelState::Up);
    assert!(events.is_empty());
}

#[test]
fn a_relay_quiet_for_a_keepalive_and_the_margin_gets_a_new_handshake_before_any_fallback() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let last = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.1)),
    };
    let uplinks = fiber_and_lte(true, 0);
    let (plan, _) = core.update(secs(t0, 2.0), Some(0), &uplinks, last);
    assert!(!plan.handshake_now, "1.9 s of quiet is within 1 s + 1 s");
    let (plan, events) = core.update(secs(t0, 2.2), Some(0), &uplinks, last);
    assert!(
        plan.handshake_now,
        "a restarted relay lost the session: handshake again"
    );
    assert_eq!(plan.state, TunnelState::Up);
    assert!(plan.steer, "flows stay in the tunnel meanwhile");
    assert!(events.is_empty());
    // The relay answers the handshake: no fallback, no event.
    let renewed = Observed {
        handshake_at: Some(secs(t0, 2.3)),
        received_at: Some(secs(t0, 2.3)),
    };
    let (plan, events) = core.update(secs(t0, 3.5), Some(0), &uplinks, renewed);
    assert_eq!(plan.state, TunnelState::Up);
    assert!(events.is_empty());
}

#[test]
fn while_falling_back_a_handshake_is_retried_every_two_seconds() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let last = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.1)),
    };
    let uplinks = fiber_and_lte(true, 0);
    let retries: Vec<bool> = [4.0, 5.0, 6.0, 7.0, 8.0]
        .iter()
        .map(|s| {
            core.update(secs(t0, *s), Some(0), &uplinks, last)
                .0
                .handshake_now
        })
        .collect();
    assert_eq!(retries, vec![true, false, true, false, true]);
}

#[test]
fn a_handshake_completed_after_the_fallback_restores_the_tunnel_with_one_event() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let old = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.1)),
    };
    let uplinks = fiber_and_lte(true, 0);
    core.update(secs(t0, 4.0), Some(0), &uplinks, old);
    assert_eq!(core.state(), TunnelState::FallbackDirect);
    // A packet of the old session is not enough: the relay must complete a handshake.
    let stale = Observed {
        handshake_at: old.handshake_at,
        received_at: Some(secs(t0, 5.0)),
    };
    let (plan, events) = core.update(secs(t0, 5.0), Some(0), &uplinks, stale);
    assert_eq!(plan.state, TunnelState::FallbackDirect);
    assert!(events.is_empty());
    let renewed = Observed {
        handshake_at: Some(secs(t0, 6.0)),
        received_at: Some(secs(t0, 6.0)),
    };
    let (plan, events) = core.update(secs(t0, 6.1), Some(0), &uplinks, renewed);
    assert_eq!(plan.state, TunnelState::Up);
    assert!(plan.steer);
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::TunnelRestored]
    );
}

#[test]
fn the_outer_packets_follow_the_engines_active_uplink_without_a_new_handshake() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let seen = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.9)),
    };
    let (plan, _) = core.update(secs(t0, 1.0), Some(1), &fiber_and_lte(true, 0), seen);
    assert_eq!(plan.outer, Some(1));
    assert_eq!(plan.state, TunnelState::Up);
    assert!(!plan.handshake_now, "roaming, not a new session");
}

#[test]
fn in_redundant_mode_critical_packets_are_duplicated_on_every_other_healthy_uplink() {
    let t0 = Instant::now();
    let mut core = up_core(t0, true);
    let seen = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.9)),
    };
    let (plan, _) = core.update(secs(t0, 1.0), Some(0), &fiber_and_lte(true, 0), seen);
    assert_eq!(plan.duplicate_on, vec![1]);
    let (plan, _) = core.update(secs(t0, 1.0), Some(0), &fiber_and_lte(false, 0), seen);
    assert!(
        plan.duplicate_on.is_empty(),
        "an unhealthy uplink carries no copies"
    );
    let (plan, _) = core.update(secs(t0, 1.0), Some(1), &fiber_and_lte(true, 0), seen);
    assert_eq!(
        plan.duplicate_on,
        vec![0],
        "the active uplink never carries a copy"
    );
}

#[test]
fn a_metered_uplink_past_the_months_cap_carries_no_more_duplicates() {
    let t0 = Instant::now();
    let mut core = up_core(t0, true);
    let seen = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.9)),
    };
    let (plan, _) = core.update(secs(t0, 1.0), Some(0), &fiber_and_lte(true, 999_999), seen);
    assert_eq!(plan.duplicate_on, vec![1]);
    let (plan, _) = core.update(
        secs(t0, 1.0),
        Some(0),
        &fiber_and_lte(true, 1_000_000),
        seen,
    );
    assert!(plan.duplicate_on.is_empty());
}

#[test]
fn without_redundant_mode_nothing_is_duplicated() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let seen = Observed {
        handshake_at: Some(secs(t0, 0.1)),
        received_at: Some(secs(t0, 0.9)),
    };
    let (plan, _) = core.update(secs(t0, 1.0), Some(0), &fiber_and_lte(true, 0), seen);
    assert!(plan.duplicate_on.is_empty());
}

#[test]
fn a_new_relay_assignment_starts_over_with_a_handshake_and_mode_off_stops_the_tunnel() {
    let t0 = Instant::now();
    let mut core = up_core(t0, false);
    let mut moved = settings(TunnelMode::Critical, false);
    if let Some(r) = &mut moved.relay {
        r.relay = "relay-2".into();
    }
    core.set_settings(secs(t0, 1.0), moved);
    assert_eq!(core.state(), TunnelState::Connecting);
    core.set_settings(secs(t0, 2.0), settings(TunnelMode::Off, false));
    assert_eq!(core.state(), TunnelState::Off);
    core.set_settings(secs(t0, 3.0), settings(TunnelMode::All, false));
    assert_eq!(core.state(), TunnelState::Connecting);
}

#[test]
fn critical_destinations_come_from_the_apps_endpoints_and_the_telemedicine_services() {
    let apps = vec![CriticalApp {
        name: "EHR".into(),
        tier: Default::default(),
        endpoints: vec![
            AppEndpoint::Https {
                url: "https://ehr.example/health".into(),
            },
            AppEndpoint::Https {
                url: "http://192.0.2.10:8080/x".into(),
            },
            AppEndpoint::Tcp {
                host: "203.0.113.9".into(),
                port: 2575,
            },
            AppEndpoint::Dns {
                name: "ehr.example".into(),
            },
        ],
    }];
    let policy = Policy {
        critical_apps: apps,
        telemedicine_services: vec!["zoom.us".into(), "198.51.100.0/24".into()],
        ..Policy::default()
    };
    let s = TunnelSettings::from_policy(&policy, &TunnelSection::default());
    let net = |a: [u8; 4], prefix, port| {
        Destination::Net(CriticalNet {
            address: Ipv4Addr::from(a),
            prefix,
            port,
        })
    };
    for expected in [
        Destination::Name {
            host: "ehr.example".into(),
            port: Some(443),
        },
        net([192, 0, 2, 10], 32, Some(8080)),
        net([203, 0, 113, 9], 32, Some(2575)),
        Destination::Name {
            host: "zoom.us".into(),
            port: None,
        },
        net([198, 51, 100, 0], 24, None),
    ] {
        assert!(
            s.critical.contains(&expected),
            "{expected:?} in {:?}",
            s.critical
        );
    }
    assert_eq!(s.critical.len(), 5);
}

#[test]
fn a_critical_network_matches_its_addresses_and_only_its_port() {
    let Some(Destination::Net(net)) = Destination::parse("203.0.113.0/24:5004") else {
        panic!("a CIDR with a port");
    };
    assert!(net.contains(Ipv4Addr::new(203, 0, 113, 77), Some(5004)));
    assert!(!net.contains(Ipv4Addr::new(203, 0, 113, 77), Some(443)));
    assert!(!net.contains(Ipv4Addr::new(203, 0, 114, 1), Some(5004)));
    assert_eq!(net.network(), "203.0.113.0/24");
    let Some(Destination::Net(any)) = Destination::parse("0.0.0.0/0") else {
        panic!("the whole address space");
    };
    assert!(any.contains(Ipv4Addr::new(8, 8, 8, 8), None));
    assert_eq!(Destination::parse("bad name"), None);
}

#[test]
fn standalone_settings_come_from_the_tunnel_section_else_the_default_policy() {
    let section = TunnelSection {
        relay: Some(relay()),
        mode: Some(TunnelMode::All),
        redundant_critical: Some(false),
        critical_destinations: Some(vec!["203.0.113.60".into()]),
        ..TunnelSection::default()
    };
    let s = TunnelSettings::from_config(&section);
    assert_eq!(s.mode, TunnelMode::All);
    assert!(!s.redundant);
    assert_eq!(s.critical.len(), 1);
    let d = TunnelSettings::from_config(&TunnelSection::default());
    assert!(!d.enabled(), "no relay, no tunnel");
    assert_eq!(d.mode, TunnelMode::Critical);
    assert_eq!(d.critical.len(), TELEMEDICINE_SERVICES.len());
}

#[test]
fn the_policys_relay_wins_over_the_configs_static_one() {
    let mut cloud_relay = relay();
    cloud_relay.relay = "relay-cloud".into();
    let policy = Policy {
        tunnel_relay: Some(cloud_relay.clone()),
        ..Policy::default()
    };
    let section = TunnelSection {
        relay: Some(relay()),
        ..TunnelSection::default()
    };
    assert_eq!(
        TunnelSettings::from_policy(&policy, &section).relay,
        Some(cloud_relay)
    );
    assert_eq!(
        TunnelSettings::from_policy(&Policy::default(), &section).relay,
        Some(relay())
    );
}

#[test]
fn the_redundant_ledger_counts_per_uplink_starts_each_month_afresh_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = RedundantLedger::load(dir.path());
    ledger.add("2026-12", "lte", 500);
    ledger.add("2026-12", "lte", 250);
    ledger.save(dir.path()).expect("save");
    let mut again = RedundantLedger::load(dir.path());
    assert_eq!(again.of("lte"), 750);
    again.add("2027-01", "lte", 10);
    assert_eq!(again.of("lte"), 10);
    assert_eq!(
        RedundantLedger::month_of(
            chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time")
        ),
        "2027-01"
    );
}

#[test]
fn relay_endpoints_are_host_and_port() {
    assert_eq!(
        parse_endpoint("203.0.113.50:51820"),
        Some(("203.0.113.50".into(), 51820))
    );
    assert_eq!(
        parse_endpoint("relay.example:51820"),
        Some(("relay.example".into(), 51820))
    );
    assert_eq!(parse_endpoint("203.0.113.50"), None);
    assert_eq!(parse_endpoint("203.0.113.50:0"), None);
    assert_eq!(parse_endpoint(":51820"), None);
}
