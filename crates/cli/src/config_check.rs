//! `hookline config check`: the settings as the services load them, the
//! key-mode rules, and whether every backend resource answers. Secrets are
//! shown masked (`whsec_… (38 chars)`), never in full.

use std::time::Duration;

use hookline_core::secrets::{check_key_mode, mask, webhook_secrets, SecretSetting};
use hookline_settings::{EventSettings, RouteSettings, WebhookSecretSettings};

use crate::opts::BackendOpts;

/// Arguments of `hookline config check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub backend: BackendOpts,
    #[command(flatten)]
    pub webhook: WebhookSecretSettings,
    #[command(flatten)]
    pub events: EventSettings,
    #[command(flatten)]
    pub routes: RouteSettings,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    pub what: &'static str,
    pub detail: String,
}

fn line(ok: bool, what: &'static str, detail: impl Into<String>) -> Line {
    Line {
        ok,
        what,
        detail: detail.into(),
    }
}

/// Runs every check; the report never holds a secret value.
pub async fn run(args: &CheckArgs) -> Vec<Line> {
    let c = &args.backend.common;
    let mut report = vec![
        line(true, "APP_ENV", c.app_env.as_str()),
        line(
            true,
            "ENABLED_EVENTS",
            args.events.enabled_events.to_string(),
        ),
    ];
    let routes = args.routes.load(&args.events.enabled_events, c.app_env);
    match &routes {
        Ok(_) if args.routes.routes_file.is_none() && args.routes.routes.is_none() => {
            report.push(line(true, "routes", "none: every type to the projections"));
        }
        Ok(r) => {
            let names: Vec<String> = r
                .destinations()
                .iter()
                .map(|d| format!("{} ({})", d.name, d.events.join(", ")))
                .collect();
            report.push(line(true, "routes", names.join("; ")));
        }
        Err(e) => report.push(line(false, "routes", e.to_string())),
    }
    let backend = match hookline_backend::open(c, &args.backend.tables, Default::default()).await {
        Ok(b) => b,
        Err(e) => {
            report.push(line(false, "backend", format!("cannot open: {e}")));
            return report;
        }
    };
    report.push(line(true, "backend", backend.kind.to_string()));

    // Stripe API key: where it comes from and whether its mode fits APP_ENV
    // (the same resolution the services use).
    let source = backend.secrets().await;
    let key = SecretSetting::of(&c.stripe_secret_key_id, &c.stripe_secret_key);
    let origin = key.origin("STRIPE_SECRET_KEY");
    match key.value(source.as_ref()).await {
        Ok(None) => report.push(line(
            true,
            "Stripe API key",
            "not set (only backfill needs it)",
        )),
        Ok(Some(k)) => match check_key_mode(c.app_env, &k) {
            Ok(()) => report.push(line(
                true,
                "Stripe API key",
                format!("{} {origin}", mask(&k)),
            )),
            Err(e) => report.push(line(
                false,
                "Stripe API key",
                format!("{} {origin}: {e}", mask(&k)),
            )),
        },
        Err(e) => report.push(line(false, "STRIPE_SECRET_KEY_ID", e.to_string())),
    }

    // Webhook secrets.
    let webhook = SecretSetting::of(
        &args.webhook.stripe_webhook_secret_id,
        &args.webhook.stripe_webhook_secret,
    );
    let origin = webhook.origin("STRIPE_WEBHOOK_SECRET");
    let secrets = match webhook {
        SecretSetting::Unset => Err(
            "not set: the ingress needs STRIPE_WEBHOOK_SECRET or STRIPE_WEBHOOK_SECRET_ID"
                .to_owned(),
        ),
        _ => webhook_secrets(webhook, source.as_ref())
            .await
            .map(|s| (s, origin))
            .map_err(|e| e.to_string()),
    };
    match secrets {
        Ok((s, origin)) => {
            let masked: Vec<String> = s.iter().map(mask).collect();
            report.push(line(
                true,
                "webhook secrets",
                format!("{} {origin}: {}", s.len(), masked.join(", ")),
            ));
        }
        Err(e) => report.push(line(false, "webhook secrets", e)),
    }

    // Each destination can be built, its signing secret read.
    if let Some(r) = routes.as_ref().ok().filter(|r| !r.is_projections_only()) {
        match backend.destinations(r, None).await {
            Ok(d) => report.push(line(
                true,
                "destinations",
                format!("{} ready, signing secrets read", d.len()),
            )),
            Err(e) => report.push(line(false, "destinations", e.to_string())),
        }
    }

    // Every resource answers.
    let timeout = Duration::from_secs(10);
    match tokio::time::timeout(timeout, backend.queue.counts()).await {
        Ok(Ok(q)) => report.push(line(
            true,
            "queue",
            format!("answers: {} waiting, {} in flight", q.waiting, q.in_flight),
        )),
        Ok(Err(e)) => report.push(line(false, "queue", e.to_string())),
        Err(_) => report.push(line(false, "queue", "no answer within 10 s")),
    }
    match &backend.dlq {
        None => report.push(line(
            false,
            "dead-letter queue",
            hookline_settings::MissingDlq.to_string(),
        )),
        Some(dlq) => match tokio::time::timeout(timeout, dlq.counts()).await {
            Ok(Ok(q)) => report.push(line(
                true,
                "dead-letter queue",
                format!("answers: {} messages", q.waiting + q.in_flight),
            )),
            Ok(Err(e)) => report.push(line(false, "dead-letter queue", e.to_string())),
            Err(_) => report.push(line(false, "dead-letter queue", "no answer within 10 s")),
        },
    }
    let t = &args.backend.tables;
    match tokio::time::timeout(timeout, backend.store.ping()).await {
        Ok(Ok(())) => report.push(line(
            true,
            "tables",
            format!(
                "answer: {}, {}, {}",
                t.events_table_name, t.objects_table_name, t.provider_table_name
            ),
        )),
        Ok(Err(e)) => report.push(line(false, "tables", e.to_string())),
        Err(_) => report.push(line(false, "tables", "no answer within 10 s")),
    }
    report
}

/// The report as text, one line per check.
pub fn render(report: &[Line]) -> String {
    let width = report.iter().map(|l| l.what.len()).max().unwrap_or(0);
    report
        .iter()
        .map(|l| {
            format!(
                "{} {:<width$}  {}\n",
                if l.ok { "ok  " } else { "FAIL" },
                l.what,
                l.detail
            )
        })
        .collect()
}

/// `config check`: prints the report; exit 1 on any problem.
pub async fn cmd(args: &CheckArgs) -> std::process::ExitCode {
    let report = run(args).await;
    print!("{}", render(&report));
    if report.iter().all(|l| l.ok) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
