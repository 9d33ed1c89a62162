//! The DHCP client's thin Linux driver: a socket, a timer and the remembered lease.
//!
//! # Why a UDP socket with `SO_BINDTODEVICE`, not a raw `AF_PACKET` socket
//!
//! An `AF_PACKET` socket (what ISC dhclient and udhcpc use) sends frames with source address
//! 0.0.0.0 and sees unicast replies to an address the interface does not have yet, but it needs a
//! hand-built Ethernet, IP and UDP header with checksums, a BPF filter to keep every other frame
//! of the uplink out of the process, and a `sockaddr_ll` to bind — which no safe wrapper in our
//! dependencies builds, and this workspace forbids `unsafe`. A UDP socket on 0.0.0.0:68, bound to
//! the interface with `SO_BINDTODEVICE`, does the job on an interface with no address:
//! - sending to 255.255.255.255 with a bound device takes the kernel's limited-broadcast path,
//!   which needs no route and no address on that device;
//! - every request sets the BROADCAST flag (RFC 2131 §4.1), so servers broadcast their OFFER and
//!   ACK, and the kernel hands a limited broadcast to port 68 on that device before any address
//!   exists (reverse-path filtering is off on uplinks: the Linux dataplane sets `rp_filter` 0).
//!
//! The price: until the uplink has an address, the kernel fills the IP source of a DISCOVER
//! with another interface's address instead of 0.0.0.0. Servers identify the client by `chaddr`
//! and the client identifier, not by the IP source (and relays rewrite it), so this is harmless
//! in practice (the Linux dataplane exempts DHCP from its masquerade, which would otherwise drop
//! such a datagram leaving an interface with no address). Once bound, RENEWING unicasts to the server from the lease's own address, as
//! §4.4.5 asks. `SO_REUSEADDR` lets [`probe`] (the `setup` command) run beside a running agent.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::DhcpError;
use super::client::{Action, Client, Destination, Input, Lease, Offer, offer_of, parse_reply};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// The hardware address of `interface`, from `ip -o link show` (netlink, in the calling thread's
/// network namespace — sysfs would show the namespace it was mounted in, which a thread that
/// joined another namespace with `setns` does not share).
pub async fn mac_address(interface: &str) -> Result<[u8; 6], DhcpError> {
    let missing = || DhcpError::NoInterface {
        interface: interface.to_owned(),
    };
    let output = tokio::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", interface])
        .output()
        .await
        .map_err(|source| DhcpError::Io {
            interface: interface.to_owned(),
            what: "running ip link",
            source,
        })?;
    if !output.status.success() {
        return Err(missing());
    }
    parse_link_address(&String::from_utf8_lossy(&output.stdout)).ok_or_else(missing)
}

/// The `link/ether xx:xx:xx:xx:xx:xx` of an `ip -o link` line.
fn parse_link_address(line: &str) -> Option<[u8; 6]> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "link/ether")?;
    let bytes: Vec<u8> = words
        .next()?
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// The client socket of `interface`: 0.0.0.0:68, bound to the device, broadcast allowed.
pub fn open_socket(interface: &str) -> Result<UdpSocket, DhcpError> {
    let io = |what: &'static str| {
        let interface = interface.to_owned();
        move |source| DhcpError::Io {
            interface,
            what,
            source,
        }
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io("opening the DHCP socket"))?;
    socket.set_reuse_address(true).map_err(io("SO_REUSEADDR"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(io("binding the DHCP socket to the interface"))?;
    socket.set_broadcast(true).map_err(io("SO_BROADCAST"))?;
    socket
        .set_nonblocking(true)
        .map_err(io("making the DHCP socket non-blocking"))?;
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, CLIENT_PORT)).into())
        .map_err(io("binding port 68"))?;
    UdpSocket::from_std(socket.into()).map_err(io("registering the DHCP socket"))
}

fn server_address(to: Destination) -> SocketAddr {
    let ip = match to {
        Destination::Broadcast => Ipv4Addr::BROADCAST,
        Destination::Unicast(ip) => ip,
    };
    SocketAddr::V4(SocketAddrV4::new(ip, SERVER_PORT))
}

/// See [`super::probe`].
pub async fn probe(interface: &str, timeout: Duration) -> Result<Option<Offer>, DhcpError> {
    let mac = mac_address(interface).await?;
    let socket = open_socket(interface)?;
    let xid: u32 = rand::random();
    socket
        .send_to(
            &super::client::discover_packet(&mac, xid, 0),
            server_address(Destination::Broadcast),
        )
        .await
        .map_err(|source| DhcpError::Io {
            interface: interface.to_owned(),
            what: "sending a DISCOVER",
            source,
        })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 1500];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(received) = received else {
            return Ok(None);
        };
        let (len, _) = received.map_err(|source| DhcpError::Io {
            interface: interface.to_owned(),
            what: "receiving an OFFER",
            source,
        })?;
        if let Ok((dhcproto::v4::MessageType::Offer, msg)) = parse_reply(&buf[..len], &mac, xid)
            && let Some(offer) = offer_of(&msg)
        {
            return Ok(Some(offer));
        }
    }
}

/// Where the lease of `interface` is remembered between runs.
pub fn lease_file(state_dir: &Path, interface: &str) -> PathBuf {
    state_dir.join(format!("dhcp-{interface}.json"))
}

/// The address of the lease remembered for `interface`, if any: what INIT-REBOOT asks for.
pub fn remembered_address(state_dir: &Path, interface: &str) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(lease_file(state_dir, interface)).ok()?;
    serde_json::from_str::<Lease>(&text)
        .ok()
        .map(|lease| lease.address)
}

/// Keeps `lease` (or forgets it) for the next run; a failure is logged, never fatal: the next
/// run then discovers instead of rebooting.
fn remember(state_dir: &Path, interface: &str, lease: Option<&Lease>) {
    let path = lease_file(state_dir, interface);
    let result = match lease {
        Some(lease) => {
            let tmp = path.with_extension("json.tmp");
            serde_json::to_vec(lease)
                .map_err(std::io::Error::other)
                .and_then(|json| std::fs::write(&tmp, json))
                .and_then(|()| std::fs::rename(&tmp, &path))
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    if let Err(e) = result {
        tracing::warn!(interface, path = %path.display(), error = %e, "cannot remember the DHCP lease");
    }
}

/// What the driver reports to whoever applies leases (the Linux dataplane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseUpdate {
    /// Gained, or renewed with `changed` false when nothing but the times moved.
    Bound {
        lease: Lease,
        changed: bool,
    },
    Lost,
}

/// Runs the client of `interface` for as long as `updates` has a receiver: the socket, the
/// client's deadlines, the lease file in `state_dir`. A message on `link_up` says the interface
/// regained carrier ([`Input::LinkUp`]). Errors sending (no carrier yet) are logged and left to
/// the client's retransmissions.
pub async fn run(
    interface: String,
    state_dir: PathBuf,
    updates: mpsc::UnboundedSender<LeaseUpdate>,
    mut link_up: mpsc::UnboundedReceiver<()>,
) -> Result<(), DhcpError> {
    let mac = mac_address(&interface).await?;
    let socket = open_socket(&interface)?;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut client = Client::new(mac, remembered_address(&state_dir, &interface));
    let mut actions = client.handle(Instant::now(), Input::Start, &mut rng);
    let mut buf = vec![0u8; 1500];
    let mut last_counters = client.counters();
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Send { to, packet } => {
                    if let Err(e) = socket.send_to(&packet, server_address(to)).await {
                        // Left to the retransmissions: no carrier yet, most often.
                        tracing::info!(interface, error = %e, "DHCP send failed");
                    }
                }
                Action::Bound { lease, changed } => {
                    if changed {
                        tracing::info!(
                            interface,
                            address = %lease.address,
                            prefix = lease.prefix_len,
                            gateway = ?lease.gateway,
                            resolvers = ?lease.resolvers,
                            lease_s = lease.lease_time.as_secs(),
                            "DHCP lease bound"
                        );
                    }
                    remember(&state_dir, &interface, Some(&lease));
                    if updates.send(LeaseUpdate::Bound { lease, changed }).is_err() {
                        return Ok(());
                    }
                }
                Action::Lost => {
                    tracing::warn!(interface, "DHCP lease lost");
                    remember(&state_dir, &interface, None);
                    if updates.send(LeaseUpdate::Lost).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        let counters = client.counters();
        if counters != last_counters {
            tracing::debug!(
                interface,
                state = client.state_name(),
                malformed = counters.malformed,
                foreign = counters.foreign,
                unexpected = counters.unexpected,
                naks = counters.naks,
                retransmissions = counters.retransmissions,
                "DHCP replies ignored or retried"
            );
            last_counters = counters;
        }
        let deadline = client
            .next_deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, _)) => {
                    actions = client.handle(Instant::now(), Input::Datagram(&buf[..len]), &mut rng);
                }
                Err(e) => {
                    tracing::debug!(interface, error = %e, "DHCP receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                actions = client.handle(Instant::now(), Input::Tick, &mut rng);
            }
            Some(()) = link_up.recv() => {
                tracing::info!(interface, state = client.state_name(), "carrier back: DHCP verifies or restarts at once");
                actions = client.handle(Instant::now(), Input::LinkUp, &mut rng);
            }
        }
        if updates.is_closed() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_read_from_an_ip_link_line() {
        let line = "5: wan0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \
                    mode DEFAULT group default qlen 1000\\    link/ether 0a:1b:2c:3d:4e:5f brd \
                    ff:ff:ff:ff:ff:ff link-netns so1-isp1";
        assert_eq!(
            parse_link_address(line),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(
            parse_link_address("1: lo: <LOOPBACK> link/loopback 00:00:00:00:00:00"),
            None
        );
    }
}
