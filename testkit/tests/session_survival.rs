//! Session-safe failover, end to end in network namespaces (`infra/testbed/testbed.sh`): the real
//! agent tunnels the LAN host's flows to a server through the real relay (`stayopen-relay`), which
//! NATs them to its own public address. While a 10 MB/s TCP stream and a 50 packets/s two-way UDP
//! call run from the LAN host to the server, the primary ISP is blackholed (failover) and restored
//! (failback), or the relay is killed and restarted. Each run must show no reset, one source
//! address:port at the server throughout (the relay's), and gaps or losses within the bounds below.
//! Each run's figures are printed as a table row (run with `--nocapture` to see them).
//!
//! Needs root, `ip`, `nft` and `conntrack`, and the workspace's binaries `stayopen-appliance` and
//! `stayopen-relay` (`cargo test --workspace`, as infra/scripts/test.sh runs it, builds them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use stayopen_testkit::testbed::{
    self, RELAY_PUBLIC, SERVER, SERVER_CALL, SERVER_TCP_SINK, Testbed, Tool, TunnelBinaries,
    TunnelSetup,
};
use stayopen_testkit::traffic::{CallReport, CallServerReport, Ending, SinkReport, TcpSendReport};

/// The runs share two cores: one testbed at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Slack for scheduling on this machine's two cores, shared with the build and the other tests.
const SCHEDULING_MARGIN_MS: f64 = 300.0;
/// One round trip LAN host → appliance → ISP → relay → server and back: well under a millisecond
/// between namespaces; this bounds it with room to spare.
const ROUND_TRIP_MS: f64 = 5.0;
/// The call's packet interval (50 packets a second): a gap between arrivals is measured from the
/// last packet before the outage to the first after, so it can be one interval longer than it.
const CALL_INTERVAL_MS: f64 = 20.0;
/// Linux's minimum TCP retransmission timeout. TCP retransmits lost segments on its own timer,
/// doubling from this: the first retransmission after the switch comes up to one doubling later,
/// so a TCP stream's gap is bounded by twice the outage plus this (see `tcp_gap_bound`).
const TCP_MIN_RTO_MS: f64 = 200.0;

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn binaries() -> TunnelBinaries {
    let from = |name: &str| testbed::workspace_binary(name).unwrap_or_else(|e| panic!("{e}"));
    TunnelBinaries {
        tools: PathBuf::from(env!("CARGO_BIN_EXE_stayopen-testbed")),
        appliance: from("stayopen-appliance"),
        relay: from("stayopen-relay"),
    }
}

/// A testbed whose agent tunnels flows to [`SERVER`] through the relay (`critical` mode with the
/// server's address as the critical destination), redundant or not; failback after 3 clean seconds.
async fn tunnel_testbed(name: &str, redundant: bool) -> (Testbed, TunnelBinaries) {
    assert!(
        is_root(),
        "the netns tests need root (network namespaces, nftables); CI runs them as root"
    );
    let binaries = binaries();
    let prefix = format!("ss{}{name}", std::process::id() % 10_000);
    let bed = Testbed::running_tunnel(
        &prefix,
        &binaries,
        3,
        TunnelSetup::critical(&[SERVER], redundant),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (bed, binaries)
}

/// The detection time the agent runs with: its configuration's `probes.silence_ms`.
fn detection_ms(bed: &Testbed) -> f64 {
    let text = std::fs::read_to_string(bed.dir.join("appliance.toml")).expect("agent config");
    let config = stayopen_appliance::config::ApplianceConfig::parse(&text).expect("agent config");
    f64::from(config.probes.silence_ms)
}

/// The largest gap a switch may leave in the call: the detection time, one round trip, one packet
/// interval, and the scheduling margin.
fn udp_gap_bound(detection_ms: f64) -> f64 {
    detection_ms + ROUND_TRIP_MS + CALL_INTERVAL_MS + SCHEDULING_MARGIN_MS
}

/// The largest gap a switch may leave in the TCP stream: segments lost during an outage of `O`
/// (at most the UDP bound) are retransmitted at RTO·(2^k − 1) after the first loss, so the first
/// retransmission after the switch comes before 2·O + RTO; plus one round trip.
fn tcp_gap_bound(outage_ms: f64) -> f64 {
    2.0 * outage_ms + TCP_MIN_RTO_MS + ROUND_TRIP_MS
}

/// The 10 MB/s TCP stream and the 50 packets/s call, both ends.
struct Sessions {
    sink: Tool,
    sender: Tool,
    call_server: Tool,
    call: Tool,
}

/// One run's figures: a row of the session-survival table.
#[derive(Debug)]
struct Row {
    mode: &'static str,
    event: &'static str,
    resets: usize,
    errors: Vec<String>,
    /// Every source address:port the server saw, TCP and UDP.
    tcp_sources: Vec<String>,
    udp_sources: Vec<String>,
    tcp_gap_ms: f64,
    /// LAN host → server and server → LAN host.
    udp_gap_up_ms: f64,
    udp_gap_down_ms: f64,
    udp_lost_up: u64,
    udp_lost_down: u64,
    tcp_window_mb: f64,
}

impl Row {
    fn source_stable(&self) -> bool {
        let relay = |sources: &[String]| {
            sources.len() == 1 && sources[0].starts_with(&format!("{RELAY_PUBLIC}:"))
        };
        relay(&self.tcp_sources) && relay(&self.udp_sources)
    }

    fn udp_gap_ms(&self) -> f64 {
        self.udp_gap_up_ms.max(self.udp_gap_down_ms)
    }

    fn print_header() {
        eprintln!(
            "| mode | event | resets | source stable (UDP, TCP as the server saw them) | largest TCP gap | largest UDP gap (up / down) | UDP lost (up / down) |"
        );
        eprintln!("|---|---|---|---|---|---|---|");
    }

    fn print(&self) {
        eprintln!(
            "| {} | {} | {} | {} ({}) | {:.0} ms | {:.0} ms ({:.0} / {:.0}) | {} / {} |",
            self.mode,
            self.event,
            self.resets,
            if self.source_stable() { "yes" } else { "NO" },
            self.udp_sources
                .iter()
                .chain(&self.tcp_sources)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            self.tcp_gap_ms,
            self.udp_gap_ms(),
            self.udp_gap_up_ms,
            self.udp_gap_down_ms,
            self.udp_lost_up,
            self.udp_lost_down,
        );
    }
}

impl Sessions {
    /// Starts the server's sink and call end, then the LAN host's stream and call, and waits until
    /// both flow through the relay.
    async fn start(bed: &Testbed, tools: &std::path::Path) -> Self {
        let sink = bed
            .start_tool(
                "srv",
                tools,
                "tcp-sink",
                &["tcp-sink", "--bind", SERVER_TCP_SINK],
            )
            .expect("tcp-sink");
        let call_server = bed
            .start_tool(
                "srv",
                tools,
                "udp-call-server",
                &["udp-call-server", "--bind", SERVER_CALL, "--rate", "50"],
            )
            .expect("udp-call-server");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sender = bed
            .start_tool(
                "lan",
                tools,
                "tcp-send",
                &["tcp-send", "--to", SERVER_TCP_SINK, "--rate", "10000000"],
            )
            .expect("tcp-send");
        let call = bed
            .start_tool(
                "lan",
                tools,
                "udp-call",
                &["udp-call", "--to", SERVER_CALL, "--rate", "50"],
            )
            .expect("udp-call");
        let mut sessions = Self {
            sink,
            sender,
            call_server,
            call,
        };
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let sink: SinkReport = sessions.sink.ask("report").expect("sink report");
            let server: CallServerReport = sessions.call_server.ask("report").expect("report");
            let call: CallReport = sessions.call.ask("report").expect("call report");
            let flowing = sink
                .connections
                .first()
                .is_some_and(|c| c.bytes > 1_000_000)
                && server.received.received > 10
                && call.received.received > 10;
            if flowing {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the stream and the call never flowed: {sink:?} {server:?} {call:?}\nagent log:\n{}\nrelay log:\n{}",
                bed.agent_log(),
                bed.relay_log()
            );
        }
        // Settle into the steady 10 MB/s pace before the first window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        sessions.mark();
        sessions
    }

    fn mark(&mut self) {
        for tool in [
            &mut self.sink,
            &mut self.sender,
            &mut self.call_server,
            &mut self.call,
        ] {
            tool.send("mark").expect("mark");
        }
    }

    /// The window since the last mark, as a row; starts the next window.
    fn measure(&mut self, mode: &'static str, event: &'static str) -> Row {
        let sink: SinkReport = self.sink.ask("report").expect("sink report");
        let sender: TcpSendReport = self.sender.ask("report").expect("sender report");
        let server: CallServerReport = self.call_server.ask("report").expect("server report");
        let call: CallReport = self.call.ask("report").expect("call report");
        self.mark();
        let endings = sink
            .connections
            .iter()
            .filter_map(|c| c.ended.clone())
            .chain(sender.ended.clone());
        let (mut resets, mut errors) = (0, Vec::new());
        for ending in endings {
            match ending {
                Ending::Reset => resets += 1,
                Ending::Error(e) => errors.push(e),
                Ending::Eof => errors.push("closed before the end of the run".into()),
            }
        }
        Row {
            mode,
            event,
            resets,
            errors,
            tcp_sources: sink
                .connections
                .iter()
                .map(|c| c.peer.to_string())
                .collect(),
            udp_sources: server
                .sources
                .iter()
                .map(|s| s.address.to_string())
                .collect(),
            tcp_gap_ms: sink
                .connections
                .first()
                .map_or(f64::INFINITY, |c| c.window_max_gap_ms),
            udp_gap_up_ms: server.received.max_gap_ms,
            udp_gap_down_ms: call.received.max_gap_ms,
            udp_lost_up: server.received.lost,
            udp_lost_down: call.received.lost,
            tcp_window_mb: sink
                .connections
                .first()
                .map_or(0.0, |c| c.window_bytes as f64 / 1e6),
        }
    }

    /// Stops sending; the TCP connection must close cleanly at both ends.
    async fn finish(mut self) {
        self.sender.send("stop").expect("stop");
        self.call.send("stop").expect("stop");
        self.call_server.send("stop").expect("stop");
        let sender: TcpSendReport = self.sender.ask("report").expect("sender report");
        assert_eq!(
            sender.ended,
            Some(Ending::Eof),
            "the stream closes cleanly at the end"
        );
        let started = Instant::now();
        loop {
            let sink: SinkReport = self.sink.ask("report").expect("sink report");
            if sink.connections.first().and_then(|c| c.ended.clone()) == Some(Ending::Eof) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the server never saw the stream's clean close: {sink:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Blackholes the primary, waits for the failover and for the sessions to recover, then clears the
/// fault and waits for the failback likewise; returns the two windows' rows.
async fn fail_over_and_back(
    bed: &Testbed,
    sessions: &mut Sessions,
    mode: &'static str,
) -> [Row; 2] {
    bed.fault(&["blackhole", "1"]).expect("fault");
    bed.wait_for("failover to isp2", Duration::from_secs(10), |s| {
        s.active.as_deref() == Some("isp2")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.agent_log()));
    // Long enough for TCP's backed-off retransmission and a steady pace again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failover = sessions.measure(mode, "failover (primary blackholed)");
    bed.fault(&["clear"]).expect("clear");
    bed.wait_for("failback to isp1", Duration::from_secs(30), |s| {
        s.active.as_deref() == Some("isp1")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.agent_log()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failback = sessions.measure(mode, "failback (primary restored)");
    [failover, failback]
}

/// The agent's decisions during the run (one line each), for the log: a failed run shows what the
/// agent did and when.
fn print_decisions(bed: &Testbed) {
    for event in bed.events() {
        eprintln!(
            "agent: {} {} {}{} {}",
            event["ts"].as_str().unwrap_or_default(),
            event["kind"].as_str().unwrap_or_default(),
            event["uplink"].as_str().unwrap_or_default(),
            event["to"].as_str().unwrap_or_default(),
            event["reason"].as_str().unwrap_or_default()
        );
    }
}

fn assert_survived(row: &Row) {
    assert_eq!(row.resets, 0, "no connection is reset: {row:?}");
    assert!(row.errors.is_empty(), "no connection fails: {row:?}");
    assert!(
        row.source_stable(),
        "the server sees one source address:port, the relay's {RELAY_PUBLIC}, throughout: {row:?}"
    );
    assert!(
        row.tcp_window_mb > 10.0,
        "the stream kept flowing through the window: {row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_switch_mode_a_tcp_stream_and_a_call_survive_failover_and_failback_with_gaps_within_detection_time()
 {
    let _serial = SERIAL.lock().await;
    let (bed, binaries) = tunnel_testbed("sw", false).await;
    let detection = detection_ms(&bed);
    let mut sessions = Sessions::start(&bed, &binaries.tools).await;
    let rows = fail_over_and_back(&bed, &mut sessions, "switch").await;
    sessions.finish().await;
    Row::print_header();
    rows.iter().for_each(Row::print);
    print_decisions(&bed);
    let udp_bound = udp_gap_bound(detection);
    let tcp_bound = tcp_gap_bound(udp_bound);
    eprintln!(
        "bounds: UDP gap ≤ {udp_bound:.0} ms (detection {detection:.0} ms + round trip {ROUND_TRIP_MS:.0} ms + packet interval {CALL_INTERVAL_MS:.0} ms + scheduling margin {SCHEDULING_MARGIN_MS:.0} ms); TCP gap ≤ {tcp_bound:.0} ms (2 × that + TCP's minimum RTO {TCP_MIN_RTO_MS:.0} ms + round trip)"
    );
    for row in &rows {
        assert_survived(row);
        assert!(
            row.udp_gap_ms() <= udp_bound,
            "the call's largest gap is within the detection time plus a round trip ({udp_bound:.0} ms): {row:?}"
        );
        assert!(
            row.tcp_gap_ms <= tcp_bound,
            "the stream's largest gap is within the switch plus TCP's retransmission backoff ({tcp_bound:.0} ms): {row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redundant_mode_a_tcp_stream_and_a_call_survive_failover_and_failback_losing_at_most_one_call_packet_each_way()
 {
    let _serial = SERIAL.lock().await;
    let (bed, binaries) = tunnel_testbed("rd", true).await;
    let mut sessions = Sessions::start(&bed, &binaries.tools).await;
    let rows = fail_over_and_back(&bed, &mut sessions, "redundant").await;
    sessions.finish().await;
    Row::print_header();
    rows.iter().for_each(Row::print);
    print_decisions(&bed);
    for row in &rows {
        assert_survived(row);
        assert!(
            row.udp_lost_up <= 1 && row.udp_lost_down <= 1,
            "redundant mode loses at most one call packet each way: {row:?}"
        );
    }
}

/// Time the agent may take to act on a decision (its tunnel's timer tick), and the handshake's
/// own round trip besides.
const DECISION_TICK_MS: f64 = 100.0;

/// How long after the relay went quiet the appliance's handshake reaches a relay that is back:
/// it asks for a new handshake once nothing came from the relay for `rehandshake` (the agent's
/// rule, from its configured keepalive), and again every `retry` while the relay is still down.
fn rehandshake_ms(bed: &Testbed, downtime_ms: f64) -> f64 {
    use stayopen_appliance::tunnel::{HANDSHAKE_RETRY, TunnelTimings};
    let text = std::fs::read_to_string(bed.dir.join("appliance.toml")).expect("agent config");
    let config = stayopen_appliance::config::ApplianceConfig::parse(&text).expect("agent config");
    let keepalive = Duration::from_secs(u64::from(config.tunnel.keepalive_secs));
    let first = TunnelTimings::for_keepalive(keepalive)
        .rehandshake
        .as_secs_f64()
        * 1000.0;
    let retry = HANDSHAKE_RETRY.as_secs_f64() * 1000.0;
    let retries = ((downtime_ms - first) / retry).ceil().max(0.0);
    first + retries * retry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_stream_and_a_call_resume_after_a_relay_restart_with_the_same_source_address_and_port()
 {
    let _serial = SERIAL.lock().await;
    let (mut bed, binaries) = tunnel_testbed("rr", false).await;
    let mut sessions = Sessions::start(&bed, &binaries.tools).await;
    // A relay that has run a while has recorded where each peer was last heard (beside its key),
    // and handshakes with it there when it starts again; give it the time to (up to 10 s).
    let recorded = Instant::now();
    while !bed.dir.join("relay.endpoints").exists() && recorded.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sessions.mark();
    let killed = Instant::now();
    bed.kill_relay();
    bed.restart_relay().expect("restart the relay");
    bed.wait_relay_healthy(&binaries.tools, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let downtime_ms = killed.elapsed().as_secs_f64() * 1000.0;
    // Wait for the call to come back both ways, then for the stream to settle.
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let server: CallServerReport = sessions.call_server.ask("report").expect("report");
        let call: CallReport = sessions.call.ask("report").expect("report");
        let resumed = |silent_ms: Option<f64>| silent_ms.is_some_and(|s| s < 200.0);
        // A window's gap counts the silence so far: small again means packets arrive again.
        if started.elapsed() > Duration::from_secs(1)
            && resumed(server.received.silent_ms)
            && resumed(call.received.silent_ms)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the call never resumed after the relay restart: {server:?} {call:?}\nagent log:\n{}\nrelay log:\n{}",
            bed.agent_log(),
            bed.relay_log()
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let row = sessions.measure("switch", "relay killed and restarted");
    Row::print_header();
    row.print();
    print_decisions(&bed);
    assert_eq!(
        bed.count_events("tunnel_fallback"),
        0,
        "the restarted relay takes the tunnel back before any fallback to direct NAT"
    );
    sessions.finish().await;
    let rehandshake = rehandshake_ms(&bed, downtime_ms);
    let udp_bound =
        rehandshake + DECISION_TICK_MS + ROUND_TRIP_MS + CALL_INTERVAL_MS + SCHEDULING_MARGIN_MS;
    let tcp_bound = tcp_gap_bound(udp_bound);
    eprintln!(
        "relay down {downtime_ms:.0} ms; bounds: UDP gap ≤ {udp_bound:.0} ms (the agent's new handshake {rehandshake:.0} ms after the relay went quiet + decision tick {DECISION_TICK_MS:.0} ms + round trip + packet interval + scheduling margin), TCP gap ≤ {tcp_bound:.0} ms (2 × that + TCP's minimum RTO + round trip)"
    );
    assert_survived(&row);
    assert!(
        row.udp_gap_ms() <= udp_bound,
        "the call resumes after the handshake ({udp_bound:.0} ms): {row:?}"
    );
    assert!(
        row.tcp_gap_ms <= tcp_bound,
        "the stream resumes after the handshake and TCP's backoff ({tcp_bound:.0} ms): {row:?}"
    );
}
