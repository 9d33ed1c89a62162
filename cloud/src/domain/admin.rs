//! Operator commands (`stayopen-cloud admin …`) that act on the database directly.

use sqlx::PgPool;
use stayopen_shared::TenantId;
use uuid::Uuid;

use crate::domain::access::{check_password_strength, hash_password};
use crate::domain::audit::{self, Actor, Change};
use crate::infra::db::{self, lookup};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("an MSP named {0:?} already exists")]
    DuplicateMsp(String),
    #[error("a user with e-mail {0} already exists")]
    DuplicateEmail(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// Creates an MSP and its first administrator, audited in the same transaction.
pub async fn create_msp(
    pool: &PgPool,
    name: &str,
    admin_email: &str,
    password: &str,
) -> Result<TenantId, AdminError> {
    let name = name.trim();
    let email = admin_email.trim().to_lowercase();
    if name.is_empty() || name.len() > 200 {
        return Err(AdminError::Invalid(
            "the MSP name must be 1 to 200 characters".into(),
        ));
    }
    if !email.contains('@') || email.starts_with('@') || email.len() > 254 {
        return Err(AdminError::Invalid(format!(
            "{admin_email:?} is not an e-mail address"
        )));
    }
    check_password_strength(password).map_err(AdminError::Invalid)?;
    let hash = hash_password(password).map_err(|e| AdminError::Hash(e.to_string()))?;
    if lookup::tenant_name_taken(pool, name).await? {
        return Err(AdminError::DuplicateMsp(name.to_owned()));
    }
    let tenant = Uuid::new_v4();
    let mut tx = db::tenant_tx(pool, TenantId(tenant)).await?;
    // The unique index on lower(name) settles a race between two creators.
    let created =
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    if created.rows_affected() == 0 {
        return Err(AdminError::DuplicateMsp(name.to_owned()));
    }
    let user = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO users (id, tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4, 'msp_admin')
         ON CONFLICT (tenant_id, email) DO NOTHING",
    )
    .bind(user)
    .bind(tenant)
    .bind(&email)
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(AdminError::DuplicateEmail(email));
    }
    let tenant_id = TenantId(tenant);
    let actor = Actor::System("admin create-msp");
    audit::record(
        &mut tx,
        tenant_id,
        &actor,
        Change {
            action: "msp.create",
            target_type: "msp",
            target_id: tenant.to_string(),
            before: None,
            after: Some(serde_json::json!({ "name": name })),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        tenant_id,
        &actor,
        Change {
            action: "user.create",
            target_type: "user",
            target_id: user.to_string(),
            before: None,
            after: Some(serde_json::json!({ "email": email, "role": "msp_admin" })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(tenant_id)
}
