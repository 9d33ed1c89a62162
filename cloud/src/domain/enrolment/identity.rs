//! An appliance's identity as MSP staff see and manage it: its certificates, an MSP admin's
//! approval to enrol the hardware again (replaced hardware, lost state), and restoring a revoked
//! appliance. See [`super::admit_reenrolment`] for what the approval admits.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{DeviceCertificateView, DeviceIdentityView};

use super::{APPROVAL_VALID_FOR, Issuer, Refusal};
use crate::domain::access::visibility::visible_appliance;
use crate::domain::access::{AccessError, AuthUser, Permission, random_secret, secret_digest};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Approving re-enrolment of a revoked appliance (it must be restored instead).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    revoked_at: Option<DateTime<Utc>>,
    reenrollment_approved_until: Option<DateTime<Utc>>,
    cert_serial: Option<String>,
}

#[derive(sqlx::FromRow)]
struct CertificateRow {
    serial_hex: String,
    issued_at: DateTime<Utc>,
    not_after: DateTime<Utc>,
    superseded_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

async fn load_identity(
    tx: &mut Tx,
    appliance: ApplianceId,
) -> Result<DeviceIdentityView, sqlx::Error> {
    let row: IdentityRow = sqlx::query_as(
        "SELECT revoked_at, reenrollment_approved_until, cert_serial FROM appliances WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    let certificates: Vec<CertificateRow> = sqlx::query_as(
        "SELECT serial_hex, issued_at, not_after, superseded_at, revoked_at
         FROM device_certificates WHERE appliance_id = $1
         ORDER BY issued_at DESC, serial_hex LIMIT 100",
    )
    .bind(appliance.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    let now = Utc::now();
    Ok(DeviceIdentityView {
        appliance_id: appliance,
        revoked_at: row.revoked_at,
        reenrollment_approved_until: row.reenrollment_approved_until.filter(|until| *until > now),
        current_certificate: row.cert_serial,
        certificates: certificates
            .into_iter()
            .map(|c| DeviceCertificateView {
                serial: c.serial_hex,
                issued_at: c.issued_at,
                not_after: c.not_after,
                superseded_at: c.superseded_at,
                revoked_at: c.revoked_at,
            })
            .collect(),
    })
}

/// An appliance's identity, if the caller may see the appliance.
pub async fn show(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
) -> Result<DeviceIdentityView, IdentityError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    Ok(load_identity(&mut tx, appliance).await?)
}

/// Lets the appliance's hardware enrol again once, within [`APPROVAL_VALID_FOR`], without proof of
/// its current key. Refused for a revoked appliance. Audited.
pub async fn approve_reenrolment(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
) -> Result<DeviceIdentityView, IdentityError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    auth.require(Permission::TrustDevices)?;
    let revoked: bool = sqlx::query_scalar(
        "SELECT revoked_at IS NOT NULL FROM appliances WHERE id = $1 FOR UPDATE",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    if revoked {
        return Err(Refusal::Revoked.into());
    }
    let until = Utc::now() + APPROVAL_VALID_FOR;
    sqlx::query("UPDATE appliances SET reenrollment_approved_until = $2 WHERE id = $1")
        .bind(appliance.as_uuid())
        .bind(until)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "appliance.approve_reenrollment",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: None,
            after: Some(serde_json::json!({ "reenrollment_approved_until": until })),
        },
    )
    .await?;
    let view = load_identity(&mut tx, appliance).await?;
    tx.commit().await?;
    tracing::info!(%appliance, %until, "re-enrolment approved");
    Ok(view)
}

/// Restores a revoked appliance: the revocation ends and the hardware may enrol again, once,
/// within [`APPROVAL_VALID_FOR`]. Audited; the revocation list is rewritten after the commit.
pub async fn restore(
    pool: &PgPool,
    issuer: Issuer<'_>,
    auth: &AuthUser,
    appliance: ApplianceId,
) -> Result<DeviceIdentityView, IdentityError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    auth.require(Permission::TrustDevices)?;
    let revoked_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM appliances WHERE id = $1 FOR UPDATE")
            .bind(appliance.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    let Some(revoked_at) = revoked_at else {
        return Err(IdentityError::Conflict("the appliance is not revoked"));
    };
    let until = Utc::now() + APPROVAL_VALID_FOR;
    // The credentials of before the revocation must not come back with it: a password nobody
    // knows, and no key a renewal could be proven with. The box enrols again for new ones.
    sqlx::query(
        "UPDATE appliances SET revoked_at = NULL, reenrollment_approved_until = $2,
                mqtt_password_hash = $3, cert_public_key = NULL
         WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .bind(until)
    .bind(secret_digest(&random_secret()))
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "appliance.restore",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: Some(serde_json::json!({ "revoked_at": revoked_at })),
            after: Some(serde_json::json!({
                "revoked": false,
                "reenrollment_approved_until": until,
            })),
        },
    )
    .await?;
    let view = load_identity(&mut tx, appliance).await?;
    tx.commit().await?;
    issuer.refresh_crl(pool).await;
    tracing::info!(%appliance, "appliance restored");
    Ok(view)
}
