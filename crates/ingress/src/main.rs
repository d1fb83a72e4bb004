//! `hookline-ingress`: see the crate docs of `hookline_ingress`.

use hookline_ingress::{Application, IngressArgs};

fn main() -> std::process::ExitCode {
    let args: IngressArgs = hookline_settings::parse_or_exit();
    hookline_settings::init_logging("hookline-ingress", args.common.log_format());
    // One event-loop thread by default: it serves tens of thousands of
    // requests a second and avoids cross-thread wake-ups (about a quarter of
    // the CPU per event in the load benchmark). Scale out with more tasks.
    let threads = usize::from(args.ingress_threads);
    hookline_settings::run_service("hookline-ingress", threads, run(args))
}

async fn run(args: IngressArgs) -> anyhow::Result<()> {
    let app = Application::build(args, Default::default()).await?;
    let shutdown = hookline_core::shutdown::on_signal();
    app.run_until(shutdown).await?;
    Ok(())
}
