//! WeChat channel end to end: the built gateway against pushes built here from the published
//! spec (signatures, safe-mode AES envelope, XML and mini-program JSON), checked through the
//! orders API. Refused pushes must leave nothing stored.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde_json::Value;
use sha1::{Digest, Sha1};
use support::*;

const TOKEN: &str = "spamtest";
const APPID: &str = "wx2c2769f8efd9abc2";
/// The spec's example EncodingAESKey.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const MP_TOKEN: &str = "mptoken";
const MP_APPID: &str = "wxmp0000000000001";

fn extra() -> String {
    format!(
        "[channels]\nattach_window_s = 1800\n\n\
         [[channels.wechat]]\nname = \"hotline\"\nappid = \"{APPID}\"\ntoken = \"{TOKEN}\"\n\
         encoding_aes_key = \"{AES_KEY}\"\nkind = \"official\"\n\n\
         [[channels.wechat]]\nname = \"mp\"\nappid = \"{MP_APPID}\"\ntoken = \"{MP_TOKEN}\"\n\
         encoding_aes_key = \"{AES_KEY}\"\nkind = \"mini_program\"\n"
    )
}

async fn gateway() -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_with_extra(GatewayOptions::new(dir.path()), &extra()).await;
    (dir, gw)
}

fn sha1_sig(parts: &[&str]) -> String {
    let mut v = parts.to_vec();
    v.sort_unstable();
    hex::encode(Sha1::digest(v.concat().as_bytes()))
}

fn signed_query(token: &str, nonce: &str) -> String {
    let ts = now_unix().to_string();
    format!(
        "timestamp={ts}&nonce={nonce}&signature={}",
        sha1_sig(&[token, &ts, nonce])
    )
}

fn key() -> [u8; 32] {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(format!("{AES_KEY}="))
        .expect("key")
        .try_into()
        .expect("32 bytes")
}

/// The spec's encryption: 16 random bytes, length, message, appid; PKCS#7 to 32; AES-256-CBC.
fn encrypt(msg: &str, appid: &str) -> String {
    let k = key();
    let mut p = b"abcdefghijklmnop".to_vec();
    p.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.extend_from_slice(appid.as_bytes());
    let pad = 32 - p.len() % 32;
    p.extend(std::iter::repeat_n(pad as u8, pad));
    let ct = cbc::Encryptor::<aes::Aes256>::new((&k).into(), (&k[..16]).into())
        .encrypt_padded_vec_mut::<NoPadding>(&p);
    base64::engine::general_purpose::STANDARD.encode(ct)
}

fn decrypt(b64: &str) -> (String, String) {
    let k = key();
    let ct = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let p = cbc::Decryptor::<aes::Aes256>::new((&k).into(), (&k[..16]).into())
        .decrypt_padded_vec_mut::<NoPadding>(&ct)
        .expect("decrypt");
    let pad = *p.last().expect("padding") as usize;
    assert!((1..=32).contains(&pad), "padding {pad}");
    let p = &p[..p.len() - pad];
    let len = u32::from_be_bytes([p[16], p[17], p[18], p[19]]) as usize;
    (
        String::from_utf8(p[20..20 + len].to_vec()).expect("utf8"),
        String::from_utf8(p[20 + len..].to_vec()).expect("utf8"),
    )
}

/// A field of WeChat's flat XML, CDATA or not (an independent, minimal reader).
fn field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let v = &xml[start..end];
    Some(
        v.strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(v)
            .to_owned(),
    )
}

fn msg_xml(from: &str, msg_id: u64, msg_type: &str, inner: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{inner}<MsgId>{msg_id}</MsgId></xml>",
        now_unix()
    )
}

fn text_xml(from: &str, msg_id: u64, content: &str) -> String {
    msg_xml(
        from,
        msg_id,
        "text",
        &format!("<Content><![CDATA[{content}]]></Content>"),
    )
}

async fn post_plain(gw: &Gateway, xml: &str) -> Reply {
    gw.post_raw(
        &format!("/channels/wechat/hotline?{}", signed_query(TOKEN, "n1")),
        "text/xml",
        xml.as_bytes().to_vec(),
    )
    .await
}

/// The reply's Content, checking the passive reply's shape.
fn content(r: &Reply, to: &str) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        field(&r.text, "ToUserName").as_deref(),
        Some(to),
        "{}",
        r.text
    );
    assert_eq!(field(&r.text, "FromUserName").as_deref(), Some("gh_12345"));
    assert_eq!(field(&r.text, "MsgType").as_deref(), Some("text"));
    field(&r.text, "Content").expect("Content")
}

fn order_id_in(text: &str) -> String {
    let start = text.find("工单号：").expect("order number in the reply") + "工单号：".len();
    let id: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(is_valid_order_id(&id), "{id} in {text}");
    id
}

async fn count(gw: &Gateway) -> usize {
    gw.all_orders(100).await.len()
}

#[tokio::test]
async fn url_verification() {
    let (_d, gw) = gateway().await;
    let q = signed_query(TOKEN, "abc");
    let r = gw
        .get(
            &format!("/channels/wechat/hotline?{q}&echostr=hello123"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "hello123");
    let bad = signed_query("wrong-token", "abc");
    let r = gw
        .get(
            &format!("/channels/wechat/hotline?{bad}&echostr=hello123"),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_ne!(r.text, "hello123");
    let r = gw
        .get(&format!("/channels/wechat/nobody?{q}&echostr=x"), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(count(&gw).await, 0);
}

#[tokio::test]
async fn text_voice_retries_and_queries() {
    let (_d, gw) = gateway().await;
    // Text: the reply carries the order number.
    let xml = text_xml("oCitizenA", 6100000000000000001, "小区路灯坏了一个星期");
    let first = content(&post_plain(&gw, &xml).await, "oCitizenA");
    let id = order_id_in(&first);
    assert!(first.contains("查询"), "{first}");
    // WeChat retries the same MsgId (new timestamp and nonce) up to three times.
    for _ in 0..2 {
        let again = content(&post_plain(&gw, &xml).await, "oCitizenA");
        assert_eq!(order_id_in(&again), id);
    }
    assert_eq!(count(&gw).await, 1);
    let order = gw.order(&id).await;
    assert_eq!(order["channel"], "wechat");
    assert_eq!(order["text"], "小区路灯坏了一个星期");
    assert_eq!(order["citizen"]["channel_user"], "oCitizenA");
    assert_eq!(order["source"]["wechat_msg_id"], "6100000000000000001");

    // Voice: WeChat's recognition is the text.
    let voice = msg_xml(
        "oCitizenB",
        6100000000000000002,
        "voice",
        "<MediaId><![CDATA[media1]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[楼上噪音扰民]]></Recognition>",
    );
    let v = content(&post_plain(&gw, &voice).await, "oCitizenB");
    let vid = order_id_in(&v);
    assert_eq!(gw.order(&vid).await["text"], "楼上噪音扰民");

    // Emergency: the referral notice comes with the number.
    let fire = content(
        &post_plain(
            &gw,
            &text_xml("oCitizenC", 6100000000000000003, "楼下着火了，有烟"),
        )
        .await,
        "oCitizenC",
    );
    assert!(fire.contains("如遇紧急情况请立即拨打119"), "{fire}");
    order_id_in(&fire);

    // 查询: the owner sees the status and the latest note; someone else only the status.
    let ev = r#"{"status":"in_progress","note":"已派维修班组"}"#.as_bytes();
    let r = gw.event(&id, ev, SECRET, now_unix()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let own = content(
        &post_plain(
            &gw,
            &text_xml("oCitizenA", 6100000000000000004, &format!("查询 {id}")),
        )
        .await,
        "oCitizenA",
    );
    assert!(
        own.contains("办理中") && own.contains("已派维修班组"),
        "{own}"
    );
    let other = content(
        &post_plain(
            &gw,
            &text_xml(
                "oCitizenB",
                6100000000000000005,
                &format!("查询\u{3000}{id}"),
            ),
        )
        .await,
        "oCitizenB",
    );
    assert!(
        other.contains("办理中") && !other.contains("已派维修班组"),
        "{other}"
    );
    let mut typo = id.clone();
    let last = typo.pop().expect("digit");
    typo.push(if last == '9' {
        '0'
    } else {
        char::from(last as u8 + 1)
    });
    let t = content(
        &post_plain(
            &gw,
            &text_xml("oCitizenA", 6100000000000000006, &format!("查询{typo}")),
        )
        .await,
        "oCitizenA",
    );
    assert!(t.contains("工单号有误"), "{t}");
    assert_eq!(count(&gw).await, 3, "queries create no orders");

    // Events: welcome on subscribe, plain success otherwise.
    let sub = format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><FromUserName><![CDATA[oNew]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>",
        now_unix()
    );
    assert!(content(&post_plain(&gw, &sub).await, "oNew").contains("欢迎"));
    let click = sub.replace("subscribe", "CLICK");
    let r = post_plain(&gw, &click).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    assert_eq!(count(&gw).await, 3);
}

#[tokio::test]
async fn image_and_location_are_added_to_the_latest_order() {
    let (_d, gw) = gateway().await;
    // Nothing to add to yet.
    let img = msg_xml(
        "oPhotographer",
        6200000000000000001,
        "image",
        "<PicUrl><![CDATA[http://mmbiz.qpic.cn/abc/0]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>",
    );
    let early = content(&post_plain(&gw, &img).await, "oPhotographer");
    assert!(early.contains("请先用文字"), "{early}");
    assert_eq!(count(&gw).await, 0);

    let id = order_id_in(&content(
        &post_plain(
            &gw,
            &text_xml("oPhotographer", 6200000000000000002, "人行道井盖缺失"),
        )
        .await,
        "oPhotographer",
    ));
    let img = img.replace("6200000000000000001", "6200000000000000003");
    let r = content(&post_plain(&gw, &img).await, "oPhotographer");
    assert!(r.contains(&id), "{r}");
    // A retried image is not added twice.
    content(&post_plain(&gw, &img).await, "oPhotographer");
    let loc = msg_xml(
        "oPhotographer",
        6200000000000000004,
        "location",
        "<Location_X>30.583</Location_X><Location_Y>114.292</Location_Y><Scale>15</Scale><Label><![CDATA[江汉路步行街]]></Label>",
    );
    content(&post_plain(&gw, &loc).await, "oPhotographer");
    let order = gw.order(&id).await;
    let atts = order["attachments"].as_array().expect("attachments");
    assert_eq!(atts.len(), 1, "{order}");
    assert_eq!(atts[0]["url"], "http://mmbiz.qpic.cn/abc/0");
    assert_eq!(order["location"]["lat"], 30.583);
    assert_eq!(order["location"]["lng"], 114.292);
    assert_eq!(order["location"]["address"], "江汉路步行街");
    let notes: Vec<&str> = order["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["note"].as_str())
        .collect();
    assert_eq!(notes.len(), 2, "{order}");
    assert_eq!(count(&gw).await, 1);
}

#[tokio::test]
async fn encrypted_mode_round_trip_and_refusals() {
    let (_d, gw) = gateway().await;
    let inner = text_xml("oSecret", 6300000000000000001, "垃圾清运不及时");
    let enc = encrypt(&inner, APPID);
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
    );
    let ts = now_unix().to_string();
    let nonce = "987654";
    let url = |enc: &str, appsig: &str| {
        format!(
            "/channels/wechat/hotline?signature={}&timestamp={ts}&nonce={nonce}&openid=oSecret&encrypt_type=aes&msg_signature={appsig}",
            sha1_sig(&[TOKEN, &ts, nonce]),
            appsig = if appsig.is_empty() {
                sha1_sig(&[TOKEN, &ts, nonce, enc])
            } else {
                appsig.to_owned()
            }
        )
    };
    let r = gw
        .post_raw(&url(&enc, ""), "text/xml", body.clone().into_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = field(&r.text, "Encrypt").expect("Encrypt in the reply");
    let sig = field(&r.text, "MsgSignature").expect("MsgSignature");
    let rts = field(&r.text, "TimeStamp").expect("TimeStamp");
    let rnonce = field(&r.text, "Nonce").expect("Nonce");
    assert_eq!(sig, sha1_sig(&[TOKEN, &rts, &rnonce, &e]));
    let (plain, appid) = decrypt(&e);
    assert_eq!(appid, APPID);
    assert_eq!(field(&plain, "ToUserName").as_deref(), Some("oSecret"));
    let id = order_id_in(&field(&plain, "Content").expect("Content"));
    assert_eq!(gw.order(&id).await["text"], "垃圾清运不及时");
    // The retry is encrypted afresh; still the same order.
    let enc2 = encrypt(&inner, APPID);
    let body2 = body.replace(&enc, &enc2);
    let r = gw
        .post_raw(&url(&enc2, ""), "text/xml", body2.into_bytes())
        .await;
    let (plain, _) = decrypt(&field(&r.text, "Encrypt").expect("Encrypt"));
    assert_eq!(order_id_in(&field(&plain, "Content").expect("Content")), id);
    assert_eq!(count(&gw).await, 1);

    // Wrong appid, bad msg_signature, bad signature: 401 and nothing stored.
    let other = text_xml("oSecret", 6300000000000000002, "另一条");
    let enc3 = encrypt(&other, "wxsomeoneelse00001");
    let body3 = format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><Encrypt><![CDATA[{enc3}]]></Encrypt></xml>"
    );
    let r = gw
        .post_raw(&url(&enc3, ""), "text/xml", body3.into_bytes())
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "wrong_appid");
    let enc4 = encrypt(&other, APPID);
    let body4 = format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><Encrypt><![CDATA[{enc4}]]></Encrypt></xml>"
    );
    let r = gw
        .post_raw(
            &url(&enc4, "0000000000000000000000000000000000000000"),
            "text/xml",
            body4.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let plain_other = text_xml("oSecret", 6300000000000000003, "第三条");
    let r = gw
        .post_raw(
            &format!(
                "/channels/wechat/hotline?{}",
                signed_query("not-the-token", "n")
            ),
            "text/xml",
            plain_other.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "bad_signature");
    let r = gw
        .post_raw(
            "/channels/wechat/hotline?timestamp=1&nonce=2",
            "text/xml",
            b"<xml/>".to_vec(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(count(&gw).await, 1);
}

#[tokio::test]
async fn malformed_hostile_and_oversized_bodies_are_refused() {
    let (_d, gw) = gateway().await;
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("unclosed", b"<xml><ToUserName>a</ToUserName>".to_vec(), 400),
        ("not xml", b"hello".to_vec(), 400),
        (
            "entity bomb",
            br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol1;</Content><MsgId>1</MsgId></xml>"#.to_vec(),
            400,
        ),
        (
            "missing fields",
            b"<xml><ToUserName>a</ToUserName><MsgType>text</MsgType></xml>".to_vec(),
            400,
        ),
        ("oversized", format!("<xml><Content>{}</Content></xml>", "a".repeat(70_000)).into_bytes(), 413),
    ];
    for (what, body, status) in cases {
        let r = gw
            .post_raw(
                &format!("/channels/wechat/hotline?{}", signed_query(TOKEN, "n")),
                "text/xml",
                body,
            )
            .await;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        if status == 400 {
            let code = r.error_code();
            assert!(!code.is_empty(), "{what}");
        }
    }
    assert_eq!(count(&gw).await, 0);
}

#[tokio::test]
async fn mini_program_json_and_encrypted_push() {
    let (_d, gw) = gateway().await;
    let body = format!(
        r#"{{"ToUserName":"gh_mp","FromUserName":"oMiniUser","CreateTime":{},"MsgType":"text","Content":"公园厕所没有水","MsgId":6400000000000000001}}"#,
        now_unix()
    );
    let url = format!("/channels/wechat/mp?{}", signed_query(MP_TOKEN, "n"));
    let r = gw
        .post_raw(&url, "application/json", body.clone().into_bytes())
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    let r = gw
        .post_raw(&url, "application/json", body.into_bytes())
        .await;
    assert_eq!(r.text, "success");
    let orders = gw.all_orders(100).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["citizen"]["channel_user"], "oMiniUser");
    assert_eq!(orders[0]["source"]["wechat_msg_id"], "6400000000000000001");

    // Encrypted JSON: {"ToUserName","Encrypt"}.
    let inner = format!(
        r#"{{"ToUserName":"gh_mp","FromUserName":"oMiniUser2","CreateTime":{},"MsgType":"text","Content":"路面塌陷","MsgId":6400000000000000002}}"#,
        now_unix()
    );
    let enc = encrypt(&inner, MP_APPID);
    let ts = now_unix().to_string();
    let url = format!(
        "/channels/wechat/mp?signature={}&timestamp={ts}&nonce=n2&encrypt_type=aes&msg_signature={}",
        sha1_sig(&[MP_TOKEN, &ts, "n2"]),
        sha1_sig(&[MP_TOKEN, &ts, "n2", &enc])
    );
    let body = serde_json::json!({"ToUserName": "gh_mp", "Encrypt": enc}).to_string();
    let r = gw
        .post_raw(&url, "application/json", body.into_bytes())
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    let orders: Vec<Value> = gw.all_orders(100).await;
    assert_eq!(orders.len(), 2);
    assert!(orders.iter().any(|o| o["text"] == "路面塌陷"));
}

#[tokio::test]
async fn pushes_signed_too_far_from_now_are_refused() {
    let (_d, gw) = gateway().await;
    let query_at = |ts: i64, nonce: &str| {
        let ts = ts.to_string();
        format!(
            "timestamp={ts}&nonce={nonce}&signature={}",
            sha1_sig(&[TOKEN, &ts, nonce])
        )
    };
    let post_at = |ts: i64, msg_id: u64| {
        let path = format!("/channels/wechat/hotline?{}", query_at(ts, "fresh"));
        let xml = text_xml("oReplayed", msg_id, "小区门口垃圾堆了三天没人清运");
        let gw = &gw;
        async move { gw.post_raw(&path, "text/xml", xml.into_bytes()).await }
    };
    // Correctly signed, but captured an hour ago, or dated an hour ahead: 401, nothing stored.
    for (ts, msg_id) in [
        (now_unix() - 3_600, 6500000000000000001),
        (now_unix() + 3_600, 6500000000000000002),
        (now_unix() - 301, 6500000000000000003),
    ] {
        let r = post_at(ts, msg_id).await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.error_code(), "stale_timestamp");
        assert_eq!(r.error_field().as_deref(), Some("timestamp"));
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("300 s") && message.contains("wechat_max_skew_s"),
            "{message}"
        );
    }
    // Encrypted (safe mode) pushes are dated too, after their msg_signature is checked.
    let ts = (now_unix() - 7_200).to_string();
    let enc = encrypt(
        &text_xml("oReplayed", 6500000000000000004, "加密的旧消息"),
        APPID,
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_12345]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
    );
    let r = gw
        .post_raw(
            &format!(
                "/channels/wechat/hotline?signature={}&timestamp={ts}&nonce=x&encrypt_type=aes&msg_signature={}",
                sha1_sig(&[TOKEN, &ts, "x"]),
                sha1_sig(&[TOKEN, &ts, "x", &enc])
            ),
            "text/xml",
            body.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "stale_timestamp");
    // A bad signature is still reported as such, whatever the timestamp.
    let stale_bad = format!(
        "/channels/wechat/hotline?timestamp={}&nonce=n&signature={}",
        now_unix() - 3_600,
        "0".repeat(40)
    );
    let r = gw
        .post_raw(
            &stale_bad,
            "text/xml",
            text_xml("oReplayed", 6500000000000000005, "x").into_bytes(),
        )
        .await;
    assert_eq!(r.error_code(), "bad_signature");
    assert_eq!(count(&gw).await, 0, "refused pushes store nothing");
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "gateway_channel_refused_total",
            &[("channel", "wechat"), ("reason", "stale")]
        ) >= 4.0
    );

    // A minute old (WeChat's retries come 5 s apart) is fine; URL verification is not dated.
    let r = post_at(now_unix() - 60, 6500000000000000006).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(count(&gw).await, 1);
    let r = gw
        .get(
            &format!(
                "/channels/wechat/hotline?{}&echostr=still-ok",
                query_at(now_unix() - 86_400, "v")
            ),
            None,
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "still-ok"));
}

#[tokio::test]
async fn the_freshness_window_is_configurable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = extra().replace(
        "[channels]\nattach_window_s = 1800\n",
        "[channels]\nattach_window_s = 1800\nwechat_max_skew_s = 30\n",
    );
    let gw = Gateway::start_with_extra(GatewayOptions::new(dir.path()), &extra).await;
    let ts = (now_unix() - 60).to_string();
    let r = gw
        .post_raw(
            &format!(
                "/channels/wechat/hotline?timestamp={ts}&nonce=w&signature={}",
                sha1_sig(&[TOKEN, &ts, "w"])
            ),
            "text/xml",
            text_xml("oTight", 6600000000000000001, "路灯不亮").into_bytes(),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.error_code(), "stale_timestamp");
    assert!(r.text.contains("within 30 s"), "{}", r.text);
    assert_eq!(count(&gw).await, 0);
}
