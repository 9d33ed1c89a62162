//! The relay registry of the session-safe tunnel (issue 16): each appliance's WireGuard public key,
//! its inner address and the StayOpen relay it tunnels to; the relays, and the peer list each one
//! polls.
//!
//! Design: relays are the operator's infrastructure and serve the appliances of every MSP, so the
//! `relays` table belongs to no tenant. Appliances stay tenant rows: what must cross tenants — a
//! relay's peer list, how loaded each relay is, whether a key is already someone else's — goes
//! through SECURITY DEFINER functions (`migrations/20261205000001_tunnel.sql`) that answer only
//! that. An appliance registers its key at enrolment or with a renewal (signed by its device key);
//! the first registration gives it an inner address from 100.96.0.0/12, in sequence and never
//! reused, and the least-loaded relay. Creating a relay assigns every appliance that has a key and
//! no relay; revoking one moves its appliances to the least-loaded remaining relay (or none). Each
//! assignment change is audited in the appliance's tenant, recomputes its desired policy (whose
//! `tunnel_relay` the policy module fills from these columns) and announces it for publishing.
//!
//! A relay authenticates with a bearer token `sor_…` (only its SHA-256 is stored) and reads
//! [`peer_list`], whose `revision` is a digest of the list itself: it changes exactly when the list
//! does, whichever instance answers.

use std::net::Ipv4Addr;

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use stayopen_shared::tunnel::{RelayPeer, RelayPeerList};
use stayopen_shared::{ApplianceId, TenantId};
use uuid::Uuid;

use crate::domain::access::{random_secret, secret_digest};
use crate::domain::audit::{self, Actor, Change};
use crate::domain::policy::{self, DesiredError};
use crate::infra::db::{self, Tx};

/// Relay tokens start with this; the rest is 64 hex digits.
pub const RELAY_TOKEN_PREFIX: &str = "sor_";

/// Why a relay operation or a key registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A name, endpoint or key that breaks the rules; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("a relay named {0:?} already exists")]
    DuplicateName(String),
    #[error("no relay named {0:?}")]
    UnknownRelay(String),
    #[error("the relay {0:?} is already revoked")]
    AlreadyRevoked(String),
    /// The WireGuard key belongs to another appliance (of this MSP or another: the answer is the
    /// same, so it tells nothing about other MSPs).
    #[error("wireguard_public_key is already registered to another appliance")]
    KeyTaken,
    /// Every inner address of 100.96.0.0/12 has been given out.
    #[error("no inner tunnel address is left")]
    AddressesExhausted,
    #[error("refreshing desired policies: {0}")]
    Policy(#[from] DesiredError),
    #[error("database: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        let constraint = e
            .as_database_error()
            .and_then(|d| d.constraint().map(str::to_owned));
        match constraint.as_deref() {
            Some("appliances_wireguard_public_key_key") => RelayError::KeyTaken,
            _ if e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|code| code == "2200H") =>
            {
                // sequence_generator_limit_exceeded
                RelayError::AddressesExhausted
            }
            _ => RelayError::Database(e),
        }
    }
}

/// What is wrong with a WireGuard public key given as `field`: it must be the standard base64 of
/// exactly 32 bytes (44 characters, as `wg pubkey` prints it), and not all zeros.
pub fn wireguard_key_problem(field: &str, key: &str) -> Option<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    match engine.decode(key) {
        Ok(bytes) if bytes.len() == 32 && engine.encode(&bytes) == key => {
            if bytes.iter().all(|b| *b == 0) {
                Some(format!("{field}: the all-zero key is not a WireGuard key"))
            } else {
                None
            }
        }
        _ => Some(format!(
            "{field}: must be a WireGuard public key, the base64 of exactly 32 bytes (44 characters)"
        )),
    }
}

/// What is wrong with a relay's name: 1-63 letters, digits, `.`, `_`, `-`, starting with a letter
/// or digit.
pub fn relay_name_problem(name: &str) -> Option<String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!ok).then(|| {
        format!(
            "name {name:?}: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    })
}

/// What is wrong with a relay's endpoint: `host:port`, the host a name, an IPv4 address or a
/// bracketed IPv6 address, the port 1-65535.
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    let bad = || {
        Some(format!(
            "endpoint {endpoint:?}: must be host:port, e.g. relay1.example.net:51820 or 192.0.2.10:51820"
        ))
    };
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return bad();
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad();
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_err()
            .then(bad)
            .flatten();
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!name_ok).then(bad).flatten()
}

/// A relay as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelaySummary {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub public_key: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Non-revoked appliances assigned to it, of every MSP.
    pub appliances: i64,
}

/// A new relay and its token, shown only here.
pub struct CreatedRelay {
    pub relay: RelaySummary,
    pub token: String,
    /// Appliances that were waiting for a relay and now have this one.
    pub assigned: usize,
}

impl std::fmt::Debug for CreatedRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedRelay")
            .field("relay", &self.relay)
            .field("assigned", &self.assigned)
            .finish_non_exhaustive()
    }
}

/// Registers a relay (operator command) and assigns it every appliance that has a key but no
/// relay. Returns its token, which is stored only as a digest.
pub async fn create(
    pool: &PgPool,
    name: &str,
    endpoint: &str,
    public_key: &str,
) -> Result<CreatedRelay, RelayError> {
    let (name, endpoint, public_key) = (name.trim(), endpoint.trim(), public_key.trim());
    if let Some(problem) = relay_name_problem(name)
        .or_else(|| endpoint_problem(endpoint))
        .or_else(|| wireguard_key_problem("public_key", public_key))
    {
        return Err(RelayError::Invalid(problem));
    }
    let token = format!("{RELAY_TOKEN_PREFIX}{}", random_secret());
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO relays (id, name, endpoint, public_key, token_sha256) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(endpoint)
    .bind(public_key)
    .bind(secret_digest(&token))
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(RelayError::DuplicateName(name.to_owned()));
    }
    tracing::info!(relay = name, endpoint, "relay registered");
    let assigned = reassign(pool, None, Actor::System("admin relay-add")).await?;
    let relay = list(pool)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| RelayError::UnknownRelay(name.to_owned()))?;
    Ok(CreatedRelay {
        relay,
        token,
        assigned,
    })
}

/// Revokes a relay (operator command): its token stops working at once, and its appliances move
/// to the least-loaded remaining relay, or to none. Returns how many moved.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<usize, RelayError> {
    let row: Option<(Uuid, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, revoked_at FROM relays WHERE name = $1")
            .bind(name.trim())
            .fetch_optional(pool)
            .await?;
    let (id, revoked_at) = row.ok_or_else(|| RelayError::UnknownRelay(name.to_owned()))?;
    if revoked_at.is_some() {
        return Err(RelayError::AlreadyRevoked(name.to_owned()));
    }
    sqlx::query("UPDATE relays SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    tracing::info!(relay = name, "relay revoked");
    reassign(pool, Some(id), Actor::System("admin relay-revoke")).await
}

/// Every relay, revoked ones too, oldest first, with how many appliances each serves.
pub async fn list(pool: &PgPool) -> Result<Vec<RelaySummary>, RelayError> {
    Ok(sqlx::query_as::<_, RelaySummary>(
        "SELECT r.id, r.name, r.endpoint, r.public_key, r.created_at, r.revoked_at,
                COALESCE(l.appliances, 0) AS appliances
         FROM relays r LEFT JOIN stayopen_relay_loads() l ON l.relay_id = r.id
         ORDER BY r.created_at, r.name",
    )
    .fetch_all(pool)
    .await?)
}

/// Moves the appliances (with a key, not revoked) that have no relay — or `revoked`, the relay
/// being revoked — to the least-loaded relay, tenant by tenant; each move is audited, and the
/// changed desired policies are announced for publishing. Returns how many moved.
async fn reassign(pool: &PgPool, revoked: Option<Uuid>, actor: Actor) -> Result<usize, RelayError> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_to_reassign($1)")
        .bind(revoked)
        .fetch_all(pool)
        .await?;
    let mut moved = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let appliances: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT id, relay_id FROM appliances
             WHERE wireguard_public_key IS NOT NULL AND revoked_at IS NULL
               AND (relay_id IS NULL OR relay_id = $1)
             ORDER BY tunnel_address FOR UPDATE",
        )
        .bind(revoked)
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = Vec::new();
        for (appliance, before) in appliances {
            let after = least_loaded(&mut tx, revoked).await?;
            if after == before {
                continue;
            }
            set_relay(&mut tx, tenant, appliance, before, after, &actor).await?;
            changed.push(appliance);
        }
        let republish = policy::refresh(&mut tx, tenant, &changed).await?;
        policy::announce(&mut tx, &republish).await?;
        tx.commit().await?;
        moved += changed.len();
    }
    Ok(moved)
}

/// The least-loaded relay that is not revoked (nor `except`), if any.
async fn least_loaded(tx: &mut Tx, except: Option<Uuid>) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT stayopen_least_loaded_relay($1)")
        .bind(except)
        .fetch_one(&mut **tx)
        .await
}

async fn relay_name(tx: &mut Tx, relay: Option<Uuid>) -> Result<Option<String>, sqlx::Error> {
    match relay {
        None => Ok(None),
        Some(id) => {
            sqlx::query_scalar("SELECT name FROM relays WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await
        }
    }
}

async fn set_relay(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: Uuid,
    before: Option<Uuid>,
    after: Option<Uuid>,
    actor: &Actor,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE appliances SET relay_id = $2 WHERE id = $1")
        .bind(appliance)
        .bind(after)
        .execute(&mut **tx)
        .await?;
    let (before_name, after_name) = (relay_name(tx, before).await?, relay_name(tx, after).await?);
    audit::record(
        tx,
        tenant,
        actor,
        Change {
            action: "appliance.tunnel_relay",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: Some(serde_json::json!({ "relay": before_name })),
            after: Some(serde_json::json!({ "relay": after_name })),
        },
    )
    .await
}

/// Whether a key registration changed what the appliance's policy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Unchanged,
    Changed,
}

#[derive(sqlx::FromRow)]
struct TunnelRow {
    wireguard_public_key: Option<String>,
    tunnel_address: Option<String>,
    relay_id: Option<Uuid>,
    relay_revoked: Option<bool>,
}

/// Registers (or replaces) `appliance`'s WireGuard key inside the caller's tenant transaction,
/// which must hold the appliance's row lock: gives it an inner address the first time and the
/// least-loaded relay when it has none (or a revoked one); audited as `actor`. The key must have
/// passed [`wireguard_key_problem`]. A key that is another appliance's is refused, whichever MSP
/// it belongs to, with the same answer ([`RelayError::KeyTaken`]); two appliances registering
/// one key at once are settled by the unique index, with the same answer.
///
/// The caller recomputes the appliance's desired policy afterwards.
pub async fn register_key(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: Uuid,
    key: &str,
    actor: &Actor,
) -> Result<Registration, RelayError> {
    let taken: bool = sqlx::query_scalar("SELECT stayopen_wireguard_key_taken($1, $2)")
        .bind(key)
        .bind(appliance)
        .fetch_one(&mut **tx)
        .await?;
    if taken {
        return Err(RelayError::KeyTaken);
    }
    let current: TunnelRow = sqlx::query_as(
        "SELECT a.wireguard_public_key, host(a.tunnel_address) AS tunnel_address, a.relay_id,
                r.revoked_at IS NOT NULL AS relay_revoked
         FROM appliances a LEFT JOIN relays r ON r.id = a.relay_id WHERE a.id = $1",
    )
    .bind(appliance)
    .fetch_one(&mut **tx)
    .await?;
    let relay_usable = current.relay_id.is_some() && current.relay_revoked == Some(false);
    if current.wireguard_public_key.as_deref() == Some(key)
        && current.tunnel_address.is_some()
        && relay_usable
    {
        return Ok(Registration::Unchanged);
    }
    let relay = if relay_usable {
        current.relay_id
    } else {
        least_loaded(tx, None).await?
    };
    let (address, relay): (String, Option<Uuid>) = sqlx::query_as(
        "UPDATE appliances SET wireguard_public_key = $2,
                tunnel_address = COALESCE(tunnel_address, stayopen_next_tunnel_address()),
                relay_id = $3
         WHERE id = $1 RETURNING host(tunnel_address), relay_id",
    )
    .bind(appliance)
    .bind(key)
    .bind(relay)
    .fetch_one(&mut **tx)
    .await?;
    let (before_relay, after_relay) = (
        relay_name(tx, current.relay_id).await?,
        relay_name(tx, relay).await?,
    );
    audit::record(
        tx,
        tenant,
        actor,
        Change {
            action: "appliance.tunnel_key",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: Some(serde_json::json!({
                "wireguard_public_key": current.wireguard_public_key,
                "tunnel_address": current.tunnel_address,
                "relay": before_relay,
            })),
            after: Some(serde_json::json!({
                "wireguard_public_key": key,
                "tunnel_address": address,
                "relay": after_relay,
            })),
        },
    )
    .await?;
    tracing::info!(
        appliance_id = %appliance,
        tenant_id = %tenant,
        tunnel_address = %address,
        relay = after_relay.as_deref().unwrap_or("none"),
        "appliance WireGuard key registered"
    );
    Ok(Registration::Changed)
}

/// Why a request for a relay's peer list was not a relay's. Each is a label of
/// `stayopen_relay_auth_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayAuthFailure {
    #[error("a relay token is required (Authorization: Bearer sor_…)")]
    Missing,
    /// A token of another kind (a user's access token, an API token).
    #[error("only a relay token opens the relay API")]
    NotARelayToken,
    #[error("the relay token is unknown")]
    Unknown,
    #[error("the relay has been revoked")]
    Revoked,
}

impl RelayAuthFailure {
    /// The stable label of the rejection counter.
    pub fn reason(self) -> &'static str {
        match self {
            RelayAuthFailure::Missing => "missing_token",
            RelayAuthFailure::NotARelayToken => "not_a_relay_token",
            RelayAuthFailure::Unknown => "unknown_token",
            RelayAuthFailure::Revoked => "revoked_relay",
        }
    }
}

/// A relay that proved itself with its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCaller {
    pub id: Uuid,
    pub name: String,
}

/// Why a peer-list request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerListError {
    #[error(transparent)]
    Refused(#[from] RelayAuthFailure),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The relay whose token `token` is (the bearer token as sent, if any).
pub async fn authenticate(
    pool: &PgPool,
    token: Option<&str>,
) -> Result<RelayCaller, PeerListError> {
    let token = token.map(str::trim).ok_or(RelayAuthFailure::Missing)?;
    let Some(secret) = token.strip_prefix(RELAY_TOKEN_PREFIX) else {
        return Err(RelayAuthFailure::NotARelayToken.into());
    };
    // A relay token is the prefix and 64 hex digits; anything else is no token of ours.
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RelayAuthFailure::Unknown.into());
    }
    let row: Option<(Uuid, String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, name, revoked_at FROM relays WHERE token_sha256 = $1")
            .bind(secret_digest(token))
            .fetch_optional(pool)
            .await?;
    match row {
        None => Err(RelayAuthFailure::Unknown.into()),
        Some((_, _, Some(_))) => Err(RelayAuthFailure::Revoked.into()),
        Some((id, name, None)) => Ok(RelayCaller { id, name }),
    }
}

/// The revision of a peer list: a digest of exactly what the relay is told, so it changes when
/// and only when the list does.
pub fn revision(relay: &str, peers: &[RelayPeer]) -> String {
    let mut digest = Sha256::new();
    digest.update(relay.as_bytes());
    for peer in peers {
        digest.update(b"\n");
        digest.update(peer.appliance_id.to_string().as_bytes());
        digest.update(b" ");
        digest.update(peer.public_key.as_bytes());
        digest.update(b" ");
        digest.update(peer.inner_address.to_string().as_bytes());
    }
    hex::encode(&digest.finalize()[..16])
}

/// The peers `relay` serves: the non-revoked appliances of every MSP assigned to it, with their
/// keys and inner addresses, in address order.
pub async fn peer_list(pool: &PgPool, relay: &RelayCaller) -> Result<RelayPeerList, sqlx::Error> {
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT appliance_id, public_key, host(inner_address) FROM stayopen_relay_peers($1)",
    )
    .bind(relay.id)
    .fetch_all(pool)
    .await?;
    let peers: Vec<RelayPeer> = rows
        .into_iter()
        .filter_map(|(id, public_key, address)| {
            // The column only holds addresses of 100.96.0.0/12 (a CHECK constraint).
            let inner_address = address.parse::<Ipv4Addr>().ok()?;
            Some(RelayPeer {
                appliance_id: ApplianceId(id),
                public_key,
                inner_address,
            })
        })
        .collect();
    Ok(RelayPeerList {
        relay: relay.name.clone(),
        revision: revision(&relay.name, &peers),
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn a_wireguard_key_is_the_canonical_base64_of_32_bytes() {
        assert_eq!(wireguard_key_problem("k", KEY), None);
        for bad in [
            "",
            "not base64!",
            // 31 bytes, 33 bytes.
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8yg==",
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykwA",
            // Non-canonical trailing bits.
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykx=",
            // With whitespace around it.
            " HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
            // All zeros.
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            let problem = wireguard_key_problem("wireguard_public_key", bad);
            assert!(
                problem
                    .as_deref()
                    .is_some_and(|p| p.starts_with("wireguard_public_key")),
                "{bad:?}: {problem:?}"
            );
        }
    }

    #[test]
    fn relay_names_and_endpoints_are_checked() {
        assert_eq!(relay_name_problem("relay-1.eu"), None);
        for bad in ["", "-x", "a b", "ä", &"x".repeat(64)] {
            assert!(relay_name_problem(bad).is_some(), "{bad:?}");
        }
        for good in [
            "relay1.example.net:51820",
            "192.0.2.10:51820",
            "[2001:db8::1]:51820",
        ] {
            assert_eq!(endpoint_problem(good), None, "{good}");
        }
        for bad in [
            "relay1.example.net",
            "relay1.example.net:0",
            ":51820",
            "[nothing]:51820",
            "a b:1",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn the_revision_changes_exactly_when_the_list_does() {
        let peer = |n: u128, key: &str, last: u8| RelayPeer {
            appliance_id: ApplianceId(Uuid::from_u128(n)),
            public_key: key.to_owned(),
            inner_address: Ipv4Addr::new(100, 96, 0, last),
        };
        let one = vec![peer(1, KEY, 2)];
        assert_eq!(revision("r", &one), revision("r", &one.clone()));
        assert_ne!(revision("r", &one), revision("r", &[]));
        assert_ne!(revision("r", &one), revision("r", &[peer(1, KEY, 3)]));
        assert_ne!(revision("r", &one), revision("r", &[peer(2, KEY, 2)]));
        assert_ne!(revision("r", &one), revision("s", &one));
        assert_eq!(revision("r", &one).len(), 32);
    }
}
