//! Webhooks as an attacker aims them: at the cloud's own network through a host name that rebinds
//! after it was vetted, through a name answering a public and a private address, through IPv4 in
//! IPv6 clothing and the other special-purpose ranges, and at a port whose answer they want to
//! read through `last_error`.
//!
//! The real cloud process runs in a network namespace of its own (`ip netns exec`, which
//! bind-mounts `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`), so its system resolver asks
//! a DNS stub this test runs inside that namespace. The receivers — a public one on a
//! documentation address that the cloud is explicitly allowed to reach
//! (`alerts.webhook_allowed_networks`), and an "internal" service on the namespace's loopback —
//! are this test's sockets too, opened inside the namespace by a thread that joined it (setns).
//! Needs root and `ip`.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use common::process::CloudProcess;
use stayopen_cloud::domain::seed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Where the cloud listens inside the namespace.
const CLOUD_IP: &str = "203.0.113.40";
/// The public receiver: a documentation address, reachable only by the explicit opt-in.
const RECEIVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
/// What the receiver answers when it fails, which a technician must never read.
const SECRET_BODY: &str = "SSH-2.0-OpenSSH_9.6 internal-db password=hunter2";

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip");
    assert!(status.success(), "ip {args:?}");
}

/// DNS answers for one name, by query type: A and AAAA records, chosen per query by how many A
/// queries for the name came before.
type Script = Arc<dyn Fn(u16, usize) -> Vec<IpAddr> + Send + Sync>;

/// A network namespace with loopback, the receiver's and the cloud's addresses, its own
/// resolv.conf pointing at a DNS stub on its loopback, and the sockets this test serves there.
struct Lab {
    name: String,
    /// A queries per name.
    a_queries: Arc<Mutex<HashMap<String, usize>>>,
    /// Connections the internal service (loopback:80 in the namespace) accepted.
    internal_connections: Arc<AtomicUsize>,
    /// Requests the public receiver got.
    received: Arc<AtomicUsize>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Opens sockets inside namespace `name`: a thread joins it, binds, and hands them back (a socket
/// stays in the namespace it was made in).
fn sockets_in(
    name: &str,
) -> (
    std::net::UdpSocket,
    std::net::TcpListener,
    std::net::TcpListener,
) {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("namespace handle");
        // Moves only this thread.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let dns = std::net::UdpSocket::bind("127.0.0.1:53").expect("dns stub");
        let public =
            std::net::TcpListener::bind(SocketAddr::from((RECEIVER, 80))).expect("receiver");
        let internal = std::net::TcpListener::bind("127.0.0.1:80").expect("internal service");
        for s in [&public, &internal] {
            s.set_nonblocking(true).expect("nonblocking");
        }
        dns.set_nonblocking(true).expect("nonblocking");
        (dns, public, internal)
    })
    .join()
    .expect("namespace thread")
}

/// The name in a DNS query and its type, or `None` if it is not one.
fn question(packet: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

fn answer(query: &[u8], end_of_question: usize, qtype: u16, addrs: &[IpAddr]) -> Vec<u8> {
    let records: Vec<&IpAddr> = addrs
        .iter()
        .filter(|a| (qtype == 1 && a.is_ipv4()) || (qtype == 28 && a.is_ipv6()))
        .collect();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1]);
    out.extend_from_slice(&u16::try_from(records.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..end_of_question]);
    for addr in records {
        // Name by pointer to the question, type, class IN, TTL 0: nothing may be cached.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        match addr {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&[0, 4]);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&[0, 16]);
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    out
}

/// Answers one HTTP request with `status` and the secret body; counts it.
async fn serve_http(mut stream: tokio::net::TcpStream, status: u16, count: Arc<AtomicUsize>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |r: &[u8]| {
        let text = String::from_utf8_lossy(r);
        let Some(head_end) = text.find("\r\n\r\n") else {
            return false;
        };
        let length = text[..head_end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        r.len() >= head_end + 4 + length
    };
    while !complete(&request) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    count.fetch_add(1, Ordering::SeqCst);
    let response = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\nx-internal: {SECRET_BODY}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{SECRET_BODY}",
        SECRET_BODY.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// The namespace, with the DNS stub answering `names` by their scripts and the public
    /// receiver answering `receiver_status`.
    fn up(names: HashMap<String, Script>, receiver_status: u16) -> Lab {
        assert!(
            is_root(),
            "the webhook SSRF tests need root (network namespaces)"
        );
        let name = format!(
            "sw{}-{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        // A namespace left by a killed run of the same pid.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        for addr in [format!("{RECEIVER}/32"), format!("{CLOUD_IP}/32")] {
            ip(&["-n", &name, "addr", "add", &addr, "dev", "lo"]);
        }
        let etc = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        std::fs::write(
            format!("{etc}/resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv.conf");
        std::fs::write(format!("{etc}/nsswitch.conf"), "hosts: files dns\n")
            .expect("nsswitch.conf");
        let lab = Lab {
            name: name.clone(),
            a_queries: Arc::default(),
            internal_connections: Arc::default(),
            received: Arc::default(),
        };
        let (dns, public, internal) = sockets_in(&name);

        let dns = tokio::net::UdpSocket::from_std(dns).expect("dns");
        let a_queries = lab.a_queries.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = dns.recv_from(&mut buf).await {
                let query = &buf[..n];
                let Some((qname, qtype, end)) = question(query) else {
                    continue;
                };
                let before = {
                    let mut counts = a_queries.lock().expect("lock");
                    let count = counts.entry(qname.clone()).or_default();
                    let before = *count;
                    if qtype == 1 {
                        *count += 1;
                    }
                    before
                };
                let addrs = names
                    .get(&qname)
                    .map(|script| script(qtype, before))
                    .unwrap_or_default();
                let _ = dns.send_to(&answer(query, end, qtype, &addrs), from).await;
            }
        });
        let public = tokio::net::TcpListener::from_std(public).expect("receiver");
        let received = lab.received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = public.accept().await {
                tokio::spawn(serve_http(stream, receiver_status, received.clone()));
            }
        });
        let internal = tokio::net::TcpListener::from_std(internal).expect("internal");
        let reached = lab.internal_connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = internal.accept().await {
                reached.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_http(stream, 200, Arc::default()));
            }
        });
        lab
    }

    fn a_queries(&self, name: &str) -> usize {
        self.a_queries
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// The cloud in the lab's namespace: webhooks may reach the receiver's address (and no other
/// special-purpose address), three quick attempts.
async fn cloud_in(lab: &Lab) -> CloudProcess {
    let socket_dir = std::env::var("STAYOPEN_TEST_PG_SOCKET_DIR").expect(
        "STAYOPEN_TEST_PG_SOCKET_DIR must name the test PostgreSQL's socket folder; \
         run the tests with infra/scripts/test.sh",
    );
    let allowed = format!("[\"{RECEIVER}/32\"]");
    CloudProcess::start_in_netns_with(
        &lab.name,
        CLOUD_IP,
        &socket_dir,
        &[
            (
                "STAYOPEN_ALERTS__WEBHOOK_ALLOWED_NETWORKS",
                allowed.as_str(),
            ),
            ("STAYOPEN_ALERTS__WEBHOOK_MAX_ATTEMPTS", "3"),
            ("STAYOPEN_ALERTS__WEBHOOK_RETRY_BASE_MS", "100"),
        ],
    )
    .await
}

/// A webhook channel to `url` and a digest notification for it, due now; returns the
/// notification's id.
async fn notify(cloud: &CloudProcess, url: &str) -> Uuid {
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");
    let channel = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notification_channels (id, tenant_id, name, kind, url, secret, created_by)
         VALUES ($1, $2, 'PSA', 'webhook', $3, 'whsec_test', 'test')",
    )
    .bind(channel)
    .bind(demo.tenant_id.as_uuid())
    .bind(url)
    .execute(&cloud.owner_pool)
    .await
    .expect("channel");
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id, event, digest_of)
         VALUES ($1, $2, NULL, $3, $4, 'digest', '{}')",
    )
    .bind(id)
    .bind(demo.tenant_id.as_uuid())
    .bind(demo.practices[0].id.as_uuid())
    .bind(channel)
    .execute(&cloud.owner_pool)
    .await
    .expect("notification");
    id
}

/// The notification's (status, attempts, last_error) once it reached `status`.
async fn settled_as(cloud: &CloudProcess, id: Uuid, status: &str) -> (String, i32, Option<String>) {
    eventually(
        Duration::from_secs(30),
        &format!("the notification {status}"),
        || async {
            let row: (String, i32, Option<String>) = sqlx::query_as(
                "SELECT status, attempts, last_error FROM notifications WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("notification");
            (row.0 == status).then_some(row)
        },
    )
    .await
}

fn script(f: impl Fn(u16, usize) -> Vec<IpAddr> + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_rebinds_to_loopback_after_it_was_vetted_never_reaches_loopback() {
    // First answer: the public receiver; every later one: the cloud's own loopback.
    let names = HashMap::from([(
        "hooks.rebind.example".to_owned(),
        script(|qtype, before| match (qtype, before) {
            (1, 0) => vec![IpAddr::V4(RECEIVER)],
            (1, _) => vec![addr("127.0.0.1")],
            _ => vec![],
        }),
    )]);
    // The receiver fails the first attempt, so the dispatcher comes back for the name.
    let lab = Lab::up(names, 503);
    let cloud = cloud_in(&lab).await;
    let id = notify(&cloud, "http://hooks.rebind.example/hook").await;
    let (_, attempts, last_error) = settled_as(&cloud, id, "dead").await;
    assert_eq!(attempts, 3);
    assert_eq!(
        lab.received.load(Ordering::SeqCst),
        1,
        "the vetted address got the first attempt"
    );
    assert_eq!(
        lab.internal_connections.load(Ordering::SeqCst),
        0,
        "the request never reached loopback: {}",
        cloud.log()
    );
    assert_eq!(
        lab.a_queries("hooks.rebind.example"),
        3,
        "one resolution per attempt, none behind the vetting's back"
    );
    assert_eq!(
        last_error.as_deref(),
        Some("address refused: loopback range")
    );
    let log = cloud.log();
    assert!(
        log.lines()
            .any(|l| l.contains("webhook target refused") && l.contains("loopback")),
        "the refusal is logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_answering_a_public_and_a_loopback_address_is_refused_whole() {
    let names = HashMap::from([(
        "mixed.rebind.example".to_owned(),
        script(|qtype, _| match qtype {
            1 => vec![IpAddr::V4(RECEIVER), addr("127.0.0.1")],
            _ => vec![],
        }),
    )]);
    let lab = Lab::up(names, 200);
    let cloud = cloud_in(&lab).await;
    let id = notify(&cloud, "http://mixed.rebind.example/hook").await;
    let (_, _, last_error) = settled_as(&cloud, id, "dead").await;
    assert_eq!(
        last_error.as_deref(),
        Some("address refused: loopback range")
    );
    assert_eq!(lab.received.load(Ordering::SeqCst), 0);
    assert_eq!(lab.internal_connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_ipv6_and_the_other_special_purpose_answers_are_refused_before_any_connection()
{
    let cases: [(&str, Vec<IpAddr>, &str); 6] = [
        (
            "mapped.evil.example",
            vec![addr("::ffff:127.0.0.1")],
            "address refused: IPv4-mapped IPv6 range",
        ),
        (
            "nat64.evil.example",
            vec![addr("64:ff9b::7f00:1")],
            "address refused: NAT64 range",
        ),
        (
            "zero.evil.example",
            vec![addr("0.0.0.0")],
            "address refused: this-network range",
        ),
        (
            "bench.evil.example",
            vec![addr("198.18.0.1")],
            "address refused: benchmarking range",
        ),
        (
            "class-e.evil.example",
            vec![addr("240.0.0.1")],
            "address refused: reserved range",
        ),
        (
            "ula.evil.example",
            vec![addr("fd00::1")],
            "address refused: unique-local range",
        ),
    ];
    let names: HashMap<String, Script> = cases
        .iter()
        .map(|(name, addrs, _)| {
            let addrs = addrs.clone();
            (
                (*name).to_owned(),
                script(move |qtype, _| {
                    addrs
                        .iter()
                        .filter(|a| (qtype == 1) == a.is_ipv4())
                        .copied()
                        .collect()
                }),
            )
        })
        .collect();
    let lab = Lab::up(names, 200);
    let cloud = cloud_in(&lab).await;
    let mut ids = Vec::new();
    for (name, _, _) in &cases {
        ids.push(notify(&cloud, &format!("http://{name}/hook")).await);
    }
    // An IP literal is never resolved: it is vetted as it stands.
    let literal = notify(&cloud, "http://[::ffff:127.0.0.1]:80/hook").await;
    for (id, (name, _, refused)) in ids.into_iter().zip(&cases) {
        let (_, _, last_error) = settled_as(&cloud, id, "dead").await;
        assert_eq!(last_error.as_deref(), Some(*refused), "{name}");
    }
    let (_, _, last_error) = settled_as(&cloud, literal, "dead").await;
    assert_eq!(
        last_error.as_deref(),
        Some("address refused: IPv4-mapped IPv6 range")
    );
    assert_eq!(lab.internal_connections.load(Ordering::SeqCst), 0);
    assert_eq!(lab.received.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_answer_reaches_technicians_only_as_its_status_class() {
    let names = HashMap::from([(
        "psa.customer.example".to_owned(),
        script(|qtype, _| match qtype {
            1 => vec![IpAddr::V4(RECEIVER)],
            _ => vec![],
        }),
    )]);
    let lab = Lab::up(names, 500);
    let cloud = cloud_in(&lab).await;
    let id = notify(&cloud, "http://psa.customer.example/hook").await;
    let (_, attempts, last_error) = settled_as(&cloud, id, "dead").await;
    assert_eq!(attempts, 3);
    assert_eq!(lab.received.load(Ordering::SeqCst), 3);
    assert_eq!(last_error.as_deref(), Some("the receiver answered 5xx"));
    // Nothing of the answer is kept anywhere a technician or an operator reads.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE last_error LIKE '%hunter2%' OR last_error LIKE '%SSH%'",
    )
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("count");
    assert_eq!(stored, 0);
    assert!(!cloud.log().contains("hunter2"), "{}", cloud.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_stored_before_webhooks_kept_only_the_class_are_shown_without_their_details() {
    let cloud = common::spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let channel = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notification_channels (id, tenant_id, name, kind, url, secret, created_by)
         VALUES ($1, $2, 'PSA', 'webhook', 'https://psa.example.com/hook', 'whsec_test', 'test')",
    )
    .bind(channel)
    .bind(demo.tenant_id.as_uuid())
    .execute(&cloud.owner_pool)
    .await
    .expect("channel");
    // What earlier versions wrote: the exact status, and the client's error for a port that
    // answered something other than HTTP.
    for stored in [
        "the receiver answered 503 Service Unavailable",
        "request failed: error sending request for url (http://10.0.0.5:22/hook): invalid HTTP version parsed",
    ] {
        sqlx::query(
            "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id, event,
                                        digest_of, status, attempts, last_error)
             VALUES (gen_random_uuid(), $1, NULL, $2, $3, 'digest', '{}', 'dead', 8, $4)",
        )
        .bind(demo.tenant_id.as_uuid())
        .bind(demo.practices[0].id.as_uuid())
        .bind(channel)
        .bind(stored)
        .execute(&cloud.owner_pool)
        .await
        .expect("notification");
    }
    let page = cloud
        .api(&admin)
        .notifications("status=dead")
        .await
        .expect("history");
    let mut shown: Vec<String> = page
        .items
        .into_iter()
        .filter_map(|n| n.last_error)
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        ["request failed", "the receiver answered 5xx"],
        "neither the exact status, the address, the port nor what answered there is shown"
    );
}
