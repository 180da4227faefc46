//! The line-oriented simulator drives whole calls and prints what the caller hears.

use ivr_flows::{check_dir, simulate};

fn run(script: &str) -> String {
    let set = check_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/flows")).expect("shipped flows load");
    let mut out = Vec::new();
    simulate(&set, "main", script.as_bytes(), &mut out).expect("in-memory io");
    String::from_utf8(out).expect("utf8")
}

#[test]
fn report_a_problem_by_simulation() {
    let out = run("1\n1\nsay: 小区门口施工噪音很大\n1\n7\n1\n1\n\n2\n");
    println!("{out}");
    assert!(out.contains("如遇紧急情况，请挂机拨打110、119、120或122"));
    assert!(out.contains("[submit] caller=13800000000 district=洪山区 kind=noise language=zh text=小区门口施工噪音很大"));
    assert!(out.contains("[hangup completed]"));
}

#[test]
fn bad_order_number_then_good_one() {
    let base = "2611230100042";
    let good = format!(
        "{base}{}",
        ivr_flows::damm::check_digit(base).expect("digits")
    );
    let bad = format!("{base}{}", if good.ends_with('0') { '1' } else { '0' });
    let out = run(&format!("1\n2\n{bad}#\n{good}#\n\n2\n"));
    println!("{out}");
    assert!(out.contains("工单号有误"));
    assert!(out.contains(&format!("[lookup] {good}")));
    assert!(out.contains("已受理，正在办理"));
}
