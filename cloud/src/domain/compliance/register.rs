//! The critical applications register of each practice. It is what the practice's appliances
//! check: the effective policy's `critical_apps` is read from the register's table
//! (`domain::policy::effective`), and every change recomputes and republishes the desired policy
//! of the practice's appliances.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::PracticeId;
use stayopen_shared::compliance::{AppEndpoint, AppTier, CriticalAppEntry, CriticalAppInput};
use uuid::Uuid;

use super::ComplianceError;
use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;
use crate::infra::device_link::DeviceLink;

/// The most applications one practice lists (the policy's limit: each is checked through every
/// uplink).
pub const MAX_APPS: usize = 20;

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    practice_id: Uuid,
    name: String,
    tier: AppTier,
    endpoints: sqlx::types::Json<Vec<AppEndpoint>>,
    owner: String,
    note: String,
    updated_at: DateTime<Utc>,
    updated_by: Option<String>,
}

impl From<Row> for CriticalAppEntry {
    fn from(row: Row) -> Self {
        CriticalAppEntry {
            id: row.id,
            practice_id: PracticeId(row.practice_id),
            name: row.name,
            tier: row.tier,
            endpoints: row.endpoints.0,
            owner: row.owner,
            note: row.note,
            updated_at: row.updated_at,
            updated_by: row.updated_by,
        }
    }
}

const SELECT: &str = "SELECT c.id, c.practice_id, c.name, c.tier, c.endpoints, c.owner, c.note,
        c.updated_at, coalesce(nullif(u.display_name, ''), u.email, c.updated_by) AS updated_by
    FROM critical_apps c
    LEFT JOIN users u ON c.updated_by = 'user:' || u.id::text";

/// A practice's register, most critical first, then by name.
pub async fn for_practice(
    tx: &mut Tx,
    practice: PracticeId,
) -> Result<Vec<CriticalAppEntry>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE c.practice_id = $1 ORDER BY c.tier, lower(c.name)"
    )))
    .bind(practice.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(CriticalAppEntry::from).collect())
}

/// A visible practice's register.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
) -> Result<Vec<CriticalAppEntry>, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    Ok(for_practice(&mut tx, practice).await?)
}

fn check(input: &CriticalAppInput) -> Result<CriticalAppInput, ComplianceError> {
    if let Some(problem) = input.problem() {
        // The shared check names the field except for endpoints; the API always names it.
        let named = ["name", "owner", "note"]
            .iter()
            .any(|field| problem.starts_with(field));
        return Err(ComplianceError::Invalid(if named {
            problem
        } else {
            format!("endpoints: {problem}")
        }));
    }
    Ok(CriticalAppInput {
        name: input.name.trim().to_owned(),
        ..input.clone()
    })
}

fn name_taken(e: sqlx::Error, name: &str) -> ComplianceError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => ComplianceError::Conflict(
            format!("name: the register already lists an application named {name:?}"),
        ),
        other => other.into(),
    }
}

async fn load(tx: &mut Tx, auth: &AuthUser, id: Uuid) -> Result<CriticalAppEntry, ComplianceError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE c.id = $1 AND ($2::uuid[] IS NULL OR c.practice_id = ANY($2))"
    )))
    .bind(id)
    .bind(auth.practice_filter())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(CriticalAppEntry::from)
        .ok_or(ComplianceError::NotFound("no such critical application"))
}

fn audited(entry: &CriticalAppEntry) -> serde_json::Value {
    serde_json::json!({
        "practice_id": entry.practice_id,
        "name": entry.name,
        "tier": entry.tier,
        "endpoints": entry.endpoints,
        "owner": entry.owner,
        "note": entry.note,
    })
}

/// Recomputes the practice's appliances' desired policy in `tx`, commits, and publishes the
/// changed ones.
async fn commit_and_republish(
    mut tx: Tx,
    auth: &AuthUser,
    link: &DeviceLink,
    practice: PracticeId,
) -> Result<(), ComplianceError> {
    let appliances: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM appliances WHERE practice_id = $1 AND revoked_at IS NULL",
    )
    .bind(practice.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    let changed = crate::domain::policy::refresh(&mut tx, auth.tenant_id, &appliances).await?;
    let messages = crate::domain::policy::outgoing(&mut tx, &changed).await?;
    tx.commit().await?;
    crate::domain::policy::send(link, messages);
    Ok(())
}

/// Adds an application to a visible practice's register (audited) and republishes the policy.
pub async fn create(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    practice: PracticeId,
    input: &CriticalAppInput,
) -> Result<CriticalAppEntry, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    auth.require(Permission::ManageCompliance)?;
    let input = check(input)?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM critical_apps WHERE practice_id = $1")
            .bind(practice.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_APPS {
        return Err(ComplianceError::Invalid(format!(
            "a practice's register holds at most {MAX_APPS} applications"
        )));
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO critical_apps (id, tenant_id, practice_id, name, tier, endpoints, owner, note, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(practice.as_uuid())
    .bind(&input.name)
    .bind(input.tier)
    .bind(sqlx::types::Json(&input.endpoints))
    .bind(&input.owner)
    .bind(&input.note)
    .bind(auth.actor().label())
    .execute(&mut *tx)
    .await
    .map_err(|e| name_taken(e, &input.name))?;
    let entry = load(&mut tx, auth, id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "critical_app.create",
            target_type: "critical_app",
            target_id: id.to_string(),
            before: None,
            after: Some(audited(&entry)),
        },
    )
    .await?;
    commit_and_republish(tx, auth, link, practice).await?;
    Ok(entry)
}

/// Replaces an entry (audited) and republishes the policy.
pub async fn update(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    id: Uuid,
    input: &CriticalAppInput,
) -> Result<CriticalAppEntry, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    let before = load(&mut tx, auth, id).await?;
    auth.require(Permission::ManageCompliance)?;
    let input = check(input)?;
    sqlx::query(
        "UPDATE critical_apps SET name = $2, tier = $3, endpoints = $4, owner = $5, note = $6,
            updated_at = now(), updated_by = $7
         WHERE id = $1",
    )
    .bind(id)
    .bind(&input.name)
    .bind(input.tier)
    .bind(sqlx::types::Json(&input.endpoints))
    .bind(&input.owner)
    .bind(&input.note)
    .bind(auth.actor().label())
    .execute(&mut *tx)
    .await
    .map_err(|e| name_taken(e, &input.name))?;
    let after = load(&mut tx, auth, id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "critical_app.update",
            target_type: "critical_app",
            target_id: id.to_string(),
            before: Some(audited(&before)),
            after: Some(audited(&after)),
        },
    )
    .await?;
    commit_and_republish(tx, auth, link, before.practice_id).await?;
    Ok(after)
}

/// Removes an entry (audited) and republishes the policy.
pub async fn delete(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    id: Uuid,
) -> Result<(), ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    let before = load(&mut tx, auth, id).await?;
    auth.require(Permission::ManageCompliance)?;
    sqlx::query("DELETE FROM critical_apps WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "critical_app.delete",
            target_type: "critical_app",
            target_id: id.to_string(),
            before: Some(audited(&before)),
            after: Some(serde_json::json!({ "practice_id": before.practice_id })),
        },
    )
    .await?;
    commit_and_republish(tx, auth, link, before.practice_id).await?;
    Ok(())
}
