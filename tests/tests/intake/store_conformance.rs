//! One conformance suite for both back ends of the store (as rustls runs one suite against every
//! crypto provider): the same calls, the same answers, against the embedded SQLite store and a
//! real PostgreSQL server started on loopback. Whatever the gateway relies on from its store is
//! asserted here once, so the two cannot drift apart again.

use adapters::work_order::{Attachment, Channel, Status};
use adapters::{OrderNumber, Submission};
use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};
use gateway::store::postgres::PgStore;
use gateway::store::sqlite::SqliteStore;
use gateway::store::{
    Addition, DeliveryOutcome, IdempotencyClaim, NewOrder, Numbering, OrderStore, SmsPart,
    SmsPartState, StatusEvent, StoredCall, SubmitOutcome,
};
use support::PgServer;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 2, 0, 0)
        .single()
        .expect("a valid instant")
}

fn numbering() -> Numbering {
    Numbering::new(7, FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
}

fn new_order(text: &str, at: DateTime<Utc>, key: Option<(&str, u8)>) -> NewOrder {
    let body = serde_json::json!({"text": text, "citizen": {"phone": "13800138000"}});
    let submission =
        Submission::from_app_json(&serde_json::to_vec(&body).expect("json")).expect("valid");
    NewOrder {
        normalized: adapters::normalize::normalize(&submission),
        submission,
        received_at: at,
        idempotency: key.map(|(key, body)| IdempotencyClaim {
            client: "app".into(),
            key: key.into(),
            body_sha256: [body; 32],
        }),
    }
}

async fn created(store: &impl OrderStore, order: NewOrder) -> OrderNumber {
    match store.submit(order).await.expect("submit") {
        SubmitOutcome::Created(o) => o.id,
        other => panic!("expected a new order, got {other:?}"),
    }
}

/// Everything the gateway relies on, in one run against a fresh store.
async fn conformance(store: impl OrderStore) {
    let at = t0();

    // Numbers: the node, the local day (UTC+8), a sequence, a check digit; one after another.
    let a = created(&store, new_order("江汉路路灯不亮", at, Some(("k1", 1)))).await;
    assert!(a.as_str().starts_with("26112307"), "{a}");
    assert_eq!(a.node(), 7);
    let b = created(
        &store,
        new_order("工地夜间施工扰民", at + Duration::seconds(1), None),
    )
    .await;
    assert_eq!(b.sequence(), a.sequence() + 1);

    // Idempotency: the same key and body is the same order; another body is a conflict.
    match store
        .submit(new_order("江汉路路灯不亮", at, Some(("k1", 1))))
        .await
    {
        Ok(SubmitOutcome::Replayed(id)) => assert_eq!(id, a),
        other => panic!("expected a replay, got {other:?}"),
    }
    match store
        .submit(new_order("别的内容", at, Some(("k1", 2))))
        .await
    {
        Ok(SubmitOutcome::Conflict(id)) => assert_eq!(id, a),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Reads: the document as committed; pages in receipt order; the newest receipt times.
    let doc = store
        .order(&a)
        .await
        .expect("read")
        .expect("order a exists");
    assert_eq!(doc.text, "江汉路路灯不亮");
    assert_eq!(doc.status, Status::Accepted);
    assert_eq!(doc.received_at, at);
    let unknown = OrderNumber::compose(at.date_naive(), 7, 99_999);
    assert!(store.order(&unknown).await.expect("read").is_none());
    let page = store.orders(None, None, 10).await.expect("list");
    let ids: Vec<_> = page.iter().map(|o| o.id.clone()).collect();
    assert_eq!(ids, vec![a.clone(), b.clone()]);
    let next = store.orders(None, Some(a.clone()), 10).await.expect("list");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, b);
    let later = store
        .orders(Some(at + Duration::seconds(1)), None, 10)
        .await
        .expect("list");
    assert_eq!(later.len(), 1);
    assert_eq!(
        store.newest_time(at, 0).await.expect("newest"),
        Some(at + Duration::seconds(1))
    );
    assert_eq!(store.newest_time(at, 1).await.expect("newest"), Some(at));
    assert_eq!(store.newest_time(at, 2).await.expect("newest"), None);

    // The outbox: both orders are due once; a lease keeps them from being claimed again.
    let stats = store.stats(at).await.expect("stats");
    assert_eq!((stats.pending, stats.delivered, stats.dead), (2, 0, 0));
    let now = at + Duration::seconds(5);
    let claimed = store
        .claim_due(now, now + Duration::seconds(60), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.attempts == 0));
    let body: serde_json::Value = serde_json::from_str(&claimed[0].body).expect("json body");
    assert_eq!(body["id"], claimed[0].order_id.as_str());
    let again = store
        .claim_due(now, now + Duration::seconds(60), 10)
        .await
        .expect("claim");
    assert!(
        again.is_empty(),
        "leased rows were claimed twice: {again:?}"
    );

    // a is delivered; b fails once, is retried, then dies and is replayed.
    store
        .complete(a.clone(), DeliveryOutcome::Delivered, now)
        .await
        .expect("complete");
    let delivered = store.order(&a).await.expect("read").expect("a");
    assert_eq!(delivered.status, Status::Delivered);
    store
        .complete(
            b.clone(),
            DeliveryOutcome::Retry {
                at: now + Duration::seconds(10),
                error: "503".into(),
            },
            now,
        )
        .await
        .expect("retry");
    assert!(
        store
            .claim_due(now + Duration::seconds(9), now + Duration::seconds(70), 10)
            .await
            .expect("claim")
            .is_empty(),
        "claimed before its retry time"
    );
    let retried = store
        .claim_due(now + Duration::seconds(11), now + Duration::seconds(70), 10)
        .await
        .expect("claim");
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].order_id, b);
    assert_eq!(retried[0].attempts, 1);
    store
        .complete(
            b.clone(),
            DeliveryOutcome::Dead {
                error: "400 bad request".into(),
            },
            now + Duration::seconds(12),
        )
        .await
        .expect("dead");
    let dead = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].order_id, b);
    assert_eq!(dead[0].last_error.as_deref(), Some("400 bad request"));
    let stats = store
        .stats(now + Duration::seconds(12))
        .await
        .expect("stats");
    assert_eq!((stats.pending, stats.delivered, stats.dead), (0, 1, 1));
    assert!(
        store
            .replay(b.clone(), now + Duration::seconds(13))
            .await
            .expect("replay")
    );
    assert!(
        !store.replay(a.clone(), now).await.expect("replay"),
        "a is no dead letter"
    );
    assert!(!store.replay(unknown.clone(), now).await.expect("replay"));
    assert!(
        store
            .dead_letters(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    let replayed = store
        .claim_due(now + Duration::seconds(14), now + Duration::seconds(80), 10)
        .await
        .expect("claim");
    assert_eq!(replayed.len(), 1);

    // Status events from the backend; a repeated event changes nothing; unknown orders: None.
    let event = StatusEvent {
        status: Status::Resolved,
        note: Some("已更换灯泡".into()),
        by: "城管局".into(),
        at: now + Duration::seconds(20),
    };
    let updated = store
        .apply_event(a.clone(), event.clone())
        .await
        .expect("event")
        .expect("a exists");
    assert_eq!(updated.status, Status::Resolved);
    let entries = updated.history.len();
    let repeated = store
        .apply_event(a.clone(), event.clone())
        .await
        .expect("event")
        .expect("a exists");
    assert_eq!(repeated.history.len(), entries);
    assert!(
        store
            .apply_event(unknown.clone(), event)
            .await
            .expect("event")
            .is_none()
    );

    // Additions: a photo once, however often it is sent.
    let photo = Addition::Attachment(Attachment {
        url: "https://example.cn/p.jpg".into(),
        mime: "image/jpeg".into(),
        sha256: None,
    });
    let with = store
        .attach(a.clone(), photo.clone(), "wechat".into(), now)
        .await
        .expect("attach")
        .expect("a exists");
    assert_eq!(with.attachments.len(), 1);
    let twice = store
        .attach(a.clone(), photo.clone(), "wechat".into(), now)
        .await
        .expect("attach")
        .expect("a exists");
    assert_eq!(twice.attachments.len(), 1);
    assert!(
        store
            .attach(unknown, photo, "wechat".into(), now)
            .await
            .expect("attach")
            .is_none()
    );

    // A channel user's latest order.
    let mut wechat = new_order("小区垃圾没人清运", at + Duration::seconds(30), None);
    wechat.submission.channel = Channel::Wechat;
    wechat.submission.citizen.channel_user = Some("oUser".into());
    let w = created(&store, wechat).await;
    let latest = store
        .latest_order_of(Channel::Wechat, "oUser".into(), at)
        .await
        .expect("latest")
        .expect("found");
    assert_eq!(latest.id, w);
    assert!(
        store
            .latest_order_of(Channel::Wechat, "oOther".into(), at)
            .await
            .expect("latest")
            .is_none()
    );
    assert!(
        store
            .latest_order_of(Channel::Wechat, "oUser".into(), at + Duration::seconds(31))
            .await
            .expect("latest")
            .is_none(),
        "older than `since`"
    );

    // Long SMS: parts stored in any order, complete once all are there, done after use.
    let part = |i: u16, text: &str| SmsPart {
        provider: "aliyun".into(),
        part_id: format!("p{i}"),
        phone: "13900139000".into(),
        index: i,
        total: 2,
        text: text.into(),
        received_at: at,
    };
    match store.sms_part(part(2, "施工扰民")).await.expect("part") {
        SmsPartState::Waiting { have, total } => assert_eq!((have, total), (1, 2)),
        other => panic!("expected waiting, got {other:?}"),
    }
    assert_eq!(store.sms_open_parts().await.expect("open").len(), 1);
    match store.sms_part(part(1, "工地夜间")).await.expect("part") {
        SmsPartState::Complete(parts) => {
            let idx: Vec<u16> = parts.iter().map(|p| p.index).collect();
            assert_eq!(idx, vec![1, 2]);
        }
        other => panic!("expected complete, got {other:?}"),
    }
    store
        .sms_parts_done("aliyun".into(), vec!["p1".into(), "p2".into()], at)
        .await
        .expect("done");
    assert!(store.sms_open_parts().await.expect("open").is_empty());
    assert!(matches!(
        store.sms_part(part(1, "工地夜间")).await.expect("part"),
        SmsPartState::Done
    ));

    outbound_calls(&store, at).await;
}

/// Outbound call jobs: saved and read back as they were (the document untouched, the instants to
/// the microsecond), updated in place with their first `created_at`, listed open and recent.
async fn outbound_calls(store: &impl OrderStore, at: DateTime<Utc>) {
    let call = |id: &str, open: bool, created_s: i64| {
        let created = at + Duration::seconds(created_s) + Duration::microseconds(123_456);
        StoredCall {
            id: id.into(),
            open,
            doc: serde_json::json!({"id": id, "state": if open { "queued" } else { "failed" }})
                .to_string(),
            created_at: created,
            updated_at: created,
        }
    };
    // Chinese text, both kinds of quotes, a backslash and what looks like a placeholder.
    let mut a = call("call-a", true, 10);
    a.doc = serde_json::json!({
        "phone": "13800138000",
        "script": "您好，这里是12345热线，就您反映的\"路灯不亮\"问题回访 'ok' \\ $1 ?1",
    })
    .to_string();
    let b = call("call-b", true, 10);
    let c = call("call-c", true, 5);
    let d = call("call-d", false, 1);
    for job in [&b, &a, &d, &c] {
        store.call_save(job.clone()).await.expect("save call");
    }
    assert_eq!(
        store.call_get("call-a".into()).await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(
        store.call_get("call-b".into()).await.expect("get"),
        Some(b.clone())
    );
    assert_eq!(store.call_get("call-x".into()).await.expect("get"), None);

    // Oldest first, ties by id; closed jobs are not resumed.
    let ids = |calls: Vec<StoredCall>| calls.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.calls_open().await.expect("open calls")),
        ["call-c", "call-a", "call-b"]
    );

    // An update changes the document, `open` and `updated_at`; `created_at` stays the first.
    let mut b2 = b.clone();
    b2.open = false;
    b2.doc =
        serde_json::json!({"id": "call-b", "state": "answered", "note": "市民已接听"}).to_string();
    b2.created_at = at + Duration::seconds(99);
    b2.updated_at = at + Duration::seconds(20);
    store.call_save(b2.clone()).await.expect("update call");
    let stored = store
        .call_get("call-b".into())
        .await
        .expect("get")
        .expect("call-b exists");
    assert_eq!(
        stored,
        StoredCall {
            created_at: b.created_at,
            ..b2
        }
    );
    assert_eq!(
        ids(store.calls_open().await.expect("open calls")),
        ["call-c", "call-a"]
    );

    // Newest first (ties by id, descending), at most `limit`.
    assert_eq!(
        ids(store.calls_recent(10).await.expect("recent calls")),
        ["call-b", "call-a", "call-c", "call-d"]
    );
    assert_eq!(
        ids(store.calls_recent(2).await.expect("recent calls")),
        ["call-b", "call-a"]
    );
    assert!(
        store
            .calls_recent(0)
            .await
            .expect("recent calls")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(&dir.path().join("orders.db"), numbering(), 64, 2).expect("open SQLite");
    conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_contract() {
    let pg = PgServer::start();
    let url = pg.create_db("conformance").await;
    let store = PgStore::open(&url, numbering(), 64, 2)
        .await
        .expect("open PostgreSQL");
    conformance(store).await;
}
