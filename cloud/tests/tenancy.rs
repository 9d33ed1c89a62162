//! Tenancy is enforced by PostgreSQL itself: the application's own role sees nothing without a
//! tenant set, only its tenant with one, cannot write rows into another tenant, cannot rewrite the
//! audit log, and the cloud refuses to run as a role that would bypass all of this. Every table and
//! partition with a `tenant_id`, present and future, has row-level security enabled and forced,
//! found from the catalog rather than from a list that a new table could miss.

mod common;

use chrono::Datelike;
use common::{spawn_cloud, spawn_cloud_with};
use secrecy::ExposeSecret;
use sqlx::Connection;
use sqlx::PgConnection;
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

/// Every table with a `tenant_id` column, partitions included, as the catalog lists them today.
async fn tables_with_a_tenant_id(conn: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .expect("tenant tables")
}

/// Gives `tenant` at least one row in every tenant table, as the owner: an appliance and
/// everything that hangs off one, an alert and its comment, a channel, rule and notification, an
/// incident, a drill, an evidence package, and telemetry in this month's, next month's and the
/// default partition. Rows that the product's own paths already made stay as they are.
async fn give_every_tenant_table_a_row(owner: &sqlx::PgPool, tenant: Uuid) {
    let sql = r#"DO $$
        DECLARE
            t uuid := '__TENANT__';
            p uuid;
            s uuid;
            a uuid := gen_random_uuid();
            u uuid;
            al uuid := gen_random_uuid();
            ch uuid := gen_random_uuid();
            inc uuid := gen_random_uuid();
            cmd uuid := gen_random_uuid();
        BEGIN
            SELECT id INTO p FROM practices WHERE tenant_id = t ORDER BY id LIMIT 1;
            SELECT id INTO s FROM sites WHERE tenant_id = t AND practice_id = p ORDER BY id LIMIT 1;
            IF s IS NULL THEN
                s := gen_random_uuid();
                INSERT INTO sites (id, tenant_id, practice_id, name) VALUES (s, t, p, 'Seeded site');
            END IF;
            SELECT id INTO u FROM users WHERE tenant_id = t ORDER BY id LIMIT 1;
            INSERT INTO user_practices (tenant_id, user_id, practice_id) VALUES (t, u, p)
                ON CONFLICT DO NOTHING;
            INSERT INTO enrollment_tokens (id, tenant_id, practice_id, site_id, token_hash, expires_at, max_uses)
                VALUES (gen_random_uuid(), t, p, s, sha256(gen_random_uuid()::text::bytea), now() + interval '1 day', 1);
            INSERT INTO appliances (id, tenant_id, practice_id, site_id, serial, mac, model, agent_version, mqtt_password_hash)
                VALUES (a, t, p, s, 'SEED-' || a, '02:00:00:00:00:01', 'seed', '0', sha256(gen_random_uuid()::text::bytea));
            INSERT INTO claimed_serials (serial, tenant_id, practice_id, site_id, factory_key_hash, created_by)
                VALUES ('CLAIM-' || a, t, p, s, sha256(gen_random_uuid()::text::bytea), 'seed');
            INSERT INTO device_certificates (serial_hex, tenant_id, appliance_id, not_after)
                VALUES (encode(sha256(gen_random_uuid()::text::bytea), 'hex'), t, a, now() + interval '90 days');
            INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, body)
                SELECT gen_random_uuid(), a, t, at,
                       '{"uplinks": [{"name": "fibre", "rtt_ms": 12, "loss_pct": 0}]}'::jsonb
                FROM unnest(ARRAY[now(), date_trunc('month', now()) + interval '1 month 1 day',
                                  now() - interval '20 years']) AS at;
            INSERT INTO telemetry_hourly (tenant_id, appliance_id, uplink, hour, samples, rtt_sum, rtt_samples, loss_sum)
                VALUES (t, a, 'fibre', date_trunc('hour', now()), 1, 10, 1, 0);
            INSERT INTO availability_hourly (tenant_id, appliance_id, hour)
                VALUES (t, a, date_trunc('hour', now()));
            INSERT INTO appliance_events (message_id, appliance_id, tenant_id, kind, sent_at, body)
                VALUES (gen_random_uuid(), a, t, 'seeded', now(), '{}'::jsonb);
            INSERT INTO commands (id, tenant_id, appliance_id, kind, spec, created_by, expires_at)
                VALUES (cmd, t, a, 'seeded', '{}'::jsonb, 'seed', now() + interval '1 hour');
            INSERT INTO drill_schedule_runs (tenant_id, appliance_id, window_start, command_id)
                VALUES (t, a, date_trunc('hour', now()), cmd);
            INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at, outcome)
                VALUES (gen_random_uuid(), t, p, a, 'manual', now(), 'running');
            INSERT INTO incidents (id, tenant_id, practice_id, appliance_id, started_at)
                VALUES (inc, t, p, a, now());
            INSERT INTO incident_comments (id, tenant_id, incident_id, author, body)
                VALUES (gen_random_uuid(), t, inc, 'seed', 'seeded');
            INSERT INTO alerts (id, tenant_id, practice_id, appliance_id, kind, severity, state, summary, first_seen, last_seen)
                VALUES (al, t, p, a, 'seeded', 'warning', 'open', 'seeded', now(), now());
            INSERT INTO alert_comments (tenant_id, alert_id, author, body) VALUES (t, al, 'seed', 'seeded');
            INSERT INTO notification_channels (id, tenant_id, name, kind, recipients, created_by)
                VALUES (ch, t, 'Seeded', 'email', ARRAY['ops@example.com'], 'seed');
            INSERT INTO routing_rules (id, tenant_id, channel_id, min_severity, created_by)
                VALUES (gen_random_uuid(), t, ch, 'warning', 'seed');
            INSERT INTO notifications (id, tenant_id, channel_id, event, practice_id, alert_id)
                VALUES (gen_random_uuid(), t, ch, 'open', p, al);
            INSERT INTO maintenance_windows (id, tenant_id, practice_id, starts_at, ends_at, reason, created_by)
                VALUES (gen_random_uuid(), t, p, now(), now() + interval '1 hour', 'seeded', 'seed');
            INSERT INTO critical_apps (id, tenant_id, practice_id, name, tier, endpoints)
                VALUES (gen_random_uuid(), t, p, 'Seeded ' || a, 'tier1', '[]'::jsonb);
            INSERT INTO policies (tenant_id, scope, scope_id, overrides, updated_by)
                VALUES (t, 'practice', p, '{}'::jsonb, 'seed') ON CONFLICT DO NOTHING;
            INSERT INTO evidence_packages (id, tenant_id, practice_id, period_kind, period_from, period_to, requested_by)
                VALUES (gen_random_uuid(), t, p, 'month', current_date, current_date, 'seed');
            INSERT INTO api_tokens (id, tenant_id, name, token_hash, scope)
                VALUES (gen_random_uuid(), t, 'seeded', sha256(gen_random_uuid()::text::bytea), 'read');
            INSERT INTO stream_tickets (ticket_hash, tenant_id, user_id, expires_at)
                VALUES (sha256(gen_random_uuid()::text::bytea), t, u, now() + interval '30 seconds');
        END
        $$"#
        .replace("__TENANT__", &tenant.to_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(owner)
        .await
        .expect("seed every tenant table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_and_partition_with_a_tenant_id_has_forced_row_level_security_and_only_the_tenant_policy()
 {
    let cloud = spawn_cloud().await;
    let mut app = PgConnection::connect(&cloud.app_database_url)
        .await
        .expect("app connection");
    let tables = tables_with_a_tenant_id(&mut app).await;
    assert!(
        tables.contains(&"telemetry_default".to_owned())
            && tables.iter().any(|t| t.starts_with("telemetry_2")),
        "the catalog lists the partitions: {tables:?}"
    );
    // Read as the application role: what it can learn about its own limits.
    let rows: Vec<(String, bool, bool, bool, Vec<String>)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                EXISTS (SELECT 1 FROM pg_policy p
                        WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation' AND p.polpermissive
                          AND p.polcmd = '*' AND p.polroles = '{0}'
                          AND pg_get_expr(p.polqual, p.polrelid) = format('(%s = stayopen_current_tenant())', k.col)
                          AND pg_get_expr(p.polwithcheck, p.polrelid) = format('(%s = stayopen_current_tenant())', k.col)),
                ARRAY(SELECT p.polname::text FROM pg_policy p
                      WHERE p.polrelid = c.oid AND p.polname <> 'tenant_isolation'
                        AND (0 = ANY (p.polroles)
                             OR (SELECT oid FROM pg_roles WHERE rolname = 'stayopen_app') = ANY (p.polroles)))
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN LATERAL (SELECT CASE WHEN c.relname = 'tenants' THEN 'id' ELSE 'tenant_id' END AS col) k
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND (c.relname = 'tenants' OR EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
         ORDER BY 1",
    )
    .fetch_all(&mut app)
    .await
    .expect("catalog");
    assert_eq!(
        rows.len(),
        tables.len() + 1,
        "every tenant table and tenants"
    );
    let unprotected: Vec<String> = rows
        .iter()
        .filter(|(_, enabled, forced, policy, others)| {
            !(*enabled && *forced && *policy && others.is_empty())
        })
        .map(|(name, enabled, forced, policy, others)| {
            format!("{name} (enabled {enabled}, forced {forced}, tenant policy {policy}, other policies for the application {others:?})")
        })
        .collect();
    assert!(unprotected.is_empty(), "unprotected: {unprotected:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tenant_the_application_role_reads_no_row_of_any_tenant_table_or_partition_though_each_has_rows()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (other, _, _) = cloud.other_msp("other.example").await;
    cloud.session(&demo.email, &demo.password).await;
    for tenant in [demo.tenant_id.0, other.0] {
        give_every_tenant_table_a_row(&cloud.owner_pool, tenant).await;
    }
    let mut owner = cloud.owner_pool.acquire().await.expect("owner");
    let tables = tables_with_a_tenant_id(&mut owner).await;
    for table in &tables {
        let tenants: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT tenant_id) FROM {table}"
        )))
        .fetch_one(&mut *owner)
        .await
        .expect("count as owner");
        assert_eq!(tenants, 2, "{table} holds rows of both tenants");
    }

    // One connection, reused after a transaction that set the tenant.
    let app = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cloud.app_database_url)
        .await
        .expect("app pool");
    let mut tx = db::tenant_tx(&app, demo.tenant_id).await.expect("tx");
    for table in &tables {
        let (own, foreign): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id <> $1)
             FROM {table}"
        )))
        .bind(demo.tenant_id.0)
        .fetch_one(&mut *tx)
        .await
        .expect("count in a tenant");
        assert!(own > 0, "{table}: the tenant sees its own rows");
        assert_eq!(foreign, 0, "{table}: the tenant sees no other tenant's row");
    }
    tx.commit().await.expect("commit");
    let mut conn = app.acquire().await.expect("conn");
    for table in tables.iter().map(String::as_str).chain(["tenants"]) {
        assert_eq!(
            count(&mut conn, table).await,
            0,
            "{table} without a tenant set"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_cannot_write_another_tenants_telemetry_into_a_partition_directly() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (other, _, _) = cloud.other_msp("other.example").await;
    give_every_tenant_table_a_row(&cloud.owner_pool, other.0).await;
    let victim_appliance: Uuid =
        sqlx::query_scalar("SELECT id FROM appliances WHERE tenant_id = $1 LIMIT 1")
            .bind(other.0)
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("appliance");
    let this_month = chrono::Utc::now().format("telemetry_%Y_%m").to_string();
    for (partition, sent_at) in [
        (this_month.as_str(), "now()"),
        ("telemetry_default", "now() - interval '20 years'"),
    ] {
        for tenant in [Some(demo.tenant_id), None] {
            let mut tx = match tenant {
                Some(tenant) => db::tenant_tx(&cloud.pool, tenant).await.expect("tx"),
                None => cloud.pool.begin().await.expect("tx"),
            };
            let smuggled = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {partition} (message_id, appliance_id, tenant_id, sent_at, body)
                 VALUES ($1, $2, $3, {sent_at}, '{{}}')"
            )))
            .bind(Uuid::new_v4())
            .bind(victim_appliance)
            .bind(other.0)
            .execute(&mut *tx)
            .await;
            let error = smuggled.expect_err("another tenant's row in a partition is refused");
            assert!(
                error.to_string().contains("row-level security"),
                "{partition}: {error}"
            );
            drop(tx);
            let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
                .await
                .expect("tx");
            for statement in [
                format!("UPDATE {partition} SET body = '{{\"forged\": true}}'"),
                format!("DELETE FROM {partition}"),
            ] {
                let touched = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&mut *tx)
                    .await
                    .expect("runs")
                    .rows_affected();
                assert_eq!(touched, 0, "{statement} touches no other tenant's row");
            }
            tx.commit().await.expect("commit");
        }
    }
    let intact: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM telemetry WHERE tenant_id = $1 AND NOT body ? 'forged'",
    )
    .bind(other.0)
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("count");
    assert_eq!(intact, 3, "the other tenant's telemetry is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telemetry_partition_created_after_the_migrations_is_protected_from_its_first_row() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (other, _, _) = cloud.other_msp("other.example").await;
    give_every_tenant_table_a_row(&cloud.owner_pool, other.0).await;
    let future = (chrono::Utc::now() + chrono::Duration::days(120))
        .date_naive()
        .with_day(1)
        .expect("first of the month");
    let name = future.format("telemetry_%Y_%m").to_string();
    // A stray row for that month waits in the default partition and moves into the new one.
    sqlx::query(
        "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, body)
         SELECT gen_random_uuid(), id, tenant_id, $2::date + interval '2 days', '{}'
         FROM appliances WHERE tenant_id = $1 LIMIT 1",
    )
    .bind(other.0)
    .bind(future)
    .execute(&cloud.owner_pool)
    .await
    .expect("stray row");
    // The application creates partitions ahead, through the SECURITY DEFINER function.
    let created: bool = sqlx::query_scalar("SELECT stayopen_ensure_telemetry_partition($1)")
        .bind(future)
        .fetch_one(&cloud.pool)
        .await
        .expect("create the partition");
    assert!(created);
    let (enabled, forced, policies): (bool, bool, i64) = sqlx::query_as(
        "SELECT c.relrowsecurity, c.relforcerowsecurity,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation')
         FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(&name)
    .fetch_one(&cloud.pool)
    .await
    .expect("catalog");
    assert!(
        enabled && forced && policies == 1,
        "{name}: {enabled} {forced} {policies}"
    );
    let moved: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("count");
    assert_eq!(moved, 1, "the stray row moved into the new partition");

    let mut conn = cloud.pool.acquire().await.expect("conn");
    assert_eq!(count(&mut conn, &name).await, 0, "{name} without a tenant");
    drop(conn);
    let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    assert_eq!(count(&mut tx, &name).await, 0, "{name} in another tenant");
    let smuggled = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {name} (message_id, appliance_id, tenant_id, sent_at, body)
         SELECT gen_random_uuid(), a, $1, $2::date + interval '3 days', '{{}}'
         FROM (SELECT gen_random_uuid() AS a) x"
    )))
    .bind(other.0)
    .bind(future)
    .execute(&mut *tx)
    .await;
    let error = smuggled.expect_err("another tenant's row in the new partition is refused");
    assert!(error.to_string().contains("row-level security"), "{error}");
}

/// A login role that will own the test database and its tables: neither a superuser nor BYPASSRLS,
/// so FORCE applies to it (a superuser bypasses every policy, forced or not).
const PLAIN_OWNER: &str = "stayopen_test_owner";

/// Hands the database of `owner_url` to [`PLAIN_OWNER`] and returns that role's URL for it.
fn owned_by_a_plain_role(owner_url: &str) -> String {
    let (base, name) = owner_url.rsplit_once('/').expect("database URL");
    let (admin, database) = (owner_url.to_owned(), name.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&admin).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PLAIN_OWNER}') THEN
                        CREATE ROLE {PLAIN_OWNER} LOGIN NOSUPERUSER NOBYPASSRLS;
                    END IF;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END $$;
                 ALTER DATABASE {database} OWNER TO {PLAIN_OWNER};"
            )))
            .execute(&mut conn)
            .await
            .expect("hand the database over");
        });
    })
    .join()
    .expect("owner thread");
    let (scheme, rest) = base.split_once("://").expect("scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{PLAIN_OWNER}@{host}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_security_holds_a_plain_owner_to_one_tenant_while_the_cross_tenant_functions_keep_working()
 {
    let mut plain_owner_url = String::new();
    let cloud = spawn_cloud_with(|config| {
        let superuser_url = config
            .database
            .owner_url
            .as_ref()
            .expect("owner URL")
            .expose_secret()
            .to_owned();
        plain_owner_url = owned_by_a_plain_role(&superuser_url);
        config.database.owner_url = Some(plain_owner_url.clone().into());
    })
    .await;
    let table_owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'users'")
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("owner");
    assert_eq!(
        table_owner, PLAIN_OWNER,
        "the plain role ran the migrations"
    );

    // Sign-in (a lookup by e-mail), MSP creation (a name check across tenants) and the sweeps' and
    // jobs' SECURITY DEFINER functions run as the owner on the application's behalf.
    let demo = cloud.seed_demo().await;
    let (other, _, _) = cloud.other_msp("other.example").await;
    cloud.session(&demo.email, &demo.password).await;
    for tenant in [demo.tenant_id.0, other.0] {
        give_every_tenant_table_a_row(&cloud.owner_pool, tenant).await;
    }
    let tenants = db::lookup::tenant_ids(&cloud.pool)
        .await
        .expect("tenant ids");
    assert_eq!(tenants.len(), 2, "the application lists every tenant");
    sqlx::raw_sql(
        "UPDATE telemetry SET received_at = now() - interval '2 minutes';
         UPDATE telemetry_rollup_watermark SET received_before = '-infinity';",
    )
    .execute(&cloud.owner_pool)
    .await
    .expect("age the telemetry");
    let rolled = db::roll_up_telemetry(&cloud.pool).await.expect("roll-up");
    assert!(rolled > 0, "the roll-up sees every tenant's telemetry");
    let deleted =
        stayopen_cloud::domain::compliance::retention::enforce(&cloud.pool, chrono::Utc::now(), 30)
            .await
            .expect("retention");
    assert!(
        deleted
            .iter()
            .any(|(kind, n)| kind == "telemetry" && *n == 2),
        "retention removes both tenants' old telemetry: {deleted:?}"
    );

    // The owner's own session is held to a tenant like the application.
    let mut owner = PgConnection::connect(&plain_owner_url)
        .await
        .expect("owner connection");
    let tables = tables_with_a_tenant_id(&mut owner).await;
    for table in tables.iter().map(String::as_str).chain(["tenants"]) {
        assert_eq!(
            count(&mut owner, table).await,
            0,
            "{table} as the owner without a tenant"
        );
    }
    let smuggled = sqlx::query(
        "INSERT INTO practices (id, tenant_id, name) VALUES (gen_random_uuid(), $1, 'Smuggled')",
    )
    .bind(other.0)
    .execute(&mut owner)
    .await;
    assert!(
        smuggled.is_err(),
        "the owner cannot write a tenant's row without it set"
    );
}
