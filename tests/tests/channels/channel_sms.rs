//! SMS upstream callbacks end to end: Aliyun SmsUp batches and Tencent Cloud reply callbacks in
//! their published shapes, redeliveries, long messages split into parts, 查询 and refusals,
//! checked through the orders API.

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "callback-token-1";

fn extra(aliyun_allow: &str) -> String {
    format!(
        "[channels.sms]\npart_wait_s = 2\n\n\
         [channels.sms.aliyun]\nenabled = true\ntoken = \"{TOKEN}\"\nallow_ips = [{aliyun_allow}]\n\n\
         [channels.sms.tencent]\nenabled = true\nallow_ips = []\n"
    )
}

async fn gateway(aliyun_allow: &str) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_with_extra(GatewayOptions::new(dir.path()), &extra(aliyun_allow)).await;
    (dir, gw)
}

fn aliyun_item(phone: &str, content: &str, seq: u64) -> Value {
    json!({
        "phone_number": phone,
        "send_time": "2026-11-23 10:00:00",
        "content": content,
        "sign_name": "12345热线",
        "dest_code": "1234",
        "sequence_id": seq
    })
}

async fn aliyun(gw: &Gateway, items: &Value) -> Reply {
    gw.post_raw(
        &format!("/channels/sms/aliyun?token={TOKEN}"),
        "application/json",
        serde_json::to_vec(items).expect("json"),
    )
    .await
}

async fn tencent(gw: &Gateway, body: &Value) -> Reply {
    gw.post_raw(
        "/channels/sms/tencent",
        "application/json",
        serde_json::to_vec(body).expect("json"),
    )
    .await
}

fn aliyun_ok(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"code": 0, "msg": "成功"}));
}

/// One message pushed alone, taken as Aliyun expects.
async fn aliyun_one(gw: &Gateway, phone: &str, content: &str, seq: u64) {
    aliyun_ok(&aliyun(gw, &json!([aliyun_item(phone, content, seq)])).await);
}

#[tokio::test]
async fn aliyun_batches_and_redeliveries() {
    let (_d, gw) = gateway("\"127.0.0.1\"").await;
    let batch = json!([
        aliyun_item("13800138000", "小区路灯坏了", 900001),
        aliyun_item("13900139000", "工地夜间施工扰民", 900002)
    ]);
    aliyun_ok(&aliyun(&gw, &batch).await);
    let orders = gw.all_orders(100).await;
    assert_eq!(orders.len(), 2);
    let o = orders
        .iter()
        .find(|o| o["text"] == "小区路灯坏了")
        .expect("first order");
    assert_eq!(o["channel"], "sms");
    assert_eq!(o["citizen"]["phone"], "13800138000");
    assert_eq!(o["source"]["sms_id"], "900001");
    // Redelivered batch, and a batch repeating one sequence_id: no new orders.
    aliyun_ok(&aliyun(&gw, &batch).await);
    aliyun_one(&gw, "13900139000", "工地夜间施工扰民", 900002).await;
    assert_eq!(gw.all_orders(100).await.len(), 2);

    // Wrong or missing token: the provider's error shape, nothing stored.
    let r = gw
        .post_raw(
            "/channels/sms/aliyun?token=nope",
            "application/json",
            serde_json::to_vec(&json!([aliyun_item("13700137000", "x", 900003)])).expect("json"),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_ne!(r.body["code"], 0);
    assert!(r.body["msg"].is_string());

    // Malformed: not JSON, missing fields, oversized.
    for (body, status) in [
        (b"{not json".to_vec(), 400),
        (
            br#"[{"phone_number":"13700137000","content":"x"}]"#.to_vec(),
            400,
        ),
        (br#"[{"content":"x","sequence_id":1}]"#.to_vec(), 400),
        (b"[]".to_vec(), 400),
        (
            serde_json::to_vec(&json!([aliyun_item(
                "13700137000",
                &"长".repeat(30_000),
                9
            )]))
            .expect("json"),
            413,
        ),
    ] {
        let r = gw
            .post_raw(
                &format!("/channels/sms/aliyun?token={TOKEN}"),
                "application/json",
                body,
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.body["code"], status, "{}", r.text);
        assert!(r.body["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // 查询 answers (the reply is logged, not sent) and creates nothing.
    let id = o["id"].as_str().expect("id").to_owned();
    aliyun_one(&gw, "13800138000", &format!("查询 {id}"), 900010).await;
    aliyun_one(&gw, "13800138000", "查询 12345678901234", 900011).await;
    assert_eq!(gw.all_orders(100).await.len(), 2);
    let log = gw.log();
    assert!(log.contains("sms reply not sent"), "{log}");
    assert!(
        !log.contains("13800138000"),
        "an unmasked phone number in the log"
    );
}

#[tokio::test]
async fn long_messages_are_reassembled() {
    let (_d, gw) = gateway("").await;
    // Three parts, delivered out of order, each in its own callback.
    for (seq, text) in [
        (910003, "(3/3)请尽快处理。"),
        (910001, "(1/3)我家楼下的下水道"),
        (910002, "(2/3)堵塞已经三天，污水漫到路面，"),
    ] {
        aliyun_one(&gw, "13600136000", text, seq).await;
        if seq != 910002 {
            assert_eq!(
                gw.all_orders(100).await.len(),
                0,
                "no order before the last part"
            );
        }
    }
    let orders = gw.all_orders(100).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0]["text"],
        "我家楼下的下水道堵塞已经三天，污水漫到路面，请尽快处理。"
    );
    assert_eq!(orders[0]["citizen"]["phone"], "13600136000");
    assert!(orders[0]["source"]["sms_id"].is_string());
    // A late redelivery of a part makes no new order.
    aliyun_one(
        &gw,
        "13600136000",
        "(2/3)堵塞已经三天，污水漫到路面，",
        910002,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.all_orders(100).await.len(), 1);

    // A message whose second part never comes: after part_wait_s, an order from what arrived.
    aliyun_one(&gw, "13500135000", "【1/2】井盖丢失，", 920001).await;
    let made = wait_until(Duration::from_secs(15), || async {
        gw.all_orders(100).await.len() == 2
    })
    .await;
    assert!(
        made,
        "the incomplete message became no order; log:\n{}",
        gw.log()
    );
    let orders = gw.all_orders(100).await;
    assert!(
        orders.iter().any(|o| o["text"] == "井盖丢失，"),
        "{orders:?}"
    );
}

#[tokio::test]
async fn tencent_callbacks() {
    let (_d, gw) = gateway("").await;
    let body = json!({
        "extend": "",
        "mobile": "13800138000",
        "nationcode": "86",
        "sign": "12345热线",
        "text": "公交站台广告牌松动",
        "time": 1_764_000_000u64
    });
    for _ in 0..2 {
        let r = tencent(&gw, &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body, json!({"result": 0, "errmsg": "OK"}));
    }
    let orders = gw.all_orders(100).await;
    assert_eq!(orders.len(), 1, "redelivery deduplicated");
    assert_eq!(orders[0]["citizen"]["phone"], "13800138000");
    assert!(
        orders[0]["source"]["sms_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    for bad in [json!({"mobile": "13800138000", "text": "x"}), json!([1])] {
        let r = tencent(&gw, &bad).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["result"], 400);
        assert!(r.body["errmsg"].is_string());
    }
    let r = gw
        .post_raw("/channels/sms/tencent", "application/json", b"{".to_vec())
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(gw.all_orders(100).await.len(), 1);
    let r = gw
        .post_raw("/channels/sms/other", "application/json", b"{}".to_vec())
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn callbacks_from_other_addresses_are_refused() {
    let (_d, gw) = gateway("\"203.0.113.0/24\"").await;
    let r = aliyun(
        &gw,
        &json!([aliyun_item("13800138000", "路灯坏了", 930001)]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], 403);
    assert_eq!(gw.all_orders(100).await.len(), 0);
}

/// The PostgreSQL back end runs the same channel store operations (durable parts under an
/// advisory lock, latest order of a WeChat user, additions).
#[tokio::test]
async fn postgres_store_runs_the_channel_operations() {
    let pg = PgServer::start();
    let url = pg.create_db("channels").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = GatewayOptions::new(dir.path());
    opts.store = StoreOpt::Postgres(url);
    let wechat = "[[channels.wechat]]\nname = \"hotline\"\nappid = \"wxpg\"\ntoken = \"pgtoken\"\n";
    let gw = Gateway::start_with_extra(opts, &format!("{}\n{wechat}", extra(""))).await;
    for (seq, text) in [(940002, "(2/2)第二段"), (940001, "(1/2)第一段")] {
        aliyun_one(&gw, "13400134000", text, seq).await;
    }
    let orders = gw.all_orders(100).await;
    assert_eq!(orders.len(), 1, "{}", gw.log());
    assert_eq!(orders[0]["text"], "第一段第二段");

    let sig = |ts: &str| {
        use sha1::{Digest, Sha1};
        let mut v = ["pgtoken", ts, "n"];
        v.sort_unstable();
        hex::encode(Sha1::digest(v.concat().as_bytes()))
    };
    let post = |xml: String| {
        let ts = now_unix().to_string();
        let path = format!(
            "/channels/wechat/hotline?timestamp={ts}&nonce=n&signature={}",
            sig(&ts)
        );
        let gw = &gw;
        async move { gw.post_raw(&path, "text/xml", xml.into_bytes()).await }
    };
    let head = |id: u64, t: &str| {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>oPg</FromUserName><CreateTime>{}</CreateTime><MsgType>{t}</MsgType><MsgId>{id}</MsgId>",
            now_unix()
        )
    };
    let r = post(format!(
        "{}<Content>树木倒伏挡路</Content></xml>",
        head(1, "text")
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(format!(
        "{}<Location_X>31.2</Location_X><Location_Y>121.5</Location_Y><Label>人民广场</Label></xml>",
        head(2, "location")
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let orders = gw.all_orders(100).await;
    assert_eq!(orders.len(), 2);
    let w = orders
        .iter()
        .find(|o| o["channel"] == "wechat")
        .expect("wechat order");
    assert_eq!(w["location"]["lat"], 31.2, "{w}");
    assert_eq!(w["location"]["address"], "人民广场");
}
