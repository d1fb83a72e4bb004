//! What the process benches share: knobs, the release binaries, and a
//! process's CPU time and peak memory from `/proc`.

// Each bench uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A release binary of this workspace, built by `make bench`.
pub fn release_binary(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join(name);
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins` first (make bench does)",
        bin.display()
    );
    bin
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

/// Peak resident memory of a process (VmHWM), in KB.
pub fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Microseconds per clock tick of [`cpu_ticks`].
pub fn tick_us() -> f64 {
    let per_sec: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    1e6 / per_sec as f64
}

/// Waits until the store has completed `events` (by `count`: applied, or
/// every outcome), failing after `within`.
pub async fn wait_completed(
    store: &dyn hookline_core::ports::Store,
    events: usize,
    within: std::time::Duration,
    count: impl Fn(&hookline_core::ports::RecentActivity) -> u64,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let done = store
            .recent(0)
            .await
            .ok()
            .flatten()
            .map(|r| count(&r))
            .unwrap_or(0);
        if done >= events as u64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {events} completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// How long a run waits after its last event before its CPU is read: with
/// spans exported, until no export has come for this long; without, this
/// long. A process idling costs CPU too, so both sides of a comparison wait
/// alike.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(600);
const SETTLE_STEP: std::time::Duration = std::time::Duration::from_millis(100);

/// After a run's last event: waits until `sink` settles when spans go
/// there, else for [`SETTLE`].
pub async fn settle(sink: Option<&OtlpSink>) {
    match sink {
        Some(sink) => sink.settle().await,
        None => tokio::time::sleep(SETTLE).await,
    }
}

/// An OTLP/HTTP collector stand-in on loopback for the tracing rows: it
/// answers every export 200 and counts requests and bytes (it decodes
/// nothing; the tests decode with OpenTelemetry's own protos).
pub struct OtlpSink {
    pub endpoint: String,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OtlpSink {
    pub async fn start() -> OtlpSink {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (r, b) = (Arc::clone(&requests), Arc::clone(&bytes));
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (r, b) = (Arc::clone(&r), Arc::clone(&b));
                async move {
                    r.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(body.len() as u64, Ordering::Relaxed);
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpSink {
            endpoint,
            requests,
            bytes,
        }
    }

    /// A binary's settings to export every span here: 100 % sampling (the
    /// SDK's default) and the SDK's default span queue (2,048) and batch
    /// (512), as the services ship; only the schedule is shortened to 200 ms
    /// so the last partial batch arrives soon after the last event.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until no export has arrived for [`SETTLE`] (the process's last
    /// batch is in, so its CPU time includes exporting it).
    pub async fn settle(&self) {
        let mut last = self.bytes();
        let mut quiet = std::time::Duration::ZERO;
        while quiet < SETTLE {
            tokio::time::sleep(SETTLE_STEP).await;
            let now = self.bytes();
            quiet = if now == last {
                quiet + SETTLE_STEP
            } else {
                std::time::Duration::ZERO
            };
            last = now;
        }
    }
}
