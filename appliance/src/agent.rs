//! The driver: owns the clock, the dataplane and the cloud link; the [`Engine`] decides.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::Telemetry;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cloud_link::CloudLink;
use crate::config::{ApplianceConfig, DataplaneSection};
use crate::dataplane::{Dataplane, SimulatedDataplane};
use crate::engine::{Action, Engine, Input, UplinkSpec};
use crate::events_log::EventsLog;
use crate::identity::{self, IdentityError};
use crate::uplink_report::Window;

/// Simulated links answer for this many virtual targets when the config lists none.
const SIMULATED_TARGETS: usize = 3;
/// The first telemetry goes out soon after start so a newly installed box shows up at once.
const FIRST_TELEMETRY_AFTER: Duration = Duration::from_secs(2);
/// Default failback clean period until the cloud pushes a policy.
const FAILBACK_CLEAN_PERIOD: Duration = Duration::from_secs(30);

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
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: ApplianceConfig,
    pub events_file: Option<PathBuf>,
    /// Seeds the simulated dataplane's randomness.
    pub seed: u64,
}

struct Driver<D: Dataplane> {
    engine: Engine,
    dataplane: D,
    windows: Vec<Window>,
    events: Option<EventsLog>,
    cloud: Option<CloudLink>,
}

impl<D: Dataplane> Driver<D> {
    async fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Activate(uplink) => {
                    if let Err(e) = self
                        .dataplane
                        .activate(now.into_std(), uplink.as_deref())
                        .await
                    {
                        tracing::error!(error = %e, "cannot switch uplink");
                    }
                }
                Action::Emit(event) => self.emit(event),
            }
        }
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

    async fn probe_all(&mut self, now: Instant, targets: usize) {
        for i in 0..self.engine.specs().len() {
            let name = self.engine.specs()[i].name.clone();
            let round = self
                .dataplane
                .probe_round(now.into_std(), &name, targets)
                .await;
            self.windows[i].record(&round);
            let actions = self.engine.handle(
                now.into_std(),
                Input::ProbeRound {
                    uplink: i,
                    answered: round.answered,
                    sent: round.sent,
                },
            );
            self.apply(now, actions).await;
        }
    }

    fn telemetry(&mut self, now: Instant) -> Telemetry {
        let mut uplinks = Vec::with_capacity(self.windows.len());
        for i in 0..self.windows.len() {
            let spec = self.engine.specs()[i].clone();
            let counters = self.dataplane.counters(now.into_std(), &spec.name);
            let health = self.engine.health(i).as_wire();
            uplinks.push(self.windows[i].take_report(&spec, health, counters));
        }
        Telemetry {
            active_uplink: self.engine.active().map(str::to_owned),
            uplinks,
        }
    }
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(
    options: AgentOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let config = options.config;
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
            let enrol = identity::load_or_enroll(
                &config.appliance.state_dir,
                &http,
                &cloud.api_url,
                &cloud.enrollment_token,
                hardware,
            );
            let identity = tokio::select! {
                identity = enrol => identity?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            };
            Some((
                CloudLink::start(&identity),
                Duration::from_secs(u64::from(cloud.telemetry_interval_secs)),
            ))
        }
        None => None,
    };
    let telemetry_interval = cloud.as_ref().map(|(_, interval)| *interval);
    let cloud = cloud.map(|(link, _)| link);

    let started = Instant::now();
    let specs: Vec<UplinkSpec> = config
        .uplinks
        .iter()
        .map(|u| UplinkSpec {
            name: u.name.clone(),
            priority: u.priority,
            metered: u.metered,
        })
        .collect();
    let DataplaneSection::Simulated { links } = &config.dataplane;
    let links: BTreeMap<_, _> = config
        .uplinks
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                links.get(&u.name).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let targets = if config.probes.targets.is_empty() {
        SIMULATED_TARGETS
    } else {
        config.probes.targets.len()
    };
    let mut driver = Driver {
        windows: vec![Window::default(); specs.len()],
        engine: Engine::new(specs, FAILBACK_CLEAN_PERIOD),
        dataplane: SimulatedDataplane::new(started.into_std(), links, options.seed),
        events,
        cloud,
    };
    driver.emit(ApplianceEvent {
        kind: EventKind::AgentStarted,
        uplink: None,
        from: None,
        to: None,
        reason: format!("stayopen-appliance {} started", crate::AGENT_VERSION),
    });

    let probe_interval = Duration::from_millis(u64::from(config.probes.interval_ms));
    let mut next_probe = started;
    let mut next_telemetry = started + FIRST_TELEMETRY_AFTER;
    loop {
        let mut deadline = next_probe;
        if telemetry_interval.is_some() {
            deadline = deadline.min(next_telemetry);
        }
        if let Some(engine_deadline) = driver.engine.next_deadline() {
            deadline = deadline.min(Instant::from_std(engine_deadline));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        let now = Instant::now();
        if now >= next_probe {
            driver.probe_all(now, targets).await;
            next_probe = (next_probe + probe_interval).max(now);
        }
        if driver
            .engine
            .next_deadline()
            .is_some_and(|d| d <= now.into_std())
        {
            let actions = driver.engine.handle(now.into_std(), Input::Tick);
            driver.apply(now, actions).await;
        }
        if let Some(interval) = telemetry_interval
            && now >= next_telemetry
        {
            let telemetry = driver.telemetry(now);
            if let Some(cloud) = &driver.cloud {
                cloud.publish_telemetry(Utc::now(), telemetry);
            }
            next_telemetry = (next_telemetry + interval).max(now);
        }
    }
    if let Some(cloud) = &driver.cloud {
        cloud.shutdown().await;
    }
    Ok(())
}
