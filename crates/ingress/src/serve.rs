//! The HTTP/1 server loop, with the limits a public endpoint needs.
//!
//! `axum::serve` gives hyper no timer, so a connection that sends part of
//! its request headers and then nothing stays open for ever, and it accepts
//! connections without bound. Here every connection gets a header-read
//! timeout and a separate, longer keep-alive idle timeout, the number of
//! open connections is capped (the accept loop waits for a free slot), and
//! shutdown drains in-flight requests for a bounded time.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive
//! connection waits for its next request, so it would close idle
//! connections after a few seconds. A load balancer that keeps idle
//! connections longer (the stack's ALB: 30 s) then sends a request on a
//! connection just as it closes, and answers that request 502: Stripe sees
//! a failed delivery. So hyper's timer is off and [`Watch`] keeps both:
//! the header timer starts with the first byte of a request (or the
//! accept), the idle timer when a response is done.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, from its
    /// first byte (or from the accept, for a connection's first request).
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    /// Longer than any load balancer's idle timeout in front of it, so that
    /// the balancer, not the ingress, closes an idle connection.
    pub keep_alive_timeout: Duration,
    /// How long in-flight requests get after shutdown fires.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `shutdown` fires, then lets
/// in-flight requests finish for at most `limits.drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(message = "Accept failed.", %error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(Watch::new());
        let service = {
            let (router, watch) = (router.clone(), Arc::clone(&watch));
            tower::service_fn(move |request| {
                watch.request_started();
                let (served, watch) = (
                    tower::ServiceExt::oneshot(router.clone(), request),
                    Arc::clone(&watch),
                );
                async move {
                    let response = served.await;
                    watch.response_done();
                    response
                }
            })
        };
        let service = TowerToHyperService::new(service);
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(None)
                .keep_alive(true);
            let io = Watched {
                inner: stream,
                watch: Arc::clone(&watch),
            };
            let conn = http.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                () = watch.expired(limits) => Ok(()),
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(message = "Connection ended with an error.", %error);
            }
            drop(permit);
        });
    }
    connections.close();
    if tokio::time::timeout(limits.drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            message = "Shutdown: connections still open after the drain period were closed.",
            open = connections.len()
        );
    }
}

/// Where a connection is between requests, for its two timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers (since the first byte, or the accept).
    Head = 0,
    /// A request is being answered: the request timeout bounds it.
    Answering = 1,
    /// Idle between requests (since the last response was done).
    Idle = 2,
}

/// One connection's phase and when it began, updated by the socket's reads
/// and by the service; read by [`Watch::expired`].
#[derive(Debug)]
struct Watch {
    base: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
}

impl Watch {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Head,
            1 => Phase::Answering,
            _ => Phase::Idle,
        }
    }

    /// Bytes arrived: on an idle connection they start a request's headers.
    fn bytes_read(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    fn request_started(&self) {
        self.enter(Phase::Answering);
    }

    fn response_done(&self) {
        self.enter(Phase::Idle);
    }

    /// The deadline of the current phase, as an offset from `base`.
    fn deadline(&self, limits: ConnectionLimits) -> Option<Duration> {
        let since = Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase() {
            Phase::Head => Some(since + limits.header_read_timeout),
            Phase::Idle => Some(since + limits.keep_alive_timeout),
            Phase::Answering => None,
        }
    }

    /// Resolves when the connection has sat in one phase past its limit.
    /// Sleeps until the current deadline and looks again (the phase may
    /// have moved meanwhile): a few wake-ups per connection, no polling.
    async fn expired(&self, limits: ConnectionLimits) {
        loop {
            let wake = match self.deadline(limits) {
                Some(deadline) => {
                    let now = self.base.elapsed();
                    if now >= deadline {
                        return;
                    }
                    deadline - now
                }
                None => limits.header_read_timeout,
            };
            tokio::time::sleep(wake).await;
        }
    }
}

/// The accepted socket, telling its [`Watch`] when bytes arrive.
struct Watched {
    inner: tokio::net::TcpStream,
    watch: Arc<Watch>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(5),
        keep_alive_timeout: Duration::from_secs(75),
        drain: Duration::from_secs(1),
    };

    #[test]
    fn the_header_timer_runs_from_the_accept_then_from_a_requests_first_byte() {
        let w = Watch::new();
        assert_eq!(w.phase(), Phase::Head);
        assert_eq!(w.deadline(LIMITS), Some(Duration::from_secs(5)));
        w.request_started();
        assert_eq!(
            w.deadline(LIMITS),
            None,
            "the request timeout bounds an answer"
        );
        w.response_done();
        let idle = w.deadline(LIMITS).expect("idle deadline");
        assert!(idle >= Duration::from_secs(75), "{idle:?}");
        w.bytes_read();
        assert_eq!(w.phase(), Phase::Head);
        let head = w.deadline(LIMITS).expect("head deadline");
        assert!(head < Duration::from_secs(6), "{head:?}");
        // More bytes of the same head do not move its deadline.
        w.bytes_read();
        assert_eq!(w.deadline(LIMITS), Some(head));
    }
}
