//! The web form end to end: a person in headless Chromium (fill, attach a photo, submit, read the
//! order number, find the order through the API), and at the HTTP level everything the form must
//! refuse (invalid fields, a fake or oversize photo, the honeypot, a too-fast or forged post, a
//! flood) without storing anything.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::browser::{browser_dir, ensure_playwright};
use support::{ADMIN_KEY, Gateway, GatewayOptions, Reply};

const WEB: &str = "[web]\nmin_fill_seconds = 1\nmax_upload_bytes = 100000\nrate_burst = 100\n";

/// A multipart body: text fields and optionally a file named `photo`.
fn multipart(fields: &[(&str, &str)], photo: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----gatewaytest7d93a1";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((filename, mime, bytes)) = photo {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_form(
    gw: &Gateway,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    photo: Option<(&str, &str, &[u8])>,
) -> Reply {
    let (ct, body) = multipart(fields, photo);
    let mut req = gw
        .http
        .post(gw.url("/web/submit"))
        .header("content-type", ct)
        .header("origin", gw.base())
        .body(body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    Reply::from(req.send().await.expect("POST /web/submit")).await
}

fn good_fields(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("token", token.to_owned()),
        ("text", "小区门口井盖缺失，很危险".to_owned()),
        ("district", "洪山区".to_owned()),
        ("address", "珞喻路100号".to_owned()),
        ("name", "李女士".to_owned()),
        ("phone", "13900139000".to_owned()),
        ("website", String::new()),
    ]
}

fn as_refs<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    f.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn order_id_in(html: &str) -> Option<String> {
    html.split("data-order-id=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(str::to_owned)
}

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend_from_slice(&[0u8; 64]);
    v
}

fn upload_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("uploads"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// A gateway with the web form configured by `extra`, on a fresh data directory.
async fn web_gateway(extra: &str) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_with_extra(GatewayOptions::new(dir.path()), extra).await;
    (dir, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_files_the_form_in_chromium() {
    ensure_playwright();
    let (dir, gw) = web_gateway(WEB).await;
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("webform.mjs"))
        .arg(gw.base())
        .args(["--wait-ms", "1200"]);
    if let Ok(shots) = std::env::var("GATEWAY_WEB_SCREENSHOTS") {
        cmd.args(["--screenshots", &shots]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run node tests/browser/webform.mjs (scripts/setup.sh --test installs node)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no JSON from the browser script ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        r["ok"],
        true,
        "browser run failed: {r:#}\nlog:\n{}",
        gw.log()
    );

    // The page itself.
    assert_eq!(r["lang"], "zh-CN");
    assert_eq!(r["emergency_notice"], true);
    assert_eq!(
        r["unlabelled"],
        serde_json::json!([]),
        "every control is labelled"
    );
    assert_eq!(r["district_options"].as_array().map(Vec::len), Some(13));
    assert!(
        r["scroll_width"].as_f64().unwrap_or(999.0) <= 390.0,
        "no sideways scrolling at phone width"
    );
    assert!(
        r["button_height"].as_f64().unwrap_or(0.0) >= 44.0,
        "a large touch target"
    );
    // The first try's mistakes were shown, linked, and the text kept.
    assert!(
        r["error_title"]
            .as_str()
            .unwrap_or_default()
            .starts_with("错误")
    );
    assert_eq!(r["error_links"], serde_json::json!(["#district", "#phone"]));
    assert_eq!(r["kept_text"], true);
    assert_eq!(r["phone_invalid"], true);

    // The order behind the number on the confirmation page.
    let id = r["order_id"].as_str().expect("order id").to_owned();
    assert_eq!(r["order_text"].as_str(), Some(id.as_str()));
    assert!(r["order_font_px"].as_f64().unwrap_or(0.0) >= 24.0);
    assert!(support::is_valid_order_id(&id));
    let order = gw.order(&id).await;
    assert_eq!(order["channel"], "web");
    assert_eq!(order["location"]["district"], "江汉区");
    assert_eq!(order["location"]["address"], "江汉路1号");
    assert_eq!(order["citizen"]["phone"], "13800138000");
    assert_eq!(order["citizen"]["name"], "张先生");
    let att = &order["attachments"][0];
    assert_eq!(att["mime"], "image/png");
    let sha = att["sha256"].as_str().expect("sha256").to_owned();
    assert_eq!(att["url"], format!("/uploads/{sha}"));

    // The photo: stored under its hash, served to API-key holders only.
    let stored = std::fs::read(dir.path().join("uploads").join(&sha)).expect("stored photo");
    assert_eq!(hex::encode(Sha256::digest(&stored)), sha);
    let anon = gw.get(&format!("/uploads/{sha}"), None).await;
    assert_eq!(anon.status, 401);
    let r2 = gw
        .http
        .get(gw.url(&format!("/uploads/{sha}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("GET photo");
    assert_eq!(r2.status(), 200);
    assert_eq!(r2.headers()["content-type"], "image/png");
    assert_eq!(r2.bytes().await.expect("bytes").as_ref(), stored.as_slice());

    // The emergency was referred on the page and in the order.
    assert!(
        r["referral"].as_str().unwrap_or_default().contains("119"),
        "{r}"
    );
    let em = gw
        .order(r["emergency_order_id"].as_str().expect("id"))
        .await;
    assert_eq!(em["emergency_referral"], 119);
    assert_eq!(em["urgency"], "emergency");
    assert!(
        r["status_text"]
            .as_str()
            .unwrap_or_default()
            .contains("已受理")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_input_stores_nothing() {
    // Three seconds leave room for a loaded machine between serving and posting the "too fast" form.
    let extra = "[web]\nmin_fill_seconds = 3\nmax_upload_bytes = 100000\nrate_burst = 100\n";
    let (dir, gw) = web_gateway(extra).await;

    // Too fast: posted right after the form was served. The form comes back, input kept.
    let s = gw.serve_form().await;
    let f = good_fields(&s.token);
    let r = post_form(&gw, Some(&s.cookie), &as_refs(&f), None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("太快"), "{}", r.text);
    assert!(r.text.contains("珞喻路100号"), "input kept");
    tokio::time::sleep(Duration::from_millis(3100)).await;

    // Invalid fields: every problem named next to its field, input kept.
    let s = gw.serve_form().await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut f = good_fields(&s.token);
    f[1].1 = String::new();
    f[2].1 = "北京区".into();
    f[5].1 = "call me".into();
    let r = post_form(&gw, Some(&s.cookie), &as_refs(&f), None).await;
    assert_eq!(r.status, 422, "{}", r.text);
    for anchor in ["href=\"#text\"", "href=\"#district\"", "href=\"#phone\""] {
        assert!(r.text.contains(anchor), "{anchor} in {}", r.text);
    }
    assert!(r.text.contains("id=\"phone-error\""));
    assert!(r.text.contains("value=\"call me\""));
    assert!(r.text.contains("珞喻路100号"));

    // A ".jpg" that is really text; a photo over max_upload_bytes; a body over the limit.
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "photo.jpg",
            "image/jpeg",
            b"<html>I am not a JPEG</html>".to_vec(),
            422,
        ),
        (
            "big.png",
            "image/png",
            {
                let mut v = png();
                v.resize(150_000, 0);
                v
            },
            422,
        ),
        (
            "huge.png",
            "image/png",
            {
                let mut v = png();
                v.resize(600_000, 0);
                v
            },
            413,
        ),
    ];
    for (name, mime, bytes, status) in cases {
        let s = gw.serve_form().await;
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let f = good_fields(&s.token);
        let r = post_form(
            &gw,
            Some(&s.cookie),
            &as_refs(&f),
            Some((name, mime, &bytes)),
        )
        .await;
        assert_eq!(r.status, status, "{name}: {}", r.text);
        if status == 422 {
            assert!(r.text.contains("href=\"#photo\""), "{name}: {}", r.text);
            assert!(r.text.contains("珞喻路100号"), "input kept");
        }
    }

    // The honeypot, a missing cookie, a forged token.
    let s = gw.serve_form().await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut f = good_fields(&s.token);
    f[6].1 = "http://spam.example".into();
    let r = post_form(
        &gw,
        Some(&s.cookie),
        &as_refs(&f),
        Some(("a.png", "image/png", &png())),
    )
    .await;
    assert_eq!(r.status, 400, "honeypot: {}", r.text);
    let f = good_fields(&s.token);
    let r = post_form(&gw, None, &as_refs(&f), None).await;
    assert_eq!(r.status, 403, "no cookie: {}", r.text);
    let f = good_fields(&format!("{}0", s.token));
    let r = post_form(&gw, Some(&s.cookie), &as_refs(&f), None).await;
    assert_eq!(r.status, 403, "forged token: {}", r.text);
    let other = gw.serve_form().await;
    let f = good_fields(&s.token);
    let r = post_form(&gw, Some(&other.cookie), &as_refs(&f), None).await;
    assert_eq!(r.status, 403, "token of another browser: {}", r.text);

    assert_eq!(gw.all_orders(500).await.len(), 0, "nothing was stored");
    assert_eq!(upload_count(dir.path()), 0, "no photo was stored");

    // And then the same form, valid, files exactly one order even when sent twice.
    let f = good_fields(&s.token);
    let photo = png();
    let first = post_form(
        &gw,
        Some(&s.cookie),
        &as_refs(&f),
        Some(("a.png", "image/png", &photo)),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let again = post_form(
        &gw,
        Some(&s.cookie),
        &as_refs(&f),
        Some(("a.png", "image/png", &photo)),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    let id = order_id_in(&first.text).expect("order number on the page");
    assert_eq!(order_id_in(&again.text).as_deref(), Some(id.as_str()));
    assert_eq!(gw.all_orders(500).await.len(), 1);
    assert_eq!(upload_count(dir.path()), 1);
    let log = gw.log();
    assert!(!log.contains("13900139000"), "phone in clear in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_gets_429() {
    let extra = "[web]\nrate_per_minute = 1\nrate_burst = 3\n";
    let (_dir, gw) = web_gateway(extra).await;
    let s = gw.serve_form().await;
    let f = good_fields(&s.token);
    for i in 0..3 {
        let r = post_form(&gw, Some(&s.cookie), &as_refs(&f), None).await;
        assert_ne!(r.status, 429, "request {i} is within the burst");
    }
    let r = post_form(&gw, Some(&s.cookie), &as_refs(&f), None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.text.contains("lang=\"zh-CN\""), "a page, not JSON");
    assert_eq!(gw.all_orders(500).await.len(), 0);
}
