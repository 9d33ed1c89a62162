//! The network-namespace testbed around the Linux dataplane, shared by the netns integration tests
//! and the failover benchmark (`stayopen-testbed bench`).
//!
//! `infra/testbed/testbed.sh` builds the topology (LAN host, appliance, two NATing ISP routers, an
//! "internet" with probe targets, a UDP echo server and an HTTP server) and injects faults; this
//! module runs the real agent in the appliance namespace, a UDP echo server on the internet side and
//! a 100 packets/s UDP stream from the LAN host, and reads the agent's status over its control socket.
//! For the session-safe tunnel it also runs the relay (`stayopen-relay`) in the relay namespace,
//! the traffic tools of [`crate::traffic`] on the LAN host and the server behind the relay, and reads
//! the CPU time the agent and the relay spend.
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
/// The relay's stable public address (the relay namespace's `eth0`) and its WireGuard endpoint.
pub const RELAY_PUBLIC: &str = "203.0.113.50";
pub const RELAY_ENDPOINT: &str = "203.0.113.50:51820";
/// The relay's health and metrics endpoint, inside the relay namespace.
pub const RELAY_HTTP: &str = "127.0.0.1:9810";
/// The tunnel's inner network, and the inner address the tests give the appliance.
pub const RELAY_INNER_NETWORK: &str = "100.96.0.0/12";
pub const APPLIANCE_INNER: &str = "100.96.0.2";
/// The tunnel's MTU on both ends.
pub const TUNNEL_MTU: u32 = 1380;
/// The server behind the relay's public address (the `srv` namespace) and what it runs there:
/// the TCP sink, the UDP call's far end and a UDP echo server.
pub const SERVER: &str = "203.0.113.60";
pub const SERVER_TCP_SINK: &str = "203.0.113.60:5001";
pub const SERVER_CALL: &str = "203.0.113.60:5004";
pub const SERVER_ECHO: &str = "203.0.113.60:7";
/// The same server's second address, which the tunnel benchmark leaves out of the critical
/// destinations: its flows leave the appliance directly, beside the tunnelled ones.
pub const SERVER_DIRECT: &str = "203.0.113.61";

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
        "{} is missing: build it first (`cargo build -p stayopen-testkit -p stayopen-appliance \
         -p stayopen-tunnel --bins`; `cargo test --workspace`, as infra/scripts/test.sh runs it, \
         builds it too)",
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
    workspace_binary("stayopen-testbed")
}

/// A binary of the workspace (`stayopen-appliance`, `stayopen-relay`, `stayopen-testbed`) beside
/// the running test's folder, as for [`tools_binary`]; `STAYOPEN_TEST_BIN_DIR`, when set, names
/// another folder to take them from.
pub fn workspace_binary(name: &str) -> Result<PathBuf, TestbedError> {
    let folder = match std::env::var_os("STAYOPEN_TEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().map_err(io("locating the test binary"))?;
            exe.parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .to_path_buf()
        }
    };
    let path = folder.join(name);
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
    relay: Option<Relay>,
}

/// The relay process and how to start it again.
#[derive(Debug)]
struct Relay {
    binary: PathBuf,
    child: Option<Child>,
}

/// The programs a tunnel testbed runs.
#[derive(Debug, Clone)]
pub struct TunnelBinaries {
    /// `stayopen-testbed` (the servers and traffic tools).
    pub tools: PathBuf,
    pub appliance: PathBuf,
    pub relay: PathBuf,
}

impl TunnelBinaries {
    /// The three, from the workspace's target folder (see [`workspace_binary`]).
    pub fn from_workspace() -> Result<Self, TestbedError> {
        Ok(Self {
            tools: workspace_binary("stayopen-testbed")?,
            appliance: workspace_binary("stayopen-appliance")?,
            relay: workspace_binary("stayopen-relay")?,
        })
    }
}

/// How a test configures the appliance's tunnel (the agent's `[tunnel]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSetup {
    /// `"all"`, `"critical"` or `"off"`.
    pub mode: String,
    pub redundant_critical: bool,
    pub critical_destinations: Vec<String>,
    /// The relay's WireGuard public key, base64 ([`Testbed::running_tunnel`] fills it in).
    pub relay_public_key: String,
}

impl TunnelSetup {
    /// Flows to `destinations` through the relay, the rest direct; critical flows duplicated
    /// over every healthy uplink when `redundant`.
    pub fn critical(destinations: &[&str], redundant: bool) -> Self {
        Self {
            mode: "critical".into(),
            redundant_critical: redundant,
            critical_destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
            relay_public_key: String::new(),
        }
    }
}

/// One of the traffic tools running in a namespace, driven by commands on its stdin (see
/// [`crate::traffic`]); killed when dropped.
#[derive(Debug)]
pub struct Tool {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Tool {
    /// Sends a command that has no answer (`mark`, `stop`).
    pub fn send(&mut self, command: &str) -> Result<(), TestbedError> {
        writeln!(self.stdin, "{command}").map_err(io(format!("writing to {}", self.name)))?;
        self.stdin
            .flush()
            .map_err(io(format!("writing to {}", self.name)))
    }

    /// Sends `command` (`report`, `reads`) and reads its one-line JSON answer.
    pub fn ask<T: serde::de::DeserializeOwned>(
        &mut self,
        command: &str,
    ) -> Result<T, TestbedError> {
        self.send(command)?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(io(format!("reading {}'s report", self.name)))?;
        serde_json::from_str(line.trim()).map_err(|e| TestbedError::Command {
            what: format!("{}'s report", self.name),
            stderr: format!("{e}: {line:?}"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
            relay: None,
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

    /// The agent's process id (`ip netns exec` execs the agent, so it is the agent's own).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Starts one of the traffic tools (`tools` is `stayopen-testbed`) in namespace `node` with
    /// `args`, its stderr appended to `{name}.log` in the testbed's folder.
    pub fn start_tool(
        &self,
        node: &str,
        tools: &Path,
        name: &str,
        args: &[&str],
    ) -> Result<Tool, TestbedError> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(io(format!("creating {name}.log")))?;
        let mut child = self
            .netns_command(node, tools)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Ok(Tool {
                name: name.to_owned(),
                child,
                stdin,
                stdout: BufReader::new(stdout),
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(TestbedError::Command {
                    what: name.to_owned(),
                    stderr: "no pipes".into(),
                })
            }
        }
    }

    /// Starts a long-running server in namespace `node`, stopped with the testbed.
    pub fn start_server(
        &mut self,
        node: &str,
        tools: &Path,
        args: &[&str],
    ) -> Result<(), TestbedError> {
        let child = self
            .netns_command(node, tools)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {}", args.join(" "))))?;
        self.children.push(child);
        Ok(())
    }

    /// Writes the appliance's WireGuard private key where the agent keeps it (`wireguard.key` in
    /// its state folder, mode 0600), so the relay can be told its public key; returns that key.
    pub fn write_appliance_key(&self) -> Result<String, TestbedError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let keys = stayopen_tunnel::keys::KeyPair::generate();
        std::fs::create_dir_all(self.state_dir()).map_err(io("creating the state folder"))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.state_dir().join("wireguard.key"))
            .map_err(io("writing wireguard.key"))?;
        writeln!(file, "{}", keys.private_base64()).map_err(io("writing wireguard.key"))?;
        Ok(keys.public_base64())
    }

    /// The relay's configuration: listening on [`RELAY_ENDPOINT`]'s port, masquerading out of
    /// the relay namespace's `eth0` ([`RELAY_PUBLIC`]), one static peer per `(public key, inner
    /// address)`.
    pub fn relay_config(&self, peers: &[(String, String)]) -> String {
        let mut text = format!(
            r#"listen = "0.0.0.0:51820"
private_key_file = "{key}"
tun_name = "so-relay0"
inner_network = "{RELAY_INNER_NETWORK}"
mtu = {TUNNEL_MTU}
public_interface = "eth0"
http_listen = "{RELAY_HTTP}"
"#,
            key = self.dir.join("relay.key").display(),
        );
        for (public_key, inner_address) in peers {
            text.push_str(&format!(
                "\n[[peers]]\npublic_key = \"{public_key}\"\ninner_address = \"{inner_address}\"\n"
            ));
        }
        text
    }

    fn relay_config_path(&self) -> PathBuf {
        self.dir.join("relay.toml")
    }

    /// Writes the relay's configuration for `peers`, creates its key and starts
    /// `stayopen-relay serve` in the relay namespace; returns the relay's public key.
    pub fn start_relay(
        &mut self,
        relay: &Path,
        peers: &[(String, String)],
    ) -> Result<String, TestbedError> {
        std::fs::write(self.relay_config_path(), self.relay_config(peers))
            .map_err(io("writing relay.toml"))?;
        let output = self
            .netns_command("relay", relay)
            .arg("public-key")
            .arg("--config")
            .arg(self.relay_config_path())
            .output()
            .map_err(io("running stayopen-relay public-key"))?;
        if !output.status.success() {
            return Err(TestbedError::Command {
                what: "stayopen-relay public-key".into(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let public_key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        self.relay = Some(Relay {
            binary: relay.to_path_buf(),
            child: None,
        });
        self.restart_relay()?;
        Ok(public_key)
    }

    /// Kills the relay process outright (SIGKILL: no goodbye to its peers).
    pub fn kill_relay(&mut self) {
        if let Some(child) = self.relay.as_mut().and_then(|r| r.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.child = None;
        }
    }

    /// Starts the relay again with the configuration and key it had (after [`Self::kill_relay`]).
    pub fn restart_relay(&mut self) -> Result<(), TestbedError> {
        self.kill_relay();
        let binary = match &self.relay {
            Some(relay) => relay.binary.clone(),
            None => {
                return Err(TestbedError::Command {
                    what: "restarting the relay".into(),
                    stderr: "the relay was never started".into(),
                });
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("relay.log"))
            .map_err(io("opening the relay log"))?;
        let child = self
            .netns_command("relay", &binary)
            .arg("serve")
            .arg("--config")
            .arg(self.relay_config_path())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().map_err(io("relay log"))?)
            .stderr(log)
            .spawn()
            .map_err(io("starting the relay"))?;
        if let Some(relay) = self.relay.as_mut() {
            relay.child = Some(child);
        }
        Ok(())
    }

    /// The relay's process id, while it runs.
    pub fn relay_pid(&self) -> Option<u32> {
        self.relay
            .as_ref()
            .and_then(|r| r.child.as_ref())
            .map(Child::id)
    }

    pub fn relay_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default()
    }

    /// GET `path` from the relay's HTTP endpoint (inside the relay namespace, through `tools`'
    /// `http-get`): the body of a 200 answer.
    pub fn relay_http(&self, tools: &Path, path: &str) -> Result<String, TestbedError> {
        let output = self
            .netns_command("relay", tools)
            .args(["http-get", "--address", RELAY_HTTP, "--path", path])
            .output()
            .map_err(io("running http-get"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(TestbedError::Command {
                what: format!("GET {path} from the relay"),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Waits until the relay answers `/healthz`.
    pub async fn wait_relay_healthy(
        &self,
        tools: &Path,
        timeout: Duration,
    ) -> Result<Duration, TestbedError> {
        let started = Instant::now();
        loop {
            if self.relay_http(tools, "/healthz").is_ok() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(TestbedError::Command {
                    what: format!("the relay's /healthz after {timeout:?}"),
                    stderr: self.relay_log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A fresh testbed for the session-safe tunnel: the internet's servers, a UDP echo server on
    /// the server behind the relay, the relay (knowing the appliance's key), and the agent with
    /// `tunnel` (its relay key filled in here), primary active and flows to [`SERVER`] running
    /// through the relay.
    pub async fn running_tunnel(
        prefix: &str,
        binaries: &TunnelBinaries,
        failback_clean_secs: u32,
        mut tunnel: TunnelSetup,
    ) -> Result<Testbed, TestbedError> {
        let mut bed = Testbed::up(prefix)?;
        bed.start_servers(&binaries.tools)?;
        bed.start_server(
            "srv",
            &binaries.tools,
            &["echo-server", "--bind", SERVER_ECHO],
        )?;
        let appliance_key = bed.write_appliance_key()?;
        tunnel.relay_public_key =
            bed.start_relay(&binaries.relay, &[(appliance_key, APPLIANCE_INNER.into())])?;
        bed.wait_relay_healthy(&binaries.tools, Duration::from_secs(30))
            .await?;
        let config = bed.tunnel_agent_config(failback_clean_secs, &tunnel);
        bed.start_agent_with_config(&binaries.appliance, &config)?;
        let ready = async {
            bed.wait_healthy(Duration::from_secs(60)).await?;
            bed.wait_tunnelled(&binaries.tools, Duration::from_secs(30))
                .await
        };
        if let Err(e) = ready.await {
            return Err(TestbedError::Command {
                what: e.to_string(),
                stderr: format!(
                    "agent log:\n{}\nrelay log:\n{}",
                    bed.agent_log(),
                    bed.relay_log()
                ),
            });
        }
        Ok(bed)
    }

    /// Waits until the agent reports its tunnel up and a new UDP flow from the LAN host to
    /// [`SERVER_ECHO`] reaches the server from the relay's public address: the tunnel carries the
    /// server's flows. (A flow that began before the tunnel was up stays direct, as the agent
    /// steers only new connections: each attempt is a new flow.)
    pub async fn wait_tunnelled(
        &self,
        tools: &Path,
        timeout: Duration,
    ) -> Result<Duration, TestbedError> {
        let started = Instant::now();
        self.wait_for("the tunnel up", timeout, |s| {
            s.tunnel
                .as_ref()
                .is_some_and(|t| t.state == stayopen_shared::tunnel::TunnelState::Up)
        })
        .await?;
        loop {
            let mut probe = self.start_tool(
                "lan",
                tools,
                "tunnel-probe",
                &["udp-stream", "--to", SERVER_ECHO, "--rate", "50"],
            )?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let report: StreamReport = probe.ask("report")?;
            if report.last_seen_as.map(|a| a.to_string()).as_deref() == Some(RELAY_PUBLIC) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(TestbedError::Timeout(
                    timeout,
                    format!(
                        "flows to {SERVER} through the relay (last seen as {:?})",
                        report.last_seen_as
                    ),
                ));
            }
        }
    }

    /// The agent's configuration for this topology ([`Self::agent_config`], undamped) with a
    /// `[tunnel]` section to the testbed's relay, keepalives every second.
    pub fn tunnel_agent_config(&self, failback_clean_secs: u32, tunnel: &TunnelSetup) -> String {
        let destinations = tunnel
            .critical_destinations
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"{base}
[tunnel]
interface = "so-tun0"
mtu = {TUNNEL_MTU}
keepalive_secs = 1
mode = "{mode}"
redundant_critical = {redundant}
critical_destinations = [{destinations}]
relay = {{ relay = "testbed-relay", endpoint = "{RELAY_ENDPOINT}", public_key = "{key}", inner_address = "{APPLIANCE_INNER}" }}
"#,
            base = self.agent_config(failback_clean_secs, false),
            mode = tunnel.mode,
            redundant = tunnel.redundant_critical,
            key = tunnel.relay_public_key,
        )
    }
}

/// CPU time (user + system, in seconds) process `pid` has used so far, from `/proc/PID/stat`.
pub fn process_cpu_secs(pid: u32) -> Result<f64, TestbedError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(io(format!("reading {path}")))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    let ticks = |i: usize| -> Result<u64, TestbedError> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| TestbedError::Command {
                what: path.clone(),
                stderr: format!("no field {i} in {stat:?}"),
            })
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_sec() as f64)
}

/// The kernel's clock ticks a second (`getconf CLK_TCK`; 100 on Linux when that fails).
fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `stayopen-testbed http-get`: GET `path` from `address` over plain HTTP/1.1 and return the body
/// of a 200 answer (the relay's `/healthz` and `/metrics`, from inside its namespace).
pub fn http_get(address: SocketAddr, path: &str) -> Result<String, TestbedError> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(io(format!("connecting to {address}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("setting a timeout"))?;
    // One write, so one segment: the test servers read a request with a single read, and
    // `write!` straight to the socket sends each piece of the format in its own segment.
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(io("sending the request"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(io("reading the answer"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status == "200" {
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
        Ok(if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        })
    } else {
        Err(TestbedError::Command {
            what: format!("GET {path}"),
            stderr: head.lines().next().unwrap_or_default().to_owned(),
        })
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let relay = self.relay.as_mut().and_then(|r| r.child.as_mut());
        for child in self
            .agent
            .iter_mut()
            .chain(relay)
            .chain(self.children.iter_mut())
        {
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

/// The router topology (issue 17, `testbed.sh PREFIX up router`): the practice's router between
/// the appliance's `lan0` and the LAN host, which gets its WAN address from the appliance's DHCP
/// server and forwards its LAN's DNS to the address its lease names.
pub const ROUTER_LAN: &str = "100.64.20.1";
/// The host behind the router (namespace `host`), NATed by it.
pub const ROUTER_HOST: &str = "100.64.20.2";
/// The appliance's LAN address and prefix in the router topology (the agent's `lan.address`).
pub const APPLIANCE_LAN: &str = "100.64.10.1/24";
/// The ISPs' resolvers (`testbed.sh PREFIX resolvers DIR`), each reachable only through its ISP.
pub const ISP1_RESOLVER: &str = "192.0.2.53";
pub const ISP2_RESOLVER: &str = "198.51.100.53";

impl Testbed {
    /// Builds the router topology (see [`ROUTER_LAN`]) with the ISPs' resolvers running, under
    /// namespaces `{prefix}-rtr`, `-host`, `-app`, `-isp1`, `-isp2`, `-net`, … The router is not
    /// started: [`Testbed::start_router_dhcp`] starts it once the agent runs.
    pub fn up_router(prefix: &str) -> Result<Self, TestbedError> {
        let dir = std::env::temp_dir().join(format!("stayopen-testbed-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io("creating the testbed folder"))?;
        let testbed = Self {
            prefix: prefix.to_owned(),
            dir,
            children: Vec::new(),
            agent: None,
            relay: None,
        };
        testbed.script(&["up", "router"])?;
        let tls = testbed.dir.join("tls");
        testbed.script(&["ehr-https", &tls.display().to_string()])?;
        testbed.script(&["resolvers", &testbed.dir.display().to_string()])?;
        Ok(testbed)
    }

    /// Starts the router's DHCP client on its WAN port (and its DNS forwarder): the one thing
    /// done to the router.
    pub fn start_router_dhcp(&self) -> Result<(), TestbedError> {
        self.script(&["router-dhcp", &self.dir.display().to_string()])
    }

    /// The leases the router's DHCP client took, one line each:
    /// `bound ip=… mask=… router=… dns=… lease=…`.
    pub fn router_leases(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("rtr-lease.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The agent configuration for the router topology: [`Testbed::agent_config`] with the LAN
    /// services on (`lan.address` [`APPLIANCE_LAN`], a DHCP pool, the DNS forwarder) and each
    /// uplink's resolver configured (`dns = [ISP1_RESOLVER]`, `[ISP2_RESOLVER]`).
    pub fn lan_services_config(&self, failback_clean_secs: u32) -> String {
        self.agent_config(failback_clean_secs, false)
            .replacen(
                "[lan]\ninterface = \"lan0\"\n",
                &format!(
                    "[lan]\ninterface = \"lan0\"\naddress = \"{APPLIANCE_LAN}\"\n\n\
                     [lan.dhcp_server]\npool_start = \"100.64.10.100\"\npool_end = \"100.64.10.199\"\n\
                     lease_secs = 600\n\n[lan.dns]\ncache_size = 256\n"
                ),
                1,
            )
            .replacen(
                "priority = 0\n",
                &format!("priority = 0\ndns = [\"{ISP1_RESOLVER}\"]\n"),
                1,
            )
            .replacen(
                "metered = true\n",
                &format!("metered = true\ndns = [\"{ISP2_RESOLVER}\"]\n"),
                1,
            )
    }
}

/// Uplinks configured by DHCP (issue 17): the ISP routers' DHCP servers and what the appliance
/// learned from them.
impl Testbed {
    /// Takes wan0/wan1's static addresses away and starts the ISP routers' DHCP servers
    /// (`testbed.sh wan-dhcp`, what `TESTBED_WAN_DHCP=1 testbed.sh up` does).
    pub fn wan_dhcp(&self) -> Result<(), TestbedError> {
        self.script(&["wan-dhcp"])
    }

    /// Restarts ISP `isp`'s DHCP server with the pool `first`–`last`, leases of `lease_secs`
    /// (dnsmasq raises anything under 120 s to 120 s) and, when given, renewal (T1) and rebinding
    /// (T2) times in seconds. The new server has forgotten every lease.
    pub fn dhcp_server(
        &self,
        isp: u8,
        first: &str,
        last: &str,
        lease_secs: u32,
        timers: Option<(u32, u32)>,
    ) -> Result<(), TestbedError> {
        let isp = isp.to_string();
        let lease = lease_secs.to_string();
        let (t1, t2) = timers
            .map(|(t1, t2)| (t1.to_string(), t2.to_string()))
            .unwrap_or_default();
        let mut args = vec!["dhcp-server", &isp, first, last, &lease];
        if timers.is_some() {
            args.extend([t1.as_str(), t2.as_str()]);
        }
        self.script(&args)
    }

    /// [`Testbed::agent_config`] with both uplinks `addressing = "dhcp"` and no gateway.
    pub fn dhcp_agent_config(&self, failback_clean_secs: u32, damped: bool) -> String {
        self.agent_config(failback_clean_secs, damped)
            .replace("gateway = \"100.64.1.1\"\n", "addressing = \"dhcp\"\n")
            .replace("gateway = \"100.64.2.1\"\n", "addressing = \"dhcp\"\n")
    }

    /// The IPv4 address (`a.b.c.d`) on the appliance's `interface`, if it has one.
    pub fn uplink_address(&self, interface: &str) -> Option<std::net::Ipv4Addr> {
        let output = Command::new("ip")
            .args([
                "-n",
                &self.namespace("app"),
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
            ])
            .arg(interface)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut words = text.split_whitespace();
        words.find(|w| *w == "inet")?;
        words.next()?.split('/').next()?.parse().ok()
    }

    /// The appliance's `ip route show table TABLE` (or the main table for `"main"`).
    pub fn appliance_routes(&self, table: &str) -> String {
        Command::new("ip")
            .args([
                "-n",
                &self.namespace("app"),
                "-4",
                "route",
                "show",
                "table",
                table,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Stops the agent (SIGKILL: nothing it left on the interfaces is tidied away).
    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    /// What ISP `isp`'s DHCP server logged (`--log-dhcp`).
    pub fn dhcp_server_log(&self, isp: u8) -> String {
        std::fs::read_to_string(format!(
            "/tmp/stayopen-testbed-{}-dhcp/isp{isp}.log",
            self.prefix
        ))
        .unwrap_or_default()
    }
}
