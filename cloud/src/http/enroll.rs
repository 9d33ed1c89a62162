//! Enrolment: an appliance proves it may join a practice — with an enrolment token, or zero-touch
//! with a registered serial and its factory key — and sends a signing request for its own key. It
//! receives its identity, MQTT credentials and a client certificate of the device CA.

use actix_web::{post, web};
use chrono::{DateTime, Utc};
use stayopen_shared::api::{
    ApiError, ClaimEnrollRequest, EnrollRequest, EnrollResponse, HardwareIdentity, MqttCredentials,
};
use stayopen_shared::{ApplianceId, DeviceTopic, PracticeId, SiteId, TenantId};
use uuid::Uuid;

use crate::audit::{self, Actor, Change};
use crate::auth::{digests_equal, random_secret, secret_digest};
use crate::db::{self, Tx, lookup};
use crate::http::error::ApiFailure;
use crate::metrics::API_REJECTED;
use crate::startup::AppState;

/// What the appliance's proof entitles it to: a practice and site of one tenant.
struct Grant {
    tenant: TenantId,
    practice: Uuid,
    site: Uuid,
    source: GrantSource,
}

enum GrantSource {
    Token(Uuid),
    ClaimedSerial,
}

/// The rest of an enrolment request, whichever proof it carries.
struct Applicant<'a> {
    hardware: &'a HardwareIdentity,
    agent_version: &'a str,
    csr_pem: &'a str,
}

impl Applicant<'_> {
    fn validate(&self) -> Result<(), ApiFailure> {
        let hw = self.hardware;
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
        if self.agent_version.len() > 64 {
            return Err(ApiFailure::BadRequest(
                "agent_version must be at most 64 characters".into(),
            ));
        }
        if self.csr_pem.len() > 8192 {
            return Err(ApiFailure::BadRequest("csr_pem is too long".into()));
        }
        Ok(())
    }
}

fn count_refusal<T>(state: &AppState, serial: &str, result: &Result<T, ApiFailure>) {
    if let Err(failure) = result {
        state
            .metrics
            .increment(API_REJECTED, "reason", failure.code());
        tracing::warn!(%serial, reason = failure.code(), "enrolment refused");
    }
}

/// Hardware already enrolled with another MSP stays theirs.
async fn refuse_foreign_hardware(
    state: &AppState,
    hardware: &HardwareIdentity,
    tenant: TenantId,
) -> Result<(), ApiFailure> {
    if lookup::hardware_tenant(&state.pool, &hardware.serial, &hardware.mac)
        .await?
        .is_some_and(|owner| owner != tenant)
    {
        return Err(ApiFailure::HardwareClaimed);
    }
    Ok(())
}

/// Enrols an appliance with an enrolment token. The same hardware (serial and MAC) enrolling again
/// keeps its id; hardware enrolled with another MSP is refused.
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
    let applicant = Applicant {
        hardware: &body.hardware,
        agent_version: &body.agent_version,
        csr_pem: &body.csr_pem,
    };
    let result = async {
        applicant.validate()?;
        let (tx, grant) = token_grant(&state, &body.token, applicant.hardware).await?;
        complete(&state, tx, grant, &applicant).await
    }
    .await;
    count_refusal(&state, &body.hardware.serial, &result);
    result.map(web::Json)
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    practice_id: Uuid,
    site_id: Uuid,
    expires_at: DateTime<Utc>,
    max_uses: i32,
    uses: i32,
}

async fn token_grant(
    state: &AppState,
    token: &str,
    hardware: &HardwareIdentity,
) -> Result<(Tx, Grant), ApiFailure> {
    let token_hash = secret_digest(token.trim());
    let tenant = lookup::enrollment_token_tenant(&state.pool, token_hash.clone())
        .await?
        .ok_or(ApiFailure::EnrollmentTokenUnknown)?;
    refuse_foreign_hardware(state, hardware, tenant).await?;
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    let token: TokenRow = sqlx::query_as(
        "SELECT id, practice_id, site_id, expires_at, max_uses, uses
         FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiFailure::EnrollmentTokenUnknown)?;
    if token.expires_at <= Utc::now() {
        return Err(ApiFailure::EnrollmentTokenExpired);
    }
    if token.uses >= token.max_uses {
        return Err(ApiFailure::EnrollmentTokenExhausted);
    }
    sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
        .bind(token.id)
        .execute(&mut *tx)
        .await?;
    Ok((
        tx,
        Grant {
            tenant,
            practice: token.practice_id,
            site: token.site_id,
            source: GrantSource::Token(token.id),
        },
    ))
}

/// Zero-touch enrolment: the appliance presents its serial (in `hardware`) and its factory key; an
/// MSP registered that serial for a practice beforehand.
#[utoipa::path(
    tag = "enrolment",
    request_body = ClaimEnrollRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "Serial not registered, or wrong factory key"),
        (status = 409, body = ApiError, description = "The hardware belongs to another MSP"),
    )
)]
#[post("/enroll/claim")]
pub async fn enroll_claimed(
    state: web::Data<AppState>,
    body: web::Json<ClaimEnrollRequest>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    let applicant = Applicant {
        hardware: &body.hardware,
        agent_version: &body.agent_version,
        csr_pem: &body.csr_pem,
    };
    let result = async {
        applicant.validate()?;
        let (tx, grant) = claim_grant(&state, &body.factory_key, applicant.hardware).await?;
        complete(&state, tx, grant, &applicant).await
    }
    .await;
    count_refusal(&state, &body.hardware.serial, &result);
    result.map(web::Json)
}

async fn claim_grant(
    state: &AppState,
    factory_key: &str,
    hardware: &HardwareIdentity,
) -> Result<(Tx, Grant), ApiFailure> {
    // One answer for "not registered" and "wrong key", so serials cannot be probed.
    let tenant = lookup::claimed_serial_tenant(&state.pool, &hardware.serial)
        .await?
        .ok_or(ApiFailure::ClaimRefused)?;
    refuse_foreign_hardware(state, hardware, tenant).await?;
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    let (practice, site, key_hash): (Uuid, Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT practice_id, site_id, factory_key_hash FROM claimed_serials WHERE serial = $1 FOR UPDATE",
    )
    .bind(&hardware.serial)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiFailure::ClaimRefused)?;
    if !digests_equal(&key_hash, &secret_digest(factory_key.trim())) {
        return Err(ApiFailure::ClaimRefused);
    }
    Ok((
        tx,
        Grant {
            tenant,
            practice,
            site,
            source: GrantSource::ClaimedSerial,
        },
    ))
}

/// Creates or re-enrols the appliance under `grant`, signs its certificate, audits, commits.
async fn complete(
    state: &AppState,
    mut tx: Tx,
    grant: Grant,
    applicant: &Applicant<'_>,
) -> Result<EnrollResponse, ApiFailure> {
    let hw = applicant.hardware;
    let mqtt_password = random_secret();
    let existing: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM appliances WHERE serial = $1 AND mac = $2 FOR UPDATE")
            .bind(&hw.serial)
            .bind(&hw.mac)
            .fetch_optional(&mut *tx)
            .await?;
    let appliance_id = match existing {
        Some(id) => {
            // Re-enrolment (factory reset, lost state): same appliance, fresh credentials, and
            // possibly a new practice/site within the same tenant; a revoked box is reinstated.
            sqlx::query(
                "UPDATE appliances SET practice_id = $2, site_id = $3, model = $4, agent_version = $5,
                        mqtt_password_hash = $6, enrolled_at = now(), revoked_at = NULL
                 WHERE id = $1",
            )
            .bind(id)
            .bind(grant.practice)
            .bind(grant.site)
            .bind(&hw.model)
            .bind(applicant.agent_version)
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
            .bind(grant.tenant.as_uuid())
            .bind(grant.practice)
            .bind(grant.site)
            .bind(&hw.serial)
            .bind(&hw.mac)
            .bind(&hw.model)
            .bind(applicant.agent_version)
            .bind(secret_digest(&mqtt_password))
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    let certificate = state
        .ca
        .sign_device(applicant.csr_pem, ApplianceId(appliance_id))
        .map_err(|e| ApiFailure::BadRequest(e.to_string()))?;
    sqlx::query("UPDATE appliances SET cert_serial = $2, cert_not_after = $3 WHERE id = $1")
        .bind(appliance_id)
        .bind(&certificate.serial_hex)
        .bind(certificate.not_after)
        .execute(&mut *tx)
        .await?;
    let proof = match &grant.source {
        GrantSource::Token(id) => serde_json::json!({ "enrollment_token_id": id }),
        GrantSource::ClaimedSerial => {
            sqlx::query(
                "UPDATE claimed_serials SET enrolled_appliance_id = $2, enrolled_at = now() WHERE serial = $1",
            )
            .bind(&hw.serial)
            .bind(appliance_id)
            .execute(&mut *tx)
            .await?;
            serde_json::json!({ "claimed_serial": hw.serial })
        }
    };
    audit::record(
        &mut tx,
        grant.tenant,
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
                "practice_id": grant.practice,
                "site_id": grant.site,
                "proof": proof,
                "certificate_serial": certificate.serial_hex,
                "certificate_not_after": certificate.not_after,
            })),
        },
    )
    .await?;
    // A new certificate ends any "certificate expiring" alert.
    crate::alerts::apply(
        &mut tx,
        grant.tenant,
        ApplianceId(appliance_id),
        &[crate::alerts::AlertChange::Clear {
            kind: stayopen_shared::alerts::AlertKind::CertificateExpiring,
            subject: None,
            reason: "enrolled again with a new certificate".into(),
        }],
        Utc::now(),
    )
    .await?;
    // Its desired policy exists from the start; it is sent when the appliance first connects.
    crate::desired::refresh(&mut tx, grant.tenant, &[appliance_id])
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    tx.commit().await?;

    let appliance_id = ApplianceId(appliance_id);
    tracing::info!(%appliance_id, tenant_id = %grant.tenant, serial = %hw.serial, "appliance enrolled");
    Ok(EnrollResponse {
        appliance_id,
        practice_id: PracticeId(grant.practice),
        site_id: SiteId(grant.site),
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
