//! The relay's configuration file (`relay.toml`, documented in docs/relay.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::keys::{KeyPair, parse_public};

use super::PeerEntry;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
    #[error("private key file {path}: {detail}")]
    Key { path: String, detail: String },
}

/// `relay.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The WireGuard UDP socket.
    pub listen: SocketAddr,
    /// The relay's WireGuard private key (base64), relative to the config file's directory.
    pub private_key_file: PathBuf,
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
    /// The inner addresses; the relay's own is the first host.
    pub inner_network: Ipv4Net,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Inner traffic leaves NATed (masqueraded) out of this interface.
    pub public_interface: String,
    /// `GET /healthz` and `GET /metrics`.
    pub http_listen: SocketAddr,
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    #[serde(default)]
    pub peers: Vec<StaticPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    pub url: String,
    /// The `sor_…` token `stayopen-cloud admin relay-add` printed, relative to the config file.
    pub token_file: PathBuf,
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPeer {
    pub public_key: String,
    pub inner_address: Ipv4Addr,
}

fn default_tun_name() -> String {
    "so-relay0".to_owned()
}

fn default_mtu() -> u16 {
    1380
}

fn default_poll_secs() -> u64 {
    5
}

impl RelayConfig {
    /// Reads and checks `path`; relative file names in it are made relative to its directory.
    pub fn load(path: &Path) -> Result<RelayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = RelayConfig::parse(&text).map_err(|detail| ConfigError::Invalid {
            path: path.display().to_string(),
            detail,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.private_key_file = base.join(&config.private_key_file);
        if let Some(cloud) = config.cloud.as_mut() {
            cloud.token_file = base.join(&cloud.token_file);
        }
        Ok(config)
    }

    /// Parses and checks the text of a config file; the error names the key at fault.
    pub fn parse(text: &str) -> Result<RelayConfig, String> {
        let config: RelayConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.inner_network.prefix_len() > 30 {
            return Err(format!(
                "inner_network: {} leaves no room for peers (at most /30)",
                config.inner_network
            ));
        }
        if !(576..=9000).contains(&config.mtu) {
            return Err(format!("mtu: {} is not between 576 and 9000", config.mtu));
        }
        if config.tun_name.is_empty() || config.tun_name.len() > 15 {
            return Err(format!(
                "tun_name: {:?} must be 1 to 15 characters",
                config.tun_name
            ));
        }
        if config.public_interface.is_empty() || config.public_interface.len() > 15 {
            return Err(format!(
                "public_interface: {:?} must be 1 to 15 characters",
                config.public_interface
            ));
        }
        if let Some(cloud) = &config.cloud {
            if !(cloud.url.starts_with("http://") || cloud.url.starts_with("https://")) {
                return Err(format!("cloud.url: {:?} is not an http(s) URL", cloud.url));
            }
            if cloud.poll_secs == 0 {
                return Err("cloud.poll_secs: must be at least 1".to_owned());
            }
        }
        for (i, peer) in config.peers.iter().enumerate() {
            if let Err(e) = parse_public(&peer.public_key) {
                return Err(format!("peers[{i}].public_key: {e}"));
            }
        }
        Ok(config)
    }

    /// The static `[[peers]]`.
    pub fn static_peers(&self) -> Vec<PeerEntry> {
        self.peers
            .iter()
            .filter_map(|p| {
                Some(PeerEntry {
                    public_key: parse_public(&p.public_key).ok()?,
                    inner_address: p.inner_address,
                })
            })
            .collect()
    }
}

/// Reads the relay's private key from `path`, or creates it (mode 0600) when absent.
pub fn load_or_create_key(path: &Path) -> Result<KeyPair, ConfigError> {
    let key_error = |detail: String| ConfigError::Key {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => KeyPair::from_private_base64(&text).map_err(|e| key_error(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let pair = KeyPair::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| key_error(e.to_string()))?;
            writeln!(file, "{}", pair.private_base64()).map_err(|e| key_error(e.to_string()))?;
            Ok(pair)
        }
        Err(e) => Err(key_error(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "0.0.0.0:51820"
private_key_file = "relay.key"
tun_name = "so-relay0"
inner_network = "100.96.0.0/12"
mtu = 1380
public_interface = "up0"
http_listen = "127.0.0.1:9810"
[cloud]
url = "http://127.0.0.1:8080"
token_file = "relay.token"
poll_secs = 5
[[peers]]
public_key = "KEY"
inner_address = "100.96.0.2"
"#;

    fn good() -> String {
        GOOD.replace("KEY", &KeyPair::generate().public_base64())
    }

    #[test]
    fn the_documented_config_parses() {
        let config = RelayConfig::parse(&good()).expect("parses");
        assert_eq!(config.listen.port(), 51820);
        assert_eq!(config.static_peers().len(), 1);
        assert_eq!(config.cloud.expect("cloud").poll_secs, 5);
    }

    #[test]
    fn a_bad_file_is_refused_with_the_key_named() {
        for (from, to, key) in [
            (
                "listen = \"0.0.0.0:51820\"",
                "listen = \"nowhere\"",
                "listen",
            ),
            ("mtu = 1380", "mtu = 100", "mtu"),
            ("mtu = 1380", "mtu = 1380\nmtuu = 1", "mtuu"),
            (
                "inner_network = \"100.96.0.0/12\"",
                "inner_network = \"100.96.0.0/31\"",
                "inner_network",
            ),
            ("public_key = \"", "public_key = \"x", "peers[0].public_key"),
            ("poll_secs = 5", "poll_secs = 0", "cloud.poll_secs"),
            ("http_listen = \"127.0.0.1:9810\"\n", "", "http_listen"),
        ] {
            let text = good().replace(from, to);
            let error = RelayConfig::parse(&text).expect_err(to);
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn the_key_file_is_created_0600_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.key");
        let first = load_or_create_key(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_key(&path).expect("read");
        assert_eq!(first.public(), again.public());
        std::fs::write(&path, "garbage").expect("write");
        assert!(load_or_create_key(&path).is_err());
    }
}
