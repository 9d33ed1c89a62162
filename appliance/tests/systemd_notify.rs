//! The agent under systemd's `Type=notify` and `WatchdogSec=` (infra/systemd/stayopen-appliance.service):
//! the real binary, a simulated dataplane, and a datagram socket standing in for systemd's.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A standalone, simulated configuration whose state lives in `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("appliance.toml");
    std::fs::write(
        &path,
        format!(
            "[appliance]\nstate_dir = \"{}\"\n[lan]\ninterface = \"lan0\"\n[[uplinks]]\nname = \"fiber\"\ninterface = \"wan0\"\ngateway = \"192.0.2.1\"\npriority = 0\n[dataplane]\nkind = \"simulated\"\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    path
}

fn start_agent(config: &Path, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stayopen-appliance"));
    command.args(["run", "--config"]).arg(config);
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("start the agent")
}

/// Everything systemd hears until `until` is heard or `within` passes.
fn hear_until(systemd: &UnixDatagram, until: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut heard = Vec::new();
    let mut buffer = [0u8; 256];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        systemd
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match systemd.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let done = message == until;
                heard.push(message);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    heard
}

fn terminate(agent: &mut Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    agent.wait().expect("wait")
}

#[test]
fn under_systemd_the_agent_is_ready_once_its_control_socket_answers_then_pings_the_watchdog_and_says_it_stops()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let socket = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket).expect("bind");
    // WatchdogSec=400ms: a ping every 200 ms.
    let mut agent = start_agent(
        &config,
        &[
            ("NOTIFY_SOCKET", socket.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let heard = hear_until(&systemd, "READY=1", Duration::from_secs(20));
    assert_eq!(
        heard.last().map(String::as_str),
        Some("READY=1"),
        "heard {heard:?}"
    );
    assert!(
        dir.path().join("state/control.sock").exists(),
        "READY=1 comes after the control socket is bound"
    );

    let heard = hear_until(&systemd, "never", Duration::from_millis(1100));
    let pings = heard.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        (3..=8).contains(&pings),
        "about one ping per 200 ms over 1.1 s, heard {heard:?}"
    );

    let status = terminate(&mut agent);
    let heard = hear_until(&systemd, "STOPPING=1", Duration::from_secs(10));
    assert_eq!(
        heard.last().map(String::as_str),
        Some("STOPPING=1"),
        "heard {heard:?}"
    );
    assert!(status.success(), "SIGTERM ends the agent cleanly: {status}");
}

#[test]
fn an_abstract_notify_socket_is_reached_and_a_watchdog_meant_for_another_process_is_left_alone() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let name = format!("stayopen-notify-test-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let systemd = UnixDatagram::bind_addr(&address).expect("bind");
    // WATCHDOG_PID names PID 1: the variables were inherited, the watchdog is someone else's.
    let mut agent = start_agent(
        &config,
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );

    let heard = hear_until(&systemd, "READY=1", Duration::from_secs(20));
    assert_eq!(
        heard.last().map(String::as_str),
        Some("READY=1"),
        "heard {heard:?}"
    );
    let heard = hear_until(&systemd, "never", Duration::from_millis(600));
    assert!(
        !heard.iter().any(|m| m == "WATCHDOG=1"),
        "no pings for another process's watchdog: {heard:?}"
    );
    let status = terminate(&mut agent);
    assert!(status.success(), "{status}");
}
