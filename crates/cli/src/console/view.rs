//! What the page shows, as values: the overview (counts, the DLQ grouped
//! by reason and by type) and an event lookup. Grouping is pure.

use std::collections::BTreeMap;

use hookline_core::ports::{RecentActivity, Store};
use serde::Serialize;

use crate::dlq::Entry;

/// What the page shows, also as JSON for the refresh.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    pub waiting: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
    /// Age of the oldest dead-lettered event, seconds, and as the page
    /// writes it (`-` when unknown).
    pub oldest_dead_secs: Option<u64>,
    pub oldest_dead_age: String,
    pub by_reason: Vec<Group>,
    pub by_type: Vec<Group>,
    /// The dead letters a routed destination failed, by destination.
    pub by_destination: Vec<Group>,
    /// Completions in the last five minutes, where the store can tell.
    pub recent: Option<RecentActivity>,
    /// Whether the groups were read now. While a replay runs the console
    /// does not look into the DLQ: a look holds messages for a moment, and
    /// the replay would take them for gone and end early.
    pub groups_current: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    pub count: usize,
    pub oldest_secs: u64,
    pub newest_secs: u64,
    pub messages: Vec<Row>,
}

/// One DLQ message as the page lists it: the `dlq list` entry and the
/// message id to open it by (no body).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub message_id: String,
    #[serde(flatten)]
    pub entry: Entry,
}

/// Groups rows by `key`: the largest group first, then by key.
pub fn group_by(rows: &[Row], key: impl Fn(&Row) -> String) -> Vec<Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for r in rows {
        let k = key(r);
        let g = groups.entry(k.clone()).or_insert_with(|| Group {
            key: k,
            newest_secs: u64::MAX,
            ..Group::default()
        });
        g.count += 1;
        g.oldest_secs = g.oldest_secs.max(r.entry.age_secs);
        g.newest_secs = g.newest_secs.min(r.entry.age_secs);
        g.messages.push(r.clone());
    }
    let mut v: Vec<Group> = groups.into_values().collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    v
}

/// Reasons group by their first line, cut at 120 characters.
pub fn reason_key(reason: Option<&str>) -> String {
    let Some(r) = reason else {
        return "(no reason recorded)".to_owned();
    };
    r.lines().next().unwrap_or("").chars().take(120).collect()
}

/// The destination a dead letter's reason names (`destination NAME: …`,
/// as the worker writes it), if any.
pub fn destination_of(reason: Option<&str>) -> Option<String> {
    let rest = reason?.strip_prefix("destination ")?;
    let (name, _) = rest.split_once(": ")?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// The overview of `rows` (the DLQ as read now) with the queue's counts.
pub fn overview(
    counts: crate::dlq::Stats,
    rows: &[Row],
    recent: Option<RecentActivity>,
) -> Overview {
    Overview {
        waiting: counts.waiting,
        in_flight: counts.in_flight,
        dead_lettered: counts.dead_lettered,
        oldest_dead_secs: rows.iter().map(|r| r.entry.age_secs).max(),
        oldest_dead_age: rows
            .iter()
            .map(|r| r.entry.age_secs)
            .max()
            .map_or_else(|| "-".to_owned(), crate::output::human_age),
        by_reason: group_by(rows, |r| reason_key(r.entry.reason.as_deref())),
        by_type: group_by(rows, |r| {
            r.entry
                .event_type
                .clone()
                .unwrap_or_else(|| "(unknown)".to_owned())
        }),
        by_destination: {
            let routed: Vec<Row> = rows
                .iter()
                .filter(|r| destination_of(r.entry.reason.as_deref()).is_some())
                .cloned()
                .collect();
            group_by(&routed, |r| {
                destination_of(r.entry.reason.as_deref()).unwrap_or_default()
            })
        },
        recent,
        groups_current: true,
    }
}

/// An event's ledger item and the item it projected.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub id: String,
    pub ledger: Option<serde_json::Value>,
    pub item: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The event's trace, through `TRACE_URL_TEMPLATE`.
    pub trace_url: Option<String>,
}

/// A `TRACE_URL_TEMPLATE` must be an http(s) URL naming the trace.
pub fn check_trace_template(template: &str) -> anyhow::Result<()> {
    if !(template.starts_with("https://") || template.starts_with("http://")) {
        anyhow::bail!("TRACE_URL_TEMPLATE must start with https:// or http://");
    }
    if !(template.contains("{trace_id}") || template.contains("{xray_trace_id}")) {
        anyhow::bail!("TRACE_URL_TEMPLATE must contain {{trace_id}} or {{xray_trace_id}}");
    }
    Ok(())
}

/// The link to the trace a ledger item names (`traceId`), by `template`.
/// Only a 32-hex-digit id is put in: nothing else of the item reaches the URL.
pub fn trace_url(template: Option<&str>, ledger: Option<&serde_json::Value>) -> Option<String> {
    let id = ledger?.get("traceId")?.as_str()?;
    let xray = hookline_telemetry::xray::xray_trace_id(id)?;
    Some(
        template?
            .replace("{trace_id}", &id.to_ascii_lowercase())
            .replace("{xray_trace_id}", &xray),
    )
}

/// An event id finds its ledger item, then what it projected; any other id
/// is taken as an object or account id.
pub async fn lookup(store: &dyn Store, id: &str) -> Lookup {
    let mut out = Lookup {
        id: id.to_owned(),
        ..Lookup::default()
    };
    let unanswered = |e: &dyn std::fmt::Display| {
        tracing::warn!(message = "Lookup: the store did not answer.", id, error = %e);
        Some("the store did not answer".to_owned())
    };
    if id.starts_with("evt_") {
        match store.event(id).await {
            Ok(Some(rec)) => {
                let object = rec.object_id.clone();
                out.ledger = serde_json::to_value(rec).ok();
                if let Some(object) = object {
                    out.item = store
                        .item(&object)
                        .await
                        .ok()
                        .flatten()
                        .map(|i| serde_json::Value::Object(i.0));
                }
            }
            Ok(None) => out.error = Some("no such event in the ledger".to_owned()),
            Err(e) => out.error = unanswered(&e),
        }
    } else {
        match store.item(id).await {
            Ok(Some(i)) => out.item = Some(serde_json::Value::Object(i.0)),
            Ok(None) => out.error = Some("no such object or account".to_owned()),
            Err(e) => out.error = unanswered(&e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, event_type: &str, age: u64, reason: Option<&str>) -> Row {
        Row {
            message_id: format!("m-{id}"),
            entry: Entry {
                event_id: Some(id.to_owned()),
                event_type: Some(event_type.to_owned()),
                age_secs: age,
                receive_count: 1,
                reason: reason.map(str::to_owned),
                source: None,
            },
        }
    }

    #[test]
    fn dead_letters_a_destination_failed_group_by_its_name() {
        assert_eq!(
            destination_of(Some("destination billing: HTTP 410: gone")),
            Some("billing".to_owned())
        );
        assert_eq!(
            destination_of(Some("destination handler:invoice.paid: no user")),
            Some("handler:invoice.paid".to_owned())
        );
        assert_eq!(destination_of(Some("invalid event payload: x")), None);
        assert_eq!(destination_of(None), None);
        let rows = [
            row(
                "e1",
                "invoice.paid",
                30,
                Some("destination a: HTTP 410: gone"),
            ),
            row(
                "e2",
                "invoice.paid",
                20,
                Some("destination a: still failing after 1day (retry_for): HTTP 503"),
            ),
            row(
                "e3",
                "invoice.paid",
                10,
                Some("destination b: HTTP 400: bad"),
            ),
            row("e4", "payout.updated", 5, Some("invalid event payload")),
        ];
        let o = overview(crate::dlq::Stats::default(), &rows, None);
        let keys: Vec<(&str, usize)> = o
            .by_destination
            .iter()
            .map(|g| (g.key.as_str(), g.count))
            .collect();
        assert_eq!(keys, [("a", 2), ("b", 1)]);
    }

    #[test]
    fn rows_group_by_reason_and_type_largest_first() {
        let rows = [
            row("e1", "payout.updated", 30, Some("bug X\nstack")),
            row("e2", "payout.updated", 90, Some("bug X\nother stack")),
            row("e3", "account.updated", 10, None),
        ];
        let o = overview(
            crate::dlq::Stats {
                waiting: 1,
                in_flight: 0,
                dead_lettered: 3,
            },
            &rows,
            None,
        );
        assert_eq!(o.oldest_dead_secs, Some(90));
        assert_eq!(o.oldest_dead_age, "90s");
        let reasons: Vec<(&str, usize)> = o
            .by_reason
            .iter()
            .map(|g| (g.key.as_str(), g.count))
            .collect();
        assert_eq!(reasons, [("bug X", 2), ("(no reason recorded)", 1)]);
        assert_eq!(
            (o.by_reason[0].oldest_secs, o.by_reason[0].newest_secs),
            (90, 30)
        );
        let types: Vec<&str> = o.by_type.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(types, ["payout.updated", "account.updated"]);
        assert!(o.groups_current);
        assert!(overview(crate::dlq::Stats::default(), &[], None)
            .by_reason
            .is_empty());
    }

    #[test]
    fn a_trace_link_takes_only_a_trace_id() {
        let template = "https://console.example/xray/{xray_trace_id}?raw={trace_id}";
        check_trace_template(template).expect("valid");
        assert!(check_trace_template("javascript:{trace_id}").is_err());
        assert!(check_trace_template("https://console.example/").is_err());
        let ledger = serde_json::json!({"traceId": "5759e988bd862e3fe1be46a994272793"});
        assert_eq!(
            trace_url(Some(template), Some(&ledger)).as_deref(),
            Some("https://console.example/xray/1-5759e988-bd862e3fe1be46a994272793?raw=5759e988bd862e3fe1be46a994272793")
        );
        let hostile = serde_json::json!({"traceId": "\"><script>alert(1)</script>"});
        assert_eq!(trace_url(Some(template), Some(&hostile)), None);
        assert_eq!(trace_url(None, Some(&ledger)), None);
        assert_eq!(
            trace_url(Some(template), Some(&serde_json::json!({}))),
            None
        );
    }

    #[test]
    fn a_reason_groups_by_its_first_line_cut_at_120() {
        let long = "x".repeat(300);
        assert_eq!(reason_key(Some(&long)).chars().count(), 120);
        assert_eq!(reason_key(Some("")), "");
    }
}
