//! Webhook secrets from Secrets Manager (moto): loaded at start, re-read
//! every SECRET_REFRESH_SECS, the last good value kept while reads fail.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
async fn readyz(base: &str) -> (u16, String) {
    match reqwest::get(format!("{base}/readyz")).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_load_refresh_and_survive_a_failing_refresh() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let clients = hookline_aws::AwsClients::load().await;
    let name = format!("hookline-test-{}", uuid::Uuid::new_v4().simple());
    let old = "whsec_test_fromSecretsManagerOld";
    let new = "whsec_test_fromSecretsManagerNew";
    // Mid-roll: both secrets, as JSON.
    let arn = hookline_aws::provision::put_secret(
        &clients,
        &name,
        &secret(&format!(r#"{{"secrets": ["{old}", "{new}"]}}"#)),
    )
    .await
    .expect("secret created");
    assert!(arn.contains(&name));

    // Secrets Manager is reached through a switch the test turns off.
    let endpoint = aws_endpoint();
    let switch = Switch::start(endpoint.trim_start_matches("http://").to_owned())
        .await
        .expect("switch");
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut child = Command::new(bin("hookline-ingress"))
        .env_clear()
        .envs(fixture.env())
        .env(
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            format!("http://127.0.0.1:{}", switch.port),
        )
        .env("STRIPE_WEBHOOK_SECRET_ID", &arn)
        .env("SECRET_REFRESH_SECS", "1")
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(&format!("ingress-secrets-{port}")))
        .spawn()
        .expect("ingress starts");
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            readyz(&base).await.0 == 200
        })
        .await
    );

    // Both secrets of the roll verify; a third does not.
    assert_eq!(post_signed_with(&base, old, "evt_test_sm_old").await, 200);
    assert_eq!(post_signed_with(&base, new, "evt_test_sm_new").await, 200);
    assert_eq!(
        post_signed_with(&base, "whsec_test_notConfigured", "evt_test_sm_bad").await,
        400
    );

    // Secrets Manager becomes unreachable: the last good value keeps serving,
    // and /readyz says the refresh is failing.
    switch.set(false);
    assert!(
        eventually(Duration::from_secs(30), || async {
            let (status, text) = readyz(&base).await;
            status == 200 && text.contains("refresh failing")
        })
        .await,
        "readyz reports the failing refresh"
    );
    assert_eq!(
        post_signed_with(&base, new, "evt_test_sm_during_outage").await,
        200
    );

    // The roll ends: only the new secret; once reachable again it is picked up.
    hookline_aws::provision::put_secret(&clients, &name, &secret(new))
        .await
        .expect("secret updated");
    switch.set(true);
    assert!(
        eventually(Duration::from_secs(30), || async {
            post_signed_with(&base, old, "evt_test_sm_probe").await == 400
        })
        .await,
        "the old secret stops verifying after the refresh"
    );
    assert_eq!(readyz(&base).await, (200, "ready".to_owned()));
    assert_eq!(post_signed_with(&base, new, "evt_test_sm_after").await, 200);

    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(
        repo_root().join(format!("target/test-logs/ingress-secrets-{port}.log")),
    )
    .unwrap_or_default();
    assert!(logs.contains("keeping the last good value"), "{logs}");
    assert!(
        !logs.contains("fromSecretsManager"),
        "a secret reached the logs"
    );

    // Every 200 above is exactly one queued message (probes signed with the
    // old secret were accepted until the refresh landed).
    let got = receive_n(
        fixture.backend.queue.as_ref(),
        50,
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .await;
    let ids: Vec<String> = got
        .iter()
        .map(|d| d.attributes["event_id"].clone())
        .collect();
    for once in [
        "evt_test_sm_after",
        "evt_test_sm_during_outage",
        "evt_test_sm_new",
        "evt_test_sm_old",
    ] {
        assert_eq!(
            ids.iter().filter(|i| *i == once).count(),
            1,
            "{once} in {ids:?}"
        );
    }
    assert!(ids.iter().all(|i| i != "evt_test_sm_bad"));
}
