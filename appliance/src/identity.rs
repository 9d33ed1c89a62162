//! Enrolment, and the identity kept in the state directory so an appliance enrols exactly once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stayopen_shared::api::{
    ApiError, ClaimEnrollRequest, EnrollRequest, EnrollResponse, HardwareIdentity, MqttCredentials,
};
use stayopen_shared::{ApplianceId, PracticeId, SiteId};

use crate::AGENT_VERSION;
use crate::config::{ApplianceSection, UplinkConfig};

const IDENTITY_FILE: &str = "identity.json";

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
    let path = state_dir.join(IDENTITY_FILE);
    let write_err = |source| IdentityError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(write_err)?;
    let tmp = state_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(identity).unwrap_or_default();
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
        file.write_all(&json).map_err(write_err)?;
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

/// What the appliance proves its right to enrol with.
#[derive(Clone, PartialEq, Eq)]
pub enum Proof {
    /// An enrolment token from the dashboard.
    Token(String),
    /// The factory key of a box whose serial the MSP registered (zero-touch).
    FactoryKey(String),
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proof::Token(_) => "Proof::Token(..)",
            Proof::FactoryKey(_) => "Proof::FactoryKey(..)",
        })
    }
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
                token: token.clone(),
                hardware,
                agent_version,
                csr_pem,
            }),
        ),
        Proof::FactoryKey(factory_key) => (
            format!("{base}/api/v1/enroll/claim"),
            serde_json::to_value(ClaimEnrollRequest {
                factory_key: factory_key.clone(),
                hardware,
                agent_version,
                csr_pem,
            }),
        ),
    };
    let body = body.unwrap_or_default();
    let unreachable = |source| IdentityError::Unreachable {
        url: url.clone(),
        source,
    };
    let response = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if status.is_success() {
        let enrolled: EnrollResponse = response.json().await.map_err(unreachable)?;
        return Ok(Identity {
            appliance_id: enrolled.appliance_id,
            practice_id: enrolled.practice_id,
            site_id: enrolled.site_id,
            mqtt: enrolled.mqtt,
            client_cert_pem: enrolled.client_cert_pem,
            ca_cert_pem: enrolled.ca_cert_pem,
            private_key_pem,
        });
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
    let mut backoff = Duration::from_millis(500);
    loop {
        match enroll(http, api_url, proof, hardware.clone()).await {
            Ok(identity) => {
                store(state_dir, &identity)?;
                tracing::info!(appliance_id = %identity.appliance_id, "enrolled");
                return Ok(identity);
            }
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "enrolment failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

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
    fn a_signing_request_proves_a_fresh_key_each_time() {
        let (key_a, csr_a) = new_key_and_request().expect("csr");
        let (key_b, _) = new_key_and_request().expect("csr");
        assert_ne!(key_a, key_b);
        assert!(key_a.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(csr_a.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    #[test]
    fn a_corrupt_identity_file_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(IDENTITY_FILE), b"{garbage").expect("write");
        let err = load(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
