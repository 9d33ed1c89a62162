//! `stayopen-cloud`: the multi-tenant backend.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stayopen_cloud::domain::{admin, audit, relays, seed};
use stayopen_cloud::infra::config::CloudConfig;
use stayopen_cloud::infra::db;
use stayopen_cloud::infra::observability;
use stayopen_cloud::startup::Application;

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
    /// Operator commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Create (or refresh) the demo MSP, its administrator and two practices, issue one enrolment
    /// token per practice, and write them as JSON.
    SeedDemo {
        /// Where to write the JSON; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evidence packages.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
}

#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Check an evidence package offline: the zip's structure, the signature of manifest.json,
    /// every file's SHA-256 and size, and the audit entries' hash chain. Exits 1 naming the first
    /// thing that does not match. Needs no database.
    Verify {
        /// The package (.zip).
        file: PathBuf,
        /// The cloud's evidence public key (PEM, from GET /api/v1/evidence/public-key or the
        /// `….pub.pem` beside the key). Without it, the public key of this cloud's configuration
        /// if present, else the package's own public_key.pem, which proves only integrity.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

/// `evidence verify`: offline, before any configuration is required.
fn verify_evidence(file: &Path, public_key: Option<&Path>, config: Option<&Path>) -> ExitCode {
    use stayopen_cloud::domain::evidence::verify::{TrustedKey, verify};
    use stayopen_cloud::infra::evidence_key::{EvidencePublic, public_key_path};
    let read_key = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| EvidencePublic::from_pem(&pem).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let key = match public_key {
        Some(path) => match read_key(path) {
            Ok(key) => TrustedKey::Given(key),
            Err(e) => {
                eprintln!("stayopen-cloud: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            // The cloud's own published key file, when this machine has the cloud's configuration.
            let published = CloudConfig::load(config)
                .ok()
                .map(|c| public_key_path(&c.evidence.key_path(&c.broker.tls_dir)));
            match published.filter(|p| p.exists()).map(|p| (read_key(&p), p)) {
                Some((Ok(key), path)) => {
                    println!(
                        "key:           {} (this cloud's published key)",
                        path.display()
                    );
                    TrustedKey::Given(key)
                }
                _ => TrustedKey::Embedded,
            }
        }
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("stayopen-cloud: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    println!("package:       {} ({} bytes)", file.display(), bytes.len());
    match verify(&bytes, &key) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("NOT VERIFIED: {failure}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an MSP (tenant) and its first administrator; prints the MSP's id.
    CreateMsp {
        /// The MSP's name, unique (case-insensitively).
        #[arg(long)]
        name: String,
        /// The first administrator's e-mail; they sign in with it.
        #[arg(long)]
        admin_email: String,
        /// Read the administrator's password (at least 12 characters) from the first line of
        /// standard input, so it never appears in the process list or shell history.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Check every tenant's audit-log hash chain (or one tenant's); exits 1 if any is broken.
    VerifyAudit {
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
    },
    /// Register a StayOpen relay of the session-safe tunnel; prints its token (`sor_…`, shown only
    /// now: put it in the relay's configuration). Appliances that have a WireGuard key but no relay
    /// are assigned to it.
    RelayAdd {
        /// A unique name (letters, digits, `.`, `_`, `-`), shown on the dashboard.
        #[arg(long)]
        name: String,
        /// Where appliances send the tunnel's packets: `host:port`.
        #[arg(long)]
        endpoint: String,
        /// The relay's WireGuard public key (base64, as `wg pubkey` prints it).
        #[arg(long)]
        public_key: String,
    },
    /// Revoke a relay: its token stops working, its appliances move to the least-loaded other relay
    /// (or to none, and their tunnel goes off).
    RelayRevoke {
        #[arg(long)]
        name: String,
    },
    /// List the relays with the number of appliances each serves.
    RelayList,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    // Logs, and OTLP export when the OTEL_* variables ask for it; the batch exporters run on the
    // runtime, so it is entered first.
    let telemetry = {
        let _entered = runtime.enter();
        match observability::init() {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("stayopen-cloud: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let code = run_command(cli, &runtime);
    // A clean stop (SIGTERM ends the server, then here): the last spans and metrics are sent.
    telemetry.shutdown();
    code
}

fn run_command(cli: Cli, runtime: &tokio::runtime::Runtime) -> ExitCode {
    if let Some(Command::Evidence(EvidenceCommand::Verify { file, public_key })) = &cli.command {
        return verify_evidence(file, public_key.as_deref(), cli.config.as_deref());
    }
    let config = match CloudConfig::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stayopen-cloud: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stayopen-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: CloudConfig) -> anyhow::Result<ExitCode> {
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
            db::migrate(&config.database).await?;
            println!("migrations applied");
        }
        Command::Admin(AdminCommand::CreateMsp {
            name,
            admin_email,
            password_stdin: _,
        }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            db::migrate(&config.database).await?;
            let pool = db::connect(&config.database).await?;
            let tenant = admin::create_msp(
                &pool,
                &name,
                &admin_email,
                password.trim_end_matches(['\r', '\n']),
            )
            .await?;
            println!("{tenant}");
        }
        Command::Admin(AdminCommand::VerifyAudit { tenant }) => {
            let pool = db::connect(&config.database).await?;
            let reports = audit::verify(&pool, tenant).await?;
            let mut broken = false;
            for report in &reports {
                match (&report.broken_at_seq, &report.problem) {
                    (Some(seq), Some(problem)) => {
                        broken = true;
                        println!(
                            "{}: BROKEN at row {seq} of {}: {problem}",
                            report.tenant_id, report.rows
                        );
                    }
                    _ => println!("{}: ok ({} rows)", report.tenant_id, report.rows),
                }
            }
            if broken {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Admin(AdminCommand::RelayAdd {
            name,
            endpoint,
            public_key,
        }) => {
            db::migrate(&config.database).await?;
            let pool = db::connect(&config.database).await?;
            let created = relays::create(&pool, &name, &endpoint, &public_key).await?;
            eprintln!(
                "relay {} registered ({}); {} appliance(s) assigned to it. Its token, shown only now:",
                created.relay.name, created.relay.endpoint, created.assigned
            );
            println!("{}", created.token);
        }
        Command::Admin(AdminCommand::RelayRevoke { name }) => {
            let pool = db::connect(&config.database).await?;
            let moved = relays::revoke(&pool, &name).await?;
            println!("relay {name} revoked; {moved} appliance(s) reassigned");
        }
        Command::Admin(AdminCommand::RelayList) => {
            let pool = db::connect(&config.database).await?;
            println!(
                "{:<20} {:<32} {:<44} {:>10}  state",
                "name", "endpoint", "public key", "appliances"
            );
            for relay in relays::list(&pool).await? {
                let state = match relay.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M UTC")),
                    None => "active".to_owned(),
                };
                println!(
                    "{:<20} {:<32} {:<44} {:>10}  {state}",
                    relay.name, relay.endpoint, relay.public_key, relay.appliances
                );
            }
        }
        Command::Evidence(EvidenceCommand::Verify { file, public_key }) => {
            return Ok(verify_evidence(&file, public_key.as_deref(), None));
        }
        Command::SeedDemo { out } => {
            db::migrate(&config.database).await?;
            let pool = db::connect(&config.database).await?;
            let seeded = seed::seed_demo(&pool)
                .await
                .context("seeding the demo tenant")?;
            seed::seed_demo_compliance(&pool, seeded.tenant_id, chrono::Utc::now())
                .await
                .context("seeding the demo practices' compliance set-up")?;
            let json = serde_json::to_string_pretty(&seeded)?;
            match out {
                Some(path) => std::fs::write(&path, json)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{json}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
