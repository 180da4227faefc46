//! A transfer to a queue: its priority, and the keys that take a waiting caller out of the
//! queue (`while_waiting`), as the checker reads them and as a call runs them.

use ivr_flows::{check_sources, simulate};

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
    priority: 5
    while_waiting:
      "0": message
      "1": callback
    on_fail: message
  message:
    type: hangup
    say:
      zh: { text: "请在提示音后留言。" }
      en: { text: "Please leave a message." }
    reason: voicemail
  callback:
    type: hangup
    say:
      zh: { text: "我们会尽快回电。" }
      en: { text: "We will call you back." }
    reason: callback
"#;

fn check(text: &str) -> Result<ivr_flows::FlowSet, Vec<String>> {
    check_sources(
        &[("main.yaml".to_string(), text.to_string())],
        None,
        &|_| true,
    )
    .map_err(|d| d.iter().map(ToString::to_string).collect())
}

fn run(script: &str) -> String {
    let set = check(FLOW).expect("the flow checks");
    let mut out = Vec::new();
    simulate(&set, "main", script.as_bytes(), &mut out).expect("in-memory io");
    String::from_utf8(out).expect("utf8")
}

#[test]
fn the_transfer_carries_its_priority() {
    let out = run("");
    assert!(
        out.contains("[transfer Queue(\"general\") priority 5]"),
        "{out}"
    );
}

#[test]
fn a_key_while_waiting_takes_the_caller_out_of_the_queue_to_its_step() {
    let out = run("1\n");
    assert!(out.contains("[out of the queue]"), "{out}");
    assert!(out.contains("我们会尽快回电。"), "{out}");
    assert!(out.contains("[hangup callback]"), "{out}");
}

#[test]
fn other_keys_while_waiting_are_ignored() {
    let out = run("5\n0\n");
    let (five, zero) = (out.find("> 5"), out.find("> 0"));
    let left = out.find("[out of the queue]");
    assert!(five < zero && zero < left, "left the queue on 5: {out}");
    assert!(out.contains("[hangup voicemail]"), "{out}");
}

#[test]
fn bad_priorities_and_keys_are_refused_with_a_hint() {
    let errs = |from: &str, to: &str| {
        let text = FLOW.replace(from, to);
        check(&text).expect_err("refused").join("\n")
    };
    let e = errs("priority: 5", "priority: 12");
    assert!(
        e.contains("priority 12 is out of range") && e.contains("0 (normal) to 9"),
        "{e}"
    );
    let e = errs("\"1\": callback", "\"12\": callback");
    assert!(e.contains("\"12\" in while_waiting is not one key"), "{e}");
    let e = errs("\"1\": callback", "\"x\": callback");
    assert!(
        e.contains("\"x\" in while_waiting is not a phone key"),
        "{e}"
    );
    let e = errs("\"1\": callback", "\"0\": callback");
    assert!(e.contains("duplicate key \"0\""), "{e}");
    let e = errs("\"1\": callback", "\"1\": calback");
    assert!(e.contains("\"calback\" which does not exist"), "{e}");
    let e = errs("queue: general", "sip: sip:agent@pbx.example");
    assert!(e.contains("has `while_waiting:` but no `queue:`"), "{e}");
}
