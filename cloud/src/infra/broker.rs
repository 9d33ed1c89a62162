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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};
use stayopen_shared::envelope::MAX_PAYLOAD_BYTES;
use stayopen_shared::{ApplianceId, Channel};
use tokio::sync::{mpsc, oneshot};

use crate::infra::hearing::Hearing;
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

/// Subscribes the embedded broker's ingest link to every device → cloud channel and forwards what
/// arrives to `sink` until the broker goes away.
pub async fn forward_embedded(
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    sink: mpsc::Sender<Incoming>,
) {
    for channel in Channel::ALL.into_iter().filter(|c| c.is_device_to_cloud()) {
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

/// Connects the cloud to an external broker with its service certificate: subscribes to every
/// device → cloud channel (persistent session, QoS 1, so messages wait in the broker while the
/// cloud restarts) and forwards them to `sink`. Returns the client, for publishing to devices.
pub fn connect_external(
    addr: SocketAddr,
    ca: &DeviceCa,
    sink: mpsc::Sender<Incoming>,
    hearing: Arc<Hearing>,
    supervisor: &Supervisor,
) -> Result<(rumqttc::AsyncClient, Arc<AtomicBool>), BrokerError> {
    let (cert, key) = ca
        .cloud_service_client()
        .map_err(|e| BrokerError::External(e.to_string()))?;
    let tls = stayopen_shared::mqtt_tls::client_config(ca.cert_pem(), &cert, &key)
        .map_err(|e| BrokerError::External(e.to_string()))?;
    let mut options =
        rumqttc::MqttOptions::new("stayopen-cloud-ingest", addr.ip().to_string(), addr.port());
    options
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ))
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(false)
        .set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10_000);
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
                    tracing::info!(%addr, "connected to the external broker");
                    for channel in Channel::ALL.into_iter().filter(|c| c.is_device_to_cloud()) {
                        if let Err(e) = subscriber
                            .subscribe(channel.all_devices_filter(), rumqttc::QoS::AtLeastOnce)
                            .await
                        {
                            tracing::error!(error = %e, "cannot subscribe on the external broker");
                        }
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
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
    pub ingest: (LinkTx, LinkRx),
    pub publisher: (LinkTx, LinkRx),
}

/// Starts rumqttd listening on `listen` and returns it with its in-process links and the stream of
/// authentication requests to serve.
pub async fn start(
    listen: SocketAddr,
    tls: &BrokerTlsFiles,
) -> Result<(EmbeddedBroker, Links, mpsc::Receiver<AuthRequest>), BrokerError> {
    let (auth_tx, auth_rx) = mpsc::channel::<AuthRequest>(256);
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
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
        Links { ingest, publisher },
        auth_rx,
    ))
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
