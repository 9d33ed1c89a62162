//! `stayopen-relay`: the relay every appliance's WireGuard tunnel ends at (docs/relay.md).
//!
//! - `stayopen-relay serve --config relay.toml` runs it;
//! - `stayopen-relay public-key --config relay.toml` prints its public key (creating the private
//!   key file, mode 0600, when absent), for the cloud's `admin relay-add` and for appliances.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stayopen_tunnel::relay::config::{RelayConfig, load_or_create_key};
use stayopen_tunnel::relay::driver;

#[derive(Debug, Parser)]
#[command(
    name = "stayopen-relay",
    version,
    about = "The StayOpen WireGuard relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        #[arg(long, env = "STAYOPEN_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Print the relay's WireGuard public key (base64), creating its private key if absent.
    PublicKey {
        #[arg(long, env = "STAYOPEN_RELAY_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let path = match &cli.command {
        Command::Serve { config } | Command::PublicKey { config } => config.clone(),
    };
    let config = match RelayConfig::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stayopen-relay: bad config: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::PublicKey { .. } => load_or_create_key(&config.private_key_file)
            .map(|key| println!("{}", key.public_base64()))
            .map_err(anyhow::Error::from),
        Command::Serve { .. } => serve(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stayopen-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            }
        };
        driver::serve(config, shutdown).await
    })
}
