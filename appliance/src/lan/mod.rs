//! The LAN side looks like a modem to the practice's router (issue 17): a DHCP server gives the
//! router's WAN port an address, with the appliance as gateway and DNS server, and a DNS
//! forwarder answers through whichever uplink carries traffic.
//!
//! - [`config`]: `[lan.dhcp_server]`, `[lan.dns]` and their validation;
//! - [`dhcp_server`]: the DHCP server's sans-IO core (pool, leases, reservations, refusals);
//! - [`dns`]: the DNS forwarder's sans-IO core (per-uplink resolvers, cache, failover);
//! - [`linux`]: the drivers — sockets on the LAN interface and on each uplink's interface.
//!
//! The agent starts them with [`start`] (Linux dataplane only: the simulated one has no
//! interfaces) and tells them which uplink is active through [`LanServices::set_active_uplink`];
//! uplink DHCP clients hand their resolvers to [`DnsHandle::set_uplink_resolvers`].

pub mod config;
pub mod dhcp_server;
pub mod dns;
pub mod linux;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{ApplianceConfig, DataplaneSection};

/// What the agent tells the DNS forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsCommand {
    ActiveUplink(Option<usize>),
    UplinkResolvers {
        uplink: usize,
        resolvers: Vec<IpAddr>,
    },
}

/// The DNS forwarder's handle: cloneable, never blocks; commands are carried out in order.
#[derive(Debug, Clone)]
pub struct DnsHandle {
    commands: mpsc::UnboundedSender<DnsCommand>,
}

impl DnsHandle {
    /// A handle and the receiving end the forwarder's driver reads.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<DnsCommand>) {
        let (commands, rx) = mpsc::unbounded_channel();
        (Self { commands }, rx)
    }

    /// The uplink that carries traffic from now on (`None`: none). Queries in flight through
    /// another uplink are sent again through this one at once.
    pub fn set_active_uplink(&self, uplink: Option<usize>) {
        let _ = self.commands.send(DnsCommand::ActiveUplink(uplink));
    }

    /// Uplink `uplink`'s resolvers from now on, replacing the previous list: the configured
    /// ones (`uplinks[i].dns`) followed by those its DHCP lease names. The uplink DHCP client
    /// calls this on every lease (bound, renewed with other servers, lost: the configured ones
    /// only).
    pub fn set_uplink_resolvers(&self, uplink: usize, resolvers: Vec<IpAddr>) {
        let _ = self
            .commands
            .send(DnsCommand::UplinkResolvers { uplink, resolvers });
    }
}

/// What the LAN services are doing, for `stayopen-appliance status`: the router's lease and every
/// datagram refused or dropped since the agent started, by reason (the same labels as the log).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LanReport {
    pub interface: String,
    /// The appliance's LAN address and prefix.
    pub address: String,
    /// Whether the DHCP server runs (not in static mode, or when it could not start).
    pub dhcp_server: bool,
    /// The leases the DHCP server holds (bound, not only offered): the router's WAN port.
    #[serde(default)]
    pub dhcp_leases: Vec<String>,
    #[serde(default)]
    pub dhcp_refused: BTreeMap<String, u64>,
    /// Whether the DNS forwarder runs.
    pub dns_forwarder: bool,
    #[serde(default)]
    pub dns_dropped: BTreeMap<String, u64>,
}

/// The report the drivers write and the agent reads.
pub type SharedLanReport = Arc<Mutex<LanReport>>;

/// The running LAN services; dropping it stops them.
#[derive(Debug, Default)]
pub struct LanServices {
    dns: Option<DnsHandle>,
    tasks: Vec<JoinHandle<()>>,
    report: SharedLanReport,
}

impl LanServices {
    /// What they are doing now.
    pub fn report(&self) -> LanReport {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The DNS forwarder's handle, when it runs.
    pub fn dns(&self) -> Option<&DnsHandle> {
        self.dns.as_ref()
    }

    /// Traffic moved to `uplink`: the DNS forwarder follows.
    pub fn set_active_uplink(&self, uplink: Option<usize>) {
        if let Some(dns) = &self.dns {
            dns.set_active_uplink(uplink);
        }
    }
}

impl Drop for LanServices {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the LAN services `config` asks for: none without `lan.address` or on the simulated
/// dataplane. A service that cannot start (an address in use, say) is logged and left out; the
/// failover itself never waits on them.
pub async fn start(config: &ApplianceConfig) -> Option<LanServices> {
    if !matches!(config.dataplane, DataplaneSection::Linux { .. }) {
        return None;
    }
    let net = config.lan.address?;
    let mut services = LanServices::default();
    {
        let mut report = services.report.lock().expect("a new lock");
        report.interface = config.lan.interface.clone();
        report.address = net.to_string();
    }
    if let Err(e) = linux::assign_lan_address(&config.lan.interface, net).await {
        tracing::error!(interface = %config.lan.interface, address = %net, error = %e,
            "cannot set the LAN address; no LAN services");
        return None;
    }
    if config.lan.dns.enabled {
        let (handle, commands) = DnsHandle::channel();
        for (i, uplink) in config.uplinks.iter().enumerate() {
            handle.set_uplink_resolvers(i, uplink.dns.clone());
        }
        match linux::spawn_dns(config, net.addr(), commands, services.report.clone()).await {
            Ok(task) => {
                services.tasks.push(task);
                services.dns = Some(handle);
                services.report.lock().expect("not poisoned").dns_forwarder = true;
            }
            Err(e) => tracing::error!(error = %e, "cannot start the LAN's DNS forwarder"),
        }
    }
    match config.lan.dhcp_server.mode {
        config::DhcpMode::Server => {
            match linux::spawn_dhcp(config, net, services.dns.is_some(), services.report.clone())
                .await
            {
                Ok(task) => {
                    services.tasks.push(task);
                    services.report.lock().expect("not poisoned").dhcp_server = true;
                }
                Err(e) => tracing::error!(error = %e, "cannot start the LAN's DHCP server"),
            }
        }
        config::DhcpMode::Static => {
            let mask = net.netmask();
            let router = config.lan.dhcp_server.router_address.map_or_else(
                || "a free address of the subnet".to_owned(),
                |a| a.to_string(),
            );
            let dns = if services.dns.is_some() {
                net.addr().to_string()
            } else {
                "the ISP's DNS servers".to_owned()
            };
            tracing::info!(
                "LAN static mode: set the router's WAN port to address {router}, mask {mask}, \
                 gateway {gateway}, DNS {dns}",
                gateway = net.addr()
            );
        }
    }
    Some(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULATED: &str = r#"
[appliance]
state_dir = "/nonexistent/stayopen"

[lan]
interface = "lan0"
address = "192.168.100.1/24"

[[uplinks]]
name = "fiber"
interface = "wan0"
gateway = "192.0.2.1"
priority = 0
dns = ["192.0.2.53"]

[dataplane]
kind = "simulated"
"#;

    #[tokio::test]
    async fn the_simulated_dataplane_runs_no_lan_services_even_with_a_lan_address() {
        let config = ApplianceConfig::parse(SIMULATED).expect("parses");
        assert!(start(&config).await.is_none());
    }

    #[tokio::test]
    async fn the_handle_passes_commands_in_order() {
        let (handle, mut commands) = DnsHandle::channel();
        handle.set_uplink_resolvers(1, vec![IpAddr::from([198, 51, 100, 53])]);
        handle.set_active_uplink(Some(1));
        assert_eq!(
            commands.recv().await,
            Some(DnsCommand::UplinkResolvers {
                uplink: 1,
                resolvers: vec![IpAddr::from([198, 51, 100, 53])]
            })
        );
        assert_eq!(
            commands.recv().await,
            Some(DnsCommand::ActiveUplink(Some(1)))
        );
    }
}
