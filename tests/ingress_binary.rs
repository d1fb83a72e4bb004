//! The release ingress as a process: its exit codes, its settings, and
//! its answers over a real socket.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

struct Ingress {
    child: KillOnDrop,
    url: String,
    base: String,
}

/// Starts the built `hookline-ingress` with a clean environment.
fn start(data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Ingress {
    let port = free_port();
    let mut cmd = Command::new(bin("hookline-ingress"));
    cmd.env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", data_dir)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("ingress starts");
    let base = format!("http://127.0.0.1:{port}");
    Ingress {
        child: KillOnDrop(child),
        url: format!("{base}/api/stripe-webhook"),
        base,
    }
}

async fn wait_ready(ingress: &Ingress) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", ingress.base)).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "ingress did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(url: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("stripe-signature", sign(body))
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut s);
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_and_logs_never_contain_the_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut ingress = start(dir.path(), &[]);
    wait_ready(&ingress).await;
    let body = event_with("payout.created", "evt_test_bin_1", now());
    assert_eq!(post(&ingress.url, &body).await, 200);
    // A failure path too: it logs the reason, never the secret.
    let bad = reqwest::Client::new()
        .post(&ingress.url)
        .header("stripe-signature", "t=1,v1=00")
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status().as_u16(), 400);

    signal(&ingress.child, "TERM");
    let code = wait_exit(&mut ingress.child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    let logs = stderr_of(&mut ingress.child);
    assert!(
        logs.contains("Webhook signature verification failed"),
        "{logs}"
    );
    assert!(
        !logs.contains("hooklineIntegrationSecret"),
        "secret leaked:\n{logs}"
    );

    let db = hookline_embedded::open(dir.path(), Default::default()).expect("db");
    assert_eq!(db.queue.snapshot().await.expect("snapshot").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_ingress_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tmp");
    let ingress = start(dir.path(), &[]);
    wait_ready(&ingress).await;
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let id = format!("evt_test_kill_{i}");
        if post(&ingress.url, &event_with("payout.created", &id, now())).await == 200 {
            acknowledged.push(id);
        }
    }
    assert_eq!(acknowledged.len(), 30);
    signal(&ingress.child, "KILL");
    drop(ingress);
    let db = hookline_embedded::open(dir.path(), Default::default()).expect("db");
    let ids: Vec<String> = db
        .queue
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .map(|m| m.attributes["event_id"].clone())
        .collect();
    assert_eq!(ids, acknowledged);
}

fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin("hookline-ingress"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("BIND_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refused_settings_exit_1_naming_the_rule_never_the_key() {
    let key = "sk_live_fakeKeyValueThatMustNotBePrinted";
    let (code, out, err) = run_to_end(
        &[],
        &[
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("STRIPE_SECRET_KEY", key),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("live keys are refused outside production"),
        "{err}"
    );
    assert!(!err.contains("fakeKeyValue") && !out.contains("fakeKeyValue"));

    let test_key = "sk_test_fakeKeyValueThatMustNotBePrinted";
    let (code, _, err) = run_to_end(
        &[],
        &[
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("STRIPE_SECRET_KEY", test_key),
            ("APP_ENV", "production"),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("test keys are refused in production"), "{err}");
    assert!(!err.contains("fakeKeyValue"));

    let (code, _, err) = run_to_end(&[], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("STRIPE_WEBHOOK_SECRET"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_help_shows_no_secret() {
    let (code, _, _) = run_to_end(&["--no-such-flag"], &[]);
    assert_eq!(code, Some(2));
    let (code, out, _) = run_to_end(&["--help"], &[("STRIPE_WEBHOOK_SECRET", SECRET)]);
    assert_eq!(code, Some(0));
    assert!(out.contains("STRIPE_WEBHOOK_SECRET"));
    assert!(!out.contains("hooklineIntegrationSecret"), "{out}");
}
