//! Starts a whole cloud — fresh database, embedded broker, ingest, HTTP on free ports — for one test.
//!
//! The kit of every test and bench: each test binary (and each bench, which includes this module
//! by path) uses a different part of it, so what one of them leaves unused is not dead.
#![allow(dead_code)]

pub mod burst;
pub mod client;
pub mod csv;
pub mod device;
pub mod events;
pub mod fleet;
pub mod haproxy;
pub mod logs;
pub mod mosquitto;
pub mod process;
pub mod proxy;
pub mod smtp;
pub mod telemetry;
pub mod webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use client::ApiClient;
pub use device::{Device, DeviceConnection};
use sqlx::{Connection, PgConnection, PgPool};
use stayopen_appliance::config::{
    ApplianceConfig, ApplianceSection, CloudSection, DataplaneSection, LanSection, Outage,
    ProbeSection, SimulatedLink, UplinkConfig,
};
use stayopen_cloud::domain::seed::{self, DemoSeed};
use stayopen_cloud::infra::config::CloudConfig;
use stayopen_cloud::startup::Application;
use stayopen_shared::api::{
    CreateEnrollmentToken, CreatePractice, CreateUser, EnrollRequest, HardwareIdentity,
    LoginResponse, Role, UserView,
};
use stayopen_shared::{ApplianceId, PracticeId, TenantId};
pub use telemetry::telemetry;
use uuid::Uuid;

pub struct TestCloud {
    pub base_url: String,
    /// The owner's (superuser's) URL of this test's database.
    pub database_url: String,
    /// The application role's URL of this test's database.
    pub app_database_url: String,
    pub broker: SocketAddr,
    /// The application's pool: the non-owner role, row-level security applies.
    pub pool: PgPool,
    /// A superuser pool, for tests that inspect or tamper with rows across tenants.
    pub owner_pool: PgPool,
    pub http: reqwest::Client,
    /// The device CA and broker certificate of this cloud.
    pub tls_dir: std::sync::Arc<tempfile::TempDir>,
    /// Dropped last: the database goes when the test is done with the cloud.
    _database: TestDatabase,
}

fn admin_url() -> String {
    std::env::var("STAYOPEN_TEST_DATABASE_URL").expect(
        "STAYOPEN_TEST_DATABASE_URL must name a PostgreSQL database this test may create databases from; \
         run the tests with infra/scripts/test.sh, which starts one",
    )
}

/// A test's own database: the owner's URL and the application role's URL. Dropped with the
/// handle, whether the test passed, failed, or never got its cloud started.
pub struct TestDatabase {
    pub owner_url: String,
    pub app_url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database(&self.owner_url);
    }
}

/// A fresh database per test, so tests run in parallel without seeing each other's rows; removed
/// when the handle is dropped.
pub async fn fresh_database() -> TestDatabase {
    let admin = admin_url();
    let name = format!("stayopen_test_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    // The application role is cluster-wide; tests racing to create it is fine.
    sqlx::raw_sql(
        "DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stayopen_app') THEN
                CREATE ROLE stayopen_app LOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$",
    )
    .execute(&mut conn)
    .await
    .expect("create the application role");
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    let owner = format!("{base}/{name}");
    let (scheme, rest) = base.split_once("://").expect("URL scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    TestDatabase {
        owner_url: owner,
        app_url: format!("{scheme}://stayopen_app@{host}/{name}"),
    }
}

/// Drops the test database named by `url` (its last path segment), whatever still holds
/// connections to it. Runs on a thread of its own: it is called from `Drop`, which cannot await.
pub fn drop_database(url: &str) {
    let Some(name) = url
        .rsplit('/')
        .next()
        .map(|n| n.split('?').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("stayopen_test_"))
    else {
        return;
    };
    let admin = admin_url();
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    })
    .join();
    if let Ok(Err(e)) = dropped {
        eprintln!("could not drop the test database: {e}");
    }
}

pub async fn spawn_cloud() -> TestCloud {
    spawn_cloud_with(|_| {}).await
}

/// Starts a cloud after `adjust` has changed the test configuration.
pub async fn spawn_cloud_with(adjust: impl FnOnce(&mut CloudConfig)) -> TestCloud {
    logs::capture();
    let mut config = CloudConfig::default();
    let database = fresh_database().await;
    let (owner_url, app_url) = (database.owner_url.clone(), database.app_url.clone());
    let tls_dir = std::sync::Arc::new(tempfile::tempdir().expect("tls dir"));
    config.broker.tls_dir = tls_dir.path().to_owned();
    config.database.url = app_url.clone().into();
    config.database.owner_url = Some(owner_url.clone().into());
    let database_url = owner_url;
    config.database.max_connections = 5;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.workers = 1;
    config.http.static_dir = std::env::var_os("STAYOPEN_TEST_STATIC_DIR").map(Into::into);
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    config.auth.jwt_secret = Some("test-secret-test-secret-test-secret!".into());
    config.fleet.offline_after_secs = 10;
    // Tests that do not restart anything judge silence at once; the grace tests set their own.
    config.fleet.offline_grace_secs = 0;
    adjust(&mut config);
    let app = Application::build(config).await.expect("the cloud starts");
    let owner_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await
        .expect("owner pool");
    let base_url = format!("http://{}", app.http_addr());
    let broker = app.broker_addr();
    let pool = app.state().pool.clone();
    tokio::spawn(app.run_until_stopped());
    TestCloud {
        base_url,
        database_url,
        app_database_url: app_url,
        broker,
        pool,
        owner_pool,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        tls_dir,
        _database: database,
    }
}

impl TestCloud {
    pub async fn seed_demo(&self) -> DemoSeed {
        seed::seed_demo(&self.pool)
            .await
            .expect("seed the demo tenant")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The API as the caller holding `token`.
    pub fn api(&self, token: &str) -> ApiClient {
        ApiClient::new(self.http.clone(), &self.base_url, Some(token))
    }

    /// The API without a token (sign-in, enrolment, refusals of anonymous callers).
    pub fn anonymous(&self) -> ApiClient {
        ApiClient::new(self.http.clone(), &self.base_url, None)
    }

    /// Signs in as `email` and returns the API as them.
    pub async fn api_as(&self, email: &str, password: &str) -> ApiClient {
        self.api(&self.login(email, password).await)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.session(email, password).await.access_token
    }

    /// Signs in and returns the whole session (access and refresh token).
    pub async fn session(&self, email: &str, password: &str) -> LoginResponse {
        self.anonymous()
            .login(email, password)
            .await
            .unwrap_or_else(|refused| panic!("login must succeed: {refused:?}"))
    }

    /// Creates another MSP with `admin@{domain}` / `{domain}-password` as its admin, and one
    /// practice; returns (tenant, admin token, practice id).
    pub async fn other_msp(&self, domain: &str) -> (TenantId, String, PracticeId) {
        let email = format!("admin@{domain}");
        let password = format!("{domain}-password");
        let tenant =
            stayopen_cloud::domain::admin::create_msp(&self.pool, domain, &email, &password)
                .await
                .expect("create MSP");
        let token = self.login(&email, &password).await;
        let practice = self
            .api(&token)
            .create_practice(&CreatePractice {
                name: format!("{domain} practice"),
                site_name: None,
            })
            .await
            .expect("practice");
        (tenant, token, practice.id)
    }

    /// Creates a user in the MSP of `admin_token` and signs them in.
    pub async fn user_with_role(
        &self,
        admin_token: &str,
        email: &str,
        role: Role,
        practice_ids: Vec<PracticeId>,
    ) -> String {
        let password = "correct-horse-battery";
        let access_expires_at =
            (role == Role::Auditor).then(|| chrono::Utc::now() + chrono::Duration::days(7));
        self.api(admin_token)
            .create_user(&CreateUser {
                email: email.into(),
                display_name: String::new(),
                password: password.into(),
                role,
                practice_ids,
                access_expires_at,
            })
            .await
            .unwrap_or_else(|refused| panic!("create {email}: {refused:?}"));
        self.login(email, password).await
    }

    /// A user of the MSP as the API shows them to its admin.
    pub async fn user_by_email(&self, admin_token: &str, email: &str) -> UserView {
        self.api(admin_token)
            .users("limit=500")
            .await
            .expect("users")
            .items
            .into_iter()
            .find(|u| u.email == email)
            .unwrap_or_else(|| panic!("no user {email}"))
    }

    /// Applies one alert change to `appliance` as ingest would; returns the alert it touched.
    pub async fn raise_alert(
        &self,
        tenant: TenantId,
        appliance: stayopen_shared::ApplianceId,
        change: stayopen_cloud::domain::alerts::AlertChange,
    ) -> Uuid {
        let mut tx = stayopen_cloud::infra::db::tenant_tx(&self.pool, tenant)
            .await
            .expect("tx");
        let touched = stayopen_cloud::domain::alerts::apply(
            &mut tx,
            tenant,
            appliance,
            &[change],
            chrono::Utc::now(),
        )
        .await
        .expect("apply");
        tx.commit().await.expect("commit");
        touched[0].0
    }

    /// Enrols a device by hand (fresh key pair and signing request).
    pub async fn enrol_device(&self, token: &str, serial: &str, mac: &str) -> Device {
        let (key_pem, csr_pem) =
            stayopen_appliance::identity::new_key_and_request().expect("key and request");
        let enrolled = self
            .anonymous()
            .enroll(&EnrollRequest {
                token: token.into(),
                hardware: HardwareIdentity {
                    serial: serial.into(),
                    mac: mac.into(),
                    model: "test".into(),
                },
                agent_version: "test".into(),
                csr_pem,
                wireguard_public_key: None,
            })
            .await
            .unwrap_or_else(|refused| panic!("enrol {serial}: {refused:?}"));
        Device { enrolled, key_pem }
    }

    /// Connects to the broker over TLS presenting `cert_pem`/`key_pem`, as `client_id` with
    /// `username`/`password`. Err carries the refusal.
    pub async fn mqtt_connect(
        &self,
        cert_pem: &str,
        key_pem: &str,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<DeviceConnection, String> {
        let ca = std::fs::read_to_string(self.tls_dir.path().join("ca.pem")).expect("ca");
        device::connect(
            self.broker,
            &device::Credentials {
                ca_pem: &ca,
                cert_pem,
                key_pem,
                client_id,
                username,
                password,
            },
        )
        .await
    }

    /// Connects as `device` with its own certificate and credentials.
    pub async fn connect_device(&self, device: &Device) -> Result<DeviceConnection, String> {
        let mqtt = &device.enrolled.mqtt;
        self.mqtt_connect(
            &device.enrolled.client_cert_pem,
            &device.key_pem,
            &mqtt.username,
            &mqtt.username,
            &mqtt.password,
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The value of one counter line in `/metrics`, 0 when absent.
    pub async fn counter(&self, line_prefix: &str) -> u64 {
        counter_in(&self.metrics().await, line_prefix)
    }
}

/// The value of the counter line starting with `line_prefix` in a `/metrics` text, 0 when absent.
pub fn counter_in(metrics: &str, line_prefix: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A simulated appliance (fibre primary, metered LTE backup) that enrols with `token`.
pub fn appliance_config(
    api_url: &str,
    token: &str,
    state_dir: &std::path::Path,
    fiber_outage: Option<Outage>,
) -> ApplianceConfig {
    let fiber = SimulatedLink {
        outages: fiber_outage.into_iter().collect(),
        ..SimulatedLink::default()
    };
    ApplianceConfig {
        appliance: ApplianceSection {
            state_dir: state_dir.to_owned(),
            serial: Some("SO-TEST-0001".into()),
            mac: Some("02:53:4f:00:00:01".into()),
            model: Some("test".into()),
        },
        cloud: Some(CloudSection {
            api_url: api_url.into(),
            enrollment_token: Some(token.into()),
            factory_key_file: None,
            telemetry_interval_secs: 1,
            outbox_max_mb: 64,
            // The test cloud serves plain HTTP on loopback.
            allow_plain_http: true,
        }),
        lan: LanSection::without_services("lan0"),
        uplinks: vec![
            UplinkConfig {
                name: "fiber".into(),
                interface: "wan0".into(),
                gateway: Some("192.0.2.1".parse().expect("ip")),
                priority: 0,
                addressing: Default::default(),
                metered: false,
                dns: Vec::new(),
                modem: None,
            },
            UplinkConfig {
                name: "lte".into(),
                interface: "wwan0".into(),
                gateway: Some("198.51.100.1".parse().expect("ip")),
                priority: 1,
                addressing: Default::default(),
                metered: true,
                dns: Vec::new(),
                modem: None,
            },
        ],
        probes: ProbeSection::default(),
        dataplane: DataplaneSection::Simulated {
            links: BTreeMap::from([("fiber".into(), fiber)]),
        },
        tunnel: Default::default(),
        cellular: Default::default(),
    }
}

/// An encoded telemetry message of `appliance` (fibre active), as a device publishes it: the
/// builder's default (kept under this name for the tests that call it so).
pub fn telemetry_payload(
    appliance: stayopen_shared::ApplianceId,
    message: stayopen_shared::MessageId,
) -> Vec<u8> {
    telemetry(appliance).message(message).encode()
}

/// Polls `check` every 100 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One round of the notification dispatcher — digests, then deliveries — as if the time were `at`
/// (the clock starts there and runs on with real time): what the background dispatcher will do
/// then. Tests move notification time forward this way instead of sleeping; the background
/// dispatcher, on the wall clock, leaves alone what is due only in that future.
pub async fn dispatch_at(
    pool: &PgPool,
    alerts: &stayopen_cloud::infra::config::AlertsConfig,
    at: chrono::DateTime<chrono::Utc>,
) {
    use stayopen_cloud::domain::notifications::{delivery, queue_digests};
    let dispatch = delivery::Dispatch::from_config(alerts);
    let clock = stayopen_cloud::infra::clock::Clock::following_tokio(at);
    queue_digests(pool, dispatch.digest_after, clock.now())
        .await
        .expect("digests");
    delivery::dispatch_once(pool, &dispatch, &clock)
        .await
        .expect("dispatch");
}

/// Waits until the background dispatcher holds nothing in hand and has nothing due: every pending
/// notification is scheduled at least a minute ahead (a claimed one's lease is 30 s), so every
/// delivery it started has reached its receiver and been recorded.
pub async fn notifications_settled(owner_pool: &PgPool) {
    eventually(
        Duration::from_secs(15),
        "the notification dispatcher idle",
        || async {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM notifications
                 WHERE status = 'pending' AND next_attempt_at < now() + interval '1 minute'",
            )
            .fetch_one(owner_pool)
            .await
            .expect("pending notifications");
            (busy == 0).then_some(())
        },
    )
    .await;
}

/// Polls `check` every 100 ms for `period`, failing the test as soon as it returns false: for
/// showing that something does not happen within a period.
pub async fn holds_for<F, Fut>(period: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + period;
    loop {
        assert!(check().await, "{what} stopped holding");
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `sample` every 100 ms until it has returned the same value for `quiet` (a counter that
/// stopped rising, a list that stopped growing), failing the test after `timeout`; returns it.
pub async fn settled<T, F, Fut>(timeout: Duration, quiet: Duration, what: &str, mut sample: F) -> T
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = sample().await;
    let mut since = tokio::time::Instant::now();
    loop {
        if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} to settle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sample().await;
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        }
    }
}

/// A one-hour, five-use enrolment token for `practice`, made by `admin`.
pub async fn enrolment_token(cloud: &TestCloud, admin: &str, practice: PracticeId) -> String {
    let token = cloud
        .api(admin)
        .create_enrollment_token(
            practice,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 5,
                site_id: None,
            },
        )
        .await;
    token.expect("token").token
}

/// The first appliance of `admin`'s fleet that the cloud counts online (waits up to 20 s).
pub async fn online_appliance(cloud: &TestCloud, admin: &str) -> ApplianceId {
    eventually(Duration::from_secs(20), "the appliance online", || async {
        cloud
            .api(admin)
            .fleet()
            .await
            .ok()?
            .practices
            .into_iter()
            .flat_map(|p| p.appliances)
            .find(|a| a.online)
            .map(|a| a.id)
    })
    .await
}
