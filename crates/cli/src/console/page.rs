//! The console's HTML, rendered on the server with maud: every value is
//! escaped unless marked otherwise, and nothing here is. No body is
//! rendered but the one message the operator opens.

use hookline_core::ports::Delivery;
use maud::{html, Markup, DOCTYPE};

use super::job::JobView;
use super::view::{Group, Lookup, Overview};
use crate::output::human_age;

fn layout(title: &str, csrf: Option<&str>, main: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                @if let Some(token) = csrf {
                    meta name="csrf-token" content=(token);
                }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body { main { (main) } }
        }
    }
    .into_string()
}

pub fn login(message: Option<&str>) -> String {
    layout(
        "Hookline console: sign in",
        None,
        html! {
            h1 { "Hookline console" }
            p { "This console needs its token (CONSOLE_TOKEN)." }
            @if let Some(m) = message {
                p class="error" { (m) }
            }
            form method="post" action="/login" {
                label { "Token " input type="password" name="token" autocomplete="off" autofocus; }
                " "
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn groups(title: &str, id: &str, groups: &[Group]) -> Markup {
    html! {
        section id=(id) {
            h2 { (title) }
            @if groups.is_empty() {
                p class="empty" { "The dead-letter queue is empty." }
            }
            @for g in groups {
                details class="group" data-key=(g.key) {
                    summary {
                        span class="key" { (g.key) } " "
                        span class="count" { (g.count) } " "
                        span class="ages" { "oldest " (human_age(g.oldest_secs)) ", newest " (human_age(g.newest_secs)) }
                    }
                    table {
                        thead { tr { th { "event id" } th { "type" } th { "age" } th { "receives" } th { "source" } th { "reason" } th {} } }
                        tbody {
                            @for m in &g.messages {
                                tr {
                                    td { (m.entry.event_id.as_deref().unwrap_or("-")) }
                                    td { (m.entry.event_type.as_deref().unwrap_or("-")) }
                                    td { (human_age(m.entry.age_secs)) }
                                    td { (m.entry.receive_count) }
                                    td { (m.entry.source.unwrap_or("-")) }
                                    td class="reason" { (m.entry.reason.as_deref().unwrap_or("-")) }
                                    td { a href={ "/message?id=" (m.message_id) } { "open" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn record(title: &str, value: &serde_json::Value) -> Markup {
    html! {
        h3 { (title) }
        table class="record" {
            @if let serde_json::Value::Object(map) = value {
                @for (k, v) in map {
                    tr {
                        th { (k) }
                        td {
                            @match v {
                                serde_json::Value::String(s) => (s),
                                other => (other.to_string()),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Each routed destination's state for the event, one row each.
fn destinations(ledger: &serde_json::Value) -> Markup {
    html! {
        @if let Some(serde_json::Value::Object(map)) = ledger.get("destinations") {
            h3 { "Destinations" }
            table id="destinations" class="record" {
                @for (name, state) in map {
                    tr { th { (name) } td { (crate::show::destination_line(state)) } }
                }
            }
        }
    }
}

fn count(label: &str, id: Option<&str>, value: impl std::fmt::Display) -> Markup {
    html! {
        div { span class="label" { (label) } " " span id=[id] class="value" { (value) } }
    }
}

pub fn index(o: &Overview, lookup: Option<&Lookup>, job: &JobView, csrf: &str) -> String {
    let main = html! {
        h1 { "Hookline console" }
        section id="counts" class="counts" {
            (count("waiting", Some("waiting"), o.waiting))
            (count("in flight", Some("in-flight"), o.in_flight))
            (count("dead-lettered", Some("dead-lettered"), o.dead_lettered))
            (count("oldest dead letter", Some("oldest"), &o.oldest_dead_age))
        }
        @match &o.recent {
            Some(r) => section id="recent" class="counts" {
                (count("applied (5 min)", None, r.applied))
                (count("stale", None, r.stale))
                (count("retried", None, r.retried))
                (count("failed in the ledger", None, r.failed))
            },
            None => p class="note" { "Rates: this backend cannot tell cheaply; see the dashboard (EMF metrics)." },
        }
        @if o.groups_current {
            (groups("Dead letters by reason", "by-reason", &o.by_reason))
            (groups("Dead letters by event type", "by-type", &o.by_type))
            @if !o.by_destination.is_empty() {
                (groups("Dead letters by destination", "by-destination", &o.by_destination))
            }
        } @else {
            p class="note" { "A replay is running: the dead-letter groups show again when it is done." }
        }
        section id="lookup" {
            h2 { "Look up an event or object" }
            form method="get" action="/" {
                input type="text" name="lookup" placeholder="evt_… or po_…, acct_…";
                " "
                button type="submit" { "Look up" }
            }
            @if let Some(l) = lookup {
                div id="lookup-result" {
                    p { (l.id) }
                    @if let Some(e) = &l.error { p class="error" { (e) } }
                    @if let Some(ledger) = &l.ledger { (record("Ledger item", ledger)) (destinations(ledger)) }
                    @if let Some(url) = &l.trace_url {
                        p { a id="trace-link" href=(url) rel="noopener noreferrer" { "Trace of this event" } }
                    }
                    @if let Some(item) = &l.item { (record("Projected item", item)) }
                }
            }
        }
        section id="replay" {
            h2 { "Replay" }
            form id="replay-form" {
                label { "event types " input name="event_type" placeholder="payout.updated, …"; } " "
                label { "event ids " input name="event_id" placeholder="evt_…, …"; } " "
                label { "older than " input name="older_than" placeholder="30m"; } " "
                label { "newer than " input name="newer_than" placeholder="2h"; } " "
                label { "limit " input name="limit" placeholder="1000"; }
                div class="actions" {
                    button type="button" id="preview" { "Dry run" } " "
                    button type="button" id="export" { "Export JSON lines" }
                }
            }
            div id="confirm" hidden {
                p id="confirm-text" {}
                button type="button" id="confirm-replay" { "Replay them" } " "
                button type="button" id="cancel-replay" { "Cancel" }
            }
            div id="progress" hidden[!job.started] {
                progress id="progress-bar" max=(job.planned.max(1)) value=(job.replayed) {}
                " "
                span id="progress-text" { (job.progress_text()) }
            }
        }
    };
    layout("Hookline console", Some(csrf), main)
}

/// One message, opened on purpose: its attributes and raw body.
pub fn message(d: &Delivery) -> String {
    let body = String::from_utf8_lossy(&d.body);
    layout(
        "Hookline console: message",
        None,
        html! {
            p { a href="/" { "back" } }
            h1 { "Message " (d.message_id) }
            table class="record" {
                tr { th { "receive count" } td { (d.receive_count) } }
                @for (k, v) in &d.attributes {
                    tr { th { (k) } td { (v) } }
                }
            }
            h2 { "Body" }
            pre id="body" { (body) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let o = Overview {
            groups_current: true,
            by_reason: vec![Group {
                key: "<script>alert(1)</script>".to_owned(),
                count: 1,
                ..Group::default()
            }],
            ..Overview::default()
        };
        let lookup = Lookup {
            id: "\"><img src=x onerror=alert(1)>".to_owned(),
            ..Lookup::default()
        };
        let html = index(&o, Some(&lookup), &JobView::default(), "t\"><b>");
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("t\"><b>"), "attributes are escaped too");
        assert!(html.contains(r#"<div id="progress" hidden>"#), "{html}");
    }

    #[test]
    fn an_event_shows_each_destination_and_the_dlq_groups_by_destination() {
        let o = Overview {
            groups_current: true,
            by_destination: vec![Group {
                key: "billing".to_owned(),
                count: 2,
                ..Group::default()
            }],
            ..Overview::default()
        };
        let lookup = Lookup {
            id: "evt_test_1".to_owned(),
            ledger: Some(serde_json::json!({
                "eventId": "evt_test_1",
                "destinations": {
                    "billing": {"delivered": false, "attempts": 3, "lastError": "HTTP 503: down", "firstFailedAt": 0, "updatedAt": 10},
                    "crm": {"delivered": true, "attempts": 1, "updatedAt": 10},
                },
            })),
            ..Lookup::default()
        };
        let html = index(&o, Some(&lookup), &JobView::default(), "t");
        assert!(html.contains("Dead letters by destination"), "{html}");
        assert!(html.contains(r#"data-key="billing""#), "{html}");
        assert!(html.contains(r#"<table id="destinations""#), "{html}");
        assert!(
            html.contains("<th>billing</th><td>not delivered, 3 attempt(s), failing since 1970-01-01T00:00:00Z: HTTP 503: down</td>"),
            "{html}"
        );
        assert!(
            html.contains("<th>crm</th><td>delivered after 1 attempt(s)</td>"),
            "{html}"
        );
        let none = index(
            &Overview {
                groups_current: true,
                ..Overview::default()
            },
            None,
            &JobView::default(),
            "t",
        );
        assert!(
            !none.contains("Dead letters by destination"),
            "shown only when a destination failed"
        );
    }

    #[test]
    fn a_looked_up_event_links_to_its_trace() {
        let ledger = serde_json::json!({"eventId": "evt_test_1", "traceId": "5759e988bd862e3fe1be46a994272793"});
        let lookup = Lookup {
            id: "evt_test_1".to_owned(),
            trace_url: crate::console::view::trace_url(
                Some("https://console.example/xray?q=1&id={xray_trace_id}"),
                Some(&ledger),
            ),
            ledger: Some(ledger),
            ..Lookup::default()
        };
        let html = index(
            &Overview::default(),
            Some(&lookup),
            &JobView::default(),
            "t",
        );
        assert!(
            html.contains(r#"<a id="trace-link" href="https://console.example/xray?q=1&amp;id=1-5759e988-bd862e3fe1be46a994272793" rel="noopener noreferrer">"#),
            "{html}"
        );
        let without = Lookup {
            trace_url: None,
            ..lookup
        };
        let html = index(
            &Overview::default(),
            Some(&without),
            &JobView::default(),
            "t",
        );
        assert!(!html.contains("trace-link"), "no template, no link");
    }
}
