//! A backend for a test, reached only through the ports, plus how a spawned
//! binary is pointed at it and how its store is made unreachable.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use hookline_core::ports::{Delivery, Queue, Store};
use hookline_core::records::{EventRecord, EventStatus};

use crate::helpers::*;

/// One backend, reached only through the ports, plus how a worker process
/// is pointed at it and how its store is made unreachable.
pub struct Bed {
    pub queue: Arc<dyn Queue>,
    pub dlq: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    pub env: Vec<(String, String)>,
    outage: Outage,
}

enum Outage {
    /// Another process holds the SQLite write lock.
    Embedded(tempfile::TempDir),
    /// DynamoDB is reached through a switch the test turns off.
    Aws {
        switch: Switch,
        _fixture: Box<AwsFixture>,
    },
}

impl Bed {
    /// The queue and the worker agree on `max_receives`, as in a deployment
    /// where `MAX_RECEIVES` matches the queue's redrive policy.
    pub async fn embedded(max_receives: u32) -> Bed {
        let dir = tempfile::tempdir().expect("tmp");
        let options = hookline_embedded::Options {
            max_receives,
            ..Default::default()
        };
        let e = hookline_embedded::open(dir.path(), options).expect("open db");
        Bed {
            queue: e.queue,
            dlq: e.dlq,
            store: e.store,
            env: vec![
                ("DATA_DIR".to_owned(), dir.path().display().to_string()),
                ("MAX_RECEIVES".to_owned(), max_receives.to_string()),
            ],
            outage: Outage::Embedded(dir),
        }
    }

    pub async fn aws(max_receives: u32) -> Bed {
        let fixture = aws_fixture(max_receives).await;
        let endpoint = aws_endpoint();
        let target = endpoint.trim_start_matches("http://").to_owned();
        let switch = Switch::start(target).await.expect("switch");
        let mut env = fixture.env();
        env.push(("MAX_RECEIVES".to_owned(), max_receives.to_string()));
        env.push((
            "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
            format!("http://127.0.0.1:{}", switch.port),
        ));
        Bed {
            queue: Arc::clone(&fixture.backend.queue),
            dlq: fixture.dlq(),
            store: Arc::clone(&fixture.backend.store),
            env,
            outage: Outage::Aws {
                switch,
                _fixture: Box::new(fixture),
            },
        }
    }

    /// One of the settings a worker on this bed gets (empty when unset).
    pub fn setting(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub fn worker(&self, extra: &[(&str, &str)]) -> WorkerProc {
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        start_worker_env(&env)
    }

    pub async fn enqueue(&self, bodies: &[String]) {
        let messages: Vec<_> = bodies
            .iter()
            .map(|b| {
                let env = hookline_core::envelope::Envelope::parse(b.as_bytes()).expect("an event");
                hookline_core::message::OutboundMessage::for_event(
                    &env,
                    bytes::Bytes::from(b.clone()),
                    now(),
                )
            })
            .collect();
        for chunk in messages.chunks(10) {
            let results = self.queue.send_batch(chunk).await;
            assert!(
                results.iter().all(Result::is_ok),
                "enqueue failed: {results:?}"
            );
        }
    }

    pub async fn ledger(&self, id: &str) -> Option<EventRecord> {
        self.store.event(id).await.expect("store reads")
    }

    pub async fn item(&self, id: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.store.item(id).await.expect("store reads").map(|i| i.0)
    }

    pub async fn completed(&self, ids: &[String]) -> usize {
        let mut n = 0;
        for id in ids {
            if self
                .ledger(id)
                .await
                .is_some_and(|r| r.status == EventStatus::Completed)
            {
                n += 1;
            }
        }
        n
    }

    pub async fn all_completed(&self, ids: &[String]) -> bool {
        self.completed(ids).await == ids.len()
    }

    pub async fn queue_is_empty(&self) -> bool {
        let c = self.queue.counts().await.expect("counts");
        c.waiting == 0 && c.in_flight == 0
    }

    /// Messages in the DLQ, waiting or in flight.
    pub async fn dlq_len(&self) -> u64 {
        let c = self.dlq.counts().await.expect("dlq counts");
        c.waiting + c.in_flight
    }

    /// Every DLQ message (received with a long visibility, so each once).
    pub async fn dead_letters(&self) -> Vec<Delivery> {
        let mut all = Vec::new();
        loop {
            let got = self
                .dlq
                .receive(10, Duration::from_secs(1), Duration::from_secs(120))
                .await
                .expect("dlq receive");
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }

    /// What is in the DLQ, for a failed assertion's message: each
    /// message's event id, receive count and reason (`error` attribute; a
    /// message the queue's own redrive moved has none).
    pub async fn dlq_report(&self) -> String {
        let all = self.dead_letters().await;
        let lines: Vec<String> = all
            .iter()
            .map(|d| {
                format!(
                    "{} (received {}, error {:?})",
                    d.attributes.get("event_id").map_or("?", String::as_str),
                    d.receive_count,
                    d.attributes.get("error"),
                )
            })
            .collect();
        format!("{} in the DLQ: [{}]", all.len(), lines.join("; "))
    }

    /// On AWS, makes DynamoDB (what a worker or a command started with
    /// this bed's settings reaches) unreachable or reachable again.
    pub fn set_dynamodb_reachable(&self, reachable: bool) {
        if let Outage::Aws { switch, .. } = &self.outage {
            switch.set(reachable);
        }
    }

    /// Enqueues `bodies` and makes the store unreachable for `d` around
    /// them, then reachable again. On AWS only DynamoDB is cut, so the
    /// events arrive while it is down; on the embedded backend the queue
    /// shares the file, so they are enqueued just before the lock.
    pub async fn store_outage_with(&self, bodies: &[String], d: Duration) {
        match &self.outage {
            Outage::Embedded(dir) => {
                self.enqueue(bodies).await;
                let lock =
                    hookline_embedded::testing::WriteLock::hold(dir.path(), Duration::from_secs(5))
                        .expect("lock");
                tokio::time::sleep(d).await;
                lock.release().expect("unlock");
            }
            Outage::Aws { switch, .. } => {
                switch.set(false);
                self.enqueue(bodies).await;
                tokio::time::sleep(d).await;
                switch.set(true);
            }
        }
    }
}

#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident($max:expr)),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread")]
                async fn embedded() {
                    super::$case($crate::bed::Bed::embedded($max).await).await;
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn aws() {
                    $crate::skip_without_aws!();
                    super::$case($crate::bed::Bed::aws($max).await).await;
                }
            }
        )*
    };
}
