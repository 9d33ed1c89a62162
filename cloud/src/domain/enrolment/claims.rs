//! Serial numbers registered for zero-touch enrolment (audited). A serial is unique within an MSP;
//! another MSP may register it too, and is told nothing about it: the box enrols with the
//! registration whose factory key it holds (see [`super::enrol`]).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::ClaimedSerialView;
use stayopen_shared::{ApplianceId, PracticeId, SiteId};
use uuid::Uuid;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AccessError, AuthUser, Permission, secret_digest};
use crate::domain::audit::{self, Change};

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    serial: String,
    practice_id: Uuid,
    site_id: Uuid,
    created_at: DateTime<Utc>,
    enrolled_appliance_id: Option<Uuid>,
    enrolled_at: Option<DateTime<Utc>>,
}

impl From<ClaimRow> for ClaimedSerialView {
    fn from(row: ClaimRow) -> Self {
        ClaimedSerialView {
            serial: row.serial,
            practice_id: PracticeId(row.practice_id),
            site_id: SiteId(row.site_id),
            created_at: row.created_at,
            appliance_id: row.enrolled_appliance_id.map(ApplianceId),
            enrolled_at: row.enrolled_at,
        }
    }
}

const CLAIM_SELECT: &str =
    "SELECT serial, practice_id, site_id, created_at, enrolled_appliance_id, enrolled_at
     FROM claimed_serials";

/// A serial to register, with the factory key the box will present.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub practice: PracticeId,
    /// The practice's first site when `None`.
    pub site: Option<SiteId>,
    pub serial: &'a str,
    pub factory_key: &'a str,
}

/// Registers a serial number (and the digest of its factory key) for zero-touch enrolment into a
/// practice the caller may see; audited.
pub async fn register(
    pool: &PgPool,
    auth: &AuthUser,
    registration: Registration<'_>,
) -> Result<ClaimedSerialView, ClaimError> {
    let practice = registration.practice;
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    auth.require(Permission::Configure)?;
    let serial = registration.serial.trim();
    if serial.is_empty() || serial.len() > 128 {
        return Err(ClaimError::Invalid(
            "serial must be 1 to 128 characters".into(),
        ));
    }
    let key = registration.factory_key.trim();
    if key.len() < 32 || key.len() > 256 {
        return Err(ClaimError::Invalid(
            "factory_key must be 32 to 256 characters".into(),
        ));
    }
    // Unique within the MSP only: whether another MSP registered the serial is none of this
    // one's business (enrolment picks the registration whose factory key the box holds).
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM claimed_serials WHERE serial = $1)")
            .bind(serial)
            .fetch_one(&mut *tx)
            .await?;
    if taken {
        return Err(ClaimError::Conflict(format!(
            "serial {serial} is already registered"
        )));
    }
    let site: Uuid = sqlx::query_scalar(
        "SELECT id FROM sites WHERE practice_id = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(practice.as_uuid())
    .bind(registration.site.map(|s| s.0))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ClaimError::NotFound("no such site"))?;
    let row: ClaimRow = sqlx::query_as(
        "INSERT INTO claimed_serials (serial, tenant_id, practice_id, site_id, factory_key_hash, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING serial, practice_id, site_id, created_at, enrolled_appliance_id, enrolled_at",
    )
    .bind(serial)
    .bind(auth.tenant_id.as_uuid())
    .bind(practice.as_uuid())
    .bind(site)
    .bind(secret_digest(key))
    .bind(auth.actor().label())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "claimed_serial.create",
            target_type: "claimed_serial",
            target_id: serial.to_owned(),
            before: None,
            after: Some(serde_json::json!({ "practice_id": practice, "site_id": site })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Registered serials the caller may see, by serial number, after `after`; at most `limit`.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    practice: Option<Uuid>,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<ClaimedSerialView>, ClaimError> {
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<ClaimRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CLAIM_SELECT}
         WHERE ($1::uuid[] IS NULL OR practice_id = ANY($1))
           AND ($2::uuid IS NULL OR practice_id = $2)
           AND ($3::text IS NULL OR serial > $3)
         ORDER BY serial LIMIT $4"
    )))
    .bind(auth.practice_filter())
    .bind(practice)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(ClaimedSerialView::from).collect())
}

/// Withdraws a registration (an enrolled appliance stays enrolled); audited.
pub async fn withdraw(pool: &PgPool, auth: &AuthUser, serial: &str) -> Result<(), ClaimError> {
    let mut tx = auth.tx(pool).await?;
    let practice: Uuid =
        sqlx::query_scalar("SELECT practice_id FROM claimed_serials WHERE serial = $1")
            .bind(serial)
            .fetch_optional(&mut *tx)
            .await?
            .filter(|p| auth.may_see_practice(PracticeId(*p)))
            .ok_or(ClaimError::NotFound("no such serial"))?;
    auth.require(Permission::Configure)?;
    sqlx::query("DELETE FROM claimed_serials WHERE serial = $1")
        .bind(serial)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "claimed_serial.delete",
            target_type: "claimed_serial",
            target_id: serial.to_owned(),
            before: Some(serde_json::json!({ "practice_id": practice })),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
