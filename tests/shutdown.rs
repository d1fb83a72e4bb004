//! Bounded shutdown: SIGTERM while the store hangs or is locked, the
//! ingress's drain bounded by the request timeout, ctrl-c on `make run`.

use std::time::Duration;

use crate::bed::Bed;
use crate::helpers::*;

/// A TCP server that accepts connections and never answers.
async fn black_hole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    port
}

/// DynamoDB accepts connections and never answers: SIGTERM still exits 0
/// within the grace plus one second, and a restart applies everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_never_answers_does_not_hold_up_sigterm() {
    crate::skip_without_aws!();
    let bed = Bed::aws(5).await;
    let (ids, bodies): (Vec<String>, Vec<String>) = (0..4)
        .map(|i| {
            let id = format!("evt_test_hang_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_hang_{i}").into();
            (id, v.to_string())
        })
        .unzip();
    bed.enqueue(&bodies).await;
    let port = black_hole().await;
    let dynamo = format!("http://127.0.0.1:{port}");
    let mut worker = bed.worker(&[
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.as_str()),
        ("SHUTDOWN_GRACE_SECS", "2"),
        ("VISIBILITY_TIMEOUT_SECS", "3"),
    ]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&worker, "hookline_events_in_flight").await == 4
        })
        .await,
        "the worker is stuck on the store"
    );
    let sent = std::time::Instant::now();
    signal(&worker.child, "TERM");
    let code = wait_exit(&mut worker.child, Duration::from_secs(6));
    let took = sent.elapsed();
    assert_eq!(code, Some(0));
    assert!(
        took <= Duration::from_millis(3000),
        "exited after {took:?}, grace 2 s"
    );

    let _again = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(60), || bed.all_completed(&ids)).await);
}

/// The embedded store blocked by another process's write lock, with a busy
/// timeout far beyond the grace: SIGTERM exits 0 within the grace plus one
/// second; with nothing in flight, within a second.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_embedded_store_does_not_hold_up_sigterm() {
    let bed = Bed::embedded(5).await;
    let dir = bed
        .env
        .iter()
        .find(|(k, _)| k == "DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("data dir");
    let (ids, bodies): (Vec<String>, Vec<String>) = (0..3)
        .map(|i| {
            let id = format!("evt_test_lock_{i}");
            let mut v: serde_json::Value =
                serde_json::from_str(&event_with("payout.created", &id, 1_700_000_000))
                    .expect("json");
            v["data"]["object"]["id"] = format!("po_lock_{i}").into();
            (id, v.to_string())
        })
        .unzip();

    // Idle: exits within a second.
    let mut idle = bed.worker(&[("RECEIVE_WAIT_SECS", "20")]);
    assert!(eventually(Duration::from_secs(10), || ready(&idle)).await);
    let sent = std::time::Instant::now();
    signal(&idle.child, "TERM");
    assert_eq!(wait_exit(&mut idle.child, Duration::from_secs(5)), Some(0));
    assert!(
        sent.elapsed() <= Duration::from_millis(1000),
        "idle exit took {:?}",
        sent.elapsed()
    );

    let mut worker = bed.worker(&[
        ("SHUTDOWN_GRACE_SECS", "2"),
        ("VISIBILITY_TIMEOUT_SECS", "3"),
        ("EMBEDDED_BUSY_TIMEOUT_MS", "120000"),
    ]);
    assert!(eventually(Duration::from_secs(10), || ready(&worker)).await);
    // Enqueue, then hold the write lock before the worker can commit.
    bed.enqueue(&bodies).await;
    let lock = hookline_embedded::testing::WriteLock::hold(
        std::path::Path::new(&dir),
        Duration::from_secs(5),
    )
    .expect("lock");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = std::time::Instant::now();
    signal(&worker.child, "TERM");
    let code = wait_exit(&mut worker.child, Duration::from_secs(8));
    let took = sent.elapsed();
    lock.release().expect("unlock");
    assert_eq!(code, Some(0));
    assert!(
        took <= Duration::from_millis(3000),
        "exited after {took:?}, grace 2 s"
    );

    let _again = bed.worker(&[]);
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);
}

#[test]
fn ctrl_c_on_make_run_leaves_no_process_behind() {
    let dir = tempfile::tempdir().expect("tmp");
    let (bind, metrics) = (free_port(), free_port());
    let mut make = std::process::Command::new("make");
    make.current_dir(repo_root())
        .args([
            "-s",
            "run",
            &format!("DATA_DIR={}", dir.path().display()),
            &format!("BIND_ADDR=127.0.0.1:{bind}"),
            &format!("METRICS_ADDR=127.0.0.1:{metrics}"),
            // The test run already built the binaries (and holds cargo's lock).
            "CARGO=true",
            &format!("BIN_DIR={}", bin_dir().display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log_file("make-run"));
    // Its own process group, as a terminal's foreground job.
    std::os::unix::process::CommandExt::process_group(&mut make, 0);
    let mut make = make.spawn().expect("make runs");
    let pgid = make.id().to_string();
    let listening = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !(listening(bind) && listening(metrics)) {
        assert!(
            std::time::Instant::now() < deadline,
            "make run did not start"
        );
        assert!(
            make.try_wait().expect("try_wait").is_none(),
            "make run exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-c: SIGINT to the whole foreground process group.
    let status = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = wait_exit(&mut make, Duration::from_secs(15));
    let group_alive = || {
        std::process::Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while group_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!group_alive(), "a process of `make run` is still running");
    assert!(
        !listening(bind) && !listening(metrics),
        "the ports are free again"
    );
    std::net::TcpListener::bind(("127.0.0.1", bind)).expect("port free for the next run");
}

/// SIGTERM with a request stalled mid-body and an idle keep-alive
/// connection open: the ingress exits 0 within the request timeout plus a
/// second, and the event it acknowledged before is queued.
#[tokio::test(flavor = "multi_thread")]
async fn ingress_shutdown_is_bounded_by_the_request_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut child = std::process::Command::new(bin("hookline-ingress"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("REQUEST_TIMEOUT_SECS", "2")
        .stderr(log_file(&format!("ingress-shutdown-{port}")))
        .spawn()
        .expect("ingress starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(10), || async {
            client.get(format!("{base}/healthz")).send().await.is_ok()
        })
        .await
    );
    let body = event_with("payout.created", "evt_test_before_term", now());
    let resp = client
        .post(format!("{base}/api/stripe-webhook"))
        .header("stripe-signature", sign(&body))
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stalled
        .write_all(b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    signal(&child, "TERM");
    let code = wait_exit(&mut child, Duration::from_secs(8));
    assert_eq!(code, Some(0));
    assert!(
        sent.elapsed() <= Duration::from_millis(3200),
        "took {:?}",
        sent.elapsed()
    );
    drop(stalled);
    let e =
        hookline_embedded::open(dir.path(), hookline_embedded::Options::default()).expect("open");
    let queued = e.queue.snapshot().await.expect("snapshot");
    assert_eq!(queued.len(), 1, "the acknowledged event is queued");
}
