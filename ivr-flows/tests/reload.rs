//! Reloads swap whole flow sets: running calls finish on the set they started with, new calls
//! get the new one, and a broken edit leaves the old set live.

use ivr_flows::simulate::WORKDAY_10AM;
use ivr_flows::{Action, Event, FlowRegistry, Session};
use std::path::PathBuf;

fn flow(greeting: &str) -> String {
    format!(
        "start: ask\nsteps:\n  ask:\n    type: menu\n    say: \"{greeting}\"\n    options:\n      - digit: \"1\"\n        goto: bye\n  bye:\n    type: hangup\n    say: \"bye from {greeting}\"\n"
    )
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ivr-flows-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn texts(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Play { items, .. } = a {
                Some(format!("{items:?}"))
            } else {
                None
            }
        })
        .collect()
}

/// Starts a call on the registry's current `main` flow: the session and its first actions.
fn start_call(reg: &FlowRegistry) -> (Session, Vec<Action>) {
    let mut session = Session::new(reg.current(), "main").expect("flow");
    let first = session.handle(
        0,
        Event::CallStarted {
            caller: "1".into(),
            called: "12345".into(),
            local_time: WORKDAY_10AM,
        },
    );
    (session, first)
}

#[test]
fn reload_never_half_applies() {
    let dir = tempdir("reload");
    std::fs::write(dir.join("main.yaml"), flow("v1")).expect("write");
    let reg = FlowRegistry::load(&dir).expect("v1 loads");
    assert_eq!(reg.current().version(), 1);

    let (mut old, first) = start_call(&reg);
    assert!(texts(&first).contains("v1"));

    std::fs::write(dir.join("main.yaml"), flow("v2")).expect("write");
    assert_eq!(reg.try_reload(&dir).expect("v2 loads"), 2);

    // The running call finishes on v1.
    let out = old.handle(10, Event::Digit('1'));
    assert!(texts(&out).contains("bye from v1"), "{out:?}");
    assert_eq!(old.flow_set().version(), 1);

    // New calls use v2.
    let (_new, out) = start_call(&reg);
    assert!(texts(&out).contains("v2"));

    // A broken edit is rejected and v2 stays live.
    std::fs::write(
        dir.join("main.yaml"),
        flow("v3").replace("goto: bye", "goto: byee"),
    )
    .expect("write");
    let errs = reg.try_reload(&dir).expect_err("broken edit rejected");
    assert!(
        errs[0].to_string().contains("did you mean \"bye\"?"),
        "{}",
        errs[0]
    );
    assert_eq!(reg.current().version(), 2);
    let (_after, out) = start_call(&reg);
    assert!(texts(&out).contains("v2"));
    let _ = std::fs::remove_dir_all(&dir);
}
