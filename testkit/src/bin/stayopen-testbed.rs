//! `stayopen-testbed`: the failover and tunnel benchmarks and the traffic tools they and the netns
//! tests run inside the testbed's namespaces. Run as root: `stayopen-testbed bench`,
//! `stayopen-testbed bench-tunnel` (see docs/benchmarks.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use stayopen_testkit::testbed::{
    self, ISP1_PUBLIC, ISP2_PUBLIC, RELAY_PUBLIC, SERVER, SERVER_DIRECT, Stream, Testbed,
    TunnelBinaries, TunnelSetup,
};
use stayopen_testkit::traffic::{self, SinkReport};

#[derive(Debug, Parser)]
#[command(
    name = "stayopen-testbed",
    about = "Failover benchmark in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// UDP echo server (runs inside the testbed's internet namespace).
    EchoServer {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// HTTP server standing in for the EHR (runs inside the internet namespace).
    HttpServer {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// DNS server answering every query (runs inside the internet namespace).
    DnsServer {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// UDP stream with gap measurement (runs inside the LAN host's namespace).
    UdpStream {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// One TCP connection sending at a steady rate, reporting resets (runs inside the LAN host's
    /// namespace). Commands on stdin: `mark`, `report`, `stop`.
    TcpSend {
        #[arg(long)]
        to: SocketAddr,
        /// Bytes a second; 0 sends as fast as the path takes them.
        #[arg(long, default_value_t = 10_000_000)]
        rate: u64,
    },
    /// TCP sink recording each connection's peer, reads and ending (runs on the server).
    /// Commands on stdin: `mark`, `report`, `reads`.
    TcpSink {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// The LAN host's side of a two-way UDP call (numbered datagrams both ways).
    /// Commands on stdin: `mark`, `report`, `stop`.
    UdpCall {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 50)]
        rate: u32,
    },
    /// The server's side of the call: records every source address:port and streams back to the
    /// latest. Commands on stdin: `mark`, `report`, `stop`.
    UdpCallServer {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 50)]
        rate: u32,
    },
    /// Prints the body of a plain HTTP GET that answers 200 (the relay's /healthz and /metrics,
    /// from inside its namespace).
    HttpGet {
        #[arg(long)]
        address: SocketAddr,
        #[arg(long)]
        path: String,
    },
    /// Runs one of the appliance's real probers through `interface` and prints, as JSON, whether it
    /// was answered and the IP bytes it put on the wire (runs inside the appliance's namespace).
    ProbeBytes {
        #[arg(long)]
        interface: String,
        /// The probe target, as the appliance's configuration writes it, in JSON
        /// (`{"kind":"tcp","address":"203.0.113.30:80"}`).
        #[arg(long)]
        target: String,
        /// Measurements to take; the smallest is printed (anything else on the link only adds).
        #[arg(long, default_value_t = 3)]
        repeat: u32,
    },
    /// Runs the appliance's critical-application check of one endpoint through `interface` and
    /// prints its outcome as JSON: `{"Ok":{"secs":…}}` or `{"Err":"reason"}` (runs inside the
    /// appliance's namespace).
    AppCheck {
        #[arg(long)]
        interface: String,
        /// The endpoint as the policy writes it, in JSON
        /// (`{"kind":"tcp","host":"203.0.113.30","port":2575}`).
        #[arg(long)]
        endpoint: String,
        /// The resolver DNS endpoints are asked at (port 53).
        #[arg(long)]
        resolver: Option<std::net::IpAddr>,
        /// A CA to trust for HTTPS besides the public roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Measures TCP throughput from the LAN host through the tunnel and directly, side by side in
    /// one run, and the CPU the agent and the relay spend per Mbit; prints a Markdown table.
    BenchTunnel {
        /// Seconds each measurement lasts.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Measurements of each path, alternating.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The stayopen-appliance binary; by default the one beside this program.
        #[arg(long)]
        appliance: Option<PathBuf>,
        /// The stayopen-relay binary; by default the one beside this program.
        #[arg(long)]
        relay: Option<PathBuf>,
    },
    /// Runs the failover benchmark and prints its figures.
    Bench {
        /// Trials of each failover scenario.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Length of the lossy-line soak.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
        /// Trials of failback with the default 30 s clean period.
        #[arg(long, default_value_t = 3)]
        failback_trials: usize,
        /// Length of the flapping scenario.
        #[arg(long, default_value_t = 120)]
        flap_secs: u64,
        /// The stayopen-appliance binary; by default the one beside this program.
        #[arg(long)]
        appliance: Option<PathBuf>,
    },
}

fn probe_bytes(interface: &str, target: &str, repeat: u32) -> anyhow::Result<()> {
    let target = serde_json::from_str(target).context("--target is not a probe target")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let measured = runtime.block_on(testbed::probe_bytes(interface, &target, repeat))?;
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

fn app_check(
    interface: &str,
    endpoint: &str,
    resolver: Option<std::net::IpAddr>,
    ca_file: Option<&Path>,
) -> anyhow::Result<()> {
    let endpoint = serde_json::from_str(endpoint).context("--endpoint is not an endpoint")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(testbed::app_check(interface, &endpoint, resolver, ca_file))?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::EchoServer { bind } => testbed::echo_server(bind).map_err(anyhow::Error::from),
        Command::HttpServer { bind } => testbed::http_server(bind).map_err(anyhow::Error::from),
        Command::DnsServer { bind } => testbed::dns_server(bind).map_err(anyhow::Error::from),
        Command::ProbeBytes {
            interface,
            target,
            repeat,
        } => probe_bytes(&interface, &target, repeat),
        Command::AppCheck {
            interface,
            endpoint,
            resolver,
            ca_file,
        } => app_check(&interface, &endpoint, resolver, ca_file.as_deref()),
        Command::UdpStream { to, rate } => {
            testbed::udp_stream(to, rate).map_err(anyhow::Error::from)
        }
        Command::TcpSend { to, rate } => traffic::tcp_send(to, rate).map_err(anyhow::Error::from),
        Command::TcpSink { bind } => traffic::tcp_sink(bind).map_err(anyhow::Error::from),
        Command::UdpCall { to, rate } => traffic::udp_call(to, rate).map_err(anyhow::Error::from),
        Command::UdpCallServer { bind, rate } => {
            traffic::udp_call_server(bind, rate).map_err(anyhow::Error::from)
        }
        Command::HttpGet { address, path } => testbed::http_get(address, &path)
            .map(|body| print!("{body}"))
            .map_err(anyhow::Error::from),
        Command::BenchTunnel {
            secs,
            rounds,
            appliance,
            relay,
        } => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(bench_tunnel(secs, rounds, appliance, relay)),
            Err(e) => Err(e.into()),
        },
        Command::Bench {
            trials,
            soak_secs,
            failback_trials,
            flap_secs,
            appliance,
        } => {
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(bench(
                    trials,
                    soak_secs,
                    failback_trials,
                    flap_secs,
                    appliance,
                )),
                Err(e) => Err(e.into()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stayopen-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// p50/p95/p99/max of a sample, nearest-rank.
fn percentiles(mut values: Vec<f64>) -> [f64; 4] {
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1)) - 1;
        values.get(i).copied().unwrap_or(f64::NAN)
    };
    [
        rank(0.50),
        rank(0.95),
        rank(0.99),
        values.last().copied().unwrap_or(f64::NAN),
    ]
}

fn row(name: &str, unit: &str, values: &[f64], goal: &str) {
    let [p50, p95, p99, max] = percentiles(values.to_vec());
    println!(
        "| {name} | {} | {p50:.0} {unit} | {p95:.0} {unit} | {p99:.0} {unit} | {max:.0} {unit} | {goal} |",
        values.len()
    );
}

async fn settle(bed: &Testbed, stream: &mut Stream) -> anyhow::Result<()> {
    bed.fault(&["clear"])?;
    bed.wait_healthy(Duration::from_secs(120))
        .await
        .context("waiting for the primary")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.mark()?;
    Ok(())
}

/// One failover trial: healthy, inject `fault` on ISP1, wait until traffic runs on ISP2, report the
/// longest gap the LAN stream saw.
async fn failover_trial(bed: &Testbed, stream: &mut Stream, fault: &[&str]) -> anyhow::Result<f64> {
    settle(bed, stream).await?;
    bed.fault(fault)?;
    bed.wait_for("failover to isp2", Duration::from_secs(30), |s| {
        s.active.as_deref() == Some("isp2")
    })
    .await?;
    // Let the stream resume and prove it flows on the backup.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = stream.report()?;
    if report.last_seen_as.map(|a| a.to_string()).as_deref() != Some(ISP2_PUBLIC) {
        bail!(
            "after failover the stream was seen as {:?}, not {ISP2_PUBLIC}",
            report.last_seen_as
        );
    }
    Ok(report.max_gap_ms)
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().unwrap_or(Path::new(".")).join(name))
}

async fn bench(
    trials: usize,
    soak_secs: u64,
    failback_trials: usize,
    flap_secs: u64,
    appliance: Option<PathBuf>,
) -> anyhow::Result<()> {
    let tools = std::env::current_exe()?;
    let appliance = match appliance {
        Some(path) => path,
        None => sibling("stayopen-appliance")?,
    };
    let prefix = format!("sob{}", std::process::id() % 100_000);
    let (bed, mut stream) = Testbed::running(&prefix, &tools, &appliance, 3, false).await?;
    let started = Instant::now();
    eprintln!("testbed {prefix} up; {trials} trials per scenario");

    let mut blackhole = Vec::new();
    for i in 0..trials {
        blackhole.push(failover_trial(&bed, &mut stream, &["blackhole", "1"]).await?);
        eprintln!("blackhole trial {}: {:.0} ms", i + 1, blackhole[i]);
    }
    let mut carrier = Vec::new();
    for i in 0..trials {
        carrier.push(failover_trial(&bed, &mut stream, &["carrier-down", "1"]).await?);
        eprintln!("carrier trial {}: {:.0} ms", i + 1, carrier[i]);
    }

    drop(stream);
    drop(bed);

    // Failback and the soak run on a fresh agent with the default 30 s clean period.
    let (bed, mut stream) = Testbed::running(&prefix, &tools, &appliance, 30, false).await?;
    let mut failback = Vec::new();
    for _ in 0..failback_trials {
        failover_trial(&bed, &mut stream, &["blackhole", "1"]).await?;
        bed.fault(&["clear"])?;
        let took = bed
            .wait_for("failback to isp1", Duration::from_secs(120), |s| {
                s.active.as_deref() == Some("isp1")
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let report = stream.report()?;
        if report.last_seen_as.map(|a| a.to_string()).as_deref() != Some(ISP1_PUBLIC) {
            bail!(
                "after failback the stream was seen as {:?}, not {ISP1_PUBLIC}",
                report.last_seen_as
            );
        }
        failback.push(took.as_secs_f64() * 1000.0);
        eprintln!("failback after recovery: {:.1} s", took.as_secs_f64());
    }

    settle(&bed, &mut stream).await?;
    let failovers_before = bed.count_events("failover");
    let downs_before = bed.count_events("uplink_down");
    bed.fault(&["loss", "10", "1"])?;
    bed.fault(&["dead-target", testbed::TARGETS[3]])?;
    eprintln!("soak: {soak_secs} s at 10 % loss on isp1 with one dead target");
    tokio::time::sleep(Duration::from_secs(soak_secs)).await;
    let soak_failovers = bed.count_events("failover") - failovers_before;
    let soak_downs = bed.count_events("uplink_down") - downs_before;
    let soak_report = stream.report()?;

    drop(stream);
    drop(bed);

    // Flapping, on an agent with the default damping.
    let (bed, mut stream) = Testbed::running(&prefix, &tools, &appliance, 30, true).await?;
    // The primary fails for 3 s every 13 s.
    settle(&bed, &mut stream).await?;
    let before = bed.count_events("failover") + bed.count_events("failback");
    let flap_start = Instant::now();
    let mut flaps = 0;
    while flap_start.elapsed() < Duration::from_secs(flap_secs) {
        bed.fault(&["blackhole", "1"])?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        bed.fault(&["clear"])?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        flaps += 1;
    }
    let flap_switches = bed.count_events("failover") + bed.count_events("failback") - before;
    println!();
    println!(
        "Failover benchmark ({} s), testbed {prefix}",
        started.elapsed().as_secs()
    );
    println!();
    println!("| scenario | trials | p50 | p95 | p99 | max | goal |");
    println!("|---|---|---|---|---|---|---|");
    row(
        "blackholed primary → LAN traffic on backup (largest gap in 100 pps UDP echo)",
        "ms",
        &blackhole,
        "p95 ≤ 1000 ms, p99 ≤ 2000 ms",
    );
    row(
        "carrier loss → LAN traffic on backup (largest gap)",
        "ms",
        &carrier,
        "≤ 200 ms",
    );
    row(
        "recovery → failback (30 s clean period)",
        "ms",
        &failback,
        "30 s clean period + detection",
    );
    println!();
    println!("| scenario | result | goal |");
    println!("|---|---|---|");
    println!(
        "| flapping primary (3 s down every 13 s, {flaps} flaps in {flap_secs} s) | {flap_switches} switches | damped: far fewer than {} | ",
        2 * flaps
    );
    println!(
        "| soak: {soak_secs} s at 10 % loss + one dead target | {soak_failovers} failovers, {soak_downs} uplink_down; largest stream gap {:.0} ms | 0 failovers |",
        soak_report.max_gap_ms
    );
    Ok(())
}

/// One throughput measurement: Mbit/s at the server, and CPU seconds the agent and the relay spent.
#[derive(Debug, Clone, Copy)]
struct Throughput {
    mbit_per_sec: f64,
    agent_cpu_secs: f64,
    relay_cpu_secs: f64,
}

impl Throughput {
    fn megabits(&self, secs: f64) -> f64 {
        self.mbit_per_sec * secs
    }
}

/// Sends as fast as the path takes it from the LAN host to `host`:5001 for `secs` (after a second
/// to ramp up), checking the server saw the flow from `seen_as`.
async fn measure(
    bed: &Testbed,
    tools: &Path,
    sink: &mut testbed::Tool,
    host: &str,
    seen_as: &str,
    secs: u64,
) -> anyhow::Result<Throughput> {
    let to = format!("{host}:5001");
    let mut sender = bed.start_tool(
        "lan",
        tools,
        "bench-send",
        &["tcp-send", "--to", &to, "--rate", "0"],
    )?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent = bed.agent_pid().context("the agent is not running")?;
    let relay = bed.relay_pid().context("the relay is not running")?;
    let cpu = || -> anyhow::Result<(f64, f64)> {
        Ok((
            testbed::process_cpu_secs(agent)?,
            testbed::process_cpu_secs(relay)?,
        ))
    };
    let before_report: SinkReport = sink.ask("report")?;
    let bytes_before = before_report.connections.last().map_or(0, |c| c.bytes);
    let (agent_before, relay_before) = cpu()?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let report: SinkReport = sink.ask("report")?;
    let elapsed = started.elapsed().as_secs_f64();
    let (agent_after, relay_after) = cpu()?;
    sender.send("stop")?;
    let connection = report
        .connections
        .last()
        .context("the server accepted no connection")?;
    if connection.peer.ip().to_string() != seen_as {
        bail!(
            "the server saw the flow to {host} from {}, not {seen_as}",
            connection.peer
        );
    }
    if connection.ended.is_some() {
        bail!(
            "the connection to {host} ended early: {:?}",
            connection.ended
        );
    }
    Ok(Throughput {
        mbit_per_sec: (connection.bytes - bytes_before) as f64 * 8.0 / 1e6 / elapsed,
        agent_cpu_secs: agent_after - agent_before,
        relay_cpu_secs: relay_after - relay_before,
    })
}

/// The first three fields of /proc/loadavg: how busy the machine was around a measurement.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn bench_tunnel(
    secs: u64,
    rounds: usize,
    appliance: Option<PathBuf>,
    relay: Option<PathBuf>,
) -> anyhow::Result<()> {
    let binaries = TunnelBinaries {
        tools: std::env::current_exe()?,
        appliance: match appliance {
            Some(path) => path,
            None => sibling("stayopen-appliance")?,
        },
        relay: match relay {
            Some(path) => path,
            None => sibling("stayopen-relay")?,
        },
    };
    let prefix = format!("sot{}", std::process::id() % 100_000);
    // Flows to SERVER go through the relay; flows to SERVER_DIRECT, the same host, leave directly.
    let bed = Testbed::running_tunnel(
        &prefix,
        &binaries,
        3,
        TunnelSetup::critical(&[SERVER], false),
    )
    .await?;
    let mut sink = bed.start_tool(
        "srv",
        &binaries.tools,
        "bench-sink",
        &["tcp-sink", "--bind", "0.0.0.0:5001"],
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "testbed {prefix} up, tunnel carrying flows to {SERVER}; {rounds} rounds of {secs} s"
    );
    let load_before = load_average();
    let mut direct = Vec::new();
    let mut tunnel = Vec::new();
    for round in 1..=rounds {
        let d = measure(
            &bed,
            &binaries.tools,
            &mut sink,
            SERVER_DIRECT,
            ISP1_PUBLIC,
            secs,
        )
        .await?;
        eprintln!("round {round}: direct {:.0} Mbit/s", d.mbit_per_sec);
        let t = measure(&bed, &binaries.tools, &mut sink, SERVER, RELAY_PUBLIC, secs).await?;
        eprintln!(
            "round {round}: tunnel {:.0} Mbit/s, agent {:.2} s CPU, relay {:.2} s CPU",
            t.mbit_per_sec, t.agent_cpu_secs, t.relay_cpu_secs
        );
        direct.push(d);
        tunnel.push(t);
    }
    let secs = secs as f64;
    let per_mbit = |runs: &[Throughput], cpu: fn(&Throughput) -> f64| {
        median(runs.iter().map(|r| cpu(r) / r.megabits(secs)).collect())
    };
    let per_core = |runs: &[Throughput], cpu: fn(&Throughput) -> f64| {
        median(
            runs.iter()
                .map(|r| r.mbit_per_sec / (cpu(r) / secs))
                .collect(),
        )
    };
    let mbits = |runs: &[Throughput]| median(runs.iter().map(|r| r.mbit_per_sec).collect());
    println!();
    println!(
        "Tunnel throughput, testbed {prefix}: TCP from the LAN host, {rounds} × {secs:.0} s per path, medians"
    );
    println!();
    println!(
        "| path | throughput | appliance agent CPU per Mbit | relay CPU per Mbit | Mbit/s per core (agent / relay) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| direct (NAT in the kernel) | {:.0} Mbit/s | {:.2} ms | — | — |",
        mbits(&direct),
        per_mbit(&direct, |r| r.agent_cpu_secs) * 1000.0
    );
    println!(
        "| through the tunnel (relay NAT to {RELAY_PUBLIC}) | {:.0} Mbit/s | {:.2} ms | {:.2} ms | {:.0} / {:.0} |",
        mbits(&tunnel),
        per_mbit(&tunnel, |r| r.agent_cpu_secs) * 1000.0,
        per_mbit(&tunnel, |r| r.relay_cpu_secs) * 1000.0,
        per_core(&tunnel, |r| r.agent_cpu_secs),
        per_core(&tunnel, |r| r.relay_cpu_secs),
    );
    println!();
    println!(
        "Load average (1, 5, 15 min) before: {load_before}; after: {}; {} CPUs.",
        load_average(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("Each round, direct then tunnel:");
    for (i, (d, t)) in direct.iter().zip(&tunnel).enumerate() {
        println!(
            "- round {}: direct {:.0} Mbit/s; tunnel {:.0} Mbit/s, agent {:.2} s and relay {:.2} s CPU in {secs:.0} s",
            i + 1,
            d.mbit_per_sec,
            t.mbit_per_sec,
            t.agent_cpu_secs,
            t.relay_cpu_secs
        );
    }
    drop(sink);
    drop(bed);
    Ok(())
}
