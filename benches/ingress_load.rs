//! Ingress load benchmark on the embedded backend.
//!
//! Starts the release `hookline-ingress` as its own process, sends signed
//! ~3 KB events over 64 keep-alive connections, and reports requests/s,
//! latency percentiles, the server's CPU time per event (from
//! /proc/<pid>/stat, so the load generator's own CPU is not counted) and its
//! peak resident memory (VmHWM).
//!
//! Runs side by side on the same machine:
//! - `full`: verify, parse, enqueue durably (group commit), answer 200;
//! - `no-enqueue`: the same requests with the event type not enabled, so
//!   HTTP + verification + parsing only: the baseline the queue adds to;
//! - `node-peer`: the hand-rolled alternative, an Express server verifying
//!   with stripe-node's `constructEvent` and keeping events in memory
//!   (`benches/node-peer`, installed with `npm ci` from its lock file;
//!   skipped with a note where `node`/`npm` are missing);
//! - `traced`: `full` with every span exported (100 % sampling) over OTLP
//!   to a collector stand-in on loopback; its CPU is read once the last
//!   batch is in, so exporting is counted;
//! - `before` (when BENCH_INGRESS_BEFORE names another ingress binary):
//!   that build under the same load, to compare builds side by side.
//!
//! Run: `make bench` (builds the release binaries first), or
//! `cargo build --release --bins && cargo bench --bench ingress_load`.
//! Knobs: BENCH_REQUESTS (default 20000), BENCH_CONNECTIONS (default 64).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{cpu_ticks, env_usize, peak_rss_kb, release_binary, settle, tick_us, OtlpSink};

const SECRET: &str = "whsec_test_benchmarkSecretValue000000";

fn ingress_binary() -> PathBuf {
    release_binary("hookline-ingress")
}

fn ticks_and_hwm(pid: u32) -> (u64, u64) {
    (cpu_ticks(pid), peak_rss_kb(pid))
}

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The Node peer, installed from its lock file; `None` (with a note) where
/// node or npm is missing or the install fails.
fn start_node_peer() -> Option<Server> {
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/node-peer");
    let installed = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&peer)
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !installed {
        println!("node-peer: skipped (node/npm missing or `npm ci` failed in benches/node-peer)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let child = Command::new("node")
        .arg("server.js")
        .current_dir(&peer)
        .env("PORT", port.to_string())
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("NODE_ENV", "production")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    })
}

fn start(enabled: &str) -> Server {
    start_binary(ingress_binary(), enabled)
}

fn start_binary(binary: PathBuf, enabled: &str) -> Server {
    start_with(binary, enabled, &[])
}

fn start_with(binary: PathBuf, enabled: &str, env: &[(String, String)]) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let child = Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", dir.path())
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("ENABLED_EVENTS", enabled)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ingress starts");
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// ~3 KB events with distinct ids, signed now.
fn events(n: usize) -> Vec<(String, String)> {
    let fixture = include_str!("../testdata/stripe-events/payment_intent.succeeded.json");
    let base: serde_json::Value = serde_json::from_str(fixture).expect("fixture");
    let now = hookline_core::clock::unix_secs();
    (0..n)
        .map(|i| {
            let mut v = base.clone();
            v["id"] = format!("evt_bench_{i:08}").into();
            v["created"] = now.into();
            v["data"]["object"]["description"] = "x".repeat(900).into();
            let body = serde_json::to_string_pretty(&v).expect("json");
            let sig = hookline_signature::header_for(SECRET.as_bytes(), now, body.as_bytes());
            (body, sig)
        })
        .collect()
}

struct Report {
    label: &'static str,
    rps: f64,
    p50: Duration,
    p99: Duration,
    cpu_us_per_event: f64,
    hwm_mb: f64,
    non_200: usize,
}

async fn run(label: &'static str, enabled: &str, requests: usize, conns: usize) -> Report {
    measure(label, start(enabled), requests, conns).await
}

async fn measure(label: &'static str, server: Server, requests: usize, conns: usize) -> Report {
    measure_with(label, server, requests, conns, None).await
}

/// With `sink`, the CPU is read once the last batch of spans is in.
async fn measure_with(
    label: &'static str,
    server: Server,
    requests: usize,
    conns: usize,
    sink: Option<&OtlpSink>,
) -> Report {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "ingress not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = Arc::new(format!("{}/api/stripe-webhook", server.url));
    // Warm-up: open the connections.
    let warm = events(conns * 4);
    send_all(&client, &url, warm, conns).await;

    let work = events(requests);
    let pid = server.child.id();
    let (cpu0, _) = ticks_and_hwm(pid);
    let start = Instant::now();
    let (mut latencies, non_200) = send_all(&client, &url, work, conns).await;
    let elapsed = start.elapsed();
    settle(sink).await;
    let (cpu1, hwm_kb) = ticks_and_hwm(pid);
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let per_tick = tick_us();
    Report {
        label,
        rps: requests as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        cpu_us_per_event: (cpu1 - cpu0) as f64 * per_tick / requests as f64,
        hwm_mb: hwm_kb as f64 / 1024.0,
        non_200,
    }
}

async fn send_all(
    client: &reqwest::Client,
    url: &Arc<String>,
    work: Vec<(String, String)>,
    conns: usize,
) -> (Vec<Duration>, usize) {
    let work = Arc::new(std::sync::Mutex::new(work));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, work) = (client.clone(), Arc::clone(url), Arc::clone(&work));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bad = 0usize;
            loop {
                let next = work.lock().expect("lock").pop();
                let Some((body, sig)) = next else { break };
                let t = Instant::now();
                let status = client
                    .post(url.as_str())
                    .header("stripe-signature", sig)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                lat.push(t.elapsed());
                if status != 200 {
                    bad += 1;
                }
            }
            (lat, bad)
        }));
    }
    let mut all = Vec::new();
    let mut bad = 0;
    for t in tasks {
        let (lat, b) = t.await.expect("task");
        all.extend(lat);
        bad += b;
    }
    (all, bad)
}

/// Load only, against an ingress someone else started (for profiling it):
/// `BENCH_URL=http://127.0.0.1:8080/api/stripe-webhook`, secret as above.
async fn load_only(url: String, requests: usize, conns: usize) {
    let client = reqwest::Client::new();
    let url = Arc::new(url);
    let start = Instant::now();
    let (lat, bad) = send_all(&client, &url, events(requests), conns).await;
    println!(
        "{} requests in {:.2}s, {} non-200",
        lat.len(),
        start.elapsed().as_secs_f64(),
        bad
    );
}

fn main() {
    let requests = env_usize("BENCH_REQUESTS", 20_000);
    let conns = env_usize("BENCH_CONNECTIONS", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(url) = std::env::var("BENCH_URL") {
        rt.block_on(load_only(url, requests, conns));
        return;
    }
    let full = rt.block_on(run("full", "payment_intent.succeeded", requests, conns));
    let base = rt.block_on(run("no-enqueue", "payout.created", requests, conns));
    let before = std::env::var_os("BENCH_INGRESS_BEFORE").map(|bin| {
        let server = start_binary(PathBuf::from(bin), "payment_intent.succeeded");
        rt.block_on(measure("before", server, requests, conns))
    });
    // Every span exported (100 % sampling) to a collector on loopback.
    let sink = rt.block_on(OtlpSink::start());
    let traced = {
        let server = start_with(ingress_binary(), "payment_intent.succeeded", &sink.env());
        rt.block_on(measure_with("traced", server, requests, conns, Some(&sink)))
    };
    let otlp_bytes = sink.bytes() as f64 / (requests + conns * 4) as f64;
    let node =
        start_node_peer().map(|server| rt.block_on(measure("node-peer", server, requests, conns)));
    println!("ingress on the embedded backend: {requests} signed ~3 KB events, {conns} connections, 2-core machine shared with the load generator");
    println!(
        "{:<11} {:>9} {:>9} {:>9} {:>13} {:>9} {:>8}",
        "run", "req/s", "p50 ms", "p99 ms", "CPU us/event", "peak MB", "non-200"
    );
    for r in [
        Some(&full),
        Some(&base),
        Some(&traced),
        before.as_ref(),
        node.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        println!(
            "{:<11} {:>9.0} {:>9.2} {:>9.2} {:>13.1} {:>9.1} {:>8}",
            r.label,
            r.rps,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.cpu_us_per_event,
            r.hwm_mb,
            r.non_200
        );
    }
    println!(
        "durable enqueue costs {:.1} us of server CPU per event on top of HTTP + verification ({:.2}x)",
        full.cpu_us_per_event - base.cpu_us_per_event,
        full.cpu_us_per_event / base.cpu_us_per_event.max(0.001)
    );
    println!(
        "tracing on (100 % sampled, {otlp_bytes:.0} B of OTLP per event) costs {:+.1} us of server CPU per event",
        traced.cpu_us_per_event - full.cpu_us_per_event
    );
    if let Some(before) = &before {
        println!(
            "full vs before: {:.2}x less server CPU per event",
            before.cpu_us_per_event / full.cpu_us_per_event.max(0.001)
        );
    }
    if let Some(node) = &node {
        println!(
            "full vs node-peer: {:.1}x less server CPU per event (and it enqueues durably; the peer keeps events in memory)",
            node.cpu_us_per_event / full.cpu_us_per_event.max(0.001)
        );
    }
}
