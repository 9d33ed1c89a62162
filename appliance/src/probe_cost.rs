//! What a probe or an application check costs on a metered uplink, in IP bytes (what cellular
//! carriers bill), per kind of exchange, and how the metered monthly budget is shared between the
//! health probes and the critical-application checks.
//!
//! Design: every figure is an upper bound for IPv4 built from the packets the exchange puts on the
//! wire (`tests/netns.rs` runs each real prober in network namespaces, reads the interface's byte
//! and packet counters, and checks that the model is at least what was measured and at most three
//! times it). Link-layer framing is not counted: carriers bill IP bytes, and a cellular link has no
//! Ethernet header. Where an exchange varies (a DNS name's length, a server's certificate chain),
//! the model takes the length it is given or a documented allowance that errs high.
//!
//! **The budget.** `policy.metered_budget_mb` a month covers everything the appliance sends through a
//! metered uplink while it stands by: [`HEALTH_BUDGET_PCT`] of it for health probes (the engine's
//! `metered_standby_interval`, computed from the mean cost of the configured targets, and each
//! budgeted probe followed by a pause proportional to its own cost), the rest for critical-application
//! checks ([`crate::app_checks`] paces them by their cost). Both pace each exchange by its own cost,
//! so together they stay within the budget over a month — give or take one probe and one check each
//! time the uplink returns to standby (unspent budget never piles up into a burst). The unit test
//! `app_checks::tests::a_month_of_health_probes_and_app_checks_on_a_metered_standby_stays_within_the_budget`
//! simulates a month of both with the testbed's mixed targets and the demo's register.

use std::time::Duration;

use stayopen_shared::compliance::AppEndpoint;

use crate::config::ProbeKind;

/// Thirty days: the month budgets are written for.
pub const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

/// The share of the metered monthly budget spent on health probes, in percent; critical-application
/// checks get the rest. Health probes decide failover and must stay fresh (seconds), while an
/// application's reachability through a standby changes rarely and a drill re-checks every
/// application through the backup at full rate anyway.
pub const HEALTH_BUDGET_PCT: u64 = 67;

/// IPv4 header (no options).
const IP: u64 = 20;
/// TCP header with the timestamp option Linux sends on every segment.
const TCP: u64 = 32;
/// A SYN or SYN-ACK: TCP header with MSS, SACK-permitted, timestamps and window scale.
const TCP_SYN: u64 = 40;
const UDP: u64 = 8;
/// TLS record header.
const TLS_RECORD: u64 = 5;
/// A full-size TCP segment's payload (1500-byte MTU).
const SEGMENT: u64 = 1448;

/// An ICMP echo request and its reply, without payload: 28 bytes each way.
pub const ICMP_ECHO_BYTES: u64 = 2 * (IP + 8);

/// Room for what a server writes before it sees the probe close — a banner, or a response to the
/// closed connection (which the probe answers with a reset, smaller than a segment).
const TCP_SERVER_WRITE: u64 = 100;

/// A TCP handshake and a close: SYN, SYN-ACK, ACK, then FIN, ACK, FIN, ACK — seven packets — and
/// one segment of up to [`TCP_SERVER_WRITE`] bytes the server may write meanwhile (the testbed's
/// HTTP server answers the closed connection, and the probe's reset follows). A refused connection
/// (SYN, RST) costs less.
pub const TCP_CONNECT_BYTES: u64 =
    2 * (IP + TCP_SYN) + 5 * (IP + TCP) + (IP + TCP + TCP_SERVER_WRITE);

/// Room in a DNS answer for what follows the question: a CNAME and a few A records.
const DNS_ANSWER_ALLOWANCE: u64 = 128;

/// A DNS query (type A, no EDNS) for a name of `name_len` characters and its answer, which repeats
/// the question and carries up to [`DNS_ANSWER_ALLOWANCE`] bytes of records.
pub const fn dns_query_bytes(name_len: u64) -> u64 {
    // Header, the name as labels (one length byte per label, the root byte), type and class.
    let message = 12 + name_len + 2 + 4;
    2 * (IP + UDP + message) + DNS_ANSWER_ALLOWANCE
}

/// A DNS name of this length is assumed where none is known (the benchmark's figure per kind).
pub const TYPICAL_DNS_NAME_LEN: u64 = 24;

/// The certificate chain an HTTPS server is assumed to send when its size is unknown: a leaf and an
/// intermediate of a public CA with RSA keys are 2.5–3.5 kB; 4 kB errs high.
pub const TYPICAL_CERT_CHAIN_BYTES: u64 = 4096;

/// An HTTPS GET through a fresh connection, including its TLS handshake, for a server whose
/// certificate chain is `chain_bytes` long (DER):
/// - TCP handshake and close ([`TCP_CONNECT_BYTES`]);
/// - ClientHello: up to 600 bytes (rustls sends about 250, browsers pad to 512);
/// - the server's flight: ServerHello, EncryptedExtensions, Certificate (the chain and its
///   per-certificate framing), CertificateVerify (an RSA-2048 signature at most) and Finished —
///   700 bytes besides the chain, in full-size segments;
/// - the client's Finished and the request: 500 bytes;
/// - two TLS 1.3 session tickets and the response headers with a small health body: 1.7 kB;
/// - both close_notify alerts and up to eight bare ACKs.
pub const fn https_get_bytes(chain_bytes: u64) -> u64 {
    let segment = IP + TCP;
    let client_hello = segment + TLS_RECORD + 600;
    let server_flight_payload = 700 + chain_bytes;
    let server_flight = server_flight_payload + server_flight_payload.div_ceil(SEGMENT) * segment;
    let client_finished_and_request = segment + 500;
    let tickets_and_response = 2 * segment + 1700;
    let close_notify = 2 * (segment + TLS_RECORD + 19);
    let acks = 8 * segment;
    TCP_CONNECT_BYTES
        + client_hello
        + server_flight
        + client_finished_and_request
        + tickets_and_response
        + close_notify
        + acks
}

/// One kind of exchange a probe or an application check makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    IcmpEcho,
    TcpConnect,
    DnsQuery {
        name_len: u64,
    },
    /// `chain_bytes`: the server's certificate chain, [`TYPICAL_CERT_CHAIN_BYTES`] when unknown.
    HttpsGet {
        chain_bytes: u64,
    },
}

impl Exchange {
    /// Its cost in IP bytes, both directions.
    pub const fn bytes(self) -> u64 {
        match self {
            Exchange::IcmpEcho => ICMP_ECHO_BYTES,
            Exchange::TcpConnect => TCP_CONNECT_BYTES,
            Exchange::DnsQuery { name_len } => dns_query_bytes(name_len),
            Exchange::HttpsGet { chain_bytes } => https_get_bytes(chain_bytes),
        }
    }

    pub fn of_target(kind: &ProbeKind) -> Self {
        match kind {
            ProbeKind::Icmp { .. } => Exchange::IcmpEcho,
            ProbeKind::Tcp { .. } => Exchange::TcpConnect,
            ProbeKind::Dns { name, .. } => Exchange::DnsQuery {
                name_len: name.trim_end_matches('.').len() as u64,
            },
            // An `http://` URL costs less than this; the model does not tell them apart.
            ProbeKind::Http { .. } => Exchange::HttpsGet {
                chain_bytes: TYPICAL_CERT_CHAIN_BYTES,
            },
        }
    }

    /// The exchange an application check of `endpoint` makes through the uplink. Host names of
    /// HTTPS and TCP endpoints are resolved by the appliance's resolver (cached, through the active
    /// uplink), so the check itself is the connection.
    pub fn of_endpoint(endpoint: &AppEndpoint) -> Self {
        match endpoint {
            AppEndpoint::Https { .. } => Exchange::HttpsGet {
                chain_bytes: TYPICAL_CERT_CHAIN_BYTES,
            },
            AppEndpoint::Tcp { .. } => Exchange::TcpConnect,
            AppEndpoint::Dns { name } => Exchange::DnsQuery {
                name_len: name.trim_end_matches('.').len() as u64,
            },
        }
    }
}

/// The cost of a probe of each target, in target order.
pub fn target_costs(targets: &[ProbeKind]) -> Vec<u64> {
    targets
        .iter()
        .map(|t| Exchange::of_target(t).bytes())
        .collect()
}

/// The mean cost of one probe when the targets take turns (rounded up).
pub fn mean_cost(costs: &[u64]) -> u64 {
    if costs.is_empty() {
        return ICMP_ECHO_BYTES;
    }
    costs.iter().sum::<u64>().div_ceil(costs.len() as u64)
}

/// The health probes' part of a monthly budget of `budget_bytes`.
pub const fn health_budget_bytes(budget_bytes: u64) -> u64 {
    budget_bytes * HEALTH_BUDGET_PCT / 100
}

/// The application checks' part of a monthly budget of `budget_bytes`.
pub const fn app_check_budget_bytes(budget_bytes: u64) -> u64 {
    budget_bytes - health_budget_bytes(budget_bytes)
}

/// How long spending `bytes` takes at `monthly_bytes` a month: the pause after an exchange that keeps
/// a paced sender within its budget.
pub fn pace(bytes: u64, monthly_bytes: u64) -> Duration {
    Duration::from_secs_f64(MONTH.as_secs_f64() * bytes as f64 / monthly_bytes.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_icmp_echo_costs_its_two_headers_each_way() {
        assert_eq!(Exchange::IcmpEcho.bytes(), 56);
    }

    #[test]
    fn a_tcp_check_costs_a_handshake_and_a_close() {
        assert_eq!(TCP_CONNECT_BYTES, 532);
    }

    #[test]
    fn a_dns_query_costs_more_for_a_longer_name() {
        assert_eq!(dns_query_bytes(11), 242);
        assert!(dns_query_bytes(40) > dns_query_bytes(11));
    }

    #[test]
    fn an_https_check_is_dominated_by_the_certificate_chain() {
        let typical = https_get_bytes(TYPICAL_CERT_CHAIN_BYTES);
        assert!((8_000..10_000).contains(&typical), "{typical}");
        assert!(https_get_bytes(1000) + 3096 <= https_get_bytes(4096));
    }

    #[test]
    fn the_two_shares_make_the_whole_budget() {
        let budget = 30_000_000;
        assert_eq!(
            health_budget_bytes(budget) + app_check_budget_bytes(budget),
            budget
        );
    }

    #[test]
    fn the_mean_of_a_mix_errs_high() {
        assert_eq!(mean_cost(&[56, 57]), 57);
        assert_eq!(mean_cost(&[]), ICMP_ECHO_BYTES);
    }
}
