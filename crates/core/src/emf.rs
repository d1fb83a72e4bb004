//! CloudWatch Embedded Metric Format: the metrics as JSON log lines.
//!
//! On ECS there is no Prometheus scraper by default, but every line a task
//! writes reaches CloudWatch Logs, and CloudWatch turns EMF lines into
//! metrics by itself. With `EMF_NAMESPACE` set, the ingress and the worker
//! write one line every `EMF_INTERVAL_SECS` on stdout: counters as deltas
//! since the last line, histograms as `Values`/`Counts` distributions (so
//! percentiles work), all under the dimension `Service`.
//! Format: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Histogram};

/// A cumulative reading of one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Count(u64),
    /// Seconds histogram: per-bucket counts (not cumulative) for `bounds`,
    /// plus the observations above the last bound.
    Seconds {
        bounds: &'static [f64],
        counts: Vec<u64>,
        overflow: u64,
    },
}

impl Reading {
    pub fn counter(c: &Counter) -> Self {
        Self::Count(c.get())
    }
    pub fn histogram(h: &Histogram) -> Self {
        let (counts, overflow) = h.bucket_counts();
        Self::Seconds {
            bounds: h.bounds(),
            counts,
            overflow,
        }
    }
}

/// One metric of a service: its EMF name, unit and reading.
pub type Sample = (&'static str, Reading);

/// Renders one EMF line from the change between two readings.
pub fn line(
    namespace: &str,
    service: &str,
    timestamp_ms: i64,
    now: &[Sample],
    before: &[Sample],
) -> String {
    let mut doc = Map::new();
    let mut definitions = Vec::with_capacity(now.len());
    for (name, reading) in now {
        let previous = before.iter().find(|(n, _)| n == name).map(|(_, r)| r);
        let (unit, value) = match (reading, previous) {
            (Reading::Count(n), Some(Reading::Count(p))) => ("Count", json!(n.saturating_sub(*p))),
            (Reading::Count(n), _) => ("Count", json!(n)),
            (
                Reading::Seconds {
                    bounds,
                    counts,
                    overflow,
                },
                prev,
            ) => {
                let (prev_counts, prev_overflow) = match prev {
                    Some(Reading::Seconds {
                        counts, overflow, ..
                    }) => (counts.clone(), *overflow),
                    _ => (vec![0; counts.len()], 0),
                };
                let mut values = Vec::new();
                let mut deltas = Vec::new();
                for (i, (c, b)) in counts.iter().zip(bounds.iter()).enumerate() {
                    let d = c.saturating_sub(prev_counts.get(i).copied().unwrap_or(0));
                    if d > 0 {
                        values.push(json!(b));
                        deltas.push(json!(d));
                    }
                }
                let d = overflow.saturating_sub(prev_overflow);
                if d > 0 {
                    values.push(json!(bounds.last().copied().unwrap_or(1.0) * 2.0));
                    deltas.push(json!(d));
                }
                if values.is_empty() {
                    // A distribution with no observation is left out.
                    continue;
                }
                ("Seconds", json!({"Values": values, "Counts": deltas}))
            }
        };
        definitions.push(json!({"Name": name, "Unit": unit}));
        doc.insert((*name).to_owned(), value);
    }
    doc.insert("Service".to_owned(), Value::String(service.to_owned()));
    doc.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Service"]],
                "Metrics": definitions,
            }],
        }),
    );
    Value::Object(doc).to_string()
}

/// Writes an EMF line for `service` every interval, and a last one when
/// `shutdown` fires, until then. Does nothing without a namespace
/// (`EMF_NAMESPACE` unset).
pub fn spawn<F>(
    namespace: Option<String>,
    every: Duration,
    service: &'static str,
    read: F,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Vec<Sample> + Send + 'static,
{
    let namespace = namespace?;
    let every = every.max(Duration::from_secs(1));
    Some(tokio::spawn(async move {
        let mut before = Vec::new();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            let now = read();
            let text = line(
                &namespace,
                service,
                crate::clock::unix_millis(),
                &now,
                &before,
            );
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                tracing::debug!(message = "Cannot write EMF metrics to stdout.");
            }
            before = now;
            if last {
                return;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_deltas_and_histograms_distributions() {
        let bounds: &'static [f64] = &[0.1, 1.0];
        let before = vec![
            ("Applied", Reading::Count(5)),
            (
                "EventAge",
                Reading::Seconds {
                    bounds,
                    counts: vec![1, 0],
                    overflow: 0,
                },
            ),
        ];
        let now = vec![
            ("Applied", Reading::Count(8)),
            (
                "EventAge",
                Reading::Seconds {
                    bounds,
                    counts: vec![1, 3],
                    overflow: 2,
                },
            ),
        ];
        let v: Value =
            serde_json::from_str(&line("Hookline", "worker", 1_000, &now, &before)).expect("json");
        assert_eq!(v["Applied"], 3);
        assert_eq!(v["EventAge"]["Values"], json!([1.0, 2.0]));
        assert_eq!(v["EventAge"]["Counts"], json!([3, 2]));
        assert_eq!(v["Service"], "worker");
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "Hookline");
        assert_eq!(m["Dimensions"], json!([["Service"]]));
        assert_eq!(
            m["Metrics"][1],
            json!({"Name": "EventAge", "Unit": "Seconds"})
        );
        assert_eq!(v["_aws"]["Timestamp"], 1_000);
    }

    #[test]
    fn an_empty_distribution_is_left_out() {
        let now = vec![(
            "Latency",
            Reading::Seconds {
                bounds: &[1.0],
                counts: vec![0],
                overflow: 0,
            },
        )];
        let v: Value = serde_json::from_str(&line("N", "s", 0, &now, &[])).expect("json");
        assert!(v.get("Latency").is_none());
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"], json!([]));
    }
}
