//! Shared by every test module; not every module uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hookline_backend::Tuning;
use hookline_embedded::{Embedded, Options};
use hookline_ingress::{AppState, Application, IngressArgs};
use tokio_util::sync::CancellationToken;

/// An obviously fake webhook secret.
pub const SECRET: &str = "whsec_test_hooklineIntegrationSecret";

/// A fixture event from `testdata/stripe-events/` (see its README).
pub fn fixture(event_type: &str) -> String {
    let path = repo_root()
        .join("testdata/stripe-events")
        .join(format!("{event_type}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture with a fresh id and `created`, pretty-printed.
pub fn event_with(event_type: &str, id: &str, created: i64) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&fixture(event_type)).expect("fixture json");
    v["id"] = id.into();
    v["created"] = created.into();
    serde_json::to_string_pretty(&v).expect("serialises")
}

pub fn now() -> i64 {
    hookline_core::clock::unix_secs()
}

pub fn sign(body: &str) -> String {
    hookline_signature::header_for(SECRET.as_bytes(), now(), body.as_bytes())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the binaries built with the tests' own profile:
/// target/<profile>/deps/tests-<hash> -> target/<profile>.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf()
}

/// Path of a workspace binary, built by `cargo build --bins` with the
/// tests' profile (`make test` runs the release build before the tests).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` with the tests' profile (make test does)",
        path.display()
    );
    path
}

/// A running in-process ingress on a random port over its own data dir.
pub struct TestApp {
    pub address: String,
    pub data_dir: tempfile::TempDir,
    pub state: Arc<AppState>,
    pub backend: Embedded,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/api/stripe-webhook", self.address)
    }

    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        signature: Option<&str>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// Posts `body` with a valid signature.
    pub async fn post_signed(&self, body: &str) -> (u16, String) {
        let sig = sign(body);
        self.post(body.to_owned(), Some(&sig)).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// Every message in the main queue, in send order.
    pub async fn queued(&self) -> Vec<hookline_embedded::StoredMessage> {
        self.backend.queue.snapshot().await.expect("snapshot")
    }
}

/// Starts the ingress with the default test settings plus `extra` flags.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    spawn_app_tuned(extra, Tuning::default()).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the ingress in-process on the AWS fixture's queue.
pub async fn spawn_aws_app(fixture: &AwsFixture, extra: &[&str]) -> TestApp {
    let flags = fixture.flags();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    spawn_app_tuned(&all, Tuning::default()).await
}

pub async fn spawn_app_tuned(extra: &[&str], tuning: Tuning) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let dir = data_dir.path().to_str().expect("utf-8 path").to_owned();
    let mut argv = vec![
        "hookline-ingress",
        "--bind-addr",
        "127.0.0.1:0",
        "--data-dir",
        &dir,
        "--stripe-webhook-secret",
        SECRET,
        "--app-env",
        "development",
        "--log-format",
        "text",
    ];
    argv.extend_from_slice(extra);
    let args = IngressArgs::try_parse_from(argv).expect("test args parse");
    let app = Application::build(args, tuning).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until(shutdown.clone()));
    let backend = hookline_embedded::open(data_dir.path(), Options::default()).expect("open db");
    TestApp {
        address,
        data_dir,
        state,
        backend,
        client: reqwest::Client::new(),
        shutdown,
        task,
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A log file for a spawned process under `target/test-logs/` (kept for
/// reading after a failure; CI prints nothing of it unless asked).
/// Where [`log_file`] writes the log called `name`.
pub fn log_path(name: &str) -> PathBuf {
    repo_root()
        .join("target")
        .join("test-logs")
        .join(format!("{name}.log"))
}

pub fn log_file(name: &str) -> std::process::Stdio {
    let path = log_path(name);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::File::create(path) {
        Ok(f) => f.into(),
        Err(_) => std::process::Stdio::null(),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends a signal (`TERM`, `KILL`) to a child process.
pub fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

/// Waits for a child to exit; panics after `within`.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed when dropped.
/// A child process killed (and reaped) when the guard is dropped: every
/// process a test starts is held in one, so a failing assertion leaves none
/// running.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `hookline-worker` process; killed on drop.
pub struct WorkerProc {
    pub child: KillOnDrop,
    pub metrics_url: String,
}

/// Starts the built worker with quick test timings and `env` (the backend's
/// settings plus any extra).
pub fn start_worker_env(env: &[(String, String)]) -> WorkerProc {
    start_worker_bin("hookline-worker", env)
}

/// Starts a worker binary (`hookline-worker`, or a custom worker built on
/// its library) as [`start_worker_env`] does.
pub fn start_worker_bin(name: &str, env: &[(String, String)]) -> WorkerProc {
    let port = free_port();
    let mut cmd = std::process::Command::new(bin(name));
    cmd.env_clear()
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RECEIVE_WAIT_SECS", "1")
        .env("RETRY_BASE_SECS", "1")
        .env("RETRY_MAX_SECS", "2")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log_file(&format!("worker-{port}")));
    for (k, v) in env {
        cmd.env(k, v);
    }
    WorkerProc {
        child: KillOnDrop(cmd.spawn().expect("worker starts")),
        metrics_url: format!("http://127.0.0.1:{port}/metrics"),
    }
}

/// Whether the worker serves its metrics (it is up and polling).
pub async fn ready(worker: &WorkerProc) -> bool {
    reqwest::get(&worker.metrics_url)
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Reads one sample of the worker's metrics, 0 when absent or unreachable.
pub async fn metric(worker: &WorkerProc, series: &str) -> u64 {
    let Ok(resp) = reqwest::get(&worker.metrics_url).await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The AWS backend on the local AWS-compatible server (moto).

/// Records that a test skipped itself (it passes, but did not run):
/// `target/test-skips.log` gets a line, which `make test` counts and prints
/// beside the total.
pub fn record_skip(why: &str) {
    use std::io::Write;
    eprintln!("skipped: {why}");
    let path = repo_root().join("target").join("test-skips.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let _ = writeln!(f, "{test}: {why}");
    }
}

/// Returns from a test that needs the local AWS-compatible server when
/// none is configured, recording the skip (plain `cargo test`; `make test`
/// starts moto and sets `AWS_ENDPOINT_URL`).
#[macro_export]
macro_rules! skip_without_aws {
    () => {
        if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
            $crate::helpers::record_skip(
                "no local AWS server (AWS_ENDPOINT_URL is unset; `make test` starts moto and sets it)",
            );
            return;
        }
    };
}

/// The local AWS endpoint the tests use. `make test` starts moto and sets
/// `AWS_ENDPOINT_URL` (and region and fake credentials) for the test run.
pub fn aws_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "AWS backend tests need the local AWS server: run `make test` \
             (it starts moto and sets AWS_ENDPOINT_URL), or `make aws-local` and export what it prints"
        )
    })
}

/// The AWS environment a spawned binary needs, taken from this process.
pub fn aws_env_vars() -> Vec<(String, String)> {
    let _ = aws_endpoint();
    [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
    .collect()
}

/// The backend settings a test parses, as the binaries do.
#[derive(Debug, clap::Parser)]
struct BackendArgs {
    #[command(flatten)]
    common: hookline_settings::CommonSettings,
    #[command(flatten)]
    tables: hookline_settings::TableSettings,
}

/// A fresh queue pair and tables on moto, unique to one test.
pub struct AwsFixture {
    pub queue_url: String,
    pub dlq_url: String,
    pub events_table: String,
    pub objects_table: String,
    pub provider_table: String,
    pub backend: hookline_backend::Backend,
}

impl AwsFixture {
    /// Environment for a spawned binary to use this fixture.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = aws_env_vars();
        env.extend([
            ("QUEUE_URL".to_owned(), self.queue_url.clone()),
            ("DLQ_URL".to_owned(), self.dlq_url.clone()),
            ("EVENTS_TABLE_NAME".to_owned(), self.events_table.clone()),
            ("OBJECTS_TABLE_NAME".to_owned(), self.objects_table.clone()),
            (
                "PROVIDER_TABLE_NAME".to_owned(),
                self.provider_table.clone(),
            ),
        ]);
        env
    }

    /// Flags for an in-process binary to use this fixture.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--queue-url".into(),
            self.queue_url.clone(),
            "--dlq-url".into(),
            self.dlq_url.clone(),
            "--events-table-name".into(),
            self.events_table.clone(),
            "--objects-table-name".into(),
            self.objects_table.clone(),
            "--provider-table-name".into(),
            self.provider_table.clone(),
        ]
    }

    pub fn dlq(&self) -> Arc<dyn hookline_core::ports::Queue> {
        self.backend.dlq.clone().expect("fixture has a DLQ")
    }
}

/// The AWS backend on these queues and tables, opened from settings as the
/// binaries open it.
pub async fn aws_backend(
    queue_url: &str,
    dlq_url: &str,
    max_receives: u32,
    tables: &hookline_aws::Tables,
) -> hookline_backend::Backend {
    let args = <BackendArgs as clap::Parser>::try_parse_from([
        "test",
        "--queue-url",
        queue_url,
        "--dlq-url",
        dlq_url,
        "--max-receives",
        &max_receives.to_string(),
        "--events-table-name",
        &tables.events,
        "--objects-table-name",
        &tables.objects,
        "--provider-table-name",
        &tables.provider,
    ])
    .expect("args");
    hookline_backend::open(&args.common, &args.tables, Tuning::default())
        .await
        .expect("backend opens")
}

/// Creates a queue (`fifo` adds `.fifo`) with its DLQ and the three tables.
pub async fn aws_fixture_with(max_receives: u32, fifo: bool) -> AwsFixture {
    let _ = aws_endpoint();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let short = &id[..12];
    let queue_name = if fifo {
        format!("t-{short}.fifo")
    } else {
        format!("t-{short}")
    };
    let tables = hookline_aws::Tables {
        events: format!("events-{short}"),
        objects: format!("objects-{short}"),
        provider: format!("provider-{short}"),
    };
    let clients = hookline_aws::AwsClients::load().await;
    let pair = hookline_aws::provision::provision(&clients, &queue_name, max_receives, 30, &tables)
        .await
        .expect("provision on moto");
    let backend = aws_backend(&pair.queue_url, &pair.dlq_url, max_receives, &tables).await;
    AwsFixture {
        queue_url: pair.queue_url,
        dlq_url: pair.dlq_url,
        events_table: tables.events,
        objects_table: tables.objects,
        provider_table: tables.provider,
        backend,
    }
}

pub async fn aws_fixture(max_receives: u32) -> AwsFixture {
    aws_fixture_with(max_receives, false).await
}

/// Receives until `n` messages are in hand or `within` passes.
pub async fn receive_n(
    queue: &dyn hookline_core::ports::Queue,
    n: usize,
    visibility: Duration,
    within: Duration,
) -> Vec<hookline_core::ports::Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let batch = queue
            .receive((n - got.len()).min(10), Duration::from_secs(1), visibility)
            .await
            .expect("receive");
        got.extend(batch);
    }
    got
}

pub use hookline_testkit::Switch;

/// Runs the built `hookline` with exactly `env` (plus `extra`); returns the
/// exit code, stdout and stderr.
pub async fn run_hookline(
    env: &[(String, String)],
    extra: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin("hookline"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().copied())
        .args(args)
        .output()
        .await
        .expect("hookline runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses a command's JSON output.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A secret value for the secrets APIs.
pub fn secret(v: &str) -> secrecy::SecretString {
    secrecy::SecretString::from(v.to_owned())
}

/// Posts a fresh `payout.created` event signed with `secret` to the ingress
/// at `base`; the status, 0 when there was no answer.
pub async fn post_signed_with(base: &str, secret: &str, id: &str) -> u16 {
    let body = event_with("payout.created", id, now());
    let header = hookline_signature::header_for(secret.as_bytes(), now(), body.as_bytes());
    reqwest::Client::new()
        .post(format!("{base}/api/stripe-webhook"))
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
