use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, Record};

use super::*;

const ISP1_DNS: &str = "192.0.2.53";
const ISP1_DNS_B: &str = "192.0.2.54";
const ISP2_DNS: &str = "198.51.100.53";
const CLIENT: u32 = 7;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn at(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 53)
}

/// Two uplinks, ISP1 active with one resolver, ISP2 with one.
fn forwarder(t0: Instant) -> Forwarder<u32> {
    let mut f = Forwarder::new(2, 16, 1);
    f.set_uplink_resolvers(t0, 0, vec![ip(ISP1_DNS)]);
    f.set_uplink_resolvers(t0, 1, vec![ip(ISP2_DNS)]);
    f.set_active_uplink(t0, Some(0));
    f
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(name).expect("name"),
            RecordType::A,
        ));
    m.to_vec().expect("encodes")
}

fn response(sent: &[u8], answers: &[(&str, [u8; 4], u32)]) -> Message {
    let asked = Message::from_vec(sent).expect("query");
    let mut m = Message::new();
    m.set_id(asked.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_available(true)
        .add_queries(asked.queries().to_vec());
    for (name, address, ttl) in answers {
        m.add_answer(Record::from_rdata(
            Name::from_str(name).expect("name"),
            *ttl,
            RData::A(A(Ipv4Addr::from(*address))),
        ));
    }
    m
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().expect("encodes")
}

/// The one datagram sent: (uplink, resolver, bytes).
fn sent(actions: &[Action<u32>]) -> (usize, SocketAddr, Vec<u8>) {
    match actions {
        [Action::Send { uplink, to, bytes }] => (*uplink, *to, bytes.clone()),
        other => panic!("expected one send, got {other:?}"),
    }
}

/// The one answer: the decoded message.
fn answered(actions: &[Action<u32>]) -> Message {
    match actions {
        [Action::Answer { client, bytes }] => {
            assert_eq!(*client, CLIENT);
            Message::from_vec(bytes).expect("answer decodes")
        }
        other => panic!("expected one answer, got {other:?}"),
    }
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_query_goes_to_the_active_uplinks_resolver_and_the_answer_comes_back_under_the_clients_id() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (uplink, to, upstream) =
        sent(&f.query(t0, CLIENT, Transport::Udp, &query(0x4242, "ehr.example.")));
    assert_eq!((uplink, to), (0, at(ISP1_DNS)));
    let reply = response(&upstream, &[("ehr.example.", [203, 0, 113, 30], 300)]);
    let answer = answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&reply)));
    assert_eq!(answer.id(), 0x4242);
    assert_eq!(addresses(&answer), vec![Ipv4Addr::new(203, 0, 113, 30)]);
    assert_eq!(f.in_flight(), 0);
}

#[test]
fn the_upstream_id_is_not_the_clients_and_varies() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let ids: std::collections::HashSet<u16> = (0..50)
        .map(|i| {
            let (_, _, upstream) = sent(&f.query(
                t0,
                CLIENT,
                Transport::Udp,
                &query(1, &format!("n{i}.test.example.")),
            ));
            Message::from_vec(&upstream).expect("query").id()
        })
        .collect();
    assert!(ids.len() >= 49, "IDs repeat: {ids:?}");
}

#[test]
fn a_cached_answer_is_served_without_asking_with_its_ttl_aged_and_expires() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (_, _, upstream) = sent(&f.query(t0, CLIENT, Transport::Udp, &query(1, "ehr.example.")));
    let reply = response(&upstream, &[("ehr.example.", [203, 0, 113, 30], 300)]);
    answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&reply)));
    let later = t0 + Duration::from_secs(100);
    let answer = answered(&f.query(later, CLIENT, Transport::Udp, &query(2, "EHR.example.")));
    assert_eq!(answer.id(), 2);
    assert_eq!(answer.answers()[0].ttl(), 200);
    assert_eq!(
        answer.queries()[0].name().to_lowercase().to_ascii(),
        "ehr.example."
    );
    // Expired after 300 s: asked again.
    sent(&f.query(
        t0 + Duration::from_secs(300),
        CLIENT,
        Transport::Udp,
        &query(3, "ehr.example."),
    ));
}

#[test]
fn spoofed_answers_from_another_address_port_or_uplink_or_with_a_guessed_id_are_dropped_and_counted()
 {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (_, _, upstream) =
        sent(&f.query(t0, CLIENT, Transport::Udp, &query(9, "bank.test.example.")));
    let forged = bytes(&response(
        &upstream,
        &[("bank.test.example.", [6, 6, 6, 6], 86_400)],
    ));
    // The attacker knows the ID (the worst case) but not the path.
    assert!(
        f.upstream(t0, 0, SocketAddr::new(ip("203.0.113.66"), 53), &forged)
            .is_empty()
    );
    assert!(
        f.upstream(t0, 0, SocketAddr::new(ip(ISP1_DNS), 5353), &forged)
            .is_empty()
    );
    assert!(f.upstream(t0, 1, at(ISP1_DNS), &forged).is_empty());
    // Without the ID: every other ID is refused.
    let asked = Message::from_vec(&upstream).expect("query").id();
    let mut guesses = 0;
    for id in (0..=u16::MAX).filter(|id| *id != asked).take(2000) {
        let mut guess = response(&upstream, &[("bank.test.example.", [6, 6, 6, 6], 86_400)]);
        guess.set_id(id);
        assert!(f.upstream(t0, 0, at(ISP1_DNS), &bytes(&guess)).is_empty());
        guesses += 1;
    }
    assert_eq!(f.dropped().get(&Dropped::WrongSource), Some(&3));
    assert_eq!(f.dropped().get(&Dropped::UnknownId), Some(&guesses));
    // The real answer is still taken, and nothing forged was cached.
    let real = response(&upstream, &[("bank.test.example.", [203, 0, 113, 30], 300)]);
    let answer = answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&real)));
    assert_eq!(addresses(&answer), vec![Ipv4Addr::new(203, 0, 113, 30)]);
    let again = answered(&f.query(t0, CLIENT, Transport::Udp, &query(10, "bank.test.example.")));
    assert_eq!(addresses(&again), vec![Ipv4Addr::new(203, 0, 113, 30)]);
}

#[test]
fn an_answer_for_another_question_is_dropped_and_cannot_poison_the_cache() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (_, _, upstream) =
        sent(&f.query(t0, CLIENT, Transport::Udp, &query(1, "ads.test.example.")));
    // Same ID, same source, but answering for bank.test.example.
    let mut other = response(
        &query(0, "bank.test.example."),
        &[("bank.test.example.", [6, 6, 6, 6], 86_400)],
    );
    other.set_id(Message::from_vec(&upstream).expect("q").id());
    assert!(f.upstream(t0, 0, at(ISP1_DNS), &bytes(&other)).is_empty());
    assert_eq!(f.dropped().get(&Dropped::WrongQuestion), Some(&1));
    // A right answer that smuggles a record for another name: only the question's key is cached.
    let mut smuggling = response(&upstream, &[("ads.test.example.", [203, 0, 113, 30], 300)]);
    smuggling.add_answer(Record::from_rdata(
        Name::from_str("bank.test.example.").expect("name"),
        86_400,
        RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
    ));
    answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&smuggling)));
    let (_, to, _) = sent(&f.query(t0, CLIENT, Transport::Udp, &query(2, "bank.test.example.")));
    assert_eq!(
        to,
        at(ISP1_DNS),
        "bank.test.example was asked upstream, not served from the cache"
    );
}

#[test]
fn at_a_failover_queries_in_flight_are_sent_again_through_the_new_uplink_at_once() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (_, _, old) = sent(&f.query(t0, CLIENT, Transport::Udp, &query(5, "n1.test.example.")));
    let t1 = t0 + Duration::from_millis(50);
    let (uplink, to, new) = sent(&f.set_active_uplink(t1, Some(1)));
    assert_eq!((uplink, to), (1, at(ISP2_DNS)));
    let (old_id, new_id) = (
        Message::from_vec(&old).expect("q").id(),
        Message::from_vec(&new).expect("q").id(),
    );
    assert_ne!(old_id, new_id);
    assert_eq!(f.resent_on_failover(), 1);
    // A late answer through the dead uplink is not taken.
    let late = response(&old, &[("n1.test.example.", [203, 0, 113, 30], 60)]);
    assert!(f.upstream(t1, 0, at(ISP1_DNS), &bytes(&late)).is_empty());
    let reply = response(&new, &[("n1.test.example.", [203, 0, 113, 30], 60)]);
    assert_eq!(
        answered(&f.upstream(t1, 1, at(ISP2_DNS), &bytes(&reply))).id(),
        5
    );
    // New queries go through the new uplink.
    let (uplink, _, _) = sent(&f.query(t1, CLIENT, Transport::Udp, &query(6, "n2.test.example.")));
    assert_eq!(uplink, 1);
}

#[test]
fn an_unanswered_query_goes_to_the_next_resolver_and_fails_with_servfail_in_the_end() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    f.set_uplink_resolvers(t0, 0, vec![ip(ISP1_DNS), ip(ISP1_DNS_B)]);
    let (_, to, _) = sent(&f.query(t0, CLIENT, Transport::Udp, &query(5, "slow.test.example.")));
    assert_eq!(to, at(ISP1_DNS));
    assert!(f.poll(t0 + QUERY_TIMEOUT / 2).is_empty());
    assert_eq!(f.next_deadline(), Some(t0 + QUERY_TIMEOUT));
    let (_, to, _) = sent(&f.poll(t0 + QUERY_TIMEOUT));
    assert_eq!(to, at(ISP1_DNS_B));
    let mut now = t0 + QUERY_TIMEOUT;
    let mut last = Vec::new();
    while now < t0 + GIVE_UP_AFTER + QUERY_TIMEOUT {
        now += QUERY_TIMEOUT;
        last = f.poll(now);
        if matches!(last.as_slice(), [Action::Answer { .. }]) {
            break;
        }
    }
    let answer = answered(&last);
    assert_eq!(answer.response_code(), ResponseCode::ServFail);
    assert_eq!(answer.id(), 5);
    assert_eq!(f.in_flight(), 0);
}

#[test]
fn a_resolver_removed_from_the_active_uplink_is_not_waited_on() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    sent(&f.query(t0, CLIENT, Transport::Udp, &query(5, "x.test.example.")));
    let (_, to, _) = sent(&f.set_uplink_resolvers(t0, 0, vec![ip(ISP1_DNS_B)]));
    assert_eq!(to, at(ISP1_DNS_B));
}

#[test]
fn without_an_active_uplink_a_client_hears_servfail_at_once() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    f.set_active_uplink(t0, None);
    let answer = answered(&f.query(t0, CLIENT, Transport::Udp, &query(5, "x.test.example.")));
    assert_eq!(answer.response_code(), ResponseCode::ServFail);
}

#[test]
fn a_negative_answer_is_cached_briefly_and_servfail_not_at_all() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (_, _, upstream) = sent(&f.query(t0, CLIENT, Transport::Udp, &query(1, "nope.example.")));
    let mut nx = response(&upstream, &[]);
    nx.set_response_code(ResponseCode::NXDomain);
    let soa = SOA::new(
        Name::from_str("ns.example.").expect("n"),
        Name::from_str("admin.example.").expect("n"),
        1,
        3600,
        600,
        86_400,
        3600,
    );
    nx.add_name_server(Record::from_rdata(
        Name::from_str("example.").expect("n"),
        3600,
        RData::SOA(soa),
    ));
    answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&nx)));
    let cached = answered(&f.query(
        t0 + Duration::from_secs(29),
        CLIENT,
        Transport::Udp,
        &query(2, "nope.example."),
    ));
    assert_eq!(cached.response_code(), ResponseCode::NXDomain);
    let (_, _, upstream) = sent(&f.query(
        t0 + NEGATIVE_TTL,
        CLIENT,
        Transport::Udp,
        &query(3, "nope.example."),
    ));
    let mut fail = response(&upstream, &[]);
    fail.set_response_code(ResponseCode::ServFail);
    assert_eq!(
        answered(&f.upstream(t0 + NEGATIVE_TTL, 0, at(ISP1_DNS), &bytes(&fail))).response_code(),
        ResponseCode::ServFail
    );
    sent(&f.query(
        t0 + NEGATIVE_TTL,
        CLIENT,
        Transport::Udp,
        &query(4, "nope.example."),
    ));
}

#[test]
fn the_cache_is_bounded_and_drops_the_entry_nearest_expiry() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    for i in 0..20u32 {
        let name = format!("n{i}.test.example.");
        let (_, _, upstream) = sent(&f.query(t0, CLIENT, Transport::Udp, &query(1, &name)));
        let reply = response(&upstream, &[(&name, [203, 0, 113, 30], 100 + i)]);
        answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&reply)));
    }
    assert_eq!(f.cached(), 16);
    // The shortest-lived went first; the longest-lived is still there.
    sent(&f.query(t0, CLIENT, Transport::Udp, &query(1, "n0.test.example.")));
    answered(&f.query(t0, CLIENT, Transport::Udp, &query(1, "n19.test.example.")));
}

#[test]
fn an_answer_too_large_for_a_udp_client_is_truncated_and_whole_over_tcp() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let (_, _, upstream) =
        sent(&f.query(t0, CLIENT, Transport::Udp, &query(1, "big.test.example.")));
    let many: Vec<(&str, [u8; 4], u32)> = (0..40u8)
        .map(|i| ("big.test.example.", [203, 0, 113, i], 300))
        .collect();
    let reply = response(&upstream, &many);
    let answer = answered(&f.upstream(t0, 0, at(ISP1_DNS), &bytes(&reply)));
    assert!(answer.truncated());
    assert!(answer.answers().is_empty());
    let whole = answered(&f.query(t0, CLIENT, Transport::Tcp, &query(2, "big.test.example.")));
    assert_eq!(whole.answers().len(), 40);
}

#[test]
fn malformed_queries_and_responses_posing_as_queries_are_refused_and_counted() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    assert!(f.query(t0, CLIENT, Transport::Udp, &[1, 2, 3]).is_empty());
    let mut header_only = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    header_only.extend_from_slice(&[0xff; 5]);
    assert_eq!(
        answered(&f.query(t0, CLIENT, Transport::Udp, &header_only)).response_code(),
        ResponseCode::FormErr
    );
    let as_response = bytes(&response(&query(1, "x.example."), &[]));
    assert!(f.query(t0, CLIENT, Transport::Udp, &as_response).is_empty());
    assert_eq!(f.dropped().get(&Dropped::MalformedQuery), Some(&3));
    assert!(
        f.upstream(t0, 0, at(ISP1_DNS), &query(1, "x.example."))
            .is_empty()
    );
    assert_eq!(f.dropped().get(&Dropped::MalformedAnswer), Some(&1));
    assert_eq!(f.in_flight(), 0);
}

#[test]
fn random_bytes_from_clients_and_upstream_never_panic_the_forwarder() {
    let t0 = Instant::now();
    let mut f = forwarder(t0);
    let mut rng = StdRng::seed_from_u64(17);
    let valid = query(1, "ehr.example.");
    for _ in 0..5_000 {
        let mut datagram = valid.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..datagram.len());
            datagram[i] = rng.r#gen();
        }
        let _ = f.query(t0, CLIENT, Transport::Udp, &datagram);
        let _ = f.upstream(t0, 0, at(ISP1_DNS), &datagram);
    }
}
