//! The sans-IO DHCP client of one uplink (RFC 2131).
//!
//! Design: [`Client::handle`] takes `now`, one [`Input`] (start, a received datagram, or a tick at
//! the deadline it asked for) and a random source, and returns the [`Action`]s its driver must
//! carry out — datagrams to send, a lease gained or changed, a lease lost. It never reads a clock,
//! a socket or a file, so hours of leases run in microseconds in the tests below. The state is an
//! enum whose variants carry what that state needs (the transaction id, the retransmission
//! schedule, the lease), matched exhaustively:
//!
//! ```text
//!            ┌────────────── NAK / no ACK ───────────────┐
//!            ▼                                           │
//!  INIT ─DISCOVER→ SELECTING ─OFFER→ REQUESTING ─ACK→ BOUND ─T1→ RENEWING ─T2→ REBINDING
//!   ▲  ▲                                              ▲  ▲  ACK   │  (unicast)  │ (broadcast)
//!   │  └─NAK / no answer── INIT-REBOOT (remembered) ──┘  └────────┴─────ACK─────┘
//!   └──────────────────── lease expired / NAK ─────────────────────────────────────┘
//! ```
//!
//! Retransmissions in INIT-REBOOT, SELECTING and REQUESTING follow RFC 2131 §4.1: 4 s, 8 s, 16 s,
//! 32 s, then 64 s, each randomised by ±1 s so that uplinks (and boxes) restarted together do not
//! stay in step. In RENEWING and REBINDING the client waits half the time left until T2 (resp.
//! expiry), at least 60 s (§4.4.5), but never past that next phase's deadline.
//!
//! Every reply is checked before it can change anything: a BOOTREPLY, our transaction id, our
//! hardware address. A reply that fails is counted ([`Counters`]) and ignored, so an offer meant
//! for another client on a shared cable segment, or a stale reply of an earlier transaction, never
//! becomes our address.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use rand::Rng;

/// The first retransmission delay of RFC 2131 §4.1.
pub const FIRST_RETRANSMIT: Duration = Duration::from_secs(4);
/// Retransmission delays double up to this (§4.1).
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(64);
/// Each retransmission delay is moved by a uniform random amount within ± this (§4.1).
pub const RETRANSMIT_JITTER: Duration = Duration::from_secs(1);
/// REQUESTs sent in REQUESTING before the client gives up on that offer and starts again.
pub const REQUEST_ATTEMPTS: u32 = 4;
/// REQUESTs sent in INIT-REBOOT before the remembered address is given up and the client
/// discovers again (a server that does not know the address stays silent, RFC 2131 §4.3.2).
pub const REBOOT_ATTEMPTS: u32 = 2;
/// The shortest wait between two REQUESTs while renewing or rebinding (§4.4.5).
pub const MIN_RENEW_RETRANSMIT: Duration = Duration::from_secs(60);
/// Used when the server gives no lease time (option 51 is required in an ACK, but be lenient).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

/// What a server gave: the address and how to use it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    /// From the subnet mask option (24 when the server sent none).
    pub prefix_len: u8,
    /// The first router option, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The DNS servers option, in the server's order.
    pub resolvers: Vec<Ipv4Addr>,
    /// The server identifier option: where renewals go.
    pub server: Ipv4Addr,
    pub lease_time: Duration,
    /// T1: renew from this long after the ACK.
    pub renew_after: Duration,
    /// T2: rebind from this long after the ACK.
    pub rebind_after: Duration,
}

impl Lease {
    /// One line for `status`: address, gateway, resolvers, server and lease time.
    pub fn describe(&self) -> String {
        let gateway = self
            .gateway
            .map_or_else(|| "no gateway".to_owned(), |g| format!("gateway {g}"));
        let resolvers = if self.resolvers.is_empty() {
            "no DNS".to_owned()
        } else {
            let list: Vec<String> = self.resolvers.iter().map(ToString::to_string).collect();
            format!("DNS {}", list.join(", "))
        };
        format!(
            "{}/{}, {gateway}, {resolvers} (DHCP from {}, {} s lease)",
            self.address,
            self.prefix_len,
            self.server,
            self.lease_time.as_secs()
        )
    }

    /// Same address, prefix, gateway and resolvers: a renewal that changed nothing the dataplane
    /// or the DNS forwarder uses.
    pub fn same_configuration(&self, other: &Lease) -> bool {
        self.address == other.address
            && self.prefix_len == other.prefix_len
            && self.gateway == other.gateway
            && self.resolvers == other.resolvers
    }
}

/// What an OFFER proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The server identifier option of the offer.
    pub server: Ipv4Addr,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub resolvers: Vec<Ipv4Addr>,
}

/// Replies ignored, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Not a DHCP message (decoding failed), no message type, or an OFFER/ACK without the
    /// options it needs.
    pub malformed: u64,
    /// A reply to another transaction (xid) or another client (chaddr).
    pub foreign: u64,
    /// A well-formed reply that the current state does not expect (an OFFER while bound, an
    /// ACK from another server while requesting).
    pub unexpected: u64,
    pub naks: u64,
    pub retransmissions: u64,
}

/// Where a datagram goes: the local broadcast address, or one server (RENEWING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Broadcast,
    Unicast(Ipv4Addr),
}

#[derive(Debug)]
pub enum Input<'a> {
    /// Begin: INIT-REBOOT with the remembered lease given to [`Client::new`], else INIT.
    Start,
    /// A datagram received on the client port of the uplink.
    Datagram(&'a [u8]),
    /// The deadline returned by [`Client::next_deadline`] has passed.
    Tick,
    /// The interface regained carrier: the cable may now lead to another network (RFC 2131
    /// §3.7), so a held lease is verified at once (INIT-REBOOT), and a pending transaction is
    /// sent again now instead of after its backed-off delay.
    LinkUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        to: Destination,
        packet: Vec<u8>,
    },
    /// A lease was gained or extended. `changed` is false for a renewal that kept the address,
    /// prefix, gateway and resolvers (nothing to reconfigure, only the times moved).
    Bound {
        lease: Lease,
        changed: bool,
    },
    /// The lease ended (expired, or the server said NAK): the address must leave the interface.
    Lost,
}

/// The retransmission schedule of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transaction {
    xid: u32,
    /// When the transaction's first message was sent (the `secs` field counts from it).
    started: Instant,
    /// Messages sent so far.
    sent: u32,
    /// When to send again (or give up).
    next: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing yet (before [`Input::Start`]), or waiting `until` before discovering again.
    Init {
        until: Option<Instant>,
    },
    /// Asking to keep `address`: remembered from an earlier run, or `held` — the lease in use
    /// when the link came back, kept if no server answers and it has not expired (§3.7).
    InitReboot {
        tx: Transaction,
        address: Ipv4Addr,
        held: Option<(Lease, Instant)>,
    },
    Selecting {
        tx: Transaction,
    },
    Requesting {
        tx: Transaction,
        offer: Offer,
    },
    Bound {
        lease: Lease,
        since: Instant,
    },
    Renewing {
        lease: Lease,
        since: Instant,
        tx: Transaction,
    },
    Rebinding {
        lease: Lease,
        since: Instant,
        tx: Transaction,
    },
}

/// The DHCP client of one interface.
#[derive(Debug)]
pub struct Client {
    mac: [u8; 6],
    state: State,
    remembered: Option<Ipv4Addr>,
    counters: Counters,
}

/// Delay before retransmission `sent` (1 = after the first message): 4 s doubling to 64 s, ±1 s.
pub fn retransmit_delay(sent: u32, rng: &mut impl Rng) -> Duration {
    let base = FIRST_RETRANSMIT
        .saturating_mul(1u32 << sent.saturating_sub(1).min(4))
        .min(MAX_RETRANSMIT);
    let jitter_ms = RETRANSMIT_JITTER.as_millis() as i64;
    let shift = rng.gen_range(-jitter_ms..=jitter_ms);
    if shift < 0 {
        base - Duration::from_millis(shift.unsigned_abs())
    } else {
        base + Duration::from_millis(shift as u64)
    }
}

/// Half the time left until `until`, at least [`MIN_RENEW_RETRANSMIT`], never past `until`.
fn renew_retransmit(now: Instant, until: Instant) -> Instant {
    let left = until.saturating_duration_since(now);
    (now + (left / 2).max(MIN_RENEW_RETRANSMIT)).min(until)
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// The client identifier option: hardware type 1 (Ethernet) and the MAC (RFC 2132 §9.14).
fn client_id(mac: &[u8; 6]) -> Vec<u8> {
    let mut id = vec![1];
    id.extend_from_slice(mac);
    id
}

/// A BOOTREQUEST of `kind` for our MAC. `broadcast` sets the BROADCAST flag, which asks servers
/// to broadcast their reply: the driver's socket cannot receive a unicast to an address the
/// interface does not have yet.
fn request_message(
    mac: &[u8; 6],
    xid: u32,
    secs: u16,
    kind: MessageType,
    broadcast: bool,
) -> Message {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_secs(secs)
        .set_chaddr(mac);
    if broadcast {
        msg.set_flags(v4::Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(client_id(mac)));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    msg
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(300);
    // Encoding into a Vec only fails for option values too long for their length byte, which
    // none of ours are.
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("a DHCP request of fixed small options encodes");
    buf
}

/// One DISCOVER of transaction `xid` for `mac` (also what [`super::probe`] sends).
pub fn discover_packet(mac: &[u8; 6], xid: u32, secs: u16) -> Vec<u8> {
    encode(&request_message(
        mac,
        xid,
        secs,
        MessageType::Discover,
        true,
    ))
}

/// Why a datagram is not a reply for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Foreign,
}

/// Decodes a reply and checks it is for transaction `xid` of `mac`.
pub fn parse_reply(
    datagram: &[u8],
    mac: &[u8; 6],
    xid: u32,
) -> Result<(MessageType, Message), Rejected> {
    let msg = Message::decode(&mut Decoder::new(datagram)).map_err(|_| Rejected::Malformed)?;
    if msg.opcode() != Opcode::BootReply {
        return Err(Rejected::Malformed);
    }
    if msg.xid() != xid || msg.chaddr().get(..6) != Some(&mac[..]) {
        return Err(Rejected::Foreign);
    }
    let kind = msg.opts().msg_type().ok_or(Rejected::Malformed)?;
    Ok((kind, msg))
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The offer a reply carries: `None` when it names no server or no usable address.
pub fn offer_of(msg: &Message) -> Option<Offer> {
    let address = msg.yiaddr();
    if address.is_unspecified() || address.is_broadcast() {
        return None;
    }
    let opts = msg.opts();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask),
        _ => 24,
    };
    let gateway = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let resolvers = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
        _ => Vec::new(),
    };
    Some(Offer {
        server: server_id(msg)?,
        address,
        prefix_len,
        gateway,
        resolvers,
    })
}

/// The lease an ACK grants. T1 and T2 default to 1/2 and 7/8 of the lease (§4.4.5); values a
/// server got wrong (T1 after T2, T2 after the end) are replaced by those defaults.
fn lease_of(msg: &Message, fallback_server: Option<Ipv4Addr>) -> Option<Lease> {
    let mut offer = offer_of(msg).or_else(|| {
        let mut patched = msg.clone();
        patched
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(fallback_server?));
        offer_of(&patched)
    })?;
    let opts = msg.opts();
    let secs = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
        ) => Some(Duration::from_secs(u64::from(*s))),
        _ => None,
    };
    let lease_time = secs(OptionCode::AddressLeaseTime).unwrap_or(DEFAULT_LEASE);
    let mut renew_after = secs(OptionCode::Renewal).unwrap_or(lease_time / 2);
    let mut rebind_after = secs(OptionCode::Rebinding).unwrap_or(lease_time * 7 / 8);
    if rebind_after > lease_time || rebind_after.is_zero() {
        rebind_after = lease_time * 7 / 8;
    }
    if renew_after > rebind_after || renew_after.is_zero() {
        renew_after = (lease_time / 2).min(rebind_after);
    }
    offer.resolvers.retain(|r| !r.is_unspecified());
    Some(Lease {
        address: offer.address,
        prefix_len: offer.prefix_len,
        gateway: offer.gateway,
        resolvers: offer.resolvers,
        server: offer.server,
        lease_time,
        renew_after,
        rebind_after,
    })
}

impl Client {
    /// A client for the interface with hardware address `mac`. `remembered` is the address of
    /// the last lease (kept in the state directory): the client first asks to keep it
    /// (INIT-REBOOT), which skips the OFFER round trip after an agent restart.
    pub fn new(mac: [u8; 6], remembered: Option<Ipv4Addr>) -> Self {
        Self {
            mac,
            state: State::Init { until: None },
            remembered,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The lease in use (BOUND, RENEWING, REBINDING, and INIT-REBOOT verifying it after the
    /// link came back).
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. }
            | State::InitReboot {
                held: Some((lease, _)),
                ..
            } => Some(lease),
            _ => None,
        }
    }

    /// The RFC 2131 name of the current state, for logs and tests.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init { .. } => "INIT",
            State::InitReboot { .. } => "INIT-REBOOT",
            State::Selecting { .. } => "SELECTING",
            State::Requesting { .. } => "REQUESTING",
            State::Bound { .. } => "BOUND",
            State::Renewing { .. } => "RENEWING",
            State::Rebinding { .. } => "REBINDING",
        }
    }

    /// When the client next needs an [`Input::Tick`]; `None` before [`Input::Start`].
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Init { until } => *until,
            State::InitReboot { tx, .. }
            | State::Selecting { tx }
            | State::Requesting { tx, .. } => Some(tx.next),
            State::Bound { lease, since } => Some(*since + lease.renew_after),
            State::Renewing { tx, .. } | State::Rebinding { tx, .. } => Some(tx.next),
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input<'_>, rng: &mut impl Rng) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Start => match self.remembered.take() {
                Some(address) => self.reboot(now, address, rng, &mut actions),
                None => self.discover(now, rng, &mut actions),
            },
            Input::Tick => self.tick(now, rng, &mut actions),
            Input::LinkUp => self.link_up(now, rng, &mut actions),
            Input::Datagram(bytes) => self.receive(now, bytes, rng, &mut actions),
        }
        actions
    }

    fn new_tx(&self, now: Instant, rng: &mut impl Rng) -> Transaction {
        Transaction {
            xid: rng.r#gen(),
            started: now,
            sent: 0,
            next: now,
        }
    }

    fn secs(tx: &Transaction, now: Instant) -> u16 {
        now.saturating_duration_since(tx.started)
            .as_secs()
            .min(u64::from(u16::MAX)) as u16
    }

    /// Counts a message sent in `tx` and schedules the next with §4.1 backoff.
    fn sent(tx: &mut Transaction, now: Instant, rng: &mut impl Rng, counters: &mut Counters) {
        if tx.sent > 0 {
            counters.retransmissions += 1;
        }
        tx.sent += 1;
        tx.next = now + retransmit_delay(tx.sent, rng);
    }

    fn discover(&mut self, now: Instant, rng: &mut impl Rng, actions: &mut Vec<Action>) {
        let mut tx = self.new_tx(now, rng);
        actions.push(Action::Send {
            to: Destination::Broadcast,
            packet: discover_packet(&self.mac, tx.xid, 0),
        });
        Self::sent(&mut tx, now, rng, &mut self.counters);
        self.state = State::Selecting { tx };
    }

    fn reboot_packet(&self, tx: &Transaction, now: Instant, address: Ipv4Addr) -> Vec<u8> {
        let mut msg = request_message(
            &self.mac,
            tx.xid,
            Self::secs(tx, now),
            MessageType::Request,
            true,
        );
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        encode(&msg)
    }

    fn reboot(
        &mut self,
        now: Instant,
        address: Ipv4Addr,
        rng: &mut impl Rng,
        actions: &mut Vec<Action>,
    ) {
        let mut tx = self.new_tx(now, rng);
        actions.push(Action::Send {
            to: Destination::Broadcast,
            packet: self.reboot_packet(&tx, now, address),
        });
        Self::sent(&mut tx, now, rng, &mut self.counters);
        self.state = State::InitReboot {
            tx,
            address,
            held: None,
        };
    }

    fn request_packet(&self, tx: &Transaction, now: Instant, offer: &Offer) -> Vec<u8> {
        let mut msg = request_message(
            &self.mac,
            tx.xid,
            Self::secs(tx, now),
            MessageType::Request,
            true,
        );
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.address));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(offer.server));
        encode(&msg)
    }

    /// The REQUEST of RENEWING (unicast, no broadcast flag) or REBINDING (broadcast): `ciaddr`
    /// carries the address, with neither server identifier nor requested address (§4.3.2).
    fn extend_packet(
        &self,
        tx: &Transaction,
        now: Instant,
        lease: &Lease,
        broadcast: bool,
    ) -> Vec<u8> {
        let mut msg = request_message(
            &self.mac,
            tx.xid,
            Self::secs(tx, now),
            MessageType::Request,
            broadcast,
        );
        msg.set_ciaddr(lease.address);
        encode(&msg)
    }

    fn tick(&mut self, now: Instant, rng: &mut impl Rng, actions: &mut Vec<Action>) {
        match self.state.clone() {
            State::Init { until } => {
                if until.is_some_and(|t| now >= t) {
                    self.discover(now, rng, actions);
                }
            }
            State::InitReboot {
                mut tx,
                address,
                held,
            } => {
                if now < tx.next {
                    return;
                }
                if tx.sent >= REBOOT_ATTEMPTS {
                    match held {
                        // No server answered: the lease stays in use until its times say
                        // otherwise (§3.7).
                        Some((lease, since)) if now < since + lease.lease_time => {
                            self.state = State::Bound { lease, since };
                            self.tick(now, rng, actions);
                        }
                        Some(_) => {
                            actions.push(Action::Lost);
                            self.discover(now, rng, actions);
                        }
                        None => self.discover(now, rng, actions),
                    }
                    return;
                }
                actions.push(Action::Send {
                    to: Destination::Broadcast,
                    packet: self.reboot_packet(&tx, now, address),
                });
                Self::sent(&mut tx, now, rng, &mut self.counters);
                self.state = State::InitReboot { tx, address, held };
            }
            State::Selecting { mut tx } => {
                if now < tx.next {
                    return;
                }
                actions.push(Action::Send {
                    to: Destination::Broadcast,
                    packet: discover_packet(&self.mac, tx.xid, Self::secs(&tx, now)),
                });
                Self::sent(&mut tx, now, rng, &mut self.counters);
                self.state = State::Selecting { tx };
            }
            State::Requesting { mut tx, offer } => {
                if now < tx.next {
                    return;
                }
                if tx.sent >= REQUEST_ATTEMPTS {
                    self.discover(now, rng, actions);
                    return;
                }
                actions.push(Action::Send {
                    to: Destination::Broadcast,
                    packet: self.request_packet(&tx, now, &offer),
                });
                Self::sent(&mut tx, now, rng, &mut self.counters);
                self.state = State::Requesting { tx, offer };
            }
            State::Bound { lease, since } => {
                if now < since + lease.renew_after {
                    return;
                }
                let mut tx = self.new_tx(now, rng);
                actions.push(Action::Send {
                    to: Destination::Unicast(lease.server),
                    packet: self.extend_packet(&tx, now, &lease, false),
                });
                tx.sent = 1;
                tx.next = renew_retransmit(now, since + lease.rebind_after);
                self.state = State::Renewing { lease, since, tx };
                // T2 may coincide with T1 (a server that sets both alike).
                self.tick(now, rng, actions);
            }
            State::Renewing {
                lease,
                since,
                mut tx,
            } => {
                if now < tx.next {
                    return;
                }
                let rebind_at = since + lease.rebind_after;
                if now >= rebind_at {
                    let mut tx = self.new_tx(now, rng);
                    actions.push(Action::Send {
                        to: Destination::Broadcast,
                        packet: self.extend_packet(&tx, now, &lease, true),
                    });
                    tx.sent = 1;
                    tx.next = renew_retransmit(now, since + lease.lease_time);
                    self.state = State::Rebinding { lease, since, tx };
                    self.tick(now, rng, actions);
                    return;
                }
                actions.push(Action::Send {
                    to: Destination::Unicast(lease.server),
                    packet: self.extend_packet(&tx, now, &lease, false),
                });
                self.counters.retransmissions += 1;
                tx.sent += 1;
                tx.next = renew_retransmit(now, rebind_at);
                self.state = State::Renewing { lease, since, tx };
            }
            State::Rebinding {
                lease,
                since,
                mut tx,
            } => {
                if now < tx.next {
                    return;
                }
                let expires = since + lease.lease_time;
                if now >= expires {
                    actions.push(Action::Lost);
                    self.discover(now, rng, actions);
                    return;
                }
                actions.push(Action::Send {
                    to: Destination::Broadcast,
                    packet: self.extend_packet(&tx, now, &lease, true),
                });
                self.counters.retransmissions += 1;
                tx.sent += 1;
                tx.next = renew_retransmit(now, expires);
                self.state = State::Rebinding { lease, since, tx };
            }
        }
    }

    fn link_up(&mut self, now: Instant, rng: &mut impl Rng, actions: &mut Vec<Action>) {
        let held = match self.state.clone() {
            // Not started yet: Start decides.
            State::Init { until: None } => return,
            State::Init { until: Some(_) } | State::Selecting { .. } | State::Requesting { .. } => {
                self.discover(now, rng, actions);
                return;
            }
            State::InitReboot { held, address, .. } => {
                self.reboot(now, address, rng, actions);
                held
            }
            State::Bound { lease, since }
            | State::Renewing { lease, since, .. }
            | State::Rebinding { lease, since, .. } => {
                self.reboot(now, lease.address, rng, actions);
                Some((lease, since))
            }
        };
        if let State::InitReboot { held: slot, .. } = &mut self.state {
            *slot = held;
        }
    }

    fn current_xid(&self) -> Option<u32> {
        match &self.state {
            State::Init { .. } | State::Bound { .. } => None,
            State::InitReboot { tx, .. }
            | State::Selecting { tx }
            | State::Requesting { tx, .. }
            | State::Renewing { tx, .. }
            | State::Rebinding { tx, .. } => Some(tx.xid),
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        bytes: &[u8],
        rng: &mut impl Rng,
        actions: &mut Vec<Action>,
    ) {
        let Some(xid) = self.current_xid() else {
            // No transaction open: any reply is stale or someone else's. Tell which.
            match Message::decode(&mut Decoder::new(bytes)) {
                Ok(_) => self.counters.unexpected += 1,
                Err(_) => self.counters.malformed += 1,
            }
            return;
        };
        let (kind, msg) = match parse_reply(bytes, &self.mac, xid) {
            Ok(reply) => reply,
            Err(Rejected::Malformed) => {
                self.counters.malformed += 1;
                return;
            }
            Err(Rejected::Foreign) => {
                self.counters.foreign += 1;
                return;
            }
        };
        match (self.state.clone(), kind) {
            (State::Selecting { tx }, MessageType::Offer) => {
                let Some(offer) = offer_of(&msg) else {
                    self.counters.malformed += 1;
                    return;
                };
                // The first valid offer is taken (§4.4.1 allows any choice); a new transaction
                // schedule, same xid.
                let mut tx = Transaction {
                    sent: 0,
                    next: now,
                    ..tx
                };
                actions.push(Action::Send {
                    to: Destination::Broadcast,
                    packet: self.request_packet(&tx, now, &offer),
                });
                Self::sent(&mut tx, now, rng, &mut self.counters);
                self.state = State::Requesting { tx, offer };
            }
            (State::Requesting { offer, .. }, MessageType::Ack) => {
                if server_id(&msg).is_some_and(|s| s != offer.server) {
                    self.counters.unexpected += 1;
                    return;
                }
                self.bind(now, &msg, Some(offer.server), None, actions);
            }
            (State::InitReboot { held, .. }, MessageType::Ack) => {
                self.bind(now, &msg, None, held.map(|(lease, _)| lease), actions);
            }
            (State::Renewing { lease, .. } | State::Rebinding { lease, .. }, MessageType::Ack) => {
                self.bind(now, &msg, Some(lease.server), Some(lease), actions);
            }
            (State::Requesting { offer, .. }, MessageType::Nak) => {
                if server_id(&msg).is_some_and(|s| s != offer.server) {
                    self.counters.unexpected += 1;
                    return;
                }
                self.counters.naks += 1;
                self.discover(now, rng, actions);
            }
            (State::InitReboot { held, .. }, MessageType::Nak) => {
                self.counters.naks += 1;
                if held.is_some() {
                    actions.push(Action::Lost);
                }
                self.discover(now, rng, actions);
            }
            (State::Renewing { .. } | State::Rebinding { .. }, MessageType::Nak) => {
                self.counters.naks += 1;
                actions.push(Action::Lost);
                self.discover(now, rng, actions);
            }
            _ => self.counters.unexpected += 1,
        }
    }

    fn bind(
        &mut self,
        now: Instant,
        msg: &Message,
        server: Option<Ipv4Addr>,
        previous: Option<Lease>,
        actions: &mut Vec<Action>,
    ) {
        let Some(lease) = lease_of(msg, server) else {
            self.counters.malformed += 1;
            return;
        };
        let changed = previous.is_none_or(|p| !p.same_configuration(&lease));
        actions.push(Action::Bound {
            lease: lease.clone(),
            changed,
        });
        self.state = State::Bound { lease, since: now };
    }
}

#[cfg(test)]
mod tests;
