//! Creating the queues and tables on the endpoint the standard AWS settings
//! name, for `hookline dev aws-setup` against a local AWS-compatible server.

use hookline_aws::{AwsClients, Tables};
use hookline_settings::TableSettings;

use crate::BackendError;

/// Creates the SQS queue + DLQ and the DynamoDB tables on the endpoint the
/// standard AWS settings name (`hookline dev aws-setup`, for a local
/// AWS-compatible server); returns `(QUEUE_URL, DLQ_URL)`.
pub async fn provision_aws(
    queue_name: &str,
    max_receives: u32,
    visibility_secs: u64,
    tables: &TableSettings,
) -> Result<(String, String), BackendError> {
    let clients = AwsClients::load().await;
    let tables = Tables {
        events: tables.events_table_name.clone(),
        objects: tables.objects_table_name.clone(),
        provider: tables.provider_table_name.clone(),
    };
    let pair = hookline_aws::provision::provision(
        &clients,
        queue_name,
        max_receives,
        visibility_secs,
        &tables,
    )
    .await
    .map_err(BackendError::Provision)?;
    Ok((pair.queue_url, pair.dlq_url))
}
