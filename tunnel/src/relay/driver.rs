//! The relay's thin async driver: the TUN device, one UDP socket, the nft table, the timer tick,
//! the cloud poller and the health/metrics endpoints around the sans-IO [`Relay`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::Ipv4Net;
use stayopen_shared::tunnel::RelayPeerList;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::config::{CloudConfig, RelayConfig, load_or_create_key};
use super::http::{self, CloudStats, Shared, Snapshot};
use super::{Limits, MAX_DATAGRAM, Output, PeerEntry, Relay, own_address};
use crate::keys::{encode_public, parse_public};
use crate::tun::TunDevice;
use boringtun::x25519::PublicKey;

/// The nft table the relay owns (and removes at shutdown).
pub const NFT_TABLE: &str = "stayopen_relay";
const TICK: Duration = Duration::from_millis(100);

/// The nft ruleset: inner traffic leaves masqueraded out of the public interface; TCP SYNs are
/// MSS-clamped both ways so TCP inside the tunnel never needs fragments; peers reach nothing but
/// the public side (not each other, not other networks of the relay's host).
///
/// The script replaces an older table in one transaction (create if absent, delete, define):
/// while no NAT chain exists the kernel rewrites no packet of an existing flow, so a server's
/// segment arriving in a gap between a separate delete and add would reach the relay's own stack
/// untranslated and be answered with a reset — killing every tunnelled TCP flow at a restart.
pub fn nft_ruleset(network: Ipv4Net, tun: &str, public: &str, mtu: u16) -> String {
    let mss = mtu.saturating_sub(40);
    format!(
        "table ip {NFT_TABLE}
delete table ip {NFT_TABLE}
table ip {NFT_TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {network} oifname \"{public}\" masquerade
  }}
  chain forward {{
    type filter hook forward priority mangle; policy accept;
    iifname \"{tun}\" oifname != \"{public}\" drop
    iifname \"{tun}\" tcp flags syn tcp option maxseg size {above}-65535 tcp option maxseg size set {mss}
    oifname \"{tun}\" tcp flags syn tcp option maxseg size set rt mtu
  }}
}}
",
        above = mss + 1
    )
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("run {program} {}", args.join(" ")))?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Installs the relay's nft table (replacing an older one atomically) and turns on IPv4
/// forwarding.
pub fn install_network(config: &RelayConfig) -> anyhow::Result<()> {
    run(
        "nft",
        &["-f", "-"],
        Some(&nft_ruleset(
            config.inner_network.trunc(),
            &config.tun_name,
            &config.public_interface,
            config.mtu,
        )),
    )
    .context("install the nft table")?;
    // Already on — a container given the sysctl, whose /proc/sys is read-only — is left alone.
    let ip_forward = "/proc/sys/net/ipv4/ip_forward";
    if !std::fs::read_to_string(ip_forward).is_ok_and(|on| on.trim() == "1") {
        std::fs::write(ip_forward, "1").context("turn on ip_forward")?;
    }
    run(
        "ip",
        &[
            "route",
            "replace",
            &config.inner_network.trunc().to_string(),
            "dev",
            &config.tun_name,
        ],
        None,
    )
    .context("route the inner network to the TUN")?;
    Ok(())
}

/// Removes the relay's nft table.
pub fn remove_network() {
    if let Err(e) = run("nft", &["delete", "table", "ip", NFT_TABLE], None) {
        tracing::warn!(error = %e, "could not remove the nft table");
    }
}

/// What one poll of the cloud's peer list brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    Updated {
        revision: String,
        peers: Vec<PeerEntry>,
        bad_entries: usize,
    },
    NotModified,
    /// The cloud answered something the relay cannot use; the last good list stays.
    BadAnswer(String),
}

/// Reads the cloud's answer to `GET /api/v1/relay/peers`.
pub fn read_poll_answer(status: u16, body: &[u8]) -> PollOutcome {
    match status {
        304 => PollOutcome::NotModified,
        200 => match serde_json::from_slice::<RelayPeerList>(body) {
            Ok(list) => {
                let mut bad_entries = 0;
                let peers = list
                    .peers
                    .iter()
                    .filter_map(|p| match parse_public(&p.public_key) {
                        Ok(public_key) => Some(PeerEntry {
                            public_key,
                            inner_address: p.inner_address,
                        }),
                        Err(_) => {
                            bad_entries += 1;
                            None
                        }
                    })
                    .collect();
                PollOutcome::Updated {
                    revision: list.revision,
                    peers,
                    bad_entries,
                }
            }
            Err(e) => PollOutcome::BadAnswer(format!("not a peer list: {e}")),
        },
        other => PollOutcome::BadAnswer(format!("status {other}")),
    }
}

/// Polls the cloud every `poll_secs` and sends each new list; keeps quiet (and the last good list
/// stands) while the cloud is unreachable or answers garbage.
async fn poll_cloud(
    cloud: CloudConfig,
    token: String,
    tx: mpsc::Sender<Vec<PeerEntry>>,
    shared: Shared,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the cloud");
            return;
        }
    };
    let url = format!("{}/api/v1/relay/peers", cloud.url.trim_end_matches('/'));
    let mut revision: Option<String> = None;
    let mut interval = tokio::time::interval(Duration::from_secs(cloud.poll_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let mut request = client.get(&url).bearer_auth(&token);
        if let Some(revision) = &revision {
            request = request.header("If-None-Match", format!("\"{revision}\""));
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => Ok(read_poll_answer(status, &body)),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let mut stats = shared.lock().map(|s| s.cloud.clone()).unwrap_or_default();
        let cloud_stats = stats.get_or_insert_with(CloudStats::default);
        match answer {
            Err(e) => {
                cloud_stats.unreachable += 1;
                tracing::warn!(error = %e, "cloud unreachable; keeping the last peer list");
            }
            Ok(PollOutcome::NotModified) => cloud_stats.not_modified += 1,
            Ok(PollOutcome::BadAnswer(why)) => {
                cloud_stats.bad_answer += 1;
                tracing::warn!(%why, "the cloud's peer list is unusable; keeping the last one");
            }
            Ok(PollOutcome::Updated {
                revision: new,
                peers,
                bad_entries,
            }) => {
                cloud_stats.updated += 1;
                cloud_stats.bad_entries += bad_entries as u64;
                if bad_entries > 0 {
                    tracing::warn!(
                        bad_entries,
                        "peer-list entries with unreadable keys skipped"
                    );
                }
                tracing::info!(revision = %new, peers = peers.len(), "peer list from the cloud");
                cloud_stats.revision = Some(new.clone());
                revision = Some(new);
                if tx.send(peers).await.is_err() {
                    return;
                }
            }
        }
        if let Ok(mut snapshot) = shared.lock() {
            snapshot.cloud = stats;
        }
    }
}

/// Where the relay remembers each peer's last endpoint across restarts: `relay.endpoints` beside
/// the private key file.
pub fn endpoints_path(config: &RelayConfig) -> PathBuf {
    config.private_key_file.with_file_name("relay.endpoints")
}

/// Reads remembered endpoints (`<base64 key> <ip:port>` a line); unreadable lines are skipped.
pub fn read_endpoints(path: &Path) -> Vec<(PublicKey, SocketAddr)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (key, endpoint) = line.split_once(' ')?;
            Some((parse_public(key).ok()?, endpoint.trim().parse().ok()?))
        })
        .collect()
}

/// Writes the endpoints (mode 0600, replaced atomically).
pub fn write_endpoints(path: &Path, list: &[(PublicKey, SocketAddr)]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("endpoints.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    for (key, endpoint) in list {
        writeln!(file, "{} {endpoint}", encode_public(key))?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn remember(path: &Path, relay: &Relay, last: &mut Vec<(PublicKey, SocketAddr)>) {
    let now = relay.reply_endpoints();
    if now != *last {
        match write_endpoints(path, &now) {
            Ok(()) => *last = now,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "could not remember the peers' endpoints")
            }
        }
    }
}

fn udp_socket(listen: SocketAddr) -> anyhow::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(listen);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Bursts from many appliances: room for a few thousand packets.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket
        .bind(&listen.into())
        .with_context(|| format!("bind UDP {listen}"))?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Runs the relay until `shutdown` resolves; removes the nft table on the way out.
pub async fn serve(
    config: RelayConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let key = load_or_create_key(&config.private_key_file)?;
    tracing::info!(public_key = %key.public_base64(), "relay key");
    let network = config.inner_network.trunc();
    let mut relay = Relay::new(key, network, Limits::default());
    let static_peers = config.static_peers();
    apply_peers(&mut relay, &static_peers, &[]);

    let token = match &config.cloud {
        Some(cloud) => Some(
            std::fs::read_to_string(&cloud.token_file)
                .with_context(|| format!("read the cloud token {}", cloud.token_file.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };

    let tun = TunDevice::create(
        &config.tun_name,
        own_address(network),
        network.prefix_len(),
        config.mtu,
    )?;
    install_network(&config)?;
    let result = run_loop(&config, relay, tun, static_peers, token, shutdown).await;
    remove_network();
    result
}

fn apply_peers(relay: &mut Relay, static_peers: &[PeerEntry], cloud_peers: &[PeerEntry]) {
    let all: Vec<PeerEntry> = static_peers.iter().chain(cloud_peers).cloned().collect();
    let change = relay.set_peers(&all);
    for refused in &change.refused {
        tracing::warn!(%refused, "peer-list entry refused");
    }
    tracing::info!(
        peers = relay.stats().peers,
        added = change.added,
        removed = change.removed,
        readdressed = change.readdressed,
        "peer list applied"
    );
}

async fn run_loop(
    config: &RelayConfig,
    mut relay: Relay,
    tun: TunDevice,
    static_peers: Vec<PeerEntry>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let udp = udp_socket(config.listen)?;
    let shared: Shared = Arc::new(Mutex::new(Snapshot::default()));
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("bind HTTP {}", config.http_listen))?;
    let http_task = tokio::spawn(http::serve(listener, shared.clone()));
    let (tx, mut rx) = mpsc::channel::<Vec<PeerEntry>>(4);
    let poller = match (&config.cloud, token) {
        (Some(cloud), Some(token)) => Some(tokio::spawn(poll_cloud(
            cloud.clone(),
            token,
            tx,
            shared.clone(),
        ))),
        _ => {
            drop(tx);
            None
        }
    };
    tracing::info!(listen = %config.listen, tun = %config.tun_name, "relay serving");

    let mut udp_buf = vec![0u8; MAX_DATAGRAM];
    let mut tun_buf = vec![0u8; MAX_DATAGRAM];
    let mut out: Vec<Output> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers_open = poller.is_some();

    // After a restart: handshake with every listed peer where it was last heard, so sessions
    // resume after one round trip.
    let endpoints_file = endpoints_path(config);
    let mut remembered = read_endpoints(&endpoints_file);
    let reconnecting = remembered
        .iter()
        .filter(|(key, endpoint)| relay.reconnect(Instant::now(), key, *endpoint, &mut out))
        .count();
    if reconnecting > 0 {
        tracing::info!(
            reconnecting,
            "handshaking with the peers of before the restart"
        );
    }
    for output in out.drain(..) {
        if let Output::Network { to, datagram } = output {
            let _ = udp.send_to(&datagram, to).await;
        }
    }
    remembered.sort_by_key(|(key, _)| *key.as_bytes());
    let mut ticks: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            received = udp.recv_from(&mut udp_buf) => match received {
                Ok((n, from)) => relay.handle_datagram(Instant::now(), from, &udp_buf[..n], &mut out),
                Err(e) => tracing::debug!(error = %e, "UDP receive"),
            },
            read = tun.recv(&mut tun_buf) => match read {
                Ok(n) => relay.handle_tun_packet(Instant::now(), &tun_buf[..n], &mut out),
                Err(e) => tracing::warn!(error = %e, "TUN read"),
            },
            _ = tick.tick() => {
                relay.tick(Instant::now(), &mut out);
                if let Ok(mut snapshot) = shared.lock() {
                    snapshot.stats = relay.stats();
                }
                ticks += 1;
                if ticks.is_multiple_of(50) {
                    remember(&endpoints_file, &relay, &mut remembered);
                }
            }
            list = rx.recv(), if peers_open => match list {
                Some(cloud_peers) => apply_peers(&mut relay, &static_peers, &cloud_peers),
                None => peers_open = false,
            },
        }
        for output in out.drain(..) {
            match output {
                Output::Network { to, datagram } => {
                    if let Err(e) = udp.send_to(&datagram, to).await {
                        tracing::debug!(error = %e, %to, "UDP send");
                    }
                }
                Output::Tun(packet) => {
                    if let Err(e) = tun.send(&packet).await {
                        tracing::debug!(error = %e, "TUN write");
                    }
                }
            }
        }
    }
    remember(&endpoints_file, &relay, &mut remembered);
    http_task.abort();
    if let Some(poller) = poller {
        poller.abort();
    }
    tracing::info!("relay stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn the_clouds_peer_list_is_read_and_garbage_or_errors_keep_the_last_good_list() {
        let key = KeyPair::generate().public_base64();
        let body = format!(
            r#"{{"relay":"relay-1","revision":"r7","peers":[
                {{"appliance_id":"0192e4b4-7d3c-7b3a-9a55-3c1f2a4b5c6d","public_key":"{key}","inner_address":"100.96.0.2"}},
                {{"appliance_id":"0192e4b4-7d3c-7b3a-9a55-3c1f2a4b5c6e","public_key":"nope","inner_address":"100.96.0.3"}}]}}"#
        );
        match read_poll_answer(200, body.as_bytes()) {
            PollOutcome::Updated {
                revision,
                peers,
                bad_entries,
            } => {
                assert_eq!(revision, "r7");
                assert_eq!(peers.len(), 1);
                assert_eq!(bad_entries, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_poll_answer(304, b""), PollOutcome::NotModified);
        assert!(matches!(
            read_poll_answer(200, b"<html>"),
            PollOutcome::BadAnswer(_)
        ));
        assert!(matches!(
            read_poll_answer(401, b"{}"),
            PollOutcome::BadAnswer(_)
        ));
    }

    #[test]
    fn remembered_endpoints_survive_their_file_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.endpoints");
        let key = KeyPair::generate().public();
        let list = vec![(key, "192.0.2.10:40000".parse().expect("addr"))];
        write_endpoints(&path, &list).expect("write");
        assert_eq!(read_endpoints(&path), list);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, format!("{text}garbage\nnot-a-key 192.0.2.1:1\n")).expect("write");
        assert_eq!(read_endpoints(&path), list);
        assert!(read_endpoints(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn the_nft_ruleset_replaces_an_older_table_in_the_same_transaction() {
        let rules = nft_ruleset("100.96.0.0/12".parse().expect("net"), "t", "up0", 1380);
        // Create-if-absent, delete, define: one `nft -f` transaction, never a moment without NAT.
        assert!(
            rules.starts_with(&format!(
                "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{"
            )),
            "{rules}"
        );
    }

    #[test]
    fn the_nft_ruleset_masquerades_the_inner_network_and_clamps_mss_both_ways() {
        let rules = nft_ruleset(
            "100.96.0.0/12".parse().expect("net"),
            "so-relay0",
            "up0",
            1380,
        );
        assert!(rules.contains("ip saddr 100.96.0.0/12 oifname \"up0\" masquerade"));
        assert!(rules.contains("maxseg size 1341-65535 tcp option maxseg size set 1340"));
        assert!(
            rules.contains("oifname \"so-relay0\" tcp flags syn tcp option maxseg size set rt mtu")
        );
    }
}
