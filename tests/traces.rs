//! One event, one trace. The ingress and worker binaries export to an OTLP
//! receiver that is not ours: `scripts/otlp_receiver.py` decodes every
//! export with OpenTelemetry's published protobuf definitions (the
//! `opentelemetry-proto` package `make test` installs), and the tests read
//! the spans it decoded.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_core::records::{EventStatus, Outcome};
use serde_json::Value;

use crate::bed::Bed;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    one_webhook_is_one_trace(5),
    a_dead_lettered_then_replayed_event_keeps_its_trace(5),
);

/// The OTLP receiver, killed on drop.
struct Otlp {
    _child: KillOnDrop,
    base: String,
    _dir: tempfile::TempDir,
}

fn python() -> std::path::PathBuf {
    repo_root().join(".venv/bin/python")
}

impl Otlp {
    /// Starts it, or `None` (the skip recorded) where `make test` could not
    /// install OpenTelemetry's protobuf package.
    fn start() -> Option<Otlp> {
        let has_proto = Command::new(python())
            .args([
                "-c",
                "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_proto {
            record_skip("no `opentelemetry-proto` in .venv (make test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let port_file = dir.path().join("port");
        let child = Command::new(python())
            .arg(repo_root().join("scripts/otlp_receiver.py"))
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(log_file("otlp-receiver"))
            .spawn()
            .expect("the receiver starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse::<u16>().expect("a port");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the OTLP receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Otlp {
            _child: KillOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    /// What a binary needs to export here, quickly.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.base.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]
    }

    async fn spans(&self) -> Vec<Value> {
        let v: Value = reqwest::get(format!("{}/spans", self.base))
            .await
            .expect("spans")
            .json()
            .await
            .expect("json");
        v.as_array().cloned().unwrap_or_default()
    }

    async fn exports(&self) -> u64 {
        reqwest::get(format!("{}/exports", self.base))
            .await
            .expect("exports")
            .json()
            .await
            .expect("json")
    }

    /// Every span of the trace whose worker `process` spans for `event_id`
    /// number `n`, once the ingress's root span is in too.
    async fn trace_of(&self, event_id: &str, n: usize) -> Vec<Value> {
        let find = |spans: &[Value]| -> Option<String> {
            let processes: Vec<&Value> = spans
                .iter()
                .filter(|s| s["name"] == "process" && attr(s, "stripe.event_id") == event_id)
                .collect();
            let trace = processes.first()?["trace_id"].as_str()?.to_owned();
            let root = spans
                .iter()
                .any(|s| s["trace_id"] == trace.as_str() && s["kind"] == "SPAN_KIND_SERVER");
            (processes.len() >= n && root).then_some(trace)
        };
        eventually(Duration::from_secs(30), || async {
            find(&self.spans().await).is_some()
        })
        .await;
        let spans = self.spans().await;
        let Some(trace) = find(&spans) else {
            panic!("no trace of {event_id} with {n} deliveries; spans: {spans:#?}");
        };
        // Give a late batch a moment, then take the whole trace.
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.spans()
            .await
            .into_iter()
            .filter(|s| s["trace_id"] == trace.as_str())
            .collect()
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a str {
    span["attributes"][key].as_str().unwrap_or("")
}

/// The one span of `service` named `name`.
fn one<'a>(trace: &'a [Value], service: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = trace
        .iter()
        .filter(|s| s["service"] == service && s["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {service} span {name}: {trace:#?}");
    found[0]
}

/// Every span of `service` named `name`, in start order.
fn all<'a>(trace: &'a [Value], service: &str, name: &str) -> Vec<&'a Value> {
    let mut found: Vec<&Value> = trace
        .iter()
        .filter(|s| s["service"] == service && s["name"] == name)
        .collect();
    found.sort_by_key(|s| s["start_unix_nano"].as_u64());
    found
}

fn id(span: &Value, key: &str) -> String {
    span[key].as_str().unwrap_or("").to_owned()
}

/// No attribute, event or link of any span received holds a secret, a
/// signature or the event's body.
async fn nothing_secret(otlp: &Otlp, body: &str, also: &[&str]) {
    let all = serde_json::to_string(&otlp.spans().await).expect("json");
    let signature = sign(body);
    let v1 = signature
        .split(',')
        .find_map(|p| p.strip_prefix("v1="))
        .expect("a v1 signature")
        .to_owned();
    let mut forbidden = vec![SECRET, "whsec_", v1.as_str(), body];
    forbidden.extend_from_slice(also);
    // A distinctive piece of the body too: its data object as sent.
    let object = serde_json::from_str::<Value>(body).expect("event")["data"]["object"].to_string();
    forbidden.push(&object);
    for f in forbidden {
        assert!(!all.contains(f), "a span holds {f:?}");
    }
}

/// The `hookline-ingress` binary on `bed` with `extra` settings; killed on drop.
struct Ingress {
    _child: KillOnDrop,
    base: String,
}

async fn start_ingress(bed: &Bed, extra: &[(String, String)]) -> Ingress {
    let port = free_port();
    let child = Command::new(bin("hookline-ingress"))
        .env_clear()
        .envs(bed.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(&format!("ingress-traces-{port}")))
        .spawn()
        .expect("ingress starts");
    let ingress = Ingress {
        _child: KillOnDrop(child),
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(20), || async {
            client
                .get(format!("{}/readyz", ingress.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "the ingress became ready"
    );
    ingress
}

async fn post(ingress: &Ingress, body: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/api/stripe-webhook", ingress.base))
        .header("stripe-signature", sign(body))
        .body(body.to_owned())
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn systems(bed: &Bed) -> (&'static str, &'static str) {
    if bed.setting("QUEUE_URL").is_empty() {
        ("hookline_embedded", "sqlite")
    } else {
        ("aws_sqs", "aws.dynamodb")
    }
}

/// The queue is empty once the worker's deletes went through.
async fn queue_drains(bed: &Bed) -> bool {
    eventually(Duration::from_secs(15), || bed.queue_is_empty()).await
}

async fn applied(bed: &Bed, id: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        bed.ledger(id).await.is_some_and(|r| {
            r.status == EventStatus::Completed && r.outcome == Some(Outcome::Applied)
        })
    })
    .await
}

/// The ingress's spans (server span, its steps, the producer span), the
/// worker's (consumer span continuing the producer's, its steps, the store
/// write) share one trace id with these parents; the ledger and `events
/// show` name the trace; no span holds the secret or the body.
async fn one_webhook_is_one_trace(bed: Bed) {
    let Some(otlp) = Otlp::start() else { return };
    let ingress = start_ingress(&bed, &otlp.env()).await;
    let _worker = bed.worker(&refs(&otlp.env()));
    let event = "evt_test_trace_one";
    let body = event_with("payout.updated", event, now());
    assert_eq!(post(&ingress, &body).await, 200);
    assert!(applied(&bed, event).await, "{}", bed.dlq_report().await);
    let trace = otlp.trace_of(event, 1).await;
    let trace_id = id(&trace[0], "trace_id");
    let (queue_system, db_system) = systems(&bed);

    let root = one(&trace, "hookline-ingress", "POST /api/stripe-webhook");
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        id(root, "parent_span_id"),
        "",
        "the ingress starts the trace"
    );
    assert_eq!(attr(root, "stripe.event_id"), event);
    assert_eq!(attr(root, "stripe.event_type"), "payout.updated");
    assert_eq!(attr(root, "hookline.outcome"), "enqueued");
    assert_eq!(attr(root, "http.request.method"), "POST");
    assert_eq!(root["attributes"]["http.response.status_code"], 200);
    for (step, outcome) in [
        ("verify", "verified"),
        ("parse", "parsed"),
        ("admit", "admitted"),
    ] {
        let s = one(&trace, "hookline-ingress", step);
        assert_eq!(id(s, "parent_span_id"), id(root, "span_id"), "{step}");
        assert_eq!(attr(s, "hookline.outcome"), outcome, "{step}");
    }
    let send = one(&trace, "hookline-ingress", "send");
    assert_eq!(send["kind"], "SPAN_KIND_PRODUCER");
    assert_eq!(id(send, "parent_span_id"), id(root, "span_id"));
    assert_eq!(attr(send, "messaging.system"), queue_system);
    assert_eq!(attr(send, "hookline.outcome"), "sent");

    let process = one(&trace, "hookline-worker", "process");
    assert_eq!(process["kind"], "SPAN_KIND_CONSUMER");
    assert_eq!(
        id(process, "parent_span_id"),
        id(send, "span_id"),
        "the worker continues from the producer span"
    );
    assert_eq!(attr(process, "messaging.system"), queue_system);
    assert!(!attr(process, "messaging.message.id").is_empty());
    assert_eq!(process["attributes"]["messaging.message.delivery_count"], 1);
    assert_eq!(attr(process, "stripe.event_id"), event);
    assert_eq!(attr(process, "hookline.outcome"), "applied");
    for step in ["receive", "unwrap", "admit", "handle"] {
        let s = one(&trace, "hookline-worker", step);
        assert_eq!(id(s, "parent_span_id"), id(process, "span_id"), "{step}");
    }
    let write = one(&trace, "hookline-worker", "store.apply");
    assert_eq!(write["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(id(write, "parent_span_id"), id(process, "span_id"));
    assert_eq!(attr(write, "db.system.name"), db_system);
    assert_eq!(attr(write, "hookline.outcome"), "applied");
    // Every span of this event is in this one trace.
    let elsewhere: Vec<Value> = otlp
        .spans()
        .await
        .into_iter()
        .filter(|s| attr(s, "stripe.event_id") == event && s["trace_id"] != trace_id.as_str())
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:#?}");
    assert_eq!(root["trace_id"], process["trace_id"]);

    let rec = bed.ledger(event).await.expect("ledger");
    assert_eq!(rec.trace_id.as_deref(), Some(trace_id.as_str()));
    let (code, out, err) = run_hookline(&bed.env, &[], &["events", "show", event]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("traceId") && l.trim_end().ends_with(&trace_id)),
        "{out}"
    );
    nothing_secret(&otlp, &body, &[]).await;
    assert!(queue_drains(&bed).await, "{}", bed.dlq_report().await);
    assert_eq!(bed.dlq_len().await, 0, "{}", bed.dlq_report().await);
}

/// A destination that refuses the first delivery (410: dead-lettered) and
/// takes the next; it keeps each request's `traceparent`.
struct Destination {
    url: String,
    traceparents: Arc<Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn destination() -> Destination {
    use axum::http::{HeaderMap, StatusCode};
    let traceparents = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&traceparents);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let seen = Arc::clone(&seen);
            async move {
                let mut seen = seen.lock().expect("lock");
                seen.push(
                    headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                );
                if seen.len() == 1 {
                    (StatusCode::GONE, "retired for now")
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Destination {
        url,
        traceparents,
        _server: server,
    }
}

/// Dead-lettered by a destination's refusal, then replayed with `hookline
/// dlq replay`: the DLQ copy carries the trace header, the replayed copy's
/// delivery is in the same trace, a child of the failed delivery; each
/// destination call carried the trace as `traceparent`.
async fn a_dead_lettered_then_replayed_event_keeps_its_trace(bed: Bed) {
    let Some(otlp) = Otlp::start() else { return };
    let dest = destination().await;
    let routes = format!(
        "[[destination]]\nname = \"hook\"\nkind = \"http\"\nevents = [\"*\"]\nurl = \"{}\"\nallow_http = true\nsigning_secret = \"whsec_test_traceDestination\"\n",
        dest.url
    );
    let mut env = otlp.env();
    env.push(("ENABLED_EVENTS".into(), "payment_intent.succeeded".into()));
    let ingress = start_ingress(&bed, &env).await;
    env.push(("ROUTES".into(), routes));
    let _worker = bed.worker(&refs(&env));
    let event = "evt_test_trace_replayed";
    let body = event_with("payment_intent.succeeded", event, now());
    assert_eq!(post(&ingress, &body).await, 200);
    assert!(
        eventually(Duration::from_secs(30), || async {
            bed.dlq_len().await == 1
        })
        .await,
        "{}",
        bed.dlq_report().await
    );
    // The DLQ copy names the trace (read with a short visibility, so the
    // replay finds it again).
    let dead = bed
        .dlq
        .receive(10, Duration::from_secs(2), Duration::from_secs(1))
        .await
        .expect("dlq receive");
    assert_eq!(dead.len(), 1);
    let header = dead[0]
        .attributes
        .get("AWSTraceHeader")
        .expect("the DLQ copy carries the trace header");
    let header = hookline_telemetry::TraceHeader::parse(header).expect("an X-Ray header");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (code, out, err) = run_hookline(&bed.env, &[], &["dlq", "replay", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(applied(&bed, event).await, "{}", bed.dlq_report().await);

    let trace = otlp.trace_of(event, 2).await;
    let trace_id = id(&trace[0], "trace_id");
    assert_eq!(
        header.trace_id_hex(),
        trace_id,
        "the DLQ copy keeps the trace id"
    );
    let processes = all(&trace, "hookline-worker", "process");
    assert_eq!(processes.len(), 2, "{trace:#?}");
    let (failed, replayed) = (processes[0], processes[1]);
    assert_eq!(attr(failed, "hookline.outcome"), "dead_lettered");
    assert_eq!(failed["status"], "STATUS_CODE_ERROR");
    assert_eq!(attr(failed, "error.type"), "permanent");
    assert_eq!(attr(replayed, "hookline.outcome"), "applied");
    assert_eq!(
        id(replayed, "parent_span_id"),
        id(failed, "span_id"),
        "the replayed delivery continues from the one that dead-lettered it"
    );
    assert_eq!(
        header
            .parent
            .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        Some(id(failed, "span_id"))
    );
    let calls = all(&trace, "hookline-worker", "deliver hook");
    assert_eq!(calls.len(), 2, "{trace:#?}");
    assert_eq!(calls[0]["status"], "STATUS_CODE_ERROR");
    assert_eq!(attr(calls[0], "error.type"), "permanent");
    assert_eq!(attr(calls[1], "hookline.outcome"), "delivered");
    let seen = dest.traceparents.lock().expect("lock").clone();
    let expected: Vec<String> = calls
        .iter()
        .map(|c| format!("00-{trace_id}-{}-01", id(c, "span_id")))
        .collect();
    assert_eq!(seen, expected, "each call carried its span as traceparent");
    let rec = bed.ledger(event).await.expect("ledger");
    assert_eq!(rec.trace_id.as_deref(), Some(trace_id.as_str()));
    nothing_secret(&otlp, &body, &["whsec_test_traceDestination"]).await;
    assert!(queue_drains(&bed).await, "{}", bed.dlq_report().await);
    assert_eq!(bed.dlq_len().await, 0, "{}", bed.dlq_report().await);
}

/// With `OTEL_TRACES_SAMPLER=traceidratio` and ratio 0, events are
/// processed and nothing reaches the receiver.
#[tokio::test(flavor = "multi_thread")]
async fn with_sampling_ratio_zero_nothing_is_exported() {
    let Some(otlp) = Otlp::start() else { return };
    let bed = Bed::embedded(5).await;
    let mut env = otlp.env();
    env.push(("OTEL_TRACES_SAMPLER".into(), "traceidratio".into()));
    env.push(("OTEL_TRACES_SAMPLER_ARG".into(), "0".into()));
    let ingress = start_ingress(&bed, &env).await;
    let _worker = bed.worker(&refs(&env));
    let ids: Vec<String> = (0..5)
        .map(|i| format!("evt_test_trace_unsampled{i}"))
        .collect();
    for event in &ids {
        let body = event_with("payout.updated", event, now());
        assert_eq!(post(&ingress, &body).await, 200);
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            bed.all_completed(&ids).await
        })
        .await,
        "{}",
        bed.dlq_report().await
    );
    // Several export intervals (100 ms each) later:
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(otlp.exports().await, 0, "{:#?}", otlp.spans().await);
    assert!(queue_drains(&bed).await, "{}", bed.dlq_report().await);
    assert_eq!(bed.dlq_len().await, 0);
}

/// On SQS the trace travels in the `AWSTraceHeader` system attribute, in
/// X-Ray's format, read here with boto3 (not Hookline's adapter), and not
/// as a message attribute; the worker continues exactly that trace.
#[tokio::test(flavor = "multi_thread")]
async fn sqs_carries_the_trace_as_awstraceheader() {
    crate::skip_without_aws!();
    let Some(otlp) = Otlp::start() else { return };
    let bed = Bed::aws(5).await;
    let ingress = start_ingress(&bed, &otlp.env()).await;
    let event = "evt_test_trace_xray";
    let body = event_with("payout.updated", event, now());
    assert_eq!(post(&ingress, &body).await, 200);
    let script = r#"
import json, os, sys, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
r = sqs.receive_message(QueueUrl=sys.argv[1], MessageSystemAttributeNames=["AWSTraceHeader"],
                        MessageAttributeNames=["All"], WaitTimeSeconds=5, VisibilityTimeout=1)
print(json.dumps([{"system": m.get("Attributes", {}), "attributes": sorted(m.get("MessageAttributes", {}))}
                  for m in r.get("Messages", [])]))
"#;
    let out = tokio::process::Command::new(python())
        .args(["-c", script, &bed.setting("QUEUE_URL")])
        .env("AWS_ENDPOINT_URL", aws_endpoint())
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got.as_array().map(Vec::len), Some(1), "{got}");
    let header = got[0]["system"]["AWSTraceHeader"]
        .as_str()
        .expect("an AWSTraceHeader system attribute")
        .to_owned();
    let parts: Vec<&str> = header.split(';').collect();
    assert_eq!(parts.len(), 3, "{header}");
    let root = parts[0].strip_prefix("Root=1-").expect("Root first");
    let parent = parts[1].strip_prefix("Parent=").expect("Parent second");
    assert_eq!(parts[2], "Sampled=1");
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    assert!(
        root.len() == 33 && hex(&root[..8], 8) && &root[8..9] == "-" && hex(&root[9..], 24),
        "{header}"
    );
    assert!(hex(parent, 16), "{header}");
    let attributes: Vec<&str> = got[0]["attributes"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!attributes.contains(&"AWSTraceHeader"), "{attributes:?}");
    assert!(attributes.len() <= 6, "SQS allows 10: {attributes:?}");
    // X-Ray's time prefix is the trace's start, in seconds.
    let secs = i64::from_str_radix(&root[..8], 16).expect("hex");
    assert!((secs - now()).abs() < 120, "{header}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _worker = bed.worker(&refs(&otlp.env()));
    assert!(applied(&bed, event).await, "{}", bed.dlq_report().await);
    let trace = otlp.trace_of(event, 1).await;
    let process = one(&trace, "hookline-worker", "process");
    assert_eq!(id(process, "trace_id"), root.replace('-', ""));
    assert_eq!(id(process, "parent_span_id"), parent);
    let send = one(&trace, "hookline-ingress", "send");
    assert_eq!(
        id(send, "span_id"),
        parent,
        "the header names the producer span"
    );
    assert!(queue_drains(&bed).await, "{}", bed.dlq_report().await);
    assert_eq!(bed.dlq_len().await, 0);
}

/// An OTLP endpoint that cannot be used is a settings error (exit 1, a
/// message naming OpenTelemetry), not a service that runs untraced.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_otlp_endpoint_is_a_settings_error() {
    let dir = tempfile::tempdir().expect("tmp");
    for binary in ["hookline-ingress", "hookline-worker"] {
        let out = tokio::process::Command::new(bin(binary))
            .env_clear()
            .env("DATA_DIR", dir.path())
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("BIND_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
            .output()
            .await
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{binary}: {err}");
        assert!(err.contains("OpenTelemetry"), "{binary}: {err}");
    }
}
