use super::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(100, 64, 10, 1);
const ROUTER: Mac = [0x02, 0, 0, 0, 0, 0x10];
const INTRUDER: Mac = [0x02, 0, 0, 0, 0, 0x66];

fn config() -> ServerConfig {
    ServerConfig {
        address: SERVER,
        prefix: 24,
        pool_start: Ipv4Addr::new(100, 64, 10, 100),
        pool_end: Ipv4Addr::new(100, 64, 10, 102),
        lease_secs: 3600,
        reservations: vec![([0x02, 0, 0, 0, 0, 0x20], Ipv4Addr::new(100, 64, 10, 20))],
        dns: true,
    }
}

fn server() -> DhcpServer {
    DhcpServer::new(config(), Vec::new(), 1_000)
}

fn message(kind: MessageType, mac: Mac, ciaddr: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        0x1234,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().expect("encodes")
}

fn discover(mac: Mac) -> Vec<u8> {
    bytes(&message(MessageType::Discover, mac, Ipv4Addr::UNSPECIFIED))
}

fn request(mac: Mac, address: Ipv4Addr, server: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = message(MessageType::Request, mac, Ipv4Addr::UNSPECIFIED);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
    if let Some(id) = server {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(id));
    }
    bytes(&m)
}

fn reply(outcome: Outcome) -> (Reply, Message) {
    match outcome {
        Outcome::Reply(r) => {
            let m = Message::from_bytes(&r.bytes).expect("reply decodes");
            (r, m)
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// DISCOVER then REQUEST: the router's address.
fn bind(server: &mut DhcpServer, now: u64, mac: Mac) -> Ipv4Addr {
    let (offer, _) = reply(server.handle(now, &discover(mac)));
    let address = offer.address.expect("offered");
    let (ack, _) = reply(server.handle(now, &request(mac, address, Some(SERVER))));
    assert_eq!(ack.kind, MessageType::Ack);
    address
}

#[test]
fn a_router_is_offered_an_address_with_the_appliance_as_gateway_and_dns_and_acked() {
    let mut s = server();
    let (offer, m) = reply(s.handle(1_000, &discover(ROUTER)));
    assert_eq!(offer.kind, MessageType::Offer);
    assert_eq!(offer.to, Destination::Broadcast);
    assert_eq!(m.yiaddr(), Ipv4Addr::new(100, 64, 10, 100));
    assert_eq!(m.xid(), 0x1234);
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(
        m.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        m.opts().get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![SERVER]))
    );
    assert_eq!(
        m.opts().get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    let (ack, m) = reply(s.handle(1_001, &request(ROUTER, m.yiaddr(), Some(SERVER))));
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(
        m.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert!(s.take_changed(), "a bound lease is to be persisted");
    assert_eq!(
        s.lease_of(&ROUTER).map(|(a, l)| (a, l.expires, l.offered)),
        Some((Ipv4Addr::new(100, 64, 10, 100), 4_601, false))
    );
}

#[test]
fn a_reserved_mac_gets_its_fixed_address_even_outside_the_pool() {
    let mut s = server();
    let reserved = [0x02, 0, 0, 0, 0, 0x20];
    assert_eq!(
        bind(&mut s, 1_000, reserved),
        Ipv4Addr::new(100, 64, 10, 20)
    );
    // Nobody else can ask for it.
    let (nak, _) = reply(s.handle(
        1_000,
        &request(INTRUDER, Ipv4Addr::new(100, 64, 10, 20), None),
    ));
    assert_eq!(nak.kind, MessageType::Nak);
}

#[test]
fn a_renewing_client_keeps_its_address_and_is_answered_at_it() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    let renew = bytes(&message(MessageType::Request, ROUTER, address));
    let (ack, _) = reply(s.handle(2_800, &renew));
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(ack.to, Destination::Unicast(address));
    assert_eq!(s.lease_of(&ROUTER).map(|(_, l)| l.expires), Some(6_400));
}

#[test]
fn lease_theft_by_request_is_naked_and_the_holder_keeps_its_lease() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    // Another device asks for the router's address, as a new client and as a renewing one.
    let (nak, m) = reply(s.handle(1_010, &request(INTRUDER, address, Some(SERVER))));
    assert_eq!(nak.kind, MessageType::Nak);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    let renew = bytes(&message(MessageType::Request, INTRUDER, address));
    let (nak, _) = reply(s.handle(1_011, &renew));
    assert_eq!(nak.kind, MessageType::Nak);
    assert_eq!(s.lease_of(&ROUTER).map(|(a, _)| a), Some(address));
    assert_eq!(s.lease_of(&INTRUDER), None);
    assert_eq!(s.refusals().get(&Refusal::AddressTaken), Some(&2));
    // Nor is it offered to the intruder.
    let (offer, _) = reply(s.handle(1_012, &discover(INTRUDER)));
    assert_ne!(offer.address, Some(address));
}

#[test]
fn lease_theft_by_a_forged_release_or_decline_changes_nothing() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    s.take_changed();
    let release = bytes(&message(MessageType::Release, INTRUDER, address));
    assert_eq!(
        s.handle(1_010, &release),
        Outcome::Refused(Refusal::NotTheHolder)
    );
    let mut decline = message(MessageType::Decline, INTRUDER, Ipv4Addr::UNSPECIFIED);
    decline
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(address));
    assert_eq!(
        s.handle(1_011, &bytes(&decline)),
        Outcome::Refused(Refusal::NotTheHolder)
    );
    assert_eq!(s.lease_of(&ROUTER).map(|(a, _)| a), Some(address));
    assert!(!s.take_changed());
    // The holder's own release frees it.
    let release = bytes(&message(MessageType::Release, ROUTER, address));
    assert_eq!(s.handle(1_012, &release), Outcome::Done);
    assert_eq!(s.lease_of(&ROUTER), None);
}

#[test]
fn a_declined_address_is_set_aside_and_the_client_gets_another() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    let mut decline = message(MessageType::Decline, ROUTER, Ipv4Addr::UNSPECIFIED);
    decline
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(address));
    assert_eq!(s.handle(1_001, &bytes(&decline)), Outcome::Done);
    let (offer, _) = reply(s.handle(1_002, &discover(ROUTER)));
    assert_ne!(offer.address, Some(address));
    // Back in the pool once the hold ends (the router's new offer has lapsed by then too).
    s.expire(1_001 + DECLINE_HOLD_SECS);
    assert_eq!(s.next_expiry(), None);
    let (offer, _) = reply(s.handle(1_001 + DECLINE_HOLD_SECS, &discover(INTRUDER)));
    assert_eq!(offer.address, Some(address));
}

#[test]
fn the_pool_runs_out_and_says_so_and_unclaimed_offers_return_after_their_hold() {
    let mut s = server();
    for i in 0..3u8 {
        let (offer, _) = reply(s.handle(1_000, &discover([0x02, 1, 0, 0, 0, i])));
        assert!(offer.address.is_some());
    }
    assert_eq!(
        s.handle(1_000, &discover(ROUTER)),
        Outcome::Refused(Refusal::PoolExhausted)
    );
    assert_eq!(s.refusals().get(&Refusal::PoolExhausted), Some(&1));
    let (offer, _) = reply(s.handle(1_000 + OFFER_HOLD_SECS, &discover(ROUTER)));
    assert_eq!(offer.address, Some(Ipv4Addr::new(100, 64, 10, 100)));
}

#[test]
fn an_expired_lease_is_freed_for_another_client() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    for i in 0..2u8 {
        bind(&mut s, 1_000, [0x02, 1, 0, 0, 0, i]);
    }
    assert_eq!(
        s.handle(1_100, &discover(INTRUDER)),
        Outcome::Refused(Refusal::PoolExhausted)
    );
    let (offer, _) = reply(s.handle(1_000 + 3_600, &discover(INTRUDER)));
    assert!(offer.address.is_some());
    assert_eq!(s.lease_of(&ROUTER), None, "expired: {address}");
}

#[test]
fn inform_is_answered_with_the_settings_and_no_lease() {
    let mut s = server();
    let client = Ipv4Addr::new(100, 64, 10, 50);
    let (ack, m) = reply(s.handle(1_000, &bytes(&message(MessageType::Inform, ROUTER, client))));
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(ack.to, Destination::Unicast(client));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(m.opts().get(OptionCode::Router).is_some());
    assert_eq!(s.lease_of(&ROUTER), None);
}

#[test]
fn a_request_for_another_servers_offer_frees_ours_quietly() {
    let mut s = server();
    reply(s.handle(1_000, &discover(ROUTER)));
    let elsewhere = request(
        ROUTER,
        Ipv4Addr::new(100, 64, 10, 200),
        Some(Ipv4Addr::new(100, 64, 10, 254)),
    );
    assert_eq!(
        s.handle(1_001, &elsewhere),
        Outcome::Refused(Refusal::ForAnotherServer)
    );
    assert_eq!(s.lease_of(&ROUTER), None);
}

#[test]
fn hostile_and_malformed_datagrams_are_refused_counted_and_change_nothing() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    s.take_changed();
    let mut cases: Vec<(Vec<u8>, Refusal)> = vec![
        (Vec::new(), Refusal::Malformed),
        (vec![1; 20], Refusal::Malformed),
        (vec![0; MAX_MESSAGE + 1], Refusal::Oversized),
    ];
    // A server's message sent to the server.
    let mut offer = message(MessageType::Offer, INTRUDER, Ipv4Addr::UNSPECIFIED);
    offer.set_opcode(Opcode::BootReply);
    cases.push((bytes(&offer), Refusal::NotARequest));
    // A BOOTREQUEST carrying an OFFER.
    let offer = message(MessageType::Offer, INTRUDER, Ipv4Addr::UNSPECIFIED);
    cases.push((bytes(&offer), Refusal::UnexpectedMessageType));
    // No message type: plain BOOTP.
    let mut bootp = message(MessageType::Discover, INTRUDER, Ipv4Addr::UNSPECIFIED);
    bootp.opts_mut().remove(OptionCode::MessageType);
    cases.push((bytes(&bootp), Refusal::NoMessageType));
    // A 16-byte hardware address (not Ethernet).
    let long = Message::new_with_id(
        1,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[7; 16],
    );
    cases.push((bytes(&long), Refusal::NotEthernet));
    // Broadcast and all-zero client MACs.
    cases.push((discover([0xff; 6]), Refusal::BadClientMac));
    cases.push((discover([0; 6]), Refusal::BadClientMac));
    // A relayed DISCOVER.
    let mut relayed = message(MessageType::Discover, INTRUDER, Ipv4Addr::UNSPECIFIED);
    relayed.set_giaddr(Ipv4Addr::new(10, 0, 0, 1));
    cases.push((bytes(&relayed), Refusal::Relayed));
    // A truncated copy of a valid message.
    let valid = discover(INTRUDER);
    cases.push((valid[..valid.len() - 5].to_vec(), Refusal::Malformed));
    for (datagram, reason) in &cases {
        assert_eq!(
            s.handle(1_100, datagram),
            Outcome::Refused(*reason),
            "{reason}"
        );
    }
    let counted: u64 = s.refusals().values().sum();
    assert_eq!(counted, cases.len() as u64);
    assert_eq!(s.lease_of(&ROUTER).map(|(a, _)| a), Some(address));
    assert!(!s.take_changed());
}

#[test]
fn random_bytes_never_panic_the_server() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut s = server();
    let valid = discover(INTRUDER);
    for _ in 0..5_000 {
        let mut datagram = valid.clone();
        for _ in 0..rng.gen_range(1..8) {
            let i = rng.gen_range(0..datagram.len());
            datagram[i] = rng.r#gen();
        }
        datagram.truncate(rng.gen_range(0..=datagram.len()));
        let _ = s.handle(1_000, &datagram);
    }
}

#[test]
fn bound_leases_survive_a_restart_through_the_lease_file() {
    let mut s = server();
    let address = bind(&mut s, 1_000, ROUTER);
    let text = serde_json::to_string(&LeaseFile::from_leases(&s.leases())).expect("json");
    let saved: LeaseFile = serde_json::from_str(&text).expect("parses");
    let mut restarted = DhcpServer::new(config(), saved.into_leases(), 2_000);
    assert_eq!(restarted.lease_of(&ROUTER).map(|(a, _)| a), Some(address));
    // The router's INIT-REBOOT request for its address is acknowledged; others' are not.
    let (ack, _) = reply(restarted.handle(2_001, &request(ROUTER, address, None)));
    assert_eq!(ack.kind, MessageType::Ack);
    let (nak, _) = reply(restarted.handle(2_002, &request(INTRUDER, address, None)));
    assert_eq!(nak.kind, MessageType::Nak);
    // Expired leases are not restored.
    let stale = DhcpServer::new(config(), s.leases(), 1_000 + 3_600);
    assert_eq!(stale.lease_of(&ROUTER), None);
}
