//! The LAN services of the real agent (issue 17) in the router topology of
//! `infra/testbed/testbed.sh … up router`: the practice's router takes its WAN address from the
//! appliance's DHCP server and forwards its LAN's DNS to the appliance, which asks the resolvers
//! of the active uplink — each ISP's resolver reachable only through that ISP. Needs root, `ip`,
//! `nft`, `conntrack`, `dnsmasq` and `busybox` (infra/scripts/lib.sh installs them).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use stayopen_testkit::testbed::{self, ROUTER_LAN, Testbed};

const EHR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);

fn tools() -> PathBuf {
    testbed::tools_binary().unwrap_or_else(|e| panic!("{e}"))
}

fn appliance() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stayopen-appliance"))
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// One A query for `name` to `server` port 53, from namespace `ns`, no retry: the address
/// answered, or `None` (no answer within `timeout`, or no address in it).
fn resolve(ns: &str, server: &str, name: &str, timeout: Duration) -> Option<Ipv4Addr> {
    let server: SocketAddr = format!("{server}:53").parse().expect("server");
    let name = Name::from_str(name).expect("name");
    in_namespace(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_read_timeout(Some(timeout)).ok()?;
        let mut query = Message::new();
        let id = rand::random();
        query
            .set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name, RecordType::A));
        socket.send_to(&query.to_vec().ok()?, server).ok()?;
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let (n, _) = socket.recv_from(&mut buf).ok()?;
            let Ok(answer) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if answer.id() != id {
                continue;
            }
            return answer.answers().iter().find_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            });
        }
        None
    })
}

/// One A query for `name` over TCP to `server` port 53 from namespace `ns`.
fn resolve_tcp(ns: &str, server: &str, name: &str) -> Option<Ipv4Addr> {
    use std::io::{Read, Write};
    let server: SocketAddr = format!("{server}:53").parse().expect("server");
    let name = Name::from_str(name).expect("name");
    in_namespace(ns, move || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut query = Message::new();
        query
            .set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name, RecordType::A));
        let bytes = query.to_vec().ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        stream.write_all(&len.to_be_bytes()).ok()?;
        stream.write_all(&bytes).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).ok()?;
        let answer = Message::from_vec(&answer).ok()?;
        answer.answers().iter().find_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    })
}

fn http_from_host(bed: &Testbed) -> Result<String, String> {
    in_namespace(&bed.namespace("host"), || {
        testbed::http_get(testbed::EHR_HTTP_ADDR.parse().expect("address"), "/")
            .map_err(|e| e.to_string())
    })
}

fn ip_output(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The moment of the agent's first `failover` event.
fn failover_at(bed: &Testbed) -> Option<DateTime<Utc>> {
    bed.events()
        .iter()
        .find(|e| e["kind"] == "failover")
        .and_then(|e| e["ts"].as_str().map(str::to_owned))
        .and_then(|ts| DateTime::parse_from_rfc3339(&ts).ok())
        .map(|t| t.with_timezone(&Utc))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_router_is_addressed_by_the_appliance_and_new_names_resolve_within_a_second_of_a_failover()
 {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "the netns tests need root (network namespaces, nftables); CI runs them as root"
    );
    let prefix = format!("so{}lan", std::process::id() % 10_000);
    let mut bed = Testbed::up_router(&prefix).unwrap_or_else(|e| panic!("{e}"));
    bed.start_servers(&tools()).expect("servers");
    let config = bed.lan_services_config(30);
    bed.start_agent_with_config(appliance(), &config)
        .expect("agent");
    if let Err(e) = bed.wait_healthy(Duration::from_secs(60)).await {
        panic!("{e}\n{}", bed.agent_log());
    }

    // The router's only configuration: its DHCP client starts.
    let started = Instant::now();
    bed.start_router_dhcp().expect("router");
    let lease = loop {
        if let Some(lease) = bed
            .router_leases()
            .into_iter()
            .find(|l| l.starts_with("bound"))
        {
            break lease;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the router got no lease\n{}",
            bed.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "router lease after {} ms: {lease}",
        started.elapsed().as_millis()
    );
    assert!(lease.contains("router=100.64.10.1"), "{lease}");
    assert!(lease.contains("dns=100.64.10.1"), "{lease}");
    assert!(lease.contains("mask=24"), "{lease}");
    let address = lease
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ip="))
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .expect("leased address");
    assert!(
        (Ipv4Addr::new(100, 64, 10, 100)..=Ipv4Addr::new(100, 64, 10, 199)).contains(&address),
        "{address} is outside the pool"
    );
    let rtr = bed.namespace("rtr");
    assert!(
        ip_output(&["-n", &rtr, "-4", "addr", "show", "wan0"]).contains(&format!("{address}/24")),
        "the router's WAN port has its lease"
    );
    assert!(
        ip_output(&["-n", &rtr, "route", "show", "default"]).contains("via 100.64.10.1"),
        "the router's default route is the appliance"
    );
    // The lease is on disk for an agent restart.
    let leases =
        std::fs::read_to_string(bed.state_dir().join("lan-leases.json")).expect("lease file");
    assert!(leases.contains(&address.to_string()), "{leases}");

    // The host behind the router reaches the internet and resolves names through the router.
    let host = bed.namespace("host");
    let mut body = http_from_host(&bed);
    let reach = Instant::now();
    while body.is_err() && reach.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        body = http_from_host(&bed);
    }
    assert_eq!(
        body.as_deref(),
        Ok("ok"),
        "HTTP from the host behind the router"
    );
    let mut first = None;
    let warm = Instant::now();
    while first.is_none() && warm.elapsed() < Duration::from_secs(10) {
        first = resolve(&host, ROUTER_LAN, "ehr.example.", Duration::from_secs(1));
    }
    assert_eq!(
        first,
        Some(EHR),
        "ehr.example through the router and the appliance"
    );
    assert_eq!(
        resolve(
            &host,
            ROUTER_LAN,
            "before.test.example.",
            Duration::from_secs(2)
        ),
        Some(EHR)
    );
    // The forwarder answers over TCP too (the router asking it directly).
    assert_eq!(
        resolve_tcp(&bed.namespace("rtr"), "100.64.10.1", "tcp.test.example."),
        Some(EHR)
    );
    // ISP2's resolver cannot be asked through ISP1 (so the forwarder must follow the uplink).
    assert_eq!(
        resolve(
            &bed.namespace("app"),
            testbed::ISP2_RESOLVER,
            "direct.test.example.",
            Duration::from_millis(500)
        ),
        None,
        "ISP2's resolver answered a query that left through ISP1"
    );

    // ISP1 goes dark: its resolver is reachable through nothing.
    bed.fault(&["blackhole", "1"]).expect("blackhole");
    let blackholed = Utc::now();
    // A query asked now is in flight to ISP1's resolver when the failover comes.
    let in_flight = {
        let host = host.clone();
        std::thread::spawn(move || {
            let answer = resolve(
                &host,
                ROUTER_LAN,
                "inflight.test.example.",
                Duration::from_secs(5),
            );
            (answer, Utc::now())
        })
    };
    bed.wait_for("failover to isp2", Duration::from_secs(10), |s| {
        s.active.as_deref() == Some("isp2")
    })
    .await
    .expect("failover");
    let failover = failover_at(&bed).expect("a failover event");
    // New, uncached names, one after another, until one resolves.
    let mut n = 0;
    let resolved_at = loop {
        n += 1;
        let name = format!("after-{n}.test.example.");
        if resolve(&host, ROUTER_LAN, &name, Duration::from_millis(500)) == Some(EHR) {
            break Utc::now();
        }
        assert!(
            (Utc::now() - failover).num_milliseconds() < 5_000,
            "no name resolved after the failover\n{}",
            bed.agent_log()
        );
    };
    let after_failover = (resolved_at - failover).num_milliseconds();
    println!(
        "failover {} ms after the blackhole; a new name resolved {after_failover} ms after the \
         failover event (attempt {n})",
        (failover - blackholed).num_milliseconds()
    );
    assert!(
        after_failover < 1_000,
        "a new name took {after_failover} ms after the failover"
    );
    let (answer, answered_at) = in_flight.join().expect("in-flight query");
    assert_eq!(
        answer,
        Some(EHR),
        "the query in flight at the failover was answered"
    );
    let in_flight_after = (answered_at - failover).num_milliseconds();
    println!("the query in flight at the failover was answered {in_flight_after} ms after it");
    assert!(
        in_flight_after < 1_000,
        "the query in flight waited {in_flight_after} ms after the failover"
    );
    // More new names, and the internet, through ISP2.
    for i in 0..5 {
        let name = format!("more-{i}.test.example.");
        assert_eq!(
            resolve(&host, ROUTER_LAN, &name, Duration::from_secs(1)),
            Some(EHR),
            "{name}"
        );
    }
    assert_eq!(
        http_from_host(&bed).as_deref(),
        Ok("ok"),
        "HTTP after the failover"
    );
    // The router kept its address throughout.
    assert!(
        ip_output(&["-n", &rtr, "-4", "addr", "show", "wan0"]).contains(&format!("{address}/24"))
    );
    drop(bed);
}
