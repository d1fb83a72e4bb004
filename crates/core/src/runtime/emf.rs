//! CloudWatch Embedded Metric Format: the metrics as JSON log lines.
//!
//! On ECS there is no Prometheus scraper by default, but every line a task
//! writes reaches CloudWatch Logs, and CloudWatch turns EMF lines into
//! metrics by itself. With `EMF_NAMESPACE` set, the ingress and the worker
//! write one line every `EMF_INTERVAL_SECS` on stdout: counters as deltas
//! since the last line, levels as they are, histograms as `Values`/`Counts`
//! distributions with their statistic set (`Max`, `Min`, `Count`, `Sum`),
//! as AWS's own EMF libraries write them (so percentiles and the plain
//! statistics both work), all under the dimension `Service`.
//! Format: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Histogram};

/// A cumulative reading of one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A counter: written as the change since the last line.
    Count(u64),
    /// A level (a gauge): written as it is.
    Level(i64),
    /// Seconds histogram: per-bucket counts (not cumulative) for `bounds`,
    /// plus the observations above the last bound, and the sum of all.
    Seconds {
        bounds: &'static [f64],
        counts: Vec<u64>,
        overflow: u64,
        sum: f64,
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
            sum: h.sum_secs(),
        }
    }
}

/// One metric of a service: its EMF name, unit and reading.
pub type Sample = (&'static str, Reading);

/// Renders one EMF line from the change between two readings, under the
/// dimension `Service`.
pub fn line(
    namespace: &str,
    service: &str,
    timestamp_ms: i64,
    now: &[Sample],
    before: &[Sample],
) -> String {
    line_with(
        namespace,
        &[("Service", service)],
        timestamp_ms,
        now,
        before,
    )
}

/// Dimensions of one EMF line: name and value, `Service` first.
pub type Dimensions = Vec<(&'static str, String)>;

/// Renders one EMF line under `dimensions` (all of them one dimension set,
/// such as `Service` and `Destination`).
pub fn line_with(
    namespace: &str,
    dimensions: &[(&str, &str)],
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
            (Reading::Level(n), _) => ("None", json!(n)),
            (
                Reading::Seconds {
                    bounds,
                    counts,
                    overflow,
                    sum,
                },
                prev,
            ) => {
                let (prev_counts, prev_overflow, prev_sum) = match prev {
                    Some(Reading::Seconds {
                        counts,
                        overflow,
                        sum,
                        ..
                    }) => (counts.clone(), *overflow, *sum),
                    _ => (vec![0; counts.len()], 0, 0.0),
                };
                let mut values = Vec::new();
                let mut deltas = Vec::new();
                // The lower edge of the first bucket observed.
                let mut min: Option<f64> = None;
                let last = bounds.last().copied().unwrap_or(1.0);
                let edges = std::iter::once(0.0).chain(bounds.iter().copied());
                for (i, ((c, b), low)) in counts.iter().zip(bounds.iter()).zip(edges).enumerate() {
                    let d = c.saturating_sub(prev_counts.get(i).copied().unwrap_or(0));
                    if d > 0 {
                        min.get_or_insert(low);
                        values.push(*b);
                        deltas.push(d);
                    }
                }
                let d = overflow.saturating_sub(prev_overflow);
                if d > 0 {
                    min.get_or_insert(last);
                    values.push(last * 2.0);
                    deltas.push(d);
                }
                let (Some(min), Some(max)) = (min, values.last().copied()) else {
                    // A distribution with no observation is left out.
                    continue;
                };
                // The statistic set beside the distribution. Each value is
                // its bucket's upper bound, so Min is the lower edge of the
                // first bucket observed and Max the greatest value; the
                // observed Sum lies between Min·Count and Max·Count.
                let count: u64 = deltas.iter().sum();
                let sum = (sum - prev_sum).clamp(min * count as f64, max * count as f64);
                (
                    "Seconds",
                    json!({"Values": values, "Counts": deltas, "Max": max, "Min": min, "Count": count, "Sum": sum}),
                )
            }
        };
        definitions.push(json!({"Name": name, "Unit": unit}));
        doc.insert((*name).to_owned(), value);
    }
    for (name, value) in dimensions {
        doc.insert((*name).to_owned(), Value::String((*value).to_owned()));
    }
    let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    doc.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [names],
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
    spawn_lines(
        namespace,
        every,
        move || vec![(vec![("Service", service.to_owned())], read())],
        shutdown,
    )
}

/// Like [`spawn`], one line per group of samples, each under its own
/// dimensions (the groups keep their order from one reading to the next).
pub fn spawn_lines<F>(
    namespace: Option<String>,
    every: Duration,
    read: F,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Vec<(Dimensions, Vec<Sample>)> + Send + 'static,
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
            let at = crate::clock::unix_millis();
            let mut out = std::io::stdout().lock();
            for (i, (dimensions, samples)) in now.iter().enumerate() {
                let dims: Vec<(&str, &str)> =
                    dimensions.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let previous: &[Sample] = before
                    .get(i)
                    .map_or(&[], |(_, s): &(Dimensions, Vec<Sample>)| s);
                let text = line_with(&namespace, &dims, at, samples, previous);
                if writeln!(out, "{text}").is_err() {
                    tracing::debug!(message = "Cannot write EMF metrics to stdout.");
                }
            }
            let _ = out.flush();
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
                    sum: 0.05,
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
                    sum: 0.05 + 3.0 * 0.5 + 2.0 * 1.5,
                },
            ),
        ];
        let v: Value =
            serde_json::from_str(&line("Hookline", "worker", 1_000, &now, &before)).expect("json");
        assert_eq!(v["Applied"], 3);
        assert_eq!(v["EventAge"]["Values"], json!([1.0, 2.0]));
        assert_eq!(v["EventAge"]["Counts"], json!([3, 2]));
        // The statistic set CloudWatch reads beside the distribution.
        assert_eq!(
            v["EventAge"]["Min"], 0.1,
            "the lower edge of the (0.1, 1] bucket"
        );
        assert_eq!(v["EventAge"]["Max"], 2.0);
        assert_eq!(v["EventAge"]["Count"], 5);
        assert_eq!(v["EventAge"]["Sum"], 4.5);
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
    fn a_line_carries_every_dimension_as_one_set() {
        let now = vec![("DestinationDelivered", Reading::Count(4))];
        let text = line_with(
            "Hookline",
            &[("Service", "worker"), ("Destination", "billing")],
            5,
            &now,
            &[],
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["Destination"], "billing");
        assert_eq!(v["Service"], "worker");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Service", "Destination"]])
        );
        assert_eq!(v["DestinationDelivered"], 4);
    }

    #[test]
    fn an_empty_distribution_is_left_out() {
        let now = vec![(
            "Latency",
            Reading::Seconds {
                bounds: &[1.0],
                counts: vec![0],
                overflow: 0,
                sum: 0.0,
            },
        )];
        let v: Value = serde_json::from_str(&line("N", "s", 0, &now, &[])).expect("json");
        assert!(v.get("Latency").is_none());
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"], json!([]));
    }
}
