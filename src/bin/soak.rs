//! `hookline-soak`: the conservation soak (`make soak`).
//!
//! Starts the release ingress and two workers, sends N unique events of the
//! six default types, each delivered twice and shuffled (so older events of
//! an object arrive after newer ones), plus 2% poison events, while faults
//! run on a schedule drawn from the seed: a worker SIGKILLed every few
//! seconds and restarted, the ingress SIGKILLed once and restarted (the
//! sender retries what got no answer, as Stripe does), two store outages,
//! and a `hookline dlq replay` half-way and at the end. Then it checks the
//! books: every accepted valid event completed once with the outcome its
//! position implies, every object's projection is its newest event, every
//! poison event is dead-lettered with a reason, the queue is empty. Exit 1 on
//! any loss or double application.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hookline_core::ports::Queue;
use hookline_core::records::{EventStatus, Outcome};

/// An obviously fake webhook secret.
const SECRET: &str = "whsec_test_hooklineSoakSecret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendKind {
    Embedded,
    Aws,
}

#[derive(Debug, Parser)]
#[command(
    name = "hookline-soak",
    about = "Conservation soak: N events through kills, outages, duplicates and replays; checks that nothing is lost or applied twice."
)]
struct Args {
    /// Unique valid events to send (each delivered twice).
    #[arg(long, env = "N", default_value_t = 10_000)]
    n: usize,
    /// Seed of the event order and the fault schedule.
    #[arg(long, env = "SEED", default_value_t = 1)]
    seed: u64,
    /// `embedded` (SQLite) or `aws` (needs AWS_ENDPOINT_URL, e.g. moto).
    #[arg(long, env = "BACKEND", value_enum, default_value = "embedded")]
    backend: BackendKind,
    /// Where the built binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where logs and the data directory go.
    #[arg(long, default_value = "target/soak")]
    out_dir: PathBuf,
    /// Seconds between worker kills (a random delay up to twice this).
    #[arg(long, default_value_t = 3)]
    kill_every_secs: u64,
    /// Seconds each store outage lasts.
    #[arg(long, default_value_t = 3)]
    outage_secs: u64,
    /// Deliveries per second the sender paces itself to, so that the faults
    /// fall while events flow.
    #[arg(long, env = "RATE", default_value_t = 1500)]
    rate: u64,
}

/// One event the soak sends.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    object: String,
    created: i64,
    poison: bool,
    body: String,
}

/// Fixture of each type from testdata/stripe-events, and its object prefix.
const TYPES: &[(&str, &str)] = &[
    ("payment_intent.succeeded", "pi"),
    ("payment_intent.payment_failed", "pi"),
    ("charge.dispute.created", "du"),
    ("payout.created", "po"),
    ("payout.updated", "po"),
    ("account.updated", "acct"),
];

fn generate(n: usize, seed: u64, root: &Path) -> anyhow::Result<Vec<Sent>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut templates = HashMap::new();
    for (t, _) in TYPES {
        let path = root
            .join("testdata/stripe-events")
            .join(format!("{t}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        templates.insert(*t, v);
    }
    let base: i64 = 1_750_000_000;
    let mut events = Vec::with_capacity(n + n / 50 + 1);
    let mut object_no = 0usize;
    while events.len() < n {
        // One object, 1 to 4 events of its family, created in order.
        let (family, prefix) = TYPES[rng.usize(..TYPES.len())];
        let same_family: Vec<&str> = TYPES
            .iter()
            .filter(|(_, p)| *p == prefix)
            .map(|(t, _)| *t)
            .collect();
        let object = format!("{prefix}_soak{seed}x{object_no}");
        object_no += 1;
        let count = rng.usize(1..=4).min(n - events.len());
        for j in 0..count {
            let t = if j == 0 {
                family
            } else {
                same_family[rng.usize(..same_family.len())]
            };
            let id = format!("evt_soak{seed}x{}", events.len());
            let created = base + i64::try_from(object_no).unwrap_or(0) + 10 * i64::try_from(j)?;
            let mut v = templates[t].clone();
            v["id"] = id.clone().into();
            v["created"] = created.into();
            v["data"]["object"]["id"] = object.clone().into();
            events.push(Sent {
                id,
                object: object.clone(),
                created,
                poison: false,
                body: v.to_string(),
            });
        }
    }
    // 2% poison: a Stripe event the worker cannot apply (no `created`, or an
    // object without its id). The ingress accepts them; the worker must
    // dead-letter them with the reason.
    for k in 0..n.div_ceil(50) {
        let id = format!("evt_soak{seed}poison{k}");
        let mut v = templates["payout.created"].clone();
        v["id"] = id.clone().into();
        if k % 2 == 0 {
            v.as_object_mut().map(|o| o.remove("created"));
        } else {
            v["data"]["object"].as_object_mut().map(|o| o.remove("id"));
        }
        events.push(Sent {
            id,
            object: String::new(),
            created: 0,
            poison: true,
            body: v.to_string(),
        });
    }
    Ok(events)
}

/// Processes the soak runs, restartable.
struct Procs {
    bin_dir: PathBuf,
    out_dir: PathBuf,
    env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
    ingress_port: u16,
    workers: Vec<Child>,
    ingress: Option<Child>,
    generation: usize,
}

impl Procs {
    fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(
            self.out_dir.join(format!("{name}.log")),
        )?)
    }

    fn start_worker(&mut self, slot: usize) -> anyhow::Result<Child> {
        self.generation += 1;
        let log = self.log(&format!("worker-{slot}-{}", self.generation))?;
        Command::new(self.bin_dir.join("hookline-worker"))
            .env_clear()
            .envs(self.env.iter().cloned())
            .envs(self.worker_env.iter().cloned())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start hookline-worker")
    }

    fn start_ingress(&mut self) -> anyhow::Result<()> {
        self.generation += 1;
        let log = self.log(&format!("ingress-{}", self.generation))?;
        self.ingress = Some(
            Command::new(self.bin_dir.join("hookline-ingress"))
                .env_clear()
                .envs(self.env.iter().cloned())
                .env("BIND_ADDR", format!("127.0.0.1:{}", self.ingress_port))
                .env("STRIPE_WEBHOOK_SECRET", SECRET)
                .env("LOG_FORMAT", "json")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot start hookline-ingress")?,
        );
        Ok(())
    }

    fn kill_ingress(&mut self) {
        if let Some(c) = self.ingress.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn kill_worker(&mut self, slot: usize) -> anyhow::Result<()> {
        let _ = self.workers[slot].kill();
        let _ = self.workers[slot].wait();
        self.workers[slot] = self.start_worker(slot)?;
        Ok(())
    }

    fn stop_all(&mut self) {
        for c in self.workers.iter_mut().chain(self.ingress.iter_mut()) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in self.workers.iter_mut().chain(self.ingress.iter_mut()) {
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain(self.ingress.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

use hookline_testkit::Switch;

enum Outage {
    Embedded(PathBuf),
    Aws(Switch),
}

impl Outage {
    async fn run(&self, d: Duration) -> anyhow::Result<()> {
        match self {
            Self::Embedded(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    let lock =
                        hookline_embedded::testing::WriteLock::hold(&db, Duration::from_secs(30))?;
                    std::thread::sleep(d);
                    lock.release()?;
                    Ok(())
                })
                .await??;
            }
            Self::Aws(switch) => {
                switch.set(false);
                tokio::time::sleep(d).await;
                switch.set(true);
            }
        }
        Ok(())
    }
}

#[derive(clap::Parser)]
struct BackendArgs {
    #[command(flatten)]
    common: hookline_settings::CommonSettings,
    #[command(flatten)]
    tables: hookline_settings::TableSettings,
}

/// Posts every delivery until it gets a 200 (retrying 503s and requests
/// that got no answer, as Stripe does); returns the ids that got a 200.
async fn send_all(
    port: u16,
    deliveries: Vec<Arc<Sent>>,
    sent: Arc<AtomicUsize>,
    rate: u64,
) -> anyhow::Result<(HashSet<String>, usize, usize)> {
    let start = tokio::time::Instant::now();
    let issued = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let queue = Arc::new(Mutex::new(VecDeque::from(deliveries)));
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let retries = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(AtomicUsize::new(0));
    let url = format!("http://127.0.0.1:{port}/api/stripe-webhook");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, queue, accepted, url) = (
            client.clone(),
            Arc::clone(&queue),
            Arc::clone(&accepted),
            url.clone(),
        );
        let (retries, rejected, sent, issued) = (
            Arc::clone(&retries),
            Arc::clone(&rejected),
            Arc::clone(&sent),
            Arc::clone(&issued),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(ev) = next else { break };
                let k = issued.fetch_add(1, Ordering::SeqCst) as u64;
                let due = start + Duration::from_micros(k * 1_000_000 / rate.max(1));
                tokio::time::sleep_until(due).await;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let header = hookline_signature::header_for(
                        SECRET.as_bytes(),
                        hookline_core::clock::unix_secs(),
                        ev.body.as_bytes(),
                    );
                    let answer = client
                        .post(&url)
                        .header("stripe-signature", header)
                        .header("content-type", "application/json")
                        .body(ev.body.clone())
                        .send()
                        .await;
                    match answer.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            if let Ok(mut a) = accepted.lock() {
                                a.insert(ev.id.clone());
                            }
                            break;
                        }
                        Ok(400) => {
                            rejected.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        _ if attempts < 600 => {
                            retries.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => break,
                    }
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    Ok((
        accepted,
        retries.load(Ordering::SeqCst),
        rejected.load(Ordering::SeqCst),
    ))
}

async fn replay(bin_dir: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin_dir.join("hookline"))
        .env_clear()
        .envs(env.iter().cloned())
        .args(["dlq", "replay", "--json", "--hold", "30s"])
        .output()
        .await?;
    std::fs::write(log, &out.stderr)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until the queue has been empty for two seconds in a row.
async fn drained(queue: &dyn Queue, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut empty_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let empty = queue
            .counts()
            .await
            .is_ok_and(|c| c.waiting == 0 && c.in_flight == 0);
        match (empty, empty_since) {
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(2) => return true,
            (true, None) => empty_since = Some(Instant::now()),
            (false, _) => empty_since = None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Per event id: how many times the workers logged each outcome.
fn read_worker_logs(out_dir: &Path) -> anyhow::Result<HashMap<String, BTreeMap<String, u32>>> {
    let mut seen: HashMap<String, BTreeMap<String, u32>> = HashMap::new();
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        let is_worker = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("worker-"));
        if !is_worker {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = &v;
            let (Some(message), Some(id)) =
                (fields["message"].as_str(), fields["event_id"].as_str())
            else {
                continue;
            };
            let outcome = match message {
                "Event completed." => fields["outcome"].as_str().unwrap_or("?").to_owned(),
                "Event dead-lettered." => "dead-lettered".to_owned(),
                _ => continue,
            };
            *seen
                .entry(id.to_owned())
                .or_default()
                .entry(outcome)
                .or_default() += 1;
        }
    }
    Ok(seen)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let bed = Bed::set_up(&args).await?;
    let events = generate(args.n, args.seed, &bed.root)?;
    // Each event delivered twice, shuffled.
    let mut rng = fastrand::Rng::with_seed(args.seed ^ 0x5eed);
    let shared: Vec<Arc<Sent>> = events.iter().cloned().map(Arc::new).collect();
    let mut deliveries: Vec<Arc<Sent>> = shared.iter().chain(shared.iter()).cloned().collect();
    rng.shuffle(&mut deliveries);
    let procs = bed.start_services().await?;
    println!(
        "soak: backend {:?}, N={} (+{} poison), seed {}, {} deliveries; logs in {}",
        args.backend,
        args.n,
        events.len() - args.n,
        args.seed,
        deliveries.len(),
        bed.out_dir.display()
    );
    let sent = send_with_faults(&args, &bed, procs, deliveries).await?;
    let books = Books::count(&bed, &events, &sent).await?;
    println!(
        "soak: books after {:.1}s (sending took {:.1}s)",
        started.elapsed().as_secs_f64(),
        sent.sending_took.as_secs_f64()
    );
    books.print(&sent);
    let ok = books.balance(&sent);
    println!(
        "soak: {}",
        if ok {
            "books balance"
        } else {
            "BOOKS DO NOT BALANCE"
        }
    );
    Ok(ok)
}

/// Where the soak runs: its directories, the services' settings, the
/// outage it can cause, and the backend it checks through the ports.
struct Bed {
    root: PathBuf,
    out_dir: PathBuf,
    bin_dir: PathBuf,
    env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
    outage: Arc<Outage>,
    backend: hookline_backend::Backend,
    dlq: Arc<dyn Queue>,
}

impl Bed {
    async fn set_up(args: &Args) -> anyhow::Result<Bed> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let kind = match args.backend {
            BackendKind::Embedded => "embedded",
            BackendKind::Aws => "aws",
        };
        let out_dir = root
            .join(&args.out_dir)
            .join(format!("{kind}-{}-{}", args.n, args.seed));
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir)?;
        let bin_dir = root.join(&args.bin_dir);
        for b in ["hookline-ingress", "hookline-worker", "hookline"] {
            if !bin_dir.join(b).exists() {
                bail!(
                    "{} is not built (cargo build --release --bins)",
                    bin_dir.join(b).display()
                );
            }
        }
        let mut env: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "development".into()),
            ("MAX_RECEIVES".into(), "10".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        let mut worker_env: Vec<(String, String)> = vec![
            ("WORKER_CONCURRENCY".into(), "16".into()),
            ("VISIBILITY_TIMEOUT_SECS".into(), "5".into()),
            ("RETRY_BASE_SECS".into(), "1".into()),
            ("RETRY_MAX_SECS".into(), "4".into()),
            ("RECEIVE_WAIT_SECS".into(), "1".into()),
            ("SHUTDOWN_GRACE_SECS".into(), "5".into()),
        ];
        let mut check_flags: Vec<String> =
            vec!["soak".into(), "--max-receives".into(), "10".into()];
        let outage = match args.backend {
            BackendKind::Embedded => {
                let data = out_dir.join("data");
                env.push(("DATA_DIR".into(), data.display().to_string()));
                check_flags.extend(["--data-dir".into(), data.display().to_string()]);
                // Created before the services start, so the outage can lock it.
                let _ = hookline_embedded::open(&data, hookline_embedded::Options::default())?;
                Outage::Embedded(data)
            }
            BackendKind::Aws => aws_bed(&mut env, &mut worker_env, &mut check_flags).await?,
        };
        let check = BackendArgs::try_parse_from(&check_flags)?;
        let backend = hookline_backend::open(
            &check.common,
            &check.tables,
            hookline_backend::Tuning::default(),
        )
        .await?;
        let dlq = backend.dlq.clone().context("no DLQ")?;
        Ok(Bed {
            root,
            out_dir,
            bin_dir,
            env,
            worker_env,
            outage: Arc::new(outage),
            backend,
            dlq,
        })
    }

    /// The ingress and two workers, started; returns once the ingress answers.
    async fn start_services(&self) -> anyhow::Result<Procs> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let ingress_port = listener.local_addr()?.port();
        drop(listener);
        let mut procs = Procs {
            bin_dir: self.bin_dir.clone(),
            out_dir: self.out_dir.clone(),
            env: self.env.clone(),
            worker_env: self.worker_env.clone(),
            ingress_port,
            workers: Vec::new(),
            ingress: None,
            generation: 0,
        };
        procs.start_ingress()?;
        for slot in 0..2 {
            let w = procs.start_worker(slot)?;
            procs.workers.push(w);
        }
        let client = reqwest::Client::new();
        let health = format!("http://127.0.0.1:{ingress_port}/healthz");
        let up_by = Instant::now() + Duration::from_secs(20);
        while client.get(&health).send().await.is_err() {
            if Instant::now() > up_by {
                bail!("the ingress did not start; see {}", self.out_dir.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(procs)
    }
}

/// A fresh queue pair and tables on the local AWS server, and a switch in
/// front of DynamoDB for the outages.
async fn aws_bed(
    env: &mut Vec<(String, String)>,
    worker_env: &mut Vec<(String, String)>,
    check_flags: &mut Vec<String>,
) -> anyhow::Result<Outage> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .context("BACKEND=aws needs AWS_ENDPOINT_URL (make soak BACKEND=aws starts moto)")?;
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }
    let short = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let tables = hookline_aws::Tables {
        events: format!("soak-events-{short}"),
        objects: format!("soak-objects-{short}"),
        provider: format!("soak-provider-{short}"),
    };
    let clients = hookline_aws::AwsClients::load().await;
    let pair =
        hookline_aws::provision::provision(&clients, &format!("soak-{short}"), 10, 5, &tables)
            .await?;
    let settings = [
        ("QUEUE_URL", pair.queue_url.clone()),
        ("DLQ_URL", pair.dlq_url.clone()),
        ("EVENTS_TABLE_NAME", tables.events.clone()),
        ("OBJECTS_TABLE_NAME", tables.objects.clone()),
        ("PROVIDER_TABLE_NAME", tables.provider.clone()),
    ];
    for (k, v) in &settings {
        env.push(((*k).into(), v.clone()));
        check_flags.extend([
            format!("--{}", k.to_lowercase().replace('_', "-")),
            v.clone(),
        ]);
    }
    let switch = Switch::start(endpoint.trim_start_matches("http://").to_owned()).await?;
    worker_env.push((
        "AWS_ENDPOINT_URL_DYNAMODB".into(),
        format!("http://127.0.0.1:{}", switch.port),
    ));
    Ok(Outage::Aws(switch))
}

/// What the sending phase leaves for the books.
struct SendResult {
    accepted: HashSet<String>,
    retries: usize,
    rejected: usize,
    worker_kills: usize,
    faults: Vec<String>,
    /// From the first delivery to the sender's end.
    sending_took: Duration,
}

/// Sends every delivery while the faults happen (worker kills on their own
/// clock; the ingress kill, two outages and a replay at points of the
/// sending progress), then drains, replays what is in the DLQ, drains
/// again and stops the services.
async fn send_with_faults(
    args: &Args,
    bed: &Bed,
    procs: Procs,
    deliveries: Vec<Arc<Sent>>,
) -> anyhow::Result<SendResult> {
    let total = deliveries.len();
    let sending_from = Instant::now();
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(send_all(
        procs.ingress_port,
        deliveries,
        Arc::clone(&progress),
        args.rate,
    ));
    let mut faults = fastrand::Rng::with_seed(args.seed ^ 0xfa017);
    let procs = Arc::new(tokio::sync::Mutex::new(procs));
    let stop_kills = Arc::new(AtomicBool::new(false));
    let killer = spawn_killer(
        Arc::clone(&procs),
        Arc::clone(&stop_kills),
        faults.u64(..),
        args.kill_every_secs,
    );
    let schedule = Schedule {
        ingress_kill_at: total * faults.usize(20..=35) / 100,
        outages_at: [
            total * faults.usize(40..=45) / 100,
            total * faults.usize(65..=75) / 100,
        ],
        replay_at: total / 2,
    };
    let mut books_faults =
        scheduled_faults(args, bed, &procs, &schedule, &progress, &sender, total).await?;
    let (accepted, retries, rejected) = sender.await??;
    let sending_took = sending_from.elapsed();
    // The kills stop with the sending; then drain, replay what is in the
    // DLQ, and drain again.
    stop_kills.store(true, Ordering::SeqCst);
    let worker_kills = killer.await??;
    let drain_within = Duration::from_secs(120 + u64::try_from(args.n / 50).unwrap_or(0));
    if !drained(bed.backend.queue.as_ref(), drain_within).await {
        println!("soak: the queue did not drain");
    }
    let r = replay(&bed.bin_dir, &bed.env, &bed.out_dir.join("replay-end.log")).await?;
    books_faults.push(format!("dlq replay at the end: {r}"));
    let _ = drained(bed.backend.queue.as_ref(), drain_within).await;
    procs.lock().await.stop_all();
    Ok(SendResult {
        accepted,
        retries,
        rejected,
        worker_kills,
        faults: books_faults,
        sending_took,
    })
}

/// Worker SIGKILLs every `every`/2 to 3·`every`/2 seconds until `stop`.
fn spawn_killer(
    procs: Arc<tokio::sync::Mutex<Procs>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    every: u64,
) -> tokio::task::JoinHandle<anyhow::Result<usize>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    tokio::spawn(async move {
        let mut kills = 0usize;
        loop {
            let wait = Duration::from_millis(rng.u64(every * 500..=every * 1500));
            tokio::time::sleep(wait).await;
            if stop.load(Ordering::SeqCst) {
                return Ok(kills);
            }
            procs.lock().await.kill_worker(rng.usize(..2))?;
            kills += 1;
        }
    })
}

/// Points of the sending progress (deliveries sent) where faults fire.
struct Schedule {
    ingress_kill_at: usize,
    outages_at: [usize; 2],
    replay_at: usize,
}

/// Fires each scheduled fault once its point is reached (late, if the
/// sender finished first) and waits for all of them; their book lines.
async fn scheduled_faults(
    args: &Args,
    bed: &Bed,
    procs: &tokio::sync::Mutex<Procs>,
    at: &Schedule,
    progress: &AtomicUsize,
    sender: &tokio::task::JoinHandle<anyhow::Result<(HashSet<String>, usize, usize)>>,
    total: usize,
) -> anyhow::Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    let (mut ingress_killed, mut outages_done, mut replayed_half) = (false, 0usize, false);
    let mut running: Vec<tokio::task::JoinHandle<anyhow::Result<Option<String>>>> = Vec::new();
    while !(ingress_killed && outages_done == at.outages_at.len() && replayed_half) {
        let done = progress.load(Ordering::SeqCst);
        let finished = sender.is_finished();
        if !ingress_killed && (done >= at.ingress_kill_at || finished) {
            procs.lock().await.kill_ingress();
            tokio::time::sleep(Duration::from_millis(500)).await;
            procs.lock().await.start_ingress()?;
            ingress_killed = true;
            lines.push(format!(
                "ingress SIGKILL at {done}/{total} deliveries, restarted"
            ));
        }
        if outages_done < at.outages_at.len() && (done >= at.outages_at[outages_done] || finished) {
            lines.push(format!(
                "store outage of {}s at {done}/{total} deliveries",
                args.outage_secs
            ));
            let (outage, d) = (
                Arc::clone(&bed.outage),
                Duration::from_secs(args.outage_secs),
            );
            running.push(tokio::spawn(
                async move { outage.run(d).await.map(|()| None) },
            ));
            outages_done += 1;
        }
        if !replayed_half && (done >= at.replay_at || finished) {
            let (bin_dir, env, log) = (
                bed.bin_dir.clone(),
                bed.env.clone(),
                bed.out_dir.join("replay-half.log"),
            );
            running.push(tokio::spawn(async move {
                let r = replay(&bin_dir, &env, &log).await?;
                Ok(Some(format!(
                    "dlq replay at {done}/{total} deliveries: {r}"
                )))
            }));
            replayed_half = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in running {
        if let Some(line) = r.await?? {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// The books: what became of every accepted event, from the store, the
/// DLQ, the queue and the workers' logs.
#[derive(Default)]
struct Books {
    valid_sent: usize,
    valid_accepted: usize,
    poison_sent: usize,
    poison_accepted: usize,
    applied: usize,
    stale: usize,
    duplicates: u32,
    unlogged: usize,
    lost: usize,
    double: usize,
    wrong_outcome: usize,
    projection_wrong: usize,
    objects: usize,
    poison_ok: usize,
    poison_bad: usize,
    dead_messages: usize,
    valid_in_dlq: usize,
    queue_empty: bool,
    problems: Vec<String>,
}

impl Books {
    async fn count(bed: &Bed, events: &[Sent], sent: &SendResult) -> anyhow::Result<Books> {
        let accepted = |e: &&Sent| sent.accepted.contains(&e.id);
        let mut b = Books {
            valid_sent: events.iter().filter(|e| !e.poison).count(),
            valid_accepted: events.iter().filter(|e| !e.poison).filter(accepted).count(),
            poison_sent: events.iter().filter(|e| e.poison).count(),
            poison_accepted: events.iter().filter(|e| e.poison).filter(accepted).count(),
            ..Books::default()
        };
        let logs = read_worker_logs(&bed.out_dir)?;
        b.duplicates = logs
            .values()
            .map(|m| m.get("duplicate").copied().unwrap_or(0))
            .sum();
        let mut newest: HashMap<&str, &Sent> = HashMap::new();
        for e in events.iter().filter(|e| !e.poison).filter(accepted) {
            let slot = newest.entry(e.object.as_str()).or_insert(e);
            if e.created > slot.created {
                *slot = e;
            }
        }
        for e in events.iter().filter(|e| !e.poison).filter(accepted) {
            b.check_valid(bed, e, &newest, &logs).await?;
        }
        b.check_projections(bed, &newest).await?;
        let dead = b.read_dead_letters(bed).await?;
        for e in events.iter().filter(|e| e.poison).filter(accepted) {
            b.check_poison(bed, e, &dead).await?;
        }
        b.valid_in_dlq = dead
            .keys()
            .filter(|id| events.iter().any(|e| !e.poison && &e.id == *id))
            .count();
        let counts = bed.backend.queue.counts().await?;
        b.queue_empty = counts.waiting == 0 && counts.in_flight == 0;
        Ok(b)
    }

    /// An accepted valid event: completed, applied at most once, and
    /// `stale` only when a newer event of its object exists.
    async fn check_valid(
        &mut self,
        bed: &Bed,
        e: &Sent,
        newest: &HashMap<&str, &Sent>,
        logs: &HashMap<String, BTreeMap<String, u32>>,
    ) -> anyhow::Result<()> {
        let count = |outcome: &str| -> u32 {
            logs.get(&e.id)
                .and_then(|m| m.get(outcome))
                .copied()
                .unwrap_or(0)
        };
        let rec = bed.backend.store.event(&e.id).await?;
        let Some(r) = rec.filter(|r| r.status == EventStatus::Completed) else {
            self.lost += 1;
            self.problems
                .push(format!("{} accepted but not completed", e.id));
            return Ok(());
        };
        match r.outcome {
            Some(Outcome::Applied) => self.applied += 1,
            Some(Outcome::Stale) => {
                self.stale += 1;
                if newest
                    .get(e.object.as_str())
                    .is_none_or(|n| n.created <= e.created)
                {
                    self.wrong_outcome += 1;
                    self.problems
                        .push(format!("{} stale but the newest of {}", e.id, e.object));
                }
            }
            other => {
                self.wrong_outcome += 1;
                self.problems.push(format!("{}: outcome {other:?}", e.id));
            }
        }
        if count("applied") > 1 {
            self.double += 1;
            self.problems
                .push(format!("{} applied {} times", e.id, count("applied")));
        }
        if count("applied") + count("stale") == 0 {
            // Committed, then the worker was killed before its log line.
            self.unlogged += 1;
        }
        Ok(())
    }

    /// Every object's projection is its newest event.
    async fn check_projections(
        &mut self,
        bed: &Bed,
        newest: &HashMap<&str, &Sent>,
    ) -> anyhow::Result<()> {
        self.objects = newest.len();
        for (object, e) in newest {
            let item = bed.backend.store.item(object).await?;
            let last = item
                .as_ref()
                .and_then(|i| i.0.get("lastEventId"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            if last.as_deref() != Some(e.id.as_str()) {
                self.projection_wrong += 1;
                self.problems
                    .push(format!("{object}: projection {last:?}, newest {}", e.id));
            }
        }
        Ok(())
    }

    /// The DLQ's events and their reasons (read, then made visible again).
    async fn read_dead_letters(
        &mut self,
        bed: &Bed,
    ) -> anyhow::Result<HashMap<String, Option<String>>> {
        let mut dead: HashMap<String, Option<String>> = HashMap::new();
        let mut held = Vec::new();
        loop {
            let batch = bed
                .dlq
                .receive(10, Duration::from_secs(1), Duration::from_secs(60))
                .await?;
            if batch.is_empty() {
                break;
            }
            for d in batch {
                self.dead_messages += 1;
                if let Some(id) = d.attributes.get("event_id") {
                    let reason = d.attributes.get("error").cloned();
                    let slot = dead.entry(id.clone()).or_insert(None);
                    if slot.is_none() {
                        *slot = reason;
                    }
                }
                held.push(d.receipt);
            }
        }
        for r in &held {
            let _ = bed.dlq.set_visibility(r, Duration::ZERO).await;
        }
        Ok(dead)
    }

    /// An accepted poison event: `FAILED` with its error, and in the DLQ
    /// with a reason.
    async fn check_poison(
        &mut self,
        bed: &Bed,
        e: &Sent,
        dead: &HashMap<String, Option<String>>,
    ) -> anyhow::Result<()> {
        let rec = bed.backend.store.event(&e.id).await?;
        let failed = rec
            .as_ref()
            .is_some_and(|r| r.status == EventStatus::Failed && r.last_error.is_some());
        let reason = dead
            .get(&e.id)
            .cloned()
            .flatten()
            .or_else(|| rec.as_ref().and_then(|r| r.last_error.clone()));
        if failed && dead.contains_key(&e.id) && reason.is_some() {
            self.poison_ok += 1;
        } else {
            self.poison_bad += 1;
            self.problems.push(format!(
                "poison {}: in DLQ {}, ledger {rec:?}",
                e.id,
                dead.contains_key(&e.id)
            ));
        }
        Ok(())
    }

    fn print(&self, sent: &SendResult) {
        println!(
            "  faults: {} worker SIGKILLs (restarted)",
            sent.worker_kills
        );
        for f in &sent.faults {
            println!("  faults: {f}");
        }
        println!(
            "  valid events          {} sent twice, {} accepted (200)",
            self.valid_sent, self.valid_accepted
        );
        println!(
            "  poison events         {} sent twice, {} accepted",
            self.poison_sent, self.poison_accepted
        );
        println!(
            "  sender retries        {} (503 or no answer), rejected {}",
            sent.retries, sent.rejected
        );
        println!("  applied               {}", self.applied);
        println!("  stale                 {}", self.stale);
        println!("  duplicate deliveries  {}", self.duplicates);
        println!(
            "  dead-lettered         {} poison events with a reason ({} DLQ messages)",
            self.poison_ok, self.dead_messages
        );
        println!(
            "  unlogged completions  {} (committed, worker killed before its log line)",
            self.unlogged
        );
        println!("  lost                  {}", self.lost);
        println!("  double-applied        {}", self.double);
        println!("  wrong outcome         {}", self.wrong_outcome);
        println!(
            "  wrong projection      {} of {} objects",
            self.projection_wrong, self.objects
        );
        println!(
            "  poison not in DLQ     {}; valid events in DLQ {}",
            self.poison_bad, self.valid_in_dlq
        );
        println!("  queue empty           {}", self.queue_empty);
        for p in self.problems.iter().take(20) {
            println!("  problem: {p}");
        }
    }

    fn balance(&self, sent: &SendResult) -> bool {
        self.lost == 0
            && self.double == 0
            && self.wrong_outcome == 0
            && self.projection_wrong == 0
            && self.poison_bad == 0
            && self.valid_in_dlq == 0
            && self.queue_empty
            && self.valid_accepted == self.valid_sent
            && sent.rejected == 0
    }
}
