//! The tamper-evident audit log.
//!
//! Every change is recorded in the transaction that makes it ([`record`]), so a change without its
//! audit row cannot commit. Rows form one hash chain per tenant: `hash = SHA-256(prev_hash ‖ seq ‖
//! at ‖ actor ‖ action ‖ target ‖ before ‖ after)`, each field length-prefixed, the first row's
//! `prev_hash` 32 zero bytes. Editing, deleting or reordering a row breaks the chain at that row,
//! which [`verify`] reports. [`list`] reads a tenant's log, newest first.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use stayopen_shared::TenantId;
use stayopen_shared::api::AuditEntry;
use uuid::Uuid;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(Uuid),
    ApiToken(Uuid),
    Appliance(Uuid),
    System(&'static str),
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::ApiToken(id) => format!("api_token:{id}"),
            Actor::Appliance(id) => format!("appliance:{id}"),
            Actor::System(what) => format!("system:{what}"),
        }
    }
}

/// One change to record.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub(crate) fn chain_hash(
    prev: &[u8],
    seq: i64,
    at: DateTime<Utc>,
    actor: &str,
    change: (&str, &str, &str),
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> Vec<u8> {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(prev);
    field(&seq.to_be_bytes());
    field(
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .as_bytes(),
    );
    field(actor.as_bytes());
    field(change.0.as_bytes());
    field(change.1.as_bytes());
    field(change.2.as_bytes());
    // jsonb normalises key order and spacing; hashing its text form as PostgreSQL returns it keeps
    // the hash stable across the round trip.
    field(before.map(|v| v.to_string()).unwrap_or_default().as_bytes());
    field(after.map(|v| v.to_string()).unwrap_or_default().as_bytes());
    hasher.finalize().to_vec()
}

/// Appends `change` to the tenant's chain inside the caller's transaction.
pub async fn record(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    change: Change<'_>,
) -> Result<(), sqlx::Error> {
    // Serialise appends per tenant so two transactions never chain onto the same row.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    let (last_seq, prev) = chain_head(conn, tenant).await?;
    let seq = last_seq + 1;
    // PostgreSQL keeps microseconds: hash exactly what will be read back.
    let at = Utc::now().trunc_subsecs(6);
    let actor = actor.label();
    // Round-trip through jsonb's canonical form so the hash matches what verification reads.
    let (before, after): (Option<serde_json::Value>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT $1::jsonb, $2::jsonb")
            .bind(change.before)
            .bind(change.after)
            .fetch_one(&mut *conn)
            .await?;
    let hash = chain_hash(
        &prev,
        seq,
        at,
        &actor,
        (change.action, change.target_type, &change.target_id),
        before.as_ref(),
        after.as_ref(),
    );
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, seq, at, actor, action, target_type, target_id, before, after, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(tenant.as_uuid())
    .bind(seq)
    .bind(at)
    .bind(&actor)
    .bind(change.action)
    .bind(change.target_type)
    .bind(&change.target_id)
    .bind(before)
    .bind(after)
    .bind(prev)
    .bind(hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The newest entry of the tenant's chain: its sequence number and hash, or 0 and 32 zero bytes
/// (the first entry's `prev_hash`) while the chain is empty.
pub async fn chain_head(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<(i64, Vec<u8>), sqlx::Error> {
    let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(last.unwrap_or((0, vec![0u8; 32])))
}

/// An entry with its link in the chain, for whoever must show it can be checked (the evidence
/// package).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainedEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The entries about `practice` made in `[from, to)` up to entry `up_to_seq`, oldest first: those
/// whose target is the practice or one of its sites or appliances, and every change whose values
/// name the practice (`practice_id`, as every change of practice-owned records does).
pub async fn practice_entries(
    conn: &mut PgConnection,
    tenant: TenantId,
    practice: stayopen_shared::PracticeId,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    up_to_seq: i64,
) -> Result<Vec<ChainedEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, at, actor, action, target_type, target_id, before, after, prev_hash, hash
         FROM audit_log l
         WHERE l.tenant_id = $1 AND l.seq <= $5 AND l.at >= $3 AND l.at < $4
           AND ((l.target_type = 'practice' AND l.target_id = $2::text)
             OR (l.target_type = 'site' AND l.target_id IN
                    (SELECT id::text FROM sites WHERE practice_id = $2))
             OR (l.target_type = 'appliance' AND l.target_id IN
                    (SELECT id::text FROM appliances WHERE practice_id = $2))
             OR l.before ->> 'practice_id' = $2::text
             OR l.after ->> 'practice_id' = $2::text)
         ORDER BY l.seq",
    )
    .bind(tenant.as_uuid())
    .bind(practice.as_uuid())
    .bind(from)
    .bind(to)
    .bind(up_to_seq)
    .fetch_all(&mut *conn)
    .await
}

/// Which entries a reading of the log shows. `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only this action, e.g. `user.create`.
    pub action: Option<&'a str>,
    /// Only changes to this target: its id, or what people call it (a serial, an e-mail address,
    /// a practice's name).
    pub target_id: Option<&'a str>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    at: DateTime<Utc>,
    actor: String,
    actor_name: String,
    action: String,
    target_type: String,
    target_id: String,
    target_name: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

/// Up to `limit` of the tenant's entries, newest first, before sequence number `before_seq` (a
/// previous page's last).
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &AuditFilter<'_>,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut tx = crate::infra::db::tenant_tx(pool, tenant).await?;
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT seq, at, actor, stayopen_actor_name(actor) AS actor_name, action, target_type,
                target_id, stayopen_target_name(target_type, target_id) AS target_name, before, after
         FROM audit_log
         WHERE tenant_id = $1
           AND ($2::bigint IS NULL OR seq < $2)
           AND ($3::text IS NULL OR action = $3)
           AND ($4::text IS NULL OR target_id = $4 OR target_id IN (
                SELECT id::text FROM appliances WHERE lower(serial) = lower($4)
                UNION ALL SELECT id::text FROM users WHERE lower(email) = lower($4)
                UNION ALL SELECT id::text FROM practices WHERE lower(name) = lower($4)))
           AND ($5::timestamptz IS NULL OR at >= $5)
         ORDER BY seq DESC LIMIT $6",
    )
    .bind(tenant.as_uuid())
    .bind(before_seq)
    .bind(filter.action)
    .bind(filter.target_id)
    .bind(filter.since)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            actor_name: r.actor_name,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            target_name: r.target_name,
            before: r.before,
            after: r.after,
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub tenant_id: Uuid,
    pub rows: u64,
    /// The first row whose hash or link does not match, if any.
    pub broken_at_seq: Option<i64>,
    pub problem: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target_type: String,
    target_id: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// Recomputes every tenant's chain (or one tenant's).
pub async fn verify(pool: &PgPool, tenant: Option<Uuid>) -> Result<Vec<ChainReport>, sqlx::Error> {
    let tenants = match tenant {
        Some(id) => vec![TenantId(id)],
        None => crate::infra::db::lookup::tenant_ids(pool).await?,
    };
    let mut reports = Vec::new();
    for tenant in tenants {
        let tenant_id = tenant.0;
        let mut tx = crate::infra::db::tenant_tx(pool, tenant).await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, at, actor, action, target_type, target_id, before, after, prev_hash, hash
             FROM audit_log WHERE tenant_id = $1 ORDER BY seq",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut report = ChainReport {
            tenant_id,
            rows: rows.len() as u64,
            broken_at_seq: None,
            problem: None,
        };
        let mut prev = vec![0u8; 32];
        for (i, row) in rows.iter().enumerate() {
            let expected_seq = i as i64 + 1;
            let problem = if row.seq != expected_seq {
                Some(format!("row {expected_seq} is missing (found {})", row.seq))
            } else if row.prev_hash != prev {
                Some("link to the previous row does not match".to_owned())
            } else if row.hash
                != chain_hash(
                    &prev,
                    row.seq,
                    row.at,
                    &row.actor,
                    (&row.action, &row.target_type, &row.target_id),
                    row.before.as_ref(),
                    row.after.as_ref(),
                )
            {
                Some("content does not match its hash".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                report.broken_at_seq = Some(expected_seq);
                report.problem = Some(problem);
                break;
            }
            prev = row.hash.clone();
        }
        reports.push(report);
    }
    Ok(reports)
}
