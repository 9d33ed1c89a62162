//! The Linux dataplane: real interfaces, routes, NAT and connection tracking.
//!
//! Layout, for uplink `i` with `T = table_base + i`:
//! - routing table `T` holds `default via <gateway> dev <interface>`;
//! - rule `oif <interface> lookup T`: a probe socket bound to the uplink's interface
//!   (`SO_BINDTODEVICE`) is routed through that uplink whichever uplink is active;
//! - rule `fwmark T lookup T`: LAN packets of a flow that was NATed out of uplink `i` carry the
//!   connection's mark `T` (restored from conntrack in prerouting), so an existing flow keeps its
//!   uplink when the default route moves — only flows of a failed (or metered) uplink are moved,
//!   by deleting their conntrack entries ([`Dataplane::flush_flows`]);
//! - nftables table `ip stayopen`: masquerade out of every uplink, stamp new connections with the
//!   mark of the uplink they leave by, restore the mark on packets from the LAN;
//! - the main table's default route is the active uplink, moved with one atomic `ip route replace`.
//!
//! Carrier comes from the kernel's netlink link notifications (`RTMGRP_LINK`, `IFF_LOWER_UP`), so a
//! lost carrier reaches the engine as soon as the driver reports it.
//!
//! Session-safe mode ([`crate::tunnel::linux`]) adds the WireGuard tunnel as one more table and
//! mark after the uplinks' (`table_base` + number of uplinks): LAN connections it carries are marked
//! with it, never with an uplink's mark, so [`Dataplane::flush_flows`] of a failed uplink leaves
//! them alone, while its outer UDP sockets are bound to each uplink's interface.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::mpsc;

use stayopen_shared::compliance::AppEndpoint;

use super::lease::{DhcpUplink, Routes, SharedRoutes};
use super::probe::{IcmpProber, app_check, dns_probe, http_client, https_get, tcp_probe};
use super::{Counters, Dataplane, DataplaneError, DataplaneEvent};
use crate::config::{Addressing, ApplianceConfig, ProbeKind};
use crate::tunnel::linux::{HostLayout, LinuxTunnel, TunnelCounters, TunnelSetup};
use crate::tunnel::{TunnelPlan, TunnelSettings};

const NFT_TABLE: &str = "stayopen";
/// Rules sit above the main table's rule (32766) and below local (0).
const RULE_PRIORITY_BASE: u32 = 1000;

#[derive(Debug, Clone)]
struct LinuxUplink {
    name: String,
    interface: String,
    /// `None` for a `dhcp` uplink: its gateway comes with its lease ([`super::lease`]).
    gateway: Option<IpAddr>,
    table: u32,
}

#[derive(Debug)]
pub struct LinuxDataplane {
    uplinks: Vec<LinuxUplink>,
    targets: Vec<ProbeKind>,
    probe_timeout: Duration,
    events: mpsc::UnboundedSender<DataplaneEvent>,
    icmp: Vec<Option<Arc<IcmpProber>>>,
    /// Per uplink: the HTTP(S) client of health probes and application checks.
    http: Vec<reqwest::Client>,
    /// Where application checks of DNS endpoints send their query (through the uplink checked).
    app_resolver: Option<SocketAddr>,
    lan_interface: String,
    table_base: u32,
    /// The session-safe tunnel's data path, while a relay is assigned.
    tunnel: Option<LinuxTunnel>,
    /// Each uplink's gateway (configured or leased) and the active uplink.
    routes: SharedRoutes,
}

/// The server application checks of DNS endpoints ask: that of the first `dns` probe target (a
/// resolver the MSP chose to probe through every uplink), else the first `nameserver` of
/// `/etc/resolv.conf`.
fn app_resolver(targets: &[ProbeKind]) -> Option<SocketAddr> {
    targets
        .iter()
        .find_map(|t| match t {
            ProbeKind::Dns { server, .. } => Some(SocketAddr::new(*server, 53)),
            _ => None,
        })
        .or_else(|| {
            std::fs::read_to_string("/etc/resolv.conf")
                .ok()?
                .lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .find_map(|a| a.trim().parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
}

fn command_error(what: &str, detail: impl ToString) -> DataplaneError {
    DataplaneError::Command {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// Runs a command; a non-zero exit is an error carrying its stderr.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, DataplaneError> {
    let what = format!("{program} {}", args.join(" "));
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let mut child = command.spawn().map_err(|source| DataplaneError::Io {
        what: what.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|source| DataplaneError::Io {
                what: what.clone(),
                source,
            })?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| DataplaneError::Io {
            what: what.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(command_error(
            &what,
            String::from_utf8_lossy(&output.stderr).trim(),
        ))
    }
}

/// The start of an `nft -f` script that replaces table `ip {name}` in the same transaction as
/// the definition that follows it (create if absent, delete, define). With no NAT chain in place,
/// even for a moment between a separate delete and add, replies of existing flows would not be
/// translated back and the appliance's own stack would answer them with resets: an agent restart
/// must not cut the practice's connections.
pub(crate) fn replace_table(name: &str) -> String {
    format!("table ip {name}\ndelete table ip {name}\n")
}

/// The nftables ruleset: NAT out of every uplink and per-uplink connection marks, replacing the
/// table a previous run left ([`replace_table`]). DHCP client messages are never NATed: before a
/// `dhcp` uplink has its lease, masquerading out of an interface with no address would drop them
/// (see [`crate::dhcp::linux`]).
fn nft_ruleset(lan: &str, uplinks: &[LinuxUplink]) -> String {
    let mut marks = String::new();
    let mut nat = String::new();
    for u in uplinks {
        marks.push_str(&format!(
            "        oifname \"{}\" ct mark 0 ct mark set {}\n",
            u.interface, u.table
        ));
        nat.push_str(&format!("        oifname \"{}\" masquerade\n", u.interface));
    }
    let replace = replace_table(NFT_TABLE);
    format!(
        "{replace}\
         table ip {NFT_TABLE} {{\n\
         \x20   chain restore_mark {{\n\
         \x20       type filter hook prerouting priority mangle; policy accept;\n\
         \x20       iifname \"{lan}\" meta mark set ct mark\n\
         \x20   }}\n\
         \x20   chain stamp_mark {{\n\
         \x20       type filter hook postrouting priority mangle; policy accept;\n\
         {marks}\
         \x20   }}\n\
         \x20   chain nat {{\n\
         \x20       type nat hook postrouting priority srcnat; policy accept;\n\
         \x20       udp sport 68 udp dport 67 return\n\
         {nat}\
         \x20   }}\n\
         }}\n"
    )
}

fn read_sys(interface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/{file}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

impl LinuxDataplane {
    /// Installs routing tables, rules and nftables, opens the probe sockets and starts watching
    /// carrier. Idempotent: a restart replaces what a previous run left.
    pub async fn start(
        config: &ApplianceConfig,
        table_base: u32,
        events: mpsc::UnboundedSender<DataplaneEvent>,
    ) -> Result<Self, DataplaneError> {
        let uplinks: Vec<LinuxUplink> = config
            .uplinks
            .iter()
            .enumerate()
            .map(|(i, u)| LinuxUplink {
                name: u.name.clone(),
                interface: u.interface.clone(),
                gateway: u.gateway,
                table: table_base + i as u32,
            })
            .collect();
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| {
            DataplaneError::Io {
                what: "enabling IPv4 forwarding".into(),
                source,
            }
        })?;
        // A box fresh from `setup` (which leaves ports as it found them) or a reboot may have
        // its ports down: the agent raises the LAN and every uplink itself, so carrier, DHCP
        // and probes can start.
        for interface in
            std::iter::once(&config.lan.interface).chain(uplinks.iter().map(|u| &u.interface))
        {
            run("ip", &["link", "set", "dev", interface, "up"], None).await?;
        }
        for (i, u) in uplinks.iter().enumerate() {
            let table = u.table.to_string();
            // No reverse-path filtering on uplinks: probe replies arrive on an uplink that is not the
            // main table's default (a standby, or any uplink before the first activation), which
            // even loose filtering drops when the main table has no default route yet.
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{}/rp_filter", u.interface),
                "0",
            );
            if let Some(gateway) = u.gateway {
                let gateway = gateway.to_string();
                run(
                    "ip",
                    &[
                        "route",
                        "replace",
                        "default",
                        "via",
                        &gateway,
                        "dev",
                        &u.interface,
                        "table",
                        &table,
                    ],
                    None,
                )
                .await?;
            }
            for selector in [["oif", u.interface.as_str()], ["fwmark", table.as_str()]] {
                let priority =
                    (RULE_PRIORITY_BASE + 2 * i as u32 + u32::from(selector[0] == "fwmark"))
                        .to_string();
                // Delete a rule a previous run left, then add: `ip rule` has no replace.
                let _ = run("ip", &["rule", "del", "priority", &priority], None).await;
                run(
                    "ip",
                    &[
                        "rule",
                        "add",
                        "priority",
                        &priority,
                        selector[0],
                        selector[1],
                        "lookup",
                        &table,
                    ],
                    None,
                )
                .await?;
            }
        }
        // A tunnel a previous run left steers into a device that no longer exists; the agent
        // sets its own up once a relay is assigned.
        let _ = run(
            "nft",
            &["delete", "table", "ip", crate::tunnel::linux::NFT_TABLE],
            None,
        )
        .await;
        run(
            "nft",
            &["-f", "-"],
            Some(&nft_ruleset(&config.lan.interface, &uplinks)),
        )
        .await?;

        let targets: Vec<ProbeKind> = config.probes.targets.iter().map(|t| t.kind()).collect();
        let needs_icmp = targets.iter().any(|t| matches!(t, ProbeKind::Icmp { .. }));
        let probe_timeout = Duration::from_millis(u64::from(config.probes.timeout_ms));
        let mut extra_roots = Vec::new();
        for target in &targets {
            if let ProbeKind::Http {
                ca_file: Some(path),
                ..
            } = target
            {
                let pem = std::fs::read(path).map_err(|source| DataplaneError::Io {
                    what: format!("reading the probe CA {}", path.display()),
                    source,
                })?;
                extra_roots.push(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    command_error(&format!("loading the probe CA {}", path.display()), e)
                })?);
            }
        }
        let mut icmp = Vec::new();
        let mut http = Vec::new();
        for (i, u) in uplinks.iter().enumerate() {
            icmp.push(if needs_icmp {
                Some(IcmpProber::start(
                    i,
                    &u.interface,
                    probe_timeout,
                    events.clone(),
                )?)
            } else {
                None
            });
            http.push(http_client(&u.interface, probe_timeout, &extra_roots)?);
        }
        let routes: SharedRoutes = Arc::new(tokio::sync::Mutex::new(Routes {
            gateways: uplinks.iter().map(|u| u.gateway).collect(),
            active: None,
        }));
        let dhcp_link_up = config
            .uplinks
            .iter()
            .enumerate()
            .map(|(uplink, u)| {
                (u.addressing == Addressing::Dhcp).then(|| {
                    super::lease::spawn(
                        DhcpUplink {
                            uplink,
                            interface: u.interface.clone(),
                            table: table_base + uplink as u32,
                        },
                        config.appliance.state_dir.clone(),
                        routes.clone(),
                        events.clone(),
                    )
                })
            })
            .collect();
        spawn_carrier_watch(&uplinks, routes.clone(), dhcp_link_up, events.clone())?;
        tracing::info!(uplinks = uplinks.len(), "linux dataplane ready");
        let app_resolver = app_resolver(&targets);
        Ok(Self {
            uplinks,
            targets,
            probe_timeout,
            events,
            icmp,
            http,
            app_resolver,
            lan_interface: config.lan.interface.clone(),
            table_base,
            tunnel: None,
            routes,
        })
    }

    /// The tunnel's place among the uplinks' tables and rules: the table (and mark) after the
    /// last uplink's, the rule after theirs.
    fn tunnel_layout(&self) -> HostLayout {
        let n = self.uplinks.len() as u32;
        HostLayout {
            lan_interface: self.lan_interface.clone(),
            uplink_interfaces: self.uplinks.iter().map(|u| u.interface.clone()).collect(),
            table: self.table_base + n,
            rule_priority: RULE_PRIORITY_BASE + 2 * n,
        }
    }

    fn uplink(&self, uplink: usize) -> Result<&LinuxUplink, DataplaneError> {
        self.uplinks
            .get(uplink)
            .ok_or(DataplaneError::UnknownUplink(uplink))
    }
}

/// `RTMGRP_LINK`: the multicast group of link changes.
const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// `IFF_LOWER_UP`: the driver signals carrier.
const IFF_LOWER_UP: u32 = 0x1_0000;

/// Link messages in a netlink datagram: `(interface index, has carrier)`.
fn parse_link_messages(mut buf: &[u8]) -> Vec<(u32, bool)> {
    let mut links = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        // ifinfomsg: family (1), pad (1), type (2), index (4), flags (4), change (4).
        if let Some(info) = buf.get(16..32)
            && (kind == RTM_NEWLINK || kind == RTM_DELLINK)
        {
            let index = u32::from_ne_bytes([info[4], info[5], info[6], info[7]]);
            let flags = u32::from_ne_bytes([info[8], info[9], info[10], info[11]]);
            links.push((index, kind == RTM_NEWLINK && flags & IFF_LOWER_UP != 0));
        }
        // Messages are aligned to 4 bytes.
        let advance = len.div_ceil(4) * 4;
        buf = buf.get(advance..).unwrap_or_default();
    }
    links
}

/// Subscribes to the kernel's link notifications: a carrier change reaches the engine as soon as
/// the driver reports it, with no polling interval.
fn spawn_carrier_watch(
    uplinks: &[LinuxUplink],
    routes: SharedRoutes,
    dhcp_link_up: Vec<Option<mpsc::UnboundedSender<()>>>,
    events: mpsc::UnboundedSender<DataplaneEvent>,
) -> Result<(), DataplaneError> {
    use netlink_sys::{
        AsyncSocket, AsyncSocketExt, SocketAddr as NetlinkAddr, TokioSocket,
        protocols::NETLINK_ROUTE,
    };
    let netlink = |source| DataplaneError::Io {
        what: "subscribing to netlink link notifications".into(),
        source,
    };
    let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(netlink)?;
    socket
        .socket_mut()
        .bind(&NetlinkAddr::new(0, RTMGRP_LINK))
        .map_err(netlink)?;
    let mut watched = Vec::new();
    for (uplink, u) in uplinks.iter().enumerate() {
        let index: u32 = read_sys(&u.interface, "ifindex")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| {
                command_error(
                    &format!("looking up interface {}", u.interface),
                    "no such interface",
                )
            })?;
        let up = read_sys(&u.interface, "carrier").as_deref() == Some("1");
        if !up && events.send(DataplaneEvent::Carrier { uplink, up }).is_err() {
            return Ok(());
        }
        watched.push((index, uplink, u.interface.clone(), u.table.to_string(), up));
    }
    tokio::spawn(async move {
        loop {
            let buf = match socket.recv_from_full().await {
                Ok((buf, _)) => buf,
                Err(e) => {
                    tracing::error!(error = %e, "netlink receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for (index, now_up) in parse_link_messages(&buf) {
                let Some(entry) = watched.iter_mut().find(|w| w.0 == index) else {
                    continue;
                };
                if entry.4 == now_up {
                    continue;
                }
                entry.4 = now_up;
                let (_, uplink, interface, table, _) = entry.clone();
                if events
                    .send(DataplaneEvent::Carrier { uplink, up: now_up })
                    .is_err()
                {
                    return;
                }
                if now_up && let Some(Some(dhcp)) = dhcp_link_up.get(uplink) {
                    let _ = dhcp.send(());
                }
                let gateway = routes.lock().await.gateways.get(uplink).copied().flatten();
                if now_up && let Some(gateway) = gateway {
                    let gateway = gateway.to_string();
                    // The kernel may have dropped the table's route while the link was down.
                    let _ = run(
                        "ip",
                        &[
                            "route", "replace", "default", "via", &gateway, "dev", &interface,
                            "table", &table,
                        ],
                        None,
                    )
                    .await;
                }
            }
        }
    });
    Ok(())
}

impl Dataplane for LinuxDataplane {
    fn start_probe(&mut self, _now: Instant, uplink: usize, target: usize) {
        let (Some(u), Some(kind)) = (self.uplinks.get(uplink), self.targets.get(target)) else {
            return;
        };
        let events = self.events.clone();
        let timeout = self.probe_timeout;
        let interface = u.interface.clone();
        match kind.clone() {
            ProbeKind::Icmp {
                address: IpAddr::V4(address),
            } => {
                if let Some(Some(prober)) = self.icmp.get(uplink) {
                    prober.send(target, address);
                }
            }
            ProbeKind::Icmp {
                address: IpAddr::V6(_),
            } => {
                let _ = events.send(DataplaneEvent::Probe {
                    uplink,
                    target,
                    rtt: None,
                });
            }
            ProbeKind::Tcp { address } => {
                tokio::spawn(async move {
                    let rtt = tcp_probe(&interface, address, timeout).await;
                    let _ = events.send(DataplaneEvent::Probe {
                        uplink,
                        target,
                        rtt,
                    });
                });
            }
            ProbeKind::Dns { server, name } => {
                tokio::spawn(async move {
                    let rtt =
                        dns_probe(&interface, SocketAddr::new(server, 53), &name, timeout).await;
                    let _ = events.send(DataplaneEvent::Probe {
                        uplink,
                        target,
                        rtt,
                    });
                });
            }
            ProbeKind::Http { url, .. } => {
                let client = self.http.get(uplink).cloned();
                tokio::spawn(async move {
                    let rtt = match client {
                        Some(client) => https_get(&client, &url, timeout).await.ok(),
                        None => None,
                    };
                    let _ = events.send(DataplaneEvent::Probe {
                        uplink,
                        target,
                        rtt,
                    });
                });
            }
        }
    }

    /// Host names of HTTPS and TCP endpoints are resolved by the system's resolver (through the
    /// active uplink, cached); the connection itself leaves through `uplink`. A DNS endpoint is
    /// queried through `uplink` at [`app_resolver`]'s server.
    fn start_app_check(
        &mut self,
        _now: Instant,
        uplink: usize,
        check: u64,
        _app: &str,
        endpoint: &AppEndpoint,
    ) {
        let events = self.events.clone();
        let Some(u) = self.uplinks.get(uplink) else {
            let _ = events.send(DataplaneEvent::AppCheck {
                check,
                outcome: Err(format!("unknown uplink {uplink}")),
            });
            return;
        };
        let interface = u.interface.clone();
        let client = self.http.get(uplink).cloned();
        let resolver = self.app_resolver;
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let outcome = app_check(&interface, client.as_ref(), resolver, &endpoint).await;
            let _ = events.send(DataplaneEvent::AppCheck { check, outcome });
        });
    }

    fn activate(
        &mut self,
        _now: Instant,
        uplink: Option<usize>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        let route = uplink.map(|i| {
            self.uplink(i)
                .map(|u| (i, u.interface.clone(), u.name.clone()))
        });
        let routes = self.routes.clone();
        async move {
            let mut routes = routes.lock().await;
            routes.active = uplink;
            let route = match route {
                Some(Ok((i, interface, name))) => match routes.gateways.get(i).copied().flatten() {
                    Some(gateway) => Some((gateway.to_string(), interface, name)),
                    None => {
                        tracing::warn!(uplink = %name, "activated without a DHCP lease: no default route until one arrives");
                        None
                    }
                },
                Some(Err(e)) => return Err(e),
                None => None,
            };
            match route {
                Some(route) => {
                    let (gateway, interface, name) = route;
                    // One netlink message: the default route moves atomically, no window without one.
                    run(
                        "ip",
                        &[
                            "route", "replace", "default", "via", &gateway, "dev", &interface,
                        ],
                        None,
                    )
                    .await?;
                    tracing::info!(uplink = %name, "default route moved");
                }
                None => {
                    let _ = run("ip", &["route", "del", "default"], None).await;
                    tracing::warn!("no usable uplink: default route removed");
                }
            }
            Ok(())
        }
    }

    fn flush_flows(
        &mut self,
        uplink: usize,
    ) -> impl Future<Output = Result<u64, DataplaneError>> + Send + 'static {
        let table = self.uplink(uplink).map(|u| u.table.to_string());
        async move {
            let table = table?;
            let output = Command::new("conntrack")
                .args(["-D", "--mark", &table])
                .output()
                .await
                .map_err(|source| DataplaneError::Io {
                    what: "conntrack -D".into(),
                    source,
                })?;
            // `conntrack -D` exits 1 when nothing matched; that is not a failure here. The count is
            // on stderr either way.
            Ok(parse_deleted(&String::from_utf8_lossy(&output.stderr)))
        }
    }

    async fn configure_tunnel(&mut self, setup: Option<TunnelSetup>) -> Result<(), DataplaneError> {
        let Some(setup) = setup else {
            self.remove_tunnel().await;
            return Ok(());
        };
        if self
            .tunnel
            .as_ref()
            .is_some_and(|t| *t.relay() == setup.relay)
        {
            return Ok(());
        }
        // The old device must be gone before one of the same name is created.
        self.remove_tunnel().await;
        self.tunnel = Some(LinuxTunnel::start(setup, self.tunnel_layout()).await?);
        Ok(())
    }

    fn apply_tunnel(&mut self, _now: Instant, plan: &TunnelPlan, settings: &TunnelSettings) {
        if let Some(tunnel) = &self.tunnel {
            tunnel.apply(plan, settings);
        }
    }

    fn tunnel_counters(&mut self, _now: Instant) -> TunnelCounters {
        self.tunnel
            .as_ref()
            .map(LinuxTunnel::counters)
            .unwrap_or_default()
    }

    fn counters(&mut self, _now: Instant, uplink: usize) -> Counters {
        let Some(u) = self.uplinks.get(uplink) else {
            return Counters::default();
        };
        let read = |file: &str| {
            read_sys(&u.interface, &format!("statistics/{file}"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Counters {
            rx_bytes: read("rx_bytes"),
            tx_bytes: read("tx_bytes"),
        }
    }
}

impl LinuxDataplane {
    /// Removes what a tunnel installed: its rule and nftables table (the TUN device goes with
    /// the data path).
    async fn remove_tunnel(&mut self) {
        if self.tunnel.take().is_some() {
            let layout = self.tunnel_layout();
            let priority = layout.rule_priority.to_string();
            let _ = run("ip", &["rule", "del", "priority", &priority], None).await;
            let _ = run(
                "nft",
                &["delete", "table", "ip", crate::tunnel::linux::NFT_TABLE],
                None,
            )
            .await;
            let mark = layout.table.to_string();
            let _ = run("conntrack", &["-D", "--mark", &mark], None).await;
            tracing::info!("tunnel data path stopped");
        }
    }
}

/// `conntrack` reports "… N flow entries have been deleted." on stderr.
fn parse_deleted(text: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find_map(|w| (w[1] == "flow").then(|| w[0].parse().ok()).flatten())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_masquerades_and_marks_every_uplink() {
        let uplinks = vec![
            LinuxUplink {
                name: "fiber".into(),
                interface: "wan0".into(),
                gateway: Some("100.64.1.1".parse().expect("ip")),
                table: 100,
            },
            LinuxUplink {
                name: "lte".into(),
                interface: "wan1".into(),
                gateway: None,
                table: 101,
            },
        ];
        let rules = nft_ruleset("lan0", &uplinks);
        assert!(rules.contains("oifname \"wan1\" masquerade"), "{rules}");
        let dhcp_exempt = rules
            .find("udp sport 68 udp dport 67 return")
            .expect("DHCP exempt from NAT");
        assert!(
            dhcp_exempt < rules.find("masquerade").expect("NAT"),
            "{rules}"
        );
        assert!(
            rules.contains("oifname \"wan0\" ct mark 0 ct mark set 100"),
            "{rules}"
        );
        assert!(
            rules.contains("iifname \"lan0\" meta mark set ct mark"),
            "{rules}"
        );
    }

    #[test]
    fn link_notifications_report_carrier_from_the_lower_up_flag() {
        let message = |kind: u16, index: u32, flags: u32| {
            let mut m = Vec::new();
            m.extend_from_slice(&32u32.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&[0, 0, 0, 0]);
            m.extend_from_slice(&index.to_ne_bytes());
            m.extend_from_slice(&flags.to_ne_bytes());
            m.extend_from_slice(&[0; 4]);
            m
        };
        let mut datagram = message(RTM_NEWLINK, 3, 0x1_1043);
        datagram.extend(message(RTM_NEWLINK, 4, 0x1003));
        datagram.extend(message(RTM_DELLINK, 5, 0x1_1043));
        datagram.extend(message(24, 6, 0x1_1043));
        assert_eq!(
            parse_link_messages(&datagram),
            vec![(3, true), (4, false), (5, false)]
        );
        assert_eq!(parse_link_messages(&datagram[..20]), vec![]);
    }

    #[test]
    fn conntrack_deletion_counts_are_read_from_its_message() {
        assert_eq!(
            parse_deleted("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted."),
            3
        );
        assert_eq!(parse_deleted("garbage"), 0);
    }
}
