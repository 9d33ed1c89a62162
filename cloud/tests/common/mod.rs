//! Starts a whole cloud — fresh database, embedded broker, ingest, HTTP on free ports — for one test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Connection, PgConnection, PgPool};
use stayopen_cloud::config::CloudConfig;
use stayopen_cloud::seed::{self, DemoSeed};
use stayopen_cloud::startup::Application;
use stayopen_shared::api::{LoginRequest, LoginResponse};
use uuid::Uuid;

pub struct TestCloud {
    pub base_url: String,
    pub database_url: String,
    pub broker: SocketAddr,
    pub pool: PgPool,
    pub http: reqwest::Client,
}

fn admin_url() -> String {
    std::env::var("STAYOPEN_TEST_DATABASE_URL").expect(
        "STAYOPEN_TEST_DATABASE_URL must name a PostgreSQL database this test may create databases from; \
         run the tests with infra/scripts/test.sh, which starts one",
    )
}

/// A fresh database per test, so tests run in parallel without seeing each other's rows.
async fn fresh_database() -> String {
    let admin = admin_url();
    let name = format!("stayopen_test_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

pub async fn spawn_cloud() -> TestCloud {
    let mut config = CloudConfig::default();
    config.database.url = fresh_database().await;
    let database_url = config.database.url.clone();
    config.database.max_connections = 5;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.workers = 1;
    config.http.static_dir = std::env::var_os("STAYOPEN_TEST_STATIC_DIR").map(Into::into);
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    config.auth.jwt_secret = Some("test-secret-test-secret-test-secret!".into());
    config.fleet.offline_after_secs = 10;
    let app = Application::build(config).await.expect("the cloud starts");
    let base_url = format!("http://{}", app.http_addr());
    let broker = app.broker_addr();
    let pool = app.state().pool.clone();
    tokio::spawn(app.run_until_stopped());
    TestCloud {
        base_url,
        database_url,
        broker,
        pool,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
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
        let response = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login must succeed");
        response
            .json::<LoginResponse>()
            .await
            .expect("login body")
            .access_token
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
