//! The store port on DynamoDB: the events ledger and the two projection
//! tables, with the SPEC's key and attribute names.
//!
//! Cost of an applied event: one `UpdateItem` for the claim (1 WCU) and one
//! two-item `TransactWriteItems` (ledger + projection: 2 × 2 WCU), so 5 write
//! units for items under 1 KB. Ignored events and duplicates cost less.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use hookline_core::clock::rfc3339;
use hookline_core::envelope::EventId;
use hookline_core::ports::{Claim, Lease, PortError, Store};
use hookline_core::records::{
    Completion, EventRecord, EventStatus, ItemTable, Outcome, Projection, StoredItem,
    LEDGER_TTL_SECS,
};

use crate::attrs::{from_item, to_item};
use crate::errors::classify;

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
        Self { client, tables }
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

    /// The ledger update that completes an event, guarded against a second
    /// completion.
    fn completion_update(
        &self,
        event_id: &str,
        event_type: &str,
        outcome: Outcome,
        object: Option<&str>,
        now: i64,
    ) -> Result<Update, PortError> {
        // The item the event projected (or would have, when stale), for
        // lookups from an event to its state.
        let object_set = if object.is_some() {
            ", objectId = :object"
        } else {
            ""
        };
        let mut update = Update::builder()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id))
            .update_expression(format!(
                "SET #status = :completed, outcome = :outcome, completedAt = :at, expiresAt = :exp, \
                 eventType = if_not_exists(eventType, :type), attempts = if_not_exists(attempts, :one){object_set} \
                 REMOVE leaseUntil, leaseOwner"
            ))
            .condition_expression("attribute_not_exists(eventId) OR #status <> :completed")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", s(EventStatus::Completed.as_str()))
            .expression_attribute_values(":outcome", s(outcome.as_str()))
            .expression_attribute_values(":at", s(rfc3339(now)))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS))
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":one", n(1));
        if let Some(o) = object {
            update = update.expression_attribute_values(":object", s(o));
        }
        update
            .build()
            .map_err(|e| PortError::permanent(format!("ledger update: {e}")))
    }

    /// Completes without a projection change (ignored or stale).
    async fn complete_ledger_only(
        &self,
        event_id: &str,
        event_type: &str,
        outcome: Outcome,
        object: Option<&str>,
        now: i64,
    ) -> Result<Completion, PortError> {
        let u = self.completion_update(event_id, event_type, outcome, object, now)?;
        let out = self
            .client
            .update_item()
            .table_name(u.table_name)
            .set_key(Some(u.key))
            .update_expression(u.update_expression)
            .set_condition_expression(u.condition_expression)
            .set_expression_attribute_names(u.expression_attribute_names)
            .set_expression_attribute_values(u.expression_attribute_values)
            .send()
            .await;
        match out {
            Ok(_) => Ok(Completion::Completed(outcome)),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                Ok(Completion::Duplicate)
            }
            Err(e) => Err(classify(
                &format!("UpdateItem on table {}", self.tables.events),
                e,
            )),
        }
    }

    fn projection_put(&self, p: &Projection) -> Result<Put, PortError> {
        let routed = ItemTable::of(p);
        let (table, key) = (self.tables.name(routed), routed.key_attribute());
        Put::builder()
            .table_name(table)
            .set_item(Some(to_item(&p.to_item())))
            .condition_expression(format!(
                "attribute_not_exists({key}) OR lastEventCreated <= :created"
            ))
            .expression_attribute_values(":created", n(p.event_created()))
            .build()
            .map_err(|e| PortError::permanent(format!("projection put: {e}")))
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
    })
}

#[async_trait]
impl Store for DynamoStore {
    async fn claim(
        &self,
        event_id: &EventId,
        event_type: &str,
        lease: Lease<'_>,
    ) -> Result<Claim, PortError> {
        let (now, lease_until) = (lease.now, lease.until());
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id.as_str()))
            .update_expression(
                "SET #status = :processing, eventType = :type, leaseUntil = :lease, leaseOwner = :owner, \
                 expiresAt = :exp, #source = :source ADD attempts :one",
            )
            // The owner's own retry (its first answer was lost) gets the lease back.
            .condition_expression(
                "attribute_not_exists(eventId) OR (#status <> :completed AND \
                 (#status <> :processing OR leaseUntil <= :now OR leaseOwner = :owner))",
            )
            .expression_attribute_values(":owner", s(lease.owner))
            .expression_attribute_values(":source", s(lease.source))
            .expression_attribute_names("#source", "source")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s(EventStatus::Processing.as_str()))
            .expression_attribute_values(":completed", s(EventStatus::Completed.as_str()))
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
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
                    Some(r) if r.status == EventStatus::Completed => Ok(Claim::Completed),
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
        projection: Option<&Projection>,
        now: i64,
    ) -> Result<Completion, PortError> {
        let Some(p) = projection else {
            return self
                .complete_ledger_only(event_id.as_str(), event_type, Outcome::Ignored, None, now)
                .await;
        };
        let ledger = self.completion_update(
            event_id.as_str(),
            event_type,
            Outcome::Applied,
            Some(p.key()),
            now,
        )?;
        let put = self.projection_put(p)?;
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
                        Outcome::Stale,
                        Some(p.key()),
                        now,
                    )
                    .await
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

    async fn fail(
        &self,
        event_id: &EventId,
        event_type: &str,
        error: &str,
        now: i64,
    ) -> Result<(), PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.events)
            .key("eventId", s(event_id.as_str()))
            .update_expression(
                "SET #status = :failed, lastError = :error, eventType = if_not_exists(eventType, :type), \
                 expiresAt = :exp, attempts = if_not_exists(attempts, :one) REMOVE leaseUntil, leaseOwner",
            )
            .condition_expression("attribute_not_exists(eventId) OR #status <> :completed")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":failed", s(EventStatus::Failed.as_str()))
            .expression_attribute_values(":completed", s(EventStatus::Completed.as_str()))
            .expression_attribute_values(":error", s(error))
            .expression_attribute_values(":type", s(event_type))
            .expression_attribute_values(":exp", n(now + LEDGER_TTL_SECS))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => Ok(()),
            Err(e) => Err(classify(
                &format!("UpdateItem on table {}", self.tables.events),
                e,
            )),
        }
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
