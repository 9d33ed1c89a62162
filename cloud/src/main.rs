//! `stayopen-cloud`: the multi-tenant backend.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stayopen_cloud::config::CloudConfig;
use stayopen_cloud::startup::Application;
use stayopen_cloud::{db, seed};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "stayopen-cloud",
    version,
    about = "StayOpen cloud: API, MQTT broker and ingest"
)]
struct Cli {
    /// TOML configuration file; `STAYOPEN_{SECTION}__{KEY}` environment variables override it.
    #[arg(long, short, global = true, env = "STAYOPEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate the database, then serve the API, the broker and the dashboard (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create (or refresh) the demo MSP, its administrator and two practices, issue one enrolment
    /// token per practice, and write them as JSON.
    SeedDemo {
        /// Where to write the JSON; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn,sqlx=warn")),
        )
        .init();
    let cli = Cli::parse();
    let config = match CloudConfig::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stayopen-cloud: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stayopen-cloud: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stayopen-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: CloudConfig) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            tracing::info!(?config, "starting");
            let app = Application::build(config)
                .await
                .context("starting the cloud")?;
            app.run_until_stopped().await.context("serving HTTP")?;
            tracing::info!("stopped");
        }
        Command::Migrate => {
            let pool = db::connect(&config.database).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::SeedDemo { out } => {
            let pool = db::connect(&config.database).await?;
            db::migrate(&pool).await?;
            let seeded = seed::seed_demo(&pool)
                .await
                .context("seeding the demo tenant")?;
            let json = serde_json::to_string_pretty(&seeded)?;
            match out {
                Some(path) => std::fs::write(&path, json)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{json}"),
            }
        }
    }
    Ok(())
}
