//! Passwords, access tokens, API tokens, device secrets, and the extractor that turns a bearer
//! token into an authenticated caller scoped to one tenant.
//!
//! - [`sessions`]: signing in, refresh-token rotation, signing out, TOTP enrolment, and the
//!   per-request check of a signed-in user; [`api_tokens`]: tokens for MSP automation.
//! - [`users`]: user management and the MSP's security settings.
//! - [`visibility`]: what a caller may see; [`throttle`]: sign-in throttling; [`totp`]: the
//!   second factor.

pub mod api_tokens;
pub mod sessions;
pub mod signing_key;
pub mod stream_tickets;
pub mod throttle;
pub mod totp;
pub mod users;
pub mod visibility;

use std::collections::HashMap;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stayopen_shared::api::{ApiTokenScope, Role};
use stayopen_shared::{PracticeId, TenantId, UserId};
use uuid::Uuid;

use crate::domain::audit::Actor;
use crate::infra::db;

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

/// The rules every password set through the API or the admin command follows.
pub fn check_password_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < 12 {
        return Err("the password must have at least 12 characters".into());
    }
    if password.len() > 1024 {
        return Err("the password must have at most 1024 bytes".into());
    }
    Ok(())
}

/// 256 random bits, hex-encoded: enrolment, refresh and API tokens, MQTT passwords.
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
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// API tokens start with this, so the extractor knows to look them up instead of verifying a JWT
/// (and secret scanners can recognise a leaked one).
pub const API_TOKEN_PREFIX: &str = "sot_";

/// Refresh tokens start with this, so a leaked one is recognisable (the log check of the test run
/// looks for it).
pub const REFRESH_TOKEN_PREFIX: &str = "sor_";

/// Who issues access tokens (`iss`) and whom they are for (`aud`), unless configured otherwise.
/// A token with another issuer or audience — signed by the same key for another purpose or
/// another deployment sharing it — is refused.
pub const DEFAULT_TOKEN_ISSUER: &str = "stayopen-cloud";
pub const DEFAULT_TOKEN_AUDIENCE: &str = "stayopen-api";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    tid: TenantId,
    role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pids: Vec<PracticeId>,
    /// Set when the MSP requires TOTP and this admin has not enrolled yet: the token only reaches
    /// the TOTP enrolment endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    totp_enrolment_only: bool,
    /// The sign-in (refresh-token family) this token belongs to: signing out ends what was opened
    /// with it, such as a live-update stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks access tokens (HS256). The current key signs; previous keys still verify, so a
/// key can be rotated without signing anyone out. Each token carries its key id (`kid`).
#[derive(Clone)]
pub struct TokenKeys {
    current_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    ttl: Duration,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("current_kid", &self.current_kid)
            .field("keys", &self.decoding.len())
            .field("ttl", &self.ttl)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// A key id that names a secret without revealing it.
fn key_id(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..6])
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_minutes: u32) -> Self {
        Self::with_previous(secret, &[], ttl_minutes)
    }

    pub fn with_previous(secret: &[u8], previous: &[&[u8]], ttl_minutes: u32) -> Self {
        let current_kid = key_id(secret);
        let decoding = std::iter::once(secret)
            .chain(previous.iter().copied())
            .map(|s| (key_id(s), DecodingKey::from_secret(s)))
            .collect();
        Self {
            current_kid,
            encoding: EncodingKey::from_secret(secret),
            decoding,
            ttl: Duration::minutes(i64::from(ttl_minutes)),
            issuer: DEFAULT_TOKEN_ISSUER.to_owned(),
            audience: DEFAULT_TOKEN_AUDIENCE.to_owned(),
        }
    }

    /// The `iss` these keys put into tokens and require of them, and the `aud`.
    pub fn for_audience(mut self, issuer: &str, audience: &str) -> Self {
        issuer.clone_into(&mut self.issuer);
        audience.clone_into(&mut self.audience);
        self
    }

    /// An access token for `user`, not tied to a sign-in (tests, tools).
    pub fn issue(
        &self,
        user: &AuthUser,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        self.issue_for_session(user, None, now)
    }

    /// An access token for `user` of the sign-in `session` (its refresh-token family).
    pub fn issue_for_session(
        &self,
        user: &AuthUser,
        session: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let expires_at = now + self.ttl;
        let Principal::User(sub) = user.principal else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidSubject.into());
        };
        let claims = Claims {
            sub,
            tid: user.tenant_id,
            role: user.role,
            pids: user.practices.clone(),
            totp_enrolment_only: user.totp_enrolment_only,
            sid: session,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok((token, expires_at))
    }

    pub fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        self.verify_session(token).map(|(user, _)| user)
    }

    /// Verifies `token` and also returns the sign-in it belongs to, when it names one.
    pub fn verify_session(&self, token: &str) -> Result<(AuthUser, Option<Uuid>), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        let claims = data.claims;
        let user = AuthUser {
            principal: Principal::User(claims.sub),
            tenant_id: claims.tid,
            role: claims.role,
            practices: claims.pids,
            api_scope: None,
            totp_enrolment_only: claims.totp_enrolment_only,
        };
        Ok((user, claims.sid))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

/// Who is calling: a signed-in user or an MSP's API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    User(UserId),
    ApiToken(Uuid),
}

/// What a request needs to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Fleet, appliances, telemetry, events, policies (read).
    View,
    /// Commands and drills on appliances.
    Operate,
    /// Policies, enrolment tokens, claimed serials, practices and sites.
    Configure,
    /// Users, API tokens and the MSP's security settings.
    ManageAccess,
    /// The MSP's audit log.
    ViewAudit,
    /// Letting known hardware enrol again and restoring revoked appliances: who may hand an
    /// appliance's identity to a box. MSP admins, signed in (no API token).
    TrustDevices,
    /// The critical applications register: MSP admins and technicians, and compliance officers
    /// on their own practices (confined by [`AuthUser::practice_filter`]).
    ManageCompliance,
    /// Signing off a drill as reviewed by management: MSP admins and compliance officers.
    SignOffDrills,
}

impl Permission {
    fn denied_message(self) -> &'static str {
        match self {
            Permission::View => "you may not view this",
            Permission::Operate => "operating appliances needs an MSP admin or technician",
            Permission::Configure => "changing configuration needs an MSP admin or technician",
            Permission::ManageAccess => {
                "managing users, API tokens and security settings needs an MSP admin"
            }
            Permission::ViewAudit => "the audit log is for MSP admins",
            Permission::TrustDevices => {
                "approving re-enrolment and restoring appliances needs a signed-in MSP admin"
            }
            Permission::ManageCompliance => {
                "editing the critical applications register needs an MSP admin, a technician or the practice's compliance officer"
            }
            Permission::SignOffDrills => {
                "signing off a drill needs the practice's compliance officer or an MSP admin"
            }
        }
    }
}

/// Why access was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The caller is known but their role or token scope does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The thing does not exist or the caller may not see it (the two are not told apart).
    #[error("{0}")]
    NotFound(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The caller of an API request, proven by its bearer token. Handlers never take a tenant from the
/// request: [`AuthUser::tx`] opens a transaction that row-level security confines to this tenant,
/// and [`AuthUser::practice_filter`] narrows practice-scoped roles further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub principal: Principal,
    pub tenant_id: TenantId,
    pub role: Role,
    /// The practices a compliance officer or auditor is assigned; empty for MSP-wide roles.
    pub practices: Vec<PracticeId>,
    /// Set for API tokens: what the token was created for.
    pub api_scope: Option<ApiTokenScope>,
    pub totp_enrolment_only: bool,
}

impl AuthUser {
    pub fn allows(&self, permission: Permission) -> bool {
        let by_role = match permission {
            Permission::View => true,
            Permission::Operate | Permission::Configure => self.role.is_msp_wide(),
            Permission::ManageAccess | Permission::ViewAudit | Permission::TrustDevices => {
                self.role == Role::MspAdmin
            }
            Permission::ManageCompliance => self.role != Role::Auditor,
            Permission::SignOffDrills => {
                matches!(self.role, Role::MspAdmin | Role::ComplianceOfficer)
            }
        };
        let by_scope = match (self.api_scope, permission) {
            (None, _) => true,
            (
                Some(_),
                Permission::ManageAccess | Permission::TrustDevices | Permission::SignOffDrills,
            ) => false,
            (
                Some(ApiTokenScope::Read),
                Permission::Operate | Permission::Configure | Permission::ManageCompliance,
            ) => false,
            (Some(_), _) => true,
        };
        by_role && by_scope
    }

    pub fn require(&self, permission: Permission) -> Result<(), AccessError> {
        if self.allows(permission) {
            Ok(())
        } else {
            Err(AccessError::Forbidden(permission.denied_message()))
        }
    }

    /// `None` for MSP-wide callers; otherwise the practices they may see. Bind as `$n::uuid[]` and
    /// filter with `($n IS NULL OR practice_id = ANY($n))`.
    pub fn practice_filter(&self) -> Option<Vec<Uuid>> {
        if self.role.is_msp_wide() {
            None
        } else {
            Some(self.practices.iter().map(|p| p.0).collect())
        }
    }

    pub fn may_see_practice(&self, practice: PracticeId) -> bool {
        self.role.is_msp_wide() || self.practices.contains(&practice)
    }

    pub fn actor(&self) -> Actor {
        match self.principal {
            Principal::User(id) => Actor::User(id.0),
            Principal::ApiToken(id) => Actor::ApiToken(id),
        }
    }

    /// The signed-in user, for endpoints about one's own account.
    pub fn user_id(&self) -> Result<UserId, AccessError> {
        match self.principal {
            Principal::User(id) => Ok(id),
            Principal::ApiToken(_) => Err(AccessError::Forbidden(
                "this endpoint is for signed-in users, not API tokens",
            )),
        }
    }

    /// A transaction that sees only this caller's tenant.
    pub async fn tx(&self, pool: &sqlx::PgPool) -> Result<db::Tx, sqlx::Error> {
        db::tenant_tx(pool, self.tenant_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> AuthUser {
        AuthUser {
            principal: Principal::User(UserId(Uuid::from_u128(1))),
            tenant_id: TenantId(Uuid::from_u128(2)),
            role: Role::ComplianceOfficer,
            practices: vec![PracticeId(Uuid::from_u128(3))],
            api_scope: None,
            totp_enrolment_only: false,
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
    fn a_token_signed_with_a_previous_key_still_verifies_after_rotation() {
        let old = b"0123456789abcdef0123456789abcdef";
        let new = b"fedcba9876543210fedcba9876543210";
        let (token, _) = TokenKeys::new(old, 60)
            .issue(&user(), Utc::now())
            .expect("issue");
        let rotated = TokenKeys::with_previous(new, &[old], 60);
        assert_eq!(rotated.verify(&token), Ok(user()));
        let dropped = TokenKeys::new(new, 60);
        assert_eq!(dropped.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn roles_allow_what_their_description_says() {
        let mut caller = user();
        for (role, operate, manage) in [
            (Role::MspAdmin, true, true),
            (Role::MspTechnician, true, false),
            (Role::ComplianceOfficer, false, false),
            (Role::Auditor, false, false),
        ] {
            caller.role = role;
            assert!(caller.allows(Permission::View), "{role:?}");
            assert_eq!(caller.allows(Permission::Operate), operate, "{role:?}");
            assert_eq!(caller.allows(Permission::Configure), operate, "{role:?}");
            assert_eq!(caller.allows(Permission::ManageAccess), manage, "{role:?}");
            assert_eq!(caller.allows(Permission::TrustDevices), manage, "{role:?}");
        }
    }

    #[test]
    fn a_token_for_another_audience_or_issuer_is_refused_although_the_key_is_right() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = TokenKeys::new(secret, 60);
        let elsewhere = TokenKeys::new(secret, 60).for_audience(DEFAULT_TOKEN_ISSUER, "billing");
        let (token, _) = elsewhere.issue(&user(), Utc::now()).expect("issue");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
        let impostor =
            TokenKeys::new(secret, 60).for_audience("someone-else", DEFAULT_TOKEN_AUDIENCE);
        let (token, _) = impostor.issue(&user(), Utc::now()).expect("issue");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_without_audience_and_issuer_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = TokenKeys::new(secret, 60);
        let claims = serde_json::json!({
            "sub": Uuid::from_u128(1), "tid": Uuid::from_u128(2), "role": "msp_admin",
            "iat": Utc::now().timestamp(), "exp": Utc::now().timestamp() + 600,
        });
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key_id(secret));
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
            .expect("encode");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn the_sign_in_of_a_token_comes_back_from_verification() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 60);
        let session = Uuid::from_u128(77);
        let (token, _) = keys
            .issue_for_session(&user(), Some(session), Utc::now())
            .expect("issue");
        assert_eq!(keys.verify_session(&token), Ok((user(), Some(session))));
    }

    #[test]
    fn a_read_api_token_cannot_operate_and_no_api_token_manages_access() {
        let mut token = user();
        token.role = Role::MspTechnician;
        token.principal = Principal::ApiToken(Uuid::from_u128(9));
        token.api_scope = Some(ApiTokenScope::Read);
        assert!(token.allows(Permission::View));
        assert!(!token.allows(Permission::Operate));
        token.api_scope = Some(ApiTokenScope::Operate);
        assert!(token.allows(Permission::Operate));
        token.role = Role::MspAdmin;
        assert!(!token.allows(Permission::ManageAccess));
        assert!(!token.allows(Permission::TrustDevices));
    }

    #[test]
    fn practice_scoped_roles_see_only_their_practices() {
        let officer = user();
        assert!(officer.may_see_practice(PracticeId(Uuid::from_u128(3))));
        assert!(!officer.may_see_practice(PracticeId(Uuid::from_u128(4))));
        assert_eq!(officer.practice_filter(), Some(vec![Uuid::from_u128(3)]));
        let admin = AuthUser {
            role: Role::MspAdmin,
            practices: vec![],
            ..user()
        };
        assert_eq!(admin.practice_filter(), None);
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
