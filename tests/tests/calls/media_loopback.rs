//! Two media drivers over real UDP on 127.0.0.1, with a relay that reorders and drops packets:
//! RFC 4733 digits arrive exactly once, the jitter buffer keeps a continuous frame clock, loss is
//! counted, a WAV prompt plays with the expected level and length, barge-in silences it at once,
//! and garbage on the media port changes nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gateway::runtime::media_engine::MediaEngine;
use gateway::runtime::prompt_cache::PromptCache;
use gateway::runtime::rtp_socket::{
    BoundPorts, DriverOptions, MediaCommand, MediaEvent, MediaHandle, PortAllocator,
};
use media::dtmf::{DigitSource, DtmfMerger};
use media::prompt::{EncodedPrompt, PlayItem, Player};
use media::rtp_session::{RtpConfig, RtpSession};
use media::sdp::{Direction, Negotiated};
use media::{Codec, MediaSettings};
use tokio::net::UdpSocket;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn negotiated(remote: SocketAddr) -> Negotiated {
    Negotiated {
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event: Some(101),
        remote: Some(remote),
        ptime: Some(20),
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        media_index: 0,
    }
}

/// One pacer thread for the drivers of this file's tests.
static ENGINE: std::sync::LazyLock<Arc<MediaEngine>> =
    std::sync::LazyLock::new(|| MediaEngine::new(1, 0).expect("media engine"));

fn spawn(
    ports: BoundPorts,
    session: RtpSession,
    options: DriverOptions,
) -> std::io::Result<MediaHandle> {
    ENGINE.spawn(ports, session, options)
}

/// A call's media on `engine`: on its shared sockets when it has them, else on ports of its
/// own from `alloc`.
async fn start_on(
    engine: &MediaEngine,
    alloc: &Arc<PortAllocator>,
    remote: SocketAddr,
) -> MediaHandle {
    let ports = engine.open(alloc, LOCAL).expect("ports");
    let settings = MediaSettings::default();
    let cfg = RtpConfig::new(&settings, &negotiated(remote), &mut rand::rng());
    let session = RtpSession::new(cfg, Instant::now(), SystemTime::now());
    engine
        .spawn(ports, session, DriverOptions::default())
        .expect("spawn")
}

/// Two drivers that know each other's address up front (no relay).
async fn pair(alloc: &Arc<PortAllocator>) -> (MediaHandle, MediaHandle) {
    let pa = alloc.bind(LOCAL).expect("a");
    let pb = alloc.bind(LOCAL).expect("b");
    let (addr_a, addr_b) = (pa.local_rtp().expect("a"), pb.local_rtp().expect("b"));
    let settings = MediaSettings::default();
    let mk = |remote| {
        RtpSession::new(
            RtpConfig::new(&settings, &negotiated(remote), &mut rand::rng()),
            Instant::now(),
            SystemTime::now(),
        )
    };
    let a = spawn(pa, mk(addr_b), DriverOptions::default()).expect("a");
    let b = spawn(pb, mk(addr_a), DriverOptions::default()).expect("b");
    (a, b)
}

/// Forwards a->b dropping every 20th and swapping every 7th with the next; b->a as is.
async fn relay(socket: UdpSocket, a: SocketAddr, b: SocketAddr) {
    let mut buf = [0u8; 2048];
    let mut n_ab = 0u32;
    let mut held: Option<Vec<u8>> = None;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let data = buf[..n].to_vec();
        if from == a {
            n_ab += 1;
            if n_ab.is_multiple_of(20) {
                continue;
            }
            if n_ab.is_multiple_of(7) && held.is_none() {
                held = Some(data);
                continue;
            }
            let _ = socket.send_to(&data, b).await;
            if let Some(h) = held.take() {
                let _ = socket.send_to(&h, b).await;
            }
        } else {
            let _ = socket.send_to(&data, a).await;
        }
    }
}

fn tone_wav(path: &std::path::Path, rate: u32, seconds: f32, amp: f32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for i in 0..(rate as f32 * seconds) as usize {
        let v = amp * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin();
        w.write_sample(v as i16).expect("sample");
    }
    w.finalize().expect("finalize");
}

/// A talks: a loud 3 s tone, played by its driver.
async fn talk(a: &MediaHandle) {
    let dir = tempfile::tempdir().expect("tmp");
    let wav = dir.path().join("talk.wav");
    tone_wav(&wav, 8000, 3.0, 8000.0);
    let clip = PromptCache::new().get(&wav, Codec::Pcma).expect("clip");
    play(a, clip).await;
}

/// A plays `clip` (PCMA) to B.
async fn play(a: &MediaHandle, clip: Arc<EncodedPrompt>) {
    a.commands
        .send(MediaCommand::Play(Player::new(
            Codec::Pcma,
            [PlayItem::Clip(clip)],
        )))
        .await
        .expect("play");
}

fn rms(frame: &[i16]) -> f64 {
    (frame.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / frame.len() as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tone_and_digits_through_a_lossy_reordering_relay() {
    tone_and_digits_through_a_relay([&ENGINE, &ENGINE], 42000, false).await;
}

/// The same with each side on an engine whose pacer has shared sockets (two engines: one
/// engine's calls all come from its own shared port, so two calls on it could not be told
/// apart through a relay that also has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tone_and_digits_through_a_relay_on_shared_sockets() {
    let engine_ports = PortAllocator::new(42900..=42950);
    let engines = [0, 1].map(|_| {
        MediaEngine::with_shared_sockets(1, 0, &engine_ports, LOCAL).expect("shared engine")
    });
    tone_and_digits_through_a_relay([&engines[0], &engines[1]], 42800, true).await;
    // The calls took no ports of their own: the engines' two pairs are all that is leased.
    assert_eq!(engine_ports.in_use(), 2);
}

async fn tone_and_digits_through_a_relay(
    engines: [&MediaEngine; 2],
    first_port: u16,
    shared: bool,
) {
    let alloc = PortAllocator::new(first_port..=first_port + 100);
    let relay_socket = UdpSocket::bind((LOCAL, 0)).await.expect("relay");
    let relay_addr = relay_socket.local_addr().expect("addr");
    let a = start_on(engines[0], &alloc, relay_addr).await;
    let mut b = start_on(engines[1], &alloc, relay_addr).await;
    tokio::spawn(relay(relay_socket, a.local_rtp, b.local_rtp));

    let dir = tempfile::tempdir().expect("tmp");
    let wav = dir.path().join("tone.wav");
    tone_wav(&wav, 16000, 2.0, 8000.0);
    let cache = PromptCache::new();
    let clip = cache.get(&wav, Codec::Pcma).expect("prompt");
    play(&a, clip).await;

    // Garbage on B's media port from a stranger.
    let stranger = UdpSocket::bind((LOCAL, 0)).await.expect("stranger");
    for i in 0..20u8 {
        let _ = stranger.send_to(&[i; 37], b.local_rtp).await;
    }

    tokio::time::sleep(Duration::from_millis(400)).await;
    for d in ['1', '2', '3', '3'] {
        a.commands
            .send(MediaCommand::Digit(d, Duration::from_millis(100)))
            .await
            .expect("digit");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut merger = DtmfMerger::new(Duration::from_millis(200));
    let mut digits = String::new();
    let mut frames = 0usize;
    let mut received = 0usize;
    let mut loud = 0usize;
    let mut inband = 0usize;
    while let Ok(ev) = b.events.try_recv() {
        match ev {
            MediaEvent::Frame { frame, received: r } => {
                frames += 1;
                received += usize::from(r);
                if rms(&frame[..]) > 3000.0 {
                    loud += 1;
                }
            }
            MediaEvent::Digit { digit, source, at } => {
                if source == DigitSource::Inband {
                    inband += 1;
                }
                if let Some(d) = merger.push(digit, at, source) {
                    digits.push(d);
                }
            }
            _ => {}
        }
    }
    assert_eq!(digits, "1233", "each key press exactly once");
    assert_eq!(inband, 0, "a 440 Hz tone is not a digit");
    // About 2.0 s of playout at one frame per 20 ms: the clock is continuous.
    assert!((85..=110).contains(&frames), "frames {frames}");
    // Real audio except the relay's losses and the ticks the 4 digit events took (5 packets each:
    // the telephone-event packets replace audio and play out as concealment).
    assert!(received + 4 * 8 + 10 >= frames, "{received} of {frames}");
    assert!(loud >= 40, "tone frames {loud}");

    let stats_b = b.close().await;
    let stats_a = a.close().await;
    assert!(stats_a.packets_sent >= 90);
    // One in 20 dropped by the relay.
    assert!(stats_b.packets_lost >= 3, "{stats_b:?}");
    assert!(stats_b.packets_lost <= 8, "{stats_b:?}");
    if !shared {
        // On ports of its own the session sees the garbage and discards it; shared sockets
        // drop it before (it matches no call) or hand it to the session, which discards it.
        assert!(stats_b.discarded >= 20, "garbage counted: {stats_b:?}");
    }
    assert_eq!(alloc.in_use(), 0, "ports released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_level_duration_and_barge_in() {
    let alloc = PortAllocator::new(42200..=42300);
    let (a, mut b) = pair(&alloc).await;

    let dir = tempfile::tempdir().expect("tmp");
    let short = dir.path().join("short.wav");
    tone_wav(&short, 44100, 0.5, 10000.0);
    let long = dir.path().join("long.wav");
    tone_wav(&long, 8000, 5.0, 10000.0);
    let cache = PromptCache::new();

    // 0.5 s prompt: ~25 loud frames at the tone's level (RMS 7071, G.711 keeps it within 2%).
    let clip = cache.get(&short, Codec::Pcma).expect("short");
    assert_eq!(clip.frames.len(), 25);
    play(&a, clip).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut loud = Vec::new();
    while let Ok(ev) = b.events.try_recv() {
        if let MediaEvent::Frame { frame, .. } = ev {
            let r = rms(&frame[..]);
            if r > 1000.0 {
                loud.push(r);
            }
        }
    }
    assert!((23..=26).contains(&loud.len()), "{}", loud.len());
    let mid = loud[loud.len() / 2];
    assert!((mid - 7071.0).abs() < 300.0, "{mid}");

    // Long prompt, barge-in after 300 ms: silence follows almost at once.
    let clip = cache.get(&long, Codec::Pcma).expect("long");
    play(&a, clip).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.commands
        .send(MediaCommand::StopPlayback)
        .await
        .expect("stop");
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut loud_frames = 0;
    let mut total = 0;
    while let Ok(ev) = b.events.try_recv() {
        if let MediaEvent::Frame { frame, .. } = ev {
            total += 1;
            if rms(&frame[..]) > 1000.0 {
                loud_frames += 1;
            }
        }
    }
    let _ = stopped_at;
    // ~15 frames played before the stop, plus at most the prefill and the jitter buffer depth.
    assert!(
        loud_frames <= 15 + 2 + 3 + 3,
        "{loud_frames} loud of {total}"
    );
    assert!(loud_frames >= 10, "{loud_frames}");
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_switched_off_are_kept_and_handed_over_when_switched_back_on() {
    let alloc = PortAllocator::new(42400..=42500);
    let (a, mut b) = pair(&alloc).await;

    // B stops handing over frames; A then talks (a 3 s tone) while nobody listens at B.
    b.commands
        .send(MediaCommand::FrameEvents(false))
        .await
        .expect("off");
    tokio::time::sleep(Duration::from_millis(100)).await;
    while b.events.try_recv().is_ok() {}
    talk(&a).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut while_off = 0usize;
    while let Ok(ev) = b.events.try_recv() {
        if matches!(ev, MediaEvent::Frame { .. }) {
            while_off += 1;
        }
    }
    assert_eq!(while_off, 0, "frames handed over while switched off");

    // Switched on: the last 1.5 s arrive at once, loud, then the live frames follow.
    let on_at = Instant::now();
    b.commands
        .send(MediaCommand::FrameEvents(true))
        .await
        .expect("on");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut burst = 0usize;
    let mut loud = 0usize;
    while let Ok(ev) = b.events.try_recv() {
        if let MediaEvent::Frame { frame, .. } = ev {
            burst += 1;
            if rms(&frame[..]) > 3000.0 {
                loud += 1;
            }
        }
    }
    let elapsed_frames = on_at.elapsed().as_millis() as usize / 20;
    assert!(
        burst >= gateway::runtime::rtp_socket::CATCH_UP_FRAMES,
        "only {burst} frames within {elapsed_frames} frame times of switching on"
    );
    assert!(
        loud >= 60,
        "the kept frames carry the talk: {loud} of {burst} loud"
    );
    let _ = a.close().await;
    let _ = b.close().await;
}

/// Asks `h` for frames in batches of `n`, waits `settle`, and drops the events that came meanwhile.
async fn frame_batch(h: &mut MediaHandle, n: usize, settle: Duration) {
    h.commands
        .send(MediaCommand::FrameBatch(n))
        .await
        .expect("frame batch");
    tokio::time::sleep(settle).await;
    while h.events.try_recv().is_ok() {}
}

/// Batched frames: four at a time, in playout order and none lost, then back to one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_come_in_batches_when_asked_and_singly_again_after() {
    let alloc = PortAllocator::new(42600..=42700);
    let (a, mut b) = pair(&alloc).await;
    talk(&a).await;
    frame_batch(&mut b, 4, Duration::from_millis(100)).await;

    // One second: about 50 frames in batches of exactly four, nothing single.
    let until = Instant::now() + Duration::from_secs(1);
    let (mut batches, mut frames, mut singles) = (0usize, 0usize, 0usize);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), b.events.recv()).await {
        match ev {
            MediaEvent::Frames(f) => {
                assert_eq!(f.len(), 4, "a batch of four");
                batches += 1;
                frames += f.len();
            }
            MediaEvent::Frame { .. } => singles += 1,
            _ => {}
        }
    }
    assert_eq!(singles, 0, "single frames while batched");
    assert!(
        (40..=56).contains(&frames),
        "{frames} frames in {batches} batches within a second"
    );

    // Back to one by one: no batch follows (what was pending comes first, at most one).
    frame_batch(&mut b, 1, Duration::from_millis(60)).await;
    let until = Instant::now() + Duration::from_millis(500);
    let (mut late_batches, mut singles) = (0usize, 0usize);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), b.events.recv()).await {
        match ev {
            MediaEvent::Frames(_) => late_batches += 1,
            MediaEvent::Frame { .. } => singles += 1,
            _ => {}
        }
    }
    assert_eq!(late_batches, 0);
    assert!(singles >= 20, "{singles} single frames in half a second");
    let _ = a.close().await;
    let _ = b.close().await;
}
