//! Session-safe failover: the WireGuard tunnel from an appliance to a StayOpen relay.
//!
//! Traffic inside the tunnel leaves the relay NATed to the relay's own public address, so the far
//! end of a telemedicine call sees one address before and after a failover; the appliance only
//! moves the tunnel's outer packets from one uplink to the other. These are the words the policy,
//! the telemetry and the cloud's relay API share.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What the appliance sends through the relay.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum TunnelMode {
    /// No tunnel: every flow is NATed straight out of the active uplink (and is cut at a failover).
    Off,
    /// Flows to the critical applications register and the telemedicine services go through the
    /// relay; the rest leaves directly.
    #[default]
    Critical,
    /// Every flow from the LAN goes through the relay.
    All,
}

impl TunnelMode {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The relay an appliance uses and its own place inside the tunnel. The cloud fills it into each
/// appliance's policy (`Policy::tunnel_relay`); a policy layer cannot set it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAssignment {
    /// The relay's name, for people ("relay-1").
    pub relay: String,
    /// Where the relay's WireGuard socket listens: `host:port`.
    pub endpoint: String,
    /// The relay's WireGuard public key, base64 (as `wg` prints it).
    pub public_key: String,
    /// The appliance's own inner address, unique across every appliance the relay serves.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub inner_address: Ipv4Addr,
}

/// One appliance as the relay knows it: its key and the only inner source address it may use.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayPeer {
    pub appliance_id: crate::ids::ApplianceId,
    /// WireGuard public key, base64.
    pub public_key: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub inner_address: Ipv4Addr,
}

/// The relay's peer list (`GET /api/v1/relay/peers`), answered to the relay's own token only.
/// `revision` changes whenever the list does; the relay sends it back as `If-None-Match` and
/// gets `304 Not Modified` while nothing changed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayPeerList {
    pub relay: String,
    pub revision: String,
    pub peers: Vec<RelayPeer>,
}

/// Where the tunnel stands on an appliance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum TunnelState {
    /// The policy says `off`, or the cloud has assigned no relay.
    Off,
    /// Handshaking with the relay; flows meant for it leave directly meanwhile.
    Connecting,
    /// The relay answers: flows meant for it go through it.
    Up,
    /// The relay stopped answering: those flows leave directly (NATed out of the active uplink)
    /// and an alert is raised, until the relay answers again.
    FallbackDirect,
}

impl TunnelState {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The tunnel in an appliance's telemetry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelReport {
    pub mode: TunnelMode,
    pub state: TunnelState,
    /// The relay's name, when one is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Seconds since the last completed handshake with the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake_secs: Option<u32>,
    /// Whether critical flows are being duplicated over every healthy uplink right now.
    pub redundant: bool,
    /// Bytes sent as duplicates this calendar month (UTC), per uplink name: the price of
    /// redundant mode, counted against `Policy::redundant_metered_cap_mb` on metered uplinks.
    #[serde(default)]
    pub redundant_bytes: std::collections::BTreeMap<String, u64>,
    /// Bytes through the tunnel since the agent started, both directions.
    #[serde(default)]
    pub tunnel_bytes: u64,
}

/// Well-known telemedicine services, by host name: their flows go through the tunnel in
/// `critical` mode and are duplicated in redundant mode. The policy's `telemedicine_services`
/// starts from this list.
pub const TELEMEDICINE_SERVICES: &[&str] = &[
    "doxy.me",
    "zoom.us",
    "teams.microsoft.com",
    "meet.google.com",
    "vsee.com",
    "webex.com",
    "amwell.com",
    "teladoc.com",
];

/// Checks one `telemedicine_services` entry: a host name, an IPv4 address or an IPv4 CIDR, each
/// optionally followed by `:port`. Returns what is wrong, in words.
pub fn destination_problem(entry: &str) -> Option<String> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Some(format!("{entry:?}: the port must be 1 to 65535"));
    }
    if let Some((address, prefix)) = host.split_once('/') {
        let valid =
            address.parse::<Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32);
        return (!valid).then(|| format!("{entry:?}: not an IPv4 CIDR such as 203.0.113.0/24"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!name_ok).then(|| format!("{entry:?}: not a host name, an IPv4 address or a CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_names_addresses_or_cidrs_with_an_optional_port() {
        for good in [
            "doxy.me",
            "zoom.us:443",
            "203.0.113.60",
            "203.0.113.0/24",
            "203.0.113.60:5004",
        ] {
            assert_eq!(destination_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "zoom.us:0",
            "zoom.us:99999",
            "203.0.113.0/33",
            "bad name",
            "-x.example",
            "http://zoom.us",
        ] {
            assert!(destination_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn every_built_in_telemedicine_service_is_a_valid_destination() {
        for service in TELEMEDICINE_SERVICES {
            assert_eq!(destination_problem(service), None);
        }
    }
}
