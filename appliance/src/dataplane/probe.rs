//! The probers behind the Linux dataplane's health checks: ICMP echo on a raw socket, a TCP
//! handshake and a DNS query, each bound to one uplink's interface (`SO_BINDTODEVICE`) so it
//! measures that uplink whichever is active, and an HTTP(S) GET through a client bound the same
//! way. The health probes and the critical-application checks both use them: a health probe only
//! asks whether anything came back through the path, an application check also why not. Apart
//! from `linux.rs` so the routing and the measuring can be read separately; public so the netns
//! tests can measure each prober's bytes on the wire.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use stayopen_shared::compliance::AppEndpoint;

use super::{DataplaneError, DataplaneEvent};
use crate::app_checks::APP_CHECK_TIMEOUT;

/// How a TCP connection attempt through an uplink ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOutcome {
    /// The handshake completed after this long.
    Connected(Duration),
    /// A reset came back after this long: the path works, nothing listens (or a firewall rejects).
    Refused(Duration),
    /// No answer, or the socket could not be set up: why.
    Failed(String),
}

/// A TCP handshake with `address` through `interface`, closed at once.
pub async fn tcp_connect(interface: &str, address: SocketAddr, timeout: Duration) -> TcpOutcome {
    let started = Instant::now();
    let socket = match Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    ) {
        Ok(socket) => socket,
        Err(e) => return TcpOutcome::Failed(format!("cannot open a socket: {e}")),
    };
    if let Err(e) = socket.bind_device(Some(interface.as_bytes())) {
        return TcpOutcome::Failed(format!("cannot bind to {interface}: {e}"));
    }
    if let Err(e) = socket.set_nonblocking(true) {
        return TcpOutcome::Failed(e.to_string());
    }
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    match tokio::time::timeout(timeout, socket.connect(address)).await {
        Ok(Ok(_)) => TcpOutcome::Connected(started.elapsed()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            TcpOutcome::Refused(started.elapsed())
        }
        Ok(Err(e)) => TcpOutcome::Failed(io_reason(&e)),
        Err(_) => TcpOutcome::Failed(format!("no answer within {}", seconds(timeout))),
    }
}

/// An I/O error as an officer reads it: "connection refused", "no route to host".
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // "Connection refused (os error 111)" → "connection refused".
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The health probe: a TCP handshake through the uplink, where a refusal also proves the path.
pub async fn tcp_probe(
    interface: &str,
    address: SocketAddr,
    timeout: Duration,
) -> Option<Duration> {
    match tcp_connect(interface, address, timeout).await {
        TcpOutcome::Connected(rtt) | TcpOutcome::Refused(rtt) => Some(rtt),
        TcpOutcome::Failed(_) => None,
    }
}

/// A minimal DNS query for `name` (type A, recursion desired).
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A DNS query (type A) for `name` to `server` through `interface`: the answer's round trip and
/// response code, or why none came.
pub async fn dns_exchange(
    interface: &str,
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<(Duration, u8), String> {
    let started = Instant::now();
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| format!("cannot open a socket: {e}"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(|e| format!("cannot bind to {interface}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| io_reason(&e))?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&bind.into()).map_err(|e| io_reason(&e))?;
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))
        .map_err(|e| io_reason(&e))?;
    let id: u16 = rand::random();
    socket
        .send_to(&dns_query(id, name), server)
        .await
        .map_err(|e| io_reason(&e))?;
    let mut buf = [0u8; 512];
    let exchange = async {
        loop {
            let (n, from) = socket
                .recv_from(&mut buf)
                .await
                .map_err(|e| io_reason(&e))?;
            if from == server && n >= 4 && buf[..2] == id.to_be_bytes() {
                return Ok((started.elapsed(), buf[3] & 0x0f));
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {} within {}", server.ip(), seconds(timeout)))?
}

/// A DNS response code by name.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("rcode {other}"),
    }
}

/// The health probe: any answer with our id from the server proves the path, whatever its rcode.
pub async fn dns_probe(
    interface: &str,
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Option<Duration> {
    dns_exchange(interface, server, name, timeout)
        .await
        .ok()
        .map(|(rtt, _)| rtt)
}

/// An HTTP(S) client whose connections leave through `interface`, trusting the public roots and
/// `extra_roots`, with a fresh connection per request (a pooled one would prove nothing about the
/// path).
pub fn http_client(
    interface: &str,
    timeout: Duration,
    extra_roots: &[reqwest::Certificate],
) -> Result<reqwest::Client, DataplaneError> {
    let mut builder = reqwest::Client::builder()
        .interface(interface)
        .timeout(timeout)
        .pool_max_idle_per_host(0);
    for ca in extra_roots {
        builder = builder.add_root_certificate(ca.clone());
    }
    builder.build().map_err(|e| DataplaneError::Command {
        what: "building the HTTP probe client".into(),
        detail: e.to_string(),
    })
}

/// A GET of `url`: the time to the response headers when the status is below 500, or why not.
pub async fn https_get(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    match client.get(url).timeout(timeout).send().await {
        Ok(response) if response.status().as_u16() < 500 => Ok(started.elapsed()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(e) if e.is_timeout() => Err(format!("no answer within {}", seconds(timeout))),
        Err(e) => Err(reqwest_reason(&e)),
    }
}

/// The innermost cause of a request error ("connection refused", "invalid peer certificate:
/// UnknownIssuer"), which is what tells an officer what went wrong.
fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    match source.downcast_ref::<std::io::Error>() {
        Some(io) => io_reason(io),
        None => source.to_string(),
    }
}

/// One critical-application check of `endpoint` through `interface`: the round trip, or why it did
/// not answer, prefixed with the endpoint ("tcp lab.example:2575: connection refused"). Host names of
/// HTTPS and TCP endpoints are resolved by the system's resolver; a DNS endpoint is queried at
/// `resolver` through the interface, and counts as reachable when the resolver answers NOERROR.
pub async fn app_check(
    interface: &str,
    client: Option<&reqwest::Client>,
    resolver: Option<SocketAddr>,
    endpoint: &AppEndpoint,
) -> Result<Duration, String> {
    let outcome = match endpoint {
        AppEndpoint::Https { url } => match client {
            Some(client) => https_get(client, url, APP_CHECK_TIMEOUT).await,
            None => Err("no HTTP client".into()),
        },
        AppEndpoint::Tcp { host, port } => {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(mut addresses) => match addresses.find(SocketAddr::is_ipv4) {
                    Some(address) => match tcp_connect(interface, address, APP_CHECK_TIMEOUT).await
                    {
                        TcpOutcome::Connected(rtt) => Ok(rtt),
                        TcpOutcome::Refused(_) => Err("connection refused".into()),
                        TcpOutcome::Failed(reason) => Err(reason),
                    },
                    None => Err(format!("{host} has no IPv4 address")),
                },
                Err(e) => Err(format!("cannot resolve {host}: {}", io_reason(&e))),
            }
        }
        AppEndpoint::Dns { name } => match resolver {
            Some(server) => match dns_exchange(interface, server, name, APP_CHECK_TIMEOUT).await {
                Ok((rtt, 0)) => Ok(rtt),
                Ok((_, rcode)) => Err(format!("the resolver answered {}", rcode_name(rcode))),
                Err(reason) => Err(reason),
            },
            None => Err("no resolver configured".into()),
        },
    };
    outcome.map_err(|reason| format!("{}: {reason}", endpoint.describe()))
}

/// An echo request in flight: the target index, its address, when it was sent.
type PendingEcho = (usize, Ipv4Addr, Instant);

/// ICMP echo through one uplink: a raw socket bound to the uplink's interface, a receive task that
/// matches replies to requests, and a sweep that reports requests never answered.
#[derive(Debug)]
pub struct IcmpProber {
    /// The raw ICMP socket, driven through tokio's UDP socket type: both are datagram sockets, and
    /// the conversion is safe, unlike registering a raw descriptor with the reactor.
    socket: Arc<tokio::net::UdpSocket>,
    ident: u16,
    next_seq: Mutex<u16>,
    pending: Arc<Mutex<HashMap<u16, PendingEcho>>>,
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request without payload: the smallest probe on a metered link (28 bytes with IPv4).
fn echo_request(ident: u16, seq: u16) -> [u8; 8] {
    let mut packet = [8, 0, 0, 0, 0, 0, 0, 0];
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    let checksum = icmp_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// Parses an IPv4 packet carrying an ICMP echo reply: `(source, ident, seq)`.
fn parse_echo_reply(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(header_len..header_len + 8)?;
    if packet.get(9) != Some(&1) || icmp[0] != 0 {
        return None;
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((
        source,
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

impl IcmpProber {
    pub fn start(
        uplink: usize,
        interface: &str,
        timeout: Duration,
        events: mpsc::UnboundedSender<DataplaneEvent>,
    ) -> Result<Arc<Self>, DataplaneError> {
        let io = |what: &str| {
            let what = format!("{what} ({interface})");
            move |source| DataplaneError::Io {
                what: what.clone(),
                source,
            }
        };
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .map_err(io("opening a raw ICMP socket"))?;
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(io("binding the ICMP socket to its uplink"))?;
        socket
            .set_nonblocking(true)
            .map_err(io("making the ICMP socket non-blocking"))?;
        let socket = Arc::new(
            tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))
                .map_err(io("registering the ICMP socket"))?,
        );
        let prober = Arc::new(Self {
            socket: socket.clone(),
            ident: rand::random(),
            next_seq: Mutex::new(0),
            pending: Arc::new(Mutex::new(HashMap::new())),
        });
        let ident = prober.ident;
        let pending = prober.pending.clone();
        let reply_events = events.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) => {
                        let Some((source, id, seq)) = parse_echo_reply(&buf[..n]) else {
                            continue;
                        };
                        if id != ident {
                            continue;
                        }
                        let hit = pending.lock().ok().and_then(|mut p| match p.get(&seq) {
                            Some((_, target, _)) if *target == source => p.remove(&seq),
                            _ => None,
                        });
                        if let Some((target, _, sent)) = hit {
                            let rtt = Some(sent.elapsed());
                            if reply_events
                                .send(DataplaneEvent::Probe {
                                    uplink,
                                    target,
                                    rtt,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "ICMP receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        let pending = prober.pending.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let expired: Vec<usize> = match pending.lock() {
                    Ok(mut p) => {
                        let mut lost = Vec::new();
                        p.retain(|_, (target, _, sent)| {
                            let keep = sent.elapsed() < timeout;
                            if !keep {
                                lost.push(*target);
                            }
                            keep
                        });
                        lost
                    }
                    Err(_) => return,
                };
                for target in expired {
                    if events
                        .send(DataplaneEvent::Probe {
                            uplink,
                            target,
                            rtt: None,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(prober)
    }

    pub fn send(&self, target: usize, address: Ipv4Addr) {
        let seq = match self.next_seq.lock() {
            Ok(mut s) => {
                *s = s.wrapping_add(1);
                *s
            }
            Err(_) => return,
        };
        if let Ok(mut p) = self.pending.lock() {
            p.insert(seq, (target, address, Instant::now()));
        }
        let destination = SocketAddr::V4(SocketAddrV4::new(address, 0));
        // A send error (no route while the link is down) is a lost probe; the sweep reports it.
        let _ = self
            .socket
            .try_send_to(&echo_request(self.ident, seq), destination);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_carries_a_valid_checksum() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(
            icmp_checksum(&packet),
            0,
            "checksum over a packet with its checksum is zero"
        );
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn an_echo_reply_is_parsed_from_its_ip_packet() {
        let mut packet = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 203, 0, 113, 10, 100, 64, 1, 2,
        ];
        packet.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(
            parse_echo_reply(&packet),
            Some((Ipv4Addr::new(203, 0, 113, 10), 0x1234, 7))
        );
        packet[20] = 8;
        assert_eq!(parse_echo_reply(&packet), None, "a request is not a reply");
        assert_eq!(parse_echo_reply(&packet[..10]), None);
    }

    #[test]
    fn a_dns_query_encodes_the_name_as_labels() {
        let q = dns_query(0xabcd, "ehr.example.");
        assert_eq!(&q[..2], &[0xab, 0xcd]);
        assert_eq!(&q[12..], b"\x03ehr\x07example\x00\x00\x01\x00\x01");
    }
}
