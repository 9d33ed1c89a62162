//! The TUN device: inner IPv4 packets in and out of the kernel, one per read or write, without a
//! packet-information header. Both ends use it: the appliance's `so-tun0` (routed to from the
//! LAN) and the relay's (routed to the inner addresses, NATed to the relay's public address).

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("create TUN device {name}: {detail}")]
    Create { name: String, detail: String },
    #[error("TUN device {name}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// A TUN device, up, with an address and an MTU.
pub struct TunDevice {
    name: String,
    device: ::tun::AsyncDevice,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TunDevice {
    /// Creates TUN device `name` in the current network namespace with `address/prefix`, `mtu`
    /// and the link up. Needs CAP_NET_ADMIN.
    pub fn create(
        name: &str,
        address: Ipv4Addr,
        prefix: u8,
        mtu: u16,
    ) -> Result<TunDevice, TunError> {
        let mut config = ::tun::Configuration::default();
        config
            .tun_name(name)
            .address(address)
            .netmask(prefix_mask(prefix))
            .mtu(mtu)
            .up();
        let device = ::tun::create_as_async(&config).map_err(|e| TunError::Create {
            name: name.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(TunDevice {
            name: name.to_owned(),
            device,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one inner packet into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, TunError> {
        self.device.recv(buf).await.map_err(|source| TunError::Io {
            name: self.name.clone(),
            source,
        })
    }

    /// Writes one inner packet.
    pub async fn send(&self, packet: &[u8]) -> Result<(), TunError> {
        self.device
            .send(packet)
            .await
            .map(|_| ())
            .map_err(|source| TunError::Io {
                name: self.name.clone(),
                source,
            })
    }
}

/// The netmask of an IPv4 prefix length (0–32).
pub fn prefix_mask(prefix: u8) -> Ipv4Addr {
    let prefix = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lengths_become_netmasks() {
        assert_eq!(prefix_mask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(prefix_mask(12), Ipv4Addr::new(255, 240, 0, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::new(0, 0, 0, 0));
    }
}
