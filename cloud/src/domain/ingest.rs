//! MQTT ingest: everything appliances publish passes through here.
//!
//! Each message is decoded against the shared wire types ([`decode`], pure), then stored
//! ([`store`]); after the commit the appliance is sent an [`Ack`] naming it, so it can drop the
//! message from its outbox (resends are de-duplicated by message id, so each is stored once). A message that fails validation is rejected with a stable reason: counted in
//! [`Metrics`], logged, and kept in `ingest_rejections`. A database failure is not the device's
//! fault, so the message is retried until it is stored rather than dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use stayopen_shared::commands::CommandResult;
use stayopen_shared::delivery::{Ack, MAX_IDS_PER_ACK};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Presence, Telemetry};
use stayopen_shared::topics::TopicError;
use stayopen_shared::{
    ApplianceId, Channel, DeviceTopic, Envelope, MessageId, TenantId, WireError,
};
use uuid::Uuid;

use crate::infra::device_link::DeviceLink;
use crate::infra::hearing::Hearing;
use crate::infra::metrics::{
    INGEST_ACCEPTED, INGEST_ACKNOWLEDGED, INGEST_CORRECTED, INGEST_DUPLICATE, INGEST_REJECTED,
    INGEST_SHED, INGEST_STORE_RETRIES, Metrics,
};

/// A message that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceMessage {
    Telemetry(Envelope<Telemetry>),
    Event(Envelope<ApplianceEvent>),
    Presence(Envelope<Presence>),
    CommandResult(Envelope<CommandResult>),
}

impl DeviceMessage {
    /// The appliance the envelope names.
    pub fn appliance_id(&self) -> stayopen_shared::ApplianceId {
        match self {
            DeviceMessage::Telemetry(e) => e.appliance_id,
            DeviceMessage::Event(e) => e.appliance_id,
            DeviceMessage::Presence(e) => e.appliance_id,
            DeviceMessage::CommandResult(e) => e.appliance_id,
        }
    }

    /// When the appliance sent it.
    pub fn sent_at(&self) -> chrono::DateTime<Utc> {
        match self {
            DeviceMessage::Telemetry(e) => e.sent_at,
            DeviceMessage::Event(e) => e.sent_at,
            DeviceMessage::Presence(e) => e.sent_at,
            DeviceMessage::CommandResult(e) => e.sent_at,
        }
    }

    /// The id the appliance's outbox waits to see acknowledged; presence is not kept there.
    pub fn outbox_message_id(&self) -> Option<MessageId> {
        match self {
            DeviceMessage::Telemetry(e) => Some(e.message_id),
            DeviceMessage::Event(e) => Some(e.message_id),
            DeviceMessage::CommandResult(e) => Some(e.message_id),
            DeviceMessage::Presence(_) => None,
        }
    }

    fn channel(&self) -> &'static str {
        match self {
            DeviceMessage::Telemetry(_) => Channel::Telemetry.as_str(),
            DeviceMessage::Event(_) => Channel::Events.as_str(),
            DeviceMessage::Presence(_) => Channel::Status.as_str(),
            DeviceMessage::CommandResult(_) => Channel::CommandResults.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("devices may not publish on the {0} channel")]
    WrongDirection(&'static str),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("envelope names appliance {envelope} but was published under {topic}'s prefix")]
    ApplianceMismatch { topic: String, envelope: String },
    #[error("appliance {0} is not enrolled")]
    UnknownAppliance(String),
    #[error("appliance {0} has been revoked")]
    RevokedAppliance(String),
    #[error("{detail}")]
    Invalid {
        reason: &'static str,
        detail: String,
    },
}

impl Rejection {
    /// Stable label for counters and the rejections table.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TopicNotUtf8 | Rejection::Topic(_) => "bad_topic",
            Rejection::WrongDirection(_) => "wrong_direction",
            Rejection::Wire(e) => e.reason(),
            Rejection::ApplianceMismatch { .. } => "appliance_mismatch",
            Rejection::UnknownAppliance(_) => "unknown_appliance",
            Rejection::RevokedAppliance(_) => "revoked_appliance",
            Rejection::Invalid { reason, .. } => reason,
        }
    }
}

/// Validates one message. Pure: no I/O, never panics.
pub fn decode(topic: &[u8], payload: &[u8]) -> Result<DeviceMessage, Rejection> {
    let topic = std::str::from_utf8(topic).map_err(|_| Rejection::TopicNotUtf8)?;
    let topic = DeviceTopic::parse(topic)?;
    let message = match topic.channel {
        Channel::Telemetry => DeviceMessage::Telemetry(Envelope::decode(payload)?),
        Channel::Events => DeviceMessage::Event(Envelope::decode(payload)?),
        Channel::Status => DeviceMessage::Presence(Envelope::decode(payload)?),
        Channel::CommandResults => DeviceMessage::CommandResult(Envelope::decode(payload)?),
        channel @ (Channel::Policy | Channel::Commands | Channel::Acks) => {
            return Err(Rejection::WrongDirection(channel.as_str()));
        }
    };
    let envelope_appliance = message.appliance_id();
    if envelope_appliance != topic.appliance_id {
        return Err(Rejection::ApplianceMismatch {
            topic: topic.appliance_id.to_string(),
            envelope: envelope_appliance.to_string(),
        });
    }
    Ok(message)
}

/// Uplinks one telemetry message may describe (an appliance has two to four).
pub const MAX_UPLINKS: usize = 16;
/// Characters of an uplink name (the appliance's configured names: `fiber`, `lte`, …).
pub const MAX_NAME_CHARS: usize = 64;
/// Characters of any other string a device sends (reasons, versions, application names).
pub const MAX_STRING_CHARS: usize = 1024;
/// Items of any list a device sends (applications checked, drill results).
pub const MAX_LIST_ITEMS: usize = 128;
/// A round-trip time or latency beyond ten minutes is not a measurement.
pub const MAX_RTT_MS: f64 = 600_000.0;
/// Reporting windows one rolled-up sample may cover: a year of 10-second windows.
pub const MAX_SAMPLES: u32 = 3_153_600;
/// How far in the past a device's clock may put a message: an outbox holds weeks of outage at
/// most, and the records are kept six years; older stamps are moved up to this bound.
pub const MAX_AGE: chrono::Duration = chrono::Duration::days(400);
/// A stamp this far ahead of the cloud's clock is counted and logged when it is clamped to now.
pub const NOTED_FUTURE_SKEW: chrono::Duration = chrono::Duration::seconds(5);

fn invalid(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection::Invalid {
        reason,
        detail: detail.into(),
    }
}

/// Every string and list in a device's message is bounded, whatever its type says.
fn check_bounded(value: &serde_json::Value) -> Result<(), Rejection> {
    match value {
        serde_json::Value::String(text) if text.chars().count() > MAX_STRING_CHARS => Err(invalid(
            "string_too_long",
            format!("a string of {} characters", text.chars().count()),
        )),
        serde_json::Value::Array(items) if items.len() > MAX_LIST_ITEMS => Err(invalid(
            "list_too_long",
            format!("a list of {} items", items.len()),
        )),
        serde_json::Value::Array(items) => items.iter().try_for_each(check_bounded),
        serde_json::Value::Object(fields) => fields.values().try_for_each(check_bounded),
        _ => Ok(()),
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Rejection> {
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "bad_uplink_name",
            format!("{what} must be 1-{MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(())
}

fn check_milliseconds(what: &str, value: Option<f64>) -> Result<(), Rejection> {
    match value {
        Some(ms) if !(ms.is_finite() && (0.0..=MAX_RTT_MS).contains(&ms)) => Err(invalid(
            "value_out_of_range",
            format!("{what} {ms} is not within 0-{MAX_RTT_MS} ms"),
        )),
        _ => Ok(()),
    }
}

/// The values of a telemetry message are finite and in range, its uplinks bounded in number and
/// named within bounds, once each.
pub fn check_telemetry(telemetry: &Telemetry) -> Result<(), Rejection> {
    if telemetry.uplinks.len() > MAX_UPLINKS {
        return Err(invalid(
            "too_many_uplinks",
            format!(
                "{} uplinks (at most {MAX_UPLINKS})",
                telemetry.uplinks.len()
            ),
        ));
    }
    if let Some(active) = &telemetry.active_uplink {
        check_name("the active uplink", active)?;
    }
    let mut names = std::collections::HashSet::new();
    for uplink in &telemetry.uplinks {
        check_name("an uplink name", &uplink.name)?;
        if !names.insert(uplink.name.as_str()) {
            return Err(invalid(
                "duplicate_uplink",
                format!("uplink {:?} listed twice", uplink.name),
            ));
        }
        check_milliseconds("rtt_ms", uplink.rtt_ms)?;
        if !(uplink.loss_pct.is_finite() && (0.0..=100.0).contains(&uplink.loss_pct)) {
            return Err(invalid(
                "value_out_of_range",
                format!("loss_pct {} is not within 0-100", uplink.loss_pct),
            ));
        }
        // Counters are stored as JSON and summed in SQL as bigint.
        if i64::try_from(uplink.rx_bytes).is_err() || i64::try_from(uplink.tx_bytes).is_err() {
            return Err(invalid("value_out_of_range", "a byte counter beyond 2^63"));
        }
        // A cellular modem's figures within what 3GPP lets a modem report (issue 17).
        if let Some(why) = uplink.cellular.as_ref().and_then(|c| c.implausible()) {
            return Err(invalid(
                "value_out_of_range",
                format!("uplink {:?}'s modem: {why}", uplink.name),
            ));
        }
    }
    if telemetry.sample_count() > MAX_SAMPLES {
        return Err(invalid(
            "value_out_of_range",
            format!("samples {} beyond {MAX_SAMPLES}", telemetry.sample_count()),
        ));
    }
    if let Some(version) = telemetry.policy_version
        && i64::try_from(version).is_err()
    {
        return Err(invalid(
            "value_out_of_range",
            "a policy version beyond 2^63",
        ));
    }
    if let Some(outbox) = &telemetry.outbox {
        let counters = [
            outbox.pending,
            outbox.pending_bytes,
            outbox.telemetry_rolled_up,
            outbox.telemetry_dropped,
            outbox.events_dropped,
        ];
        if counters.iter().any(|c| i64::try_from(*c).is_err()) {
            return Err(invalid(
                "value_out_of_range",
                "an outbox counter beyond 2^63",
            ));
        }
    }
    for app in &telemetry.apps {
        check_name("an application check's uplink", &app.uplink)?;
        check_milliseconds("latency_ms", app.latency_ms)?;
    }
    if let Some(tunnel) = &telemetry.tunnel {
        check_tunnel(tunnel)?;
    }
    Ok(())
}

/// The tunnel report: its relay and uplinks named within bounds, one redundant-mode counter per
/// uplink at most, and counters that fit the bigint they are summed as.
fn check_tunnel(tunnel: &stayopen_shared::tunnel::TunnelReport) -> Result<(), Rejection> {
    if let Some(relay) = &tunnel.relay {
        check_name("the tunnel's relay", relay)?;
    }
    if tunnel.redundant_bytes.len() > MAX_UPLINKS {
        return Err(invalid(
            "too_many_uplinks",
            format!(
                "redundant-mode counters for {} uplinks (at most {MAX_UPLINKS})",
                tunnel.redundant_bytes.len()
            ),
        ));
    }
    for (uplink, bytes) in &tunnel.redundant_bytes {
        check_name("a redundant-mode uplink", uplink)?;
        if i64::try_from(*bytes).is_err() {
            return Err(invalid("value_out_of_range", "a byte counter beyond 2^63"));
        }
    }
    if i64::try_from(tunnel.tunnel_bytes).is_err() {
        return Err(invalid("value_out_of_range", "a byte counter beyond 2^63"));
    }
    Ok(())
}

fn check_event(event: &ApplianceEvent) -> Result<(), Rejection> {
    for (what, name) in [
        ("an event's uplink", &event.uplink),
        ("an event's from", &event.from),
        ("an event's to", &event.to),
    ] {
        if let Some(name) = name {
            check_name(what, name)?;
        }
    }
    if let Some(drill) = &event.drill {
        if let Some(backup) = &drill.backup {
            check_name("a drill's backup", backup)?;
        }
        for app in &drill.apps {
            check_milliseconds("latency_ms", app.latency_ms)?;
        }
    }
    Ok(())
}

/// What [`admit`] changed in a message it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// `sent_at` was ahead of the cloud's clock (by more than [`NOTED_FUTURE_SKEW`]) and is now.
    SentAtFromTheFuture,
    /// `sent_at` was older than [`MAX_AGE`] and is moved up to it.
    SentAtTooOld,
}

impl Correction {
    pub fn reason(self) -> &'static str {
        match self {
            Correction::SentAtFromTheFuture => "sent_at_future",
            Correction::SentAtTooOld => "sent_at_too_old",
        }
    }
}

/// Checks every value of a decoded message against its bounds, and clamps its `sent_at` into
/// `[now - MAX_AGE, now]`: a device clock ahead of the cloud must not freeze presence, the
/// active uplink or alert conditions (each keeps the latest stamp), nor one far behind land
/// outside the database's range. Pure.
pub fn admit(
    mut message: DeviceMessage,
    now: chrono::DateTime<Utc>,
) -> Result<(DeviceMessage, Option<Correction>), Rejection> {
    let body = match &message {
        DeviceMessage::Telemetry(e) => serde_json::to_value(&e.body),
        DeviceMessage::Event(e) => serde_json::to_value(&e.body),
        DeviceMessage::Presence(e) => serde_json::to_value(&e.body),
        DeviceMessage::CommandResult(e) => serde_json::to_value(&e.body),
    }
    .map_err(|e| invalid("malformed", e.to_string()))?;
    check_bounded(&body)?;
    match &message {
        DeviceMessage::Telemetry(e) => check_telemetry(&e.body)?,
        DeviceMessage::Event(e) => check_event(&e.body)?,
        DeviceMessage::Presence(_) | DeviceMessage::CommandResult(_) => {}
    }
    let sent_at = message.sent_at();
    let (clamped, correction) = if sent_at > now {
        let noted = sent_at - now > NOTED_FUTURE_SKEW;
        (now, noted.then_some(Correction::SentAtFromTheFuture))
    } else if sent_at < now - MAX_AGE {
        (now - MAX_AGE, Some(Correction::SentAtTooOld))
    } else {
        (sent_at, None)
    };
    match &mut message {
        DeviceMessage::Telemetry(e) => e.sent_at = clamped,
        DeviceMessage::Event(e) => e.sent_at = clamped,
        DeviceMessage::Presence(e) => e.sent_at = clamped,
        DeviceMessage::CommandResult(e) => e.sent_at = clamped,
    }
    Ok((message, correction))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the appliance's policy layers do not combine: {0}")]
    Policy(String),
}

/// Stores a validated message. Telemetry and events are de-duplicated by message id; presence
/// updates the appliance's online flag.
pub async fn store(
    pool: &PgPool,
    link: &DeviceLink,
    message: &DeviceMessage,
) -> Result<Stored, StoreError> {
    let appliance_id = message.appliance_id();
    let Some(tenant) = crate::infra::db::lookup::appliance_tenant(pool, appliance_id).await? else {
        return Err(Rejection::UnknownAppliance(appliance_id.to_string()).into());
    };
    let mut tx = crate::infra::db::tenant_tx(pool, tenant).await?;
    let row: Option<(uuid::Uuid, bool, bool)> = sqlx::query_as(
        "SELECT tenant_id, revoked_at IS NOT NULL, online FROM appliances WHERE id = $1 FOR UPDATE",
    )
    .bind(appliance_id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let (tenant_id, was_online) = match row {
        None => return Err(Rejection::UnknownAppliance(appliance_id.to_string()).into()),
        Some((_, true, _)) => {
            return Err(Rejection::RevokedAppliance(appliance_id.to_string()).into());
        }
        Some((tenant_id, false, online)) => (tenant_id, online),
    };
    // A message from an appliance marked offline (by its last will or the heartbeat sweep) brings
    // it back: its offline alert clears.
    let mut alert_changes = Vec::new();
    let heard_from = |alert_changes: &mut Vec<crate::domain::alerts::AlertChange>,
                      now_online: bool| {
        if !was_online && now_online {
            alert_changes.extend(crate::domain::alerts::rules_for_presence(
                true,
                "messages arrive again",
            ));
        }
    };
    let stored = match message {
        DeviceMessage::Telemetry(env) => {
            // One implementation of storing telemetry: the batch one, with a batch of one.
            match store_telemetry_in(&mut tx, tenant, &[env]).await?.pop() {
                Some(Ok(stored)) => stored,
                Some(Err(rejection)) => return Err(rejection.into()),
                None => Stored::Duplicate,
            }
        }
        DeviceMessage::Event(env) => {
            let body = serde_json::to_value(&env.body).unwrap_or_default();
            let kind = serde_json::to_value(env.body.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let inserted = sqlx::query(
                "INSERT INTO appliance_events (message_id, appliance_id, tenant_id, kind, sent_at, body)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(env.message_id.as_uuid())
            .bind(appliance_id.as_uuid())
            .bind(tenant_id)
            .bind(kind)
            .bind(env.sent_at)
            .bind(&body)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Its preferred uplink, as its telemetry last named it: a switch to it is a return
            // to normal, whatever the event calls it.
            let (now_online, primary): (bool, Option<String>) = sqlx::query_as(
                "UPDATE appliances SET
                    online = online OR presence_at IS NULL OR $2 > presence_at OR presence_at > now(),
                    last_seen = now()
                 WHERE id = $1
                 RETURNING online,
                           (SELECT u->>'name' FROM jsonb_array_elements(
                                CASE WHEN jsonb_typeof(last_telemetry->'uplinks') = 'array'
                                     THEN last_telemetry->'uplinks' ELSE '[]' END)
                                WITH ORDINALITY AS e(u, n)
                            ORDER BY (u->>'priority')::int, n LIMIT 1)",
            )
            .bind(appliance_id.as_uuid())
            .bind(env.sent_at)
            .fetch_one(&mut *tx)
            .await?;
            heard_from(&mut alert_changes, now_online);
            if inserted == 1 {
                // A new entry on the appliance's timeline.
                crate::infra::stream::notify_appliance(&mut tx, appliance_id).await?;
                // Compliance records: drills and incidents are built from events.
                crate::domain::compliance::drills::on_event(
                    &mut tx,
                    tenant,
                    appliance_id,
                    &env.body,
                    env.sent_at,
                )
                .await?;
                crate::domain::compliance::incidents::on_event(
                    &mut tx,
                    tenant,
                    appliance_id,
                    &env.body,
                    env.sent_at,
                )
                .await?;
                alert_changes.extend(crate::domain::alerts::rules_for_event(
                    &env.body,
                    primary.as_deref(),
                ));
                if env.body.kind == EventKind::Failover {
                    alert_changes.extend(
                        crate::domain::alerts::failover_rules(&mut tx, appliance_id, env.sent_at)
                            .await?,
                    );
                }
                Stored::New
            } else {
                Stored::Duplicate
            }
        }
        DeviceMessage::Presence(env) => {
            let applied = sqlx::query(
                "UPDATE appliances SET online = $2,
                    last_seen = CASE WHEN $2 THEN now() ELSE last_seen END,
                    agent_version = $3,
                    presence_at = $4
                 WHERE id = $1 AND (presence_at IS NULL OR presence_at <= $4 OR presence_at > now())",
            )
            .bind(appliance_id.as_uuid())
            .bind(env.body.online)
            .bind(&env.body.agent_version)
            .bind(env.sent_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if applied == 1 && env.body.online != was_online {
                crate::infra::stream::notify_appliance(&mut tx, appliance_id).await?;
                // In words for people: the MQTT goodbye and last will are the appliance shutting
                // down and its connection dropping, which a technician cannot tell apart here.
                let why = if env.body.online {
                    "connected to the cloud again"
                } else {
                    "its connection to the cloud closed (shut down, or all its uplinks lost)"
                };
                let changes = crate::domain::alerts::rules_for_presence(env.body.online, why);
                crate::domain::alerts::apply(&mut tx, tenant, appliance_id, &changes, env.sent_at)
                    .await?;
            }
            if env.body.online {
                // The appliance (re)connected, perhaps to a broker that has just restarted and
                // holds nothing: send its desired policy again and deliver what waits for it.
                crate::domain::policy::refresh(&mut tx, tenant, &[appliance_id.0])
                    .await
                    .map_err(|e| match e {
                        crate::domain::policy::DesiredError::Database(e) => StoreError::Database(e),
                        other => StoreError::Policy(other.to_string()),
                    })?;
                let messages = crate::domain::policy::outgoing(&mut tx, &[appliance_id]).await?;
                tx.commit().await?;
                crate::domain::policy::send(link, messages);
                link.wake_delivery.notify_one();
                return Ok(Stored::New);
            }
            Stored::New
        }
        DeviceMessage::CommandResult(env) => {
            if crate::domain::commands::record_result(&mut tx, appliance_id, &env.body).await? {
                crate::infra::stream::notify_appliance(&mut tx, appliance_id).await?;
                Stored::New
            } else {
                Stored::Duplicate
            }
        }
    };
    if !alert_changes.is_empty() {
        crate::domain::alerts::apply(
            &mut tx,
            tenant,
            appliance_id,
            &alert_changes,
            message.sent_at(),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(stored)
}

/// Stores telemetry messages a batch at a time (the bulk of what a fleet sends): one lookup of
/// their appliances' tenants, then per tenant one transaction of a fixed number of statements
/// whatever the batch's size ([`store_telemetry_in`]). Returns each message's outcome, in order; a
/// message id seen twice in the batch is stored once. A database error fails the whole batch,
/// which is then stored again: what an earlier attempt committed comes back as duplicates.
pub async fn store_telemetry(
    pool: &PgPool,
    messages: &[&Envelope<Telemetry>],
) -> Result<Vec<Result<Stored, Rejection>>, sqlx::Error> {
    let mut outcomes: Vec<Option<Result<Stored, Rejection>>> = std::iter::repeat_with(|| None)
        .take(messages.len())
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (index, message) in messages.iter().enumerate() {
        if !seen.insert(message.message_id) {
            outcomes[index] = Some(Ok(Stored::Duplicate));
        }
    }
    let mut appliances: Vec<ApplianceId> = messages.iter().map(|m| m.appliance_id).collect();
    appliances.sort_unstable();
    appliances.dedup();
    let tenants = crate::infra::db::lookup::appliance_tenants(pool, &appliances).await?;
    let mut by_tenant: std::collections::BTreeMap<TenantId, Vec<usize>> = Default::default();
    for (index, message) in messages.iter().enumerate() {
        if outcomes[index].is_some() {
            continue;
        }
        match tenants.get(&message.appliance_id) {
            Some(tenant) => by_tenant.entry(*tenant).or_default().push(index),
            None => {
                outcomes[index] = Some(Err(Rejection::UnknownAppliance(
                    message.appliance_id.to_string(),
                )));
            }
        }
    }
    for (tenant, indices) in by_tenant {
        let batch: Vec<&Envelope<Telemetry>> = indices.iter().map(|&i| messages[i]).collect();
        let mut tx = crate::infra::db::tenant_tx(pool, tenant).await?;
        let stored = store_telemetry_in(&mut tx, tenant, &batch).await?;
        tx.commit().await?;
        for (index, outcome) in indices.into_iter().zip(stored) {
            outcomes[index] = Some(outcome);
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Ok(Stored::Duplicate)))
        .collect())
}

/// One tenant's telemetry messages, in `tx`, in a fixed number of statements: the appliances'
/// rows locked (in id order, so concurrent batches cannot deadlock) and checked; the samples
/// inserted with one `UNNEST` (a message id already stored is a duplicate); the alert rules run
/// over the new samples (pure); each appliance's dashboard state (from its newest sample) and
/// uplink conditions written in one `UPDATE`; then the availability roll-up and open incidents
/// for the new samples. Alerts the samples raise or clear are applied per message, at its
/// `sent_at` (rare: only when something changed).
async fn store_telemetry_in(
    tx: &mut crate::infra::db::Tx,
    tenant: TenantId,
    messages: &[&Envelope<Telemetry>],
) -> Result<Vec<Result<Stored, Rejection>>, sqlx::Error> {
    let mut ids: Vec<Uuid> = messages.iter().map(|m| m.appliance_id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    /// An appliance: revoked, online, its desired policy and uplink conditions.
    type Row = (
        Uuid,
        bool,
        bool,
        Option<sqlx::types::Json<stayopen_shared::policy::Policy>>,
        Option<sqlx::types::Json<crate::domain::alerts::UplinkConditions>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, revoked_at IS NOT NULL, online, desired_policy, uplink_conditions
         FROM appliances WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut known: HashMap<Uuid, (bool, bool)> = HashMap::with_capacity(rows.len());
    let mut rule_state: HashMap<ApplianceId, crate::domain::alerts::TelemetryRuleState> =
        HashMap::with_capacity(rows.len());
    for (id, revoked, online, policy, conditions) in rows {
        known.insert(id, (revoked, online));
        rule_state.insert(
            ApplianceId(id),
            crate::domain::alerts::TelemetryRuleState {
                policy: policy.map(|p| p.0).unwrap_or_default(),
                conditions: conditions.map(|c| c.0).unwrap_or_default(),
                changed: false,
            },
        );
    }
    let mut outcomes: Vec<Result<Stored, Rejection>> = Vec::with_capacity(messages.len());
    let mut accepted: Vec<&Envelope<Telemetry>> = Vec::with_capacity(messages.len());
    for message in messages {
        let appliance = message.appliance_id;
        outcomes.push(match known.get(&appliance.0) {
            None => Err(Rejection::UnknownAppliance(appliance.to_string())),
            Some((true, _)) => Err(Rejection::RevokedAppliance(appliance.to_string())),
            Some((false, _)) => {
                accepted.push(message);
                Ok(Stored::Duplicate)
            }
        });
    }
    if accepted.is_empty() {
        return Ok(outcomes);
    }

    // Serialized straight from the typed body: no intermediate `serde_json::Value` per message.
    let bodies: Vec<sqlx::types::Json<&Telemetry>> = accepted
        .iter()
        .map(|m| sqlx::types::Json(&m.body))
        .collect();
    let message_ids: Vec<Uuid> = accepted.iter().map(|m| m.message_id.0).collect();
    let appliance_ids: Vec<Uuid> = accepted.iter().map(|m| m.appliance_id.0).collect();
    let sent: Vec<chrono::DateTime<Utc>> = accepted.iter().map(|m| m.sent_at).collect();
    // A resent message may carry another `sent_at` (clamped differently), hence the explicit
    // check on the id besides the (message_id, sent_at) key of the partitioned table. The check
    // is a `LATERAL … LIMIT 1` probe per message, not `NOT EXISTS`: the planner may turn
    // `NOT EXISTS` into a hash anti-join that reads the whole month's partition on every batch
    // whenever its statistics lag its size (a new month, a fresh database; measured: a batch of
    // 500 took 134 ms against 200,000 rows, and ingest fell from 13,000 to 1,200 messages/s as
    // the partition grew). A `LIMIT` subquery cannot become a join, so each message is one
    // primary-key probe per partition whatever the statistics say.
    let inserted: std::collections::HashSet<Uuid> = sqlx::query_scalar(
        "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, body)
         SELECT t.message_id, t.appliance_id, $1, t.sent_at, t.body
         FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[])
              AS t(message_id, appliance_id, sent_at, body)
         LEFT JOIN LATERAL (SELECT true AS seen FROM telemetry x
                            WHERE x.message_id = t.message_id LIMIT 1) earlier ON true
         WHERE earlier.seen IS NULL
         ON CONFLICT (message_id, sent_at) DO NOTHING
         RETURNING message_id",
    )
    .bind(tenant.as_uuid())
    .bind(&message_ids)
    .bind(&appliance_ids)
    .bind(&sent)
    .bind(&bodies)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();

    // Each appliance's newest sample sets what the dashboard shows; its newest that names a
    // policy version says which policy it runs.
    let mut newest: HashMap<Uuid, usize> = HashMap::new();
    let mut newest_version: HashMap<Uuid, (chrono::DateTime<Utc>, i64)> = HashMap::new();
    for (index, message) in accepted.iter().enumerate() {
        let appliance = message.appliance_id.0;
        let entry = newest.entry(appliance).or_insert(index);
        if accepted[*entry].sent_at <= message.sent_at {
            *entry = index;
        }
        if let Some(version) = message.body.policy_version {
            let version = i64::try_from(version).unwrap_or(i64::MAX);
            let slot = newest_version
                .entry(appliance)
                .or_insert((message.sent_at, version));
            if slot.0 <= message.sent_at {
                *slot = (message.sent_at, version);
            }
        }
    }
    let mut to_notify: std::collections::BTreeSet<ApplianceId> = Default::default();
    if !newest_version.is_empty() {
        let (ids, versions): (Vec<Uuid>, Vec<i64>) =
            newest_version.iter().map(|(id, (_, v))| (*id, *v)).unzip();
        // The dashboard shows drift: tell it the appliance caught up.
        let caught_up: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE appliances a SET reported_version = v.version, reported_at = now()
             FROM unnest($1::uuid[], $2::bigint[]) AS v(id, version)
             WHERE a.id = v.id AND a.reported_version IS DISTINCT FROM v.version
             RETURNING a.id",
        )
        .bind(&ids)
        .bind(&versions)
        .fetch_all(&mut **tx)
        .await?;
        to_notify.extend(caught_up.into_iter().map(ApplianceId));
    }
    // The alert rules' uplink conditions, carried through the new samples; written with the
    // appliance's state below, in the same statement.
    let new_samples: Vec<(ApplianceId, &Telemetry, chrono::DateTime<Utc>)> = accepted
        .iter()
        .filter(|m| inserted.contains(&m.message_id.0))
        .map(|m| (m.appliance_id, &m.body, m.sent_at))
        .collect();
    let mut rule_changes =
        crate::domain::alerts::telemetry_rules(&mut rule_state, &new_samples).into_iter();
    let latest: Vec<usize> = newest.values().copied().collect();
    let state_conditions: Vec<Option<serde_json::Value>> = latest
        .iter()
        .map(|&i| {
            rule_state
                .get(&accepted[i].appliance_id)
                .filter(|state| state.changed)
                .and_then(|state| serde_json::to_value(&state.conditions).ok())
        })
        .collect();
    let state_ids: Vec<Uuid> = latest.iter().map(|&i| accepted[i].appliance_id.0).collect();
    let state_sent: Vec<chrono::DateTime<Utc>> =
        latest.iter().map(|&i| accepted[i].sent_at).collect();
    let state_active: Vec<Option<String>> = latest
        .iter()
        .map(|&i| accepted[i].body.active_uplink.clone())
        .collect();
    let state_bodies: Vec<&sqlx::types::Json<&Telemetry>> =
        latest.iter().map(|&i| &bodies[i]).collect();
    let state_backup: Vec<bool> = latest
        .iter()
        .map(|&i| accepted[i].body.on_backup())
        .collect();
    let changed: Vec<(Uuid, bool, bool, bool, Option<serde_json::Value>)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::jsonb[], $5::bool[],
                                  $6::jsonb[])
                 AS t(id, sent_at, active_uplink, body, on_backup, conditions)
         ), before AS (
             SELECT a.id, a.active_uplink, a.last_telemetry->'tunnel'->'state' AS tunnel_state,
                    a.last_telemetry->'tunnel'->'relay' AS tunnel_relay,
                    a.last_telemetry->'uplinks' AS uplinks
             FROM appliances a JOIN input USING (id)
         )
         UPDATE appliances a SET
            online = a.online OR a.presence_at IS NULL OR i.sent_at > a.presence_at
                     OR a.presence_at > now(),
            last_seen = now(),
            active_uplink = CASE WHEN a.last_telemetry_at IS NULL OR a.last_telemetry_at <= i.sent_at
                                      OR a.last_telemetry_at > now()
                                 THEN i.active_uplink ELSE a.active_uplink END,
            on_backup = CASE WHEN a.last_telemetry_at IS NULL OR a.last_telemetry_at <= i.sent_at
                                  OR a.last_telemetry_at > now()
                             THEN i.on_backup ELSE a.on_backup END,
            last_telemetry = CASE WHEN a.last_telemetry_at IS NULL OR a.last_telemetry_at <= i.sent_at
                                       OR a.last_telemetry_at > now()
                                  THEN i.body ELSE a.last_telemetry END,
            -- A stamp ahead of the clock is from before ingest clamped them: not kept.
            last_telemetry_at = CASE WHEN a.last_telemetry_at > now() THEN i.sent_at
                                     ELSE greatest(a.last_telemetry_at, i.sent_at) END,
            uplink_conditions = coalesce(i.conditions, a.uplink_conditions)
         FROM input i JOIN before b ON b.id = i.id
         WHERE a.id = i.id
         RETURNING a.id, a.online, a.active_uplink IS DISTINCT FROM b.active_uplink,
                   a.last_telemetry->'tunnel'->'state' IS DISTINCT FROM b.tunnel_state
                   OR a.last_telemetry->'tunnel'->'relay' IS DISTINCT FROM b.tunnel_relay,
                   b.uplinks",
    )
    .bind(&state_ids)
    .bind(&state_sent)
    .bind(&state_active)
    .bind(&state_bodies)
    .bind(&state_backup)
    .bind(&state_conditions)
    .fetch_all(&mut **tx)
    .await?;
    // Appliances marked offline (by their last will or the heartbeat sweep) that this batch
    // brings back: their offline alert clears, with their first message.
    let mut back_online: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    for (id, now_online, uplink_changed, tunnel_changed, uplinks_before) in changed {
        let was_online = known.get(&id).is_some_and(|(_, online)| *online);
        // The dashboard shows the active uplink, the presence, the tunnel's state and each
        // modem's state and signal quality (an antenna being placed: issue 17).
        let uplinks_before: Vec<stayopen_shared::telemetry::UplinkTelemetry> = uplinks_before
            .and_then(|u| serde_json::from_value(u).ok())
            .unwrap_or_default();
        let cellular_changed = newest.get(&id).is_some_and(|&i| {
            stayopen_shared::cellular::placement_labels(&uplinks_before)
                != stayopen_shared::cellular::placement_labels(&accepted[i].body.uplinks)
        });
        if uplink_changed || tunnel_changed || cellular_changed || now_online != was_online {
            to_notify.insert(ApplianceId(id));
        }
        if !was_online && now_online {
            back_online.insert(id);
        }
    }
    let to_notify: Vec<ApplianceId> = to_notify.into_iter().collect();
    crate::infra::stream::notify_appliances(tx, &to_notify).await?;

    // Compliance records, for what is new: the availability roll-up, the open incidents' checks.
    let intervals: HashMap<ApplianceId, u32> = rule_state
        .iter()
        .map(|(appliance, state)| (*appliance, state.policy.telemetry_interval_secs))
        .collect();
    crate::domain::compliance::availability::on_telemetry(tx, tenant, &new_samples, &intervals)
        .await?;
    crate::domain::compliance::incidents::on_telemetry(tx, &new_samples).await?;
    // Each appliance's newest sample that shows traffic on its primary clears the on-backup
    // alerts seen before it, whatever path led back (issue 19: "critical" means broken now). One
    // probe of the unresolved-alerts index per such appliance finds the few that have any.
    let on_primary: Vec<Uuid> = newest
        .iter()
        .filter(|(_, i)| accepted[**i].body.on_primary())
        .map(|(id, _)| *id)
        .collect();
    let mut observed_clears: HashMap<Uuid, Vec<crate::domain::alerts::AlertChange>> =
        HashMap::new();
    if !on_primary.is_empty() {
        let open: Vec<(
            Uuid,
            stayopen_shared::alerts::AlertKind,
            chrono::DateTime<Utc>,
        )> = sqlx::query_as(
            "SELECT appliance_id, kind, last_seen FROM alerts
                 WHERE appliance_id = ANY($1) AND kind = ANY($2) AND state <> 'resolved'",
        )
        .bind(&on_primary)
        .bind(
            crate::domain::alerts::ON_BACKUP_KINDS
                .iter()
                .map(|kind| <&'static str>::from(*kind))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut by_appliance: HashMap<
            Uuid,
            Vec<(stayopen_shared::alerts::AlertKind, chrono::DateTime<Utc>)>,
        > = HashMap::new();
        for (appliance, kind, last_seen) in open {
            by_appliance
                .entry(appliance)
                .or_default()
                .push((kind, last_seen));
        }
        for (appliance, open) in by_appliance {
            if let Some(&i) = newest.get(&appliance) {
                let sample = accepted[i];
                observed_clears.insert(
                    appliance,
                    crate::domain::alerts::rules_for_observed_primary(
                        &sample.body,
                        sample.sent_at,
                        &open,
                    ),
                );
            }
        }
    }
    for (index, message) in accepted.iter().enumerate() {
        let appliance = message.appliance_id;
        let mut changes = Vec::new();
        if newest.get(&appliance.0) == Some(&index) {
            changes.extend(observed_clears.remove(&appliance.0).unwrap_or_default());
        }
        if back_online.remove(&appliance.0) {
            changes.extend(crate::domain::alerts::rules_for_presence(
                true,
                "messages arrive again",
            ));
        }
        if inserted.contains(&message.message_id.0) {
            changes.extend(rule_changes.next().unwrap_or_default());
        }
        if !changes.is_empty() {
            crate::domain::alerts::apply(tx, tenant, appliance, &changes, message.sent_at).await?;
        }
    }

    let mut accepted_outcomes = accepted.iter().map(|m| inserted.contains(&m.message_id.0));
    for outcome in &mut outcomes {
        if outcome.is_ok() {
            *outcome = Ok(if accepted_outcomes.next().unwrap_or(false) {
                Stored::New
            } else {
                Stored::Duplicate
            });
        }
    }
    Ok(outcomes)
}

/// What ingest owes an appliance once it is done with one of its outbox's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// Committed, now or by an earlier copy.
    Stored(ApplianceId, MessageId),
    /// Refused for good: resending cannot help.
    Refused(ApplianceId, MessageId),
}

/// Decodes and admits one raw MQTT message; a correction (a clamped `sent_at`) is counted and
/// logged.
fn admit_raw(metrics: &Metrics, topic: &[u8], payload: &[u8]) -> Result<DeviceMessage, Rejection> {
    let message = decode(topic, payload)?;
    let (mut message, correction) = admit(message, Utc::now())?;
    if let DeviceMessage::Event(e) = &mut message {
        crate::infra::observability::drop_bad_traceparent(&mut e.traceparent, metrics);
    }
    if let Some(correction) = correction {
        metrics.increment(INGEST_CORRECTED, "reason", correction.reason());
        tracing::warn!(
            appliance = %message.appliance_id(),
            reason = correction.reason(),
            "a device message's sent_at was outside the cloud's window; clamped"
        );
    }
    Ok(message)
}

/// Counts a stored message and the time from its receipt to its commit; the acknowledgement its
/// appliance is owed, if it keeps it.
fn stored_and_owed(
    metrics: &Metrics,
    message: &DeviceMessage,
    stored: Stored,
    received: std::time::Instant,
) -> Option<Owed> {
    metrics.record_ingest(message.channel(), received.elapsed());
    match stored {
        Stored::New => metrics.increment(INGEST_ACCEPTED, "channel", message.channel()),
        Stored::Duplicate => metrics.increment(INGEST_DUPLICATE, "reason", "message_id"),
    }
    message
        .outbox_message_id()
        .map(|id| Owed::Stored(message.appliance_id(), id))
}

/// Counts, logs and keeps a refused message; the acknowledgement owed if resending cannot help.
async fn refuse(
    pool: &PgPool,
    metrics: &Metrics,
    topic: &[u8],
    payload: &[u8],
    rejection: &Rejection,
) -> Option<Owed> {
    reject(pool, metrics, topic, payload, rejection).await;
    refused_message(topic, payload, rejection).map(|(a, id)| Owed::Refused(a, id))
}

/// [`store_with_retry`] for one message, an event inside its `ingest.event` span: a child of
/// the appliance's own span when its envelope carries a W3C `traceparent`, so one trace runs
/// from the appliance's failover through ingest and the alert to the notification.
async fn store_traced(
    pool: &PgPool,
    link: &DeviceLink,
    metrics: &Metrics,
    hearing: &Hearing,
    message: &DeviceMessage,
) -> Result<Stored, Rejection> {
    use tracing::Instrument;
    let span = match message {
        DeviceMessage::Event(e) => crate::infra::observability::ingest_event_span(
            e.appliance_id,
            e.message_id,
            e.traceparent.as_deref(),
        ),
        _ => tracing::Span::none(),
    };
    store_with_retry(pool, link, metrics, hearing, message)
        .instrument(span)
        .await
}

/// Ingests a batch of raw messages: each validated ([`decode`], [`admit`]), stored (database
/// failures retried, never dropped), counted and logged, or refused (counted, logged, kept in
/// `ingest_rejections`), with the telemetry among them stored a batch at a time
/// ([`store_telemetry`]), all in one `ingest.batch` span. Each appliance's messages keep
/// their order: telemetry gathered before an event, presence or command result is stored before
/// it. Returns the acknowledgements owed, all for committed (or refused) messages.
pub async fn ingest_batch(
    pool: &PgPool,
    link: &DeviceLink,
    metrics: &Metrics,
    hearing: &Hearing,
    batch: Vec<crate::infra::broker::Incoming>,
) -> Vec<Owed> {
    use tracing::Instrument;
    let span = tracing::info_span!("ingest.batch", messages = batch.len());
    ingest_batch_in_span(pool, link, metrics, hearing, batch)
        .instrument(span)
        .await
}

async fn ingest_batch_in_span(
    pool: &PgPool,
    link: &DeviceLink,
    metrics: &Metrics,
    hearing: &Hearing,
    batch: Vec<crate::infra::broker::Incoming>,
) -> Vec<Owed> {
    let received = std::time::Instant::now();
    let mut owed = Vec::with_capacity(batch.len());
    let mut telemetry: Vec<(crate::infra::broker::Incoming, Envelope<Telemetry>)> = Vec::new();
    for (topic, payload) in batch {
        match admit_raw(metrics, &topic, &payload) {
            Ok(DeviceMessage::Telemetry(envelope)) => telemetry.push(((topic, payload), envelope)),
            Ok(message) => {
                let before = std::mem::take(&mut telemetry);
                store_telemetry_with_retry(pool, metrics, hearing, &before, received, &mut owed)
                    .await;
                match store_traced(pool, link, metrics, hearing, &message).await {
                    Ok(stored) => owed.extend(stored_and_owed(metrics, &message, stored, received)),
                    Err(rejection) => {
                        owed.extend(refuse(pool, metrics, &topic, &payload, &rejection).await);
                    }
                }
            }
            Err(rejection) => {
                owed.extend(refuse(pool, metrics, &topic, &payload, &rejection).await)
            }
        }
    }
    store_telemetry_with_retry(pool, metrics, hearing, &telemetry, received, &mut owed).await;
    owed
}

/// [`store_telemetry`], tried again (the whole batch) until the database takes it.
async fn store_telemetry_with_retry(
    pool: &PgPool,
    metrics: &Metrics,
    hearing: &Hearing,
    batch: &[(crate::infra::broker::Incoming, Envelope<Telemetry>)],
    received: std::time::Instant,
    owed: &mut Vec<Owed>,
) {
    if batch.is_empty() {
        return;
    }
    let envelopes: Vec<&Envelope<Telemetry>> = batch.iter().map(|(_, e)| e).collect();
    let mut delays = store_retry_delays();
    let outcomes = loop {
        match store_telemetry(pool, &envelopes).await {
            Ok(outcomes) => {
                hearing.hearing(Utc::now());
                break outcomes;
            }
            Err(e) => {
                hearing.deaf("database");
                metrics.increment(INGEST_STORE_RETRIES, "reason", "database");
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::error!(error = %e, retry_in = ?delay, messages = batch.len(),
                    "storing a batch of telemetry failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    };
    for (((topic, payload), envelope), outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Ok(stored) => {
                metrics.record_ingest(Channel::Telemetry.as_str(), received.elapsed());
                match stored {
                    Stored::New => {
                        metrics.increment(INGEST_ACCEPTED, "channel", Channel::Telemetry.as_str());
                    }
                    Stored::Duplicate => {
                        metrics.increment(INGEST_DUPLICATE, "reason", "message_id");
                    }
                }
                owed.push(Owed::Stored(envelope.appliance_id, envelope.message_id));
            }
            Err(rejection) => owed.extend(refuse(pool, metrics, topic, payload, &rejection).await),
        }
    }
}

/// Waits between attempts to store when the database fails: 100 ms doubling to 5 s, jittered.
fn store_retry_delays() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The appliance and message id of a message refused for good, when both can be read: a payload
/// that does not decode (or names another appliance) on a channel the outbox sends on. An unknown
/// or revoked appliance gets no acknowledgement.
fn refused_message(
    topic: &[u8],
    payload: &[u8],
    rejection: &Rejection,
) -> Option<(ApplianceId, MessageId)> {
    if !matches!(
        rejection,
        Rejection::Wire(_) | Rejection::ApplianceMismatch { .. } | Rejection::Invalid { .. }
    ) {
        return None;
    }
    let topic = DeviceTopic::parse(std::str::from_utf8(topic).ok()?).ok()?;
    if !matches!(
        topic.channel,
        Channel::Telemetry | Channel::Events | Channel::CommandResults
    ) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct JustTheId {
        message_id: MessageId,
    }
    let id: JustTheId = serde_json::from_slice(payload).ok()?;
    Some((topic.appliance_id, id.message_id))
}

async fn store_with_retry(
    pool: &PgPool,
    link: &DeviceLink,
    metrics: &Metrics,
    hearing: &Hearing,
    message: &DeviceMessage,
) -> Result<Stored, Rejection> {
    let mut delays = store_retry_delays();
    loop {
        let stored = store(pool, link, message).await;
        if !matches!(stored, Err(StoreError::Database(_))) {
            hearing.hearing(Utc::now());
        }
        match stored {
            Ok(stored) => return Ok(stored),
            Err(StoreError::Rejected(rejection)) => return Err(rejection),
            Err(StoreError::Policy(detail)) => {
                // Not the device's fault and not transient: the message is stored as far as it
                // goes; the configuration problem is for an operator.
                tracing::error!(%detail, "cannot compute an appliance's desired policy");
                return Ok(Stored::New);
            }
            Err(StoreError::Database(e)) => {
                hearing.deaf("database");
                metrics.increment(INGEST_STORE_RETRIES, "reason", "database");
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::error!(error = %e, retry_in = ?delay, "storing a device message failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn reject(
    pool: &PgPool,
    metrics: &Metrics,
    topic: &[u8],
    payload: &[u8],
    rejection: &Rejection,
) {
    let reason = rejection.reason();
    let topic = String::from_utf8_lossy(topic);
    metrics.increment(INGEST_REJECTED, "reason", reason);
    tracing::warn!(%topic, reason, detail = %rejection, bytes = payload.len(), "rejected device message");
    let kept = &payload[..payload.len().min(4096)];
    if let Err(e) = sqlx::query(
        "INSERT INTO ingest_rejections (topic, reason, detail, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(topic.as_ref())
    .bind(reason)
    .bind(rejection.to_string())
    .bind(kept)
    .execute(pool)
    .await
    {
        tracing::error!(error = %e, "could not record a rejected device message");
    }
}

/// Acknowledgements owed, per appliance, not yet published.
#[derive(Debug, Default)]
struct PendingAcks(HashMap<ApplianceId, Ack>);

impl PendingAcks {
    /// Holds an acknowledgement; a batch that reaches [`MAX_IDS_PER_ACK`] goes out at once.
    fn add(&mut self, owed: Owed, link: &DeviceLink, metrics: &Metrics) {
        let appliance = match owed {
            Owed::Stored(appliance, id) => {
                self.0.entry(appliance).or_default().stored.push(id);
                appliance
            }
            Owed::Refused(appliance, id) => {
                self.0.entry(appliance).or_default().rejected.push(id);
                appliance
            }
        };
        if self
            .0
            .get(&appliance)
            .is_some_and(|a| a.len() >= MAX_IDS_PER_ACK)
            && let Some(ack) = self.0.remove(&appliance)
        {
            publish_ack(link, metrics, appliance, ack);
        }
    }

    fn flush(&mut self, link: &DeviceLink, metrics: &Metrics) {
        for (appliance, ack) in self.0.drain() {
            publish_ack(link, metrics, appliance, ack);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn publish_ack(link: &DeviceLink, metrics: &Metrics, appliance: ApplianceId, ack: Ack) {
    metrics.add(INGEST_ACKNOWLEDGED, "channel", "acks", ack.len() as u64);
    let topic = DeviceTopic::new(appliance, Channel::Acks).to_string();
    let payload = Envelope::new(MessageId(Uuid::new_v4()), appliance, Utc::now(), ack).encode();
    link.publish(topic, payload);
}

/// Messages a device may have waiting for ingest; past it, that device's newest are shed
/// (counted) and its appliance resends them, as they were never acknowledged. Other devices'
/// messages never wait behind more than one of its messages at a time.
pub const DEVICE_BACKLOG: usize = 512;

/// The messages waiting for ingest: one queue per device (the topic's `/tenants/{device}/`
/// prefix, which the broker confines each certificate to), in the order the device sent them,
/// each bounded by [`DEVICE_BACKLOG`], so a flooding device fills only its own queue. Devices are
/// served in turn, except that a device with an event, presence or command result waiting is
/// served first: what alerts and people wait on is not queued behind the fleet's telemetry. Its
/// own earlier telemetry still goes before it (an incident's checks must reach the incident
/// before the failback closes it), so each device's order is kept. Pure.
#[derive(Debug)]
pub struct FairQueue {
    per_device: usize,
    /// Telemetry messages waiting, all devices together: what backpressure counts.
    bulk_len: usize,
    queues: HashMap<String, DeviceQueue>,
    /// Devices with something waiting, in the order they are served. An entry whose device has
    /// since been emptied through `urgent_turns` is stale and skipped.
    turns: std::collections::VecDeque<String>,
    /// Devices with an urgent (non-telemetry) message waiting, served before `turns`.
    urgent_turns: std::collections::VecDeque<String>,
}

#[derive(Debug, Default)]
struct DeviceQueue {
    messages: std::collections::VecDeque<crate::infra::broker::Incoming>,
    /// How many of `messages` are urgent.
    urgent: usize,
}

impl FairQueue {
    pub fn new(per_device: usize) -> Self {
        Self {
            per_device,
            bulk_len: 0,
            queues: HashMap::new(),
            turns: std::collections::VecDeque::new(),
            urgent_turns: std::collections::VecDeque::new(),
        }
    }

    /// The device a topic belongs to: its second path segment (`/tenants/{device}/…`).
    fn device_of(topic: &[u8]) -> String {
        let topic = String::from_utf8_lossy(topic);
        topic.split('/').nth(2).unwrap_or_default().to_owned()
    }

    /// Whether a topic is telemetry's (the bulk); anything else, malformed topics included, is
    /// urgent.
    fn is_bulk(topic: &[u8]) -> bool {
        topic
            .rsplit(|b| *b == b'/')
            .next()
            .is_some_and(|last| last == Channel::Telemetry.as_str().as_bytes())
    }

    /// Queues a message behind its device's earlier ones; `false` when that device's backlog is
    /// full and the message is shed.
    pub fn push(&mut self, message: crate::infra::broker::Incoming) -> bool {
        let device = Self::device_of(&message.0);
        let bulk = Self::is_bulk(&message.0);
        let queue = self.queues.entry(device.clone()).or_default();
        if queue.messages.len() >= self.per_device {
            return false;
        }
        if queue.messages.is_empty() {
            self.turns.push_back(device.clone());
        }
        if bulk {
            self.bulk_len += 1;
        } else {
            queue.urgent += 1;
            if queue.urgent == 1 {
                self.urgent_turns.push_back(device);
            }
        }
        queue.messages.push_back(message);
        true
    }

    /// The next message: of the first device with something urgent waiting (its messages in
    /// order, up to the urgent one), else of the device whose turn it is.
    pub fn pop(&mut self) -> Option<crate::infra::broker::Incoming> {
        while let Some(device) = self.urgent_turns.front().cloned() {
            let Some(message) = self
                .queues
                .get_mut(&device)
                .and_then(|q| q.messages.pop_front())
            else {
                self.urgent_turns.pop_front();
                continue;
            };
            let Some(queue) = self.queues.get_mut(&device) else {
                continue;
            };
            if Self::is_bulk(&message.0) {
                self.bulk_len -= 1;
            } else {
                queue.urgent -= 1;
                self.urgent_turns.pop_front();
                if queue.urgent > 0 {
                    self.urgent_turns.push_back(device.clone());
                }
            }
            if queue.messages.is_empty() {
                self.queues.remove(&device);
            }
            return Some(message);
        }
        while let Some(device) = self.turns.pop_front() {
            let Some(queue) = self.queues.get_mut(&device) else {
                continue;
            };
            let Some(message) = queue.messages.pop_front() else {
                self.queues.remove(&device);
                continue;
            };
            self.bulk_len -= usize::from(Self::is_bulk(&message.0));
            if queue.messages.is_empty() {
                self.queues.remove(&device);
            } else {
                self.turns.push_back(device);
            }
            return Some(message);
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Telemetry messages waiting: what backpressure counts (urgent messages are never held back).
    pub fn bulk_len(&self) -> usize {
        self.bulk_len
    }
}

/// Workers storing side by side. Each serves the devices whose topic prefix hashes to it, so one
/// appliance's messages are stored in order, by one worker, and two workers never wait on each
/// other's appliance rows.
pub const WORKERS: usize = 4;
/// Messages one worker takes at once: their telemetry is stored in one transaction per tenant.
pub const MAX_BATCH: usize = 1000;
/// Messages waiting for one worker, all devices together, past which ingest stops taking more
/// from the broker: backpressure. The broker then holds them (the embedded broker's link is
/// paused; an external broker's TCP connection stops being read) and what a broker cannot hold
/// is resent by the appliances' outboxes, as it was never acknowledged.
pub const WORKER_BACKLOG: usize = 10_000;

/// One worker's share of the messages waiting.
struct Shard {
    waiting: std::sync::Mutex<FairQueue>,
    /// Something was queued (or the stream ended).
    arrived: tokio::sync::Notify,
    /// A batch was taken: there is room again.
    room: tokio::sync::Notify,
}

/// The worker that stores a device's messages (its topic's `/tenants/{device}/` segment).
fn shard_of(device: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
    let mut hasher =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    hasher.write(device.as_bytes());
    usize::try_from(hasher.finish() % WORKERS as u64).unwrap_or(0)
}

/// Ingests what the broker forwards (embedded links or external client) and acknowledges each
/// stored message to its appliance. Two streams: `incoming` carries telemetry, `urgent` the rest
/// (events, presence, command results). What arrives is taken off them into the [`FairQueue`]
/// of the worker its device belongs to ([`WORKERS`] of them); once a worker has
/// [`WORKER_BACKLOG`] telemetry messages waiting ingest stops reading telemetry and the broker
/// holds the rest, while the urgent stream is still read and served first. Each
/// worker takes up to [`MAX_BATCH`] messages at a time, devices in turn, and stores them with
/// [`ingest_batch`]. Acknowledgements are batched per appliance and published after the commit,
/// whenever the worker has caught up (nothing more is waiting) or a batch is full, so a backlog
/// drains with one ack per few hundred messages and a lone event is acknowledged at once.
pub async fn run(
    pool: PgPool,
    metrics: Arc<Metrics>,
    device_link: DeviceLink,
    hearing: Arc<Hearing>,
    mut incoming: tokio::sync::mpsc::Receiver<crate::infra::broker::Incoming>,
    mut urgent: tokio::sync::mpsc::Receiver<crate::infra::broker::Incoming>,
    stop: tokio_util::sync::CancellationToken,
) {
    let shards: Arc<Vec<Shard>> = Arc::new(
        (0..WORKERS)
            .map(|_| Shard {
                waiting: std::sync::Mutex::new(FairQueue::new(DEVICE_BACKLOG)),
                arrived: tokio::sync::Notify::new(),
                room: tokio::sync::Notify::new(),
            })
            .collect(),
    );
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..WORKERS {
        workers.spawn(work(
            index,
            shards.clone(),
            ended.clone(),
            pool.clone(),
            metrics.clone(),
            device_link.clone(),
            hearing.clone(),
            stop.clone(),
        ));
    }
    let take_in = async {
        tokio::join!(
            take_in(&mut incoming, &shards, &metrics, &stop, true),
            take_in(&mut urgent, &shards, &metrics, &stop, false),
        );
        ended.store(true, std::sync::atomic::Ordering::Release);
        for shard in shards.iter() {
            shard.arrived.notify_one();
        }
    };
    tokio::select! {
        () = take_in => {}
        () = stop.cancelled() => {}
    }
    // The workers finish what they hold (the stream ended) or their batch in progress (stopped).
    while workers.join_next().await.is_some() {}
    if stop.is_cancelled() {
        tracing::info!("ingest stopped");
        return;
    }
    hearing.deaf("broker stream ended");
    tracing::warn!("the broker's message stream ended; ingest stops");
}

/// Takes messages off one of the broker's streams into the workers' queues until it ends. With
/// `hold_back` (the telemetry stream), waits while the worker's queue holds [`WORKER_BACKLOG`]
/// telemetry messages, so the broker holds the rest; the urgent stream is never held back.
async fn take_in(
    receiver: &mut tokio::sync::mpsc::Receiver<crate::infra::broker::Incoming>,
    shards: &[Shard],
    metrics: &Metrics,
    stop: &tokio_util::sync::CancellationToken,
    hold_back: bool,
) {
    let mut shed: u64 = 0;
    while let Some(message) = receiver.recv().await {
        let device = FairQueue::device_of(&message.0);
        let shard = &shards[shard_of(&device)];
        while hold_back && shard.waiting.lock().map(|w| w.bulk_len()).unwrap_or(0) >= WORKER_BACKLOG
        {
            tokio::select! {
                () = shard.room.notified() => {}
                () = stop.cancelled() => return,
            }
        }
        let queued = shard
            .waiting
            .lock()
            .map(|mut w| w.push(message))
            .unwrap_or(false);
        if queued {
            shard.arrived.notify_one();
        } else {
            metrics.increment(INGEST_SHED, "reason", "device_backlog");
            shed += 1;
            // Every shed message is counted; a flood is logged at its start and then every
            // thousandth, not line by line.
            if shed % 1000 == 1 {
                tracing::warn!(
                    %device,
                    backlog = DEVICE_BACKLOG,
                    shed_so_far = shed,
                    "a device's ingest backlog is full; its messages are shed (it resends them)"
                );
            }
        }
    }
}

/// One ingest worker: takes batches from its shard, stores them and acknowledges what was stored.
#[allow(clippy::too_many_arguments)]
async fn work(
    index: usize,
    shards: Arc<Vec<Shard>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
    pool: PgPool,
    metrics: Arc<Metrics>,
    device_link: DeviceLink,
    hearing: Arc<Hearing>,
    stop: tokio_util::sync::CancellationToken,
) {
    let shard = &shards[index];
    let mut acks = PendingAcks::default();
    loop {
        // Between batches, never inside one: what was stored is acknowledged before stopping,
        // what was not is resent by the appliance to the next cloud.
        if stop.is_cancelled() {
            break;
        }
        let batch: Vec<crate::infra::broker::Incoming> = shard
            .waiting
            .lock()
            .map(|mut w| std::iter::from_fn(|| w.pop()).take(MAX_BATCH).collect())
            .unwrap_or_default();
        if batch.is_empty() {
            if !acks.is_empty() {
                acks.flush(&device_link, &metrics);
                continue;
            }
            if ended.load(std::sync::atomic::Ordering::Acquire)
                && shard.waiting.lock().map(|w| w.is_empty()).unwrap_or(true)
            {
                break;
            }
            tokio::select! {
                () = shard.arrived.notified() => continue,
                () = stop.cancelled() => break,
            }
        }
        shard.room.notify_one();
        let started = std::time::Instant::now();
        let count = batch.len();
        for owed in ingest_batch(&pool, &device_link, &metrics, &hearing, batch).await {
            acks.add(owed, &device_link, &metrics);
        }
        tracing::trace!(worker = index, messages = count, elapsed = ?started.elapsed(), "ingested a batch");
    }
    acks.flush(&device_link, &metrics);
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayopen_shared::{ApplianceId, MessageId};
    use uuid::Uuid;

    fn telemetry_for(id: ApplianceId) -> Vec<u8> {
        Envelope::new(
            MessageId(Uuid::from_u128(9)),
            id,
            Utc::now(),
            Telemetry {
                active_uplink: None,
                uplinks: vec![],
                policy_version: None,
                samples: None,
                outbox: None,
                apps: Vec::new(),
                tunnel: None,
            },
        )
        .encode()
    }

    #[test]
    fn a_well_formed_telemetry_message_decodes() {
        let id = ApplianceId(Uuid::from_u128(1));
        let topic = DeviceTopic::new(id, Channel::Telemetry).to_string();
        assert!(matches!(
            decode(topic.as_bytes(), &telemetry_for(id)),
            Ok(DeviceMessage::Telemetry(_))
        ));
    }

    #[test]
    fn a_device_cannot_publish_under_another_devices_prefix() {
        let topic =
            DeviceTopic::new(ApplianceId(Uuid::from_u128(1)), Channel::Telemetry).to_string();
        let err = decode(
            topic.as_bytes(),
            &telemetry_for(ApplianceId(Uuid::from_u128(2))),
        )
        .expect_err("mismatch");
        assert_eq!(err.reason(), "appliance_mismatch");
    }

    #[test]
    fn publishing_on_the_policy_channel_is_rejected() {
        let id = ApplianceId(Uuid::from_u128(1));
        let topic = DeviceTopic::new(id, Channel::Policy).to_string();
        let err = decode(topic.as_bytes(), b"{}").expect_err("wrong direction");
        assert_eq!(err.reason(), "wrong_direction");
    }

    #[test]
    fn malformed_payloads_and_topics_have_distinct_reasons() {
        let id = ApplianceId(Uuid::from_u128(1));
        let topic = DeviceTopic::new(id, Channel::Telemetry).to_string();
        assert_eq!(
            decode(topic.as_bytes(), b"nope").map_err(|e| e.reason()),
            Err("malformed")
        );
        assert_eq!(
            decode(b"/elsewhere", b"{}").map_err(|e| e.reason()),
            Err("bad_topic")
        );
        assert_eq!(
            decode(&[0xff, 0xfe], b"{}").map_err(|e| e.reason()),
            Err("bad_topic")
        );
    }

    fn uplink(
        name: &str,
        rtt_ms: Option<f64>,
        loss_pct: f64,
    ) -> stayopen_shared::telemetry::UplinkTelemetry {
        stayopen_shared::telemetry::UplinkTelemetry {
            name: name.into(),
            priority: 0,
            metered: false,
            health: stayopen_shared::telemetry::UplinkHealth::Up,
            rtt_ms,
            loss_pct,
            rx_bytes: 0,
            tx_bytes: 0,
            cellular: None,
        }
    }

    fn telemetry_message(
        uplinks: Vec<stayopen_shared::telemetry::UplinkTelemetry>,
        sent_at: chrono::DateTime<Utc>,
    ) -> DeviceMessage {
        DeviceMessage::Telemetry(Envelope::new(
            MessageId(Uuid::from_u128(3)),
            ApplianceId(Uuid::from_u128(1)),
            sent_at,
            Telemetry {
                active_uplink: Some("fiber".into()),
                uplinks,
                policy_version: None,
                samples: None,
                outbox: None,
                apps: Vec::new(),
                tunnel: None,
            },
        ))
    }

    fn reason_of(
        uplinks: Vec<stayopen_shared::telemetry::UplinkTelemetry>,
    ) -> Option<&'static str> {
        admit(telemetry_message(uplinks, Utc::now()), Utc::now())
            .err()
            .map(|e| e.reason())
    }

    #[test]
    fn values_out_of_range_and_unbounded_uplinks_are_refused_with_their_reason() {
        assert_eq!(reason_of(vec![uplink("fiber", Some(12.0), 0.5)]), None);
        assert_eq!(reason_of(vec![uplink("fiber", None, 100.0)]), None);
        for (rtt, loss) in [
            (Some(1e308), 0.0),
            (Some(f64::INFINITY), 0.0),
            (Some(f64::NAN), 0.0),
            (Some(-1.0), 0.0),
            (Some(10.0), 100.5),
            (Some(10.0), f64::NAN),
            (Some(10.0), -0.1),
        ] {
            assert_eq!(
                reason_of(vec![uplink("fiber", rtt, loss)]),
                Some("value_out_of_range"),
                "rtt {rtt:?} loss {loss}"
            );
        }
        assert_eq!(
            reason_of(vec![uplink("", Some(1.0), 0.0)]),
            Some("bad_uplink_name")
        );
        assert_eq!(
            reason_of(vec![uplink(&"n".repeat(65), Some(1.0), 0.0)]),
            Some("bad_uplink_name")
        );
        assert_eq!(
            reason_of(vec![uplink("a\nb", Some(1.0), 0.0)]),
            Some("bad_uplink_name")
        );
        assert_eq!(
            reason_of(
                (0..17)
                    .map(|i| uplink(&format!("u{i}"), None, 0.0))
                    .collect()
            ),
            Some("too_many_uplinks")
        );
        assert_eq!(
            reason_of(vec![uplink("fiber", None, 0.0), uplink("fiber", None, 0.0)]),
            Some("duplicate_uplink")
        );
        let mut huge = uplink("fiber", None, 0.0);
        huge.rx_bytes = u64::MAX;
        assert_eq!(reason_of(vec![huge]), Some("value_out_of_range"));
    }

    #[test]
    fn a_cellular_report_is_admitted_when_plausible_and_refused_with_absurd_figures() {
        use stayopen_shared::cellular::{CellularReport, ModemStatus};
        let with = |report: CellularReport| {
            let mut lte = uplink("lte", Some(40.0), 0.0);
            lte.cellular = Some(report);
            reason_of(vec![lte])
        };
        let good = CellularReport {
            operator_name: Some("Example Mobile".into()),
            rsrp_dbm: Some(-97.0),
            rsrq_db: Some(-11.0),
            sinr_db: Some(8.5),
            sim_rx_bytes: Some(1_000_000),
            ..CellularReport::status_only(ModemStatus::Connected)
        };
        assert_eq!(with(good.clone()), None);
        for bad in [
            CellularReport {
                rsrp_dbm: Some(20.0),
                ..good.clone()
            },
            CellularReport {
                sinr_db: Some(f64::NAN),
                ..good.clone()
            },
            CellularReport {
                sim_rx_bytes: Some(u64::MAX),
                ..good.clone()
            },
            CellularReport {
                operator_name: Some("o\u{0}".into()),
                ..good.clone()
            },
        ] {
            assert_eq!(with(bad.clone()), Some("value_out_of_range"), "{bad:?}");
        }
    }

    #[test]
    fn a_tunnel_report_is_admitted_within_bounds_and_refused_beyond_them() {
        use stayopen_shared::tunnel::{TunnelMode, TunnelReport, TunnelState};
        let with = |tunnel: TunnelReport| {
            let mut message = telemetry_message(vec![uplink("fiber", None, 0.0)], Utc::now());
            if let DeviceMessage::Telemetry(e) = &mut message {
                e.body.tunnel = Some(tunnel);
            }
            admit(message, Utc::now()).err().map(|e| e.reason())
        };
        let good = TunnelReport {
            mode: TunnelMode::Critical,
            state: TunnelState::Up,
            relay: Some("relay-1".into()),
            last_handshake_secs: Some(4),
            redundant: true,
            redundant_bytes: [("fiber".to_owned(), 1_000), ("lte".to_owned(), 2_000)].into(),
            tunnel_bytes: 10_000,
        };
        assert_eq!(with(good.clone()), None);
        let many = (0..17).map(|i| (format!("u{i}"), 1)).collect();
        assert_eq!(
            with(TunnelReport {
                redundant_bytes: many,
                ..good.clone()
            }),
            Some("too_many_uplinks")
        );
        assert_eq!(
            with(TunnelReport {
                relay: Some("r\n".into()),
                ..good.clone()
            }),
            Some("bad_uplink_name")
        );
        assert_eq!(
            with(TunnelReport {
                tunnel_bytes: u64::MAX,
                ..good.clone()
            }),
            Some("value_out_of_range")
        );
        assert_eq!(
            with(TunnelReport {
                redundant_bytes: [("lte".to_owned(), u64::MAX)].into(),
                ..good
            }),
            Some("value_out_of_range")
        );
    }

    #[test]
    fn sent_at_is_clamped_into_the_window_around_the_clouds_clock() {
        let now: chrono::DateTime<Utc> = "2026-12-03T12:00:00Z".parse().expect("time");
        let at = |message: DeviceMessage| admit(message, now).map(|(m, c)| (m.sent_at(), c));
        assert_eq!(
            at(telemetry_message(vec![], now + chrono::Duration::days(365))),
            Ok((now, Some(Correction::SentAtFromTheFuture)))
        );
        assert_eq!(
            at(telemetry_message(
                vec![],
                now + chrono::Duration::seconds(2)
            )),
            Ok((now, None)),
            "a little skew is clamped without a word"
        );
        assert_eq!(
            at(telemetry_message(vec![], now - chrono::Duration::days(3))),
            Ok((now - chrono::Duration::days(3), None)),
            "an outbox's backlog keeps its time"
        );
        assert_eq!(
            at(telemetry_message(vec![], chrono::DateTime::<Utc>::MIN_UTC)),
            Ok((now - MAX_AGE, Some(Correction::SentAtTooOld)))
        );
    }

    #[test]
    fn a_device_with_an_event_waiting_is_served_first_its_own_earlier_telemetry_before_it() {
        let topic = |device: u128, channel: Channel| {
            DeviceTopic::new(ApplianceId(Uuid::from_u128(device)), channel)
                .to_string()
                .into_bytes()
        };
        let mut queue = FairQueue::new(5);
        for i in 0..3u8 {
            assert!(queue.push((topic(1, Channel::Telemetry), vec![i])));
        }
        assert!(queue.push((topic(3, Channel::Telemetry), vec![30])));
        assert!(queue.push((topic(3, Channel::Telemetry), vec![31])));
        assert!(queue.push((topic(2, Channel::Events), vec![20])));
        assert!(queue.push((topic(1, Channel::Events), vec![10])));
        assert!(queue.push((topic(1, Channel::CommandResults), vec![11])));
        assert!(
            !queue.push((topic(1, Channel::Status), vec![12])),
            "one device's backlog is bounded whatever it sends"
        );
        assert_eq!(queue.bulk_len(), 5, "only telemetry is held back");
        let order: Vec<u8> = std::iter::from_fn(|| queue.pop())
            .map(|(_, p)| p[0])
            .collect();
        assert_eq!(order, vec![20, 0, 1, 2, 10, 11, 30, 31]);
        assert!(queue.is_empty());
        assert_eq!(queue.bulk_len(), 0);
        assert!(queue.push((topic(1, Channel::Telemetry), vec![40])));
        assert_eq!(
            queue.pop().map(|(_, p)| p[0]),
            Some(40),
            "served again once refilled"
        );
    }

    #[test]
    fn a_flooding_device_fills_only_its_own_backlog_and_the_others_are_served_in_turn() {
        let topic = |device: u128| {
            DeviceTopic::new(ApplianceId(Uuid::from_u128(device)), Channel::Telemetry)
                .to_string()
                .into_bytes()
        };
        let mut queue = FairQueue::new(3);
        for i in 0..10u8 {
            let queued = queue.push((topic(1), vec![i]));
            assert_eq!(queued, i < 3, "the flooding device's message {i}");
        }
        assert!(queue.push((topic(2), vec![100])));
        assert!(queue.push((topic(2), vec![101])));
        let order: Vec<(Vec<u8>, u8)> = std::iter::from_fn(|| queue.pop())
            .map(|(t, p)| (t, p[0]))
            .collect();
        assert_eq!(
            order,
            vec![
                (topic(1), 0),
                (topic(2), 100),
                (topic(1), 1),
                (topic(2), 101),
                (topic(1), 2),
            ]
        );
        assert!(queue.is_empty());
        assert!(queue.push((topic(1), vec![9])), "room again once served");
    }
}
