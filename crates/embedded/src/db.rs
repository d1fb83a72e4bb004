//! Connection set-up, schema and error classification.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use hookline_core::ports::PortError;
use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

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

/// Opens the file, retrying set-up as below, and starts the thread that
/// owns the connection from then on.
pub(crate) fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Db> {
    // Processes starting together (`make run`) race to switch a new file to
    // WAL and create the schema; SQLite answers some of those races with
    // "locked" without waiting, so the whole set-up is retried within the
    // busy timeout.
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match set_up(path, busy_timeout) {
            Ok(conn) => return Ok(Db::start(conn)),
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

/// Calls a writer takes into one transaction at most.
const MAX_GROUP: usize = 512;

/// The database of one process: a thread owns the connection and runs the
/// calls of the queues and the store. Calls that arrive while it commits
/// share the next transaction (group commit): one `BEGIN IMMEDIATE`, each
/// call in a savepoint of its own (a failing call undoes only itself), one
/// `COMMIT` and one WAL sync, and only then is each caller answered.
#[derive(Clone)]
pub(crate) struct Db {
    calls: mpsc::Sender<Box<dyn Call>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Whether a call changes the file (and needs the write lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// One queued call: runs inside the group's transaction, is answered after
/// its commit.
trait Call: Send {
    fn access(&self) -> Access;
    /// Runs the call; `false` if it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller with the call's result, or the commit's error.
    fn finish(self: Box<Self>, committed: Result<(), PortError>);
}

struct Pending<T, F> {
    access: Access,
    f: Option<F>,
    out: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<Result<T, PortError>>,
}

impl<T, F> Call for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn access(&self) -> Access {
        self.access
    }
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = f(conn);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }
    fn finish(self: Box<Self>, committed: Result<(), PortError>) {
        let answer = match (self.out, committed) {
            (Some(Err(e)), _) => Err(classify(e)),
            (_, Err(e)) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(PortError::transient("database call did not run".to_owned())),
        };
        // The caller may have gone (a cancelled future): nothing to answer.
        let _ = self.reply.send(answer);
    }
}

impl Db {
    fn start(conn: Connection) -> Self {
        let (tx, rx) = mpsc::channel::<Box<dyn Call>>();
        // The thread ends when the last handle is dropped; at process exit
        // it is not waited for (a call blocked on another process's lock
        // never holds up shutdown).
        let spawned = std::thread::Builder::new()
            .name("hookline-sqlite".to_owned())
            .spawn(move || serve(conn, rx));
        if let Err(e) = spawned {
            tracing::error!(message = "Cannot start the database thread.", error = %e);
        }
        Self { calls: tx }
    }

    /// Runs `f` on the database thread, in the next group transaction when
    /// it writes; answers once that transaction is committed.
    pub(crate) async fn call<T, F>(&self, access: Access, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let call = Box::new(Pending {
            access,
            f: Some(f),
            out: None,
            reply,
        });
        self.calls
            .send(call)
            .map_err(|_| PortError::transient("database thread stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| PortError::transient("database thread stopped".to_owned()))?
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(Access::Write, f).await
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(Access::Read, f).await
    }
}

/// The database thread: takes what is queued, runs it as one group.
fn serve(conn: Connection, calls: mpsc::Receiver<Box<dyn Call>>) {
    while let Ok(first) = calls.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match calls.try_recv() {
                Ok(call) => group.push(call),
                Err(_) => break,
            }
        }
        let committed = run_group(&conn, &mut group);
        for call in group {
            call.finish(committed.clone());
        }
    }
}

/// Runs one call; a call that panics counts as failed (its caller hears
/// that the call did not run) instead of taking the database thread, and
/// every later call of the process, down with it.
fn run_guarded(call: &mut dyn Call, conn: &Connection) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.run(conn))).unwrap_or(false)
}

fn run_group(conn: &Connection, group: &mut [Box<dyn Call>]) -> Result<(), PortError> {
    if group.iter().all(|c| c.access() == Access::Read) {
        // WAL readers never wait for a writer: no transaction needed.
        for call in group.iter_mut() {
            run_guarded(call.as_mut(), conn);
        }
        return Ok(());
    }
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    exec("BEGIN IMMEDIATE").map_err(classify)?;
    for call in group.iter_mut() {
        let ran = exec("SAVEPOINT call").is_ok() && run_guarded(call.as_mut(), conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk
            // full): nothing of the group is committed, every caller hears so.
            return Err(PortError::transient(
                "sqlite rolled the transaction back".to_owned(),
            ));
        }
        if !ran {
            let _ = exec("ROLLBACK TO call");
        }
        let _ = exec("RELEASE call");
    }
    match exec("COMMIT") {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = exec("ROLLBACK");
            Err(classify(e))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let db = connect(&dir.path().join("t.sqlite"), Duration::from_secs(5)).expect("open");
        (dir, db)
    }

    /// Calls that share a group commit: one that fails is undone alone (its
    /// own write included), the others are committed, and every caller is
    /// answered with its own result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_call_in_a_group_undoes_only_itself() {
        let (_dir, db) = db();
        db.write(|c| c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
            .await
            .expect("schema");
        let mut calls = Vec::new();
        for k in 0..200i64 {
            let db = db.clone();
            calls.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                    if k % 10 == 3 {
                        // Fails after its own insert: the insert must go too.
                        c.execute("INSERT INTO missing_table VALUES (1)", [])?;
                    }
                    Ok(k)
                })
                .await
            }));
        }
        let mut failed = 0;
        for (k, call) in calls.into_iter().enumerate() {
            match call.await.expect("task") {
                Ok(v) => assert_eq!(v, k as i64),
                Err(e) => {
                    assert_eq!(k % 10, 3, "{e}");
                    assert_eq!(e.kind(), hookline_core::ports::ErrorKind::Permanent);
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 20);
        let (rows, bad): (i64, i64) = db
            .read(|c| {
                c.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(k % 10 = 3), 0) FROM t",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .expect("count");
        assert_eq!((rows, bad), (180, 0));
    }

    /// An answer means committed: another connection sees the write as
    /// soon as the caller has its answer.
    #[tokio::test]
    async fn a_write_is_answered_after_its_commit() {
        let (dir, db) = db();
        db.write(|c| c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
            .await
            .expect("schema");
        let other = Connection::open(dir.path().join("t.sqlite")).expect("open");
        for k in 0..20i64 {
            db.write(move |c| c.execute("INSERT INTO t (k) VALUES (?1)", [k]))
                .await
                .expect("insert");
            let seen: i64 = other
                .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .expect("count");
            assert_eq!(seen, k + 1);
        }
    }

    /// A call that panics fails alone; the thread keeps serving.
    #[tokio::test]
    async fn a_panicking_call_does_not_stop_the_thread() {
        let (_dir, db) = db();
        let panicked = db
            .write(|_| -> rusqlite::Result<()> { panic!("a bug in a call") })
            .await;
        assert!(panicked.is_err());
        let one: i64 = db
            .read(|c| c.query_row("SELECT 1", [], |r| r.get(0)))
            .await
            .expect("still serving");
        assert_eq!(one, 1);
    }
}
