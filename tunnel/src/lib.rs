//! Both ends of the session-safe tunnel.
//!
//! The appliance carries a practice's critical flows (or all of them) through a WireGuard tunnel to
//! a StayOpen relay, which NATs them to its own stable public address: the far end of a
//! telemedicine call sees the same address and port before and after a failover, because only the
//! tunnel's outer packets move from one uplink to the other. WireGuard runs in user space
//! (boringtun's `noise::Tunn`), so it needs no kernel module.
//!
//! - [`keys`]: WireGuard key pairs and their base64 form;
//! - [`packet`]: just enough IPv4/TCP/UDP parsing to classify and police inner packets;
//! - [`tun`]: the TUN device both ends read inner packets from and write them to;
//! - [`relay`]: the relay every appliance's tunnel ends at (the `stayopen-relay` binary).

pub mod keys;
pub mod packet;
pub mod relay;
pub mod tun;
