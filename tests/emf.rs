//! Metrics as CloudWatch Embedded Metric Format lines, as CloudWatch
//! reads them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

pub(crate) async fn get(base: &str, path: &str) -> (u16, String) {
    match reqwest::get(format!("{base}{path}")).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Reads a child's stdout lines into a shared list.
fn collect_lines(stdout: std::process::ChildStdout) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

/// Checks one line against the EMF specification's required fields and
/// returns the metric names it declares.
fn emf_metrics(line: &str, namespace: &str, service: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let aws = &v["_aws"];
    assert!(
        aws["Timestamp"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{line}"
    );
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics");
    assert_eq!(directives.len(), 1);
    let d = &directives[0];
    assert_eq!(d["Namespace"], namespace);
    let dims = d["Dimensions"].as_array().expect("Dimensions");
    for set in dims {
        for key in set.as_array().expect("dimension set") {
            let key = key.as_str().expect("dimension name");
            assert!(v[key].is_string(), "dimension {key} has a value: {line}");
        }
    }
    assert_eq!(v["Service"], service);
    let mut names = Vec::new();
    for m in d["Metrics"].as_array().expect("Metrics") {
        let name = m["Name"].as_str().expect("Name");
        assert!(m["Unit"].is_string());
        let value = &v[name];
        if value.is_object() {
            // A histogram as AWS's EMF libraries write one: a distribution
            // with its statistic set, consistent with each other.
            let values = value["Values"].as_array().expect("Values");
            let counts = value["Counts"].as_array().expect("Counts");
            assert_eq!(values.len(), counts.len(), "{name}: {line}");
            let f = |k: &str| {
                value[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name}.{k}: {line}"))
            };
            let (min, max, count, sum) = (f("Min"), f("Max"), f("Count"), f("Sum"));
            let total: u64 = counts.iter().filter_map(serde_json::Value::as_u64).sum();
            assert_eq!(
                count, total as f64,
                "{name}: Count is the sum of Counts: {line}"
            );
            for x in values.iter().filter_map(serde_json::Value::as_f64) {
                assert!(
                    min <= x && x <= max,
                    "{name}: {x} within [Min, Max]: {line}"
                );
            }
            assert!(
                min * count <= sum && sum <= max * count,
                "{name}: Sum: {line}"
            );
        } else {
            assert!(value.is_number(), "{name} has a value: {line}");
        }
        names.push(name.to_owned());
    }
    names
}

/// The ingress and the worker with `EMF_NAMESPACE` and a one-second
/// interval: every line has the EMF required fields, and the metrics the
/// stack's alarms and dashboard use are there with the right deltas.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_as_embedded_metric_format_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut ingress = Command::new(bin("hookline-ingress"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("EMF_NAMESPACE", "HooklineTest")
        .env("EMF_INTERVAL_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ingress starts");
    let ingress_lines = collect_lines(ingress.stdout.take().expect("stdout"));
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&base, "/healthz").await.0 == 200
        })
        .await
    );
    for i in 0..3 {
        assert_eq!(
            post_signed_with(&base, SECRET, &format!("evt_test_emf_{i}")).await,
            200
        );
    }
    assert_eq!(
        post_signed_with(&base, "whsec_test_wrong", "evt_test_emf_bad").await,
        400
    );
    // A poison event, for the worker's dead-letter count.
    let mut poison: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", "evt_test_emf_poison", now()))
            .expect("json");
    poison.as_object_mut().expect("object").remove("created");
    let poison = poison.to_string();
    let status = reqwest::Client::new()
        .post(format!("{base}/api/stripe-webhook"))
        .header("stripe-signature", sign(&poison))
        .body(poison)
        .send()
        .await
        .expect("sent")
        .status();
    assert_eq!(status.as_u16(), 200);

    let mut worker = Command::new(bin("hookline-worker"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RECEIVE_WAIT_SECS", "1")
        .env("EMF_NAMESPACE", "HooklineTest")
        .env("EMF_INTERVAL_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");
    let worker_lines = collect_lines(worker.stdout.take().expect("stdout"));

    let total = |lines: &Arc<Mutex<Vec<String>>>, service: &str, metric: &str| -> u64 {
        lines
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["Service"] == service)
            .map(|v| {
                v[metric]
                    .as_u64()
                    .or_else(|| {
                        v[metric]["Counts"]
                            .as_array()
                            .map(|c| c.iter().filter_map(|n| n.as_u64()).sum())
                    })
                    .unwrap_or(0)
            })
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            // Three events of one object in the same second: the greatest
            // event id wins, so whichever order they are processed in, the
            // others may complete as stale.
            total(&worker_lines, "worker", "EventsApplied")
                + total(&worker_lines, "worker", "EventsStale")
                == 3
                && total(&worker_lines, "worker", "EventsApplied") >= 1
                && total(&worker_lines, "worker", "EventsDeadLettered") == 1
                && total(&ingress_lines, "ingress", "WebhooksEnqueued") == 4
        })
        .await,
        "counters add up across lines (deltas)"
    );
    assert_eq!(total(&ingress_lines, "ingress", "SignatureFailures"), 1);
    assert_eq!(total(&ingress_lines, "ingress", "EnqueueFailures"), 0);
    assert_eq!(
        total(&worker_lines, "worker", "EventAge"),
        3,
        "one age per completed event"
    );

    let mut seen_ingress = std::collections::BTreeSet::new();
    for line in ingress_lines.lock().expect("lock").iter() {
        seen_ingress.extend(emf_metrics(line, "HooklineTest", "ingress"));
    }
    let mut seen_worker = std::collections::BTreeSet::new();
    for line in worker_lines.lock().expect("lock").iter() {
        seen_worker.extend(emf_metrics(line, "HooklineTest", "worker"));
    }
    for m in [
        "SignatureFailures",
        "EnqueueFailures",
        "WebhooksReceived",
        "WebhooksEnqueued",
        "WebhookLatency",
    ] {
        assert!(seen_ingress.contains(m), "{m} in {seen_ingress:?}");
    }
    for m in [
        "EventsApplied",
        "EventsDeadLettered",
        "EventAge",
        "ConfigurationErrors",
        "EventsStale",
        "EventsDuplicate",
        "HandlerLatency",
        "DependencyUnavailable",
    ] {
        assert!(seen_worker.contains(m), "{m} in {seen_worker:?}");
    }
    signal(&worker, "TERM");
    signal(&ingress, "TERM");
    assert_eq!(wait_exit(&mut worker, Duration::from_secs(10)), Some(0));
    assert_eq!(wait_exit(&mut ingress, Duration::from_secs(15)), Some(0));
}
