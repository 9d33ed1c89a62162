//! `stayopen-loadgen`: N light simulated appliances against a cloud — the enrolment storm, the
//! connect storm, telemetry and failovers over real TLS sessions — and a report of what was sent
//! and acknowledged (`stayopen_testkit::loadgen`). Ctrl-C or SIGTERM ends the steady phase early.
//! Bad flags exit with status 2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use stayopen_testkit::loadgen::{self, LoadOptions};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "stayopen-loadgen",
    about = "Run N light simulated appliances (enrolment, TLS MQTT sessions, telemetry, failovers) against a cloud and report what was sent and acknowledged"
)]
struct Cli {
    /// Base URL of the cloud API.
    #[arg(long)]
    api_url: String,
    /// An enrolment token (repeat for more; appliance i uses token i mod count; a token enrols
    /// at most 1000 appliances).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// A file of enrolment tokens, one a line.
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    appliances: usize,
    /// Index of the first appliance (serials SO-LOAD-nnnnnn), so runs can share one cloud.
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// Enrolments in flight at once.
    #[arg(long, default_value_t = 32)]
    enrol_concurrency: usize,
    /// TLS handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Telemetry cadence of every appliance (the default policy's is 10 s).
    #[arg(long, default_value_t = 10.0)]
    telemetry_interval_secs: f64,
    /// Failovers per second across the fleet.
    #[arg(long, default_value_t = 0.0)]
    failovers_per_sec: f64,
    /// Seconds an appliance stays on its backup before it fails back.
    #[arg(long, default_value_t = 5.0)]
    failback_after_secs: f64,
    /// Length of the steady phase.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// The longest the connect storm may take before the steady phase starts anyway.
    #[arg(long, default_value_t = 600)]
    connect_timeout_secs: u64,
    /// The longest the drain waits for the cloud's last acknowledgements.
    #[arg(long, default_value_t = 60)]
    drain_timeout_secs: u64,
    /// Write the report (counts, figures and every message id) here as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{name} must be a positive number of seconds, not {value}"))
}

fn options(cli: &Cli) -> Result<LoadOptions, String> {
    let mut tokens = cli.tokens.clone();
    if let Some(path) = &cli.tokens_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    let options = LoadOptions {
        api_url: cli.api_url.clone(),
        enrollment_tokens: tokens,
        appliances: cli.appliances,
        first_index: cli.first_index,
        enrol_concurrency: cli.enrol_concurrency,
        connect_concurrency: cli.connect_concurrency,
        telemetry_interval: seconds("telemetry-interval-secs", cli.telemetry_interval_secs)?,
        failovers_per_sec: cli.failovers_per_sec,
        failback_after: seconds("failback-after-secs", cli.failback_after_secs)?,
        duration: Duration::from_secs(cli.duration_secs),
        connect_timeout: Duration::from_secs(cli.connect_timeout_secs),
        drain_timeout: Duration::from_secs(cli.drain_timeout_secs),
    };
    options.validate()?;
    let needed = loadgen::files_needed(options.appliances, options.enrol_concurrency);
    if let Some(limit) = loadgen::open_files_limit()
        && limit < needed
    {
        return Err(format!(
            "{} appliances need about {needed} open files and the limit is {limit}; raise it (ulimit -n {needed})",
            options.appliances
        ));
    }
    Ok(options)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rumqttc=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let options = match options(&cli) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("stayopen-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stayopen-loadgen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = stayopen_appliance::agent::stop_on_signal(&runtime);
    let report = match runtime.block_on(loadgen::run(options, stop)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("stayopen-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.summary());
    if let Some(path) = &cli.report {
        let written = serde_json::to_vec(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("stayopen-loadgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
