//! Hot paths of one submission, each alone: order numbers, parsing the app body, normalization,
//! masking personal data for logs, the delivery signature, and the related-order lookup; and of
//! one call's media every 20 ms: the jitter buffer, alone and inside the RTP session.

use std::hint::black_box;

use adapters::normalize::mask::mask_text;
use adapters::normalize::normalize;
use adapters::{OrderNumber, Submission};
use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BODY: &str = r#"{"text":"解放大道268号小区楼下烧烤摊每天营业到凌晨两点，油烟和噪音严重扰民，多次劝说无效，昨晚还有人打架，请相关部门尽快处理。联系电话13800138000。","citizen":{"name":"张先生","phone":"+86 138-0013-8000"},"location":{"address":"江汉区解放大道268号","district":"江汉区","street":"民族街道","lat":30.5801,"lng":114.2712},"attachments":[{"url":"https://files.example.cn/u/1.jpg","mime":"image/jpeg"}],"external_id":"app-2026-000123"}"#;

const MASK_TEXT: &str = "我叫王五，身份证号420102199003071234，手机139-0713-5678，住在江岸区中山大道1001号，\
    楼上装修每天早上七点就开始电钻，物业不管，请尽快处理。";

fn order_numbers(c: &mut Criterion) {
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap_or_default();
    let mut g = c.benchmark_group("order_number");
    g.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    g.bench_function("compose", |b| {
        b.iter(|| {
            seq += 1;
            OrderNumber::compose(black_box(day), black_box(1), black_box(seq))
        })
    });
    let id = OrderNumber::compose(day, 1, 12_345).to_string();
    g.bench_function("parse", |b| b.iter(|| OrderNumber::parse(black_box(&id))));
    g.finish();
}

fn submission(c: &mut Criterion) {
    let mut g = c.benchmark_group("submission");
    g.throughput(Throughput::Bytes(BODY.len() as u64));
    g.bench_function("from_app_json", |b| {
        b.iter(|| Submission::from_app_json(black_box(BODY.as_bytes())))
    });
    let parsed = Submission::from_app_json(BODY.as_bytes()).expect("a valid body");
    g.bench_function("normalize", |b| b.iter(|| normalize(black_box(&parsed))));
    g.bench_function("mask_text", |b| b.iter(|| mask_text(black_box(MASK_TEXT))));
    g.finish();
}

fn signature(c: &mut Criterion) {
    let body: Vec<u8> = BODY.bytes().cycle().take(1024).collect();
    let secret = b"0123456789abcdef0123456789abcdef01234567";
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("sign_1k", |b| {
        b.iter(|| {
            gateway::dispatch::signature::sign(
                black_box(secret),
                black_box("1795400000"),
                black_box(&body),
            )
        })
    });
    g.finish();
}

/// The related-order lookup on a full index (50,000 orders) fed with the load generator's bodies
/// one millisecond apart: every place holds thousands of similar reports in one large event, the
/// worst case for the lookup (a real day spreads far fewer reports over far more texts).
fn related(c: &mut Criterion) {
    use adapters::normalize::related::{RelatedConfig, RelatedIndex};
    use gateway::store::NewOrder;
    use gateway::store::related::facts_of;

    let start = chrono::Utc::now();
    let mut orders: Vec<NewOrder> = benches::load::body::bodies(1024, 7)
        .iter()
        .filter_map(|b| Submission::from_app_json(b).ok())
        .map(|submission| NewOrder {
            normalized: normalize(&submission),
            submission,
            received_at: start,
            idempotency: None,
        })
        .collect();
    let sample = orders[0].clone();
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap_or_default();
    let mut index = RelatedIndex::new(RelatedConfig::default());
    let mut seq = 0u64;
    let mut next = |index: &mut RelatedIndex| {
        seq += 1;
        let k = seq as usize % orders.len();
        orders[k].received_at = start + chrono::Duration::milliseconds(seq as i64);
        let r = index.reserve(facts_of(&orders[k]));
        index.confirm(r.slot, OrderNumber::compose(day, 1, seq));
        r.links.len()
    };
    for _ in 0..60_000 {
        next(&mut index);
    }
    let mut g = c.benchmark_group("related");
    g.throughput(Throughput::Elements(1));
    g.bench_function("facts_of", |b| b.iter(|| facts_of(black_box(&sample))));
    g.bench_function("reserve_confirm_full_index", |b| {
        b.iter(|| next(black_box(&mut index)))
    });
    g.finish();
}

/// One call's media in its steady state, what every call does every 20 ms: `jitter/push_pop` is
/// the jitter buffer alone (depth 3, the default `jitter_ms = 60`), one 20 ms packet in and one
/// frame out; `jitter/push_pop_1000_calls` the same for one of a thousand calls in turn;
/// `jitter/rtp_session_tick` is the same through the public RTP session (`handle_rtp`
/// of a PCMU packet, parsing, decoding and statistics, then `handle_timeout` for one tick, which
/// sends a packet of silence and hands out the played frame, all outputs drained).
fn jitter(c: &mut Criterion) {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant, SystemTime};

    use media::rtp_session::{Output, RtpConfig, RtpEvent, RtpSession};
    use media::sdp::{Direction, Negotiated};
    use media::{Codec, MediaSettings};
    use rand::SeedableRng;

    let samples: Vec<i16> = (0..160i16).map(|i| (i * 37) % 2000 - 1000).collect();
    let mut jb = media::bench::JitterBuffer::new(3);
    let mut ts = 0x1234_5678u32;
    // Playout starts on the third tick; from then on every tick plays the packet of two before.
    for n in 0..100 {
        assert!(jb.push(ts, &samples));
        ts = ts.wrapping_add(160);
        let played = jb.pop();
        assert!(n < 2 || played.is_some_and(|(_, received)| received));
    }
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_pop", |b| {
        b.iter(|| {
            let taken = jb.push(black_box(ts), black_box(&samples));
            ts = ts.wrapping_add(160);
            black_box((taken, jb.pop()))
        })
    });

    // The same for a thousand calls in turn, so that each call's buffer comes from memory the
    // way it does in the gateway rather than sitting in the L1 cache.
    let mut calls: Vec<_> = (0..1000).map(|_| jb.clone()).collect();
    let mut turn = 0;
    g.bench_function("push_pop_1000_calls", |b| {
        b.iter(|| {
            let jb = &mut calls[turn];
            let played = (jb.push(black_box(ts), black_box(&samples)), jb.pop());
            turn += 1;
            if turn == calls.len() {
                turn = 0;
                ts = ts.wrapping_add(160);
            }
            black_box(played)
        })
    });

    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let negotiated = Negotiated {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
        remote: Some(peer),
        ptime: Some(20),
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        media_index: 0,
    };
    let cfg = RtpConfig::new(
        &MediaSettings::default(),
        &negotiated,
        &mut rand::rngs::StdRng::seed_from_u64(1),
    );
    let mut now = Instant::now();
    let mut session = RtpSession::new(cfg, now, SystemTime::UNIX_EPOCH);
    // An RTP header (version 2, PCMU, SSRC 0x5eed) and 20 ms of µ-law speech-like bytes.
    let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xed];
    packet.extend((0..160u32).map(|i| (i * 53 % 256) as u8));
    let mut seq = 0u16;
    let mut tick = |session: &mut RtpSession| {
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        session.handle_rtp(now, peer, &packet);
        now += Duration::from_millis(20);
        session.handle_timeout(now);
        let mut received = 0;
        loop {
            match session.poll_output() {
                Output::Event(RtpEvent::Frame { received: true, .. }) => received += 1,
                Output::Timeout(_) => return received,
                _ => {}
            }
        }
    };
    let received: usize = (0..100).map(|_| tick(&mut session)).sum();
    assert!(received >= 97, "{received} frames played of 100");
    g.bench_function("rtp_session_tick", |b| {
        b.iter(|| black_box(tick(&mut session)))
    });
    g.finish();
}

criterion_group!(
    benches,
    order_numbers,
    submission,
    signature,
    related,
    jitter
);
criterion_main!(benches);
