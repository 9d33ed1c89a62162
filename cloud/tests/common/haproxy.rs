//! Debian's HAProxy in front of several cloud instances: the load balancer of the scale-out test.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// HAProxy on 127.0.0.1, killed when dropped.
pub struct Haproxy {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Round-robin over `backends` (their HTTP APIs), each health-checked on `/readyz` every 500 ms:
/// an instance that stops answering leaves the rotation after two failed checks, and a request
/// that could not be sent to it is sent to another (`option redispatch`, `retries`).
pub fn start(backends: &[SocketAddr]) -> Haproxy {
    let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("haproxy is installed (infra/scripts/test.sh installs Debian's package)");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let dir = tempfile::tempdir().expect("dir");
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server cloud{i} {b} check inter 500ms fall 2 rise 1\n"))
        .collect();
    let config = format!(
        "global\n    maxconn 1024\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch\n\
         frontend api\n    bind {addr}\n    default_backend clouds\n\
         backend clouds\n    balance roundrobin\n    option httpchk GET /readyz\n{servers}"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("config");
    let check = Command::new(binary)
        .args(["-c", "-q", "-f"])
        .arg(&path)
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "haproxy refuses the configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    Haproxy {
        addr,
        child,
        _dir: dir,
    }
}
