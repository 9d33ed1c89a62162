//! User management (MSP admins) and the MSP's security settings. Every change is audited with the
//! user as it was before and after, never with a password hash.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::{
    CreateUser, PracticeLabel, Role, SecuritySettings, UpdateUser, UserView,
};
use stayopen_shared::{PracticeId, UserId};
use uuid::Uuid;

use super::{AccessError, AuthUser, check_password_strength, hash_password};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("hashing the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("hashing the password: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    practice_ids: Vec<Uuid>,
    practice_names: Vec<String>,
    access_expires_at: Option<DateTime<Utc>>,
    totp_enabled: bool,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl UserRow {
    fn view(self) -> Result<UserView, UserError> {
        Ok(UserView {
            id: UserId(self.id),
            role: Role::parse(&self.role).ok_or_else(|| UserError::UnknownRole(self.role))?,
            email: self.email,
            display_name: self.display_name,
            practices: practice_labels(&self.practice_ids, self.practice_names),
            practice_ids: self.practice_ids.into_iter().map(PracticeId).collect(),
            access_expires_at: self.access_expires_at,
            totp_enabled: self.totp_enabled,
            disabled: self.disabled_at.is_some(),
            created_at: self.created_at,
        })
    }
}

/// The names come in the same order as the ids, so the two zip into labels.
fn practice_labels(ids: &[Uuid], names: Vec<String>) -> Vec<PracticeLabel> {
    let mut labels: Vec<PracticeLabel> = ids
        .iter()
        .zip(names)
        .map(|(id, name)| PracticeLabel {
            id: PracticeId(*id),
            name,
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.0.cmp(&b.id.0)));
    labels
}

const USER_SELECT: &str =
    "SELECT u.id, u.email, u.display_name, u.role, u.access_expires_at, u.totp_enabled,
        u.disabled_at, u.created_at,
        COALESCE(array_agg(up.practice_id ORDER BY up.practice_id)
                 FILTER (WHERE up.practice_id IS NOT NULL), '{}') AS practice_ids,
        COALESCE(array_agg(p.name ORDER BY up.practice_id)
                 FILTER (WHERE up.practice_id IS NOT NULL), '{}') AS practice_names
     FROM users u LEFT JOIN user_practices up ON up.user_id = u.id
          LEFT JOIN practices p ON p.id = up.practice_id";

async fn load_user(tx: &mut Tx, id: Uuid) -> Result<UserView, UserError> {
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{USER_SELECT} WHERE u.id = $1 GROUP BY u.id"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(UserError::NotFound("no such user"))?.view()
}

fn audit_json(user: &UserView) -> serde_json::Value {
    serde_json::json!({
        "email": user.email,
        "display_name": user.display_name,
        "role": user.role,
        "practice_ids": user.practice_ids,
        "access_expires_at": user.access_expires_at,
        "disabled": user.disabled,
        "totp_enabled": user.totp_enabled,
    })
}

/// Checks that a role, its practices and its expiry fit together, and that the practices exist in
/// this tenant (row-level security hides every other tenant's).
async fn check_assignment(
    tx: &mut Tx,
    role: Role,
    practices: &[PracticeId],
    access_expires_at: Option<DateTime<Utc>>,
) -> Result<(), UserError> {
    check_role_fits(role, practices, access_expires_at, Utc::now()).map_err(UserError::Invalid)?;
    let ids: Vec<Uuid> = practices.iter().map(|p| p.0).collect();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM practices WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&mut **tx)
        .await?;
    if found != ids.len() as i64 {
        return Err(UserError::NotFound("no such practice"));
    }
    Ok(())
}

/// The rules that tie a role to its practices and its expiry.
fn check_role_fits(
    role: Role,
    practices: &[PracticeId],
    access_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    match role {
        Role::MspAdmin | Role::MspTechnician if !practices.is_empty() => {
            return Err("MSP roles see every practice; practice_ids must be empty".into());
        }
        Role::ComplianceOfficer if practices.is_empty() => {
            return Err("a compliance officer needs at least one practice".into());
        }
        Role::Auditor if practices.len() != 1 => {
            return Err("an auditor is given exactly one practice".into());
        }
        _ => {}
    }
    match (role, access_expires_at) {
        (Role::Auditor, None) => Err("an auditor's access needs access_expires_at".into()),
        (Role::Auditor, Some(end)) if end <= now => {
            Err("access_expires_at must be in the future".into())
        }
        (Role::Auditor, Some(_)) | (_, None) => Ok(()),
        (_, Some(_)) => Err("only auditors' access expires; leave access_expires_at out".into()),
    }
}

async fn set_practices(
    tx: &mut Tx,
    auth: &AuthUser,
    user: Uuid,
    practices: &[PracticeId],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_practices WHERE user_id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    for practice in practices {
        sqlx::query(
            "INSERT INTO user_practices (tenant_id, user_id, practice_id) VALUES ($1, $2, $3)",
        )
        .bind(auth.tenant_id.as_uuid())
        .bind(user)
        .bind(practice.as_uuid())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn check_display_name(display_name: &str) -> Result<(), UserError> {
    if display_name.len() > 200 {
        return Err(UserError::Invalid(
            "display_name must be at most 200 characters".into(),
        ));
    }
    Ok(())
}

/// The MSP's users by e-mail, after `after`, optionally of one role; at most `limit`.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    after: Option<String>,
    role: Option<Role>,
    limit: i64,
) -> Result<Vec<UserView>, UserError> {
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{USER_SELECT} WHERE ($1::text IS NULL OR u.email > $1) AND ($2::text IS NULL OR u.role = $2)
         GROUP BY u.id ORDER BY u.email LIMIT $3"
    )))
    .bind(after)
    .bind(role.map(Role::as_str))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter().map(UserRow::view).collect()
}

/// Creates a user with a role (and practices, for compliance officers and auditors); audited. An
/// e-mail address is unique within the MSP only, so creating a user tells nothing about other
/// MSPs' users (sign-in finds the account whose password matches).
pub async fn create(
    pool: &PgPool,
    auth: &AuthUser,
    new: &CreateUser,
) -> Result<UserView, UserError> {
    let email = new.email.trim().to_lowercase();
    if !email.contains('@') || email.starts_with('@') || email.len() > 254 {
        return Err(UserError::Invalid(format!(
            "{:?} is not an e-mail address",
            new.email
        )));
    }
    check_display_name(&new.display_name)?;
    check_password_strength(&new.password).map_err(UserError::Invalid)?;
    let mut tx = auth.tx(pool).await?;
    check_assignment(&mut tx, new.role, &new.practice_ids, new.access_expires_at).await?;
    let password = new.password.clone();
    // Argon2 takes tens of milliseconds of CPU: off the async workers.
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await?
        .map_err(UserError::Hash)?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO users (id, tenant_id, email, display_name, password_hash, role, access_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, email) DO NOTHING",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(&email)
    .bind(new.display_name.trim())
    .bind(hash)
    .bind(new.role)
    .bind(new.access_expires_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(UserError::Conflict(format!(
            "a user with e-mail {email} already exists"
        )));
    }
    set_practices(&mut tx, auth, id, &new.practice_ids).await?;
    let user = load_user(&mut tx, id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "user.create",
            target_type: "user",
            target_id: id.to_string(),
            before: None,
            after: Some(audit_json(&user)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// One user of the caller's MSP.
pub async fn show(pool: &PgPool, auth: &AuthUser, id: UserId) -> Result<UserView, UserError> {
    let mut tx = auth.tx(pool).await?;
    load_user(&mut tx, id.0).await
}

/// Changes a user's name, role, practices, expiry or disabled state (audited). Disabling a user or
/// changing their role or practices ends their sessions. An admin cannot demote or disable
/// themselves, so an MSP is never locked out.
pub async fn update(
    pool: &PgPool,
    auth: &AuthUser,
    id: UserId,
    change: &UpdateUser,
) -> Result<UserView, UserError> {
    let mut tx = auth.tx(pool).await?;
    let before = load_user(&mut tx, id.0).await?;
    let is_self = auth.user_id().ok() == Some(id);
    if is_self && (change.role.is_some_and(|r| r != before.role) || change.disabled == Some(true)) {
        return Err(UserError::Invalid(
            "you cannot change your own role or disable yourself".into(),
        ));
    }
    let role = change.role.unwrap_or(before.role);
    let practices = change
        .practice_ids
        .clone()
        .unwrap_or_else(|| before.practice_ids.clone());
    let practices = if role.is_msp_wide() && change.practice_ids.is_none() {
        Vec::new()
    } else {
        practices
    };
    let expires = if role == Role::Auditor {
        change.access_expires_at.or(before.access_expires_at)
    } else {
        change.access_expires_at
    };
    check_assignment(&mut tx, role, &practices, expires).await?;
    let display_name = change
        .display_name
        .as_deref()
        .map(str::trim)
        .unwrap_or(&before.display_name);
    check_display_name(display_name)?;
    let disabled = change.disabled.unwrap_or(before.disabled);
    sqlx::query(
        "UPDATE users SET display_name = $2, role = $3, access_expires_at = $4,
                disabled_at = CASE WHEN $5 THEN coalesce(disabled_at, now()) ELSE NULL END
         WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(display_name)
    .bind(role)
    .bind(expires)
    .bind(disabled)
    .execute(&mut *tx)
    .await?;
    set_practices(&mut tx, auth, id.0, &practices).await?;
    if disabled || role != before.role || practices != before.practice_ids {
        // Sessions carry the role and practices; make the user sign in again to pick them up.
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    }
    let after = load_user(&mut tx, id.0).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "user.update",
            target_type: "user",
            target_id: id.to_string(),
            before: Some(audit_json(&before)),
            after: Some(audit_json(&after)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes a user, which ends their sessions (audited). Nobody deletes themselves.
pub async fn remove(pool: &PgPool, auth: &AuthUser, id: UserId) -> Result<(), UserError> {
    if auth.user_id().ok() == Some(id) {
        return Err(UserError::Invalid("you cannot delete yourself".into()));
    }
    let mut tx = auth.tx(pool).await?;
    let before = load_user(&mut tx, id.0).await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "user.delete",
            target_type: "user",
            target_id: id.to_string(),
            before: Some(audit_json(&before)),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The MSP's security settings.
pub async fn security_settings(
    pool: &PgPool,
    auth: &AuthUser,
) -> Result<SecuritySettings, UserError> {
    let mut tx = auth.tx(pool).await?;
    let require_totp_for_admins = require_totp_for_admins(&mut tx, auth).await?;
    Ok(SecuritySettings {
        require_totp_for_admins,
    })
}

async fn require_totp_for_admins(tx: &mut Tx, auth: &AuthUser) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT require_totp_for_admins FROM tenants WHERE id = $1")
        .bind(auth.tenant_id.as_uuid())
        .fetch_one(&mut **tx)
        .await
}

/// Changes the MSP's security settings (audited).
pub async fn update_security_settings(
    pool: &PgPool,
    auth: &AuthUser,
    settings: SecuritySettings,
) -> Result<SecuritySettings, UserError> {
    let mut tx = auth.tx(pool).await?;
    let before = require_totp_for_admins(&mut tx, auth).await?;
    sqlx::query("UPDATE tenants SET require_totp_for_admins = $2 WHERE id = $1")
        .bind(auth.tenant_id.as_uuid())
        .bind(settings.require_totp_for_admins)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "settings.security.update",
            target_type: "msp",
            target_id: auth.tenant_id.to_string(),
            before: Some(serde_json::json!({ "require_totp_for_admins": before })),
            after: Some(
                serde_json::json!({ "require_totp_for_admins": settings.require_totp_for_admins }),
            ),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn practice(n: u128) -> PracticeId {
        PracticeId(Uuid::from_u128(n))
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn msp_roles_take_no_practices_and_never_expire() {
        for role in [Role::MspAdmin, Role::MspTechnician] {
            assert!(check_role_fits(role, &[], None, at(0)).is_ok());
            assert!(check_role_fits(role, &[practice(1)], None, at(0)).is_err());
            assert!(check_role_fits(role, &[], Some(at(10)), at(0)).is_err());
        }
    }

    #[test]
    fn an_auditor_has_exactly_one_practice_and_access_that_ends_in_the_future() {
        let one = [practice(1)];
        assert!(check_role_fits(Role::Auditor, &one, Some(at(10)), at(0)).is_ok());
        assert!(check_role_fits(Role::Auditor, &one, None, at(0)).is_err());
        assert!(check_role_fits(Role::Auditor, &one, Some(at(0)), at(0)).is_err());
        let two = [practice(1), practice(2)];
        assert!(check_role_fits(Role::Auditor, &two, Some(at(10)), at(0)).is_err());
    }

    #[test]
    fn a_compliance_officer_needs_a_practice() {
        assert!(check_role_fits(Role::ComplianceOfficer, &[], None, at(0)).is_err());
        assert!(check_role_fits(Role::ComplianceOfficer, &[practice(1)], None, at(0)).is_ok());
    }
}
