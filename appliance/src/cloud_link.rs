//! MQTT to the cloud: telemetry, events and command results out through the durable outbox,
//! presence with a last will; the desired policy, commands and acknowledgements in.
//!
//! Design: publishing never blocks the agent on the network. A message is appended to the
//! [`Outbox`] (fsynced) and the *pump* task is woken; the pump publishes what the outbox holds in
//! sequence order, at most [`WINDOW`] messages ahead of the cloud's acknowledgements. The
//! connection task polls rumqttc, hands acknowledgements to the outbox and, at every new
//! connection, tells the pump to start again from the oldest unacknowledged message. So the
//! failover event, produced as the connection through the dead uplink dies, waits on disk and goes
//! out on the first connection through the backup.
//!
//! Clean sessions on purpose: the outbox, not the broker's session, carries the guarantee. A
//! persistent session would only have the broker replay what the pump resends anyway, and keep
//! cloud → device messages for a connection that is gone. (The cloud's own client of an external
//! broker does use a persistent session, where it lets messages wait while the cloud restarts.)
//!
//! Presence: the last will and the "online" presence of one connection carry the same time, the
//! moment that connection was attempted, so the cloud's presence ordering accepts the will of the
//! current connection and refuses a late will of an earlier one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::Serialize;
use stayopen_shared::commands::{CommandResult, DeviceCommand};
use stayopen_shared::delivery::{Ack, OutboxReport};
use stayopen_shared::envelope::MAX_PAYLOAD_BYTES;
use stayopen_shared::events::ApplianceEvent;
use stayopen_shared::mqtt_tls::TlsSetupError;
use stayopen_shared::policy::Policy;
use stayopen_shared::telemetry::{Presence, Telemetry};
use stayopen_shared::traceparent::TraceParent;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::AGENT_VERSION;
use crate::identity::Identity;
use crate::outbox::{Kind, Outbox};

/// Requests queued in rumqttc's channel (subscriptions, presence, the pump's window).
const REQUEST_CAPACITY: usize = 1000;
/// Messages published ahead of the cloud's acknowledgements. Bounds what a broken connection can
/// swallow and how far the broker's queue for the cloud can grow per appliance.
pub const WINDOW: usize = 256;
/// With messages in flight and no acknowledgement for this long, the pump resends from the oldest:
/// an ack or a publish was lost without the connection noticing.
const RESEND_AFTER: Duration = Duration::from_secs(20);
/// How often the pump looks for a stalled window even when nothing wakes it.
const PUMP_TICK: Duration = Duration::from_secs(1);
/// At a planned stop, how long the link waits for the outbox to be acknowledged.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest pause between attempts is up to twice this (jitter).
const BACKOFF_MAX: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct CloudLink {
    client: AsyncClient,
    appliance_id: ApplianceId,
    outbox: Arc<Mutex<Outbox>>,
    counters: Arc<Counters>,
    /// Wakes the pump: a message was appended, acknowledged, or a connection was made.
    pump: Arc<Notify>,
    /// Set by [`CloudLink::shutdown`]: the tasks stop instead of reconnecting.
    closing: Arc<watch::Sender<bool>>,
    /// The connection task and the pump, awaited at shutdown so the outbox is released (redb
    /// allows one opener at a time) before a restarted agent opens it again.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    /// Bumped at every new connection; the pump restarts from the oldest message when it changes.
    connection: AtomicU64,
    /// Messages from the cloud refused as malformed or misaddressed.
    rejected: AtomicU64,
    /// Messages the outbox could not store (disk error), published from memory instead.
    unstored: AtomicU64,
    /// Messages the cloud acknowledged, and those it refused for good.
    acknowledged: AtomicU64,
    refused_by_cloud: AtomicU64,
    /// Publishes the pump made, first sends and resends.
    published: AtomicU64,
    resent: AtomicU64,
}

/// What the cloud sends this appliance.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Policy(Policy),
    Command(DeviceCommand),
    Ack(Ack),
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
        Channel::Acks => {
            let envelope = Envelope::<Ack>::decode(payload).map_err(|e| e.to_string())?;
            (envelope.appliance_id, Inbound::Ack(envelope.body))
        }
        other => return Err(format!("the cloud does not send on {}", other.as_str())),
    };
    if named != appliance_id {
        return Err(format!("envelope names appliance {named}"));
    }
    Ok(inbound)
}

/// The encoded presence an appliance publishes (retained) on its status channel: online when a
/// connection is made, offline at a planned stop and in the last will.
pub fn presence_payload(appliance_id: ApplianceId, at: DateTime<Utc>, online: bool) -> Vec<u8> {
    Envelope::new(
        MessageId(Uuid::new_v4()),
        appliance_id,
        at,
        Presence {
            online,
            agent_version: AGENT_VERSION.to_owned(),
        },
    )
    .encode()
}

/// A fresh W3C `traceparent` for an event: random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    loop {
        if let Some(root) = TraceParent::new_root(Uuid::new_v4().as_u128(), rand::random::<u64>()) {
            return root.to_string();
        }
    }
}

/// The will of a connection attempted at `at`: offline, with the attempt's time.
pub fn last_will(appliance_id: ApplianceId, at: DateTime<Utc>) -> LastWill {
    LastWill::new(
        DeviceTopic::new(appliance_id, Channel::Status).to_string(),
        presence_payload(appliance_id, at, false),
        QoS::AtLeastOnce,
        true,
    )
}

/// The MQTT options of an appliance's connection to the cloud broker, as the agent makes it: TLS
/// trusting only the device CA and presenting the appliance's certificate, the appliance id as
/// client id and user name, the password with its proof of the current key
/// ([`crate::identity::mqtt_password`]), a clean session, QoS 1 limits and the last will of a
/// connection attempted at `attempt_at`. The load generator (`stayopen-testkit`) connects its
/// simulated appliances with it, so they speak exactly as the agent does.
pub fn mqtt_options(
    identity: &Identity,
    attempt_at: DateTime<Utc>,
) -> Result<MqttOptions, TlsSetupError> {
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
    let password = crate::identity::mqtt_password(
        &identity.mqtt.password,
        appliance_id,
        &identity.private_key_pem,
    )
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot sign the MQTT key proof; the broker may refuse the connection");
        identity.mqtt.password.clone()
    });
    options
        .set_credentials(identity.mqtt.username.clone(), password)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024)
        .set_last_will(last_will(appliance_id, attempt_at));
    Ok(options)
}

/// Reconnect delays: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each stretched by up to
/// as much again at random, so a fleet that lost the cloud together does not reconnect in
/// lockstep.
fn reconnect_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

impl CloudLink {
    /// Connects over TLS with the appliance's certificate (and keeps reconnecting) in a
    /// background task, and starts the pump that sends what `outbox` holds. What the cloud sends
    /// (policies and commands) arrives on the returned channel.
    pub fn start(
        identity: &Identity,
        outbox: Outbox,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TlsSetupError> {
        let appliance_id = identity.appliance_id;
        let mut attempt_at = Utc::now();
        let options = mqtt_options(identity, attempt_at)?;
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let link = Self {
            client,
            appliance_id,
            outbox: Arc::new(Mutex::new(outbox)),
            counters: Arc::new(Counters::default()),
            pump: Arc::new(Notify::new()),
            closing: Arc::new(watch::channel(false).0),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        let pump = tokio::spawn(link.clone().pump_loop());
        let this = link.clone();
        let connection = tokio::spawn(async move {
            let counters = &this.counters;
            let mut delays = reconnect_delays();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        counters.connected.store(true, Ordering::Relaxed);
                        counters.connection.fetch_add(1, Ordering::Relaxed);
                        delays = reconnect_delays();
                        tracing::info!(%appliance_id, "connected to the cloud broker");
                        // Subscribe before announcing presence: the cloud answers presence by
                        // sending the desired policy and any queued commands.
                        for channel in Channel::CLOUD_TO_DEVICE {
                            let topic = DeviceTopic::new(appliance_id, channel).to_string();
                            if let Err(e) = this.client.try_subscribe(topic, QoS::AtLeastOnce) {
                                tracing::warn!(error = %e, "cannot subscribe");
                            }
                        }
                        this.publish_presence(true, attempt_at);
                        this.pump.notify_one();
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        match decode_inbound(appliance_id, &publish.topic, &publish.payload) {
                            Ok(Inbound::Ack(ack)) => this.acknowledged(&ack),
                            Ok(inbound) => {
                                if inbound_tx.send(inbound).await.is_err() {
                                    return;
                                }
                            }
                            Err(reason) => {
                                let rejected =
                                    counters.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                                tracing::warn!(%appliance_id, topic = %publish.topic, %reason, rejected,
                                    "rejected a message from the cloud");
                            }
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if this.is_closing() => {
                        counters.connected.store(false, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                    Err(_) if this.is_closing() => {
                        counters.connected.store(false, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        if counters.connected.swap(false, Ordering::Relaxed) {
                            tracing::warn!(%appliance_id, error = %e, "lost the cloud broker");
                        } else {
                            tracing::debug!(%appliance_id, error = %e, "cloud broker unreachable");
                        }
                        let mut closing = this.closing.subscribe();
                        tokio::select! {
                            () = tokio::time::sleep(delays.next().unwrap_or(BACKOFF_MAX)) => {}
                            _ = closing.wait_for(|closing| *closing) => return,
                        }
                        // The next connection's will carries its own time (see the module doc).
                        attempt_at = Utc::now();
                        eventloop
                            .mqtt_options
                            .set_last_will(last_will(appliance_id, attempt_at));
                    }
                }
            }
        });
        link.lock_tasks().extend([connection, pump]);
        Ok((link, inbound_rx))
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock cannot leave the store inconsistent (redb transactions
        // roll back), so a poisoned lock is safe to keep using.
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn acknowledged(&self, ack: &Ack) {
        let ids: Vec<MessageId> = ack.stored.iter().chain(&ack.rejected).copied().collect();
        match self.outbox().acknowledge(&ids) {
            Ok(removed) => {
                self.counters
                    .acknowledged
                    .fetch_add(removed as u64, Ordering::Relaxed);
                if !ack.rejected.is_empty() {
                    self.counters
                        .refused_by_cloud
                        .fetch_add(ack.rejected.len() as u64, Ordering::Relaxed);
                    tracing::warn!(appliance_id = %self.appliance_id, refused = ack.rejected.len(),
                        "the cloud refused messages for good");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot record the cloud's acknowledgement"),
        }
        self.pump.notify_one();
    }

    /// Sends what the outbox holds, oldest first, at most [`WINDOW`] ahead of the
    /// acknowledgements; starts again from the oldest after a reconnect or a stall.
    async fn pump_loop(self) {
        let counters = self.counters.clone();
        // Everything up to this sequence number was published on the current connection.
        let mut sent_through = 0u64;
        let mut connection = 0u64;
        let mut oldest_seen = None;
        let mut progress_at = Instant::now();
        loop {
            tokio::select! {
                () = self.pump.notified() => {}
                () = tokio::time::sleep(PUMP_TICK) => {}
            }
            if self.is_closing() {
                return;
            }
            if !counters.connected.load(Ordering::Relaxed) {
                continue;
            }
            let current = counters.connection.load(Ordering::Relaxed);
            if current != connection {
                connection = current;
                sent_through = 0;
                progress_at = Instant::now();
            }
            let oldest = match self.outbox().oldest() {
                Ok(oldest) => oldest,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    continue;
                }
            };
            if oldest != oldest_seen {
                oldest_seen = oldest;
                progress_at = Instant::now();
            } else if oldest.is_some_and(|o| o <= sent_through)
                && progress_at.elapsed() >= RESEND_AFTER
            {
                tracing::warn!(appliance_id = %self.appliance_id, "no acknowledgement for {RESEND_AFTER:?}; resending from the oldest message");
                sent_through = 0;
                progress_at = Instant::now();
            }
            if oldest.is_none() {
                continue;
            }
            let in_flight = match self.outbox().held_through(sent_through, WINDOW) {
                Ok(in_flight) => in_flight,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    continue;
                }
            };
            let room = WINDOW - in_flight;
            if room == 0 {
                continue;
            }
            let batch = match self.outbox().after(sent_through, room) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    continue;
                }
            };
            for entry in batch {
                if !counters.connected.load(Ordering::Relaxed) {
                    // A publish queued now would go out on the next connection ahead of the
                    // resend from the oldest message, out of order.
                    break;
                }
                let topic = DeviceTopic::new(self.appliance_id, entry.kind.channel()).to_string();
                let resend = entry.seq <= sent_through;
                if self
                    .client
                    .publish(topic, QoS::AtLeastOnce, false, entry.payload)
                    .await
                    .is_err()
                {
                    break;
                }
                if counters.connection.load(Ordering::Relaxed) != connection {
                    // Reconnected meanwhile: rumqttc dropped what it had not sent; start over.
                    break;
                }
                sent_through = entry.seq;
                counters.published.fetch_add(1, Ordering::Relaxed);
                if resend {
                    counters.resent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Messages from the cloud refused as malformed or misaddressed.
    pub fn rejected(&self) -> u64 {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.counters.connected.load(Ordering::Relaxed)
    }

    /// Messages the cloud has acknowledged as stored (or refused for good).
    pub fn acknowledged_count(&self) -> u64 {
        self.counters.acknowledged.load(Ordering::Relaxed)
    }

    /// Publishes the pump made (first sends and resends), and how many of them were resends.
    pub fn published_count(&self) -> (u64, u64) {
        (
            self.counters.published.load(Ordering::Relaxed),
            self.counters.resent.load(Ordering::Relaxed),
        )
    }

    /// Connections made so far.
    pub fn connections(&self) -> u64 {
        self.counters.connection.load(Ordering::Relaxed)
    }

    /// Messages that could not be written to the outbox and were sent from memory only.
    pub fn unstored(&self) -> u64 {
        self.counters.unstored.load(Ordering::Relaxed)
    }

    /// What the outbox holds and has given up, or `None` if it cannot be read.
    pub fn outbox_report(&self) -> Option<OutboxReport> {
        self.outbox()
            .report()
            .map_err(|e| tracing::error!(error = %e, "cannot read the outbox"))
            .ok()
    }

    /// Stores the message in the outbox and wakes the pump. If the disk refuses it, the message is
    /// still sent from memory (counted), since losing it for sure is worse than maybe.
    fn enqueue<T: Serialize>(&self, kind: Kind, at: DateTime<Utc>, body: T) {
        let message_id = MessageId(Uuid::new_v4());
        // Each event starts a trace the cloud continues through ingest, the alert and its
        // deliveries. It is inside the stored payload, so a resent event keeps it.
        let traceparent = (kind == Kind::Event).then(new_traceparent);
        let payload = Envelope::new(message_id, self.appliance_id, at, body)
            .with_traceparent(traceparent)
            .encode();
        let appended = self.outbox().append(kind, message_id, &payload);
        match appended {
            Ok(_) => self.pump.notify_one(),
            Err(e) => {
                let unstored = self.counters.unstored.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(appliance_id = %self.appliance_id, error = %e, unstored,
                    "cannot store a message in the outbox; sending it from memory");
                let topic = DeviceTopic::new(self.appliance_id, kind.channel()).to_string();
                let _ = self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload);
            }
        }
    }

    pub fn publish_command_result(&self, at: DateTime<Utc>, result: CommandResult) {
        self.enqueue(Kind::CommandResult, at, result);
    }

    pub fn publish_telemetry(&self, at: DateTime<Utc>, telemetry: Telemetry) {
        self.enqueue(Kind::Telemetry, at, telemetry);
    }

    pub fn publish_event(&self, at: DateTime<Utc>, event: ApplianceEvent) {
        self.enqueue(Kind::Event, at, event);
    }

    /// Presence is state, not record: retained, not kept in the outbox.
    fn publish_presence(&self, online: bool, at: DateTime<Utc>) {
        let topic = DeviceTopic::new(self.appliance_id, Channel::Status).to_string();
        if let Err(e) = self.client.try_publish(
            topic,
            QoS::AtLeastOnce,
            true,
            presence_payload(self.appliance_id, at, online),
        ) {
            tracing::warn!(appliance_id = %self.appliance_id, error = %e, "cannot queue presence");
        }
    }

    /// Says goodbye (offline presence) and disconnects cleanly. What is not acknowledged stays in
    /// the outbox for the next start.
    pub async fn shutdown(&self) {
        // Connected, give what waits (a restart command's result, the last telemetry) a moment
        // to be acknowledged, so a planned stop does not leave it for the next start.
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        self.pump.notify_one();
        while self.is_connected()
            && Instant::now() < deadline
            && self.outbox_report().is_some_and(|r| r.pending > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closing.send_replace(true);
        self.pump.notify_one();
        self.publish_presence(false, Utc::now());
        // Give the event loop a moment to flush before the disconnect request overtakes it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.client.try_disconnect();
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack_payload(appliance: ApplianceId, ids: Vec<MessageId>) -> Vec<u8> {
        Envelope::new(
            MessageId(Uuid::new_v4()),
            appliance,
            Utc::now(),
            Ack {
                stored: ids,
                rejected: vec![],
            },
        )
        .encode()
    }

    #[test]
    fn each_event_gets_a_fresh_sampled_w3c_traceparent() {
        let (a, b) = (new_traceparent(), new_traceparent());
        let parsed = TraceParent::parse(&a).expect("valid traceparent");
        assert!(parsed.sampled());
        let other = TraceParent::parse(&b).expect("valid traceparent");
        assert_ne!(parsed.trace_id, other.trace_id);
        assert_ne!(parsed.span_id, other.span_id);
    }

    #[test]
    fn an_ack_for_this_appliance_decodes() {
        let me = ApplianceId(Uuid::from_u128(1));
        let topic = DeviceTopic::new(me, Channel::Acks).to_string();
        let ids = vec![MessageId(Uuid::from_u128(5))];
        assert_eq!(
            decode_inbound(me, &topic, &ack_payload(me, ids.clone())),
            Ok(Inbound::Ack(Ack {
                stored: ids,
                rejected: vec![]
            }))
        );
    }

    #[test]
    fn an_ack_naming_another_appliance_is_refused() {
        let me = ApplianceId(Uuid::from_u128(1));
        let other = ApplianceId(Uuid::from_u128(2));
        let topic = DeviceTopic::new(me, Channel::Acks).to_string();
        assert!(decode_inbound(me, &topic, &ack_payload(other, vec![])).is_err());
        let their_topic = DeviceTopic::new(other, Channel::Acks).to_string();
        assert!(decode_inbound(me, &their_topic, &ack_payload(other, vec![])).is_err());
    }

    #[test]
    fn reconnect_delays_double_up_to_the_cap_and_are_spread_by_jitter() {
        let delays: Vec<Duration> = reconnect_delays().take(12).collect();
        assert!(
            delays[0] >= BACKOFF_MIN && delays[0] < BACKOFF_MIN * 2,
            "{delays:?}"
        );
        for d in &delays {
            assert!(*d >= BACKOFF_MIN && *d < BACKOFF_MAX * 2, "{d:?}");
        }
        assert!(delays[11] >= BACKOFF_MAX, "capped: {delays:?}");
        let again: Vec<Duration> = reconnect_delays().take(12).collect();
        assert_ne!(delays, again, "two appliances do not wait alike");
    }
}
