//! The store port on DynamoDB: the events ledger and the two projection
//! tables, with the contract's key and attribute names.
//!
//! Cost of an applied event, items under 1 KB:
//! - [`Store::apply`] (effects that replace state, the built-in handlers):
//!   a conditional `PutItem` of the projection and a conditional
//!   `UpdateItem` of the ledger, 2 write units;
//! - [`Store::claim`] + [`Store::complete`] (effects that must happen once):
//!   the claim `UpdateItem` (1) and a two-item `TransactWriteItems` (ledger +
//!   projection, 2 × 2), 5 write units.
//!
//! With the `test-support` feature every write is also counted
//! ([`crate::meter`], `DynamoStore::write_units`): its kind and the size of
//! the item it writes give its write units. Without it the count is
//! compiled out.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use hookline_core::clock::rfc3339;
use hookline_core::envelope::EventId;
use hookline_core::ports::{
    Applied, Change, Claim, Holdings, Lease, Origin, PortError, Store, Subject, Tie, Ties,
    WritePath,
};
use hookline_core::records::{
    Completion, DestinationState, EventRecord, EventStatus, ItemTable, Outcome, Projection,
    StoredItem, LEDGER_TTL_SECS,
};

use crate::attrs::{from_attr, from_item, to_attr, to_item};
use crate::errors::classify;
use crate::meter::Written;

/// How many segments erase's parallel Scan reads at once. An erasure
/// finds an account's or an object's items by scanning (ledger items carry
/// `subject` and `objectId`, objects `account`): an index would bill a
/// write unit to every event for a command that runs a few times a month,
/// and the ledger's 30-day TTL keeps the scan bounded.
pub const SCAN_SEGMENTS: i32 = 4;

/// Scan pages per second at most, all segments together: each page reads
/// up to 1 MB (128 read units, eventually consistent), so a scan takes at
/// most about 1,300 read units a second and leaves the table's traffic room.
pub const SCAN_PAGES_PER_SEC: u32 = 10;

/// The provider table's index of the accounts that deauthorized the
/// platform: partition key `deauthorized` (always [`DEAUTHORIZED`], written
/// beside `deauthorizedAt`), sort key `deauthorizedAt`.
pub const DEAUTHORIZED_INDEX: &str = "deauthorized-index";
const DEAUTHORIZED: &str = "yes";

/// Table names, from the settings.
#[derive(Debug, Clone)]
pub struct Tables {
    pub events: String,
    pub objects: String,
    pub provider: String,
}

impl Tables {
    /// The table an item lives in.
    pub fn name(&self, table: ItemTable) -> &str {
        match table {
            ItemTable::Objects => &self.objects,
            ItemTable::Provider => &self.provider,
        }
    }
}

/// The ledger and projections on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    meter: Arc<crate::meter::WriteMeter>,
}

/// An attribute value's size by DynamoDB's item-size rules.
fn value_size(v: &AttributeValue) -> u64 {
    match v {
        AttributeValue::S(s) => s.len() as u64,
        // About one byte per two significant digits, plus one.
        AttributeValue::N(n) => (n.trim_start_matches('-').len() as u64).div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|e| value_size(e) + 1).sum::<u64>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| k.len() as u64 + value_size(e) + 1)
                .sum::<u64>()
        }
        AttributeValue::Ss(l) => l.iter().map(|e| e.len() as u64).sum(),
        AttributeValue::Ns(l) => l.iter().map(|e| e.len() as u64).sum(),
        _ => 1,
    }
}

/// An item's size: attribute names and values.
fn item_size<'a>(attrs: impl IntoIterator<Item = (&'a String, &'a AttributeValue)>) -> u64 {
    attrs
        .into_iter()
        .map(|(k, v)| k.len() as u64 + value_size(v))
        .sum()
}

/// The size of the item an update leaves: its key plus every value it
/// sets, under the attribute names they are set to (an upper bound for
/// the ledger, whose updates set nearly every attribute).
fn update_size(
    key: &HashMap<String, AttributeValue>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> u64 {
    item_size(key) + values.map_or(0, item_size)
}

/// What a ledger write records of whom the event concerns, where no
/// write did before: `subject` and `objectId` (`if_not_exists`), as an
/// update clause (`, subject = …`) and its values.
fn whom(origin: &Origin<'_>) -> (String, Vec<(&'static str, AttributeValue)>) {
    let mut set = String::new();
    let mut values = Vec::new();
    if let Some(subject) = origin.subject {
        set.push_str(", subject = if_not_exists(subject, :whomSubject)");
        values.push((":whomSubject", s(subject)));
    }
    if let Some(object) = origin.object {
        set.push_str(", objectId = if_not_exists(objectId, :whomObject)");
        values.push((":whomObject", s(object)));
    }
    (set, values)
}

/// A projection's item as the meter counts it: only an account that left
/// carries an index's key ([`DEAUTHORIZED_INDEX`]'s `deauthorized`).
fn projection_written(item: &HashMap<String, AttributeValue>) -> Written {
    Written {
        size: item_size(item),
        indexes: u64::from(item.contains_key("deauthorized")),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: Tables) -> Self {
        Self {
            client,
            tables,
            meter: Arc::default(),
        }
    }

    fn count_update(
        &self,
        request: &aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) {
        // Only ledger items are updated, and the ledger has no index.
        self.meter.count(false, || {
            vec![Written::item(update_size(
                request.get_key().as_ref().unwrap_or(&HashMap::new()),
                request.get_expression_attribute_values().as_ref(),
            ))]
        });
    }

    /// Write requests and write units this store (and its clones) sent.
    #[cfg(feature = "test-support")]
    pub fn write_units(&self) -> crate::meter::WriteUnits {
        self.meter.read()
    }

    async fn get_event_item(
        &self,
        event_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&format!("GetItem on table {}", self.tables.events), e))?;
        Ok(out.item)
    }

    /// The keys of `table`'s items one of whose `attributes` is `value`: a
    /// parallel Scan of [`SCAN_SEGMENTS`] segments, paced to
    /// [`SCAN_PAGES_PER_SEC`] pages a second; and how many items it read.
    async fn scan_keys(
        &self,
        table: &str,
        key: &str,
        attributes: &[&str],
        value: &str,
    ) -> Result<(Vec<String>, u64), PortError> {
        let pace = tokio::sync::Mutex::new(tokio::time::interval(
            std::time::Duration::from_secs(1) / SCAN_PAGES_PER_SEC.max(1),
        ));
        let filter = (0..attributes.len())
            .map(|i| format!("#a{i} = :v"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let segment = |segment: i32| {
            let (pace, filter) = (&pace, &filter);
            async move {
                let mut keys = Vec::new();
                let mut scanned = 0u64;
                let mut start = None;
                loop {
                    pace.lock().await.tick().await;
                    let mut request = self
                        .client
                        .scan()
                        .table_name(table)
                        .segment(segment)
                        .total_segments(SCAN_SEGMENTS)
                        .projection_expression("#k")
                        .expression_attribute_names("#k", key)
                        .filter_expression(filter)
                        .expression_attribute_values(":v", s(value))
                        .set_exclusive_start_key(start);
                    for (i, a) in attributes.iter().enumerate() {
                        request = request.expression_attribute_names(format!("#a{i}"), *a);
                    }
                    let out = request
                        .send()
                        .await
                        .map_err(|e| classify(&format!("Scan of table {table}"), e))?;
                    scanned += u64::try_from(out.scanned_count()).unwrap_or(0);
                    keys.extend(
                        out.items()
                            .iter()
                            .filter_map(|i| i.get(key).and_then(|v| v.as_s().ok()).cloned()),
                    );
                    match out.last_evaluated_key {
                        Some(k) if !k.is_empty() => start = Some(k),
                        _ => return Ok::<_, PortError>((keys, scanned)),
                    }
                }
            }
        };
        let parts = futures_util::future::try_join_all((0..SCAN_SEGMENTS).map(segment)).await?;
        let scanned = parts.iter().map(|(_, n)| n).sum();
        Ok((parts.into_iter().flat_map(|(k, _)| k).collect(), scanned))
    }

    /// Whether `table` holds the item `key` = `id`; with it, the item.
    async fn get(
        &self,
        table: &str,
        key: &str,
        id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, PortError> {
        self.client
            .get_item()
            .table_name(table)
            .key(key, s(id))
            .consistent_read(true)
            .send()
            .await
            .map(|o| o.item)
            .map_err(|e| classify(&format!("GetItem on table {table}"), e))
    }

    /// Deletes each of `ids` from `table`; those that were there.
    async fn delete_each(
        &self,
        table: &str,
        key: &str,
        ids: &[String],
    ) -> Result<Vec<String>, PortError> {
        let mut gone = Vec::new();
        for id in ids {
            let out = self
                .client
                .delete_item()
                .table_name(table)
                .key(key, s(id))
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(|e| classify(&format!("DeleteItem on table {table}"), e))?;
            if out.attributes.is_some_and(|a| !a.is_empty()) {
                gone.push(id.clone());
            }
        }
        Ok(gone)
    }

    /// The ledger update that completes an event, guarded against a second
    /// completion.
    /// `unclaimed`: the [`Store::apply`] path, which counts the try and
    /// records the source (a claim did both on the other path).
    fn completion_update(
        &self,
        event_id: &str,
        event_type: &str,
        done: Done<'_>,
        now: i64,
        unclaimed: Option<Origin<'_>>,
    ) -> Result<Update, PortError> {
        let Done {
            outcome,
            object,
            reason,
            destinations,
        } = done;
        let destination_set: String = (0..destinations.len())
            .map(|i| format!(", #d{i} = :d{i}"))
            .collect();
        // The item the event projected (or would have, when stale), for
        // lookups from an event to its state.
        let object_set = if object.is_some() {
            ", objectId = :object"
        } else {
            ""
        };
        let (attempts, source) = match unclaimed {
            Some(origin) => (
                "",
                format!(
                    "{}{}{}, #source = :source ADD attempts :one",
                    if origin.subject.is_some() {
                        ", subject = :subject"
                    } else {
                        ""
                    },
                    // The event's object, where the change projects none
                    // (ignored, routed): `erase --object` finds it.
                    if object.is_none() && origin.object.is_some() {
                        ", objectId = if_not_exists(objectId, :whomObject)"
                    } else {
                        ""
                    },
                    if origin.trace.is_some() {
                        ", traceId = :trace"
                    } else {
                        ""
                    },
                ),
            ),
            None => (", attempts = if_not_exists(attempts, :one)", String::new()),
        };
        let (reason_set, reason_remove) = match reason {
            Some(_) => (", reason = :reason", ""),
            None => ("", ", reason"),
        };
        let mut update = Update::builder()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id))
            .update_expression(format!(
                "SET #status = :completed, outcome = :outcome, completedAt = :at, expiresAt = :exp, \
                 eventType = if_not_exists(eventType, :type){attempts}{object_set}{reason_set}{destination_set}{source} \
                 REMOVE leaseUntil, leaseOwner{reason_remove}"
            ))
            .condition_expression(NOT_FINAL)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", s(EventStatus::Completed.as_str()))
            .expression_attribute_values(":ignored", s(Outcome::Ignored.as_str()))
            .expression_attribute_values(":outcome", s(outcome.as_str()))
            .expression_attribute_values(":at", s(rfc3339(now)))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS))
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":one", n(1));
        if let Some(o) = object {
            update = update.expression_attribute_values(":object", s(o));
        }
        for (i, (name, state)) in destinations.iter().enumerate() {
            update = update
                .expression_attribute_names(format!("#d{i}"), format!("{DESTINATION_PREFIX}{name}"))
                .expression_attribute_values(format!(":d{i}"), state_attr(state)?);
        }
        if let Some(r) = reason {
            update = update.expression_attribute_values(":reason", s(r));
        }
        if let Some(origin) = unclaimed {
            update = update
                .expression_attribute_names("#source", "source")
                .expression_attribute_values(":source", s(origin.source));
            if let Some(subject) = origin.subject {
                update = update.expression_attribute_values(":subject", s(subject));
            }
            if let (None, Some(o)) = (object, origin.object) {
                update = update.expression_attribute_values(":whomObject", s(o));
            }
            if let Some(trace) = origin.trace {
                update = update.expression_attribute_values(":trace", s(trace));
            }
        }
        update
            .build()
            .map_err(|e| PortError::permanent(format!("ledger update: {e}")))
    }

    /// Completes the ledger item alone (ignored or stale, or the second
    /// write of [`Store::apply`]).
    async fn complete_ledger_only(
        &self,
        event_id: &str,
        event_type: &str,
        done: Done<'_>,
        now: i64,
        unclaimed: Option<Origin<'_>>,
    ) -> Result<Applied, PortError> {
        let outcome = done.outcome;
        let u = self.completion_update(event_id, event_type, done, now, unclaimed)?;
        self.meter.count(false, || {
            vec![Written::item(update_size(
                &u.key,
                u.expression_attribute_values.as_ref(),
            ))]
        });
        let out = self
            .client
            .update_item()
            .table_name(u.table_name)
            .set_key(Some(u.key))
            .update_expression(u.update_expression)
            .set_condition_expression(u.condition_expression)
            .set_expression_attribute_names(u.expression_attribute_names)
            .set_expression_attribute_values(u.expression_attribute_values)
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Applied::plain(
                Completion::Completed(outcome),
                out.attributes
                    .as_ref()
                    .and_then(|a| a.get("attempts"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok()),
            )),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                Ok(Applied::plain(Completion::Duplicate, None))
            }
            Err(e) => Err(classify(
                &format!("UpdateItem on table {}", self.tables.events),
                e,
            )),
        }
    }

    /// The projection, written unless the stored one is newer: a later
    /// `lastEventCreated`, or the same one and a tie `ties` settles for it
    /// (the embedded store's `Verdict` is the same rule).
    fn projection_put(&self, p: &Projection, event_id: &str, ties: Ties) -> Result<Put, PortError> {
        let routed = ItemTable::of(p);
        let (table, key) = (self.tables.name(routed), routed.key_attribute());
        let same_second = match ties {
            Ties::ByRank => "",
            Ties::Refuse => "lastEventId = :id AND ",
        };
        let mut item = to_item(&p.to_item());
        if item.contains_key("deauthorizedAt") {
            item.insert("deauthorized".to_owned(), s(DEAUTHORIZED));
        }
        let mut put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(format!(
                "attribute_not_exists({key}) OR lastEventCreated < :created OR \
                 (lastEventCreated = :created AND {same_second}\
                 (attribute_not_exists(lastEventRank) OR lastEventRank <= :rank))"
            ))
            .expression_attribute_values(":created", n(p.event_created()))
            .expression_attribute_values(":rank", n(i64::from(p.rank())));
        if ties == Ties::Refuse {
            put = put.expression_attribute_values(":id", s(event_id));
        }
        put.build()
            .map_err(|e| PortError::permanent(format!("projection put: {e}")))
    }

    /// The first write of [`Store::apply`]: the projection alone. The
    /// stored item it replaced, or the one that refused it, comes back with
    /// the answer (no extra read or write unit) and tells whether it was a
    /// tie.
    async fn put_projection(
        &self,
        p: &Projection,
        event_id: &str,
        ties: Ties,
    ) -> Result<(Option<Outcome>, Option<Tie>), PortError> {
        let put = self.projection_put(p, event_id, ties)?;
        self.meter
            .count(false, || vec![projection_written(put.item())]);
        let table = put.table_name().to_owned();
        let out = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_values(put.expression_attribute_values)
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let stored = |item: Option<&HashMap<String, AttributeValue>>| {
            item.map(|i| StoredOrder::of(i, event_id))
        };
        match out {
            Ok(out) => {
                let tie = stored(out.attributes.as_ref()).and_then(|o| o.tie_with(p));
                Ok((Some(Outcome::Applied), tie))
            }
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                let old = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => stored(c.item()),
                    _ => None,
                };
                let same_second = old.as_ref().is_some_and(|o| o.created == p.event_created());
                match ties {
                    Ties::Refuse if same_second => Ok((None, None)),
                    _ => Ok((Some(Outcome::Stale), old.and_then(|o| o.tie_with(p)))),
                }
            }
            Err(e) => Err(classify(&format!("PutItem on table {table}"), e)),
        }
    }
}

/// What was done to an event, for its ledger item.
#[derive(Debug, Clone, Copy)]
struct Done<'a> {
    outcome: Outcome,
    /// The item the event projected (or would have, when stale).
    object: Option<&'a str>,
    /// Why it was ignored.
    reason: Option<&'a str>,
    /// Destinations' states written with the completion.
    destinations: &'a [(String, DestinationState)],
}

impl<'a> Done<'a> {
    fn new(outcome: Outcome, object: Option<&'a str>) -> Self {
        Self {
            outcome,
            object,
            reason: None,
            destinations: &[],
        }
    }
}

/// A completion condition: the event is new, or not `COMPLETED`, or
/// completed `ignored` (which is not final).
const NOT_FINAL: &str =
    "attribute_not_exists(eventId) OR #status <> :completed OR outcome = :ignored";

/// The order of a stored projection item.
struct StoredOrder {
    created: i64,
    same_event: bool,
    rank: u8,
}

impl StoredOrder {
    fn of(item: &HashMap<String, AttributeValue>, event_id: &str) -> Self {
        let num = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        Self {
            created: num("lastEventCreated").unwrap_or(i64::MIN),
            same_event: item
                .get("lastEventId")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|id| id == event_id),
            rank: num("lastEventRank")
                .and_then(|r| u8::try_from(r).ok())
                .unwrap_or(0),
        }
    }

    /// The tie this stored state makes with `p`, if any.
    fn tie_with(&self, p: &Projection) -> Option<Tie> {
        (self.created == p.event_created() && !self.same_event).then(|| {
            if self.rank == p.rank() {
                Tie::Unresolved
            } else {
                Tie::Ordered
            }
        })
    }
}

fn event_record(item: &HashMap<String, AttributeValue>) -> Option<EventRecord> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Some(EventRecord {
        event_id: text("eventId")?,
        status: EventStatus::parse(&text("status")?)?,
        event_type: text("eventType").unwrap_or_default(),
        attempts: num("attempts")
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0),
        outcome: text("outcome").as_deref().and_then(Outcome::parse),
        last_error: text("lastError"),
        completed_at: text("completedAt"),
        expires_at: num("expiresAt").unwrap_or(0),
        lease_until: num("leaseUntil"),
        source: text("source"),
        object_id: text("objectId"),
        reason: text("reason"),
        trace_id: text("traceId"),
        destinations: item
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(DESTINATION_PREFIX)?;
                // A state this version cannot read is shown as never tried.
                let state = serde_json::from_value(from_attr(v)).unwrap_or_default();
                Some((name.to_owned(), state))
            })
            .collect(),
    })
}

/// A destination's state as the map attribute it is stored as.
fn state_attr(state: &DestinationState) -> Result<AttributeValue, PortError> {
    serde_json::to_value(state)
        .map(|v| to_attr(&v))
        .map_err(|e| PortError::permanent(format!("destination state: {e}")))
}

/// A destination's state is the ledger item's attribute `destination:NAME`
/// (a map: delivered, attempts, lastError, firstFailedAt, updatedAt).
const DESTINATION_PREFIX: &str = "destination:";

#[async_trait]
impl Store for DynamoStore {
    fn system(&self) -> &'static str {
        "aws.dynamodb"
    }

    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError> {
        let (now, lease_until) = (lease.now, lease.until());
        let subject_set = match (lease.origin.subject, lease.origin.object) {
            (Some(_), Some(_)) => {
                ", subject = :subject, objectId = if_not_exists(objectId, :whomObject)"
            }
            (Some(_), None) => ", subject = :subject",
            (None, Some(_)) => ", objectId = if_not_exists(objectId, :whomObject)",
            (None, None) => "",
        };
        let trace_set = match lease.origin.trace {
            Some(_) => ", traceId = :trace",
            None => "",
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id.as_str()))
            .update_expression(format!(
                "SET #status = :processing, eventType = :type, leaseUntil = :lease, leaseOwner = :owner, \
                 expiresAt = :exp, #source = :source{subject_set}{trace_set} ADD attempts :one",
            ))
            // The owner's own retry (its first answer was lost) gets the lease back.
            .condition_expression(
                "attribute_not_exists(eventId) OR ((#status <> :completed OR outcome = :ignored) AND \
                 (#status <> :processing OR leaseUntil <= :now OR leaseOwner = :owner))",
            )
            .expression_attribute_values(":owner", s(lease.owner))
            .expression_attribute_values(":source", s(lease.origin.source))
            .expression_attribute_names("#source", "source")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s(EventStatus::Processing.as_str()))
            .expression_attribute_values(":completed", s(EventStatus::Completed.as_str()))
            .expression_attribute_values(":ignored", s(Outcome::Ignored.as_str()))
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        if let Some(subject) = lease.origin.subject {
            request = request.expression_attribute_values(":subject", s(subject));
        }
        if let Some(object) = lease.origin.object {
            request = request.expression_attribute_values(":whomObject", s(object));
        }
        if let Some(trace) = lease.origin.trace {
            request = request.expression_attribute_values(":trace", s(trace));
        }
        self.count_update(&request);
        let out = request.send().await;
        match out {
            Ok(out) => {
                let attempts = out
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("attempts"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Ok(Claim::Started { attempts })
            }
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                // Why did it fail? Read the item (strongly consistent).
                let item = self.get_event_item(event_id.as_str()).await?;
                match item.as_ref().and_then(event_record) {
                    Some(r)
                        if r.status == EventStatus::Completed
                            && r.outcome != Some(Outcome::Ignored) =>
                    {
                        Ok(Claim::Completed)
                    }
                    Some(r) => Ok(Claim::Busy {
                        lease_until: r.lease_until.unwrap_or(lease_until),
                    }),
                    // Gone in between (TTL): let the caller try again.
                    None => Err(PortError::transient(
                        "ledger item changed during claim".to_owned(),
                    )),
                }
            }
            Err(e) => Err(classify(
                &format!("UpdateItem on table {}", self.tables.events),
                e,
            )),
        }
    }

    async fn complete(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        now: i64,
    ) -> Result<Completion, PortError> {
        let p = match change {
            Change::Project(p, _) => p,
            Change::Delivered(destinations) => {
                return self
                    .complete_ledger_only(
                        event_id.as_str(),
                        event_type,
                        Done {
                            destinations,
                            ..Done::new(Outcome::Applied, None)
                        },
                        now,
                        None,
                    )
                    .await
                    .map(|a| a.completion);
            }
            Change::Ignore(reason) => {
                let done = Done {
                    reason: Some(reason),
                    ..Done::new(Outcome::Ignored, None)
                };
                return self
                    .complete_ledger_only(event_id.as_str(), event_type, done, now, None)
                    .await
                    .map(|a| a.completion);
            }
        };
        let ledger = self.completion_update(
            event_id.as_str(),
            event_type,
            Done::new(Outcome::Applied, Some(p.key())),
            now,
            None,
        )?;
        // Ties are settled by rank on this path.
        let put = self.projection_put(p, event_id.as_str(), Ties::ByRank)?;
        self.meter.count(true, || {
            vec![
                Written::item(update_size(
                    &ledger.key,
                    ledger.expression_attribute_values.as_ref(),
                )),
                projection_written(put.item()),
            ]
        });
        let out = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(ledger).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match out {
            Ok(_) => Ok(Completion::Completed(Outcome::Applied)),
            Err(e) => {
                let reasons: Vec<Option<String>> = match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) => c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().map(str::to_owned))
                        .collect(),
                    _ => {
                        return Err(classify(
                            &format!(
                                "TransactWriteItems on tables {} and {}",
                                self.tables.events,
                                self.tables.name(ItemTable::of(p))
                            ),
                            e,
                        ))
                    }
                };
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .and_then(|r| r.as_deref())
                        .is_some_and(|c| c == "ConditionalCheckFailed")
                };
                if failed(0) {
                    Ok(Completion::Duplicate)
                } else if failed(1) {
                    // Older than the stored state: complete without changing it.
                    self.complete_ledger_only(
                        event_id.as_str(),
                        event_type,
                        Done::new(Outcome::Stale, Some(p.key())),
                        now,
                        None,
                    )
                    .await
                    .map(|a| a.completion)
                } else if reasons.iter().flatten().any(|c| c == "ValidationError") {
                    // Our own item is invalid (too large, a bad attribute):
                    // the same write fails the same way every time.
                    Err(PortError::permanent(format!(
                        "TransactWriteItems cancelled: {reasons:?}"
                    )))
                } else {
                    // Conflicts with another transaction, throttling: retry.
                    Err(PortError::transient(format!(
                        "TransactWriteItems cancelled: {reasons:?}"
                    )))
                }
            }
        }
    }

    async fn apply(
        &self,
        event_id: &EventId,
        event_type: &str,
        change: Change<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Applied, PortError> {
        // Two single-item writes, each conditional: the projection (a
        // replay of the same or an older event cannot change newer state),
        // then the ledger (one completion). A crash between them leaves the
        // projection written and the event not completed: its redelivery
        // writes the same projection again and completes it.
        let (done, tie) = match change {
            Change::Delivered(destinations) => (
                Done {
                    destinations,
                    ..Done::new(Outcome::Applied, None)
                },
                None,
            ),
            Change::Ignore(reason) => (
                Done {
                    reason: Some(reason),
                    ..Done::new(Outcome::Ignored, None)
                },
                None,
            ),
            Change::Project(p, ties) => {
                match self.put_projection(p, event_id.as_str(), ties).await? {
                    (Some(outcome), tie) => (Done::new(outcome, Some(p.key())), tie),
                    (None, _) => return Ok(Applied::plain(Completion::Tied, None)),
                }
            }
        };
        let applied = self
            .complete_ledger_only(event_id.as_str(), event_type, done, now, Some(origin))
            .await?;
        Ok(Applied { tie, ..applied })
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
        let attempts = match path {
            WritePath::Claimed => ", attempts = if_not_exists(attempts, :one)",
            WritePath::Apply => " ADD attempts :one",
        };
        let (whom_set, whom_values) = whom(&origin);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id.as_str()))
            .update_expression(format!(
                "SET #status = :failed, lastError = :error, eventType = if_not_exists(eventType, :type), \
                 expiresAt = :exp{whom_set}{attempts} REMOVE leaseUntil, leaseOwner",
            ))
            .condition_expression(NOT_FINAL)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":failed", s(EventStatus::Failed.as_str()))
            .expression_attribute_values(":completed", s(EventStatus::Completed.as_str()))
            .expression_attribute_values(":ignored", s(Outcome::Ignored.as_str()))
            .expression_attribute_values(":error", s(error))
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS))
            .expression_attribute_values(":one", n(1));
        for (name, value) in whom_values {
            request = request.expression_attribute_values(name, value);
        }
        self.count_update(&request);
        let out = request.send().await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => Ok(()),
            Err(e) => Err(classify(
                &format!("UpdateItem on table {}", self.tables.events),
                e,
            )),
        }
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
        let (whom_set, whom_values) = whom(&origin);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id.as_str()))
            .update_expression(format!(
                "SET #d = :state, eventType = if_not_exists(eventType, :type), \
                 #status = if_not_exists(#status, :processing), attempts = if_not_exists(attempts, :zero), \
                 expiresAt = if_not_exists(expiresAt, :exp){whom_set}",
            ))
            .expression_attribute_names("#d", format!("{DESTINATION_PREFIX}{destination}"))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":state", state_attr(state)?)
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":processing", s(EventStatus::Processing.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS));
        for (name, value) in whom_values {
            request = request.expression_attribute_values(name, value);
        }
        self.count_update(&request);
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("UpdateItem on table {}", self.tables.events), e))
    }

    async fn event(&self, event_id: &str) -> Result<Option<EventRecord>, PortError> {
        Ok(self
            .get_event_item(event_id)
            .await?
            .as_ref()
            .and_then(event_record))
    }

    async fn item(&self, id: &str) -> Result<Option<StoredItem>, PortError> {
        let routed = ItemTable::for_id(id);
        let (table, key) = (self.tables.name(routed), routed.key_attribute());
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&format!("GetItem on table {table}"), e))?;
        Ok(out.item.map(|i| StoredItem(from_item(&i))))
    }

    async fn holdings(&self, subject: &Subject) -> Result<Holdings, PortError> {
        let t = &self.tables;
        let present = |item: Option<HashMap<String, AttributeValue>>, id: &str| {
            item.map(|_| id.to_owned()).into_iter().collect::<Vec<_>>()
        };
        let mut h = Holdings::default();
        match subject {
            Subject::Account(a) => {
                h.providers = present(self.get(&t.provider, "stripeAccountId", a).await?, a);
                (h.objects, _) = self
                    .scan_keys(&t.objects, "objectId", &["account"], a)
                    .await?;
                (h.events, _) = self
                    .scan_keys(&t.events, "eventId", &["subject"], a)
                    .await?;
            }
            Subject::Object(o) => {
                if ItemTable::for_id(o) == ItemTable::Provider {
                    h.providers = present(self.get(&t.provider, "stripeAccountId", o).await?, o);
                }
                h.objects = present(self.get(&t.objects, "objectId", o).await?, o);
                // Its events name it as their object (every ledger write
                // records it), or as their subject when they carry no
                // account.
                (h.events, _) = self
                    .scan_keys(&t.events, "eventId", &["objectId", "subject"], o)
                    .await?;
            }
            Subject::Event(e) => {
                h.events = present(self.get_event_item(e).await?, e);
            }
        }
        h.normalise();
        Ok(h)
    }

    async fn deauthorized(&self, before: i64) -> Result<Vec<String>, PortError> {
        let table = &self.tables.provider;
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .index_name(DEAUTHORIZED_INDEX)
                .key_condition_expression("deauthorized = :yes AND deauthorizedAt <= :before")
                .expression_attribute_values(":yes", s(DEAUTHORIZED))
                .expression_attribute_values(":before", n(before))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| {
                    classify(
                        &format!("Query on index {DEAUTHORIZED_INDEX} of table {table}"),
                        e,
                    )
                })?;
            keys.extend(out.items().iter().filter_map(|i| {
                i.get("stripeAccountId")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
            }));
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(keys),
            }
        }
    }

    async fn erase(&self, holdings: &Holdings) -> Result<Holdings, PortError> {
        let t = &self.tables;
        // The provider item goes last: it is what the worker finds a
        // deauthorized account by, so an erasure cut short (a throttled
        // delete, a crash) is found and finished on the next pass.
        // A destination's state is an attribute of the ledger item: it goes
        // with it.
        let events = self
            .delete_each(&t.events, "eventId", &holdings.events)
            .await?;
        let objects = self
            .delete_each(&t.objects, "objectId", &holdings.objects)
            .await?;
        let providers = self
            .delete_each(&t.provider, "stripeAccountId", &holdings.providers)
            .await?;
        let mut removed = Holdings {
            providers,
            objects,
            events,
        };
        removed.normalise();
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), PortError> {
        for table in [
            &self.tables.events,
            &self.tables.objects,
            &self.tables.provider,
        ] {
            self.client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| classify(&format!("DescribeTable on table {table}"), e))?;
        }
        Ok(())
    }
}

#[cfg(feature = "test-support")]
impl DynamoStore {
    /// Writes `items` (JSON objects, as the adapter stores them) to
    /// `table` with `BatchWriteItem`, 25 at a time: how the benches fill a
    /// large table without the SDK's types.
    pub async fn put_raw(
        &self,
        table: &str,
        items: &[serde_json::Map<String, serde_json::Value>],
    ) -> Result<(), PortError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        for chunk in items.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(to_item(item)))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(|e| PortError::permanent(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(|e| classify(&format!("BatchWriteItem on table {table}"), e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(table))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }
}
