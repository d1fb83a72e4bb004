//! Throughput under an AWS-like latency model, on the embedded backend.
//!
//! moto is a correctness peer, not a speed one, so speed is measured here: a
//! bench-only decorator puts a fixed delay in front of every queue and store
//! call (and counts the calls), and the real ingress and worker run on top.
//!
//! A. Ingress, 64 concurrent clients, 15 ms per queue call (SQS in one
//!    region): events/s and p99 with the send coalescer batching
//!    (SendMessageBatch of up to 10) and with batching off (one call per
//!    event, as many calls in flight as clients).
//! B. Worker end to end (enqueued -> committed), WORKER_CONCURRENCY 1, 4, 16,
//!    64: on the embedded backend as it is, and with 10 ms per queue and
//!    store call; Little's law predicts throughput = concurrency / time per
//!    event.
//!
//! Run: `cargo bench --bench latency_model` (or `make bench`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use hookline_backend::{Backend, BackendKind};
use hookline_core::coalescer::CoalescerConfig;
use hookline_core::envelope::EventId;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::{
    Applied, BatchLimits, Change, Claim, Delivery, Holdings, Lease, Origin, PortError, Queue,
    QueueCounts, Store, Subject, WritePath,
};
use hookline_core::records::{Completion, EventRecord, StoredItem};

const SECRET: &str = "whsec_test_benchmarkSecretValue000000";

/// Adds `latency` to every call and counts calls.
#[derive(Debug)]
struct Slow<T: ?Sized> {
    inner: Arc<T>,
    latency: Duration,
    calls: AtomicU64,
    /// receive, delete, set_visibility calls (queue) for the breakdown.
    kinds: [AtomicU64; 3],
    max_entries: Option<usize>,
}

impl<T: ?Sized> Slow<T> {
    fn new(inner: Arc<T>, latency: Duration) -> Self {
        Self {
            inner,
            latency,
            calls: AtomicU64::new(0),
            kinds: Default::default(),
            max_entries: None,
        }
    }
    async fn pay(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl Queue for Slow<dyn Queue> {
    fn batch_limits(&self) -> BatchLimits {
        let mut l = self.inner.batch_limits();
        l.max_entries = self.max_entries.unwrap_or(10);
        l
    }
    async fn send_batch(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>> {
        self.pay().await;
        self.inner.send_batch(batch).await
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        vis: Duration,
    ) -> Result<Vec<Delivery>, PortError> {
        self.kinds[0].fetch_add(1, Ordering::Relaxed);
        self.pay().await;
        self.inner.receive(max.min(10), wait, vis).await
    }
    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>> {
        self.kinds[1].fetch_add(1, Ordering::Relaxed);
        self.pay().await;
        self.inner.delete_batch(receipts).await
    }
    async fn set_visibility(&self, receipt: &str, t: Duration) -> Result<(), PortError> {
        self.kinds[2].fetch_add(1, Ordering::Relaxed);
        self.pay().await;
        self.inner.set_visibility(receipt, t).await
    }
    async fn counts(&self) -> Result<QueueCounts, PortError> {
        self.inner.counts().await
    }
}

#[async_trait]
impl Store for Slow<dyn Store> {
    async fn claim(&self, id: &EventId, t: &str, lease: Lease<'_>) -> Result<Claim, PortError> {
        self.pay().await;
        self.inner.claim(id, t, lease).await
    }
    async fn complete(
        &self,
        id: &EventId,
        t: &str,
        p: Change<'_>,
        now: i64,
    ) -> Result<Completion, PortError> {
        self.pay().await;
        self.inner.complete(id, t, p, now).await
    }
    async fn apply(
        &self,
        id: &EventId,
        t: &str,
        p: Change<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Applied, PortError> {
        self.pay().await;
        self.inner.apply(id, t, p, origin, now).await
    }
    async fn fail(
        &self,
        id: &EventId,
        t: &str,
        origin: Origin<'_>,
        e: &str,
        now: i64,
        path: WritePath,
    ) -> Result<(), PortError> {
        self.pay().await;
        self.inner.fail(id, t, origin, e, now, path).await
    }
    async fn record_destination(
        &self,
        id: &EventId,
        t: &str,
        origin: Origin<'_>,
        destination: &str,
        state: &hookline_core::records::DestinationState,
        now: i64,
    ) -> Result<(), PortError> {
        self.pay().await;
        self.inner
            .record_destination(id, t, origin, destination, state, now)
            .await
    }
    async fn event(&self, id: &str) -> Result<Option<EventRecord>, PortError> {
        self.inner.event(id).await
    }
    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError> {
        self.inner.item(id).await
    }
    async fn ping(&self) -> Result<(), PortError> {
        self.inner.ping().await
    }
    async fn holdings(&self, subject: &Subject) -> Result<Holdings, PortError> {
        self.inner.holdings(subject).await
    }
    async fn erase(&self, holdings: &Holdings) -> Result<Holdings, PortError> {
        self.inner.erase(holdings).await
    }
    async fn deauthorized(&self, before: i64) -> Result<Vec<String>, PortError> {
        self.inner.deauthorized(before).await
    }
}

fn event(i: usize, now: i64) -> String {
    let fixture = include_str!("../testdata/stripe-events/payment_intent.succeeded.json");
    let mut v: serde_json::Value = serde_json::from_str(fixture).expect("fixture");
    v["id"] = format!("evt_bench_{i:08}").into();
    v["created"] = now.into();
    v["data"]["object"]["id"] = format!("pi_bench_{i:08}").into();
    serde_json::to_string_pretty(&v).expect("json")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `n` events as the ingress would enqueue them.
fn messages(n: usize, now: i64) -> Vec<OutboundMessage> {
    (0..n)
        .map(|i| {
            let body = event(i, now);
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            OutboundMessage::for_event(&env, bytes::Bytes::from(body), now)
        })
        .collect()
}

type RunningWorker = (
    Arc<hookline_worker::metrics::WorkerMetrics>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), hookline_worker::run::WorkerError>>,
);

/// Starts an in-process worker on `backend`.
async fn start_worker(backend: Backend, concurrency: usize) -> RunningWorker {
    let args = hookline_worker::WorkerArgs::try_parse_from([
        "hookline-worker",
        "--metrics-addr",
        "127.0.0.1:0",
        "--worker-concurrency",
        &concurrency.to_string(),
        "--receive-wait-secs",
        "1",
    ])
    .expect("args");
    let worker = hookline_worker::Worker::build_with_backend(args, backend)
        .await
        .expect("worker");
    let metrics = worker.metrics();
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(worker.run_until(stop.clone()));
    (metrics, stop, handle)
}

/// `events` (body, Stripe-Signature) pairs, signed now.
fn signed(events: usize) -> Vec<(String, String)> {
    let now = hookline_core::clock::unix_secs();
    (0..events)
        .map(|i| {
            let body = event(i, now);
            let sig = hookline_signature::header_for(SECRET.as_bytes(), now, body.as_bytes());
            (body, sig)
        })
        .collect()
}

/// Posts `work` over `clients` concurrent connections; every answer must be
/// 200. Returns each request's latency.
async fn post_all(url: &str, work: Vec<(String, String)>, clients: usize) -> Vec<Duration> {
    let events = work.len();
    let work = Arc::new(std::sync::Mutex::new(work));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, work) = (client.clone(), url.to_owned(), Arc::clone(&work));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = work.lock().expect("lock").pop();
                let Some((body, sig)) = next else { break };
                let t = Instant::now();
                let status = client
                    .post(&url)
                    .header("stripe-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                assert_eq!(status, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(events);
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all
}

struct IngressRun {
    rps: f64,
    p50: Duration,
    p99: Duration,
    calls: u64,
    events: usize,
}

async fn ingress_run(
    coalescing: bool,
    latency: Duration,
    events: usize,
    clients: usize,
) -> IngressRun {
    let dir = tempfile::tempdir().expect("tmp");
    let e = hookline_embedded::open(dir.path(), Default::default()).expect("open");
    let mut slow = Slow::new(e.queue.clone() as Arc<dyn Queue>, latency);
    let config = if coalescing {
        slow.max_entries = Some(10);
        CoalescerConfig::remote()
    } else {
        slow.max_entries = Some(1);
        CoalescerConfig {
            linger: Duration::ZERO,
            max_in_flight: clients,
            queue_depth: 8192,
        }
    };
    let slow = Arc::new(slow);
    let backend = Backend::from_parts(
        BackendKind::Embedded {
            path: dir.path().to_owned(),
        },
        slow.clone(),
        Some(e.dlq.clone()),
        e.store.clone(),
        config,
    );
    let args = hookline_ingress::IngressArgs::try_parse_from([
        "hookline-ingress",
        "--bind-addr",
        "127.0.0.1:0",
        "--stripe-webhook-secret",
        SECRET,
        "--log-format",
        "text",
    ])
    .expect("args");
    let app = hookline_ingress::Application::build_with_backend(args, backend)
        .await
        .expect("app");
    let url = format!("http://127.0.0.1:{}/api/stripe-webhook", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run_until(stop.clone()));

    let work = signed(events);
    let start = Instant::now();
    let mut all = post_all(&url, work, clients).await;
    let elapsed = start.elapsed();
    stop.cancel();
    all.sort_unstable();
    IngressRun {
        rps: events as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        calls: slow.calls.load(Ordering::Relaxed),
        events,
    }
}

struct WorkerRun {
    eps: f64,
    queue_calls: u64,
    store_calls: u64,
    events: usize,
}

async fn worker_run(concurrency: usize, latency: Duration, events: usize) -> WorkerRun {
    let dir = tempfile::tempdir().expect("tmp");
    let e = hookline_embedded::open(dir.path(), Default::default()).expect("open");
    let now = hookline_core::clock::unix_secs();
    let messages = messages(events, now);
    for chunk in messages.chunks(200) {
        assert!(e.queue.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let queue = Arc::new(Slow::new(e.queue.clone() as Arc<dyn Queue>, latency));
    let store = Arc::new(Slow::new(e.store.clone() as Arc<dyn Store>, latency));
    let backend = Backend::from_parts(
        BackendKind::Embedded {
            path: dir.path().to_owned(),
        },
        queue.clone(),
        Some(e.dlq.clone()),
        store.clone(),
        CoalescerConfig::local(),
    );
    let start = Instant::now();
    let (metrics, stop, handle) = start_worker(backend, concurrency).await;
    while metrics.completed() < events as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    stop.cancel();
    let _ = handle.await;
    assert_eq!(metrics.applied.get(), events as u64);
    WorkerRun {
        eps: events as f64 / elapsed.as_secs_f64(),
        queue_calls: queue.calls.load(Ordering::Relaxed),
        store_calls: store.calls.load(Ordering::Relaxed),
        events,
    }
}

/// C. Requests the real AWS adapters send, counted against moto (when
/// `AWS_ENDPOINT_URL` points at one, as `make aws-local` prints).
async fn aws_requests(events: usize) {
    let clients = hookline_aws::AwsClients::load().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tables = hookline_aws::Tables {
        events: format!("bench-events-{}", &id[..8]),
        objects: format!("bench-objects-{}", &id[..8]),
        provider: format!("bench-provider-{}", &id[..8]),
    };
    let pair = hookline_aws::provision::provision(
        &clients,
        &format!("bench-{}", &id[..8]),
        5,
        30,
        &tables,
    )
    .await
    .expect("provision");
    let sqs = Arc::new(Slow::new(
        Arc::new(hookline_aws::SqsQueue::new(
            clients.sqs.clone(),
            &pair.queue_url,
        )) as Arc<dyn Queue>,
        Duration::ZERO,
    ));
    let dlq: Arc<dyn Queue> = Arc::new(hookline_aws::SqsQueue::new(
        clients.sqs.clone(),
        &pair.dlq_url,
    ));
    let dynamo = hookline_aws::DynamoStore::new(clients.dynamodb.clone(), tables.clone());
    let store = Arc::new(Slow::new(
        Arc::new(dynamo.clone()) as Arc<dyn Store>,
        Duration::ZERO,
    ));

    // Ingress: 64 clients, the production coalescer, real SQS calls.
    let backend = Backend::from_parts(
        BackendKind::Aws {
            queue_url: pair.queue_url.clone(),
        },
        sqs.clone(),
        Some(dlq.clone()),
        store.clone(),
        CoalescerConfig::remote(),
    );
    let args = hookline_ingress::IngressArgs::try_parse_from([
        "hookline-ingress",
        "--bind-addr",
        "127.0.0.1:0",
        "--stripe-webhook-secret",
        SECRET,
    ])
    .expect("args");
    let app = hookline_ingress::Application::build_with_backend(args, backend)
        .await
        .expect("app");
    let url = format!("http://127.0.0.1:{}/api/stripe-webhook", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run_until(stop.clone()));
    post_all(&url, signed(events), 64).await;
    stop.cancel();
    let sends = sqs.calls.swap(0, Ordering::Relaxed);

    // Worker: the same events, real SQS receive/delete and DynamoDB writes.
    let backend = Backend::from_parts(
        BackendKind::Aws {
            queue_url: pair.queue_url.clone(),
        },
        sqs.clone(),
        Some(dlq),
        store.clone(),
        CoalescerConfig::remote(),
    );
    let (metrics, stop, handle) = start_worker(backend, 64).await;
    let started = Instant::now();
    let mut last_report = Instant::now();
    while metrics.completed() < events as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  worker on moto: {} of {events} completed after {:.0}s",
                metrics.completed(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    stop.cancel();
    let _ = handle.await;
    let queue_calls = sqs.calls.load(Ordering::Relaxed);
    let kinds: Vec<u64> = sqs
        .kinds
        .iter()
        .map(|k| k.load(Ordering::Relaxed))
        .collect();
    let store_calls = store.calls.load(Ordering::Relaxed);
    println!("C. requests counted against moto, {events} events");
    println!(
        "ingress: {sends} SendMessageBatch calls = {:.0} SQS requests per 1000 events",
        sends as f64 * 1000.0 / events as f64
    );
    let writes = dynamo.write_units();
    println!(
        "worker: {:.2} SQS requests per event (receive + delete batches, visibility changes), {:.2} store port calls per event",
        queue_calls as f64 / events as f64,
        store_calls as f64 / events as f64
    );
    println!(
        "        DynamoDB writes as billed (items and indexes): {} requests, {} write units ({} of them index writes) = {:.2} write units per applied event",
        writes.requests,
        writes.units,
        writes.index_units,
        writes.units as f64 / metrics.applied.get().max(1) as f64
    );
    println!(
        "        ({} ReceiveMessage, {} DeleteMessageBatch, {} ChangeMessageVisibility)",
        kinds[0], kinds[1], kinds[2]
    );
}

/// D. `dlq replay` of `events` dead-lettered events with `parallel` loops,
/// then the worker (concurrency 64) until every one is applied.
async fn replay_run(latency: Duration, events: usize, parallel: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tmp");
    let e = hookline_embedded::open(dir.path(), Default::default()).expect("open");
    let now = hookline_core::clock::unix_secs();
    let mut messages = messages(events, now);
    for m in &mut messages {
        m.attributes.insert(
            "error".into(),
            "gave up after 5 deliveries: store unreachable".into(),
        );
    }
    for chunk in messages.chunks(500) {
        assert!(e.dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let queue: Arc<dyn Queue> = Arc::new(Slow::new(e.queue.clone() as Arc<dyn Queue>, latency));
    let dlq: Arc<dyn Queue> = Arc::new(Slow::new(e.dlq.clone() as Arc<dyn Queue>, latency));
    let store = Arc::new(Slow::new(e.store.clone() as Arc<dyn Store>, latency));
    let backend = Backend::from_parts(
        BackendKind::Embedded {
            path: dir.path().to_owned(),
        },
        queue.clone(),
        Some(dlq.clone()),
        store,
        CoalescerConfig::local(),
    );
    let start = Instant::now();
    let (metrics, stop, handle) = start_worker(backend, 64).await;
    let options = hookline_cli::dlq::ReplayOptions {
        filter: Default::default(),
        limit: None,
        rate: None,
        dry_run: false,
        hold: Duration::from_secs(300),
        parallel,
    };
    let summary = hookline_cli::dlq::replay(
        &queue,
        &dlq,
        &options,
        &tokio_util::sync::CancellationToken::new(),
        |_| {},
    )
    .await
    .expect("replay");
    let replay_secs = start.elapsed().as_secs_f64();
    assert_eq!(summary.replayed, events as u64);
    while metrics.applied.get() < events as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied_secs = start.elapsed().as_secs_f64();
    stop.cancel();
    let _ = handle.await;
    (events as f64 / replay_secs, applied_secs)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if std::env::var("BENCH_PART").as_deref() == Ok("D") {
            println!("D. dlq replay of 10,000 dead-lettered events, 10 ms per call, worker at 64");
            for parallel in [1, hookline_cli::dlq::DEFAULT_PARALLEL] {
                let (rate, applied) = replay_run(Duration::from_millis(10), 10_000, parallel).await;
                println!("parallel {parallel}: {rate:.0} msgs/s, all applied after {applied:.1}s");
            }
            return;
        }
        if std::env::var("BENCH_PART").as_deref() == Ok("C") {
            hookline_settings::init_logging("hookline-bench", hookline_settings::LogFormat::Text);
            aws_requests(1000).await;
            return;
        }
        println!("A. ingress, 64 clients, 15 ms per queue call (embedded queue behind the delay)");
        println!("{:<14} {:>9} {:>9} {:>9} {:>22}", "coalescing", "events/s", "p50 ms", "p99 ms", "queue calls/1000 ev");
        for on in [true, false] {
            let r = ingress_run(on, Duration::from_millis(15), 4000, 64).await;
            println!(
                "{:<14} {:>9.0} {:>9.1} {:>9.1} {:>22.0}",
                if on { "on (batch 10)" } else { "off" },
                r.rps,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.calls as f64 * 1000.0 / r.events as f64
            );
        }
        println!();
        println!("B. worker end to end (enqueued -> committed), events/s");
        println!(
            "{:<12} {:>14} {:>16} {:>20} {:>20}",
            "concurrency", "embedded", "10 ms per call", "queue calls/event", "store calls/event"
        );
        for c in [1usize, 4, 16, 64] {
            let raw = worker_run(c, Duration::ZERO, 2000).await;
            let n = (c * 60).clamp(200, 3000);
            let slow = worker_run(c, Duration::from_millis(10), n).await;
            println!(
                "{:<12} {:>14.0} {:>16.0} {:>20.2} {:>20.2}",
                c,
                raw.eps,
                slow.eps,
                slow.queue_calls as f64 / slow.events as f64,
                slow.store_calls as f64 / slow.events as f64
            );
            let _ = raw.queue_calls + raw.store_calls + raw.events as u64;
        }
        println!("Little's law at 10 ms per call: an event holds its slot for the receive that brought it (10 ms, shared by up to 10) and one apply call (10 ms), so events/s ~ concurrency / ~24 ms.");
        println!();
        println!("D. dlq replay of 10000 dead-lettered events, worker (concurrency 64) running alongside");
        println!("{:<18} {:>9} {:>16} {:>28}", "per-call latency", "parallel", "replayed msgs/s", "replay start -> all applied");
        for ms in [0u64, 10] {
            for parallel in [1, hookline_cli::dlq::DEFAULT_PARALLEL] {
                let (rate, applied) = replay_run(Duration::from_millis(ms), 10_000, parallel).await;
                println!("{:<18} {:>9} {:>16.0} {:>27.1}s", format!("{ms} ms"), parallel, rate, applied);
            }
        }
        if std::env::var("AWS_ENDPOINT_URL").is_ok() {
            println!();
            aws_requests(1000).await;
        } else {
            println!("(C. AWS request counts: run with AWS_ENDPOINT_URL pointing at moto, e.g. after make aws-local)");
        }
    });
}
