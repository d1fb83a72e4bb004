//! SDK configuration: one rustls (ring) HTTPS client, timeouts on every
//! call, the standard retry mode.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::Region;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Per-attempt timeout of an ordinary call.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-operation timeout, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
/// Connection set-up timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Loads the shared SDK configuration from the standard chain (environment,
/// profile, ECS task role, IMDS). The region falls back to `us-east-1` when
/// nothing sets one.
pub async fn load() -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    // The loader hands this one client to the region and credential
    // providers too (IMDS, STS), so no second HTTP stack is needed.
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await;
    if config.region().is_some() {
        config
    } else {
        config.to_builder().region(Region::new("us-east-1")).build()
    }
}

/// The service clients, built once from one configuration.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// For `eventbridge` destinations.
    pub eventbridge: aws_sdk_eventbridge::Client,
}

impl AwsClients {
    pub async fn load() -> Self {
        let config = load().await;
        Self {
            sqs: aws_sdk_sqs::Client::new(&config),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            eventbridge: aws_sdk_eventbridge::Client::new(&config),
        }
    }
}
