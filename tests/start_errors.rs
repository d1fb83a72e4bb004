//! Operator errors at start: the API key that wins is the one checked,
//! settings errors exit 1 and usage errors 2, a missing table leaves the
//! events queued until the setup is fixed.

use std::time::Duration;

use crate::bed::Bed;
use crate::helpers::*;
use crate::queues::DEAD_LETTERED;

/// A worker pointed at a table that does not exist: every event stays on
/// the main queue (none dead-lettered), `/readyz` says why, and a correctly
/// configured worker then applies them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_leaves_events_queued_until_the_setup_is_fixed() {
    crate::skip_without_aws!();
    let bed = Bed::aws(10).await;
    let (ids, bodies): (Vec<String>, Vec<String>) = (0..3)
        .map(|i| {
            let id = format!("evt_test_cfg_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_cfg_{i}").into();
            (id, v.to_string())
        })
        .unzip();
    bed.enqueue(&bodies).await;
    let broken = bed.worker(&[("EVENTS_TABLE_NAME", "hookline-events-missing")]);
    let readyz = broken.metrics_url.replace("/metrics", "/readyz");
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&broken, "hookline_configuration_errors_total").await >= 3
        })
        .await,
        "configuration errors counted"
    );
    let resp = reqwest::get(&readyz).await.expect("readyz");
    assert_eq!(resp.status().as_u16(), 503);
    let text = resp.text().await.expect("body");
    assert!(text.contains("configuration error"), "{text}");
    assert!(
        !text.contains("arn:"),
        "no AWS error text on the network: {text}"
    );
    assert_eq!(metric(&broken, DEAD_LETTERED).await, 0);
    drop(broken);
    let d = bed.dlq.counts().await.expect("counts");
    assert_eq!(d.waiting + d.in_flight, 0, "nothing dead-lettered");
    let q = bed.queue.counts().await.expect("counts");
    assert_eq!(
        q.waiting + q.in_flight,
        3,
        "every event still on the main queue"
    );

    // Fixed: the messages come back after their backoff and apply.
    let _fixed = bed.worker(&[("VISIBILITY_TIMEOUT_SECS", "2")]);
    assert!(eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await);
    assert!(bed.dead_letters().await.is_empty());
}

/// `STRIPE_SECRET_KEY_ID` (a test key in Secrets Manager) wins over a live
/// `STRIPE_SECRET_KEY` in development: the binaries start. The other way
/// round, they refuse to start, naming the rule.
#[tokio::test(flavor = "multi_thread")]
async fn the_key_that_wins_is_the_one_checked() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let clients = hookline_aws::AwsClients::load().await;
    let test_key = format!("hookline-test-key-{}", uuid::Uuid::new_v4().simple());
    let live_key = format!("hookline-live-key-{}", uuid::Uuid::new_v4().simple());
    let put = |name: String, value: &str| {
        let clients = clients.clone();
        let value = secrecy::SecretString::from(value.to_owned());
        async move {
            hookline_aws::provision::put_secret(&clients, &name, &value)
                .await
                .expect("secret stored")
        }
    };
    put(test_key.clone(), "sk_test_fakeKeyFromSecretsManager").await;
    put(live_key.clone(), "sk_live_fakeKeyFromSecretsManager").await;

    let mut env = fixture.env();
    env.extend([
        ("APP_ENV".to_owned(), "development".to_owned()),
        (
            "STRIPE_SECRET_KEY".to_owned(),
            "sk_live_fakePlainValueLoses".to_owned(),
        ),
        ("STRIPE_SECRET_KEY_ID".to_owned(), test_key),
    ]);
    let worker = start_worker_env(&env);
    assert!(
        eventually(Duration::from_secs(20), || ready(&worker)).await,
        "the worker starts on the test key that wins"
    );
    drop(worker);
    let mut ingress_env = env.clone();
    ingress_env.extend([
        ("STRIPE_WEBHOOK_SECRET".to_owned(), SECRET.to_owned()),
        ("BIND_ADDR".to_owned(), format!("127.0.0.1:{}", free_port())),
    ]);
    let mut ingress = std::process::Command::new(bin("hookline-ingress"))
        .env_clear()
        .envs(ingress_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ingress starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ingress.try_wait().expect("try_wait").is_none(),
        "the ingress runs"
    );
    let _ = ingress.kill();
    let _ = ingress.wait();
    let (code, out, _) = run_hookline(&env, &[], &["config", "check"]).await;
    assert!(out.contains("sk_test_"), "{out}");
    assert!(!out.contains("fakePlainValueLoses") && !out.contains("fakeKeyFromSecretsManager"));
    assert!(
        !out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("API key")),
        "{out} ({code})"
    );

    // The winning key is live in development: refused, exit 1.
    let mut env = fixture.env();
    env.extend([
        ("APP_ENV".to_owned(), "development".to_owned()),
        (
            "STRIPE_SECRET_KEY".to_owned(),
            "sk_test_fakePlainValueLoses".to_owned(),
        ),
        ("STRIPE_SECRET_KEY_ID".to_owned(), live_key),
    ]);
    let out = std::process::Command::new(bin("hookline-worker"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("live keys are refused outside production"),
        "{err}"
    );
    assert!(!err.contains("fakeKeyFromSecretsManager"));
}

/// A settings value that fails validation exits 1 with a clear message,
/// from the environment or a flag; a usage error exits 2.
#[test]
fn invalid_settings_exit_1_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().display().to_string();
    let run = |binary: &str, env: &[(&str, &str)], args: &[&str]| {
        let out = std::process::Command::new(bin(binary))
            .env_clear()
            .env("DATA_DIR", &data)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for binary in ["hookline-ingress", "hookline-worker"] {
        let (code, err) = run(binary, &[("APP_ENV", "staging")], &[]);
        assert_eq!(code, Some(1), "{binary} APP_ENV=staging: {err}");
        assert!(err.contains("staging") && err.contains("app-env"), "{err}");
        let (code, err) = run(binary, &[("MAX_RECEIVES", "0")], &[]);
        assert_eq!(code, Some(1), "{binary} MAX_RECEIVES=0: {err}");
        let (code, err) = run(binary, &[("VISIBILITY_TIMEOUT_SECS", "soon")], &[]);
        assert_eq!(code, Some(1), "{binary}: {err}");
        let (code, err) = run(binary, &[], &["--max-receives", "0"]);
        assert_eq!(code, Some(1), "{binary} flag: {err}");
        let (code, err) = run(binary, &[], &["--no-such-flag"]);
        assert_eq!(code, Some(2), "{binary} unknown flag: {err}");
    }
    let (code, err) = run("hookline-worker", &[("WORKER_CONCURRENCY", "many")], &[]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run("hookline", &[("APP_ENV", "staging")], &["dlq", "stats"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run(
        "hookline",
        &[],
        &["dlq", "replay", "--older-than", "a while"],
    );
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = run("hookline", &[], &["dlq", "frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run("hookline", &[], &["events", "show"]);
    assert_eq!(code, Some(2), "missing argument: {err}");
}
