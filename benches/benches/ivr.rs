//! The IVR interpreter alone: whole calls through the shipped `main` flow (greeting, language,
//! main menu, report a problem by speech, district, confirm, submit, hear the order number),
//! prompts finishing at once. Reports events handled per second.

use std::collections::VecDeque;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ivr_flows::simulate::WORKDAY_10AM;
use ivr_flows::{Action, Event, FlowSet, Session, check_dir};

fn flows() -> Arc<FlowSet> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ivr-flows/flows");
    Arc::new(check_dir(dir).unwrap_or_else(|d| panic!("shipped flows invalid: {d:?}")))
}

fn script() -> Vec<Event> {
    let say = |t: &str| Event::SpeechResult {
        text: t.into(),
        confidence: 0.9,
        alternatives: vec![],
    };
    vec![
        Event::Digit('1'),
        Event::Digit('1'),
        say("我家小区门口的路灯坏了好几天了"),
        Event::Digit('1'),
        say("江汉区"),
        Event::Digit('1'),
        Event::Digit('1'),
        Event::Digit('1'),
    ]
}

/// Run one call; returns the number of events the interpreter handled and whether an order was
/// submitted.
fn call(set: &Arc<FlowSet>, script: &[Event]) -> (usize, bool) {
    let Some(mut session) = Session::new(Arc::clone(set), "main") else {
        panic!("no main flow");
    };
    let mut now = 0u64;
    let mut handled = 0;
    let mut submitted = false;
    let mut queue: VecDeque<Event> = VecDeque::new();
    queue.push_back(Event::CallStarted {
        caller: "13800000000".into(),
        called: "12345".into(),
        local_time: WORKDAY_10AM,
    });
    let mut inputs = script.iter().cloned();
    while let Some(event) = queue.pop_front().or_else(|| inputs.next()) {
        now += 20;
        handled += 1;
        for action in session.handle(now, event) {
            match action {
                Action::Play { id, .. } => queue.push_back(Event::PromptFinished { id }),
                Action::SubmitOrder { .. } => {
                    submitted = true;
                    queue.push_back(Event::SubmitResult {
                        order_id: "26112301000012".into(),
                    })
                }
                Action::LookupOrder { .. } => queue.push_back(Event::LookupResult {
                    status: "accepted".into(),
                }),
                _ => {}
            }
        }
        if session.is_ended() {
            break;
        }
    }
    if !session.is_ended() {
        session.handle(now + 20, Event::HangUp);
        handled += 1;
    }
    (handled, submitted)
}

fn bench(c: &mut Criterion) {
    let set = flows();
    let script = script();
    let (events, submitted) = call(&set, &script);
    assert!(
        submitted,
        "the scripted call must reach the submit step ({events} events)"
    );
    let mut group = c.benchmark_group("ivr");
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("whole_call_main_flow", |b| b.iter(|| call(&set, &script)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
