//! Where a webhook may be sent, and what a technician learns when it fails.
//!
//! Design: a webhook URL is chosen by an MSP user, so the cloud must not be usable to reach its own
//! network (server-side request forgery). The host name is resolved exactly once per attempt, by
//! [`VettingResolver`], the HTTP client's only resolver: every address of the answer is vetted by
//! [`TargetPolicy::vet`] and the client connects only to the addresses it returned, so a name that
//! answers differently the second time (DNS rebinding) has no second time. An IP literal, which the
//! client never resolves, is vetted before the request ([`TargetPolicy::vet_url`]). Redirects are
//! not followed, no proxy from the environment is used, and TLS still verifies the host name (the
//! connection is pinned by address, not by name).
//!
//! What the receiver answered is reduced to its class ([`DeliveryFailure`]): the receiver's body,
//! exact status and error texts never reach `last_error`, which technicians read — otherwise the
//! webhook would tell them which ports answer what.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::infra::metrics::{self, Metrics};

/// Why an address is refused: the special-purpose range it lies in (IANA IPv4 and IPv6
/// Special-Purpose Address Registries, plus multicast and the IPv6 space outside global unicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 0.0.0.0/8, ::/128.
    ThisNetwork,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 192.0.0.0/24, 2001::/23.
    ProtocolAssignments,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15.
    Benchmarking,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240/4 and the rest of the registry (6to4 relay, AS112, AMT, discard-only, SRv6, …) and
    /// IPv6 outside 2000::/3.
    Reserved,
    /// ::ffff:0:0/96: an IPv4 address in IPv6 clothing.
    Ipv4Mapped,
    /// ::/96 (deprecated IPv4-compatible addresses).
    Ipv4Compatible,
    /// 64:ff9b:1::/48 (local-use NAT64) or the well-known NAT64 prefix around a refused address.
    Nat64,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated site-local).
    SiteLocal,
    /// The host name has no address at all.
    NoAddress,
}

impl Refusal {
    /// The metric label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ThisNetwork => "this_network",
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::SharedAddressSpace => "shared_address_space",
            Refusal::LinkLocal => "link_local",
            Refusal::ProtocolAssignments => "protocol_assignments",
            Refusal::Documentation => "documentation",
            Refusal::Benchmarking => "benchmarking",
            Refusal::Multicast => "multicast",
            Refusal::Broadcast => "broadcast",
            Refusal::Reserved => "reserved",
            Refusal::Ipv4Mapped => "ipv4_mapped",
            Refusal::Ipv4Compatible => "ipv4_compatible",
            Refusal::Nat64 => "nat64",
            Refusal::UniqueLocal => "unique_local",
            Refusal::SiteLocal => "site_local",
            Refusal::NoAddress => "no_address",
        }
    }

    /// The words technicians read: "private range", "loopback range", …
    fn words(self) -> &'static str {
        match self {
            Refusal::ThisNetwork => "this-network range",
            Refusal::Loopback => "loopback range",
            Refusal::Private => "private range",
            Refusal::SharedAddressSpace => "shared (carrier-grade NAT) range",
            Refusal::LinkLocal => "link-local range",
            Refusal::ProtocolAssignments => "protocol-assignment range",
            Refusal::Documentation => "documentation range",
            Refusal::Benchmarking => "benchmarking range",
            Refusal::Multicast => "multicast range",
            Refusal::Broadcast => "broadcast address",
            Refusal::Reserved => "reserved range",
            Refusal::Ipv4Mapped => "IPv4-mapped IPv6 range",
            Refusal::Ipv4Compatible => "IPv4-compatible IPv6 range",
            Refusal::Nat64 => "NAT64 range",
            Refusal::UniqueLocal => "unique-local range",
            Refusal::SiteLocal => "site-local range",
            Refusal::NoAddress => "the name has no address",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address refused: {}", self.words())
    }
}

impl std::error::Error for Refusal {}

/// IPv4 special-purpose ranges, most specific first: (network, prefix length, why).
const V4_TABLE: &[([u8; 4], u8, Refusal)] = &[
    ([255, 255, 255, 255], 32, Refusal::Broadcast),
    ([0, 0, 0, 0], 8, Refusal::ThisNetwork),
    ([10, 0, 0, 0], 8, Refusal::Private),
    ([100, 64, 0, 0], 10, Refusal::SharedAddressSpace),
    ([127, 0, 0, 0], 8, Refusal::Loopback),
    ([169, 254, 0, 0], 16, Refusal::LinkLocal),
    ([172, 16, 0, 0], 12, Refusal::Private),
    ([192, 0, 0, 0], 24, Refusal::ProtocolAssignments),
    ([192, 0, 2, 0], 24, Refusal::Documentation),
    ([192, 31, 196, 0], 24, Refusal::Reserved),
    ([192, 52, 193, 0], 24, Refusal::Reserved),
    ([192, 88, 99, 0], 24, Refusal::Reserved),
    ([192, 168, 0, 0], 16, Refusal::Private),
    ([192, 175, 48, 0], 24, Refusal::Reserved),
    ([198, 18, 0, 0], 15, Refusal::Benchmarking),
    ([198, 51, 100, 0], 24, Refusal::Documentation),
    ([203, 0, 113, 0], 24, Refusal::Documentation),
    ([224, 0, 0, 0], 4, Refusal::Multicast),
    ([240, 0, 0, 0], 4, Refusal::Reserved),
];

/// IPv6 special-purpose ranges, most specific first. The IPv4-embedding forms (mapped,
/// compatible, NAT64, 6to4) are handled before this table.
const V6_TABLE: &[(u128, u8, Refusal)] = &[
    (0, 128, Refusal::ThisNetwork),
    (1, 128, Refusal::Loopback),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        Refusal::Reserved,
    ),
    (
        0x0100_0000_0000_0001_0000_0000_0000_0000,
        64,
        Refusal::Reserved,
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        Refusal::Documentation,
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        Refusal::ProtocolAssignments,
    ),
    (
        0x2620_004f_8000_0000_0000_0000_0000_0000,
        48,
        Refusal::Reserved,
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        Refusal::Documentation,
    ),
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        Refusal::Reserved,
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        Refusal::UniqueLocal,
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        Refusal::LinkLocal,
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        Refusal::SiteLocal,
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        Refusal::Multicast,
    ),
];

fn v4_in(addr: Ipv4Addr, network: [u8; 4], prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(addr) & mask == u32::from_be_bytes(network) & mask
}

fn v6_in(addr: Ipv6Addr, network: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(addr) & mask == network & mask
}

/// The special-purpose range `addr` lies in, if any: `None` means a globally routable unicast
/// address that a webhook may reach. IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64,
/// 6to4) are judged by what they embed, and mapped and compatible forms are refused outright (no
/// public receiver publishes one).
pub fn special_purpose(addr: IpAddr) -> Option<Refusal> {
    match addr {
        IpAddr::V4(v4) => V4_TABLE
            .iter()
            .find(|(network, prefix, _)| v4_in(v4, *network, *prefix))
            .map(|(_, _, why)| *why),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
            if v6_in(v6, 0xffff_0000_0000, 96) {
                return Some(Refusal::Ipv4Mapped);
            }
            if bits >> 32 == 0 && bits > 1 {
                return Some(Refusal::Ipv4Compatible);
            }
            if v6_in(v6, 0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48) {
                return Some(Refusal::Nat64);
            }
            if v6_in(v6, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
                return special_purpose(IpAddr::V4(low32)).map(|_| Refusal::Nat64);
            }
            if v6_in(v6, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
                // 6to4: the IPv4 address is in bits 16..48.
                let embedded = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
                return special_purpose(IpAddr::V4(embedded));
            }
            if let Some((_, _, why)) = V6_TABLE
                .iter()
                .find(|(network, prefix, _)| v6_in(v6, *network, *prefix))
            {
                return Some(*why);
            }
            // Only 2000::/3 is allocated as global unicast.
            (!v6_in(v6, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3)).then_some(Refusal::Reserved)
        }
    }
}

/// An IP network in CIDR notation (`203.0.113.80/32`, `2001:db8::/48`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(network), IpAddr::V4(addr)) => v4_in(addr, network.octets(), self.prefix),
            (IpAddr::V6(network), IpAddr::V6(addr)) => {
                v6_in(addr, u128::from(network), self.prefix)
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has no valid prefix length"))?
        };
        Ok(Network { addr, prefix })
    }
}

/// Which addresses webhooks may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Every address, special-purpose ranges included (`alerts.allow_private_webhook_targets`:
    /// an on-premise receiver, tests). Off by default.
    pub allow_all: bool,
    /// Networks reachable although special-purpose (`alerts.webhook_allowed_networks`): an
    /// explicit opt-in for one receiver, e.g. the network tests' documentation addresses.
    pub allowed: Vec<Network>,
}

impl TargetPolicy {
    /// Whether a webhook may connect to `addr`.
    pub fn vet(&self, addr: IpAddr) -> Result<(), Refusal> {
        if self.allow_all || self.allowed.iter().any(|n| n.contains(addr)) {
            return Ok(());
        }
        special_purpose(addr).map_or(Ok(()), Err)
    }

    /// Every address of a resolution must pass: one refused address refuses them all (a name
    /// that answers with a public and a private address is an attack, not a fallback).
    pub fn vet_all(&self, addrs: &[IpAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::NoAddress);
        }
        addrs.iter().try_for_each(|a| self.vet(*a))
    }

    /// A URL whose host is an IP literal (which the client connects to without resolving).
    pub fn vet_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        let host = url.host_str().ok_or(Refusal::NoAddress)?;
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(literal) => self.vet(literal),
            Err(_) => Ok(()),
        }
    }
}

/// The webhook client's resolver: resolves once and hands the client only vetted addresses.
struct VettingResolver {
    policy: Arc<TargetPolicy>,
    metrics: Arc<Metrics>,
}

/// The name did not resolve (the system resolver's words stay in the log).
#[derive(Debug, thiserror::Error)]
#[error("the host name did not resolve")]
struct Unresolved;

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, metrics) = (self.policy.clone(), self.metrics.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    tracing::warn!(%host, error = %e, "webhook host did not resolve");
                    return Err(Box::new(Unresolved) as Box<dyn std::error::Error + Send + Sync>);
                }
            };
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            if let Err(why) = policy.vet_all(&ips) {
                metrics.increment(metrics::WEBHOOK_REFUSED, "reason", why.label());
                tracing::warn!(%host, addresses = ?ips, reason = why.label(), "webhook target refused");
                return Err(Box::new(why) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The one HTTP client webhooks go through: connects only to addresses `policy` allows (see the
/// module's design), follows no redirect, uses no proxy, gives up after 10 s.
pub fn webhook_client(
    policy: Arc<TargetPolicy>,
    metrics: Arc<Metrics>,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(VettingResolver { policy, metrics }))
        .build()
}

/// Why a delivery failed, as technicians see it: the class only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// The target's address is not one webhooks may reach.
    Refused(Refusal),
    NotResolved,
    ConnectionRefused,
    TimedOut,
    /// Could not connect for another reason (unreachable, TLS handshake, reset).
    ConnectFailed,
    /// Something answered, but not a valid HTTP response.
    NoHttpAnswer,
    /// The receiver answered with a status outside 2xx; the digit is its class (3 to 5).
    Answered(u8),
    NoUrl,
    BadUrl,
    NoSecret,
    /// The webhook HTTP client could not be built at start-up (logged then).
    NoClient,
}

impl DeliveryFailure {
    /// The class of a non-success status.
    pub fn answered(status: reqwest::StatusCode) -> Self {
        DeliveryFailure::Answered(u8::try_from(status.as_u16() / 100).unwrap_or(5))
    }

    /// The class of a failed request, from reqwest's error and its causes.
    pub fn of(error: &reqwest::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut io_kind = None;
        while let Some(e) = source {
            if let Some(why) = e.downcast_ref::<Refusal>() {
                return DeliveryFailure::Refused(*why);
            }
            if e.is::<Unresolved>() {
                return DeliveryFailure::NotResolved;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                io_kind.get_or_insert(io.kind());
            }
            source = e.source();
        }
        if error.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
            DeliveryFailure::TimedOut
        } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
            DeliveryFailure::ConnectionRefused
        } else if error.is_connect() {
            DeliveryFailure::ConnectFailed
        } else {
            DeliveryFailure::NoHttpAnswer
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DeliveryFailure::Refused(why) => why.label(),
            DeliveryFailure::NotResolved => "not_resolved",
            DeliveryFailure::ConnectionRefused => "connection_refused",
            DeliveryFailure::TimedOut => "timed_out",
            DeliveryFailure::ConnectFailed => "connect_failed",
            DeliveryFailure::NoHttpAnswer => "no_http_answer",
            DeliveryFailure::Answered(3) => "answered_3xx",
            DeliveryFailure::Answered(4) => "answered_4xx",
            DeliveryFailure::Answered(_) => "answered_5xx",
            DeliveryFailure::NoUrl | DeliveryFailure::BadUrl => "bad_url",
            DeliveryFailure::NoSecret => "no_secret",
            DeliveryFailure::NoClient => "no_client",
        }
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryFailure::Refused(why) => write!(f, "{why}"),
            DeliveryFailure::NotResolved => {
                f.write_str("request failed: the host name did not resolve")
            }
            DeliveryFailure::ConnectionRefused => f.write_str("request failed: connection refused"),
            DeliveryFailure::TimedOut => f.write_str("request failed: timed out"),
            DeliveryFailure::ConnectFailed => f.write_str("request failed: could not connect"),
            DeliveryFailure::NoHttpAnswer => f.write_str("request failed: no valid HTTP answer"),
            DeliveryFailure::Answered(3) => {
                f.write_str("the receiver answered 3xx (redirects are not followed)")
            }
            DeliveryFailure::Answered(class) => write!(f, "the receiver answered {class}xx"),
            DeliveryFailure::NoUrl => f.write_str("the webhook has no URL"),
            DeliveryFailure::BadUrl => f.write_str("the webhook URL is not valid"),
            DeliveryFailure::NoSecret => f.write_str("the webhook has no signing secret"),
            DeliveryFailure::NoClient => f.write_str("the webhook client is not available"),
        }
    }
}

/// A stored `last_error` as the delivery history shows it: errors written before webhooks kept
/// only the class (with the exact status, the client's error text or the resolver's) are reduced
/// to their class; everything else is shown as stored.
pub fn withhold_details(stored: &str) -> String {
    if let Some(rest) = stored.strip_prefix("the receiver answered ") {
        return match rest.chars().next() {
            Some('3') => DeliveryFailure::Answered(3).to_string(),
            Some('4') => DeliveryFailure::Answered(4).to_string(),
            _ => DeliveryFailure::Answered(5).to_string(),
        };
    }
    if stored.starts_with("request failed: ") {
        let known = [
            DeliveryFailure::NotResolved,
            DeliveryFailure::ConnectionRefused,
            DeliveryFailure::TimedOut,
            DeliveryFailure::ConnectFailed,
            DeliveryFailure::NoHttpAnswer,
        ];
        return known
            .iter()
            .map(ToString::to_string)
            .find(|k| k == stored)
            .unwrap_or_else(|| "request failed".to_owned());
    }
    if stored.starts_with("bad URL: ") {
        return DeliveryFailure::BadUrl.to_string();
    }
    if stored.starts_with("cannot resolve ") {
        return DeliveryFailure::NotResolved.to_string();
    }
    if stored.ends_with(" resolves to an address webhooks may not reach") {
        return "address refused".to_owned();
    }
    stored.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn every_special_purpose_range_is_refused_with_its_reason() {
        use Refusal::*;
        let table = [
            ("0.0.0.0", ThisNetwork),
            ("0.1.2.3", ThisNetwork),
            ("10.1.2.3", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.254", SharedAddressSpace),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("169.254.169.254", LinkLocal),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.0.0.8", ProtocolAssignments),
            ("192.0.2.1", Documentation),
            ("192.88.99.1", Reserved),
            ("192.168.1.1", Private),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.51.100.7", Documentation),
            ("203.0.113.7", Documentation),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("::", ThisNetwork),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Ipv4Mapped),
            ("::ffff:10.0.0.1", Ipv4Mapped),
            ("::ffff:8.8.8.8", Ipv4Mapped),
            ("::127.0.0.1", Ipv4Compatible),
            ("64:ff9b::7f00:1", Nat64),
            ("64:ff9b::a9fe:a9fe", Nat64),
            ("64:ff9b:1::1", Nat64),
            ("2002:7f00:1::1", Loopback),
            ("2002:0a00:0001::1", Private),
            ("100::1", Reserved),
            ("2001::1", ProtocolAssignments),
            ("2001:2::1", ProtocolAssignments),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("5f00::1", Reserved),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
            ("4000::1", Reserved),
            ("::2", Ipv4Compatible),
        ];
        for (addr, why) in table {
            assert_eq!(special_purpose(ip(addr)), Some(why), "{addr}");
            assert_eq!(TargetPolicy::default().vet(ip(addr)), Err(why), "{addr}");
        }
    }

    #[test]
    fn globally_routable_unicast_addresses_are_allowed() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "2001:200::1",
        ] {
            assert_eq!(special_purpose(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn one_refused_address_among_the_answers_refuses_the_name() {
        let policy = TargetPolicy::default();
        assert_eq!(
            policy.vet_all(&[ip("8.8.8.8"), ip("127.0.0.1")]),
            Err(Refusal::Loopback)
        );
        assert_eq!(policy.vet_all(&[]), Err(Refusal::NoAddress));
        assert_eq!(policy.vet_all(&[ip("8.8.8.8"), ip("2606:4700::1")]), Ok(()));
    }

    #[test]
    fn an_explicitly_allowed_network_opens_only_itself() {
        let policy = TargetPolicy {
            allow_all: false,
            allowed: vec!["203.0.113.80/32".parse().expect("network")],
        };
        assert_eq!(policy.vet(ip("203.0.113.80")), Ok(()));
        assert_eq!(policy.vet(ip("203.0.113.81")), Err(Refusal::Documentation));
        assert_eq!(policy.vet(ip("127.0.0.1")), Err(Refusal::Loopback));
        assert_eq!(
            policy.vet(ip("::ffff:203.0.113.80")),
            Err(Refusal::Ipv4Mapped)
        );
        let all = TargetPolicy {
            allow_all: true,
            allowed: vec![],
        };
        assert_eq!(all.vet(ip("127.0.0.1")), Ok(()));
    }

    #[test]
    fn networks_parse_in_cidr_notation_and_refuse_nonsense() {
        let n: Network = "2001:db8::/32".parse().expect("v6");
        assert!(n.contains(ip("2001:db8:1::5")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(!n.contains(ip("192.0.2.1")));
        let single: Network = "192.0.2.1".parse().expect("single");
        assert!(single.contains(ip("192.0.2.1")));
        assert!(!single.contains(ip("192.0.2.2")));
        assert!("192.0.2.0/33".parse::<Network>().is_err());
        assert!("example.com/24".parse::<Network>().is_err());
    }

    #[test]
    fn ip_literal_urls_are_vetted_before_any_request() {
        let policy = TargetPolicy::default();
        for (url, why) in [
            ("http://127.0.0.1:8080/hook", Refusal::Loopback),
            ("http://0x7f.1/hook", Refusal::Loopback),
            (
                "http://[::ffff:169.254.169.254]/latest",
                Refusal::Ipv4Mapped,
            ),
            ("http://0.0.0.0:22/", Refusal::ThisNetwork),
            ("https://[fd00::1]/", Refusal::UniqueLocal),
        ] {
            let url = reqwest::Url::parse(url).expect("url");
            assert_eq!(policy.vet_url(&url), Err(why), "{url}");
        }
        let named = reqwest::Url::parse("https://psa.example.com/hook").expect("url");
        assert_eq!(policy.vet_url(&named), Ok(()));
    }

    #[test]
    fn technicians_read_only_the_class_of_a_failure() {
        assert_eq!(
            DeliveryFailure::answered(reqwest::StatusCode::SERVICE_UNAVAILABLE).to_string(),
            "the receiver answered 5xx"
        );
        assert_eq!(
            DeliveryFailure::answered(reqwest::StatusCode::IM_A_TEAPOT).to_string(),
            "the receiver answered 4xx"
        );
        assert_eq!(
            DeliveryFailure::Refused(Refusal::Private).to_string(),
            "address refused: private range"
        );
        // Errors stored by earlier versions lose their details when shown.
        for (stored, shown) in [
            (
                "the receiver answered 503 Service Unavailable",
                "the receiver answered 5xx",
            ),
            (
                "the receiver answered 404 Not Found",
                "the receiver answered 4xx",
            ),
            (
                "request failed: error sending request for url (http://10.0.0.5:22/): invalid HTTP version parsed",
                "request failed",
            ),
            (
                "request failed: connection refused",
                "request failed: connection refused",
            ),
            (
                "bad URL: relative URL without a base",
                "the webhook URL is not valid",
            ),
            (
                "intranet.local resolves to an address webhooks may not reach",
                "address refused",
            ),
            (
                "the alert was acknowledged or resolved first",
                "the alert was acknowledged or resolved first",
            ),
        ] {
            assert_eq!(withhold_details(stored), shown, "{stored}");
        }
    }
}
