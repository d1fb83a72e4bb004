//! `hookline-worker`: see the crate docs of `hookline_worker`.

use clap::Parser;
use hookline_worker::{Worker, WorkerArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = WorkerArgs::parse();
    hookline_core::telemetry::init(args.common.log_format());
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                message = "hookline-worker failed.",
                error = format!("{error:#}")
            );
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let worker = Worker::build(args).await?;
    let shutdown = hookline_core::shutdown::on_signal();
    worker.run_until(shutdown).await?;
    Ok(())
}
