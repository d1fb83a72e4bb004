//! Connection set-up, schema and error classification.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_core::ports::PortError;
use rusqlite::{Connection, ErrorCode};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    attributes     TEXT    NOT NULL,
    group_id       TEXT    NOT NULL,
    dedup_id       TEXT    NOT NULL,
    sent_at        INTEGER NOT NULL,
    visible_at     INTEGER NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    receipt        TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, seq);

CREATE TABLE IF NOT EXISTS events (
    event_id      TEXT PRIMARY KEY,
    status        TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    attempts      INTEGER NOT NULL,
    outcome       TEXT,
    last_error    TEXT,
    completed_at  TEXT,
    expires_at    INTEGER NOT NULL,
    lease_until   INTEGER,
    lease_owner   TEXT,
    source        TEXT,
    object_id     TEXT
);

CREATE TABLE IF NOT EXISTS objects (
    object_id           TEXT PRIMARY KEY,
    last_event_created  INTEGER NOT NULL,
    item                TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS providers (
    stripe_account_id   TEXT PRIMARY KEY,
    last_event_created  INTEGER NOT NULL,
    item                TEXT    NOT NULL
);
";

/// A connection shared by one adapter; SQLite calls run on the blocking pool.
pub(crate) type Shared = Arc<Mutex<Connection>>;

pub(crate) fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Shared> {
    // Processes starting together (`make run`) race to switch a new file to
    // WAL and create the schema; SQLite answers some of those races with
    // "locked" without waiting, so the whole set-up is retried within the
    // busy timeout.
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match set_up(path, busy_timeout) {
            Ok(conn) => return Ok(Arc::new(Mutex::new(conn))),
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn set_up(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed send survives power loss, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Brings a database written by an earlier version up to this schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for column in ["lease_owner", "source", "object_id"] {
        let present: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = ?1")?
            .exists([column])?;
        if !present {
            // Another process may have added it first; that is fine.
            match conn.execute_batch(&format!("ALTER TABLE events ADD COLUMN {column} TEXT")) {
                Ok(()) => {}
                Err(e) if e.to_string().contains("duplicate column") => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Runs `f` with the connection on tokio's blocking pool.
pub(crate) async fn with_conn<T, F>(conn: &Shared, f: F) -> Result<T, PortError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| PortError::transient("database connection poisoned".to_owned()))?;
        f(&mut guard).map_err(classify)
    })
    .await
    .map_err(|e| PortError::transient(format!("database task failed: {e}")))?
}

/// Lock contention and I/O trouble are transient; the rest is permanent.
pub(crate) fn classify(e: rusqlite::Error) -> PortError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    );
    let configuration = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::AuthorizationForStatementDenied
        )
    );
    let error = if transient {
        PortError::transient(format!("sqlite: {e}"))
    } else if configuration {
        PortError::configuration(format!(
            "sqlite: {e} (check that DATA_DIR and its files are writable by this user)"
        ))
    } else {
        PortError::permanent(format!("sqlite: {e}"))
    };
    error.with_source(e)
}
