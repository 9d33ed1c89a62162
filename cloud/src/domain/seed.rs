//! The demo tenant the Quick start shows: one MSP, two practices, an administrator, and an
//! enrolment token per practice for the simulated fleet. Safe to run repeatedly.

use serde::Serialize;
use sqlx::PgPool;
use stayopen_shared::api::Role;
use stayopen_shared::{PracticeId, TenantId, UserId};
use uuid::Uuid;

use crate::domain::access::{AuthUser, Principal, hash_password};
use crate::domain::audit::{self, Actor, Change};
use crate::domain::enrolment::tokens::{self, EnrolmentTokenError, TokenRequest};
use crate::infra::db::{self, lookup};

pub const DEMO_TENANT: &str = "Lakeside IT Partners";
pub const DEMO_EMAIL: &str = "admin@lakeside-it.example";
pub const DEMO_PASSWORD: &str = "stayopen-demo";
pub const DEMO_PRACTICES: [&str; 2] = ["Riverside Family Medicine", "Hillcrest Pediatrics"];

#[derive(Debug, Serialize)]
pub struct DemoSeed {
    pub tenant_id: TenantId,
    pub email: String,
    pub password: String,
    pub practices: Vec<DemoPractice>,
}

#[derive(Debug, Serialize)]
pub struct DemoPractice {
    pub id: PracticeId,
    pub name: String,
    pub enrollment_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("hashing the demo password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("issuing an enrolment token: {0}")]
    EnrolmentToken(#[from] EnrolmentTokenError),
}

pub async fn seed_demo(pool: &PgPool) -> Result<DemoSeed, SeedError> {
    // The demo MSP is found through its admin's e-mail (the one cross-tenant lookup by name the
    // application has), so running the seed again reuses it.
    let existing = lookup::user_by_email(pool, DEMO_EMAIL).await?;
    let tenant = existing.map_or_else(Uuid::new_v4, |(_, tenant)| tenant.0);
    let mut tx = db::tenant_tx(pool, TenantId(tenant)).await?;
    let tenant: Uuid = match sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
    {
        Some(id) => id,
        None => {
            let id = tenant;
            sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
                .bind(id)
                .bind(DEMO_TENANT)
                .execute(&mut *tx)
                .await?;
            audit::record(
                &mut tx,
                TenantId(id),
                &Actor::System("seed-demo"),
                Change {
                    action: "msp.create",
                    target_type: "msp",
                    target_id: id.to_string(),
                    before: None,
                    after: Some(serde_json::json!({ "name": DEMO_TENANT })),
                },
            )
            .await?;
            id
        }
    };
    let password_hash = hash_password(DEMO_PASSWORD).map_err(SeedError::Hash)?;
    let user: Uuid = sqlx::query_scalar(
        "INSERT INTO users (id, tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4, 'msp_admin')
         ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(DEMO_EMAIL)
    .bind(password_hash)
    .fetch_one(&mut *tx)
    .await?;
    let mut practice_ids = Vec::new();
    for name in DEMO_PRACTICES {
        let practice: Uuid = sqlx::query_scalar(
            "INSERT INTO practices (id, tenant_id, name) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .bind(Uuid::new_v4())
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sites (id, tenant_id, practice_id, name) VALUES ($1, $2, $3, 'Main office')
             ON CONFLICT (practice_id, name) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(tenant)
        .bind(practice)
        .execute(&mut *tx)
        .await?;
        practice_ids.push((practice, name));
    }
    let admin = AuthUser {
        principal: Principal::User(UserId(user)),
        tenant_id: TenantId(tenant),
        role: Role::MspAdmin,
        practices: Vec::new(),
        api_scope: None,
        totp_enrolment_only: false,
    };
    let mut practices = Vec::new();
    for (id, name) in practice_ids {
        let request = TokenRequest {
            practice: PracticeId(id),
            site: None,
            expires_in_hours: 24,
            max_uses: 100,
        };
        let token = tokens::issue(&mut tx, &admin, request).await?;
        practices.push(DemoPractice {
            id: PracticeId(id),
            name: name.to_owned(),
            enrollment_token: token.token,
        });
    }
    tx.commit().await?;
    Ok(DemoSeed {
        tenant_id: TenantId(tenant),
        email: DEMO_EMAIL.to_owned(),
        password: DEMO_PASSWORD.to_owned(),
        practices,
    })
}
