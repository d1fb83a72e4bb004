//! The embedded store: ledger and projections in one SQLite transaction.

use std::collections::BTreeMap;

use async_trait::async_trait;
use hookline_core::clock::rfc3339;
use hookline_core::envelope::EventId;
use hookline_core::ports::{
    Applied, Change, Claim, Holdings, Lease, Origin, PortError, RecentActivity, Store, Subject,
    Tie, Ties, WritePath,
};
use hookline_core::records::{
    Completion, DestinationState, EventRecord, EventStatus, ItemTable, Outcome, Projection,
    StoredItem, LEDGER_TTL_SECS,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::Db;

/// The idempotency ledger and the projections.
pub struct EmbeddedStore {
    db: Db,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

/// What a claim needs to know of a ledger item.
struct LedgerState {
    /// `None` for a status this version does not know.
    status: Option<EventStatus>,
    attempts: u32,
    lease_until: Option<i64>,
    lease_owner: Option<String>,
    outcome: Option<Outcome>,
}

impl LedgerState {
    fn is(&self, status: EventStatus) -> bool {
        self.status == Some(status)
    }

    /// `COMPLETED` as applied or stale: nothing more happens to the event.
    /// An `ignored` completion is not final.
    fn is_final(&self) -> bool {
        self.is(EventStatus::Completed) && self.outcome != Some(Outcome::Ignored)
    }

    /// The end of a live lease another delivery holds on this event.
    fn leased_by_another(&self, owner: &str, now: i64) -> Option<i64> {
        let until = self.lease_until.filter(|until| *until > now)?;
        (self.is(EventStatus::Processing) && self.lease_owner.as_deref() != Some(owner))
            .then_some(until)
    }
}

fn status_of(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<LedgerState>> {
    conn.prepare_cached(
        "SELECT status, attempts, lease_until, lease_owner, outcome FROM events WHERE event_id = ?1",
    )?
    .query_row(params![event_id], |r| {
        Ok(LedgerState {
            status: EventStatus::parse(&r.get::<_, String>(0)?),
            attempts: r.get(1)?,
            lease_until: r.get(2)?,
            lease_owner: r.get(3)?,
            outcome: r.get::<_, Option<String>>(4)?.as_deref().and_then(Outcome::parse),
        })
    })
    .optional()
}

/// The SQLite table and key column of an item table.
fn sql_table(table: ItemTable) -> (&'static str, &'static str) {
    match table {
        ItemTable::Objects => ("objects", "object_id"),
        ItemTable::Provider => ("providers", "stripe_account_id"),
    }
}

/// The statements that read a projection's stored order and write it.
struct ProjectionSql {
    select: &'static str,
    upsert: &'static str,
}

fn projection_sql(table: ItemTable) -> &'static ProjectionSql {
    const OBJECTS: ProjectionSql = ProjectionSql {
        select: "SELECT last_event_created, json_extract(item, '$.lastEventId'), json_extract(item, '$.lastEventRank') FROM objects WHERE object_id = ?1",
        upsert: "INSERT INTO objects (object_id, last_event_created, item) VALUES (?1, ?2, ?3)
                 ON CONFLICT (object_id) DO UPDATE SET
                   last_event_created = excluded.last_event_created, item = excluded.item",
    };
    const PROVIDERS: ProjectionSql = ProjectionSql {
        select: "SELECT last_event_created, json_extract(item, '$.lastEventId'), json_extract(item, '$.lastEventRank') FROM providers WHERE stripe_account_id = ?1",
        upsert: "INSERT INTO providers (stripe_account_id, last_event_created, item) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stripe_account_id) DO UPDATE SET
                   last_event_created = excluded.last_event_created, item = excluded.item",
    };
    match table {
        ItemTable::Objects => &OBJECTS,
        ItemTable::Provider => &PROVIDERS,
    }
}

/// What a projection write did: the outcome, or `None` for a tie it was
/// told to refuse; and the tie it met.
type Projected = (Option<Outcome>, Option<Tie>);

/// Writes `write` unless the stored state is newer: a later `created`, or
/// the same `created` and a tie that `write.ties` settles for the stored one.
fn project(conn: &Connection, event_id: &str, write: &Write) -> rusqlite::Result<Projected> {
    let stored: Option<(i64, Option<String>, Option<i64>)> = conn
        .prepare_cached(write.sql.select)?
        .query_row(params![write.key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let verdict = match stored {
        None => Verdict::Write(None),
        Some((created, id, rank)) => Verdict::of(
            write,
            created,
            id.as_deref() == Some(event_id),
            u8::try_from(rank.unwrap_or(0)).unwrap_or(u8::MAX),
        ),
    };
    match verdict {
        Verdict::Stale(tie) => Ok((Some(Outcome::Stale), tie)),
        Verdict::Refused => Ok((None, None)),
        Verdict::Write(tie) => {
            conn.prepare_cached(write.sql.upsert)?.execute(params![
                write.key,
                write.created,
                write.item
            ])?;
            Ok((Some(Outcome::Applied), tie))
        }
    }
}

/// The guard's answer for a projection against the stored state.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Write(Option<Tie>),
    Stale(Option<Tie>),
    Refused,
}

impl Verdict {
    /// The same rule as the DynamoDB condition expression: a later
    /// `created` wins; within one second the same event may write again
    /// unless fetched state is stored, and another event's state is settled
    /// by `write.ties`.
    fn of(write: &Write, created: i64, same_event: bool, rank: u8) -> Self {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match created.cmp(&write.created) {
            Less => return Self::Write(None),
            Greater => return Self::Stale(None),
            Equal => {}
        }
        let tie = (!same_event).then(|| match rank.cmp(&write.rank) {
            Equal => Tie::Unresolved,
            _ => Tie::Ordered,
        });
        match write.ties {
            Ties::Refuse if !same_event || rank > write.rank => Self::Refused,
            _ if rank > write.rank => Self::Stale(tie),
            _ => Self::Write(tie),
        }
    }
}

/// A projection as the embedded tables store it.
struct Write {
    sql: &'static ProjectionSql,
    key: String,
    created: i64,
    rank: u8,
    ties: Ties,
    item: String,
}

impl Write {
    fn of(p: &Projection, ties: Ties) -> Self {
        Self {
            sql: projection_sql(ItemTable::of(p)),
            key: p.key().to_owned(),
            created: p.event_created(),
            rank: p.rank(),
            ties,
            item: serde_json::Value::Object(p.to_item()).to_string(),
        }
    }
}

/// The embedded form of a [`Change`].
enum Changing {
    Write(Write),
    Ignore(String),
    /// Destination names and their states, as JSON.
    Delivered(Vec<(String, String)>),
}

impl Changing {
    fn of(change: Change<'_>, ties: Option<Ties>) -> Self {
        match change {
            Change::Project(p, asked) => Self::Write(Write::of(p, ties.unwrap_or(asked))),
            Change::Ignore(reason) => Self::Ignore(reason.to_owned()),
            Change::Delivered(states) => Self::Delivered(
                states
                    .iter()
                    .map(|(name, state)| {
                        let json = serde_json::to_string(state).unwrap_or_default();
                        (name.clone(), json)
                    })
                    .collect(),
            ),
        }
    }
}

/// The destinations' states of an event.
fn destinations_of(
    conn: &Connection,
    event_id: &str,
) -> rusqlite::Result<BTreeMap<String, DestinationState>> {
    let mut stmt =
        conn.prepare_cached("SELECT destination, state FROM destinations WHERE event_id = ?1")?;
    let rows = stmt.query_map(params![event_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut states = BTreeMap::new();
    for row in rows {
        let (name, state) = row?;
        // A row this version cannot read is shown as never tried.
        states.insert(name, serde_json::from_str(&state).unwrap_or_default());
    }
    Ok(states)
}

/// Writes one destination's state (JSON) for an event.
fn record_destination(
    conn: &Connection,
    event_id: &str,
    destination: &str,
    state: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO destinations (event_id, destination, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (event_id, destination) DO UPDATE SET state = excluded.state",
    )?
    .execute(params![event_id, destination, state])?;
    Ok(())
}

/// What completes an event: the ledger item and the projection.
struct Completing {
    id: String,
    event_type: String,
    change: Changing,
    source: Option<String>,
    subject: Option<String>,
    /// The event's object, for a ledger item whose change projects none.
    object: Option<String>,
    trace: Option<String>,
    now: i64,
    /// Count this try in `attempts` (no claim did).
    count_try: bool,
}

impl Completing {
    fn run(&self, conn: &Connection) -> rusqlite::Result<Applied> {
        let existing = status_of(conn, &self.id)?;
        if existing.as_ref().is_some_and(LedgerState::is_final) {
            return Ok(Applied::plain(Completion::Duplicate, None));
        }
        let (outcome, tie, object, reason) = match &self.change {
            Changing::Ignore(reason) => (Outcome::Ignored, None, None, Some(reason.as_str())),
            Changing::Delivered(states) => {
                for (name, state) in states {
                    record_destination(conn, &self.id, name, state)?;
                }
                (Outcome::Applied, None, None, None)
            }
            Changing::Write(w) => match project(conn, &self.id, w)? {
                (Some(outcome), tie) => (outcome, tie, Some(w.key.as_str()), None),
                (None, _) => return Ok(Applied::plain(Completion::Tied, None)),
            },
        };
        let completed_at = rfc3339(self.now);
        let expires = self.now + LEDGER_TTL_SECS;
        let attempts = match &existing {
            Some(LedgerState { attempts, .. }) => {
                let attempts = attempts + u32::from(self.count_try);
                conn.prepare_cached(
                    "UPDATE events SET status = 'COMPLETED', outcome = ?2, completed_at = ?3,
                     lease_until = NULL, lease_owner = NULL, expires_at = ?4,
                     object_id = COALESCE(?5, object_id, ?11),
                     attempts = ?6, source = COALESCE(?7, source), reason = ?8,
                     subject = COALESCE(?9, subject), trace_id = COALESCE(?10, trace_id)
                     WHERE event_id = ?1",
                )?
                .execute(params![
                    self.id,
                    outcome.as_str(),
                    completed_at,
                    expires,
                    object,
                    attempts,
                    self.source,
                    reason,
                    self.subject,
                    self.trace,
                    self.object
                ])?;
                attempts
            }
            None => {
                conn.prepare_cached(
                    "INSERT INTO events (event_id, status, event_type, attempts, outcome, completed_at, expires_at, object_id, source, reason, subject, trace_id)
                     VALUES (?1, 'COMPLETED', ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    self.id,
                    self.event_type,
                    outcome.as_str(),
                    completed_at,
                    expires,
                    object.or(self.object.as_deref()),
                    self.source,
                    reason,
                    self.subject,
                    self.trace
                ])?;
                1
            }
        };
        Ok(Applied {
            completion: Completion::Completed(outcome),
            attempts: Some(attempts),
            tie,
        })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn system(&self) -> &'static str {
        "sqlite"
    }

    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError> {
        let id = event_id.as_str().to_owned();
        let event_type = event_type.to_owned();
        let owner = lease.owner.to_owned();
        let source = lease.origin.source.to_owned();
        let subject = lease.origin.subject.map(str::to_owned);
        let trace = lease.origin.trace.map(str::to_owned);
        let (now, lease_until) = (lease.now, lease.until());
        self.db.write(move |conn| {
            let claim = match status_of(conn, &id)? {
                Some(e) if e.is_final() => Claim::Completed,
                Some(e) if e.leased_by_another(&owner, now).is_some() => Claim::Busy {
                    lease_until: e.lease_until.unwrap_or(now),
                },
                Some(LedgerState { attempts, .. }) => {
                    conn.prepare_cached(
                        "UPDATE events SET status = 'PROCESSING', attempts = attempts + 1,
                         lease_until = ?2, lease_owner = ?3, source = ?4,
                         subject = COALESCE(?5, subject), trace_id = COALESCE(?6, trace_id)
                         WHERE event_id = ?1",
                    )?
                    .execute(params![id, lease_until, owner, source, subject, trace])?;
                    Claim::Started { attempts: attempts + 1 }
                }
                None => {
                    conn.prepare_cached(
                        "INSERT INTO events (event_id, status, event_type, attempts, expires_at, lease_until, lease_owner, source, subject, trace_id)
                         VALUES (?1, 'PROCESSING', ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![id, event_type, now + LEDGER_TTL_SECS, lease_until, owner, source, subject, trace])?;
                    Claim::Started { attempts: 1 }
                }
            };
            Ok(claim)
        })
        .await
    }

    async fn complete(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        now: i64,
    ) -> Result<Completion, PortError> {
        let completing = Completing {
            id: event_id.as_str().to_owned(),
            event_type: event_type.to_owned(),
            change: Changing::of(change, Some(Ties::ByRank)),
            source: None,
            subject: None,
            object: None,
            trace: None,
            now,
            count_try: false,
        };
        let applied = self.db.write(move |conn| completing.run(conn)).await?;
        Ok(applied.completion)
    }

    async fn apply(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Applied, PortError> {
        // One call, so one savepoint in the group commit: the ledger check,
        // the projection and the ledger item are atomic here anyway.
        let completing = Completing {
            id: event_id.as_str().to_owned(),
            event_type: event_type.to_owned(),
            change: Changing::of(change, None),
            source: Some(origin.source.to_owned()),
            subject: origin.subject.map(str::to_owned),
            object: origin.object.map(str::to_owned),
            trace: origin.trace.map(str::to_owned),
            now,
            count_try: true,
        };
        self.db.write(move |conn| completing.run(conn)).await
    }

    async fn fail(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        error: &str,
        now: i64,
        path: WritePath,
    ) -> Result<(), PortError> {
        let id = event_id.as_str().to_owned();
        let event_type = event_type.to_owned();
        let error = error.to_owned();
        let (subject, object) = owned_whom(origin);
        let count = i64::from(path == WritePath::Apply);
        self.db.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO events (event_id, status, event_type, attempts, last_error, expires_at, subject, object_id)
                 VALUES (?1, 'FAILED', ?2, 1, ?3, ?4, ?6, ?7)
                 ON CONFLICT (event_id) DO UPDATE SET status = 'FAILED', last_error = excluded.last_error,
                   lease_until = NULL, lease_owner = NULL, attempts = events.attempts + ?5,
                   subject = COALESCE(events.subject, ?6), object_id = COALESCE(events.object_id, ?7)
                 WHERE events.status <> 'COMPLETED' OR events.outcome = 'ignored'",
            )?
            .execute(params![id, event_type, error, now + LEDGER_TTL_SECS, count, subject, object])?;
            Ok(())
        })
        .await
    }

    async fn record_destination(
        &self,
        event_id: &EventId,
        event_type: &str,
        origin: Origin<'_>,
        destination: &str,
        state: &DestinationState,
        now: i64,
    ) -> Result<(), PortError> {
        let id = event_id.as_str().to_owned();
        let event_type = event_type.to_owned();
        let destination = destination.to_owned();
        let (subject, object) = owned_whom(origin);
        let state = serde_json::to_string(state)
            .map_err(|e| PortError::permanent(format!("destination state: {e}")))?;
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO events (event_id, status, event_type, attempts, expires_at, subject, object_id)
                     VALUES (?1, 'PROCESSING', ?2, 0, ?3, ?4, ?5)
                     ON CONFLICT (event_id) DO UPDATE SET
                       subject = COALESCE(events.subject, ?4), object_id = COALESCE(events.object_id, ?5)",
                )?
                .execute(params![id, event_type, now + LEDGER_TTL_SECS, subject, object])?;
                record_destination(conn, &id, &destination, &state)
            })
            .await
    }

    async fn event(&self, event_id: &str) -> Result<Option<EventRecord>, PortError> {
        let id = event_id.to_owned();
        self.db
            .read(move |conn| {
                let record = conn.prepare_cached(
                "SELECT event_id, status, event_type, attempts, outcome, last_error, completed_at,
                        expires_at, lease_until, source, object_id, reason, trace_id
                 FROM events WHERE event_id = ?1",
                )?.query_row(
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
                        reason: r.get(11)?,
                        trace_id: r.get(12)?,
                        destinations: Default::default(),
                    })
                },
            )
            .optional()?;
                let Some(mut record) = record else {
                    return Ok(None);
                };
                record.destinations = destinations_of(conn, &id)?;
                Ok(Some(record))
            })
            .await
    }

    async fn destinations(
        &self,
        event_id: &str,
    ) -> Result<BTreeMap<String, DestinationState>, PortError> {
        let id = event_id.to_owned();
        self.db.read(move |conn| destinations_of(conn, &id)).await
    }

    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError> {
        let key = id.to_owned();
        let (table, key_col) = sql_table(ItemTable::for_id(id));
        let raw: Option<String> = self
            .db
            .read(move |conn| {
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

    /// Takes the write lock (an empty write group): a reader is never
    /// blocked in WAL mode, so only a write tells whether writes can run.
    async fn ping(&self) -> Result<(), PortError> {
        self.db
            .write(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn recent(&self, since: i64) -> Result<Option<RecentActivity>, PortError> {
        let since = rfc3339(since);
        self.db
            .read(move |conn| {
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

    async fn holdings(&self, subject: &Subject) -> Result<Holdings, PortError> {
        let subject = subject.clone();
        let mut found = self
            .db
            .read(move |conn| {
                let keys = |sql: &str, key: &str| -> rusqlite::Result<Vec<String>> {
                    let mut stmt = conn.prepare_cached(sql)?;
                    let rows = stmt.query_map(params![key], |r| r.get(0))?;
                    rows.collect()
                };
                let provider = "SELECT stripe_account_id FROM providers WHERE stripe_account_id = ?1";
                let mut h = Holdings::default();
                match &subject {
                    Subject::Account(a) => {
                        h.providers = keys(provider, a)?;
                        h.objects = keys(
                            "SELECT object_id FROM objects WHERE json_extract(item, '$.account') = ?1",
                            a,
                        )?;
                        h.events = keys("SELECT event_id FROM events WHERE subject = ?1", a)?;
                    }
                    Subject::Object(o) => {
                        h.providers = keys(provider, o)?;
                        h.objects = keys("SELECT object_id FROM objects WHERE object_id = ?1", o)?;
                        // The object's events name its account as their
                        // subject, or the object itself when it has none.
                        let account: Option<String> = conn
                            .query_row(
                                "SELECT json_extract(item, '$.account') FROM objects WHERE object_id = ?1",
                                params![o],
                                |r| r.get(0),
                            )
                            .optional()?
                            .flatten();
                        h.events = keys("SELECT event_id FROM events WHERE subject = ?1", o)?;
                        if let Some(a) = account {
                            let mut stmt = conn.prepare_cached(
                                "SELECT event_id FROM events WHERE subject = ?1 AND object_id = ?2",
                            )?;
                            let rows = stmt.query_map(params![a, o], |r| r.get(0))?;
                            h.events.extend(rows.collect::<rusqlite::Result<Vec<String>>>()?);
                        }
                    }
                    Subject::Event(e) => {
                        h.events = keys("SELECT event_id FROM events WHERE event_id = ?1", e)?;
                    }
                }
                Ok(h)
            })
            .await?;
        found.normalise();
        Ok(found)
    }

    async fn deauthorized(&self, before: i64) -> Result<Vec<String>, PortError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT stripe_account_id FROM providers
                     WHERE json_extract(item, '$.deauthorizedAt') <= ?1",
                )?;
                let rows = stmt.query_map(params![before], |r| r.get(0))?;
                rows.collect()
            })
            .await
    }

    async fn erase(&self, holdings: &Holdings) -> Result<Holdings, PortError> {
        let holdings = holdings.clone();
        self.db
            .write(move |conn| {
                let gone = |sql: &str, keys: &[String]| -> rusqlite::Result<Vec<String>> {
                    let mut stmt = conn.prepare_cached(sql)?;
                    let mut out = Vec::new();
                    for key in keys {
                        if stmt.execute(params![key])? > 0 {
                            out.push(key.clone());
                        }
                    }
                    Ok(out)
                };
                let mut removed = Holdings {
                    providers: gone(
                        "DELETE FROM providers WHERE stripe_account_id = ?1",
                        &holdings.providers,
                    )?,
                    objects: gone(
                        "DELETE FROM objects WHERE object_id = ?1",
                        &holdings.objects,
                    )?,
                    events: gone("DELETE FROM events WHERE event_id = ?1", &holdings.events)?,
                };
                // A destination's state goes with its event, also one whose
                // ledger item was gone already.
                let mut stmt =
                    conn.prepare_cached("DELETE FROM destinations WHERE event_id = ?1")?;
                for id in &holdings.events {
                    if stmt.execute(params![id])? > 0 && !removed.events.contains(id) {
                        removed.events.push(id.clone());
                    }
                }
                removed.normalise();
                Ok(removed)
            })
            .await
    }

    async fn housekeep(&self, now: i64) -> Result<u64, PortError> {
        self.db
            .write(move |conn| {
                let ledger = conn.execute(
                    "DELETE FROM events WHERE rowid IN
                   (SELECT rowid FROM events WHERE expires_at < ?1 LIMIT ?2)",
                    params![now, HOUSEKEEPING_BATCH],
                )?;
                conn.execute(
                    "DELETE FROM destinations WHERE rowid IN
                   (SELECT d.rowid FROM destinations d LEFT JOIN events e ON e.event_id = d.event_id
                    WHERE e.event_id IS NULL LIMIT ?1)",
                    params![HOUSEKEEPING_BATCH],
                )?;
                let dead = conn.execute(
                    "DELETE FROM messages WHERE seq IN
                   (SELECT seq FROM messages WHERE queue = ?1 AND sent_at < ?2 LIMIT ?3)",
                    params![
                        crate::DEAD_LETTER_QUEUE,
                        now.saturating_sub(DLQ_RETENTION_SECS).saturating_mul(1000),
                        HOUSEKEEPING_BATCH
                    ],
                )?;
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

/// The subject and object an origin names, owned for a write.
fn owned_whom(origin: Origin<'_>) -> (Option<String>, Option<String>) {
    (
        origin.subject.map(str::to_owned),
        origin.object.map(str::to_owned),
    )
}
