//! `hookline erase`: a deletion request (right to erasure) for an account,
//! an object or an event. Without `--yes` it only counts.

use std::process::ExitCode;

use hookline_backend::BackendKind;
use hookline_core::clock::{rfc3339, unix_secs};
use hookline_core::erase::{erase, Found};
use hookline_core::ports::Subject;

use crate::opts::BackendOpts;

/// `hookline erase` arguments.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["account", "object", "event"])))]
pub struct EraseArgs {
    /// A connected account (acct_…): its provider item, the objects of that account, the ledger items and queued messages of its events.
    #[arg(long)]
    pub account: Option<String>,
    /// One object (pi_, po_, du_, acct_, …): its item, the ledger items and queued messages of its events.
    #[arg(long)]
    pub object: Option<String>,
    /// One event (evt_…): its ledger item and its queued messages.
    #[arg(long)]
    pub event: Option<String>,
    /// Count what would be removed and remove nothing (the default).
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Remove it, and print the receipt.
    #[arg(long)]
    pub yes: bool,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: BackendOpts,
}

impl EraseArgs {
    fn subject(&self) -> Option<Subject> {
        match (&self.account, &self.object, &self.event) {
            (Some(a), _, _) => Some(Subject::Account(a.clone())),
            (_, Some(o), _) => Some(Subject::Object(o.clone())),
            (_, _, Some(e)) => Some(Subject::Event(e.clone())),
            _ => None,
        }
    }
}

/// The receipt, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
struct Receipt<'a> {
    subject: String,
    removed: bool,
    at: String,
    backend: &'static str,
    /// Where each kind of record lives (tables, queues or file).
    stores: serde_json::Value,
    #[serde(flatten)]
    found: &'a Found,
}

pub async fn cmd(args: &EraseArgs) -> anyhow::Result<ExitCode> {
    let Some(subject) = args.subject() else {
        anyhow::bail!("name one of --account, --object, --event");
    };
    // Every place an event's data can be is reached, or nothing is done:
    // on AWS the DLQ holds dead-lettered events, and without DLQ_URL a
    // receipt would say "DLQ messages 0" while they stay.
    let (b, dlq) = args.backend.open_with_dlq().await.map_err(|e| {
        anyhow::anyhow!("erase must reach every place the subject's records are: {e:#}")
    })?;
    let remove = args.yes;
    let found = erase(
        &subject,
        b.store.as_ref(),
        b.queue.as_ref(),
        Some(dlq.as_ref()),
        remove,
    )
    .await?;
    let common = &args.backend.common;
    let tables = &args.backend.tables;
    let (backend, stores) = match &b.kind {
        BackendKind::Embedded { path } => (
            "embedded",
            serde_json::json!({ "file": path.display().to_string() }),
        ),
        BackendKind::Aws { .. } => (
            "aws",
            serde_json::json!({
                "provider_table": tables.provider_table_name,
                "objects_table": tables.objects_table_name,
                "events_table": tables.events_table_name,
                "dlq": common.dlq_url,
                "queue": common.queue_url,
            }),
        ),
    };
    let receipt = Receipt {
        subject: subject.describe(),
        removed: remove,
        at: rfc3339(unix_secs()),
        backend,
        stores,
        found: &found,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
    } else {
        print!("{}", human(&receipt));
    }
    Ok(ExitCode::SUCCESS)
}

fn human(r: &Receipt<'_>) -> String {
    let f = r.found;
    let mut out = match r.removed {
        true => format!(
            "Erased {} at {} ({} backend). Removed:\n",
            r.subject, r.at, r.backend
        ),
        false => format!(
            "Would erase {} ({} backend; nothing removed, --yes removes it):\n",
            r.subject, r.backend
        ),
    };
    let line = |out: &mut String, what: &str, ids: &[String]| {
        out.push_str(&format!("  {what:<15} {:>5}", ids.len()));
        if r.removed && !ids.is_empty() {
            out.push_str(&format!("  {}", ids.join(" ")));
        }
        out.push('\n');
    };
    line(&mut out, "provider items", &f.items.providers);
    line(&mut out, "objects", &f.items.objects);
    line(&mut out, "ledger items", &f.items.events);
    line(&mut out, "DLQ messages", &f.dlq_messages);
    out.push_str(&format!(
        "  {:<15} {:>5}  (each message of the DLQ read once)\n",
        "DLQ read", f.dlq_read
    ));
    match &f.queue_messages {
        Some(ids) => line(&mut out, "queue messages", ids),
        None => out.push_str(
            "  queue messages      -  (SQS: read only by receiving; the worker applies and deletes them)\n",
        ),
    }
    if let serde_json::Value::Object(stores) = &r.stores {
        let at: Vec<String> = stores
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| format!("{k} {v}")))
            .collect();
        out.push_str(&format!("Where: {}\n", at.join(", ")));
    }
    out.push_str(
        "Not covered: CloudWatch Logs (they carry ids, never a body or a personal field), \
         what the routes sent to your own destinations, and an event Stripe sends after this \
         (it is applied as usual).\n",
    );
    out
}
