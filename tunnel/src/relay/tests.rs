//! The relay core with two boringtun `Tunn`s standing in for appliances, through in-memory
//! datagrams: no sockets.

use super::*;
use crate::packet::UDP;
use crate::packet::tests::ipv4;

const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 60);
const A_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);
const B_INNER: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 3);

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

/// An appliance: its key pair and its boringtun tunnel to the relay.
struct Appliance {
    key: KeyPair,
    tunn: Tunn,
    inner: Ipv4Addr,
}

impl Appliance {
    fn new(relay: &Relay, inner: Ipv4Addr, index: u32) -> Appliance {
        let key = KeyPair::generate();
        let tunn = Tunn::new(
            key.secret().clone(),
            relay.public_key(),
            None,
            None,
            index,
            None,
        )
        .expect("tunn");
        Appliance { key, tunn, inner }
    }

    fn entry(&self) -> PeerEntry {
        PeerEntry {
            public_key: self.key.public(),
            inner_address: self.inner,
        }
    }

    fn initiation(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        match self.tunn.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("no initiation: {other:?}"),
        }
    }

    /// Handshakes with the relay from `from`: initiation, response, keepalive.
    fn connect(&mut self, relay: &mut Relay, from: SocketAddr) {
        let init = self.initiation();
        let response = only_network(relay, from, &init);
        assert_eq!(response.0, from, "the response goes back to the initiator");
        let keepalive = self.receive_one(&response.1).expect("a keepalive");
        let mut out = Vec::new();
        relay.handle_datagram(Instant::now(), from, &keepalive, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    fn seal(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        match self.tunn.encapsulate(packet, &mut buf) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("not sealed: {other:?}"),
        }
    }

    /// Decapsulates one datagram from the relay: the inner packet, or a datagram to send back.
    fn receive_one(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        match self.tunn.decapsulate(None, datagram, &mut buf) {
            TunnResult::WriteToTunnelV4(p, _) => Some(p.to_vec()),
            TunnResult::WriteToNetwork(p) => Some(p.to_vec()),
            TunnResult::Done => None,
            other => panic!("appliance refused the relay's datagram: {other:?}"),
        }
    }

    fn udp_to_server(&self, sport: u16) -> Vec<u8> {
        ipv4(UDP, self.inner, sport, SERVER, 5004, 160)
    }
}

fn relay() -> Relay {
    Relay::new(
        KeyPair::generate(),
        "100.96.0.0/12".parse().expect("net"),
        Limits::default(),
    )
}

fn only_network(relay: &mut Relay, from: SocketAddr, datagram: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, datagram, &mut out);
    match out.as_slice() {
        [Output::Network { to, datagram }] => (*to, datagram.clone()),
        other => panic!("expected one datagram, got {other:?}"),
    }
}

fn tun_writes(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Tun(p) => Some(p.clone()),
            Output::Network { .. } => None,
        })
        .collect()
}

fn sends(out: &[Output]) -> Vec<(SocketAddr, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Network { to, datagram } => Some((*to, datagram.clone())),
            Output::Tun(_) => None,
        })
        .collect()
}

fn from_server(to: Ipv4Addr, dport: u16) -> Vec<u8> {
    ipv4(UDP, SERVER, 5004, to, dport, 160)
}

#[test]
fn two_appliances_handshake_and_data_flows_both_ways_through_the_relay() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 7);
    let mut b = Appliance::new(&relay, B_INNER, 9);
    let change = relay.set_peers(&[a.entry(), b.entry()]);
    assert_eq!((change.added, change.refused.len()), (2, 0));
    a.connect(&mut relay, addr("192.0.2.10:40000"));
    b.connect(&mut relay, addr("198.51.100.20:41000"));
    assert_eq!(relay.stats().counters.handshakes_completed, 2);
    assert_eq!(relay.stats().sessions, 2);

    for (appliance, from) in [
        (&mut a, addr("192.0.2.10:40000")),
        (&mut b, addr("198.51.100.20:41000")),
    ] {
        let packet = appliance.udp_to_server(50000);
        let sealed = appliance.seal(&packet);
        let mut out = Vec::new();
        relay.handle_datagram(Instant::now(), from, &sealed, &mut out);
        assert_eq!(
            tun_writes(&out),
            vec![packet],
            "the inner packet reaches the TUN"
        );

        let reply = from_server(appliance.inner, 50000);
        let mut out = Vec::new();
        relay.handle_tun_packet(Instant::now(), &reply, &mut out);
        let sent = sends(&out);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].0, from,
            "the reply goes to the appliance's endpoint"
        );
        assert_eq!(appliance.receive_one(&sent[0].1), Some(reply));
    }
    let counters = relay.stats().counters;
    assert_eq!(counters.bytes_from_peers, 2 * 188);
    assert_eq!(counters.bytes_to_peers, 2 * 188);
}

#[test]
fn an_unknown_key_gets_no_answer_and_leaves_no_state() {
    let mut relay = relay();
    let known = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[known.entry()]);
    let before = relay.stats();
    for i in 0..5u16 {
        let mut stranger = Appliance::new(&relay, B_INNER, 2);
        let init = stranger.initiation();
        let mut out = Vec::new();
        relay.handle_datagram(
            Instant::now(),
            SocketAddr::new(Ipv4Addr::new(192, 0, 2, 99).into(), 1000 + i),
            &init,
            &mut out,
        );
        assert!(out.is_empty(), "nothing is sent to an unknown key: {out:?}");
    }
    let after = relay.stats();
    assert_eq!(after.counters.unknown_key, 5);
    assert_eq!(after.counters.handshakes_completed, 0);
    assert_eq!(
        (after.peers, after.sessions),
        (before.peers, before.sessions)
    );
    assert_eq!(relay.peers.len(), 1, "no Tunn was made for a stranger");
}

#[test]
fn a_packet_with_a_spoofed_inner_source_or_to_another_appliance_is_dropped_and_counted() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    let b = Appliance::new(&relay, B_INNER, 2);
    relay.set_peers(&[a.entry(), b.entry()]);
    let from = addr("192.0.2.10:40000");
    a.connect(&mut relay, from);
    // A sends as B, and as an address outside every peer.
    for source in [B_INNER, Ipv4Addr::new(10, 0, 0, 1)] {
        let spoofed = ipv4(UDP, source, 1, SERVER, 2, 20);
        let sealed = a.seal(&spoofed);
        let mut out = Vec::new();
        relay.handle_datagram(Instant::now(), from, &sealed, &mut out);
        assert!(
            tun_writes(&out).is_empty(),
            "a spoofed packet reaches the TUN"
        );
    }
    assert_eq!(relay.stats().counters.spoofed_source, 2);
    assert_eq!(relay.stats().counters.bytes_from_peers, 0);

    // From its own address to another appliance's inner address: appliances never reach each
    // other through the relay.
    let sideways = ipv4(UDP, A_INNER, 1, B_INNER, 2, 20);
    let sealed = a.seal(&sideways);
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &sealed, &mut out);
    assert!(tun_writes(&out).is_empty());
    assert_eq!(relay.stats().counters.peer_to_peer, 1);
}

#[test]
fn a_peer_that_roams_to_a_new_endpoint_gets_replies_there_without_a_new_handshake() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[a.entry()]);
    let primary = addr("192.0.2.10:40000");
    let backup = addr("198.51.100.10:40000");
    a.connect(&mut relay, primary);

    // The appliance fails over: its next packet leaves through the backup uplink.
    let packet = a.udp_to_server(50000);
    let sealed = a.seal(&packet);
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), backup, &sealed, &mut out);
    assert_eq!(tun_writes(&out), vec![packet]);
    assert_eq!(relay.reply_endpoint(&a.key.public()), Some(backup));

    let reply = from_server(A_INNER, 50000);
    let mut out = Vec::new();
    relay.handle_tun_packet(Instant::now(), &reply, &mut out);
    let sent = sends(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].0, backup,
        "replies follow the appliance to its backup"
    );
    assert_eq!(a.receive_one(&sent[0].1), Some(reply));
    assert_eq!(
        relay.stats().counters.handshakes_completed,
        1,
        "no new handshake"
    );

    // A forged datagram from a third address does not move the session.
    let mut forged = sealed.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    forged[8] = forged[8].wrapping_add(1);
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), addr("203.0.113.99:9999"), &forged, &mut out);
    assert!(out.is_empty());
    assert_eq!(relay.reply_endpoint(&a.key.public()), Some(backup));
    assert_eq!(relay.stats().counters.decrypt_failed, 1);
}

#[test]
fn duplicates_over_two_endpoints_are_delivered_once_and_the_flows_replies_go_to_both() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[a.entry()]);
    let isp1 = addr("192.0.2.10:40000");
    let isp2 = addr("198.51.100.10:40001");
    a.connect(&mut relay, isp1);
    let now = Instant::now();

    // The call's packet, the same ciphertext over both uplinks.
    let call = a.udp_to_server(50000);
    let sealed = a.seal(&call);
    let mut out = Vec::new();
    relay.handle_datagram(now, isp1, &sealed, &mut out);
    relay.handle_datagram(now, isp2, &sealed, &mut out);
    assert_eq!(tun_writes(&out), vec![call], "delivered once");
    assert_eq!(relay.stats().counters.duplicates_received, 1);

    // The call's reply goes to both endpoints; the appliance takes the first copy only.
    let reply = from_server(A_INNER, 50000);
    let mut out = Vec::new();
    relay.handle_tun_packet(now, &reply, &mut out);
    let sent = sends(&out);
    let mut endpoints: Vec<SocketAddr> = sent.iter().map(|(to, _)| *to).collect();
    endpoints.sort();
    assert_eq!(endpoints, vec![isp1, isp2]);
    assert_eq!(sent[0].1, sent[1].1, "the same ciphertext twice");
    assert_eq!(a.receive_one(&sent[0].1), Some(reply.clone()));
    let mut buf = vec![0u8; 4096];
    assert!(matches!(
        a.tunn.decapsulate(None, &sent[1].1, &mut buf),
        TunnResult::Err(WireGuardError::DuplicateCounter)
    ));
    assert_eq!(relay.stats().counters.duplicates_sent, 1);

    // Another flow of the same peer is not duplicated.
    let other = ipv4(UDP, SERVER, 443, A_INNER, 50001, 40);
    let mut out = Vec::new();
    relay.handle_tun_packet(now, &other, &mut out);
    assert_eq!(sends(&out).len(), 1);

    // A replay from the same endpoint is not a duplicate.
    let mut out = Vec::new();
    relay.handle_datagram(now, isp1, &sealed, &mut out);
    assert!(out.is_empty());
    assert_eq!(relay.stats().counters.replays, 1);

    // Ten seconds after the last duplicate, the flow is single again.
    let later = now + REDUNDANT_FOR + Duration::from_millis(1);
    let mut out = Vec::new();
    relay.tick(later, &mut out);
    let mut out = Vec::new();
    relay.handle_tun_packet(later, &reply, &mut out);
    assert_eq!(sends(&out).len(), 1);
}

#[test]
fn a_stale_second_endpoint_gets_no_copies() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[a.entry()]);
    let isp1 = addr("192.0.2.10:40000");
    let isp2 = addr("198.51.100.10:40001");
    a.connect(&mut relay, isp1);
    let now = Instant::now();
    let sealed = a.seal(&a.udp_to_server(50000));
    let mut out = Vec::new();
    relay.handle_datagram(now, isp1, &sealed, &mut out);
    relay.handle_datagram(now, isp2, &sealed, &mut out);
    // isp1 keeps talking; isp2 falls silent for more than three seconds.
    let later = now + ENDPOINT_FRESH + Duration::from_millis(500);
    let sealed = a.seal(&a.udp_to_server(50000));
    relay.handle_datagram(later, isp1, &sealed, &mut out);
    let mut out = Vec::new();
    relay.handle_tun_packet(later, &from_server(A_INNER, 50000), &mut out);
    assert_eq!(
        sends(&out).iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![isp1]
    );
}

#[test]
fn a_removed_peer_is_cut_off_at_once() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    let b = Appliance::new(&relay, B_INNER, 2);
    relay.set_peers(&[a.entry(), b.entry()]);
    let from = addr("192.0.2.10:40000");
    a.connect(&mut relay, from);

    let change = relay.set_peers(&[b.entry()]);
    assert_eq!(change.removed, 1);
    let sealed = a.seal(&a.udp_to_server(50000));
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &sealed, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(relay.stats().counters.unknown_index, 1);
    let mut out = Vec::new();
    relay.handle_tun_packet(Instant::now(), &from_server(A_INNER, 50000), &mut out);
    assert!(out.is_empty());
    assert_eq!(relay.stats().counters.no_peer, 1);
    // And it cannot handshake back in.
    let init = a.initiation();
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &init, &mut out);
    assert!(out.is_empty());
    assert_eq!(relay.stats().counters.unknown_key, 1);
    assert_eq!(relay.stats().peers, 1);
}

#[test]
fn an_added_peer_is_accepted_and_a_changed_inner_address_is_the_only_one_allowed() {
    let mut relay = relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[]);
    let from = addr("192.0.2.10:40000");
    let init = a.initiation();
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &init, &mut out);
    assert!(out.is_empty());

    relay.set_peers(&[a.entry()]);
    a.connect(&mut relay, from);

    // Readdressed: the old address is now a spoofed source, the new one passes, the session
    // stays.
    let new_inner = Ipv4Addr::new(100, 96, 0, 9);
    let change = relay.set_peers(&[PeerEntry {
        public_key: a.key.public(),
        inner_address: new_inner,
    }]);
    assert_eq!(change.readdressed, 1);
    let mut out = Vec::new();
    let old = a.seal(&a.udp_to_server(50000));
    relay.handle_datagram(Instant::now(), from, &old, &mut out);
    assert!(tun_writes(&out).is_empty());
    a.inner = new_inner;
    let packet = a.udp_to_server(50000);
    let sealed = a.seal(&packet);
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &sealed, &mut out);
    assert_eq!(tun_writes(&out), vec![packet]);
    assert_eq!(relay.stats().counters.handshakes_completed, 1);
}

#[test]
fn peer_lists_with_addresses_outside_the_network_or_twice_listed_are_refused_entry_by_entry() {
    let mut relay = relay();
    let a = Appliance::new(&relay, A_INNER, 1);
    let b = Appliance::new(&relay, A_INNER, 2);
    let c = Appliance::new(&relay, Ipv4Addr::new(192, 0, 2, 1), 3);
    let d = Appliance::new(&relay, relay.own_address(), 4);
    let change = relay.set_peers(&[a.entry(), b.entry(), c.entry(), d.entry(), a.entry()]);
    assert_eq!(change.added, 1);
    assert_eq!(change.refused.len(), 4, "{:?}", change.refused);
    assert_eq!(relay.stats().counters.peers_refused, 4);
}

fn message_type(datagram: &[u8]) -> u32 {
    u32::from_le_bytes(datagram[0..4].try_into().expect("type"))
}

fn limited_relay() -> Relay {
    Relay::new(
        KeyPair::generate(),
        "100.96.0.0/12".parse().expect("net"),
        Limits {
            handshakes_per_source_per_sec: 3,
            handshakes_before_cookies_per_sec: 4,
        },
    )
}

#[test]
fn a_flood_of_initiations_from_one_address_must_show_cookies_and_is_capped_even_with_them() {
    let mut relay = limited_relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[a.entry()]);
    let now = Instant::now();
    let flooder = addr("192.0.2.66:5000");
    let mut kinds = Vec::new();
    let mut last = Vec::new();
    for _ in 0..10 {
        let init = a.initiation();
        let mut out = Vec::new();
        relay.handle_datagram(now, flooder, &init, &mut out);
        for (_, datagram) in sends(&out) {
            kinds.push(message_type(&datagram));
            last = datagram;
        }
    }
    assert_eq!(
        kinds,
        vec![2, 2, 2, 3, 3, 3, 3, 3, 3, 3],
        "three responses a second, then only cookies"
    );
    assert_eq!(relay.stats().counters.rate_limited_source, 7);
    assert_eq!(relay.stats().counters.handshakes_completed, 3);

    // With the cookie (the address is real), three more a second, then nothing at all.
    assert!(a.receive_one(&last).is_none(), "the cookie is taken");
    let mut kinds = Vec::new();
    for _ in 0..5 {
        let init = a.initiation();
        let mut out = Vec::new();
        relay.handle_datagram(now, flooder, &init, &mut out);
        kinds.extend(sends(&out).iter().map(|(_, d)| message_type(d)));
    }
    assert_eq!(kinds, vec![2, 2, 2], "proven, yet capped");
    assert_eq!(relay.stats().counters.handshakes_completed, 6);
    assert_eq!(relay.stats().counters.rate_limited_source, 9);

    // The next second starts afresh.
    let mut out = Vec::new();
    relay.tick(now + Duration::from_secs(1), &mut out);
    let init = a.initiation();
    let (_, response) = only_network(&mut relay, flooder, &init);
    assert_eq!(message_type(&response), 2);
}

#[test]
fn under_load_every_initiator_must_prove_its_address_with_a_cookie_before_it_is_answered() {
    let mut relay = limited_relay();
    let mut peers: Vec<Appliance> = (0..8u32)
        .map(|i| Appliance::new(&relay, Ipv4Addr::new(100, 96, 1, i as u8 + 2), i))
        .collect();
    relay.set_peers(&peers.iter().map(Appliance::entry).collect::<Vec<_>>());
    let now = Instant::now();
    let mut cookies = 0;
    for (i, peer) in peers.iter_mut().enumerate() {
        let from = SocketAddr::new(Ipv4Addr::new(198, 51, 100, i as u8 + 1).into(), 5000);
        let init = peer.initiation();
        let mut out = Vec::new();
        relay.handle_datagram(now, from, &init, &mut out);
        let (to, reply) = sends(&out).pop().expect("an answer");
        assert_eq!(to, from);
        if i < 4 {
            assert_eq!(message_type(&reply), 2, "below the load limit: answered");
            continue;
        }
        assert_eq!(message_type(&reply), 3, "under load: a cookie first");
        cookies += 1;
        assert!(peer.receive_one(&reply).is_none());
        let init = peer.initiation();
        let (_, response) = only_network(&mut relay, from, &init);
        assert_eq!(
            message_type(&response),
            2,
            "answered once the cookie is shown"
        );
    }
    assert_eq!(relay.stats().counters.rate_limited_cookie, cookies);
    assert_eq!(relay.stats().counters.handshakes_completed, 8);
}

#[test]
fn someone_forging_an_appliances_address_cannot_use_up_its_handshakes() {
    let mut relay = limited_relay();
    let mut a = Appliance::new(&relay, A_INNER, 1);
    relay.set_peers(&[a.entry()]);
    let now = Instant::now();
    let clinic = addr("192.0.2.10:40000");
    // The attacker sends initiations (valid mac1: the relay's key is public) from the clinic's
    // address, and never sees the cookies sent there.
    for _ in 0..50 {
        let mut forger = Appliance::new(&relay, B_INNER, 9);
        let init = forger.initiation();
        let mut out = Vec::new();
        relay.handle_datagram(now, clinic, &init, &mut out);
    }
    // The appliance behind that address still gets its session within the same second.
    let init = a.initiation();
    let (_, cookie) = only_network(&mut relay, clinic, &init);
    assert_eq!(message_type(&cookie), 3);
    assert!(a.receive_one(&cookie).is_none());
    let init = a.initiation();
    let (_, response) = only_network(&mut relay, clinic, &init);
    assert_eq!(message_type(&response), 2, "the real appliance is answered");
    let keepalive = a.receive_one(&response).expect("keepalive");
    let mut out = Vec::new();
    relay.handle_datagram(now, clinic, &keepalive, &mut out);
    assert_eq!(relay.stats().sessions, 1);
}

#[test]
fn datagrams_that_are_not_wireguard_or_for_no_session_are_counted() {
    let mut relay = relay();
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), addr("192.0.2.1:1"), b"hello", &mut out);
    let mut data = vec![0u8; 64];
    data[0] = 4;
    data[4..8].copy_from_slice(&(77u32 << 8).to_le_bytes());
    relay.handle_datagram(Instant::now(), addr("192.0.2.1:1"), &data, &mut out);
    relay.handle_tun_packet(Instant::now(), b"\x60garbage", &mut out);
    assert!(out.is_empty());
    let counters = relay.stats().counters;
    assert_eq!(
        (
            counters.invalid_datagram,
            counters.unknown_index,
            counters.invalid_inner
        ),
        (1, 1, 1)
    );
}

#[test]
fn after_a_restart_the_relay_handshakes_with_each_peer_where_it_was_last_heard_and_traffic_resumes()
{
    let key = KeyPair::generate();
    let network: Ipv4Net = "100.96.0.0/12".parse().expect("net");
    let mut first = Relay::new(key.clone(), network, Limits::default());
    let mut a = Appliance::new(&first, A_INNER, 1);
    first.set_peers(&[a.entry()]);
    let from = addr("192.0.2.10:40000");
    a.connect(&mut first, from);
    let remembered = first.reply_endpoints();
    assert_eq!(remembered, vec![(a.key.public(), from)]);
    drop(first);

    // The restarted relay knows nothing of the old session: the appliance's packets are refused.
    let mut relay = Relay::new(key, network, Limits::default());
    relay.set_peers(&[a.entry()]);
    let stale = a.seal(&a.udp_to_server(50000));
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &stale, &mut out);
    assert!(out.is_empty());

    // It handshakes from its record; the appliance answers; the relay confirms with a keepalive.
    let mut out = Vec::new();
    assert!(relay.reconnect(Instant::now(), &a.key.public(), from, &mut out));
    let sent = sends(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, from);
    assert_eq!(message_type(&sent[0].1), 1, "a handshake initiation");
    let response = a.receive_one(&sent[0].1).expect("the appliance responds");
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &response, &mut out);
    let (_, confirm) = sends(&out).pop().expect("keepalive");
    assert!(a.receive_one(&confirm).is_none());

    // Traffic resumes both ways on the new session, with no handshake from the appliance.
    let packet = a.udp_to_server(50000);
    let sealed = a.seal(&packet);
    let mut out = Vec::new();
    relay.handle_datagram(Instant::now(), from, &sealed, &mut out);
    assert_eq!(tun_writes(&out), vec![packet]);
    let reply = from_server(A_INNER, 50000);
    let mut out = Vec::new();
    relay.handle_tun_packet(Instant::now(), &reply, &mut out);
    let sent = sends(&out);
    assert_eq!(a.receive_one(&sent[0].1), Some(reply));
    assert_eq!(relay.stats().counters.handshakes_completed, 0);
    assert_eq!(relay.stats().sessions, 1);

    // A peer already heard from, or one not listed, is left alone.
    let mut out = Vec::new();
    assert!(!relay.reconnect(Instant::now(), &a.key.public(), from, &mut out));
    assert!(!relay.reconnect(
        Instant::now(),
        &KeyPair::generate().public(),
        from,
        &mut out
    ));
    assert!(out.is_empty());
}
