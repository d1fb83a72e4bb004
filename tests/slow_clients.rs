//! Clients that are slow or idle: half-sent requests closed, the body
//! memory capped across requests, slow uploads that cannot starve Stripe's
//! requests, keep-alive as long as the load balancer allows.

use std::time::Duration;

use crate::helpers::*;

/// 200 connections that send half a request line and headers, then
/// nothing: a valid event still gets its 200, and every one of them is
/// closed within the header-read timeout.
#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_are_closed_and_valid_events_still_pass() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&["--header-read-timeout-secs", "1"]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .expect("write");
        slow.push(s);
    }
    let body = event_with("payout.created", "evt_test_slowloris", now());
    let (status, _) = app.post_signed(&body).await;
    assert_eq!(status, 200, "a valid event gets its 200 meanwhile");
    assert_eq!(app.queued().await.len(), 1, "and it is queued");

    // Each slow connection is closed by the server: a read ends (EOF, or
    // the 408 hyper may write first, then EOF) within the timeout + slack.
    let started = std::time::Instant::now();
    let closed = slow.into_iter().map(|mut s| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut buf))
            .await
            .is_ok()
    });
    let results = futures_join_all(closed).await;
    assert!(
        results.iter().all(|closed| *closed),
        "every half-sent request was closed"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or(false));
    }
    out
}

/// The memory held for bodies being read is capped, and taken as bytes
/// arrive: when the bodies being read hold it all, a request is answered
/// 503 at once (Stripe retries it) instead of waiting behind them; a small
/// event that fits is served at once; nothing unaccepted is queued.
#[tokio::test(flavor = "multi_thread")]
async fn body_memory_is_capped_across_requests() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&[
        "--max-body-memory-bytes",
        "300000",
        "--request-timeout-secs",
        "5",
    ])
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    // One stalled upload that has sent 250 kB of its 250,001 holds most of
    // the budget.
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 250001\r\n\r\n",
        )
        .await
        .expect("write");
    stalled
        .write_all(&vec![b' '; 250_000])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A small valid event fits beside it and is served at once.
    let started = std::time::Instant::now();
    let body = event_with("payout.created", "evt_test_budget", now());
    let (status, _) = app.post_signed(&body).await;
    assert_eq!(status, 200);
    // A 100 kB body does not fit: 503 at once, not a wait.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
    let (status, answer) = app.post(big.clone(), Some("t=1,v1=00")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("busy"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The stalled upload gone, the room is free again.
    drop(stalled);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.post(big.clone(), Some("t=1,v1=00")).await.0 == 400
        })
        .await,
        "read (and refused for its signature) once the budget is free"
    );
    assert_eq!(
        app.queued().await.len(),
        1,
        "only the valid event is queued"
    );
}

/// 300 uploads that each declare 250 kB (75 MB, more than the default
/// 64 MiB budget) and trickle it: they hold only what they sent, so valid
/// webhooks are still answered 200 within a second.
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_cannot_starve_valid_webhooks() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&["--request-timeout-secs", "30"]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(
            b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 250000\r\n\r\n{\"pad\":\"",
        )
        .await
        .expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &mut slow {
        s.write_all(b"xxxx").await.expect("trickle");
    }
    for i in 0..5 {
        let started = std::time::Instant::now();
        let body = event_with("payout.created", &format!("evt_test_trickle_{i}"), now());
        let (status, answer) = app.post_signed(&body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered in {:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.queued().await.len(), 5, "every 200 is queued");
    drop(slow);
}

/// The idle timeout of the stack's ALB, read from the template.
fn alb_idle_timeout_secs() -> u64 {
    let template =
        std::fs::read_to_string(repo_root().join("infra/hookline.yaml")).expect("template");
    let mut lines = template.lines();
    lines
        .find(|l| l.contains("idle_timeout.timeout_seconds"))
        .expect("the ALB sets its idle timeout");
    let value = lines.next().expect("its value");
    value
        .trim()
        .trim_start_matches("Value:")
        .trim()
        .trim_matches('"')
        .parse()
        .expect("seconds")
}

/// One signed webhook on a raw keep-alive connection; the status code.
async fn post_on(stream: &mut tokio::net::TcpStream, id: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = event_with("payout.created", id, now());
    let request = format!(
        "POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nStripe-Signature: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        sign(&body),
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    // Read the head, then the body its Content-Length names.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return 0,
        };
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text[9..12].parse().unwrap_or(0);
            }
        }
    }
}

/// A keep-alive connection left idle for the ALB's idle timeout less a
/// second still serves the next webhook: the ingress's keep-alive outlives
/// the balancer's, so the balancer never sends on a connection the ingress
/// is closing (a 502 Stripe would see). The header-read timeout (5 s)
/// does not apply between requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_idle_as_long_as_the_alb_allows_still_serves() {
    let alb_idle = alb_idle_timeout_secs();
    assert!(
        alb_idle > 5,
        "the test shows something only beyond the header timeout"
    );
    let app = spawn_app_with(&[]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(post_on(&mut conn, "evt_test_keepalive_1").await, 200);
    tokio::time::sleep(Duration::from_secs(alb_idle - 1)).await;
    assert_eq!(
        post_on(&mut conn, "evt_test_keepalive_2").await,
        200,
        "the idle keep-alive connection still serves"
    );
    assert_eq!(app.queued().await.len(), 2);
}

/// Past KEEP_ALIVE_TIMEOUT_SECS an idle connection is closed by the
/// ingress; a request's headers still get only HEADER_READ_TIMEOUT_SECS.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[
        "--keep-alive-timeout-secs",
        "3",
        "--header-read-timeout-secs",
        "1",
    ])
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(post_on(&mut conn, "evt_test_idle_1").await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        post_on(&mut conn, "evt_test_idle_2").await,
        200,
        "idle 2 s < 3 s"
    );
    let idle_from = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let eof = tokio::time::timeout(Duration::from_secs(6), conn.read(&mut buf)).await;
    assert!(matches!(eof, Ok(Ok(0))), "closed by the ingress: {eof:?}");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2500) && idle < Duration::from_millis(4500),
        "after the keep-alive timeout: {idle:?}"
    );
    // Half a request's headers on a used connection: closed after 1 s.
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(post_on(&mut conn, "evt_test_idle_3").await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.write_all(b"POST /api/stripe-webhook HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed by the header-read timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.queued().await.len(), 3);
}
