//! The secrets the backend hands out, each a
//! [`Refreshing`] value read from
//! Secrets Manager: the Stripe API key (checked against the key-mode rule
//! at every read, its version recorded for `/metrics`) and an HTTP
//! destination's signing secret.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::loaded_secrets::{Loaded, LoadedSecrets};
use hookline_core::refresh::{Reader, Refreshing, Rejected};
use hookline_core::secrets::{ResolveError, SecretSource};
use hookline_core::settings::AppEnv;
use secrecy::SecretString;

use crate::BackendError;

/// The API key in Secrets Manager `id`, read now (a read that fails, or a
/// key of the wrong mode, stops the start) and every `every` after (where
/// it keeps the last good key).
pub(crate) async fn api_key(
    source: Arc<dyn SecretSource>,
    id: &str,
    env: AppEnv,
    every: Duration,
    loaded: Arc<LoadedSecrets>,
) -> Result<Refreshing<SecretString>, BackendError> {
    let first = source
        .fetch_versioned(id)
        .await
        .map_err(|source| ResolveError::Read {
            id: id.to_owned(),
            source,
        })?;
    hookline_core::secrets::check_key_mode(env, &first.value)?;
    loaded.record(api_key_loaded(
        Some(id),
        first.version.clone(),
        &first.value,
    ));
    let loaded_id = id.to_owned();
    let reader = Reader {
        what: "Stripe API key".to_owned(),
        source,
        id: id.to_owned(),
        every,
        parse: Arc::new(move |v| {
            hookline_core::secrets::check_key_mode(env, &v.value)
                .map(|()| v.value.clone())
                .map_err(|e| Rejected {
                    problem: "the Stripe API key in Secrets Manager breaks the key-mode rule",
                    log: "The Stripe API key in Secrets Manager breaks the key-mode rule; keeping the last good key.",
                    detail: e.to_string(),
                })
        }),
        on_load: Some(Arc::new(move |v, key: &SecretString| {
            loaded.record(api_key_loaded(Some(&loaded_id), v.version.clone(), key));
        })),
    };
    Ok(Refreshing::after_first_read(
        reader,
        first.version,
        first.value,
    ))
}

/// An HTTP destination's signing secret in Secrets Manager `id`, read now
/// (a read that fails stops the start); with `refresh`, read again at that
/// interval, so a rotated secret needs no restart.
pub(crate) async fn signing_secret(
    name: &str,
    source: Arc<dyn SecretSource>,
    id: &str,
    refresh: Option<Duration>,
) -> Result<Refreshing<SecretString>, BackendError> {
    let first =
        source
            .fetch_versioned(id)
            .await
            .map_err(|source| BackendError::DestinationSecret {
                name: name.to_owned(),
                id: id.to_owned(),
                source,
            })?;
    let Some(every) = refresh else {
        return Ok(Refreshing::fixed(first.value));
    };
    let reader = Reader {
        what: format!("destination {name}'s signing secret"),
        source,
        id: id.to_owned(),
        every,
        parse: Arc::new(|v| Ok(v.value.clone())),
        on_load: None,
    };
    Ok(Refreshing::after_first_read(
        reader,
        first.version,
        first.value,
    ))
}

/// The API key as loaded now (its mode, never its value).
pub(crate) fn api_key_loaded(
    id: Option<&str>,
    version: Option<String>,
    key: &SecretString,
) -> Loaded {
    let mode = hookline_core::secrets::key_mode(key);
    Loaded::now("api_key", id, version, mode, 1)
}
