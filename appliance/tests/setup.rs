//! `stayopen-appliance setup` as a real process in network namespaces built here: an "appliance"
//! namespace with four ports — eth0 to a modem (dnsmasq hands out addresses), eth1 to a router
//! (carrier, no DHCP server), eth2 to a second modem, eth3 to nothing (no carrier). Setup must find
//! the modems and the router by itself, write a configuration the agent's own parser accepts and
//! that starts the agent there, take no lease while it looks, and put the enrolment in the file
//! so the agent enrols at its first start. Needs root, `ip`, `ss`, `nft`, `conntrack` and
//! `dnsmasq` (package dnsmasq-base; infra/scripts/test.sh installs them).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use stayopen_appliance::config::{Addressing, ApplianceConfig};

fn appliance() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stayopen-appliance"))
}

fn assert_root() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "the setup netns test needs root (network namespaces); CI runs it as root"
    );
}

/// The namespaces, the processes started in them and a scratch directory; all removed on drop.
struct Bed {
    prefix: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Bed {
    /// `modems` of the appliance's ports (0 = eth0, 2 = eth2) get a DHCP server behind them.
    fn new(name: &str, modems: &[u8]) -> Bed {
        assert_root();
        let mut bed = Bed {
            prefix: format!("so{}{name}", std::process::id() % 10_000),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
        };
        for node in ["app", "m0", "rtr", "m2", "dark"] {
            bed.ip(&["netns", "add", &bed.ns(node)]);
            bed.ip(&["-n", &bed.ns(node), "link", "set", "lo", "up"]);
        }
        // Links are made inside the namespaces: nothing touches the root namespace.
        for (port, node, peer) in [
            ("eth0", "m0", "lan0"),
            ("eth1", "rtr", "wan0"),
            ("eth2", "m2", "lan0"),
            ("eth3", "dark", "eth0"),
        ] {
            bed.ip(&[
                "-n",
                &bed.ns("app"),
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                &bed.ns(node),
            ]);
        }
        // The router's WAN port is up (carrier on eth1) and asks nothing; the dark peer stays down.
        bed.ip(&["-n", &bed.ns("rtr"), "link", "set", "wan0", "up"]);
        for (n, node) in [(0u8, "m0"), (2, "m2")] {
            let ns = bed.ns(node);
            let net = n + 1;
            bed.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("100.64.{net}.1/24"),
                "dev",
                "lan0",
            ]);
            bed.ip(&["-n", &ns, "link", "set", "lan0", "up"]);
            if modems.contains(&n) {
                bed.dnsmasq(node, net);
            }
        }
        bed
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn ip(&self, args: &[&str]) -> Output {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn in_ns(&self, node: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(node)]).arg(program);
        command
    }

    fn leases(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.leases"))
    }

    /// A modem's DHCP server (router 100.64.NET.1, DNS 192.0.2.53), waited for until it listens.
    fn dnsmasq(&mut self, node: &str, net: u8) {
        let child = self
            .in_ns(node, Path::new("dnsmasq"))
            .args([
                "--keep-in-foreground",
                "--port=0",
                "--no-resolv",
                "--no-hosts",
                "--interface=lan0",
                "--bind-interfaces",
                &format!("--dhcp-range=100.64.{net}.100,100.64.{net}.199,255.255.255.0,10m"),
                &format!("--dhcp-option=3,100.64.{net}.1"),
                "--dhcp-option=6,192.0.2.53",
                &format!("--dhcp-leasefile={}", self.leases(node).display()),
                &format!(
                    "--pid-file={}",
                    self.dir.path().join(format!("{node}.pid")).display()
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (package dnsmasq-base)");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listening = self
                .in_ns(node, Path::new("ss"))
                .args(["-H", "-uln", "sport = :67"])
                .output()
                .expect("ss");
            if !listening.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq in {node} never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `stayopen-appliance setup` in the appliance namespace; returns its output and time.
    fn setup(&self, args: &[&str]) -> (Output, Duration) {
        let started = Instant::now();
        let output = self
            .in_ns("app", appliance())
            .arg("setup")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run setup");
        (output, started.elapsed())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("etc/stayopen/appliance.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Whether each of the appliance's ports is administratively up.
    fn ports_up(&self) -> Vec<(String, bool)> {
        let output = self.ip(&["-n", &self.ns("app"), "-j", "link", "show"]);
        let links: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).expect("ip json");
        links
            .iter()
            .filter(|l| l["ifname"] != "lo")
            .map(|l| {
                (
                    l["ifname"].as_str().unwrap_or_default().to_owned(),
                    l["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f == "UP")),
                )
            })
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in ["app", "m0", "rtr", "m2", "dark"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .status();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn setup_finds_both_modems_and_the_router_by_themselves_writes_a_config_that_runs_the_agent_and_takes_no_lease()
 {
    let mut bed = Bed::new("s", &[0, 2]);
    let config = bed.config_path();
    let state = bed.state_dir();
    let (output, took) = bed.setup(&[
        "--yes",
        "--config",
        &config.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
        "--probe-target",
        "100.64.1.1",
        "--probe-target",
        "100.64.3.1",
    ]);
    let stdout = text(&output.stdout);
    println!("{stdout}");
    println!(
        "setup took {} ms (a process in the namespace: interfaces read, two ports probed, file written)",
        took.as_millis()
    );
    assert!(output.status.success(), "{}", text(&output.stderr));

    // The summary says what it will do before it says it did it.
    let will = stdout.find("Setup will:").expect("summary");
    let wrote = stdout.find("Wrote ").expect("outcome");
    assert!(will < wrote);
    for expected in [
        "LAN (the router's side): eth1\n",
        "1. wan1 on eth0: wired, not metered, DHCP (offered 100.64.1.",
        ", gateway 100.64.1.1, DNS 192.0.2.53)",
        "2. wan2 on eth2: wired, not metered, DHCP (offered 100.64.3.",
        "leave eth3 unused (no carrier)",
        "LAN services on eth1: the appliance is 10.253.0.1/24",
        "cloud: none (the appliance runs standalone)",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}");
    }

    // The agent's own parser accepts the file, with the roles found.
    let written = ApplianceConfig::load(&config).expect("the agent accepts the written config");
    assert_eq!(written.lan.interface, "eth1");
    assert_eq!(
        written.lan.address,
        Some("10.253.0.1/24".parse().expect("net"))
    );
    let uplinks: Vec<_> = written
        .uplinks
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                u.interface.as_str(),
                u.priority,
                u.addressing,
                u.gateway,
                u.metered,
            )
        })
        .collect();
    assert_eq!(
        uplinks,
        [
            ("wan1", "eth0", 0, Addressing::Dhcp, None, false),
            ("wan2", "eth2", 1, Addressing::Dhcp, None, false)
        ]
    );
    assert!(written.cloud.is_none());
    let mode = std::fs::metadata(&config)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Looking took nothing: no lease bound at either modem, every port as setup found it (down).
    for node in ["m0", "m2"] {
        let leases = std::fs::read_to_string(bed.leases(node)).unwrap_or_default();
        assert!(
            leases.trim().is_empty(),
            "{node} handed out a lease: {leases}"
        );
    }
    assert!(
        bed.ports_up().iter().all(|(_, up)| !up),
        "setup lowered what it raised: {:?}",
        bed.ports_up()
    );

    // The written file starts the agent in that namespace: its ports up (as the system brings them
    // up at boot), it takes both leases, and its control socket answers with wan1 active.
    for port in ["eth0", "eth1", "eth2"] {
        bed.ip(&["-n", &bed.ns("app"), "link", "set", port, "up"]);
    }
    let started = Instant::now();
    let log_path = bed.dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("agent log");
    let agent = bed
        .in_ns("app", appliance())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the agent");
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    bed.children.push(agent);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let output = bed
            .in_ns("app", appliance())
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .expect("status");
        if output.status.success() {
            let status: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("status json");
            if status["active"] == "wan1" {
                break status;
            }
        }
        if let Some(agent) = bed.children.last_mut()
            && let Ok(Some(exit)) = agent.try_wait()
        {
            panic!("the agent exited ({exit}): {}", agent_log());
        }
        assert!(
            Instant::now() < deadline,
            "the agent's control socket never reported wan1 active: {}",
            agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "agent start → control socket answering with wan1 active: {} ms; setup + that: {} ms",
        started.elapsed().as_millis(),
        (took + started.elapsed()).as_millis()
    );
    let names: Vec<_> = status["uplinks"]
        .as_array()
        .expect("uplinks")
        .iter()
        .map(|u| u["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["wan1", "wan2"]);
    let addresses = text(&bed.ip(&["-n", &bed.ns("app"), "-br", "addr"]).stdout);
    assert!(
        addresses.contains("100.64.1.1") && addresses.contains("100.64.3.1"),
        "both uplinks leased: {addresses}"
    );

    // The router's WAN port asks for an address as it would from the modem, and the appliance's
    // LAN services (as setup configured them) answer: an address in 10.253.0.0/24.
    let lease = bed
        .in_ns("rtr", Path::new("busybox"))
        .args([
            "udhcpc",
            "-i",
            "wan0",
            "-n",
            "-q",
            "-f",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ])
        .output()
        .expect("busybox udhcpc (package busybox)");
    let said = format!("{}{}", text(&lease.stdout), text(&lease.stderr));
    assert!(lease.status.success(), "{said}");
    assert!(said.contains("lease of 10.253.0."), "{said}");
    assert!(said.contains("obtained from 10.253.0.1"), "{said}");
}

#[test]
fn setup_without_a_modem_refuses_in_one_line_with_exit_code_3_and_writes_nothing() {
    let bed = Bed::new("n", &[]);
    let config = bed.config_path();
    let (output, _) = bed.setup(&[
        "--yes",
        "--dhcp-timeout-secs",
        "1",
        "--config",
        &config.display().to_string(),
        "--state-dir",
        &bed.state_dir().display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        "stayopen-appliance setup: no modem port found: no wired port with carrier got a DHCP \
         answer (checked: eth0 no DHCP answer, eth1 no DHCP answer, eth2 no DHCP answer, eth3 no \
         carrier); connect the modem, or name the uplink with --uplink IF,gateway=IP\n"
    );
    assert!(!config.exists());
}

/// Accepts one HTTP request on 127.0.0.1 inside namespace `ns` within 30 s and answers it 403 as
/// the cloud answers an unknown token; returns the port and a handle yielding the request it read.
fn capture_one_request(ns: &str) -> (u16, std::thread::JoinHandle<Option<String>>) {
    let netns = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        port_tx
            .send(listener.local_addr().expect("addr").port())
            .expect("send port");
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).expect("read");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length || n == 0 {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let body =
            r#"{"error":{"code":"invalid_token","message":"unknown or expired enrolment token"}}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Some(String::from_utf8_lossy(&request).into_owned())
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listener port");
    (port, handle)
}

#[test]
fn the_token_setup_writes_is_what_the_agent_enrols_with_at_its_first_start_and_the_old_file_is_kept()
 {
    let bed = Bed::new("t", &[0]);
    let config = bed.config_path();
    let state = bed.state_dir();
    std::fs::create_dir_all(config.parent().expect("dir")).expect("mkdir");
    std::fs::write(&config, "# the previous configuration\n").expect("old config");
    let token_file = bed.dir.path().join("token");
    std::fs::write(&token_file, "soe_setup_netns_token\n").expect("token");
    let (port, request) = capture_one_request(&bed.ns("app"));
    let cloud = format!("http://127.0.0.1:{port}");
    let (output, _) = bed.setup(&[
        "--yes",
        "--lan",
        "eth1",
        "--uplink",
        "eth0=cable",
        "--cloud",
        &cloud,
        "--allow-plain-http",
        "--token-file",
        &token_file.display().to_string(),
        "--config",
        &config.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
        "--probe-target",
        "100.64.1.1",
    ]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!stdout.contains("soe_setup_netns_token"), "{stdout}");
    assert!(
        stdout.contains(
            "enrols by an enrolment token (read from --token-file) at the agent's first start"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("1. cable on eth0"), "{stdout}");
    let backup = config.with_file_name("appliance.toml.bak");
    assert_eq!(
        std::fs::read_to_string(&backup).expect("the old file is kept"),
        "# the previous configuration\n"
    );
    let written = ApplianceConfig::load(&config).expect("parses");
    let cloud_section = written.cloud.expect("cloud");
    assert_eq!(
        cloud_section.enrollment_token.as_deref(),
        Some("soe_setup_netns_token")
    );

    // First start: the agent posts that token to the enrolment endpoint. The refusal does not
    // stop it (the practice's traffic does not wait for the cloud): its status says why.
    let mut agent = bed
        .in_ns("app", appliance())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = String::new();
    while Instant::now() < deadline && agent.try_wait().expect("wait").is_none() {
        let output = Command::new(appliance())
            .args(["status", "--config"])
            .arg(&config)
            .output()
            .expect("run status");
        status = text(&output.stdout);
        if status.contains("\ncloud: refused") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = agent.try_wait().expect("wait").is_none();
    if running {
        let _ = Command::new("kill")
            .args(["-TERM", &agent.id().to_string()])
            .status();
    }
    let exit = agent.wait().expect("wait");
    let mut stderr = String::new();
    if let Some(mut e) = agent.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let request = request
        .join()
        .expect("the capturing thread")
        .unwrap_or_else(|| panic!("the agent posted nothing within 30 s: {stderr}"));
    assert!(
        request.starts_with("POST /api/v1/enroll HTTP/1.1\r\n"),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").expect("body") + 4..])
            .expect("json body");
    assert_eq!(body["token"], "soe_setup_netns_token");
    assert!(
        body["csr_pem"]
            .as_str()
            .is_some_and(|c| c.contains("CERTIFICATE REQUEST"))
    );
    assert!(
        running,
        "the agent keeps routing after the refusal: {exit:?} {stderr}"
    );
    assert!(
        status.contains("\ncloud: refused, trying again every 5 min: ")
            && status.contains("unknown or expired enrolment token"),
        "{status}"
    );
    assert!(
        exit.success(),
        "the agent stops cleanly on SIGTERM: {exit:?} {stderr}"
    );
}

#[test]
fn a_malformed_uplink_flag_exits_2_saying_what_was_expected_before_looking_at_anything() {
    let output = Command::new(appliance())
        .args(["setup", "--dry-run", "--uplink", "eth0,fast"])
        .output()
        .expect("run setup");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "unknown or repeated option \"fast\" (expected metered, dhcp, gateway=IP or dns=IP)"
        ),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
