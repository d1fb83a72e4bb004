//! A TCP forwarder that can be switched off: the tests' and the soak's way
//! to make a service (DynamoDB, Secrets Manager on moto) unreachable and
//! reachable again. Off, new connections are closed at once and open ones
//! are cut.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The forwarder; `port` on loopback forwards to the target while on.
#[derive(Debug)]
pub struct Switch {
    pub port: u16,
    on: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Switch {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> std::io::Result<Switch> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let on = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let (on2, open2) = (Arc::clone(&on), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !on2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open2
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(task.abort_handle());
            }
        });
        Ok(Switch { port, on, open })
    }

    /// Reachable or not; switching off cuts the open connections too.
    pub fn set(&self, reachable: bool) {
        self.on.store(reachable, Ordering::SeqCst);
        if !reachable {
            for t in self
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
            {
                t.abort();
            }
        }
    }
}
