//! The relay's health and metrics endpoints: `GET /healthz` and `GET /metrics` (Prometheus text).
//! Two read-only GETs on a local port need no web framework: a small HTTP/1.1 responder on tokio
//! that reads one request head (bounded in size and time) and closes the connection.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::Stats;

/// How the cloud poller is doing, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudStats {
    pub updated: u64,
    pub not_modified: u64,
    pub unreachable: u64,
    pub bad_answer: u64,
    /// Peer-list entries whose key does not parse.
    pub bad_entries: u64,
    pub revision: Option<String>,
}

/// What the endpoints show; the driver refreshes it on every tick.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: Stats,
    pub cloud: Option<CloudStats>,
}

pub type Shared = Arc<Mutex<Snapshot>>;

const MAX_HEAD: usize = 4096;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            let read = tokio::time::timeout(READ_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let snapshot = shared.lock().map(|s| s.clone()).unwrap_or_default();
            let response = respond(&head, &snapshot);
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The whole HTTP response to one request head.
pub fn respond(head: &[u8], snapshot: &Snapshot) -> String {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/healthz") => (
            "200 OK",
            "application/json",
            format!(
                "{{\"status\":\"ok\",\"peers\":{},\"sessions\":{}}}\n",
                snapshot.stats.peers, snapshot.stats.sessions
            ),
        ),
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics(snapshot)),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The Prometheus text of the relay's counters.
pub fn metrics(snapshot: &Snapshot) -> String {
    let s = &snapshot.stats;
    let c = &s.counters;
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    };
    gauge(
        &mut out,
        "stayopen_relay_peers",
        "Appliances in the peer list.",
        s.peers,
    );
    gauge(
        &mut out,
        "stayopen_relay_sessions",
        "Appliances with a live WireGuard session.",
        s.sessions,
    );
    let counter = |out: &mut String, name: &str, help: &str, values: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, value) in values {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    counter(
        &mut out,
        "stayopen_relay_handshakes_completed_total",
        "Handshake initiations from known peers answered.",
        &[("", c.handshakes_completed)],
    );
    counter(
        &mut out,
        "stayopen_relay_refused_total",
        "Datagrams and packets the relay refused, by reason.",
        &[
            ("reason=\"unknown_key\"", c.unknown_key),
            ("reason=\"rate_limited_source\"", c.rate_limited_source),
            ("reason=\"rate_limited_cookie\"", c.rate_limited_cookie),
            ("reason=\"bad_mac\"", c.bad_mac),
            ("reason=\"bad_handshake\"", c.bad_handshake),
            ("reason=\"invalid_datagram\"", c.invalid_datagram),
            ("reason=\"unknown_index\"", c.unknown_index),
            ("reason=\"spoofed_source\"", c.spoofed_source),
            ("reason=\"peer_to_peer\"", c.peer_to_peer),
            ("reason=\"decrypt_failed\"", c.decrypt_failed),
            ("reason=\"replay\"", c.replays),
            ("reason=\"no_peer\"", c.no_peer),
            ("reason=\"no_endpoint\"", c.no_endpoint),
            ("reason=\"invalid_inner\"", c.invalid_inner),
            ("reason=\"peer_list_entry\"", c.peers_refused),
        ],
    );
    counter(
        &mut out,
        "stayopen_relay_duplicates_received_total",
        "Data packets that arrived a second time over another uplink (redundant mode).",
        &[("", c.duplicates_received)],
    );
    counter(
        &mut out,
        "stayopen_relay_duplicates_sent_total",
        "Extra copies sent to a peer's other uplinks for redundant flows.",
        &[("", c.duplicates_sent)],
    );
    counter(
        &mut out,
        "stayopen_relay_bytes_total",
        "Inner bytes through the relay.",
        &[
            ("direction=\"from_peers\"", c.bytes_from_peers),
            ("direction=\"to_peers\"", c.bytes_to_peers),
        ],
    );
    if let Some(cloud) = &snapshot.cloud {
        counter(
            &mut out,
            "stayopen_relay_cloud_polls_total",
            "Peer-list polls of the cloud, by result.",
            &[
                ("result=\"updated\"", cloud.updated),
                ("result=\"not_modified\"", cloud.not_modified),
                ("result=\"unreachable\"", cloud.unreachable),
                ("result=\"bad_answer\"", cloud.bad_answer),
                ("result=\"bad_entry\"", cloud.bad_entries),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_and_metrics_answer_and_anything_else_does_not() {
        let mut snapshot = Snapshot::default();
        snapshot.stats.peers = 3;
        snapshot.stats.sessions = 2;
        snapshot.stats.counters.unknown_key = 7;
        let health = respond(b"GET /healthz HTTP/1.1\r\n\r\n", &snapshot);
        assert!(health.starts_with("HTTP/1.1 200 OK"));
        assert!(health.ends_with("{\"status\":\"ok\",\"peers\":3,\"sessions\":2}\n"));
        let metrics = respond(b"GET /metrics HTTP/1.1\r\n\r\n", &snapshot);
        assert!(metrics.contains("stayopen_relay_refused_total{reason=\"unknown_key\"} 7\n"));
        assert!(metrics.contains("stayopen_relay_sessions 2\n"));
        assert!(respond(b"GET /x HTTP/1.1\r\n\r\n", &snapshot).starts_with("HTTP/1.1 404"));
        assert!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &snapshot).starts_with("HTTP/1.1 405"));
        assert!(respond(b"\xff\xfe", &snapshot).starts_with("HTTP/1.1 405"));
    }
}
