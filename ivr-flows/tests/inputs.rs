//! Flows that take inputs (`inputs:`), as an outbound call runs them: how the decoder reads the
//! list, how the checker types `vars.NAME` from it, how a session starts with the values, and
//! every way a request's `vars` are refused.

mod common;

use common::{Call, WORKDAY_10AM};
use ivr_flows::flowset::MAX_INPUT_CHARS;
use ivr_flows::{Action, FlowSet, InputError, Session, check_sources};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A call-back that greets by name, reads the order number and files the answer with it.
const CALLBACK: &str = r#"flow: callback
inputs: [order_id, name]
start: hello
steps:
  hello:
    type: prompt
    say:
      zh: "您好{vars.name}，这里是12345，关于工单{vars.order_id}回访。"
      en: "Hello {vars.name}, this is 12345 about order {vars.order_id}."
    next: by_name
  by_name:
    type: branch
    cases:
      - if: vars.name == ''
        goto: anonymous
    else: ask
  anonymous:
    type: set
    vars: { name: "'市民'" }
    next: ask
  ask:
    type: menu
    say: "满意请按1，不满意请按2。"
    options:
      - { digit: "1", set: { score: "good" }, goto: save }
      - { digit: "2", set: { score: "bad" }, goto: save }
  save:
    type: submit
    order: { kind: "'survey'", text: vars.score, order_id: vars.order_id }
    into: survey_id
    next: bye
    on_fail: bye
  bye: { type: hangup, reason: completed }
"#;

fn check(files: &[(&str, &str)]) -> Result<FlowSet, Vec<String>> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    check_sources(&files, None, &|_| true).map_err(|d| d.iter().map(ToString::to_string).collect())
}

fn refused(text: &str) -> Vec<String> {
    check(&[("main.yaml", text)]).expect_err("refused")
}

fn expect_error(text: &str, wanted: &str) {
    let errs = refused(text);
    assert!(
        errs.iter().any(|e| e == wanted),
        "wanted\n  {wanted}\ngot\n  {}",
        errs.join("\n  ")
    );
}

/// A one-step flow with `inputs` (a line, or nothing) on line 2.
fn flow(inputs: &str) -> String {
    format!("flow: main\n{inputs}start: bye\nsteps:\n  bye:\n    type: hangup\n    reason: done\n")
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn callback_set() -> Arc<FlowSet> {
    Arc::new(check(&[("callback.yaml", CALLBACK)]).expect("the call-back flow checks clean"))
}

fn submitted(c: &Call) -> BTreeMap<String, String> {
    c.find(|a| match a {
        Action::SubmitOrder { slots } => Some(slots.clone()),
        _ => None,
    })
    .expect("an order was submitted")
}

// ---- decoding ----------------------------------------------------------------------------

#[test]
fn inputs_are_read_in_file_order() {
    let set = check(&[("main.yaml", &flow("inputs: [order_id, name, 订单_2]\n"))]).expect("checks");
    assert_eq!(
        set.flow("main").expect("main").inputs,
        ["order_id", "name", "订单_2"]
    );
    let block = flow("inputs:\n  - order_id\n  - \"name\"\n");
    let set = check(&[("main.yaml", &block)]).expect("checks");
    assert_eq!(set.flow("main").expect("main").inputs, ["order_id", "name"]);
}

#[test]
fn a_flow_without_inputs_or_with_an_empty_list_takes_none() {
    for text in [flow(""), flow("inputs: []\n")] {
        let set = check(&[("main.yaml", &text)]).expect("checks");
        assert!(set.flow("main").expect("main").inputs.is_empty(), "{text}");
    }
}

#[test]
fn inputs_must_be_a_list() {
    expect_error(
        &flow("inputs: order_id\n"),
        "main.yaml:2:9: error: inputs should be a list of variable names but is a scalar; write e.g. inputs: [order_id, name], or remove the line",
    );
    expect_error(
        &flow("inputs: { order_id: text }\n"),
        "main.yaml:2:9: error: inputs should be a list of variable names but is a mapping; write e.g. inputs: [order_id, name], or remove the line",
    );
    let errs = refused(&flow("inputs:\n"));
    assert!(
        errs.iter()
            .any(|e| e.contains("inputs should be a list of variable names but is empty")),
        "{errs:?}"
    );
}

#[test]
fn an_input_must_be_a_variable_name() {
    expect_error(
        &flow("inputs: [order_id, vars.name]\n"),
        "main.yaml:2:20: error: \"vars.name\" is not a variable name; use letters, digits and _ (no `vars.` prefix)",
    );
    expect_error(
        &flow("inputs: [\"order id\"]\n"),
        "main.yaml:2:10: error: \"order id\" is not a variable name; use letters, digits and _ (no `vars.` prefix)",
    );
    expect_error(
        &flow("inputs: [\"\"]\n"),
        "main.yaml:2:10: error: \"\" is not a variable name; use letters, digits and _ (no `vars.` prefix)",
    );
    expect_error(
        &flow("inputs: [[order_id]]\n"),
        "main.yaml:2:10: error: an input should be text but is a list; write a single value",
    );
}

#[test]
fn an_input_listed_twice_is_refused() {
    expect_error(
        &flow("inputs:\n  - order_id\n  - name\n  - order_id\n"),
        "main.yaml:5:5: error: input \"order_id\" is listed twice (first at line 3); list each input once",
    );
}

#[test]
fn a_misspelt_inputs_key_gets_a_suggestion() {
    expect_error(
        &flow("input: [order_id]\n"),
        "main.yaml:2:1: error: unknown field \"input\" in the flow file; did you mean \"inputs\"?",
    );
}

// ---- checking ----------------------------------------------------------------------------

#[test]
fn the_checker_reads_declared_inputs_as_text() {
    // Placeholders, a condition, a set value and an order field all read the inputs.
    let set = callback_set();
    assert_eq!(
        set.flow("callback").expect("flow").inputs,
        ["order_id", "name"]
    );
    // Text: comparing one with a number is a type error.
    let numeric = CALLBACK.replace("vars.name == ''", "vars.order_id > 5");
    let errs = check(&[("callback.yaml", &numeric)]).expect_err("refused");
    assert!(
        errs.iter()
            .any(|e| e.contains("type error in the condition: cannot compare text with number")),
        "{errs:?}"
    );
}

#[test]
fn an_undeclared_variable_is_still_refused() {
    let undeclared = CALLBACK.replace("vars.name == ''", "vars.nickname == ''");
    let errs = check(&[("callback.yaml", &undeclared)]).expect_err("refused");
    assert!(
        errs.iter()
            .any(|e| e.contains("vars.nickname is never set by any step")),
        "{errs:?}"
    );
    // Without `inputs:`, the same flow's reads of vars.order_id are errors that say how to fix them.
    let no_inputs = CALLBACK.replace("inputs: [order_id, name]\n", "");
    let errs = check(&[("callback.yaml", &no_inputs)]).expect_err("refused");
    assert!(
        errs.iter().any(
            |e| e.contains("vars.order_id is never set by any step") && e.contains("`inputs:`")
        ),
        "{errs:?}"
    );
}

// ---- running -----------------------------------------------------------------------------

#[test]
fn a_session_with_inputs_speaks_them_branches_on_them_and_files_them() {
    let order = "2611230100042";
    let s = Session::with_inputs(
        callback_set(),
        "callback",
        &vars(&[("order_id", order), ("name", "张三")]),
    )
    .expect("the inputs fit");
    assert_eq!(
        s.vars().get("order_id"),
        Some(&ivr_flows::expr::Value::Str(order.into()))
    );
    let mut c = Call::with_session(s, WORKDAY_10AM);
    c.settle();
    assert!(
        c.heard()
            .contains(&format!("您好张三，这里是12345，关于工单{order}回访。")),
        "{}",
        c.heard()
    );
    assert!(
        !c.log
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t.contains("enter anonymous")))
    );
    c.press("1");
    let slots = submitted(&c);
    assert_eq!(slots["order_id"], order);
    assert_eq!(slots["text"], "good");
    assert_eq!(slots["kind"], "survey");

    // An empty name is a value like any other: the branch takes it.
    let s = Session::with_inputs(
        callback_set(),
        "callback",
        &vars(&[("order_id", order), ("name", "")]),
    )
    .expect("an empty value is allowed");
    let mut c = Call::with_session(s, WORKDAY_10AM);
    c.press("2");
    assert!(
        c.log
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t == "enter anonymous"))
    );
    assert_eq!(
        c.s.vars().get("name").map(ToString::to_string).as_deref(),
        Some("市民")
    );
    assert_eq!(submitted(&c)["order_id"], order);
}

#[test]
fn a_flow_started_without_its_inputs_runs_and_says_so() {
    let mut c = Call::start(callback_set(), "callback", WORKDAY_10AM);
    assert!(
        c.log.iter().any(|a| matches!(
            a,
            Action::Trace(t) if t == "flow callback runs without its inputs order_id, name (they read as empty text)"
        )),
        "{:?}",
        c.log
    );
    c.press("1");
    assert_eq!(submitted(&c)["order_id"], "");
}

// ---- refusing ----------------------------------------------------------------------------

#[test]
fn every_way_a_request_is_refused() {
    let set = callback_set();
    let ok = vars(&[("order_id", "2611230100042"), ("name", "张三")]);
    assert_eq!(set.check_inputs("callback", &ok), Ok(()));

    let long = "x".repeat(MAX_INPUT_CHARS + 1);
    let cases: Vec<(&str, BTreeMap<String, String>, InputError, &str)> = vec![
        (
            "nosuch",
            ok.clone(),
            InputError::UnknownFlow("nosuch".into()),
            "no flow named \"nosuch\"",
        ),
        (
            "callback",
            vars(&[("order_id", "1"), ("name", "a"), ("phone", "139")]),
            InputError::Undeclared("phone".into()),
            "\"phone\" is not an input of the flow (not in its `inputs:`)",
        ),
        (
            "callback",
            vars(&[("order_id", "1")]),
            InputError::Missing("name".into()),
            "input \"name\" is missing",
        ),
        (
            "callback",
            vars(&[("order_id", "1"), ("name", &long)]),
            InputError::BadValue(
                "name".into(),
                format!("is {} characters long (at most 512)", MAX_INPUT_CHARS + 1),
            ),
            "input \"name\" is 513 characters long (at most 512)",
        ),
        (
            "callback",
            vars(&[("order_id", "1\n2"), ("name", "a")]),
            InputError::BadValue(
                "order_id".into(),
                "contains a control character (U+000A)".into(),
            ),
            "input \"order_id\" contains a control character (U+000A)",
        ),
        (
            "callback",
            vars(&[("order_id", "1"), ("name", "a\u{7f}")]),
            InputError::BadValue(
                "name".into(),
                "contains a control character (U+007F)".into(),
            ),
            "input \"name\" contains a control character (U+007F)",
        ),
    ];
    for (flow, given, want, message) in cases {
        assert_eq!(
            set.check_inputs(flow, &given),
            Err(want.clone()),
            "{given:?}"
        );
        assert_eq!(want.to_string(), message);
        let err = Session::with_inputs(set.clone(), flow, &given).expect_err("refused");
        assert_eq!(err, want, "the session refuses what check_inputs refuses");
        let _: &dyn std::error::Error = &err;
        if let Some(mut s) = Session::new(set.clone(), flow) {
            assert_eq!(
                s.set_inputs(&given),
                Err(want),
                "set_inputs refuses the same"
            );
            assert!(s.vars().is_empty(), "a refused set_inputs changes nothing");
        }
    }
}

#[test]
fn set_inputs_before_the_call_starts_gives_the_flow_its_inputs() {
    let mut s = Session::new(callback_set(), "callback").expect("flow exists");
    s.set_inputs(&vars(&[("order_id", "42"), ("name", "Li")]))
        .expect("the inputs fit");
    let mut c = Call::with_session(s, WORKDAY_10AM);
    c.settle();
    assert!(
        c.heard().contains("您好Li，这里是12345，关于工单42回访。"),
        "{}",
        c.heard()
    );
    assert!(
        !c.log
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t.contains("without its inputs")))
    );
    c.press("2");
    assert_eq!(submitted(&c)["order_id"], "42");
}

#[test]
fn the_error_names_the_variable() {
    assert_eq!(InputError::UnknownFlow("f".into()).name(), None);
    assert_eq!(InputError::Undeclared("a".into()).name(), Some("a"));
    assert_eq!(InputError::Missing("b".into()).name(), Some("b"));
    assert_eq!(
        InputError::BadValue("c".into(), "why".into()).name(),
        Some("c")
    );
}

#[test]
fn the_length_limit_counts_characters_not_bytes() {
    let set = callback_set();
    let at_limit = "工".repeat(MAX_INPUT_CHARS);
    assert!(at_limit.len() > MAX_INPUT_CHARS);
    assert_eq!(
        set.check_inputs("callback", &vars(&[("order_id", "1"), ("name", &at_limit)])),
        Ok(())
    );
}

#[test]
fn a_flow_without_inputs_takes_no_vars() {
    let set = Arc::new(check(&[("main.yaml", &flow(""))]).expect("checks"));
    assert_eq!(set.check_inputs("main", &BTreeMap::new()), Ok(()));
    assert!(Session::with_inputs(set.clone(), "main", &BTreeMap::new()).is_ok());
    assert_eq!(
        set.check_inputs("main", &vars(&[("order_id", "1")])),
        Err(InputError::Undeclared("order_id".into()))
    );
}
