//! Passwords, access tokens, device secrets, and the extractor that turns a bearer token into an
//! authenticated user scoped to one tenant.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stayopen_shared::api::Role;
use stayopen_shared::{PracticeId, TenantId, UserId};

use crate::http::error::ApiFailure;
use crate::startup::AppState;

/// Hashes a dashboard password with Argon2id (the `argon2` crate's defaults follow OWASP's
/// recommendation: 19 MiB, 2 iterations).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// A valid hash of a password nobody knows, verified against when the e-mail is unknown so that the
/// response time does not reveal which e-mails have accounts.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c3RheW9wZW5kdW1teQ$N8n7J3rTQ8yqkIuJmKIHr6Bqv0P8yTgxV7m3Dkq8w2Q";

pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DUMMY_HASH)) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && hash.is_some()
}

/// 256 random bits, hex-encoded: enrolment tokens and MQTT passwords.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// SHA-256 of a high-entropy secret. Enough for secrets we generate ourselves (no dictionary to
/// attack), and cheap enough for the broker to check on every connection.
pub fn secret_digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares two digests in time independent of where they differ.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    tid: TenantId,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<PracticeId>,
    iat: i64,
    exp: i64,
}

/// Signs and checks access tokens (HS256).
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_minutes: u32) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl: Duration::minutes(i64::from(ttl_minutes)),
        }
    }

    pub fn issue(
        &self,
        user: &AuthUser,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user.user_id,
            tid: user.tenant_id,
            role: user.role.clone(),
            pid: user.practice_id,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, expires_at))
    }

    pub fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            },
        )?;
        let claims = data.claims;
        Ok(AuthUser {
            user_id: claims.sub,
            tenant_id: claims.tid,
            role: claims.role,
            practice_id: claims.pid,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

/// The caller of an API request, proven by its bearer token. Every query a handler makes is scoped
/// by `tenant_id` (and `practice_id` for practice users) taken from here, never from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub practice_id: Option<PracticeId>,
}

impl AuthUser {
    pub fn require_msp_admin(&self) -> Result<(), ApiFailure> {
        match self.role {
            Role::MspAdmin => Ok(()),
            Role::PracticeViewer => Err(ApiFailure::Forbidden),
        }
    }
}

impl FromRequest for AuthUser {
    type Error = ApiFailure;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiFailure> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiFailure::Internal("application state missing".into()))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let result = match header.and_then(|h| h.strip_prefix("Bearer ")) {
        None => Err(ApiFailure::Unauthenticated("missing bearer token".into())),
        Some(token) => state.tokens.verify(token.trim()).map_err(|e| match e {
            TokenError::Expired => ApiFailure::TokenExpired,
            TokenError::Invalid => ApiFailure::Unauthenticated(e.to_string()),
        }),
    };
    if let Err(failure) = &result {
        state
            .metrics
            .increment(crate::metrics::API_REJECTED, "reason", failure.code());
        tracing::info!(path = %req.path(), reason = failure.code(), "rejected unauthenticated request");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn user() -> AuthUser {
        AuthUser {
            user_id: UserId(Uuid::from_u128(1)),
            tenant_id: TenantId(Uuid::from_u128(2)),
            role: Role::MspAdmin,
            practice_id: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_to_the_same_user() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 60);
        let (token, _) = keys.issue(&user(), Utc::now()).expect("issue");
        assert_eq!(keys.verify(&token), Ok(user()));
    }

    #[test]
    fn an_expired_token_is_reported_as_expired() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 1);
        let (token, _) = keys
            .issue(&user(), Utc::now() - Duration::hours(1))
            .expect("issue");
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 60);
        let other = TokenKeys::new(b"fedcba9876543210fedcba9876543210", 60);
        let (token, _) = other.issue(&user(), Utc::now()).expect("issue");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("wrong horse", Some(&hash)));
        assert!(!verify_password("correct horse", None));
    }

    #[test]
    fn digests_compare_by_content() {
        assert!(digests_equal(&secret_digest("a"), &secret_digest("a")));
        assert!(!digests_equal(&secret_digest("a"), &secret_digest("b")));
        assert!(!digests_equal(b"ab", b"abc"));
    }
}
