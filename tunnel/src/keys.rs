//! WireGuard keys: Curve25519 key pairs, written as base64 the way `wg` prints them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a WireGuard key: {0}")]
    Malformed(String),
}

/// A WireGuard key pair. The private half never leaves the process that made it; `Debug` does
/// not show it.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &encode_public(&self.public))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rand::rngs::OsRng))
    }

    pub fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// Reads a private key written by [`KeyPair::private_base64`].
    pub fn from_private_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self::from_secret(StaticSecret::from(decode_32(text)?)))
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn public_base64(&self) -> String {
        encode_public(&self.public)
    }

    /// The private key in base64, for the file that keeps it (mode 0600).
    pub fn private_base64(&self) -> String {
        STANDARD.encode(self.secret.to_bytes())
    }
}

pub fn encode_public(key: &PublicKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Parses a base64 public key (44 characters, 32 bytes).
pub fn parse_public(text: &str) -> Result<PublicKey, KeyError> {
    decode_32(text).map(PublicKey::from)
}

fn decode_32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::Malformed(format!("not base64 ({e})")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| KeyError::Malformed(format!("{} bytes, not 32", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_survives_its_base64_form_and_its_debug_hides_the_private_key() {
        let pair = KeyPair::generate();
        let again = KeyPair::from_private_base64(&pair.private_base64()).expect("parses");
        assert_eq!(again.public(), pair.public());
        assert_eq!(
            parse_public(&pair.public_base64()).expect("public"),
            pair.public()
        );
        assert!(!format!("{pair:?}").contains(&pair.private_base64()));
    }

    #[test]
    fn keys_of_the_wrong_length_or_not_base64_are_refused() {
        assert!(parse_public("AAAA").is_err());
        assert!(parse_public("not base64!").is_err());
        assert!(parse_public(&STANDARD.encode([0u8; 33])).is_err());
    }
}
