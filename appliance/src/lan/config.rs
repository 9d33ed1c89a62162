//! `[lan.dhcp_server]` and `[lan.dns]`: the LAN services' part of the configuration file, and its
//! validation (`docs/appliance-config.md` documents the keys).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::config::{ApplianceConfig, ParseError};

/// The lease a router gets when the file names none: an hour, so an address change (a new pool,
/// a reservation) reaches the router within half of it, at its renewal.
const DEFAULT_LEASE_SECS: u32 = 3600;
/// Entries in the DNS cache when the file names no size: a practice's working set of names.
const DEFAULT_CACHE_SIZE: usize = 1024;

/// How the router's WAN port is addressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DhcpMode {
    /// The appliance runs a DHCP server on the LAN interface, as the modem did.
    #[default]
    Server,
    /// No DHCP server: the router's WAN port is set by hand to an address in the LAN subnet, with
    /// the appliance as gateway and DNS server.
    Static,
}

/// `[lan.dhcp_server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpServerSection {
    pub mode: DhcpMode,
    /// The first and last address handed out. Default: every host address of the LAN subnet
    /// except the appliance's own.
    pub pool_start: Option<Ipv4Addr>,
    pub pool_end: Option<Ipv4Addr>,
    pub lease_secs: u32,
    /// Fixed addresses by MAC address; they may lie outside the pool.
    pub reservations: Vec<Reservation>,
    /// Static mode: the address typed into the router, which the agent names in its log with the
    /// rest of what to type (mask, gateway, DNS).
    pub router_address: Option<Ipv4Addr>,
}

impl Default for DhcpServerSection {
    fn default() -> Self {
        Self {
            mode: DhcpMode::Server,
            pool_start: None,
            pool_end: None,
            lease_secs: DEFAULT_LEASE_SECS,
            reservations: Vec::new(),
            router_address: None,
        }
    }
}

/// One fixed address: `{ mac = "02:00:00:00:00:10", address = "192.168.100.2" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub mac: String,
    pub address: Ipv4Addr,
}

/// `[lan.dns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// Off: the DHCP server hands out no DNS server and nothing listens on port 53.
    pub enabled: bool,
    /// Answers kept, at most; 0 turns the cache off.
    pub cache_size: usize,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with dashes), any case.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// The LAN services' keys of `config`, checked.
pub(crate) fn validate(config: &ApplianceConfig) -> Result<(), ParseError> {
    let invalid = |key: &str, message: String| ParseError::Invalid {
        key: key.to_owned(),
        message,
    };
    for (i, uplink) in config.uplinks.iter().enumerate() {
        if uplink.dns.len() > 8 {
            return Err(invalid(
                &format!("uplinks[{i}].dns"),
                "at most 8 resolvers".into(),
            ));
        }
        if let Some(bad) = uplink
            .dns
            .iter()
            .find(|a| a.is_unspecified() || a.is_loopback() || a.is_multicast())
        {
            return Err(invalid(
                &format!("uplinks[{i}].dns"),
                format!("{bad} is not a resolver's address"),
            ));
        }
        if uplink.dns.iter().any(IpAddr::is_ipv6) {
            return Err(invalid(
                &format!("uplinks[{i}].dns"),
                "only IPv4 resolvers are supported".into(),
            ));
        }
    }
    let lan = &config.lan;
    let Some(net) = lan.address else {
        return Ok(());
    };
    if !(8..=30).contains(&net.prefix_len()) {
        return Err(invalid(
            "lan.address",
            "the prefix must be between /8 and /30".into(),
        ));
    }
    if net.addr() == net.network() || net.addr() == net.broadcast() {
        return Err(invalid(
            "lan.address",
            format!(
                "{} is the subnet's network or broadcast address",
                net.addr()
            ),
        ));
    }
    let host = |a: Ipv4Addr| net.contains(&a) && a != net.network() && a != net.broadcast();
    let d = &lan.dhcp_server;
    if !(60..=7 * 24 * 3600).contains(&d.lease_secs) {
        return Err(invalid(
            "lan.dhcp_server.lease_secs",
            "must be between 60 and 604800 (a week)".into(),
        ));
    }
    for (key, address) in [
        ("lan.dhcp_server.pool_start", d.pool_start),
        ("lan.dhcp_server.pool_end", d.pool_end),
        ("lan.dhcp_server.router_address", d.router_address),
    ] {
        if let Some(a) = address
            && !host(a)
        {
            return Err(invalid(
                key,
                format!(
                    "{a} is not a host address of the LAN subnet {}",
                    net.trunc()
                ),
            ));
        }
    }
    if d.router_address == Some(net.addr()) {
        return Err(invalid(
            "lan.dhcp_server.router_address",
            "is the appliance's own address".into(),
        ));
    }
    if let (Some(start), Some(end)) = (d.pool_start, d.pool_end)
        && start > end
    {
        return Err(invalid(
            "lan.dhcp_server.pool_end",
            "comes before pool_start".into(),
        ));
    }
    for (i, r) in d.reservations.iter().enumerate() {
        let key = |field: &str| format!("lan.dhcp_server.reservations[{i}].{field}");
        let Some(mac) = parse_mac(&r.mac) else {
            return Err(invalid(
                &key("mac"),
                format!("{:?} is not a MAC address like 02:00:00:00:00:10", r.mac),
            ));
        };
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(invalid(
                &key("mac"),
                "a multicast or all-zero MAC address is no device's".into(),
            ));
        }
        if !host(r.address) || r.address == net.addr() {
            return Err(invalid(
                &key("address"),
                format!(
                    "{} is not a free host address of the LAN subnet {}",
                    r.address,
                    net.trunc()
                ),
            ));
        }
        let earlier = &d.reservations[..i];
        if earlier.iter().any(|e| parse_mac(&e.mac) == Some(mac)) {
            return Err(invalid(&key("mac"), "reserved twice".into()));
        }
        if earlier.iter().any(|e| e.address == r.address) {
            return Err(invalid(&key("address"), "reserved twice".into()));
        }
    }
    if lan.dns.cache_size > 100_000 {
        return Err(invalid(
            "lan.dns.cache_size",
            "must be at most 100000".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{ApplianceConfig, ParseError};

    use super::*;

    const BASE: &str = r#"
[appliance]
state_dir = "/var/lib/stayopen"

[lan]
interface = "lan0"
address = "192.168.100.1/24"

[[uplinks]]
name = "fiber"
interface = "wan0"
gateway = "192.0.2.1"
priority = 0
dns = ["192.0.2.53"]

[[uplinks]]
name = "lte"
interface = "wwan0"
gateway = "198.51.100.1"
priority = 1
metered = true

[dataplane]
kind = "simulated"
"#;

    fn with(extra: &str) -> Result<ApplianceConfig, ParseError> {
        ApplianceConfig::parse(&format!("{BASE}\n{extra}\n"))
    }

    fn refused_key(text: &str) -> String {
        match ApplianceConfig::parse(text) {
            Err(ParseError::Invalid { key, .. }) => key,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn lan_services_default_to_a_dhcp_server_over_the_whole_subnet_and_a_forwarder() {
        let config = with("").expect("parses");
        assert_eq!(
            config.lan.address.map(|a| a.to_string()),
            Some("192.168.100.1/24".into())
        );
        assert_eq!(config.lan.dhcp_server.mode, DhcpMode::Server);
        assert_eq!(config.lan.dhcp_server.lease_secs, 3600);
        assert!(config.lan.dns.enabled);
        assert_eq!(config.uplinks[0].dns, vec![IpAddr::from([192, 0, 2, 53])]);
        assert!(config.uplinks[1].dns.is_empty());
        let server = crate::lan::dhcp_server::ServerConfig::from_section(
            config.lan.address.expect("address"),
            &config.lan.dhcp_server,
            true,
        );
        assert_eq!(server.pool_start, Ipv4Addr::new(192, 168, 100, 1));
        assert_eq!(server.pool_end, Ipv4Addr::new(192, 168, 100, 254));
    }

    #[test]
    fn a_config_without_a_lan_address_runs_no_lan_services_and_still_parses() {
        let text = BASE.replace("address = \"192.168.100.1/24\"\n", "");
        let config = ApplianceConfig::parse(&text).expect("parses");
        assert_eq!(config.lan.address, None);
    }

    #[test]
    fn static_mode_and_reservations_parse() {
        let config = with(
            "[lan.dhcp_server]\nmode = \"static\"\nrouter_address = \"192.168.100.2\"\n\
             reservations = [{ mac = \"02:00:00:00:00:10\", address = \"192.168.100.20\" }]",
        )
        .expect("parses");
        assert_eq!(config.lan.dhcp_server.mode, DhcpMode::Static);
        assert_eq!(
            parse_mac(&config.lan.dhcp_server.reservations[0].mac),
            Some([2, 0, 0, 0, 0, 0x10])
        );
    }

    #[test]
    fn bad_lan_values_are_refused_naming_the_key() {
        let lan = |address: &str| BASE.replace("192.168.100.1/24", address);
        assert_eq!(refused_key(&lan("192.168.100.0/24")), "lan.address");
        assert_eq!(refused_key(&lan("192.168.100.1/31")), "lan.address");
        for (section, key) in [
            ("pool_start = \"10.0.0.1\"", "lan.dhcp_server.pool_start"),
            ("pool_end = \"192.168.100.255\"", "lan.dhcp_server.pool_end"),
            (
                "pool_start = \"192.168.100.200\"\npool_end = \"192.168.100.100\"",
                "lan.dhcp_server.pool_end",
            ),
            ("lease_secs = 10", "lan.dhcp_server.lease_secs"),
            (
                "router_address = \"192.168.100.1\"",
                "lan.dhcp_server.router_address",
            ),
            (
                "reservations = [{ mac = \"nope\", address = \"192.168.100.20\" }]",
                "lan.dhcp_server.reservations[0].mac",
            ),
            (
                "reservations = [{ mac = \"ff:ff:ff:ff:ff:ff\", address = \"192.168.100.20\" }]",
                "lan.dhcp_server.reservations[0].mac",
            ),
            (
                "reservations = [{ mac = \"02:00:00:00:00:10\", address = \"10.1.1.1\" }]",
                "lan.dhcp_server.reservations[0].address",
            ),
            (
                "reservations = [{ mac = \"02:00:00:00:00:10\", address = \"192.168.100.20\" }, \
                 { mac = \"02:00:00:00:00:10\", address = \"192.168.100.21\" }]",
                "lan.dhcp_server.reservations[1].mac",
            ),
        ] {
            assert_eq!(
                refused_key(&format!("{BASE}\n[lan.dhcp_server]\n{section}\n")),
                key,
                "{section}"
            );
        }
        assert_eq!(
            refused_key(&format!("{BASE}\n[lan.dns]\ncache_size = 1000000\n")),
            "lan.dns.cache_size"
        );
        assert_eq!(
            refused_key(&BASE.replace("[\"192.0.2.53\"]", "[\"127.0.0.1\"]")),
            "uplinks[0].dns"
        );
        assert_eq!(
            refused_key(&BASE.replace("[\"192.0.2.53\"]", "[\"2001:db8::53\"]")),
            "uplinks[0].dns"
        );
        assert!(matches!(
            with("[lan.dhcp_server]\nmode = \"relay\""),
            Err(ParseError::Syntax(m)) if m.contains("mode")
        ));
    }
}
