//! What another process can do to the database file, for the tests and the
//! soak (feature `test-support`): hold its write lock (a store outage on
//! the embedded backend), or move a dead letter back in time. Nothing here
//! is used by the services.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// A failure of a test helper, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct HelperError {
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

fn helper(what: &'static str) -> impl FnOnce(rusqlite::Error) -> HelperError {
    move |source| HelperError { what, source }
}

fn open(data_dir: &Path, wait: Duration) -> Result<Connection, HelperError> {
    let conn = Connection::open(crate::db_path(data_dir)).map_err(helper("open the database"))?;
    conn.busy_timeout(wait)
        .map_err(helper("set the busy timeout"))?;
    Ok(conn)
}

/// The database's write lock, held as another process would hold it
/// (`BEGIN EXCLUSIVE`) until released or dropped: every write of the
/// services (queue and store alike) waits, then fails as transient.
#[derive(Debug)]
pub struct WriteLock {
    conn: Option<Connection>,
}

impl WriteLock {
    /// Takes the lock, waiting up to `wait` for it.
    pub fn hold(data_dir: &Path, wait: Duration) -> Result<Self, HelperError> {
        let conn = open(data_dir, wait)?;
        conn.execute_batch("BEGIN EXCLUSIVE")
            .map_err(helper("take the write lock"))?;
        Ok(Self { conn: Some(conn) })
    }

    /// Gives the lock back (nothing was written under it).
    pub fn release(mut self) -> Result<(), HelperError> {
        match self.conn.take() {
            Some(conn) => conn
                .execute_batch("ROLLBACK")
                .map_err(helper("release the write lock")),
            None => Ok(()),
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// Makes the dead letters of `event_id` look sent at `sent_at_ms` (Unix
/// milliseconds), as if they had waited that long; returns how many.
pub fn backdate_dead_letters(
    data_dir: &Path,
    event_id: &str,
    sent_at_ms: i64,
) -> Result<usize, HelperError> {
    let conn = open(data_dir, Duration::from_secs(5))?;
    conn.execute(
        "UPDATE messages SET sent_at = ?1 WHERE queue = ?2 AND attributes LIKE ?3",
        rusqlite::params![
            sent_at_ms,
            crate::DEAD_LETTER_QUEUE,
            format!("%\"{event_id}\"%")
        ],
    )
    .map_err(helper("backdate dead letters"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::ports::Store;

    #[tokio::test]
    async fn a_held_lock_makes_writes_fail_until_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let options = crate::Options {
            busy_timeout: Duration::from_millis(100),
            ..crate::Options::default()
        };
        let e = crate::open(dir.path(), options).expect("open");
        let lock = WriteLock::hold(dir.path(), Duration::from_secs(1)).expect("lock");
        assert!(e.store.ping().await.is_err(), "writes wait, then fail");
        lock.release().expect("release");
        assert!(e.store.ping().await.is_ok());
    }
}
