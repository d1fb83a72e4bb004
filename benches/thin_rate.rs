//! Thin events against Stripe's API at `STRIPE_API_RPS`.
//!
//! Enqueues thin `v2.core.account.updated` notifications (each names an
//! account of its own) on the embedded backend, serves those accounts from
//! the Stripe API stand-in (`hookline_testkit::StripeStub`) with 10 ms of
//! latency per call, starts the release `hookline-worker` on that file with
//! `STRIPE_API_RPS` set, and measures the rate at which events are applied
//! between the first and the last fetch. The worker's concurrency (16)
//! could do far more than the rate; the client-side limit is what holds it
//! to the rate, which must be met within 10 %.
//!
//! Run: `make bench`, or `cargo build --release --bins && cargo bench --bench
//! thin_rate`. Knobs: BENCH_RPS (default "10,25,50"), BENCH_SECS (seconds of
//! events per rate, default 8).

use std::process::{Command, Stdio};
use std::time::Duration;

use hookline_core::message::OutboundMessage;
use hookline_core::ports::Queue;
use hookline_testkit::stripe_stub::published;
use hookline_testkit::StripeStub;

#[path = "support.rs"]
mod support;
use support::{env_usize, release_binary, wait_completed};

const THIN: &str = include_str!("../testdata/stripe-events/v2.core.account.updated.json");

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rate {
    events: usize,
    eps: f64,
    calls_per_sec: f64,
}

async fn run(rps: usize, events: usize) -> Rate {
    let stub = StripeStub::start().await.expect("stub");
    stub.set_latency(Duration::from_millis(10));
    let dir = tempfile::tempdir().expect("tmp");
    let e = hookline_embedded::open(dir.path(), Default::default()).expect("open");
    let now = hookline_core::clock::unix_secs();
    let mut messages = Vec::new();
    for i in 0..events {
        let account = format!("acct_rate_{i:06}");
        let mut a: serde_json::Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
        a["id"] = account.as_str().into();
        stub.put_v2_account(a);
        let mut v: serde_json::Value = serde_json::from_str(THIN).expect("thin");
        v["id"] = format!("evt_rate_{i:06}").into();
        v["related_object"]["id"] = account.as_str().into();
        v["related_object"]["url"] = format!("/v2/core/accounts/{account}").into();
        let body = v.to_string();
        let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
        messages.push(OutboundMessage::for_event(
            &env,
            bytes::Bytes::from(body),
            now,
        ));
    }
    for chunk in messages.chunks(250) {
        assert!(e.queue.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let child = Command::new(release_binary("hookline-worker"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("WORKER_CONCURRENCY", "16")
        .env("ENABLED_EVENTS", "v2.core.account.updated")
        .env("STRIPE_SECRET_KEY", "sk_test_hooklineBenchOnly")
        .env("STRIPE_API_BASE", &stub.base)
        .env("STRIPE_API_RPS", rps.to_string())
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("BENCH_VERBOSE").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("worker starts");
    // Killed however this run ends, a failed assertion included.
    let _worker = KillOnDrop(child);
    wait_completed(e.store.as_ref(), events, Duration::from_secs(600), |r| {
        r.applied
    })
    .await;
    let seen = stub.requests();
    let (first, last) = (
        seen.first().expect("calls").at,
        seen.last().expect("calls").at,
    );
    // n calls spaced at the rate span n − 1 intervals.
    let span = last.duration_since(first).as_secs_f64();
    Rate {
        events,
        eps: (events - 1) as f64 / span,
        calls_per_sec: (seen.len() - 1) as f64 / span,
    }
}

fn main() {
    let rates: Vec<usize> = std::env::var("BENCH_RPS")
        .unwrap_or_else(|_| "10,25,50".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs = env_usize("BENCH_SECS", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("thin events, embedded backend, Stripe API stand-in with 10 ms per call");
    println!(
        "{:<16} {:>8} {:>10} {:>12} {:>10}",
        "STRIPE_API_RPS", "events", "events/s", "API calls/s", "vs rate"
    );
    let mut off = Vec::new();
    for rps in rates {
        let r = rt.block_on(run(rps, rps * secs));
        let ratio = r.eps / rps as f64;
        println!(
            "{:<16} {:>8} {:>10.1} {:>12.1} {:>9.1}%",
            rps,
            r.events,
            r.eps,
            r.calls_per_sec,
            (ratio - 1.0) * 100.0
        );
        if (ratio - 1.0).abs() > 0.10 {
            off.push(rps);
        }
    }
    assert!(
        off.is_empty(),
        "not within 10 % of STRIPE_API_RPS at {off:?}"
    );
}
