//! Flow-wide settings as the checker reads them: `recording_notice` (whether a recorded call
//! hears so before the flow's first prompt) and its mistakes.

use ivr_flows::{Session, check_sources};

fn flow(settings: &str) -> String {
    format!(
        "flow: main\nstart: bye\nsettings:\n  language: en\n{settings}steps:\n  bye:\n    type: hangup\n    reason: done\n"
    )
}

fn check(text: &str) -> Result<ivr_flows::FlowSet, Vec<String>> {
    check_sources(
        &[("main.yaml".to_string(), text.to_string())],
        None,
        &|_| true,
    )
    .map_err(|d| d.iter().map(ToString::to_string).collect())
}

#[test]
fn the_recording_notice_is_on_unless_the_flow_turns_it_off() {
    for (settings, want) in [
        ("", true),
        ("  recording_notice: true\n", true),
        ("  recording_notice: false\n", false),
    ] {
        let set = std::sync::Arc::new(check(&flow(settings)).expect("checks"));
        let session = Session::new(set, "main").expect("the flow exists");
        assert_eq!(session.recording_notice(), want, "{settings:?}");
    }
}

#[test]
fn a_recording_notice_that_is_not_true_or_false_is_refused() {
    let errs = check(&flow("  recording_notice: maybe\n")).expect_err("refused");
    assert!(
        errs.iter()
            .any(|e| e.contains("recording_notice should be true or false")),
        "{errs:?}"
    );
}
