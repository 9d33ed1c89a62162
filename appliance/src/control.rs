//! The local control socket (`{state_dir}/control.sock`): `stayopen-appliance status` and
//! `stayopen-appliance drill` talk to the running agent through it, one JSON request and one JSON
//! response per connection.
//!
//! Design: whoever can connect can start drills, so the socket is the owner's alone (0600) from
//! the moment it has a name: it is bound inside a fresh 0700 staging directory, narrowed there,
//! and renamed into place, so no umask and no window make it wider. A symbolic link or any other
//! non-socket at the path is refused, never followed or replaced.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stayopen_shared::telemetry::UplinkHealth;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

pub const SOCKET_NAME: &str = "control.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    StartDrill { duration_secs: u64 },
    StopDrill,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Accepted { message: String },
    Error { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub active: Option<String>,
    pub drill_running: bool,
    pub uplinks: Vec<UplinkStatus>,
    /// The latest check of each critical application through each uplink.
    #[serde(default)]
    pub apps: Vec<stayopen_shared::compliance::AppReachability>,
    /// The session-safe tunnel: mode, state, relay, redundant mode and its data.
    #[serde(default)]
    pub tunnel: Option<stayopen_shared::tunnel::TunnelReport>,
    /// Where the cloud connection stands ("enrolling", "linked", or why it was refused); none
    /// for a standalone appliance.
    #[serde(default)]
    pub cloud: Option<String>,
    /// The LAN services (DHCP server and DNS forwarder for the router), when they run.
    #[serde(default)]
    pub lan: Option<crate::lan::LanReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkStatus {
    pub name: String,
    pub interface: String,
    pub priority: u8,
    pub metered: bool,
    pub health: UplinkHealth,
    pub active: bool,
    pub rtt_ms: Option<f64>,
    pub loss_pct: f64,
    /// A DHCP uplink's lease in words ([`crate::dhcp::Lease::describe`]); none before the first
    /// or for a static uplink.
    #[serde(default)]
    pub lease: Option<String>,
}

/// The LAN services' lines of `status`.
fn lan_text(lan: &crate::lan::LanReport) -> String {
    let counts = |map: &std::collections::BTreeMap<String, u64>| {
        if map.is_empty() {
            "none".to_owned()
        } else {
            map.iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = format!("LAN {} {}:", lan.interface, lan.address);
    if lan.dhcp_server {
        let leases = if lan.dhcp_leases.is_empty() {
            "no lease yet".to_owned()
        } else {
            lan.dhcp_leases.join(", ")
        };
        out.push_str(&format!(
            " DHCP server ({leases}; refused: {})",
            counts(&lan.dhcp_refused)
        ));
    } else {
        out.push_str(" no DHCP server (static mode)");
    }
    if lan.dns_forwarder {
        out.push_str(&format!(
            ", DNS forwarder (dropped: {})",
            counts(&lan.dns_dropped)
        ));
    }
    out.push('\n');
    out
}

impl Status {
    /// The human-readable form `stayopen-appliance status` prints.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "active uplink: {}{}\n",
            self.active.as_deref().unwrap_or("none"),
            if self.drill_running {
                " (failover drill running)"
            } else {
                ""
            }
        );
        out.push_str(&format!(
            "{:<12} {:<10} {:>8} {:>8} {:>9} {:>7}\n",
            "UPLINK", "INTERFACE", "PRIORITY", "HEALTH", "RTT", "LOSS"
        ));
        for u in &self.uplinks {
            let rtt = u
                .rtt_ms
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} ms"));
            let name = format!(
                "{}{}{}",
                if u.active { "*" } else { " " },
                u.name,
                if u.metered { " $" } else { "" }
            );
            out.push_str(&format!(
                "{:<12} {:<10} {:>8} {:>8} {:>9} {:>6.1}%\n",
                name,
                u.interface,
                u.priority,
                u.health.as_str(),
                rtt,
                u.loss_pct
            ));
        }
        out.push_str("(* active, $ metered)\n");
        for u in &self.uplinks {
            if let Some(lease) = &u.lease {
                out.push_str(&format!("{} lease: {lease}\n", u.name));
            }
        }
        if let Some(lan) = &self.lan {
            out.push_str(&lan_text(lan));
        }
        if let Some(cloud) = &self.cloud {
            out.push_str(&format!("cloud: {cloud}\n"));
        }
        if !self.apps.is_empty() {
            out.push_str(&format!(
                "\n{:<20} {:<12} {:>9} {:>6}  {}\n",
                "APPLICATION", "UPLINK", "LATENCY", "AGE", "RESULT"
            ));
            for a in &self.apps {
                let latency = a
                    .latency_ms
                    .map_or_else(|| "-".to_owned(), |l| format!("{l:.0} ms"));
                let result = match (&a.reason, a.reachable) {
                    (_, true) => "reachable".to_owned(),
                    (Some(reason), false) => format!("unreachable: {reason}"),
                    (None, false) => "unreachable".to_owned(),
                };
                out.push_str(&format!(
                    "{:<20} {:<12} {:>9} {:>5}s  {result}\n",
                    a.app, a.uplink, latency, a.age_secs
                ));
            }
        }
        if let Some(t) = &self.tunnel {
            out.push_str(&format!(
                "\ntunnel: {} (mode {}), relay {}",
                t.state.as_str(),
                t.mode.as_str(),
                t.relay.as_deref().unwrap_or("none")
            ));
            if let Some(secs) = t.last_handshake_secs {
                out.push_str(&format!(", last handshake {secs} s ago"));
            }
            out.push_str(&format!(
                "\n  {} through the tunnel; redundant mode {}",
                human_bytes(t.tunnel_bytes),
                if t.redundant { "on" } else { "off" }
            ));
            for (uplink, bytes) in &t.redundant_bytes {
                out.push_str(&format!(
                    "; {uplink} {} of duplicates this month",
                    human_bytes(*bytes)
                ));
            }
            out.push('\n');
        }
        out
    }
}

/// Bytes for people: `12.3 MB`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

pub type Command = (Request, oneshot::Sender<Response>);

/// Accepts connections on `path` and forwards each request to the agent.
pub fn serve(path: &Path, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let listener = bind_private(path)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let commands = commands.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, commands).await {
                    tracing::debug!(error = %e, "control connection failed");
                }
            });
        }
    });
    Ok(())
}

/// The mode of the control socket: the agent's user (root) alone.
pub const SOCKET_MODE: u32 = 0o600;

/// Binds a Unix socket at `path` with [`SOCKET_MODE`] whatever the umask, atomically (see the
/// module's design). A stale socket from a previous run is replaced; anything else at `path` — a
/// symbolic link above all — is refused.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(meta) => {
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a socket"
            };
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} is {what}: refusing to replace it with the control socket",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no socket file name")
    })?;
    let staging = path.with_file_name(format!(
        ".{}.{}.staging",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Left over by a crash (never followed: a symbolic link is removed, not its target).
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let bound = (|| {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;
        let staged = staging.join(name);
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        // rename(2) replaces a stale socket in one step and never follows a link at `path`.
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

async fn answer(stream: UnixStream, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // Requests are tiny; a client that sends more is cut off rather than buffered.
    let mut reader = tokio::io::AsyncReadExt::take(BufReader::new(read), 4096);
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => {
            let (reply, response) = oneshot::channel();
            if commands.send((request, reply)).await.is_err() {
                Response::Error {
                    message: "the agent is stopping".into(),
                }
            } else {
                response.await.unwrap_or(Response::Error {
                    message: "the agent is stopping".into(),
                })
            }
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path} (is it running?): {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent did not answer within 5 s")]
    Timeout,
    #[error("unreadable answer from the agent: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request to the agent whose state directory is `state_dir`.
pub async fn request(state_dir: &Path, request: &Request) -> Result<Response, ClientError> {
    let path = socket_path(state_dir);
    let exchange = async {
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.clone(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        let mut bytes = serde_json::to_vec(request)?;
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok(serde_json::from_str(line.trim())?)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| ClientError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_the_agent_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::channel::<Command>(4);
        serve(&socket_path(dir.path()), tx).expect("serve");
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(Response::Accepted {
                    message: format!("{request:?}"),
                });
            }
        });
        let response = request(dir.path(), &Request::StartDrill { duration_secs: 5 })
            .await
            .expect("answer");
        assert_eq!(
            response,
            Response::Accepted {
                message: "StartDrill { duration_secs: 5 }".into()
            }
        );
    }

    #[tokio::test]
    async fn a_malformed_request_gets_an_error_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, _rx) = mpsc::channel::<Command>(4);
        serve(&socket_path(dir.path()), tx).expect("serve");
        let stream = UnixStream::connect(socket_path(dir.path()))
            .await
            .expect("connect");
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"{\"cmd\":\"format_disk\"}\n")
            .await
            .expect("write");
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .expect("read");
        assert!(line.contains("bad request"), "{line}");
    }

    #[test]
    fn status_text_marks_the_active_and_metered_uplinks() {
        let status = Status {
            at: Utc::now(),
            active: Some("fiber".into()),
            drill_running: false,
            uplinks: vec![UplinkStatus {
                name: "fiber".into(),
                interface: "wan0".into(),
                priority: 0,
                metered: false,
                health: UplinkHealth::Up,
                active: true,
                rtt_ms: Some(12.3),
                loss_pct: 0.0,
                lease: Some("100.64.1.120/24, gateway 100.64.1.1, DNS 192.0.2.53 (DHCP from 100.64.1.1, 120 s lease)".into()),
            }],
            apps: vec![stayopen_shared::compliance::AppReachability {
                app: "Lab interface".into(),
                uplink: "lte".into(),
                reachable: false,
                latency_ms: None,
                age_secs: 40,
                reason: Some("tcp lab.example:2575: connection refused".into()),
            }],
            tunnel: Some(stayopen_shared::tunnel::TunnelReport {
                mode: stayopen_shared::tunnel::TunnelMode::Critical,
                state: stayopen_shared::tunnel::TunnelState::Up,
                relay: Some("relay-1".into()),
                last_handshake_secs: Some(3),
                redundant: true,
                redundant_bytes: [("lte".to_owned(), 2_500_000)].into(),
                tunnel_bytes: 12_345,
            }),
            cloud: Some("enrolling".into()),
            lan: Some(crate::lan::LanReport {
                interface: "lan0".into(),
                address: "10.253.0.1/24".into(),
                dhcp_server: true,
                dhcp_leases: vec!["10.253.0.100 to 02:00:00:00:00:01".into()],
                dhcp_refused: [("malformed".to_owned(), 3)].into(),
                dns_forwarder: true,
                dns_dropped: Default::default(),
            }),
        };
        let text = status.to_text();
        assert!(text.starts_with("active uplink: fiber\n"), "{text}");
        assert!(text.contains("\ncloud: enrolling\n"), "{text}");
        assert!(
            text.contains("\nfiber lease: 100.64.1.120/24, gateway 100.64.1.1, DNS 192.0.2.53"),
            "{text}"
        );
        assert!(
            text.contains(
                "\nLAN lan0 10.253.0.1/24: DHCP server (10.253.0.100 to 02:00:00:00:00:01; \
                 refused: 3 malformed), DNS forwarder (dropped: none)\n"
            ),
            "{text}"
        );
        assert!(text.contains("*fiber"), "{text}");
        assert!(text.contains("12.3 ms"), "{text}");
        assert!(
            text.contains("unreachable: tcp lab.example:2575: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("tunnel: up (mode critical), relay relay-1, last handshake 3 s ago"),
            "{text}"
        );
        assert!(
            text.contains("redundant mode on; lte 2.5 MB of duplicates this month"),
            "{text}"
        );
    }
}
