//! A transfer to a queue with `callback:`: a key that asks the gateway to call a waiting caller
//! back, keeping their place in line, as the checker reads it and as a call runs it.

mod common;

use common::{Call, WORKDAY_10AM};
use ivr_flows::model::{Lang, StepKind};
use ivr_flows::{Action, Event, PlayItem, check_sources, simulate};
use std::sync::Arc;

const FLOW: &str = r#"
flow: main
start: agent
settings:
  language: zh
steps:
  agent:
    type: transfer
    say:
      zh: { text: "正在为您转接人工服务。按0留言，按1预约回电。" }
      en: { text: "Connecting you. Press 0 to leave a message, 1 for a call back." }
    queue: general
    while_waiting: { "0": leave_message }
    callback:
      key: "1"
      say:
        zh: { text: "好的，我们会为您保留排队位置，轮到您时给您回电。现在您可以挂机了。", audio: prompts/zh/callback_queued.wav }
        en: { text: "We will keep your place in line and call you back when it is your turn. You may hang up now.", audio: prompts/en/callback_queued.wav }
    on_fail: busy
  leave_message:
    type: hangup
    say:
      zh: { text: "请在提示音后留言。" }
      en: { text: "Please leave a message." }
    reason: voicemail
  busy:
    type: hangup
    say:
      zh: { text: "坐席全忙，请稍后再拨。" }
      en: { text: "All agents are busy." }
    reason: agents_busy
"#;

fn check(text: &str) -> Result<ivr_flows::FlowSet, Vec<String>> {
    check_sources(
        &[("main.yaml".to_string(), text.to_string())],
        None,
        &|_| true,
    )
    .map_err(|d| d.iter().map(ToString::to_string).collect())
}

fn errs(from: &str, to: &str) -> String {
    let text = FLOW.replace(from, to);
    assert_ne!(text, FLOW, "the replacement applies");
    check(&text).expect_err("refused").join("\n")
}

/// A call on `text` that has played the transfer step's `say` and waits in the queue.
fn waiting(text: &str) -> Call {
    let set = Arc::new(check(text).expect("the flow checks"));
    let mut c = Call::start(set, "main", WORKDAY_10AM);
    c.settle();
    assert!(
        c.find(|a| matches!(a, Action::Transfer { .. }).then_some(()))
            .is_some(),
        "transferred"
    );
    c
}

fn count(c: &Call, f: impl Fn(&Action) -> bool) -> usize {
    c.log.iter().filter(|a| f(a)).count()
}

fn queued_callbacks(c: &Call) -> usize {
    count(c, |a| matches!(a, Action::QueueCallback))
}

fn last_items(c: &Call) -> Vec<PlayItem> {
    c.find(|a| match a {
        Action::Play { items, .. } => Some(items.clone()),
        _ => None,
    })
    .expect("something played")
}

#[test]
fn the_callback_decodes_with_its_key_and_say() {
    let set = check(FLOW).expect("the flow checks");
    let step = set
        .flow("main")
        .and_then(|f| f.step("agent"))
        .expect("agent");
    let StepKind::Transfer {
        callback: Some(cb),
        while_waiting,
        ..
    } = &step.kind
    else {
        panic!("a transfer with a callback: {:?}", step.kind);
    };
    assert_eq!(cb.key, '1');
    assert!(cb.say.is_some());
    assert_eq!(while_waiting.len(), 1);
    // Audio named in `say` is checked like any prompt's.
    let missing = check_sources(&[("main.yaml".to_string(), FLOW.to_string())], None, &|p| {
        !p.contains("callback_queued")
    })
    .expect_err("missing audio")
    .iter()
    .map(ToString::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    assert!(
        missing.contains("audio file \"prompts/zh/callback_queued.wav\" does not exist"),
        "{missing}"
    );
}

#[test]
fn bad_callbacks_are_refused_with_a_hint() {
    let e = errs("key: \"1\"", "key: \"12\"");
    assert!(
        e.contains("callback key \"12\" is not one key") && e.contains("0-9, * and #"),
        "{e}"
    );
    let e = errs("key: \"1\"", "key: \"x\"");
    assert!(e.contains("callback key \"x\" is not a phone key"), "{e}");
    let e = errs("key: \"1\"", "key: \"0\"");
    assert!(
        e.contains("callback key \"0\" is also a while_waiting key (to \"leave_message\")"),
        "{e}"
    );
    let e = errs("      key: \"1\"\n", "      kye: \"1\"\n");
    assert!(e.contains("unknown field \"kye\" in callback"), "{e}");
    assert!(e.contains("did you mean \"key\"?"), "{e}");
    assert!(e.contains("callback has no `key:`"), "{e}");
    let e = errs(
        "    callback:\n      key",
        "    callback:\n      after: 3\n      key",
    );
    assert!(e.contains("unknown field \"after\" in callback"), "{e}");
    let e = errs(
        "queue: general\n    while_waiting: { \"0\": leave_message }",
        "sip: sip:agent@pbx.example",
    );
    assert!(
        e.contains("a callback keeps a place in a queue; this transfer rings a SIP URI"),
        "{e}"
    );
}

#[test]
fn the_callback_key_while_waiting_asks_the_gateway() {
    let mut c = waiting(FLOW);
    c.send(Event::Digit('1'));
    assert!(c.last.contains(&Action::QueueCallback), "{:?}", c.last);
    assert!(!c.last.contains(&Action::CancelTransfer));
    assert!(!c.s.is_ended());
    // Pressed again while the answer is pending: ignored.
    c.send(Event::Digit('1'));
    assert!(!c.last.contains(&Action::QueueCallback), "{:?}", c.last);
    assert_eq!(queued_callbacks(&c), 1);
}

#[test]
fn a_queued_callback_is_said_then_the_call_ends() {
    let mut c = waiting(FLOW);
    c.send(Event::Digit('1'));
    c.send(Event::CallbackQueued);
    let items = last_items(&c);
    assert_eq!(
        items,
        [PlayItem::Audio {
            path: "prompts/zh/callback_queued.wav".into(),
            text: "好的，我们会为您保留排队位置，轮到您时给您回电。现在您可以挂机了。".into(),
        }]
    );
    assert!(
        c.last.iter().any(|a| matches!(
            a,
            Action::Play {
                barge_in_dtmf: false,
                barge_in_speech: false,
                ..
            }
        )),
        "the confirmation is heard to the end"
    );
    assert_eq!(c.hung_up(), None, "not before the confirmation played");
    // Keys during the confirmation change nothing.
    c.send(Event::Digit('0'));
    assert_eq!(c.hung_up(), None);
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("callback_queued"));
    assert!(c.s.is_ended());
    assert_eq!(count(&c, |a| matches!(a, Action::CancelTransfer)), 0);
}

#[test]
fn a_caller_who_hangs_up_during_the_confirmation_just_leaves() {
    let mut c = waiting(FLOW);
    c.send(Event::Digit('1'));
    c.send(Event::CallbackQueued);
    c.send(Event::HangUp);
    assert!(c.s.is_ended());
    c.settle();
    assert_eq!(c.hung_up(), None, "the caller hung up first");
}

#[test]
fn a_refused_callback_leaves_the_caller_in_line() {
    let mut c = waiting(FLOW);
    c.send(Event::Digit('1'));
    c.send(Event::CallbackRefused {
        reason: "queue offers no callbacks".into(),
    });
    assert!(
        c.last
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t.contains("queue offers no callbacks"))),
        "{:?}",
        c.last
    );
    assert!(
        !c.last
            .iter()
            .any(|a| matches!(a, Action::Play { .. } | Action::HangUp { .. })),
        "{:?}",
        c.last
    );
    assert!(!c.s.is_ended());
    // A late or unasked answer changes nothing.
    c.send(Event::CallbackQueued);
    assert!(!c.last.iter().any(|a| matches!(a, Action::Play { .. })));
    // The transfer's failure still runs on_fail.
    c.send(Event::TransferFailed {
        reason: "max wait".into(),
    });
    c.settle();
    assert!(c.heard().contains("坐席全忙"), "{}", c.heard());
    assert_eq!(c.hung_up().as_deref(), Some("agents_busy"));
}

#[test]
fn after_a_refusal_the_key_may_ask_again_and_while_waiting_keys_still_work() {
    let mut c = waiting(FLOW);
    c.send(Event::Digit('1'));
    c.send(Event::CallbackRefused {
        reason: "busy".into(),
    });
    c.send(Event::Digit('1'));
    assert_eq!(queued_callbacks(&c), 2);
    c.send(Event::Digit('0'));
    assert!(c.last.contains(&Action::CancelTransfer), "{:?}", c.last);
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("voicemail"));
    // The answer to the withdrawn request comes too late to matter.
}

#[test]
fn the_callback_key_outside_a_transfer_does_nothing_special() {
    let text = FLOW.replace("start: agent", "start: menu")
        + r#"  menu:
    type: menu
    say: { zh: { text: "按2转人工。" }, en: { text: "Press 2 for an agent." } }
    no_match: { max: 1 }
    on_fail: busy
    options:
      - digit: "2"
        goto: agent
"#;
    let set = Arc::new(check(&text).expect("the flow checks"));
    let mut c = Call::start(set, "main", WORKDAY_10AM);
    c.press("1");
    assert_eq!(queued_callbacks(&c), 0);
    assert_eq!(c.hung_up().as_deref(), Some("agents_busy"), "a no-match");
    // An answer nobody asked for is ignored.
    let mut c = waiting(FLOW);
    c.send(Event::CallbackQueued);
    assert!(!c.last.iter().any(|a| matches!(a, Action::Play { .. })));
    assert!(!c.s.is_ended());
    // A transfer without `callback:` ignores the key as before.
    let (from, to) = (
        FLOW.find("    callback:").expect("callback"),
        FLOW.find("    on_fail: busy").expect("on_fail"),
    );
    let mut c = waiting(&format!("{}{}", &FLOW[..from], &FLOW[to..]));
    c.send(Event::Digit('1'));
    assert_eq!(queued_callbacks(&c), 0);
    assert!(
        c.last
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t.contains("ignored while waiting"))),
        "{:?}",
        c.last
    );
}

#[test]
fn without_say_a_built_in_text_is_spoken_in_the_callers_language() {
    let text = r##"
flow: main
start: english
steps:
  english:
    type: set
    language: en
    next: agent
  agent:
    type: transfer
    queue: general
    callback: { key: "#" }
"##;
    let set = check(text).expect("the flow checks");
    let mut c = Call::start(Arc::new(set), "main", WORKDAY_10AM);
    c.send(Event::Digit('#'));
    c.send(Event::CallbackQueued);
    assert_eq!(
        last_items(&c),
        [PlayItem::Tts {
            text: ivr_flows::model::Callback::default_text(Lang::En).into()
        }]
    );
    assert!(
        last_items(&c)
            .iter()
            .any(|i| matches!(i, PlayItem::Tts { text } if text.contains("call you back"))),
    );
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("callback_queued"));
    assert!(
        ivr_flows::model::Callback::default_text(Lang::Zh).contains("保留排队位置"),
        "zh too"
    );
}

#[test]
fn the_simulator_queues_the_callback() {
    let set = check(FLOW).expect("the flow checks");
    let mut out = Vec::new();
    simulate(&set, "main", "1\n".as_bytes(), &mut out).expect("in-memory io");
    let out = String::from_utf8(out).expect("utf8");
    let (asked, said, hung) = (
        out.find("[callback queued]"),
        out.find("保留排队位置"),
        out.find("[hangup callback_queued]"),
    );
    assert!(asked.is_some() && asked < said && said < hung, "{out}");
    assert!(!out.contains("[out of the queue]"), "{out}");
}
