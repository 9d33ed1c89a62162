//! The relay: where every appliance's WireGuard tunnel ends.
//!
//! [`Relay`] is the sans-IO core. It owns one boringtun [`Tunn`] per known appliance and decides
//! everything (who may handshake, which inner source a peer may use, where replies go, which
//! flows are sent twice); the driver ([`driver`]) only moves datagrams between the UDP socket,
//! the TUN device and this core. Time is a parameter (`now`); boringtun keeps its own clock for
//! the WireGuard protocol timers only.
//!
//! - Unknown keys are refused before any state is made for them: a handshake initiation is opened
//!   with the relay's static key ([`parse_handshake_anon`]) and dropped when its key is not in
//!   the peer list.
//! - Handshakes are rate-limited as WireGuard's kernel module does: over a global rate (under
//!   load) or over its source address's cap, an initiator must prove its address with a cookie
//!   (WireGuard's mac2, boringtun's [`RateLimiter`]) before any more work is done, and a proven
//!   source is still capped. A forger cannot prove an address, so cannot use up its budget.
//! - A peer sends only from its own inner address.
//! - Replies go to the endpoint of the peer's latest authenticated packet (endpoint roaming), so
//!   an appliance that moves its outer packets to its backup uplink keeps its session.
//! - Redundant mode: when the same ciphertext arrives from a second endpoint, its flow is marked
//!   redundant for [`REDUNDANT_FOR`], and that flow's packets back to the peer go to every
//!   endpoint heard from within [`ENDPOINT_FRESH`].

pub mod config;
pub mod driver;
pub mod http;

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use ipnet::Ipv4Net;

use crate::keys::{KeyPair, encode_public};
use crate::packet::{Flow, InnerPacket};

/// How long a flow stays redundant after its last duplicate arrived.
pub const REDUNDANT_FOR: Duration = Duration::from_secs(10);
/// Packets of a redundant flow go to every endpoint the peer was heard from within this time.
pub const ENDPOINT_FRESH: Duration = Duration::from_secs(3);
/// Endpoints not heard from for this long are forgotten (the reply endpoint is always kept).
const ENDPOINT_FORGET: Duration = Duration::from_secs(60);
/// At most this many outer endpoints are remembered per peer (an appliance has a few uplinks).
const MAX_ENDPOINTS: usize = 4;
/// At most this many flows per peer are redundant at once.
const MAX_REDUNDANT_FLOWS: usize = 32;
/// The ring of recent data-packet counters per peer: the last this many packets.
const RING: usize = 128;
/// At most this many source addresses are tracked per second for the per-source cap; beyond it
/// only the shared rate limiter (cookies) protects the relay, and no memory grows.
const MAX_TRACKED_SOURCES: usize = 65_536;
/// A WireGuard session is rejected after this long without a new handshake.
const SESSION_LIFETIME: Duration = Duration::from_secs(180);
/// The largest datagram the relay handles (and its working buffer).
pub const MAX_DATAGRAM: usize = 65_535;

/// The handshake limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Handshake initiations per second from one source address; past it the source must show
    /// a cookie, and past it again with cookies its initiations are dropped.
    pub handshakes_per_source_per_sec: u32,
    /// Handshake initiations per second, all sources together, before every initiator must
    /// show a cookie (prove its address) to be heard.
    pub handshakes_before_cookies_per_sec: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshakes_per_source_per_sec: 20,
            handshakes_before_cookies_per_sec: 1_000,
        }
    }
}

/// One appliance the relay serves: its WireGuard public key and the only inner source address
/// it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub public_key: PublicKey,
    pub inner_address: Ipv4Addr,
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram from the relay's UDP socket to `to`.
    Network { to: SocketAddr, datagram: Vec<u8> },
    /// Write this inner packet to the TUN device.
    Tun(Vec<u8>),
}

/// Everything the relay counts; every refusal has its own counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Handshake initiations from known peers answered with a response.
    pub handshakes_completed: u64,
    /// Handshake initiations whose key is not in the peer list.
    pub unknown_key: u64,
    /// Handshake initiations over the per-source cap.
    pub rate_limited_source: u64,
    /// Handshake initiations answered with a cookie because the relay is under load.
    pub rate_limited_cookie: u64,
    /// Handshake messages whose mac1 is wrong (not for this relay).
    pub bad_mac: u64,
    /// Handshake messages that do not open or are replays.
    pub bad_handshake: u64,
    /// Datagrams that are not WireGuard messages.
    pub invalid_datagram: u64,
    /// Messages for a session index the relay does not have.
    pub unknown_index: u64,
    /// Decrypted packets whose source is not the peer's inner address.
    pub spoofed_source: u64,
    /// Data packets that fail to decrypt.
    pub decrypt_failed: u64,
    /// A data packet seen again from the endpoint it first came from (a replay).
    pub replays: u64,
    /// The same data packet arriving from a second endpoint (redundant mode).
    pub duplicates_received: u64,
    /// Extra copies of packets of redundant flows sent to a peer's other endpoints.
    pub duplicates_sent: u64,
    /// Inner packets from the TUN for an address no peer has.
    pub no_peer: u64,
    /// Inner packets for a peer that has never been heard from.
    pub no_endpoint: u64,
    /// Inner packets from the TUN that are not IPv4.
    pub invalid_inner: u64,
    /// Packets from a peer to another peer's inner address: appliances never reach each other
    /// through the relay.
    pub peer_to_peer: u64,
    /// Peer-list entries refused (bad or duplicate key or inner address).
    pub peers_refused: u64,
    /// Inner bytes received from peers and written to the TUN.
    pub bytes_from_peers: u64,
    /// Inner bytes read from the TUN and sent to peers.
    pub bytes_to_peers: u64,
}

/// What changed when a new peer list was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerListChange {
    pub added: usize,
    pub removed: usize,
    pub readdressed: usize,
    /// Each refused entry, in words (no secrets: public keys only).
    pub refused: Vec<String>,
}

/// A snapshot for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub peers: usize,
    /// Peers with a WireGuard session younger than its lifetime.
    pub sessions: usize,
    pub counters: Counters,
}

#[derive(Debug, Clone, Copy)]
struct Endpoint {
    addr: SocketAddr,
    heard: Instant,
}

#[derive(Debug, Clone, Copy)]
struct RingSlot {
    counter: u64,
    /// The first 8 bytes of the packet's authentication tag: the same counter with the same tag
    /// is the same ciphertext.
    tag: u64,
    flow: Flow,
    /// A fingerprint of the endpoint the packet first came from.
    from: u64,
}

struct Peer {
    public_key: PublicKey,
    inner: Ipv4Addr,
    tunn: Box<Tunn>,
    /// Where replies go: the endpoint of the latest authenticated packet.
    reply: Option<SocketAddr>,
    endpoints: Vec<Endpoint>,
    ring: Option<Box<[Option<RingSlot>; RING]>>,
    redundant: Vec<(Flow, Instant)>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("public_key", &encode_public(&self.public_key))
            .field("inner", &self.inner)
            .field("reply", &self.reply)
            .finish_non_exhaustive()
    }
}

impl Peer {
    fn heard(&mut self, addr: SocketAddr, now: Instant, authenticated: bool) {
        if authenticated {
            self.reply = Some(addr);
        }
        if let Some(e) = self.endpoints.iter_mut().find(|e| e.addr == addr) {
            e.heard = now;
            return;
        }
        if self.endpoints.len() >= MAX_ENDPOINTS {
            // Forget the longest-silent endpoint that is not the reply path.
            let reply = self.reply;
            if let Some(pos) = self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| Some(e.addr) != reply)
                .min_by_key(|(_, e)| e.heard)
                .map(|(i, _)| i)
            {
                self.endpoints.swap_remove(pos);
            }
        }
        self.endpoints.push(Endpoint { addr, heard: now });
    }

    fn is_redundant(&self, flow: Flow, now: Instant) -> bool {
        self.redundant
            .iter()
            .any(|(f, until)| *f == flow && *until > now)
    }

    fn mark_redundant(&mut self, flow: Flow, now: Instant) {
        let until = now + REDUNDANT_FOR;
        if let Some(entry) = self.redundant.iter_mut().find(|(f, _)| *f == flow) {
            entry.1 = until;
            return;
        }
        if self.redundant.len() >= MAX_REDUNDANT_FLOWS
            && let Some(pos) = self
                .redundant
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(i, _)| i)
        {
            self.redundant.swap_remove(pos);
        }
        self.redundant.push((flow, until));
    }

    fn has_session(&self) -> bool {
        self.tunn
            .stats()
            .0
            .is_some_and(|age| age < SESSION_LIFETIME)
    }
}

/// The relay's sans-IO core. See the module documentation.
pub struct Relay {
    key: KeyPair,
    public: PublicKey,
    inner_network: Ipv4Net,
    limits: Limits,
    /// Demands a valid cookie (mac2) of every message it checks: used for initiations while
    /// the relay is under load or their source is over its cap.
    cookies: Arc<RateLimiter>,
    /// Checks mac1 only (never under load): initiations that need no cookie, and every peer's
    /// Tunn (the relay already rate-limited the message).
    pass: Arc<RateLimiter>,
    /// Handshake initiations in the current one-second window.
    window_handshakes: u64,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    by_inner: HashMap<Ipv4Addr, u32>,
    next_index: u32,
    /// Per source address in the current window: initiations seen, and those that proved the
    /// address with a cookie.
    per_source: HashMap<IpAddr, (u32, u32)>,
    window_since: Option<Instant>,
    counters: Counters,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("public", &encode_public(&self.public))
            .field("inner_network", &self.inner_network)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// Session indexes are 24 bits (boringtun keeps the low 8 bits for its session ring).
const INDEX_LIMIT: u32 = 1 << 24;

impl Relay {
    pub fn new(key: KeyPair, inner_network: Ipv4Net, limits: Limits) -> Relay {
        let public = key.public();
        Relay {
            cookies: Arc::new(RateLimiter::new(&public, 0)),
            window_handshakes: 0,
            pass: Arc::new(RateLimiter::new(&public, u64::MAX)),
            key,
            public,
            inner_network: inner_network.trunc(),
            limits,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            by_inner: HashMap::new(),
            // A random start: after a restart, the old sessions' indexes are (almost always)
            // unknown rather than someone else's.
            next_index: rand::Rng::gen_range(&mut rand::thread_rng(), 1..INDEX_LIMIT),
            per_source: HashMap::new(),
            window_since: None,
            counters: Counters::default(),
            buf: vec![0u8; MAX_DATAGRAM + 64],
        }
    }

    /// The relay's own inner address: the first host of its inner network.
    pub fn own_address(&self) -> Ipv4Addr {
        own_address(self.inner_network)
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn stats(&self) -> Stats {
        Stats {
            peers: self.peers.len(),
            sessions: self.peers.values().filter(|p| p.has_session()).count(),
            counters: self.counters,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Applies a new peer list: added peers are accepted from now on, removed peers' sessions
    /// are dropped at once, a changed inner address is the only one the peer may use from now
    /// on. Entries with an inner address outside the inner network (or the relay's own, or the
    /// network or broadcast address), or a key or address already listed, are refused.
    pub fn set_peers(&mut self, entries: &[PeerEntry]) -> PeerListChange {
        let mut change = PeerListChange::default();
        let mut wanted: HashMap<[u8; 32], Ipv4Addr> = HashMap::new();
        let mut inner_seen: HashMap<Ipv4Addr, [u8; 32]> = HashMap::new();
        for entry in entries {
            let key = *entry.public_key.as_bytes();
            let who = encode_public(&entry.public_key);
            let address = entry.inner_address;
            let problem = if !self.inner_network.contains(&address) {
                Some(format!(
                    "{address} is outside the inner network {}",
                    self.inner_network
                ))
            } else if address == self.own_address()
                || address == self.inner_network.network()
                || address == self.inner_network.broadcast()
            {
                Some(format!("{address} is reserved"))
            } else if wanted.contains_key(&key) {
                Some("the key is listed twice".to_owned())
            } else if inner_seen.contains_key(&address) {
                Some(format!("{address} is listed twice"))
            } else if key == *self.public.as_bytes() {
                Some("the key is the relay's own".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                self.counters.peers_refused += 1;
                change.refused.push(format!("peer {who}: {problem}"));
                continue;
            }
            wanted.insert(key, address);
            inner_seen.insert(address, key);
        }

        // Removed peers: their Tunn (and so their sessions) goes at once.
        let removed: Vec<[u8; 32]> = self
            .by_key
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .copied()
            .collect();
        for key in removed {
            if let Some(index) = self.by_key.remove(&key)
                && let Some(peer) = self.peers.remove(&index)
            {
                if self.by_inner.get(&peer.inner) == Some(&index) {
                    self.by_inner.remove(&peer.inner);
                }
                change.removed += 1;
            }
        }
        // Readdressed peers: release their old addresses first, so two peers may swap.
        for (key, address) in &wanted {
            if let Some(index) = self.by_key.get(key).copied()
                && let Some(peer) = self.peers.get_mut(&index)
                && peer.inner != *address
            {
                if self.by_inner.get(&peer.inner) == Some(&index) {
                    self.by_inner.remove(&peer.inner);
                }
                peer.inner = *address;
                peer.redundant.clear();
                change.readdressed += 1;
            }
        }
        for (key, address) in wanted {
            let index = match self.by_key.get(&key) {
                Some(index) => *index,
                None => {
                    let index = self.allocate_index();
                    let public_key = PublicKey::from(key);
                    let tunn = Tunn::new(
                        self.key.secret().clone(),
                        public_key,
                        None,
                        None,
                        index,
                        Some(self.pass.clone()),
                    )
                    .expect("a Curve25519 key pair is always valid parameters");
                    self.peers.insert(
                        index,
                        Peer {
                            public_key,
                            inner: address,
                            tunn: Box::new(tunn),
                            reply: None,
                            endpoints: Vec::new(),
                            ring: None,
                            redundant: Vec::new(),
                        },
                    );
                    self.by_key.insert(key, index);
                    change.added += 1;
                    index
                }
            };
            self.by_inner.insert(address, index);
        }
        change
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            let index = self.next_index;
            self.next_index = if index + 1 >= INDEX_LIMIT {
                1
            } else {
                index + 1
            };
            if !self.peers.contains_key(&index) {
                return index;
            }
        }
    }

    /// A datagram arrived on the relay's UDP socket from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Output>,
    ) {
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(packet) => packet,
            Err(_) => {
                self.counters.invalid_datagram += 1;
                return;
            }
        };
        let index = match packet {
            Packet::HandshakeInit(ref init) => {
                self.handshake_init(now, from, datagram, init, out);
                return;
            }
            Packet::HandshakeResponse(ref p) => p.receiver_idx,
            Packet::PacketCookieReply(ref p) => p.receiver_idx,
            Packet::PacketData(ref p) => p.receiver_idx,
        };
        let is_data = matches!(packet, Packet::PacketData(_));
        let Some(peer) = self.peers.get_mut(&(index >> 8)) else {
            self.counters.unknown_index += 1;
            return;
        };
        let counters = &mut self.counters;
        let buf = &mut self.buf;
        if !is_data {
            // A handshake response (to a handshake the relay's timers started) or a cookie.
            match peer.tunn.decapsulate(Some(from.ip()), datagram, buf) {
                TunnResult::WriteToNetwork(reply) => {
                    let reply = reply.to_vec();
                    peer.heard(from, now, true);
                    out.push(Output::Network {
                        to: from,
                        datagram: reply,
                    });
                    flush(peer, buf, out);
                }
                TunnResult::Err(_) => counters.bad_handshake += 1,
                _ => {}
            }
            return;
        }

        let counter = u64::from_le_bytes(datagram[8..16].try_into().expect("16 bytes checked"));
        let tag_at = datagram.len() - 16;
        let tag = u64::from_le_bytes(
            datagram[tag_at..tag_at + 8]
                .try_into()
                .expect("a data packet is at least 32 bytes"),
        );
        let from_print = fingerprint(from);
        match peer.tunn.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::WriteToTunnelV4(inner, source) => {
                peer.heard(from, now, true);
                if let Some(parsed) = InnerPacket::parse(inner) {
                    let ring = peer.ring.get_or_insert_with(|| Box::new([None; RING]));
                    ring[(counter % RING as u64) as usize] = Some(RingSlot {
                        counter,
                        tag,
                        flow: parsed.flow(),
                        from: from_print,
                    });
                }
                let dst = InnerPacket::parse(inner).map(|p| p.dst);
                let own = own_address(self.inner_network);
                if source != peer.inner {
                    counters.spoofed_source += 1;
                    tracing::debug!(peer = %encode_public(&peer.public_key), %source, "spoofed inner source dropped");
                } else if dst.is_some_and(|d| self.inner_network.contains(&d) && d != own) {
                    counters.peer_to_peer += 1;
                } else {
                    counters.bytes_from_peers += inner.len() as u64;
                    out.push(Output::Tun(inner.to_vec()));
                }
                flush(peer, buf, out);
            }
            TunnResult::WriteToTunnelV6(..) => {
                peer.heard(from, now, true);
                counters.spoofed_source += 1;
            }
            TunnResult::Done => {
                // An authenticated keepalive.
                peer.heard(from, now, true);
                flush(peer, buf, out);
            }
            TunnResult::WriteToNetwork(reply) => {
                let reply = reply.to_vec();
                peer.heard(from, now, true);
                out.push(Output::Network {
                    to: from,
                    datagram: reply,
                });
                flush(peer, buf, out);
            }
            TunnResult::Err(WireGuardError::DuplicateCounter) => {
                let slot = peer
                    .ring
                    .as_ref()
                    .and_then(|ring| ring[(counter % RING as u64) as usize])
                    .filter(|slot| slot.counter == counter && slot.tag == tag);
                match slot {
                    Some(slot) if slot.from != from_print => {
                        // The same ciphertext over a second uplink: redundant mode.
                        counters.duplicates_received += 1;
                        peer.mark_redundant(slot.flow, now);
                        peer.heard(from, now, false);
                    }
                    _ => counters.replays += 1,
                }
            }
            TunnResult::Err(_) => counters.decrypt_failed += 1,
        }
    }

    fn handshake_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        init: &boringtun::noise::HandshakeInit,
        out: &mut Vec<Output>,
    ) {
        // 1. Is a cookie needed? Over the global rate (the relay is under load) or over this
        //    source's cap, the initiator must prove its address (mac2, WireGuard's cookie) before
        //    any more work is done. Someone forging an appliance's address cannot prove it, so
        //    cannot use up that appliance's budget: only proven messages count against it.
        self.roll_window(now);
        self.window_handshakes += 1;
        let ip = from.ip();
        let tracked = self.per_source.len() < MAX_TRACKED_SOURCES;
        let seen = match self.per_source.get_mut(&ip) {
            Some(entry) => {
                entry.0 = entry.0.saturating_add(1);
                entry.0
            }
            None if tracked => {
                self.per_source.insert(ip, (1, 0));
                1
            }
            // Too many sources this second to track: treat every new one as over its cap.
            None => u32::MAX,
        };
        let source_over = seen > self.limits.handshakes_per_source_per_sec;
        let under_load = self.window_handshakes > self.limits.handshakes_before_cookies_per_sec;
        let mut reply = [0u8; 64];
        let limiter = if source_over || under_load {
            &self.cookies
        } else {
            &self.pass
        };
        match limiter.verify_packet(Some(ip), datagram, &mut reply) {
            Ok(_) => {}
            Err(TunnResult::WriteToNetwork(cookie)) => {
                if source_over {
                    self.counters.rate_limited_source += 1;
                } else {
                    self.counters.rate_limited_cookie += 1;
                }
                out.push(Output::Network {
                    to: from,
                    datagram: cookie.to_vec(),
                });
                return;
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                self.counters.bad_mac += 1;
                return;
            }
            Err(_) => {
                self.counters.bad_handshake += 1;
                return;
            }
        }
        // 2. A source that proved its address and is still over its cap: dropped.
        if source_over {
            let proven = self
                .per_source
                .get_mut(&ip)
                .map(|entry| {
                    entry.1 = entry.1.saturating_add(1);
                    entry.1
                })
                .unwrap_or(0);
            if proven > self.limits.handshakes_per_source_per_sec {
                self.counters.rate_limited_source += 1;
                return;
            }
        }
        // 3. Whose key: unknown keys are refused before any state is made for them.
        let half = match parse_handshake_anon(self.key.secret(), &self.public, init) {
            Ok(half) => half,
            Err(_) => {
                self.counters.bad_handshake += 1;
                return;
            }
        };
        let Some(index) = self.by_key.get(&half.peer_static_public).copied() else {
            self.counters.unknown_key += 1;
            tracing::debug!(key = %encode_public(&PublicKey::from(half.peer_static_public)), %from, "handshake from an unknown key refused");
            return;
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            self.counters.unknown_key += 1;
            return;
        };
        // 4. The peer's own Tunn answers (and refuses replays of an older initiation).
        match peer.tunn.decapsulate(Some(ip), datagram, &mut self.buf) {
            TunnResult::WriteToNetwork(response) => {
                let response = response.to_vec();
                peer.heard(from, now, true);
                self.counters.handshakes_completed += 1;
                out.push(Output::Network {
                    to: from,
                    datagram: response,
                });
                flush(peer, &mut self.buf, out);
            }
            _ => self.counters.bad_handshake += 1,
        }
    }

    /// An inner packet was read from the TUN device.
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut Vec<Output>) {
        let Some(parsed) = InnerPacket::parse(packet) else {
            self.counters.invalid_inner += 1;
            return;
        };
        let Some(peer) = self
            .by_inner
            .get(&parsed.dst)
            .and_then(|index| self.peers.get_mut(index))
        else {
            self.counters.no_peer += 1;
            return;
        };
        let Some(reply) = peer.reply else {
            self.counters.no_endpoint += 1;
            return;
        };
        match peer.tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(datagram) => {
                let datagram = datagram.to_vec();
                self.counters.bytes_to_peers += packet.len() as u64;
                if peer.is_redundant(parsed.flow().reversed(), now) {
                    for endpoint in &peer.endpoints {
                        if endpoint.addr != reply
                            && now.saturating_duration_since(endpoint.heard) <= ENDPOINT_FRESH
                        {
                            self.counters.duplicates_sent += 1;
                            out.push(Output::Network {
                                to: endpoint.addr,
                                datagram: datagram.clone(),
                            });
                        }
                    }
                }
                out.push(Output::Network {
                    to: reply,
                    datagram,
                });
            }
            TunnResult::Err(e) => {
                tracing::debug!(error = ?e, "encapsulate failed");
            }
            _ => {}
        }
    }

    /// The timer tick (every 100 ms or so): WireGuard's own timers (keepalives, rekeying), the
    /// rate limiters' windows, and forgetting stale endpoints and redundant flows.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.roll_window(now);
        for peer in self.peers.values_mut() {
            if let TunnResult::WriteToNetwork(datagram) = peer.tunn.update_timers(&mut self.buf)
                && let Some(reply) = peer.reply
            {
                out.push(Output::Network {
                    to: reply,
                    datagram: datagram.to_vec(),
                });
            }
            let reply = peer.reply;
            peer.endpoints.retain(|e| {
                Some(e.addr) == reply || now.saturating_duration_since(e.heard) < ENDPOINT_FORGET
            });
            peer.redundant.retain(|(_, until)| *until > now);
        }
    }

    /// Starts a new one-second rate window when the current one is over.
    fn roll_window(&mut self, now: Instant) {
        let since = *self.window_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= Duration::from_secs(1) {
            self.per_source.clear();
            self.window_handshakes = 0;
            self.window_since = Some(now);
        }
    }

    /// Every peer's reply endpoint, for the driver to remember across a restart.
    pub fn reply_endpoints(&self) -> Vec<(PublicKey, SocketAddr)> {
        let mut list: Vec<(PublicKey, SocketAddr)> = self
            .peers
            .values()
            .filter_map(|p| Some((p.public_key, p.reply?)))
            .collect();
        list.sort_by_key(|(key, _)| *key.as_bytes());
        list
    }

    /// After a restart: starts a handshake with a listed peer at the endpoint it was last heard
    /// from (the driver's own record, not something a datagram claimed), so its session resumes
    /// after one round trip instead of when the appliance's own timers give up on the old one.
    /// False when the key is not listed or the peer has been heard from since.
    pub fn reconnect(
        &mut self,
        now: Instant,
        key: &PublicKey,
        endpoint: SocketAddr,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(peer) = self
            .by_key
            .get(key.as_bytes())
            .and_then(|index| self.peers.get_mut(index))
        else {
            return false;
        };
        if peer.reply.is_some() {
            return false;
        }
        peer.heard(endpoint, now, true);
        if let TunnResult::WriteToNetwork(init) =
            peer.tunn.format_handshake_initiation(&mut self.buf, false)
        {
            out.push(Output::Network {
                to: endpoint,
                datagram: init.to_vec(),
            });
        }
        true
    }

    /// The peer's current reply endpoint (tests, diagnostics).
    pub fn reply_endpoint(&self, key: &PublicKey) -> Option<SocketAddr> {
        let index = self.by_key.get(key.as_bytes())?;
        self.peers.get(index)?.reply
    }
}

/// Sends what the Tunn queued while it waited for a session.
fn flush(peer: &mut Peer, buf: &mut [u8], out: &mut Vec<Output>) {
    while let TunnResult::WriteToNetwork(datagram) = peer.tunn.decapsulate(None, &[], buf) {
        if let Some(to) = peer.reply {
            out.push(Output::Network {
                to,
                datagram: datagram.to_vec(),
            });
        }
    }
}

fn fingerprint(addr: SocketAddr) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut hasher);
    hasher.finish()
}

/// The first host of an inner network: the relay's own inner address.
pub fn own_address(network: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(network.network()).wrapping_add(1))
}

#[cfg(test)]
mod tests;
