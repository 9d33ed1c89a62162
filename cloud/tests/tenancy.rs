//! Tenancy is enforced by PostgreSQL itself: the application's own role sees nothing without a
//! tenant set, only its tenant with one, cannot write rows into another tenant, cannot rewrite the
//! audit log, and the cloud refuses to run as a role that would bypass all of this.

mod common;

use common::spawn_cloud;
use sqlx::postgres::PgPoolOptions;
use stayopen_cloud::infra::config::CloudConfig;
use stayopen_cloud::infra::db::{self, DbError};
use stayopen_cloud::startup::{Application, StartupError};
use uuid::Uuid;

/// Every table row-level security protects.
const TENANT_TABLES: [&str; 12] = [
    "tenants",
    "practices",
    "sites",
    "users",
    "user_practices",
    "enrollment_tokens",
    "appliances",
    "telemetry",
    "appliance_events",
    "audit_log",
    "refresh_tokens",
    "api_tokens",
];

async fn count(conn: &mut sqlx::PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(conn)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_sees_no_rows_without_a_tenant_and_only_its_own_with_one() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (other, _, _) = cloud.other_msp("other.example").await;
    let demo_session = cloud.session(&demo.email, &demo.password).await;
    assert!(!demo_session.refresh_token.is_empty());

    // One connection, so the same pooled connection is reused after a transaction that set the
    // tenant (where the setting then reads as '' rather than NULL).
    let app = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cloud.app_database_url)
        .await
        .expect("app pool");
    let mut tx = db::tenant_tx(&app, demo.tenant_id).await.expect("tx");
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tenants")
        .fetch_all(&mut *tx)
        .await
        .expect("tenants");
    assert_eq!(tenants, vec![demo.tenant_id.0], "only its own tenant");
    assert_eq!(count(&mut tx, "practices").await, 2);
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1")
        .bind(other.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(
        foreign, 0,
        "another tenant's users are invisible even by id"
    );
    tx.commit().await.expect("commit");

    let mut conn = app.acquire().await.expect("conn");
    for table in TENANT_TABLES {
        assert_eq!(
            count(&mut conn, table).await,
            0,
            "{table} without a tenant set"
        );
    }
    // The owner sees that the rows exist.
    let mut owner = cloud.owner_pool.acquire().await.expect("owner");
    for table in [
        "tenants",
        "practices",
        "users",
        "audit_log",
        "refresh_tokens",
    ] {
        assert!(count(&mut owner, table).await > 0, "{table} has rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_cannot_write_into_another_tenant_or_rewrite_the_audit_log() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (other, _, _) = cloud.other_msp("other.example").await;

    let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    let smuggled =
        sqlx::query("INSERT INTO practices (id, tenant_id, name) VALUES ($1, $2, 'Smuggled')")
            .bind(Uuid::new_v4())
            .bind(other.as_uuid())
            .execute(&mut *tx)
            .await;
    let error = smuggled.expect_err("a row for another tenant is refused");
    assert!(error.to_string().contains("row-level security"), "{error}");
    drop(tx);

    let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    let moved = sqlx::query("UPDATE practices SET tenant_id = $1")
        .bind(other.as_uuid())
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err(), "rows cannot be moved to another tenant");
    drop(tx);

    let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    let edited = sqlx::query("UPDATE audit_log SET actor = 'someone else'")
        .execute(&mut *tx)
        .await;
    let error = edited.expect_err("the audit log is append-only for the application");
    assert!(error.to_string().contains("permission denied"), "{error}");
    drop(tx);
    let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    let deleted = sqlx::query("DELETE FROM audit_log").execute(&mut *tx).await;
    assert!(
        deleted.is_err(),
        "audit rows cannot be deleted by the application"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_refuses_to_serve_through_a_role_that_bypasses_row_level_security() {
    let cloud = spawn_cloud().await;
    let mut config = CloudConfig::default();
    config.database.url = cloud.database_url.clone().into();
    config.database.max_connections = 1;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    let refused = Application::build(config).await;
    match refused {
        Err(StartupError::Database(DbError::PrivilegedRole { why, .. })) => {
            assert_eq!(why, "is a superuser");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_partitioned_by_month_with_a_default_partition_for_strays() {
    let cloud = spawn_cloud().await;
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'telemetry'::regclass ORDER BY 1",
    )
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("partitions");
    let this_month = chrono::Utc::now().format("telemetry_%Y_%m").to_string();
    assert!(partitions.contains(&this_month), "{partitions:?}");
    assert!(partitions.contains(&"telemetry_default".to_owned()));
    assert_eq!(
        partitions.len(),
        3,
        "this month, next month, default: {partitions:?}"
    );
}
