//! Creates the queues and tables Hookline needs, for local development
//! (`make aws-local`) and tests. Production resources come from `infra/`.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use hookline_core::ports::PortError;

use crate::dynamo::{Tables, DEAUTHORIZED_INDEX};
use crate::errors::classify;

/// URLs of a queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePair {
    pub queue_url: String,
    pub dlq_url: String,
}

/// A queue's ARN, from its URL.
async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, PortError> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify("GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default())
}

/// Creates `name` and `name-dlq` (`.fifo` kept at the end for FIFO queues),
/// with a redrive policy after `max_receives` deliveries. Idempotent.
pub async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receives: u32,
    visibility_secs: u64,
) -> Result<QueuePair, PortError> {
    let fifo = name.ends_with(".fifo");
    let base = name.trim_end_matches(".fifo");
    let dlq_name = if fifo {
        format!("{base}-dlq.fifo")
    } else {
        format!("{base}-dlq")
    };
    let mut dlq = sqs
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .attributes(
            QueueAttributeName::MaximumMessageSize,
            crate::sqs::SQS_MAX_MESSAGE_BYTES.to_string(),
        );
    if fifo {
        dlq = dlq.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let dlq_url = dlq
        .send()
        .await
        .map_err(|e| classify("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives,
    })
    .to_string();
    let mut main = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        )
        .attributes(QueueAttributeName::MessageRetentionPeriod, "345600")
        .attributes(
            QueueAttributeName::MaximumMessageSize,
            crate::sqs::SQS_MAX_MESSAGE_BYTES.to_string(),
        );
    if fifo {
        main = main.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let queue_url = main
        .send()
        .await
        .map_err(|e| classify("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    Ok(QueuePair { queue_url, dlq_url })
}

/// A sparse index (only items with its key attributes) a table needs.
struct Index {
    name: &'static str,
    /// The partition key, a string.
    hash: &'static str,
    /// The sort key, a number.
    range: Option<&'static str>,
}

impl Index {
    fn attributes(&self) -> Result<Vec<AttributeDefinition>, PortError> {
        let mut out = vec![definition(self.hash, ScalarAttributeType::S)?];
        if let Some(r) = self.range {
            out.push(definition(r, ScalarAttributeType::N)?);
        }
        Ok(out)
    }

    fn key_schema(&self) -> Result<Vec<KeySchemaElement>, PortError> {
        let mut out = vec![key(self.hash, KeyType::Hash)?];
        if let Some(r) = self.range {
            out.push(key(r, KeyType::Range)?);
        }
        Ok(out)
    }

    fn projection(&self) -> Projection {
        Projection::builder()
            .projection_type(ProjectionType::KeysOnly)
            .build()
    }
}

fn built(e: aws_sdk_dynamodb::error::BuildError) -> PortError {
    PortError::permanent(e.to_string())
}

fn definition(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, PortError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(built)
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, PortError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(built)
}

/// Creates the three tables (on-demand, string partition key) with the
/// one index erasure reads, and turns on TTL on the ledger's `expiresAt`.
/// An existing table keeps its settings; an index it lacks is added.
///
/// The ledger and the objects have no index: a write to an item that
/// carries an index's key is billed once more for the index, and erase
/// finds an account's items by scanning instead. The deauthorization index
/// is sparse: only an account that left carries its key.
pub async fn create_tables(
    ddb: &aws_sdk_dynamodb::Client,
    tables: &Tables,
) -> Result<(), PortError> {
    let by_deauthorization = Index {
        name: DEAUTHORIZED_INDEX,
        hash: "deauthorized",
        range: Some("deauthorizedAt"),
    };
    for (table, key_name, index) in [
        (&tables.events, "eventId", None),
        (&tables.objects, "objectId", None),
        (
            &tables.provider,
            "stripeAccountId",
            Some(by_deauthorization),
        ),
    ] {
        let mut attributes = vec![definition(key_name, ScalarAttributeType::S)?];
        let mut create = ddb
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(key_name, KeyType::Hash)?);
        if let Some(index) = &index {
            let gsi = GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(index.key_schema()?))
                .projection(index.projection())
                .build()
                .map_err(built)?;
            attributes.extend(index.attributes()?);
            create = create.global_secondary_indexes(gsi);
        }
        let created = create
            .set_attribute_definitions(Some(attributes))
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                if let Some(index) = &index {
                    add_missing_index(ddb, table, index).await?;
                }
            }
            Err(e) => return Err(classify("CreateTable", e)),
        }
    }
    // Already enabled (or being enabled) is fine: asked, not read from an
    // error's text.
    let ttl = ddb
        .describe_time_to_live()
        .table_name(&tables.events)
        .send()
        .await
        .map_err(|e| classify("DescribeTimeToLive", e))?;
    let status = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    ddb.update_time_to_live()
        .table_name(&tables.events)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expiresAt")
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("UpdateTimeToLive", e))
}

/// Adds `index` to an existing table that lacks it (a table made before
/// the index existed).
async fn add_missing_index(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    index: &Index,
) -> Result<(), PortError> {
    let described = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| classify("DescribeTable", e))?;
    let present = described
        .table()
        .map(|t| t.global_secondary_indexes())
        .unwrap_or_default()
        .iter()
        .any(|i| i.index_name() == Some(index.name));
    if present {
        return Ok(());
    }
    let action = CreateGlobalSecondaryIndexAction::builder()
        .index_name(index.name)
        .set_key_schema(Some(index.key_schema()?))
        .projection(index.projection())
        .build()
        .map_err(built)?;
    ddb.update_table()
        .table_name(table)
        .set_attribute_definitions(Some(index.attributes()?))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder().create(action).build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("UpdateTable", e))
}

/// Creates a queue pair and the three tables with the shared clients.
pub async fn provision(
    clients: &crate::AwsClients,
    queue_name: &str,
    max_receives: u32,
    visibility_secs: u64,
    tables: &Tables,
) -> Result<QueuePair, PortError> {
    let pair = create_queue_pair(&clients.sqs, queue_name, max_receives, visibility_secs).await?;
    create_tables(&clients.dynamodb, tables).await?;
    Ok(pair)
}

/// Creates (or updates) a Secrets Manager secret holding `value`; returns
/// its ARN. For tests (feature `test-support`); production secrets come
/// from `infra/` and `aws secretsmanager put-secret-value`.
#[cfg(feature = "test-support")]
pub async fn put_secret(
    clients: &crate::AwsClients,
    name: &str,
    value: &secrecy::SecretString,
) -> Result<String, PortError> {
    use secrecy::ExposeSecret;
    let created = clients
        .secrets
        .create_secret()
        .name(name)
        .secret_string(value.expose_secret())
        .send()
        .await;
    match created {
        Ok(out) => Ok(out.arn.unwrap_or_default()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            let out = clients
                .secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value.expose_secret())
                .send()
                .await
                .map_err(|e| classify("PutSecretValue", e))?;
            Ok(out.arn.unwrap_or_default())
        }
        Err(e) => Err(classify("CreateSecret", e)),
    }
}

/// Creates an EventBridge bus whose events with `source` go to a new SQS
/// queue; returns the queue's URL. For tests (feature `test-support`): the
/// team's bus and its rules are the team's own.
#[cfg(feature = "test-support")]
pub async fn event_bus_into_queue(
    clients: &crate::AwsClients,
    bus: &str,
    source: &str,
) -> Result<String, PortError> {
    let events = &clients.eventbridge;
    events
        .create_event_bus()
        .name(bus)
        .send()
        .await
        .map_err(|e| classify("CreateEventBus", e))?;
    let queue_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("{bus}-target"))
        .send()
        .await
        .map_err(|e| classify("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    let queue_arn = queue_arn(&clients.sqs, &queue_url).await?;
    let pattern = serde_json::json!({ "source": [source] }).to_string();
    events
        .put_rule()
        .name(format!("{bus}-all"))
        .event_bus_name(bus)
        .event_pattern(pattern)
        .send()
        .await
        .map_err(|e| classify("PutRule", e))?;
    events
        .put_targets()
        .rule(format!("{bus}-all"))
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map_err(|e| classify("PutTargets", e))?;
    Ok(queue_url)
}
