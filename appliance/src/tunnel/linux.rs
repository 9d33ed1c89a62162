//! The tunnel's Linux data path: a thin driver that carries out [`super::TunnelPlan`]s.
//!
//! - TUN device `so-tun0` with the appliance's inner address (/32): inner packets from and to the
//!   LAN;
//! - one UDP socket per uplink, bound to its interface (`SO_BINDTODEVICE`; the per-uplink routing
//!   tables' `oif` rules route it out of that uplink whichever uplink is active);
//! - TUN → `Tunn::encapsulate` → the outer uplink's socket, and for packets of critical flows in
//!   redundant mode the same datagram on every other uplink of the plan (the relay's replay
//!   window drops the copy); any socket → `decapsulate` → TUN; `update_timers` every 100 ms;
//! - a liveness ping (ICMP echo to the relay's inner address) each keepalive interval in which
//!   nothing came from the relay, so silence means a silent relay, not an idle tunnel;
//! - LAN steering by policy routing: routing table `T` (`default dev so-tun0`) and rule
//!   `fwmark T lookup T`; nftables table `ip stayopen_tunnel` marks new LAN connections `T`
//!   (all of them, or those to the set of critical destinations), masquerades them to the inner
//!   address on `so-tun0` and clamps TCP MSS to the tunnel's MTU. Tunnelled flows carry conntrack
//!   mark `T`, never an uplink's mark, so a failover's `flush_flows` of the failed uplink leaves
//!   them alone. Falling back removes the marking rules and deletes the tunnelled flows'
//!   conntrack entries (the relay is gone; their clients reconnect directly); restoring puts the
//!   rules back, for new flows.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use stayopen_shared::tunnel::{RelayAssignment, TunnelMode};
use stayopen_tunnel::keys::KeyPair;
use stayopen_tunnel::packet::{ICMP, InnerPacket};
use stayopen_tunnel::tun::TunDevice;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CriticalNet, Destination, Observed, TunnelPlan, TunnelSettings};
use crate::dataplane::DataplaneError;
use crate::dataplane::linux::run;

/// The nftables table of the tunnel's steering, NAT and MSS clamping.
pub const NFT_TABLE: &str = "stayopen_tunnel";
/// Room for the largest inner packet and WireGuard's overhead.
const BUFFER: usize = 65_536 + 256;
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Host names of critical destinations are looked up again this often (services move).
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// The identifier of the liveness ping's ICMP echoes.
const PING_ID: u16 = 0x534f;

/// Everything the data path needs to start.
#[derive(Debug, Clone)]
pub struct TunnelSetup {
    pub key: KeyPair,
    pub relay: RelayAssignment,
    pub interface: String,
    pub mtu: u16,
    pub keepalive: Duration,
    pub relay_inner_address: Ipv4Addr,
}

/// The uplinks and LAN as the Linux dataplane knows them.
#[derive(Debug, Clone)]
pub struct HostLayout {
    pub lan_interface: String,
    pub uplink_interfaces: Vec<String>,
    /// The tunnel's routing table and firewall mark.
    pub table: u32,
    /// The priority of its `fwmark` rule.
    pub rule_priority: u32,
}

/// Where outer packets go, as the latest plan says.
#[derive(Debug, Default)]
struct Route {
    outer: Option<usize>,
    duplicate_on: Vec<usize>,
    critical: Vec<CriticalNet>,
}

/// What the agent and the data path's tasks share.
#[derive(Debug)]
struct Shared {
    epoch: Instant,
    route: Mutex<Route>,
    /// Nanoseconds after `epoch` (0: never).
    handshake_ns: AtomicU64,
    received_ns: AtomicU64,
    handshake_now: AtomicBool,
    tunnel_bytes: AtomicU64,
    duplicate_bytes: Vec<AtomicU64>,
    /// Inner packets from the relay not addressed to the appliance's inner address, dropped.
    refused: AtomicU64,
}

impl Shared {
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn instant(&self, ns: u64) -> Option<Instant> {
        (ns != 0).then(|| self.epoch + Duration::from_nanos(ns))
    }
}

/// What the agent reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelCounters {
    pub observed: Observed,
    /// Inner bytes through the tunnel since it started, both directions.
    pub tunnel_bytes: u64,
    /// Outer bytes sent as duplicates, per uplink, since the tunnel started.
    pub duplicate_bytes: Vec<u64>,
    /// Inner packets from the relay refused because they were not addressed to the appliance's
    /// inner address.
    pub refused_packets: u64,
}

/// What the steering task is to install.
#[derive(Debug, Clone, PartialEq)]
struct Steering {
    steer: bool,
    mode: TunnelMode,
    critical: Vec<Destination>,
}

/// The running data path. Dropping it stops its tasks and removes the TUN device.
#[derive(Debug)]
pub struct LinuxTunnel {
    relay: RelayAssignment,
    shared: Arc<Shared>,
    steering: watch::Sender<Steering>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LinuxTunnel {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn tunnel_error(what: &str, detail: impl ToString) -> DataplaneError {
    DataplaneError::Command {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// Looks up a relay endpoint (`host:port`): the first IPv4 address.
async fn resolve_endpoint(endpoint: &str) -> Result<SocketAddr, DataplaneError> {
    let what = format!("resolving the relay endpoint {endpoint}");
    let (host, port) =
        super::parse_endpoint(endpoint).ok_or_else(|| tunnel_error(&what, "not host:port"))?;
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::new(IpAddr::V4(ip), port));
    }
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| tunnel_error(&what, "timed out"))?
        .map_err(|e| tunnel_error(&what, e))?;
    found
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| tunnel_error(&what, "no IPv4 address"))
}

fn uplink_socket(interface: &str) -> Result<tokio::net::UdpSocket, DataplaneError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let what = format!("the tunnel's socket on {interface}");
    let io = |e: std::io::Error| tunnel_error(&what, e);
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    socket.bind_device(Some(interface.as_bytes())).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
        .map_err(io)?;
    tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(io)
}

/// The permanent part of the tunnel's nftables table: NAT to the inner address, MSS clamping, and
/// the guard: nothing arriving from the tunnel may open a connection to the appliance or the LAN
/// (only answers to the practice's own flows come back through it).
/// The `steer` chain and the `critical` set are filled by [`steering_script`]. Replaces the table a
/// previous run left in the same transaction ([`crate::dataplane::linux::replace_table`]).
pub fn nft_table(interface: &str, mtu: u16) -> String {
    let mss = mtu.saturating_sub(40);
    let replace = crate::dataplane::linux::replace_table(NFT_TABLE);
    format!(
        "{replace}\
         table ip {NFT_TABLE} {{\n\
         \x20   set critical {{ type ipv4_addr; flags interval; auto-merge; }}\n\
         \x20   chain steer {{\n\
         \x20       type filter hook prerouting priority mangle + 1; policy accept;\n\
         \x20   }}\n\
         \x20   chain clamp {{\n\
         \x20       type filter hook forward priority mangle; policy accept;\n\
         \x20       oifname \"{interface}\" tcp flags syn tcp option maxseg size set rt mtu\n\
         \x20       iifname \"{interface}\" tcp flags syn tcp option maxseg size > {mss} tcp option maxseg size set {mss}\n\
         \x20   }}\n\
         \x20   chain nat {{\n\
         \x20       type nat hook postrouting priority srcnat; policy accept;\n\
         \x20       oifname \"{interface}\" masquerade\n\
         \x20   }}\n\
         \x20   chain guard_input {{\n\
         \x20       type filter hook input priority filter; policy accept;\n\
         \x20       iifname \"{interface}\" ct state new counter drop\n\
         \x20   }}\n\
         \x20   chain guard_forward {{\n\
         \x20       type filter hook forward priority filter; policy accept;\n\
         \x20       iifname \"{interface}\" ct state new counter drop\n\
         \x20   }}\n\
         }}\n"
    )
}

/// Replaces the steering: the set of critical networks and the rules that mark new LAN
/// connections for the tunnel's table (none when `steer` is false).
pub fn steering_script(
    lan: &str,
    table: u32,
    steer: bool,
    mode: TunnelMode,
    critical: &[CriticalNet],
) -> String {
    let mut script =
        format!("flush set ip {NFT_TABLE} critical\nflush chain ip {NFT_TABLE} steer\n");
    let any_port: Vec<String> = critical
        .iter()
        .filter(|c| c.port.is_none())
        .map(CriticalNet::network)
        .collect();
    if !any_port.is_empty() {
        script.push_str(&format!(
            "add element ip {NFT_TABLE} critical {{ {} }}\n",
            any_port.join(", ")
        ));
    }
    if !steer {
        return script;
    }
    let mark = format!("meta mark set {table} ct mark set {table}");
    let rule = |matcher: &str| {
        format!("add rule ip {NFT_TABLE} steer iifname \"{lan}\" ct mark 0 {matcher}{mark}\n")
    };
    match mode {
        TunnelMode::Off => {}
        TunnelMode::All => script.push_str(&rule("")),
        TunnelMode::Critical => {
            script.push_str(&rule("ip daddr @critical "));
            for c in critical {
                if let Some(port) = c.port {
                    script.push_str(&rule(&format!(
                        "ip daddr {} meta l4proto {{ tcp, udp }} th dport {port} ",
                        c.network()
                    )));
                }
            }
        }
    }
    script
}

impl LinuxTunnel {
    /// Creates the TUN device, the sockets, the routing table and rule and the nftables table,
    /// and starts the tasks. Idempotent against what a previous run left.
    pub async fn start(setup: TunnelSetup, host: HostLayout) -> Result<Self, DataplaneError> {
        let endpoint = resolve_endpoint(&setup.relay.endpoint).await?;
        let peer = stayopen_tunnel::keys::parse_public(&setup.relay.public_key)
            .map_err(|e| tunnel_error("the relay's public key", e))?;
        let keepalive = u16::try_from(setup.keepalive.as_secs().max(1)).unwrap_or(u16::MAX);
        let tunn = Tunn::new(
            setup.key.secret().clone(),
            peer,
            None,
            Some(keepalive),
            rand::random::<u32>() >> 8,
            None,
        )
        .map_err(|e| tunnel_error("starting the WireGuard session", e))?;
        let tun = TunDevice::create(&setup.interface, setup.relay.inner_address, 32, setup.mtu)
            .map_err(|e| tunnel_error("creating the tunnel device", e))?;
        // Replies from the relay come in on the tunnel while the main table routes their sources
        // out of an uplink: no reverse-path filtering on the tunnel.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/rp_filter", setup.interface),
            "0",
        );
        let sockets = host
            .uplink_interfaces
            .iter()
            .map(|i| uplink_socket(i).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let table = host.table.to_string();
        run(
            "ip",
            &[
                "route",
                "replace",
                "default",
                "dev",
                &setup.interface,
                "table",
                &table,
            ],
            None,
        )
        .await?;
        let priority = host.rule_priority.to_string();
        let _ = run("ip", &["rule", "del", "priority", &priority], None).await;
        run(
            "ip",
            &[
                "rule", "add", "priority", &priority, "fwmark", &table, "lookup", &table,
            ],
            None,
        )
        .await?;
        run(
            "nft",
            &["-f", "-"],
            Some(&nft_table(&setup.interface, setup.mtu)),
        )
        .await?;

        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            route: Mutex::new(Route::default()),
            handshake_ns: AtomicU64::new(0),
            received_ns: AtomicU64::new(0),
            handshake_now: AtomicBool::new(false),
            tunnel_bytes: AtomicU64::new(0),
            duplicate_bytes: sockets.iter().map(|_| AtomicU64::new(0)).collect(),
            refused: AtomicU64::new(0),
        });
        let path = Arc::new(Path {
            tunn: Mutex::new(tunn),
            tun,
            sockets,
            endpoint,
            shared: shared.clone(),
            inner: setup.relay.inner_address,
            relay_inner: setup.relay_inner_address,
        });
        let (steering, steering_rx) = watch::channel(Steering {
            steer: false,
            mode: TunnelMode::Off,
            critical: Vec::new(),
        });
        let mut tasks = vec![
            tokio::spawn(path.clone().from_lan()),
            tokio::spawn(path.clone().timers(setup.keepalive)),
            tokio::spawn(steer(
                steering_rx,
                host.lan_interface.clone(),
                host.table,
                shared.clone(),
            )),
        ];
        for uplink in 0..path.sockets.len() {
            tasks.push(tokio::spawn(path.clone().from_relay(uplink)));
        }
        tracing::info!(relay = %setup.relay.relay, %endpoint, interface = %setup.interface,
            inner = %setup.relay.inner_address, "tunnel data path started");
        Ok(Self {
            relay: setup.relay,
            shared,
            steering,
            tasks,
        })
    }

    /// The relay this data path talks to.
    pub fn relay(&self) -> &RelayAssignment {
        &self.relay
    }

    /// Carries out `plan`: the outer uplink and duplicates at once, the steering in the
    /// background (it may look names up).
    pub fn apply(&self, plan: &TunnelPlan, settings: &TunnelSettings) {
        if let Ok(mut route) = self.shared.route.lock() {
            route.outer = plan.outer;
            route.duplicate_on.clone_from(&plan.duplicate_on);
        }
        if plan.handshake_now {
            self.shared.handshake_now.store(true, Ordering::Relaxed);
        }
        let want = Steering {
            steer: plan.steer,
            mode: settings.mode,
            critical: settings.critical.clone(),
        };
        self.steering.send_if_modified(|current| {
            let changed = *current != want;
            if changed {
                *current = want;
            }
            changed
        });
    }

    pub fn counters(&self) -> TunnelCounters {
        let s = &self.shared;
        TunnelCounters {
            observed: Observed {
                handshake_at: s.instant(s.handshake_ns.load(Ordering::Relaxed)),
                received_at: s.instant(s.received_ns.load(Ordering::Relaxed)),
            },
            tunnel_bytes: s.tunnel_bytes.load(Ordering::Relaxed),
            duplicate_bytes: s
                .duplicate_bytes
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            refused_packets: s.refused.load(Ordering::Relaxed),
        }
    }
}

/// The data path's I/O handles, shared by its tasks.
struct Path {
    tunn: Mutex<Tunn>,
    tun: TunDevice,
    sockets: Vec<Arc<tokio::net::UdpSocket>>,
    endpoint: SocketAddr,
    shared: Arc<Shared>,
    inner: Ipv4Addr,
    relay_inner: Ipv4Addr,
}

/// Whether an inner packet belongs to a critical flow (by its far end: the destination of a
/// packet going out).
fn is_critical(critical: &[CriticalNet], packet: &[u8]) -> bool {
    let Some(p) = InnerPacket::parse(packet) else {
        return false;
    };
    let port = p.ports.map(|(_, dst)| dst);
    critical.iter().any(|c| c.contains(p.dst, port))
}

/// An ICMP echo request from `src` to `dst`.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, sequence: u16) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20] = 8;
    p[24..26].copy_from_slice(&PING_ID.to_be_bytes());
    p[26..28].copy_from_slice(&sequence.to_be_bytes());
    let icmp_sum = checksum(&p[20..]);
    p[22..24].copy_from_slice(&icmp_sum.to_be_bytes());
    p
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether an inner packet from the relay is addressed to the appliance's inner address: the only
/// destination the relay may send to (it answers the practice's own flows, NATed to that address).
fn addressed_to(packet: &[u8], inner: Ipv4Addr) -> bool {
    InnerPacket::parse(packet).is_some_and(|p| p.dst == inner)
}

/// Whether `packet` answers the liveness ping (then it is not written to the TUN device).
fn is_ping_reply(packet: &[u8], relay_inner: Ipv4Addr) -> bool {
    packet.len() >= 28
        && InnerPacket::parse(packet).is_some_and(|p| p.protocol == ICMP && p.src == relay_inner)
        && packet[20] == 0
        && packet[24..26] == PING_ID.to_be_bytes()
}

impl Path {
    /// Sends one outer datagram through `uplink`'s socket. UDP: a full buffer or an uplink
    /// without an address loses the datagram, as the network could.
    fn send_outer(&self, uplink: usize, datagram: &[u8]) -> bool {
        match self.sockets.get(uplink) {
            Some(socket) => socket.try_send_to(datagram, self.endpoint).is_ok(),
            None => false,
        }
    }

    /// Encapsulates `packet` and sends it by the outer uplink, and — when it belongs to a
    /// critical flow — on every duplicate uplink.
    fn send_inner(&self, packet: &[u8], out: &mut [u8]) {
        let (outer, duplicates) = match self.shared.route.lock() {
            Ok(route) => {
                let duplicates =
                    if !route.duplicate_on.is_empty() && is_critical(&route.critical, packet) {
                        route.duplicate_on.clone()
                    } else {
                        Vec::new()
                    };
                (route.outer, duplicates)
            }
            Err(_) => return,
        };
        let len = match self.tunn.lock() {
            Ok(mut tunn) => match tunn.encapsulate(packet, out) {
                TunnResult::WriteToNetwork(datagram) => datagram.len(),
                _ => 0,
            },
            Err(_) => return,
        };
        if len == 0 {
            return;
        }
        if let Some(outer) = outer {
            self.send_outer(outer, &out[..len]);
        }
        for uplink in duplicates {
            if self.send_outer(uplink, &out[..len])
                && let Some(counter) = self.shared.duplicate_bytes.get(uplink)
            {
                counter.fetch_add(len as u64, Ordering::Relaxed);
            }
        }
    }

    /// LAN → relay: packets the kernel routed into the TUN device.
    async fn from_lan(self: Arc<Self>) {
        let mut packet = vec![0u8; BUFFER];
        let mut out = vec![0u8; BUFFER];
        loop {
            let n = match self.tun.recv(&mut packet).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "tunnel device read failed");
                    tokio::time::sleep(TIMER_TICK).await;
                    continue;
                }
            };
            if n == 0 {
                continue;
            }
            self.shared
                .tunnel_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            self.send_inner(&packet[..n], &mut out);
        }
    }

    /// Relay → LAN: datagrams on `uplink`'s socket. Any uplink: in redundant mode the relay
    /// sends copies on each, and after a failover the answers come where the packets went.
    async fn from_relay(self: Arc<Self>, uplink: usize) {
        let socket = self.sockets[uplink].clone();
        let mut datagram = vec![0u8; BUFFER];
        let mut out = vec![0u8; BUFFER];
        let mut to_tun = vec![0u8; BUFFER];
        loop {
            let (n, from) = match socket.recv_from(&mut datagram).await {
                Ok(received) => received,
                Err(_) => {
                    tokio::time::sleep(TIMER_TICK).await;
                    continue;
                }
            };
            if from != self.endpoint {
                continue;
            }
            let mut replies: Vec<Vec<u8>> = Vec::new();
            let mut inner_len = 0;
            let mut authentic = false;
            if let Ok(mut tunn) = self.tunn.lock() {
                let mut result = tunn.decapsulate(Some(from.ip()), &datagram[..n], &mut out);
                loop {
                    match result {
                        TunnResult::WriteToNetwork(reply) => {
                            authentic = true;
                            replies.push(reply.to_vec());
                            result = tunn.decapsulate(None, &[], &mut out);
                        }
                        TunnResult::WriteToTunnelV4(packet, _) => {
                            authentic = true;
                            to_tun[..packet.len()].copy_from_slice(packet);
                            inner_len = packet.len();
                            break;
                        }
                        TunnResult::Done => {
                            authentic = true;
                            break;
                        }
                        TunnResult::WriteToTunnelV6(..) | TunnResult::Err(_) => break,
                    }
                }
            }
            if authentic {
                self.shared
                    .received_ns
                    .store(self.shared.stamp(Instant::now()), Ordering::Relaxed);
            }
            for reply in &replies {
                socket.try_send_to(reply, self.endpoint).ok();
            }
            if inner_len > 0 && !addressed_to(&to_tun[..inner_len], self.inner) {
                let refused = self.shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // Counted always; logged at the first and then every thousandth.
                if refused % 1000 == 1 {
                    tracing::warn!(
                        refused,
                        "inner packet from the relay not addressed to this appliance: dropped"
                    );
                }
                continue;
            }
            if inner_len > 0 && !is_ping_reply(&to_tun[..inner_len], self.relay_inner) {
                self.shared
                    .tunnel_bytes
                    .fetch_add(inner_len as u64, Ordering::Relaxed);
                if let Err(e) = self.tun.send(&to_tun[..inner_len]).await {
                    tracing::debug!(error = %e, "tunnel device write failed");
                }
            }
        }
    }

    /// WireGuard's timers every 100 ms, the handshakes the plan asks for, the liveness ping, and
    /// the latest handshake's moment for the agent.
    async fn timers(self: Arc<Self>, keepalive: Duration) {
        let mut out = vec![0u8; BUFFER];
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping: Option<Instant> = None;
        let mut sequence: u16 = 0;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let outer = self.shared.route.lock().ok().and_then(|r| r.outer);
            let mut datagrams: Vec<Vec<u8>> = Vec::new();
            if let Ok(mut tunn) = self.tunn.lock() {
                if self.shared.handshake_now.swap(false, Ordering::Relaxed)
                    && let TunnResult::WriteToNetwork(d) =
                        tunn.format_handshake_initiation(&mut out, true)
                {
                    datagrams.push(d.to_vec());
                }
                match tunn.update_timers(&mut out) {
                    TunnResult::WriteToNetwork(d) => datagrams.push(d.to_vec()),
                    TunnResult::Err(e) => tracing::trace!(error = ?e, "tunnel timers"),
                    _ => {}
                }
                if let Some(since) = tunn.time_since_last_handshake() {
                    let at = now.checked_sub(since).unwrap_or(self.shared.epoch);
                    self.shared
                        .handshake_ns
                        .store(self.shared.stamp(at), Ordering::Relaxed);
                }
            }
            if let Some(outer) = outer {
                for d in &datagrams {
                    self.send_outer(outer, d);
                }
            }
            let received = self
                .shared
                .instant(self.shared.received_ns.load(Ordering::Relaxed));
            let quiet = received.is_none_or(|at| now.saturating_duration_since(at) >= keepalive);
            let due = last_ping.is_none_or(|at| now.saturating_duration_since(at) >= keepalive);
            if quiet && due && outer.is_some() {
                last_ping = Some(now);
                sequence = sequence.wrapping_add(1);
                let ping = echo_request(self.inner, self.relay_inner, sequence);
                self.send_inner(&ping, &mut out);
            }
        }
    }
}

/// Installs the steering the agent wants: resolves host names (again every
/// [`RESOLVE_EVERY`]), fills the critical set and the marking rules, and on a fallback deletes
/// the tunnelled flows' conntrack entries.
async fn steer(
    mut wanted: watch::Receiver<Steering>,
    lan: String,
    table: u32,
    shared: Arc<Shared>,
) {
    let mut steering = false;
    loop {
        let want = wanted.borrow_and_update().clone();
        let critical = resolve(&want.critical).await;
        if let Ok(mut route) = shared.route.lock() {
            route.critical.clone_from(&critical);
        }
        let script = steering_script(&lan, table, want.steer, want.mode, &critical);
        match run("nft", &["-f", "-"], Some(&script)).await {
            Ok(_) => tracing::info!(
                steer = want.steer,
                mode = want.mode.as_str(),
                destinations = critical.len(),
                "tunnel steering installed"
            ),
            Err(e) => tracing::error!(error = %e, "cannot install the tunnel steering"),
        }
        if steering && !want.steer {
            // The relay is gone: its flows cannot continue; their clients reconnect directly.
            let _ = run("conntrack", &["-D", "--mark", &table.to_string()], None).await;
        }
        steering = want.steer;
        match tokio::time::timeout(RESOLVE_EVERY, wanted.changed()).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(_)) => return,
        }
    }
}

/// The critical destinations as networks: names looked up (IPv4 only), each within a timeout; a
/// name that does not resolve is left out until the next look-up.
async fn resolve(destinations: &[Destination]) -> Vec<CriticalNet> {
    let mut nets = Vec::new();
    for d in destinations {
        match d {
            Destination::Net(net) => nets.push(*net),
            Destination::Name { host, port } => {
                let lookup = tokio::net::lookup_host((host.as_str(), port.unwrap_or(0)));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(found)) => {
                        for address in found {
                            if let IpAddr::V4(address) = address.ip() {
                                nets.push(CriticalNet {
                                    address,
                                    prefix: 32,
                                    port: *port,
                                });
                            }
                        }
                    }
                    _ => tracing::debug!(%host, "critical destination does not resolve"),
                }
            }
        }
    }
    nets.sort();
    nets.dedup();
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(a: [u8; 4], prefix: u8, port: Option<u16>) -> CriticalNet {
        CriticalNet {
            address: Ipv4Addr::from(a),
            prefix,
            port,
        }
    }

    #[test]
    fn the_tunnel_table_masquerades_to_the_inner_address_and_clamps_mss_both_ways() {
        let table = nft_table("so-tun0", 1380);
        assert!(table.contains("oifname \"so-tun0\" masquerade"), "{table}");
        assert!(
            table.contains("oifname \"so-tun0\" tcp flags syn tcp option maxseg size set rt mtu"),
            "{table}"
        );
        assert!(table.contains("maxseg size set 1340"), "{table}");
    }

    #[test]
    fn nothing_from_the_tunnel_may_open_a_connection_to_the_appliance_or_the_lan() {
        let table = nft_table("so-tun0", 1380);
        assert!(table.contains("hook input priority filter"), "{table}");
        assert!(table.contains("hook forward priority filter"), "{table}");
        assert_eq!(
            table
                .matches("iifname \"so-tun0\" ct state new counter drop")
                .count(),
            2,
            "{table}"
        );
    }

    #[test]
    fn only_packets_to_the_inner_address_are_taken_from_the_relay() {
        let inner = Ipv4Addr::new(100, 96, 0, 2);
        let mut packet = echo_request(Ipv4Addr::new(203, 0, 113, 60), inner, 1);
        assert!(addressed_to(&packet, inner));
        packet[16..20].copy_from_slice(&[192, 168, 50, 10]);
        assert!(!addressed_to(&packet, inner));
        assert!(!addressed_to(&[0x45, 0, 0], inner));
    }

    #[test]
    fn in_all_mode_every_new_lan_connection_is_marked_for_the_tunnel() {
        let script = steering_script("lan0", 102, true, TunnelMode::All, &[]);
        assert!(
            script.contains(
                "add rule ip stayopen_tunnel steer iifname \"lan0\" ct mark 0 meta mark set 102 ct mark set 102"
            ),
            "{script}"
        );
    }

    #[test]
    fn in_critical_mode_only_connections_to_critical_destinations_are_marked() {
        let critical = [
            net([203, 0, 113, 0], 24, None),
            net([198, 51, 100, 7], 32, Some(5004)),
        ];
        let script = steering_script("lan0", 102, true, TunnelMode::Critical, &critical);
        assert!(
            script.contains("add element ip stayopen_tunnel critical { 203.0.113.0/24 }"),
            "{script}"
        );
        assert!(
            script.contains("ip daddr @critical meta mark set 102"),
            "{script}"
        );
        assert!(
            script.contains(
                "ip daddr 198.51.100.7/32 meta l4proto { tcp, udp } th dport 5004 meta mark set 102"
            ),
            "{script}"
        );
        assert!(!script.contains("ct mark 0 meta mark set"), "{script}");
    }

    #[test]
    fn without_steering_no_connection_is_marked_for_the_tunnel() {
        let script = steering_script(
            "lan0",
            102,
            false,
            TunnelMode::All,
            &[net([203, 0, 113, 0], 24, None)],
        );
        assert!(script.contains("flush chain ip stayopen_tunnel steer"));
        assert!(!script.contains("add rule"), "{script}");
    }

    #[test]
    fn packets_to_a_critical_destination_are_critical_and_others_are_not() {
        let critical = [net([203, 0, 113, 60], 32, Some(5004))];
        let packet = |dst: [u8; 4], dport: u16| {
            let mut p = vec![0u8; 28];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&28u16.to_be_bytes());
            p[9] = 17;
            p[12..16].copy_from_slice(&[100, 96, 0, 2]);
            p[16..20].copy_from_slice(&dst);
            p[20..22].copy_from_slice(&40000u16.to_be_bytes());
            p[22..24].copy_from_slice(&dport.to_be_bytes());
            p
        };
        assert!(is_critical(&critical, &packet([203, 0, 113, 60], 5004)));
        assert!(!is_critical(&critical, &packet([203, 0, 113, 60], 443)));
        assert!(!is_critical(&critical, &packet([203, 0, 113, 61], 5004)));
        assert!(!is_critical(&critical, &[0u8; 3]));
    }

    #[test]
    fn the_liveness_ping_is_a_valid_echo_and_its_reply_is_recognised() {
        let relay = Ipv4Addr::new(100, 96, 0, 1);
        let ping = echo_request(Ipv4Addr::new(100, 96, 0, 2), relay, 7);
        assert_eq!(checksum(&ping[..20]), 0, "IP header checksum verifies");
        assert_eq!(checksum(&ping[20..]), 0, "ICMP checksum verifies");
        let mut reply = ping;
        reply[12..16].copy_from_slice(&relay.octets());
        reply[16..20].copy_from_slice(&[100, 96, 0, 2]);
        reply[20] = 0;
        assert!(is_ping_reply(&reply, relay));
        assert!(!is_ping_reply(&ping, relay), "a request is not a reply");
    }
}
