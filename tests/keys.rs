//! `hookline keys status` on moto: a `put-secret-value` reaches a running
//! ingress and worker within one refresh, and the command says so; a
//! rolled webhook secret verifies old and new signatures during the
//! overlap, then only the new one; a refused key and a lost service fail it.

use std::process::{Command, Stdio};
use std::time::Duration;

use hookline_testkit::stripe_stub::StripeStub;
use serde_json::Value;

use crate::helpers::*;

const OLD: &str = "whsec_test_keysStatusOld";
const NEW: &str = "whsec_test_keysStatusNew";
const KEY_OLD: &str = "sk_test_keysStatusOldKey";
const KEY_NEW: &str = "sk_test_keysStatusNewKey";

/// `keys status --json` against the services; exit code and the status.
async fn status(env: &[(String, String)], services: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["keys", "status", "--json"];
    for s in services {
        args.extend(["--service", s]);
    }
    let (code, out, err) = run_hookline(env, &[], &args).await;
    for secret in [OLD, NEW, KEY_OLD, KEY_NEW] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "a secret was printed: {out}{err}"
        );
    }
    (code, json(&out), err)
}

fn version(status: &Value, secret: &str) -> String {
    status["secrets"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["secret"] == secret))
        .and_then(|s| s["version"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Each service's report of `secret`: (version, state).
fn reported(status: &Value, secret: &str) -> Vec<(String, String)> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["loaded"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["secret"] == secret)
        .map(|l| {
            (
                l["version"].as_str().unwrap_or_default().to_owned(),
                l["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_status_follows_a_put_secret_value_and_a_webhook_roll() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let clients = hookline_aws::AwsClients::load().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let webhook_name = format!("hookline-test-webhook-{suffix}");
    let key_name = format!("hookline-test-key-{suffix}");
    let webhook_arn = hookline_aws::provision::put_secret(&clients, &webhook_name, &secret(OLD))
        .await
        .expect("webhook secret");
    let key_arn = hookline_aws::provision::put_secret(&clients, &key_name, &secret(KEY_OLD))
        .await
        .expect("key secret");
    let stub = StripeStub::start().await.expect("stub");

    let mut env = fixture.env();
    env.extend([
        ("STRIPE_WEBHOOK_SECRET_ID".to_owned(), webhook_arn.clone()),
        ("STRIPE_SECRET_KEY_ID".to_owned(), key_arn.clone()),
        ("STRIPE_API_BASE".to_owned(), stub.base.clone()),
        ("SECRET_REFRESH_SECS".to_owned(), "1".to_owned()),
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut ingress = Command::new(bin("hookline-ingress"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(&format!("ingress-keys-{port}")))
        .spawn()
        .expect("ingress starts");
    let ingress_url = format!("http://127.0.0.1:{port}");
    let worker = start_worker_env(&env);
    let worker_url = worker.metrics_url.trim_end_matches("/metrics").to_owned();
    assert!(
        eventually(Duration::from_secs(30), || async {
            ready(&worker).await
                && reqwest::get(format!("{ingress_url}/readyz"))
                    .await
                    .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "ingress and worker up"
    );
    let services = [ingress_url.as_str(), worker_url.as_str()];

    // Both services run the versions Secrets Manager holds.
    let (code, before, err) = status(&env, &services).await;
    assert_eq!(code, 0, "{before}\n{err}");
    assert_eq!(before["stripe"], "accepted", "{before}");
    let webhook_v1 = version(&before, "webhook");
    let key_v1 = version(&before, "api_key");
    assert!(!webhook_v1.is_empty() && !key_v1.is_empty(), "{before}");
    assert_eq!(
        reported(&before, "webhook"),
        [(webhook_v1.clone(), "current".to_owned())]
    );
    assert_eq!(
        reported(&before, "api_key"),
        [(key_v1.clone(), "current".to_owned())]
    );
    let modes: Vec<&Value> = before["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["loaded"].as_array().into_iter().flatten())
        .map(|l| &l["mode"])
        .collect();
    assert!(modes.contains(&&Value::from("test")), "{before}");

    // The roll: Stripe's dashboard gives a new secret and keeps the old one
    // for the overlap, so both go in; the API key is rolled too.
    let put_at = std::time::Instant::now();
    hookline_aws::provision::put_secret(&clients, &webhook_name, &secret(&format!("{NEW},{OLD}")))
        .await
        .expect("put-secret-value webhook");
    hookline_aws::provision::put_secret(&clients, &key_name, &secret(KEY_NEW))
        .await
        .expect("put-secret-value key");
    let deadline = put_at + Duration::from_secs(10);
    let rolled = loop {
        let (code, s, _) = status(&env, &services).await;
        let done = code == 0
            && version(&s, "webhook") != webhook_v1
            && version(&s, "api_key") != key_v1
            && reported(&s, "webhook")
                .iter()
                .all(|(_, state)| state == "current")
            && reported(&s, "api_key")
                .iter()
                .all(|(_, state)| state == "current");
        if done {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "keys status shows the new versions everywhere within 10 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let picked_up = put_at.elapsed();
    let webhook_entry = rolled["secrets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["secret"] == "webhook").cloned())
        .unwrap_or_default();
    assert_eq!(webhook_entry["values"], 2, "{rolled}");
    eprintln!("keys status: the new versions were loaded everywhere {picked_up:?} after the put (SECRET_REFRESH_SECS=1)");

    // During the overlap both signatures verify.
    assert_eq!(
        post_signed_with(&ingress_url, OLD, "evt_test_keys_old").await,
        200
    );
    assert_eq!(
        post_signed_with(&ingress_url, NEW, "evt_test_keys_new").await,
        200
    );

    // The overlap ends: only the new secret, and the old one stops verifying.
    hookline_aws::provision::put_secret(&clients, &webhook_name, &secret(NEW))
        .await
        .expect("put-secret-value webhook, overlap over");
    assert!(
        eventually(Duration::from_secs(10), || async {
            post_signed_with(&ingress_url, OLD, "evt_test_keys_probe").await == 400
        })
        .await,
        "the old secret stops verifying"
    );
    assert_eq!(
        post_signed_with(&ingress_url, NEW, "evt_test_keys_after").await,
        200
    );

    // Stripe refuses a key: keys status says so and exits 1.
    stub.revoke(KEY_NEW);
    let (code, refused, _) = status(&env, &[]).await;
    assert_eq!(code, 1, "{refused}");
    assert_eq!(refused["stripe"], "refused", "{refused}");

    // A lost service fails it too (stopped as ECS stops it: SIGTERM, so
    // what it held goes back to the queue).
    let mut worker = worker;
    signal(&worker.child, "TERM");
    assert_eq!(
        wait_exit(&mut worker.child, Duration::from_secs(30)),
        Some(0)
    );
    let (code, lost, _) = status(&env, &services).await;
    assert_eq!(code, 1, "{lost}");
    let errors: Vec<&Value> = lost["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["error"])
        .collect();
    assert!(errors[0].is_null() && errors[1].is_string(), "{lost}");

    let _ = ingress.kill();
    let _ = ingress.wait();
    let logs =
        std::fs::read_to_string(log_path(&format!("ingress-keys-{port}"))).unwrap_or_default();
    assert!(!logs.contains("keysStatus"), "a secret reached the logs");

    // Nothing accepted went missing: every 200 above is one event in the
    // ledger or still on the queue.
    let mut missing = Vec::new();
    for id in [
        "evt_test_keys_old",
        "evt_test_keys_new",
        "evt_test_keys_after",
    ] {
        if fixture
            .backend
            .store
            .event(id)
            .await
            .expect("ledger")
            .is_none()
        {
            missing.push(id);
        }
    }
    if !missing.is_empty() {
        // Every message on the queue: the probes above are accepted every
        // 20 ms until the ingress reloads the secret, so there may be many.
        let queued: Vec<String> = receive_n(
            fixture.backend.queue.as_ref(),
            1000,
            Duration::from_secs(60),
            Duration::from_secs(8),
        )
        .await
        .iter()
        .map(|d| d.attributes["event_id"].clone())
        .collect();
        for id in missing {
            assert!(
                queued.iter().any(|q| q == id),
                "{id} went missing: {queued:?}"
            );
        }
    }
}
