//! The tunnel's Linux data path alone, in network namespaces: an appliance namespace with two
//! uplinks and a LAN, a LAN host, and a relay namespace where a minimal WireGuard peer (boringtun,
//! as the relay would run it) echoes UDP sent to a server address and answers the liveness ping.
//! The LAN host's flow to a critical destination goes through the tunnel, follows the outer
//! uplink when it moves (roaming, no new handshake), is duplicated in redundant mode (the peer's
//! replay window drops the copy), and leaves the tunnel when steering is removed. Needs root,
//! `ip`, `nft` and `conntrack`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use stayopen_appliance::tunnel::linux::{HostLayout, LinuxTunnel, TunnelSetup};
use stayopen_appliance::tunnel::{CriticalNet, Destination, TunnelPlan, TunnelSettings};
use stayopen_shared::tunnel::{RelayAssignment, TunnelMode, TunnelState};
use stayopen_tunnel::keys::KeyPair;

const RELAY_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 60);
const INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
const RELAY_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 10);

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// The three namespaces, deleted on drop.
struct Bed {
    app: String,
    relay: String,
    lan: String,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in [&self.app, &self.relay, &self.lan] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn build_bed(prefix: &str) -> Bed {
    let bed = Bed {
        app: format!("{prefix}a"),
        relay: format!("{prefix}r"),
        lan: format!("{prefix}l"),
    };
    for ns in [&bed.app, &bed.relay, &bed.lan] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .status();
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let (a, r, l) = (bed.app.as_str(), bed.relay.as_str(), bed.lan.as_str());
    ip(&[
        "-n", a, "link", "add", "wan0", "type", "veth", "peer", "name", "r0", "netns", r,
    ]);
    ip(&[
        "-n", a, "link", "add", "wan1", "type", "veth", "peer", "name", "r1", "netns", r,
    ]);
    ip(&[
        "-n", a, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", l,
    ]);
    for (ns, dev, addr) in [
        (a, "wan0", "10.0.1.2/24"),
        (a, "wan1", "10.0.2.2/24"),
        (a, "lan0", "192.168.50.1/24"),
        (r, "r0", "10.0.1.1/24"),
        (r, "r1", "10.0.2.1/24"),
        (r, "lo", "203.0.113.50/32"),
        (l, "eth0", "192.168.50.10/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", l, "route", "add", "default", "via", "192.168.50.1"]);
    // The appliance: what the Linux dataplane installs per uplink, and the main table's default.
    ip(&["-n", a, "route", "add", "default", "via", "10.0.1.1"]);
    for (table, gw, dev, prio) in [
        ("100", "10.0.1.1", "wan0", "1000"),
        ("101", "10.0.2.1", "wan1", "1002"),
    ] {
        ip(&[
            "-n", a, "route", "add", "default", "via", gw, "dev", dev, "table", table,
        ]);
        ip(&[
            "-n", a, "rule", "add", "priority", prio, "oif", dev, "lookup", table,
        ]);
    }
    for key in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        in_ns(a, "sysctl", &["-qw", key], None);
    }
    // The Linux dataplane's mark restoring, which the tunnel's steering relies on.
    in_ns(
        a,
        "nft",
        &["-f", "-"],
        Some(
            "table ip stayopen {\n  chain restore_mark {\n    type filter hook prerouting priority mangle; policy accept;\n    iifname \"lan0\" meta mark set ct mark\n  }\n}\n",
        ),
    );
    bed
}

/// What the relay's peer saw.
#[derive(Debug, Default)]
struct RelayLog {
    handshake_inits: usize,
    /// The outer source of each authenticated data packet, in order.
    endpoints: Vec<Ipv4Addr>,
    /// Inner UDP packets to the server: (inner source, destination port).
    inner_udp: Vec<(Ipv4Addr, u16)>,
    duplicates_dropped: usize,
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

/// The relay's answer to an inner packet: the server's echo of UDP to [`SERVER`], the relay's
/// echo reply to a ping of [`RELAY_INNER`].
fn answer(packet: &[u8], log: &Mutex<RelayLog>) -> Option<Vec<u8>> {
    let p = stayopen_tunnel::packet::InnerPacket::parse(packet)?;
    let header = usize::from(packet[0] & 0x0f) * 4;
    let mut reply = packet.to_vec();
    reply[12..16].copy_from_slice(&p.dst.octets());
    reply[16..20].copy_from_slice(&p.src.octets());
    match p.protocol {
        stayopen_tunnel::packet::UDP if p.dst == SERVER => {
            let (sport, dport) = p.ports?;
            log.lock().expect("log").inner_udp.push((p.src, dport));
            reply[header..header + 2].copy_from_slice(&dport.to_be_bytes());
            reply[header + 2..header + 4].copy_from_slice(&sport.to_be_bytes());
            Some(reply)
        }
        stayopen_tunnel::packet::ICMP if p.dst == RELAY_INNER && packet[header] == 8 => {
            reply[header] = 0;
            reply[header + 2..header + 4].copy_from_slice(&[0, 0]);
            let sum = checksum(&reply[header..]);
            reply[header + 2..header + 4].copy_from_slice(&sum.to_be_bytes());
            Some(reply)
        }
        _ => None,
    }
}

/// A minimal relay: one peer, answers through the endpoint its latest authentic packet came from.
fn run_relay(
    ns: String,
    key: KeyPair,
    peer: KeyPair,
    log: Arc<Mutex<RelayLog>>,
    stop: Arc<AtomicBool>,
) {
    enter(&ns);
    let socket = UdpSocket::bind((RELAY_PUBLIC, 51820)).expect("bind relay");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut tunn =
        Tunn::new(key.secret().clone(), peer.public(), None, None, 1, None).expect("tunn");
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0u8; 65_536];
    let mut endpoint: Option<SocketAddr> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            if let TunnResult::WriteToNetwork(d) = tunn.update_timers(&mut out)
                && let Some(to) = endpoint
            {
                let _ = socket.send_to(d, to);
            }
            continue;
        };
        if let Ok(boringtun::noise::Packet::HandshakeInit(_)) =
            Tunn::parse_incoming_packet(&buf[..n])
        {
            log.lock().expect("log").handshake_inits += 1;
        }
        let mut inner = None;
        let mut result = tunn.decapsulate(Some(from.ip()), &buf[..n], &mut out);
        loop {
            match result {
                TunnResult::WriteToNetwork(d) => {
                    let _ = socket.send_to(d, from);
                    endpoint = Some(from);
                    result = tunn.decapsulate(None, &[], &mut out);
                }
                TunnResult::WriteToTunnelV4(p, _) => {
                    inner = Some(p.to_vec());
                    break;
                }
                TunnResult::Err(boringtun::noise::errors::WireGuardError::DuplicateCounter) => {
                    log.lock().expect("log").duplicates_dropped += 1;
                    break;
                }
                _ => break,
            }
        }
        let Some(inner) = inner else { continue };
        if let std::net::IpAddr::V4(src) = from.ip() {
            log.lock().expect("log").endpoints.push(src);
        }
        endpoint = Some(from);
        if let Some(reply) = answer(&inner, &log)
            && let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&reply, &mut out)
        {
            let _ = socket.send_to(d, from);
        }
    }
}

/// The LAN host sends `count` datagrams from `port` to the server's port 5004, 20 ms apart, and
/// counts the echoes.
async fn lan_exchange(ns: String, port: u16, count: usize) -> usize {
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            enter(&ns);
            let socket = UdpSocket::bind((LAN_HOST, port)).expect("bind lan");
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let mut echoes = 0;
            let mut buf = [0u8; 1500];
            for i in 0..count {
                let _ = socket.send_to(format!("call {i:04}").as_bytes(), (SERVER, 5004));
                while let Ok((_, from)) = socket.recv_from(&mut buf) {
                    if from == SocketAddr::from((SERVER, 5004)) {
                        echoes += 1;
                    }
                }
            }
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                if let Ok((_, from)) = socket.recv_from(&mut buf)
                    && from == SocketAddr::from((SERVER, 5004))
                {
                    echoes += 1;
                }
            }
            echoes
        })
        .join()
        .expect("lan host")
    })
    .await
    .expect("blocking")
}

fn plan(steer: bool, outer: usize, duplicate_on: Vec<usize>) -> TunnelPlan {
    TunnelPlan {
        state: if steer {
            TunnelState::Up
        } else {
            TunnelState::FallbackDirect
        },
        steer,
        outer: Some(outer),
        duplicate_on,
        handshake_now: false,
    }
}

async fn scenario(
    bed_lan: String,
    relay_key: KeyPair,
    appliance_key: KeyPair,
    log: Arc<Mutex<RelayLog>>,
) {
    let setup = TunnelSetup {
        key: appliance_key,
        relay: RelayAssignment {
            relay: "relay-test".into(),
            endpoint: format!("{RELAY_PUBLIC}:51820"),
            public_key: relay_key.public_base64(),
            inner_address: INNER,
        },
        interface: "so-tun0".into(),
        mtu: 1380,
        keepalive: Duration::from_secs(1),
        relay_inner_address: RELAY_INNER,
    };
    let layout = HostLayout {
        lan_interface: "lan0".into(),
        uplink_interfaces: vec!["wan0".into(), "wan1".into()],
        table: 102,
        rule_priority: 1004,
    };
    let tunnel = LinuxTunnel::start(setup, layout)
        .await
        .expect("tunnel starts");
    let settings = TunnelSettings {
        mode: TunnelMode::Critical,
        relay: Some(tunnel.relay().clone()),
        critical: vec![Destination::Net(CriticalNet {
            address: SERVER,
            prefix: 32,
            port: Some(5004),
        })],
        redundant: true,
        metered_cap_bytes: u64::MAX,
    };
    let mut first = plan(true, 0, vec![]);
    first.handshake_now = true;
    tunnel.apply(&first, &settings);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = tunnel.counters().observed;
        if seen.handshake_at.is_some() && seen.received_at.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no handshake with the relay within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The steering task installs its rules in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let echoes = lan_exchange(bed_lan.clone(), 40001, 20).await;
    assert!(
        echoes >= 19,
        "through the tunnel on wan0: {echoes} of 20 echoed"
    );
    {
        let log = log.lock().expect("log");
        assert!(
            log.inner_udp
                .iter()
                .all(|(src, port)| *src == INNER && *port == 5004),
            "the relay sees the flow from the appliance's inner address: {:?}",
            log.inner_udp
        );
        assert_eq!(log.endpoints.last(), Some(&Ipv4Addr::new(10, 0, 1, 2)));
    }
    let handshakes = log.lock().expect("log").handshake_inits;

    // Failover: the outer packets move to wan1; the session roams without a new handshake.
    tunnel.apply(&plan(true, 1, vec![]), &settings);
    let echoes = lan_exchange(bed_lan.clone(), 40001, 20).await;
    assert!(
        echoes >= 19,
        "through the tunnel on wan1: {echoes} of 20 echoed"
    );
    {
        let log = log.lock().expect("log");
        assert_eq!(log.endpoints.last(), Some(&Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            log.handshake_inits, handshakes,
            "roaming, not a new handshake"
        );
    }

    // Redundant mode: each packet of the critical flow also goes over wan0; the relay's replay
    // window drops the copy, the server answers once.
    let dropped_before = log.lock().expect("log").duplicates_dropped;
    let inner_before = log.lock().expect("log").inner_udp.len();
    tunnel.apply(&plan(true, 1, vec![0]), &settings);
    let echoes = lan_exchange(bed_lan.clone(), 40001, 20).await;
    assert!(
        (19..=20).contains(&echoes),
        "one echo per datagram in redundant mode: {echoes}"
    );
    {
        let log = log.lock().expect("log");
        assert!(
            log.duplicates_dropped - dropped_before >= 19,
            "copies dropped by the relay: {}",
            log.duplicates_dropped - dropped_before
        );
        assert!(log.inner_udp.len() - inner_before <= 20);
    }
    let counters = tunnel.counters();
    assert!(
        counters.duplicate_bytes[0] >= 20 * 32,
        "duplicates counted on wan0: {:?}",
        counters.duplicate_bytes
    );
    assert_eq!(counters.duplicate_bytes[1], 0);
    assert!(counters.tunnel_bytes > 0);

    // Fallback: steering removed, a new flow no longer enters the tunnel.
    tunnel.apply(&plan(false, 1, vec![]), &settings);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inner_before = log.lock().expect("log").inner_udp.len();
    let echoes = lan_exchange(bed_lan.clone(), 40002, 5).await;
    assert_eq!(
        echoes, 0,
        "the relay's server is not reachable directly in this bed"
    );
    assert_eq!(
        log.lock().expect("log").inner_udp.len(),
        inner_before,
        "no packet of the new flow went through the tunnel"
    );

    // Restored: new flows enter the tunnel again.
    tunnel.apply(&plan(true, 1, vec![]), &settings);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echoes = lan_exchange(bed_lan, 40003, 20).await;
    assert!(
        echoes >= 19,
        "through the tunnel after restoring: {echoes} of 20 echoed"
    );
}

#[test]
fn the_data_path_carries_a_lan_flow_through_the_relay_roams_duplicates_and_falls_back() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "the netns tests need root (network namespaces, nftables, a TUN device); CI runs them as root"
    );
    let prefix = format!("sot{}", std::process::id() % 100_000);
    let bed = build_bed(&prefix);
    let relay_key = KeyPair::generate();
    let appliance_key = KeyPair::generate();
    let log = Arc::new(Mutex::new(RelayLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let (ns, key, peer, log, stop) = (
            bed.relay.clone(),
            relay_key.clone(),
            appliance_key.clone(),
            log.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || run_relay(ns, key, peer, log, stop))
    };
    let app = {
        let (ns, lan, log) = (bed.app.clone(), bed.lan.clone(), log.clone());
        std::thread::spawn(move || {
            enter(&ns);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(scenario(lan, relay_key, appliance_key, log));
        })
    };
    let outcome = app.join();
    stop.store(true, Ordering::Relaxed);
    relay.join().expect("relay");
    drop(bed);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
