//! Connection set-up, schema and error classification.

use std::path::Path;
use std::sync::{mpsc, Arc};
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
    object_id     TEXT,
    reason        TEXT
);

CREATE TABLE IF NOT EXISTS destinations (
    event_id      TEXT NOT NULL,
    destination   TEXT NOT NULL,
    state         TEXT NOT NULL,
    PRIMARY KEY (event_id, destination)
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

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the database thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Opens the file, retrying set-up as below, and starts the thread that
/// owns the connection from then on.
pub(crate) fn connect(path: &Path, busy_timeout: Duration) -> Result<Db, ConnectError> {
    // Processes starting together (`make run`) race to switch a new file to
    // WAL and create the schema; SQLite answers some of those races with
    // "locked" without waiting, so the whole set-up is retried within the
    // busy timeout.
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match set_up(path, busy_timeout) {
            Ok(conn) => {
                return Db::start(conn, Arc::new(exec), db_thread()).map_err(ConnectError::Thread)
            }
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn db_thread() -> std::thread::Builder {
    std::thread::Builder::new().name("hookline-sqlite".to_owned())
}

/// Runs one statement that frames a group (`BEGIN IMMEDIATE`, `SAVEPOINT`,
/// `ROLLBACK TO`, `RELEASE`, `COMMIT`, `ROLLBACK`). The writer takes it as
/// a function so that the tests can make any of them fail.
type Frame = Arc<dyn Fn(&Connection, &str) -> rusqlite::Result<()> + Send + Sync>;

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
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
    let present = |column: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = ?1")?
            .exists([column])
    };
    for column in [
        "lease_owner",
        "source",
        "object_id",
        "reason",
        "subject",
        "trace_id",
    ] {
        if !present(column)? {
            if let Err(e) =
                conn.execute_batch(&format!("ALTER TABLE events ADD COLUMN {column} TEXT"))
            {
                // Another process may have added it first: the schema says.
                if !present(column)? {
                    return Err(e);
                }
            }
        }
    }
    // How `hookline erase` finds an account's items without a scan.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS events_subject ON events (subject) WHERE subject IS NOT NULL;
         CREATE INDEX IF NOT EXISTS objects_account ON objects (json_extract(item, '$.account'));
         CREATE INDEX IF NOT EXISTS providers_deauthorized ON providers (json_extract(item, '$.deauthorizedAt'));",
    )?;
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

struct QueuedCall<T, F> {
    access: Access,
    f: Option<F>,
    out: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<Result<T, PortError>>,
}

impl<T, F> Call for QueuedCall<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn access(&self) -> Access {
        self.access
    }
    fn run(&mut self, conn: &Connection) -> bool {
        // A caller that has gone (a receive dropped at shutdown) is not
        // served: its call would take messages nobody handles.
        if self.reply.is_closed() {
            self.f = None;
            return false;
        }
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
    /// Starts the thread that owns `conn`; an error when it cannot start.
    fn start(
        conn: Connection,
        frame: Frame,
        thread: std::thread::Builder,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn Call>>();
        // The thread ends when the last handle is dropped; at process exit
        // it is not waited for (a call blocked on another process's lock
        // never holds up shutdown).
        thread.spawn(move || serve(conn, rx, frame))?;
        Ok(Self { calls: tx })
    }

    /// Runs `f` on the database thread, in the next group transaction when
    /// it writes; answers once that transaction is committed.
    pub(crate) async fn call<T, F>(&self, access: Access, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let call = Box::new(QueuedCall {
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
fn serve(conn: Connection, calls: mpsc::Receiver<Box<dyn Call>>, frame: Frame) {
    while let Ok(first) = calls.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match calls.try_recv() {
                Ok(call) => group.push(call),
                Err(_) => break,
            }
        }
        let committed = run_group(&conn, &mut group, |sql| frame(&conn, sql));
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

fn run_group(
    conn: &Connection,
    group: &mut [Box<dyn Call>],
    exec: impl Fn(&str) -> rusqlite::Result<()>,
) -> Result<(), PortError> {
    if group.iter().all(|c| c.access() == Access::Read) {
        // WAL readers never wait for a writer: no transaction needed.
        for call in group.iter_mut() {
            run_guarded(call.as_mut(), conn);
        }
        return Ok(());
    }
    // A connection left inside a transaction (an earlier COMMIT and its
    // ROLLBACK both failed) is rolled back before anything else runs on it.
    if !conn.is_autocommit() {
        exec("ROLLBACK").map_err(|e| {
            PortError::transient(format!("sqlite: cannot end an earlier transaction: {e}"))
                .with_source(e)
        })?;
    }
    exec("BEGIN IMMEDIATE").map_err(classify)?;
    // Nothing of the group may commit: roll it all back, tell every caller.
    let abandon = |what: &str, e: rusqlite::Error| {
        let _ = exec("ROLLBACK");
        PortError::transient(format!("sqlite: {what}: {e}")).with_source(e)
    };
    for call in group.iter_mut() {
        if let Err(e) = exec("SAVEPOINT call") {
            return Err(abandon("cannot open a savepoint", e));
        }
        let ran = run_guarded(call.as_mut(), conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk
            // full): nothing of the group is committed, every caller hears so.
            return Err(PortError::transient(
                "sqlite rolled the transaction back".to_owned(),
            ));
        }
        // A failed call must be undone before anything is released: if it
        // cannot be, committing would keep writes its caller is told failed.
        if !ran {
            if let Err(e) = exec("ROLLBACK TO call") {
                return Err(abandon("cannot undo a failed call", e));
            }
        }
        if let Err(e) = exec("RELEASE call") {
            return Err(abandon("cannot release a savepoint", e));
        }
    }
    match exec("COMMIT") {
        Ok(()) => Ok(()),
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

    /// A writer whose frame statements fail while `fail` names them (each
    /// name as many times as it is listed).
    fn faulty(
        fail: &[&'static str],
    ) -> (
        tempfile::TempDir,
        Db,
        Arc<std::sync::Mutex<Vec<&'static str>>>,
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let conn = set_up(&dir.path().join("t.sqlite"), Duration::from_secs(5)).expect("open");
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .expect("schema");
        let faults = Arc::new(std::sync::Mutex::new(fail.to_vec()));
        let armed = Arc::clone(&faults);
        let frame: Frame = Arc::new(move |conn, sql| {
            let mut f = armed.lock().expect("faults");
            if let Some(i) = f.iter().position(|s| *s == sql) {
                f.remove(i);
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some(format!("injected failure of {sql}")),
                ));
            }
            exec(conn, sql)
        });
        let db = Db::start(conn, frame, db_thread()).expect("thread");
        (dir, db, faults)
    }

    /// Keeps the database thread busy for `d`; returns once it is.
    fn hold_thread(db: &Db, d: Duration) -> tokio::task::JoinHandle<Result<(), PortError>> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let db = db.clone();
        let hold = tokio::spawn(async move {
            db.write(move |_| {
                let _ = started_tx.send(());
                std::thread::sleep(d);
                Ok(())
            })
            .await
        });
        let _ = started_rx.recv();
        hold
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<i64> {
        let other = Connection::open(dir.path().join("t.sqlite")).expect("open");
        let mut stmt = other
            .prepare("SELECT k FROM t ORDER BY k")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<Vec<i64>>>()
            .expect("rows");
        rows
    }

    #[test]
    fn a_thread_that_cannot_start_fails_the_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let conn = set_up(&dir.path().join("t.sqlite"), Duration::from_secs(5)).expect("open");
        // No thread can have a stack this large.
        let impossible = db_thread().stack_size(usize::MAX / 2);
        assert!(Db::start(conn, Arc::new(exec), impossible).is_err());
    }

    /// A failed call whose `ROLLBACK TO` fails: the group fails as a whole,
    /// nothing of it is committed (the failed call's own insert included).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_rollback_to_fails_the_group() {
        let (dir, db, _) = faulty(&["ROLLBACK TO call"]);
        // Hold the thread so the next three calls share one group.
        let hold = hold_thread(&db, Duration::from_millis(300));
        let ok1 = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|c| c.execute("INSERT INTO t (k) VALUES (1)", []))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let bad = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|c| {
                    c.execute("INSERT INTO t (k) VALUES (2)", [])?;
                    c.execute("INSERT INTO missing_table VALUES (1)", [])
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ok3 = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|c| c.execute("INSERT INTO t (k) VALUES (3)", []))
                    .await
            }
        });
        hold.await.expect("task").expect("hold");
        assert!(bad.await.expect("task").is_err());
        assert!(
            ok1.await.expect("task").is_err(),
            "the group failed as a whole"
        );
        assert!(
            ok3.await.expect("task").is_err(),
            "the group failed as a whole"
        );
        assert_eq!(
            rows(&dir),
            Vec::<i64>::new(),
            "nothing of the group committed"
        );
        // The writer goes on.
        db.write(|c| c.execute("INSERT INTO t (k) VALUES (4)", []))
            .await
            .expect("next group");
        assert_eq!(rows(&dir), vec![4]);
    }

    /// COMMIT and then ROLLBACK fail: the connection is left inside the
    /// transaction. The next group rolls it back first and succeeds.
    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_recovered() {
        let (dir, db, _) = faulty(&["COMMIT", "ROLLBACK"]);
        let first = db
            .write(|c| c.execute("INSERT INTO t (k) VALUES (1)", []))
            .await;
        assert!(first.is_err(), "its commit failed");
        let second = db
            .write(|c| c.execute("INSERT INTO t (k) VALUES (2)", []))
            .await;
        assert!(second.is_ok(), "{second:?}");
        assert_eq!(
            rows(&dir),
            vec![2],
            "the first was rolled back, never committed"
        );
    }

    /// A call whose caller has gone (a receive dropped at shutdown) is not
    /// run: it changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_call_is_not_run() {
        let (dir, db, _) = faulty(&[]);
        let hold = hold_thread(&db, Duration::from_millis(300));
        // Queued behind the held call, then given up on.
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            db.write(|c| c.execute("INSERT INTO t (k) VALUES (1)", [])),
        )
        .await;
        assert!(dropped.is_err(), "timed out while the thread was held");
        hold.await.expect("task").expect("hold");
        db.write(|c| c.execute("INSERT INTO t (k) VALUES (2)", []))
            .await
            .expect("later call");
        assert_eq!(rows(&dir), vec![2], "the dropped call changed nothing");
    }

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
