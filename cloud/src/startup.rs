//! Builds the whole cloud — database, broker, ingest, HTTP — so that `main` and the integration
//! tests start exactly the same thing. Ports may be 0: the chosen ones are reported back.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use utoipa_actix_web::AppExt;

use crate::domain::access::{TokenKeys, random_secret};
use crate::domain::alerts::sweeps;
use crate::domain::ingest;
use crate::domain::notifications::delivery;
use crate::infra::broker::{self, BrokerError, BrokerHandle};
use crate::infra::clock::Clock;
use crate::infra::config::CloudConfig;
use crate::infra::db::{self, DbError};
use crate::infra::device_link::DeviceLink;
use crate::infra::evidence_key::{EvidenceKey, EvidenceKeyError};
use crate::infra::hearing::Hearing;
use crate::infra::metrics::Metrics;
use crate::infra::pki::DeviceCa;
use crate::infra::supervisor::Supervisor;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot pick a free port for the broker: {0}")]
    FreePort(std::io::Error),
    #[error("cannot build the OpenAPI document: {0}")]
    OpenApi(String),
    #[error("evidence key: {0}")]
    EvidenceKey(#[from] EvidenceKeyError),
    #[error("device PKI: {0}")]
    Pki(#[from] crate::infra::pki::PkiError),
    #[error("cannot create telemetry partitions: {0}")]
    Partitions(#[from] sqlx::Error),
    #[error("cannot read or create the access-token signing key: {0}")]
    SigningKey(#[source] sqlx::Error),
}

pub struct Application {
    http_addr: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
    supervisor: Supervisor,
}

/// How long background work gets to stop after the HTTP server has finished its requests; the
/// HTTP server itself gets [`HTTP_SHUTDOWN_SECS`] for requests in flight.
pub const BACKGROUND_SHUTDOWN: Duration = Duration::from_secs(10);
const HTTP_SHUTDOWN_SECS: u64 = 10;

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    pub async fn build(mut config: CloudConfig) -> Result<Self, StartupError> {
        db::migrate(&config.database).await?;
        tracing::info!("database migrated");
        let pool = db::connect(&config.database).await?;
        db::ensure_unprivileged(&pool).await?;
        db::ensure_telemetry_partitions(&pool).await?;
        let supervisor = Supervisor::new();
        // The sweeps, digests and notification delivery read the time from this clock; tests run
        // them at times of their choosing by calling them directly.
        let clock = Clock::system();
        supervisor.spawn("telemetry partitions", maintain_partitions(pool.clone()));
        supervisor.spawn("telemetry roll-up", roll_up_telemetry(pool.clone()));

        if config.broker.listen.port() == 0 {
            // rumqttd binds inside its own thread and cannot report the port it got, so a free
            // port is chosen here.
            let probe = TcpListener::bind(config.broker.listen).map_err(StartupError::FreePort)?;
            config.broker.listen = probe.local_addr().map_err(StartupError::FreePort)?;
        }
        let metrics = Arc::new(Metrics::default());
        let ca = Arc::new(DeviceCa::load_or_create(&config.broker.tls_dir)?);
        let evidence_key = Arc::new(EvidenceKey::load_or_create(
            &config.evidence.key_path(&config.broker.tls_dir),
        )?);
        let mut hosts = vec![
            config.broker.public_host.clone(),
            "localhost".to_owned(),
            config.broker.listen.ip().to_string(),
        ];
        hosts.dedup();
        let broker_certificate = ca.broker_files(&config.broker.tls_dir, &hosts)?;
        ca.write_crl(
            &config.broker.tls_dir,
            &db::lookup::revoked_certificates(&pool).await?,
        )?;
        let revoker_secret = random_secret();
        let (incoming_tx, incoming_rx) = tokio::sync::mpsc::channel(1000);
        let (urgent_tx, urgent_rx) = tokio::sync::mpsc::channel(1000);
        let hearing = Arc::new(Hearing::new(
            clock.now(),
            Duration::from_secs(u64::from(config.fleet.offline_grace_secs)),
        ));
        let (broker_handle, device_link) = match &config.broker.external {
            None => {
                let (embedded, links, auth_requests) = broker::start(
                    config.broker.listen,
                    &broker_certificate.files,
                    metrics.clone(),
                )
                .await?;
                supervisor.spawn(
                    "broker certificate renewal",
                    crate::infra::pki::renew_broker_certificate(
                        ca.clone(),
                        config.broker.tls_dir.clone(),
                        hosts.clone(),
                        broker_certificate.not_after,
                    ),
                );
                supervisor.spawn(
                    "broker authentication",
                    crate::domain::enrolment::serve_auth_requests(
                        pool.clone(),
                        metrics.clone(),
                        revoker_secret.clone(),
                        auth_requests,
                    ),
                );
                let (ingest_tx, ingest_rx) = links.ingest;
                supervisor.spawn(
                    "broker to ingest (telemetry)",
                    broker::forward_embedded(
                        ingest_tx,
                        ingest_rx,
                        broker::ingest_channels(true),
                        incoming_tx,
                    ),
                );
                let (urgent_link_tx, urgent_link_rx) = links.ingest_urgent;
                supervisor.spawn(
                    "broker to ingest (events, presence, command results)",
                    broker::forward_embedded(
                        urgent_link_tx,
                        urgent_link_rx,
                        broker::ingest_channels(false),
                        urgent_tx,
                    ),
                );
                let (publisher_tx, publisher_rx) = links.publisher;
                let device_link = DeviceLink::start_embedded(
                    publisher_tx,
                    publisher_rx,
                    metrics.clone(),
                    &supervisor,
                );
                (BrokerHandle::Embedded(embedded), device_link)
            }
            Some(external) => {
                let addr = tokio::net::lookup_host((external.host.as_str(), external.port))
                    .await
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| {
                        BrokerError::External(format!(
                            "cannot resolve {}:{}",
                            external.host, external.port
                        ))
                    })?;
                let client_id = external.effective_client_id();
                let (client, connected) = broker::connect_external(
                    addr,
                    &client_id,
                    &external.ingest_group,
                    &ca,
                    broker::IngestSinks {
                        bulk: incoming_tx,
                        urgent: urgent_tx,
                    },
                    hearing.clone(),
                    &supervisor,
                )?;
                tracing::info!(%addr, %client_id, "using an external MQTT broker");
                (
                    BrokerHandle::External { addr, connected },
                    DeviceLink::start_external(client, metrics.clone(), &supervisor),
                )
            }
        };
        {
            let (pool, metrics, link, hearing) = (
                pool.clone(),
                metrics.clone(),
                device_link.clone(),
                hearing.clone(),
            );
            supervisor.spawn_cooperative("ingest", move |stop| {
                ingest::run(pool, metrics, link, hearing, incoming_rx, urgent_rx, stop)
            });
        }
        let hub = crate::infra::stream::Hub::new();
        supervisor.spawn("change feed", hub.clone().listen(pool.clone()));
        {
            let (pool, dispatch, clock, hub) = (
                pool.clone(),
                delivery::Dispatch::with_metrics(&config.alerts, metrics.clone()),
                clock.clone(),
                hub.clone(),
            );
            supervisor.spawn_cooperative("notification delivery", move |stop| {
                delivery::dispatch_loop(pool, dispatch, clock, hub, stop)
            });
        }
        supervisor.spawn(
            "heartbeat sweep",
            sweeps::heartbeat_loop(
                pool.clone(),
                config.fleet.offline_after_secs,
                hearing.clone(),
                metrics.clone(),
                clock.clone(),
            ),
        );
        supervisor.spawn(
            "long-backup sweep",
            sweeps::long_backup_loop(pool.clone(), clock.clone()),
        );
        supervisor.spawn(
            "certificate sweep",
            sweeps::certificate_loop(pool.clone(), clock.clone()),
        );
        supervisor.spawn(
            "drill and flapping sweep",
            sweeps::drill_and_flapping_loop(pool.clone(), clock.clone()),
        );
        supervisor.spawn(
            "drill schedule",
            crate::domain::compliance::drill_schedule::schedule_loop(
                pool.clone(),
                device_link.clone(),
                clock.clone(),
            ),
        );
        supervisor.spawn(
            "retention",
            crate::domain::compliance::retention::retention_loop(
                pool.clone(),
                clock.clone(),
                config.retention.telemetry_days,
            ),
        );
        supervisor.spawn(
            "command delivery",
            crate::domain::commands::deliver_loop(
                pool.clone(),
                device_link.clone(),
                config.fleet.offline_after_secs,
            ),
        );
        supervisor.spawn(
            "evidence package builder",
            crate::domain::evidence::jobs::worker_loop(
                pool.clone(),
                evidence_key.clone(),
                clock.clone(),
                Duration::from_millis(config.evidence.poll_interval_ms),
            ),
        );
        {
            let mailer = config.alerts.smtp.as_ref().and_then(|smtp| {
                crate::infra::email::Mailer::from_config(smtp)
                    .inspect_err(|e| {
                        tracing::error!(error = %e, "evidence announcements cannot be e-mailed")
                    })
                    .ok()
            });
            supervisor.spawn(
                "evidence schedule",
                crate::domain::evidence::monthly::schedule_loop(
                    pool.clone(),
                    clock.clone(),
                    mailer,
                    config.alerts.dashboard_url.clone(),
                ),
            );
        }
        supervisor.spawn(
            "announced policies",
            crate::domain::policy::republish_announced(pool.clone(), device_link.clone()),
        );
        {
            let (pool, link) = (pool.clone(), device_link.clone());
            supervisor.spawn("desired policies at start", async move {
                match crate::domain::policy::publish_all(&pool, &link).await {
                    Ok(count) => tracing::info!(count, "desired policies published"),
                    Err(e) => tracing::error!(error = %e, "publishing desired policies failed"),
                }
            });
        }

        // The configured key, or the one every instance shares through the database.
        let secret: secrecy::SecretString = match &config.auth.jwt_secret {
            Some(secret) => secret.clone(),
            None => crate::domain::access::signing_key::shared_secret(&pool)
                .await
                .map_err(StartupError::SigningKey)?,
        };
        let previous: Vec<&[u8]> = config
            .auth
            .previous_jwt_secrets
            .iter()
            .map(|previous| previous.expose_secret().as_bytes())
            .collect();
        let tokens = TokenKeys::with_previous(
            secret.expose_secret().as_bytes(),
            &previous,
            config.auth.token_ttl_minutes,
        )
        .for_audience(&config.edge.token_issuer, &config.edge.token_audience);
        let openapi_json = crate::http::openapi_document()
            .to_json()
            .map_err(|e| StartupError::OpenApi(e.to_string()))?;
        let listener =
            TcpListener::bind(config.http.listen).map_err(|source| StartupError::HttpBind {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StartupError::HttpBind {
                addr: config.http.listen,
                source,
            })?;
        let workers = config.http.workers;
        let static_dir = config.http.static_dir.clone();
        if let Some(dir) = &static_dir
            && !dir.join("index.html").exists()
        {
            tracing::warn!(dir = %dir.display(), "static_dir has no index.html; the dashboard will not load");
        }
        let state = web::Data::new(AppState {
            pool,
            tokens,
            metrics,
            config: Arc::new(config),
            broker: broker_handle,
            openapi_json,
            device_link,
            ca,
            revoker_secret,
            hub,
            evidence_key,
        });
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let static_dir = static_dir.clone();
            App::new()
                .into_utoipa_app()
                .app_data(app_state.clone())
                .configure(crate::http::extractor_config)
                .configure(crate::http::api_routes)
                .into_app()
                .wrap(middleware::from_fn(
                    crate::http::security_headers::security_headers,
                ))
                .wrap(crate::http::security_headers::request_logger())
                // Outermost: one OpenTelemetry server span per request, named by the route
                // template (not the raw path); no-op unless traces are exported
                // (`infra::observability`, which also keeps query strings out of them).
                .wrap(middleware::from_fn(crate::http::timing::request_duration))
                .wrap(opentelemetry_instrumentation_actix_web::RequestTracing::new())
                .configure(move |cfg| crate::http::configure(cfg, static_dir))
        })
        .workers(workers)
        .shutdown_timeout(HTTP_SHUTDOWN_SECS)
        .listen(listener)
        .map_err(|source| StartupError::HttpBind {
            addr: http_addr,
            source,
        })?
        .run();
        tracing::info!(%http_addr, "HTTP API listening");
        Ok(Self {
            http_addr,
            server,
            state,
            supervisor,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn broker_addr(&self) -> SocketAddr {
        self.state.broker.device_addr()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle that stops the HTTP server.
    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The background work, for tests that watch it stop.
    pub fn supervisor(&self) -> Supervisor {
        self.supervisor.clone()
    }

    /// Runs until the HTTP server stops (SIGINT/SIGTERM, or [`ServerHandle::stop`]): it stops
    /// accepting, finishes the requests in flight, then the background work is told to stop and
    /// awaited (ingest finishes and acknowledges the message it holds, delivery the notification
    /// it is sending).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        tracing::info!("HTTP stopped; stopping background work");
        let left = self.supervisor.shutdown(BACKGROUND_SHUTDOWN).await;
        tracing::info!(left, "background work stopped");
        served
    }
}

/// Every half minute, adds newly arrived telemetry to the hourly roll-up (month charts).
async fn roll_up_telemetry(pool: PgPool) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        every.tick().await;
        if let Err(e) = db::roll_up_telemetry(&pool).await {
            tracing::error!(error = %e, "telemetry roll-up failed; month charts lag until it works");
        }
    }
}

/// Keeps next month's telemetry partition ahead of the data.
async fn maintain_partitions(pool: PgPool) {
    let mut daily = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
    daily.tick().await;
    loop {
        daily.tick().await;
        if let Err(e) = db::ensure_telemetry_partitions(&pool).await {
            tracing::error!(error = %e, "creating telemetry partitions failed; rows go to the default partition");
        }
    }
}
