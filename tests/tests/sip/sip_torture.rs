//! The RFC 4475 torture corpus (from `sipx-testkit`, bit-exact from the RFC's archive) against
//! our parser and endpoint. Each case carries the layer that must object; we assert that layer:
//! the structural parser for framing and start-line faults, the typed header accessor for
//! value faults, and the endpoint's validation (a 400 or 505) for semantic faults. Every
//! message also goes through the endpoint, which must answer sensibly and never panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use sip::message::{Headers, Message};
use sip::parse::{self, Fault};
use sip::{Endpoint, Output, SipSettings, Transport};
use sipx_testkit::rfc4475::{self, Case, Expect};

fn endpoint_statuses(case: &Case) -> Vec<u16> {
    let mut ep = Endpoint::new(SipSettings::default());
    let from: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
    ep.handle_datagram(Instant::now(), from, Transport::Udp, case.bytes);
    let mut statuses = Vec::new();
    loop {
        match ep.poll_output() {
            Output::Transmit(t) => match parse::parse_datagram(&t.bytes) {
                Ok(Message::Response(r)) => statuses.push(r.status),
                other => panic!("{}: we sent something unparsable: {other:?}", case.name),
            },
            Output::Event(_) => {}
            Output::Timeout(_) => return statuses,
        }
    }
}

fn typed(headers: &Headers, name: &str) -> Result<(), String> {
    let r = match name {
        "Via" => headers.via().map(drop),
        "CSeq" => headers.cseq().map(drop),
        "To" => headers.to().map(drop),
        "From" => headers.from().map(drop),
        "Contact" => headers.contact().map(drop),
        "Date" => headers.date().map(drop),
        "Max-Forwards" => headers.max_forwards().map(drop),
        other => panic!("no typed accessor for {other}"),
    };
    r.map_err(|e| e.to_string())
}

/// What the endpoint answers each request in the corpus (responses are never answered).
fn expected_answers() -> BTreeMap<&'static str, Vec<u16>> {
    BTreeMap::from([
        // 3.1.1 valid
        // wsinv carries a To tag: a mid-dialog request for a dialog we do not have
        ("wsinv", vec![481]),
        ("intmeth", vec![501]),
        ("esc01", vec![100]),
        ("escnull", vec![405]),
        // RE%47IST%45R is not REGISTER: method names are not unescaped
        ("esc02", vec![501]),
        ("lwsdisp", vec![200]),
        ("longreq", vec![100]),
        ("dblreq", vec![405]),
        ("semiuri", vec![200]),
        ("transports", vec![200]),
        ("mpart01", vec![405]), // a MESSAGE
        ("unreason", vec![]),
        ("noreason", vec![]),
        // 3.1.2 invalid: answered 400 where the headers allow it
        ("clerr", vec![400]),
        ("ncl", vec![400]),
        ("ltgtruri", vec![400]),
        ("lwsruri", vec![400]),
        ("lwsstart", vec![400]),
        ("trws", vec![400]),
        ("bigcode", vec![]),
        ("badinv01", vec![400]),
        ("scalar02", vec![400]),
        ("scalarlg", vec![]),
        ("quotbal", vec![400]),
        ("baddate", vec![100]),
        ("regbadct", vec![400]),
        ("badaspec", vec![400]),
        ("baddn", vec![]),
        ("escruri", vec![400]),
        ("badvers", vec![505]),
        ("mismatch01", vec![400]),
        ("mismatch02", vec![400]),
        // 3.2, 3.3, 3.4
        ("badbranch", vec![200]),
        ("insuf", vec![]),
        ("unkscm", vec![200]),
        ("novelsc", vec![200]),
        ("unksm2", vec![405]),
        ("bext01", vec![420]),
        ("invut", vec![415]),
        ("regaut01", vec![405]),
        ("multi01", vec![400]),
        ("mcl01", vec![400]),
        ("bcast", vec![]),
        ("zeromf", vec![483]),
        ("cparam01", vec![405]),
        ("cparam02", vec![405]),
        ("regescrt", vec![405]),
        ("sdp01", vec![406]),
        ("inv2543", vec![100]),
    ])
}

#[test]
fn every_classified_case_meets_its_expectation() {
    let mut failures = Vec::new();
    for case in rfc4475::classified() {
        let parsed = parse::parse_datagram(case.bytes);
        let problem = match (case.expect, &parsed) {
            (Expect::ParseOk, Ok(_)) => None,
            (Expect::ParseOk, Err(e)) => Some(format!("should parse, got {e}")),
            (Expect::ParseErr(f), Err(e)) => {
                let want = match f {
                    rfc4475::Fault::StartLine => Fault::StartLine,
                    rfc4475::Fault::HeaderSyntax => Fault::HeaderSyntax,
                    rfc4475::Fault::Framing => Fault::Framing,
                    _ => e.fault,
                };
                (e.fault != want).then(|| format!("wrong fault {:?} ({e}), want {want:?}", e.fault))
            }
            (Expect::ParseErr(_), Ok(_)) => Some("should not parse".into()),
            (Expect::HeaderErr(name), Ok(m)) => match typed(m.headers(), name) {
                Err(_) => None,
                Ok(()) => Some(format!("{name} should not read")),
            },
            (Expect::HeaderErr(_), Err(e)) => Some(format!("should parse, got {e}")),
            (Expect::ValidateErr(_), Ok(_)) => None,
            (Expect::ValidateErr(_), Err(e)) => Some(format!("should parse, got {e}")),
            (_, _) => None,
        };
        if let Some(p) = problem {
            failures.push(format!("{} ({}): {p}", case.name, case.section));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_endpoint_answers_every_case_sensibly() {
    let expected = expected_answers();
    let mut failures = Vec::new();
    for case in rfc4475::classified() {
        let got = endpoint_statuses(case);
        let want = expected
            .get(case.name)
            .unwrap_or_else(|| panic!("no expectation for {}", case.name));
        if &got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
        }
        if matches!(case.expect, Expect::ValidateErr(_) | Expect::ParseErr(_)) {
            assert!(
                got.iter().all(|s| *s >= 400),
                "{}: an invalid message was accepted",
                case.name
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(expected.len(), rfc4475::classified().count());
}

#[test]
fn unreferenced_and_truncated_cases_never_panic() {
    for case in rfc4475::CASES {
        let _ = endpoint_statuses(case);
        for cut in 0..case.bytes.len() {
            let part = &case.bytes[..cut];
            let _ = parse::parse_datagram(part);
            let _ = parse::frame(part);
        }
    }
}

#[test]
fn valid_requests_survive_a_round_trip() {
    for case in rfc4475::expecting(Expect::ParseOk) {
        let Ok(m) = parse::parse_datagram(case.bytes) else {
            continue;
        };
        let bytes = sip::serialize::message(&m);
        let mut again =
            parse::parse_stream_message(&bytes).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        // Content-Length is rewritten (and moved last) by the serializer
        let mut m = m;
        for msg in [&mut m, &mut again] {
            match msg {
                Message::Request(r) => r.headers.remove("Content-Length"),
                Message::Response(r) => r.headers.remove("Content-Length"),
            }
        }
        assert_eq!(again, m, "{}", case.name);
    }
}

#[test]
fn compact_forms_folding_and_case_are_read_from_wsinv() {
    let case = rfc4475::case("wsinv").expect("wsinv");
    let Ok(Message::Request(r)) = parse::parse_datagram(case.bytes) else {
        panic!("wsinv is a request");
    };
    let h = &r.headers;
    assert_eq!(h.max_forwards(), Ok(68));
    assert_eq!(h.cseq().expect("cseq").seq, 9);
    assert_eq!(
        h.via().expect("via").len(),
        3,
        "multiple values in one header and folded"
    );
    assert_eq!(h.to().expect("to").tag(), Some("1918181833n"));
    assert_eq!(h.from().expect("from").tag(), Some("98asjd8"));
    assert_eq!(h.content_type().as_deref(), Some("application/sdp"));
    assert!(h.get("s").is_some(), "compact Subject");
    assert_eq!(r.body.len(), 150);
}
