//! Worker drain benchmark on the embedded backend.
//!
//! Enqueues 10,000 unique ~3 KB events of the six built-in types (each on an
//! object of its own, so every one is applied), starts the release
//! `hookline-worker` as its own process on that file, and measures until the
//! ledger holds every event `COMPLETED`: events/s, and the worker's CPU time
//! per event (utime + stime from /proc/<pid>/stat, so the bench's own CPU is
//! not counted), at `WORKER_CONCURRENCY` 16 and 64.
//!
//! The same drain then forwards every event to an `http` destination
//! instead (a routes document with one destination for `*`): a keep-alive
//! receiver in this process answers 200 to each signed POST. The figure to
//! hold: ≥ 5,000 events/s at ≤ 1.5× the projections' worker CPU per event.
//!
//! Tracing, side by side in the same run: the drain with tracing off, then
//! with every span exported (100 % sampling) over OTLP to a collector
//! stand-in on loopback, the CPU read once the last batch is in (both sides
//! wait alike after their last event: `support::SETTLE`). The figure
//! to hold: ≤ 10 µs more worker CPU per event. With BENCH_WORKER_BEFORE
//! naming another build's worker, that build's drain too (what tracing off
//! costs against a build without it).
//!
//! Run: `make bench`, or `cargo build --release --bins && cargo bench --bench
//! worker_drain`. Knobs: BENCH_EVENTS (default 10000), BENCH_RUNS (default
//! 1), BENCH_WORKER_BIN (another worker binary, to compare builds side by
//! side).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookline_core::message::OutboundMessage;
use hookline_core::ports::{Queue, Store};

#[path = "support.rs"]
mod support;
use support::{cpu_ticks, env_usize, release_binary, settle, tick_us, wait_completed, OtlpSink};

const FIXTURES: [&str; 6] = [
    include_str!("../testdata/stripe-events/payment_intent.succeeded.json"),
    include_str!("../testdata/stripe-events/payment_intent.payment_failed.json"),
    include_str!("../testdata/stripe-events/charge.dispute.created.json"),
    include_str!("../testdata/stripe-events/payout.created.json"),
    include_str!("../testdata/stripe-events/payout.updated.json"),
    include_str!("../testdata/stripe-events/account.updated.json"),
];

fn worker_binary() -> PathBuf {
    match std::env::var_os("BENCH_WORKER_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => release_binary("hookline-worker"),
    }
}

/// `n` unique events, the six types in turn, each on its own object, about
/// 3 KB each, as the ingress enqueues them.
fn messages(n: usize, now: i64) -> Vec<OutboundMessage> {
    let bases: Vec<serde_json::Value> = FIXTURES
        .iter()
        .map(|f| serde_json::from_str(f).expect("fixture"))
        .collect();
    (0..n)
        .map(|i| {
            let mut v = bases[i % bases.len()].clone();
            let object_id = v["data"]["object"]["id"]
                .as_str()
                .unwrap_or("obj")
                .to_owned();
            let prefix = object_id.split('_').next().unwrap_or("obj");
            v["id"] = format!("evt_drain_{i:08}").into();
            v["created"] = now.into();
            v["data"]["object"]["id"] = format!("{prefix}_drain_{i:08}").into();
            let mut body = serde_json::to_string_pretty(&v).expect("json");
            if body.len() < 3000 {
                v["data"]["object"]["metadata"] =
                    serde_json::json!({ "padding": "x".repeat(3000 - body.len()) });
                body = serde_json::to_string_pretty(&v).expect("json");
            }
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            OutboundMessage::for_event(&env, bytes::Bytes::from(body), now)
        })
        .collect()
}

struct Drain {
    eps: f64,
    cpu_us: f64,
}

/// A keep-alive HTTP receiver that takes every POST; its port and a count
/// of what it took.
async fn receiver() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let taken = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&taken);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let count = std::sync::Arc::clone(&count);
            async move {
                assert!(!body.is_empty());
                count.fetch_add(1, Ordering::Relaxed);
                "{\"received\":true}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, taken)
}

async fn drain(events: usize, concurrency: usize, routes: Option<String>) -> Drain {
    drain_with(worker_binary(), events, concurrency, routes, None).await
}

/// A drain by `binary`; with `sink`, every span exported there (the CPU
/// read once the last batch is in).
async fn drain_with(
    binary: PathBuf,
    events: usize,
    concurrency: usize,
    routes: Option<String>,
    sink: Option<&OtlpSink>,
) -> Drain {
    let dir = tempfile::tempdir().expect("tmp");
    let e = hookline_embedded::open(dir.path(), Default::default()).expect("open");
    let now = hookline_core::clock::unix_secs();
    for chunk in messages(events, now).chunks(250) {
        assert!(e.queue.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let start = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(sink.map(OtlpSink::env).unwrap_or_default())
        .env("DATA_DIR", dir.path())
        .env("WORKER_CONCURRENCY", concurrency.to_string())
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .envs(routes.map(|r| ("ROUTES", r)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");
    let pid = child.id();
    wait_completed(e.store.as_ref(), events, Duration::from_secs(300), |r| {
        r.applied + r.stale + r.ignored
    })
    .await;
    let elapsed = start.elapsed();
    settle(sink).await;
    let ticks = cpu_ticks(pid);
    let _ = child.kill();
    let _ = child.wait();
    let applied = e.store.recent(0).await.ok().flatten().map(|r| r.applied);
    assert_eq!(applied, Some(events as u64), "every event applied");
    Drain {
        eps: events as f64 / elapsed.as_secs_f64(),
        cpu_us: ticks as f64 * tick_us() / events as f64,
    }
}

fn main() {
    let events = env_usize("BENCH_EVENTS", 10_000);
    let runs = env_usize("BENCH_RUNS", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "worker drain, embedded backend, {events} queued events of six types ({})",
        worker_binary().display()
    );
    println!(
        "{:<12} {:>10} {:>18}",
        "concurrency", "events/s", "CPU µs per event"
    );
    // BENCH_PART=tracing: the tracing rows only (for a profile of them).
    let tracing_only = std::env::var("BENCH_PART").is_ok_and(|p| p == "tracing");
    for concurrency in [16usize, 64].into_iter().filter(|_| !tracing_only) {
        for _ in 0..runs {
            let d = rt.block_on(drain(events, concurrency, None));
            println!("{:<12} {:>10.0} {:>18.0}", concurrency, d.eps, d.cpu_us);
        }
    }
    // Side by side: tracing off, then every span exported (100 % sampling)
    // to a collector on loopback; with BENCH_WORKER_BEFORE, another build.
    let sink = rt.block_on(OtlpSink::start());
    let before = std::env::var_os("BENCH_WORKER_BEFORE").map(PathBuf::from);
    println!(
        "\ntracing (concurrency 64): off, on at 100 % sampling to an OTLP collector on loopback"
    );
    println!(
        "{:<12} {:>10} {:>18} {:>14}",
        "run", "events/s", "CPU µs per event", "OTLP B/event"
    );
    for _ in 0..runs {
        let off = rt.block_on(drain(events, 64, None));
        let sent = sink.bytes();
        let on = rt.block_on(drain_with(worker_binary(), events, 64, None, Some(&sink)));
        let per_event = (sink.bytes() - sent) as f64 / events as f64;
        println!(
            "{:<12} {:>10.0} {:>18.1} {:>14}",
            "off", off.eps, off.cpu_us, "-"
        );
        println!(
            "{:<12} {:>10.0} {:>18.1} {:>14.0}",
            "on", on.eps, on.cpu_us, per_event
        );
        if let Some(bin) = &before {
            let b = rt.block_on(drain_with(bin.clone(), events, 64, None, None));
            println!(
                "{:<12} {:>10.0} {:>18.1} {:>14}",
                "before", b.eps, b.cpu_us, "-"
            );
            println!(
                "off vs before: {:+.1} µs of worker CPU per event",
                off.cpu_us - b.cpu_us
            );
        }
        println!(
            "tracing on costs {:+.1} µs of worker CPU per event",
            on.cpu_us - off.cpu_us
        );
    }
    if tracing_only {
        return;
    }
    // Side by side: the projections, then forwarding to a local receiver.
    let (port, taken) = rt.block_on(receiver());
    let routes = format!(
        "[[destination]]\nname = \"bench\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"http://127.0.0.1:{port}/hook\"\nallow_http = true\nsigning_secret = \"whsec_test_benchReceiver\"\nmax_concurrency = 64\n"
    );
    println!(
        "\nforwarding to an http destination (keep-alive receiver on loopback), concurrency 64"
    );
    println!(
        "{:<12} {:>10} {:>18} {:>10}",
        "path", "events/s", "CPU µs per event", "CPU ratio"
    );
    for _ in 0..runs {
        let p = rt.block_on(drain(events, 64, None));
        let before = taken.load(std::sync::atomic::Ordering::Relaxed);
        let f = rt.block_on(drain(events, 64, Some(routes.clone())));
        let got = taken.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(got >= events as u64, "the receiver took every event: {got}");
        println!(
            "{:<12} {:>10.0} {:>18.0} {:>10}",
            "projections", p.eps, p.cpu_us, "1.00"
        );
        println!(
            "{:<12} {:>10.0} {:>18.0} {:>10.2}",
            "forward",
            f.eps,
            f.cpu_us,
            f.cpu_us / p.cpu_us
        );
    }
}
