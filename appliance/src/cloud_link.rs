//! MQTT to the cloud: telemetry, events and command results out, presence with a last will; the
//! desired policy and commands in.
//!
//! Publishing never blocks the agent: messages queue in rumqttc's request channel while the
//! connection is down and are flushed when it comes back; if that queue fills, new messages are
//! counted and dropped rather than stalling failover decisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::Serialize;
use stayopen_shared::commands::{CommandResult, DeviceCommand};
use stayopen_shared::events::ApplianceEvent;
use stayopen_shared::mqtt_tls::TlsSetupError;
use stayopen_shared::policy::Policy;
use stayopen_shared::telemetry::{Presence, Telemetry};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use uuid::Uuid;

use tokio::sync::mpsc;

use crate::AGENT_VERSION;
use crate::identity::Identity;

/// Messages held in memory while the cloud is unreachable: ten minutes of telemetry at the default
/// interval plus room for a burst of events.
const QUEUE_CAPACITY: usize = 1000;

#[derive(Debug, Clone)]
pub struct CloudLink {
    client: AsyncClient,
    appliance_id: ApplianceId,
    connected: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    /// Set by [`CloudLink::shutdown`]: the connection task stops instead of reconnecting.
    closing: Arc<AtomicBool>,
}

/// What the cloud sends this appliance.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Policy(Policy),
    Command(DeviceCommand),
}

/// Decodes a message from the cloud. Anything malformed, addressed to another appliance or on an
/// unexpected topic is refused with a reason (the caller counts and logs it).
pub fn decode_inbound(
    appliance_id: ApplianceId,
    topic: &str,
    payload: &[u8],
) -> Result<Inbound, String> {
    let topic = DeviceTopic::parse(topic).map_err(|e| e.to_string())?;
    if topic.appliance_id != appliance_id {
        return Err(format!("topic names appliance {}", topic.appliance_id));
    }
    let (named, inbound) = match topic.channel {
        Channel::Policy => {
            let envelope = Envelope::<Policy>::decode(payload).map_err(|e| e.to_string())?;
            envelope
                .body
                .validate()
                .map_err(|e| format!("invalid policy: {e}"))?;
            (envelope.appliance_id, Inbound::Policy(envelope.body))
        }
        Channel::Commands => {
            let envelope = Envelope::<DeviceCommand>::decode(payload).map_err(|e| e.to_string())?;
            (envelope.appliance_id, Inbound::Command(envelope.body))
        }
        other => return Err(format!("the cloud does not send on {}", other.as_str())),
    };
    if named != appliance_id {
        return Err(format!("envelope names appliance {named}"));
    }
    Ok(inbound)
}

fn envelope<T: Serialize>(appliance_id: ApplianceId, at: DateTime<Utc>, body: T) -> Vec<u8> {
    Envelope::new(MessageId(Uuid::new_v4()), appliance_id, at, body).encode()
}

impl CloudLink {
    /// Connects over TLS with the appliance's certificate (and keeps reconnecting) in a
    /// background task. What the cloud sends arrives on the returned channel.
    pub fn start(identity: &Identity) -> Result<(Self, mpsc::Receiver<Inbound>), TlsSetupError> {
        let tls = stayopen_shared::mqtt_tls::client_config(
            &identity.ca_cert_pem,
            &identity.client_cert_pem,
            &identity.private_key_pem,
        )?;
        let appliance_id = identity.appliance_id;
        let mut options = MqttOptions::new(
            identity.mqtt.username.clone(),
            identity.mqtt.host.clone(),
            identity.mqtt.port,
        );
        options
            .set_credentials(
                identity.mqtt.username.clone(),
                identity.mqtt.password.clone(),
            )
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(true)
            .set_last_will(LastWill::new(
                DeviceTopic::new(appliance_id, Channel::Status).to_string(),
                envelope(
                    appliance_id,
                    Utc::now(),
                    Presence {
                        online: false,
                        agent_version: AGENT_VERSION.to_owned(),
                    },
                ),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut eventloop) = AsyncClient::new(options, QUEUE_CAPACITY);
        let link = Self {
            client: client.clone(),
            appliance_id,
            connected: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
            rejected: Arc::new(AtomicU64::new(0)),
            closing: Arc::new(AtomicBool::new(false)),
        };
        let closing = link.closing.clone();
        let connected = link.connected.clone();
        let presence_link = link.clone();
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(500);
                        tracing::info!(%appliance_id, "connected to the cloud broker");
                        // Subscribe before announcing presence: the cloud answers presence by
                        // sending the desired policy and any queued commands.
                        for channel in [Channel::Policy, Channel::Commands] {
                            let topic = DeviceTopic::new(appliance_id, channel).to_string();
                            if let Err(e) =
                                presence_link.client.try_subscribe(topic, QoS::AtLeastOnce)
                            {
                                tracing::warn!(error = %e, "cannot subscribe");
                            }
                        }
                        presence_link.publish_presence(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        match decode_inbound(appliance_id, &publish.topic, &publish.payload) {
                            Ok(inbound) => {
                                if inbound_tx.send(inbound).await.is_err() {
                                    return;
                                }
                            }
                            Err(reason) => {
                                let rejected =
                                    presence_link.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                                tracing::warn!(%appliance_id, topic = %publish.topic, %reason, rejected,
                                    "rejected a message from the cloud");
                            }
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))
                        if closing.load(Ordering::Relaxed) =>
                    {
                        connected.store(false, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                    Err(_) if closing.load(Ordering::Relaxed) => {
                        connected.store(false, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        if connected.swap(false, Ordering::Relaxed) {
                            tracing::warn!(%appliance_id, error = %e, "lost the cloud broker");
                        } else {
                            tracing::debug!(%appliance_id, error = %e, "cloud broker unreachable");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Ok((link, inbound_rx))
    }

    /// Messages from the cloud refused as malformed or misaddressed.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn publish_command_result(&self, at: DateTime<Utc>, result: CommandResult) {
        self.publish(
            Channel::CommandResults,
            false,
            envelope(self.appliance_id, at, result),
        );
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Messages dropped because the in-memory queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn publish(&self, channel: Channel, retain: bool, payload: Vec<u8>) {
        let topic = DeviceTopic::new(self.appliance_id, channel).to_string();
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(appliance_id = %self.appliance_id, error = %e, dropped, "cloud queue full; message dropped");
        }
    }

    pub fn publish_telemetry(&self, at: DateTime<Utc>, telemetry: Telemetry) {
        self.publish(
            Channel::Telemetry,
            false,
            envelope(self.appliance_id, at, telemetry),
        );
    }

    pub fn publish_event(&self, at: DateTime<Utc>, event: ApplianceEvent) {
        self.publish(
            Channel::Events,
            false,
            envelope(self.appliance_id, at, event),
        );
    }

    fn publish_presence(&self, online: bool) {
        let presence = Presence {
            online,
            agent_version: AGENT_VERSION.to_owned(),
        };
        self.publish(
            Channel::Status,
            true,
            envelope(self.appliance_id, Utc::now(), presence),
        );
    }

    /// Says goodbye (offline presence) and disconnects cleanly.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.publish_presence(false);
        // Give the event loop a moment to flush before the disconnect request overtakes it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.client.disconnect().await;
    }
}
