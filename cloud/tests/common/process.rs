//! The cloud as a real process (`stayopen-cloud serve`), for tests that kill it with SIGKILL and
//! start it again on the same database, certificates and ports — as a deployment restarts.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::PgPool;

pub struct CloudProcess {
    pub owner_url: String,
    pub app_url: String,
    pub http: SocketAddr,
    pub broker: SocketAddr,
    pub tls_dir: tempfile::TempDir,
    /// A superuser pool, to count rows across tenants.
    pub owner_pool: PgPool,
    /// The application role's pool (row-level security applies), for seeding.
    pub pool: PgPool,
    settings: Vec<(String, String)>,
    child: Option<Child>,
    /// Dropped after the process is killed; none for a sibling instance, whose first instance
    /// owns the database.
    _database: Option<super::TestDatabase>,
    starts: usize,
    /// The network namespace it runs in, if not this one (then it is only reachable from there,
    /// and readiness is read from its log).
    netns: Option<String>,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

impl CloudProcess {
    /// A fresh database and free ports; `settings` are extra `STAYOPEN_…` variables. Starts it.
    pub async fn start(settings: &[(&str, &str)]) -> Self {
        Self::start_in(settings, None).await
    }

    /// Runs in network namespace `netns`, listening on `ip` (HTTP 8080, MQTT 8883) and reaching
    /// PostgreSQL through its Unix socket in `socket_dir` (sockets cross namespaces; loopback
    /// TCP does not).
    pub async fn start_in_netns(netns: &str, ip: &str, socket_dir: &str) -> Self {
        Self::start_in_netns_with(netns, ip, socket_dir, &[]).await
    }

    /// As [`CloudProcess::start_in_netns`], with extra `STAYOPEN_…` settings.
    pub async fn start_in_netns_with(
        netns: &str,
        ip: &str,
        socket_dir: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let database = super::fresh_database().await;
        let (owner_url, app_url) = (database.owner_url.clone(), database.app_url.clone());
        let http = format!("{ip}:8080");
        let broker = format!("{ip}:8883");
        let settings = [
            ("DATABASE_URL", format!("{app_url}?host={socket_dir}")),
            (
                "STAYOPEN_DATABASE__OWNER_URL",
                format!("{owner_url}?host={socket_dir}"),
            ),
            ("STAYOPEN_HTTP__LISTEN", http.clone()),
            ("STAYOPEN_BROKER__LISTEN", broker.clone()),
            ("STAYOPEN_BROKER__PUBLIC_HOST", ip.to_owned()),
        ];
        let mut settings: Vec<(&str, &str)> =
            settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        settings.extend_from_slice(extra);
        let mut cloud = Self::build(database, &settings, Some(netns.to_owned())).await;
        cloud.http = http.parse().expect("address");
        cloud.broker = broker.parse().expect("address");
        cloud.spawn().await;
        cloud
    }

    async fn start_in(settings: &[(&str, &str)], netns: Option<String>) -> Self {
        let database = super::fresh_database().await;
        let mut cloud = Self::build(database, settings, netns).await;
        cloud.spawn().await;
        cloud
    }

    async fn build(
        database: super::TestDatabase,
        settings: &[(&str, &str)],
        netns: Option<String>,
    ) -> Self {
        let (owner_url, app_url) = (database.owner_url.clone(), database.app_url.clone());
        Self {
            owner_pool: sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(&owner_url)
                .await
                .expect("owner pool"),
            pool: sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy(&app_url)
                .expect("app pool"),
            owner_url,
            app_url,
            http: free_port(),
            broker: free_port(),
            tls_dir: tempfile::tempdir().expect("tls dir"),
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            starts: 0,
            netns,
            _database: Some(database),
        }
    }

    /// A second instance of the same deployment: the same database and PKI folder (the device CA),
    /// its own ports and log, `settings` on top of this one's. Not started.
    pub async fn sibling(&self, settings: &[(&str, &str)]) -> Self {
        let mut merged = self.settings.clone();
        merged.push((
            "STAYOPEN_BROKER__TLS_DIR".to_owned(),
            self.tls_dir.path().display().to_string(),
        ));
        for (key, value) in settings {
            merged.retain(|(k, _)| k != key);
            merged.push(((*key).to_owned(), (*value).to_owned()));
        }
        Self {
            owner_pool: self.owner_pool.clone(),
            pool: self.pool.clone(),
            owner_url: self.owner_url.clone(),
            app_url: self.app_url.clone(),
            http: free_port(),
            broker: free_port(),
            tls_dir: tempfile::tempdir().expect("log dir"),
            settings: merged,
            child: None,
            starts: 0,
            netns: None,
            _database: None,
        }
    }

    /// Whether this instance uses an external broker: then it is ready to the test once its HTTP
    /// API answers (`/healthz`); the test itself waits for the broker.
    fn external_broker(&self) -> bool {
        self.settings
            .iter()
            .any(|(k, _)| k == "STAYOPEN_BROKER__EXTERNAL__HOST")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The API as the caller holding `token`.
    pub fn api(&self, token: &str) -> super::client::ApiClient {
        super::client::ApiClient::new(reqwest::Client::new(), &self.base_url(), Some(token))
    }

    /// Signs in as `email` and returns the API as them.
    pub async fn api_as(&self, email: &str, password: &str) -> super::client::ApiClient {
        let session = super::client::ApiClient::new(reqwest::Client::new(), &self.base_url(), None)
            .login(email, password)
            .await
            .unwrap_or_else(|refused| panic!("login must succeed: {refused:?}"));
        self.api(&session.access_token)
    }

    /// The value of one counter line in the process's `/metrics`, 0 when absent.
    pub async fn counter(&self, line_prefix: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base_url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        super::counter_in(&text, line_prefix)
    }

    fn log_path(&self) -> PathBuf {
        self.tls_dir
            .path()
            .join(format!("cloud-{}.log", self.starts))
    }

    /// Starts the process (again) and waits until it is ready. On its first start, a port that
    /// another test took between [`free_port`] and the bind is replaced and the start retried.
    pub async fn spawn(&mut self) {
        for _ in 0..3 {
            match self.spawn_once().await {
                Ok(()) => return,
                Err(log) if self.starts == 1 && log.contains("Address already in use") => {
                    self.kill();
                    self.starts = 0;
                    self.http = free_port();
                    self.broker = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no free ports after three tries: {}", self.log());
    }

    async fn spawn_once(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let binary = env!("CARGO_BIN_EXE_stayopen-cloud");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, binary]);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .env("DATABASE_URL", &self.app_url)
            .env("STAYOPEN_DATABASE__OWNER_URL", &self.owner_url)
            .env("STAYOPEN_DATABASE__MAX_CONNECTIONS", "5")
            .env("STAYOPEN_HTTP__LISTEN", self.http.to_string())
            .env("STAYOPEN_HTTP__WORKERS", "1")
            .env("STAYOPEN_BROKER__LISTEN", self.broker.to_string())
            .env("STAYOPEN_BROKER__TLS_DIR", self.tls_dir.path())
            .env(
                "STAYOPEN_AUTH__JWT_SECRET",
                "test-secret-test-secret-test-secret!",
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in &self.settings {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("start stayopen-cloud"));
        let http = reqwest::Client::new();
        let ready = format!(
            "{}/{}",
            self.base_url(),
            if self.external_broker() {
                "healthz"
            } else {
                "readyz"
            }
        );
        for _ in 0..300 {
            let ready = if self.netns.is_some() {
                let log = self.log();
                log.contains("HTTP API listening") && log.contains("MQTT broker listening")
            } else {
                http.get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            };
            if ready {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("the cloud exited with {status}: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("the cloud did not become ready: {}", self.log()))
    }

    /// SIGKILL: no goodbye, no flush, no graceful shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a service manager stops it: waits up to `deadline` for the process to exit and
    /// returns its status, or `None` if it was still running (then it is killed).
    pub async fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = std::time::Instant::now();
        while started.elapsed() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// What the current run has logged, without the terminal colours.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut plain = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An SGR sequence: ESC [ … m.
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }
}

impl Drop for CloudProcess {
    fn drop(&mut self) {
        self.kill();
        // Every run's log joins the test run's logs, which are checked for secrets at the end.
        for start in 1..=self.starts {
            let log = self.tls_dir.path().join(format!("cloud-{start}.log"));
            super::logs::keep_file(&log, &format!("process-{start}"));
        }
    }
}
