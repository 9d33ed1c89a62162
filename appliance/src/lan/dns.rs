//! The LAN's DNS forwarder, without I/O: the router asks the appliance, the appliance asks the
//! resolvers of the uplink that carries traffic now.
//!
//! Design: a [`Forwarder`] takes the moment and one event — a client's query
//! ([`Forwarder::query`]), an upstream datagram ([`Forwarder::upstream`]), a change of active
//! uplink or of an uplink's resolvers, the passing of time ([`Forwarder::poll`]) — and returns
//! [`Action`]s: datagrams to send through an uplink, answers for clients. The driver
//! ([`super::linux`]) owns the sockets (the upstream ones bound to each uplink's interface) and
//! sleeps until [`Forwarder::next_deadline`].
//!
//! - **Failover.** Each query in flight remembers the uplink and resolver it was sent to. When the
//!   active uplink changes, every query in flight elsewhere is sent again at once, with a new ID,
//!   through the new uplink's first resolver: nothing waits on a resolver only the dead line
//!   reaches, and a late answer through the old uplink is dropped (its ID is gone).
//! - **Timeouts.** A query unanswered after [`QUERY_TIMEOUT`] goes to the active uplink's next
//!   resolver (round robin), again with a new ID; after [`GIVE_UP_AFTER`] the client gets
//!   SERVFAIL.
//! - **Spoofing.** An upstream datagram is accepted only when its ID is one in flight, it came
//!   from that query's resolver address and port through that query's uplink, and its question
//!   is the question asked. Anything else is dropped and counted ([`Dropped`]). IDs are random
//!   (the caller seeds the generator from the OS).
//! - **Cache.** Whole answers keyed by (name, type, class) of the question asked, never by the
//!   records they carry, so an answer cannot plant records for another name. TTLs are respected
//!   (aged on the way out), capped at [`MAX_TTL`]; NXDOMAIN and empty answers are kept at most
//!   [`NEGATIVE_TTL`]; SERVFAIL and truncated answers are not kept. Bounded: when full, the
//!   entry closest to expiry goes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An unanswered query goes to the next resolver after this long: well above a resolver's
/// round trip through any uplink, well below the 1 s a failover may cost a name.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// A query nobody answered within this gets SERVFAIL: clients retry after about 5 s.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(4);
/// The longest an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a negative answer (NXDOMAIN, no data) is kept: briefly, so a name that just
/// appeared is not hidden for the SOA's hour.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Queries in flight at most; more get SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 1024;
/// A UDP client that announces no larger size (EDNS) takes answers of at most this many bytes.
const CLASSIC_UDP_SIZE: usize = 512;
/// The most any UDP client is sent, whatever it announces.
const MAX_UDP_SIZE: usize = 4096;

/// How a client asked: a UDP client gets a truncated answer when the full one is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<C> {
    /// Send `bytes` to `to` through uplink `uplink`'s socket.
    Send {
        uplink: usize,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Answer the client.
    Answer { client: C, bytes: Vec<u8> },
}

/// Why a datagram was dropped. Each is counted ([`Forwarder::dropped`]) and logged by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Dropped {
    #[error("a client sent something that is not a DNS message")]
    MalformedQuery,
    #[error("a client sent an unsupported query (not one standard question)")]
    UnsupportedQuery,
    #[error("too many queries in flight")]
    Overloaded,
    #[error("an upstream datagram that is not a DNS response")]
    MalformedAnswer,
    #[error("an answer with an ID no query in flight has (spoofed, or late after a resend)")]
    UnknownId,
    #[error("an answer from an address, port or uplink the query was not sent to (spoofed)")]
    WrongSource,
    #[error("an answer to another question than the one asked (spoofed or poisoning)")]
    WrongQuestion,
}

impl Dropped {
    /// The label a counter and a log line carry.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::MalformedQuery => "malformed_query",
            Dropped::UnsupportedQuery => "unsupported_query",
            Dropped::Overloaded => "overloaded",
            Dropped::MalformedAnswer => "malformed_answer",
            Dropped::UnknownId => "unknown_id",
            Dropped::WrongSource => "wrong_source",
            Dropped::WrongQuestion => "wrong_question",
        }
    }
}

/// The cache key: the question, its name in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    kind: RecordType,
    class: DNSClass,
}

impl Key {
    fn of(query: &Query) -> Self {
        Self {
            name: query.name().to_lowercase().to_ascii(),
            kind: query.query_type(),
            class: query.query_class(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    answer: Message,
    stored: Instant,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct InFlight<C> {
    client: C,
    client_id: u16,
    max_size: usize,
    query: Message,
    key: Key,
    uplink: usize,
    resolver: SocketAddr,
    /// Sends so far (the first included): picks the next resolver.
    attempts: usize,
    deadline: Instant,
    started: Instant,
}

/// The forwarder's state. `C` names a client for the driver (a UDP address, a TCP connection).
#[derive(Debug)]
pub struct Forwarder<C> {
    resolvers: Vec<Vec<IpAddr>>,
    active: Option<usize>,
    in_flight: HashMap<u16, InFlight<C>>,
    cache: HashMap<Key, Entry>,
    cache_size: usize,
    rng: StdRng,
    dropped: BTreeMap<Dropped, u64>,
    /// Queries sent again through a new uplink at a failover, since start.
    resent_on_failover: u64,
}

impl<C: Clone> Forwarder<C> {
    /// A forwarder for `uplinks` uplinks (none active, no resolvers yet) keeping at most
    /// `cache_size` answers; `seed` seeds the query IDs (the driver takes it from the OS).
    pub fn new(uplinks: usize, cache_size: usize, seed: u64) -> Self {
        Self {
            resolvers: vec![Vec::new(); uplinks],
            active: None,
            in_flight: HashMap::new(),
            cache: HashMap::new(),
            cache_size,
            rng: StdRng::seed_from_u64(seed),
            dropped: BTreeMap::new(),
            resent_on_failover: 0,
        }
    }

    /// Drops so far, by reason.
    pub fn dropped(&self) -> &BTreeMap<Dropped, u64> {
        &self.dropped
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn resent_on_failover(&self) -> u64 {
        self.resent_on_failover
    }

    pub fn active_uplink(&self) -> Option<usize> {
        self.active
    }

    fn drop_counted(&mut self, reason: Dropped) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// The uplink `uplink` carries traffic from now on (`None`: none does). Queries in flight
    /// through another uplink are sent again through this one at once.
    pub fn set_active_uplink(&mut self, now: Instant, uplink: Option<usize>) -> Vec<Action<C>> {
        if uplink == self.active {
            return Vec::new();
        }
        self.active = uplink;
        let stranded: Vec<u16> = self
            .in_flight
            .iter()
            .filter(|(_, q)| Some(q.uplink) != uplink)
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Vec::new();
        for id in stranded {
            if let Some(mut query) = self.in_flight.remove(&id) {
                query.attempts = 0;
                self.resent_on_failover += 1;
                actions.extend(self.send(now, query));
            }
        }
        actions
    }

    /// `uplink`'s resolvers from now on (configured ones, and those its DHCP lease names).
    /// Queries in flight to a resolver no longer listed are sent again at once.
    pub fn set_uplink_resolvers(
        &mut self,
        now: Instant,
        uplink: usize,
        resolvers: Vec<IpAddr>,
    ) -> Vec<Action<C>> {
        let Some(slot) = self.resolvers.get_mut(uplink) else {
            return Vec::new();
        };
        *slot = resolvers;
        let stale: Vec<u16> = self
            .in_flight
            .iter()
            .filter(|(_, q)| {
                q.uplink == uplink && !self.resolvers[uplink].contains(&q.resolver.ip())
            })
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Vec::new();
        for id in stale {
            if let Some(mut query) = self.in_flight.remove(&id) {
                query.attempts = 0;
                actions.extend(self.send(now, query));
            }
        }
        actions
    }

    /// A query from `client`, as received.
    pub fn query(
        &mut self,
        now: Instant,
        client: C,
        transport: Transport,
        bytes: &[u8],
    ) -> Vec<Action<C>> {
        let query = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.drop_counted(Dropped::MalformedQuery);
                // With a readable header the client hears FORMERR rather than waiting.
                return match bytes.get(..2) {
                    Some(id) if bytes.len() >= 12 && bytes[2] & 0x80 == 0 => {
                        let id = u16::from_be_bytes([id[0], id[1]]);
                        error_answer(client, id, None, ResponseCode::FormErr)
                    }
                    _ => Vec::new(),
                };
            }
        };
        if query.message_type() != MessageType::Query {
            // Never answer a response: two forwarders would bounce it forever.
            self.drop_counted(Dropped::MalformedQuery);
            return Vec::new();
        }
        if query.op_code() != OpCode::Query || query.queries().len() != 1 {
            self.drop_counted(Dropped::UnsupportedQuery);
            return error_answer(client, query.id(), None, ResponseCode::NotImp);
        }
        let question = query.queries()[0].clone();
        let key = Key::of(&question);
        let max_size = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => {
                usize::from(query.max_payload()).clamp(CLASSIC_UDP_SIZE, MAX_UDP_SIZE)
            }
        };
        if let Some(answer) = self.cached_answer(now, &key) {
            return vec![answer_for(client, query.id(), &question, answer, max_size)];
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.drop_counted(Dropped::Overloaded);
            return error_answer(client, query.id(), Some(&question), ResponseCode::ServFail);
        }
        let Some(uplink) = self.active.filter(|u| !self.resolvers[*u].is_empty()) else {
            // No uplink carries traffic (or it has no resolver): say so now.
            return error_answer(client, query.id(), Some(&question), ResponseCode::ServFail);
        };
        let in_flight = InFlight {
            client,
            client_id: query.id(),
            max_size,
            key,
            query,
            uplink,
            resolver: SocketAddr::new(self.resolvers[uplink][0], 53),
            attempts: 0,
            deadline: now,
            started: now,
        };
        self.send(now, in_flight)
    }

    /// Sends `query` (again) through the active uplink's next resolver, under a new ID; with no
    /// active uplink it waits for one until its deadline.
    fn send(&mut self, now: Instant, mut query: InFlight<C>) -> Vec<Action<C>> {
        let mut id: u16 = self.rng.r#gen();
        while self.in_flight.contains_key(&id) {
            id = self.rng.r#gen();
        }
        query.deadline = now + QUERY_TIMEOUT;
        let Some(uplink) = self.active.filter(|u| !self.resolvers[*u].is_empty()) else {
            self.in_flight.insert(id, query);
            return Vec::new();
        };
        let resolvers = &self.resolvers[uplink];
        let resolver = SocketAddr::new(resolvers[query.attempts % resolvers.len()], 53);
        query.attempts += 1;
        query.uplink = uplink;
        query.resolver = resolver;
        query.query.set_id(id);
        let Ok(bytes) = query.query.to_vec() else {
            return Vec::new();
        };
        self.in_flight.insert(id, query);
        vec![Action::Send {
            uplink,
            to: resolver,
            bytes,
        }]
    }

    /// A datagram that arrived on uplink `uplink`'s socket from `from`.
    pub fn upstream(
        &mut self,
        now: Instant,
        uplink: usize,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Action<C>> {
        let answer = match Message::from_vec(bytes) {
            Ok(m) if m.message_type() == MessageType::Response => m,
            _ => {
                self.drop_counted(Dropped::MalformedAnswer);
                return Vec::new();
            }
        };
        let Some(pending) = self.in_flight.get(&answer.id()) else {
            self.drop_counted(Dropped::UnknownId);
            return Vec::new();
        };
        if pending.uplink != uplink || pending.resolver != from {
            self.drop_counted(Dropped::WrongSource);
            return Vec::new();
        }
        if answer.queries().len() != 1 || Key::of(&answer.queries()[0]) != pending.key {
            self.drop_counted(Dropped::WrongQuestion);
            return Vec::new();
        }
        let Some(pending) = self.in_flight.remove(&answer.id()) else {
            return Vec::new();
        };
        let code = answer.response_code();
        if matches!(code, ResponseCode::ServFail | ResponseCode::Refused)
            && pending.attempts < self.resolvers[uplink].len()
        {
            // This resolver cannot help; another of the uplink's may.
            return self.send(now, pending);
        }
        if !answer.truncated() && matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
            self.store(now, pending.key.clone(), &answer);
        }
        let question = pending.query.queries()[0].clone();
        vec![answer_for(
            pending.client,
            pending.client_id,
            &question,
            answer,
            pending.max_size,
        )]
    }

    /// Resends what timed out, fails what waited too long.
    pub fn poll(&mut self, now: Instant) -> Vec<Action<C>> {
        let due: Vec<u16> = self
            .in_flight
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Vec::new();
        for id in due {
            let Some(query) = self.in_flight.remove(&id) else {
                continue;
            };
            if now.saturating_duration_since(query.started) >= GIVE_UP_AFTER {
                let question = query.query.queries()[0].clone();
                actions.extend(error_answer(
                    query.client,
                    query.client_id,
                    Some(&question),
                    ResponseCode::ServFail,
                ));
            } else {
                actions.extend(self.send(now, query));
            }
        }
        actions
    }

    /// When [`Forwarder::poll`] has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.values().map(|q| q.deadline).min()
    }

    fn cached_answer(&mut self, now: Instant, key: &Key) -> Option<Message> {
        let entry = self.cache.get(key)?;
        if entry.expires <= now {
            self.cache.remove(key);
            return None;
        }
        let age = u32::try_from(now.saturating_duration_since(entry.stored).as_secs())
            .unwrap_or(u32::MAX);
        let mut answer = entry.answer.clone();
        for record in answer.answers_mut() {
            let ttl = record.ttl().saturating_sub(age);
            record.set_ttl(ttl);
        }
        for record in answer.name_servers_mut() {
            let ttl = record.ttl().saturating_sub(age);
            record.set_ttl(ttl);
        }
        Some(answer)
    }

    fn store(&mut self, now: Instant, key: Key, answer: &Message) {
        if self.cache_size == 0 {
            return;
        }
        let negative =
            answer.response_code() == ResponseCode::NXDomain || answer.answers().is_empty();
        let ttl = if negative {
            let soa = answer
                .name_servers()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
                    _ => None,
                })
                .min()
                .unwrap_or(0);
            Duration::from_secs(u64::from(soa)).min(NEGATIVE_TTL)
        } else {
            let min = answer.answers().iter().map(|r| r.ttl()).min().unwrap_or(0);
            Duration::from_secs(u64::from(min)).min(MAX_TTL)
        };
        if ttl.is_zero() {
            return;
        }
        if self.cache.len() >= self.cache_size && !self.cache.contains_key(&key) {
            self.cache.retain(|_, e| e.expires > now);
            if self.cache.len() >= self.cache_size
                && let Some(soonest) = self
                    .cache
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                self.cache.remove(&soonest);
            }
        }
        let mut kept = answer.clone();
        // What the client's EDNS asked belongs to each answer, not to the cache.
        kept.additionals_mut().clear();
        *kept.extensions_mut() = None;
        self.cache.insert(
            key,
            Entry {
                answer: kept,
                stored: now,
                expires: now + ttl,
            },
        );
    }
}

/// `answer` as the client's: its ID, its question (with its letter case), cut to `max_size`.
fn answer_for<C>(
    client: C,
    id: u16,
    question: &Query,
    mut answer: Message,
    max_size: usize,
) -> Action<C> {
    answer.set_id(id);
    *answer.queries_mut() = vec![question.clone()];
    let bytes = match answer.to_vec() {
        Ok(bytes) if bytes.len() <= max_size => bytes,
        // Too large for this client over UDP: the header and question with TC set, so it asks
        // again over TCP.
        _ => {
            let mut truncated = Message::new();
            truncated
                .set_id(id)
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(answer.recursion_desired())
                .set_recursion_available(true)
                .set_truncated(true)
                .set_response_code(answer.response_code())
                .add_query(question.clone());
            truncated.to_vec().unwrap_or_default()
        }
    };
    Action::Answer { client, bytes }
}

fn error_answer<C>(
    client: C,
    id: u16,
    question: Option<&Query>,
    code: ResponseCode,
) -> Vec<Action<C>> {
    let mut message = Message::error_msg(id, OpCode::Query, code);
    message.set_recursion_available(true);
    if let Some(q) = question {
        message.add_query(q.clone());
    }
    match message.to_vec() {
        Ok(bytes) => vec![Action::Answer { client, bytes }],
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
