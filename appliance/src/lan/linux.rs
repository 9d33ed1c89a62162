//! The LAN services' drivers: the sockets, the clock and the lease file around the sans-IO cores
//! [`super::dhcp_server`] and [`super::dns`].
//!
//! - DHCP: one UDP socket on port 67 bound to the LAN interface (`SO_BINDTODEVICE`, so a
//!   DISCOVER arriving on an uplink is never answered), replies broadcast on that interface or
//!   sent to the client's address; bound leases written to `lan-leases.json` in the state
//!   directory after every change (atomically: a temporary file renamed over it).
//! - DNS: UDP and TCP on the LAN address, port 53; upstream, one UDP socket per uplink bound to
//!   that uplink's interface, so a query leaves through the uplink the forwarder chose whatever
//!   the main routing table says at that moment.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::DnsCommand;
use super::dhcp_server::{Destination, DhcpServer, LeaseFile, Outcome, ServerConfig};
use super::dns::{Action, Forwarder, Transport};
use crate::config::ApplianceConfig;

/// The lease file in the state directory.
pub const LEASES_FILE: &str = "lan-leases.json";
/// A TCP client gets this long to send its query and read the answer.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once; more wait in the kernel's backlog.
const MAX_TCP_CLIENTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum LanError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LanError {
    let what = what.into();
    move |source| LanError::Io { what, source }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Puts the appliance's LAN address on `interface` (idempotent) and brings the link up.
pub async fn assign_lan_address(interface: &str, net: ipnet::Ipv4Net) -> Result<(), LanError> {
    for args in [
        vec!["addr", "replace", &net.to_string(), "dev", interface],
        vec!["link", "set", interface, "up"],
    ] {
        let output = tokio::process::Command::new("ip")
            .args(&args)
            .output()
            .await
            .map_err(io("running ip"))?;
        if !output.status.success() {
            return Err(LanError::Command {
                what: format!("ip {}", args.join(" ")),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// A UDP socket bound to `bind`, and to `device` when given.
fn udp_socket(
    bind: SocketAddr,
    device: Option<&str>,
    broadcast: bool,
) -> Result<UdpSocket, LanError> {
    let what = format!("UDP socket {bind} on {}", device.unwrap_or("any interface"));
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(io(&what))?;
    socket.set_reuse_address(true).map_err(io(&what))?;
    if let Some(device) = device {
        socket
            .bind_device(Some(device.as_bytes()))
            .map_err(io(&what))?;
    }
    if broadcast {
        socket.set_broadcast(true).map_err(io(&what))?;
    }
    socket.set_nonblocking(true).map_err(io(&what))?;
    socket.bind(&bind.into()).map_err(io(&what))?;
    UdpSocket::from_std(socket.into()).map_err(io(&what))
}

fn leases_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEASES_FILE)
}

fn load_leases(path: &Path) -> LeaseFile {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable lease file; starting empty");
            LeaseFile::default()
        }),
        Err(_) => LeaseFile::default(),
    }
}

fn save_leases(path: &Path, server: &DhcpServer) -> Result<(), LanError> {
    let text =
        serde_json::to_string_pretty(&LeaseFile::from_leases(&server.leases())).map_err(|e| {
            LanError::Command {
                what: "encoding leases".into(),
                detail: e.to_string(),
            }
        })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text).map_err(io(format!("writing {}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(io(format!("replacing {}", path.display())))
}

/// Whether a count is worth a log line: the first, then each power of two (a flood of
/// hostile datagrams is counted in full but logged a few dozen times).
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

/// Starts the DHCP server on the LAN interface.
pub async fn spawn_dhcp(
    config: &ApplianceConfig,
    net: ipnet::Ipv4Net,
    dns: bool,
    report: super::SharedLanReport,
) -> Result<JoinHandle<()>, LanError> {
    let interface = config.lan.interface.clone();
    let socket = udp_socket(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)),
        Some(&interface),
        true,
    )?;
    let path = leases_path(&config.appliance.state_dir);
    let server_config = ServerConfig::from_section(net, &config.lan.dhcp_server, dns);
    let server = DhcpServer::new(server_config, load_leases(&path).into_leases(), unix_now());
    tracing::info!(interface = %interface, address = %net.addr(),
        restored = server.leases().len(), "LAN DHCP server listening");
    Ok(tokio::spawn(run_dhcp(socket, server, path, report)))
}

/// The DHCP server's leases and refusals, into the report `status` shows.
fn report_dhcp(report: &super::SharedLanReport, server: &DhcpServer) {
    let mut report = report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.dhcp_leases = server
        .leases()
        .iter()
        .map(|(address, lease)| {
            format!(
                "{address} to {}",
                super::dhcp_server::format_mac(&lease.mac)
            )
        })
        .collect();
    report.dhcp_refused = server
        .refusals()
        .iter()
        .map(|(reason, count)| (reason.label().to_owned(), *count))
        .collect();
}

async fn run_dhcp(
    socket: UdpSocket,
    mut server: DhcpServer,
    path: PathBuf,
    report: super::SharedLanReport,
) {
    report_dhcp(&report, &server);
    let mut buf = vec![0u8; 2048];
    loop {
        let wake = server
            .next_expiry()
            .map(|at| at.saturating_sub(unix_now()))
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => Some(r),
            _ = tokio::time::sleep(wake.max(Duration::from_secs(1))) => None,
        };
        let now = unix_now();
        match received {
            None => server.expire(now),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "DHCP socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(Ok((n, peer))) => match server.handle(now, &buf[..n]) {
                Outcome::Reply(reply) => {
                    let to = match reply.to {
                        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
                        Destination::Unicast(a) => SocketAddrV4::new(a, 68),
                    };
                    tracing::info!(kind = ?reply.kind, address = ?reply.address, to = %to, "DHCP reply");
                    if let Err(e) = socket.send_to(&reply.bytes, to).await {
                        tracing::warn!(error = %e, to = %to, "cannot send the DHCP reply");
                    }
                }
                Outcome::Done => {}
                Outcome::Refused(reason) => {
                    let count = server.refusals().get(&reason).copied().unwrap_or(0);
                    if worth_logging(count) {
                        tracing::warn!(reason = reason.label(), count, peer = %peer,
                            "DHCP datagram refused: {reason}");
                    }
                }
            },
        }
        report_dhcp(&report, &server);
        if server.take_changed()
            && let Err(e) = save_leases(&path, &server)
        {
            tracing::error!(error = %e, "cannot save the LAN leases");
        }
    }
}

/// A client of the DNS forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Udp(SocketAddr),
    Tcp(u64),
}

/// What the forwarder's tasks hand its loop.
enum Event {
    Upstream(usize, SocketAddr, Vec<u8>),
    TcpOpen(u64, mpsc::UnboundedSender<Vec<u8>>),
    TcpQuery(u64, Vec<u8>),
    TcpClosed(u64),
}

/// Starts the DNS forwarder on `address` port 53 with one upstream socket per uplink.
pub async fn spawn_dns(
    config: &ApplianceConfig,
    address: Ipv4Addr,
    commands: mpsc::UnboundedReceiver<DnsCommand>,
    report: super::SharedLanReport,
) -> Result<JoinHandle<()>, LanError> {
    let bind = SocketAddr::from((address, 53));
    let udp = udp_socket(bind, None, false)?;
    let tcp = TcpListener::bind(bind)
        .await
        .map_err(io(format!("TCP {bind}")))?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut upstream = Vec::new();
    for (i, uplink) in config.uplinks.iter().enumerate() {
        match udp_socket(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            Some(&uplink.interface),
            false,
        ) {
            Ok(socket) => {
                let socket = Arc::new(socket);
                let reader = socket.clone();
                let tx = events_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                        if tx
                            .send(Event::Upstream(i, from, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                });
                upstream.push(Some(socket));
            }
            Err(e) => {
                tracing::error!(uplink = %uplink.name, error = %e,
                    "no DNS socket on this uplink: names are not resolved through it");
                upstream.push(None);
            }
        }
    }
    tokio::spawn(accept_tcp(tcp, events_tx));
    let forwarder = Forwarder::new(
        config.uplinks.len(),
        config.lan.dns.cache_size,
        rand::random(),
    );
    tracing::info!(address = %bind, "LAN DNS forwarder listening");
    Ok(tokio::spawn(run_dns(
        udp, upstream, forwarder, commands, events, report,
    )))
}

async fn accept_tcp(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CLIENTS));
    let mut next = 0u64;
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        next += 1;
        let id = next;
        let events = events.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (mut reader, mut writer) = stream.into_split();
            let (answers_tx, mut answers) = mpsc::unbounded_channel::<Vec<u8>>();
            if events.send(Event::TcpOpen(id, answers_tx)).is_err() {
                return;
            }
            let writing = tokio::spawn(async move {
                while let Some(answer) = answers.recv().await {
                    let Ok(len) = u16::try_from(answer.len()) else {
                        continue;
                    };
                    if writer.write_all(&len.to_be_bytes()).await.is_err()
                        || writer.write_all(&answer).await.is_err()
                    {
                        break;
                    }
                }
            });
            loop {
                let mut len = [0u8; 2];
                let read = tokio::time::timeout(TCP_IDLE, reader.read_exact(&mut len)).await;
                if !matches!(read, Ok(Ok(_))) {
                    break;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                let read = tokio::time::timeout(TCP_IDLE, reader.read_exact(&mut query)).await;
                if !matches!(read, Ok(Ok(_))) || events.send(Event::TcpQuery(id, query)).is_err() {
                    break;
                }
            }
            let _ = events.send(Event::TcpClosed(id));
            // Answers still on their way get a moment to go out.
            let _ = tokio::time::timeout(Duration::from_secs(5), writing).await;
        });
    }
}

async fn run_dns(
    udp: UdpSocket,
    upstream: Vec<Option<Arc<UdpSocket>>>,
    mut forwarder: Forwarder<Client>,
    mut commands: mpsc::UnboundedReceiver<DnsCommand>,
    mut events: mpsc::UnboundedReceiver<Event>,
    report: super::SharedLanReport,
) {
    let mut tcp_clients: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 4096];
    let mut logged: std::collections::BTreeMap<super::dns::Dropped, u64> = Default::default();
    loop {
        let deadline = forwarder
            .next_deadline()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let actions = tokio::select! {
            command = commands.recv() => {
                let now = std::time::Instant::now();
                match command {
                    None => return,
                    Some(DnsCommand::ActiveUplink(uplink)) => {
                        let actions = forwarder.set_active_uplink(now, uplink);
                        tracing::info!(uplink = ?uplink, resent = actions.len(),
                            "DNS forwarder follows the active uplink");
                        actions
                    }
                    Some(DnsCommand::UplinkResolvers { uplink, resolvers }) => {
                        tracing::info!(uplink, resolvers = ?resolvers, "DNS resolvers of an uplink");
                        forwarder.set_uplink_resolvers(now, uplink, resolvers)
                    }
                }
            }
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, peer)) => forwarder.query(std::time::Instant::now(), Client::Udp(peer), Transport::Udp, &buf[..n]),
                Err(e) => {
                    tracing::warn!(error = %e, "DNS socket");
                    Vec::new()
                }
            },
            event = events.recv() => {
                let now = std::time::Instant::now();
                match event {
                    None => return,
                    Some(Event::Upstream(uplink, from, bytes)) => forwarder.upstream(now, uplink, from, &bytes),
                    Some(Event::TcpOpen(id, sender)) => {
                        tcp_clients.insert(id, sender);
                        Vec::new()
                    }
                    Some(Event::TcpQuery(id, bytes)) => forwarder.query(now, Client::Tcp(id), Transport::Tcp, &bytes),
                    Some(Event::TcpClosed(id)) => {
                        tcp_clients.remove(&id);
                        Vec::new()
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => forwarder.poll(std::time::Instant::now()),
        };
        for action in actions {
            match action {
                Action::Send { uplink, to, bytes } => {
                    if let Some(Some(socket)) = upstream.get(uplink)
                        && let Err(e) = socket.send_to(&bytes, to).await
                    {
                        tracing::debug!(uplink, to = %to, error = %e, "cannot send a DNS query");
                    }
                }
                Action::Answer {
                    client: Client::Udp(peer),
                    bytes,
                } => {
                    let _ = udp.send_to(&bytes, peer).await;
                }
                Action::Answer {
                    client: Client::Tcp(id),
                    bytes,
                } => {
                    if let Some(sender) = tcp_clients.get(&id) {
                        let _ = sender.send(bytes);
                    }
                }
            }
        }
        for (reason, count) in forwarder.dropped() {
            let seen = logged.entry(*reason).or_default();
            if *count != *seen {
                if (*seen + 1..=*count).any(worth_logging) {
                    tracing::warn!(
                        reason = reason.label(),
                        count,
                        "DNS datagram dropped: {reason}"
                    );
                }
                *seen = *count;
                report
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .dns_dropped
                    .insert(reason.label().to_owned(), *count);
            }
        }
    }
}
