//! `hookline dev send`: sign a fixture event and post it to the ingress.

use anyhow::{bail, Context};
use secrecy::ExposeSecret;

use hookline_core::clock::unix_secs;
use hookline_core::secrets::parse_webhook_secrets;
use hookline_settings::WebhookSecretSettings;

/// Arguments of `hookline dev send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Event type of the fixture to send (one of the six default types).
    pub event_type: String,

    /// Ingress webhook URL.
    #[arg(
        long,
        env = "HOOKLINE_URL",
        default_value = "http://127.0.0.1:8080/api/stripe-webhook"
    )]
    pub url: String,

    #[command(flatten)]
    pub webhook: WebhookSecretSettings,

    /// `webhook`: sign and post to the ingress. `eventbridge`: put the event
    /// on the queue directly, wrapped as an Amazon EventBridge rule delivers
    /// it (no ingress, no signature).
    #[arg(long, value_enum, default_value = "webhook")]
    pub via: Via,

    #[command(flatten)]
    pub backend: crate::opts::BackendOpts,
}

/// How `dev send` delivers the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Webhook,
    Eventbridge,
}

/// Puts a sample event on the queue wrapped as EventBridge delivers it;
/// returns the event id.
pub async fn send_via_eventbridge(args: &SendArgs) -> anyhow::Result<String> {
    let now = unix_secs();
    let Some(event) = crate::fixtures::fresh_event(&args.event_type, now) else {
        let known: Vec<&str> = crate::fixtures::EVENTS.iter().map(|(t, _)| *t).collect();
        bail!(
            "no sample event of type {}; known types: {}",
            args.event_type,
            known.join(", ")
        );
    };
    let envelope = hookline_core::envelope::Envelope::parse(event.as_bytes())?;
    let body = hookline_core::inbound::eventbridge_envelope(&event, "123456789012", "us-east-1")?;
    let backend = args.backend.open().await?;
    // As an EventBridge SQS target sends it: the envelope, no attributes.
    let message = hookline_core::message::OutboundMessage {
        body: bytes::Bytes::from(body),
        attributes: Default::default(),
        group_id: envelope
            .object_id
            .clone()
            .unwrap_or_else(|| envelope.id.to_string()),
        dedup_id: envelope.id.to_string(),
    }
    .as_copy();
    match backend
        .queue
        .send_batch(std::slice::from_ref(&message))
        .await
        .pop()
    {
        Some(Ok(())) => Ok(envelope.id.to_string()),
        Some(Err(e)) => Err(e.into()),
        None => bail!("the queue gave no answer"),
    }
}

/// Sends the event; returns the event id and the ingress's answer.
pub async fn send(args: &SendArgs) -> anyhow::Result<(String, u16, String)> {
    let Some(value) = &args.webhook.stripe_webhook_secret else {
        bail!("STRIPE_WEBHOOK_SECRET is required to sign the event");
    };
    let secrets = parse_webhook_secrets(value)?;
    let Some(secret) = secrets.first() else {
        bail!("STRIPE_WEBHOOK_SECRET is empty");
    };
    let now = unix_secs();
    let Some(body) = crate::fixtures::fresh_event(&args.event_type, now) else {
        let known: Vec<&str> = crate::fixtures::EVENTS.iter().map(|(t, _)| *t).collect();
        bail!(
            "no sample event of type {}; known types: {}",
            args.event_type,
            known.join(", ")
        );
    };
    let id = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let header =
        hookline_signature::header_for(secret.expose_secret().as_bytes(), now, body.as_bytes());
    let response = reqwest::Client::new()
        .post(&args.url)
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the ingress at {}", args.url))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((id, status, text))
}

/// Arguments of `hookline dev aws-setup`.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsSetupArgs {
    /// Queue name; the DLQ is NAME-dlq (a `.fifo` name makes both FIFO).
    #[arg(long, default_value = "hookline-events")]
    pub queue_name: String,

    #[command(flatten)]
    pub tables: hookline_settings::TableSettings,

    /// Deliveries before SQS redrives a message to the DLQ.
    #[arg(long, env = "MAX_RECEIVES", default_value_t = 5)]
    pub max_receives: u32,

    /// Default visibility timeout of the queue, seconds.
    #[arg(long, env = "VISIBILITY_TIMEOUT_SECS", default_value_t = 30)]
    pub visibility_timeout_secs: u64,
}

/// Creates the queue, DLQ and tables on the endpoint the AWS settings name
/// (for a local AWS-compatible server); prints the settings to export.
pub async fn aws_setup_cmd(args: &AwsSetupArgs) -> anyhow::Result<std::process::ExitCode> {
    let (queue_url, dlq_url) = hookline_backend::provision_aws(
        &args.queue_name,
        args.max_receives,
        args.visibility_timeout_secs,
        &args.tables,
    )
    .await?;
    println!("QUEUE_URL={queue_url}");
    println!("DLQ_URL={dlq_url}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// `dev send`: posts to the ingress, or puts the event on the queue as
/// EventBridge would; exit 1 unless it was accepted.
pub async fn send_cmd(args: &SendArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.via == Via::Eventbridge {
        let id = send_via_eventbridge(args).await?;
        println!("{id} -> queued as Amazon EventBridge delivers it");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let (id, status, body) = send(args).await?;
    println!("{id} -> {status} {body}");
    Ok(if (200..300).contains(&status) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
