//! An appliance takes its identity: it proves it may join a practice — with an enrolment token, or
//! zero-touch with a registered serial and its factory key — and sends a signing request for its
//! own key. It receives its identity, a new MQTT password and a client certificate of the device
//! CA. Hardware that is already enrolled needs an MSP admin's approval to enrol again
//! ([`super::admit_reenrolment`]); the appliance itself renews its certificate with proof of its
//! current key ([`renew`], [`super::check_renewal`]).

use base64::Engine;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::{HardwareIdentity, RenewRequest};
use stayopen_shared::{ApplianceId, PracticeId, SiteId, TenantId};
use uuid::Uuid;

use super::{
    Enrolled, GrantKind, Issuer, KeyHolder, Refusal, RenewalProof, admit_reenrolment,
    check_renewal, install_certificate,
};
use crate::domain::access::{digests_equal, random_secret, secret_digest};
use crate::domain::alerts::{self, AlertChange};
use crate::domain::audit::{self, Actor, Change};
use crate::domain::policy::{self, DesiredError};
use crate::domain::relays::{self, RelayError, wireguard_key_problem};
use crate::infra::db::{self, Tx, lookup};
use crate::infra::pki::{Issued, PkiError};

/// Why an enrolment or a renewal was refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The request is malformed (field lengths).
    #[error("{0}")]
    Invalid(String),
    #[error("the enrolment token is unknown")]
    TokenUnknown,
    #[error("the enrolment token expired")]
    TokenExpired,
    #[error("the enrolment token has been used up")]
    TokenExhausted,
    #[error("the enrolment token has been revoked")]
    TokenRevoked,
    /// The hardware is enrolled with another MSP. The appliance is answered exactly as the
    /// refusal in [`Disguise`], one that says nothing about the hardware, so that no MSP learns
    /// which serials another enrolled; it is counted and logged as what it is.
    #[error("this hardware is enrolled with another organisation")]
    HardwareClaimed(Disguise),
    /// The serial is not registered, or the factory key is wrong (one answer for both, so serials
    /// cannot be probed).
    #[error("the serial is not registered, or the factory key is wrong")]
    ClaimRefused,
    /// Taking or renewing this appliance's identity is refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The signing request is not one the device CA signs.
    #[error(transparent)]
    Csr(PkiError),
    #[error("refreshing the desired policy: {0}")]
    Policy(#[from] DesiredError),
    /// Registering the appliance's WireGuard key failed (a key that is another appliance's is
    /// [`RelayError::KeyTaken`], whichever MSP it belongs to).
    #[error(transparent)]
    Tunnel(#[from] RelayError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// How a refusal for another MSP's hardware is answered: as the refusal of the proof presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disguise {
    /// As an unknown enrolment token.
    TokenUnknown,
    /// As an unregistered serial or a wrong factory key.
    ClaimRefused,
}

/// The rest of an enrolment request, whichever proof it carries.
#[derive(Debug, Clone, Copy)]
pub struct Applicant<'a> {
    pub hardware: &'a HardwareIdentity,
    pub agent_version: &'a str,
    pub csr_pem: &'a str,
    /// The WireGuard public key to register for the session-safe tunnel, if the agent has one.
    pub wireguard_public_key: Option<&'a str>,
}

impl Applicant<'_> {
    fn validate(&self) -> Result<(), EnrolError> {
        let hw = self.hardware;
        for (field, value) in [
            ("hardware.serial", &hw.serial),
            ("hardware.mac", &hw.mac),
            ("hardware.model", &hw.model),
        ] {
            if value.trim().is_empty() || value.len() > 128 {
                return Err(EnrolError::Invalid(format!(
                    "{field} must be 1 to 128 characters"
                )));
            }
        }
        if self.agent_version.len() > 64 {
            return Err(EnrolError::Invalid(
                "agent_version must be at most 64 characters".into(),
            ));
        }
        check_csr_length(self.csr_pem)?;
        check_wireguard_key(self.wireguard_public_key)
    }
}

fn check_wireguard_key(key: Option<&str>) -> Result<(), EnrolError> {
    match key.and_then(|key| wireguard_key_problem("wireguard_public_key", key)) {
        Some(problem) => Err(EnrolError::Invalid(problem)),
        None => Ok(()),
    }
}

fn check_csr_length(csr_pem: &str) -> Result<(), EnrolError> {
    if csr_pem.len() > 8192 {
        return Err(EnrolError::Invalid("csr_pem is too long".into()));
    }
    Ok(())
}

/// What an appliance receives: where it belongs, its new certificate and MQTT password.
#[derive(Debug)]
pub struct Enrolment {
    pub appliance_id: ApplianceId,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub certificate: Issued,
    pub mqtt_password: String,
}

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

/// Hardware already enrolled with another MSP stays theirs; the refusal looks like `disguise`.
async fn refuse_foreign_hardware(
    pool: &PgPool,
    hardware: &HardwareIdentity,
    tenant: TenantId,
    disguise: Disguise,
) -> Result<(), EnrolError> {
    if lookup::hardware_tenant(pool, &hardware.serial, &hardware.mac)
        .await?
        .is_some_and(|owner| owner != tenant)
    {
        return Err(EnrolError::HardwareClaimed(disguise));
    }
    Ok(())
}

/// Enrols an appliance with an enrolment token (using one of its uses).
pub async fn with_token(
    pool: &PgPool,
    issuer: Issuer<'_>,
    token: &str,
    applicant: &Applicant<'_>,
) -> Result<Enrolment, EnrolError> {
    applicant.validate()?;
    let (tx, grant) = token_grant(pool, token, applicant.hardware).await?;
    complete(pool, issuer, tx, grant, applicant).await
}

/// Zero-touch enrolment: the appliance presents its serial (in `hardware`) and its factory key; an
/// MSP registered that serial for a practice beforehand.
pub async fn with_claimed_serial(
    pool: &PgPool,
    issuer: Issuer<'_>,
    factory_key: &str,
    applicant: &Applicant<'_>,
) -> Result<Enrolment, EnrolError> {
    applicant.validate()?;
    let (tx, grant) = claim_grant(pool, factory_key, applicant.hardware).await?;
    complete(pool, issuer, tx, grant, applicant).await
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
    pool: &PgPool,
    token: &str,
    hardware: &HardwareIdentity,
) -> Result<(Tx, Grant), EnrolError> {
    let token_hash = secret_digest(token.trim());
    let tenant = lookup::enrollment_token_tenant(pool, token_hash.clone())
        .await?
        .ok_or(EnrolError::TokenUnknown)?;
    refuse_foreign_hardware(pool, hardware, tenant, Disguise::TokenUnknown).await?;
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let token: TokenRow = sqlx::query_as(
        "SELECT id, practice_id, site_id, expires_at, max_uses, uses, revoked_at
         FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(EnrolError::TokenUnknown)?;
    if token.revoked_at.is_some() {
        return Err(EnrolError::TokenRevoked);
    }
    if token.expires_at <= Utc::now() {
        return Err(EnrolError::TokenExpired);
    }
    if token.uses >= token.max_uses {
        return Err(EnrolError::TokenExhausted);
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

async fn claim_grant(
    pool: &PgPool,
    factory_key: &str,
    hardware: &HardwareIdentity,
) -> Result<(Tx, Grant), EnrolError> {
    // Every MSP that registered the serial, earliest first; the one whose factory key matches.
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_claimed_serial_tenants($1)")
        .bind(&hardware.serial)
        .fetch_all(pool)
        .await?;
    let key_digest = secret_digest(factory_key.trim());
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let Some((practice, site, key_hash)): Option<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT practice_id, site_id, factory_key_hash FROM claimed_serials WHERE serial = $1 FOR UPDATE",
        )
        .bind(&hardware.serial)
        .fetch_optional(&mut *tx)
        .await?
        else {
            continue;
        };
        if !digests_equal(&key_hash, &key_digest) {
            continue;
        }
        refuse_foreign_hardware(pool, hardware, tenant, Disguise::ClaimRefused).await?;
        return Ok((
            tx,
            Grant {
                tenant,
                practice,
                site,
                source: GrantSource::ClaimedSerial,
            },
        ));
    }
    Err(EnrolError::ClaimRefused)
}

#[derive(sqlx::FromRow)]
struct EnrolledRow {
    id: Uuid,
    practice_id: Uuid,
    revoked: bool,
    reenrollment_approved_until: Option<DateTime<Utc>>,
}

/// Creates the appliance under `grant`, or enrols known hardware again if an MSP admin approved it
/// (using the approval up); signs its certificate, audits, commits, and rewrites the revocation
/// list.
async fn complete(
    pool: &PgPool,
    issuer: Issuer<'_>,
    mut tx: Tx,
    grant: Grant,
    applicant: &Applicant<'_>,
) -> Result<Enrolment, EnrolError> {
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
            admit_reenrolment(
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
        issuer,
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
    if let Some(key) = applicant.wireguard_public_key {
        relays::register_key(
            &mut tx,
            grant.tenant,
            appliance_id,
            key,
            &Actor::Appliance(appliance_id),
        )
        .await?;
    }
    // Its desired policy exists from the start; it is sent when the appliance first connects
    // (and now, to an appliance enrolling again that is still connected).
    let changed = policy::refresh(&mut tx, grant.tenant, &[appliance_id]).await?;
    policy::announce(&mut tx, &changed).await?;
    tx.commit().await?;
    issuer.refresh_crl(pool).await;

    let appliance_id = ApplianceId(appliance_id);
    tracing::info!(%appliance_id, tenant_id = %grant.tenant, serial = %hw.serial, "appliance enrolled");
    Ok(Enrolment {
        appliance_id,
        practice_id: PracticeId(grant.practice),
        site_id: SiteId(grant.site),
        certificate: credentials.certificate,
        mqtt_password: credentials.mqtt_password,
    })
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
    issuer: Issuer<'_>,
    tx: &mut Tx,
    tenant: TenantId,
    appliance: Uuid,
    csr_pem: &str,
) -> Result<Credentials, EnrolError> {
    let certificate = issuer
        .ca
        .sign_device(csr_pem, ApplianceId(appliance), issuer.cert_days)
        .map_err(EnrolError::Csr)?;
    let mqtt_password = random_secret();
    install_certificate(
        tx,
        tenant,
        appliance,
        &certificate,
        secret_digest(&mqtt_password),
    )
    .await?;
    alerts::apply(
        tx,
        tenant,
        ApplianceId(appliance),
        &[AlertChange::Clear {
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

/// Renews an appliance's certificate against proof of its current key (see
/// [`super::check_renewal`]); the previous certificate and password stop working.
pub async fn renew(
    pool: &PgPool,
    issuer: Issuer<'_>,
    request: &RenewRequest,
) -> Result<Enrolment, EnrolError> {
    check_csr_length(&request.csr_pem)?;
    check_wireguard_key(request.wireguard_public_key.as_deref())?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(request.signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    let appliance = request.appliance_id;
    let tenant = lookup::appliance_tenant(pool, appliance)
        .await?
        .ok_or(Refusal::UnknownAppliance)?;
    let mut tx = db::tenant_tx(pool, tenant).await?;
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
    let accepted_at = check_renewal(
        &KeyHolder {
            revoked: row.revoked,
            public_key: row.cert_public_key,
            cert_not_after: row.cert_not_after,
            last_proof_at: row.last_key_proof_at,
        },
        &RenewalProof {
            appliance,
            signed_at: request.signed_at,
            csr_pem: &request.csr_pem,
            signature: &signature,
        },
        now,
    )?;
    sqlx::query("UPDATE appliances SET last_key_proof_at = $2 WHERE id = $1")
        .bind(appliance.as_uuid())
        .bind(accepted_at)
        .execute(&mut *tx)
        .await?;
    let credentials = issue(
        issuer,
        &mut tx,
        tenant,
        *appliance.as_uuid(),
        &request.csr_pem,
    )
    .await?;
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
    // The renewal is signed by the device's current key, so the key it registers is the device's.
    if let Some(key) = &request.wireguard_public_key {
        relays::register_key(
            &mut tx,
            tenant,
            *appliance.as_uuid(),
            key,
            &Actor::Appliance(*appliance.as_uuid()),
        )
        .await?;
        let changed = policy::refresh(&mut tx, tenant, &[*appliance.as_uuid()]).await?;
        policy::announce(&mut tx, &changed).await?;
    }
    tx.commit().await?;
    issuer.refresh_crl(pool).await;
    tracing::info!(%appliance, tenant_id = %tenant, "appliance certificate renewed");
    Ok(Enrolment {
        appliance_id: appliance,
        practice_id: PracticeId(row.practice_id),
        site_id: SiteId(row.site_id),
        certificate: credentials.certificate,
        mqtt_password: credentials.mqtt_password,
    })
}
