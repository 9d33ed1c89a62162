//! The embedded MQTT broker (rumqttd) and the bridge that checks device credentials.
//!
//! Devices connect over TLS with a client certificate the device CA signed ([`crate::infra::pki`]);
//! rumqttd's `validate-tenant-prefix` confines each connection to `/tenants/{certificate O}/`, so a
//! device can only publish and subscribe under its own prefix. On top of that the auth hook checks
//! the MQTT password issued at enrolment and refuses revoked appliances.
//!
//! rumqttd runs its router and listeners on threads of its own, each with a private runtime. Device
//! credentials live in PostgreSQL, whose pool belongs to the main runtime, so the broker's auth hook
//! does not query the database itself: it sends the credentials over a channel to a task on the main
//! runtime ([`crate::domain::enrolment::serve_auth_requests`]) and awaits the verdict.
//!
//! rumqttd is patched (`third_party/rumqttd/STAYOPEN-PATCH.md`) so that a client that sends
//! nothing cannot stall the listener: each TLS handshake runs in its connection's own task under
//! the connection deadline. The patch's gate is [`DeviceGate`]: a limit on connections (in total
//! and per device), a per-device allow-list of the product's topics, and a per-device publish
//! rate. Overload is shed per device, never across devices.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use rumqttd::{
    Broker, ClientGate, Config, ConnectionGate, ConnectionSettings, RouterConfig, ServerSettings,
    TlsConfig,
};
use stayopen_shared::envelope::MAX_PAYLOAD_BYTES;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic};
use tokio::sync::{mpsc, oneshot};

use crate::infra::hearing::Hearing;
use crate::infra::metrics::{BROKER_RATE_LIMITED, BROKER_REFUSED, BROKER_TOPICS_ADMITTED, Metrics};
use crate::infra::pki::{BrokerTlsFiles, DeviceCa};
use crate::infra::supervisor::Supervisor;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the broker's in-process link: {0}")]
    Link(String),
    #[error("cannot start the broker thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the broker did not start listening on {0} within 10 s (is the port taken?)")]
    NotListening(SocketAddr),
    #[error("the broker cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("external broker: {0}")]
    External(String),
}

/// A device's attempt to connect.
#[derive(Debug)]
pub struct AuthRequest {
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub reply: oneshot::Sender<bool>,
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    pub listen: SocketAddr,
    alive: Arc<AtomicBool>,
}

impl EmbeddedBroker {
    /// True while the broker's listener thread runs.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

/// The broker devices talk to: the embedded one, or an external one the cloud is a client of.
#[derive(Debug)]
pub enum BrokerHandle {
    Embedded(EmbeddedBroker),
    External {
        /// Where devices (and the cloud) connect.
        addr: SocketAddr,
        connected: Arc<AtomicBool>,
    },
}

impl BrokerHandle {
    /// For readiness: the embedded listener runs, or the cloud's client is connected.
    pub fn is_alive(&self) -> bool {
        match self {
            BrokerHandle::Embedded(broker) => broker.is_alive(),
            BrokerHandle::External { connected, .. } => connected.load(Ordering::Relaxed),
        }
    }

    /// Where devices connect.
    pub fn device_addr(&self) -> SocketAddr {
        match self {
            BrokerHandle::Embedded(broker) => broker.listen,
            BrokerHandle::External { addr, .. } => *addr,
        }
    }
}

/// One message a device published: topic and payload, for ingest.
pub type Incoming = (Vec<u8>, Vec<u8>);

/// The device → cloud channels ingest takes in bulk (telemetry), which backpressure may hold in
/// the broker, and those it takes at once (events, presence, command results).
pub fn ingest_channels(bulk: bool) -> impl Iterator<Item = Channel> {
    Channel::ALL
        .into_iter()
        .filter(move |c| c.is_device_to_cloud() && (*c == Channel::Telemetry) == bulk)
}

/// Subscribes one of the embedded broker's ingest links to `channels` and forwards what arrives
/// to `sink` until the broker goes away. Ingest has two links (telemetry, the rest), so that when
/// it holds telemetry back the router pauses only that link and events still flow.
pub async fn forward_embedded(
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    channels: impl Iterator<Item = Channel>,
    sink: mpsc::Sender<Incoming>,
) {
    for channel in channels {
        if let Err(e) = link_tx.subscribe(channel.all_devices_filter()) {
            tracing::error!(error = %e, "ingest cannot subscribe");
            return;
        }
    }
    tracing::info!("ingest subscribed to device channels");
    loop {
        match link_rx.next().await {
            Ok(Some(rumqttd::Notification::Forward(forward))) => {
                let message = (
                    forward.publish.topic.to_vec(),
                    forward.publish.payload.to_vec(),
                );
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                // The router paused this link because its buffer filled (a burst faster than
                // ingest stores); it resumes only when told we are ready, as rumqttd's own
                // network links do. Without this, ingest stalls for good after a burst.
                if let Err(e) = link_rx.wake().await {
                    tracing::error!(error = %e, "the broker link closed; ingest stops");
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "the broker link closed; ingest stops");
                return;
            }
        }
    }
}

/// Where device messages go for ingest: telemetry to `bulk` (held back under load), the rest to
/// `urgent`.
#[derive(Debug, Clone)]
pub struct IngestSinks {
    pub bulk: mpsc::Sender<Incoming>,
    pub urgent: mpsc::Sender<Incoming>,
}

/// Connects the cloud to an external broker with its service certificate, as `client_id` (one per
/// instance), and subscribes to every device → cloud channel through the shared-subscription
/// group `ingest_group` (`$share/{group}/{filter}`, QoS 1): with several instances the broker hands
/// each message to one of them. Forwards what arrives to `sinks`; returns the client, for
/// publishing to devices. One connection carries both streams: while ingest holds telemetry back,
/// the client stops reading and the broker holds everything behind it (events included) until
/// ingest has room.
///
/// A clean session: brokers keep dealing a shared group's messages to a member's persistent
/// session while that member is away (Mosquitto, EMQX), so a dead instance's share would wait for
/// it forever. With clean sessions a dead instance leaves the group at once and the others take
/// everything. Nothing is lost either way: a device keeps each message in its outbox until the
/// cloud's acknowledgement (sent after the message is stored) and resends what is not
/// acknowledged; ingest stores each message id once.
pub fn connect_external(
    addr: SocketAddr,
    client_id: &str,
    ingest_group: &str,
    ca: &DeviceCa,
    sinks: IngestSinks,
    hearing: Arc<Hearing>,
    supervisor: &Supervisor,
) -> Result<(rumqttc::AsyncClient, Arc<AtomicBool>), BrokerError> {
    let (cert, key) = ca
        .cloud_service_client()
        .map_err(|e| BrokerError::External(e.to_string()))?;
    let tls = stayopen_shared::mqtt_tls::client_config(ca.cert_pem(), &cert, &key)
        .map_err(|e| BrokerError::External(e.to_string()))?;
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ))
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10_000);
    let group = ingest_group.to_owned();
    let connected = Arc::new(AtomicBool::new(false));
    let flag = connected.clone();
    let subscriber = client.clone();
    supervisor.spawn("external broker client", async move {
        let delays = || {
            use backon::BackoffBuilder;
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = delays();
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    flag.store(true, Ordering::Relaxed);
                    hearing.hearing(chrono::Utc::now());
                    backoff = delays();
                    tracing::info!(%addr, group = %group, "connected to the external broker");
                    for channel in Channel::ALL.into_iter().filter(|c| c.is_device_to_cloud()) {
                        let filter = format!("$share/{group}/{}", channel.all_devices_filter());
                        if let Err(e) = subscriber
                            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                            .await
                        {
                            tracing::error!(error = %e, "cannot subscribe on the external broker");
                        }
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    let sink = if publish.topic.ends_with(Channel::Telemetry.as_str()) {
                        &sinks.bulk
                    } else {
                        &sinks.urgent
                    };
                    let message = (publish.topic.into_bytes(), publish.payload.to_vec());
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    hearing.deaf("external_broker");
                    if flag.swap(false, Ordering::Relaxed) {
                        tracing::error!(%addr, error = %e, "lost the external broker");
                    } else {
                        tracing::debug!(%addr, error = %e, "external broker unreachable");
                    }
                    tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
                }
            }
        }
    });
    Ok((client, connected))
}

/// The broker's in-process links: one for ingest (subscribes to what devices publish), one for
/// publishing to devices.
#[allow(missing_debug_implementations)] // rumqttd's links are not Debug
pub struct Links {
    /// Telemetry.
    pub ingest: (LinkTx, LinkRx),
    /// Events, presence and command results.
    pub ingest_urgent: (LinkTx, LinkRx),
    pub publisher: (LinkTx, LinkRx),
}

/// Starts rumqttd listening on `listen` and returns it with its in-process links and the stream of
/// authentication requests to serve.
pub async fn start(
    listen: SocketAddr,
    tls: &BrokerTlsFiles,
    metrics: Arc<Metrics>,
) -> Result<(EmbeddedBroker, Links, mpsc::Receiver<AuthRequest>), BrokerError> {
    // rumqttd binds in its own thread and only logs a failure, and the readiness check below
    // would then connect to whichever process holds the port: try the address first.
    drop(std::net::TcpListener::bind(listen).map_err(|e| BrokerError::Bind(listen, e))?);
    let (auth_tx, auth_rx) = mpsc::channel::<AuthRequest>(256);
    let mut connections = ConnectionSettings {
        // The deadline for the TLS handshake (patched rumqttd) and then again for CONNECT.
        connection_timeout_ms: u16::try_from(HANDSHAKE_DEADLINE.as_millis()).unwrap_or(u16::MAX),
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        // A publish must match a filter that exists: ingest's `/tenants/+/{channel}` ones. With
        // dynamic filters, every new topic made a log the router never frees.
        dynamic_filters: false,
        gate: Some(Arc::new(DeviceGate::new(GateLimits::default(), metrics))),
    };
    connections.set_auth_handler(move |client_id, username, password| {
        let auth_tx = auth_tx.clone();
        async move {
            let (reply, verdict) = oneshot::channel();
            let request = AuthRequest {
                client_id,
                username,
                password,
                reply,
            };
            if auth_tx.send(request).await.is_err() {
                return false;
            }
            verdict.await.unwrap_or(false)
        }
    });
    let server = ServerSettings {
        name: "devices".to_owned(),
        listen,
        tls: Some(TlsConfig::Rustls {
            capath: Some(tls.ca.display().to_string()),
            certpath: tls.cert.display().to_string(),
            keypath: tls.key.display().to_string(),
        }),
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 20_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 10 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("devices".to_owned(), server)])),
        ..Config::default()
    };

    let mut broker = Broker::new(config);
    let ingest = broker
        .link("stayopen-cloud-ingest")
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    let ingest_urgent = broker
        .link("stayopen-cloud-ingest-urgent")
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    let publisher = broker
        .link("stayopen-cloud-publisher")
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    let alive = Arc::new(AtomicBool::new(true));
    let thread_alive = alive.clone();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
            // `start` returns only when every listener has died (for example a port in use).
            thread_alive.store(false, Ordering::Relaxed);
        })?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        if !alive.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(%listen, "embedded MQTT broker listening");
    Ok((
        EmbeddedBroker { listen, alive },
        Links {
            ingest,
            ingest_urgent,
            publisher,
        },
        auth_rx,
    ))
}

/// How long a client has for its TLS handshake, and then again for its MQTT CONNECT: a client
/// silent for longer is dropped. An appliance on a poor LTE link finishes both in a few seconds.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// What the broker's gate allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateLimits {
    /// TCP connections at once, those still in their handshake included.
    pub max_connections: usize,
    /// Authenticated connections of one device (certificate) at once: its live session, a
    /// reconnection that overlaps a dead one, and the cloud's revoker.
    pub max_connections_per_device: usize,
    /// Publishes a device may send in a burst (its outbox replays up to 256 ahead).
    pub publish_burst: f64,
    /// Publishes per second a device may sustain.
    pub publish_rate: f64,
}

impl Default for GateLimits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_connections_per_device: 4,
            publish_burst: 1_500.0,
            publish_rate: 150.0,
        }
    }
}

/// A token bucket: `take` spends one token per publish; a bucket in debt says how long the device
/// must wait. Pure: time is a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn full(limits: &GateLimits, now: Instant) -> Self {
        Self {
            tokens: limits.publish_burst,
            at: now,
        }
    }

    fn refill(&mut self, limits: &GateLimits, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.publish_rate).min(limits.publish_burst);
        self.at = now;
    }

    /// Spends `count` tokens; returns how many of them were over the limit and the pause that
    /// pays the debt back (zero when there is none).
    pub fn take(&mut self, limits: &GateLimits, count: usize, now: Instant) -> (usize, Duration) {
        self.refill(limits, now);
        let available = self.tokens.max(0.0).floor() as usize;
        self.tokens -= count as f64;
        if self.tokens >= 0.0 {
            return (0, Duration::ZERO);
        }
        let over = count.saturating_sub(available);
        let pause = Duration::from_secs_f64(-self.tokens / limits.publish_rate.max(f64::EPSILON));
        (over, pause)
    }

    /// Full again by `now`: nothing to remember about this device.
    pub fn is_full(&self, limits: &GateLimits, now: Instant) -> bool {
        let mut bucket = *self;
        bucket.refill(limits, now);
        bucket.tokens >= limits.publish_burst
    }
}

/// Why the gate refuses a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketRefusal {
    /// A publish on a topic that is not one of this device's device → cloud channels.
    TopicNotAllowed,
    /// A subscription to anything but this device's cloud → device channels.
    FilterNotAllowed,
}

impl PacketRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            PacketRefusal::TopicNotAllowed => "topic_not_allowed",
            PacketRefusal::FilterNotAllowed => "filter_not_allowed",
        }
    }
}

/// The per-device topic allow-list, from the shared topic scheme: a device (certificate tenant
/// `segment`) publishes only on its own device → cloud channels and subscribes only to its own
/// cloud → device channels, exactly, without wildcards. Pure.
pub fn allowed(segment: &str, packet: &Packet) -> Result<(), PacketRefusal> {
    let own = |topic: &str, to_cloud: bool| {
        DeviceTopic::parse(topic).is_ok_and(|t| {
            DeviceTopic::segment(t.appliance_id) == segment
                && t.channel.is_device_to_cloud() == to_cloud
                && t.to_string() == topic
        })
    };
    match packet {
        Packet::Publish(publish, _) => {
            let topic = std::str::from_utf8(&publish.topic).unwrap_or("");
            if own(topic, true) {
                Ok(())
            } else {
                Err(PacketRefusal::TopicNotAllowed)
            }
        }
        Packet::Subscribe(subscribe, _) => {
            if subscribe.filters.iter().all(|f| own(&f.path, false)) {
                Ok(())
            } else {
                Err(PacketRefusal::FilterNotAllowed)
            }
        }
        _ => Ok(()),
    }
}

#[derive(Debug)]
struct DeviceState {
    connections: usize,
    bucket: TokenBucket,
}

#[derive(Debug)]
struct GateShared {
    limits: GateLimits,
    metrics: Arc<Metrics>,
    connections: AtomicUsize,
    devices: Mutex<HashMap<String, DeviceState>>,
    /// Every topic and filter a network client brought to the router (bounded by the allow-list).
    topics: Mutex<HashSet<String>>,
}

/// The embedded broker's gate (patched rumqttd): connection limits, the topic allow-list and the
/// per-device publish rate.
#[derive(Debug, Clone)]
pub struct DeviceGate(Arc<GateShared>);

impl DeviceGate {
    pub fn new(limits: GateLimits, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(GateShared {
            limits,
            metrics,
            connections: AtomicUsize::new(0),
            devices: Mutex::new(HashMap::new()),
            topics: Mutex::new(HashSet::new()),
        }))
    }

    fn refuse(&self, reason: &'static str) {
        self.0.metrics.increment(BROKER_REFUSED, "reason", reason);
    }
}

/// A connection's place in the total count, given back when it ends.
#[derive(Debug)]
struct ConnectionSlot(Arc<GateShared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionGate for DeviceGate {
    fn accept(&self, peer: SocketAddr) -> Option<Box<dyn Send>> {
        let limit = self.0.limits.max_connections;
        let taken = self
            .0
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            self.refuse("connection_limit");
            tracing::warn!(%peer, limit, "broker connection refused: the connection limit is reached");
            return None;
        }
        Some(Box::new(ConnectionSlot(self.0.clone())))
    }

    fn open(&self, tenant: Option<&str>, client_id: &str) -> Option<Box<dyn ClientGate>> {
        // Without a certificate tenant there is no device to account to: the listener requires
        // client certificates, so this does not happen; refuse rather than leave it unlimited.
        let Some(tenant) = tenant else {
            self.refuse("no_tenant");
            return None;
        };
        let now = Instant::now();
        let mut devices = self.0.devices.lock().ok()?;
        let state = devices.entry(tenant.to_owned()).or_insert(DeviceState {
            connections: 0,
            bucket: TokenBucket::full(&self.0.limits, now),
        });
        if state.connections >= self.0.limits.max_connections_per_device {
            drop(devices);
            self.refuse("device_connection_limit");
            tracing::warn!(
                tenant,
                client_id,
                "broker connection refused: the device's connection limit is reached"
            );
            return None;
        }
        state.connections += 1;
        Some(Box::new(DeviceSession {
            gate: self.0.clone(),
            tenant: tenant.to_owned(),
        }))
    }

    fn handshake_failed(&self, peer: SocketAddr, timed_out: bool) {
        let reason = if timed_out {
            "handshake_timeout"
        } else {
            "handshake_failed"
        };
        self.refuse(reason);
        tracing::info!(%peer, reason, "broker connection closed before its TLS handshake finished");
    }
}

/// One authenticated connection of a device.
#[derive(Debug)]
struct DeviceSession {
    gate: Arc<GateShared>,
    tenant: String,
}

impl Drop for DeviceSession {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Ok(mut devices) = self.gate.devices.lock()
            && let Some(state) = devices.get_mut(&self.tenant)
        {
            state.connections = state.connections.saturating_sub(1);
            // A device in debt keeps its bucket: reconnecting must not refill it.
            if state.connections == 0 && state.bucket.is_full(&self.gate.limits, now) {
                devices.remove(&self.tenant);
            }
        }
    }
}

impl ClientGate for DeviceSession {
    fn vet(&mut self, packets: &mut VecDeque<Packet>) -> Result<Option<Duration>, String> {
        let mut publishes = 0;
        for packet in packets.iter() {
            if let Err(refusal) = allowed(&self.tenant, packet) {
                let reason = refusal.reason();
                self.gate
                    .metrics
                    .increment(BROKER_REFUSED, "reason", reason);
                tracing::warn!(tenant = %self.tenant, reason, "device disconnected: a topic outside its allow-list");
                return Err(reason.to_owned());
            }
            let (kind, topics): (&'static str, Vec<&str>) = match packet {
                Packet::Publish(publish, _) => {
                    publishes += 1;
                    (
                        "publish",
                        vec![std::str::from_utf8(&publish.topic).unwrap_or("")],
                    )
                }
                Packet::Subscribe(subscribe, _) => (
                    "subscribe",
                    subscribe.filters.iter().map(|f| f.path.as_str()).collect(),
                ),
                _ => continue,
            };
            if let Ok(mut known) = self.gate.topics.lock() {
                for topic in topics {
                    if !known.contains(topic) {
                        known.insert(topic.to_owned());
                        self.gate
                            .metrics
                            .increment(BROKER_TOPICS_ADMITTED, "kind", kind);
                    }
                }
            }
        }
        if publishes == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        let Ok(mut devices) = self.gate.devices.lock() else {
            return Ok(None);
        };
        let Some(state) = devices.get_mut(&self.tenant) else {
            return Ok(None);
        };
        let (over, pause) = state.bucket.take(&self.gate.limits, publishes, now);
        drop(devices);
        if over == 0 {
            return Ok(None);
        }
        self.gate
            .metrics
            .add(BROKER_RATE_LIMITED, "reason", "rate_limited", over as u64);
        tracing::debug!(tenant = %self.tenant, over, ?pause, "device over its publish rate; reading paused");
        Ok(Some(pause))
    }
}

/// The username of the cloud's own short connection that closes a revoked appliance's session.
pub const REVOKER_USERNAME: &str = "stayopen-cloud-revoker";

/// Closes `appliance`'s MQTT connection, if it has one: the cloud connects with the appliance's
/// client id and a short-lived certificate naming the same prefix, which makes the broker drop the
/// existing session (MQTT's client-id takeover), then disconnects. The auth hook refuses the
/// revoked appliance from then on.
pub async fn disconnect_device(
    broker: SocketAddr,
    ca: &DeviceCa,
    appliance: ApplianceId,
    revoker_secret: &str,
) -> Result<(), String> {
    let (cert, key) = ca.cloud_client_as(appliance).map_err(|e| e.to_string())?;
    let tls = stayopen_shared::mqtt_tls::client_config(ca.cert_pem(), &cert, &key)
        .map_err(|e| e.to_string())?;
    let mut options = rumqttc::MqttOptions::new(
        appliance.to_string(),
        broker.ip().to_string(),
        broker.port(),
    );
    options
        .set_credentials(REVOKER_USERNAME, revoker_secret)
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ))
        .set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "timed out".to_owned())?;
    connected?;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::{Filter, Publish, QoS, RetainForwardRule, Subscribe};
    use uuid::Uuid;

    use super::*;

    fn limits() -> GateLimits {
        GateLimits {
            max_connections: 2,
            max_connections_per_device: 1,
            publish_burst: 10.0,
            publish_rate: 5.0,
        }
    }

    fn publish(topic: &str) -> Packet {
        Packet::Publish(
            Publish::new(topic.as_bytes().to_vec(), b"{}".to_vec(), false),
            None,
        )
    }

    fn subscribe(filters: &[&str]) -> Packet {
        Packet::Subscribe(
            Subscribe {
                pkid: 1,
                filters: filters
                    .iter()
                    .map(|path| Filter {
                        path: (*path).to_owned(),
                        qos: QoS::AtLeastOnce,
                        nolocal: false,
                        preserve_retain: false,
                        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                    })
                    .collect(),
            },
            None,
        )
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_asks_for_a_pause_that_pays_the_debt_back() {
        let limits = limits();
        let start = Instant::now();
        let mut bucket = TokenBucket::full(&limits, start);
        assert_eq!(bucket.take(&limits, 10, start), (0, Duration::ZERO));
        let (over, pause) = bucket.take(&limits, 5, start);
        assert_eq!(over, 5);
        assert_eq!(pause, Duration::from_secs(1), "5 tokens at 5 per second");
        // A second later the debt is paid; two seconds later two more are available.
        let later = start + Duration::from_secs(3);
        assert_eq!(bucket.take(&limits, 10, later), (0, Duration::ZERO));
        assert!(!bucket.is_full(&limits, later));
        assert!(bucket.is_full(&limits, later + Duration::from_secs(2)));
    }

    #[test]
    fn a_device_may_publish_only_on_its_own_device_to_cloud_channels_and_subscribe_only_to_its_own_cloud_to_device_ones()
     {
        let me = ApplianceId(Uuid::from_u128(1));
        let other = ApplianceId(Uuid::from_u128(2));
        let segment = DeviceTopic::segment(me);
        for channel in Channel::ALL {
            let own = DeviceTopic::new(me, channel).to_string();
            assert_eq!(
                allowed(&segment, &publish(&own)).is_ok(),
                channel.is_device_to_cloud(),
                "publish on {own}"
            );
            assert_eq!(
                allowed(&segment, &subscribe(&[&own])).is_ok(),
                !channel.is_device_to_cloud(),
                "subscribe to {own}"
            );
        }
        let prefix = DeviceTopic::prefix(me);
        for topic in [
            format!("{prefix}x1"),
            format!("{prefix}telemetry/extra"),
            format!("{prefix}#"),
            DeviceTopic::new(other, Channel::Telemetry).to_string(),
            "/tenants/+/telemetry".to_owned(),
        ] {
            assert_eq!(
                allowed(&segment, &publish(&topic)),
                Err(PacketRefusal::TopicNotAllowed),
                "{topic}"
            );
            assert_eq!(
                allowed(&segment, &subscribe(&[&topic])),
                Err(PacketRefusal::FilterNotAllowed),
                "{topic}"
            );
        }
        let commands = DeviceTopic::new(me, Channel::Commands).to_string();
        assert_eq!(
            allowed(&segment, &subscribe(&[&commands, &format!("{prefix}#")])),
            Err(PacketRefusal::FilterNotAllowed),
            "one bad filter refuses the packet"
        );
    }

    #[test]
    fn the_gate_limits_connections_in_total_and_per_device_and_gives_them_back() {
        let metrics = Arc::new(Metrics::default());
        let gate = DeviceGate::new(limits(), metrics.clone());
        let peer: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let first = gate.accept(peer).expect("first");
        let second = gate.accept(peer).expect("second");
        assert!(gate.accept(peer).is_none(), "the third is over the limit");
        drop(first);
        let third = gate.accept(peer).expect("a slot was given back");
        assert_eq!(metrics.get(BROKER_REFUSED, "reason", "connection_limit"), 1);

        let device = gate.open(Some("abc"), "abc").expect("device");
        assert!(gate.open(Some("abc"), "abc").is_none(), "one per device");
        assert!(gate.open(Some("def"), "def").is_some(), "another device");
        assert!(gate.open(None, "x").is_none(), "no certificate tenant");
        drop(device);
        assert!(gate.open(Some("abc"), "abc").is_some(), "given back");
        assert_eq!(
            metrics.get(BROKER_REFUSED, "reason", "device_connection_limit"),
            1
        );
        drop((second, third));
    }

    #[test]
    fn a_session_refuses_a_packet_outside_the_allow_list_and_pauses_a_device_over_its_rate() {
        let metrics = Arc::new(Metrics::default());
        let gate = DeviceGate::new(limits(), metrics.clone());
        let me = ApplianceId(Uuid::from_u128(7));
        let segment = DeviceTopic::segment(me);
        let telemetry = DeviceTopic::new(me, Channel::Telemetry).to_string();
        let mut session = gate.open(Some(&segment), &me.to_string()).expect("open");
        let mut burst: VecDeque<Packet> = (0..10).map(|_| publish(&telemetry)).collect();
        assert_eq!(session.vet(&mut burst), Ok(None), "the burst is allowed");
        assert_eq!(burst.len(), 10, "nothing removed");
        let mut more: VecDeque<Packet> = (0..3).map(|_| publish(&telemetry)).collect();
        let pause = session.vet(&mut more).expect("allowed").expect("paused");
        assert!(pause > Duration::from_millis(500), "{pause:?}");
        assert_eq!(
            metrics.get(BROKER_RATE_LIMITED, "reason", "rate_limited"),
            3
        );
        // Reconnecting does not refill the bucket.
        drop(session);
        let mut again = gate.open(Some(&segment), &me.to_string()).expect("open");
        let mut one: VecDeque<Packet> = VecDeque::from([publish(&telemetry)]);
        assert!(again.vet(&mut one).expect("allowed").is_some());

        let mut bad: VecDeque<Packet> =
            VecDeque::from([publish(&format!("{}x1", DeviceTopic::prefix(me)))]);
        assert_eq!(again.vet(&mut bad), Err("topic_not_allowed".to_owned()));
        assert_eq!(
            metrics.get(BROKER_REFUSED, "reason", "topic_not_allowed"),
            1
        );
        assert_eq!(
            metrics.get(BROKER_TOPICS_ADMITTED, "kind", "publish"),
            1,
            "one topic reached the router, however often"
        );
    }
}
