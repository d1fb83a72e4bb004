//! `hookline-ingress`: see the crate docs of `hookline_ingress`.

use std::time::Duration;

use hookline_ingress::{Application, IngressArgs};

fn main() -> std::process::ExitCode {
    let args: IngressArgs = hookline_settings::parse_or_exit();
    hookline_settings::init_logging(args.common.log_format());
    // One event-loop thread by default: it serves tens of thousands of
    // requests a second and avoids cross-thread wake-ups (about a quarter of
    // the CPU per event in the load benchmark). Scale out with more tasks.
    let runtime = match args.ingress_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                message = "hookline-ingress failed.",
                error = format!("{error:#}")
            );
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: IngressArgs) -> anyhow::Result<()> {
    let app = Application::build(args, Default::default()).await?;
    let shutdown = hookline_core::shutdown::on_signal();
    app.run_until(shutdown).await?;
    Ok(())
}
