//! The LAN's DHCP server, without I/O: the router's WAN port asks for an address as it asked the
//! modem, and gets one in the LAN subnet with the appliance as its gateway and DNS server.
//!
//! Design: [`DhcpServer::handle`] takes the moment (Unix seconds: leases outlive the process, so
//! their expiry is wall-clock time) and one received datagram, and returns the reply to send and
//! where, or why the datagram was refused. Leases live in a map keyed by address; a MAC address
//! holds at most one. The driver ([`super::linux`]) owns the socket, persists [`DhcpServer::leases`]
//! after every change and calls [`DhcpServer::expire`] at [`DhcpServer::next_expiry`].
//!
//! Rules that keep one client from hurting another:
//! - an address bound or offered to one MAC is never offered or acknowledged to another: a
//!   REQUEST for it is NAKed (lease theft);
//! - RELEASE and DECLINE act only on the sender's own lease (a forged RELEASE cannot free the
//!   router's address for someone else);
//! - a DECLINEd address (another device already uses it) is set aside for [`DECLINE_HOLD_SECS`];
//! - offers not taken up are held only [`OFFER_HOLD_SECS`], so a burst of DISCOVERs from made-up
//!   MAC addresses exhausts the pool only while it lasts;
//! - anything that is not a well-formed Ethernet BOOTREQUEST with a known message type is refused
//!   and counted by reason ([`Refusal`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use serde::{Deserialize, Serialize};

use super::config::{DhcpServerSection, parse_mac};

/// How long an offer reserves its address for the client that was offered it.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long an address a client declined (someone else answers ARP for it) stays out of the pool.
pub const DECLINE_HOLD_SECS: u64 = 600;
/// Larger datagrams are refused unread: a DHCP message from a router fits in far less.
pub const MAX_MESSAGE: usize = 1500;

/// A MAC address.
pub type Mac = [u8; 6];

/// The server's fixed facts: its address, the subnet, the pool, the lease time, reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The appliance's LAN address: server identifier, gateway and (when `dns`) DNS server.
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    pub lease_secs: u32,
    pub reservations: Vec<(Mac, Ipv4Addr)>,
    /// Hand the appliance out as DNS server (the forwarder runs).
    pub dns: bool,
}

impl ServerConfig {
    /// From the `[lan]` section's address and `[lan.dhcp_server]`, both validated.
    pub fn from_section(net: ipnet::Ipv4Net, section: &DhcpServerSection, dns: bool) -> Self {
        let first = u32::from(net.network()) + 1;
        let last = u32::from(net.broadcast()) - 1;
        Self {
            address: net.addr(),
            prefix: net.prefix_len(),
            pool_start: section.pool_start.unwrap_or(Ipv4Addr::from(first)),
            pool_end: section.pool_end.unwrap_or(Ipv4Addr::from(last)),
            lease_secs: section.lease_secs,
            reservations: section
                .reservations
                .iter()
                .filter_map(|r| parse_mac(&r.mac).map(|mac| (mac, r.address)))
                .collect(),
            dns,
        }
    }

    fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }

    fn in_pool(&self, a: Ipv4Addr) -> bool {
        (self.pool_start..=self.pool_end).contains(&a)
    }

    fn reserved_for(&self, a: Ipv4Addr) -> Option<Mac> {
        self.reservations
            .iter()
            .find(|(_, r)| *r == a)
            .map(|(mac, _)| *mac)
    }

    fn reservation_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.reservations
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, a)| *a)
    }
}

/// One address held by one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: Mac,
    /// Unix seconds.
    pub expires: u64,
    /// Offered, not yet requested: not persisted, held briefly.
    pub offered: bool,
}

/// Why a datagram got no reply. Each is counted ([`DhcpServer::refusals`]) and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Refusal {
    #[error("not a DHCP message")]
    Malformed,
    #[error("larger than any DHCP message")]
    Oversized,
    #[error("not a BOOTREQUEST")]
    NotARequest,
    #[error("not an Ethernet client (htype/hlen)")]
    NotEthernet,
    #[error("a broadcast, multicast or all-zero client MAC address")]
    BadClientMac,
    #[error("no DHCP message type")]
    NoMessageType,
    #[error("a message type a client does not send")]
    UnexpectedMessageType,
    #[error("relayed (giaddr set); this server serves its own link only")]
    Relayed,
    #[error("meant for another DHCP server")]
    ForAnotherServer,
    #[error("no free address in the pool")]
    PoolExhausted,
    #[error("release or decline of a lease the sender does not hold")]
    NotTheHolder,
    #[error("request for an address held by another client")]
    AddressTaken,
    #[error("request for an address this server does not give that client")]
    AddressNotOffered,
}

impl Refusal {
    /// The label a counter and a log line carry.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Oversized => "oversized",
            Refusal::NotARequest => "not_a_request",
            Refusal::NotEthernet => "not_ethernet",
            Refusal::BadClientMac => "bad_client_mac",
            Refusal::NoMessageType => "no_message_type",
            Refusal::UnexpectedMessageType => "unexpected_message_type",
            Refusal::Relayed => "relayed",
            Refusal::ForAnotherServer => "for_another_server",
            Refusal::PoolExhausted => "pool_exhausted",
            Refusal::NotTheHolder => "not_the_holder",
            Refusal::AddressTaken => "address_taken",
            Refusal::AddressNotOffered => "address_not_offered",
        }
    }
}

/// Where a reply goes (port 68).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The limited broadcast on the LAN interface: the client has no address yet.
    Broadcast,
    /// The client's own address (it renews, or asked with INFORM).
    Unicast(Ipv4Addr),
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub to: Destination,
    pub bytes: Vec<u8>,
    /// The address given (OFFER, ACK of a lease).
    pub address: Option<Ipv4Addr>,
}

/// What a datagram led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    /// Accepted, nothing to answer (RELEASE, DECLINE, a REQUEST for another server's offer).
    Done,
    Refused(Refusal),
}

/// The server's state: leases, declined addresses, refusal counters.
#[derive(Debug, Clone)]
pub struct DhcpServer {
    config: ServerConfig,
    leases: BTreeMap<Ipv4Addr, Lease>,
    /// Declined addresses and the moment they return to the pool.
    declined: BTreeMap<Ipv4Addr, u64>,
    refusals: BTreeMap<Refusal, u64>,
    /// Bound leases changed since [`DhcpServer::take_changed`].
    changed: bool,
}

impl DhcpServer {
    /// A server with the bound leases of a previous run (`saved`), those still valid at `now` and
    /// still allowed by the configuration.
    pub fn new(config: ServerConfig, saved: Vec<(Ipv4Addr, Lease)>, now: u64) -> Self {
        let mut server = Self {
            config,
            leases: BTreeMap::new(),
            declined: BTreeMap::new(),
            refusals: BTreeMap::new(),
            changed: false,
        };
        for (address, lease) in saved {
            if !lease.offered
                && lease.expires > now
                && server.allowed(address, &lease.mac, now)
                && !server.leases.values().any(|l| l.mac == lease.mac)
            {
                server.leases.insert(address, lease);
            }
        }
        server
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The bound leases, to persist.
    pub fn leases(&self) -> Vec<(Ipv4Addr, Lease)> {
        self.leases
            .iter()
            .filter(|(_, l)| !l.offered)
            .map(|(a, l)| (*a, *l))
            .collect()
    }

    /// Whether bound leases changed since the last call (the driver then persists them).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Refusals so far, by reason.
    pub fn refusals(&self) -> &BTreeMap<Refusal, u64> {
        &self.refusals
    }

    /// The client's lease, if it holds one.
    pub fn lease_of(&self, mac: &Mac) -> Option<(Ipv4Addr, Lease)> {
        self.leases
            .iter()
            .find(|(_, l)| &l.mac == mac)
            .map(|(a, l)| (*a, *l))
    }

    /// The next moment a lease, an offer or a decline hold runs out.
    pub fn next_expiry(&self) -> Option<u64> {
        self.leases
            .values()
            .map(|l| l.expires)
            .chain(self.declined.values().copied())
            .min()
    }

    /// Drops what has run out at `now`.
    pub fn expire(&mut self, now: u64) {
        let before = self.leases.len();
        let bound_before = self.leases.values().filter(|l| !l.offered).count();
        self.leases.retain(|_, l| l.expires > now);
        self.declined.retain(|_, until| *until > now);
        let bound_after = self.leases.values().filter(|l| !l.offered).count();
        if before != self.leases.len() && bound_before != bound_after {
            self.changed = true;
        }
    }

    /// Handles one datagram received on port 67 at `now`.
    pub fn handle(&mut self, now: u64, datagram: &[u8]) -> Outcome {
        self.expire(now);
        let outcome = self.decide(now, datagram);
        if let Outcome::Refused(reason) = outcome {
            *self.refusals.entry(reason).or_default() += 1;
        }
        outcome
    }

    fn decide(&mut self, now: u64, datagram: &[u8]) -> Outcome {
        if datagram.len() > MAX_MESSAGE {
            return Outcome::Refused(Refusal::Oversized);
        }
        let Ok(message) = Message::from_bytes(datagram) else {
            return Outcome::Refused(Refusal::Malformed);
        };
        if message.opcode() != Opcode::BootRequest {
            return Outcome::Refused(Refusal::NotARequest);
        }
        if message.htype() != v4::HType::Eth || message.hlen() != 6 {
            return Outcome::Refused(Refusal::NotEthernet);
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&message.chaddr()[..6]);
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Outcome::Refused(Refusal::BadClientMac);
        }
        if !message.giaddr().is_unspecified() {
            return Outcome::Refused(Refusal::Relayed);
        }
        let Some(kind) = message.opts().msg_type() else {
            return Outcome::Refused(Refusal::NoMessageType);
        };
        let server_id = match message.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(id)) => Some(*id),
            _ => None,
        };
        let requested = match message.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
            _ => None,
        };
        match kind {
            MessageType::Discover => self.discover(now, &message, mac, requested),
            MessageType::Request => {
                if server_id.is_some_and(|id| id != self.config.address) {
                    // The client took another server's offer: ours is free again.
                    self.leases.retain(|_, l| !(l.mac == mac && l.offered));
                    return Outcome::Refused(Refusal::ForAnotherServer);
                }
                let address = requested.unwrap_or(message.ciaddr());
                self.request(now, &message, mac, address)
            }
            MessageType::Release => {
                if server_id.is_some_and(|id| id != self.config.address) {
                    return Outcome::Refused(Refusal::ForAnotherServer);
                }
                let address = message.ciaddr();
                match self.leases.get(&address) {
                    Some(l) if l.mac == mac => {
                        self.leases.remove(&address);
                        self.changed = true;
                        Outcome::Done
                    }
                    _ => Outcome::Refused(Refusal::NotTheHolder),
                }
            }
            MessageType::Decline => {
                if server_id.is_some_and(|id| id != self.config.address) {
                    return Outcome::Refused(Refusal::ForAnotherServer);
                }
                let Some(address) = requested else {
                    return Outcome::Refused(Refusal::Malformed);
                };
                match self.leases.get(&address) {
                    Some(l) if l.mac == mac => {
                        self.leases.remove(&address);
                        self.declined.insert(address, now + DECLINE_HOLD_SECS);
                        self.changed = true;
                        Outcome::Done
                    }
                    _ => Outcome::Refused(Refusal::NotTheHolder),
                }
            }
            MessageType::Inform => {
                let to = message.ciaddr();
                if to.is_unspecified() {
                    return Outcome::Refused(Refusal::Malformed);
                }
                self.reply(&message, MessageType::Inform, to, Destination::Unicast(to))
            }
            _ => Outcome::Refused(Refusal::UnexpectedMessageType),
        }
    }

    /// Whether `address` may be given to `mac` at `now`, leaving aside who holds it now.
    fn allowed(&self, address: Ipv4Addr, mac: &Mac, now: u64) -> bool {
        if address == self.config.address {
            return false;
        }
        if self
            .declined
            .get(&address)
            .is_some_and(|until| *until > now)
        {
            return false;
        }
        match self.config.reserved_for(address) {
            Some(owner) => &owner == mac,
            None => self.config.in_pool(address) && self.config.reservation_of(mac).is_none(),
        }
    }

    /// Whether `address` is free for `mac`: allowed and held by no other client.
    fn free_for(&self, address: Ipv4Addr, mac: &Mac, now: u64) -> bool {
        self.allowed(address, mac, now) && self.leases.get(&address).is_none_or(|l| &l.mac == mac)
    }

    fn discover(
        &mut self,
        now: u64,
        message: &Message,
        mac: Mac,
        requested: Option<Ipv4Addr>,
    ) -> Outcome {
        let current = self.lease_of(&mac);
        let address = self
            .config
            .reservation_of(&mac)
            .filter(|a| self.free_for(*a, &mac, now))
            .or_else(|| {
                current
                    .map(|(a, _)| a)
                    .filter(|a| self.free_for(*a, &mac, now))
            })
            .or_else(|| requested.filter(|a| self.free_for(*a, &mac, now)))
            .or_else(|| {
                (u32::from(self.config.pool_start)..=u32::from(self.config.pool_end))
                    .map(Ipv4Addr::from)
                    .find(|a| self.free_for(*a, &mac, now) && !self.leases.contains_key(a))
            });
        let Some(address) = address else {
            return Outcome::Refused(Refusal::PoolExhausted);
        };
        match current {
            // A bound lease stays as it is; the offer repeats it.
            Some((a, lease)) if a == address && !lease.offered => {}
            _ => {
                if let Some((old, lease)) = current {
                    self.leases.remove(&old);
                    if !lease.offered {
                        self.changed = true;
                    }
                }
                self.leases.insert(
                    address,
                    Lease {
                        mac,
                        expires: now + OFFER_HOLD_SECS,
                        offered: true,
                    },
                );
            }
        }
        self.reply(message, MessageType::Offer, address, Destination::Broadcast)
    }

    fn request(&mut self, now: u64, message: &Message, mac: Mac, address: Ipv4Addr) -> Outcome {
        if address.is_unspecified() {
            return Outcome::Refused(Refusal::Malformed);
        }
        let refusal = match self.leases.get(&address) {
            Some(l) if l.mac != mac => Some(Refusal::AddressTaken),
            _ if !self.allowed(address, &mac, now) => Some(Refusal::AddressNotOffered),
            _ => None,
        };
        if let Some(refusal) = refusal {
            *self.refusals.entry(refusal).or_default() += 1;
            // The client must start over; nothing of the other client's lease changes.
            return match self.nak(message) {
                Outcome::Reply(reply) => Outcome::Reply(reply),
                other => other,
            };
        }
        // One lease per client: a move to another address frees the old one.
        self.leases.retain(|a, l| !(l.mac == mac && *a != address));
        self.leases.insert(
            address,
            Lease {
                mac,
                expires: now + u64::from(self.config.lease_secs),
                offered: false,
            },
        );
        self.changed = true;
        let to = if message.ciaddr().is_unspecified() {
            Destination::Broadcast
        } else {
            Destination::Unicast(message.ciaddr())
        };
        self.reply(message, MessageType::Ack, address, to)
    }

    fn nak(&self, request: &Message) -> Outcome {
        let mut reply = self.base_reply(request, Ipv4Addr::UNSPECIFIED);
        reply
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        reply
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.config.address));
        self.encode(reply, MessageType::Nak, Destination::Broadcast, None)
    }

    fn base_reply(&self, request: &Message, yiaddr: Ipv4Addr) -> Message {
        let mut reply = Message::new_with_id(
            request.xid(),
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &request.chaddr()[..6],
        );
        reply.set_opcode(Opcode::BootReply);
        reply.set_flags(request.flags());
        reply
    }

    /// An OFFER or ACK giving `address` (or, for `kind` INFORM, an ACK with the settings only).
    fn reply(
        &self,
        request: &Message,
        kind: MessageType,
        address: Ipv4Addr,
        to: Destination,
    ) -> Outcome {
        let inform = kind == MessageType::Inform;
        let mut reply = self.base_reply(
            request,
            if inform {
                Ipv4Addr::UNSPECIFIED
            } else {
                address
            },
        );
        if inform {
            reply.set_ciaddr(address);
        }
        let kind = if inform { MessageType::Ack } else { kind };
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.config.address));
        if !inform {
            let lease = self.config.lease_secs;
            opts.insert(DhcpOption::AddressLeaseTime(lease));
            opts.insert(DhcpOption::Renewal(lease / 2));
            opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
        opts.insert(DhcpOption::SubnetMask(self.config.mask()));
        opts.insert(DhcpOption::Router(vec![self.config.address]));
        if self.config.dns {
            opts.insert(DhcpOption::DomainNameServer(vec![self.config.address]));
        }
        self.encode(reply, kind, to, (!inform).then_some(address))
    }

    fn encode(
        &self,
        reply: Message,
        kind: MessageType,
        to: Destination,
        address: Option<Ipv4Addr>,
    ) -> Outcome {
        match reply.to_vec() {
            Ok(bytes) => Outcome::Reply(Reply {
                kind,
                to,
                bytes,
                address,
            }),
            // Only our own options go in; they always encode.
            Err(_) => Outcome::Refused(Refusal::Malformed),
        }
    }
}

/// The leases file's content: bound leases by address.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LeaseFile {
    pub leases: Vec<SavedLease>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedLease {
    pub address: Ipv4Addr,
    pub mac: String,
    pub expires: u64,
}

impl LeaseFile {
    pub fn from_leases(leases: &[(Ipv4Addr, Lease)]) -> Self {
        Self {
            leases: leases
                .iter()
                .map(|(address, l)| SavedLease {
                    address: *address,
                    mac: format_mac(&l.mac),
                    expires: l.expires,
                })
                .collect(),
        }
    }

    pub fn into_leases(self) -> Vec<(Ipv4Addr, Lease)> {
        self.leases
            .into_iter()
            .filter_map(|s| {
                parse_mac(&s.mac).map(|mac| {
                    (
                        s.address,
                        Lease {
                            mac,
                            expires: s.expires,
                            offered: false,
                        },
                    )
                })
            })
            .collect()
    }
}

pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
#[path = "dhcp_server_tests.rs"]
mod tests;
