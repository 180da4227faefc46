//! Open311 GeoReport v2 end to end with spec-shaped requests: the service list, a form-encoded
//! POST that becomes an order, reading it back by id and in the filtered list (without personal
//! data), status mapping after a backend event, and the spec's errors.

use serde_json::{Value, json};
use support::{ADMIN_KEY, Gateway, GatewayOptions, Reply, SECRET, USER_KEY, now_unix};

/// POST `body` form-encoded, as curl --data would.
async fn post(gw: &Gateway, body: &str) -> Reply {
    let r = gw
        .http
        .post(gw.url("/open311/v2/requests.json"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST requests.json");
    Reply::from(r).await
}

/// The id of the request a 200 answer to a POST created.
fn created_id(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body[0]["service_request_id"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn assert_spec_error(r: &Reply, status: u16, mentions: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let e = &r.body[0];
    assert_eq!(e["code"], status, "{}", r.text);
    let d = e["description"].as_str().unwrap_or_default();
    assert!(d.contains(mentions), "{mentions:?} not in {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_post_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;

    let services = gw.get("/open311/v2/services.json", None).await;
    assert_eq!(services.status, 200);
    let list = services.body.as_array().expect("an array");
    assert_eq!(list.len(), 6);
    for s in list {
        for k in [
            "service_code",
            "service_name",
            "description",
            "keywords",
            "group",
        ] {
            assert!(s[k].is_string(), "{k} in {s}");
        }
        assert_eq!(s["metadata"], false);
        assert_eq!(s["type"], "realtime");
    }
    let codes: Vec<&str> = list
        .iter()
        .filter_map(|s| s["service_code"].as_str())
        .collect();
    assert!(codes.contains(&"report") && codes.contains(&"complaint"));

    let body = format!(
        "api_key={USER_KEY}&jurisdiction_id=wuhan.gov.cn&service_code=report&lat=30.5928&long=114.3055\
         &address_string={}&description={}&first_name={}&last_name={}&phone={}&email=li%40example.cn\
         &media_url={}&attribute%5BWHISHETN%5D=123&attribute%5Bcolor%5D=red",
        enc("江汉路步行街1号"),
        enc("路灯坏了，晚上很黑。我的电话13800138000"),
        enc("四"),
        enc("李"),
        enc("138 0013 8000"),
        enc("https://photos.example/a.jpg"),
    );
    let r = post(&gw, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let answer = &r.body[0];
    let id = answer["service_request_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(support::is_valid_order_id(&id));
    assert!(
        answer["service_notice"]
            .as_str()
            .unwrap_or_default()
            .contains(&id)
    );
    assert_eq!(answer["account_id"], Value::Null);

    // The order as the gateway keeps it: every field, channel open311.
    let order = gw.order(&id).await;
    assert_eq!(order["channel"], "open311");
    assert_eq!(order["kind"], "report");
    assert_eq!(order["citizen"]["name"], "李四");
    assert_eq!(order["citizen"]["phone"], "13800138000");
    assert_eq!(order["location"]["lat"], 30.5928);
    assert_eq!(order["source"]["api_client"], "app");
    assert_eq!(
        order["attachments"][0]["url"],
        "https://photos.example/a.jpg"
    );

    // Read back through Open311: the spec's fields, no personal data.
    let one = gw
        .get(&format!("/open311/v2/requests/{id}.json"), None)
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    let sr = &one.body[0];
    assert_eq!(sr["service_request_id"], id.as_str());
    assert_eq!(sr["status"], "open");
    assert_eq!(sr["service_code"], "report");
    assert_eq!(sr["service_name"], "举报");
    assert_eq!(sr["lat"], 30.5928);
    assert_eq!(sr["long"], 114.3055);
    // Normalization locates the district from the address (江汉路 is in 江汉区) and the public
    // view shows it before the street address.
    assert_eq!(sr["address"], "江汉区江汉路步行街1号");
    assert_eq!(sr["media_url"], "https://photos.example/a.jpg");
    for k in ["requested_datetime", "updated_datetime", "description"] {
        assert!(sr[k].is_string(), "{k}");
    }
    assert!(
        sr["requested_datetime"]
            .as_str()
            .unwrap_or_default()
            .ends_with("+08:00")
    );
    for secret in ["13800138000", "李四", "li@example.cn"] {
        assert!(!one.text.contains(secret), "{secret} leaked: {}", one.text);
    }
    assert!(sr.get("citizen").is_none() && sr.get("phone").is_none());

    // A second request, then the list and its filters.
    let r2 = post(
        &gw,
        &format!(
            "api_key={ADMIN_KEY}&service_code=complaint&address_string={}&description={}",
            enc("武昌区中南路"),
            enc("工地夜间施工扰民")
        ),
    )
    .await;
    let id2 = created_id(&r2);

    let ids = |r: &Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|s| s["service_request_id"].as_str().map(str::to_owned))
            .collect()
    };
    let all = gw.get("/open311/v2/requests.json", None).await;
    assert_eq!(ids(&all), vec![id2.clone(), id.clone()], "newest first");
    let by_id = gw
        .get(
            &format!("/open311/v2/requests.json?service_request_id={id},{id2}"),
            None,
        )
        .await;
    assert_eq!(ids(&by_id).len(), 2);
    let by_code = gw
        .get("/open311/v2/requests.json?service_code=complaint", None)
        .await;
    assert_eq!(ids(&by_code), vec![id2.clone()]);
    let today = chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string();
    let dated = gw
        .get(&format!("/open311/v2/requests.json?start_date={today}&end_date=2099-01-01T00:00:00Z&status=open"), None)
        .await;
    assert_eq!(ids(&dated).len(), 2);
    let past = gw
        .get(
            "/open311/v2/requests.json?start_date=2020-01-01&end_date=2020-01-31",
            None,
        )
        .await;
    assert!(ids(&past).is_empty());

    // The backend resolves the first: it is now closed, with its note.
    let ev = json!({"status": "resolved", "note": "已更换灯泡", "by": "城管局"});
    let e = gw
        .event(
            &id,
            &serde_json::to_vec(&ev).expect("json"),
            SECRET,
            now_unix(),
        )
        .await;
    assert_eq!(e.status, 200, "{}", e.text);
    let closed = gw
        .get("/open311/v2/requests.json?status=closed", None)
        .await;
    assert_eq!(ids(&closed), vec![id.clone()]);
    let open = gw.get("/open311/v2/requests.json?status=open", None).await;
    assert_eq!(ids(&open), vec![id2.clone()]);
    let one = gw
        .get(&format!("/open311/v2/requests/{id}.json"), None)
        .await;
    assert_eq!(one.body[0]["status"], "closed");
    assert_eq!(one.body[0]["status_notes"], "已更换灯泡");

    // Orders from other channels are not published by default.
    let app = gw
        .submit_ok(&json!({"text": "社保怎么转移", "citizen": {"phone": "13700137000"}}))
        .await;
    let hidden = gw
        .get(&format!("/open311/v2/requests/{app}.json"), None)
        .await;
    assert_spec_error(&hidden, 404, "not found");
    assert_eq!(
        ids(&gw.get("/open311/v2/requests.json", None).await).len(),
        2
    );
}

/// Every run of 11 digits starting 1[3-9] (a mobile number) in `text`.
fn mobiles_in(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|r| r.len() == 11 && r.starts_with('1') && !r[1..].starts_with(['0', '1', '2']))
        .collect()
}

/// Issue 19: a description with phone numbers followed by more digits was published whole by
/// the public, unauthenticated API. Tried as a citizen's neighbour would: read it without a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_descriptions_show_no_phone_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let description = "江汉路井盖缺失，联系电话13800138000-8001，或13900139000 13700137000，身份证420102 19900101 121X";
    let r = post(
        &gw,
        &format!(
            "api_key={ADMIN_KEY}&service_code=report&lat=30.58&long=114.27&description={}",
            enc(description)
        ),
    )
    .await;
    let id = created_id(&r);
    let one = gw
        .get(&format!("/open311/v2/requests/{id}.json"), None)
        .await;
    let list = gw.get("/open311/v2/requests.json", None).await;
    for reply in [&one, &list] {
        assert_eq!(reply.status, 200, "{}", reply.text);
        let published = reply.body[0]["description"].as_str().expect("description");
        assert!(published.contains("江汉路井盖缺失"), "{published}");
        assert!(mobiles_in(&reply.text).is_empty(), "{}", reply.text);
        for secret in ["0013", "0139", "0137", "19900101"] {
            assert!(!published.contains(secret), "{secret} in {published}");
        }
        assert!(published.contains("138****8000-8001"), "{published}");
    }
    // The integrator with a key still gets the whole text in the WorkOrder.
    let order = gw.get(&format!("/v1/orders/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(order.status, 200, "{}", order.text);
    assert_eq!(order.body["text"], description);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_follow_the_spec_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(GatewayOptions::new(dir.path())).await;
    let key = format!("api_key={USER_KEY}");
    let d = enc("井盖丢了");
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("{key}&description={d}&lat=30.5&long=114.3"),
            400,
            "service_code",
        ),
        (
            format!("{key}&service_code=report&lat=30.5&long=114.3"),
            400,
            "description",
        ),
        (
            format!("{key}&service_code=pothole&description={d}&lat=30.5&long=114.3"),
            404,
            "service_code",
        ),
        (
            format!("api_key=wrong&service_code=report&description={d}&lat=30.5&long=114.3"),
            403,
            "api_key",
        ),
        (
            format!("service_code=report&description={d}&lat=30.5&long=114.3"),
            403,
            "api_key",
        ),
        (
            format!("{key}&service_code=report&description={d}&lat=95&long=114.3"),
            400,
            "lat",
        ),
        (
            format!("{key}&service_code=report&description={d}&lat=30.5&long=east"),
            400,
            "long",
        ),
        (
            format!("{key}&service_code=report&description={d}&lat=30.5"),
            400,
            "long",
        ),
        (
            format!("{key}&service_code=report&description={d}"),
            400,
            "location",
        ),
        (
            format!(
                "{key}&jurisdiction_id=beijing&service_code=report&description={d}&lat=30.5&long=114.3"
            ),
            404,
            "jurisdiction_id",
        ),
    ];
    for (body, status, mentions) in &cases {
        let r = post(&gw, body).await;
        assert_spec_error(&r, *status, mentions);
    }
    let r = gw
        .http
        .post(gw.url("/open311/v2/requests.json"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST json");
    assert_eq!(Reply::from(r).await.status, 415);

    assert_spec_error(
        &gw.get("/open311/v2/requests/123.xml", None).await,
        400,
        "JSON",
    );
    assert_spec_error(
        &gw.get("/open311/v2/requests/123.json", None).await,
        400,
        "service_request_id",
    );
    assert_spec_error(
        &gw.get(
            &format!(
                "/open311/v2/requests/{}.json",
                support::with_check_digit("2611230100099")
            ),
            None,
        )
        .await,
        404,
        "not found",
    );
    assert_spec_error(
        &gw.get("/open311/v2/requests.json?status=pending", None)
            .await,
        400,
        "status",
    );
    assert_spec_error(
        &gw.get("/open311/v2/requests.json?start_date=yesterday", None)
            .await,
        400,
        "start_date",
    );
    assert_spec_error(
        &gw.get("/open311/v2/requests.json?service_code=nope", None)
            .await,
        404,
        "service_code",
    );

    assert_eq!(gw.all_orders(500).await.len(), 0, "nothing stored");
    assert!(!gw.log().contains(USER_KEY), "API key in the log");
}
