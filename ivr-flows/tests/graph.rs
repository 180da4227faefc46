//! The Mermaid graph names every step and edge of a flow.

#[test]
fn mermaid_of_main_flow() {
    let set = ivr_flows::check_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/flows")).expect("loads");
    let g = ivr_flows::mermaid(&set, "main");
    assert!(g.starts_with("flowchart TD\n    start((start)) --> s_greeting\n"));
    assert!(g.contains("s_main_menu -->|\"3\"| s_policy"));
    assert!(g.contains("s_check_hours -->|\"else\"| s_main_menu"));
    assert!(g.contains("-.-> s_agent"));
    assert!(ivr_flows::mermaid(&set, "nope").is_empty());
}
