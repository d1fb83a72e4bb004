//! The embedded backend: Hookline's queue and store on one SQLite file
//! under `DATA_DIR`, so that `make run` works with no AWS at all.
//!
//! Same semantics as the AWS backend: a message is durable once
//! [`Queue::send_batch`](hookline_core::ports::Queue::send_batch) returns
//! (WAL, `synchronous=FULL`), a received message
//! is hidden for its visibility timeout, each receive counts, and a message
//! received `MAX_RECEIVES` times is moved to the dead-letter queue on the
//! next receive, as SQS's redrive policy does. Several processes on one host
//! share the file: every state change is part of a `BEGIN IMMEDIATE`
//! transaction.
//!
//! In one process the three handles share one connection, owned by one
//! thread: calls that arrive while it commits are committed together
//! (group commit: one WAL sync for many sends, claims, completions and
//! deletes), and each caller is answered only after that commit.
//!
//! Architecture invariant: the only crate that imports `rusqlite`.

mod db;
#[cfg(feature = "test-support")]
pub mod testing;
pub use db::ConnectError;
mod queue;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use queue::EmbeddedQueue;
#[cfg(feature = "test-support")]
pub use queue::StoredMessage;
pub use store::EmbeddedStore;

/// Queue names inside the database file.
pub const MAIN_QUEUE: &str = "main";
pub const DEAD_LETTER_QUEUE: &str = "dlq";

/// File name of the database inside `DATA_DIR`.
pub const DB_FILE: &str = "hookline.sqlite";

/// Why the embedded backend cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: db::ConnectError,
    },
}

/// How the embedded backend behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Deliveries before a message moves to the DLQ.
    pub max_receives: u32,
    /// How long a writer waits for another process's lock before the call
    /// fails as transient.
    pub busy_timeout: Duration,
    /// How often an empty long poll looks again.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_receives: 5,
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// The three handles on one database file.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub queue: Arc<EmbeddedQueue>,
    pub dlq: Arc<EmbeddedQueue>,
    pub store: Arc<EmbeddedStore>,
}

/// Creates `dir` (and missing parents) readable by this user only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the database file `0600` before SQLite opens it (SQLite gives
/// its `-wal` and `-shm` files the database file's mode), and narrows the
/// mode of a file an earlier version created wider.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The database path for a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens (creating if needed) the backend under `data_dir`.
///
/// The files hold raw webhook bodies (personal data): a directory it
/// creates is `0700`, and the database and its WAL files are `0600`.
pub fn open(data_dir: &Path, options: Options) -> Result<Embedded, OpenError> {
    let dir_error = |source| OpenError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    private_dir(data_dir).map_err(dir_error)?;
    let path = db_path(data_dir);
    private_file(&path).map_err(|source| OpenError::DataDir {
        path: path.clone(),
        source,
    })?;
    let db = db::connect(&path, options.busy_timeout).map_err(|source| OpenError::Database {
        path: path.clone(),
        source,
    })?;
    let queue = EmbeddedQueue::new(
        db.clone(),
        MAIN_QUEUE,
        Some((DEAD_LETTER_QUEUE, options.max_receives)),
        options.poll_interval,
    );
    let dlq = EmbeddedQueue::new(db.clone(), DEAD_LETTER_QUEUE, None, options.poll_interval);
    let store = EmbeddedStore::new(db);
    Ok(Embedded {
        queue: Arc::new(queue),
        dlq: Arc::new(dlq),
        store: Arc::new(store),
    })
}
