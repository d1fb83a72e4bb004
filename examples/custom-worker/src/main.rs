//! A team's own worker: `hookline-worker`'s settings, queue, ledger,
//! retries, DLQ and metrics, plus one handler of its own. When a Checkout
//! Session completes, it grants access to the user the session was opened
//! for (`client_reference_id`) by writing `GRANTS_DIR/<user>`.
//!
//! Run it like `hookline-worker`, with the type enabled:
//! `ENABLED_EVENTS=checkout.session.completed GRANTS_DIR=./grants custom-worker`.

use hookline_worker::handler::{async_trait, Effect, Event, Failure, Handler, Handlers};

struct GrantAccess {
    dir: std::path::PathBuf,
}

#[async_trait]
impl Handler for GrantAccess {
    async fn handle(&self, event: Event<'_>) -> Result<(), Failure> {
        let event: serde_json::Value = serde_json::from_slice(event.body)
            .map_err(|e| Failure::permanent(format!("not JSON: {e}")))?;
        let session = &event["data"]["object"];
        // Stripe leaves it null unless the page that opened the session set it.
        let Some(user) = session["client_reference_id"].as_str() else {
            return Err(Failure::permanent(
                "no client_reference_id: whose access to grant?",
            ));
        };
        if user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Failure::permanent(format!(
                "client_reference_id {user:?} is not a user id"
            )));
        }
        // Writing the same grant twice leaves the same file: Effect::Replace.
        tokio::fs::write(
            self.dir.join(user),
            session["id"].as_str().unwrap_or_default(),
        )
        .await
        .map_err(|e| Failure::transient(format!("cannot write the grant: {e}")))
    }
}

fn main() -> std::process::ExitCode {
    let dir = std::env::var_os("GRANTS_DIR").unwrap_or_else(|| "grants".into());
    hookline_worker::handler::main(Handlers::new().on(
        "checkout.session.completed",
        Effect::Replace,
        GrantAccess { dir: dir.into() },
    ))
}
