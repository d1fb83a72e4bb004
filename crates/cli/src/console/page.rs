//! The console's HTML, rendered on the server. Every value is escaped; no
//! body is rendered but the one message the operator opens.

use std::fmt::Write;

use hookline_core::ports::Delivery;

use super::{Group, JobView, Lookup, Overview};
use crate::output::human_age;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str, csrf: Option<&str>) -> String {
    let meta = csrf
        .map(|t| format!(r#"<meta name="csrf-token" content="{}">"#, escape(t)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title>{meta}<link rel="stylesheet" href="/static/console.css"><script src="/static/console.js" defer></script></head><body>"#,
        escape(title)
    )
}

pub fn login() -> String {
    let mut s = head("Hookline console: sign in", None);
    s.push_str(
        r#"<main><h1>Hookline console</h1><p>This console needs its token (CONSOLE_TOKEN).</p>
<form method="post" action="/login"><label>Token <input type="password" name="token" autocomplete="off" autofocus></label> <button type="submit">Sign in</button></form></main></body></html>"#,
    );
    s
}

fn groups(out: &mut String, title: &str, id: &str, groups: &[Group]) {
    let _ = write!(out, r#"<section id="{id}"><h2>{}</h2>"#, escape(title));
    if groups.is_empty() {
        out.push_str(r#"<p class="empty">The dead-letter queue is empty.</p></section>"#);
        return;
    }
    for g in groups {
        let _ = write!(
            out,
            r#"<details class="group" data-key="{key}"><summary><span class="key">{key}</span> <span class="count">{count}</span> <span class="ages">oldest {oldest}, newest {newest}</span></summary><table><thead><tr><th>event id</th><th>type</th><th>age</th><th>receives</th><th>source</th><th>reason</th><th></th></tr></thead><tbody>"#,
            key = escape(&g.key),
            count = g.count,
            oldest = human_age(g.oldest_secs),
            newest = human_age(g.newest_secs),
        );
        for m in &g.messages {
            let _ = write!(
                out,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="reason">{}</td><td><a href="/message?id={}">open</a></td></tr>"#,
                escape(m.entry.event_id.as_deref().unwrap_or("-")),
                escape(m.entry.event_type.as_deref().unwrap_or("-")),
                human_age(m.entry.age_secs),
                m.entry.receive_count,
                m.entry.source.unwrap_or("-"),
                escape(m.entry.reason.as_deref().unwrap_or("-")),
                escape(&m.message_id),
            );
        }
        out.push_str("</tbody></table></details>");
    }
    out.push_str("</section>");
}

fn json_table(out: &mut String, title: &str, value: &serde_json::Value) {
    let _ = write!(out, "<h3>{}</h3><table class=\"record\">", escape(title));
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(
                out,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(&shown)
            );
        }
    }
    out.push_str("</table>");
}

pub fn index(o: &Overview, lookup: Option<&Lookup>, job: &JobView, csrf: &str) -> String {
    let mut s = head("Hookline console", Some(csrf));
    s.push_str("<main><h1>Hookline console</h1>");
    let _ = write!(
        s,
        r#"<section id="counts" class="counts"><div><span class="label">waiting</span> <span id="waiting" class="value">{}</span></div><div><span class="label">in flight</span> <span id="in-flight" class="value">{}</span></div><div><span class="label">dead-lettered</span> <span id="dead-lettered" class="value">{}</span></div><div><span class="label">oldest dead letter</span> <span id="oldest" class="value">{}</span></div></section>"#,
        o.waiting,
        o.in_flight,
        o.dead_lettered,
        o.oldest_dead_secs.map_or("-".to_owned(), human_age),
    );
    match &o.recent {
        Some(r) => {
            let _ = write!(
                s,
                r#"<section id="recent" class="counts"><div><span class="label">applied (5 min)</span> <span class="value">{}</span></div><div><span class="label">stale</span> <span class="value">{}</span></div><div><span class="label">retried</span> <span class="value">{}</span></div><div><span class="label">failed in the ledger</span> <span class="value">{}</span></div></section>"#,
                r.applied, r.stale, r.retried, r.failed
            );
        }
        None => s.push_str(
            r#"<p class="note">Rates: this backend cannot tell cheaply; see the dashboard (EMF metrics).</p>"#,
        ),
    }
    if o.groups_current {
        groups(&mut s, "Dead letters by reason", "by-reason", &o.by_reason);
        groups(&mut s, "Dead letters by event type", "by-type", &o.by_type);
    } else {
        s.push_str(
            r#"<p class="note">A replay is running: the dead-letter groups show again when it is done.</p>"#,
        );
    }

    // Event lookup.
    s.push_str(r#"<section id="lookup"><h2>Look up an event or object</h2><form method="get" action="/"><input type="text" name="lookup" placeholder="evt_… or po_…, acct_…"> <button type="submit">Look up</button></form>"#);
    if let Some(l) = lookup {
        let _ = write!(s, r#"<div id="lookup-result"><p>{}</p>"#, escape(&l.id));
        if let Some(e) = &l.error {
            let _ = write!(s, r#"<p class="error">{}</p>"#, escape(e));
        }
        if let Some(ledger) = &l.ledger {
            json_table(&mut s, "Ledger item", ledger);
        }
        if let Some(item) = &l.item {
            json_table(&mut s, "Projected item", item);
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");

    // Replay and export, with the CLI's filters.
    let _ = write!(
        s,
        r#"<section id="replay"><h2>Replay</h2><form id="replay-form"><label>event types <input name="event_type" placeholder="payout.updated, …"></label> <label>event ids <input name="event_id" placeholder="evt_…, …"></label> <label>older than <input name="older_than" placeholder="30m"></label> <label>newer than <input name="newer_than" placeholder="2h"></label> <label>limit <input name="limit" placeholder="1000"></label>
<div class="actions"><button type="button" id="preview">Dry run</button> <button type="button" id="export">Export JSON lines</button></div></form>
<div id="confirm" hidden><p id="confirm-text"></p><button type="button" id="confirm-replay">Replay them</button> <button type="button" id="cancel-replay">Cancel</button></div>
<div id="progress" {hidden}><progress id="progress-bar" max="{max}" value="{value}"></progress> <span id="progress-text">{text}</span></div></section>"#,
        hidden = if job.started { "" } else { "hidden" },
        max = job.planned.max(1),
        value = job.replayed,
        text = escape(&progress_text(job)),
    );
    s.push_str("</main></body></html>");
    s
}

pub fn progress_text(job: &JobView) -> String {
    if let Some(e) = &job.error {
        return e.clone();
    }
    let state = if job.running { "replaying" } else { "done" };
    format!(
        "{state}: replayed {}, skipped {}, failed {}",
        job.replayed, job.skipped, job.failed
    )
}

/// One message, opened on purpose: its attributes and raw body.
pub fn message(d: &Delivery) -> String {
    let mut s = head("Hookline console: message", None);
    let _ = write!(
        s,
        r#"<main><p><a href="/">back</a></p><h1>Message {}</h1><table class="record"><tr><th>receive count</th><td>{}</td></tr>"#,
        escape(&d.message_id),
        d.receive_count
    );
    for (k, v) in &d.attributes {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    let body = String::from_utf8_lossy(&d.body);
    let _ = write!(
        s,
        r#"</table><h2>Body</h2><pre id="body">{}</pre></main></body></html>"#,
        escape(&body)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape(r#"<b a="1">&'"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
        let o = Overview {
            groups_current: true,
            by_reason: vec![Group {
                key: "<script>alert(1)</script>".to_owned(),
                count: 1,
                ..Group::default()
            }],
            ..Overview::default()
        };
        let job = JobView {
            started: false,
            running: false,
            planned: 0,
            replayed: 0,
            skipped: 0,
            failed: 0,
            error: None,
        };
        let html = index(&o, None, &job, "t");
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)"));
    }
}
