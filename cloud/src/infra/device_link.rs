//! Cloud → device messages: each appliance's desired policy, its queued commands, and the
//! acknowledgements of what ingest stored.
//!
//! Publishing goes through an in-process rumqttd link (embedded broker) or the cloud's client of an
//! external broker, owned by one task; [`DeviceLink`] is the cheap, cloneable handle. rumqttd
//! refuses (and disconnects) a publish that matches no filter, so the embedded link subscribes to
//! the cloud → device channels itself and discards what it hears back.
//!
//! rumqttd keeps nothing on disk, so nothing published here survives a broker restart: the desired
//! policy is published again whenever an appliance announces itself online, and to every appliance
//! at start; commands stay queued in PostgreSQL until acknowledged.

use std::sync::Arc;

use rumqttd::local::{LinkRx, LinkTx};
use stayopen_shared::Channel;
use tokio::sync::{Notify, mpsc};

use crate::infra::metrics::{CLOUD_PUBLISH_DROPPED, Metrics};
use crate::infra::supervisor::Supervisor;

const QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct DeviceLink {
    tx: mpsc::Sender<(String, Vec<u8>)>,
    metrics: Arc<Metrics>,
    /// Wakes the command delivery loop (a command was queued, or an appliance came online).
    pub wake_delivery: Arc<Notify>,
}

impl DeviceLink {
    /// Publishes through an external broker's client (QoS 1).
    pub fn start_external(
        client: rumqttc::AsyncClient,
        metrics: Arc<Metrics>,
        supervisor: &Supervisor,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(QUEUE);
        supervisor.spawn("publishing to devices (external broker)", async move {
            while let Some((topic, payload)) = rx.recv().await {
                if let Err(e) = client
                    .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                {
                    tracing::error!(error = %e, %topic, "publishing to a device failed");
                }
            }
        });
        Self {
            tx,
            metrics,
            wake_delivery: Arc::new(Notify::new()),
        }
    }

    /// Starts the publishing task on the embedded broker's `link` and returns its handle.
    pub fn start_embedded(
        mut link_tx: LinkTx,
        mut link_rx: LinkRx,
        metrics: Arc<Metrics>,
        supervisor: &Supervisor,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(QUEUE);
        for channel in Channel::CLOUD_TO_DEVICE {
            if let Err(e) = link_tx.subscribe(channel.all_devices_filter()) {
                tracing::error!(error = %e, "the cloud's publishing link cannot subscribe");
            }
        }
        supervisor.spawn("publishing to devices", async move {
            while let Some((topic, payload)) = rx.recv().await {
                if let Err(e) = link_tx.publish(topic.clone(), payload) {
                    tracing::error!(error = %e, %topic, "publishing to a device failed");
                }
            }
        });
        // Drain what the subscriptions echo back so the link never stalls; answer the router's
        // pause (`Unschedule`, when its buffer for this link filled) as rumqttd's network links do.
        supervisor.spawn("draining the publishing link", async move {
            while let Ok(Some(notification)) = link_rx.next().await {
                if matches!(notification, rumqttd::Notification::Unschedule)
                    && link_rx.wake().await.is_err()
                {
                    return;
                }
            }
        });
        Self {
            tx,
            metrics,
            wake_delivery: Arc::new(Notify::new()),
        }
    }

    /// A link that hands every publish to the returned receiver instead of a broker: for
    /// benchmarks that drive ingest directly, to measure storing without a broker in the way, and
    /// read the acknowledgements it publishes.
    pub fn detached(metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<(String, Vec<u8>)>) {
        let (tx, rx) = mpsc::channel::<(String, Vec<u8>)>(QUEUE);
        let link = Self {
            tx,
            metrics,
            wake_delivery: Arc::new(Notify::new()),
        };
        (link, rx)
    }

    /// Queues a publish; never waits. A full queue drops the message (counted): policies are
    /// published again on reconnect and commands are redelivered until acknowledged.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        if self.tx.try_send((topic, payload)).is_err() {
            self.metrics
                .increment(CLOUD_PUBLISH_DROPPED, "reason", "queue_full");
            tracing::warn!("cloud-to-device queue full; message dropped");
        }
    }
}
