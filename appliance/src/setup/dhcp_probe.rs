//! The DHCP probe `setup` uses to find the modem's port: [`crate::dhcp::probe`] (one DISCOVER, the
//! first OFFER, nothing requested or bound, so the modem hands out no lease), told as a
//! [`DhcpAnswer`].

use std::time::Duration;

use super::links::DhcpAnswer;

/// Sends one DISCOVER on `interface` and waits at most `timeout` for an offer.
pub async fn probe(interface: &str, timeout: Duration) -> Result<Option<DhcpAnswer>, String> {
    match crate::dhcp::probe(interface, timeout).await {
        Ok(Some(offer)) => Ok(Some(DhcpAnswer {
            server: offer.server,
            offered: offer.address,
            prefix: offer.prefix_len,
            gateway: offer.gateway,
            resolvers: offer.resolvers,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
