//! The load generator: N light simulated appliances in one process against a real cloud.
//!
//! Each simulated appliance is not an agent (no engine, no dataplane, no outbox on disk) but
//! speaks to the cloud exactly as one does: it enrols through `POST /api/v1/enroll` with a token
//! and its own key ([`stayopen_appliance::identity::enroll`]), keeps an MQTT session over TLS
//! with its enrolled certificate and the agent's own connection options
//! ([`stayopen_appliance::cloud_link::mqtt_options`]: key proof in the password, last will, clean
//! session, QoS 1), announces its presence, publishes telemetry at a cadence in the agent's
//! envelope, and reports injected failovers (a `failover` event, a `failback` some seconds later)
//! as the agent's [`ApplianceEvent`]s.
//!
//! Design: the run has four phases, each measured.
//! 1. **Enrolment storm**: every appliance enrols, at most `enrol_concurrency` at once
//!    (enrolments/s, p50/p99 latency, refusals by reason).
//! 2. **Connect storm**: every enrolled appliance opens its session, at most
//!    `connect_concurrency` handshakes at once; the storm lasts until all are connected.
//! 3. **Steady phase** (`duration`): telemetry at the cadence (each appliance at its own offset in
//!    the period, so the fleet does not publish in lockstep) and failovers at a fleet-wide rate.
//! 4. **Drain**: publishing stops (an appliance still on its backup fails back), and the run
//!    waits until the cloud has acknowledged every message as stored, then says goodbye (offline
//!    presence) and disconnects cleanly.
//!
//! Every message is accounted for in a [`Ledger`] (sans-IO, one per appliance): sent, acknowledged
//! by the broker (PUBACK, matched to its message through rumqttc's packet ids) and acknowledged
//! by the cloud as stored (the `acks` channel, by message id). The [`Report`] carries the counts
//! and every message id, so a test or the benchmark compares them with the database.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use stayopen_appliance::cloud_link::{self, Inbound};
use stayopen_appliance::identity::{self, Identity, Proof};
use stayopen_shared::api::HardwareIdentity;
use stayopen_shared::delivery::Ack;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth, UplinkTelemetry};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// Requests waiting in one appliance's rumqttc channel; a publish that finds it full is counted
/// as not queued (the appliance has no outbox to keep it in).
const REQUEST_CAPACITY: usize = 64;
/// Enrolment attempts per appliance while the cloud is unreachable or overloaded (5xx, timeouts).
const ENROL_ATTEMPTS: u32 = 5;
/// Longest pause between reconnection attempts of one session (doubling from 250 ms).
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// At the end, how long an appliance waits for its goodbye to go out before it gives up.
const GOODBYE_DEADLINE: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Base URL of the cloud API.
    pub api_url: String,
    /// Enrolment tokens; appliance `i` uses token `i % len` (a token enrols at most 1000).
    pub enrollment_tokens: Vec<String>,
    pub appliances: usize,
    /// Index of the first appliance, so several generators (or runs) can share one cloud without
    /// colliding hardware identities.
    pub first_index: usize,
    /// Enrolments in flight at once.
    pub enrol_concurrency: usize,
    /// TLS handshakes and MQTT CONNECTs in flight at once.
    pub connect_concurrency: usize,
    /// Telemetry cadence of every appliance.
    pub telemetry_interval: Duration,
    /// Failovers per second across the fleet; 0 injects none.
    pub failovers_per_sec: f64,
    /// How long an appliance stays on its backup before it fails back.
    pub failback_after: Duration,
    /// Length of the steady phase.
    pub duration: Duration,
    /// The connect storm's limit: the steady phase starts after it with whatever connected.
    pub connect_timeout: Duration,
    /// How long the drain waits for the cloud's last acknowledgements.
    pub drain_timeout: Duration,
}

impl LoadOptions {
    /// Options for `appliances` appliances with the agent's defaults (the default policy's 10 s
    /// telemetry cadence), no failovers and a one-minute steady phase.
    pub fn new(api_url: &str, enrollment_tokens: Vec<String>, appliances: usize) -> Self {
        Self {
            api_url: api_url.to_owned(),
            enrollment_tokens,
            appliances,
            first_index: 0,
            enrol_concurrency: 32,
            connect_concurrency: 256,
            telemetry_interval: Duration::from_secs(10),
            failovers_per_sec: 0.0,
            failback_after: Duration::from_secs(5),
            duration: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(60),
        }
    }

    /// Refuses options that cannot run, with a sentence saying why.
    pub fn validate(&self) -> Result<(), String> {
        if self.appliances == 0 {
            return Err("--appliances must be at least 1".into());
        }
        if self.enrollment_tokens.is_empty() || self.enrollment_tokens.iter().any(|t| t.is_empty())
        {
            return Err("at least one non-empty enrolment token is needed".into());
        }
        if self.enrol_concurrency == 0 || self.connect_concurrency == 0 {
            return Err("concurrency limits must be at least 1".into());
        }
        if self.telemetry_interval < Duration::from_millis(100) {
            return Err("the telemetry interval must be at least 100 ms".into());
        }
        if !(self.failovers_per_sec.is_finite() && self.failovers_per_sec >= 0.0) {
            return Err(format!(
                "--failovers-per-sec must be a number of at least 0, not {}",
                self.failovers_per_sec
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration-secs must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("no appliance enrolled: {0}")]
    NothingEnrolled(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The hardware identity of simulated appliance `index`: serial `SO-LOAD-nnnnnn` and a locally
/// administered MAC `02:4c:47:…` carrying the index (distinct from the fleet simulator's).
pub fn hardware(index: usize) -> HardwareIdentity {
    HardwareIdentity {
        serial: format!("SO-LOAD-{index:06}"),
        mac: format!(
            "02:4c:47:{:02x}:{:02x}:{:02x}",
            (index >> 16) & 0xff,
            (index >> 8) & 0xff,
            index & 0xff
        ),
        model: "StayOpen load generator".to_owned(),
    }
}

/// What one appliance publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Telemetry,
    Event,
    /// Online and offline presence: state, not record (the cloud neither stores it by id nor
    /// acknowledges it), so it is counted but not compared with the database.
    Presence,
}

/// One message sent, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub id: MessageId,
    pub appliance_id: ApplianceId,
    pub kind: MessageKind,
    /// The broker answered its PUBACK.
    pub broker_acknowledged: bool,
    /// The cloud acknowledged it as stored (after its commit).
    pub cloud_stored: bool,
    /// The cloud acknowledged it as refused for good.
    pub cloud_refused: bool,
}

/// One appliance's account of its messages. Sans-IO: the session task feeds it what rumqttc
/// reports, in order.
///
/// rumqttc does not say which packet id it gave a publish, but it hands requests to the network
/// in the order they were queued, announcing each as `Outgoing::Publish(pkid)`; a publish it
/// sends again after a reconnection keeps its packet id. So the ledger keeps the queued messages
/// in order and gives each new packet id the oldest one; a packet id already in flight is a
/// resend.
#[derive(Debug)]
pub struct Ledger {
    appliance_id: ApplianceId,
    messages: Vec<SentMessage>,
    by_id: HashMap<MessageId, usize>,
    queued: VecDeque<usize>,
    in_flight: HashMap<u16, usize>,
    /// Resends rumqttc made after a reconnection.
    pub resent: u64,
    /// PUBACKs for no publish in flight, and cloud acknowledgements naming no message of ours.
    pub unmatched_acks: u64,
    /// Cloud acknowledgements of a message already acknowledged.
    pub repeated_acks: u64,
    /// Publishes rumqttc's request channel had no room for.
    pub not_queued: BTreeMap<&'static str, u64>,
}

/// What a new acknowledgement changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Telemetry and events the cloud acknowledged (stored or refused) for the first time.
    pub records: usize,
}

impl Ledger {
    pub fn new(appliance_id: ApplianceId) -> Self {
        Self {
            appliance_id,
            messages: Vec::new(),
            by_id: HashMap::new(),
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            resent: 0,
            unmatched_acks: 0,
            repeated_acks: 0,
            not_queued: BTreeMap::new(),
        }
    }

    /// A publish was handed to rumqttc.
    pub fn queued(&mut self, id: MessageId, kind: MessageKind) {
        let index = self.messages.len();
        self.messages.push(SentMessage {
            id,
            appliance_id: self.appliance_id,
            kind,
            broker_acknowledged: false,
            cloud_stored: false,
            cloud_refused: false,
        });
        self.by_id.insert(id, index);
        self.queued.push_back(index);
    }

    /// A publish rumqttc had no room for.
    pub fn not_queued(&mut self, kind: MessageKind) {
        *self.not_queued.entry(kind_name(kind)).or_default() += 1;
    }

    /// rumqttc wrote a publish with packet id `pkid`.
    pub fn outgoing_publish(&mut self, pkid: u16) {
        if self.in_flight.contains_key(&pkid) {
            self.resent += 1;
            return;
        }
        if let Some(index) = self.queued.pop_front() {
            self.in_flight.insert(pkid, index);
        }
    }

    /// The broker acknowledged packet `pkid`.
    pub fn puback(&mut self, pkid: u16) {
        match self.in_flight.remove(&pkid) {
            Some(index) => self.messages[index].broker_acknowledged = true,
            None => self.unmatched_acks += 1,
        }
    }

    /// The cloud's acknowledgement on the `acks` channel.
    pub fn cloud_ack(&mut self, ack: &Ack) -> Settled {
        let mut settled = Settled::default();
        for (ids, stored) in [(&ack.stored, true), (&ack.rejected, false)] {
            for id in ids {
                let Some(&index) = self.by_id.get(id) else {
                    self.unmatched_acks += 1;
                    continue;
                };
                let message = &mut self.messages[index];
                if message.cloud_stored || message.cloud_refused {
                    self.repeated_acks += 1;
                    continue;
                }
                if stored {
                    message.cloud_stored = true;
                } else {
                    message.cloud_refused = true;
                }
                if message.kind != MessageKind::Presence {
                    settled.records += 1;
                }
            }
        }
        settled
    }

    /// Every message queued so far, in order, with what became of it.
    pub fn messages(&self) -> &[SentMessage] {
        &self.messages
    }
}

fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Telemetry => "telemetry",
        MessageKind::Event => "event",
        MessageKind::Presence => "presence",
    }
}

/// The telemetry of a simulated appliance: a fibre primary and a metered LTE backup, the active
/// one as the injected failovers left it, cumulative counters growing with `tick`.
pub fn telemetry_body(index: usize, on_backup: bool, tick: u64) -> Telemetry {
    let i = index as u64;
    let uplink = |name: &str, priority: u8, up: bool, rtt: f64, bytes: u64| UplinkTelemetry {
        name: name.to_owned(),
        priority,
        metered: priority > 0,
        health: if up {
            UplinkHealth::Up
        } else {
            UplinkHealth::Down
        },
        rtt_ms: up.then_some(rtt),
        loss_pct: if up { 0.2 } else { 100.0 },
        rx_bytes: bytes * tick,
        tx_bytes: bytes / 4 * tick,
        cellular: None,
    };
    Telemetry {
        active_uplink: Some(if on_backup { "lte" } else { "fiber" }.to_owned()),
        uplinks: vec![
            uplink(
                "fiber",
                0,
                !on_backup,
                8.0 + (i % 7) as f64 * 2.5,
                1_500_000,
            ),
            uplink("lte", 1, true, 45.0 + (i % 4) as f64 * 6.0, 20_000),
        ],
        policy_version: None,
        samples: None,
        outbox: None,
        apps: Vec::new(),
        tunnel: None,
    }
}

/// The agent's failover (fibre to LTE) or failback (LTE to fibre) event.
pub fn switch_event(failover: bool) -> ApplianceEvent {
    let (kind, from, to, reason) = if failover {
        (
            EventKind::Failover,
            "fiber",
            "lte",
            "fiber stopped answering (load generator)",
        )
    } else {
        (
            EventKind::Failback,
            "lte",
            "fiber",
            "fiber healthy again (load generator)",
        )
    };
    ApplianceEvent {
        kind,
        uplink: None,
        from: Some(from.to_owned()),
        to: Some(to.to_owned()),
        reason: reason.to_owned(),
        drill: None,
    }
}

/// The value at percentile `p` (0–100) of `sorted` by nearest rank; zero for no values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A process's resident memory and CPU time, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub cpu_secs: f64,
}

/// Linux reports CPU times in `/proc/*/stat` in USER_HZ ticks, 100 a second on every
/// architecture the product runs on.
const USER_HZ: f64 = 100.0;

/// Resident and peak resident memory (KiB) from the text of `/proc/PID/status`.
pub fn parse_status_rss_kib(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU ticks from the text of `/proc/PID/stat` (fields 14 and 15; the command
/// name in parentheses may hold spaces, so fields are counted after its closing parenthesis).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime (14) is index 11, stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit on open files from the text of `/proc/PID/limits`.
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's (`pid` `None`) or another's resident memory and CPU time.
pub fn process_usage(pid: Option<u32>) -> Option<ProcessUsage> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let (rss, peak) = parse_status_rss_kib(&status)?;
    let ticks = parse_stat_cpu_ticks(&stat)?;
    Some(ProcessUsage {
        rss_mib: rss as f64 / 1024.0,
        peak_rss_mib: peak as f64 / 1024.0,
        cpu_secs: ticks as f64 / USER_HZ,
    })
}

/// File descriptors a run of `appliances` needs: one socket each, the enrolment connections and
/// the runtime's own.
pub fn files_needed(appliances: usize, enrol_concurrency: usize) -> u64 {
    (appliances + enrol_concurrency + 64) as u64
}

/// The open-files limit of this process, if `/proc` says.
pub fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The enrolment storm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolmentReport {
    pub requested: usize,
    pub enrolled: usize,
    /// Refusals and failures by reason (the cloud's error code, or `unreachable`).
    pub failed: BTreeMap<String, u64>,
    pub secs: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The connect storm and the sessions' lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Appliances whose session connected at least once.
    pub connected: usize,
    /// From the first handshake to the last appliance connected; `None` when not all did within
    /// the connect timeout.
    pub all_connected_secs: Option<f64>,
    /// Per session: from its turn to connect to the broker's CONNACK.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Failed connection attempts (refused, reset, timed out), reconnections included.
    pub failed_attempts: u64,
    /// Sessions lost after they had connected.
    pub lost: u64,
}

/// The counts of one kind of message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    pub sent: u64,
    pub broker_acknowledged: u64,
    pub cloud_stored: u64,
    pub cloud_refused: u64,
    pub not_queued: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub appliances: usize,
    pub enrolment: EnrolmentReport,
    pub connect: ConnectReport,
    pub steady_secs: f64,
    /// The steady phase's bounds, to count in PostgreSQL what was stored during it.
    pub steady_started_at: DateTime<Utc>,
    pub steady_ended_at: DateTime<Utc>,
    /// Telemetry and events queued during the steady phase, per second: the offered load.
    pub sent_per_sec_steady: f64,
    pub telemetry: KindCounts,
    pub events: KindCounts,
    pub presence: KindCounts,
    pub failovers: u64,
    pub failbacks: u64,
    /// Telemetry and events the cloud acknowledged as stored during the steady phase, per second.
    /// The cloud batches its acknowledgements while its ingest has a backlog, so under overload
    /// this trails what was stored; PostgreSQL's `received_at` in the steady bounds says exactly.
    pub stored_per_sec_steady: f64,
    /// The drain ended with every telemetry message and event acknowledged by the cloud.
    pub drained: bool,
    pub drain_secs: f64,
    /// rumqttc's resends after reconnections, and acknowledgements that matched nothing (PUBACKs
    /// or cloud acks) or repeated one.
    pub resent: u64,
    pub unmatched_acks: u64,
    pub repeated_acks: u64,
    /// This process at the end of the run.
    pub process: Option<ProcessUsage>,
    pub appliance_ids: Vec<ApplianceId>,
    /// Every message sent, with what became of it.
    pub messages: Vec<SentMessage>,
}

impl Report {
    /// The records (telemetry and events) the broker acknowledged.
    pub fn broker_acknowledged_records(&self) -> impl Iterator<Item = &SentMessage> {
        self.messages
            .iter()
            .filter(|m| m.kind != MessageKind::Presence && m.broker_acknowledged)
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let e = &self.enrolment;
        let c = &self.connect;
        let counts = |name: &str, k: &KindCounts| {
            format!(
                "{name}: {} sent, {} acknowledged by the broker, {} stored by the cloud, {} refused, {} not queued",
                k.sent, k.broker_acknowledged, k.cloud_stored, k.cloud_refused, k.not_queued
            )
        };
        let mut lines = vec![
            format!(
                "enrolment storm: {} of {} enrolled in {:.1} s ({:.1}/s, p50 {:.0} ms, p99 {:.0} ms){}",
                e.enrolled,
                e.requested,
                e.secs,
                e.per_sec,
                e.p50_ms,
                e.p99_ms,
                if e.failed.is_empty() {
                    String::new()
                } else {
                    format!(", failed: {:?}", e.failed)
                }
            ),
            format!(
                "connect storm: {} connected, {} (p50 {:.0} ms, p99 {:.0} ms per session), {} failed attempts, {} sessions lost",
                c.connected,
                c.all_connected_secs.map_or_else(
                    || "not all within the timeout".to_owned(),
                    |s| format!("all in {s:.1} s")
                ),
                c.p50_ms,
                c.p99_ms,
                c.failed_attempts,
                c.lost
            ),
            format!(
                "steady phase: {:.1} s, {:.1} messages/s sent, {:.1} messages/s acknowledged as stored, {} failovers, {} failbacks",
                self.steady_secs,
                self.sent_per_sec_steady,
                self.stored_per_sec_steady,
                self.failovers,
                self.failbacks
            ),
            counts("telemetry", &self.telemetry),
            counts("events", &self.events),
            counts("presence", &self.presence),
            format!(
                "drain: {} in {:.1} s; {} resent, {} unmatched and {} repeated acknowledgements",
                if self.drained {
                    "everything stored"
                } else {
                    "NOT everything acknowledged"
                },
                self.drain_secs,
                self.resent,
                self.unmatched_acks,
                self.repeated_acks
            ),
        ];
        if let Some(p) = &self.process {
            lines.push(format!(
                "load generator: {:.0} MiB resident (peak {:.0} MiB), {:.1} s CPU",
                p.rss_mib, p.peak_rss_mib, p.cpu_secs
            ));
        }
        lines.join("\n")
    }
}

/// The phases the sessions go through, announced by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    /// Publishing; telemetry cadence counts from this instant.
    Steady(Instant),
    /// No new messages; those on their backup fail back; waiting for acknowledgements.
    Drain,
    /// Goodbye and disconnect.
    Stop,
}

/// What the sessions share with the driver.
#[derive(Debug, Default)]
struct Shared {
    connected_once: AtomicUsize,
    failed_attempts: AtomicU64,
    lost: AtomicU64,
    /// Telemetry and events queued and not yet acknowledged by the cloud.
    outstanding: AtomicU64,
    steady: AtomicBool,
    stored_in_steady: AtomicU64,
    sent_in_steady: AtomicU64,
}

/// One session's result.
#[derive(Debug)]
struct SessionEnd {
    ledger: Ledger,
    connect_latency: Option<Duration>,
    failovers: u64,
    failbacks: u64,
}

/// Enrols the fleet, runs it and reports. `stop` turning true ends the steady phase early (the
/// drain still runs).
pub async fn run(options: LoadOptions, stop: watch::Receiver<bool>) -> Result<Report, LoadError> {
    options.validate().map_err(LoadError::Options)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(options.enrol_concurrency)
        .build()?;

    // 1. The enrolment storm.
    let (identities, enrolment) = enrol_fleet(&options, &http).await;
    tracing::info!(
        enrolled = enrolment.enrolled,
        secs = enrolment.secs,
        per_sec = enrolment.per_sec,
        "enrolment storm done"
    );
    if identities.is_empty() {
        return Err(LoadError::NothingEnrolled(format!(
            "{:?}",
            enrolment.failed
        )));
    }

    // 2. The connect storm.
    let shared = Arc::new(Shared::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let gate = Arc::new(Semaphore::new(options.connect_concurrency));
    let mut sessions = tokio::task::JoinSet::new();
    let mut failover_senders = Vec::with_capacity(identities.len());
    let appliance_ids: Vec<ApplianceId> = identities.iter().map(|(_, i)| i.appliance_id).collect();
    let connect_started = Instant::now();
    for (index, identity) in identities {
        let (tx, rx) = mpsc::channel(4);
        failover_senders.push(tx);
        sessions.spawn(session(
            index,
            identity,
            SessionContext {
                shared: shared.clone(),
                gate: gate.clone(),
                phase: phase_rx.clone(),
                telemetry_interval: options.telemetry_interval,
                failback_after: options.failback_after,
            },
            rx,
        ));
    }
    let fleet = appliance_ids.len();
    let connect_deadline = connect_started + options.connect_timeout;
    let all_connected_secs = loop {
        if shared.connected_once.load(Ordering::Relaxed) >= fleet {
            break Some(connect_started.elapsed().as_secs_f64());
        }
        if Instant::now() >= connect_deadline || *stop.borrow() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tracing::info!(
        connected = shared.connected_once.load(Ordering::Relaxed),
        ?all_connected_secs,
        "connect storm done"
    );

    // 3. The steady phase.
    let steady_started = Instant::now();
    let steady_started_at = Utc::now();
    shared.steady.store(true, Ordering::Relaxed);
    phase_tx.send_replace(Phase::Steady(steady_started));
    let injector = tokio::spawn(inject_failovers(
        failover_senders,
        options.failovers_per_sec,
        options.duration,
    ));
    let mut stop_wait = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(options.duration) => {}
        () = stopped(&mut stop_wait) => tracing::info!("stopping early"),
    }
    injector.abort();
    let steady_secs = steady_started.elapsed().as_secs_f64();
    let steady_ended_at = Utc::now();
    shared.steady.store(false, Ordering::Relaxed);
    let stored_in_steady = shared.stored_in_steady.load(Ordering::Relaxed);

    // 4. The drain.
    let drain_started = Instant::now();
    phase_tx.send_replace(Phase::Drain);
    let drain_deadline = drain_started + options.drain_timeout;
    // Let the failbacks of the appliances still on their backup be queued first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drained = loop {
        if shared.outstanding.load(Ordering::Relaxed) == 0 {
            break true;
        }
        if Instant::now() >= drain_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let drain_secs = drain_started.elapsed().as_secs_f64();
    phase_tx.send_replace(Phase::Stop);
    // Sessions still waiting for their turn to connect give up.
    gate.close();

    let mut ends = Vec::with_capacity(fleet);
    while let Some(joined) = sessions.join_next().await {
        match joined {
            Ok(end) => ends.push(end),
            Err(e) => tracing::error!(error = %e, "a simulated appliance's task failed"),
        }
    }
    Ok(assemble(
        &options,
        enrolment,
        ends,
        Assembly {
            shared: &shared,
            all_connected_secs,
            steady_secs,
            steady_started_at,
            steady_ended_at,
            stored_in_steady,
            drained,
            drain_secs,
            appliance_ids,
        },
    ))
}

struct Assembly<'a> {
    shared: &'a Shared,
    all_connected_secs: Option<f64>,
    steady_secs: f64,
    steady_started_at: DateTime<Utc>,
    steady_ended_at: DateTime<Utc>,
    stored_in_steady: u64,
    drained: bool,
    drain_secs: f64,
    appliance_ids: Vec<ApplianceId>,
}

fn assemble(
    options: &LoadOptions,
    enrolment: EnrolmentReport,
    ends: Vec<SessionEnd>,
    run: Assembly<'_>,
) -> Report {
    let mut latencies: Vec<Duration> = ends.iter().filter_map(|e| e.connect_latency).collect();
    latencies.sort();
    let mut counts: BTreeMap<&'static str, KindCounts> = BTreeMap::new();
    let (mut resent, mut unmatched, mut repeated, mut failovers, mut failbacks) = (0, 0, 0, 0, 0);
    let mut messages = Vec::new();
    for end in ends {
        resent += end.ledger.resent;
        unmatched += end.ledger.unmatched_acks;
        repeated += end.ledger.repeated_acks;
        failovers += end.failovers;
        failbacks += end.failbacks;
        for (kind, n) in &end.ledger.not_queued {
            counts.entry(*kind).or_default().not_queued += n;
        }
        for m in end.ledger.messages() {
            let c = counts.entry(kind_name(m.kind)).or_default();
            c.sent += 1;
            c.broker_acknowledged += u64::from(m.broker_acknowledged);
            c.cloud_stored += u64::from(m.cloud_stored);
            c.cloud_refused += u64::from(m.cloud_refused);
        }
        messages.extend_from_slice(end.ledger.messages());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per_sec = |n: u64| {
        if run.steady_secs > 0.0 {
            n as f64 / run.steady_secs
        } else {
            0.0
        }
    };
    Report {
        appliances: options.appliances,
        enrolment,
        connect: ConnectReport {
            connected: run.shared.connected_once.load(Ordering::Relaxed),
            all_connected_secs: run.all_connected_secs,
            p50_ms: ms(percentile(&latencies, 50.0)),
            p99_ms: ms(percentile(&latencies, 99.0)),
            failed_attempts: run.shared.failed_attempts.load(Ordering::Relaxed),
            lost: run.shared.lost.load(Ordering::Relaxed),
        },
        steady_secs: run.steady_secs,
        steady_started_at: run.steady_started_at,
        steady_ended_at: run.steady_ended_at,
        sent_per_sec_steady: per_sec(run.shared.sent_in_steady.load(Ordering::Relaxed)),
        telemetry: counts.remove("telemetry").unwrap_or_default(),
        events: counts.remove("event").unwrap_or_default(),
        presence: counts.remove("presence").unwrap_or_default(),
        failovers,
        failbacks,
        stored_per_sec_steady: per_sec(run.stored_in_steady),
        drained: run.drained,
        drain_secs: run.drain_secs,
        resent,
        unmatched_acks: unmatched,
        repeated_acks: repeated,
        process: process_usage(None),
        appliance_ids: run.appliance_ids,
        messages,
    }
}

/// Resolves when `stop` turns true; never when its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Enrols every appliance, at most `enrol_concurrency` at once. Returns the enrolled appliances
/// (index and identity, in index order) and the storm's figures.
async fn enrol_fleet(
    options: &LoadOptions,
    http: &reqwest::Client,
) -> (Vec<(usize, Identity)>, EnrolmentReport) {
    let gate = Arc::new(Semaphore::new(options.enrol_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for index in options.first_index..options.first_index + options.appliances {
        let token = options.enrollment_tokens[index % options.enrollment_tokens.len()].clone();
        let (http, api_url, gate) = (http.clone(), options.api_url.clone(), gate.clone());
        tasks.spawn(async move {
            let Ok(_permit) = gate.acquire_owned().await else {
                return (index, Err("closed".to_owned()));
            };
            let proof = Proof::Token(SecretString::from(token));
            let mut attempt = 0;
            loop {
                attempt += 1;
                let began = Instant::now();
                match identity::enroll(&http, &api_url, &proof, hardware(index), None).await {
                    Ok(identity) => return (index, Ok((identity, began.elapsed()))),
                    Err(e) if !e.is_permanent() && attempt < ENROL_ATTEMPTS => {
                        tracing::debug!(index, error = %e, "enrolment failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        tracing::warn!(index, error = %e, "enrolment failed");
                        let reason = match e {
                            identity::IdentityError::Refused { code, .. } => code,
                            identity::IdentityError::Unreachable { .. } => "unreachable".into(),
                            other => other.to_string(),
                        };
                        return (index, Err(reason));
                    }
                }
            }
        });
    }
    let mut enrolled = Vec::with_capacity(options.appliances);
    let mut latencies = Vec::with_capacity(options.appliances);
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, Ok((identity, latency)))) => {
                enrolled.push((index, identity));
                latencies.push(latency);
            }
            Ok((_, Err(reason))) => *failed.entry(reason).or_default() += 1,
            Err(e) => *failed.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    enrolled.sort_by_key(|(index, _)| *index);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = EnrolmentReport {
        requested: options.appliances,
        enrolled: enrolled.len(),
        failed,
        secs,
        per_sec: if secs > 0.0 {
            enrolled.len() as f64 / secs
        } else {
            0.0
        },
        p50_ms: ms(percentile(&latencies, 50.0)),
        p99_ms: ms(percentile(&latencies, 99.0)),
    };
    (enrolled, report)
}

/// Asks appliances to fail over, round-robin, at `per_sec` across the fleet, for `duration`. An
/// appliance already on its backup lets the request pass (and the next one is asked next time).
async fn inject_failovers(senders: Vec<mpsc::Sender<()>>, per_sec: f64, duration: Duration) {
    if per_sec <= 0.0 || senders.is_empty() {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / per_sec);
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut next = 0usize;
    while Instant::now() < end {
        ticks.tick().await;
        // A full channel means the appliance has not taken the last request yet: skip it.
        let _ = senders[next % senders.len()].try_send(());
        next += 1;
    }
}

struct SessionContext {
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    phase: watch::Receiver<Phase>,
    telemetry_interval: Duration,
    failback_after: Duration,
}

/// The spread of the fleet's telemetry over the period: appliance `index` publishes at this
/// offset from the start of the steady phase, then every period.
fn telemetry_offset(index: usize, period: Duration) -> Duration {
    period.mul_f64(((index as u64 * 7919) % 1000) as f64 / 1000.0)
}

/// The first of `at + k·period` (k ≥ 1) after `now`: a cadence that skips the slots a busy
/// machine missed instead of catching up with a burst.
fn next_slot(at: Instant, period: Duration, now: Instant) -> Instant {
    let next = at + period;
    if next > now {
        return next;
    }
    let behind = (now - next).as_secs_f64() / period.as_secs_f64();
    next + period.mul_f64(behind.floor() + 1.0)
}

/// One simulated appliance's session, from its first handshake to its goodbye.
async fn session(
    index: usize,
    identity: Identity,
    ctx: SessionContext,
    mut failovers: mpsc::Receiver<()>,
) -> SessionEnd {
    let appliance_id = identity.appliance_id;
    let mut ledger = Ledger::new(appliance_id);
    let end = |ledger, connect_latency, failovers, failbacks| SessionEnd {
        ledger,
        connect_latency,
        failovers,
        failbacks,
    };
    let Ok(permit) = ctx.gate.clone().acquire_owned().await else {
        return end(ledger, None, 0, 0);
    };
    let mut permit = Some(permit);
    let turn = Instant::now();
    let options = match cloud_link::mqtt_options(&identity, Utc::now()) {
        Ok(options) => options,
        Err(e) => {
            tracing::error!(index, error = %e, "cannot build the TLS configuration");
            return end(ledger, None, 0, 0);
        }
    };
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut phase = ctx.phase.clone();
    let shared = &ctx.shared;
    let mut connect_latency = None;
    let mut connected = false;
    let mut reconnect_delay = Duration::from_millis(250);
    let (mut on_backup, mut failback_at, mut tick) = (false, None::<Instant>, 0u64);
    let (mut failover_count, mut failback_count) = (0u64, 0u64);
    let mut telemetry_at: Option<Instant> = None;
    let mut stopping_since: Option<Instant> = None;
    // Presence carries an envelope id of its own making; the ledger keys it by a fresh one (the
    // cloud neither stores nor acknowledges presence by id).
    let publish = |ledger: &mut Ledger,
                   kind: MessageKind,
                   channel: Channel,
                   payload: Vec<u8>,
                   id: Option<MessageId>| {
        let topic = DeviceTopic::new(appliance_id, channel).to_string();
        let retain = kind == MessageKind::Presence;
        match client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => {
                ledger.queued(id.unwrap_or_else(|| MessageId(Uuid::new_v4())), kind);
                if kind != MessageKind::Presence {
                    shared.outstanding.fetch_add(1, Ordering::Relaxed);
                    if shared.steady.load(Ordering::Relaxed) {
                        shared.sent_in_steady.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => ledger.not_queued(kind),
        }
    };
    loop {
        let sleep_until = |at: Option<Instant>| async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            polled = eventloop.poll() => match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    reconnect_delay = Duration::from_millis(250);
                    if connect_latency.is_none() {
                        connect_latency = Some(turn.elapsed());
                        shared.connected_once.fetch_add(1, Ordering::Relaxed);
                        permit = None;
                    }
                    // As the agent: subscribe first (the cloud answers presence with the policy),
                    // then announce presence.
                    for channel in Channel::CLOUD_TO_DEVICE {
                        let topic = DeviceTopic::new(appliance_id, channel).to_string();
                        let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
                    }
                    let payload = cloud_link::presence_payload(appliance_id, Utc::now(), true);
                    publish(&mut ledger, MessageKind::Presence, Channel::Status, payload, None);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ledger.outgoing_publish(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => ledger.puback(ack.pkid),
                Ok(Event::Incoming(Packet::Publish(message))) => {
                    if let Ok(Inbound::Ack(ack)) =
                        cloud_link::decode_inbound(appliance_id, &message.topic, &message.payload)
                    {
                        let settled = ledger.cloud_ack(&ack);
                        let n = settled.records as u64;
                        shared.outstanding.fetch_sub(n, Ordering::Relaxed);
                        if shared.steady.load(Ordering::Relaxed) {
                            shared.stored_in_steady.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping_since.is_some() => break,
                Ok(_) => {}
                Err(e) => {
                    if stopping_since.is_some() {
                        break;
                    }
                    if connected {
                        connected = false;
                        shared.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(index, error = %e, "session lost");
                    } else {
                        shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(index, error = %e, "connection attempt failed");
                    }
                    tokio::time::sleep(reconnect_delay).await;
                    reconnect_delay = (reconnect_delay * 2).min(RECONNECT_MAX);
                }
            },
            () = sleep_until(telemetry_at) => {
                tick += 1;
                telemetry_at = telemetry_at
                    .map(|at| next_slot(at, ctx.telemetry_interval, Instant::now()));
                let id = MessageId(Uuid::new_v4());
                let body = telemetry_body(index, on_backup, tick);
                let payload = Envelope::new(id, appliance_id, Utc::now(), body).encode();
                publish(&mut ledger, MessageKind::Telemetry, Channel::Telemetry, payload, Some(id));
            }
            Some(()) = failovers.recv(), if telemetry_at.is_some() && !on_backup => {
                on_backup = true;
                failover_count += 1;
                failback_at = Some(Instant::now() + ctx.failback_after);
                let id = MessageId(Uuid::new_v4());
                let payload = Envelope::new(id, appliance_id, Utc::now(), switch_event(true)).encode();
                publish(&mut ledger, MessageKind::Event, Channel::Events, payload, Some(id));
            }
            () = sleep_until(failback_at) => {
                on_backup = false;
                failback_count += 1;
                failback_at = None;
                let id = MessageId(Uuid::new_v4());
                let payload = Envelope::new(id, appliance_id, Utc::now(), switch_event(false)).encode();
                publish(&mut ledger, MessageKind::Event, Channel::Events, payload, Some(id));
            }
            () = sleep_until(stopping_since.map(|at| at + GOODBYE_DEADLINE)) => break,
            changed = phase.changed(), if stopping_since.is_none() => {
                let now_phase = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                match now_phase {
                    Phase::Connect => {}
                    Phase::Steady(start) => {
                        // A session that connected late starts at its next slot, not with a burst.
                        let first = start + telemetry_offset(index, ctx.telemetry_interval);
                        telemetry_at = Some(if first > Instant::now() {
                            first
                        } else {
                            next_slot(first, ctx.telemetry_interval, Instant::now())
                        });
                    }
                    Phase::Drain => {
                        telemetry_at = None;
                        // Fail back now: the fleet ends on its primaries, no alert left open.
                        if failback_at.is_some() {
                            failback_at = Some(Instant::now());
                        }
                    }
                    Phase::Stop => {
                        if stopping_since.is_some() {
                            continue;
                        }
                        telemetry_at = None;
                        failback_at = None;
                        stopping_since = Some(Instant::now());
                        // Never connected: there is no one to say goodbye to.
                        if !connected {
                            break;
                        }
                        let payload = cloud_link::presence_payload(appliance_id, Utc::now(), false);
                        publish(&mut ledger, MessageKind::Presence, Channel::Status, payload, None);
                        let _ = client.try_disconnect();
                    }
                }
            }
        }
    }
    drop(permit);
    end(ledger, connect_latency, failover_count, failback_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> MessageId {
        MessageId(Uuid::from_u128(n))
    }

    fn ack(stored: &[u128], rejected: &[u128]) -> Ack {
        Ack {
            stored: stored.iter().map(|n| id(*n)).collect(),
            rejected: rejected.iter().map(|n| id(*n)).collect(),
        }
    }

    #[test]
    fn every_simulated_appliance_has_distinct_hardware() {
        let serials: std::collections::HashSet<_> =
            (0..70_000).map(|i| hardware(i).serial).collect();
        let macs: std::collections::HashSet<_> = (0..70_000).map(|i| hardware(i).mac).collect();
        assert_eq!((serials.len(), macs.len()), (70_000, 70_000));
        assert_eq!(hardware(258).mac, "02:4c:47:00:01:02");
    }

    #[test]
    fn the_ledger_matches_pubacks_to_messages_in_the_order_they_were_queued() {
        let mut ledger = Ledger::new(ApplianceId(Uuid::from_u128(9)));
        ledger.queued(id(1), MessageKind::Presence);
        ledger.queued(id(2), MessageKind::Telemetry);
        ledger.queued(id(3), MessageKind::Event);
        ledger.outgoing_publish(1);
        ledger.outgoing_publish(2);
        ledger.puback(2);
        ledger.outgoing_publish(3);
        let acked: Vec<(MessageId, bool)> = ledger
            .messages()
            .iter()
            .map(|m| (m.id, m.broker_acknowledged))
            .collect();
        assert_eq!(acked, [(id(1), false), (id(2), true), (id(3), false)]);
        ledger.puback(1);
        ledger.puback(3);
        assert!(ledger.messages().iter().all(|m| m.broker_acknowledged));
        ledger.puback(3);
        assert_eq!(ledger.unmatched_acks, 1, "a second PUBACK matches nothing");
    }

    #[test]
    fn a_resend_after_a_reconnection_keeps_its_message() {
        let mut ledger = Ledger::new(ApplianceId(Uuid::from_u128(9)));
        ledger.queued(id(1), MessageKind::Telemetry);
        ledger.queued(id(2), MessageKind::Telemetry);
        ledger.outgoing_publish(7);
        // The connection dropped; rumqttc resends packet 7, then sends the next request.
        ledger.outgoing_publish(7);
        ledger.outgoing_publish(8);
        ledger.puback(8);
        assert_eq!(ledger.resent, 1);
        let acked: Vec<bool> = ledger
            .messages()
            .iter()
            .map(|m| m.broker_acknowledged)
            .collect();
        assert_eq!(acked, [false, true], "packet 8 is the second message");
    }

    #[test]
    fn the_cloud_acknowledges_each_record_once() {
        let mut ledger = Ledger::new(ApplianceId(Uuid::from_u128(9)));
        ledger.queued(id(1), MessageKind::Telemetry);
        ledger.queued(id(2), MessageKind::Event);
        ledger.queued(id(3), MessageKind::Telemetry);
        assert_eq!(ledger.cloud_ack(&ack(&[1, 2], &[3])).records, 3);
        assert_eq!(ledger.cloud_ack(&ack(&[1], &[])).records, 0);
        assert_eq!(ledger.cloud_ack(&ack(&[99], &[])).records, 0);
        assert_eq!((ledger.repeated_acks, ledger.unmatched_acks), (1, 1));
        let m = ledger.messages();
        assert!(m[0].cloud_stored && m[1].cloud_stored && m[2].cloud_refused);
        assert!(!m[2].cloud_stored);
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&values, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&values[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn proc_files_are_read_for_memory_cpu_and_the_open_files_limit() {
        let status = "Name:\tx\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(parse_status_rss_kib(status), Some((102_400, 204_800)));
        let stat = "1234 (a (b) c) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            20000                20000                files\n";
        assert_eq!(parse_open_files_limit(limits), Some(20_000));
        assert!(process_usage(None).is_some_and(|u| u.rss_mib > 0.0));
    }

    #[test]
    fn telemetry_follows_the_injected_failover_and_passes_the_clouds_checks() {
        let primary = telemetry_body(3, false, 1);
        let backup = telemetry_body(3, true, 2);
        assert_eq!(primary.active_uplink.as_deref(), Some("fiber"));
        assert_eq!(backup.active_uplink.as_deref(), Some("lte"));
        assert!(primary.on_backup() != backup.on_backup());
        assert_eq!(switch_event(true).kind, EventKind::Failover);
        assert_eq!(switch_event(false).to.as_deref(), Some("fiber"));
    }

    #[test]
    fn a_late_cadence_skips_the_missed_slots() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        assert_eq!(next_slot(start, period, start), start + period);
        let late = next_slot(start, period, start + Duration::from_secs(35));
        assert_eq!(late, start + Duration::from_secs(40));
        let exact = next_slot(start, period, start + Duration::from_secs(20));
        assert!(
            exact > start + Duration::from_secs(20) && exact <= start + Duration::from_secs(30)
        );
    }

    #[test]
    fn telemetry_offsets_spread_over_the_period() {
        let period = Duration::from_secs(10);
        let offsets: std::collections::BTreeSet<_> =
            (0..1000).map(|i| telemetry_offset(i, period)).collect();
        assert_eq!(offsets.len(), 1000);
        assert!(offsets.iter().all(|o| *o < period));
    }

    #[test]
    fn options_that_cannot_run_are_refused() {
        let good = LoadOptions::new("http://127.0.0.1:1", vec!["soe_x".into()], 10);
        assert_eq!(good.validate(), Ok(()));
        let bad = [
            LoadOptions {
                appliances: 0,
                ..good.clone()
            },
            LoadOptions {
                enrollment_tokens: vec![],
                ..good.clone()
            },
            LoadOptions {
                failovers_per_sec: f64::NAN,
                ..good.clone()
            },
            LoadOptions {
                enrol_concurrency: 0,
                ..good.clone()
            },
            LoadOptions {
                duration: Duration::ZERO,
                ..good.clone()
            },
        ];
        for options in bad {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
