//! The network-namespace testbed around the Linux dataplane, shared by the netns integration tests
//! and the failover benchmark (`stayopen-testbed bench`).
//!
//! `infra/testbed/testbed.sh` builds the topology (LAN host, appliance, two NATing ISP routers, an
//! "internet" with probe targets, a UDP echo server and an HTTP server) and injects faults; this
//! module runs the real agent in the appliance namespace, a UDP echo server on the internet side and
//! a 100 packets/s UDP stream from the LAN host, and reads the agent's status over its control socket.
//! Nothing is ever connected to the root namespace. Needs root, `ip`, `nft` and `conntrack`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stayopen_appliance::control::{self, Request, Response, Status};

/// Where the echo server listens, on the "internet" side.
pub const ECHO_ADDR: &str = "203.0.113.20:7";
/// The stand-in for the EHR: an HTTP server (port 80) and a DNS server (port 53) on one address.
pub const EHR_HTTP_ADDR: &str = "203.0.113.30:80";
pub const EHR_DNS_ADDR: &str = "203.0.113.30:53";
/// The EHR stand-in's HTTPS server (port 443), started by `testbed.sh ehr-https`.
pub const EHR_HTTPS_HOST: &str = "203.0.113.30";
/// The probe targets the testbed provides.
pub const TARGETS: [&str; 4] = [
    "203.0.113.10",
    "203.0.113.11",
    "203.0.113.12",
    "203.0.113.13",
];
/// The public (NAT) addresses of the two ISPs, as the internet sees them.
pub const ISP1_PUBLIC: &str = "192.0.2.1";
pub const ISP2_PUBLIC: &str = "198.51.100.1";

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {stderr}")]
    Command { what: String, stderr: String },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error(
        "{} is missing: build it first (`cargo build -p stayopen-testkit --bin stayopen-testbed`; \
         `cargo test --workspace`, as infra/scripts/test.sh runs it, builds it too)",
        .0.display()
    )]
    MissingTools(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

/// The repository's testbed script.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/testbed/testbed.sh")
}

/// The `stayopen-testbed` binary (the servers and the LAN stream run inside the namespaces) of the
/// build the running test belongs to: `target/<profile>/`, the folder above the test's `deps/`.
/// Tests of other crates cannot name it with `env!("CARGO_BIN_EXE_…")`, which Cargo sets only for a
/// crate's own binaries, so it is looked up there and must have been built.
pub fn tools_binary() -> Result<PathBuf, TestbedError> {
    let exe = std::env::current_exe().map_err(io("locating the test binary"))?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("stayopen-testbed");
    if path.exists() {
        Ok(path)
    } else {
        Err(TestbedError::MissingTools(path))
    }
}

/// A running topology; dropping it stops everything it started and deletes the namespaces.
#[derive(Debug)]
pub struct Testbed {
    pub prefix: String,
    pub dir: PathBuf,
    children: Vec<Child>,
    agent: Option<Child>,
}

/// What the LAN host's UDP stream reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// The longest time between two echoes arriving since the last mark, in milliseconds.
    pub max_gap_ms: f64,
    pub received: u64,
    /// The public address the echo server saw last: which ISP carried the flow.
    pub last_seen_as: Option<std::net::IpAddr>,
}

/// The 100 packets/s UDP echo stream from the LAN host.
#[derive(Debug)]
pub struct Stream {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Stream {
    /// Starts a new measurement window.
    pub fn mark(&mut self) -> Result<(), TestbedError> {
        writeln!(self.stdin, "mark").map_err(io("writing to the stream"))
    }

    pub fn report(&mut self) -> Result<StreamReport, TestbedError> {
        writeln!(self.stdin, "report").map_err(io("writing to the stream"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(io("reading the stream report"))?;
        serde_json::from_str(line.trim()).map_err(|e| TestbedError::Command {
            what: "stream report".into(),
            stderr: e.to_string(),
        })
    }
}

impl Testbed {
    /// Builds the topology under namespaces `{prefix}-lan`, `-app`, `-isp1`, `-isp2`, `-net`.
    pub fn up(prefix: &str) -> Result<Self, TestbedError> {
        let dir = std::env::temp_dir().join(format!("stayopen-testbed-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io("creating the testbed folder"))?;
        let testbed = Self {
            prefix: prefix.to_owned(),
            dir,
            children: Vec::new(),
            agent: None,
        };
        testbed.script(&["up"])?;
        let tls = testbed.dir.join("tls");
        testbed.script(&["ehr-https", &tls.display().to_string()])?;
        Ok(testbed)
    }

    /// A fresh testbed with its servers, the agent (failback clean period `clean_secs`, damped or
    /// not), and the LAN stream running, the primary active. `tools` is `stayopen-testbed`.
    pub async fn running(
        prefix: &str,
        tools: &Path,
        appliance: &Path,
        clean_secs: u32,
        damped: bool,
    ) -> Result<(Testbed, Stream), TestbedError> {
        let mut bed = Testbed::up(prefix)?;
        bed.start_servers(tools)?;
        bed.start_agent(appliance, clean_secs, damped)?;
        let stream = bed.start_stream(tools)?;
        if let Err(e) = bed.wait_healthy(Duration::from_secs(60)).await {
            return Err(TestbedError::Command {
                what: e.to_string(),
                stderr: bed.agent_log(),
            });
        }
        Ok((bed, stream))
    }

    fn script(&self, args: &[&str]) -> Result<(), TestbedError> {
        let output = Command::new("bash")
            .arg(script_path())
            .arg(&self.prefix)
            .args(args)
            .output()
            .map_err(io("running testbed.sh"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestbedError::Command {
                what: format!("testbed.sh {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Injects a fault: `["blackhole", "1"]`, `["loss", "10", "1"]`, `["dead-target", addr]`,
    /// `["carrier-down", "1"]`, `["carrier-up", "1"]`, `["clear"]`.
    pub fn fault(&self, args: &[&str]) -> Result<(), TestbedError> {
        let mut all = vec!["fault"];
        all.extend_from_slice(args);
        self.script(&all)
    }

    fn netns_command(&self, node: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &format!("{}-{node}", self.prefix)])
            .arg(program);
        command
    }

    /// Starts the servers on the internet side (this program's `echo-server`, `http-server` and
    /// `dns-server` subcommands).
    pub fn start_servers(&mut self, tools: &Path) -> Result<(), TestbedError> {
        for (command, bind) in [
            ("echo-server", ECHO_ADDR),
            ("http-server", EHR_HTTP_ADDR),
            ("dns-server", EHR_DNS_ADDR),
        ] {
            let child = self
                .netns_command("net", tools)
                .args([command, "--bind", bind])
                .stdout(Stdio::null())
                .spawn()
                .map_err(io(format!("starting the {command}")))?;
            self.children.push(child);
        }
        Ok(())
    }

    /// Starts the LAN host's 100 packets/s stream to the echo server.
    pub fn start_stream(&mut self, tools: &Path) -> Result<Stream, TestbedError> {
        let mut child = self
            .netns_command("lan", tools)
            .args(["udp-stream", "--to", ECHO_ADDR, "--rate", "100"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("starting the UDP stream"))?;
        let stream = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Stream {
                stdin,
                stdout: BufReader::new(stdout),
            },
            _ => {
                return Err(TestbedError::Command {
                    what: "udp-stream".into(),
                    stderr: "no pipes".into(),
                });
            }
        };
        self.children.push(child);
        Ok(stream)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// The agent configuration for this topology.
    /// `damped`: whether the failback hold doubles for a flapping primary (the default) or stays at
    /// the clean period (for back-to-back failover trials, which would otherwise look like flapping).
    pub fn agent_config(&self, failback_clean_secs: u32, damped: bool) -> String {
        let max_hold = if damped { 900 } else { failback_clean_secs };
        format!(
            r#"[appliance]
state_dir = "{state}"
serial = "SO-TESTBED"
mac = "02:00:00:00:00:01"

[lan]
interface = "lan0"

[[uplinks]]
name = "isp1"
interface = "wan0"
gateway = "100.64.1.1"
priority = 0

[[uplinks]]
name = "isp2"
interface = "wan1"
gateway = "100.64.2.1"
priority = 1
metered = true

[probes]
# Every probe kind: ICMP echo to four addresses (one of which a test may kill), a TCP handshake, an
# HTTPS GET (verified against the testbed's CA) and a DNS query to the EHR stand-in.
targets = [
    "{t0}", "{t1}", "{t2}", "{t3}",
    {{ kind = "tcp", address = "{http}" }},
    {{ kind = "http", url = "https://{https}/health", ca_file = "{ca}" }},
    {{ kind = "dns", server = "{dns_ip}", name = "ehr.example" }},
]
failback_clean_secs = {failback_clean_secs}
failback_max_hold_secs = {max_hold}

[dataplane]
kind = "linux"
"#,
            state = self.state_dir().display(),
            t0 = TARGETS[0],
            t1 = TARGETS[1],
            t2 = TARGETS[2],
            t3 = TARGETS[3],
            http = EHR_HTTP_ADDR,
            https = EHR_HTTPS_HOST,
            ca = self.dir.join("tls").join("ca.pem").display(),
            dns_ip = EHR_DNS_ADDR.split(':').next().unwrap_or_default(),
        )
    }

    /// Starts `stayopen-appliance run` in the appliance namespace.
    pub fn start_agent(
        &mut self,
        appliance: &Path,
        failback_clean_secs: u32,
        damped: bool,
    ) -> Result<(), TestbedError> {
        let config = self.agent_config(failback_clean_secs, damped);
        self.start_agent_with_config(appliance, &config)
    }

    /// Adds `address` (a /32 in 203.0.113.0/24) to the internet namespace, for a server a test
    /// runs there (the cloud, reachable only through the appliance's uplinks).
    pub fn add_internet_address(&self, address: &str) -> Result<(), TestbedError> {
        let output = Command::new("ip")
            .args(["-n", &self.namespace("net"), "addr", "add"])
            .arg(format!("{address}/32"))
            .args(["dev", "lo"])
            .output()
            .map_err(io("adding an internet address"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestbedError::Command {
                what: format!("adding {address}"),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// The name of one of the testbed's namespaces (`lan`, `app`, `isp1`, `isp2`, `net`).
    pub fn namespace(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Starts `stayopen-appliance run` in the appliance namespace with the configuration `text`
    /// (for example [`Testbed::agent_config`] with a `[cloud]` section added).
    pub fn start_agent_with_config(
        &mut self,
        appliance: &Path,
        text: &str,
    ) -> Result<(), TestbedError> {
        let config = self.dir.join("appliance.toml");
        std::fs::write(&config, text).map_err(io("writing the agent config"))?;
        let log = std::fs::File::create(self.dir.join("agent.log"))
            .map_err(io("creating the agent log"))?;
        let child = self
            .netns_command("app", appliance)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--events")
            .arg(self.events_path())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().map_err(io("agent log"))?)
            .stderr(log)
            .spawn()
            .map_err(io("starting the agent"))?;
        self.agent = Some(child);
        Ok(())
    }

    pub async fn status(&self) -> Option<Status> {
        match control::request(&self.state_dir(), &Request::Status).await {
            Ok(Response::Status(status)) => Some(status),
            _ => None,
        }
    }

    pub async fn request(&self, request: &Request) -> Option<Response> {
        control::request(&self.state_dir(), request).await.ok()
    }

    /// Polls the agent's status every 10 ms until `check` holds; returns how long it took.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Status) -> bool,
    ) -> Result<Duration, TestbedError> {
        let started = Instant::now();
        loop {
            if self.status().await.is_some_and(|s| check(&s)) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(TestbedError::Timeout(timeout, what.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the primary is active and both uplinks are up.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<Duration, TestbedError> {
        self.wait_for("both uplinks up with isp1 active", timeout, |s| {
            s.active.as_deref() == Some("isp1")
                && s.uplinks
                    .iter()
                    .all(|u| matches!(u.health.as_str(), "up" | "degraded"))
        })
        .await
    }

    /// The decisions the agent wrote, one JSON object each.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.events_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn count_events(&self, kind: &str) -> usize {
        self.events().iter().filter(|e| e["kind"] == kind).count()
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for child in self.agent.iter_mut().chain(self.children.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.script(&["down"]);
    }
}

/// `stayopen-testbed echo-server`: echoes each datagram, appending the sender's address as seen
/// here (after both NATs), so the LAN host learns which ISP carried it.
pub fn echo_server(bind: SocketAddr) -> Result<(), TestbedError> {
    let socket = UdpSocket::bind(bind).map_err(io(format!("binding {bind}")))?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).map_err(io("receiving"))?;
        let mut reply = buf[..n.min(1024)].to_vec();
        reply.extend_from_slice(format!("|{}", peer.ip()).as_bytes());
        let _ = socket.send_to(&reply, peer);
    }
}

#[derive(Debug, Default)]
struct StreamState {
    last_arrival: Option<Instant>,
    max_gap: Duration,
    received: u64,
    last_seen_as: Option<std::net::IpAddr>,
}

/// `stayopen-testbed udp-stream`: sends `rate` datagrams a second to `to` and measures the gaps
/// between echoes. Commands on stdin: `mark` starts a window, `report` prints it as JSON.
pub fn udp_stream(to: SocketAddr, rate: u32) -> Result<(), TestbedError> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(io("binding the stream socket"))?;
    let socket = Arc::new(socket);
    let state = Arc::new(Mutex::new(StreamState::default()));
    let sender = socket.clone();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    std::thread::spawn(move || {
        let mut next = Instant::now();
        let mut seq: u64 = 0;
        loop {
            seq += 1;
            let _ = sender.send_to(&seq.to_be_bytes(), to);
            next += interval;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let receiver_state = state.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            let now = Instant::now();
            // The payload is the 8-byte sequence number, then `|` and the address the server saw.
            let seen_as = buf[..n]
                .rsplitn(2, |b| *b == b'|')
                .next()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok());
            if let Ok(mut st) = receiver_state.lock() {
                if let Some(last) = st.last_arrival {
                    st.max_gap = st.max_gap.max(now - last);
                }
                st.last_arrival = Some(now);
                st.received += 1;
                if seen_as.is_some() {
                    st.last_seen_as = seen_as;
                }
            }
        }
    });
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(io("reading commands"))?;
        let Ok(mut st) = state.lock() else { break };
        match line.trim() {
            "mark" => {
                st.max_gap = Duration::ZERO;
                st.received = 0;
            }
            "report" => {
                let now = Instant::now();
                let silent = st.last_arrival.map_or(Duration::ZERO, |t| now - t);
                let report = StreamReport {
                    max_gap_ms: st.max_gap.max(silent).as_secs_f64() * 1000.0,
                    received: st.received,
                    last_seen_as: st.last_seen_as,
                };
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&report).unwrap_or_default()
                );
                let _ = out.flush();
            }
            _ => {}
        }
    }
    Ok(())
}

/// `stayopen-testbed http-server`: answers every request with `200 OK`, one request per connection.
pub fn http_server(bind: SocketAddr) -> Result<(), TestbedError> {
    let listener = std::net::TcpListener::bind(bind).map_err(io(format!("binding {bind}")))?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        });
    }
    Ok(())
}

/// `stayopen-testbed dns-server`: answers every query with an empty NOERROR response.
pub fn dns_server(bind: SocketAddr) -> Result<(), TestbedError> {
    let socket = UdpSocket::bind(bind).map_err(io(format!("binding {bind}")))?;
    let mut buf = [0u8; 512];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).map_err(io("receiving"))?;
        if n < 12 {
            continue;
        }
        let mut reply = buf[..n].to_vec();
        // QR (response) + RD copied + RA; rcode 0; no answer records.
        reply[2] = 0x80 | (buf[2] & 0x01);
        reply[3] = 0x80;
        let _ = socket.send_to(&reply, peer);
    }
}

/// What one probe put on the wire, as `stayopen-testbed probe-bytes` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeBytes {
    pub answered: bool,
    /// IP bytes, both directions: the interface's byte counters less 14 bytes of Ethernet header per
    /// packet (a cellular link has none, and carriers bill IP bytes).
    pub ip_bytes: u64,
    pub packets: u64,
}

/// The interface's counters: (bytes, packets), both directions.
fn link_counters(interface: &str) -> Result<(u64, u64), TestbedError> {
    let read = |file: &str| -> Result<u64, TestbedError> {
        let path = format!("/sys/class/net/{interface}/statistics/{file}");
        std::fs::read_to_string(&path)
            .map_err(io(format!("reading {path}")))?
            .trim()
            .parse()
            .map_err(|e| TestbedError::Command {
                what: path,
                stderr: format!("{e}"),
            })
    };
    Ok((
        read("rx_bytes")? + read("tx_bytes")?,
        read("rx_packets")? + read("tx_packets")?,
    ))
}

/// Runs the appliance's real prober of `target` through `interface` once to warm the neighbour
/// cache, then `repeat` times between two readings of the interface's counters, each followed by
/// half a second for the connection's close to finish; the smallest measurement is returned.
pub async fn probe_bytes(
    interface: &str,
    target: &stayopen_appliance::config::ProbeKind,
    repeat: u32,
) -> Result<ProbeBytes, TestbedError> {
    use stayopen_appliance::config::ProbeKind;
    use stayopen_appliance::dataplane::{DataplaneEvent, probe};
    let timeout = Duration::from_secs(2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let icmp = match target {
        ProbeKind::Icmp { .. } => Some(
            probe::IcmpProber::start(0, interface, timeout, tx).map_err(|e| {
                TestbedError::Command {
                    what: "starting the ICMP prober".into(),
                    stderr: e.to_string(),
                }
            })?,
        ),
        _ => None,
    };
    let mut once = async || -> Result<bool, TestbedError> {
        Ok(match target {
            ProbeKind::Icmp {
                address: std::net::IpAddr::V4(address),
            } => {
                if let Some(prober) = &icmp {
                    prober.send(0, *address);
                }
                matches!(
                    tokio::time::timeout(timeout * 2, rx.recv()).await,
                    Ok(Some(DataplaneEvent::Probe { rtt: Some(_), .. }))
                )
            }
            ProbeKind::Icmp { .. } => false,
            ProbeKind::Tcp { address } => probe::tcp_probe(interface, *address, timeout)
                .await
                .is_some(),
            ProbeKind::Dns { server, name } => {
                probe::dns_probe(interface, SocketAddr::new(*server, 53), name, timeout)
                    .await
                    .is_some()
            }
            ProbeKind::Http { url, ca_file } => {
                let mut roots = Vec::new();
                if let Some(path) = ca_file {
                    let pem = std::fs::read(path).map_err(io("reading the CA"))?;
                    roots.push(reqwest_certificate(&pem)?);
                }
                // A new client each time: a resumed TLS session would skip the certificates.
                let client = probe::http_client(interface, timeout, &roots).map_err(|e| {
                    TestbedError::Command {
                        what: "building the HTTP client".into(),
                        stderr: e.to_string(),
                    }
                })?;
                probe::https_get(&client, url, timeout).await.is_ok()
            }
        })
    };
    once().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut best: Option<ProbeBytes> = None;
    for _ in 0..repeat.max(1) {
        let (bytes_before, packets_before) = link_counters(interface)?;
        let answered = once().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (bytes_after, packets_after) = link_counters(interface)?;
        let packets = packets_after - packets_before;
        let measured = ProbeBytes {
            answered,
            ip_bytes: (bytes_after - bytes_before).saturating_sub(14 * packets),
            packets,
        };
        if !answered {
            return Ok(measured);
        }
        if best.is_none_or(|b| measured.ip_bytes < b.ip_bytes) {
            best = Some(measured);
        }
    }
    best.ok_or_else(|| TestbedError::Command {
        what: "probe-bytes".into(),
        stderr: "nothing measured".into(),
    })
}

fn reqwest_certificate(pem: &[u8]) -> Result<reqwest::Certificate, TestbedError> {
    reqwest::Certificate::from_pem(pem).map_err(|e| TestbedError::Command {
        what: "loading the CA".into(),
        stderr: e.to_string(),
    })
}

/// The appliance's application check of `endpoint` through `interface` (see
/// `stayopen_appliance::dataplane::probe::app_check`).
pub async fn app_check(
    interface: &str,
    endpoint: &stayopen_shared::compliance::AppEndpoint,
    resolver: Option<std::net::IpAddr>,
    ca_file: Option<&Path>,
) -> Result<Result<Duration, String>, TestbedError> {
    use stayopen_appliance::app_checks::APP_CHECK_TIMEOUT;
    use stayopen_appliance::dataplane::probe;
    let mut roots = Vec::new();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(io("reading the CA"))?;
        roots.push(reqwest_certificate(&pem)?);
    }
    let client = probe::http_client(interface, APP_CHECK_TIMEOUT, &roots).map_err(|e| {
        TestbedError::Command {
            what: "building the HTTP client".into(),
            stderr: e.to_string(),
        }
    })?;
    Ok(probe::app_check(
        interface,
        Some(&client),
        resolver.map(|ip| SocketAddr::new(ip, 53)),
        endpoint,
    )
    .await)
}
