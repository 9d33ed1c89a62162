//! Typed configuration.
//!
//! Sources, later ones winning: built-in defaults, the TOML file given with `--config`, then
//! environment variables `STAYOPEN_{SECTION}__{KEY}` (for example `STAYOPEN_HTTP__LISTEN`), and
//! finally the conventional `DATABASE_URL`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub broker: BrokerConfig,
    pub auth: AuthConfig,
    pub fleet: FleetConfig,
    pub alerts: AlertsConfig,
    pub retention: RetentionConfig,
    pub evidence: EvidenceConfig,
    pub edge: EdgeConfig,
}

/// The HTTP edge (issue 15): whom access tokens are for, the live-update stream's tickets and
/// limits, and HSTS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// The `iss` of access tokens; a token naming another issuer is refused.
    pub token_issuer: String,
    /// The `aud` of access tokens; a token for another audience is refused.
    pub token_audience: String,
    /// How long a stream ticket may wait to be redeemed (seconds).
    pub stream_ticket_ttl_secs: u32,
    /// How often an open live-update stream checks that its holder may still see it (seconds).
    pub stream_reauthorise_secs: u32,
    /// Open live-update streams per user or API token, per instance; the next one gets 429.
    pub max_streams_per_user: u32,
    /// Send `Strict-Transport-Security: max-age=…; includeSubDomains` with every response. Set it
    /// when the cloud is reached only over HTTPS (behind a TLS-terminating proxy); unset, HSTS is
    /// sent only to requests that arrived over TLS.
    pub hsts_max_age_secs: Option<u32>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            token_issuer: "stayopen-cloud".to_owned(),
            token_audience: "stayopen-api".to_owned(),
            stream_ticket_ttl_secs: 30,
            stream_reauthorise_secs: 60,
            max_streams_per_user: 5,
            hsts_max_age_secs: None,
        }
    }
}

impl EdgeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.token_issuer.trim().is_empty() || self.token_audience.trim().is_empty() {
            return Err(ConfigError::Semantic(
                "edge.token_issuer and edge.token_audience must not be empty".into(),
            ));
        }
        if !(1..=300).contains(&self.stream_ticket_ttl_secs) {
            return Err(ConfigError::Semantic(
                "edge.stream_ticket_ttl_secs must be between 1 and 300".into(),
            ));
        }
        if !(1..=3600).contains(&self.stream_reauthorise_secs) {
            return Err(ConfigError::Semantic(
                "edge.stream_reauthorise_secs must be between 1 and 3600".into(),
            ));
        }
        if !(1..=100).contains(&self.max_streams_per_user) {
            return Err(ConfigError::Semantic(
                "edge.max_streams_per_user must be between 1 and 100".into(),
            ));
        }
        Ok(())
    }
}

/// Evidence packages (issue 14).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// The Ed25519 key that signs evidence packages (PKCS#8 PEM, created on first start, 0600;
    /// back it up with the device CA). Default: `evidence-signing.key` in `broker.tls_dir`. Its
    /// public key is written beside it as `….pub.pem`.
    pub key_file: Option<PathBuf>,
    /// How often the package builder looks for queued packages when idle.
    pub poll_interval_ms: u64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            poll_interval_ms: 1000,
        }
    }
}

impl EvidenceConfig {
    /// Where the signing key lives.
    pub fn key_path(&self, tls_dir: &Path) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| tls_dir.join("evidence-signing.key"))
    }
}

/// How long records are kept. Compliance records (events, drills, incidents, roll-ups) are kept
/// six years whatever this says (HIPAA 164.316(b)(2)); only raw telemetry is configurable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days raw telemetry is kept; its hourly roll-ups stay six years.
    pub telemetry_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { telemetry_days: 90 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Let webhooks reach loopback and private addresses (an on-premise receiver, tests). Off by
    /// default so a webhook cannot be aimed at the cloud's own network.
    pub allow_private_webhook_targets: bool,
    /// Networks webhooks may reach although they are special-purpose (CIDR, e.g.
    /// `["203.0.113.80/32"]`): an explicit opt-in for one known receiver, where
    /// `allow_private_webhook_targets` would open everything. Empty by default.
    pub webhook_allowed_networks: Vec<String>,
    /// Attempts per notification before it becomes a dead letter.
    pub webhook_max_attempts: u32,
    /// The first retry waits this long; each later one twice as long (capped at 5 min).
    pub webhook_retry_base_ms: u64,
    /// Notifications held by a practice's rate limit go out as one digest this long after the
    /// first was held.
    pub digest_after_secs: u64,
    /// The dashboard's address, for links in e-mail (`https://stayopen.example.com`).
    pub dashboard_url: Option<String>,
    /// The mail server alert e-mail goes through; without it e-mail channels fail (and say so in
    /// their notifications' last error).
    pub smtp: Option<SmtpConfig>,
}

/// How the cloud reaches its mail server.
/// The password is a [`SecretString`]: redacted in `Debug`, never serialised, zeroised on drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default by `security`: 25, 587 (STARTTLS) or 465 (TLS).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, skip_serializing)]
    pub password: Option<SecretString>,
    /// The sender, e.g. `StayOpen alerts <alerts@msp.example>`.
    pub from: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS on the submission port (required, never downgraded).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain SMTP: only for a relay on the same host or a test sink.
    None,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            allow_private_webhook_targets: false,
            webhook_allowed_networks: Vec::new(),
            webhook_max_attempts: 8,
            webhook_retry_base_ms: 1000,
            digest_after_secs: 300,
            dashboard_url: None,
            smtp: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    /// The built dashboard (`frontend/dist`); the API still runs without it.
    pub static_dir: Option<PathBuf>,
    /// Reverse proxies in front of the cloud, as CIDRs (`["10.0.0.0/8", "2001:db8::1/128"]`).
    /// Only a request whose TCP peer is one of them has its `X-Forwarded-For` believed: the client
    /// is the rightmost address in it that is not itself a trusted proxy. Default: none, so the
    /// peer is the client and a forged header changes nothing. Sign-in throttling keys on it.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The URLs carry the role's password, so they are [`SecretString`]s: redacted in `Debug`, never
/// serialised (the defaults come from [`Default`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The application's connection: the non-owner `stayopen_app` role, so row-level security
    /// applies. The cloud refuses to serve through a superuser or the tables' owner.
    #[serde(skip_serializing)]
    pub url: SecretString,
    /// The schema owner's connection, used only to run migrations. Unset: `url` migrates (and must
    /// then be the owner, which only `migrate` accepts).
    #[serde(skip_serializing)]
    pub owner_url: Option<SecretString>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Where the embedded broker listens for appliances.
    pub listen: SocketAddr,
    /// The host appliances are told to connect to at enrolment (may differ from `listen` behind NAT
    /// or a load balancer).
    pub public_host: String,
    /// The port appliances are told to connect to; the `listen` port when absent.
    pub public_port: Option<u16>,
    /// Where the device CA (created on first start; back it up) and the broker's TLS certificate
    /// live. Devices connect over TLS with certificates this CA signed.
    pub tls_dir: PathBuf,
    /// Use an external MQTT broker (Mosquitto, EMQX …) instead of the embedded one; see
    /// `infra/mosquitto/` for the matching broker configuration and ACLs.
    pub external: Option<ExternalBrokerConfig>,
    /// How long a device certificate is valid (days, default 397). Appliances renew with proof of
    /// their key when a third of the lifetime remains.
    pub device_cert_days: u32,
}

/// An external broker the cloud connects to as a privileged client (certificate CN
/// `stayopen-cloud`, issued by the device CA at start).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalBrokerConfig {
    pub host: String,
    pub port: u16,
    /// This instance's MQTT client id. Every instance needs its own: a broker disconnects a
    /// client when another connects with the same id, so two instances sharing one would kick
    /// each other off in turn. Default: `stayopen-cloud-{hostname}` (a container's or pod's
    /// hostname is its own); set it when two instances share a host.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The shared-subscription group every instance's ingest joins (`$share/{group}/…`, MQTT v5
    /// shared subscriptions, which Mosquitto and EMQX also honour for 3.1.1 clients): the broker
    /// hands each device message to one instance of the group, so ingest is split between
    /// instances instead of repeated by each.
    #[serde(default = "default_ingest_group")]
    pub ingest_group: String,
}

fn default_ingest_group() -> String {
    "stayopen-ingest".into()
}

impl ExternalBrokerConfig {
    /// The broker at `host:port` with the default client id and group.
    pub fn at(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: None,
            ingest_group: default_ingest_group(),
        }
    }

    /// The client id this instance connects with ([`ExternalBrokerConfig::client_id`]).
    pub fn effective_client_id(&self) -> String {
        self.client_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("stayopen-cloud-{host}")
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let topic_safe = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if let Some(id) = &self.client_id
            && !topic_safe(id)
        {
            return Err(ConfigError::Semantic(
                "broker.external.client_id must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if !topic_safe(&self.ingest_group) {
            return Err(ConfigError::Semantic(
                "broker.external.ingest_group must be 1 to 64 letters, digits, '-', '_' or '.'"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The signing secrets are [`SecretString`]s: redacted in `Debug`, never serialised.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC secret for access tokens. When absent, one is generated on the first start and kept in
    /// the database (`access_token_keys`), shared by every instance.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// Secrets used before the current one: tokens they signed still verify until they expire, so
    /// rotating `jwt_secret` signs nobody out. Each token names its key (`kid`).
    #[serde(skip_serializing)]
    pub previous_jwt_secrets: Vec<SecretString>,
    /// Access tokens are short-lived; the dashboard renews them with its refresh token.
    pub token_ttl_minutes: u32,
    /// How long a sign-in lasts without activity (each refresh starts the period again).
    pub refresh_ttl_hours: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// An appliance that has published nothing for this long is shown offline even if its broker
    /// connection has not timed out yet: three missed telemetry messages at the 10 s default, plus
    /// slack for a slow link.
    pub offline_after_secs: u32,
    /// After the cloud starts, or hears again after being deaf (broker or database down), nobody
    /// is declared offline for this long: time for a whole fleet to reconnect (appliances back off
    /// up to 30 s between attempts) and for ingest to catch up. See `hearing.rs`.
    pub offline_grace_secs: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 2,
            static_dir: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://stayopen_app@127.0.0.1:5432/stayopen".into(),
            owner_url: None,
            max_connections: 10,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8883)),
            public_host: "127.0.0.1".to_owned(),
            public_port: None,
            tls_dir: PathBuf::from("/var/lib/stayopen-cloud/pki"),
            external: None,
            device_cert_days: crate::infra::pki::DEVICE_CERT_DAYS,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            previous_jwt_secrets: Vec::new(),
            token_ttl_minutes: 15,
            refresh_ttl_hours: 12,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            offline_after_secs: 35,
            offline_grace_secs: 90,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Semantic(String),
}

impl CloudConfig {
    /// Loads the configuration from defaults, the optional file and the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(CloudConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only `SECTION__KEY` variables are configuration; others sharing the prefix
        // (STAYOPEN_CONFIG, test harness variables) are not.
        let sections = Env::prefixed("STAYOPEN_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        figment = figment.merge(sections).merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "database.url".into()),
        );
        let config: CloudConfig = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.edge.validate()?;
        if self.http.workers == 0 {
            return Err(ConfigError::Semantic(
                "http.workers must be at least 1".into(),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Semantic(
                "database.max_connections must be at least 1".into(),
            ));
        }
        if self.auth.token_ttl_minutes == 0 {
            return Err(ConfigError::Semantic(
                "auth.token_ttl_minutes must be at least 1".into(),
            ));
        }
        if !(1..=2200).contains(&self.retention.telemetry_days) {
            return Err(ConfigError::Semantic(
                "retention.telemetry_days must be between 1 and 2200".into(),
            ));
        }
        if !(1..=20).contains(&self.alerts.webhook_max_attempts) {
            return Err(ConfigError::Semantic(
                "alerts.webhook_max_attempts must be between 1 and 20".into(),
            ));
        }
        if !(10..=60_000).contains(&self.alerts.webhook_retry_base_ms) {
            return Err(ConfigError::Semantic(
                "alerts.webhook_retry_base_ms must be between 10 and 60000".into(),
            ));
        }
        if !(1..=86_400).contains(&self.alerts.digest_after_secs) {
            return Err(ConfigError::Semantic(
                "alerts.digest_after_secs must be between 1 and 86400".into(),
            ));
        }
        if let Some(smtp) = &self.alerts.smtp {
            if smtp.host.trim().is_empty() {
                return Err(ConfigError::Semantic("alerts.smtp.host is empty".into()));
            }
            if let Err(e) = smtp.from.parse::<lettre::message::Mailbox>() {
                return Err(ConfigError::Semantic(format!(
                    "alerts.smtp.from {:?} is not a mail address: {e}",
                    smtp.from
                )));
            }
            if smtp.username.is_some() != smtp.password.is_some() {
                return Err(ConfigError::Semantic(
                    "alerts.smtp.username and alerts.smtp.password go together".into(),
                ));
            }
        }
        if !(1..=3650).contains(&self.broker.device_cert_days) {
            return Err(ConfigError::Semantic(
                "broker.device_cert_days must be between 1 and 3650".into(),
            ));
        }
        if !(50..=60_000).contains(&self.evidence.poll_interval_ms) {
            return Err(ConfigError::Semantic(
                "evidence.poll_interval_ms must be between 50 and 60000".into(),
            ));
        }
        if let Some(external) = &self.broker.external {
            external.validate()?;
        }
        if self.auth.refresh_ttl_hours == 0 {
            return Err(ConfigError::Semantic(
                "auth.refresh_ttl_hours must be at least 1".into(),
            ));
        }
        if self
            .auth
            .previous_jwt_secrets
            .iter()
            .any(|s| s.expose_secret().len() < 32)
        {
            return Err(ConfigError::Semantic(
                "auth.previous_jwt_secrets must each be at least 32 characters".into(),
            ));
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose_secret().len() < 32
        {
            return Err(ConfigError::Semantic(
                "auth.jwt_secret must be at least 32 characters".into(),
            ));
        }
        Ok(())
    }

    pub fn broker_public_port(&self) -> u16 {
        self.broker
            .public_port
            .unwrap_or(match &self.broker.external {
                Some(external) => external.port,
                None => self.broker.listen.port(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_of_the_configuration_reaches_debug_output() {
        let mut config = CloudConfig::default();
        config.database.url = "postgres://app:hunter2@db:5432/x".into();
        config.database.owner_url = Some("postgres://owner:swordfish@db:5432/x".into());
        config.auth.jwt_secret = Some("jwt-current-secret".into());
        config.auth.previous_jwt_secrets = vec!["jwt-previous-secret".into()];
        config.alerts.smtp = Some(SmtpConfig {
            host: "mail.example".into(),
            port: None,
            security: SmtpSecurity::default(),
            username: Some("alerts".into()),
            password: Some("smtp-password".into()),
            from: "alerts@msp.example".into(),
        });
        let shown = format!("{config:?}");
        for secret in [
            "hunter2",
            "swordfish",
            "jwt-current-secret",
            "jwt-previous-secret",
            "smtp-password",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("mail.example"), "{shown}");
    }

    #[test]
    fn a_secret_from_the_file_is_read_and_the_defaults_of_other_secrets_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cloud.toml");
        std::fs::write(
            &path,
            "[auth]\njwt_secret = \"from-the-file-0123456789abcdef-0123\"\n",
        )
        .expect("write");
        let config = CloudConfig::load(Some(&path)).expect("load");
        assert_eq!(
            config
                .auth
                .jwt_secret
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("from-the-file-0123456789abcdef-0123")
        );
        assert_eq!(
            config.database.url.expose_secret(),
            DatabaseConfig::default().url.expose_secret()
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cloud.toml");
        std::fs::write(&path, "[http]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .expect("write");
        let err = CloudConfig::load(Some(&path)).expect_err("unknown key must fail");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/cloud.example.toml");
        let config = CloudConfig::load(Some(&path)).expect("example parses");
        assert_eq!(config.http.listen.port(), 8080);
        assert_eq!(config.broker_public_port(), 8883);
    }

    #[test]
    fn each_instance_gets_its_own_client_id_and_a_group_that_could_break_a_topic_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cloud.toml");
        let write = |external: &str| {
            std::fs::write(
                &path,
                format!("[broker.external]\nhost = \"mqtt\"\nport = 8883\n{external}"),
            )
            .expect("write");
        };
        write("");
        let config = CloudConfig::load(Some(&path)).expect("defaults");
        let external = config.broker.external.expect("external");
        assert_eq!(external.ingest_group, "stayopen-ingest");
        assert!(
            external
                .effective_client_id()
                .starts_with("stayopen-cloud-"),
            "{}",
            external.effective_client_id()
        );
        write("client_id = \"stayopen-cloud-b\"\n");
        let config = CloudConfig::load(Some(&path)).expect("client id");
        assert_eq!(
            config
                .broker
                .external
                .expect("external")
                .effective_client_id(),
            "stayopen-cloud-b"
        );
        for (line, key) in [
            ("ingest_group = \"all/#\"\n", "broker.external.ingest_group"),
            ("ingest_group = \"\"\n", "broker.external.ingest_group"),
            ("client_id = \"a+b\"\n", "broker.external.client_id"),
        ] {
            write(line);
            let err = CloudConfig::load(Some(&path)).expect_err(line);
            assert!(err.to_string().contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn a_missing_file_is_reported_by_path() {
        let err =
            CloudConfig::load(Some(Path::new("/nonexistent/cloud.toml"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/cloud.toml"));
    }
}
