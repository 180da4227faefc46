//! The published WorkOrder JSON Schema (`adapters/schema/work-order.schema.json`) matches what a
//! running gateway serves and delivers, and it is strict enough to refuse a broken order.

use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, GatewayOptions, Receiver, SECRET, now_unix, work_order_schema};

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&work_order_schema()).expect("the schema compiles")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn assert_valid(v: &jsonschema::Validator, what: &str, instance: &Value) {
    let errs = errors(v, instance);
    assert!(
        errs.is_empty(),
        "{what} does not match the schema: {errs:?}\n{instance:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_and_delivered_orders_match_the_schema() {
    let v = validator();
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let gw = Gateway::start(GatewayOptions::new(dir.path()).dispatch_to(&receiver)).await;

    let minimal = gw.submit_ok(&json!({"text": "咨询社保办理"})).await;
    let full = gw
        .submit_ok(&json!({
            "text": "小区门口路灯连续三晚不亮，晚上走路很危险",
            "citizen": {"name": "李先生", "phone": "+86 138-0013-8000", "user_id": "app-user-42"},
            "location": {
                "address": "武汉市江汉区解放大道100号",
                "district": "江汉区",
                "street": "民族街道",
                "lat": 30.5801,
                "lng": 114.2734
            },
            "kind": "report",
            "attachments": [
                {"url": "https://files.example/1.jpg", "mime": "image/jpeg"},
                {"url": "https://files.example/2.mp4", "mime": "video/mp4"}
            ],
            "external_id": "ext-0001",
            "language": "zh-CN"
        }))
        .await;
    let r = gw
        .submit(&json!({"text": "楼下着火了，有浓烟"}), None)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["emergency_referral"], 119, "{}", r.text);
    assert!(
        r.body["notice"].as_str().is_some_and(|n| n.contains("119")),
        "{}",
        r.text
    );
    let emergency = r.body["order_id"].as_str().expect("order_id").to_owned();
    let evented = gw
        .submit_ok(&json!({"text": "噪音扰民", "kind": "complaint"}))
        .await;

    let all = vec![
        minimal.clone(),
        full.clone(),
        emergency.clone(),
        evented.clone(),
    ];
    assert!(
        receiver.wait_for_all(&all, Duration::from_secs(30)).await,
        "not delivered"
    );

    for (status, note) in [
        ("assigned", Some("派至江汉区")),
        ("in_progress", None),
        ("resolved", Some("已处理")),
    ] {
        let mut body = json!({"status": status, "by": "区城管局"});
        if let Some(n) = note {
            body["note"] = json!(n);
        }
        let bytes = serde_json::to_vec(&body).expect("serialize");
        let r = gw.event(&evented, &bytes, SECRET, now_unix()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_valid(&v, "the order returned by a status event", &r.body);
    }

    for id in &all {
        let order = gw.order(id).await;
        assert_valid(&v, &format!("GET /v1/orders/{id}"), &order);
    }
    let full_order = gw.order(&full).await;
    assert_eq!(full_order["location"]["district"], "江汉区");
    assert_eq!(full_order["attachments"].as_array().map(Vec::len), Some(2));
    assert_eq!(full_order["source"]["external_id"], "ext-0001");
    let e = gw.order(&emergency).await;
    assert_eq!(e["urgency"], "emergency", "{e}");
    assert_eq!(e["emergency_referral"], 119, "{e}");
    assert_eq!(gw.order(&evented).await["status"], "resolved");

    let listed = gw.all_orders(500).await;
    assert_eq!(listed.len(), 4);
    for o in &listed {
        assert_valid(&v, "an order from the list endpoint", o);
    }
    let delivered = receiver.with(|s| s.delivered.clone());
    assert!(delivered.len() >= 4);
    for d in &delivered {
        assert_valid(&v, "a delivered body", &d.body);
    }
    assert!(receiver.problems().is_empty(), "{:?}", receiver.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_broken_orders() {
    let v = validator();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let id = gw
        .submit_ok(&json!({"text": "路面积水", "citizen": {"phone": "13800138000"}}))
        .await;
    let good = gw.order(&id).await;
    assert_valid(&v, "the original order", &good);

    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("kind rant", Box::new(|o| o["kind"] = json!("rant"))),
        (
            "id with letters",
            Box::new(|o| o["id"] = json!("2405AB0100001X")),
        ),
        ("id too short", Box::new(|o| o["id"] = json!("1234567"))),
        ("unknown channel", Box::new(|o| o["channel"] = json!("fax"))),
        ("empty text", Box::new(|o| o["text"] = json!(""))),
        ("unknown status", Box::new(|o| o["status"] = json!("done"))),
        (
            "bad referral",
            Box::new(|o| o["emergency_referral"] = json!(999)),
        ),
        (
            "bad urgency",
            Box::new(|o| o["urgency"] = json!("whenever")),
        ),
        (
            "bad phone",
            Box::new(|o| o["citizen"]["phone"] = json!("call me")),
        ),
        (
            "lat out of range",
            Box::new(|o| o["location"] = json!({"lat": 91.0, "lng": 0.0})),
        ),
        ("extra field", Box::new(|o| o["mood"] = json!("angry"))),
        ("no history", Box::new(|o| o["history"] = json!([]))),
        (
            "missing text",
            Box::new(|o| {
                o.as_object_mut().expect("object").remove("text");
            }),
        ),
    ];
    for (name, mutate) in mutations {
        let mut broken = good.clone();
        mutate(&mut broken);
        assert!(
            !errors(&v, &broken).is_empty(),
            "the schema accepted a broken order ({name}): {broken}"
        );
    }
}
