//! A first deploy's webhook secret: the ingress runs on the stack's
//! placeholder, picks up the real secret without a restart, and its
//! `/readyz` never echoes AWS error text.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::emf::get;
use crate::helpers::*;

struct Ingress {
    _child: KillOnDrop,
    base: String,
    log: String,
    _dir: tempfile::TempDir,
}

fn start_ingress(env: &[(String, String)]) -> Ingress {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let log = format!("ingress-deploy-{port}");
    let child = Command::new(bin("hookline-ingress"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", dir.path())
        .env("SECRET_REFRESH_SECS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("ingress starts");
    Ingress {
        _child: KillOnDrop(child),
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    }
}

fn read_log(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("target/test-logs/{name}.log")))
        .unwrap_or_default()
}

/// The stack's first deploy: the secret holds a generated placeholder. The
/// ingress serves (`/healthz` 200), is not ready (`/readyz` 503), answers
/// webhooks 400 (Stripe retries), warns clearly; once the real secret is put
/// in Secrets Manager, webhooks get 200 within a refresh, no restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_secret_then_the_real_one_without_a_restart() {
    crate::skip_without_aws!();
    let clients = hookline_aws::AwsClients::load().await;
    let name = format!("hookline-placeholder-{}", uuid::Uuid::new_v4().simple());
    let arn = hookline_aws::provision::put_secret(
        &clients,
        &name,
        &secret("Gx7placeholderNotASigningSecret"),
    )
    .await
    .expect("secret created");
    let mut env = aws_env_vars();
    env.push(("STRIPE_WEBHOOK_SECRET_ID".to_owned(), arn));
    let ingress = start_ingress(&env);
    let base = ingress.base.clone();
    assert!(
        eventually(Duration::from_secs(20), || async {
            get(&base, "/healthz").await.0 == 200
        })
        .await,
        "the process serves on a placeholder"
    );
    let (status, text) = get(&base, "/readyz").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("not a whsec_ value"), "{text}");
    let real = "whsec_test_putAfterTheFirstDeploy";
    assert_eq!(
        post_signed_with(&base, real, "evt_test_before_secret").await,
        400
    );
    assert!(read_log(&ingress.log).contains("The webhook secret is a placeholder"));

    hookline_aws::provision::put_secret(&clients, &name, &secret(real))
        .await
        .expect("secret replaced");
    assert!(
        eventually(Duration::from_secs(10), || async {
            post_signed_with(&base, real, "evt_test_after_secret").await == 200
        })
        .await,
        "the real secret is picked up by a refresh"
    );
    assert_eq!(get(&base, "/readyz").await, (200, "ready".to_owned()));
    assert!(
        !read_log(&ingress.log).contains("putAfterTheFirstDeploy"),
        "no secret in the log"
    );
}

/// Secrets Manager refuses the read (AccessDenied, with the role's ARN in
/// its message): `/readyz` says so in words of its own; the AWS text goes to
/// the log only.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_never_echoes_aws_error_text() {
    crate::skip_without_aws!();
    let refusal = serde_json::json!({
        "__type": "AccessDeniedException",
        "message": "User: arn:aws:sts::123456789012:assumed-role/hookline-ingress/task-1 is not authorized to perform: secretsmanager:GetSecretValue on resource: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/stripe/webhook"
    })
    .to_string();
    let app = axum::Router::new().fallback(move || {
        let refusal = refusal.clone();
        async move {
            (
                axum::http::StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.1")],
                refusal,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut env = aws_env_vars();
    env.extend([
        (
            "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(),
            format!("http://{addr}"),
        ),
        (
            "STRIPE_WEBHOOK_SECRET_ID".to_owned(),
            "prod/stripe/webhook".to_owned(),
        ),
    ]);
    let ingress = start_ingress(&env);
    let base = ingress.base.clone();
    assert!(
        eventually(Duration::from_secs(20), || async {
            get(&base, "/healthz").await.0 == 200
        })
        .await
    );
    let (status, text) = get(&base, "/readyz").await;
    assert_eq!(status, 503);
    assert!(text.contains("refused"), "{text}");
    for leak in ["arn:", "123456789012", "assumed-role", "AccessDenied"] {
        assert!(!text.contains(leak), "{leak} in /readyz: {text}");
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            read_log(&ingress.log).contains("AccessDeniedException")
        })
        .await,
        "the detail is in the log"
    );
}
