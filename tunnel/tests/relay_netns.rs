//! The real `stayopen-relay` binary in network namespaces: a client namespace runs boringtun
//! clients in this process (threads that entered the namespace), a relay namespace runs the
//! binary, a server namespace behind the relay's public side echoes UDP. Needs root, `ip` and
//! `nft`. Addresses: 192.0.2.0/24 (client side), 198.51.100.0/24 (relay's public side),
//! 100.96.0.0/12 inside the tunnel.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use stayopen_tunnel::keys::KeyPair;
use stayopen_tunnel::packet::InnerPacket;

const RELAY_OUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_OUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The client's second "uplink" for redundant mode.
const CLIENT_OUTER_2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const RELAY_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const ECHO_PORT: u16 = 7007;
const CLIENT_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
const LATE_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 3);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

/// Three namespaces and their veths; deleted on drop.
struct Namespaces {
    client: String,
    relay: String,
    server: String,
}

impl Namespaces {
    fn create(prefix: &str) -> Namespaces {
        let ns = Namespaces {
            client: format!("{prefix}c"),
            relay: format!("{prefix}r"),
            server: format!("{prefix}s"),
        };
        for name in [&ns.client, &ns.relay, &ns.server] {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        // client c0 <-> relay down0; relay up0 <-> server s0
        ip(&[
            "-n", &ns.client, "link", "add", "c0", "type", "veth", "peer", "name", "down0",
            "netns", &ns.relay,
        ]);
        ip(&[
            "-n", &ns.relay, "link", "add", "up0", "type", "veth", "peer", "name", "s0", "netns",
            &ns.server,
        ]);
        for (name, dev, address) in [
            (&ns.client, "c0", "192.0.2.2/24"),
            (&ns.client, "c0", "192.0.2.3/24"),
            (&ns.relay, "down0", "192.0.2.1/24"),
            (&ns.relay, "up0", "198.51.100.1/24"),
            (&ns.server, "s0", "198.51.100.2/24"),
        ] {
            ip(&["-n", name, "addr", "add", address, "dev", dev]);
            ip(&["-n", name, "link", "set", dev, "up"]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.client, &self.relay, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("namespace thread")
}

fn enter(path: &str) {
    let file = std::fs::File::open(path).expect("open netns");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// An IPv4/UDP packet with a correct header checksum (UDP checksum 0: none).
fn udp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum = 0u32;
    for pair in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// A boringtun client with its UDP socket (created inside the client namespace).
struct Client {
    tunn: Tunn,
    socket: UdpSocket,
    relay: SocketAddr,
}

impl Client {
    fn new(key: &KeyPair, relay_public: boringtun::x25519::PublicKey, index: u32) -> Client {
        let socket = UdpSocket::bind((CLIENT_OUTER, 0)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Client {
            tunn: Tunn::new(key.secret().clone(), relay_public, None, None, index, None)
                .expect("tunn"),
            socket,
            relay: SocketAddr::from((RELAY_OUTER, 51820)),
        }
    }

    /// Handshakes; true when the relay answered within `wait`.
    fn handshake(&mut self, wait: Duration) -> bool {
        let mut buf = vec![0u8; 2048];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let TunnResult::WriteToNetwork(init) =
                self.tunn.format_handshake_initiation(&mut buf, true)
            {
                self.socket.send_to(init, self.relay).expect("send");
            }
            let mut answer = vec![0u8; 2048];
            let retry = Instant::now() + Duration::from_millis(500);
            while Instant::now() < retry {
                let Ok((n, _)) = self.socket.recv_from(&mut answer) else {
                    continue;
                };
                match self.tunn.decapsulate(None, &answer[..n], &mut buf) {
                    TunnResult::WriteToNetwork(keepalive) => {
                        self.socket.send_to(keepalive, self.relay).expect("send");
                        return true;
                    }
                    _ => continue,
                }
            }
        }
        false
    }

    fn send(&mut self, packet: &[u8]) {
        let mut buf = vec![0u8; 4096];
        if let TunnResult::WriteToNetwork(sealed) = self.tunn.encapsulate(packet, &mut buf) {
            self.socket.send_to(sealed, self.relay).expect("send");
        }
    }

    /// Redundant mode: the same ciphertext from this socket and from `second`.
    fn send_twice(&mut self, packet: &[u8], second: &UdpSocket) {
        let mut buf = vec![0u8; 4096];
        if let TunnResult::WriteToNetwork(sealed) = self.tunn.encapsulate(packet, &mut buf) {
            self.socket.send_to(sealed, self.relay).expect("send");
            second.send_to(sealed, self.relay).expect("send");
        }
    }

    /// Waits for a handshake initiation from the relay, answers it and takes the relay's
    /// confirming keepalive (a responder sends on a new session only after it); true then.
    fn answer_handshake(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut datagram = vec![0u8; 4096];
        let mut buf = vec![0u8; 4096];
        let mut answered = false;
        while Instant::now() < deadline {
            let Ok((n, _)) = self.socket.recv_from(&mut datagram) else {
                continue;
            };
            match self.tunn.decapsulate(None, &datagram[..n], &mut buf) {
                TunnResult::WriteToNetwork(response) if datagram[0] == 1 => {
                    self.socket.send_to(response, self.relay).expect("send");
                    answered = true;
                }
                TunnResult::Done if answered && datagram[0] == 4 => return true,
                _ => {}
            }
        }
        false
    }

    /// The next inner packet from the relay within `wait`.
    fn receive(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut datagram = vec![0u8; 4096];
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.socket.recv_from(&mut datagram) else {
                continue;
            };
            match self.tunn.decapsulate(None, &datagram[..n], &mut buf) {
                TunnResult::WriteToTunnelV4(packet, _) => return Some(packet.to_vec()),
                TunnResult::WriteToNetwork(out) => {
                    self.socket.send_to(out, self.relay).expect("send");
                }
                _ => {}
            }
        }
        None
    }
}

/// What the echo server heard: each datagram's source and payload.
type Heard = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP echo server in the server namespace that remembers who it heard from.
struct Echo {
    heard: Heard,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(ns: &str) -> Echo {
        let heard: Heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/var/run/netns/{ns}");
        let (h, s) = (heard.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter(&path);
            let socket = UdpSocket::bind((SERVER, ECHO_PORT)).expect("bind echo");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    h.lock().expect("lock").push((from, buf[..n].to_vec()));
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        ready_rx.recv().expect("echo ready");
        Echo { heard, stop }
    }

    fn heard(&self, payload: &[u8]) -> Vec<SocketAddr> {
        self.heard
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, p)| p == payload)
            .map(|(from, _)| *from)
            .collect()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The cloud's relay peer list, served from the relay namespace on 127.0.0.1:18080.
struct CloudStub {
    list: Arc<Mutex<(String, String)>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CloudStub {
    fn start(ns: &str, revision: &str, body: String) -> CloudStub {
        let list = Arc::new(Mutex::new((revision.to_owned(), body)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let path = format!("/var/run/netns/{ns}");
        let (l, r) = (list.clone(), requests.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter(&path);
            let listener = TcpListener::bind("127.0.0.1:18080").expect("bind cloud stub");
            ready_tx.send(()).expect("ready");
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                r.lock().expect("lock").push(head.clone());
                let (revision, body) = l.lock().expect("lock").clone();
                let lower = head.to_ascii_lowercase();
                let response = if !lower.contains("authorization: bearer sor_test_token") {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                } else if lower.contains(&format!("if-none-match: \"{revision}\"")) {
                    "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        ready_rx.recv().expect("cloud stub ready");
        CloudStub { list, requests }
    }

    fn set(&self, revision: &str, body: String) {
        *self.list.lock().expect("lock") = (revision.to_owned(), body);
    }
}

fn peer_list(revision: &str, peers: &[(&KeyPair, Ipv4Addr)]) -> String {
    let peers: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, (key, inner))| {
            format!(
                r#"{{"appliance_id":"0192e4b4-7d3c-7b3a-9a55-3c1f2a4b5c{i:02x}","public_key":"{}","inner_address":"{inner}"}}"#,
                key.public_base64()
            )
        })
        .collect();
    format!(
        r#"{{"relay":"relay-test","revision":"{revision}","peers":[{}]}}"#,
        peers.join(",")
    )
}

/// The relay process; killed on drop if the test did not stop it.
struct RelayProcess(Option<Child>);

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(ns: &str, path: &str) -> Option<String> {
    let path = path.to_owned();
    in_ns(ns, move || {
        let mut stream = TcpStream::connect("127.0.0.1:19810").ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    })
}

fn metric(ns: &str, line_start: &str) -> u64 {
    let text = http_get(ns, "/metrics").expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in {text}"))
}

fn wait_until(what: &str, wait: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn the_relay_nats_a_known_peer_to_its_public_address_sends_a_redundant_flows_replies_over_both_uplinks_refuses_strangers_and_spoofers_accepts_peers_the_cloud_adds_and_resumes_sessions_after_a_restart()
 {
    assert!(
        is_root(),
        "the netns tests need root (network namespaces, nftables); CI runs them as root"
    );
    let prefix = format!("sorl{}", std::process::id() % 100_000);
    let ns = Namespaces::create(&prefix);
    let echo = Echo::start(&ns.server);

    let dir = tempfile::tempdir().expect("tempdir");
    let relay_key = KeyPair::generate();
    std::fs::write(dir.path().join("relay.key"), relay_key.private_base64()).expect("key");
    std::fs::write(dir.path().join("relay.token"), "sor_test_token\n").expect("token");
    let client_key = KeyPair::generate();
    let late_key = KeyPair::generate();
    let cloud = CloudStub::start(&ns.relay, "r1", peer_list("r1", &[]));
    let config = format!(
        r#"listen = "0.0.0.0:51820"
private_key_file = "relay.key"
tun_name = "so-relay0"
inner_network = "100.96.0.0/12"
mtu = 1380
public_interface = "up0"
http_listen = "127.0.0.1:19810"
[cloud]
url = "http://127.0.0.1:18080"
token_file = "relay.token"
poll_secs = 1
[[peers]]
public_key = "{}"
inner_address = "{CLIENT_INNER}"
"#,
        client_key.public_base64()
    );
    let config_path = dir.path().join("relay.toml");
    std::fs::write(&config_path, config).expect("config");

    // public-key prints the key the relay uses.
    let printed = Command::new(env!("CARGO_BIN_EXE_stayopen-relay"))
        .args(["public-key", "--config"])
        .arg(&config_path)
        .output()
        .expect("public-key");
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        relay_key.public_base64()
    );

    let mut relay = start_relay(&ns.relay, &config_path);
    let relay_ns = ns.relay.clone();
    wait_until("the relay's /healthz", Duration::from_secs(10), || {
        http_get(&relay_ns, "/healthz").is_some_and(|t| t.starts_with("HTTP/1.1 200"))
    });

    // 1. A known peer: its packet reaches the server from the relay's public address, and the
    //    echo comes back through the tunnel.
    let relay_public = relay_key.public();
    let key = client_key.clone();
    let (echoed, spoof_payload) = in_ns(&ns.client, move || {
        let mut client = Client::new(&key, relay_public, 11);
        assert!(client.handshake(Duration::from_secs(5)), "handshake");
        let payload = b"hello through the relay";
        client.send(&udp_packet(CLIENT_INNER, 40000, SERVER, ECHO_PORT, payload));
        let echoed = client.receive(Duration::from_secs(3)).expect("echo back");
        // 2. The same peer claims another inner source: dropped at the relay.
        let spoof = b"spoofed source";
        client.send(&udp_packet(LATE_INNER, 40001, SERVER, ECHO_PORT, spoof));

        // Redundant mode: a "call" packet over both uplinks, twice; the second round's echo
        // comes back over both.
        let second = UdpSocket::bind((CLIENT_OUTER_2, 0)).expect("bind second");
        second
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let call = udp_packet(CLIENT_INNER, 40003, SERVER, ECHO_PORT, b"call");
        client.send_twice(&call, &second);
        assert!(
            client.receive(Duration::from_secs(3)).is_some(),
            "call echo"
        );
        client.send_twice(&call, &second);
        assert!(
            client.receive(Duration::from_secs(3)).is_some(),
            "call echo"
        );
        let mut copy = [0u8; 2048];
        let copies = (0..10)
            .filter(|_| second.recv_from(&mut copy).is_ok())
            .count();
        assert!(
            copies >= 1,
            "no copy of the call's echo over the second uplink"
        );
        (echoed, spoof.to_vec())
    });
    let reply = InnerPacket::parse(&echoed).expect("an IPv4 reply");
    assert_eq!((reply.src, reply.dst), (SERVER, CLIENT_INNER));
    assert_eq!(reply.ports, Some((ECHO_PORT, 40000)));
    assert!(echoed.ends_with(b"hello through the relay"));
    let seen = echo.heard(b"hello through the relay");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].ip(),
        RELAY_PUBLIC,
        "the server sees the relay's public address"
    );
    wait_until("the spoofed packet counted", Duration::from_secs(3), || {
        metric(
            &relay_ns,
            "stayopen_relay_refused_total{reason=\"spoofed_source\"}",
        ) == 1
    });
    assert!(
        echo.heard(&spoof_payload).is_empty(),
        "the spoofed packet got through"
    );

    // 3. A key in no list: no answer, counted.
    let key = late_key.clone();
    let answered = in_ns(&ns.client, move || {
        Client::new(&key, relay_public, 12).handshake(Duration::from_millis(1500))
    });
    assert!(!answered, "the relay answered an unknown key");
    assert!(
        metric(
            &relay_ns,
            "stayopen_relay_refused_total{reason=\"unknown_key\"}"
        ) >= 1
    );

    // 4. The cloud adds that key while the relay runs: accepted without a restart.
    cloud.set("r2", peer_list("r2", &[(&late_key, LATE_INNER)]));
    wait_until("the new peer list", Duration::from_secs(10), || {
        http_get(&relay_ns, "/healthz").is_some_and(|t| t.contains("\"peers\":2"))
    });
    let key = late_key.clone();
    let echoed = in_ns(&ns.client, move || {
        let mut client = Client::new(&key, relay_public, 13);
        assert!(client.handshake(Duration::from_secs(5)), "late handshake");
        client.send(&udp_packet(
            LATE_INNER,
            40002,
            SERVER,
            ECHO_PORT,
            b"late peer",
        ));
        client.receive(Duration::from_secs(3))
    });
    assert!(echoed.is_some_and(|p| p.ends_with(b"late peer")));
    assert!(
        cloud
            .requests
            .lock()
            .expect("lock")
            .iter()
            .any(|r| r.to_ascii_lowercase().contains("if-none-match: \"r1\"")),
        "the relay sends the revision it has"
    );
    assert!(
        metric(
            &relay_ns,
            "stayopen_relay_cloud_polls_total{result=\"not_modified\"}"
        ) >= 1
    );
    wait_until("both handshakes counted", Duration::from_secs(2), || {
        metric(&relay_ns, "stayopen_relay_handshakes_completed_total") == 2
    });

    // 5. A restart: SIGTERM stops the relay cleanly (its nft table removed); started again, it
    //    handshakes with the client where it last heard from it, and traffic resumes without
    //    the client starting a handshake.
    let key = client_key.clone();
    let (relay_name, config) = (ns.relay.clone(), config_path.clone());
    let (restarted, echoed) = in_ns(&ns.client, move || {
        let mut client = Client::new(&key, relay_public, 14);
        assert!(client.handshake(Duration::from_secs(5)), "handshake");
        client.send(&udp_packet(
            CLIENT_INNER,
            40004,
            SERVER,
            ECHO_PORT,
            b"before",
        ));
        assert!(
            client.receive(Duration::from_secs(3)).is_some(),
            "echo before"
        );
        stop_relay(&mut relay, &relay_name);
        let restarted = start_relay(&relay_name, &config);
        assert!(
            client.answer_handshake(Duration::from_secs(5)),
            "the restarted relay handshakes with the client"
        );
        client.send(&udp_packet(
            CLIENT_INNER,
            40004,
            SERVER,
            ECHO_PORT,
            b"after",
        ));
        (restarted, client.receive(Duration::from_secs(3)))
    });
    let mut relay = restarted;
    assert!(
        echoed.is_some_and(|p| p.ends_with(b"after")),
        "traffic resumed"
    );
    assert_eq!(echo.heard(b"after").len(), 1);
    stop_relay(&mut relay, &ns.relay);
}

fn start_relay(ns: &str, config: &std::path::Path) -> RelayProcess {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_stayopen-relay")])
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .spawn()
        .expect("start the relay");
    let relay = RelayProcess(Some(child));
    wait_until("the relay's /healthz", Duration::from_secs(10), || {
        http_get(ns, "/healthz").is_some_and(|t| t.starts_with("HTTP/1.1 200"))
    });
    relay
}

/// SIGTERM; the relay exits 0 and its nft table is gone.
fn stop_relay(relay: &mut RelayProcess, ns: &str) {
    let mut child = relay.0.take().expect("a running relay");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the relay did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let tables = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "tables"])
        .output()
        .expect("nft");
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("stayopen_relay"),
        "the nft table is removed"
    );
}
