//! `stayopen-appliance`: the agent that keeps a practice online.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_appliance::config::ApplianceConfig;
use stayopen_appliance::control::{self, Request, Response};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "stayopen-appliance",
    version,
    about = "StayOpen appliance agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent. Without a [cloud] section in the config it runs standalone.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Append every decision to this file as one JSON object per line.
        #[arg(long)]
        events: Option<PathBuf>,
    },
    /// Print the running agent's live state: uplinks, health, the active uplink.
    Status {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start (or stop) a failover drill on the running agent: traffic moves to the backup uplink for
    /// the given time and then back.
    Drill {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
        /// Stop a running drill instead.
        #[arg(long)]
        stop: bool,
    },
    /// Install: find the modem's and the router's ports, print what it will do, ask, and write the
    /// configuration (exit codes: 0 done, 1 failed, 2 bad flags, 3 no plan possible, 4 not
    /// confirmed; docs/appliance-setup.md).
    Setup(Box<stayopen_appliance::setup::SetupArgs>),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rumqttc=warn")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stayopen-appliance: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run { config, events } => {
            let stop_rx = stayopen_appliance::agent::stop_on_signal(&runtime);
            let config = match load_config(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match runtime.block_on(agent::run(
                AgentOptions {
                    config,
                    events_file: events,
                    seed: rand::random(),
                },
                stop_rx,
            )) {
                Ok(agent::Exit::Stopped) => ExitCode::SUCCESS,
                Ok(agent::Exit::RestartRequested) => {
                    // EX_TEMPFAIL: the unit's Restart=on-failure starts the agent again.
                    eprintln!("stayopen-appliance: restart requested by the cloud");
                    ExitCode::from(75)
                }
                Err(e) => {
                    eprintln!("stayopen-appliance: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { config, json } => match ask_agent(&runtime, &config, &Request::Status) {
            Ok(Response::Status(status)) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(Response::Status(status)) => {
                print!("{}", status.to_text());
                ExitCode::SUCCESS
            }
            Ok(other) => unexpected(other),
            Err(code) => code,
        },
        Command::Drill {
            config,
            duration_secs,
            stop,
        } => {
            let request = if stop {
                Request::StopDrill
            } else {
                Request::StartDrill { duration_secs }
            };
            match ask_agent(&runtime, &config, &request) {
                Ok(Response::Accepted { message }) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Ok(Response::Error { message }) => {
                    eprintln!("stayopen-appliance: {message}");
                    ExitCode::FAILURE
                }
                Ok(other) => unexpected(other),
                Err(code) => code,
            }
        }
        // Not under the agent's signal handler: Ctrl-C at the prompt ends setup at once.
        Command::Setup(args) => {
            ExitCode::from(runtime.block_on(stayopen_appliance::setup::main(*args)))
        }
    }
}

/// Sends one request to the agent configured by `config`; a bad config exits 2, an unreachable
/// agent exits 1.
fn ask_agent(
    runtime: &tokio::runtime::Runtime,
    config: &std::path::Path,
    request: &Request,
) -> Result<Response, ExitCode> {
    let config = load_config(config)?;
    runtime
        .block_on(control::request(&config.appliance.state_dir, request))
        .map_err(|e| {
            eprintln!("stayopen-appliance: {e}");
            ExitCode::FAILURE
        })
}

fn unexpected(answer: Response) -> ExitCode {
    eprintln!("stayopen-appliance: unexpected answer {answer:?}");
    ExitCode::FAILURE
}

/// Loads the configuration; a bad file is reported and ends the program with exit code 2.
fn load_config(path: &std::path::Path) -> Result<ApplianceConfig, ExitCode> {
    ApplianceConfig::load(path).map_err(|e| {
        eprintln!("stayopen-appliance: {e}");
        ExitCode::from(2)
    })
}
