//! The real agent on the Linux dataplane, in network namespaces built by `infra/testbed/testbed.sh`:
//! a LAN host streams UDP to an echo server on the "internet" while faults are injected on the
//! primary ISP. Needs root, `ip`, `nft` and `conntrack` (infra/scripts/test.sh installs them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use stayopen_appliance::control::{Request, Response};
use stayopen_testkit::testbed::{
    self, ISP1_PUBLIC, ISP2_PUBLIC, Stream, StreamReport, TARGETS, Testbed,
};

/// `stayopen-testbed`, from the testkit crate: `cargo test --workspace` builds it; before
/// `cargo test -p stayopen-appliance --test netns`, `cargo build -p stayopen-testkit` does.
fn tools() -> PathBuf {
    testbed::tools_binary().unwrap_or_else(|e| panic!("{e}"))
}

fn appliance() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stayopen-appliance"))
}

/// A testbed with the echo server, the agent (failback clean period `clean_secs`) and the LAN
/// stream running, the primary active.
async fn testbed(name: &str, clean_secs: u32) -> (Testbed, Stream) {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "the netns tests need root (network namespaces, nftables); CI runs them as root"
    );
    let prefix = format!("so{}{name}", std::process::id() % 10_000);
    // Undamped unless the clean period is the default: tests fail the primary repeatedly.
    let (bed, stream) =
        Testbed::running(&prefix, &tools(), appliance(), clean_secs, clean_secs == 30)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    (bed, stream)
}

/// Injects `fault` on the primary, waits for traffic to run on the backup, and reports the LAN
/// stream's largest gap and where the flow was last seen from.
async fn fail_over(bed: &Testbed, stream: &mut Stream, fault: &[&str]) -> StreamReport {
    stream.mark().expect("mark");
    bed.fault(fault).expect("fault");
    bed.wait_for("failover", Duration::from_secs(5), |s| {
        s.active.as_deref() == Some("isp2")
    })
    .await
    .expect("failover");
    // Let the stream resume on the backup before reading the window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.report().expect("report")
}

fn seen_as(stream: &mut Stream) -> Option<String> {
    stream
        .report()
        .expect("report")
        .last_seen_as
        .map(|a| a.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_primary_moves_lan_traffic_to_the_backup_within_a_second_and_back_after_the_clean_period()
 {
    let (bed, mut stream) = testbed("a", 3).await;
    assert_eq!(
        seen_as(&mut stream).as_deref(),
        Some(ISP1_PUBLIC),
        "traffic starts on the primary"
    );

    let report = fail_over(&bed, &mut stream, &["blackhole", "1"]).await;
    assert!(
        report.max_gap_ms < 1500.0,
        "largest gap {} ms",
        report.max_gap_ms
    );
    assert_eq!(
        report.last_seen_as.map(|a| a.to_string()).as_deref(),
        Some(ISP2_PUBLIC),
        "the flow moved to the backup"
    );
    let events = bed.events();
    let failover = events
        .iter()
        .find(|e| e["kind"] == "failover")
        .expect("failover event");
    assert_eq!(
        (failover["from"].as_str(), failover["to"].as_str()),
        (Some("isp1"), Some("isp2"))
    );
    assert!(
        failover["ts"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{failover}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "uplink_down" && e["uplink"] == "isp1")
    );

    bed.fault(&["clear"]).expect("clear");
    let took = bed
        .wait_for("failback", Duration::from_secs(30), |s| {
            s.active.as_deref() == Some("isp1")
        })
        .await
        .expect("failback");
    assert!(
        took >= Duration::from_secs(3),
        "failback waited for the clean period ({took:?})"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        seen_as(&mut stream).as_deref(),
        Some(ISP1_PUBLIC),
        "flows left the metered backup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_kind_answers_through_each_uplink() {
    let (bed, _stream) = testbed("k", 3).await;
    // On its budget the metered standby visits the HTTPS target about every twenty minutes (it
    // costs as much as 160 ICMP echoes). A drill probes both uplinks at full rate: the backup
    // carries the traffic and the primary is not metered. Up (not degraded) then means every
    // target — ICMP, TCP, HTTPS and DNS — answered within the window through both.
    let accepted = bed
        .request(&Request::StartDrill { duration_secs: 30 })
        .await;
    assert!(
        matches!(accepted, Some(Response::Accepted { .. })),
        "{accepted:?}"
    );
    bed.wait_for(
        "every target answering on both uplinks",
        Duration::from_secs(20),
        |s| s.drill_running && s.uplinks.iter().all(|u| u.health.as_str() == "up"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", agent_log_tail(&bed)));
}

fn agent_log_tail(bed: &Testbed) -> String {
    bed.agent_log()
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_carrier_on_the_primary_switches_in_well_under_half_a_second() {
    let (bed, mut stream) = testbed("c", 3).await;
    let report = fail_over(&bed, &mut stream, &["carrier-down", "1"]).await;
    assert!(
        report.max_gap_ms < 500.0,
        "largest gap {} ms",
        report.max_gap_ms
    );
    assert!(
        bed.events()
            .iter()
            .any(|e| e["kind"] == "uplink_down" && e["reason"] == "carrier lost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_primary_with_a_dead_target_does_not_fail_over() {
    let (bed, mut stream) = testbed("l", 3).await;
    bed.fault(&["loss", "10", "1"]).expect("loss");
    bed.fault(&["dead-target", TARGETS[3]])
        .expect("dead target");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        bed.count_events("failover"),
        0,
        "events: {:?}",
        bed.events()
    );
    assert_eq!(bed.count_events("uplink_down"), 0);
    let status = bed.status().await.expect("status");
    assert_eq!(status.active.as_deref(), Some("isp1"));
    assert_eq!(seen_as(&mut stream).as_deref(), Some(ISP1_PUBLIC));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_moves_traffic_to_the_backup_and_back_and_status_reports_it() {
    let (bed, mut stream) = testbed("d", 30).await;
    let accepted = bed.request(&Request::StartDrill { duration_secs: 4 }).await;
    assert!(
        matches!(accepted, Some(Response::Accepted { .. })),
        "{accepted:?}"
    );
    bed.wait_for("drill on backup", Duration::from_secs(3), |s| {
        s.active.as_deref() == Some("isp2") && s.drill_running
    })
    .await
    .expect("drill started");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(seen_as(&mut stream).as_deref(), Some(ISP2_PUBLIC));

    let output = std::process::Command::new(appliance())
        .args(["status", "--config"])
        .arg(bed.dir.join("appliance.toml"))
        .output()
        .expect("status command");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("active uplink: isp2 (failover drill running)"),
        "{text}"
    );

    // No 30 s clean period after a drill: the primary never failed.
    bed.wait_for("drill over", Duration::from_secs(8), |s| {
        s.active.as_deref() == Some("isp1") && !s.drill_running
    })
    .await
    .expect("drill finished");
    let kinds: Vec<String> = bed
        .events()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect();
    assert!(
        kinds.contains(&"drill_started".to_owned()) && kinds.contains(&"drill_finished".to_owned()),
        "{kinds:?}"
    );
}

/// A testbed with only its topology and servers (no agent), a default route out of the primary
/// ISP in the appliance's namespace and IPv6 off there, so nothing but the probe under test
/// crosses `wan0`.
fn quiet_testbed(name: &str) -> Testbed {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(root, "the netns tests need root (network namespaces)");
    let prefix = format!("so{}{name}", std::process::id() % 10_000);
    let mut bed = Testbed::up(&prefix).unwrap_or_else(|e| panic!("{e}"));
    bed.start_servers(&tools()).expect("servers");
    let ns = bed.namespace("app");
    for args in [
        vec![
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            "100.64.1.1",
            "dev",
            "wan0",
        ],
        vec![
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ],
    ] {
        let status = std::process::Command::new("ip")
            .args(&args)
            .status()
            .expect("ip");
        assert!(status.success(), "ip {args:?}");
    }
    // The EHR stand-in's HTTPS server starts in the background: wait until it answers.
    let https = serde_json::json!({"kind": "https", "url": "https://203.0.113.30/health"});
    let ca = bed.dir.join("tls").join("ca.pem").display().to_string();
    let started = std::time::Instant::now();
    loop {
        let answered: Result<Duration, String> = in_appliance(
            &bed,
            &[
                "app-check",
                "--interface",
                "wan0",
                "--endpoint",
                &https.to_string(),
                "--ca-file",
                &ca,
            ],
        );
        match answered {
            Ok(_) => break,
            Err(e) if started.elapsed() > Duration::from_secs(15) => {
                panic!("the testbed's HTTPS server never answered: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    bed
}

/// Runs a `stayopen-testbed` subcommand in the appliance's namespace and parses its JSON output.
fn in_appliance<T: serde::de::DeserializeOwned>(bed: &Testbed, args: &[&str]) -> T {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.namespace("app")])
        .arg(tools())
        .args(args)
        .output()
        .expect("stayopen-testbed");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// The DER size of the certificates in a PEM file: what the server sends as its chain.
fn chain_bytes(pem_file: &Path) -> u64 {
    use base64::Engine as _;
    let pem = std::fs::read_to_string(pem_file).expect("pem");
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("base64")
                .len() as u64
        })
        .sum()
}

#[test]
fn the_cost_model_of_every_probe_kind_covers_the_bytes_each_real_prober_puts_on_the_wire() {
    use stayopen_appliance::probe_cost::{self, Exchange};
    use stayopen_testkit::testbed::{EHR_DNS_ADDR, EHR_HTTP_ADDR, EHR_HTTPS_HOST, ProbeBytes};
    let bed = quiet_testbed("b");
    let ca = bed.dir.join("tls").join("ca.pem");
    let dns_ip = EHR_DNS_ADDR.split(':').next().unwrap_or_default();
    let cases = [
        (
            "ICMP echo",
            serde_json::json!({"kind": "icmp", "address": TARGETS[0]}),
            Exchange::IcmpEcho.bytes(),
        ),
        (
            "TCP handshake and close",
            serde_json::json!({"kind": "tcp", "address": EHR_HTTP_ADDR}),
            Exchange::TcpConnect.bytes(),
        ),
        (
            "DNS query and answer",
            serde_json::json!({"kind": "dns", "server": dns_ip, "name": "ehr.example"}),
            probe_cost::dns_query_bytes("ehr.example".len() as u64),
        ),
        (
            "HTTPS GET with its TLS handshake",
            serde_json::json!({
                "kind": "http",
                "url": format!("https://{EHR_HTTPS_HOST}/health"),
                "ca_file": ca,
            }),
            // The model for this server's own chain; the default assumes a public CA's 4 kB.
            probe_cost::https_get_bytes(chain_bytes(&bed.dir.join("tls").join("server.pem"))),
        ),
    ];
    let mut failures = Vec::new();
    for (kind, target, model) in cases {
        let measured: ProbeBytes = in_appliance(
            &bed,
            &[
                "probe-bytes",
                "--interface",
                "wan0",
                "--target",
                &target.to_string(),
            ],
        );
        println!(
            "{kind}: measured {} IP bytes in {} packets, model {model} bytes ({:.2}×)",
            measured.ip_bytes,
            measured.packets,
            model as f64 / measured.ip_bytes.max(1) as f64
        );
        if !measured.answered {
            failures.push(format!("{kind}: the prober got no answer"));
        } else if model < measured.ip_bytes {
            failures.push(format!(
                "{kind}: model {model} < measured {}",
                measured.ip_bytes
            ));
        } else if model > 3 * measured.ip_bytes {
            failures.push(format!(
                "{kind}: model {model} > 3 × measured {}",
                measured.ip_bytes
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn an_app_check_through_an_uplink_answers_or_says_why_not_in_words_an_officer_reads() {
    let bed = quiet_testbed("p");
    let ca = bed.dir.join("tls").join("ca.pem").display().to_string();
    let check = |endpoint: serde_json::Value| -> Result<Duration, String> {
        in_appliance(
            &bed,
            &[
                "app-check",
                "--interface",
                "wan0",
                "--endpoint",
                &endpoint.to_string(),
                "--resolver",
                "203.0.113.30",
                "--ca-file",
                &ca,
            ],
        )
    };
    assert!(
        check(serde_json::json!({"kind": "https", "url": "https://203.0.113.30/health"})).is_ok()
    );
    assert!(check(serde_json::json!({"kind": "tcp", "host": "203.0.113.30", "port": 80})).is_ok());
    assert!(check(serde_json::json!({"kind": "dns", "name": "portal.example"})).is_ok());
    assert_eq!(
        check(serde_json::json!({"kind": "tcp", "host": "203.0.113.30", "port": 2575})),
        Err("tcp 203.0.113.30:2575: connection refused".to_owned())
    );
    // The lab allow-lists another address: its packets from this uplink are dropped.
    bed.fault(&["dead-target", "203.0.113.13"]).expect("fault");
    assert_eq!(
        check(serde_json::json!({"kind": "tcp", "host": "203.0.113.13", "port": 2575})),
        Err("tcp 203.0.113.13:2575: no answer within 5 s".to_owned())
    );
}
