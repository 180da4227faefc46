//! One complaint, every channel: the same citizen message sent through WeChat (plain XML push),
//! SMS (Aliyun and Tencent Cloud callbacks), the web form, the app API and Open311, each in its
//! own wire format, must give orders that agree on kind, category, district and urgency. The
//! same citizen sending it again (on the same channel or another) is marked a duplicate with the
//! reason; different citizens reporting it form one event. Related orders survive a restart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use support::*;

const WECHAT_TOKEN: &str = "agreementtoken";

fn extra() -> String {
    format!(
        "[channels]\nattach_window_s = 1800\n\n\
         [[channels.wechat]]\nname = \"hotline\"\nappid = \"wxagreement0000001\"\n\
         token = \"{WECHAT_TOKEN}\"\nkind = \"official\"\n\n\
         [channels.sms]\npart_wait_s = 60\n\n\
         [channels.sms.aliyun]\nenabled = true\nallow_ips = []\n\n\
         [channels.sms.tencent]\nenabled = true\nallow_ips = []\n\n\
         [web]\nmin_fill_seconds = 1\nrate_burst = 100\nopen311_rate_burst = 100\n"
    )
}

/// A complaint as a citizen would write it, where it happened, and the Open311 service a
/// citizen would pick for it (Open311 clients choose the kind; every other channel infers it).
struct Complaint {
    text: &'static str,
    district: &'static str,
    address: &'static str,
    service_code: &'static str,
    urgency: &'static str,
}

const COMPLAINTS: [Complaint; 4] = [
    Complaint {
        text: "投诉洪山区珞喻路旁边的工地每天夜里十二点以后还在施工打桩，噪音太大，周边居民根本睡不着觉。",
        district: "洪山区",
        address: "珞喻路",
        service_code: "complaint",
        urgency: "normal",
    },
    Complaint {
        text: "江汉区解放大道循礼门附近的路灯坏了一个多星期，晚上一片漆黑，请尽快派人修复。",
        district: "江汉区",
        address: "解放大道循礼门",
        // Asking for a repair is 求助 (help); 举报 (report) is for reporting wrongdoing.
        service_code: "help",
        urgency: "normal",
    },
    Complaint {
        text: "投诉武昌区中南路地铁站出口的人行道上天天有车违章停车，行人只能走机动车道，请交管部门管一管。",
        district: "武昌区",
        address: "中南路地铁站",
        service_code: "complaint",
        urgency: "normal",
    },
    Complaint {
        text: "硚口区汉正街一个窨井盖丢了，已经有行人差点掉下去，非常危险，请快派人来处理！",
        district: "硚口区",
        address: "汉正街",
        service_code: "help",
        urgency: "urgent",
    },
];

/// The channels, in the order each complaint is sent through them.
const CHANNELS: [&str; 6] = [
    "wechat",
    "sms-aliyun",
    "sms-tencent",
    "web",
    "app",
    "open311",
];

/// A distinct citizen per complaint and channel: an 11-digit mobile number.
fn phone(complaint: usize, channel: usize) -> String {
    format!(
        "139{channel:02}{complaint:02}{:04}",
        4242 + complaint * 10 + channel
    )
}

fn openid(complaint: usize) -> String {
    format!("oAgreeCitizen{complaint:02}xyzW")
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn ids(gw: &Gateway) -> HashSet<String> {
    gw.all_orders(100)
        .await
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect()
}

/// The one order that appeared since `before`.
async fn new_order(gw: &Gateway, before: &HashSet<String>, what: &str) -> String {
    let now = ids(gw).await;
    let new: Vec<&String> = now.difference(before).collect();
    assert_eq!(new.len(), 1, "{what}: expected one new order, got {new:?}");
    new[0].clone()
}

async fn wechat(gw: &Gateway, from: &str, msg_id: u64, content: &str) -> String {
    let ts = now_unix().to_string();
    let nonce = format!("n{msg_id}");
    let mut parts = [WECHAT_TOKEN, ts.as_str(), nonce.as_str()];
    parts.sort_unstable();
    let signature = hex::encode(Sha1::digest(parts.concat().as_bytes()));
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    );
    let r = gw
        .post_raw(
            &format!("/channels/wechat/hotline?signature={signature}&timestamp={ts}&nonce={nonce}"),
            "text/xml",
            xml.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "wechat: {}", r.text);
    let start = r.text.find("工单号：").expect("order number in the reply") + "工单号：".len();
    let id: String = r.text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(is_valid_order_id(&id), "{id} in {}", r.text);
    id
}

/// Pushes `body` as SMS provider `provider` does; its acknowledgement must be `ack`. The new
/// order's id.
async fn sms(gw: &Gateway, provider: &str, body: Value, ack: Value) -> String {
    let before = ids(gw).await;
    let r = gw
        .post_raw(
            &format!("/channels/sms/{provider}"),
            "application/json",
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
    assert_eq!(r.status, 200, "{provider}: {}", r.text);
    assert_eq!(r.body, ack);
    new_order(gw, &before, provider).await
}

async fn aliyun(gw: &Gateway, phone: &str, content: &str, seq: u64) -> String {
    let body = json!([{
        "phone_number": phone,
        "send_time": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        "content": content,
        "sign_name": "12345热线",
        "dest_code": "1234",
        "sequence_id": seq
    }]);
    sms(gw, "aliyun", body, json!({"code": 0, "msg": "成功"})).await
}

async fn tencent(gw: &Gateway, phone: &str, content: &str, time: i64) -> String {
    let body = json!({
        "extend": "",
        "mobile": phone,
        "nationcode": "86",
        "sign": "12345热线",
        "text": content,
        "time": time
    });
    sms(gw, "tencent", body, json!({"result": 0, "errmsg": "OK"})).await
}

/// Fill the form like a browser does (multipart, as the page's `enctype` says).
async fn web(gw: &Gateway, form: &ServedForm, c: &Complaint, name: &str, phone: &str) -> String {
    let boundary = "----agreement1b2c3d";
    let mut body = String::new();
    for (k, v) in [
        ("token", form.token.as_str()),
        ("text", c.text),
        ("district", c.district),
        ("address", c.address),
        ("name", name),
        ("phone", phone),
        ("website", ""),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let r = gw
        .http
        .post(gw.url("/web/submit"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("origin", gw.base())
        .header("cookie", &form.cookie)
        .body(body)
        .send()
        .await
        .expect("POST /web/submit");
    let r = Reply::from(r).await;
    assert_eq!(r.status, 200, "web: {}", r.text);
    r.text
        .split("data-order-id=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("order number on the confirmation page")
        .to_owned()
}

async fn app(gw: &Gateway, c: &Complaint, phone: &str) -> String {
    gw.submit_ok(&json!({
        "text": c.text,
        "citizen": {"name": "王女士", "phone": phone},
        "location": {"district": c.district, "address": format!("{}{}", c.district, c.address)},
    }))
    .await
}

async fn open311(gw: &Gateway, c: &Complaint, phone: &str) -> String {
    let body = format!(
        "api_key={USER_KEY}&jurisdiction_id=wuhan.gov.cn&service_code={}&address_string={}\
         &description={}&first_name={}&last_name={}&phone={}",
        c.service_code,
        enc(&format!("{}{}", c.district, c.address)),
        enc(c.text),
        enc("明"),
        enc("赵"),
        enc(phone)
    );
    let r = gw
        .http
        .post(gw.url("/open311/v2/requests.json"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST requests.json");
    let r = Reply::from(r).await;
    assert_eq!(r.status, 200, "open311: {}", r.text);
    r.body[0]["service_request_id"]
        .as_str()
        .expect("service_request_id")
        .to_owned()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&work_order_schema()).expect("the schema compiles")
}

/// `(order id, relation, reason)` of an order's `related`.
fn links(order: &Value) -> Vec<(String, String, String)> {
    order["related"]
        .as_array()
        .expect("related is an array")
        .iter()
        .map(|r| {
            (
                r["order_id"].as_str().unwrap_or_default().to_owned(),
                r["relation"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn summary(order: &Value) -> String {
    format!(
        "{} kind={} category={} district={} street={} urgency={}",
        order["channel"],
        order["kind"],
        order["category"],
        order["location"]["district"],
        order["location"]["street"],
        order["urgency"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_complaint_every_channel_one_order_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_with_extra(GatewayOptions::new(dir.path()), &extra()).await;
    let schema = validator();

    // Web forms are served first: a form sent back too soon is taken for a bot.
    let mut forms = Vec::new();
    for _ in 0..COMPLAINTS.len() + 1 {
        forms.push(gw.serve_form().await);
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let mut sent: Vec<Vec<String>> = Vec::new();
    for (c, complaint) in COMPLAINTS.iter().enumerate() {
        let mut orders = Vec::new();
        for (ch, channel) in CHANNELS.iter().enumerate() {
            let phone = phone(c, ch);
            let id = match *channel {
                "wechat" => wechat(&gw, &openid(c), 7_100_000 + c as u64, complaint.text).await,
                "sms-aliyun" => aliyun(&gw, &phone, complaint.text, 800_000 + c as u64).await,
                "sms-tencent" => {
                    tencent(&gw, &phone, complaint.text, 1_764_000_000 + c as i64).await
                }
                "web" => web(&gw, &forms[c], complaint, "李女士", &phone).await,
                "app" => app(&gw, complaint, &phone).await,
                "open311" => open311(&gw, complaint, &phone).await,
                other => unreachable!("channel {other}"),
            };
            orders.push(id);
        }
        sent.push(orders);
    }

    let mut by_id: HashMap<String, Value> = HashMap::new();
    for o in gw.all_orders(100).await {
        let id = o["id"].as_str().expect("id").to_owned();
        by_id.insert(id, o);
    }
    assert_eq!(by_id.len(), COMPLAINTS.len() * CHANNELS.len());

    for (c, complaint) in COMPLAINTS.iter().enumerate() {
        let orders: Vec<&Value> = sent[c].iter().map(|id| &by_id[id]).collect();
        let table: Vec<String> = orders.iter().map(|o| summary(o)).collect();
        let first = orders[0];
        for (ch, o) in orders.iter().enumerate() {
            let channel = CHANNELS[ch].split('-').next().unwrap_or_default();
            assert_eq!(o["channel"], channel, "{table:#?}");
            for field in ["kind", "category", "urgency"] {
                assert_eq!(o[field], first[field], "{field} differs:\n{table:#?}");
            }
            assert_eq!(
                o["location"]["district"], complaint.district,
                "district:\n{table:#?}"
            );
            assert_eq!(o["kind"], complaint.service_code, "kind:\n{table:#?}");
            assert_eq!(o["urgency"], complaint.urgency, "urgency:\n{table:#?}");
            assert!(
                o["category"].as_str().is_some_and(|s| !s.is_empty()),
                "classified:\n{table:#?}"
            );
            let errs: Vec<String> = schema.iter_errors(o).map(|e| e.to_string()).collect();
            assert!(errs.is_empty(), "schema: {errs:?}\n{o:#}");
        }

        // Six different citizens, one place, one category: one event. Two reports are not yet
        // an event; from the third on, each order names the first report and the latest ones.
        let category = first["category"].as_str().unwrap_or_default();
        for (k, o) in orders.iter().enumerate() {
            let l = links(o);
            if k < 2 {
                assert!(l.is_empty(), "report {k} is not yet an event: {l:?}");
                continue;
            }
            assert!(!l.is_empty(), "report {k} joins the event:\n{table:#?}");
            for (other, relation, reason) in &l {
                assert_eq!(relation, "same_event", "{l:?}");
                assert!(
                    sent[c][..k].contains(other),
                    "report {k} links {other}, not an earlier report of this complaint: {l:?}"
                );
                let head = format!("{} citizens reported {category} at ", k + 1);
                assert!(reason.starts_with(&head), "{reason:?} (want {head:?})");
                assert!(reason.contains(complaint.district), "{reason}");
            }
            assert_eq!(l[0].0, sent[c][0], "the first report comes first: {l:?}");
        }
    }

    // The same citizen again. SMS from the noise complainant's phone: a duplicate of their
    // first SMS, still six citizens in the event.
    let noise = &COMPLAINTS[0];
    let aliyun_phone = phone(0, 1);
    let again = aliyun(&gw, &aliyun_phone, noise.text, 800_100).await;
    let l = links(&gw.order(&again).await);
    let dups: Vec<_> = l.iter().filter(|x| x.1 == "duplicate").collect();
    assert_eq!(dups.len(), 1, "{l:?}");
    assert_eq!(dups[0].0, sent[0][1], "{l:?}");
    let masked = format!("{}****{}", &aliyun_phone[..3], &aliyun_phone[7..]);
    assert!(dups[0].2.contains(&masked), "{}", dups[0].2);
    assert!(dups[0].2.contains("min ago"), "{}", dups[0].2);
    assert!(!dups[0].2.contains(&aliyun_phone), "{}", dups[0].2);
    let events: Vec<_> = l.iter().filter(|x| x.1 == "same_event").collect();
    assert!(!events.is_empty(), "{l:?}");
    assert!(
        events
            .iter()
            .all(|e| e.2.starts_with("6 citizens") && e.0 != sent[0][1]),
        "the same caller twice is one citizen, and not linked twice: {events:?}"
    );

    // The street-light reporter from the Tencent SMS files the web form with the same phone: a
    // duplicate across channels.
    let light = &COMPLAINTS[1];
    let tencent_phone = phone(1, 2);
    let cross = web(
        &gw,
        &forms[COMPLAINTS.len()],
        light,
        "陈先生",
        &tencent_phone,
    )
    .await;
    let l = links(&gw.order(&cross).await);
    assert!(
        l.iter()
            .any(|(id, rel, _)| id == &sent[1][2] && rel == "duplicate"),
        "{l:?}"
    );

    // The WeChat citizen of the parking complaint writes again (new MsgId): a duplicate named
    // by a shortened openid.
    let parking = &COMPLAINTS[2];
    let repeat = wechat(&gw, &openid(2), 7_200_002, parking.text).await;
    let l = links(&gw.order(&repeat).await);
    let dup = l
        .iter()
        .find(|(id, rel, _)| id == &sent[2][0] && rel == "duplicate")
        .unwrap_or_else(|| panic!("no duplicate link: {l:?}"));
    assert!(dup.2.contains("wechat user oAgr***"), "{}", dup.2);
    assert!(!dup.2.contains(&openid(2)), "{}", dup.2);

    // A WeChat redelivery is the same order, not a duplicate of itself.
    let redelivered = wechat(&gw, &openid(2), 7_200_002, parking.text).await;
    assert_eq!(redelivered, repeat);

    // Nobody's phone number appears in the log.
    let log = gw.log();
    for c in 0..COMPLAINTS.len() {
        for ch in 0..CHANNELS.len() {
            let p = phone(c, ch);
            assert!(!log.contains(&p), "{p} in the log");
        }
    }
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "gateway_related_links_total",
            &[("relation", "duplicate")]
        ) >= 3.0
    );
    assert!(
        metric(
            &m,
            "gateway_related_links_total",
            &[("relation", "same_event")]
        ) >= 16.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn related_orders_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let report = |phone: &str| {
        json!({
            "text": "青山区和平大道红钢城菜市场门口的下水道堵了三天，污水漫到路面上，臭气熏天。",
            "citizen": {"phone": phone},
        })
    };
    let first = gw.submit_ok(&report("13700001111")).await;
    let second = gw.submit_ok(&report("13700002222")).await;
    assert!(links(&gw.order(&second).await).is_empty(), "two citizens");
    assert_eq!(gw.sigterm().await.code(), Some(0));
    gw.restart().await;
    assert!(
        gw.log().contains("related-order index rebuilt"),
        "{}",
        gw.log()
    );

    // After the restart the index knows both: a third citizen makes it an event, and the first
    // citizen again is a duplicate.
    let third = gw.submit_ok(&report("13700003333")).await;
    let l = links(&gw.order(&third).await);
    let linked: HashSet<&str> = l.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        linked,
        HashSet::from([first.as_str(), second.as_str()]),
        "{l:?}"
    );
    assert!(l.iter().all(|x| x.1 == "same_event"), "{l:?}");
    let again = gw.submit_ok(&report("+86 137-0000-1111")).await;
    let l = links(&gw.order(&again).await);
    assert!(
        l.iter().any(|(id, rel, reason)| id == &first
            && rel == "duplicate"
            && reason.contains("137****1111")),
        "{l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submission_in_flight_is_still_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let body = json!({
        "text": "东西湖区金银湖路一家餐馆油烟直排，楼上住户窗户都不敢开。",
        "citizen": {"phone": "13655556666"},
        "location": {"district": "东西湖区"}
    });
    // Both at once, as a double tap sends them: neither waits for the other's answer.
    let (a, b) = tokio::join!(gw.submit(&body, None), gw.submit(&body, None));
    assert_eq!((a.status, b.status), (202, 202), "{} {}", a.text, b.text);
    let ids = [
        a.body["order_id"].as_str().expect("id").to_owned(),
        b.body["order_id"].as_str().expect("id").to_owned(),
    ];
    assert_ne!(ids[0], ids[1]);
    let linked: Vec<Vec<(String, String, String)>> = [
        links(&gw.order(&ids[0]).await),
        links(&gw.order(&ids[1]).await),
    ]
    .into();
    // Exactly one of them (the later one into the index) names the other as a duplicate.
    let total: usize = linked.iter().map(Vec::len).sum();
    assert_eq!(total, 1, "{linked:?}");
    let (later, earlier) = if linked[0].is_empty() { (1, 0) } else { (0, 1) };
    assert_eq!(linked[later][0].0, ids[earlier], "{linked:?}");
    assert_eq!(linked[later][0].1, "duplicate");
}
