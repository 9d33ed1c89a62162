//! Starts a whole cloud — fresh database, embedded broker, ingest, HTTP on free ports — for one test.
#![allow(dead_code)]

pub mod events;
pub mod process;
pub mod proxy;
pub mod webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Connection, PgConnection, PgPool};
use stayopen_appliance::config::{
    ApplianceConfig, ApplianceSection, CloudSection, DataplaneSection, LanSection, Outage,
    ProbeSection, SimulatedLink, UplinkConfig,
};
use stayopen_cloud::domain::seed::{self, DemoSeed};
use stayopen_cloud::infra::config::CloudConfig;
use stayopen_cloud::startup::Application;
use stayopen_shared::api::{
    CreatePractice, CreateUser, EnrollRequest, EnrollResponse, HardwareIdentity, LoginRequest,
    LoginResponse, Page, PracticeSummary, Role, UserView,
};
use stayopen_shared::{PracticeId, TenantId};
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
}

/// An enrolled device as a test drives it by hand: its enrolment answer and private key.
pub struct Device {
    pub enrolled: EnrollResponse,
    pub key_pem: String,
}

/// An MQTT connection of a test device: the client, the messages it receives, and whether the
/// broker has closed it.
pub struct DeviceConnection {
    pub client: rumqttc::AsyncClient,
    pub received: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    pub closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn admin_url() -> String {
    std::env::var("STAYOPEN_TEST_DATABASE_URL").expect(
        "STAYOPEN_TEST_DATABASE_URL must name a PostgreSQL database this test may create databases from; \
         run the tests with infra/scripts/test.sh, which starts one",
    )
}

/// A fresh database per test, so tests run in parallel without seeing each other's rows. Returns
/// the owner's URL and the application role's URL.
pub async fn fresh_database() -> (String, String) {
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
    (owner, format!("{scheme}://stayopen_app@{host}/{name}"))
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

impl Drop for TestCloud {
    fn drop(&mut self) {
        drop_database(&self.database_url);
    }
}

pub async fn spawn_cloud() -> TestCloud {
    spawn_cloud_with(|_| {}).await
}

/// Starts a cloud after `adjust` has changed the test configuration.
pub async fn spawn_cloud_with(adjust: impl FnOnce(&mut CloudConfig)) -> TestCloud {
    let mut config = CloudConfig::default();
    let (owner_url, app_url) = fresh_database().await;
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

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.session(email, password).await.access_token
    }

    /// Signs in and returns the whole session (access and refresh token).
    pub async fn session(&self, email: &str, password: &str) -> LoginResponse {
        let response = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&LoginRequest {
                email: email.into(),
                password: password.into(),
                totp_code: None,
            })
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login must succeed");
        response.json::<LoginResponse>().await.expect("login body")
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
        let (status, practice) = self
            .post::<_, PracticeSummary>(
                Some(&token),
                "/api/v1/practices",
                &CreatePractice {
                    name: format!("{domain} practice"),
                    site_name: None,
                },
            )
            .await;
        assert_eq!(status, 201);
        (tenant, token, practice.expect("practice").id)
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
        let (status, _) = self
            .post::<_, serde_json::Value>(
                Some(admin_token),
                "/api/v1/users",
                &CreateUser {
                    email: email.into(),
                    display_name: String::new(),
                    password: password.into(),
                    role,
                    practice_ids,
                    access_expires_at,
                },
            )
            .await;
        assert_eq!(status, 201, "create {email}");
        self.login(email, password).await
    }

    /// A user of the MSP as the API shows them to its admin.
    pub async fn user_by_email(&self, admin_token: &str, email: &str) -> UserView {
        let (status, users) = self
            .get::<Page<UserView>>(admin_token, "/api/v1/users?limit=500")
            .await;
        assert_eq!(status, 200);
        users
            .expect("users")
            .items
            .into_iter()
            .find(|u| u.email == email)
            .unwrap_or_else(|| panic!("no user {email}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> (u16, Option<T>) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.ok())
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        path: &str,
        body: &B,
    ) -> (u16, Option<T>) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.ok())
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> (u16, Option<T>) {
        let response = self
            .http
            .put(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PUT");
        let status = response.status().as_u16();
        (status, response.json().await.ok())
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> (u16, Option<T>) {
        let response = self
            .http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PATCH");
        let status = response.status().as_u16();
        (status, response.json().await.ok())
    }

    pub async fn delete(&self, token: &str, path: &str) -> (u16, Option<serde_json::Value>) {
        let response = self
            .http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("DELETE");
        let status = response.status().as_u16();
        (status, response.json().await.ok())
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
        let (status, enrolled) = self
            .post::<_, EnrollResponse>(
                None,
                "/api/v1/enroll",
                &EnrollRequest {
                    token: token.into(),
                    hardware: HardwareIdentity {
                        serial: serial.into(),
                        mac: mac.into(),
                        model: "test".into(),
                    },
                    agent_version: "test".into(),
                    csr_pem,
                },
            )
            .await;
        assert_eq!(status, 200, "enrol {serial}");
        Device {
            enrolled: enrolled.expect("enrolment"),
            key_pem,
        }
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
        let tls = stayopen_shared::mqtt_tls::client_config(&ca, cert_pem, key_pem)
            .map_err(|e| e.to_string())?;
        // As a real client does, sign the key proof with the key this connection presents (an
        // attacker holding a superseded key can only sign with that one).
        let password = match username.parse::<stayopen_shared::ApplianceId>() {
            Ok(appliance) if !password.contains(stayopen_shared::api::MQTT_KEY_PROOF_SEPARATOR) => {
                stayopen_appliance::identity::mqtt_password(password, appliance, key_pem)
                    .expect("sign the key proof")
            }
            _ => password.to_owned(),
        };
        let mut options =
            rumqttc::MqttOptions::new(client_id, self.broker.ip().to_string(), self.broker.port());
        options
            .set_credentials(username, password.as_str())
            .set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ))
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
        let connack = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no answer from the broker".to_string())?;
        connack?;
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // No reconnecting: a test wants to see that the broker closed it.
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        Ok(DeviceConnection {
            client,
            received,
            closed,
        })
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
        self.metrics()
            .await
            .lines()
            .find_map(|l| {
                l.strip_prefix(line_prefix)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0)
    }
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
        }),
        lan: LanSection {
            interface: "lan0".into(),
        },
        uplinks: vec![
            UplinkConfig {
                name: "fiber".into(),
                interface: "wan0".into(),
                gateway: "192.0.2.1".parse().expect("ip"),
                priority: 0,
                metered: false,
            },
            UplinkConfig {
                name: "lte".into(),
                interface: "wwan0".into(),
                gateway: "198.51.100.1".parse().expect("ip"),
                priority: 1,
                metered: true,
            },
        ],
        probes: ProbeSection::default(),
        dataplane: DataplaneSection::Simulated {
            links: BTreeMap::from([("fiber".into(), fiber)]),
        },
    }
}

/// An encoded telemetry message of `appliance` (fibre active), as a device publishes it.
pub fn telemetry_payload(
    appliance: stayopen_shared::ApplianceId,
    message: stayopen_shared::MessageId,
) -> Vec<u8> {
    stayopen_shared::Envelope::new(
        message,
        appliance,
        chrono::Utc::now(),
        stayopen_shared::telemetry::Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![],
            policy_version: None,
            samples: None,
            outbox: None,
        },
    )
    .encode()
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
    delivery::dispatch_once(pool, &reqwest::Client::new(), &dispatch, &clock)
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
