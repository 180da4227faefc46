//! Malformed input never panics: `check_source` is the fuzz entry point, exercised here with
//! truncations and byte mutations of real flows plus hand-picked nasties.

use ivr_flows::check_source;

fn corpus() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/flows");
    let mut v: Vec<String> = ["main.yaml", "report.yaml", "progress.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("{dir}/{f}")).expect("read"))
        .collect();
    v.extend(
        [
            "", "---", "- a\n- b", "start: [", "steps: {a: 1}", "start: a\nsteps:\n  a: 5", "{{{{{{{{{{", "\"\\u", "? a\n: b",
            "start: a\nsteps:\n  a:\n    type: branch\n    cases: [{if: \"((((((((((((((((((((((((((((((((((((((((1\", goto: a}]",
            "start: a\nsteps:\n  a:\n    type: prompt\n    say: \"{vars.\"\n    next: a",
            "start: a\nsteps:\n  a:\n    type: collect\n    say: x\n    digits: {pattern: \"([\"}\n    into: x",
            "&a x: *a",
            "start: a\nsteps:\n  a: !!binary aGVsbG8=",
        ]
        .map(String::from),
    );
    v.push("[".repeat(10_000));
    v.push("a:\n".to_string() + &"  ".repeat(200) + "b: 1");
    v
}

#[test]
fn never_panics_and_always_explains() {
    let mut seed: u64 = 0x1234_5678;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for text in corpus() {
        let _ = check_source("x.yaml", &text);
        let chars: Vec<char> = text.chars().collect();
        for _ in 0..40 {
            let mut c = chars.clone();
            if !c.is_empty() {
                let cut = (rand() as usize) % c.len();
                match rand() % 3 {
                    0 => c.truncate(cut),
                    1 => {
                        c[cut] = [':', '-', '"', '{', '[', ' ', '\n', '#', '&', '*']
                            [(rand() % 10) as usize]
                    }
                    _ => {
                        c.remove(cut);
                    }
                }
            }
            let s: String = c.into_iter().collect();
            if let Err(diags) = check_source("x.yaml", &s) {
                for d in diags {
                    assert!(d.pos.line >= 1 && d.pos.col >= 1, "{d}");
                    assert!(!d.message.is_empty());
                }
            }
        }
    }
}
