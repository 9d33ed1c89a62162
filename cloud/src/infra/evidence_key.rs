//! The cloud's evidence-signing key: Ed25519, kept in one PKCS#8 PEM file (0600) created on first
//! start, like the device CA (`pki.rs`). Every evidence package's `manifest.json` is signed with it;
//! the public half is published (`GET /api/v1/evidence/public-key`) and written beside the key as
//! `{key}.pub.pem`, which `stayopen-cloud evidence verify --public-key` takes.
//!
//! The fingerprint is `SHA256:` and the hex SHA-256 of the raw 32-byte public key, so it can be
//! computed from the PEM with any tool that extracts the key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceKeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an Ed25519 private key in PKCS#8 PEM: {detail}")]
    BadPrivateKey { path: PathBuf, detail: String },
    #[error("not an Ed25519 public key in SubjectPublicKeyInfo PEM: {0}")]
    BadPublicKey(String),
    #[error("encoding the key: {0}")]
    Encode(String),
}

/// The private signing key. Its `Debug` shows only the fingerprint.
pub struct EvidenceKey {
    signing: SigningKey,
}

impl std::fmt::Debug for EvidenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvidenceKey")
            .field("fingerprint", &self.public().fingerprint())
            .finish_non_exhaustive()
    }
}

/// A public key that verifies evidence packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidencePublic(VerifyingKey);

impl EvidenceKey {
    /// A new random key (tests, and the first start).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Reads the key at `path`, or creates it there (0600, its directory 0700 if missing) and the
    /// public key beside it.
    pub fn load_or_create(path: &Path) -> Result<Self, EvidenceKeyError> {
        let io = |source| EvidenceKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => Self {
                signing: SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                    EvidenceKeyError::BadPrivateKey {
                        path: path.to_owned(),
                        detail: e.to_string(),
                    }
                })?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(io)?;
                }
                let key = Self::generate();
                let pem = key
                    .signing
                    .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                    .map_err(|e| EvidenceKeyError::Encode(e.to_string()))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(pem.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), fingerprint = %key.public().fingerprint(),
                    "created the evidence-signing key; back it up with the device CA");
                key
            }
            Err(e) => return Err(io(e)),
        };
        // The public half beside it, for operators and `evidence verify --public-key`.
        let public_path = public_key_path(path);
        let public_pem = key.public().pem()?;
        if std::fs::read_to_string(&public_path).ok().as_deref() != Some(public_pem.as_str()) {
            std::fs::write(&public_path, public_pem).map_err(|source| EvidenceKeyError::Io {
                path: public_path,
                source,
            })?;
        }
        Ok(key)
    }

    pub fn public(&self) -> EvidencePublic {
        EvidencePublic(self.signing.verifying_key())
    }

    /// The detached signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// Where the public key of the key at `key_path` is written: `{key_path}.pub.pem`.
pub fn public_key_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".pub.pem");
    PathBuf::from(name)
}

impl EvidencePublic {
    pub fn from_pem(pem: &str) -> Result<Self, EvidenceKeyError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self)
            .map_err(|e| EvidenceKeyError::BadPublicKey(e.to_string()))
    }

    /// The SubjectPublicKeyInfo PEM.
    pub fn pem(&self) -> Result<String, EvidenceKeyError> {
        self.0
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| EvidenceKeyError::Encode(e.to_string()))
    }

    /// `SHA256:` and the hex SHA-256 of the raw 32-byte key.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// Whether `signature` (64 bytes) is this key's signature of `message` (strict: no malleable
    /// or small-order forms).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature)
            .is_ok_and(|signature| self.0.verify_strict(message, &signature).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_to_the_owner_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("evidence").join("signing.key");
        let first = EvidenceKey::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("metadata");
        assert_eq!(mode, 0o600);
        let again = EvidenceKey::load_or_create(&path).expect("reload");
        assert_eq!(first.public(), again.public());
        let published = std::fs::read_to_string(public_key_path(&path)).expect("public key file");
        assert_eq!(
            EvidencePublic::from_pem(&published).expect("parse"),
            first.public()
        );
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_its_message() {
        let key = EvidenceKey::generate();
        let other = EvidenceKey::generate();
        let signature = key.sign(b"manifest");
        assert!(key.public().verifies(b"manifest", &signature));
        assert!(!key.public().verifies(b"manifesT", &signature));
        assert!(!other.public().verifies(b"manifest", &signature));
        assert!(!key.public().verifies(b"manifest", &signature[..63]));
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_raw_key_and_survives_the_pem_round_trip() {
        let key = EvidenceKey::generate();
        let public = key.public();
        let pem = public.pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        let fingerprint = public.fingerprint();
        assert_eq!(
            fingerprint,
            format!(
                "SHA256:{}",
                hex::encode(Sha256::digest(key.signing.verifying_key().as_bytes()))
            )
        );
        assert_eq!(
            EvidencePublic::from_pem(&pem).expect("parse").fingerprint(),
            fingerprint
        );
        assert!(EvidencePublic::from_pem("not a key").is_err());
        assert!(!format!("{key:?}").contains("signing"));
    }
}
