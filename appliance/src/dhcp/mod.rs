//! The uplinks' DHCP client: cable and fibre modems hand the appliance its WAN address, gateway
//! and resolvers by DHCP, so an uplink can be `addressing = "dhcp"` instead of static.
//!
//! - [`client`]: the sans-IO client of RFC 2131 (states, retransmission, checks of every reply);
//! - [`linux`]: the thin driver — one UDP socket per interface, the lease remembered in the
//!   state directory;
//! - [`probe`]: one DISCOVER and the OFFER it draws, never binding (the `setup` command uses it to
//!   tell which port has the modem).

pub mod client;
pub mod linux;

use std::time::Duration;

pub use client::{Lease, Offer};

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("{interface}: {what}: {source}")]
    Io {
        interface: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{interface}: no such interface or no Ethernet address")]
    NoInterface { interface: String },
}

/// Sends one DISCOVER out of `interface` and waits up to `timeout` for an OFFER to it: `Some`
/// with the first one (server, offered address, gateway, resolvers), `None` when no server
/// answered in time. Never sends a REQUEST, so no address is taken from the server's pool and
/// nothing on the interface changes. Works on an interface with no address (see [`linux`] for
/// how) and beside a running agent's client on the same interface. Needs `CAP_NET_BIND_SERVICE`
/// (port 68) and, on kernels before 5.7, `CAP_NET_RAW` (`SO_BINDTODEVICE`). Offers for another transaction or another client, and datagrams that are not DHCP, are
/// skipped while waiting.
pub async fn probe(interface: &str, timeout: Duration) -> Result<Option<Offer>, DhcpError> {
    linux::probe(interface, timeout).await
}
