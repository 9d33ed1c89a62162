//! A test device's MQTT connection to the broker: one rumqttc event loop, polled by one task that
//! stops when the handle is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stayopen_shared::api::EnrollResponse;
use tokio::sync::{mpsc, oneshot};

/// An enrolled device as a test drives it by hand: its enrolment answer and private key.
pub struct Device {
    pub enrolled: EnrollResponse,
    pub key_pem: String,
}

/// An MQTT connection of a test device: the client, the messages it receives, and whether the
/// broker has closed it. Dropping it stops polling its event loop, which ends the connection.
pub struct DeviceConnection {
    pub client: rumqttc::AsyncClient,
    pub received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    pub closed: Arc<AtomicBool>,
    poll: tokio::task::AbortHandle,
}

impl DeviceConnection {
    /// True once the connection has ended (the broker closed it, or the client disconnected).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for DeviceConnection {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

/// How a test device connects: its TLS material and MQTT credentials.
pub struct Credentials<'a> {
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub client_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// Connects to `broker` over TLS and waits for its answer to CONNECT; Err carries the refusal.
pub async fn connect(
    broker: SocketAddr,
    credentials: &Credentials<'_>,
) -> Result<DeviceConnection, String> {
    let tls = stayopen_shared::mqtt_tls::client_config(
        credentials.ca_pem,
        credentials.cert_pem,
        credentials.key_pem,
    )
    .map_err(|e| e.to_string())?;
    // As a real client does, sign the key proof with the key this connection presents (an
    // attacker holding a superseded key can only sign with that one).
    let password = match credentials.username.parse::<stayopen_shared::ApplianceId>() {
        Ok(appliance)
            if !credentials
                .password
                .contains(stayopen_shared::api::MQTT_KEY_PROOF_SEPARATOR) =>
        {
            stayopen_appliance::identity::mqtt_password(
                credentials.password,
                appliance,
                credentials.key_pem,
            )
            .expect("sign the key proof")
        }
        _ => credentials.password.to_owned(),
    };
    let mut options = rumqttc::MqttOptions::new(
        credentials.client_id,
        broker.ip().to_string(),
        broker.port(),
    );
    options
        .set_credentials(credentials.username, password.as_str())
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ))
        .set_keep_alive(Duration::from_secs(5));
    let (client, eventloop) = rumqttc::AsyncClient::new(options, 100);
    let (connack, answered) = oneshot::channel();
    let (tx, received) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicBool::new(false));
    let poll = tokio::spawn(poll(eventloop, connack, tx, closed.clone())).abort_handle();
    let connection = DeviceConnection {
        client,
        received,
        closed,
        poll,
    };
    match tokio::time::timeout(Duration::from_secs(10), answered).await {
        Ok(Ok(Ok(()))) => Ok(connection),
        Ok(Ok(Err(refusal))) => Err(refusal),
        Ok(Err(_)) => Err("the event loop ended before the broker answered".into()),
        Err(_) => Err("no answer from the broker".into()),
    }
}

/// The one poll loop: reports the broker's answer to CONNECT, passes on what is published to the
/// device, and marks the connection closed when it ends. No reconnecting: a test wants to see
/// that the broker closed it.
async fn poll(
    mut eventloop: rumqttc::EventLoop,
    connack: oneshot::Sender<Result<(), String>>,
    received: mpsc::UnboundedSender<(String, Vec<u8>)>,
    closed: Arc<AtomicBool>,
) {
    let mut connack = Some(connack);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                if let Some(answer) = connack.take() {
                    let _ = answer.send(Ok(()));
                }
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let _ = received.send((p.topic.clone(), p.payload.to_vec()));
            }
            Ok(_) => {}
            Err(e) => {
                closed.store(true, Ordering::SeqCst);
                if let Some(answer) = connack.take() {
                    let _ = answer.send(Err(e.to_string()));
                }
                return;
            }
        }
    }
}
