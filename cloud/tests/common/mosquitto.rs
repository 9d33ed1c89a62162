//! Debian's Mosquitto as the external broker, configured as `infra/mosquitto/` ships it.

use std::process::{Child, Command, Stdio};

/// Mosquitto on loopback, killed when dropped.
pub struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// SIGHUP: Mosquitto re-reads its configuration and certificates (and so the CRL).
    pub fn reload(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Debian's Mosquitto with the shipped configuration and ACL, on 127.0.0.1:`port`, using the
/// certificates the cloud made in `tls_dir` (its `broker.tls_dir`).
pub fn start(tls_dir: &std::path::Path, port: u16) -> Mosquitto {
    let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto is installed (infra/scripts/test.sh installs Debian's package)");
    let dir = tempfile::tempdir().expect("dir");
    let tls = tls_dir;
    let acl =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/mosquitto/stayopen.acl");
    // The shipped configuration, with paths and port for this test and without privilege drop.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/mosquitto/stayopen.conf"),
    )
    .expect("shipped config");
    let config = shipped
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
        .replace("/var/lib/stayopen-cloud/pki", &tls.display().to_string())
        .replace("/etc/mosquitto/stayopen.acl", &acl.display().to_string())
        .replace("persistence true", "persistence false")
        .replace("persistence_location /var/lib/mosquitto/\n", "")
        + "user root\n";
    let path = dir.path().join("mosquitto.conf");
    std::fs::write(&path, config).expect("config");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    Mosquitto { child, _dir: dir }
}
