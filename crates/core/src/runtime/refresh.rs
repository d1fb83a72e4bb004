//! The one way a secret stays current: a [`Refreshing`] value. A secret
//! given in the environment is [`Refreshing::fixed`]; one held in Secrets
//! Manager is read again every `SECRET_REFRESH_SECS` by a task of its own
//! ([`Refreshing::spawn_or`], [`Refreshing::after_first_read`]), so a
//! rotated secret needs no restart. A read
//! that fails, or a value the reader refuses (a placeholder, a key of the
//! wrong mode), keeps the last good value, logs why, and leaves the
//! [`Refreshing::problem`] a health check can show. The task ends when the
//! last handle to the value is dropped.
//!
//! The webhook secrets, the Stripe API key and each HTTP destination's
//! signing secret are all read this way.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::ports::ErrorKind;
use crate::secrets::{SecretSource, Versioned};

/// A value read from a secret, as Hookline uses it now.
#[derive(Debug, Clone)]
pub struct Refreshing<T> {
    current: watch::Receiver<Arc<T>>,
    problem: Arc<Mutex<Option<&'static str>>>,
}

/// Why a value read was not taken, in words of our own: `problem` for a
/// health check (no AWS error text: account ids, role ARNs), `log` for the
/// warning, `detail` the error itself (for the log only).
#[derive(Debug, Clone)]
pub struct Rejected {
    pub problem: &'static str,
    pub log: &'static str,
    pub detail: String,
}

/// Turns a secret's value into what its user holds, or refuses it.
pub type Parse<T> = Arc<dyn Fn(&Versioned) -> Result<T, Rejected> + Send + Sync>;

/// Called with each value taken (to record the version loaded).
pub type OnLoad<T> = Arc<dyn Fn(&Versioned, &T) + Send + Sync>;

/// Where a refreshing value comes from and how it is read.
pub struct Reader<T> {
    /// What the secret is, for log lines ("webhook secret", "Stripe API key").
    pub what: String,
    pub source: Arc<dyn SecretSource>,
    pub id: String,
    pub every: Duration,
    pub parse: Parse<T>,
    pub on_load: Option<OnLoad<T>>,
}

/// While a reader has never loaded a value, it tries again this often.
const UNTIL_LOADED: Duration = Duration::from_secs(5);

const UNREACHABLE: &str = "Secrets Manager did not answer";
const REFUSED: &str =
    "Secrets Manager refused to read the secret (access denied, no such secret, or its KMS key)";

impl<T: Send + Sync + 'static> Refreshing<T> {
    /// A value that never changes (given in the environment).
    pub fn fixed(value: T) -> Self {
        let (_, current) = watch::channel(Arc::new(value));
        Self {
            current,
            problem: Arc::default(),
        }
    }

    /// The value in use now.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.borrow())
    }

    /// Why the last read was not taken, while it was not.
    pub fn problem(&self) -> Option<&'static str> {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the secret once now, then keeps reading it every
    /// `reader.every`; `empty` serves until a first value is taken (reads
    /// come every few seconds meanwhile).
    pub async fn spawn_or(reader: Reader<T>, empty: T) -> Self {
        match read(&reader).await {
            Ok((version, value)) => Self::keep(reader, Some(version), value, None),
            Err(rejected) => {
                warn(&reader, &rejected);
                Self::keep(reader, None, empty, Some(rejected.problem))
            }
        }
    }

    /// Keeps a value the caller read itself (its first read's failure is
    /// the caller's to report) current from `reader`.
    pub fn after_first_read(reader: Reader<T>, version: Option<String>, value: T) -> Self {
        Self::keep(reader, Some(version), value, None)
    }

    fn keep(
        reader: Reader<T>,
        version: Option<Option<String>>,
        value: T,
        problem: Option<&'static str>,
    ) -> Self {
        let (tx, current) = watch::channel(Arc::new(value));
        let this = Self {
            current,
            problem: Arc::new(Mutex::new(problem)),
        };
        tokio::spawn(keep_fresh(reader, tx, Arc::clone(&this.problem), version));
        this
    }
}

/// One read: the secret fetched and parsed, recorded when taken; with the
/// version read (`None` where the source tells none).
async fn read<T>(reader: &Reader<T>) -> Result<(Option<String>, T), Rejected> {
    let versioned = reader
        .source
        .fetch_versioned(&reader.id)
        .await
        .map_err(|e| Rejected {
            problem: match e.kind() {
                ErrorKind::Transient => UNREACHABLE,
                _ => REFUSED,
            },
            log: "Cannot refresh a secret from Secrets Manager; keeping the last good value.",
            detail: e.to_string(),
        })?;
    let value = (reader.parse)(&versioned)?;
    if let Some(on_load) = &reader.on_load {
        on_load(&versioned, &value);
    }
    Ok((versioned.version, value))
}

fn warn<T>(reader: &Reader<T>, rejected: &Rejected) {
    tracing::warn!(
        message = rejected.log,
        secret = %reader.what,
        secret_id = %reader.id,
        error = %rejected.detail,
    );
}

/// The refresh loop; it ends once nobody holds the value. `version` is
/// the version in use, `None` until a first value is taken.
async fn keep_fresh<T: Send + Sync + 'static>(
    reader: Reader<T>,
    tx: watch::Sender<Arc<T>>,
    problem: Arc<Mutex<Option<&'static str>>>,
    mut version: Option<Option<String>>,
) {
    loop {
        let wait = match version {
            Some(_) => reader.every,
            None => reader.every.min(UNTIL_LOADED),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = tx.closed() => return,
        }
        let read = read(&reader).await;
        let mut problem = problem.lock().unwrap_or_else(PoisonError::into_inner);
        match read {
            Ok((read, value)) => {
                if problem.take().is_some() {
                    tracing::info!(message = "Secret read again.", secret = %reader.what, secret_id = %reader.id);
                }
                if version.as_ref().is_some_and(|v| *v != read) {
                    tracing::info!(message = "Secret rotated.", secret = %reader.what, secret_id = %reader.id);
                }
                tx.send_replace(Arc::new(value));
                version = Some(read);
            }
            Err(rejected) => {
                warn(&reader, &rejected);
                *problem = Some(rejected.problem);
            }
        }
    }
}
