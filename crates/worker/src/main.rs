//! `hookline-worker`: see the crate docs of `hookline_worker`.

use std::time::Duration;

use hookline_worker::{Worker, WorkerArgs};

fn main() -> std::process::ExitCode {
    let args: WorkerArgs = hookline_settings::parse_or_exit();
    hookline_settings::init_logging(args.common.log_format());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // An abandoned store call may still sit on a blocking thread (a database
    // that never answers): exit without waiting for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
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
