//! The driver: owns the clock, the dataplane, the cloud link and the control socket; the
//! [`Engine`] decides.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Telemetry, UplinkTelemetry};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::cloud_link::{CloudLink, Inbound};
use crate::config::{ApplianceConfig, DataplaneSection};
use crate::control::{self, Command, Request, Response, Status, UplinkStatus};
use crate::dataplane::linux::LinuxDataplane;
use crate::dataplane::simulated::SimulatedDataplane;
use crate::dataplane::{Dataplane, DataplaneEvent};
use crate::engine::{self, Action, Engine, EngineConfig, Input, UplinkSpec};
use crate::events_log::EventsLog;
use crate::identity::{self, IdentityError};
use crate::outbox::Outbox;
use crate::remote::{self, CommandBook};
use crate::uplink_report::Window;
use stayopen_shared::commands::{CommandResult, CommandSpec, CommandStatus, DeviceCommand};
use stayopen_shared::policy::Policy;

/// Simulated links answer for this many virtual targets when the config lists none.
const SIMULATED_TARGETS: usize = 4;
/// The first telemetry goes out soon after start so a newly installed box shows up at once.
const FIRST_TELEMETRY_AFTER: Duration = Duration::from_secs(2);
/// The outbox's file in the state directory.
pub const OUTBOX_FILE: &str = "outbox.redb";
/// Without a cloud, the figures `status` shows are over windows of this length.
const STANDALONE_REPORT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot open the events file {path}: {source}")]
    EventsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot open the control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataplane: {0}")]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    #[error("cannot read the factory key {path}: {source}")]
    FactoryKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the stored device certificate cannot be used: {0}")]
    Tls(#[from] stayopen_shared::mqtt_tls::TlsSetupError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: ApplianceConfig,
    pub events_file: Option<PathBuf>,
    /// Seeds the simulated dataplane's randomness.
    pub seed: u64,
}

/// The engine's configuration as the appliance config sets it.
pub fn engine_config(config: &ApplianceConfig) -> EngineConfig {
    let specs = config
        .uplinks
        .iter()
        .map(|u| UplinkSpec {
            name: u.name.clone(),
            priority: u.priority,
            metered: u.metered,
        })
        .collect();
    let targets = match (&config.dataplane, config.probes.targets.len()) {
        (DataplaneSection::Simulated { .. }, 0) => SIMULATED_TARGETS,
        (_, n) => n.max(1),
    };
    let p = &config.probes;
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    EngineConfig {
        probe_spacing: ms(p.spacing_ms),
        probe_timeout: ms(p.timeout_ms),
        silence_window: ms(p.silence_ms),
        quorum: p.quorum,
        recovery_period: ms(p.recovery_ms),
        failback_clean_period: Duration::from_secs(u64::from(p.failback_clean_secs)),
        max_failback_hold: Duration::from_secs(u64::from(p.failback_max_hold_secs)),
        ..EngineConfig::new(specs, targets)
    }
}

/// How the agent run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (signal, or the caller's shutdown).
    Stopped,
    /// The cloud asked for a restart (`reboot_agent`); the supervisor starts the agent again.
    RestartRequested,
}

struct Driver<D: Dataplane> {
    config: ApplianceConfig,
    engine: Engine,
    dataplane: D,
    windows: Vec<Window>,
    last_reports: Vec<Option<UplinkTelemetry>>,
    events: Option<EventsLog>,
    cloud: Option<CloudLink>,
    /// The cloud's policy in force (from `state_dir/policy.json` at start), if any.
    policy: Option<Policy>,
    report_interval: Duration,
    next_drill: Option<Instant>,
    commands: CommandBook,
    exit: Option<Exit>,
}

impl<D: Dataplane> Driver<D> {
    async fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Probe { uplink, target } => {
                    self.dataplane.start_probe(now.into_std(), uplink, target)
                }
                Action::Activate { uplink } => {
                    if let Err(e) = self.dataplane.activate(now.into_std(), uplink).await {
                        tracing::error!(error = %e, "cannot switch uplink");
                    }
                }
                Action::FlushFlows { uplink } => match self.dataplane.flush_flows(uplink).await {
                    Ok(flushed) => {
                        tracing::info!(uplink = %self.engine.specs()[uplink].name, flushed, "flows flushed")
                    }
                    Err(e) => tracing::error!(error = %e, "cannot flush flows"),
                },
                Action::Emit(event) => self.emit(event),
            }
        }
    }

    /// Applies a policy newer than the one in force: engine settings at once, telemetry cadence
    /// and drill schedule from the next tick; kept on disk for restarts.
    async fn apply_policy(&mut self, now: Instant, policy: Policy, persist: bool) {
        if self
            .policy
            .as_ref()
            .is_some_and(|current| current.version >= policy.version)
        {
            return;
        }
        if let Err(e) = policy.validate() {
            self.emit(ApplianceEvent {
                kind: EventKind::PolicyRejected,
                uplink: None,
                from: None,
                to: None,
                reason: format!("policy version {} rejected: {e}", policy.version),
            });
            return;
        }
        let tunables = remote::tunables(&policy, self.engine.config());
        let actions = self.engine.handle(now.into_std(), Input::Retune(tunables));
        self.apply(now, actions).await;
        if self.cloud.is_some() {
            self.report_interval = Duration::from_secs(u64::from(policy.telemetry_interval_secs));
        }
        self.next_drill = next_drill(&policy, Utc::now(), now);
        if persist && let Err(e) = remote::save_policy(&self.config.appliance.state_dir, &policy) {
            tracing::error!(error = %e, "cannot store the applied policy");
        }
        let version = policy.version;
        self.policy = Some(policy);
        self.emit(ApplianceEvent {
            kind: EventKind::PolicyApplied,
            uplink: None,
            from: None,
            to: None,
            reason: format!("policy version {version} applied"),
        });
    }

    /// Carries out a command from the cloud: acknowledge, act, report the outcome.
    async fn run_command(&mut self, now: Instant, command: DeviceCommand) {
        let Some(cloud) = self.cloud.clone() else {
            return;
        };
        if let Some(done) = self.commands.result_of(command.id) {
            cloud.publish_command_result(Utc::now(), done.clone());
            return;
        }
        let answer = |status, detail: String, data| CommandResult {
            command_id: command.id,
            status,
            detail,
            data,
        };
        if command.expires_at <= Utc::now() {
            let result = answer(
                CommandStatus::Failed,
                "expired before it arrived".into(),
                None,
            );
            self.commands.record(result.clone());
            cloud.publish_command_result(Utc::now(), result);
            return;
        }
        cloud.publish_command_result(
            Utc::now(),
            answer(
                CommandStatus::Acknowledged,
                format!("{} accepted", command.spec.kind()),
                None,
            ),
        );
        let result = match command.spec {
            CommandSpec::StartDrill { duration_secs } => {
                let actions = self.engine.handle(
                    now.into_std(),
                    Input::StartDrill {
                        duration: Duration::from_secs(u64::from(duration_secs)),
                    },
                );
                self.apply(now, actions).await;
                if self.engine.drill_running() {
                    answer(
                        CommandStatus::Succeeded,
                        format!("drill running for {duration_secs} s"),
                        None,
                    )
                } else {
                    answer(
                        CommandStatus::Failed,
                        "drill refused: no healthy backup uplink".into(),
                        None,
                    )
                }
            }
            CommandSpec::FailBackNow => {
                let before = self.engine.active();
                let actions = self.engine.handle(now.into_std(), Input::FailBackNow);
                self.apply(now, actions).await;
                let after = self.engine.active_name().unwrap_or("none").to_owned();
                if self.engine.active() != before {
                    answer(CommandStatus::Succeeded, format!("now on {after}"), None)
                } else {
                    answer(
                        CommandStatus::Failed,
                        format!("stayed on {after}: no healthier preferred uplink"),
                        None,
                    )
                }
            }
            CommandSpec::CollectDiagnostics => {
                // Engine and uplink state only: never addresses, flows or contents of traffic.
                let data = serde_json::json!({
                    "agent_version": crate::AGENT_VERSION,
                    "status": self.status(now),
                    "policy": self.policy,
                    "outbox": cloud.outbox_report(),
                    "cloud_messages_unstored": cloud.unstored(),
                    "cloud_messages_rejected": cloud.rejected(),
                });
                answer(
                    CommandStatus::Succeeded,
                    "diagnostics collected".into(),
                    Some(data),
                )
            }
            CommandSpec::RebootAgent => {
                self.exit = Some(Exit::RestartRequested);
                answer(CommandStatus::Succeeded, "agent restarting".into(), None)
            }
        };
        self.commands.record(result.clone());
        cloud.publish_command_result(Utc::now(), result);
    }

    fn emit(&mut self, event: ApplianceEvent) {
        let at = Utc::now();
        tracing::info!(kind = ?event.kind, uplink = ?event.uplink, from = ?event.from, to = ?event.to, reason = %event.reason, "event");
        if let Some(log) = &mut self.events {
            log.append(at, &event);
        }
        if let Some(cloud) = &self.cloud {
            cloud.publish_event(at, event);
        }
    }

    fn observe(&mut self, event: DataplaneEvent) -> Input {
        match event {
            DataplaneEvent::Probe {
                uplink,
                target,
                rtt,
            } => {
                if let Some(window) = self.windows.get_mut(uplink) {
                    window.record(rtt);
                }
                match rtt {
                    Some(rtt) => Input::ProbeAnswered {
                        uplink,
                        target,
                        rtt,
                    },
                    None => Input::ProbeLost { uplink, target },
                }
            }
            DataplaneEvent::Carrier { uplink, up } => Input::Carrier { uplink, up },
        }
    }

    fn report(&mut self, now: Instant) -> Telemetry {
        let mut uplinks = Vec::with_capacity(self.windows.len());
        for i in 0..self.windows.len() {
            let spec = self.engine.specs()[i].clone();
            let counters = self.dataplane.counters(now.into_std(), i);
            let health = self.engine.wire_health(now.into_std(), i);
            let report = self.windows[i].take_report(&spec, health, counters);
            self.last_reports[i] = Some(report.clone());
            uplinks.push(report);
        }
        Telemetry {
            active_uplink: self.engine.active_name().map(str::to_owned),
            uplinks,
            policy_version: self.policy.as_ref().map(|p| p.version),
            samples: None,
            outbox: self.cloud.as_ref().and_then(CloudLink::outbox_report),
        }
    }

    fn status(&self, now: Instant) -> Status {
        let active = self.engine.active();
        Status {
            at: Utc::now(),
            active: self.engine.active_name().map(str::to_owned),
            drill_running: self.engine.drill_running(),
            uplinks: self
                .config
                .uplinks
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let last = self.last_reports[i].as_ref();
                    UplinkStatus {
                        name: u.name.clone(),
                        interface: u.interface.clone(),
                        priority: u.priority,
                        metered: u.metered,
                        health: self.engine.wire_health(now.into_std(), i),
                        active: active == Some(i),
                        rtt_ms: last
                            .and_then(|r| r.rtt_ms)
                            .or_else(|| self.windows[i].median_rtt_ms()),
                        loss_pct: last.map_or_else(|| self.windows[i].loss_pct(), |r| r.loss_pct),
                    }
                })
                .collect(),
        }
    }

    fn command(&self, request: Request) -> (Option<Input>, Response) {
        match request {
            Request::Status => (None, Response::Status(self.status(Instant::now()))),
            Request::StartDrill { duration_secs } if (1..=24 * 3600).contains(&duration_secs) => (
                Some(Input::StartDrill {
                    duration: Duration::from_secs(duration_secs),
                }),
                Response::Accepted {
                    message: format!("drill requested for {duration_secs} s"),
                },
            ),
            Request::StartDrill { .. } => (
                None,
                Response::Error {
                    message: "duration_secs must be between 1 and 86400".into(),
                },
            ),
            Request::StopDrill => (
                Some(Input::StopDrill),
                Response::Accepted {
                    message: "drill stop requested".into(),
                },
            ),
        }
    }
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(
    options: AgentOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Exit, AgentError> {
    let config = options.config;
    let state_dir = config.appliance.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|source| AgentError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let events = match &options.events_file {
        Some(path) => Some(
            EventsLog::open(path).map_err(|source| AgentError::EventsFile {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let cloud = match &config.cloud {
        Some(cloud) => {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?;
            let hardware = identity::detect_hardware(&config.appliance, &config.uplinks);
            let proof = match (&cloud.enrollment_token, &cloud.factory_key_file) {
                (_, Some(path)) => identity::Proof::FactoryKey(
                    std::fs::read_to_string(path)
                        .map_err(|source| AgentError::FactoryKey {
                            path: path.clone(),
                            source,
                        })?
                        .trim()
                        .to_owned(),
                ),
                (token, None) => identity::Proof::Token(token.clone().unwrap_or_default()),
            };
            let enrol =
                identity::load_or_enroll(&state_dir, &http, &cloud.api_url, &proof, hardware);
            let identity = tokio::select! {
                identity = enrol => identity?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(Exit::Stopped),
            };
            let outbox = Outbox::open(
                &state_dir.join(OUTBOX_FILE),
                u64::from(cloud.outbox_max_mb) * 1024 * 1024,
            )?;
            let (link, inbound) = CloudLink::start(&identity, outbox)?;
            Some((
                link,
                inbound,
                Duration::from_secs(u64::from(cloud.telemetry_interval_secs)),
            ))
        }
        None => None,
    };

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    match &config.dataplane {
        DataplaneSection::Simulated { links } => {
            let links = config
                .uplinks
                .iter()
                .map(|u| links.get(&u.name).cloned().unwrap_or_default())
                .collect();
            let dataplane =
                SimulatedDataplane::new(started.into_std(), links, options.seed, events_tx);
            drive(config, dataplane, events_rx, events, cloud, shutdown).await
        }
        DataplaneSection::Linux { table_base } => {
            let dataplane = LinuxDataplane::start(&config, *table_base, events_tx).await?;
            drive(config, dataplane, events_rx, events, cloud, shutdown).await
        }
    }
}

async fn drive<D: Dataplane>(
    config: ApplianceConfig,
    dataplane: D,
    mut dataplane_events: mpsc::UnboundedReceiver<DataplaneEvent>,
    events: Option<EventsLog>,
    cloud: Option<(CloudLink, mpsc::Receiver<Inbound>, Duration)>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Exit, AgentError> {
    let report_interval = cloud
        .as_ref()
        .map_or(STANDALONE_REPORT_INTERVAL, |(_, _, interval)| *interval);
    let (cloud, mut inbound) = match cloud {
        Some((link, inbound, _)) => (Some(link), Some(inbound)),
        None => (None, None),
    };
    let socket = control::socket_path(&config.appliance.state_dir);
    let (commands_tx, mut commands) = mpsc::channel::<Command>(16);
    control::serve(&socket, commands_tx).map_err(|source| AgentError::Control {
        path: socket.clone(),
        source,
    })?;

    let started = Instant::now();
    let engine_config = engine_config(&config);
    for (spec, _) in engine_config
        .uplinks
        .iter()
        .zip(&config.uplinks)
        .filter(|(s, _)| s.metered)
    {
        let interval = engine_config.metered_standby_interval;
        tracing::info!(
            uplink = %spec.name,
            interval_ms = interval.as_millis() as u64,
            monthly_mb = engine::monthly_probe_bytes(interval, engine::PROBE_EXCHANGE_BYTES) as f64 / 1e6,
            budget_mb = engine::METERED_MONTHLY_BUDGET_BYTES as f64 / 1e6,
            "metered uplink: standby probe budget"
        );
    }
    let uplinks = config.uplinks.len();
    let mut driver = Driver {
        engine: Engine::new(started.into_std(), engine_config),
        config,
        dataplane,
        windows: vec![Window::default(); uplinks],
        last_reports: vec![None; uplinks],
        events,
        cloud,
        policy: None,
        report_interval,
        next_drill: None,
        commands: CommandBook::default(),
        exit: None,
    };
    driver.emit(ApplianceEvent {
        kind: EventKind::AgentStarted,
        uplink: None,
        from: None,
        to: None,
        reason: format!("stayopen-appliance {} started", crate::AGENT_VERSION),
    });
    let actions = driver.engine.handle(started.into_std(), Input::Tick);
    driver.apply(started, actions).await;
    if driver.cloud.is_some()
        && let Some(policy) = remote::load_policy(&driver.config.appliance.state_dir)
    {
        driver.apply_policy(started, policy, false).await;
    }

    let mut next_report = started + FIRST_TELEMETRY_AFTER;
    loop {
        let mut deadline = next_report;
        if let Some(engine_deadline) = driver.engine.next_deadline() {
            deadline = deadline.min(Instant::from_std(engine_deadline));
        }
        let drill_at = driver.next_drill;
        let mut message = None;
        let input = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(received) = recv(&mut inbound) => {
                message = Some(received);
                None
            }
            _ = sleep_until_some(drill_at) => {
                let duration = driver
                    .policy
                    .as_ref()
                    .and_then(|p| p.drill_schedule.as_ref())
                    .map_or(60, |s| s.duration_secs);
                driver.next_drill = driver
                    .policy
                    .as_ref()
                    .and_then(|p| next_drill(p, Utc::now() + chrono::Duration::seconds(1), Instant::now()));
                tracing::info!(duration, "scheduled drill");
                Some(Input::StartDrill { duration: Duration::from_secs(u64::from(duration)) })
            }
            Some(event) = dataplane_events.recv() => Some(driver.observe(event)),
            Some((request, reply)) = commands.recv() => {
                let (input, response) = driver.command(request);
                let _ = reply.send(response);
                input
            }
            _ = tokio::time::sleep_until(deadline) => Some(Input::Tick),
        };
        let now = Instant::now();
        match message {
            Some(Inbound::Policy(policy)) => driver.apply_policy(now, policy, true).await,
            Some(Inbound::Command(command)) => driver.run_command(now, command).await,
            // The cloud link consumes acknowledgements itself.
            Some(Inbound::Ack(_)) => {}
            None => {}
        }
        if let Some(input) = input {
            let actions = driver.engine.handle(now.into_std(), input);
            driver.apply(now, actions).await;
        }
        if now >= next_report {
            let telemetry = driver.report(now);
            if let Some(cloud) = &driver.cloud {
                cloud.publish_telemetry(Utc::now(), telemetry);
            }
            next_report = (next_report + driver.report_interval).max(now);
        }
        if driver.exit.is_some() {
            break;
        }
    }
    if let Some(cloud) = &driver.cloud {
        cloud.shutdown().await;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(driver.exit.unwrap_or(Exit::Stopped))
}

async fn recv(inbound: &mut Option<mpsc::Receiver<Inbound>>) -> Option<Inbound> {
    match inbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When the policy's next scheduled drill starts, on the monotonic clock.
fn next_drill(policy: &Policy, wall_now: chrono::DateTime<Utc>, now: Instant) -> Option<Instant> {
    let schedule = policy.drill_schedule.as_ref()?;
    let start = schedule.next_start_after(wall_now.timestamp())?;
    let wait = u64::try_from(start - wall_now.timestamp()).ok()?;
    Some(now + Duration::from_secs(wait))
}
