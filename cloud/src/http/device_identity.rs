//! An appliance's identity as MSP staff see and manage it: its certificates, an MSP admin's
//! approval to enrol the hardware again (replaced hardware, lost state), and restoring a revoked
//! appliance. See [`crate::domain::enrolment`] for what the approval admits.

use actix_web::{get, post, web};
use chrono::{DateTime, Utc};
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{ApiError, DeviceCertificateView, DeviceIdentityView};

use crate::domain::access::visibility::visible_appliance;
use crate::domain::access::{AuthUser, Permission, random_secret, secret_digest};
use crate::domain::audit::{self, Change};
use crate::domain::enrolment::{APPROVAL_VALID_FOR, Refusal};
use crate::http::enroll::rewrite_crl;
use crate::http::error::ApiFailure;
use crate::infra::db::Tx;
use crate::state::AppState;

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
) -> Result<DeviceIdentityView, ApiFailure> {
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

/// An appliance's identity: revocation, a pending approval to enrol again, its certificates.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = DeviceIdentityView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/identity")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<DeviceIdentityView>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    Ok(web::Json(load_identity(&mut tx, appliance).await?))
}

/// Lets the appliance's hardware enrol again once, within 24 hours, without proof of its current
/// key: for replaced hardware or a box that lost its state. The enrolment needs a token of the
/// appliance's own practice (or its registered serial). MSP admins only; audited.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses(
        (status = 200, body = DeviceIdentityView),
        (status = 403, body = ApiError, description = "Not an MSP admin, or the appliance is revoked (`appliance_revoked`: restore it instead)"),
        (status = 404, body = ApiError),
    ),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/approve-reenrollment")]
pub async fn approve_reenrollment(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<DeviceIdentityView>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
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
    Ok(web::Json(view))
}

/// Restores a revoked appliance: the revocation ends and the hardware may enrol again, once, within
/// 24 hours, with a token of its own practice. Its old certificates stay on the revocation list and
/// its old MQTT password and key open nothing. MSP admins only; audited.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses(
        (status = 200, body = DeviceIdentityView),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The appliance is not revoked"),
    ),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/restore")]
pub async fn restore(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<DeviceIdentityView>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    auth.require(Permission::TrustDevices)?;
    let revoked_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM appliances WHERE id = $1 FOR UPDATE")
            .bind(appliance.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    let Some(revoked_at) = revoked_at else {
        return Err(ApiFailure::Conflict("the appliance is not revoked".into()));
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
    rewrite_crl(&state).await;
    tracing::info!(%appliance, "appliance restored");
    Ok(web::Json(view))
}
