//! The shipped flows load and check clean.

#[test]
fn shipped_flows_check_clean() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/flows");
    match ivr_flows::check_dir(dir) {
        Ok(set) => {
            let names: Vec<&str> = set.flow_names().collect();
            assert_eq!(
                names,
                [
                    "callback",
                    "main",
                    "progress",
                    "queue_callback",
                    "report",
                    "survey",
                    "voicemail"
                ]
            );
        }
        Err(d) => panic!("{}", ivr_flows::diagnostic::render(&d)),
    }
}
