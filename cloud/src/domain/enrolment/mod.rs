//! Who may take an appliance's identity: the decisions behind enrolling known hardware again and
//! renewing a certificate, and the bookkeeping of the certificates the device CA issues.
//!
//! Design: an appliance *is* its key. Its serial is printed on the box and shown to every dashboard
//! role, its MAC is visible on the LAN, and one enrolment token may serve a thousand boxes; none of
//! them tells the real box from an impostor. So:
//!
//! - new hardware enrols with a token or a registered serial, as before;
//! - hardware that is already enrolled is refused ([`Refusal::NeedsProof`]) unless an MSP admin
//!   approved it for this one time ([`APPROVAL_VALID_FOR`], consumed by the enrolment), and even
//!   then a token never moves it to another practice;
//! - the box itself renews by signing [`stayopen_shared::api::renewal_message`] with the key of the
//!   certificate it holds, within a short window around the cloud's clock and strictly later than
//!   the last proof accepted;
//! - a revoked appliance stays revoked until an MSP admin restores it.
//!
//! Every issued certificate gets a fresh MQTT password and supersedes the one before; superseded and
//! revoked certificates stay on the revocation list ([`rewrite_crl`]) until they expire. The
//! decisions ([`admit_reenrolment`], [`check_renewal`]) are plain functions of what the database
//! holds, the request and the time; [`enrol`] does the I/O around them.
//!
//! - [`tokens`]: enrolment tokens; [`claims`]: serials registered for zero-touch enrolment.
//! - [`enrol`]: an appliance enrols (with a token or a registered serial) or renews.
//! - [`identity`]: an appliance's identity as MSP staff manage it (approval, restore).

pub mod claims;
pub mod enrol;
pub mod identity;
pub mod tokens;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use stayopen_shared::{ApplianceId, TenantId};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::access::{digests_equal, secret_digest};
use crate::infra::broker::{AuthRequest, REVOKER_USERNAME};
use crate::infra::db::{self, Tx};
use crate::infra::metrics::{BROKER_AUTH_REJECTED, Metrics};
use crate::infra::pki::{DeviceCa, Issued, PkiError};

/// How long an MSP admin's approval to enrol an appliance again lasts (it is also used up by the
/// first enrolment it admits).
pub const APPROVAL_VALID_FOR: Duration = Duration::hours(24);
/// A renewal proof signed longer ago than this is refused: a captured request is worthless soon.
pub const PROOF_MAX_AGE: Duration = Duration::minutes(5);
/// A renewal proof may be dated this far past the cloud's clock (clock skew), no further.
pub const PROOF_MAX_AHEAD: Duration = Duration::minutes(1);

/// Why an appliance may not have (or keep) an identity. Each has a stable API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this appliance has been revoked; an MSP admin must restore it before it can enrol again"
    )]
    Revoked,
    #[error(
        "this appliance is enrolled in another practice; an enrolment token never moves an appliance"
    )]
    InOtherPractice,
    #[error(
        "this hardware is already enrolled: the appliance renews with proof of its current key, or an MSP admin approves enrolling it again"
    )]
    NeedsProof,
    #[error("no such appliance")]
    UnknownAppliance,
    #[error(
        "the appliance's certificate predates key-proof renewal or was withdrawn; an MSP admin must approve enrolling it again"
    )]
    KeyUnknown,
    #[error(
        "the appliance's certificate has expired; an MSP admin must approve enrolling it again"
    )]
    CertificateExpired,
    #[error(
        "signed_at is more than 5 minutes old or more than 1 minute ahead of the cloud's clock"
    )]
    Stale,
    #[error("signed_at is not later than the last renewal accepted (a replay)")]
    Replayed,
    #[error("the signature does not verify with the key of the appliance's current certificate")]
    BadSignature,
}

/// How an enrolment proves its right to a practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// An enrolment token: shared, so it proves nothing about which box is asking.
    Token,
    /// A serial the MSP registered for a practice, with the box's factory key.
    ClaimedSerial,
}

/// What the database holds about hardware that is already enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub practice: Uuid,
    pub revoked: bool,
    pub approved_until: Option<DateTime<Utc>>,
}

/// Whether hardware that is already enrolled may enrol again under a grant for `practice`. `Ok`
/// means the approval is used up by this enrolment.
pub fn admit_reenrolment(
    enrolled: &Enrolled,
    kind: GrantKind,
    practice: Uuid,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    if enrolled.revoked {
        return Err(Refusal::Revoked);
    }
    if kind == GrantKind::Token && practice != enrolled.practice {
        return Err(Refusal::InOtherPractice);
    }
    match enrolled.approved_until {
        Some(until) if until > now => Ok(()),
        _ => Err(Refusal::NeedsProof),
    }
}

/// What the database holds about the appliance that asks to renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub revoked: bool,
    /// The current certificate's public key (uncompressed P-256 point).
    pub public_key: Option<Vec<u8>>,
    pub cert_not_after: Option<DateTime<Utc>>,
    pub last_proof_at: Option<DateTime<Utc>>,
}

/// A renewal request's proof.
#[derive(Debug, Clone, Copy)]
pub struct RenewalProof<'a> {
    pub appliance: ApplianceId,
    pub signed_at: DateTime<Utc>,
    pub csr_pem: &'a str,
    /// ECDSA P-256 SHA-256, ASN.1 DER.
    pub signature: &'a [u8],
}

/// Checks a renewal proof; returns the time to record as the last accepted proof (`signed_at` to
/// the whole second, as signed).
pub fn check_renewal(
    holder: &KeyHolder,
    proof: &RenewalProof<'_>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Refusal> {
    if holder.revoked {
        return Err(Refusal::Revoked);
    }
    let Some(public_key) = &holder.public_key else {
        return Err(Refusal::KeyUnknown);
    };
    if holder.cert_not_after.is_none_or(|end| end <= now) {
        return Err(Refusal::CertificateExpired);
    }
    let signed_at = whole_seconds(proof.signed_at);
    if signed_at < now - PROOF_MAX_AGE || signed_at > now + PROOF_MAX_AHEAD {
        return Err(Refusal::Stale);
    }
    let message = stayopen_shared::api::renewal_message(proof.appliance, signed_at, proof.csr_pem);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&message, proof.signature)
        .map_err(|_| Refusal::BadSignature)?;
    if holder.last_proof_at.is_some_and(|last| signed_at <= last) {
        return Err(Refusal::Replayed);
    }
    Ok(signed_at)
}

/// Checks the key proof of an MQTT password (see
/// [`stayopen_shared::api::mqtt_key_proof_message`]) against the current certificate's key.
/// Returns the stable reason for the broker's rejection counter.
pub fn check_mqtt_key_proof(
    public_key: &[u8],
    appliance: ApplianceId,
    proof_base64: &str,
) -> Result<(), &'static str> {
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(proof_base64)
        .map_err(|_| "bad_key_proof")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(
            &stayopen_shared::api::mqtt_key_proof_message(appliance),
            &signature,
        )
        .map_err(|_| "bad_key_proof")
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::seconds(1)).unwrap_or(t)
}

/// Makes `issued` the appliance's current certificate, paired with the MQTT password whose digest
/// is `password_digest`: the previous certificates are superseded (and so go on the revocation
/// list) and their password no longer opens the broker.
pub async fn install_certificate(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: Uuid,
    issued: &Issued,
    password_digest: Vec<u8>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE device_certificates SET superseded_at = now()
         WHERE appliance_id = $1 AND superseded_at IS NULL",
    )
    .bind(appliance)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO device_certificates (serial_hex, tenant_id, appliance_id, cert_pem, not_after)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&issued.serial_hex)
    .bind(tenant.as_uuid())
    .bind(appliance)
    .bind(&issued.cert_pem)
    .bind(issued.not_after)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE appliances SET cert_serial = $2, cert_not_after = $3, cert_pem = $4,
                cert_public_key = $5, mqtt_password_hash = $6
         WHERE id = $1",
    )
    .bind(appliance)
    .bind(&issued.serial_hex)
    .bind(issued.not_after)
    .bind(&issued.cert_pem)
    .bind(&issued.public_key)
    .bind(password_digest)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("reading the withdrawn certificates: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing the revocation list: {0}")]
    Pki(#[from] PkiError),
}

/// One rewrite at a time, so a slower writer holding an older list never replaces a newer file.
static CRL_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rewrites `dir/crl.pem` from the database: every superseded or revoked certificate that has not
/// expired. Called after every issuance, supersession and revocation (after the commit).
pub async fn rewrite_crl(pool: &PgPool, ca: &DeviceCa, dir: &Path) -> Result<(), CrlError> {
    let _one_at_a_time = CRL_WRITER.lock().await;
    let withdrawn = db::lookup::revoked_certificates(pool).await?;
    ca.write_crl(dir, &withdrawn)?;
    Ok(())
}

/// What taking or renewing an identity needs of the device CA: signing, and the revocation list the
/// broker reads.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    pub ca: &'a DeviceCa,
    /// How long a device certificate is valid.
    pub cert_days: u32,
    /// Where `crl.pem` is written.
    pub crl_dir: &'a Path,
}

impl Issuer<'_> {
    /// Rewrites the revocation list after a commit; a failure is logged (the next change or
    /// restart writes it again) rather than failing a request whose change is already committed.
    pub async fn refresh_crl(&self, pool: &PgPool) {
        if let Err(e) = rewrite_crl(pool, self.ca, self.crl_dir).await {
            tracing::error!(error = %e, "could not rewrite the revocation list");
        }
    }
}

/// How many of the broker's authentication requests are answered at once. Each is two short
/// queries and a signature check; one at a time, a reconnect storm (every appliance of a fleet after
/// a cloud restart) queued behind the database's round trips. Eight leaves most of the pool to ingest.
const AUTH_CONCURRENCY: usize = 8;

/// Answers the broker's authentication requests from the appliances table. A device must connect
/// with client id = username = its appliance id and the password issued at enrolment.
pub async fn serve_auth_requests(
    pool: PgPool,
    metrics: Arc<Metrics>,
    revoker_secret: String,
    requests: mpsc::Receiver<AuthRequest>,
) {
    let requests = futures_util::stream::unfold(requests, |mut requests| async move {
        requests.recv().await.map(|request| (request, requests))
    });
    requests
        .for_each_concurrent(AUTH_CONCURRENCY, |request| {
            answer_auth_request(&pool, &metrics, &revoker_secret, request)
        })
        .await;
}

async fn answer_auth_request(
    pool: &PgPool,
    metrics: &Metrics,
    revoker_secret: &str,
    request: AuthRequest,
) {
    let verdict = if request.username == REVOKER_USERNAME {
        if digests_equal(
            &secret_digest(&request.password),
            &secret_digest(revoker_secret),
        ) {
            Ok(())
        } else {
            Err("bad_password")
        }
    } else {
        check_device_credentials(pool, &request).await
    };
    match verdict {
        Ok(()) => {
            let _ = request.reply.send(true);
        }
        Err(reason) => {
            metrics.increment(BROKER_AUTH_REJECTED, "reason", reason);
            tracing::warn!(client_id = %request.client_id, reason, "rejected MQTT connection");
            let _ = request.reply.send(false);
        }
    }
}

async fn check_device_credentials(
    pool: &PgPool,
    request: &AuthRequest,
) -> Result<(), &'static str> {
    if request.client_id != request.username {
        return Err("client_id_mismatch");
    }
    let appliance_id: ApplianceId = request.username.parse().map_err(|_| "bad_username")?;
    let database_error = |e: sqlx::Error| {
        tracing::error!(error = %e, "credential lookup failed");
        "database_error"
    };
    let tenant = db::lookup::appliance_tenant(pool, appliance_id)
        .await
        .map_err(database_error)?
        .ok_or("unknown_appliance")?;
    let mut tx = db::tenant_tx(pool, tenant).await.map_err(database_error)?;
    let stored: Option<(Vec<u8>, bool, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT mqtt_password_hash, revoked_at IS NOT NULL, cert_public_key
         FROM appliances WHERE id = $1",
    )
    .bind(appliance_id.as_uuid())
    .fetch_optional(&mut *tx)
    .await
    .map_err(database_error)?;
    let (stored, revoked, public_key) = stored.ok_or("unknown_appliance")?;
    if revoked {
        return Err("revoked_appliance");
    }
    let (secret, proof) = match request
        .password
        .split_once(stayopen_shared::api::MQTT_KEY_PROOF_SEPARATOR)
    {
        Some((secret, proof)) => (secret, Some(proof)),
        None => (request.password.as_str(), None),
    };
    if !digests_equal(&stored, &secret_digest(secret)) {
        return Err("bad_password");
    }
    // The current certificate's key must have signed the proof: a superseded certificate (whose
    // key cannot) is refused even with the current secret. Appliances enrolled before keys were
    // recorded have none and renew into one.
    match public_key {
        Some(public_key) => {
            check_mqtt_key_proof(&public_key, appliance_id, proof.ok_or("key_proof_missing")?)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn practice(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn enrolled(approved_until: Option<DateTime<Utc>>) -> Enrolled {
        Enrolled {
            practice: practice(1),
            revoked: false,
            approved_until,
        }
    }

    #[test]
    fn known_hardware_is_refused_without_an_approval_whatever_the_grant() {
        for kind in [GrantKind::Token, GrantKind::ClaimedSerial] {
            assert_eq!(
                admit_reenrolment(&enrolled(None), kind, practice(1), at(0)),
                Err(Refusal::NeedsProof)
            );
        }
    }

    #[test]
    fn an_approval_admits_until_it_ends() {
        let approval = enrolled(Some(at(100)));
        assert_eq!(
            admit_reenrolment(&approval, GrantKind::Token, practice(1), at(99)),
            Ok(())
        );
        assert_eq!(
            admit_reenrolment(&approval, GrantKind::Token, practice(1), at(100)),
            Err(Refusal::NeedsProof)
        );
    }

    #[test]
    fn a_token_never_moves_an_appliance_to_another_practice_even_when_approved() {
        let approval = enrolled(Some(at(100)));
        assert_eq!(
            admit_reenrolment(&approval, GrantKind::Token, practice(2), at(0)),
            Err(Refusal::InOtherPractice)
        );
        assert_eq!(
            admit_reenrolment(&enrolled(None), GrantKind::Token, practice(2), at(0)),
            Err(Refusal::InOtherPractice)
        );
        // A serial the MSP registered for the other practice, with an approval, may move it.
        assert_eq!(
            admit_reenrolment(&approval, GrantKind::ClaimedSerial, practice(2), at(0)),
            Ok(())
        );
    }

    #[test]
    fn a_revoked_appliance_is_refused_even_when_approved() {
        let revoked = Enrolled {
            revoked: true,
            ..enrolled(Some(at(100)))
        };
        assert_eq!(
            admit_reenrolment(&revoked, GrantKind::Token, practice(1), at(0)),
            Err(Refusal::Revoked)
        );
    }

    struct Key(EcdsaKeyPair);

    impl Key {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("pkcs8");
            Self(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("key"),
            )
        }

        fn public(&self) -> Vec<u8> {
            self.0.public_key().as_ref().to_vec()
        }

        fn sign(&self, appliance: ApplianceId, signed_at: DateTime<Utc>, csr: &str) -> Vec<u8> {
            let message = stayopen_shared::api::renewal_message(appliance, signed_at, csr);
            self.0
                .sign(&SystemRandom::new(), &message)
                .expect("sign")
                .as_ref()
                .to_vec()
        }
    }

    fn holder(key: &Key) -> KeyHolder {
        KeyHolder {
            revoked: false,
            public_key: Some(key.public()),
            cert_not_after: Some(at(86_400)),
            last_proof_at: None,
        }
    }

    const APPLIANCE: ApplianceId = ApplianceId(Uuid::from_u128(7));

    fn proof<'a>(signed_at: DateTime<Utc>, signature: &'a [u8]) -> RenewalProof<'a> {
        RenewalProof {
            appliance: APPLIANCE,
            signed_at,
            csr_pem: "csr",
            signature,
        }
    }

    #[test]
    fn a_proof_by_the_current_key_is_accepted_and_recorded_to_the_second() {
        let key = Key::new();
        let signed_at = at(0) + Duration::milliseconds(750);
        let signature = key.sign(APPLIANCE, signed_at, "csr");
        assert_eq!(
            check_renewal(&holder(&key), &proof(signed_at, &signature), at(10)),
            Ok(at(0))
        );
    }

    #[test]
    fn a_proof_by_another_key_or_for_another_request_is_refused() {
        let key = Key::new();
        let other = Key::new();
        let forged = other.sign(APPLIANCE, at(0), "csr");
        assert_eq!(
            check_renewal(&holder(&key), &proof(at(0), &forged), at(0)),
            Err(Refusal::BadSignature)
        );
        let for_another_csr = key.sign(APPLIANCE, at(0), "another csr");
        assert_eq!(
            check_renewal(&holder(&key), &proof(at(0), &for_another_csr), at(0)),
            Err(Refusal::BadSignature)
        );
        let for_another_appliance = key.sign(ApplianceId(Uuid::from_u128(8)), at(0), "csr");
        assert_eq!(
            check_renewal(&holder(&key), &proof(at(0), &for_another_appliance), at(0)),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_proof_outside_the_window_around_the_clock_is_refused() {
        let key = Key::new();
        let now = at(1_000);
        for (signed_at, accepted) in [
            (now - PROOF_MAX_AGE - Duration::seconds(1), false),
            (now - PROOF_MAX_AGE, true),
            (now + PROOF_MAX_AHEAD, true),
            (now + PROOF_MAX_AHEAD + Duration::seconds(1), false),
        ] {
            let signature = key.sign(APPLIANCE, signed_at, "csr");
            let result = check_renewal(&holder(&key), &proof(signed_at, &signature), now);
            assert_eq!(result.is_ok(), accepted, "{signed_at}: {result:?}");
            if !accepted {
                assert_eq!(result, Err(Refusal::Stale));
            }
        }
    }

    #[test]
    fn a_proof_not_later_than_the_last_accepted_one_is_a_replay() {
        let key = Key::new();
        let last = KeyHolder {
            last_proof_at: Some(at(0)),
            ..holder(&key)
        };
        let same = key.sign(APPLIANCE, at(0), "csr");
        assert_eq!(
            check_renewal(&last, &proof(at(0), &same), at(10)),
            Err(Refusal::Replayed)
        );
        let later = key.sign(APPLIANCE, at(1), "csr");
        assert_eq!(
            check_renewal(&last, &proof(at(1), &later), at(10)),
            Ok(at(1))
        );
    }

    #[test]
    fn revoked_expired_or_keyless_appliances_cannot_renew() {
        let key = Key::new();
        let signature = key.sign(APPLIANCE, at(0), "csr");
        let cases = [
            (
                KeyHolder {
                    revoked: true,
                    ..holder(&key)
                },
                Refusal::Revoked,
            ),
            (
                KeyHolder {
                    public_key: None,
                    ..holder(&key)
                },
                Refusal::KeyUnknown,
            ),
            (
                KeyHolder {
                    cert_not_after: Some(at(0)),
                    ..holder(&key)
                },
                Refusal::CertificateExpired,
            ),
        ];
        for (holder, refusal) in cases {
            assert_eq!(
                check_renewal(&holder, &proof(at(0), &signature), at(0)),
                Err(refusal)
            );
        }
    }
}
