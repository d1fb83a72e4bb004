//! `hookline-ingress`: see the crate docs of `hookline_ingress`.

use clap::Parser;
use hookline_ingress::{Application, IngressArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = IngressArgs::parse();
    hookline_core::telemetry::init(args.common.log_format());
    match run(args).await {
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
