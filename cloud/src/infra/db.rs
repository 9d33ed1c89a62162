//! The PostgreSQL pool, the migrations embedded in the binary, and the one way the application
//! reaches tenant data: a transaction with the tenant set ([`tenant_tx`]).
//!
//! Design: tenancy is enforced by PostgreSQL, not by remembering a `WHERE tenant_id = …`. The
//! application connects as `stayopen_app`, which owns nothing and cannot bypass row-level security;
//! every tenant-owned table has a policy that compares `tenant_id` with the transaction's
//! `app.tenant_id`. Queries outside [`tenant_tx`] therefore see no tenant rows at all. The few
//! lookups that must cross tenants before the tenant is known are the `stayopen_*` SECURITY DEFINER
//! functions wrapped in [`lookup`], which return ids only.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use stayopen_shared::TenantId;

use crate::infra::config::DatabaseConfig;

/// The root `migrations/` folder, compiled in so the binary migrates without the source tree.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The role the migrations grant data privileges to and the application must connect as.
pub const APP_ROLE: &str = "stayopen_app";

pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("checking the database role: {0}")]
    RoleCheck(#[source] sqlx::Error),
    #[error(
        "database.url connects as {role:?}, which {why}; row-level security would not isolate tenants. \
         Connect as {APP_ROLE} (database.url) and give the owner's URL as database.owner_url for migrations"
    )]
    PrivilegedRole { role: String, why: &'static str },
}

/// The application's pool (`database.url`, the non-owner role).
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    connect_url(config.url.expose_secret(), config.max_connections).await
}

async fn connect_url(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(DbError::Connect)
}

/// Applies the migrations as the schema owner (`database.owner_url`, or `database.url` when no
/// owner URL is configured, which then has to be the owner).
pub async fn migrate(config: &DatabaseConfig) -> Result<(), DbError> {
    let owner_url = config.owner_url.as_ref().unwrap_or(&config.url);
    let owner = connect_url(owner_url.expose_secret(), 1).await?;
    MIGRATOR.run(&owner).await?;
    owner.close().await;
    Ok(())
}

/// Refuses a connection role for which row-level security does not apply.
pub async fn ensure_unprivileged(pool: &PgPool) -> Result<(), DbError> {
    let (role, superuser, bypass, owns): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper, r.rolbypassrls,
                EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user)
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .map_err(DbError::RoleCheck)?;
    let why = if superuser {
        "is a superuser"
    } else if bypass {
        "has BYPASSRLS"
    } else if owns {
        "owns the tables"
    } else {
        return Ok(());
    };
    Err(DbError::PrivilegedRole { role, why })
}

/// Whether the database answers a trivial query (readiness).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .is_ok()
}

/// Begins a transaction that sees exactly one tenant's rows.
pub async fn tenant_tx(pool: &PgPool, tenant: TenantId) -> Result<Tx, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Creates this month's and next month's telemetry partitions if they are missing (the cloud calls
/// it at start and daily). Rows never wait for a partition: the default one takes strays.
pub async fn ensure_telemetry_partitions(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT stayopen_ensure_telemetry_partition((date_trunc('month', now()) + m * interval '1 month')::date)
         FROM generate_series(0, 1) AS m",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Adds the telemetry that arrived since the last run (up to a minute ago) to the hourly roll-up
/// month charts read. Returns the hourly rows touched.
pub async fn roll_up_telemetry(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT stayopen_roll_up_telemetry()")
        .fetch_one(pool)
        .await
}

/// Cross-tenant lookups that return only ids: what is needed to open a [`tenant_tx`].
pub mod lookup {
    use sqlx::PgPool;
    use stayopen_shared::{ApplianceId, TenantId, UserId};
    use uuid::Uuid;

    pub async fn user_by_email(
        pool: &PgPool,
        email: &str,
    ) -> Result<Option<(UserId, TenantId)>, sqlx::Error> {
        let row: Option<(Uuid, Uuid)> =
            sqlx::query_as("SELECT user_id, tenant_id FROM stayopen_user_by_email($1)")
                .bind(email)
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(u, t)| (UserId(u), TenantId(t))))
    }

    async fn tenant_of(
        pool: &PgPool,
        sql: &'static str,
        bind: impl for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        let tenant: Option<Uuid> = sqlx::query_scalar(sql).bind(bind).fetch_one(pool).await?;
        Ok(tenant.map(TenantId))
    }

    pub async fn appliance_tenant(
        pool: &PgPool,
        appliance: ApplianceId,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        tenant_of(
            pool,
            "SELECT stayopen_appliance_tenant($1)",
            appliance.as_uuid(),
        )
        .await
    }

    /// Appliances' tenants already looked up. An appliance never changes tenant and its id is
    /// never reused, so an entry stays true for the life of the process (at worst it names a
    /// deleted appliance, which the caller's own check under its tenant then finds missing).
    /// Ingest asks for every message's tenant; at 20,000 messages a second this saves a round trip
    /// per batch and a few percent of PostgreSQL's time. Bounded: emptied past `TENANT_CACHE_MAX`.
    static KNOWN_TENANTS: std::sync::LazyLock<
        std::sync::RwLock<std::collections::HashMap<ApplianceId, TenantId>>,
    > = std::sync::LazyLock::new(Default::default);
    const TENANT_CACHE_MAX: usize = 1_000_000;

    /// The tenants of several appliances (ingest's batches): from [`KNOWN_TENANTS`], and the
    /// others in one round trip; an unknown appliance is absent from the map. The caller checks
    /// each appliance again inside its tenant's transaction, where row-level security holds, so a
    /// tenant named here is only where to look, never a grant.
    pub async fn appliance_tenants(
        pool: &PgPool,
        appliances: &[ApplianceId],
    ) -> Result<std::collections::HashMap<ApplianceId, TenantId>, sqlx::Error> {
        let mut found = std::collections::HashMap::with_capacity(appliances.len());
        let mut missing: Vec<Uuid> = Vec::new();
        {
            let known = KNOWN_TENANTS.read().unwrap_or_else(|e| e.into_inner());
            for appliance in appliances {
                match known.get(appliance) {
                    Some(tenant) => {
                        found.insert(*appliance, *tenant);
                    }
                    None => missing.push(appliance.0),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let rows: Vec<(Uuid, Uuid)> =
            sqlx::query_as("SELECT appliance_id, tenant_id FROM stayopen_appliance_tenants($1)")
                .bind(&missing)
                .fetch_all(pool)
                .await?;
        let mut known = KNOWN_TENANTS.write().unwrap_or_else(|e| e.into_inner());
        if known.len() + rows.len() > TENANT_CACHE_MAX {
            known.clear();
        }
        for (appliance, tenant) in rows {
            let (appliance, tenant) = (ApplianceId(appliance), TenantId(tenant));
            known.insert(appliance, tenant);
            found.insert(appliance, tenant);
        }
        Ok(found)
    }

    pub async fn hardware_tenant(
        pool: &PgPool,
        serial: &str,
        mac: &str,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        let tenant: Option<Uuid> = sqlx::query_scalar("SELECT stayopen_hardware_tenant($1, $2)")
            .bind(serial)
            .bind(mac)
            .fetch_one(pool)
            .await?;
        Ok(tenant.map(TenantId))
    }

    pub async fn enrollment_token_tenant(
        pool: &PgPool,
        token_hash: Vec<u8>,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        tenant_of(
            pool,
            "SELECT stayopen_enrollment_token_tenant($1)",
            token_hash,
        )
        .await
    }

    pub async fn claimed_serial_tenant(
        pool: &PgPool,
        serial: &str,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        let tenant: Option<Uuid> = sqlx::query_scalar("SELECT stayopen_claimed_serial_tenant($1)")
            .bind(serial)
            .fetch_one(pool)
            .await?;
        Ok(tenant.map(TenantId))
    }

    pub async fn refresh_token_tenant(
        pool: &PgPool,
        token_hash: Vec<u8>,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        tenant_of(pool, "SELECT stayopen_refresh_token_tenant($1)", token_hash).await
    }

    pub async fn api_token_tenant(
        pool: &PgPool,
        token_hash: Vec<u8>,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        tenant_of(pool, "SELECT stayopen_api_token_tenant($1)", token_hash).await
    }

    /// Serials and revocation times of revoked, unexpired device certificates (all tenants).
    pub async fn revoked_certificates(
        pool: &PgPool,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
        sqlx::query_as("SELECT cert_serial, revoked_at FROM stayopen_revoked_certificates()")
            .fetch_all(pool)
            .await
    }

    pub async fn tenant_ids(pool: &PgPool) -> Result<Vec<TenantId>, sqlx::Error> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenant_ids()")
            .fetch_all(pool)
            .await?;
        Ok(ids.into_iter().map(TenantId).collect())
    }

    pub async fn tenant_name_taken(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT stayopen_tenant_name_taken($1)")
            .bind(name)
            .fetch_one(pool)
            .await
    }
}
