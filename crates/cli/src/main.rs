//! `hookline`: the operator tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hookline",
    version,
    about = "Hookline operator tool.",
    after_help = "Example:\n  STRIPE_WEBHOOK_SECRET=whsec_test_dev hookline dev send payment_intent.succeeded"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Developer helpers.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Sign a sample event of TYPE with STRIPE_WEBHOOK_SECRET and post it to the ingress.
    #[command(
        after_help = "Example:\n  hookline dev send payout.updated --url http://127.0.0.1:8080/api/stripe-webhook"
    )]
    Send(hookline_cli::dev::SendArgs),
    /// Create the SQS queue + DLQ and the DynamoDB tables on the configured endpoint (local AWS).
    #[command(
        after_help = "Example:\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 hookline dev aws-setup --queue-name hookline-events"
    )]
    AwsSetup(hookline_cli::dev::AwsSetupArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(DevCommand::AwsSetup(args)) => {
            let pair = hookline_cli::dev::aws_setup(&args).await?;
            println!("QUEUE_URL={}", pair.queue_url);
            println!("DLQ_URL={}", pair.dlq_url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(DevCommand::Send(args)) => {
            let (id, status, body) = hookline_cli::dev::send(&args).await?;
            println!("{id} -> {status} {body}");
            Ok(if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
