//! MQTT to the cloud: telemetry and events out, presence with a last will.
//!
//! Publishing never blocks the agent: messages queue in rumqttc's request channel while the
//! connection is down and are flushed when it comes back; if that queue fills, new messages are
//! counted and dropped rather than stalling failover decisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use stayopen_shared::events::ApplianceEvent;
use stayopen_shared::telemetry::{Presence, Telemetry};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use uuid::Uuid;

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
}

fn envelope<T: Serialize>(appliance_id: ApplianceId, at: DateTime<Utc>, body: T) -> Vec<u8> {
    Envelope::new(MessageId(Uuid::new_v4()), appliance_id, at, body).encode()
}

impl CloudLink {
    /// Connects (and keeps reconnecting) in a background task.
    pub fn start(identity: &Identity) -> Self {
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
        };
        let connected = link.connected.clone();
        let presence_link = link.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(500);
                        tracing::info!(%appliance_id, "connected to the cloud broker");
                        presence_link.publish_presence(true);
                    }
                    Ok(_) => {}
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
        link
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
        self.publish_presence(false);
        // Give the event loop a moment to flush before the disconnect request overtakes it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.client.disconnect().await;
    }
}
