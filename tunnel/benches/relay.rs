//! The relay core's figures (docs/benchmarks.md, "Session-safe tunnel: the relay"):
//!
//! - memory per connected peer: 1,000 boringtun clients handshake with the sans-IO core and send
//!   one packet each; the process's resident set size (VmRSS, /proc/self/status) is read before
//!   the relay exists (the clients already made) and after, and the growth divided by 1,000;
//! - handshakes per second the core completes on one core (only the relay's work is timed);
//! - encapsulate and decapsulate throughput of 1,400-byte packets through the core, per core.
//!
//! `cargo bench -p stayopen-tunnel --bench relay` (release).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use stayopen_tunnel::keys::KeyPair;
use stayopen_tunnel::relay::{Limits, Output, PeerEntry, Relay};

const PEERS: usize = 1_000;
const PACKET: usize = 1_400;
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 60);

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn inner_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 96, 0, 2)) + i as u32)
}

fn endpoint_of(i: usize) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32),
        51820,
    ))
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, total: usize) -> Vec<u8> {
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5004u16.to_be_bytes());
    p
}

fn new_relay() -> Relay {
    Relay::new(
        KeyPair::generate(),
        "100.96.0.0/12".parse().expect("net"),
        Limits {
            handshakes_per_source_per_sec: u32::MAX,
            handshakes_before_cookies_per_sec: u64::MAX,
        },
    )
}

struct Client {
    key: KeyPair,
    tunn: Tunn,
}

fn clients(relay: &Relay, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let key = KeyPair::generate();
            let tunn = Tunn::new(
                key.secret().clone(),
                relay.public_key(),
                None,
                None,
                i as u32,
                None,
            )
            .expect("tunn");
            Client { key, tunn }
        })
        .collect()
}

fn entries(clients: &[Client]) -> Vec<PeerEntry> {
    clients
        .iter()
        .enumerate()
        .map(|(i, c)| PeerEntry {
            public_key: c.key.public(),
            inner_address: inner_of(i),
        })
        .collect()
}

/// Handshakes every client; returns the time the relay spent answering initiations.
fn handshake_all(relay: &mut Relay, clients: &mut [Client]) -> Duration {
    let mut buf = vec![0u8; 2048];
    let mut spent = Duration::ZERO;
    let mut out = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let init = match client.tunn.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        out.clear();
        let start = Instant::now();
        relay.handle_datagram(Instant::now(), endpoint_of(i), &init, &mut out);
        spent += start.elapsed();
        let Some(Output::Network { datagram, .. }) = out.pop() else {
            panic!("no response");
        };
        let keepalive = match client.tunn.decapsulate(None, &datagram, &mut buf) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        relay.handle_datagram(Instant::now(), endpoint_of(i), &keepalive, &mut out);
    }
    spent
}

fn main() {
    // 1. Memory per connected peer.
    let probe = new_relay();
    let mut many = clients(&probe, PEERS);
    drop(probe);
    let before = rss_kib();
    let mut relay = new_relay();
    // The clients were made for the probe relay's key: remake their tunnels for this one.
    for (i, c) in many.iter_mut().enumerate() {
        c.tunn = Tunn::new(
            c.key.secret().clone(),
            relay.public_key(),
            None,
            None,
            i as u32,
            None,
        )
        .expect("tunn");
    }
    let client_rss = rss_kib();
    relay.set_peers(&entries(&many));
    handshake_all(&mut relay, &mut many);
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    for (i, c) in many.iter_mut().enumerate() {
        let packet = udp(inner_of(i), SERVER, 200);
        if let TunnResult::WriteToNetwork(sealed) = c.tunn.encapsulate(&packet, &mut buf) {
            let sealed = sealed.to_vec();
            relay.handle_datagram(Instant::now(), endpoint_of(i), &sealed, &mut out);
        }
    }
    let after = rss_kib();
    let stats = relay.stats();
    assert_eq!(stats.sessions, PEERS);
    let per_peer = (after.saturating_sub(client_rss)) as f64 * 1024.0 / PEERS as f64;
    println!(
        "memory: {PEERS} connected peers: RSS {before} KiB before the relay, {client_rss} KiB with the clients' tunnels remade, {after} KiB after; {per_peer:.0} bytes per connected peer (size_of Tunn {} bytes)",
        std::mem::size_of::<Tunn>()
    );

    // 2. Handshakes per second (only the relay's work timed).
    let mut hs_relay = new_relay();
    let (mut hs_clients, hs_entries) = {
        let c = clients(&hs_relay, 2_000);
        let e = entries(&c);
        (c, e)
    };
    hs_relay.set_peers(&hs_entries);
    let spent = handshake_all(&mut hs_relay, &mut hs_clients);
    println!(
        "handshakes: {} answered in {:.3} s of relay time: {:.0} handshakes/s on one core",
        hs_clients.len(),
        spent.as_secs_f64(),
        hs_clients.len() as f64 / spent.as_secs_f64()
    );

    // 3. Throughput of 1,400-byte packets through the core, each way.
    let client = &mut many[0];
    let n = 100_000;
    let mut decap = Duration::ZERO;
    let mut encap = Duration::ZERO;
    let to_server = udp(inner_of(0), SERVER, PACKET);
    let to_client = udp(SERVER, inner_of(0), PACKET);
    let mut client_buf = vec![0u8; 4096];
    let mut delivered = 0usize;
    for _ in 0..n {
        let sealed = match client.tunn.encapsulate(&to_server, &mut client_buf) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        out.clear();
        let start = Instant::now();
        relay.handle_datagram(Instant::now(), endpoint_of(0), &sealed, &mut out);
        decap += start.elapsed();
        delivered += out.len();
        out.clear();
        let start = Instant::now();
        relay.handle_tun_packet(Instant::now(), &to_client, &mut out);
        encap += start.elapsed();
        delivered += out.len();
    }
    assert_eq!(delivered, 2 * n);
    let mbits = |d: Duration| (n * PACKET * 8) as f64 / d.as_secs_f64() / 1e6;
    println!(
        "throughput: {n} packets of {PACKET} bytes each way: decapsulate {:.0} Mbit/s, encapsulate {:.0} Mbit/s, both on one core {:.0} Mbit/s",
        mbits(decap),
        mbits(encap),
        mbits(decap + encap) * 2.0
    );
}
