//! Uplinks that configure themselves (issue 17): the agent's DHCP client on wan0 and wan1 against
//! the testbed's ISP routers, which hand out addresses with dnsmasq (`testbed.sh wan-dhcp`). Needs
//! root, `ip`, `nft`, `conntrack`, `dnsmasq` and `curl` (infra/scripts/test.sh installs them).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stayopen_testkit::testbed::{self, ISP1_PUBLIC, ISP2_PUBLIC, Stream, Testbed};

fn tools() -> PathBuf {
    testbed::tools_binary().unwrap_or_else(|e| panic!("{e}"))
}

fn appliance() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stayopen-appliance"))
}

fn assert_root() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "the netns tests need root (network namespaces, nftables); CI runs them as root"
    );
}

/// A testbed whose ISP routers hand out the WAN addresses by DHCP, and nothing else started.
fn dhcp_testbed(name: &str) -> Testbed {
    assert_root();
    let prefix = format!("so{}{name}", std::process::id() % 10_000);
    let bed = Testbed::up(&prefix).unwrap_or_else(|e| panic!("{e}"));
    bed.wan_dhcp().unwrap_or_else(|e| panic!("{e}"));
    bed
}

/// Polls `check` every 10 ms for up to `timeout`; how long it took. A timeout shows the agent's
/// and the DHCP servers' logs.
async fn until(bed: &Testbed, what: &str, timeout: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "timed out waiting for {what}\n--- agent\n{}\n--- ISP1 DHCP\n{}\n--- ISP2 DHCP\n{}",
            bed.agent_log(),
            bed.dhcp_server_log(1),
            bed.dhcp_server_log(2)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

fn in_pool(address: Option<Ipv4Addr>, net: u8, first: u8, last: u8) -> bool {
    address.is_some_and(|a| {
        let [p, q, r, s] = a.octets();
        (p, q, r) == (100, 64, net) && (first..=last).contains(&s)
    })
}

/// The LAN host fetches the EHR stand-in at 203.0.113.30 through the appliance.
fn lan_reaches_the_ehr(bed: &Testbed) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", &bed.namespace("lan")])
        .args(["curl", "-sf", "-m", "3", "http://203.0.113.30/"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"ok")
}

/// Waits for the LAN stream to be carried by the ISP whose public address is `public`.
async fn stream_carried_by(stream: &mut Stream, public: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = stream.report().expect("report");
        if report.last_seen_as.map(|a| a.to_string()).as_deref() == Some(public) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the stream is still seen as {:?}, not {public}",
            report.last_seen_as
        );
    }
}

#[test]
fn probe_reports_the_isps_offer_without_taking_an_address_and_none_where_no_server_answers() {
    let bed = dhcp_testbed("p");
    let app = bed.namespace("app");
    let (offer, silent) = std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/run/netns/{app}")).expect("netns file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let offer = stayopen_appliance::dhcp::probe("wan1", Duration::from_secs(5)).await;
            let started = Instant::now();
            let silent = stayopen_appliance::dhcp::probe("lan0", Duration::from_millis(500)).await;
            (offer, (silent, started.elapsed()))
        })
    })
    .join()
    .expect("probe thread");
    let offer = offer.expect("probe").expect("ISP2 offers an address");
    assert_eq!(offer.server, Ipv4Addr::new(100, 64, 2, 1));
    assert!(in_pool(Some(offer.address), 2, 100, 199), "{offer:?}");
    assert_eq!(offer.gateway, Some(Ipv4Addr::new(100, 64, 2, 1)));
    assert_eq!(offer.resolvers, vec![Ipv4Addr::new(198, 51, 100, 53)]);
    assert_eq!(offer.prefix_len, 24);
    assert_eq!(bed.uplink_address("wan1"), None, "probing binds nothing");
    let log = bed.dhcp_server_log(2);
    assert!(log.contains("DHCPOFFER"), "{log}");
    assert!(
        !log.contains("DHCPREQUEST"),
        "probing never requests: {log}"
    );
    let (silent, waited) = silent;
    assert_eq!(silent.expect("probe of the LAN side"), None);
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcp_uplinks_lease_both_isps_fail_over_and_follow_a_renumbered_isp() {
    let mut bed = dhcp_testbed("d");
    // ISP1 renews every 4 s, so a renumbering below is noticed within seconds.
    bed.dhcp_server(1, "100.64.1.100", "100.64.1.199", 120, Some((4, 6)))
        .expect("ISP1's DHCP server");
    let tools = tools();
    bed.start_servers(&tools).expect("servers");
    let config = bed.dhcp_agent_config(3, false);
    let started = Instant::now();
    bed.start_agent_with_config(appliance(), &config)
        .expect("agent");
    until(&bed, "both leases bound", Duration::from_secs(30), || {
        bed.uplink_address("wan0").is_some() && bed.uplink_address("wan1").is_some()
    })
    .await;
    let both_bound = started.elapsed();
    println!("agent start to both DHCP leases bound: {both_bound:?}");
    assert!(in_pool(bed.uplink_address("wan0"), 1, 100, 199));
    assert!(in_pool(bed.uplink_address("wan1"), 2, 100, 199));
    until(
        &bed,
        "the uplinks' tables route via the leased gateways",
        Duration::from_secs(5),
        || {
            bed.appliance_routes("100")
                .contains("default via 100.64.1.1 dev wan0")
                && bed
                    .appliance_routes("101")
                    .contains("default via 100.64.2.1 dev wan1")
        },
    )
    .await;
    let mut stream = bed.start_stream(&tools).expect("stream");
    if let Err(e) = bed.wait_healthy(Duration::from_secs(60)).await {
        panic!("{e}: {}", bed.agent_log());
    }
    println!(
        "agent start to both uplinks healthy, ISP1 active: {:?}",
        started.elapsed()
    );
    assert!(
        lan_reaches_the_ehr(&bed),
        "LAN host reaches 203.0.113.30 via ISP1"
    );
    stream_carried_by(&mut stream, ISP1_PUBLIC, Duration::from_secs(5)).await;

    // ISP1 dies upstream: failover to ISP2's leased address and gateway.
    bed.fault(&["blackhole", "1"]).expect("blackhole");
    bed.wait_for("failover", Duration::from_secs(5), |s| {
        s.active.as_deref() == Some("isp2")
    })
    .await
    .expect("failover");
    stream_carried_by(&mut stream, ISP2_PUBLIC, Duration::from_secs(5)).await;
    assert!(
        lan_reaches_the_ehr(&bed),
        "LAN host reaches 203.0.113.30 via ISP2"
    );
    bed.fault(&["clear"]).expect("clear");
    bed.wait_for("failback", Duration::from_secs(30), |s| {
        s.active.as_deref() == Some("isp1")
    })
    .await
    .expect("failback");

    // Renewals at T1 (4 s) are acknowledged and keep the address.
    let leased = bed.uplink_address("wan0");
    until(
        &bed,
        "a renewal of ISP1's lease acknowledged",
        Duration::from_secs(15),
        || bed.dhcp_server_log(1).matches("DHCPACK").count() >= 2,
    )
    .await;
    assert_eq!(
        bed.uplink_address("wan0"),
        leased,
        "a renewal keeps the address"
    );

    // ISP1's server restarts with another pool and has forgotten the lease: the next renewal is
    // refused, the client discovers again, and the address and routes follow.
    let old = bed.uplink_address("wan0");
    let renumbered = Instant::now();
    bed.dhcp_server(1, "100.64.1.200", "100.64.1.220", 120, Some((4, 6)))
        .expect("ISP1's renumbered DHCP server");
    until(&bed, "wan0 renumbered", Duration::from_secs(30), || {
        in_pool(bed.uplink_address("wan0"), 1, 200, 220)
    })
    .await;
    println!(
        "ISP1 renumbered to a new pool: wan0 {old:?} -> {:?} in {:?}",
        bed.uplink_address("wan0"),
        renumbered.elapsed()
    );
    let log = bed.dhcp_server_log(1);
    assert!(
        log.contains("DHCPNAK"),
        "the renewal of the old address was refused: {log}"
    );
    until(
        &bed,
        "ISP1's table routes via its gateway again",
        Duration::from_secs(5),
        || {
            bed.appliance_routes("100")
                .contains("default via 100.64.1.1 dev wan0")
        },
    )
    .await;
    bed.wait_for("ISP1 active again", Duration::from_secs(30), |s| {
        s.active.as_deref() == Some("isp1") && s.uplinks.iter().all(|u| u.health.as_str() != "down")
    })
    .await
    .expect("ISP1 active");
    stream_carried_by(&mut stream, ISP1_PUBLIC, Duration::from_secs(10)).await;
    assert!(
        lan_reaches_the_ehr(&bed),
        "LAN host reaches 203.0.113.30 after the renumbering"
    );
    let agent_log = bed.agent_log();
    assert!(agent_log.contains("DHCP lease lost"), "{agent_log}");
    assert_eq!(
        bed.uplink_address("wan1")
            .map(|a| in_pool(Some(a), 2, 100, 199)),
        Some(true),
        "ISP2's lease is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_and_a_replugged_cable_verify_the_held_address_and_keep_it_without_discovering()
 {
    let mut bed = dhcp_testbed("r");
    let config = bed.dhcp_agent_config(3, false);
    bed.start_agent_with_config(appliance(), &config)
        .expect("agent");
    until(
        &bed,
        "both leases bound and applied",
        Duration::from_secs(30),
        || {
            bed.agent_log().matches("DHCP lease bound").count() >= 2
                && bed.uplink_address("wan0").is_some()
                && bed.uplink_address("wan1").is_some()
        },
    )
    .await;
    let leased = bed.uplink_address("wan0").expect("wan0 leased");
    bed.stop_agent();
    assert!(
        bed.state_dir().join("dhcp-wan0.json").exists(),
        "the lease is remembered in the state directory"
    );
    let discovers = bed.dhcp_server_log(1).matches("DHCPDISCOVER").count();
    let acks = bed.dhcp_server_log(1).matches("DHCPACK").count();

    let restarted = Instant::now();
    bed.start_agent_with_config(appliance(), &config)
        .expect("agent restarted");
    until(
        &bed,
        "both leases bound again",
        Duration::from_secs(30),
        || bed.agent_log().matches("DHCP lease bound").count() >= 2,
    )
    .await;
    println!(
        "agent restart to both leases bound again: {:?}",
        restarted.elapsed()
    );
    assert_eq!(bed.uplink_address("wan0"), Some(leased));
    let log = bed.dhcp_server_log(1);
    assert_eq!(
        log.matches("DHCPDISCOVER").count(),
        discovers,
        "INIT-REBOOT asked for the remembered address without discovering: {log}"
    );
    assert!(log.matches("DHCPACK").count() > acks, "{log}");

    // The cable is pulled and put back: the lease is verified at once, not at T1 a minute later.
    // (dnsmasq writes its log from a queue: let the restart's lines land before counting.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acks = bed.dhcp_server_log(1).matches("DHCPACK").count();
    bed.fault(&["carrier-down", "1"]).expect("carrier down");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let carrier_up = Instant::now();
    bed.fault(&["carrier-up", "1"]).expect("carrier up");
    until(
        &bed,
        "the lease verified after the carrier came back",
        Duration::from_secs(5),
        || bed.dhcp_server_log(1).matches("DHCPACK").count() > acks,
    )
    .await;
    println!(
        "carrier back (testbed.sh carrier-up started) to the lease verified: {:?}",
        carrier_up.elapsed()
    );
    assert!(
        bed.agent_log().contains("carrier back"),
        "{}",
        bed.agent_log()
    );
    assert_eq!(bed.uplink_address("wan0"), Some(leased));
    assert_eq!(
        bed.dhcp_server_log(1).matches("DHCPDISCOVER").count(),
        discovers,
        "verified, not discovered again"
    );
}
