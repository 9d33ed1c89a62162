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
            .stderr(std::process::Stdio::null())
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
    /// Inner UDP packets to the server: (inner source, source port, destination port).
    inner_udp: Vec<(Ipv4Addr, u16, u16)>,
    duplicates_dropped: usize,
    /// Inner packets the relay is to send unasked (an attack), drained by its loop.
    inject: Vec<Vec<u8>>,
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
            log.lock()
                .expect("log")
                .inner_udp
                .push((p.src, sport, dport));
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
        let injected = std::mem::take(&mut log.lock().expect("log").inject);
        for packet in injected {
            if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&packet, &mut out)
                && let Some(to) = endpoint
            {
                let _ = socket.send_to(d, to);
            }
        }
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
fn lan_exchange_blocking(ns: String, port: u16, count: usize) -> usize {
    std::thread::spawn(move || {
        enter(&ns);
        let socket = UdpSocket::bind((LAN_HOST, port)).expect("bind lan");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let server = SocketAddr::from((SERVER, 5004));
        let mut echoes = 0;
        let mut buf = [0u8; 1500];
        for i in 0..count {
            let _ = socket.send_to(format!("call {i:04}").as_bytes(), server);
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                if from == server {
                    echoes += 1;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            if let Ok((_, from)) = socket.recv_from(&mut buf)
                && from == server
            {
                echoes += 1;
            }
        }
        echoes
    })
    .join()
    .expect("lan host")
}

async fn lan_exchange(ns: String, port: u16, count: usize) -> usize {
    tokio::task::spawn_blocking(move || lan_exchange_blocking(ns, port, count))
        .await
        .expect("blocking")
}

/// A UDP packet `src:sport` → `dst:dport` (no UDP checksum, a valid header checksum).
fn udp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 36];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&36u16.to_be_bytes());
    p[8] = 64;
    p[9] = stayopen_tunnel::packet::UDP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&16u16.to_be_bytes());
    p[28..36].copy_from_slice(b"intruder");
    p
}

/// Whether anything arrives on `socket` within a second.
fn receives_anything(socket: UdpSocket) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    socket.recv_from(&mut [0u8; 1500]).is_ok()
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
                .all(|(src, _, port)| *src == INNER && *port == 5004),
            "the relay sees the flow from the appliance's inner address: {:?}",
            log.inner_udp
        );
        assert_eq!(log.endpoints.last(), Some(&Ipv4Addr::new(10, 0, 1, 2)));
    }
    let handshakes = log.lock().expect("log").handshake_inits;

    // Attack: the relay's side sends what the practice never asked for — a datagram straight to
    // a LAN host, and a new connection to the appliance's inner address. Neither gets through.
    let lan_listener = {
        let ns = bed_lan.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::spawn(move || {
                enter(&ns);
                receives_anything(UdpSocket::bind((LAN_HOST, 40999)).expect("bind"))
            })
            .join()
            .expect("listener")
        })
    };
    let appliance_socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 40998)).expect("bind");
    let appliance_listener =
        tokio::task::spawn_blocking(move || receives_anything(appliance_socket));
    tokio::time::sleep(Duration::from_millis(200)).await;
    log.lock().expect("log").inject.extend([
        udp_packet(SERVER, 5004, LAN_HOST, 40999),
        udp_packet(SERVER, 5004, INNER, 40998),
    ]);
    assert!(
        !lan_listener.await.expect("lan"),
        "a datagram from the tunnel reached a LAN host unasked"
    );
    assert!(
        !appliance_listener.await.expect("appliance"),
        "a new connection from the tunnel reached the appliance"
    );
    assert_eq!(
        tunnel.counters().refused_packets,
        1,
        "the packet addressed past the inner address is refused and counted"
    );
    let guard = tokio::process::Command::new("nft")
        .args(["list", "chain", "ip", "stayopen_tunnel", "guard_input"])
        .output()
        .await
        .expect("nft");
    let guard = String::from_utf8_lossy(&guard.stdout);
    assert!(
        guard.contains("counter packets 1 "),
        "the new connection arrived and the guard dropped it: {guard}"
    );

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

    // The failover flushes the flows NATed out of the uplinks (their marks 100 and 101, as
    // `flush_flows` does): the tunnelled flow carries the tunnel's mark 102 and survives.
    for mark in ["100", "101"] {
        let _ = tokio::process::Command::new("conntrack")
            .args(["-D", "--mark", mark])
            .output()
            .await;
    }
    let listed = tokio::process::Command::new("conntrack")
        .args(["-L", "--mark", "102"])
        .output()
        .await
        .expect("conntrack");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("src=192.168.50.10") && l.contains("dport=5004")),
        "the tunnelled flow's conntrack entry survives the uplinks' flush: {text}"
    );

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
    let listed = tokio::process::Command::new("conntrack")
        .args(["-L", "--mark", "102"])
        .output()
        .await
        .expect("conntrack");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !text.contains("dport=5004"),
        "falling back deletes the tunnelled flows (their clients reconnect directly): {text}"
    );
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
    assert_root();
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

fn assert_root() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "the netns tests need root (network namespaces, nftables, a TUN device); CI runs them as root"
    );
}

/// The agent's live state through its control socket.
async fn status(state_dir: &std::path::Path) -> Option<stayopen_appliance::control::Status> {
    use stayopen_appliance::control::{Request, Response, request};
    match request(state_dir, &Request::Status).await {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

async fn wait_for(
    state_dir: &std::path::Path,
    what: &str,
    within: Duration,
    done: impl Fn(&stayopen_appliance::control::Status) -> bool,
) -> stayopen_appliance::control::Status {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = status(state_dir).await
            && done(&s)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent itself (`stayopen-appliance run`) on the Linux dataplane with a `[tunnel]` section:
/// the tunnel comes up, a LAN flow to a critical destination goes through it, and when the primary
/// loses carrier the flow continues through the backup with the same inner source address and
/// port at the relay, without a new handshake — the failover's conntrack flush leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_a_tunnelled_flow_through_a_failover_with_the_same_source_at_the_relay() {
    assert_root();
    let prefix = format!("soa{}", std::process::id() % 100_000);
    let bed = build_bed(&prefix);
    let (dir, log, relay, stop, agent, _) = start_agent(&bed, false);
    let outcome = async {
        wait_for(dir.path(), "the tunnel up", Duration::from_secs(15), |s| {
            s.active.as_deref() == Some("isp1")
                && s.tunnel
                    .as_ref()
                    .is_some_and(|t| t.state == TunnelState::Up)
        })
        .await;
        // The steering is installed in the background once the tunnel is up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let echoes = lan_exchange(bed.lan.clone(), 41001, 20).await;
        assert!(echoes >= 19, "through the tunnel on isp1: {echoes} of 20");
        let (seen_before, handshakes) = {
            let log = log.lock().expect("log");
            assert_eq!(log.endpoints.last(), Some(&Ipv4Addr::new(10, 0, 1, 2)));
            (log.inner_udp.last().copied(), log.handshake_inits)
        };
        let seen_before = seen_before.expect("the relay saw the flow");
        assert_eq!(seen_before.0, INNER);

        // The primary loses carrier: the engine fails over and flushes isp1's flows.
        ip(&["-n", &bed.relay, "link", "set", "r0", "down"]);
        wait_for(dir.path(), "the failover", Duration::from_secs(5), |s| {
            s.active.as_deref() == Some("isp2")
        })
        .await;
        let echoes = lan_exchange(bed.lan.clone(), 41001, 20).await;
        assert!(echoes >= 19, "through the tunnel on isp2: {echoes} of 20");
        let log = log.lock().expect("log");
        assert_eq!(log.endpoints.last(), Some(&Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            log.inner_udp.last().copied(),
            Some(seen_before),
            "the relay sees the same inner source address and port after the failover"
        );
        assert_eq!(
            log.handshake_inits, handshakes,
            "roaming, not a new handshake"
        );
    };
    let result = tokio::time::timeout(Duration::from_secs(60), outcome).await;
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    relay.join().expect("relay");
    let agent_output = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    drop(bed);
    assert!(result.is_ok(), "timed out; agent log:\n{agent_output}");
}

/// The agent's process, stopped (SIGTERM) and reaped on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// What [`start_agent`] returns: the state directory, the relay's log, its thread and stop flag,
/// and the agent.
type Running = (
    tempfile::TempDir,
    Arc<Mutex<RelayLog>>,
    std::thread::JoinHandle<()>,
    Arc<AtomicBool>,
    Agent,
    // The relay's key and the appliance's.
    (KeyPair, KeyPair),
);

/// Starts the relay's peer and `stayopen-appliance run` in the bed's appliance namespace, on the
/// Linux dataplane with a static relay in `[tunnel]`.
fn start_agent(bed: &Bed, redundant: bool) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay_key = KeyPair::generate();
    let appliance_key = KeyPair::generate();
    std::fs::write(
        dir.path().join("wireguard.key"),
        appliance_key.private_base64(),
    )
    .expect("key");
    let config = format!(
        r#"
[appliance]
state_dir = "{state}"

[lan]
interface = "lan0"

[[uplinks]]
name = "isp1"
interface = "wan0"
gateway = "10.0.1.1"
priority = 0

[[uplinks]]
name = "isp2"
interface = "wan1"
gateway = "10.0.2.1"
priority = 1

[probes]
targets = ["{RELAY_PUBLIC}"]
timeout_ms = 300
recovery_ms = 1000
failback_clean_secs = 1
failback_max_hold_secs = 1

[dataplane]
kind = "linux"

[tunnel]
relay = {{ relay = "relay-test", endpoint = "{RELAY_PUBLIC}:51820", public_key = "{key}", inner_address = "{INNER}" }}
mode = "critical"
redundant_critical = {redundant}
critical_destinations = ["{SERVER}:5004"]
"#,
        state = dir.path().display(),
        key = relay_key.public_base64(),
    );
    let config_path = dir.path().join("appliance.toml");
    std::fs::write(&config_path, config).expect("config");
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
    let agent_log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let agent = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.app])
        .arg(env!("CARGO_BIN_EXE_stayopen-appliance"))
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(agent_log.try_clone().expect("log"))
        .stderr(agent_log)
        .spawn()
        .expect("agent");
    // Stopped however the test ends.
    let agent = Agent(agent);

    (dir, log, relay, stop, agent, (relay_key, appliance_key))
}

/// Redundant mode with the agent: a LAN "call" at about 50 packets a second loses at most one
/// packet when the primary is blackholed (it keeps its carrier; the engine detects the silence),
/// because each packet also leaves by the backup and the relay's replay window drops the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redundant_mode_a_call_loses_at_most_one_packet_when_the_primary_is_blackholed() {
    assert_root();
    let prefix = format!("sor{}", std::process::id() % 100_000);
    let bed = build_bed(&prefix);
    let (dir, log, relay, stop, agent, _) = start_agent(&bed, true);
    let outcome = async {
        wait_for(
            dir.path(),
            "the tunnel up and redundant",
            Duration::from_secs(15),
            |s| {
                s.tunnel
                    .as_ref()
                    .is_some_and(|t| t.state == TunnelState::Up && t.redundant)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let call = tokio::spawn(lan_exchange(bed.lan.clone(), 42001, 200));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The primary's line goes silent both ways; its carrier stays up.
        in_ns(
            &bed.relay,
            "nft",
            &["-f", "-"],
            Some(
                "table ip blackhole {\n  chain in {\n    type filter hook prerouting priority -300; policy accept;\n    iifname \"r0\" drop\n  }\n  chain out {\n    type filter hook output priority -300; policy accept;\n    oifname \"r0\" drop\n  }\n}\n",
            ),
        );
        wait_for(dir.path(), "the failover", Duration::from_secs(5), |s| {
            s.active.as_deref() == Some("isp2")
        })
        .await;
        let echoes = call.await.expect("call");
        eprintln!("redundant mode, primary blackholed mid-call: {echoes} of 200 packets echoed");
        assert!(
            echoes >= 199,
            "at most one of 200 packets lost in redundant mode: {echoes} echoed"
        );
        let (dropped, sources) = {
            let log = log.lock().expect("log");
            let sources: std::collections::BTreeSet<_> = log
                .inner_udp
                .iter()
                .map(|(src, sport, _)| (*src, *sport))
                .collect();
            (log.duplicates_dropped, sources)
        };
        assert!(dropped > 0, "the relay dropped copies");
        assert_eq!(
            sources.len(),
            1,
            "one source at the relay throughout: {sources:?}"
        );
        let status = status(dir.path()).await.expect("status");
        let tunnel = status.tunnel.expect("tunnel");
        assert!(
            tunnel.redundant_bytes.get("isp2").is_some_and(|b| *b > 0),
            "duplicates counted on isp2: {:?}",
            tunnel.redundant_bytes
        );
    };
    let result = tokio::time::timeout(Duration::from_secs(60), outcome).await;
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    relay.join().expect("relay");
    let agent_output = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    drop(bed);
    assert!(result.is_ok(), "timed out; agent log:\n{agent_output}");
}

/// A relay restart (its sessions lost): the agent asks for a new handshake as soon as the relay
/// has been quiet for a keepalive and the margin, before any fallback, so the tunnel never leaves
/// the `up` state and the LAN flow resumes with the same inner source address and port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_takes_the_tunnel_back_without_a_fallback_and_the_flow_keeps_its_source()
{
    assert_root();
    let prefix = format!("sos{}", std::process::id() % 100_000);
    let bed = build_bed(&prefix);
    let (dir, log, relay, stop, agent, (relay_key, appliance_key)) = start_agent(&bed, false);
    let mut relay = Some(relay);
    let outcome = async {
        wait_for(dir.path(), "the tunnel up", Duration::from_secs(15), |s| {
            s.tunnel
                .as_ref()
                .is_some_and(|t| t.state == TunnelState::Up)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let echoes = lan_exchange(bed.lan.clone(), 43001, 20).await;
        assert!(echoes >= 19, "through the tunnel: {echoes} of 20");
        let (seen_before, handshakes) = {
            let log = log.lock().expect("log");
            (log.inner_udp.last().copied(), log.handshake_inits)
        };

        // The relay restarts: a new process knows no session.
        stop.store(true, Ordering::Relaxed);
        if let Some(old) = relay.take() {
            old.join().expect("relay");
        }
        stop.store(false, Ordering::Relaxed);
        relay = Some({
            let (ns, key, peer, log, stop) = (
                bed.relay.clone(),
                relay_key.clone(),
                appliance_key.clone(),
                log.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || run_relay(ns, key, peer, log, stop))
        });
        let restarted = Instant::now();
        loop {
            let status = status(dir.path()).await.expect("status");
            let state = status.tunnel.map(|t| t.state);
            assert_eq!(
                state,
                Some(TunnelState::Up),
                "no fallback across the restart"
            );
            if log.lock().expect("log").handshake_inits > handshakes {
                eprintln!(
                    "relay restarted: new handshake initiated {:.1} s later, no fallback",
                    restarted.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(4),
                "no new handshake within 4 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let echoes = lan_exchange(bed.lan.clone(), 43001, 20).await;
        assert!(echoes >= 19, "through the restarted relay: {echoes} of 20");
        assert_eq!(
            log.lock().expect("log").inner_udp.last().copied(),
            seen_before,
            "the same inner source address and port after the restart"
        );
        let status = status(dir.path()).await.expect("status");
        assert_eq!(status.tunnel.map(|t| t.state), Some(TunnelState::Up));
    };
    let result = tokio::time::timeout(Duration::from_secs(60), outcome).await;
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    if let Some(relay) = relay {
        relay.join().expect("relay");
    }
    let agent_output = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    drop(bed);
    assert!(result.is_ok(), "timed out; agent log:\n{agent_output}");
}

/// Switch mode with the agent: a LAN "call" through a blackholed primary loses only what arrives
/// while the engine detects the silence (about 0.7 s), and the relay sees one source throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_switch_mode_a_call_through_a_blackholed_primary_loses_only_the_detection_time() {
    assert_root();
    let prefix = format!("sow{}", std::process::id() % 100_000);
    let bed = build_bed(&prefix);
    let (dir, log, relay, stop, agent, _) = start_agent(&bed, false);
    let outcome = async {
        wait_for(dir.path(), "the tunnel up", Duration::from_secs(15), |s| {
            s.tunnel
                .as_ref()
                .is_some_and(|t| t.state == TunnelState::Up)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let call = tokio::spawn(lan_exchange(bed.lan.clone(), 44001, 200));
        tokio::time::sleep(Duration::from_secs(1)).await;
        in_ns(
            &bed.relay,
            "nft",
            &["-f", "-"],
            Some(
                "table ip blackhole {\n  chain in {\n    type filter hook prerouting priority -300; policy accept;\n    iifname \"r0\" drop\n  }\n  chain out {\n    type filter hook output priority -300; policy accept;\n    oifname \"r0\" drop\n  }\n}\n",
            ),
        );
        let blackholed = Instant::now();
        wait_for(dir.path(), "the failover", Duration::from_secs(5), |s| {
            s.active.as_deref() == Some("isp2")
        })
        .await;
        let detected = blackholed.elapsed();
        let echoes = call.await.expect("call");
        eprintln!(
            "switch mode, primary blackholed mid-call: failover after {:.2} s, {echoes} of 200 packets echoed",
            detected.as_secs_f64()
        );
        // About 45 packets a second: a second of gap is at most ~50 packets.
        assert!(
            echoes >= 150,
            "only the detection time is lost in switch mode: {echoes} of 200 echoed"
        );

        // The primary's line comes back: traffic fails back after the clean period, and the
        // same flow continues through the tunnel over the primary.
        in_ns(
            &bed.relay,
            "nft",
            &["delete", "table", "ip", "blackhole"],
            None,
        );
        wait_for(dir.path(), "the failback", Duration::from_secs(10), |s| {
            s.active.as_deref() == Some("isp1")
        })
        .await;
        let echoes = lan_exchange(bed.lan.clone(), 44001, 20).await;
        assert!(echoes >= 19, "after the failback: {echoes} of 20 echoed");
        assert_eq!(
            log.lock().expect("log").endpoints.last(),
            Some(&Ipv4Addr::new(10, 0, 1, 2)),
            "the outer packets are back on the primary"
        );
        let sources: std::collections::BTreeSet<_> = log
            .lock()
            .expect("log")
            .inner_udp
            .iter()
            .map(|(src, sport, _)| (*src, *sport))
            .collect();
        assert_eq!(
            sources.len(),
            1,
            "one source at the relay throughout: {sources:?}"
        );
    };
    let result = tokio::time::timeout(Duration::from_secs(60), outcome).await;
    drop(agent);
    stop.store(true, Ordering::Relaxed);
    relay.join().expect("relay");
    let agent_output = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    drop(bed);
    assert!(result.is_ok(), "timed out; agent log:\n{agent_output}");
}
