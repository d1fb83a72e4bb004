//! What every command shares for its output: JSON for scripts, ages for
//! people, and the signal that interrupts a command politely.

use tokio_util::sync::CancellationToken;

/// One JSON document on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Cancelled on ctrl-c or SIGTERM, so held messages are released.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        hookline_core::shutdown::wait_for_signal().await;
        eprintln!("interrupted: releasing held messages");
        fire.cancel();
    });
    token
}

/// `42s`, `17m`, `5h`, `3d`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
