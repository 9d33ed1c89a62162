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

use std::net::IpAddr;

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

/// The running LAN services; dropping it stops them.
#[derive(Debug, Default)]
pub struct LanServices {
    dns: Option<DnsHandle>,
    tasks: Vec<JoinHandle<()>>,
}

impl LanServices {
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
        match linux::spawn_dns(config, net.addr(), commands).await {
            Ok(task) => {
                services.tasks.push(task);
                services.dns = Some(handle);
            }
            Err(e) => tracing::error!(error = %e, "cannot start the LAN's DNS forwarder"),
        }
    }
    match config.lan.dhcp_server.mode {
        config::DhcpMode::Server => {
            match linux::spawn_dhcp(config, net, services.dns.is_some()).await {
                Ok(task) => services.tasks.push(task),
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
