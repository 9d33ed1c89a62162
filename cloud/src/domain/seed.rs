//! The demo tenant the Quick start shows: one MSP, two practices, an administrator, and an
//! enrolment token per practice for the simulated fleet; then ([`seed_demo_compliance`]) each
//! practice's clinic hours, critical applications register and a drill schedule whose window is
//! open for the hour after seeding, so the demo fleet drills as soon as it enrols. Safe to run
//! repeatedly.

use chrono::{DateTime, Utc};
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
    #[error("the demo practice's policy does not combine: {0}")]
    Policy(String),
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
         ON CONFLICT (tenant_id, email) DO UPDATE SET password_hash = EXCLUDED.password_hash RETURNING id",
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

/// The demo register: (name, tier, endpoints, owner, note).
fn demo_register() -> Vec<(
    &'static str,
    &'static str,
    serde_json::Value,
    &'static str,
    &'static str,
)> {
    use serde_json::json;
    vec![
        (
            "EHR",
            "tier1",
            json!([{"kind": "https", "url": "https://ehr.example.com/health"}]),
            "Dr. Jane Rivera (medical director)",
            "Charts, orders and scheduling; downtime forms in the front desk binder.",
        ),
        (
            "e-Prescribing",
            "tier1",
            json!([{"kind": "https", "url": "https://erx.example.com/status"}]),
            "Office manager",
            "Controlled substances need it; paper prescriptions are the fallback.",
        ),
        (
            "Lab interface",
            "tier2",
            json!([{"kind": "tcp", "host": "lab.example.com", "port": 2575}]),
            "Lab liaison",
            "HL7 results from the reference lab; results queue at the lab while down.",
        ),
        (
            "Telemedicine",
            "tier2",
            json!([{"kind": "https", "url": "https://telehealth.example.com/"}]),
            "Nurse lead",
            "Video visits; phone visits are the fallback.",
        ),
        (
            "Patient portal",
            "tier3",
            json!([{"kind": "dns", "name": "portal.example.com"}]),
            "Front desk",
            "Messages and bill pay can wait until the line is back.",
        ),
    ]
}

/// Gives each demo practice clinic hours (when it has none), the demo critical applications
/// register and a practice-layer drill schedule: daily, in the hour starting at `now` in the
/// practice's zone, so the simulated fleet drills right after it enrols. Audited as the seed.
pub async fn seed_demo_compliance(
    pool: &PgPool,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<(), SeedError> {
    let actor = Actor::System("seed-demo");
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let practices: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, time_zone FROM practices WHERE name = ANY($1) ORDER BY name")
            .bind(DEMO_PRACTICES.map(str::to_owned).to_vec())
            .fetch_all(&mut *tx)
            .await?;
    let zones = ["America/Chicago", "America/New_York"];
    for (i, (practice, zone)) in practices.into_iter().enumerate() {
        let zone = if zone == "UTC" {
            zones[i % zones.len()].to_owned()
        } else {
            zone
        };
        let weekday = || serde_json::json!([{"open": "08:00", "close": "18:00"}]);
        let hours = serde_json::json!({
            "mon": weekday(), "tue": weekday(), "wed": weekday(), "thu": weekday(), "fri": weekday(),
            "sat": [{"open": "09:00", "close": "12:00"}],
        });
        sqlx::query(
            "UPDATE practices SET time_zone = $2, clinic_hours = coalesce(clinic_hours, $3)
             WHERE id = $1",
        )
        .bind(practice)
        .bind(&zone)
        .bind(&hours)
        .execute(&mut *tx)
        .await?;
        for (name, tier, endpoints, owner, note) in demo_register() {
            let id = Uuid::new_v4();
            let added = sqlx::query(
                "INSERT INTO critical_apps (id, tenant_id, practice_id, name, tier, endpoints, owner, note, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (practice_id, lower(name)) DO NOTHING",
            )
            .bind(id)
            .bind(tenant.as_uuid())
            .bind(practice)
            .bind(name)
            .bind(tier)
            .bind(&endpoints)
            .bind(owner)
            .bind(note)
            .bind(actor.label())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if added == 1 {
                audit::record(
                    &mut tx,
                    tenant,
                    &actor,
                    Change {
                        action: "critical_app.create",
                        target_type: "critical_app",
                        target_id: id.to_string(),
                        before: None,
                        after: Some(serde_json::json!({
                            "practice_id": practice, "name": name, "tier": tier,
                            "endpoints": endpoints, "owner": owner, "note": note,
                        })),
                    },
                )
                .await?;
            }
        }
        let at = jiff::tz::TimeZone::get(&zone)
            .ok()
            .and_then(|tz| {
                let local = jiff::Timestamp::from_second(now.timestamp())
                    .ok()?
                    .to_zoned(tz);
                Some(format!("{:02}:{:02}", local.hour(), local.minute()))
            })
            .unwrap_or_else(|| now.format("%H:%M").to_string());
        let schedule = serde_json::json!({
            "drill_schedule": {
                "every_days": 1,
                "window": {"kind": "local_time", "at": at},
                "duration_secs": 60,
            }
        });
        sqlx::query(
            "INSERT INTO policies (tenant_id, scope, scope_id, overrides, updated_by)
             VALUES ($1, 'practice', $2, $3, $4)
             ON CONFLICT (tenant_id, scope, scope_id) DO UPDATE
             SET overrides = policies.overrides || EXCLUDED.overrides,
                 revision = policies.revision + 1, updated_by = EXCLUDED.updated_by,
                 updated_at = now()",
        )
        .bind(tenant.as_uuid())
        .bind(practice)
        .bind(&schedule)
        .bind(actor.label())
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            tenant,
            &actor,
            Change {
                action: "policy.update",
                target_type: "practice",
                target_id: practice.to_string(),
                before: None,
                after: Some(serde_json::json!({ "practice_id": practice, "overrides": schedule })),
            },
        )
        .await?;
        let appliances: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM appliances WHERE practice_id = $1 AND revoked_at IS NULL",
        )
        .bind(practice)
        .fetch_all(&mut *tx)
        .await?;
        crate::domain::policy::refresh(&mut tx, tenant, &appliances)
            .await
            .map_err(|e| match e {
                crate::domain::policy::DesiredError::Database(e) => SeedError::Database(e),
                other => SeedError::Policy(other.to_string()),
            })?;
    }
    tx.commit().await?;
    Ok(())
}
