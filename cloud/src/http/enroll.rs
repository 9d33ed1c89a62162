//! Zero-touch enrolment: an appliance presents an enrolment token and its hardware identity and
//! receives its identity and MQTT credentials.

use actix_web::{post, web};
use chrono::{DateTime, Utc};
use stayopen_shared::api::{ApiError, EnrollRequest, EnrollResponse, MqttCredentials};
use stayopen_shared::{ApplianceId, DeviceTopic, PracticeId, SiteId, TenantId};
use uuid::Uuid;

use crate::audit::{self, Actor, Change};
use crate::auth::{random_secret, secret_digest};
use crate::db::{self, lookup};
use crate::http::error::ApiFailure;
use crate::metrics::API_REJECTED;
use crate::startup::AppState;

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    tenant_id: Uuid,
    practice_id: Uuid,
    site_id: Uuid,
    expires_at: DateTime<Utc>,
    max_uses: i32,
    uses: i32,
}

fn validate(request: &EnrollRequest) -> Result<(), ApiFailure> {
    let hw = &request.hardware;
    for (field, value) in [
        ("hardware.serial", &hw.serial),
        ("hardware.mac", &hw.mac),
        ("hardware.model", &hw.model),
    ] {
        if value.trim().is_empty() || value.len() > 128 {
            return Err(ApiFailure::BadRequest(format!(
                "{field} must be 1 to 128 characters"
            )));
        }
    }
    if request.agent_version.len() > 64 {
        return Err(ApiFailure::BadRequest(
            "agent_version must be at most 64 characters".into(),
        ));
    }
    Ok(())
}

/// Enrols an appliance with an enrolment token: the appliance gets its id and MQTT credentials.
/// The same hardware (serial and MAC) enrolling again keeps its id; hardware enrolled with another
/// MSP is refused.
#[utoipa::path(
    tag = "enrolment",
    request_body = EnrollRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "Unknown, expired or used-up token"),
        (status = 409, body = ApiError, description = "The hardware belongs to another MSP"),
    )
)]
#[post("/enroll")]
pub async fn enroll(
    state: web::Data<AppState>,
    body: web::Json<EnrollRequest>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    let result = enroll_inner(&state, &body).await;
    if let Err(failure) = &result {
        state
            .metrics
            .increment(API_REJECTED, "reason", failure.code());
        tracing::warn!(serial = %body.hardware.serial, reason = failure.code(), "enrolment refused");
    }
    result.map(web::Json)
}

async fn enroll_inner(
    state: &AppState,
    request: &EnrollRequest,
) -> Result<EnrollResponse, ApiFailure> {
    validate(request)?;
    let token_hash = secret_digest(request.token.trim());
    let tenant = lookup::enrollment_token_tenant(&state.pool, token_hash.clone())
        .await?
        .ok_or(ApiFailure::EnrollmentTokenUnknown)?;
    let hw = &request.hardware;
    if lookup::hardware_tenant(&state.pool, &hw.serial, &hw.mac)
        .await?
        .is_some_and(|owner| owner != tenant)
    {
        return Err(ApiFailure::HardwareClaimed);
    }
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    let token: Option<TokenRow> = sqlx::query_as(
        "SELECT id, tenant_id, practice_id, site_id, expires_at, max_uses, uses
         FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let token = token.ok_or(ApiFailure::EnrollmentTokenUnknown)?;
    if token.expires_at <= Utc::now() {
        return Err(ApiFailure::EnrollmentTokenExpired);
    }
    if token.uses >= token.max_uses {
        return Err(ApiFailure::EnrollmentTokenExhausted);
    }

    let mqtt_password = random_secret();
    if request.csr_pem.len() > 8192 {
        return Err(ApiFailure::BadRequest("csr_pem is too long".into()));
    }
    let existing: Option<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, tenant_id FROM appliances WHERE serial = $1 AND mac = $2 FOR UPDATE",
    )
    .bind(&hw.serial)
    .bind(&hw.mac)
    .fetch_optional(&mut *tx)
    .await?;
    let appliance_id = match existing {
        Some((_, tenant)) if tenant != token.tenant_id => return Err(ApiFailure::HardwareClaimed),
        Some((id, _)) => {
            // Re-enrolment (factory reset, lost state): same appliance, fresh credentials, and
            // possibly a new practice/site within the same tenant.
            sqlx::query(
                "UPDATE appliances SET practice_id = $2, site_id = $3, model = $4, agent_version = $5,
                        mqtt_password_hash = $6, enrolled_at = now(), revoked_at = NULL
                 WHERE id = $1",
            )
            .bind(id)
            .bind(token.practice_id)
            .bind(token.site_id)
            .bind(&hw.model)
            .bind(&request.agent_version)
            .bind(secret_digest(&mqtt_password))
            .execute(&mut *tx)
            .await?;
            id
        }
        None => {
            let id = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO appliances (id, tenant_id, practice_id, site_id, serial, mac, model, agent_version, mqtt_password_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(token.tenant_id)
            .bind(token.practice_id)
            .bind(token.site_id)
            .bind(&hw.serial)
            .bind(&hw.mac)
            .bind(&hw.model)
            .bind(&request.agent_version)
            .bind(secret_digest(&mqtt_password))
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    let certificate = state
        .ca
        .sign_device(&request.csr_pem, ApplianceId(appliance_id))
        .map_err(|e| ApiFailure::BadRequest(e.to_string()))?;
    sqlx::query("UPDATE appliances SET cert_serial = $2, cert_not_after = $3 WHERE id = $1")
        .bind(appliance_id)
        .bind(&certificate.serial_hex)
        .bind(certificate.not_after)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        TenantId(token.tenant_id),
        &Actor::Appliance(appliance_id),
        Change {
            action: if existing.is_some() {
                "appliance.reenroll"
            } else {
                "appliance.enroll"
            },
            target_type: "appliance",
            target_id: appliance_id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "serial": hw.serial,
                "mac": hw.mac,
                "model": hw.model,
                "practice_id": token.practice_id,
                "site_id": token.site_id,
                "enrollment_token_id": token.id,
                "certificate_serial": certificate.serial_hex,
                "certificate_not_after": certificate.not_after,
            })),
        },
    )
    .await?;
    sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
        .bind(token.id)
        .execute(&mut *tx)
        .await?;
    // Its desired policy exists from the start; it is sent when the appliance first connects.
    crate::desired::refresh(&mut tx, tenant, &[appliance_id])
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    tx.commit().await?;

    let appliance_id = ApplianceId(appliance_id);
    tracing::info!(%appliance_id, tenant_id = %token.tenant_id, serial = %hw.serial, "appliance enrolled");
    Ok(EnrollResponse {
        appliance_id,
        practice_id: PracticeId(token.practice_id),
        site_id: SiteId(token.site_id),
        mqtt: MqttCredentials {
            host: state.config.broker.public_host.clone(),
            port: state.config.broker_public_port(),
            username: appliance_id.to_string(),
            password: mqtt_password,
        },
        topic_prefix: DeviceTopic::prefix(appliance_id),
        client_cert_pem: certificate.cert_pem,
        ca_cert_pem: state.ca.cert_pem().to_owned(),
    })
}
