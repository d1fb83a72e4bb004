//! The edges under hostile input and slow peers. A forged thin event
//! cannot send the Stripe API key to another host; a destination that
//! hangs, answers huge or keeps failing holds up nothing else; a delivery
//! is signed when it is sent. Every case checks that no accepted event
//! went missing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookline_core::records::Outcome;
use hookline_testkit::stripe_stub::published;
use hookline_testkit::StripeStub;
use serde_json::Value;

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(a_forged_thin_event_cannot_send_the_key_to_another_host(5),);

/// A loopback listener that counts the connections it is offered and
/// closes each at once: where a stolen key would have gone.
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Trap {
    async fn start() -> Trap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Trap { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A thin `v2.core.account.updated` event naming `account`, whose
/// `related_object.url` says `url`.
fn thin_with_url(id: &str, account: &str, url: &str) -> String {
    let mut v: Value = serde_json::from_str(include_str!(
        "../testdata/stripe-events/v2.core.account.updated.json"
    ))
    .expect("thin fixture");
    v["id"] = id.into();
    v["related_object"]["id"] = account.into();
    v["related_object"]["url"] = url.into();
    v.to_string()
}

async fn a_forged_thin_event_cannot_send_the_key_to_another_host(bed: Bed) {
    let stub = StripeStub::start().await.expect("stub");
    let mut account: Value = serde_json::from_str(published::V2_ACCOUNT).expect("json");
    account["id"] = "acct_test_edgeA".into();
    stub.put_v2_account(account);
    let trap = Trap::start().await;
    let p = trap.port;
    let forged = [
        format!("@127.0.0.1:{p}/x"),
        format!(":{p}/x"),
        format!("//127.0.0.1:{p}/x"),
        format!("/v2/core/accounts/acct_test_edgeA@127.0.0.1:{p}"),
    ];
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for (i, url) in forged.iter().enumerate() {
        let id = format!("evt_test_edgeForged{i}");
        events.push(thin_with_url(&id, "acct_test_edgeA", url));
        ids.push(id);
    }
    // Beside them, an honest one still goes through.
    let honest = "evt_test_edgeHonest".to_owned();
    events.push(thin_with_url(
        &honest,
        "acct_test_edgeA",
        "/v2/core/accounts/acct_test_edgeA",
    ));
    bed.enqueue(&events).await;
    let _worker = bed.worker(&[
        ("STRIPE_SECRET_KEY", "sk_test_hooklineStubOnly"),
        ("STRIPE_API_BASE", stub.base.as_str()),
        ("STRIPE_API_RPS", "200"),
        ("ENABLED_EVENTS", "v2.core.account.updated"),
    ]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            bed.dlq_len().await == ids.len() as u64
                && bed.all_completed(std::slice::from_ref(&honest)).await
        })
        .await,
        "each forged event dead-lettered, the honest one applied; DLQ: {}",
        bed.dlq_report().await
    );
    assert_eq!(
        bed.ledger(&honest).await.expect("ledger").outcome,
        Some(Outcome::Applied)
    );
    for letter in bed.dead_letters().await {
        let reason = letter.attributes.get("error").cloned().unwrap_or_default();
        assert!(reason.contains("not fetched"), "a clear reason: {reason}");
    }
    assert_eq!(trap.connections(), 0, "nothing connected anywhere else");
    assert!(
        stub.requests().iter().all(|r| !r.path.contains('@')),
        "the stand-in saw only plain paths"
    );
    assert!(eventually(Duration::from_secs(10), || bed.queue_is_empty()).await);
}

on_both_backends!(
    a_hung_destination_holds_up_no_other_event(5),
    a_huge_error_answer_costs_no_memory(5),
    every_delivery_is_signed_when_it_is_sent(5),
);

const PEER_SECRET: &str = "whsec_test_edgePeer";

/// How the peer answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Takes the request and never answers.
    Hang,
    /// 200 at once.
    Take,
    /// 500 with a body of this many bytes, streamed.
    Huge(u64),
    /// 200 after this long.
    Slow(Duration),
    /// 400, with a personal detail in the answer.
    Refuse,
}

/// One delivery as the peer saw it.
#[derive(Clone, Debug)]
struct Seen {
    event_id: String,
    /// `t=` of its `Stripe-Signature`, and the clock when it arrived.
    signed_at: i64,
    arrived_ms: i64,
    verified: bool,
    answered: bool,
}

/// A destination on loopback that hangs, answers huge or answers slowly,
/// and records what it saw.
struct Peer {
    url: String,
    mode: Arc<std::sync::Mutex<Mode>>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Peer {
    async fn start(mode: Mode) -> Peer {
        use axum::body::{Body, Bytes};
        use axum::http::HeaderMap;
        let mode = Arc::new(std::sync::Mutex::new(mode));
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let (m, s) = (Arc::clone(&mode), Arc::clone(&seen));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (mode, seen) = (Arc::clone(&m), Arc::clone(&s));
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let signature = header("stripe-signature");
                    let signed_at = hookline_signature::parse_header(&signature)
                        .map(|h| h.timestamp)
                        .unwrap_or(0);
                    let verified = signature
                        == hookline_signature::header_for(PEER_SECRET.as_bytes(), signed_at, &body);
                    let now_mode = *mode.lock().expect("mode");
                    let index = {
                        let mut all = seen.lock().expect("seen");
                        all.push(Seen {
                            event_id: header("hookline-event-id"),
                            signed_at,
                            arrived_ms: hookline_core::clock::unix_millis(),
                            verified,
                            answered: false,
                        });
                        all.len() - 1
                    };
                    let answer = match now_mode {
                        Mode::Hang => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        Mode::Take => axum::http::Response::new(Body::empty()),
                        Mode::Slow(d) => {
                            tokio::time::sleep(d).await;
                            axum::http::Response::new(Body::empty())
                        }
                        Mode::Refuse => {
                            let mut r = axum::http::Response::new(Body::from(
                                "customer jane.doe@example.com is closed",
                            ));
                            *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
                            r
                        }
                        Mode::Huge(n) => {
                            let mut r = axum::http::Response::new(Body::from_stream(Zeros(n)));
                            *r.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }
                    };
                    seen.lock().expect("seen")[index].answered = true;
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Peer {
            url: format!("http://127.0.0.1:{port}/hook"),
            mode,
            seen,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// The ids it answered 200 (in modes Take and Slow).
    fn taken(&self) -> std::collections::BTreeSet<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.answered)
            .map(|s| s.event_id)
            .collect()
    }

    /// A routes document: `types` to this peer as destination `peer`.
    fn routes(&self, types: &str, extra: &str) -> String {
        format!(
            "{}\n[[destination]]\nname = \"tables\"\nkind = \"projections\"\nevents = [\"*\"]\n",
            self.routes_alone(types, extra)
        )
    }

    /// `types` to this peer alone: no projection writes their ledger items.
    fn routes_alone(&self, types: &str, extra: &str) -> String {
        format!(
            "[[destination]]\nname = \"peer\"\nkind = \"http\"\nevents = [{types}]\nurl = \"{}\"\nallow_http = true\nsigning_secret = \"{PEER_SECRET}\"\n{extra}\n",
            self.url
        )
    }
}

/// A body of `n` zero bytes, made as it is read.
struct Zeros(u64);

impl futures_core::Stream for Zeros {
    type Item = Result<bytes::Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        const CHUNK: u64 = 64 * 1024;
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.0.min(CHUNK);
        self.0 -= n;
        std::task::Poll::Ready(Some(Ok(bytes::Bytes::from(vec![
            b'x';
            usize::try_from(n)
                .unwrap_or(0)
        ]))))
    }
}

fn payouts(prefix: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("evt_test_{prefix}{i}")).collect();
    let events = ids
        .iter()
        .map(|id| event_with("payout.created", id, now()))
        .collect();
    (ids, events)
}

async fn a_hung_destination_holds_up_no_other_event(bed: Bed) {
    let peer = Peer::start(Mode::Hang).await;
    let doc = peer.routes(
        "\"payout.created\"",
        "timeout_secs = 10\nmax_concurrency = 4",
    );
    let w = bed.worker(&[
        ("ROUTES", doc.as_str()),
        ("ENABLED_EVENTS", "payout.created,payment_intent.succeeded"),
        ("WORKER_CONCURRENCY", "4"),
    ]);
    assert!(eventually(Duration::from_secs(20), || ready(&w)).await);
    let (held, events) = payouts("hung", 8);
    bed.enqueue(&events).await;
    assert!(
        eventually(Duration::from_secs(10), || async { peer.seen().len() >= 4 }).await,
        "the hung destination has its deliveries"
    );
    // Projection-only events, while every worker slot would be held by a
    // delivery that never ends.
    let others: Vec<String> = (0..4).map(|i| format!("evt_test_hungOther{i}")).collect();
    let bodies: Vec<String> = others
        .iter()
        .map(|id| event_with("payment_intent.succeeded", id, now()))
        .collect();
    let sent = std::time::Instant::now();
    bed.enqueue(&bodies).await;
    assert!(
        eventually(Duration::from_secs(10), || bed.all_completed(&others)).await,
        "the projection-only events are applied"
    );
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "applied within 2 s of being queued, took {took:?}"
    );
    // Enough timeouts open its breaker; it answers again, and every held
    // event reaches it.
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(
                &w,
                "hookline_destination_breaker_open{destination=\"peer\"}",
            )
            .await
                == 1
        })
        .await,
        "the breaker opens"
    );
    assert_eq!(bed.dlq_len().await, 0, "nothing dead-lettered");
    peer.set(Mode::Take);
    assert!(
        eventually(Duration::from_secs(120), || async {
            held.iter().all(|id| peer.taken().contains(id))
        })
        .await,
        "every held event reaches the destination once it answers: {:?}",
        peer.taken()
    );
    assert!(peer.seen().iter().all(|s| s.verified));
    assert!(
        eventually(Duration::from_secs(20), || async {
            let mut all = true;
            for id in &held {
                all &= bed
                    .ledger(id)
                    .await
                    .is_some_and(|r| r.destinations.get("peer").is_some_and(|d| d.delivered));
            }
            all
        })
        .await,
        "the ledger records each delivery"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(
                &w,
                "hookline_destination_breaker_open{destination=\"peer\"}",
            )
            .await
                == 0
        })
        .await,
        "the breaker closed"
    );
    assert_eq!(bed.dlq_len().await, 0, "nothing dead-lettered");
    let log = std::fs::read_to_string(log_path(&format!(
        "worker-{}",
        w.metrics_url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/metrics")
    )))
    .unwrap_or_default();
    assert!(log.contains("Destination breaker opened"), "logged opening");
    assert!(log.contains("Destination breaker closed"), "logged closing");
}

/// The resident set of a process, in bytes (Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The highest resident set a process reached (Linux's `VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn a_huge_error_answer_costs_no_memory(bed: Bed) {
    let two_gb = 2 * 1024 * 1024 * 1024;
    let peer = Peer::start(Mode::Huge(two_gb)).await;
    let doc = peer.routes("\"payout.created\"", "timeout_secs = 30");
    let w = bed.worker(&[
        ("ROUTES", doc.as_str()),
        ("ENABLED_EVENTS", "payout.created"),
    ]);
    assert!(eventually(Duration::from_secs(20), || ready(&w)).await);
    let before = rss(w.child.id());
    let (ids, events) = payouts("huge", 1);
    bed.enqueue(&events).await;
    assert!(
        eventually(Duration::from_secs(30), || async { peer.seen().len() >= 2 }).await,
        "the event is tried again after the 500"
    );
    let peak = peak_rss(w.child.id());
    assert!(
        peak < before + 50 * 1024 * 1024,
        "peak RSS {} MB, {} MB before",
        peak >> 20,
        before >> 20
    );
    let rec = bed.ledger(&ids[0]).await.expect("ledger");
    let state = &rec.destinations["peer"];
    assert!(!state.delivered);
    let error = state.last_error.clone().unwrap_or_default();
    assert!(error.contains("HTTP 500: xxxx"), "{error}");
    assert!(error.len() < 400, "an excerpt: {} bytes", error.len());
    // It takes it now: nothing lost, nothing dead-lettered.
    peer.set(Mode::Take);
    assert!(
        eventually(Duration::from_secs(60), || async {
            peer.taken().contains(&ids[0])
        })
        .await
    );
    assert_eq!(bed.dlq_len().await, 0);
}

async fn every_delivery_is_signed_when_it_is_sent(bed: Bed) {
    let peer = Peer::start(Mode::Slow(Duration::from_secs(2))).await;
    let doc = peer.routes("\"payout.created\"", "max_concurrency = 1");
    let _w = bed.worker(&[
        ("ROUTES", doc.as_str()),
        ("ENABLED_EVENTS", "payout.created"),
        ("WORKER_CONCURRENCY", "16"),
    ]);
    let (ids, events) = payouts("fresh", 8);
    bed.enqueue(&events).await;
    assert!(
        eventually(Duration::from_secs(120), || async {
            ids.iter().all(|id| peer.taken().contains(id))
        })
        .await,
        "every event delivered: {:?}",
        peer.taken()
    );
    let seen = peer.seen();
    assert!(seen.len() >= 8, "{seen:?}");
    for s in &seen {
        assert!(s.verified, "{} verifies", s.event_id);
        let age_ms = s.arrived_ms - s.signed_at * 1000;
        assert!(
            age_ms < 2000,
            "{}: t= was {age_ms} ms old when it arrived",
            s.event_id
        );
    }
    assert_eq!(bed.dlq_len().await, 0);
}

on_both_backends!(the_consoles_summary_never_ends_a_replay_early(5),);

async fn the_consoles_summary_never_ends_a_replay_early(bed: Bed) {
    const N: usize = 1000;
    let letters: Vec<hookline_core::message::OutboundMessage> = (0..N)
        .map(|i| {
            let body = event_with("payout.updated", &format!("evt_test_sum{i}"), now() - 600);
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            let mut m = hookline_core::message::OutboundMessage::for_event(
                &env,
                bytes::Bytes::from(body),
                now() - 600,
            );
            m.attributes.insert("error".to_owned(), "x".to_owned());
            m
        })
        .collect();
    for chunk in letters.chunks(10) {
        assert!(bed.dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    assert_eq!(bed.dlq_len().await, N as u64);
    let port = free_port();
    let mut cmd = std::process::Command::new(bin("hookline"));
    cmd.env_clear()
        .envs(bed.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("CONSOLE_ADDR", format!("127.0.0.1:{port}"))
        .arg("console")
        .stdout(std::process::Stdio::null())
        .stderr(log_file(&format!("console-summary-{port}")));
    let console = KillOnDrop(cmd.spawn().expect("console starts"));
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(15), || async {
            reqwest::get(format!("{base}/static/console.css"))
                .await
                .is_ok()
        })
        .await
    );
    // The page's summary, every 300 ms, the whole time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let poller = tokio::spawn({
        let (stop, polls, base) = (Arc::clone(&stop), Arc::clone(&polls), base.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(r) = reqwest::get(format!("{base}/api/summary")).await {
                    let _ = r.bytes().await;
                    polls.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    // The replay starts while a summary holds dead letters hidden.
    assert!(
        eventually(Duration::from_secs(30), || async {
            bed.dlq.counts().await.is_ok_and(|c| c.in_flight > 0)
        })
        .await,
        "a summary is reading the DLQ"
    );
    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "replay", "--json"]).await;
    stop.store(true, Ordering::SeqCst);
    let _ = poller.await;
    drop(console);
    assert!(
        polls.load(Ordering::SeqCst) >= 1,
        "the summary answered meanwhile"
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "stats", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out)["dead_lettered"],
        0,
        "the replay moved every dead letter: {out}"
    );
    let q = bed.queue.counts().await.expect("counts");
    assert_eq!(
        q.waiting + q.in_flight,
        N as u64,
        "every dead letter is on the queue, none lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn erase_without_the_dlq_refuses_and_removes_nothing() {
    crate::skip_without_aws!();
    let bed = Bed::aws(5).await;
    let account = "acct_test_eraseNoDlq";
    let mut v: Value =
        serde_json::from_str(&event_with("payout.updated", "evt_test_eraseNoDlq", now()))
            .expect("json");
    v["account"] = account.into();
    let body = v.to_string();
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let mut letter =
        hookline_core::message::OutboundMessage::for_event(&env, bytes::Bytes::from(body), now());
    letter
        .attributes
        .insert("error".to_owned(), "refused".to_owned());
    assert!(bed.dlq.send_batch(&[letter]).await[0].is_ok());
    let without: Vec<(String, String)> = bed
        .env
        .iter()
        .filter(|(k, _)| k != "DLQ_URL")
        .cloned()
        .collect();
    for args in [
        &["erase", "--account", account, "--yes"][..],
        &["erase", "--account", account][..],
    ] {
        let (code, out, err) = run_hookline(&without, &[], args).await;
        assert_eq!(code, 1, "{args:?} refuses: {out}{err}");
        assert!(err.contains("DLQ_URL"), "names what it cannot reach: {err}");
    }
    assert_eq!(bed.dlq_len().await, 1, "the dead letter is still there");
    // With the DLQ it is found and removed.
    let (code, out, err) =
        run_hookline(&bed.env, &[], &["erase", "--account", account, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(bed.dlq_len().await, 0);
}

/// The six default types besides the deauthorization.
fn six() -> impl Iterator<Item = &'static str> {
    hookline_core::settings::DEFAULT_ENABLED_EVENTS
        .into_iter()
        .filter(|t| *t != "account.application.deauthorized")
}

/// Write units per applied event as DynamoDB bills them, indexes included,
/// for the six default types with and without a connected account: 2.00,
/// as before erasure existed. Only an account that left carries an index's
/// key, and pays one unit for it.
#[tokio::test(flavor = "multi_thread")]
async fn an_applied_event_costs_two_billed_write_units() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let clients = hookline_aws::AwsClients::load().await;
    let tables = hookline_aws::Tables {
        events: fixture.events_table.clone(),
        objects: fixture.objects_table.clone(),
        provider: fixture.provider_table.clone(),
    };
    let dynamo = hookline_aws::DynamoStore::new(clients.dynamodb.clone(), tables);
    let processor = hookline_worker::process::Processor {
        enabled: hookline_core::settings::EventFilter::All,
        ..hookline_worker::process::Processor::with_defaults(Arc::new(dynamo.clone()))
    };
    let mut n = 0;
    let mut apply = |body: String| {
        n += 1;
        let message_id = format!("m{n}");
        let processor = &processor;
        async move {
            let delivery = hookline_core::ports::Delivery {
                message_id: message_id.clone(),
                receipt: message_id,
                body: bytes::Bytes::from(body),
                attributes: Default::default(),
                receive_count: 1,
                sent_at_ms: 0,
                group_id: None,
            };
            let (decision, _) = processor.process(&delivery, now(), 0.5).await;
            assert!(
                matches!(
                    decision,
                    hookline_worker::decide::Decision::Done(
                        hookline_core::records::Completion::Completed(Outcome::Applied)
                    )
                ),
                "{decision:?}"
            );
        }
    };
    let units = |before: hookline_aws::WriteUnits, after: hookline_aws::WriteUnits| {
        (
            after.units - before.units,
            after.index_units - before.index_units,
        )
    };
    for connect in [false, true] {
        let before = dynamo.write_units();
        for (i, t) in six().enumerate() {
            for k in 0..5 {
                let mut v: Value = serde_json::from_str(&event_with(
                    t,
                    &format!("evt_test_cost{connect}{i}x{k}"),
                    now(),
                ))
                .expect("json");
                let object = v["data"]["object"]["id"].as_str().unwrap_or_default();
                v["data"]["object"]["id"] = format!("{object}cost{connect}{k}").into();
                if connect {
                    v["account"] = format!("acct_test_costConnect{k}").into();
                }
                apply(v.to_string()).await;
            }
        }
        let (total, indexes) = units(before, dynamo.write_units());
        let per_event = total as f64 / (six().count() * 5) as f64;
        println!("connect={connect}: {per_event:.2} billed write units per applied event ({indexes} index writes)");
        assert_eq!(
            indexes, 0,
            "no index write on the healthy path (connect: {connect})"
        );
        assert_eq!(per_event, 2.0, "connect: {connect}");
    }
    // Seen from outside: no item of the ledger or the objects carries the
    // key of an index of its table, so DynamoDB bills no index write for it.
    for table in [&fixture.events_table, &fixture.objects_table] {
        let described = clients
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe");
        let keys: Vec<String> = described
            .table()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .flat_map(|i| i.key_schema().iter().map(|k| k.attribute_name().to_owned()))
            .collect();
        let items = clients
            .dynamodb
            .scan()
            .table_name(table)
            .send()
            .await
            .expect("scan");
        let indexed = items
            .items()
            .iter()
            .filter(|item| keys.iter().any(|k| item.contains_key(k)))
            .count();
        assert_eq!(
            indexed,
            0,
            "{table}: {indexed} of {} items carry an index key ({keys:?})",
            items.items().len()
        );
    }
    let before = dynamo.write_units();
    apply(event_with(
        "account.application.deauthorized",
        "evt_test_costDeauth",
        now(),
    ))
    .await;
    let (_, indexes) = units(before, dynamo.write_units());
    assert_eq!(
        indexes, 1,
        "an account that left is in the deauthorization index"
    );
}

on_both_backends!(a_refused_event_is_erased_after_the_dlq_was_purged(5),);

/// A Connect `payout.created` of `account`.
fn connect_payout(id: &str, account: &str) -> String {
    let mut v: Value =
        serde_json::from_str(&event_with("payout.created", id, now())).expect("json");
    v["account"] = account.into();
    v.to_string()
}

/// A worker routing `payout.created` to a peer that refuses it: each event
/// ends dead-lettered, with the peer's answer in the ledger.
async fn refused_and_dead_lettered(bed: &Bed, events: &[String], n: u64) -> (Peer, WorkerProc) {
    let peer = Peer::start(Mode::Refuse).await;
    let doc = peer.routes_alone("\"payout.created\"", "");
    let w = bed.worker(&[
        ("ROUTES", doc.as_str()),
        ("ENABLED_EVENTS", "payout.created"),
    ]);
    bed.enqueue(events).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            bed.dlq_len().await == n
        })
        .await,
        "dead-lettered: {}",
        bed.dlq_report().await
    );
    (peer, w)
}

async fn a_refused_event_is_erased_after_the_dlq_was_purged(bed: Bed) {
    let account = "acct_test_erasePurged";
    let id = "evt_test_erasePurged";
    let (_peer, w) = refused_and_dead_lettered(&bed, &[connect_payout(id, account)], 1).await;
    drop(w);
    let rec = bed.ledger(id).await.expect("ledger item");
    assert!(
        rec.destinations["peer"]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("jane.doe@example.com")),
        "the destination's answer is in the ledger"
    );
    // The DLQ purged (or past its 14 days): the ledger item is found on its own.
    let receipts: Vec<String> = bed
        .dead_letters()
        .await
        .into_iter()
        .map(|d| d.receipt)
        .collect();
    assert!(
        bed.dlq
            .delete_batch(&receipts)
            .await
            .iter()
            .all(Result::is_ok),
        "purge"
    );
    assert_eq!(bed.dlq_len().await, 0);
    let (code, out, err) =
        run_hookline(&bed.env, &[], &["erase", "--account", account, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        bed.ledger(id).await.is_none(),
        "the ledger item is erased: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erase_cut_short_by_dynamodb_faults_is_finished_by_a_rerun() {
    crate::skip_without_aws!();
    let bed = Bed::aws(5).await;
    let account = "acct_test_eraseCut";
    let ids: Vec<String> = (0..3).map(|i| format!("evt_test_eraseCut{i}")).collect();
    let events: Vec<String> = ids.iter().map(|id| connect_payout(id, account)).collect();
    let (_peer, w) = refused_and_dead_lettered(&bed, &events, 3).await;
    drop(w);
    // Other accounts' dead letters, so the DLQ scan takes a while.
    let others: Vec<hookline_core::message::OutboundMessage> = (0..300)
        .map(|i| {
            let body = connect_payout(&format!("evt_test_eraseOther{i}"), "acct_test_other");
            let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
            hookline_core::message::OutboundMessage::for_event(
                &env,
                bytes::Bytes::from(body),
                now(),
            )
        })
        .collect();
    for chunk in others.chunks(10) {
        assert!(bed.dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let total = bed.dlq_len().await;
    assert_eq!(total, 303);
    // DynamoDB goes away once the DLQ scan is under way (the ledger was
    // read): the erase stops before it deletes the ledger items.
    let mut first = tokio::process::Command::new(bin("hookline"))
        .env_clear()
        .envs(bed.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["erase", "--account", account, "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("erase starts");
    assert!(
        eventually(Duration::from_secs(60), || async {
            bed.dlq
                .counts()
                .await
                .is_ok_and(|c| c.in_flight > 0 || c.waiting + c.in_flight != total)
        })
        .await,
        "the DLQ scan began"
    );
    bed.set_dynamodb_reachable(false);
    let out = tokio::time::timeout(Duration::from_secs(120), first.wait())
        .await
        .expect("the first erase ends")
        .expect("status");
    bed.set_dynamodb_reachable(true);
    assert!(!out.success(), "cut short: it fails");
    let mut left = 0;
    for id in &ids {
        left += usize::from(bed.ledger(id).await.is_some());
    }
    assert!(left > 0, "the ledger items outlived the first run");
    // The rerun finds every part on its own and finishes.
    let (code, out, err) =
        run_hookline(&bed.env, &[], &["erase", "--account", account, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    for id in &ids {
        assert!(bed.ledger(id).await.is_none(), "{id} erased: {out}");
    }
    assert_eq!(
        bed.dlq_len().await,
        300,
        "the others' dead letters are all there"
    );
    let (code, out, _) = run_hookline(&bed.env, &[], &["erase", "--account", account]).await;
    assert_eq!(code, 0);
    assert!(out.contains("DLQ read"), "{out}");
}

/// A deauthorization of `account` as the DLQ holds it, in `group`.
fn dead_deauthorization(account: &str, group: &str) -> hookline_core::message::OutboundMessage {
    let mut v: Value = serde_json::from_str(&event_with(
        "account.application.deauthorized",
        &format!("evt_test_deauth_{account}"),
        now() - 3600,
    ))
    .expect("json");
    v["account"] = account.into();
    let body = v.to_string();
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let mut m =
        hookline_core::message::OutboundMessage::for_event(&env, bytes::Bytes::from(body), now());
    m.group_id = group.to_owned();
    m.attributes.insert("error".to_owned(), "x".to_owned());
    m
}

/// On a FIFO DLQ the messages of one group come in order, and a group
/// whose head is hidden gives nothing more: 11 other accounts'
/// deauthorizations in the platform's group before B's must not hide B's.
#[tokio::test(flavor = "multi_thread")]
async fn erase_finds_a_dead_letter_behind_eleven_others_in_a_fifo_group() {
    crate::skip_without_aws!();
    let fixture = aws_fixture_with(5, true).await;
    let dlq = fixture.dlq();
    let mut letters: Vec<_> = (0..11)
        .map(|i| dead_deauthorization(&format!("acct_test_fifoOther{i}"), "platform"))
        .collect();
    letters.push(dead_deauthorization("acct_test_fifoB", "platform"));
    for chunk in letters.chunks(10) {
        assert!(dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    let env = fixture.env();
    let (code, out, err) =
        run_hookline(&env, &[], &["erase", "--account", "acct_test_fifoB"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DLQ messages        1"),
        "the dry run counts B's: {out}"
    );
    let (code, out, err) = run_hookline(
        &env,
        &[],
        &["erase", "--account", "acct_test_fifoB", "--yes"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DLQ messages        1"), "{out}");
    assert!(out.contains("DLQ read           12"), "{out}");
    // The others are all there, in their order, visible, with their age.
    let mut seen = Vec::new();
    loop {
        let got = dlq
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        for d in &got {
            assert!(
                now() * 1000 - d.sent_at_ms >= 0 && d.sent_at_ms > 0,
                "an age from its first arrival"
            );
            seen.push(d.attributes["account"].clone());
        }
        let receipts: Vec<String> = got.into_iter().map(|d| d.receipt).collect();
        assert!(dlq.delete_batch(&receipts).await.iter().all(Result::is_ok));
    }
    let expected: Vec<String> = (0..11).map(|i| format!("acct_test_fifoOther{i}")).collect();
    assert_eq!(seen, expected, "every other dead letter, once, in order");
}

/// A standard DLQ larger than a hold's worth of receives: each message is
/// read once, B's is found, none is left hidden.
#[tokio::test(flavor = "multi_thread")]
async fn erase_reads_each_of_two_thousand_dead_letters_once() {
    crate::skip_without_aws!();
    let fixture = aws_fixture(5).await;
    let dlq = fixture.dlq();
    const N: usize = 2000;
    let letters: Vec<_> = (0..N)
        .map(|i| {
            let account = if i == N / 2 {
                "acct_test_bigB".to_owned()
            } else {
                format!("acct_test_big{i}")
            };
            dead_deauthorization(&account, "g")
        })
        .collect();
    for chunk in letters.chunks(10) {
        assert!(dlq.send_batch(chunk).await.iter().all(Result::is_ok));
    }
    // How many dead letters are hidden while it reads, sampled.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (dlq, sampling) = (Arc::clone(&dlq), Arc::clone(&sampling));
        async move {
            let mut hidden = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                if let Ok(c) = dlq.counts().await {
                    hidden.push(c.in_flight);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            hidden
        }
    });
    let started = std::time::Instant::now();
    let (code, out, err) = run_hookline(
        &fixture.env(),
        &[],
        &["erase", "--account", "acct_test_bigB", "--yes"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    println!("erase over a DLQ of {N}: {:?}\n{out}", started.elapsed());
    sampling.store(false, Ordering::SeqCst);
    let mut hidden = sampler.await.expect("samples");
    hidden.sort_unstable();
    // The scan holds its own copies from when it reaches them until it ends
    // (so that none is read twice): the last part of the run counts up to
    // N of them, however fast it goes. While it reads the originals, which
    // take three calls a batch against one for a copy, what it does not
    // take goes back at once: the lowest quarter of the samples shows that
    // part. Holding every message read (the defect) would hide a quarter of
    // the DLQ by then.
    let quartile = hidden.get(hidden.len() / 4).copied().unwrap_or(0);
    assert!(
        quartile <= N as u64 / 20,
        "what the scan does not take is released at once: a lower quartile of {quartile} messages hidden ({} samples)",
        hidden.len()
    );
    assert!(out.contains("DLQ messages        1"), "{out}");
    assert!(out.contains(&format!("DLQ read         {N}")), "{out}");
    let c = dlq.counts().await.expect("counts");
    assert_eq!(
        (c.waiting, c.in_flight),
        (N as u64 - 1, 0),
        "the rest visible, none lost"
    );
}
