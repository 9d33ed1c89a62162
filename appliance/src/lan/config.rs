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
