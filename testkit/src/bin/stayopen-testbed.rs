//! `stayopen-testbed`: the failover benchmark and the traffic tools it runs inside the testbed's
//! namespaces. Run as root: `stayopen-testbed bench` (see docs/benchmarks.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use stayopen_testkit::testbed::{self, ISP1_PUBLIC, ISP2_PUBLIC, Stream, Testbed};

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
