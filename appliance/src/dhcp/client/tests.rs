//! Scripted `(now, input)` sequences against a hand-written server: hours of leases in
//! microseconds.

use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 1);
const ADDRESS: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 123);
const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

fn rng() -> StdRng {
    StdRng::seed_from_u64(17)
}

fn decode(packet: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(packet)).expect("the client's packet decodes")
}

/// The single datagram among `actions`, decoded.
fn sent(actions: &[Action]) -> (Destination, Message) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, packet } => Some((*to, decode(packet))),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "one datagram expected in {actions:?}");
    sends.into_iter().next().expect("one")
}

fn kind(msg: &Message) -> MessageType {
    msg.opts().msg_type().expect("a message type")
}

/// A server's reply of `kind` to `request`, for `address`, with a lease of `lease` seconds and
/// T1/T2 of half and 7/8 of it.
fn reply(request: &Message, kind: MessageType, address: Ipv4Addr, lease: u32) -> Vec<u8> {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootReply)
        .set_xid(request.xid())
        .set_chaddr(request.chaddr())
        .set_yiaddr(address);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(SERVER));
    if kind != MessageType::Nak {
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![SERVER]));
        opts.insert(DhcpOption::DomainNameServer(vec![RESOLVER]));
        opts.insert(DhcpOption::AddressLeaseTime(lease));
    }
    encode(&msg)
}

/// A client bound to [`ADDRESS`] for `lease` seconds at `t0`, and that lease.
fn bound(t0: Instant, lease: u32, rng: &mut StdRng) -> (Client, Lease) {
    let mut client = Client::new(MAC, None);
    let (_, discover) = sent(&client.handle(t0, Input::Start, rng));
    let offer = reply(&discover, MessageType::Offer, ADDRESS, lease);
    let (_, request) = sent(&client.handle(t0, Input::Datagram(&offer), rng));
    let ack = reply(&request, MessageType::Ack, ADDRESS, lease);
    let actions = client.handle(t0, Input::Datagram(&ack), rng);
    let [
        Action::Bound {
            lease,
            changed: true,
        },
    ] = actions.as_slice()
    else {
        panic!("bound expected: {actions:?}");
    };
    (client, lease.clone())
}

#[test]
fn discover_offer_request_ack_binds_the_offered_address_with_gateway_resolvers_and_times() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut client = Client::new(MAC, None);
    let (to, discover) = sent(&client.handle(t0, Input::Start, &mut rng));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(kind(&discover), MessageType::Discover);
    assert!(discover.flags().broadcast(), "replies must be broadcast");
    assert_eq!(&discover.chaddr()[..6], &MAC);
    assert_eq!(client.state_name(), "SELECTING");

    let offer = reply(&discover, MessageType::Offer, ADDRESS, 3600);
    let (to, request) = sent(&client.handle(t0, Input::Datagram(&offer), &mut rng));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(kind(&request), MessageType::Request);
    assert_eq!(request.xid(), discover.xid());
    assert_eq!(
        request.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDRESS))
    );
    assert_eq!(
        request.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(client.state_name(), "REQUESTING");

    let ack = reply(&request, MessageType::Ack, ADDRESS, 3600);
    let actions = client.handle(t0, Input::Datagram(&ack), &mut rng);
    assert_eq!(
        actions,
        vec![Action::Bound {
            lease: Lease {
                address: ADDRESS,
                prefix_len: 24,
                gateway: Some(SERVER),
                resolvers: vec![RESOLVER],
                server: SERVER,
                lease_time: Duration::from_secs(3600),
                renew_after: Duration::from_secs(1800),
                rebind_after: Duration::from_secs(3150),
            },
            changed: true,
        }]
    );
    assert_eq!(client.state_name(), "BOUND");
    assert_eq!(client.next_deadline(), Some(t0 + Duration::from_secs(1800)));
}

#[test]
fn at_t1_the_client_renews_by_unicast_to_its_server_and_a_same_ack_changes_nothing() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, lease) = bound(t0, 3600, &mut rng);
    assert!(
        client
            .handle(t0 + Duration::from_secs(1799), Input::Tick, &mut rng)
            .is_empty(),
        "nothing before T1"
    );
    let t1 = t0 + Duration::from_secs(1800);
    let (to, renew) = sent(&client.handle(t1, Input::Tick, &mut rng));
    assert_eq!(to, Destination::Unicast(SERVER));
    assert_eq!(kind(&renew), MessageType::Request);
    assert_eq!(renew.ciaddr(), ADDRESS);
    assert!(!renew.flags().broadcast());
    assert_eq!(renew.opts().get(OptionCode::ServerIdentifier), None);
    assert_eq!(renew.opts().get(OptionCode::RequestedIpAddress), None);
    assert_eq!(client.state_name(), "RENEWING");

    let ack = reply(&renew, MessageType::Ack, ADDRESS, 3600);
    let actions = client.handle(t1, Input::Datagram(&ack), &mut rng);
    assert_eq!(
        actions,
        vec![Action::Bound {
            lease,
            changed: false
        }]
    );
    assert_eq!(
        client.next_deadline(),
        Some(t1 + Duration::from_secs(1800)),
        "the lease runs from the renewal"
    );
}

#[test]
fn an_unanswered_renewal_is_retried_and_at_t2_the_client_rebinds_by_broadcast() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, _) = bound(t0, 3600, &mut rng);
    let t1 = t0 + Duration::from_secs(1800);
    let (_, first) = sent(&client.handle(t1, Input::Tick, &mut rng));
    // Half of the 1350 s left to T2.
    assert_eq!(client.next_deadline(), Some(t1 + Duration::from_secs(675)));
    let mut now = t1;
    let mut renewals = 1;
    while let Some(next) = client.next_deadline()
        && next < t0 + Duration::from_secs(3150)
    {
        now = next;
        let (to, again) = sent(&client.handle(now, Input::Tick, &mut rng));
        assert_eq!(to, Destination::Unicast(SERVER));
        assert_eq!(again.xid(), first.xid());
        renewals += 1;
    }
    assert!(renewals >= 3, "renewal retried: {renewals}");
    assert_eq!(client.state_name(), "RENEWING");
    let t2 = client.next_deadline().expect("T2");
    assert_eq!(t2, t0 + Duration::from_secs(3150));
    let (to, rebind) = sent(&client.handle(t2, Input::Tick, &mut rng));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(rebind.ciaddr(), ADDRESS);
    assert!(rebind.flags().broadcast());
    assert_eq!(client.state_name(), "REBINDING");
    assert!(now < t2);
}

#[test]
fn when_the_lease_expires_unanswered_it_is_lost_and_the_client_discovers_again() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, _) = bound(t0, 120, &mut rng);
    let mut now = t0;
    let mut lost_at = None;
    for _ in 0..50 {
        now = client.next_deadline().expect("a deadline");
        let actions = client.handle(now, Input::Tick, &mut rng);
        if actions.contains(&Action::Lost) {
            let (to, discover) = sent(&actions);
            assert_eq!(to, Destination::Broadcast);
            assert_eq!(kind(&discover), MessageType::Discover);
            lost_at = Some(now);
            break;
        }
        assert!(client.lease().is_some(), "still leased at {:?}", now - t0);
    }
    assert_eq!(lost_at, Some(t0 + Duration::from_secs(120)));
    assert_eq!(client.state_name(), "SELECTING");
    assert_eq!(client.lease(), None);
    assert!(now >= t0 + Duration::from_secs(120));
}

#[test]
fn a_nak_at_renewal_loses_the_lease_and_restarts_discovery() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, _) = bound(t0, 3600, &mut rng);
    let t1 = t0 + Duration::from_secs(1800);
    let (_, renew) = sent(&client.handle(t1, Input::Tick, &mut rng));
    let nak = reply(&renew, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0);
    let actions = client.handle(t1, Input::Datagram(&nak), &mut rng);
    assert_eq!(actions.first(), Some(&Action::Lost));
    let (_, discover) = sent(&actions);
    assert_eq!(kind(&discover), MessageType::Discover);
    assert_ne!(discover.xid(), renew.xid(), "a new transaction");
    assert_eq!(client.counters().naks, 1);
}

#[test]
fn a_nak_to_the_request_restarts_discovery_without_binding() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut client = Client::new(MAC, None);
    let (_, discover) = sent(&client.handle(t0, Input::Start, &mut rng));
    let offer = reply(&discover, MessageType::Offer, ADDRESS, 3600);
    let (_, request) = sent(&client.handle(t0, Input::Datagram(&offer), &mut rng));
    let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0);
    let actions = client.handle(t0, Input::Datagram(&nak), &mut rng);
    let (_, again) = sent(&actions);
    assert_eq!(kind(&again), MessageType::Discover);
    assert!(!actions.iter().any(|a| matches!(a, Action::Bound { .. })));
    assert_eq!(client.state_name(), "SELECTING");
}

#[test]
fn an_address_changed_at_renewal_is_reported_as_a_changed_lease() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, _) = bound(t0, 3600, &mut rng);
    let t1 = t0 + Duration::from_secs(1800);
    let (_, renew) = sent(&client.handle(t1, Input::Tick, &mut rng));
    let moved = Ipv4Addr::new(100, 64, 1, 150);
    let ack = reply(&renew, MessageType::Ack, moved, 600);
    let actions = client.handle(t1, Input::Datagram(&ack), &mut rng);
    let [Action::Bound { lease, changed }] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert!(changed);
    assert_eq!(lease.address, moved);
    assert_eq!(lease.lease_time, Duration::from_secs(600));
    assert_eq!(client.lease().map(|l| l.address), Some(moved));
}

#[test]
fn offers_for_another_transaction_or_another_mac_and_garbage_are_ignored_and_counted() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut client = Client::new(MAC, None);
    let (_, discover) = sent(&client.handle(t0, Input::Start, &mut rng));

    let mut other_xid = discover.clone();
    other_xid.set_xid(discover.xid().wrapping_add(1));
    let offer = reply(&other_xid, MessageType::Offer, ADDRESS, 3600);
    assert!(
        client
            .handle(t0, Input::Datagram(&offer), &mut rng)
            .is_empty()
    );

    let mut other_mac = discover.clone();
    other_mac.set_chaddr(&[0x02, 0, 0, 0, 0, 0x99]);
    let offer = reply(&other_mac, MessageType::Offer, ADDRESS, 3600);
    assert!(
        client
            .handle(t0, Input::Datagram(&offer), &mut rng)
            .is_empty()
    );

    assert!(
        client
            .handle(t0, Input::Datagram(b"not dhcp at all"), &mut rng)
            .is_empty()
    );
    // Our own DISCOVER looped back (a BOOTREQUEST) is not a reply.
    let echo = encode(&discover);
    assert!(
        client
            .handle(t0, Input::Datagram(&echo), &mut rng)
            .is_empty()
    );

    let counters = client.counters();
    assert_eq!(counters.foreign, 2);
    assert_eq!(counters.malformed, 2);
    assert_eq!(client.state_name(), "SELECTING", "nothing was taken");
    // The genuine offer still works afterwards.
    let offer = reply(&discover, MessageType::Offer, ADDRESS, 3600);
    let (_, request) = sent(&client.handle(t0, Input::Datagram(&offer), &mut rng));
    assert_eq!(kind(&request), MessageType::Request);
}

#[test]
fn an_ack_while_bound_is_unexpected_and_changes_nothing() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, lease) = bound(t0, 3600, &mut rng);
    let mut fake = Message::default();
    fake.set_xid(1).set_chaddr(&MAC);
    let ack = reply(&fake, MessageType::Ack, Ipv4Addr::new(100, 64, 1, 7), 3600);
    assert!(
        client
            .handle(t0, Input::Datagram(&ack), &mut rng)
            .is_empty()
    );
    assert_eq!(client.lease(), Some(&lease));
    assert_eq!(client.counters().unexpected, 1);
}

#[test]
fn retransmission_delays_double_from_4_to_64_seconds_within_one_second_of_jitter() {
    let mut rng = rng();
    for (sent, base) in [(1, 4), (2, 8), (3, 16), (4, 32), (5, 64), (6, 64), (40, 64)] {
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..500 {
            let d = retransmit_delay(sent, &mut rng);
            let base = Duration::from_secs(base);
            assert!(d >= base - RETRANSMIT_JITTER && d <= base + RETRANSMIT_JITTER);
            seen_low |= d < base - RETRANSMIT_JITTER / 2;
            seen_high |= d > base + RETRANSMIT_JITTER / 2;
        }
        assert!(seen_low && seen_high, "jitter spreads both ways at {sent}");
    }
}

#[test]
fn unanswered_discovers_back_off_and_two_clients_started_together_drift_apart() {
    let t0 = Instant::now();
    let mut a = Client::new(MAC, None);
    let mut b = Client::new([0x02, 0, 0, 0, 0, 0x02], None);
    let mut rng_a = StdRng::seed_from_u64(1);
    let mut rng_b = StdRng::seed_from_u64(2);
    a.handle(t0, Input::Start, &mut rng_a);
    b.handle(t0, Input::Start, &mut rng_b);
    let mut prev = t0;
    for base in [4u64, 8, 16, 32, 64, 64] {
        let next = a.next_deadline().expect("a retransmission");
        let gap = next - prev;
        assert!(
            gap >= Duration::from_secs(base - 1) && gap <= Duration::from_secs(base + 1),
            "{gap:?} after {base}"
        );
        let (_, again) = sent(&a.handle(next, Input::Tick, &mut rng_a));
        assert_eq!(kind(&again), MessageType::Discover);
        prev = next;
        let next_b = b.next_deadline().expect("b");
        b.handle(next_b, Input::Tick, &mut rng_b);
    }
    assert_ne!(a.next_deadline(), b.next_deadline());
    assert_eq!(a.counters().retransmissions, 6);
}

#[test]
fn a_remembered_address_is_asked_for_first_and_a_nak_falls_back_to_discovery() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut client = Client::new(MAC, Some(ADDRESS));
    let (to, request) = sent(&client.handle(t0, Input::Start, &mut rng));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(kind(&request), MessageType::Request);
    assert_eq!(client.state_name(), "INIT-REBOOT");
    assert_eq!(
        request.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDRESS))
    );
    assert_eq!(request.opts().get(OptionCode::ServerIdentifier), None);
    let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0);
    let (_, discover) = sent(&client.handle(t0, Input::Datagram(&nak), &mut rng));
    assert_eq!(kind(&discover), MessageType::Discover);
}

#[test]
fn a_remembered_address_acked_binds_without_discovery_and_silence_falls_back_to_discovery() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut client = Client::new(MAC, Some(ADDRESS));
    let (_, request) = sent(&client.handle(t0, Input::Start, &mut rng));
    let ack = reply(&request, MessageType::Ack, ADDRESS, 3600);
    let actions = client.handle(t0, Input::Datagram(&ack), &mut rng);
    assert!(
        matches!(actions.as_slice(), [Action::Bound { lease, changed: true }] if lease.address == ADDRESS)
    );

    let mut silent = Client::new(MAC, Some(ADDRESS));
    silent.handle(t0, Input::Start, &mut rng);
    let mut now = t0;
    for _ in 0..REBOOT_ATTEMPTS {
        now = silent.next_deadline().expect("deadline");
        let (_, msg) = sent(&silent.handle(now, Input::Tick, &mut rng));
        if kind(&msg) == MessageType::Discover {
            break;
        }
    }
    assert_eq!(
        silent.state_name(),
        "SELECTING",
        "gave up the remembered address"
    );
    assert!(now - t0 <= Duration::from_secs(15));
}

#[test]
fn server_times_out_of_order_are_replaced_by_the_rfc_defaults() {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootReply).set_yiaddr(ADDRESS);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Ack));
    opts.insert(DhcpOption::ServerIdentifier(SERVER));
    opts.insert(DhcpOption::AddressLeaseTime(800));
    opts.insert(DhcpOption::Renewal(900));
    opts.insert(DhcpOption::Rebinding(1000));
    let lease = lease_of(&msg, None).expect("a lease");
    assert_eq!(lease.renew_after, Duration::from_secs(400));
    assert_eq!(lease.rebind_after, Duration::from_secs(700));
    assert_eq!(lease.gateway, None);
}

#[test]
fn when_the_link_comes_back_the_held_lease_is_verified_at_once_and_kept_when_acked() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, lease) = bound(t0, 3600, &mut rng);
    let t = t0 + Duration::from_secs(100);
    let (to, verify) = sent(&client.handle(t, Input::LinkUp, &mut rng));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(kind(&verify), MessageType::Request);
    assert_eq!(
        verify.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDRESS))
    );
    assert_eq!(client.state_name(), "INIT-REBOOT");
    assert_eq!(client.lease(), Some(&lease), "still in use while verified");
    let ack = reply(&verify, MessageType::Ack, ADDRESS, 3600);
    assert_eq!(
        client.handle(t, Input::Datagram(&ack), &mut rng),
        vec![Action::Bound {
            lease,
            changed: false
        }]
    );
}

#[test]
fn when_the_link_comes_back_on_another_network_the_nak_ends_the_lease() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, _) = bound(t0, 3600, &mut rng);
    let (_, verify) = sent(&client.handle(t0, Input::LinkUp, &mut rng));
    let nak = reply(&verify, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0);
    let actions = client.handle(t0, Input::Datagram(&nak), &mut rng);
    assert_eq!(actions.first(), Some(&Action::Lost));
    let (_, discover) = sent(&actions);
    assert_eq!(kind(&discover), MessageType::Discover);
}

#[test]
fn when_no_server_answers_after_the_link_comes_back_the_unexpired_lease_stays_in_use() {
    let mut rng = rng();
    let t0 = Instant::now();
    let (mut client, lease) = bound(t0, 3600, &mut rng);
    sent(&client.handle(t0, Input::LinkUp, &mut rng));
    let mut now = t0;
    for _ in 0..REBOOT_ATTEMPTS {
        now = client.next_deadline().expect("deadline");
        let actions = client.handle(now, Input::Tick, &mut rng);
        assert!(!actions.contains(&Action::Lost), "{actions:?}");
    }
    assert_eq!(client.state_name(), "BOUND");
    assert_eq!(client.lease(), Some(&lease));
    assert_eq!(client.next_deadline(), Some(t0 + Duration::from_secs(1800)));
    assert!(now < t0 + Duration::from_secs(20));
}

#[test]
fn a_link_that_comes_back_ends_a_long_backoff_with_a_discover_now() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut client = Client::new(MAC, None);
    client.handle(t0, Input::Start, &mut rng);
    for _ in 0..5 {
        let next = client.next_deadline().expect("deadline");
        client.handle(next, Input::Tick, &mut rng);
    }
    let waiting = client.next_deadline().expect("deadline");
    let now = waiting - Duration::from_secs(30);
    let (_, discover) = sent(&client.handle(now, Input::LinkUp, &mut rng));
    assert_eq!(kind(&discover), MessageType::Discover);
    assert!(client.next_deadline().expect("deadline") < now + Duration::from_secs(6));
}
