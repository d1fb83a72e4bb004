//! `hookline-worker`: see the crate docs of `hookline_worker`.

use hookline_worker::{Worker, WorkerArgs};

fn main() -> std::process::ExitCode {
    let args: WorkerArgs = hookline_settings::parse_or_exit();
    hookline_settings::init_logging("hookline-worker", args.common.log_format());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    hookline_settings::run_service("hookline-worker", threads.max(2), run(args))
}

async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let worker = Worker::build(args).await?;
    let shutdown = hookline_core::shutdown::on_signal();
    worker.run_until(shutdown).await?;
    Ok(())
}
