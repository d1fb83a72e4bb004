//! The embedded store: ledger and projections in one SQLite transaction.

use async_trait::async_trait;
use hookline_core::clock::rfc3339;
use hookline_core::envelope::EventId;
use hookline_core::ports::{Claim, Lease, PortError, RecentActivity, Store};
use hookline_core::records::{
    Completion, EventRecord, EventStatus, ItemTable, Outcome, Projection, StoredItem,
    LEDGER_TTL_SECS,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::db::{with_conn, Shared};

/// The idempotency ledger and the projections.
pub struct EmbeddedStore {
    conn: Shared,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    pub(crate) fn new(conn: Shared) -> Self {
        Self { conn }
    }
}

type LedgerState = (String, u32, Option<i64>, Option<String>);

fn status_of(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<LedgerState>> {
    conn.query_row(
        "SELECT status, attempts, lease_until, lease_owner FROM events WHERE event_id = ?1",
        params![event_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
}

/// The SQLite table and key column of an item table.
fn sql_table(table: ItemTable) -> (&'static str, &'static str) {
    match table {
        ItemTable::Objects => ("objects", "object_id"),
        ItemTable::Provider => ("providers", "stripe_account_id"),
    }
}

fn projection_table(p: &Projection) -> (&'static str, &'static str) {
    sql_table(ItemTable::of(p))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError> {
        let id = event_id.as_str().to_owned();
        let event_type = event_type.to_owned();
        let owner = lease.owner.to_owned();
        let source = lease.source.to_owned();
        let (now, lease_until) = (lease.now, lease.until());
        with_conn(&self.conn, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claim = match status_of(&tx, &id)? {
                Some((status, _, _, _)) if status == EventStatus::Completed.as_str() => Claim::Completed,
                Some((status, _, Some(until), holder))
                    if status == EventStatus::Processing.as_str()
                        && until > now
                        && holder.as_deref() != Some(owner.as_str()) =>
                {
                    Claim::Busy { lease_until: until }
                }
                Some((_, attempts, _, _)) => {
                    tx.execute(
                        "UPDATE events SET status = 'PROCESSING', attempts = attempts + 1,
                         lease_until = ?2, lease_owner = ?3, source = ?4 WHERE event_id = ?1",
                        params![id, lease_until, owner, source],
                    )?;
                    Claim::Started { attempts: attempts + 1 }
                }
                None => {
                    tx.execute(
                        "INSERT INTO events (event_id, status, event_type, attempts, expires_at, lease_until, lease_owner, source)
                         VALUES (?1, 'PROCESSING', ?2, 1, ?3, ?4, ?5, ?6)",
                        params![id, event_type, now + LEDGER_TTL_SECS, lease_until, owner, source],
                    )?;
                    Claim::Started { attempts: 1 }
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn complete(
        &self,
        event_id: &EventId,
        event_type: &str,
        projection: Option<&Projection>,
        now: i64,
    ) -> Result<Completion, PortError> {
        let id = event_id.as_str().to_owned();
        let event_type = event_type.to_owned();
        let write = projection.map(|p| {
            let (table, key_col) = projection_table(p);
            (
                table,
                key_col,
                p.key().to_owned(),
                p.event_created(),
                serde_json::Value::Object(p.to_item()).to_string(),
            )
        });
        with_conn(&self.conn, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = status_of(&tx, &id)?;
            if matches!(&existing, Some((s, _, _, _)) if s == EventStatus::Completed.as_str()) {
                return Ok(Completion::Duplicate);
            }
            let outcome = match &write {
                None => Outcome::Ignored,
                Some((table, key_col, key, created, item)) => {
                    let stored: Option<i64> = tx
                        .query_row(
                            &format!("SELECT last_event_created FROM {table} WHERE {key_col} = ?1"),
                            params![key],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if stored.is_some_and(|s| s > *created) {
                        Outcome::Stale
                    } else {
                        tx.execute(
                            &format!(
                                "INSERT INTO {table} ({key_col}, last_event_created, item) VALUES (?1, ?2, ?3)
                                 ON CONFLICT ({key_col}) DO UPDATE SET
                                   last_event_created = excluded.last_event_created, item = excluded.item"
                            ),
                            params![key, created, item],
                        )?;
                        Outcome::Applied
                    }
                }
            };
            let completed_at = rfc3339(now);
            let object = write.as_ref().map(|(_, _, key, _, _)| key.clone());
            if existing.is_some() {
                tx.execute(
                    "UPDATE events SET status = 'COMPLETED', outcome = ?2, completed_at = ?3,
                     lease_until = NULL, lease_owner = NULL, expires_at = ?4, object_id = ?5
                     WHERE event_id = ?1",
                    params![id, outcome.as_str(), completed_at, now + LEDGER_TTL_SECS, object],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO events (event_id, status, event_type, attempts, outcome, completed_at, expires_at, object_id)
                     VALUES (?1, 'COMPLETED', ?2, 1, ?3, ?4, ?5, ?6)",
                    params![id, event_type, outcome.as_str(), completed_at, now + LEDGER_TTL_SECS, object],
                )?;
            }
            tx.commit()?;
            Ok(Completion::Completed(outcome))
        })
        .await
    }

    async fn fail(
        &self,
        event_id: &EventId,
        event_type: &str,
        error: &str,
        now: i64,
    ) -> Result<(), PortError> {
        let id = event_id.as_str().to_owned();
        let event_type = event_type.to_owned();
        let error = error.to_owned();
        with_conn(&self.conn, move |conn| {
            conn.execute(
                "INSERT INTO events (event_id, status, event_type, attempts, last_error, expires_at)
                 VALUES (?1, 'FAILED', ?2, 1, ?3, ?4)
                 ON CONFLICT (event_id) DO UPDATE SET status = 'FAILED', last_error = excluded.last_error,
                   lease_until = NULL, lease_owner = NULL
                 WHERE events.status <> 'COMPLETED'",
                params![id, event_type, error, now + LEDGER_TTL_SECS],
            )?;
            Ok(())
        })
        .await
    }

    async fn event(&self, event_id: &str) -> Result<Option<EventRecord>, PortError> {
        let id = event_id.to_owned();
        with_conn(&self.conn, move |conn| {
            conn.query_row(
                "SELECT event_id, status, event_type, attempts, outcome, last_error, completed_at,
                        expires_at, lease_until, source, object_id
                 FROM events WHERE event_id = ?1",
                params![id],
                |r| {
                    let status: String = r.get(1)?;
                    let outcome: Option<String> = r.get(4)?;
                    Ok(EventRecord {
                        event_id: r.get(0)?,
                        status: EventStatus::parse(&status).unwrap_or(EventStatus::Failed),
                        event_type: r.get(2)?,
                        attempts: r.get(3)?,
                        outcome: outcome.as_deref().and_then(Outcome::parse),
                        last_error: r.get(5)?,
                        completed_at: r.get(6)?,
                        expires_at: r.get(7)?,
                        lease_until: r.get(8)?,
                        source: r.get(9)?,
                        object_id: r.get(10)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError> {
        let key = id.to_owned();
        let (table, key_col) = sql_table(ItemTable::for_id(id));
        let raw: Option<String> = with_conn(&self.conn, move |conn| {
            conn.query_row(
                &format!("SELECT item FROM {table} WHERE {key_col} = ?1"),
                params![key],
                |r| r.get(0),
            )
            .optional()
        })
        .await?;
        match raw {
            None => Ok(None),
            Some(text) => match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(map)) => Ok(Some(StoredItem(map))),
                _ => Err(PortError::permanent(format!(
                    "stored item {id} is not a JSON object"
                ))),
            },
        }
    }

    async fn ping(&self) -> Result<(), PortError> {
        with_conn(&self.conn, |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
        })
        .await
    }

    async fn recent(&self, since: i64) -> Result<Option<RecentActivity>, PortError> {
        let since = rfc3339(since);
        with_conn(&self.conn, move |conn| {
            let mut recent = RecentActivity::default();
            let mut stmt = conn.prepare_cached(
                "SELECT outcome, COUNT(*), SUM(attempts > 1) FROM events
                 WHERE status = 'COMPLETED' AND completed_at >= ?1 GROUP BY outcome",
            )?;
            let rows = stmt.query_map(params![since], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            for row in rows {
                let (outcome, n, retried) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                match outcome.as_deref().and_then(Outcome::parse) {
                    Some(Outcome::Applied) => recent.applied += n,
                    Some(Outcome::Stale) => recent.stale += n,
                    Some(Outcome::Ignored) => recent.ignored += n,
                    None => {}
                }
                recent.retried += u64::try_from(retried.unwrap_or(0)).unwrap_or(0);
            }
            let failed: i64 = conn.query_row(
                "SELECT COUNT(*) FROM events WHERE status = 'FAILED'",
                [],
                |r| r.get(0),
            )?;
            recent.failed = u64::try_from(failed).unwrap_or(0);
            Ok(Some(recent))
        })
        .await
    }

    async fn housekeep(&self, now: i64) -> Result<u64, PortError> {
        with_conn(&self.conn, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ledger = tx.execute(
                "DELETE FROM events WHERE rowid IN
                   (SELECT rowid FROM events WHERE expires_at < ?1 LIMIT ?2)",
                params![now, HOUSEKEEPING_BATCH],
            )?;
            let dead = tx.execute(
                "DELETE FROM messages WHERE seq IN
                   (SELECT seq FROM messages WHERE queue = ?1 AND sent_at < ?2 LIMIT ?3)",
                params![
                    crate::DEAD_LETTER_QUEUE,
                    now.saturating_sub(DLQ_RETENTION_SECS).saturating_mul(1000),
                    HOUSEKEEPING_BATCH
                ],
            )?;
            tx.commit()?;
            Ok(u64::try_from(ledger + dead).unwrap_or(0))
        })
        .await
    }
}

/// Records removed per table in one housekeeping pass, so a pass never
/// holds the write lock for long.
const HOUSEKEEPING_BATCH: i64 = 1000;

/// How long a dead-lettered message is kept: the AWS stack's DLQ retention
/// (14 days, the SQS maximum).
pub const DLQ_RETENTION_SECS: i64 = 14 * 24 * 3600;
