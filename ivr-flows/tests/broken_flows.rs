//! Each broken flow in tests/broken/ is rejected with a precise, actionable message.

use ivr_flows::check_sources;

fn errors(name: &str) -> Vec<String> {
    let path = format!("{}/tests/broken/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    // Audio "exists" only under prompts/ok/ so missing_audio.yaml fails.
    match check_sources(&[(name.to_string(), text)], None, &|p| {
        p.starts_with("prompts/ok/")
    }) {
        Ok(_) => panic!("{name} was accepted"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

fn expect(name: &str, wanted: &str) {
    let errs = errors(name);
    assert!(
        errs.iter().any(|e| e == wanted),
        "{name}: wanted\n  {wanted}\ngot\n  {}",
        errs.join("\n  ")
    );
}

#[test]
fn unknown_step_suggests_the_close_name() {
    expect(
        "unknown_step.yaml",
        "unknown_step.yaml:8:15: error: step \"menu_main\" option 1 goes to \"reprot\" which does not exist; did you mean \"report\"?",
    );
}

#[test]
fn unreachable_step() {
    expect(
        "unreachable.yaml",
        "unreachable.yaml:7:3: error: step \"orphan\" is unreachable; no step, option or global handler goes to it from start \"hello\"; link it or delete it",
    );
}

#[test]
fn dead_end() {
    expect(
        "dead_end.yaml",
        "dead_end.yaml:3:3: error: step \"hello\" ends nowhere: it has no `next:`; add `next: STEP` (use a hangup step to end the call)",
    );
}

#[test]
fn loop_without_exit() {
    expect(
        "loop.yaml",
        "loop.yaml:3:3: error: loop without exit: steps a -> b go round forever without waiting for the caller; add a menu/collect step to the loop or a branch that leaves it",
    );
}

#[test]
fn duplicate_yaml_key() {
    expect(
        "duplicate_key.yaml",
        "duplicate_key.yaml:7:5: error: duplicate key \"next\" (first defined at line 6); remove one of them; YAML would silently keep only the last",
    );
}

#[test]
fn duplicate_menu_digit() {
    expect(
        "duplicate_digit.yaml",
        "duplicate_digit.yaml:9:9: error: step \"m\" uses key 1 twice (first at line 7); give each option its own key",
    );
}

#[test]
fn missing_audio() {
    expect(
        "missing_audio.yaml",
        "missing_audio.yaml:6:11: error: zh audio file \"prompts/zh/nope.wav\" does not exist; record it under the flows directory (see prompts.sh) or fix the path",
    );
}

#[test]
fn type_error_in_condition() {
    expect(
        "type_error.yaml",
        "type_error.yaml:6:9: error: type error in the condition: cannot compare number with text; compare values of the same type, e.g. time.hour < 9 or vars.kind == 'noise'",
    );
}

#[test]
fn unknown_field_did_you_mean() {
    expect(
        "unknown_field.yaml",
        "unknown_field.yaml:6:5: error: unknown field \"nxet\" in step \"hello\"; did you mean \"next\"?",
    );
}

#[test]
fn malformed_yaml_is_a_clear_error() {
    let errs = errors("bad_yaml.yaml");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("bad_yaml.yaml:4:1: error: YAML syntax error:"),
        "{}",
        errs[0]
    );
}

#[test]
fn bad_expression_points_at_the_operator() {
    let src = "start: a\nsteps:\n  a:\n    type: call\n    flow: reprot\n    next: b\n  b:\n    type: branch\n    cases:\n      - if: vars.x = 1\n        goto: a\n    else: a\n";
    let errs: Vec<String> = ivr_flows::check_source("m.yaml", src)
        .expect_err("broken")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errs.iter().any(|e| e.starts_with(
            "m.yaml:10:20: error: in condition `vars.x = 1`: `=` is not a comparison; use `==`"
        )),
        "{errs:?}"
    );
}
