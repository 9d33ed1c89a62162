//! Enrolment: an appliance proves it may join a practice — with an enrolment token, or zero-touch
//! with a registered serial and its factory key — and sends a signing request for its own key. It
//! receives its identity, MQTT credentials and a client certificate of the device CA. Hardware that
//! is already enrolled needs an MSP admin's approval to enrol again; the appliance itself renews
//! its certificate with proof of its current key (`/enroll/renew`). See [`crate::domain::enrolment`].

use actix_web::{post, web};
use base64::Engine;
use chrono::{DateTime, Utc};
use stayopen_shared::api::{
    ApiError, ClaimEnrollRequest, EnrollRequest, EnrollResponse, HardwareIdentity, MqttCredentials,
    RenewRequest,
};
use stayopen_shared::{ApplianceId, DeviceTopic, PracticeId, SiteId, TenantId};
use uuid::Uuid;

use crate::domain::access::{digests_equal, random_secret, secret_digest};
use crate::domain::audit::{self, Actor, Change};
use crate::domain::enrolment::{self, Enrolled, GrantKind, KeyHolder, Refusal, RenewalProof};
use crate::http::error::ApiFailure;
use crate::infra::db::{self, Tx, lookup};
use crate::infra::metrics::API_REJECTED;
use crate::infra::pki::Issued;
use crate::state::AppState;

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

impl GrantSource {
    fn kind(&self) -> GrantKind {
        match self {
            GrantSource::Token(_) => GrantKind::Token,
            GrantSource::ClaimedSerial => GrantKind::ClaimedSerial,
        }
    }
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

/// Enrols an appliance with an enrolment token. Hardware (serial and MAC) that is already enrolled
/// is refused unless an MSP admin approved enrolling it again (then it keeps its id, and stays in
/// its practice); hardware enrolled with another MSP is refused.
#[utoipa::path(
    tag = "enrolment",
    request_body = EnrollRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "Unknown, expired, used-up or revoked token"),
        (status = 403, body = ApiError, description = "The appliance is revoked (`appliance_revoked`)"),
        (status = 409, body = ApiError, description = "The hardware belongs to another MSP (`hardware_claimed`), is enrolled without an approval to enrol again (`reenrollment_needs_proof`), or is in another practice than the token's (`appliance_in_other_practice`)"),
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
    revoked_at: Option<DateTime<Utc>>,
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
        "SELECT id, practice_id, site_id, expires_at, max_uses, uses, revoked_at
         FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiFailure::EnrollmentTokenUnknown)?;
    if token.revoked_at.is_some() {
        return Err(ApiFailure::EnrollmentTokenRevoked);
    }
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
        (status = 403, body = ApiError, description = "The appliance is revoked (`appliance_revoked`)"),
        (status = 409, body = ApiError, description = "The hardware belongs to another MSP, or is enrolled without an approval to enrol again (`reenrollment_needs_proof`)"),
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

#[derive(sqlx::FromRow)]
struct EnrolledRow {
    id: Uuid,
    practice_id: Uuid,
    revoked: bool,
    reenrollment_approved_until: Option<DateTime<Utc>>,
}

/// Creates the appliance under `grant`, or enrols known hardware again if an MSP admin approved it
/// (using the approval up); signs its certificate, audits, commits.
async fn complete(
    state: &AppState,
    mut tx: Tx,
    grant: Grant,
    applicant: &Applicant<'_>,
) -> Result<EnrollResponse, ApiFailure> {
    let hw = applicant.hardware;
    let now = Utc::now();
    // The lock makes the approval single-use: a concurrent enrolment waits here and then sees it
    // gone.
    let existing: Option<EnrolledRow> = sqlx::query_as(
        "SELECT id, practice_id, revoked_at IS NOT NULL AS revoked, reenrollment_approved_until
         FROM appliances WHERE serial = $1 AND mac = $2 FOR UPDATE",
    )
    .bind(&hw.serial)
    .bind(&hw.mac)
    .fetch_optional(&mut *tx)
    .await?;
    let appliance_id = match &existing {
        Some(row) => {
            enrolment::admit_reenrolment(
                &Enrolled {
                    practice: row.practice_id,
                    revoked: row.revoked,
                    approved_until: row.reenrollment_approved_until,
                },
                grant.source.kind(),
                grant.practice,
                now,
            )?;
            sqlx::query(
                "UPDATE appliances SET practice_id = $2, site_id = $3, model = $4, agent_version = $5,
                        enrolled_at = now(), reenrollment_approved_until = NULL
                 WHERE id = $1",
            )
            .bind(row.id)
            .bind(grant.practice)
            .bind(grant.site)
            .bind(&hw.model)
            .bind(applicant.agent_version)
            .execute(&mut *tx)
            .await?;
            row.id
        }
        None => {
            let id = Uuid::new_v4();
            // The password is set with the certificate (install_certificate); this one opens
            // nothing.
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
            .bind(secret_digest(&random_secret()))
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    let credentials = issue(
        state,
        &mut tx,
        grant.tenant,
        appliance_id,
        applicant.csr_pem,
    )
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
            before: existing.as_ref().map(|row| {
                serde_json::json!({
                    "practice_id": row.practice_id,
                    "reenrollment_approved_until": row.reenrollment_approved_until,
                })
            }),
            after: Some(serde_json::json!({
                "serial": hw.serial,
                "mac": hw.mac,
                "model": hw.model,
                "practice_id": grant.practice,
                "site_id": grant.site,
                "proof": proof,
                "certificate_serial": credentials.certificate.serial_hex,
                "certificate_not_after": credentials.certificate.not_after,
            })),
        },
    )
    .await?;
    // Its desired policy exists from the start; it is sent when the appliance first connects.
    crate::domain::policy::refresh(&mut tx, grant.tenant, &[appliance_id])
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    tx.commit().await?;
    rewrite_crl(state).await;

    let appliance_id = ApplianceId(appliance_id);
    tracing::info!(%appliance_id, tenant_id = %grant.tenant, serial = %hw.serial, "appliance enrolled");
    Ok(response(
        state,
        appliance_id,
        PracticeId(grant.practice),
        SiteId(grant.site),
        credentials,
    ))
}

/// A new certificate and the MQTT password paired with it.
struct Credentials {
    certificate: Issued,
    mqtt_password: String,
}

/// Signs `csr_pem` for `appliance` and makes it the appliance's certificate, with a new MQTT
/// password (inside the caller's transaction). A new certificate ends any "certificate expiring"
/// alert.
async fn issue(
    state: &AppState,
    tx: &mut Tx,
    tenant: TenantId,
    appliance: Uuid,
    csr_pem: &str,
) -> Result<Credentials, ApiFailure> {
    let certificate = state
        .ca
        .sign_device(
            csr_pem,
            ApplianceId(appliance),
            state.config.broker.device_cert_days,
        )
        .map_err(|e| ApiFailure::BadRequest(e.to_string()))?;
    let mqtt_password = random_secret();
    enrolment::install_certificate(
        tx,
        tenant,
        appliance,
        &certificate,
        secret_digest(&mqtt_password),
    )
    .await?;
    crate::domain::alerts::apply(
        tx,
        tenant,
        ApplianceId(appliance),
        &[crate::domain::alerts::AlertChange::Clear {
            kind: stayopen_shared::alerts::AlertKind::CertificateExpiring,
            subject: None,
            reason: "a new certificate was issued".into(),
        }],
        Utc::now(),
    )
    .await?;
    Ok(Credentials {
        certificate,
        mqtt_password,
    })
}

fn response(
    state: &AppState,
    appliance_id: ApplianceId,
    practice_id: PracticeId,
    site_id: SiteId,
    credentials: Credentials,
) -> EnrollResponse {
    EnrollResponse {
        appliance_id,
        practice_id,
        site_id,
        mqtt: MqttCredentials {
            host: state.config.broker.public_host.clone(),
            port: state.config.broker_public_port(),
            username: appliance_id.to_string(),
            password: credentials.mqtt_password,
        },
        topic_prefix: DeviceTopic::prefix(appliance_id),
        client_cert_pem: credentials.certificate.cert_pem,
        ca_cert_pem: state.ca.cert_pem().to_owned(),
    }
}

/// Rewrites the revocation list after a commit; a failure is logged (the next change or restart
/// writes it again) rather than failing a request whose change is already committed.
pub async fn rewrite_crl(state: &AppState) {
    if let Err(e) =
        enrolment::rewrite_crl(&state.pool, &state.ca, &state.config.broker.tls_dir).await
    {
        tracing::error!(error = %e, "could not rewrite the revocation list");
    }
}

#[derive(sqlx::FromRow)]
struct HolderRow {
    practice_id: Uuid,
    site_id: Uuid,
    revoked: bool,
    cert_public_key: Option<Vec<u8>>,
    cert_not_after: Option<DateTime<Utc>>,
    last_key_proof_at: Option<DateTime<Utc>>,
    cert_serial: Option<String>,
}

/// Renews an appliance's certificate. The appliance proves it holds the key of its current
/// certificate by signing `renewal_message(appliance_id, signed_at, csr_pem)` with it; it receives
/// a certificate for the new key in `csr_pem` and a new MQTT password. The previous certificate
/// and password stop working.
#[utoipa::path(
    tag = "enrolment",
    request_body = RenewRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError, description = "Not a valid signing request for a P-256 key"),
        (status = 401, body = ApiError, description = "Unknown appliance, no current key, expired certificate, stale or replayed proof, or a signature that does not verify"),
        (status = 403, body = ApiError, description = "The appliance is revoked"),
    )
)]
#[post("/enroll/renew")]
pub async fn renew(
    state: web::Data<AppState>,
    body: web::Json<RenewRequest>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    let result = renew_with_proof(&state, &body).await;
    count_refusal(&state, &body.appliance_id.to_string(), &result);
    result.map(web::Json)
}

async fn renew_with_proof(
    state: &AppState,
    body: &RenewRequest,
) -> Result<EnrollResponse, ApiFailure> {
    if body.csr_pem.len() > 8192 {
        return Err(ApiFailure::BadRequest("csr_pem is too long".into()));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(body.signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    let appliance = body.appliance_id;
    let tenant = lookup::appliance_tenant(&state.pool, appliance)
        .await?
        .ok_or(Refusal::UnknownAppliance)?;
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    // Locked: two renewals of one appliance run one after the other, the second against the
    // first's key and proof time.
    let row: HolderRow = sqlx::query_as(
        "SELECT practice_id, site_id, revoked_at IS NOT NULL AS revoked, cert_public_key,
                cert_not_after, last_key_proof_at, cert_serial
         FROM appliances WHERE id = $1 FOR UPDATE",
    )
    .bind(appliance.as_uuid())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Refusal::UnknownAppliance)?;
    let now = Utc::now();
    let accepted_at = enrolment::check_renewal(
        &KeyHolder {
            revoked: row.revoked,
            public_key: row.cert_public_key,
            cert_not_after: row.cert_not_after,
            last_proof_at: row.last_key_proof_at,
        },
        &RenewalProof {
            appliance,
            signed_at: body.signed_at,
            csr_pem: &body.csr_pem,
            signature: &signature,
        },
        now,
    )?;
    sqlx::query("UPDATE appliances SET last_key_proof_at = $2 WHERE id = $1")
        .bind(appliance.as_uuid())
        .bind(accepted_at)
        .execute(&mut *tx)
        .await?;
    let credentials = issue(state, &mut tx, tenant, *appliance.as_uuid(), &body.csr_pem).await?;
    audit::record(
        &mut tx,
        tenant,
        &Actor::Appliance(*appliance.as_uuid()),
        Change {
            action: "appliance.renew",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: Some(serde_json::json!({ "certificate_serial": row.cert_serial })),
            after: Some(serde_json::json!({
                "certificate_serial": credentials.certificate.serial_hex,
                "certificate_not_after": credentials.certificate.not_after,
                "proof_signed_at": accepted_at,
            })),
        },
    )
    .await?;
    tx.commit().await?;
    rewrite_crl(state).await;
    tracing::info!(%appliance, tenant_id = %tenant, "appliance certificate renewed");
    Ok(response(
        state,
        appliance,
        PracticeId(row.practice_id),
        SiteId(row.site_id),
        credentials,
    ))
}
