//! The device certificate authority: signs each appliance's client certificate at enrolment and
//! the broker's server certificate at start and again before it ends
//! ([`renew_broker_certificate`]).
//!
//! Design: the appliance generates its key pair and sends a certificate signing request; the key
//! never leaves the box. The certificate's Subject O is the appliance id as written in topics
//! (32 hex digits), which rumqttd's `validate-tenant-prefix` turns into the only topic prefix the
//! connection may publish or subscribe under. The CA's key lives in `broker.tls_dir` (0600) and is
//! created on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use stayopen_shared::{ApplianceId, DeviceTopic};
use time::{Duration, OffsetDateTime};

/// The Common Name of the cloud's own client certificate for an external broker.
pub const CLOUD_CLIENT_NAME: &str = "stayopen-cloud";

/// Device certificates are valid this long unless `broker.device_cert_days` says otherwise; an
/// appliance renews its certificate with proof of its key before the end.
pub const DEVICE_CERT_DAYS: u32 = 397;
const CA_YEARS: i64 = 20;
/// The broker's own certificate is valid this long and renewed when a third of it remains
/// ([`broker_renewal_at`]), so a month of failed attempts passes before it could lapse.
pub const BROKER_CERT_DAYS: i64 = 90;
/// A failed renewal of the broker's certificate is tried again after this long; the longest the
/// renewal task sleeps at once, so a changed wall clock is noticed within it too.
const BROKER_RENEWAL_RETRY: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid: {0}")]
    BadRequest(String),
}

/// The CA, loaded or created.
pub struct DeviceCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub serial_hex: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// The certified public key: the uncompressed P-256 point of the SubjectPublicKeyInfo, which is
    /// what verifying a signature of the key needs (the renewal proof).
    pub public_key: Vec<u8>,
}

/// The broker's certificate as [`DeviceCa::broker_files`] wrote it.
#[derive(Debug, Clone)]
pub struct BrokerCertificate {
    pub files: BrokerTlsFiles,
    pub serial_hex: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// When the broker's certificate ending at `not_after` is renewed: when a third of its
/// [`BROKER_CERT_DAYS`] remains.
pub fn broker_renewal_at(
    not_after: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    not_after - chrono::Duration::days(BROKER_CERT_DAYS / 3)
}

/// Renews the embedded broker's certificate before it ends, for as long as the cloud runs.
/// rumqttd reads the certificate files for every new connection, so rewriting them is all it
/// takes: new connections get the new certificate, open ones keep theirs, nothing restarts.
/// A failure (disk full, say) is logged and tried again hourly.
pub async fn renew_broker_certificate(
    ca: Arc<DeviceCa>,
    dir: PathBuf,
    hosts: Vec<String>,
    mut not_after: chrono::DateTime<chrono::Utc>,
) {
    loop {
        let due = broker_renewal_at(not_after);
        let now = chrono::Utc::now();
        if now < due {
            let wait = (due - now).to_std().unwrap_or_default();
            tokio::time::sleep(wait.min(BROKER_RENEWAL_RETRY)).await;
            continue;
        }
        match ca.broker_files(&dir, &hosts) {
            Ok(renewed) => {
                tracing::info!(serial = %renewed.serial_hex, not_after = %renewed.not_after,
                    previous_not_after = %not_after, "renewed the broker's certificate");
                not_after = renewed.not_after;
            }
            Err(e) => {
                tracing::error!(error = %e, %not_after, retry_in = ?BROKER_RENEWAL_RETRY,
                    "cannot renew the broker's certificate");
                tokio::time::sleep(BROKER_RENEWAL_RETRY).await;
            }
        }
    }
}

/// The broker's TLS files, as rumqttd reads them.
#[derive(Debug, Clone)]
pub struct BrokerTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl BrokerTlsFiles {
    /// The files [`DeviceCa::broker_files`] writes into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("broker.pem"),
            key: dir.join("broker.key"),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o600)
}

fn write_with_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Replaces `path` with `contents` at once (a temporary file of its own, then a rename), so a
/// reader sees the old file or the new one, never a part.
fn replace_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", unique_suffix()));
    let tmp = PathBuf::from(tmp);
    let written = write_with_mode(&tmp, contents, mode)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    // Positive, non-zero (RFC 5280).
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn unique_suffix() -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

fn to_chrono(t: OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), 0).unwrap_or_default()
}

impl DeviceCa {
    /// Loads `dir/ca.pem` and `dir/ca.key`, creating them (and `dir`) the first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
            return Ok(Self { cert_pem, issuer });
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "StayOpen device CA");
        name.push(DnType::OrganizationName, "StayOpen");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365 * CA_YEARS);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        write_secret(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        tracing::info!(path = %cert_path.display(), "created the device CA");
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs an appliance's request for `valid_days`. Whatever the request asks for, the
    /// certificate names the appliance (CN = its id, O = its topic segment) and is for client
    /// authentication only. The key must be ECDSA P-256, the one kind the renewal proof is
    /// verified for.
    pub fn sign_device(
        &self,
        csr_pem: &str,
        appliance: ApplianceId,
        valid_days: u32,
    ) -> Result<Issued, PkiError> {
        // `from_pem` also verifies the request's signature: the requester holds the key.
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        let public_key = rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec();
        let p256 = csr.public_key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256
            && public_key.len() == 65
            && public_key[0] == 0x04;
        if !p256 {
            return Err(PkiError::BadRequest(
                "the key must be ECDSA P-256".to_owned(),
            ));
        }
        // CN and O both carry the topic segment: rumqttd confines by O, Mosquitto's
        // `use_identity_as_username` takes the CN for its `%u` ACL patterns.
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, DeviceTopic::segment(appliance));
        name.push(DnType::OrganizationName, DeviceTopic::segment(appliance));
        let now = OffsetDateTime::now_utc();
        let serial = random_serial();
        let params = &mut csr.params;
        params.distinguished_name = name;
        params.subject_alt_names = Vec::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(i64::from(valid_days));
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let not_after = params.not_after;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial_hex: hex::encode(serial.to_bytes()),
            not_after: to_chrono(not_after),
            public_key,
        })
    }

    /// A short-lived client certificate the cloud itself presents as `appliance` (to take over and
    /// close a revoked appliance's connection). Returns (certificate, key) in PEM.
    pub fn cloud_client_as(&self, appliance: ApplianceId) -> Result<(String, String), PkiError> {
        let segment = DeviceTopic::segment(appliance);
        self.client_certificate(&segment, &segment, Duration::minutes(10))
    }

    /// The certificate the cloud's own MQTT client presents to an external broker: CN
    /// [`CLOUD_CLIENT_NAME`], which the broker's ACL lets read and write every device topic.
    pub fn cloud_service_client(&self) -> Result<(String, String), PkiError> {
        self.client_certificate(CLOUD_CLIENT_NAME, "StayOpen", Duration::days(30))
    }

    fn client_certificate(
        &self,
        common_name: &str,
        organization: &str,
        valid_for: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, organization);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + valid_for;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `dir/crl.pem`: the revoked and superseded device certificates (hex serials, times),
    /// for an external broker's `crlfile`. Rewritten at start and after every issuance and
    /// revocation (`domain::enrolment::rewrite_crl`).
    pub fn write_crl(
        &self,
        dir: &Path,
        revoked: &[(String, chrono::DateTime<chrono::Utc>)],
    ) -> Result<PathBuf, PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at)| {
                let bytes = hex::decode(serial).ok()?;
                Some(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: OffsetDateTime::from_unix_timestamp(at.timestamp())
                        .unwrap_or(now),
                    reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let pem = params.signed_by(&self.issuer)?.pem()?;
        let path = dir.join("crl.pem");
        // A name of its own per writer: two writers never interleave in one temporary file.
        let tmp = dir.join(format!("crl.pem.{}.tmp", unique_suffix()));
        std::fs::write(&tmp, pem).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(path)
    }

    /// Writes the broker's certificate (for `hosts`, valid [`BROKER_CERT_DAYS`]) and its key into
    /// `dir` for rumqttd; `dir/ca.pem` is the CA's, written by [`DeviceCa::load_or_create`]. Each
    /// file is replaced at once, the key first: the broker reads both for every new connection, and
    /// only a handshake that reads between the two renames can find a key and certificate that do
    /// not match (it fails, and the client reconnects).
    pub fn broker_files(
        &self,
        dir: &Path,
        hosts: &[String],
    ) -> Result<BrokerCertificate, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "StayOpen MQTT broker");
        params.distinguished_name = name;
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(BROKER_CERT_DAYS);
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let not_after = params.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = BrokerTlsFiles::in_dir(dir);
        replace_file(&files.key, &key.serialize_pem(), 0o600)?;
        replace_file(&files.cert, &cert.pem(), 0o644)?;
        Ok(BrokerCertificate {
            files,
            serial_hex: hex::encode(serial.to_bytes()),
            not_after: to_chrono(not_after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_device_certificate_names_the_appliance_whatever_the_request_asked() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = DeviceCa::load_or_create(dir.path()).expect("ca");
        let appliance = ApplianceId(Uuid::from_u128(0xabc));
        let (_, csr) = stayopen_appliance::identity::new_key_and_request().expect("csr");
        let issued = ca
            .sign_device(&csr, appliance, DEVICE_CERT_DAYS)
            .expect("signed");
        let der = pem_der(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let org = cert
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .expect("O");
        assert_eq!(org, "00000000000000000000000000000abc");
        assert!(issued.not_after > chrono::Utc::now() + chrono::Duration::days(365));
        assert_eq!(issued.serial_hex.len(), 32);
        let certified = cert.public_key().subject_public_key.data.to_vec();
        assert_eq!(
            issued.public_key, certified,
            "the key the certificate names"
        );
    }

    #[test]
    fn a_request_for_a_key_other_than_p256_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = DeviceCa::load_or_create(dir.path()).expect("ca");
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .expect("csr");
        assert!(matches!(
            ca.sign_device(&csr, ApplianceId(Uuid::nil()), DEVICE_CERT_DAYS),
            Err(PkiError::BadRequest(_))
        ));
    }

    #[test]
    fn the_ca_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("dir");
        let first = DeviceCa::load_or_create(dir.path()).expect("ca");
        let again = DeviceCa::load_or_create(dir.path()).expect("ca");
        assert_eq!(first.cert_pem(), again.cert_pem());
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("key");
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn garbage_is_not_a_signing_request() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = DeviceCa::load_or_create(dir.path()).expect("ca");
        assert!(matches!(
            ca.sign_device(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                ApplianceId(Uuid::nil()),
                DEVICE_CERT_DAYS
            ),
            Err(PkiError::BadRequest(_))
        ));
    }

    #[test]
    fn the_broker_certificate_is_renewed_when_a_third_of_its_ninety_days_remains() {
        let not_after = chrono::DateTime::from_timestamp(1_900_000_000, 0).expect("time");
        assert_eq!(
            not_after - broker_renewal_at(not_after),
            chrono::Duration::days(30)
        );
    }

    #[test]
    fn reissuing_the_broker_files_replaces_both_with_a_new_certificate_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = DeviceCa::load_or_create(dir.path()).expect("ca");
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = ca.broker_files(dir.path(), &hosts).expect("first");
        let first_key = std::fs::read_to_string(&first.files.key).expect("key");
        let second = ca.broker_files(dir.path(), &hosts).expect("second");
        assert_ne!(first.serial_hex, second.serial_hex);
        assert_ne!(
            first_key,
            std::fs::read_to_string(&second.files.key).expect("key")
        );
        let der = pem_der(&std::fs::read_to_string(&second.files.cert).expect("cert"));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(hex::encode(cert.raw_serial()), second.serial_hex);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            second.not_after.timestamp()
        );
        let lifetime = second.not_after - chrono::Utc::now();
        assert!(
            lifetime > chrono::Duration::days(BROKER_CERT_DAYS - 1),
            "{lifetime}"
        );
        let mode = std::fs::metadata(&second.files.key)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("key");
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).expect("base64")
    }
}
