//! Each appliance's desired configuration: its effective policy (MSP, practice and appliance
//! layers over the defaults), versioned, stored on the appliance row and published to the device.
//!
//! The version only moves when the effective policy changes, so re-publishing is idempotent and the
//! appliance can ignore anything not newer than what it runs. Drift is `reported_version <
//! desired_version`.
//!
//! [`layers`]: reading, replacing and previewing the layers as MSP staff edit them.

pub mod layers;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::ApplianceConfiguration;
use stayopen_shared::compliance::{AppEndpoint, AppTier};
use stayopen_shared::policy::{
    CriticalApp, EffectivePolicy, Policy, PolicyError, PolicyOverrides, PolicyScope, resolve,
};
use stayopen_shared::tunnel::RelayAssignment;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId, TenantId};
use uuid::Uuid;

use crate::domain::access::visibility::visible_appliance;
use crate::domain::access::{AccessError, AuthUser};
use crate::infra::db::{self, Tx, lookup};
use crate::infra::device_link::DeviceLink;

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored policy layers no longer combine: {0}")]
    Policy(#[from] PolicyError),
}

/// Why reading or changing a caller's policy failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Overrides or a preview request that break the policy schema; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The stored layers no longer combine into a desired policy.
    #[error(transparent)]
    Desired(#[from] DesiredError),
}

/// The overrides one layer sets (empty when none are stored).
pub async fn layer(
    tx: &mut Tx,
    scope: PolicyScope,
    scope_id: Uuid,
) -> Result<PolicyOverrides, sqlx::Error> {
    let stored: Option<sqlx::types::Json<PolicyOverrides>> =
        sqlx::query_scalar("SELECT overrides FROM policies WHERE scope = $1 AND scope_id = $2")
            .bind(scope)
            .bind(scope_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(stored.map(|j| j.0).unwrap_or_default())
}

/// The practice's critical applications register (kept by `domain::compliance::register`, which
/// ranks above this module) as the policy's `critical_apps`: most critical first, then by name.
async fn register_apps(tx: &mut Tx, practice: Uuid) -> Result<Vec<CriticalApp>, sqlx::Error> {
    let rows: Vec<(String, AppTier, sqlx::types::Json<Vec<AppEndpoint>>)> = sqlx::query_as(
        "SELECT name, tier, endpoints FROM critical_apps WHERE practice_id = $1
         ORDER BY tier, lower(name)",
    )
    .bind(practice)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, tier, endpoints)| CriticalApp {
            name,
            tier,
            endpoints: endpoints.0,
        })
        .collect())
}

/// The effective policy of one appliance, with the source of each value. Its `critical_apps` are
/// the practice's critical applications register, not a layer's.
pub async fn effective(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
) -> Result<EffectivePolicy, DesiredError> {
    let practice: Uuid = sqlx::query_scalar("SELECT practice_id FROM appliances WHERE id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&mut **tx)
        .await?;
    let msp = layer(tx, PolicyScope::Msp, tenant.0).await?;
    let practice_layer = layer(tx, PolicyScope::Practice, practice).await?;
    let own = layer(tx, PolicyScope::Appliance, appliance.0).await?;
    let mut effective = resolve(&[
        (PolicyScope::Msp, &msp),
        (PolicyScope::Practice, &practice_layer),
        (PolicyScope::Appliance, &own),
    ])?;
    let register = register_apps(tx, practice).await?;
    // A layer stored before the register existed may still name critical_apps: it no longer
    // counts, so the source is the register (the practice's) or the default (none).
    let source = if register.is_empty() {
        PolicyScope::Default
    } else {
        PolicyScope::Practice
    };
    effective.sources.insert("critical_apps".into(), source);
    effective.policy.critical_apps = register;
    // The relay comes from the relay registry (`domain::relays`), never from a layer.
    let relay = relay_assignment(tx, appliance).await?;
    let source = if relay.is_some() {
        PolicyScope::Appliance
    } else {
        PolicyScope::Default
    };
    effective.sources.insert("tunnel_relay".into(), source);
    effective.policy.tunnel_relay = relay;
    Ok(effective)
}

/// The appliance's relay and inner address, when it registered a WireGuard key and a relay that
/// is not revoked serves it.
async fn relay_assignment(
    tx: &mut Tx,
    appliance: ApplianceId,
) -> Result<Option<RelayAssignment>, sqlx::Error> {
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "SELECT r.name, r.endpoint, r.public_key, host(a.tunnel_address)
         FROM appliances a JOIN relays r ON r.id = a.relay_id
         WHERE a.id = $1 AND a.wireguard_public_key IS NOT NULL
           AND a.tunnel_address IS NOT NULL AND r.revoked_at IS NULL",
    )
    .bind(appliance.as_uuid())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(|(relay, endpoint, public_key, address)| {
        Some(RelayAssignment {
            relay,
            endpoint,
            public_key,
            inner_address: address.parse().ok()?,
        })
    }))
}

#[derive(sqlx::FromRow)]
struct VersionsRow {
    desired_version: i64,
    desired_at: Option<DateTime<Utc>>,
    reported_version: Option<i64>,
    reported_at: Option<DateTime<Utc>>,
}

/// A visible appliance's effective policy (with where each value comes from), the desired
/// version and the version the appliance reports running; drift when the two differ.
pub async fn configuration(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
) -> Result<ApplianceConfiguration, LayerError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    let effective = effective(&mut tx, auth.tenant_id, appliance).await?;
    let versions: VersionsRow = sqlx::query_as(
        "SELECT desired_version, desired_at, reported_version, reported_at FROM appliances WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    let VersionsRow {
        desired_version,
        desired_at,
        reported_version,
        reported_at,
    } = versions;
    let desired_version = u64::try_from(desired_version).unwrap_or(0);
    let reported_version = reported_version.and_then(|v| u64::try_from(v).ok());
    Ok(ApplianceConfiguration {
        effective,
        desired_version,
        desired_at,
        reported_version,
        reported_at,
        drift: reported_version != Some(desired_version),
    })
}

/// Recomputes the desired policy of `appliances`, bumping the version of those whose effective
/// policy changed. Returns the changed ones, to publish after the transaction commits.
pub async fn refresh(
    tx: &mut Tx,
    tenant: TenantId,
    appliances: &[Uuid],
) -> Result<Vec<ApplianceId>, DesiredError> {
    let mut changed = Vec::new();
    for &id in appliances {
        let appliance = ApplianceId(id);
        let policy = effective(tx, tenant, appliance).await?.policy;
        let (version, current): (i64, Option<sqlx::types::Json<Policy>>) = sqlx::query_as(
            "SELECT desired_version, desired_policy FROM appliances WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        let unchanged = current.is_some_and(|c| Policy { version: 0, ..c.0 } == policy);
        if unchanged {
            continue;
        }
        let next = version + 1;
        let desired = Policy {
            version: u64::try_from(next).unwrap_or(0),
            ..policy
        };
        sqlx::query(
            "UPDATE appliances SET desired_version = $2, desired_policy = $3, desired_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .bind(sqlx::types::Json(&desired))
        .execute(&mut **tx)
        .await?;
        changed.push(appliance);
    }
    Ok(changed)
}

/// One message for a device: topic and encoded envelope.
pub type Outgoing = (String, Vec<u8>);

/// The stored desired policy of `appliances` (those that have one) as messages, to publish once
/// the transaction that wrote them has committed (a device must never run a version the database
/// rolled back).
pub async fn outgoing(
    tx: &mut Tx,
    appliances: &[ApplianceId],
) -> Result<Vec<Outgoing>, sqlx::Error> {
    let ids: Vec<Uuid> = appliances.iter().map(|a| a.0).collect();
    let rows: Vec<(Uuid, sqlx::types::Json<Policy>)> = sqlx::query_as(
        "SELECT id, desired_policy FROM appliances
         WHERE id = ANY($1) AND desired_policy IS NOT NULL AND revoked_at IS NULL",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, policy)| {
            let appliance = ApplianceId(id);
            let payload =
                Envelope::new(MessageId(Uuid::new_v4()), appliance, Utc::now(), policy.0).encode();
            (
                DeviceTopic::new(appliance, Channel::Policy).to_string(),
                payload,
            )
        })
        .collect())
}

pub fn send(link: &DeviceLink, messages: Vec<Outgoing>) {
    for (topic, payload) in messages {
        link.publish(topic, payload);
    }
}

/// The PostgreSQL notification channel on which a changed desired policy is announced (delivered
/// on commit, to every cloud instance), for changes made where no broker is at hand: the operator's
/// `admin relay-add` and `relay-revoke` run in their own process. Each instance publishes the
/// announced appliances' stored desired policy ([`republish_announced`]).
pub const REPUBLISH_CHANNEL: &str = "stayopen_policy";

/// Announces that `appliances`' desired policy changed (delivered on commit).
pub async fn announce(tx: &mut Tx, appliances: &[ApplianceId]) -> Result<(), sqlx::Error> {
    for appliance in appliances {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REPUBLISH_CHANNEL)
            .bind(appliance.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Runs until cancelled: listens on [`REPUBLISH_CHANNEL`] (reconnecting after a lost connection)
/// and publishes each announced appliance's desired policy through `link`.
pub async fn republish_announced(pool: PgPool, link: DeviceLink) {
    loop {
        if let Err(e) = republish_once(&pool, &link).await {
            tracing::warn!(error = %e, "policy announcement listener lost; reconnecting");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

async fn republish_once(pool: &PgPool, link: &DeviceLink) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(REPUBLISH_CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        let Ok(appliance) = notification.payload().parse::<ApplianceId>() else {
            tracing::warn!("unreadable policy announcement");
            continue;
        };
        let Some(tenant) = lookup::appliance_tenant(pool, appliance).await? else {
            continue;
        };
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let messages = outgoing(&mut tx, &[appliance]).await?;
        tx.commit().await?;
        send(link, messages);
    }
}

/// At start: every appliance of every tenant gets its desired policy computed (new appliances) and
/// published (the broker has just started and holds nothing).
pub async fn publish_all(pool: &PgPool, link: &DeviceLink) -> Result<usize, DesiredError> {
    let mut published = 0;
    for tenant in lookup::tenant_ids(pool).await? {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM appliances WHERE revoked_at IS NULL")
                .fetch_all(&mut *tx)
                .await?;
        refresh(&mut tx, tenant, &ids).await?;
        let all: Vec<ApplianceId> = ids.into_iter().map(ApplianceId).collect();
        let messages = outgoing(&mut tx, &all).await?;
        tx.commit().await?;
        published += messages.len();
        send(link, messages);
    }
    Ok(published)
}
