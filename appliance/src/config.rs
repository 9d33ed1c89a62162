//! The appliance configuration file (TOML). `docs/appliance-config.md` documents every key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    pub appliance: ApplianceSection,
    /// Absent: the appliance runs standalone and reports nothing.
    #[serde(default)]
    pub cloud: Option<CloudSection>,
    pub lan: LanSection,
    pub uplinks: Vec<UplinkConfig>,
    #[serde(default)]
    pub probes: ProbeSection,
    pub dataplane: DataplaneSection,
    /// The session-safe tunnel to a StayOpen relay (issue 16). Absent: defaults; the tunnel runs
    /// only once the cloud's policy assigns a relay.
    #[serde(default)]
    pub tunnel: TunnelSection,
    /// `[cellular]`: reading cellular modems from ModemManager (issue 17). Absent: off.
    #[serde(default)]
    pub cellular: crate::cellular::CellularSection,
}

/// `[tunnel]`: the WireGuard tunnel's device and timers, and — for standalone use and test beds —
/// a static relay and the policy values used while no cloud policy has arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSection {
    /// The TUN device carrying inner packets.
    pub interface: String,
    /// The TUN device's MTU: 1380 leaves room for WireGuard's 60 bytes (IPv4) and a PPPoE or LTE
    /// path below 1500.
    pub mtu: u16,
    /// WireGuard persistent keepalive, and the relay-liveness ping, in seconds: the relay's view
    /// of the appliance's address follows a failover within one interval.
    pub keepalive_secs: u16,
    /// A static relay; the cloud policy's `tunnel_relay` takes precedence when there is one.
    pub relay: Option<stayopen_shared::tunnel::RelayAssignment>,
    /// The relay's own address inside the tunnel, which answers the liveness ping.
    pub relay_inner_address: std::net::Ipv4Addr,
    /// Tunnel mode while no cloud policy has arrived (the policy's `tunnel_mode` replaces it).
    pub mode: Option<stayopen_shared::tunnel::TunnelMode>,
    /// Redundant mode while no cloud policy has arrived.
    pub redundant_critical: Option<bool>,
    /// Critical destinations while no cloud policy has arrived: host names, IPv4 addresses or
    /// CIDRs, each with an optional `:port`. Default: the built-in telemedicine services.
    pub critical_destinations: Option<Vec<String>>,
}

impl Default for TunnelSection {
    fn default() -> Self {
        Self {
            interface: "so-tun0".into(),
            mtu: 1380,
            keepalive_secs: 1,
            relay: None,
            relay_inner_address: std::net::Ipv4Addr::new(100, 96, 0, 1),
            mode: None,
            redundant_critical: None,
            critical_destinations: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceSection {
    /// Where the enrolment result (appliance id, MQTT credentials) is kept across restarts.
    pub state_dir: PathBuf,
    /// Hardware identity overrides; detected from the machine when absent.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    /// Base URL of the cloud API, e.g. `https://cloud.example.net`.
    pub api_url: String,
    /// Used once, at first start; ignored once the appliance is enrolled. Either this or
    /// `factory_key_file`.
    #[serde(default)]
    pub enrollment_token: Option<String>,
    /// Zero-touch enrolment: a file holding this box's factory key; the MSP registered its serial
    /// number for a practice, so nothing is typed on site.
    #[serde(default)]
    pub factory_key_file: Option<PathBuf>,
    #[serde(default = "default_telemetry_interval")]
    pub telemetry_interval_secs: u32,
    /// The most the on-disk outbox holds while the cloud is unreachable, in MiB (see
    /// [`crate::outbox`]): 64 MiB is weeks of telemetry at the default cadence.
    #[serde(default = "default_outbox_max_mb")]
    pub outbox_max_mb: u32,
    /// Let `api_url` be plain `http://` (a lab, a test bed, a cloud behind a local TLS-terminating
    /// proxy). Off by default: the enrolment token and the device key's certificate request would
    /// otherwise cross the network readable and alterable.
    #[serde(default)]
    pub allow_plain_http: bool,
}

impl std::fmt::Debug for CloudSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudSection")
            .field("api_url", &self.api_url)
            .field(
                "enrollment_token",
                &self.enrollment_token.as_ref().map(|_| "<redacted>"),
            )
            .field("factory_key_file", &self.factory_key_file)
            .field("telemetry_interval_secs", &self.telemetry_interval_secs)
            .field("outbox_max_mb", &self.outbox_max_mb)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

fn default_telemetry_interval() -> u32 {
    10
}

fn default_outbox_max_mb() -> u32 {
    64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanSection {
    pub interface: String,
    /// The appliance's own address on the LAN side, with its prefix (`192.168.100.1/24`): the
    /// router's gateway and DNS server. Absent: the appliance runs no LAN services (no DHCP server,
    /// no DNS forwarder) and leaves the interface's addresses alone.
    #[serde(default)]
    pub address: Option<ipnet::Ipv4Net>,
    /// `[lan.dhcp_server]`: how the router's WAN port gets its address.
    #[serde(default)]
    pub dhcp_server: crate::lan::config::DhcpServerSection,
    /// `[lan.dns]`: the DNS forwarder the router is given as its DNS server.
    #[serde(default)]
    pub dns: crate::lan::config::DnsSection,
}

impl LanSection {
    /// The LAN on `interface`, with no LAN services: the router is addressed by hand and keeps
    /// its own DNS servers.
    pub fn without_services(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            address: None,
            dhcp_server: Default::default(),
            dns: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub name: String,
    pub interface: String,
    /// The next hop of a `static` uplink (required then); a `dhcp` uplink learns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Lower is preferred.
    pub priority: u8,
    /// How the uplink gets its address and gateway: `static` (the default: the interface is
    /// configured outside the agent, `gateway` given) or `dhcp` (the agent runs a DHCP client on
    /// the interface, see [`crate::dhcp`]).
    #[serde(default)]
    pub addressing: Addressing,
    /// Billed by volume (typically cellular): probed sparingly, and traffic leaves it as soon as a
    /// preferred uplink is healthy again.
    #[serde(default)]
    pub metered: bool,
    /// This uplink's DNS resolvers (its ISP's), which the LAN's DNS forwarder asks while the
    /// uplink carries traffic. Resolvers learned by DHCP are added to these.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// The ModemManager modem behind this uplink — its equipment identifier (IMEI), device
    /// identifier, D-Bus object path or index — when its data interface does not say (issue 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modem: Option<String>,
}

/// `uplinks[].addressing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    #[default]
    Static,
    Dhcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSection {
    /// Time between two probes on one uplink; the targets take turns.
    pub spacing_ms: u32,
    /// An uplink is down when fewer than `quorum` targets answered within this window.
    pub silence_ms: u32,
    pub quorum: usize,
    /// A probe not answered within this is lost.
    pub timeout_ms: u32,
    /// A down uplink must answer without a break for this long to count as up again.
    pub recovery_ms: u32,
    /// A recovered preferred uplink must stay up this long before traffic fails back to it.
    pub failback_clean_secs: u32,
    /// The failback hold doubles each time the preferred uplink fails again soon after traffic
    /// returned to it, up to this. Equal to `failback_clean_secs`: no damping.
    pub failback_max_hold_secs: u32,
    /// Probe targets, reached through each uplink in turn.
    pub targets: Vec<ProbeTarget>,
}

impl Default for ProbeSection {
    fn default() -> Self {
        Self {
            spacing_ms: 40,
            silence_ms: 700,
            quorum: 1,
            timeout_ms: 1000,
            recovery_ms: 2000,
            failback_clean_secs: 30,
            failback_max_hold_secs: 900,
            targets: Vec::new(),
        }
    }
}

/// What a probe checks. A bare address is an ICMP echo target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProbeTarget {
    Icmp(IpAddr),
    Detailed(ProbeKind),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProbeKind {
    Icmp {
        address: IpAddr,
    },
    /// A TCP handshake with `address`.
    Tcp {
        address: std::net::SocketAddr,
    },
    /// A DNS query for `name` (type A) sent to `server` port 53.
    Dns {
        server: IpAddr,
        name: String,
    },
    /// An HTTP(S) GET of a critical application's URL; any status below 500 is an answer.
    Http {
        url: String,
        /// Extra trusted root certificate (PEM) for HTTPS, e.g. a private EHR's CA; the public
        /// web roots are always trusted.
        #[serde(default)]
        ca_file: Option<std::path::PathBuf>,
    },
}

impl ProbeTarget {
    pub fn kind(&self) -> ProbeKind {
        match self {
            ProbeTarget::Icmp(address) => ProbeKind::Icmp { address: *address },
            ProbeTarget::Detailed(kind) => kind.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataplaneSection {
    /// Links that exist only in memory, with scripted behaviour: demos and tests.
    Simulated {
        /// Behaviour per uplink name; an uplink without an entry is a clean 20 ms link.
        #[serde(default)]
        links: BTreeMap<String, SimulatedLink>,
    },
    /// Real interfaces: per-uplink routing tables, nftables NAT, conntrack flushing.
    Linux {
        /// First routing table number; uplink `i` uses table and firewall mark `table_base + i`.
        #[serde(default = "default_table_base")]
        table_base: u32,
    },
}

fn default_table_base() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedLink {
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    /// Random probe loss, 0–100.
    pub loss_pct: f64,
    /// Traffic the practice sends while this uplink is active, bytes per second.
    pub traffic_bytes_per_sec: u64,
    /// Scripted failures, measured from agent start.
    pub outages: Vec<Outage>,
    /// When set, the outage script repeats with this period.
    pub repeat_every_secs: Option<u64>,
    /// Critical applications (by name) or endpoints (by their description: a URL, `tcp host:port`,
    /// `dns name`) that refuse connections through this link — a lab that allow-lists the
    /// practice's fixed fibre address, say.
    pub unreachable_apps: Vec<String>,
    /// The tunnel's relay does not answer through this link (a simulated relay outage seen from
    /// this uplink): while the link is active the tunnel falls back to direct NAT.
    pub relay_unreachable: bool,
    /// Critical traffic (a telemedicine call) the practice sends while this link is active,
    /// bytes per second: what the tunnel carries in `critical` mode and what redundant mode
    /// duplicates onto the other uplinks.
    pub critical_bytes_per_sec: u64,
    /// A simulated cellular modem on this link, reported like ModemManager's (issue 17).
    pub modem: Option<crate::cellular::simulated::SimulatedModem>,
}

impl Default for SimulatedLink {
    fn default() -> Self {
        Self {
            rtt_ms: 20.0,
            jitter_ms: 3.0,
            loss_pct: 0.0,
            traffic_bytes_per_sec: 200_000,
            outages: Vec::new(),
            repeat_every_secs: None,
            unreachable_apps: Vec::new(),
            relay_unreachable: false,
            critical_bytes_per_sec: 40_000,
            modem: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub start_secs: u64,
    pub duration_secs: u64,
    #[serde(default)]
    pub kind: OutageKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageKind {
    /// The link stays up but nothing gets through (an ISP's upstream failure).
    #[default]
    Blackhole,
    /// The link loses carrier (cable pulled, modem off).
    Carrier,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ApplianceConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid { key, message } => ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            },
        })
    }

    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let config: ApplianceConfig =
            toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ParseError> {
        let invalid = |key: &str, message: &str| ParseError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if self.uplinks.is_empty() {
            return Err(invalid("uplinks", "at least one uplink is required"));
        }
        for (i, uplink) in self.uplinks.iter().enumerate() {
            let key = |field: &str| format!("uplinks[{i}].{field}");
            if uplink.name.is_empty() || uplink.name.len() > 32 {
                return Err(invalid(&key("name"), "must be 1 to 32 characters"));
            }
            if uplink.interface.is_empty() || uplink.interface.len() > 15 {
                return Err(invalid(
                    &key("interface"),
                    "must be a Linux interface name (1 to 15 characters)",
                ));
            }
            if self.uplinks[..i].iter().any(|u| u.name == uplink.name) {
                return Err(invalid(
                    &key("name"),
                    &format!("duplicate uplink name {:?}", uplink.name),
                ));
            }
            if self.uplinks[..i]
                .iter()
                .any(|u| u.interface == uplink.interface)
            {
                return Err(invalid(
                    &key("interface"),
                    &format!("interface {:?} is used by two uplinks", uplink.interface),
                ));
            }
            if uplink.interface == self.lan.interface {
                return Err(invalid(
                    &key("interface"),
                    "an uplink cannot use the LAN interface",
                ));
            }
            match (uplink.addressing, uplink.gateway) {
                (Addressing::Static, None) => {
                    return Err(invalid(
                        &key("gateway"),
                        "is required for a static uplink (or set addressing = \"dhcp\" to learn it)",
                    ));
                }
                (Addressing::Dhcp, Some(_)) => {
                    return Err(invalid(
                        &key("gateway"),
                        "is learned by DHCP when addressing = \"dhcp\": remove it, or use static",
                    ));
                }
                _ => {}
            }
        }
        crate::lan::config::validate(self)?;
        let p = &self.probes;
        if !(10..=10_000).contains(&p.spacing_ms) {
            return Err(invalid("probes.spacing_ms", "must be between 10 and 10000"));
        }
        if p.silence_ms < 2 * p.spacing_ms || p.silence_ms > 60_000 {
            return Err(invalid(
                "probes.silence_ms",
                "must be at least twice probes.spacing_ms and at most 60000",
            ));
        }
        if !(10..=10_000).contains(&p.timeout_ms) {
            return Err(invalid("probes.timeout_ms", "must be between 10 and 10000"));
        }
        if p.recovery_ms > 600_000 {
            return Err(invalid("probes.recovery_ms", "must be at most 600000"));
        }
        if !(1..=86_400).contains(&p.failback_clean_secs) {
            return Err(invalid(
                "probes.failback_clean_secs",
                "must be between 1 and 86400",
            ));
        }
        if p.failback_max_hold_secs < p.failback_clean_secs || p.failback_max_hold_secs > 86_400 {
            return Err(invalid(
                "probes.failback_max_hold_secs",
                "must be between probes.failback_clean_secs and 86400",
            ));
        }
        let targets = p.targets.len().max(1);
        if p.quorum == 0 || p.quorum > targets {
            return Err(invalid(
                "probes.quorum",
                "must be between 1 and the number of targets",
            ));
        }
        for (i, target) in p.targets.iter().enumerate() {
            match target.kind() {
                ProbeKind::Dns { name, .. } if name.is_empty() || name.len() > 253 => {
                    return Err(invalid(
                        &format!("probes.targets[{i}].name"),
                        "must be a DNS name",
                    ));
                }
                ProbeKind::Http { url, .. }
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    return Err(invalid(
                        &format!("probes.targets[{i}].url"),
                        "must start with http:// or https://",
                    ));
                }
                _ => {}
            }
        }
        if matches!(self.dataplane, DataplaneSection::Linux { .. }) && p.targets.is_empty() {
            return Err(invalid(
                "probes.targets",
                "the linux dataplane needs at least one probe target",
            ));
        }
        if let Some(cloud) = &self.cloud {
            let plain = cloud.api_url.starts_with("http://");
            if !(plain || cloud.api_url.starts_with("https://")) {
                return Err(invalid(
                    "cloud.api_url",
                    "must start with https:// (or http:// with allow_plain_http = true)",
                ));
            }
            if plain && !cloud.allow_plain_http {
                return Err(invalid(
                    "cloud.api_url",
                    "is plain http://, which sends the enrolment token unencrypted: use https://, \
                     or set allow_plain_http = true in [cloud] for a lab or test bed",
                ));
            }
            match (&cloud.enrollment_token, &cloud.factory_key_file) {
                (Some(token), None) if token.trim().is_empty() => {
                    return Err(invalid("cloud.enrollment_token", "must not be empty"));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        "cloud.enrollment_token",
                        "give exactly one of enrollment_token and factory_key_file",
                    ));
                }
            }
            if !(1..=3600).contains(&cloud.telemetry_interval_secs) {
                return Err(invalid(
                    "cloud.telemetry_interval_secs",
                    "must be between 1 and 3600",
                ));
            }
            if !(1..=4096).contains(&cloud.outbox_max_mb) {
                return Err(invalid("cloud.outbox_max_mb", "must be between 1 and 4096"));
            }
        }
        self.validate_tunnel()?;
        crate::cellular::validate(self).map_err(|(key, message)| invalid(&key, &message))?;
        let links = match &self.dataplane {
            DataplaneSection::Simulated { links } => links.clone(),
            DataplaneSection::Linux { table_base } => {
                if !(1..=250).contains(table_base)
                    || *table_base as usize + self.uplinks.len() > 252
                {
                    return Err(invalid(
                        "dataplane.table_base",
                        "must leave room below table 253 for every uplink",
                    ));
                }
                BTreeMap::new()
            }
        };
        for (name, link) in &links {
            let key = |field: &str| format!("dataplane.links.{name}.{field}");
            if !self.uplinks.iter().any(|u| &u.name == name) {
                return Err(invalid(
                    &format!("dataplane.links.{name}"),
                    "names no configured uplink",
                ));
            }
            if !(0.0..=100.0).contains(&link.loss_pct) {
                return Err(invalid(&key("loss_pct"), "must be between 0 and 100"));
            }
            if link.rtt_ms < 0.0 || link.jitter_ms < 0.0 {
                return Err(invalid(
                    &key("rtt_ms"),
                    "rtt_ms and jitter_ms must not be negative",
                ));
            }
            if link.repeat_every_secs == Some(0) {
                return Err(invalid(&key("repeat_every_secs"), "must be positive"));
            }
        }
        Ok(())
    }
}

impl ApplianceConfig {
    fn validate_tunnel(&self) -> Result<(), ParseError> {
        let invalid = |key: &str, message: String| ParseError::Invalid {
            key: format!("tunnel.{key}"),
            message,
        };
        let t = &self.tunnel;
        if t.interface.is_empty() || t.interface.len() > 15 {
            return Err(invalid(
                "interface",
                "must be a Linux interface name (1 to 15 characters)".into(),
            ));
        }
        if t.interface == self.lan.interface
            || self.uplinks.iter().any(|u| u.interface == t.interface)
        {
            return Err(invalid(
                "interface",
                format!(
                    "{:?} is already the LAN's or an uplink's interface",
                    t.interface
                ),
            ));
        }
        if !(576..=1420).contains(&t.mtu) {
            return Err(invalid("mtu", "must be between 576 and 1420".into()));
        }
        if !(1..=60).contains(&t.keepalive_secs) {
            return Err(invalid("keepalive_secs", "must be between 1 and 60".into()));
        }
        if let Some(relay) = &t.relay {
            if relay.relay.is_empty() || relay.relay.len() > 64 {
                return Err(invalid("relay.relay", "must be 1 to 64 characters".into()));
            }
            if crate::tunnel::parse_endpoint(&relay.endpoint).is_none() {
                return Err(invalid(
                    "relay.endpoint",
                    format!(
                        "{:?} is not host:port, e.g. 203.0.113.50:51820",
                        relay.endpoint
                    ),
                ));
            }
            if let Err(e) = stayopen_tunnel::keys::parse_public(&relay.public_key) {
                return Err(invalid("relay.public_key", e.to_string()));
            }
            if relay.inner_address.is_unspecified() || relay.inner_address == t.relay_inner_address
            {
                return Err(invalid(
                    "relay.inner_address",
                    "must be this appliance's own inner address, not 0.0.0.0 nor the relay's"
                        .into(),
                ));
            }
        }
        if let Some(destinations) = &t.critical_destinations {
            if destinations.len() > 100 {
                return Err(invalid(
                    "critical_destinations",
                    "at most 100 entries".into(),
                ));
            }
            for (i, d) in destinations.iter().enumerate() {
                if let Some(problem) = stayopen_shared::tunnel::destination_problem(d) {
                    return Err(invalid(&format!("critical_destinations[{i}]"), problem));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"
[appliance]
state_dir = "/var/lib/stayopen"

[cloud]
api_url = "http://127.0.0.1:8080"
allow_plain_http = true
enrollment_token = "soe_abc"

[lan]
interface = "lan0"

[[uplinks]]
name = "fiber"
interface = "wan0"
gateway = "192.0.2.1"
priority = 0

[[uplinks]]
name = "lte"
interface = "wwan0"
gateway = "198.51.100.1"
priority = 1
metered = true

[probes]
targets = ["203.0.113.10", "203.0.113.11", { kind = "tcp", address = "203.0.113.12:443" }]

[dataplane]
kind = "simulated"

[dataplane.links.fiber]
rtt_ms = 12.0
outages = [{ start_secs = 60, duration_secs = 20 }, { start_secs = 120, duration_secs = 5, kind = "carrier" }]
"#;

    #[test]
    fn the_example_in_the_documentation_parses() {
        let doc = include_str!("../../docs/appliance-config.md");
        let start = doc
            .find("```toml")
            .map(|i| i + "```toml".len())
            .unwrap_or(0);
        let end = doc[start..]
            .find("```")
            .map(|i| start + i)
            .unwrap_or(doc.len());
        let config =
            ApplianceConfig::parse(&doc[start..end]).expect("documented example must parse");
        assert_eq!(config.uplinks.len(), 2);
    }

    #[test]
    fn the_documented_example_parses() {
        let config = ApplianceConfig::parse(EXAMPLE).expect("example must parse");
        assert_eq!(config.uplinks.len(), 2);
        assert_eq!(
            config.cloud.as_ref().map(|c| c.telemetry_interval_secs),
            Some(10)
        );
        assert_eq!(config.probes.spacing_ms, 40);
        assert_eq!(config.probes.targets.len(), 3);
    }

    const RELAY_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

    fn with_tunnel(section: &str) -> Result<ApplianceConfig, ParseError> {
        ApplianceConfig::parse(&format!("{EXAMPLE}\n[tunnel]\n{section}\n"))
    }

    #[test]
    fn the_tunnel_section_defaults_to_so_tun0_mtu_1380_and_a_one_second_keepalive() {
        let config = ApplianceConfig::parse(EXAMPLE).expect("parses");
        assert_eq!(config.tunnel.interface, "so-tun0");
        assert_eq!(config.tunnel.mtu, 1380);
        assert_eq!(config.tunnel.keepalive_secs, 1);
        assert_eq!(config.tunnel.relay, None);
    }

    #[test]
    fn a_static_relay_and_standalone_policy_values_parse() {
        let config = with_tunnel(&format!(
            "relay = {{ relay = \"relay-1\", endpoint = \"203.0.113.50:51820\", public_key = \"{RELAY_KEY}\", inner_address = \"100.96.0.2\" }}\n\
             mode = \"all\"\nredundant_critical = false\ncritical_destinations = [\"203.0.113.60:5004\", \"zoom.us\"]"
        ))
        .expect("parses");
        let relay = config.tunnel.relay.expect("relay");
        assert_eq!(relay.inner_address, std::net::Ipv4Addr::new(100, 96, 0, 2));
        assert_eq!(
            config.tunnel.mode,
            Some(stayopen_shared::tunnel::TunnelMode::All)
        );
        assert_eq!(config.tunnel.redundant_critical, Some(false));
    }

    #[test]
    fn bad_tunnel_values_are_refused_naming_the_key() {
        let relay = |endpoint: &str, key: &str, inner: &str| {
            format!(
                "relay = {{ relay = \"relay-1\", endpoint = \"{endpoint}\", public_key = \"{key}\", inner_address = \"{inner}\" }}"
            )
        };
        for (section, key) in [
            ("mtu = 9000".to_owned(), "tunnel.mtu"),
            ("keepalive_secs = 0".to_owned(), "tunnel.keepalive_secs"),
            ("interface = \"wan0\"".to_owned(), "tunnel.interface"),
            (
                relay("203.0.113.50", RELAY_KEY, "100.96.0.2"),
                "tunnel.relay.endpoint",
            ),
            (
                relay("203.0.113.50:51820", "not-a-key", "100.96.0.2"),
                "tunnel.relay.public_key",
            ),
            (
                relay("203.0.113.50:51820", RELAY_KEY, "100.96.0.1"),
                "tunnel.relay.inner_address",
            ),
            (
                "critical_destinations = [\"zoom.us:0\"]".to_owned(),
                "tunnel.critical_destinations[0]",
            ),
        ] {
            match with_tunnel(&section) {
                Err(ParseError::Invalid { key: named, .. }) => assert_eq!(named, key, "{section}"),
                other => panic!("{section}: expected an error naming {key}, got {other:?}"),
            }
        }
        assert!(matches!(
            with_tunnel("mode = \"sometimes\""),
            Err(ParseError::Syntax(m)) if m.contains("mode")
        ));
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let text = EXAMPLE.replace("metered = true", "metred = true");
        let err = ApplianceConfig::parse(&text).expect_err("typo must fail");
        assert!(err.to_string().contains("metred"), "{err}");
    }

    #[test]
    fn a_bad_gateway_address_is_named_in_the_error() {
        let text = EXAMPLE.replace("192.0.2.1", "not-an-ip");
        let err = ApplianceConfig::parse(&text).expect_err("bad ip must fail");
        assert!(err.to_string().contains("gateway"), "{err}");
    }

    #[test]
    fn duplicate_uplink_names_are_rejected_with_the_key() {
        let text = EXAMPLE.replace("name = \"lte\"", "name = \"fiber\"");
        let err = ApplianceConfig::parse(&text).expect_err("duplicate must fail");
        assert_eq!(
            err,
            ParseError::Invalid {
                key: "uplinks[1].name".into(),
                message: "duplicate uplink name \"fiber\"".into()
            }
        );
    }

    #[test]
    fn simulated_links_must_name_a_configured_uplink() {
        let text = EXAMPLE.replace("[dataplane.links.fiber]", "[dataplane.links.cable]");
        let err = ApplianceConfig::parse(&text).expect_err("unknown link must fail");
        assert!(err.to_string().contains("dataplane.links.cable"), "{err}");
    }

    #[test]
    fn a_plain_http_cloud_url_is_refused_without_the_explicit_opt_in() {
        let text = EXAMPLE.replace("allow_plain_http = true\n", "");
        let err = ApplianceConfig::parse(&text).expect_err("plain http must be refused");
        let ParseError::Invalid { key, message } = err else {
            panic!("not a validation error: {err}");
        };
        assert_eq!(key, "cloud.api_url");
        assert!(message.contains("allow_plain_http = true"), "{message}");
        let https = text.replace("http://127.0.0.1:8080", "https://cloud.example.net");
        ApplianceConfig::parse(&https).expect("https needs no opt-in");
        let ftp = text.replace("http://127.0.0.1:8080", "ftp://cloud.example.net");
        assert!(
            ApplianceConfig::parse(&ftp).is_err(),
            "other schemes stay refused"
        );
    }

    #[test]
    fn the_cloud_section_is_optional() {
        let start = EXAMPLE.find("[cloud]").unwrap_or(0);
        let end = EXAMPLE.find("[lan]").unwrap_or(0);
        let text = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        let config = ApplianceConfig::parse(&text).expect("standalone config");
        assert!(config.cloud.is_none());
    }

    #[test]
    fn an_uplink_with_a_gateway_and_no_addressing_stays_static() {
        let config = ApplianceConfig::parse(EXAMPLE).expect("parses");
        assert_eq!(config.uplinks[0].addressing, Addressing::Static);
        assert_eq!(
            config.uplinks[0].gateway,
            Some("192.0.2.1".parse().expect("ip"))
        );
    }

    #[test]
    fn a_dhcp_uplink_needs_no_gateway() {
        let text = EXAMPLE.replace(
            "gateway = \"192.0.2.1\"\npriority = 0",
            "priority = 0\naddressing = \"dhcp\"",
        );
        let config = ApplianceConfig::parse(&text).expect("parses");
        assert_eq!(config.uplinks[0].addressing, Addressing::Dhcp);
        assert_eq!(config.uplinks[0].gateway, None);
    }

    #[test]
    fn a_static_uplink_without_a_gateway_is_rejected_with_the_key_and_the_way_out() {
        let text = EXAMPLE.replace("gateway = \"198.51.100.1\"\n", "");
        let err = ApplianceConfig::parse(&text).expect_err("must fail");
        let ParseError::Invalid { key, message } = err else {
            panic!("{err}");
        };
        assert_eq!(key, "uplinks[1].gateway");
        assert!(message.contains("addressing = \"dhcp\""), "{message}");
    }

    #[test]
    fn a_dhcp_uplink_with_a_gateway_is_rejected() {
        let text = EXAMPLE.replace("priority = 1\n", "priority = 1\naddressing = \"dhcp\"\n");
        let err = ApplianceConfig::parse(&text).expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("uplinks[1].gateway: is learned by DHCP"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_addressing_mode_is_a_syntax_error_naming_it() {
        let text = EXAMPLE.replace("priority = 1\n", "priority = 1\naddressing = \"pppoe\"\n");
        let err = ApplianceConfig::parse(&text).expect_err("must fail");
        assert!(err.to_string().contains("pppoe"), "{err}");
    }
}
