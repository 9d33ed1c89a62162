//! `stayopen-fleet-sim`: a fleet of simulated appliances (the real agent over simulated links)
//! against a cloud, for the demo (`infra/scripts/demo.sh`) and load. Ctrl-C or SIGTERM stops it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stayopen_testkit::fleet_sim::{self, FleetOptions};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "stayopen-fleet-sim",
    about = "Run a fleet of simulated appliances (the real agent over simulated links) against a cloud"
)]
struct Cli {
    /// Base URL of the cloud API.
    #[arg(long)]
    api_url: String,
    /// The JSON written by `stayopen-cloud seed-demo`; its enrolment tokens are shared out
    /// round-robin.
    #[arg(long)]
    seed_file: PathBuf,
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Number of the first simulated appliance (serials SO-SIM-NNNN), so several simulators can
    /// share one cloud.
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// Each appliance keeps its state in a subfolder.
    #[arg(long)]
    state_root: PathBuf,
    #[arg(long, default_value_t = 10)]
    telemetry_interval_secs: u32,
}

#[derive(serde::Deserialize)]
struct SeedFile {
    practices: Vec<SeedPractice>,
}

#[derive(serde::Deserialize)]
struct SeedPractice {
    enrollment_token: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rumqttc=warn")),
        )
        .init();
    let cli = Cli::parse();
    let seed: SeedFile = match std::fs::read(&cli.seed_file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(seed) => seed,
        Err(e) => {
            eprintln!("stayopen-fleet-sim: {}: {e}", cli.seed_file.display());
            return ExitCode::from(2);
        }
    };
    if seed.practices.is_empty() {
        eprintln!(
            "stayopen-fleet-sim: {}: no practices with enrolment tokens",
            cli.seed_file.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stayopen-fleet-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop_rx = stayopen_appliance::agent::stop_on_signal(&runtime);
    let options = FleetOptions {
        api_url: cli.api_url,
        enrollment_tokens: seed
            .practices
            .into_iter()
            .map(|p| p.enrollment_token)
            .collect(),
        first_index: cli.first_index,
        count: cli.count,
        state_root: cli.state_root,
        telemetry_interval_secs: cli.telemetry_interval_secs,
    };
    runtime.block_on(fleet_sim::run(options, stop_rx));
    ExitCode::SUCCESS
}
