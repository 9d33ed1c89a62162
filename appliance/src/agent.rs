//! The driver: owns the clock, the dataplane, the cloud link and the control socket; the
//! [`Engine`] decides. It also keeps the device certificate fresh ([`Renewal`]): renewed at start
//! when due, and while running, in the background, after which it replaces the cloud link.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth, UplinkTelemetry};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app_checks::{AppChecks, DrillMeter, UplinkInfo};
use crate::cloud_link::{CloudLink, Inbound};
use crate::config::{ApplianceConfig, DataplaneSection};
use crate::control::{self, Command, Request, Response, Status, UplinkStatus};
use crate::dataplane::linux::LinuxDataplane;
use crate::dataplane::simulated::SimulatedDataplane;
use crate::dataplane::{Dataplane, DataplaneEvent};
use crate::engine::{self, Action, Engine, EngineConfig, Input, UplinkSpec};
use crate::events_log::EventsLog;
use crate::identity::{self, Identity, IdentityError, RenewBefore};
use crate::outbox::Outbox;
use crate::probe_cost;
use crate::remote::{self, CommandBook};
use crate::tunnel::linux::{TunnelCounters, TunnelSetup};
use crate::tunnel::{
    RedundantLedger, TunnelCore, TunnelPlan, TunnelSettings, TunnelTimings, UplinkView,
};
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
/// While a tunnel runs, its decisions are revisited at least this often.
const TUNNEL_TICK: Duration = Duration::from_millis(200);
/// A tunnel data path that failed to start is tried again after this long.
const TUNNEL_RETRY: Duration = Duration::from_secs(10);

/// The tunnel as the driver runs it: the real decision core, the relay the dataplane was set up
/// for, and the month's duplicate bytes.
struct TunnelRun {
    core: TunnelCore,
    /// The relay the dataplane's tunnel runs for (`None`: no tunnel running).
    configured: Option<stayopen_shared::tunnel::RelayAssignment>,
    /// When setting the data path up last failed.
    failed_at: Option<Instant>,
    ledger: RedundantLedger,
    ledger_changed: bool,
    /// The data path's cumulative duplicate bytes already added to the ledger, per uplink.
    counted: Vec<u64>,
    counters: TunnelCounters,
    plan: TunnelPlan,
}

impl TunnelRun {
    fn new(now: Instant, config: &ApplianceConfig) -> Self {
        let keepalive = Duration::from_secs(u64::from(config.tunnel.keepalive_secs));
        Self {
            core: TunnelCore::new(
                now.into_std(),
                TunnelTimings::for_keepalive(keepalive),
                TunnelSettings::from_config(&config.tunnel),
            ),
            configured: None,
            failed_at: None,
            ledger: RedundantLedger::load(&config.appliance.state_dir),
            ledger_changed: false,
            counted: vec![0; config.uplinks.len()],
            counters: TunnelCounters::default(),
            plan: TunnelPlan::off(),
        }
    }

    /// The tunnel in telemetry and status.
    fn report(&self, now: Instant) -> stayopen_shared::tunnel::TunnelReport {
        let settings = self.core.settings();
        stayopen_shared::tunnel::TunnelReport {
            mode: settings.mode,
            state: self.core.state(),
            relay: settings.relay.as_ref().map(|r| r.relay.clone()),
            last_handshake_secs: self.counters.observed.handshake_at.map(|at| {
                u32::try_from(now.into_std().saturating_duration_since(at).as_secs())
                    .unwrap_or(u32::MAX)
            }),
            redundant: !self.plan.duplicate_on.is_empty(),
            redundant_bytes: self.ledger.bytes.clone(),
            tunnel_bytes: self.counters.tunnel_bytes,
        }
    }
}

/// How the agent keeps its device certificate fresh (issue 12): it renews with proof of its
/// current key when [`RenewBefore`] says so, at start and while running. When the cloud cannot
/// be reached it carries on with the certificate it has (a third of its life is months) and tries
/// again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    pub before: RenewBefore,
    /// The longest the agent goes without looking at its certificate, and the wait before it
    /// tries again after a failed renewal.
    pub check_every: Duration,
    /// The most one renewal may take (its requests, and the retry with a pending key).
    pub attempt_timeout: Duration,
}

impl Default for Renewal {
    fn default() -> Self {
        Self {
            before: RenewBefore::ThirdOfLifetime,
            check_every: Duration::from_secs(3600),
            attempt_timeout: Duration::from_secs(20),
        }
    }
}

/// What to do about the certificate at `now`, given the moment after which it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RenewalStep {
    Renew,
    /// Look again after this long: when renewal falls due, and at least every `check_every`
    /// (a wall clock set forward, or a renewal window that changed, is noticed within it).
    LookAgainIn(Duration),
}

fn renewal_step(
    due_after: DateTime<Utc>,
    now: DateTime<Utc>,
    check_every: Duration,
) -> RenewalStep {
    if now > due_after {
        return RenewalStep::Renew;
    }
    // A second past the moment: renewal is due only after it.
    let until_due = (due_after - now).to_std().unwrap_or_default() + Duration::from_secs(1);
    RenewalStep::LookAgainIn(until_due.min(check_every))
}

/// How long after a successful renewal the agent looks again: when the new certificate falls due
/// — or, should it be due as soon as issued (a renewal window longer than the cloud's
/// certificates), after `check_every`, at the pace of failures rather than in a loop.
fn look_again_after_renewal(
    renewed: &Identity,
    renewal: &Renewal,
    wall_now: DateTime<Utc>,
) -> Duration {
    let due_after = identity::renewal_due_after(renewed, renewal.before);
    match renewal_step(due_after, wall_now, renewal.check_every) {
        RenewalStep::LookAgainIn(wait) => wait,
        RenewalStep::Renew => renewal.check_every,
    }
}

#[derive(Debug, thiserror::Error)]
enum RenewalError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("no answer from the cloud within {0:?}")]
    TimedOut(Duration),
    #[error("the renewal task ended: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One renewal, bounded by `timeout`. The new identity is stored before it is returned.
async fn renew_within(
    timeout: Duration,
    state_dir: PathBuf,
    http: reqwest::Client,
    api_url: String,
    current: Identity,
) -> Result<Identity, RenewalError> {
    tokio::time::timeout(
        timeout,
        identity::renew(&state_dir, &http, &api_url, &current),
    )
    .await
    .map_err(|_| RenewalError::TimedOut(timeout))?
    .map_err(RenewalError::from)
}

/// Renewing while the agent runs: the identity in use, what an attempt needs, when to look next
/// and the attempt under way (in the background, so probing and failover never wait on it).
struct Renewer {
    identity: Identity,
    http: reqwest::Client,
    api_url: String,
    state_dir: PathBuf,
    outbox_max_bytes: u64,
    renewal: Renewal,
    next_check: Instant,
    attempt: Option<JoinHandle<Result<Identity, RenewalError>>>,
}

impl Renewer {
    /// When the driver should look at the certificate next; none while an attempt is under way.
    fn next_check(&self) -> Option<Instant> {
        self.attempt.is_none().then_some(self.next_check)
    }

    /// Starts an attempt if renewal is due at `wall_now`, or schedules the next look.
    fn check(&mut self, wall_now: DateTime<Utc>, now: Instant) {
        let due_after = identity::renewal_due_after(&self.identity, self.renewal.before);
        match renewal_step(due_after, wall_now, self.renewal.check_every) {
            RenewalStep::Renew => {
                tracing::info!(appliance_id = %self.identity.appliance_id,
                    "the device certificate is due for renewal; renewing");
                self.attempt = Some(tokio::spawn(renew_within(
                    self.renewal.attempt_timeout,
                    self.state_dir.clone(),
                    self.http.clone(),
                    self.api_url.clone(),
                    self.identity.clone(),
                )));
            }
            RenewalStep::LookAgainIn(wait) => self.next_check = now + wait,
        }
    }

    /// The outcome of the attempt under way (pending while there is none).
    async fn finished(&mut self) -> Result<Identity, RenewalError> {
        let outcome = match &mut self.attempt {
            Some(attempt) => attempt.await,
            None => std::future::pending().await,
        };
        self.attempt = None;
        outcome?
    }

    /// Takes an attempt's outcome: a renewed identity becomes the one in use (and is returned,
    /// for the driver to replace the cloud link); a failure is tried again after `check_every`.
    fn settle(
        &mut self,
        outcome: Result<Identity, RenewalError>,
        wall_now: DateTime<Utc>,
        now: Instant,
    ) -> Option<Identity> {
        match outcome {
            Ok(renewed) => {
                self.next_check = now + look_again_after_renewal(&renewed, &self.renewal, wall_now);
                self.identity = renewed.clone();
                Some(renewed)
            }
            Err(e) => {
                tracing::warn!(appliance_id = %self.identity.appliance_id, error = %e,
                    retry_in = ?self.renewal.check_every,
                    "cannot renew the device certificate; carrying on with the current one");
                self.next_check = now + self.renewal.check_every;
                None
            }
        }
    }
}

/// The cloud side as [`run`] hands it to the driver.
struct CloudStart {
    link: CloudLink,
    inbound: mpsc::Receiver<Inbound>,
    renewer: Renewer,
}

/// What the agent needs to reach the cloud: enrol (or load its identity), renew a certificate
/// that is due, open the MQTT link. Run beside the decision loop, never before it.
#[derive(Clone)]
struct CloudConnector {
    cloud: crate::config::CloudSection,
    state_dir: PathBuf,
    hardware: stayopen_shared::api::HardwareIdentity,
    renewal: Renewal,
}

/// Where the cloud connection stands, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloudState {
    /// No `[cloud]` section: a standalone appliance.
    Off,
    /// Enrolling, or loading the identity and renewing a due certificate.
    Connecting,
    /// The MQTT link is open (it reconnects on its own from here on).
    Linked,
    /// Enrolment was refused or the identity cannot be stored; tried again later.
    Refused(String),
}

impl CloudState {
    fn to_status(&self) -> Option<String> {
        match self {
            CloudState::Off => None,
            CloudState::Connecting => Some("enrolling".into()),
            CloudState::Linked => Some("linked".into()),
            CloudState::Refused(why) => Some(format!(
                "refused, trying again every {} min: {why}",
                REFUSED_ENROLMENT_RETRY.as_secs() / 60
            )),
        }
    }
}

/// How long the agent waits before enrolling again after a refusal: a serial the MSP has not
/// registered yet, or a token it reissues, is fixed on the cloud's side without touching the box.
const REFUSED_ENROLMENT_RETRY: Duration = Duration::from_secs(300);

/// Events held while the cloud link is not open yet (enrolment under way). More than this many
/// drops the oldest, counted in the log.
const MAX_EVENTS_BEFORE_LINK: usize = 10_000;

type CloudConnecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<CloudStart, AgentError>> + Send>>;

impl CloudConnector {
    fn start(self, after: Duration) -> CloudConnecting {
        Box::pin(async move {
            tokio::time::sleep(after).await;
            self.connect().await
        })
    }

    async fn connect(self) -> Result<CloudStart, AgentError> {
        let CloudConnector {
            cloud,
            state_dir,
            hardware,
            renewal,
        } = self;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        let proof = match (&cloud.enrollment_token, &cloud.factory_key_file) {
            (_, Some(path)) => identity::Proof::FactoryKey(
                std::fs::read_to_string(path)
                    .map_err(|source| AgentError::FactoryKey {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .into(),
            ),
            (token, None) => identity::Proof::Token(token.clone().unwrap_or_default().into()),
        };
        let enrol = identity::load_or_enroll(&state_dir, &http, &cloud.api_url, &proof, hardware);
        let identity = enrol.await?;
        let now = Instant::now();
        let due_after = identity::renewal_due_after(&identity, renewal.before);
        let (identity, first_check) = match renewal_step(due_after, Utc::now(), renewal.check_every)
        {
            RenewalStep::LookAgainIn(wait) => (identity, now + wait),
            RenewalStep::Renew => {
                tracing::info!(appliance_id = %identity.appliance_id,
                    "the device certificate is due for renewal; renewing before connecting");
                let attempt = renew_within(
                    renewal.attempt_timeout,
                    state_dir.clone(),
                    http.clone(),
                    cloud.api_url.clone(),
                    identity.clone(),
                );
                match attempt.await {
                    Ok(renewed) => {
                        let wait = look_again_after_renewal(&renewed, &renewal, Utc::now());
                        (renewed, Instant::now() + wait)
                    }
                    Err(e) => {
                        tracing::warn!(appliance_id = %identity.appliance_id, error = %e,
                            retry_in = ?renewal.check_every,
                            "cannot renew the device certificate; carrying on with the current one");
                        (identity, Instant::now() + renewal.check_every)
                    }
                }
            }
        };
        let outbox_max_bytes = u64::from(cloud.outbox_max_mb) * 1024 * 1024;
        let outbox = Outbox::open(&state_dir.join(OUTBOX_FILE), outbox_max_bytes)?;
        let (link, inbound) = CloudLink::start(&identity, outbox)?;
        Ok(CloudStart {
            link,
            inbound,
            renewer: Renewer {
                identity,
                http,
                api_url: cloud.api_url.clone(),
                state_dir: state_dir.clone(),
                outbox_max_bytes,
                renewal,
                next_check: first_check,
                attempt: None,
            },
        })
    }
}

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
    let costs = match &config.dataplane {
        DataplaneSection::Simulated { .. } if config.probes.targets.is_empty() => {
            vec![probe_cost::ICMP_ECHO_BYTES; targets]
        }
        _ => probe_cost::target_costs(
            &config
                .probes
                .targets
                .iter()
                .map(|t| t.kind())
                .collect::<Vec<_>>(),
        ),
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
            .with_target_costs(costs, engine::METERED_MONTHLY_BUDGET_BYTES)
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
    commands: CommandBook,
    exit: Option<Exit>,
    /// The critical-application checks through every uplink.
    app_checks: AppChecks,
    /// The drill under way (from its `drill_started` to its report), what it measured so far.
    drill: Option<DrillMeter>,
    /// The command whose `start_drill` the engine is handling, for the drill's report.
    drill_command: Option<uuid::Uuid>,
    /// A `drill_finished` held back until traffic is back on the primary, to carry the report.
    finished_drill: Option<ApplianceEvent>,
    /// The session-safe tunnel (issue 16).
    tunnel: TunnelRun,
    /// The DHCP lease of each `dhcp` uplink (issue 17): its resolvers are that uplink's DNS
    /// servers.
    leases: Vec<Option<crate::dhcp::Lease>>,
    /// The LAN's DHCP server and DNS forwarder (issue 17), on the Linux dataplane.
    lan: Option<crate::lan::LanServices>,
    /// The cellular uplinks' modems (issue 17).
    cellular: crate::cellular::CellularFeed,
    /// Where the cloud connection stands.
    cloud_state: CloudState,
    /// Events emitted before the cloud link opened, with their time, sent when it opens.
    events_before_link: std::collections::VecDeque<(DateTime<Utc>, ApplianceEvent)>,
}

impl<D: Dataplane> Driver<D> {
    fn new(
        started: Instant,
        config: ApplianceConfig,
        dataplane: D,
        events: Option<EventsLog>,
        report_interval: Duration,
    ) -> Self {
        let engine_config = engine_config(&config);
        for spec in engine_config.uplinks.iter().filter(|s| s.metered) {
            let interval = engine_config.metered_standby_interval;
            let mean = probe_cost::mean_cost(&engine_config.target_bytes);
            tracing::info!(
                uplink = %spec.name,
                interval_ms = interval.as_millis() as u64,
                mean_probe_bytes = mean,
                monthly_mb = engine::monthly_probe_bytes(interval, mean) as f64 / 1e6,
                budget_mb = engine::METERED_MONTHLY_BUDGET_BYTES as f64 / 1e6,
                health_share_pct = probe_cost::HEALTH_BUDGET_PCT,
                "metered uplink: standby probe budget (the rest is for critical-application checks)"
            );
        }
        let app_uplinks = engine_config
            .uplinks
            .iter()
            .map(|u| UplinkInfo {
                name: u.name.clone(),
                metered: u.metered,
            })
            .collect();
        let uplinks = config.uplinks.len();
        let tunnel = TunnelRun::new(started, &config);
        Driver {
            tunnel,
            engine: Engine::new(started.into_std(), engine_config),
            config,
            dataplane,
            windows: vec![Window::default(); uplinks],
            last_reports: vec![None; uplinks],
            leases: vec![None; uplinks],
            events,
            cloud: None,
            policy: None,
            report_interval,
            commands: CommandBook::default(),
            exit: None,
            app_checks: AppChecks::new(started.into_std(), app_uplinks),
            drill: None,
            drill_command: None,
            finished_drill: None,
            lan: None,
            cellular: crate::cellular::CellularFeed::None,
            cloud_state: CloudState::Off,
            events_before_link: Default::default(),
        }
    }

    /// The next moment the driver must act without being woken: the engine's deadline, the next
    /// application check, `next_report`.
    fn deadline(&self, next_report: Instant) -> Instant {
        let mut deadline = next_report;
        if let Some(engine_deadline) = self.engine.next_deadline() {
            deadline = deadline.min(Instant::from_std(engine_deadline));
        }
        if let Some(checks_deadline) = self
            .app_checks
            .next_deadline(Instant::now().into_std(), self.engine.active())
        {
            deadline = deadline.min(Instant::from_std(checks_deadline));
        }
        if self.tunnel.core.settings().enabled() || self.tunnel.configured.is_some() {
            deadline = deadline.min(Instant::now() + TUNNEL_TICK);
        }
        deadline
    }

    /// One turn of the loop: the engine takes `input` and its actions are carried out, then the
    /// application checks that are due start.
    async fn step(&mut self, now: Instant, input: Option<Input>) {
        if let Some(input) = input {
            let actions = self.engine.handle(now.into_std(), input);
            self.apply(now, actions).await;
        }
        self.run_app_checks(now);
        self.tunnel_turn(now).await;
    }

    /// The tunnel's turn: the data path runs for the relay the settings name, the decision core
    /// takes the engine's active uplink, every uplink's health and what the data path saw, and the
    /// plan is carried out at once — so the outer packets follow a failover in the same turn.
    async fn tunnel_turn(&mut self, now: Instant) {
        let wanted = self
            .tunnel
            .core
            .settings()
            .enabled()
            .then(|| self.tunnel.core.settings().relay.clone())
            .flatten();
        if wanted != self.tunnel.configured
            && self
                .tunnel
                .failed_at
                .is_none_or(|at| now.saturating_duration_since(at) >= TUNNEL_RETRY)
        {
            let setup = match &wanted {
                Some(relay) => match identity::wireguard_key(&self.config.appliance.state_dir) {
                    Ok(key) => Some(TunnelSetup {
                        key,
                        relay: relay.clone(),
                        interface: self.config.tunnel.interface.clone(),
                        mtu: self.config.tunnel.mtu,
                        keepalive: Duration::from_secs(u64::from(
                            self.config.tunnel.keepalive_secs,
                        )),
                        relay_inner_address: self.config.tunnel.relay_inner_address,
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "no WireGuard key: the tunnel cannot start");
                        self.tunnel.failed_at = Some(now);
                        return;
                    }
                },
                None => None,
            };
            match self.dataplane.configure_tunnel(setup).await {
                Ok(()) => {
                    self.tunnel.configured = wanted;
                    self.tunnel.failed_at = None;
                    self.tunnel.counted = vec![0; self.config.uplinks.len()];
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the tunnel's data path");
                    self.tunnel.failed_at = Some(now);
                    self.tunnel.configured = None;
                }
            }
        }
        let counters = self.dataplane.tunnel_counters(now.into_std());
        let month = RedundantLedger::month_of(Utc::now());
        self.tunnel.ledger.roll(&month);
        for (i, total) in counters.duplicate_bytes.iter().enumerate() {
            let counted = self.tunnel.counted.get(i).copied().unwrap_or(0);
            if *total > counted {
                let name = &self.engine.specs()[i].name;
                self.tunnel.ledger.add(&month, name, total - counted);
                self.tunnel.ledger_changed = true;
            }
            if let Some(c) = self.tunnel.counted.get_mut(i) {
                *c = *total;
            }
        }
        let views: Vec<UplinkView> = self
            .engine
            .specs()
            .iter()
            .enumerate()
            .map(|(i, spec)| UplinkView {
                healthy: matches!(
                    self.engine.wire_health(now.into_std(), i),
                    UplinkHealth::Up | UplinkHealth::Degraded
                ),
                metered: spec.metered,
                duplicate_bytes: self.tunnel.ledger.of(&spec.name),
            })
            .collect();
        // Without a running data path nothing was observed: the core falls back after its timeout.
        let (plan, events) = self.tunnel.core.update(
            now.into_std(),
            self.engine.active(),
            &views,
            counters.observed,
        );
        self.dataplane
            .apply_tunnel(now.into_std(), &plan, self.tunnel.core.settings());
        self.tunnel.counters = counters;
        self.tunnel.plan = plan;
        for event in events {
            self.emit(event);
        }
    }

    async fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Probe { uplink, target } => {
                    self.dataplane.start_probe(now.into_std(), uplink, target)
                }
                Action::Activate { uplink } => {
                    match self.dataplane.activate(now.into_std(), uplink).await {
                        Ok(()) => self.traffic_applied(now, uplink),
                        Err(e) => tracing::error!(error = %e, "cannot switch uplink"),
                    }
                }
                Action::FlushFlows { uplink } => {
                    // Off the decision loop: a slow `conntrack` must not hold up the probes that
                    // tell the engine whether the backup is healthy.
                    let flush = self.dataplane.flush_flows(uplink);
                    let name = self.engine.specs()[uplink].name.clone();
                    tokio::spawn(async move {
                        match flush.await {
                            Ok(flushed) => tracing::info!(uplink = %name, flushed, "flows flushed"),
                            Err(e) => {
                                tracing::error!(uplink = %name, error = %e, "cannot flush flows")
                            }
                        }
                    });
                }
                Action::Emit(event) => self.engine_event(now, event),
            }
        }
        self.report_finished_drill();
    }

    /// An event of the engine: drill events start, end or fail the drill's measurement. `now` is
    /// the moment the engine decided at: the application checks a drill reads are stamped with it
    /// too, so a later clock reading here would disown the checks started in the same turn.
    fn engine_event(&mut self, now: Instant, event: ApplianceEvent) {
        let now = now.into_std();
        match event.kind {
            EventKind::DrillStarted => {
                self.drill = Some(DrillMeter::start(now, self.drill_command.take()));
                self.emit(event);
            }
            EventKind::DrillFinished if self.drill.is_some() => {
                if let Some(meter) = &mut self.drill {
                    meter.ended(now);
                }
                self.finished_drill = Some(event);
            }
            // A refusal while a drill runs leaves that drill alone.
            EventKind::DrillFailed if !self.engine.drill_running() => {
                let mut event = event;
                if let Some(meter) = self.drill.take() {
                    let (report, _) = meter.report(&self.drill_results(&meter));
                    event.drill = Some(report);
                }
                self.emit(event);
            }
            _ => self.emit(event),
        }
    }

    /// The drill's application results: each application's round through the backup since traffic
    /// moved there.
    fn drill_results(
        &self,
        meter: &DrillMeter,
    ) -> Vec<(String, Option<crate::app_checks::AppResult>)> {
        match (&meter.backup, meter.checks_from) {
            (Some((backup, _)), Some(since)) => self.app_checks.results_since(*backup, since),
            _ => Vec::new(),
        }
    }

    /// The dataplane has applied traffic on `uplink`: a drill's switchover or failback completes.
    /// The switchover is measured when the dataplane is done; the drill's checks count from the
    /// turn's moment `now`, which stamps the checks started after this in the same turn.
    fn traffic_applied(&mut self, now: Instant, uplink: Option<usize>) {
        // The LAN's DNS forwarder asks the resolvers of the uplink that carries traffic.
        if let Some(lan) = &self.lan {
            lan.set_active_uplink(uplink);
        }
        let turn = now.into_std();
        let now = Instant::now().into_std();
        let on_backup = self.engine.drill_on_backup();
        let Some(meter) = &mut self.drill else {
            return;
        };
        match (on_backup, uplink) {
            (Some(backup), Some(applied)) if backup == applied && meter.on_backup_at.is_none() => {
                let name = self.engine.specs()[backup].name.clone();
                meter.traffic_on_backup(turn, now, backup, &name);
                self.app_checks.check_now(backup);
            }
            _ if meter.ended_at.is_some() => meter.traffic_back(now),
            _ => {}
        }
    }

    /// Emits a held-back `drill_finished` with its report — or, when an application was
    /// unreachable through the backup, a `drill_failed` that names it.
    fn report_finished_drill(&mut self) {
        let Some(mut event) = self.finished_drill.take() else {
            return;
        };
        let Some(meter) = self.drill.take() else {
            self.emit(event);
            return;
        };
        let (report, failure) = meter.report(&self.drill_results(&meter));
        if let Some(failure) = failure {
            event.kind = EventKind::DrillFailed;
            event.reason = format!("drill failed: {failure}");
        }
        event.drill = Some(report);
        self.emit(event);
    }

    /// Starts the application checks that are due.
    fn run_app_checks(&mut self, now: Instant) {
        let now = now.into_std();
        for request in self.app_checks.poll(now, self.engine.active()) {
            let (Some(endpoint), Some(app)) = (
                self.app_checks.endpoint(&request).cloned(),
                self.app_checks
                    .apps()
                    .get(request.app)
                    .map(|a| a.name.clone()),
            ) else {
                continue;
            };
            self.dataplane
                .start_app_check(now, request.uplink, request.id, &app, &endpoint);
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
                drill: None,
            });
            return;
        }
        let tunables = remote::tunables(&policy, self.engine.config());
        let actions = self.engine.handle(now.into_std(), Input::Retune(tunables));
        self.apply(now, actions).await;
        if self.config.cloud.is_some() {
            self.report_interval = Duration::from_secs(u64::from(policy.telemetry_interval_secs));
        }
        if persist && let Err(e) = remote::save_policy(&self.config.appliance.state_dir, &policy) {
            tracing::error!(error = %e, "cannot store the applied policy");
        }
        self.app_checks.set_policy(
            now.into_std(),
            policy.critical_apps.clone(),
            Duration::from_secs(u64::from(policy.app_check_interval_secs)),
            u64::from(policy.metered_budget_mb) * 1_000_000,
        );
        self.tunnel.core.set_settings(
            now.into_std(),
            TunnelSettings::from_policy(&policy, &self.config.tunnel),
        );
        let version = policy.version;
        self.policy = Some(policy);
        self.emit(ApplianceEvent {
            kind: EventKind::PolicyApplied,
            uplink: None,
            from: None,
            to: None,
            reason: format!("policy version {version} applied"),
            drill: None,
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
        let refusal = if command.expires_at <= Utc::now() {
            Some("expired before it arrived".to_owned())
        } else {
            // The cloud checks the bounds too; a command out of them is refused, not clamped.
            command
                .spec
                .validate()
                .err()
                .map(|e| format!("refused: {e}"))
        };
        if let Some(detail) = refusal {
            tracing::warn!(command = %command.id, kind = command.spec.kind(), %detail, "command refused");
            let result = answer(CommandStatus::Failed, detail, None);
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
                self.drill_command = Some(command.id);
                let actions = self.engine.handle(
                    now.into_std(),
                    Input::StartDrill {
                        duration: Duration::from_secs(u64::from(duration_secs)),
                    },
                );
                self.apply(now, actions).await;
                self.drill_command = None;
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

    async fn handle_inbound(&mut self, now: Instant, message: Inbound) {
        match message {
            Inbound::Policy(policy) => self.apply_policy(now, policy, true).await,
            Inbound::Command(command) => self.run_command(now, command).await,
            // The cloud link consumes acknowledgements itself.
            Inbound::Ack(_) => {}
        }
    }

    /// Replaces the cloud link with one under a renewed identity (its certificate, key and MQTT
    /// password). The old link says goodbye and releases the outbox — one opener at a time —
    /// before the new one opens it, so nothing waiting there is lost. Returns what the old link
    /// had received and the driver not yet read.
    async fn replace_cloud_link(
        &mut self,
        identity: &Identity,
        outbox_max_bytes: u64,
        inbound: &mut Option<mpsc::Receiver<Inbound>>,
    ) -> Result<Vec<Inbound>, AgentError> {
        if let Some(old) = self.cloud.take() {
            old.shutdown().await;
        }
        let mut unread = Vec::new();
        if let Some(mut old) = inbound.take() {
            while let Ok(message) = old.try_recv() {
                unread.push(message);
            }
        }
        let outbox = Outbox::open(
            &self.config.appliance.state_dir.join(OUTBOX_FILE),
            outbox_max_bytes,
        )?;
        let (link, received) = CloudLink::start(identity, outbox)?;
        self.cloud = Some(link);
        *inbound = Some(received);
        tracing::info!(appliance_id = %identity.appliance_id,
            "reconnecting to the cloud with the renewed certificate");
        Ok(unread)
    }

    fn emit(&mut self, event: ApplianceEvent) {
        let at = Utc::now();
        tracing::info!(kind = ?event.kind, uplink = ?event.uplink, from = ?event.from, to = ?event.to, reason = %event.reason, "event");
        if let Some(log) = &mut self.events {
            log.append(at, &event);
        }
        if let Some(cloud) = &self.cloud {
            cloud.publish_event(at, event);
        } else if self.cloud_state != CloudState::Off {
            if self.events_before_link.len() == MAX_EVENTS_BEFORE_LINK {
                self.events_before_link.pop_front();
                tracing::warn!(
                    held = MAX_EVENTS_BEFORE_LINK,
                    "too many events before the cloud link opened; the oldest is dropped"
                );
            }
            self.events_before_link.push_back((at, event));
        }
    }

    /// The cloud link opened: what happened before it is sent first, with the time it happened.
    fn link_cloud(&mut self, link: CloudLink) {
        for (at, event) in self.events_before_link.drain(..) {
            link.publish_event(at, event);
        }
        self.cloud = Some(link);
        self.cloud_state = CloudState::Linked;
    }

    fn observe(&mut self, now: Instant, event: DataplaneEvent) -> Option<Input> {
        Some(match event {
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
            DataplaneEvent::AppCheck { check, outcome } => {
                self.app_checks.record(now.into_std(), check, outcome);
                return None;
            }
            DataplaneEvent::LeaseChanged { uplink, lease } => {
                let slot = self.leases.get_mut(uplink)?;
                let resolvers_before = slot.as_ref().map(|l| l.resolvers.clone());
                let resolvers = lease.as_ref().map(|l| l.resolvers.clone());
                if resolvers != resolvers_before {
                    tracing::info!(uplink = %self.config.uplinks[uplink].name, ?resolvers, "uplink resolvers changed");
                    // The DNS forwarder asks the configured resolvers, then those the lease names.
                    if let Some(dns) = self.lan.as_ref().and_then(|lan| lan.dns()) {
                        let mut all = self.config.uplinks[uplink].dns.clone();
                        for learned in resolvers.iter().flatten() {
                            let learned = std::net::IpAddr::V4(*learned);
                            if !all.contains(&learned) {
                                all.push(learned);
                            }
                        }
                        dns.set_uplink_resolvers(uplink, all);
                    }
                }
                *slot = lease;
                return None;
            }
        })
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
        self.cellular.attach(now.into_std(), &mut uplinks);
        Telemetry {
            active_uplink: self.engine.active_name().map(str::to_owned),
            uplinks,
            policy_version: self.policy.as_ref().map(|p| p.version),
            samples: None,
            outbox: self.cloud.as_ref().and_then(CloudLink::outbox_report),
            apps: self.app_checks.reachability(now.into_std()),
            tunnel: Some(self.tunnel_report(now)),
        }
    }

    /// The tunnel's report; the month's duplicate count is written to the state directory when it
    /// changed, so a restart keeps counting against the metered cap.
    fn tunnel_report(&mut self, now: Instant) -> stayopen_shared::tunnel::TunnelReport {
        if self.tunnel.ledger_changed {
            match self.tunnel.ledger.save(&self.config.appliance.state_dir) {
                Ok(()) => self.tunnel.ledger_changed = false,
                Err(e) => tracing::warn!(error = %e, "cannot store the redundant-mode usage"),
            }
        }
        self.tunnel.report(now)
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
                        lease: self.leases[i].as_ref().map(crate::dhcp::Lease::describe),
                    }
                })
                .collect(),
            apps: self.app_checks.reachability(now.into_std()),
            tunnel: Some(self.tunnel.report(now)),
            cloud: self.cloud_state.to_status(),
            lan: self.lan.as_ref().map(crate::lan::LanServices::report),
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

/// The stop signal the binaries give [`run`]: it turns true on SIGTERM or Ctrl-C. Spawned on
/// `runtime`, so the caller can hand the receiver to work it then blocks on.
pub fn stop_on_signal(runtime: &tokio::runtime::Runtime) -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(
    options: AgentOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Exit, AgentError> {
    run_with_renewal(options, Renewal::default(), shutdown).await
}

/// [`run`], renewing the device certificate as `renewal` says (tests renew within seconds).
pub async fn run_with_renewal(
    options: AgentOptions,
    renewal: Renewal,
    shutdown: watch::Receiver<bool>,
) -> Result<Exit, AgentError> {
    let config = options.config;
    let state_dir = config.appliance.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|source| AgentError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    // Made once, before enrolment: the cloud registers its public half for the relay.
    let wireguard = identity::wireguard_key(&state_dir)?;
    tracing::info!(public_key = %wireguard.public_base64(), "WireGuard key");
    let events = match &options.events_file {
        Some(path) => Some(
            EventsLog::open(path).map_err(|source| AgentError::EventsFile {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    // The cloud is reached in the background, once the dataplane routes: a box fresh from
    // `setup` (or one whose cloud is down) must carry the practice's traffic first, and with
    // DHCP uplinks there is no route to the cloud until the engine has chosen an active uplink.
    let report_interval = config
        .cloud
        .as_ref()
        .map_or(STANDALONE_REPORT_INTERVAL, |c| {
            Duration::from_secs(u64::from(c.telemetry_interval_secs))
        });
    let cloud = match &config.cloud {
        Some(cloud) => Some(CloudConnector {
            cloud: cloud.clone(),
            state_dir: state_dir.clone(),
            hardware: identity::detect_hardware(&config.appliance, &config.uplinks),
            renewal,
        }),
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
            crate::dataplane::simulated::announce_leases(&config.uplinks, &events_tx);
            let dataplane =
                SimulatedDataplane::new(started.into_std(), links, options.seed, events_tx);
            drive(
                config,
                dataplane,
                events_rx,
                events,
                cloud,
                report_interval,
                shutdown,
            )
            .await
        }
        DataplaneSection::Linux { table_base } => {
            let dataplane = LinuxDataplane::start(&config, *table_base, events_tx).await?;
            drive(
                config,
                dataplane,
                events_rx,
                events,
                cloud,
                report_interval,
                shutdown,
            )
            .await
        }
    }
}

async fn drive<D: Dataplane>(
    config: ApplianceConfig,
    dataplane: D,
    mut dataplane_events: mpsc::UnboundedReceiver<DataplaneEvent>,
    events: Option<EventsLog>,
    cloud: Option<CloudConnector>,
    report_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Exit, AgentError> {
    let mut inbound = None;
    let mut renewer: Option<Renewer> = None;
    let socket = control::socket_path(&config.appliance.state_dir);
    let (commands_tx, mut commands) = mpsc::channel::<Command>(16);
    control::serve(&socket, commands_tx).map_err(|source| AgentError::Control {
        path: socket.clone(),
        source,
    })?;

    let started = Instant::now();
    let mut driver = Driver::new(started, config, dataplane, events, report_interval);
    let mut connecting = cloud.clone().map(|c| c.start(Duration::ZERO));
    if connecting.is_some() {
        driver.cloud_state = CloudState::Connecting;
    }
    driver.lan = crate::lan::start(&driver.config).await;
    driver.cellular = crate::cellular::start(&driver.config, started.into_std());
    driver.emit(ApplianceEvent {
        kind: EventKind::AgentStarted,
        uplink: None,
        from: None,
        to: None,
        reason: format!("stayopen-appliance {} started", crate::AGENT_VERSION),
        drill: None,
    });
    let actions = driver.engine.handle(started.into_std(), Input::Tick);
    driver.apply(started, actions).await;
    // The last policy the cloud sent applies from the start, whether or not the cloud answers.
    if driver.config.cloud.is_some()
        && let Some(policy) = remote::load_policy(&driver.config.appliance.state_dir)
    {
        driver.apply_policy(started, policy, false).await;
    }

    // The dataplane is up and the control socket answers: systemd may consider the agent started.
    let mut systemd = crate::sd_notify::Notifier::from_env();
    systemd.ready();
    let mut next_report = started + FIRST_TELEMETRY_AFTER;
    let mut failure = None;
    loop {
        let deadline = driver.deadline(next_report);
        let renewal_check = renewer.as_ref().and_then(Renewer::next_check);
        let mut message = None;
        let mut check_renewal = false;
        let mut renewal_outcome = None;
        let mut linked = None;
        let input = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            started = connected(&mut connecting) => {
                linked = Some(started);
                None
            }
            Some(received) = recv(&mut inbound) => {
                message = Some(received);
                None
            }
            outcome = renewal_finished(&mut renewer) => {
                renewal_outcome = Some(outcome);
                None
            }
            _ = sleep_until_some(renewal_check) => {
                check_renewal = true;
                None
            }
            Some(event) = dataplane_events.recv() => driver.observe(Instant::now(), event),
            Some((request, reply)) = commands.recv() => {
                let (input, response) = driver.command(request);
                let _ = reply.send(response);
                input
            }
            _ = tokio::time::sleep_until(deadline) => Some(Input::Tick),
        };
        let now = Instant::now();
        // A turn of the loop that never comes stops these pings, and systemd restarts the agent.
        systemd.watchdog(now.into_std());
        if let Some(outcome) = linked {
            connecting = None;
            match outcome {
                Ok(started) => {
                    driver.link_cloud(started.link);
                    inbound = Some(started.inbound);
                    renewer = Some(started.renewer);
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?REFUSED_ENROLMENT_RETRY,
                        "cannot join the cloud; routing carries on without it");
                    driver.cloud_state = CloudState::Refused(e.to_string());
                    connecting = cloud.clone().map(|c| c.start(REFUSED_ENROLMENT_RETRY));
                }
            }
        }
        if let Some(message) = message {
            driver.handle_inbound(now, message).await;
        }
        if let Some(renewer) = &mut renewer {
            if check_renewal {
                renewer.check(Utc::now(), now);
            }
            let renewed = renewal_outcome.and_then(|o| renewer.settle(o, Utc::now(), now));
            if let Some(identity) = renewed {
                match driver
                    .replace_cloud_link(&identity, renewer.outbox_max_bytes, &mut inbound)
                    .await
                {
                    Ok(unread) => {
                        for message in unread {
                            driver.handle_inbound(now, message).await;
                        }
                    }
                    // The renewed identity is stored: a restarted agent connects with it.
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        driver.step(now, input).await;
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
    systemd.stopping();
    // Steering into a tunnel no process serves any more would strand the flows it marks.
    if let Err(e) = driver.dataplane.configure_tunnel(None).await {
        tracing::warn!(error = %e, "cannot remove the tunnel");
    }
    if let Some(attempt) = renewer.as_mut().and_then(|r| r.attempt.take()) {
        // A renewal cut short resumes with its pending key at the next start.
        attempt.abort();
    }
    if let Some(cloud) = &driver.cloud {
        cloud.shutdown().await;
    }
    let _ = std::fs::remove_file(&socket);
    match failure {
        Some(e) => Err(e),
        None => Ok(driver.exit.unwrap_or(Exit::Stopped)),
    }
}

async fn connected(connecting: &mut Option<CloudConnecting>) -> Result<CloudStart, AgentError> {
    match connecting {
        Some(connecting) => connecting.await,
        None => std::future::pending().await,
    }
}

async fn renewal_finished(renewer: &mut Option<Renewer>) -> Result<Identity, RenewalError> {
    match renewer {
        Some(renewer) => renewer.finished().await,
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    /// A standalone appliance (no cloud) with serial `serial` on simulated fibre and metered LTE,
    /// the named links following `links`.
    fn standalone_config(
        state_dir: &std::path::Path,
        serial: &str,
        links: std::collections::BTreeMap<String, crate::config::SimulatedLink>,
    ) -> ApplianceConfig {
        use crate::config::{ApplianceSection, LanSection, ProbeSection, UplinkConfig};
        let uplink = |name: &str, priority, metered| UplinkConfig {
            name: name.into(),
            interface: format!("{name}0"),
            gateway: Some("192.0.2.1".parse().expect("ip")),
            priority,
            addressing: Default::default(),
            metered,
            dns: Vec::new(),
            modem: None,
        };
        ApplianceConfig {
            appliance: ApplianceSection {
                state_dir: state_dir.to_owned(),
                serial: Some(serial.into()),
                mac: Some("02:00:00:00:00:01".into()),
                model: None,
            },
            cloud: None,
            lan: LanSection::without_services("lan0"),
            uplinks: vec![uplink("fiber", 0, false), uplink("lte", 1, true)],
            probes: ProbeSection::default(),
            dataplane: DataplaneSection::Simulated { links },
            tunnel: Default::default(),
            cellular: Default::default(),
        }
    }

    mod drills {
        use std::collections::BTreeMap;

        use stayopen_shared::compliance::{AppEndpoint, AppTier, DrillReport};
        use stayopen_shared::policy::CriticalApp;

        use super::*;
        use crate::config::SimulatedLink;

        /// A standalone appliance on simulated links: fibre, and a metered LTE backup whose link
        /// refuses `lte_refuses`.
        fn config(state_dir: &std::path::Path, lte_refuses: &[&str]) -> ApplianceConfig {
            let lte = SimulatedLink {
                rtt_ms: 40.0,
                jitter_ms: 0.0,
                unreachable_apps: lte_refuses.iter().map(|s| (*s).to_owned()).collect(),
                ..SimulatedLink::default()
            };
            standalone_config(state_dir, "SO-TEST", BTreeMap::from([("lte".into(), lte)]))
        }

        fn register() -> Vec<CriticalApp> {
            vec![
                CriticalApp {
                    name: "EHR".into(),
                    tier: AppTier::Tier1,
                    endpoints: vec![AppEndpoint::Https {
                        url: "https://ehr.example/health".into(),
                    }],
                },
                CriticalApp {
                    name: "Lab interface".into(),
                    tier: AppTier::Tier2,
                    endpoints: vec![AppEndpoint::Tcp {
                        host: "lab.example".into(),
                        port: 2575,
                    }],
                },
            ]
        }

        /// Runs the real driver (engine, simulated dataplane, application checks) in paused time:
        /// it settles, takes a policy with `apps`, runs a 20 s drill started by command `id`, and
        /// returns the events it wrote.
        async fn drill(
            lte_refuses: &[&str],
            apps: Vec<CriticalApp>,
            id: uuid::Uuid,
        ) -> Vec<serde_json::Value> {
            let twenty = Duration::from_secs(20);
            drill_after(lte_refuses, apps, id, [twenty, twenty, twenty]).await
        }

        /// [`drill`] with its timeline: the links settle for `warmup`, the policy is in force for
        /// `settled` before a drill of `duration`.
        async fn drill_after(
            lte_refuses: &[&str],
            apps: Vec<CriticalApp>,
            id: uuid::Uuid,
            [warmup, settled, duration]: [Duration; 3],
        ) -> Vec<serde_json::Value> {
            let dir = tempfile::tempdir().expect("dir");
            let events_path = dir.path().join("events.jsonl");
            let config = config(dir.path(), lte_refuses);
            let (tx, mut rx) = mpsc::unbounded_channel();
            let started = Instant::now();
            let links = vec![SimulatedLink::default(), {
                let DataplaneSection::Simulated { links } = &config.dataplane else {
                    unreachable!("simulated")
                };
                links["lte"].clone()
            }];
            let dataplane = SimulatedDataplane::new(started.into_std(), links, 7, tx);
            let events = EventsLog::open(&events_path).expect("events log");
            let mut driver = Driver::new(
                started,
                config,
                dataplane,
                Some(events),
                STANDALONE_REPORT_INTERVAL,
            );
            let run = async |driver: &mut Driver<SimulatedDataplane>,
                             rx: &mut mpsc::UnboundedReceiver<DataplaneEvent>,
                             span: Duration| {
                let until = Instant::now() + span;
                while Instant::now() < until {
                    let deadline = driver.deadline(until);
                    let input = tokio::select! {
                        Some(event) = rx.recv() => driver.observe(Instant::now(), event),
                        _ = tokio::time::sleep_until(deadline) => Some(Input::Tick),
                    };
                    driver.step(Instant::now(), input).await;
                }
            };
            driver.step(started, Some(Input::Tick)).await;
            run(&mut driver, &mut rx, warmup).await;
            let policy = Policy {
                version: 1,
                critical_apps: apps,
                ..Policy::default()
            };
            driver.apply_policy(Instant::now(), policy, false).await;
            run(&mut driver, &mut rx, settled).await;
            driver.drill_command = Some(id);
            driver
                .step(Instant::now(), Some(Input::StartDrill { duration }))
                .await;
            driver.drill_command = None;
            run(&mut driver, &mut rx, duration + Duration::from_secs(10)).await;
            std::fs::read_to_string(&events_path)
                .expect("events")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect()
        }

        fn report_of(event: &serde_json::Value) -> DrillReport {
            serde_json::from_value(event["drill"].clone()).expect("a drill report")
        }

        #[tokio::test(start_paused = true)]
        async fn a_drill_that_reaches_every_app_through_the_backup_finishes_with_its_report() {
            let id = uuid::Uuid::from_u128(42);
            let events = drill(&[], register(), id).await;
            let finished: Vec<_> = events
                .iter()
                .filter(|e| e["kind"] == "drill_finished")
                .collect();
            assert_eq!(finished.len(), 1, "{events:?}");
            let report = report_of(finished[0]);
            assert!(report.passed, "{report:?}");
            assert_eq!(report.command_id, Some(id));
            assert_eq!(report.backup.as_deref(), Some("lte"));
            assert_eq!(report.apps.len(), 2);
            assert!(
                report
                    .apps
                    .iter()
                    .all(|a| a.reachable && a.latency_ms.is_some())
            );
            // The metered backup is re-checked at full rate before traffic moves: a few probes.
            let switchover = report.switchover_ms.expect("switchover measured");
            assert!((1..2_000).contains(&switchover), "{switchover} ms");
            assert!(report.failback_ms.is_some(), "failback measured");
            assert!(events.iter().all(|e| e["kind"] != "drill_failed"));
        }

        #[tokio::test(start_paused = true)]
        async fn a_drill_that_cannot_reach_an_app_through_the_backup_fails_naming_the_app_and_why()
        {
            let events = drill(&["Lab interface"], register(), uuid::Uuid::from_u128(43)).await;
            let failed: Vec<_> = events
                .iter()
                .filter(|e| e["kind"] == "drill_failed")
                .collect();
            assert_eq!(failed.len(), 1, "{events:?}");
            assert_eq!(
                failed[0]["reason"],
                "drill failed: Lab interface unreachable through lte: tcp lab.example:2575: connection refused"
            );
            let report = report_of(failed[0]);
            assert!(!report.passed);
            let lab = report
                .apps
                .iter()
                .find(|a| a.app == "Lab interface")
                .expect("lab");
            assert!(!lab.reachable);
            assert!(report.apps.iter().any(|a| a.app == "EHR" && a.reachable));
            assert!(report.switchover_ms.is_some());
            assert!(events.iter().all(|e| e["kind"] != "drill_finished"));
            // Traffic is back on the fibre all the same.
            let failbacks = events.iter().filter(|e| e["kind"] == "failback").count();
            assert_eq!(failbacks, 1);
        }

        #[tokio::test(start_paused = true)]
        async fn a_drill_without_critical_apps_passes_on_the_switchover_alone() {
            let events = drill(&[], Vec::new(), uuid::Uuid::from_u128(44)).await;
            let finished = events
                .iter()
                .find(|e| e["kind"] == "drill_finished")
                .expect("drill finished");
            let report = report_of(finished);
            assert!(report.passed && report.apps.is_empty());
            assert!(report.switchover_ms.is_some());
        }

        /// The demo's register: five applications, three of them behind HTTPS.
        fn five_apps() -> Vec<CriticalApp> {
            let https = |url: &str| vec![AppEndpoint::Https { url: url.into() }];
            let mut apps = register();
            apps.extend([
                CriticalApp {
                    name: "e-Prescribing".into(),
                    tier: AppTier::Tier1,
                    endpoints: https("https://erx.example/status"),
                },
                CriticalApp {
                    name: "Telemedicine".into(),
                    tier: AppTier::Tier2,
                    endpoints: https("https://telehealth.example/"),
                },
                CriticalApp {
                    name: "Patient portal".into(),
                    tier: AppTier::Tier3,
                    endpoints: vec![AppEndpoint::Dns {
                        name: "portal.example".into(),
                    }],
                },
            ]);
            apps
        }

        #[tokio::test(start_paused = true)]
        async fn a_drill_hours_into_a_budgeted_standby_checks_every_app_through_the_backup() {
            // Hours on the default 30 MB budget leave the standby's checks spread out, one of
            // them in flight or next due when traffic moves: the drill still checks them all.
            for settled_secs in [3 * 3600 + 1, 5 * 3600 + 1234] {
                let timeline = [20, settled_secs, 60].map(Duration::from_secs);
                let events =
                    drill_after(&[], five_apps(), uuid::Uuid::from_u128(45), timeline).await;
                let finished = events
                    .iter()
                    .find(|e| e["kind"] == "drill_finished" || e["kind"] == "drill_failed")
                    .expect("the drill ends");
                let report = report_of(finished);
                assert!(
                    report.passed && report.apps.len() == 5,
                    "after {settled_secs} s: {finished}"
                );
            }
        }

        /// In real time the clock moves while the dataplane switches: the checks the drill starts
        /// as traffic moves are still the drill's (they were once stamped before the switch
        /// finished and every application came out "no check finished before the drill ended").
        #[tokio::test]
        async fn a_drill_in_real_time_counts_the_checks_it_starts_as_traffic_moves() {
            let timeline = [3000, 500, 2000].map(Duration::from_millis);
            let events = drill_after(&[], five_apps(), uuid::Uuid::from_u128(46), timeline).await;
            let finished = events
                .iter()
                .find(|e| e["kind"] == "drill_finished" || e["kind"] == "drill_failed")
                .expect("the drill ends");
            let report = report_of(finished);
            assert!(report.passed && report.apps.len() == 5, "{finished}");
        }

        #[tokio::test(start_paused = true)]
        async fn telemetry_carries_each_apps_reachability_per_uplink() {
            let dir = tempfile::tempdir().expect("dir");
            let config = config(dir.path(), &["Lab interface"]);
            let (tx, mut rx) = mpsc::unbounded_channel();
            let started = Instant::now();
            let dataplane = SimulatedDataplane::new(
                started.into_std(),
                vec![SimulatedLink::default(), SimulatedLink::default()],
                3,
                tx,
            );
            let mut driver =
                Driver::new(started, config, dataplane, None, STANDALONE_REPORT_INTERVAL);
            driver
                .apply_policy(
                    started,
                    Policy {
                        version: 1,
                        critical_apps: register(),
                        ..Policy::default()
                    },
                    false,
                )
                .await;
            let until = started + Duration::from_secs(10);
            driver.step(started, Some(Input::Tick)).await;
            while Instant::now() < until {
                let deadline = driver.deadline(until);
                let input = tokio::select! {
                    Some(event) = rx.recv() => driver.observe(Instant::now(), event),
                    _ = tokio::time::sleep_until(deadline) => Some(Input::Tick),
                };
                driver.step(Instant::now(), input).await;
            }
            let telemetry = driver.report(Instant::now());
            let fiber: Vec<_> = telemetry
                .apps
                .iter()
                .filter(|a| a.uplink == "fiber")
                .collect();
            assert_eq!(fiber.len(), 2, "{:?}", telemetry.apps);
            assert!(
                fiber
                    .iter()
                    .all(|a| a.reachable && a.latency_ms.is_some() && a.age_secs <= 10)
            );
        }
    }

    mod tunnels {
        use std::collections::BTreeMap;

        use stayopen_shared::tunnel::{RelayAssignment, TunnelMode, TunnelState};

        use super::*;
        use crate::config::{Outage, SimulatedLink, TunnelSection};

        /// A standalone appliance on simulated fibre and metered LTE with a static relay.
        fn config(state_dir: &std::path::Path, fiber: SimulatedLink) -> ApplianceConfig {
            ApplianceConfig {
                tunnel: TunnelSection {
                    relay: Some(RelayAssignment {
                        relay: "relay-1".into(),
                        endpoint: "203.0.113.50:51820".into(),
                        public_key: "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".into(),
                        inner_address: "100.96.0.2".parse().expect("ip"),
                    }),
                    mode: Some(TunnelMode::Critical),
                    redundant_critical: Some(true),
                    ..TunnelSection::default()
                },
                ..standalone_config(
                    state_dir,
                    "SO-TUN",
                    BTreeMap::from([("fiber".into(), fiber)]),
                )
            }
        }

        /// Runs the agent's driver on simulated links for `span`; returns it and its events.
        async fn run_for(
            config: ApplianceConfig,
            span: Duration,
        ) -> (Driver<SimulatedDataplane>, Vec<serde_json::Value>) {
            let events_path = config.appliance.state_dir.join("events.jsonl");
            let links = {
                let DataplaneSection::Simulated { links } = &config.dataplane else {
                    unreachable!("simulated")
                };
                vec![links["fiber"].clone(), SimulatedLink::default()]
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            let started = Instant::now();
            let dataplane = SimulatedDataplane::new(started.into_std(), links, 5, tx);
            let events = EventsLog::open(&events_path).expect("events log");
            let mut driver = Driver::new(
                started,
                config,
                dataplane,
                Some(events),
                STANDALONE_REPORT_INTERVAL,
            );
            let until = started + span;
            driver.step(started, Some(Input::Tick)).await;
            while Instant::now() < until {
                let deadline = driver.deadline(until);
                let input = tokio::select! {
                    Some(event) = rx.recv() => driver.observe(Instant::now(), event),
                    _ = tokio::time::sleep_until(deadline) => Some(Input::Tick),
                };
                driver.step(Instant::now(), input).await;
            }
            let events = std::fs::read_to_string(&events_path)
                .expect("events")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect();
            (driver, events)
        }

        fn kinds(events: &[serde_json::Value]) -> Vec<String> {
            events
                .iter()
                .filter_map(|e| e["kind"].as_str())
                .filter(|k| k.starts_with("tunnel_"))
                .map(str::to_owned)
                .collect()
        }

        #[tokio::test(start_paused = true)]
        async fn with_a_static_relay_the_tunnel_comes_up_and_reports_redundant_bytes_on_the_backup()
        {
            let dir = tempfile::tempdir().expect("dir");
            let (mut driver, events) = run_for(
                config(dir.path(), SimulatedLink::default()),
                Duration::from_secs(20),
            )
            .await;
            let report = driver
                .report(Instant::now())
                .tunnel
                .expect("the tunnel is reported");
            assert_eq!(report.state, TunnelState::Up);
            assert_eq!(report.mode, TunnelMode::Critical);
            assert_eq!(report.relay.as_deref(), Some("relay-1"));
            assert!(report.redundant, "critical flows are duplicated onto lte");
            assert!(
                report
                    .redundant_bytes
                    .get("lte")
                    .is_some_and(|b| *b > 100_000),
                "{:?}",
                report.redundant_bytes
            );
            assert!(report.tunnel_bytes > 0);
            assert!(kinds(&events).is_empty(), "{events:?}");
            assert!(
                RedundantLedger::load(dir.path()).of("lte") > 0,
                "the month's duplicates are kept in the state directory"
            );
            let status = driver.status(Instant::now());
            assert_eq!(
                status.tunnel.map(|t| t.state),
                Some(TunnelState::Up),
                "status shows the tunnel"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_relay_unreachable_through_the_active_link_falls_back_and_a_failover_restores_it()
        {
            let dir = tempfile::tempdir().expect("dir");
            let fiber = SimulatedLink {
                relay_unreachable: true,
                outages: vec![Outage {
                    start_secs: 15,
                    duration_secs: 60,
                    kind: Default::default(),
                }],
                ..SimulatedLink::default()
            };
            let (mut driver, events) =
                run_for(config(dir.path(), fiber), Duration::from_secs(25)).await;
            assert_eq!(
                kinds(&events),
                vec!["tunnel_fallback".to_owned(), "tunnel_restored".to_owned()],
                "{events:?}"
            );
            let report = driver.report(Instant::now()).tunnel.expect("reported");
            assert_eq!(
                report.state,
                TunnelState::Up,
                "through lte after the failover"
            );
            assert!(
                !report.redundant,
                "no other healthy uplink to duplicate onto"
            );
        }
    }

    #[test]
    fn a_certificate_past_its_renewal_moment_is_renewed_at_once() {
        assert_eq!(renewal_step(at(0), at(1), HOUR), RenewalStep::Renew);
        assert_eq!(
            renewal_step(at(0), at(400 * 86_400), HOUR),
            RenewalStep::Renew,
            "long expired"
        );
    }

    #[test]
    fn before_its_renewal_moment_the_agent_looks_again_just_after_it() {
        assert_eq!(
            renewal_step(at(600), at(0), HOUR),
            RenewalStep::LookAgainIn(Duration::from_secs(601))
        );
        assert_eq!(
            renewal_step(at(0), at(0), HOUR),
            RenewalStep::LookAgainIn(Duration::from_secs(1)),
            "due only after the moment"
        );
    }

    #[test]
    fn a_renewal_months_away_is_still_looked_at_every_hour() {
        assert_eq!(
            renewal_step(at(100 * 86_400), at(0), HOUR),
            RenewalStep::LookAgainIn(HOUR)
        );
    }

    fn renewer(now: Instant) -> Renewer {
        Renewer {
            identity: unreadable_identity(),
            http: reqwest::Client::new(),
            api_url: "http://127.0.0.1:9".into(),
            state_dir: PathBuf::from("/nonexistent"),
            outbox_max_bytes: 1024 * 1024,
            renewal: Renewal::default(),
            next_check: now,
            attempt: None,
        }
    }

    /// An identity whose certificate cannot be read, so it is always due.
    fn unreadable_identity() -> Identity {
        Identity {
            appliance_id: stayopen_shared::ApplianceId(uuid::Uuid::from_u128(1)),
            practice_id: stayopen_shared::PracticeId(uuid::Uuid::from_u128(2)),
            site_id: stayopen_shared::SiteId(uuid::Uuid::from_u128(3)),
            mqtt: stayopen_shared::api::MqttCredentials {
                host: "127.0.0.1".into(),
                port: 8883,
                username: "u".into(),
                password: "p".into(),
            },
            client_cert_pem: "not a certificate".into(),
            ca_cert_pem: String::new(),
            private_key_pem: String::new(),
            wireguard_registered: None,
        }
    }

    #[test]
    fn a_failed_renewal_is_tried_again_an_hour_later_with_the_current_identity() {
        let now = Instant::now();
        let mut renewer = renewer(now);
        let failed = Err(RenewalError::TimedOut(Duration::from_secs(20)));
        assert_eq!(renewer.settle(failed, at(0), now), None);
        assert_eq!(renewer.next_check(), Some(now + HOUR));
        assert_eq!(renewer.identity, unreadable_identity());
    }

    #[test]
    fn a_renewed_certificate_that_is_due_at_once_is_not_renewed_again_in_a_loop() {
        let now = Instant::now();
        let mut renewer = renewer(now);
        let renewed = Identity {
            private_key_pem: "new key".into(),
            ..unreadable_identity()
        };
        assert_eq!(
            renewer.settle(Ok(renewed.clone()), at(0), now),
            Some(renewed.clone())
        );
        assert_eq!(renewer.identity, renewed, "the renewed identity is in use");
        assert_eq!(renewer.next_check(), Some(now + HOUR));
    }
}
