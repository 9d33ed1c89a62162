//! Enrolment, the identity kept in the state directory so an appliance enrols exactly once, and
//! the renewal of its certificate with proof of its current key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, DurationRound, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use stayopen_shared::api::{
    ApiError, ClaimEnrollRequest, EnrollRequest, EnrollResponse, HardwareIdentity, MqttCredentials,
    RenewRequest, renewal_message,
};
use stayopen_shared::{ApplianceId, PracticeId, SiteId};

use crate::AGENT_VERSION;
use crate::config::{ApplianceSection, UplinkConfig};

const IDENTITY_FILE: &str = "identity.json";
/// The next key while a renewal is under way: kept until the new identity is stored, so that a
/// renewal whose answer was lost is completed with the same key (which the cloud may already have
/// certified) instead of stranding the appliance.
const PENDING_KEY_FILE: &str = "renewal-key.pem";

/// The appliance's WireGuard private key (base64, 0600), made once and kept across restarts and
/// re-enrolments: the relay knows the appliance by its public half.
pub const WIREGUARD_KEY_FILE: &str = "wireguard.key";

/// The appliance's WireGuard key pair from `state_dir/wireguard.key`, created there (0600) at
/// first use. A file that does not hold a key is an error, never silently replaced: the relay
/// would no longer know this appliance.
pub fn wireguard_key(state_dir: &Path) -> Result<stayopen_tunnel::keys::KeyPair, IdentityError> {
    let path = state_dir.join(WIREGUARD_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => stayopen_tunnel::keys::KeyPair::from_private_base64(&text).map_err(|e| {
            IdentityError::WireguardKey {
                path,
                detail: e.to_string(),
            }
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pair = stayopen_tunnel::keys::KeyPair::generate();
            write_private(
                state_dir,
                WIREGUARD_KEY_FILE,
                format!("{}\n", pair.private_base64()).as_bytes(),
            )?;
            tracing::info!(public_key = %pair.public_base64(), "created the WireGuard key");
            Ok(pair)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

impl Identity {
    /// The public half of the appliance's WireGuard key (base64, as `wg` prints it), creating
    /// the key pair in `state_dir` at first use: what the cloud registers for the relay at
    /// enrolment.
    pub fn wireguard_public_key(state_dir: &Path) -> Result<String, IdentityError> {
        wireguard_key(state_dir).map(|pair| pair.public_base64())
    }
}

/// What enrolment gave this appliance, and the private key it generated for it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub appliance_id: ApplianceId,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub mqtt: MqttCredentials,
    /// Empty in identities stored before device certificates existed: such an appliance enrols
    /// again (the cloud keeps its id, since the hardware is the same).
    #[serde(default)]
    pub client_cert_pem: String,
    #[serde(default)]
    pub ca_cert_pem: String,
    #[serde(default)]
    pub private_key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("appliance_id", &self.appliance_id)
            .field("practice_id", &self.practice_id)
            .field("site_id", &self.site_id)
            .field("mqtt", &self.mqtt)
            .finish_non_exhaustive()
    }
}

/// A new ECDSA P-256 key pair and a certificate signing request for it. Returns (key, request),
/// both PEM. The cloud decides the certificate's names; the request only proves the key.
pub fn new_key_and_request() -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let request = rcgen::CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), request.pem()?))
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({source}); move it away to enrol again")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cloud refused enrolment: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("cannot reach the cloud at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("cannot generate the device key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot sign the renewal proof with the device key: {0}")]
    Sign(String),
    #[error("{path} holds no WireGuard key ({detail}); move it away to make a new one")]
    WireguardKey { path: PathBuf, detail: String },
}

impl IdentityError {
    /// Refusals (bad or expired token, hardware claimed elsewhere) will not fix themselves by
    /// retrying; network trouble will.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, IdentityError::Unreachable { .. })
    }
}

pub fn load(state_dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = state_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| IdentityError::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// Writes the identity atomically (temporary file, then rename) and readable by root only: it holds
/// the MQTT password and the private key.
pub fn store(state_dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let json = serde_json::to_vec_pretty(identity).unwrap_or_default();
    write_private(state_dir, IDENTITY_FILE, &json)
}

/// Writes `state_dir/name` atomically (temporary file, synced, then renamed), readable by root only.
fn write_private(state_dir: &Path, name: &str, contents: &[u8]) -> Result<(), IdentityError> {
    let path = state_dir.join(name);
    let write_err = |source| IdentityError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(write_err)?;
    let tmp = state_dir.join(format!("{name}.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write_err)?;
        file.write_all(contents).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
    }
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(())
}

/// The hardware identity: configured values win; otherwise the DMI serial (or machine id) and the
/// MAC address of the first uplink's interface.
pub fn detect_hardware(section: &ApplianceSection, uplinks: &[UplinkConfig]) -> HardwareIdentity {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let serial = section
        .serial
        .clone()
        .or_else(|| read("/sys/class/dmi/id/product_serial"))
        .or_else(|| read("/etc/machine-id"))
        .unwrap_or_else(|| "unknown".to_owned());
    let mac = section
        .mac
        .clone()
        .or_else(|| {
            uplinks
                .first()
                .and_then(|u| read(&format!("/sys/class/net/{}/address", u.interface)))
        })
        .unwrap_or_else(|| "00:00:00:00:00:00".to_owned());
    let model = section
        .model
        .clone()
        .or_else(|| read("/sys/class/dmi/id/product_name"))
        .unwrap_or_else(|| "generic".to_owned());
    HardwareIdentity { serial, mac, model }
}

/// What the appliance proves its right to enrol with; redacted in `Debug`, zeroised on drop.
#[derive(Debug, Clone)]
pub enum Proof {
    /// An enrolment token from the dashboard.
    Token(SecretString),
    /// The factory key of a box whose serial the MSP registered (zero-touch).
    FactoryKey(SecretString),
}

/// Calls `POST /api/v1/enroll` (token) or `POST /api/v1/enroll/claim` (factory key) once.
pub async fn enroll(
    http: &reqwest::Client,
    api_url: &str,
    proof: &Proof,
    hardware: HardwareIdentity,
) -> Result<Identity, IdentityError> {
    let base = api_url.trim_end_matches('/');
    let (private_key_pem, csr_pem) = new_key_and_request()?;
    let agent_version = AGENT_VERSION.to_owned();
    let (url, body) = match proof {
        Proof::Token(token) => (
            format!("{base}/api/v1/enroll"),
            serde_json::to_value(EnrollRequest {
                token: token.expose_secret().to_owned(),
                hardware,
                agent_version,
                csr_pem,
            }),
        ),
        Proof::FactoryKey(factory_key) => (
            format!("{base}/api/v1/enroll/claim"),
            serde_json::to_value(ClaimEnrollRequest {
                factory_key: factory_key.expose_secret().to_owned(),
                hardware,
                agent_version,
                csr_pem,
            }),
        ),
    };
    let enrolled = post_for_credentials(http, &url, &body.unwrap_or_default()).await?;
    Ok(Identity::new(enrolled, private_key_pem))
}

impl Identity {
    fn new(enrolled: EnrollResponse, private_key_pem: String) -> Self {
        Identity {
            appliance_id: enrolled.appliance_id,
            practice_id: enrolled.practice_id,
            site_id: enrolled.site_id,
            mqtt: enrolled.mqtt,
            client_cert_pem: enrolled.client_cert_pem,
            ca_cert_pem: enrolled.ca_cert_pem,
            private_key_pem,
        }
    }
}

/// POSTs `body` to one of the enrolment endpoints and reads the credentials, or the refusal.
async fn post_for_credentials(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<EnrollResponse, IdentityError> {
    let unreachable = |source| IdentityError::Unreachable {
        url: url.to_owned(),
        source,
    };
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(unreachable);
    }
    if status.is_server_error() {
        let source = response.error_for_status().err();
        return match source {
            Some(source) => Err(unreachable(source)),
            None => Err(IdentityError::Refused {
                code: status.to_string(),
                message: "server error".into(),
            }),
        };
    }
    let body: Option<ApiError> = response.json().await.ok();
    Err(match body {
        Some(e) => IdentityError::Refused {
            code: e.error.code,
            message: e.error.message,
        },
        None => IdentityError::Refused {
            code: status.as_u16().to_string(),
            message: status.to_string(),
        },
    })
}

/// Returns the stored identity, or enrols (retrying while the cloud is unreachable, with backoff up
/// to a minute) and stores the result.
pub async fn load_or_enroll(
    state_dir: &Path,
    http: &reqwest::Client,
    api_url: &str,
    proof: &Proof,
    hardware: HardwareIdentity,
) -> Result<Identity, IdentityError> {
    match load(state_dir)? {
        Some(identity) if !identity.client_cert_pem.is_empty() => {
            tracing::info!(appliance_id = %identity.appliance_id, "already enrolled");
            return Ok(identity);
        }
        Some(identity) => tracing::warn!(appliance_id = %identity.appliance_id,
            "the stored identity has no device certificate; enrolling again"),
        None => {}
    }
    let mut delays = {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build()
    };
    loop {
        match enroll(http, api_url, proof, hardware.clone()).await {
            Ok(identity) => {
                store(state_dir, &identity)?;
                tracing::info!(appliance_id = %identity.appliance_id, "enrolled");
                return Ok(identity);
            }
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(60));
                tracing::warn!(error = %e, retry_in = ?delay, "enrolment failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// When a certificate is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenewBefore {
    /// When less than a third of its lifetime remains (a 397-day certificate is renewed with
    /// about 132 days to spare, so months of the cloud being unreachable do not strand the
    /// appliance).
    #[default]
    ThirdOfLifetime,
    /// When less than this remains: for tests, which cannot wait months for a certificate to age.
    Remaining(chrono::TimeDelta),
}

/// Whether the certificate should be renewed: less than a third of its lifetime remains. A
/// certificate that cannot be read is due.
pub fn renewal_due(identity: &Identity, now: DateTime<Utc>) -> bool {
    now > renewal_due_after(identity, RenewBefore::ThirdOfLifetime)
}

/// The moment after which the certificate is due for renewal ([`DateTime::MIN_UTC`] for one that
/// cannot be read: due at once).
pub fn renewal_due_after(identity: &Identity, before: RenewBefore) -> DateTime<Utc> {
    let Some((not_before, not_after)) = certificate_validity(&identity.client_cert_pem) else {
        return DateTime::<Utc>::MIN_UTC;
    };
    match before {
        RenewBefore::ThirdOfLifetime => not_after - (not_after - not_before) / 3,
        RenewBefore::Remaining(remaining) => not_after - remaining,
    }
}

/// The validity period of a PEM certificate.
fn certificate_validity(cert_pem: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    Some((
        DateTime::from_timestamp(validity.not_before.timestamp(), 0)?,
        DateTime::from_timestamp(validity.not_after.timestamp(), 0)?,
    ))
}

/// A signing request for an existing key (PEM).
fn request_for(private_key_pem: &str) -> Result<String, rcgen::Error> {
    let key = rcgen::KeyPair::from_pem(private_key_pem)?;
    rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()
}

/// The renewal proof: base64 of the ECDSA P-256 SHA-256 (ASN.1 DER) signature of
/// [`renewal_message`] by `private_key_pem`, the key of the appliance's current certificate.
pub fn sign_renewal(
    private_key_pem: &str,
    appliance_id: ApplianceId,
    signed_at: DateTime<Utc>,
    csr_pem: &str,
) -> Result<String, IdentityError> {
    sign(
        private_key_pem,
        &renewal_message(appliance_id, signed_at, csr_pem),
    )
}

/// Base64 of the ECDSA P-256 SHA-256 (ASN.1 DER) signature of `message` by `private_key_pem`.
fn sign(private_key_pem: &str, message: &[u8]) -> Result<String, IdentityError> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let pkcs8 = rcgen::KeyPair::from_pem(private_key_pem)?.serialize_der();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
        .map_err(|e| IdentityError::Sign(e.to_string()))?;
    let signature = key
        .sign(&rng, message)
        .map_err(|e| IdentityError::Sign(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature.as_ref()))
}

/// The MQTT password: the enrolment secret and a proof, signed with `private_key_pem`, that the
/// connection holds the key of the appliance's current certificate
/// ([`stayopen_shared::api::mqtt_key_proof_message`]).
pub fn mqtt_password(
    secret: &str,
    appliance_id: ApplianceId,
    private_key_pem: &str,
) -> Result<String, IdentityError> {
    let proof = sign(
        private_key_pem,
        &stayopen_shared::api::mqtt_key_proof_message(appliance_id),
    )?;
    Ok(format!(
        "{secret}{}{proof}",
        stayopen_shared::api::MQTT_KEY_PROOF_SEPARATOR
    ))
}

/// The next key of a renewal under way, or a new one (written to the state directory before it is
/// used, so a retry after a lost answer uses the same key).
fn pending_key(state_dir: &Path, identity: &Identity) -> Result<(String, bool), IdentityError> {
    let path = state_dir.join(PENDING_KEY_FILE);
    match std::fs::read_to_string(&path) {
        // A pending key equal to the current one is left over from a renewal that was stored but
        // not cleaned up: start afresh, the key should change.
        Ok(pem) if pem != identity.private_key_pem && rcgen::KeyPair::from_pem(&pem).is_ok() => {
            return Ok((pem, true));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(IdentityError::Read { path, source }),
    }
    let (pem, _) = new_key_and_request()?;
    write_private(state_dir, PENDING_KEY_FILE, pem.as_bytes())?;
    Ok((pem, false))
}

/// Renews the certificate: a new key (kept in a pending file until done) and a signing request for
/// it, a proof signed with the current key, `POST /api/v1/enroll/renew`; the new identity (new
/// certificate, key and MQTT password) is stored atomically and returned. The old certificate and
/// password stop working once the cloud answers.
///
/// If an earlier attempt's answer was lost, the cloud may already have certified the pending key
/// and refuse a proof by the old one; the proof is then made with the pending key, which the cloud
/// knows as the current one.
pub async fn renew(
    state_dir: &Path,
    http: &reqwest::Client,
    api_url: &str,
    identity: &Identity,
) -> Result<Identity, IdentityError> {
    let (next_key, resumed) = pending_key(state_dir, identity)?;
    let csr_pem = request_for(&next_key)?;
    let url = format!("{}/api/v1/enroll/renew", api_url.trim_end_matches('/'));
    let attempt = |proving_key: &str| {
        let signed_at = Utc::now()
            .duration_trunc(chrono::Duration::seconds(1))
            .unwrap_or_else(|_| Utc::now());
        sign_renewal(proving_key, identity.appliance_id, signed_at, &csr_pem).map(|signature| {
            serde_json::to_value(RenewRequest {
                appliance_id: identity.appliance_id,
                csr_pem: csr_pem.clone(),
                signed_at,
                signature,
            })
            .unwrap_or_default()
        })
    };
    let body = attempt(&identity.private_key_pem)?;
    let renewed = match post_for_credentials(http, &url, &body).await {
        Err(IdentityError::Refused { code, .. })
            if resumed && code == "renewal_signature_invalid" =>
        {
            tracing::info!(appliance_id = %identity.appliance_id,
                "an earlier renewal was accepted; proving with its key");
            post_for_credentials(http, &url, &attempt(&next_key)?).await?
        }
        other => other?,
    };
    let identity = Identity::new(renewed, next_key);
    store(state_dir, &identity)?;
    let pending = state_dir.join(PENDING_KEY_FILE);
    if let Err(e) = std::fs::remove_file(&pending) {
        tracing::warn!(path = %pending.display(), error = %e, "cannot remove the pending key");
    }
    tracing::info!(appliance_id = %identity.appliance_id, "certificate renewed");
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn an_enrolment_proof_never_shows_its_secret_in_debug_output() {
        for proof in [
            Proof::Token("soe_secret-token".into()),
            Proof::FactoryKey("factory-secret-key".into()),
        ] {
            let shown = format!("{proof:?}");
            assert!(!shown.contains("secret-"), "{shown}");
        }
    }

    #[test]
    fn a_stored_identity_loads_back_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load(dir.path()), Ok(None)));
        let identity = Identity {
            appliance_id: ApplianceId(Uuid::from_u128(1)),
            practice_id: PracticeId(Uuid::from_u128(2)),
            site_id: SiteId(Uuid::from_u128(3)),
            mqtt: MqttCredentials {
                host: "127.0.0.1".into(),
                port: 1883,
                username: "u".into(),
                password: "p".into(),
            },
            client_cert_pem: "cert".into(),
            ca_cert_pem: "ca".into(),
            private_key_pem: "key".into(),
        };
        store(dir.path(), &identity).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(identity));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_wireguard_key_is_made_once_private_and_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Identity::wireguard_public_key(dir.path()).expect("created");
        let again = Identity::wireguard_public_key(dir.path()).expect("loaded");
        assert_eq!(first, again);
        assert_eq!(first.len(), 44);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(WIREGUARD_KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_corrupt_wireguard_key_file_is_an_error_not_silently_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(WIREGUARD_KEY_FILE), "not a key").expect("write");
        assert!(matches!(
            wireguard_key(dir.path()),
            Err(IdentityError::WireguardKey { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(WIREGUARD_KEY_FILE)).expect("read"),
            "not a key"
        );
    }

    #[test]
    fn a_signing_request_proves_a_fresh_key_each_time() {
        let (key_a, csr_a) = new_key_and_request().expect("csr");
        let (key_b, _) = new_key_and_request().expect("csr");
        assert_ne!(key_a, key_b);
        assert!(key_a.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(csr_a.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    /// An identity whose certificate is valid for `days` from the returned start.
    fn identity_valid(days: u64) -> (Identity, DateTime<Utc>) {
        let (key_pem, _) = new_key_and_request().expect("key");
        let key = rcgen::KeyPair::from_pem(&key_pem).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(2027, 1, 15);
        params.not_after = params.not_before + Duration::from_secs(days * 86_400);
        let start = DateTime::from_timestamp(params.not_before.unix_timestamp(), 0).expect("time");
        let cert = params.self_signed(&key).expect("cert");
        let identity = Identity {
            appliance_id: ApplianceId(Uuid::from_u128(1)),
            practice_id: PracticeId(Uuid::from_u128(2)),
            site_id: SiteId(Uuid::from_u128(3)),
            mqtt: MqttCredentials {
                host: "127.0.0.1".into(),
                port: 1883,
                username: "u".into(),
                password: "p".into(),
            },
            client_cert_pem: cert.pem(),
            ca_cert_pem: String::new(),
            private_key_pem: key_pem,
        };
        (identity, start)
    }

    #[test]
    fn renewal_is_due_when_less_than_a_third_of_the_lifetime_remains() {
        let (identity, start) = identity_valid(300);
        let day = |n: i64| start + chrono::Duration::days(n);
        assert!(!renewal_due(&identity, day(0)));
        assert!(!renewal_due(&identity, day(199)), "101 days of 300 left");
        assert!(!renewal_due(&identity, day(200)), "exactly a third left");
        assert!(renewal_due(&identity, day(201)), "99 days of 300 left");
        assert!(renewal_due(&identity, day(400)), "expired");
    }

    #[test]
    fn renewal_can_be_asked_for_while_a_set_time_remains() {
        let (identity, start) = identity_valid(300);
        let ten_days = RenewBefore::Remaining(chrono::Duration::days(10));
        assert_eq!(
            renewal_due_after(&identity, ten_days),
            start + chrono::Duration::days(290)
        );
        assert_eq!(
            renewal_due_after(&identity, RenewBefore::default()),
            start + chrono::Duration::days(200)
        );
    }

    #[test]
    fn an_unreadable_certificate_is_due_for_renewal() {
        let (mut identity, start) = identity_valid(10);
        identity.client_cert_pem = "not a certificate".into();
        assert!(renewal_due(&identity, start));
    }

    #[test]
    fn a_renewal_proof_verifies_with_the_current_key_and_no_other() {
        use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
        let (key_pem, _) = new_key_and_request().expect("key");
        let (other_pem, csr) = new_key_and_request().expect("key");
        let public = |pem: &str| {
            rcgen::KeyPair::from_pem(pem)
                .expect("key")
                .public_key_raw()
                .to_vec()
        };
        let appliance = ApplianceId(Uuid::from_u128(5));
        let signed_at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let signature = sign_renewal(&key_pem, appliance, signed_at, &csr).expect("signed");
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .expect("base64");
        let message = renewal_message(appliance, signed_at, &csr);
        let verify = |pem: &str, message: &[u8]| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public(pem))
                .verify(message, &der)
                .is_ok()
        };
        assert!(verify(&key_pem, &message));
        assert!(!verify(&other_pem, &message), "another key");
        let later = renewal_message(appliance, signed_at + chrono::Duration::seconds(1), &csr);
        assert!(!verify(&key_pem, &later), "another time");
    }

    #[test]
    fn a_pending_renewal_key_is_kept_until_used_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (identity, _) = identity_valid(10);
        let (first, resumed) = pending_key(dir.path(), &identity).expect("new key");
        assert!(!resumed);
        let (again, resumed) = pending_key(dir.path(), &identity).expect("same key");
        assert!(resumed, "an interrupted renewal resumes with its key");
        assert_eq!(first, again);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(PENDING_KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Left over after the renewed identity was stored: not reused.
        let stored = Identity {
            private_key_pem: first.clone(),
            ..identity
        };
        let (fresh, resumed) = pending_key(dir.path(), &stored).expect("fresh key");
        assert!(!resumed);
        assert_ne!(fresh, first);
    }

    #[test]
    fn a_corrupt_identity_file_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(IDENTITY_FILE), b"{garbage").expect("write");
        let err = load(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
