//! The embedded queue: SQS semantics on a SQLite table.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hookline_core::clock::unix_millis;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::{BatchLimits, Delivery, PortError, Queue, QueueCounts};
use rusqlite::{params, Connection};

use crate::db::Db;

/// One named queue in the database file, with an optional redrive target.
pub struct EmbeddedQueue {
    db: Db,
    name: String,
    /// (dead-letter queue name, max receives)
    redrive: Option<(String, u32)>,
    poll_interval: Duration,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("name", &self.name)
            .field("redrive", &self.redrive)
            .finish()
    }
}

impl EmbeddedQueue {
    pub(crate) fn new(
        db: Db,
        name: &str,
        redrive: Option<(&str, u32)>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            db,
            name: name.to_owned(),
            redrive: redrive.map(|(q, n)| (q.to_owned(), n)),
            poll_interval,
        }
    }

    fn try_receive(
        conn: &Connection,
        queue: &str,
        redrive: Option<&(String, u32)>,
        max: usize,
        visibility: Duration,
    ) -> rusqlite::Result<Vec<Delivery>> {
        let now = unix_millis();
        let hidden_until =
            now.saturating_add(i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX));
        let mut out = Vec::with_capacity(max);
        loop {
            let want = max - out.len();
            let rows: Vec<(i64, String, Vec<u8>, String, u32, i64)> = {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, message_id, body, attributes, receive_count, sent_at
                     FROM messages WHERE queue = ?1 AND visible_at <= ?2
                     ORDER BY visible_at, seq LIMIT ?3",
                )?;
                let mapped = stmt.query_map(params![queue, now, want as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?;
                mapped.collect::<rusqlite::Result<_>>()?
            };
            if rows.is_empty() {
                break;
            }
            let mut redrove = false;
            for (seq, message_id, body, attributes, receive_count, sent_at) in rows {
                if let Some((dlq, max_receives)) = redrive {
                    if receive_count >= *max_receives {
                        conn.prepare_cached(
                            "UPDATE messages SET queue = ?1, visible_at = ?2, receipt = NULL
                             WHERE seq = ?3",
                        )?
                        .execute(params![dlq, now, seq])?;
                        tracing::warn!(
                            message = "Message moved to the dead-letter queue.",
                            message_id = %message_id,
                            receive_count
                        );
                        redrove = true;
                        continue;
                    }
                }
                let token = uuid::Uuid::new_v4().simple().to_string();
                let count = receive_count + 1;
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1, receive_count = ?2, receipt = ?3
                     WHERE seq = ?4",
                )?
                .execute(params![hidden_until, count, token, seq])?;
                out.push(Delivery {
                    message_id,
                    receipt: format!("{seq}:{token}"),
                    body: Bytes::from(body),
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                    receive_count: count,
                    sent_at_ms: sent_at,
                    group_id: None,
                });
            }
            if !redrove || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

fn parse_receipt(receipt: &str) -> Result<(i64, String), PortError> {
    receipt
        .split_once(':')
        .and_then(|(seq, token)| Some((seq.parse().ok()?, token.to_owned())))
        .ok_or_else(|| PortError::permanent("malformed receipt handle".to_owned()))
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn batch_limits(&self) -> BatchLimits {
        // One transaction per batch: larger batches amortise the fsync.
        BatchLimits {
            max_entries: 256,
            max_bytes: 8 * 1024 * 1024,
        }
    }

    /// The wait is a loop of short calls on the database thread, and a call
    /// whose caller has gone is skipped there: a dropped receive takes nothing.
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }

    /// A receive writes: only taking the write lock (an empty write group)
    /// tells whether one could run; a read never waits for the lock.
    async fn ping(&self) -> Result<(), PortError> {
        self.db
            .write(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn send_batch(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PortError>> {
        let rows: Vec<(Bytes, String, String, String)> = batch
            .iter()
            .map(|m| {
                (
                    m.body.clone(),
                    serde_json::to_string(&m.attributes).unwrap_or_else(|_| "{}".to_owned()),
                    m.group_id.clone(),
                    m.dedup_id.clone(),
                )
            })
            .collect();
        let n = rows.len();
        let queue = self.name.clone();
        let result = self
            .db
            .write(move |conn| {
                let now = unix_millis();
                {
                    let mut stmt = conn.prepare_cached(
                        "INSERT INTO messages
                     (queue, message_id, body, attributes, group_id, dedup_id, sent_at, visible_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                    )?;
                    for (body, attributes, group_id, dedup_id) in &rows {
                        let id = uuid::Uuid::new_v4().to_string();
                        stmt.execute(params![
                            queue,
                            id,
                            body.as_ref(),
                            attributes,
                            group_id,
                            dedup_id,
                            now
                        ])?;
                    }
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => (0..n).map(|_| Ok(())).collect(),
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, PortError> {
        let deadline = tokio::time::Instant::now() + wait;
        let max = max.clamp(1, 10_000);
        loop {
            let queue = self.name.clone();
            let redrive = self.redrive.clone();
            let got = self
                .db
                .write(move |conn| {
                    Self::try_receive(conn, &queue, redrive.as_ref(), max, visibility)
                })
                .await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    async fn delete_batch(&self, receipts: &[String]) -> Vec<Result<(), PortError>> {
        let parsed: Vec<Result<(i64, String), PortError>> =
            receipts.iter().map(|r| parse_receipt(r)).collect();
        let valid: Vec<(i64, String)> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let result = self
            .db
            .write(move |conn| {
                let mut stmt =
                    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1 AND receipt = ?2")?;
                for (seq, token) in &valid {
                    stmt.execute(params![seq, token])?;
                }
                Ok(())
            })
            .await;
        parsed
            .into_iter()
            .map(|p| match (&p, &result) {
                (Err(e), _) => Err(e.clone()),
                (Ok(_), Err(e)) => Err(e.clone()),
                (Ok(_), Ok(())) => Ok(()),
            })
            .collect()
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), PortError> {
        let (seq, token) = parse_receipt(receipt)?;
        let changed = self
            .db
            .write(move |conn| {
                let until = unix_millis()
                    .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1 WHERE seq = ?2 AND receipt = ?3",
                )?
                .execute(params![until, seq, token])
            })
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(PortError::permanent(
                "receipt handle is no longer valid".to_owned(),
            ))
        }
    }

    async fn sweep(
        &self,
        matches: &(dyn for<'d> Fn(&'d Delivery) -> bool + Send + Sync),
        remove: bool,
    ) -> Result<Option<Vec<Delivery>>, PortError> {
        // Page through by sequence number, so that a large queue is never
        // held in memory at once; a message sent meanwhile is past the end.
        let mut erased = Vec::new();
        let mut after = 0i64;
        loop {
            let (queue, from) = (self.name.clone(), after);
            let page: Vec<(i64, Delivery)> = self
                .db
                .read(move |conn| {
                    let mut stmt = conn.prepare_cached(
                        "SELECT seq, message_id, body, attributes, receive_count, sent_at
                         FROM messages WHERE queue = ?1 AND seq > ?2 ORDER BY seq LIMIT 500",
                    )?;
                    let rows = stmt.query_map(params![queue, from], |r| {
                        let attributes: String = r.get(3)?;
                        let body: Vec<u8> = r.get(2)?;
                        Ok((
                            r.get::<_, i64>(0)?,
                            Delivery {
                                message_id: r.get(1)?,
                                receipt: String::new(),
                                body: Bytes::from(body),
                                attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                                receive_count: r.get(4)?,
                                sent_at_ms: r.get(5)?,
                                group_id: None,
                            },
                        ))
                    })?;
                    rows.collect()
                })
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = *last;
            let mut seqs = Vec::new();
            let mut found = Vec::new();
            for (seq, d) in page {
                if matches(&d) {
                    seqs.push(seq);
                    found.push(d);
                }
            }
            if seqs.is_empty() || !remove {
                erased.extend(found);
                continue;
            }
            self.db
                .write(move |conn| {
                    let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?;
                    for seq in seqs {
                        stmt.execute(params![seq])?;
                    }
                    Ok(())
                })
                .await?;
            erased.extend(found);
        }
        Ok(Some(erased))
    }

    async fn counts(&self) -> Result<QueueCounts, PortError> {
        let queue = self.name.clone();
        self.db
            .read(move |conn| {
                let now = unix_millis();
                conn.query_row(
                    "SELECT
                    COALESCE(SUM(CASE WHEN visible_at <= ?2 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN visible_at >  ?2 THEN 1 ELSE 0 END), 0)
                 FROM messages WHERE queue = ?1",
                    params![queue, now],
                    |r| {
                        Ok(QueueCounts {
                            waiting: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                            in_flight: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                        })
                    },
                )
            })
            .await
    }
}

/// A message as stored, for tests (feature `test-support`).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub queue: String,
    pub body: Vec<u8>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub receive_count: u32,
}

#[cfg(feature = "test-support")]
impl EmbeddedQueue {
    /// Every message of this queue in send order, without changing anything.
    pub async fn snapshot(&self) -> Result<Vec<StoredMessage>, PortError> {
        let queue = self.name.clone();
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT queue, body, attributes, receive_count FROM messages
                 WHERE queue = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![queue], |r| {
                    let attributes: String = r.get(2)?;
                    Ok(StoredMessage {
                        queue: r.get(0)?,
                        body: r.get(1)?,
                        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                        receive_count: r.get(3)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }
}
