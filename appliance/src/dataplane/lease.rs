//! The Linux dataplane's side of `dhcp` uplinks: runs the DHCP client of each and applies its
//! leases to the interface and the routes.
//!
//! A lease's address becomes the interface's only IPv4 address (with the lease's lifetime, so the
//! kernel drops it by itself should the agent die and the lease run out); its router becomes the
//! default route of the uplink's table, and of the main table while the uplink is active. A lost
//! lease removes both.
//!
//! An uplink without a lease is down to the failover engine through its probes, not through a
//! synthetic carrier event: with no address and no route in its table, its probes (bound to the
//! interface) go unanswered and the engine fails over within `probes.silence_ms`, exactly as for a
//! line that died upstream. A carrier event would be faster by that window, but it would fight the
//! real carrier reports of the same interface (a netlink "carrier up" while still unleased would
//! mark it usable), and losing a lease is rare and slow anyway: it follows a rebinding that went
//! unanswered for the last eighth of the lease, or a NAK. Recovery needs nothing special either: a
//! new lease makes the probes answer and the engine's recovery and failback rules apply.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};

use super::DataplaneEvent;
use super::linux::run;
use crate::dhcp::Lease;
use crate::dhcp::linux::LeaseUpdate;

/// The default routes the dataplane maintains, shared by [`super::Dataplane::activate`], the
/// carrier watch and the lease tasks (held across the `ip` commands, so that a lease change and a
/// failover never interleave their route updates).
#[derive(Debug)]
pub(crate) struct Routes {
    /// Each uplink's next hop: configured (static) or leased (`None`: no lease).
    pub gateways: Vec<Option<IpAddr>>,
    /// The uplink the main table's default route goes through.
    pub active: Option<usize>,
}

pub(crate) type SharedRoutes = Arc<Mutex<Routes>>;

/// One `dhcp` uplink as the lease task sees it.
#[derive(Debug, Clone)]
pub(crate) struct DhcpUplink {
    pub uplink: usize,
    pub interface: String,
    pub table: u32,
}

/// The IPv4 addresses (`a.b.c.d/len`) on `interface`.
async fn addresses(interface: &str) -> Vec<String> {
    run("ip", &["-4", "-o", "addr", "show", "dev", interface], None)
        .await
        .map(|out| parse_addresses(&out))
        .unwrap_or_default()
}

/// `ip -o addr show` lines: `2: wan0    inet 100.64.1.2/24 brd ... scope global wan0 ...`.
fn parse_addresses(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_owned)
        })
        .collect()
}

async fn apply_bound(u: &DhcpUplink, lease: &Lease, routes: &SharedRoutes) {
    let cidr = format!("{}/{}", lease.address, lease.prefix_len);
    for old in addresses(&u.interface).await {
        if old != cidr {
            let _ = run("ip", &["addr", "del", &old, "dev", &u.interface], None).await;
        }
    }
    let lifetime = lease.lease_time.as_secs().to_string();
    if let Err(e) = run(
        "ip",
        &[
            "addr",
            "replace",
            &cidr,
            "dev",
            &u.interface,
            "valid_lft",
            &lifetime,
            "preferred_lft",
            &lifetime,
        ],
        None,
    )
    .await
    {
        tracing::error!(interface = %u.interface, error = %e, "cannot apply the DHCP address");
    }
    let table = u.table.to_string();
    let mut routes = routes.lock().await;
    let gateway = lease.gateway.map(IpAddr::V4);
    if let Some(slot) = routes.gateways.get_mut(u.uplink) {
        *slot = gateway;
    }
    let active = routes.active == Some(u.uplink);
    match gateway {
        Some(gateway) => {
            let gateway = gateway.to_string();
            let mut route = vec![
                "route",
                "replace",
                "default",
                "via",
                &gateway,
                "dev",
                &u.interface,
            ];
            if active && let Err(e) = run("ip", &route, None).await {
                tracing::error!(interface = %u.interface, error = %e, "cannot move the default route to the new gateway");
            }
            route.extend(["table", &table]);
            if let Err(e) = run("ip", &route, None).await {
                tracing::error!(interface = %u.interface, error = %e, "cannot route the uplink's table via the leased gateway");
            }
        }
        None => {
            tracing::warn!(interface = %u.interface, "the DHCP lease names no router: the uplink has no route");
            let _ = run("ip", &["route", "flush", "table", &table], None).await;
        }
    }
}

async fn apply_lost(u: &DhcpUplink, routes: &SharedRoutes) {
    let mut routes = routes.lock().await;
    if let Some(slot) = routes.gateways.get_mut(u.uplink) {
        *slot = None;
    }
    let _ = run(
        "ip",
        &["route", "flush", "table", &u.table.to_string()],
        None,
    )
    .await;
    let _ = run("ip", &["-4", "addr", "flush", "dev", &u.interface], None).await;
}

/// Starts the DHCP client of `u` and the task applying its leases; each change is reported as
/// [`DataplaneEvent::LeaseChanged`] once applied. The sender returned tells the client the
/// interface regained carrier.
pub(crate) fn spawn(
    u: DhcpUplink,
    state_dir: PathBuf,
    routes: SharedRoutes,
    events: mpsc::UnboundedSender<DataplaneEvent>,
) -> mpsc::UnboundedSender<()> {
    let (updates, mut received) = mpsc::unbounded_channel();
    let (link_up, link_up_rx) = mpsc::unbounded_channel();
    let interface = u.interface.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::dhcp::linux::run(interface, state_dir, updates, link_up_rx).await {
            tracing::error!(error = %e, "the uplink's DHCP client stopped");
        }
    });
    tokio::spawn(async move {
        while let Some(update) = received.recv().await {
            let lease = match update {
                LeaseUpdate::Bound { lease, changed } => {
                    // Applied on every renewal too: cheap, idempotent, and it repairs an address
                    // someone removed by hand. Only a change is reported.
                    apply_bound(&u, &lease, &routes).await;
                    if !changed {
                        continue;
                    }
                    Some(lease)
                }
                LeaseUpdate::Lost => {
                    apply_lost(&u, &routes).await;
                    None
                }
            };
            let event = DataplaneEvent::LeaseChanged {
                uplink: u.uplink,
                lease,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    });
    link_up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_ip_one_line_output() {
        let out = "4: wan0    inet 100.64.1.150/24 brd 100.64.1.255 scope global wan0\\       valid_lft 118sec preferred_lft 118sec\n\
                   4: wan0    inet 10.9.9.9/8 scope global wan0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_addresses(out),
            vec!["100.64.1.150/24".to_owned(), "10.9.9.9/8".to_owned()]
        );
    }
}
