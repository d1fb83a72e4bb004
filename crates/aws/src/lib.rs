//! The AWS backend: the queue port on Amazon SQS, the store port on Amazon
//! DynamoDB, webhook secrets / API keys from AWS Secrets Manager, and the
//! `eventbridge` destination on Amazon EventBridge.
//!
//! Endpoints, region and credentials come from the standard SDK chain
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, `AWS_REGION`, …). Every call
//! has a timeout and the SDK's standard retry mode; every error is classified
//! retryable or permanent in [`errors`].
//!
//! Architecture invariant: the only crate that imports `aws-sdk-*`.

mod attrs;
pub mod config;
mod dynamo;
mod errors;
pub mod eventbridge;
pub mod meter;
pub mod provision;
pub mod secrets;
mod sqs;

pub use config::{load as load_config, AwsClients};
pub use dynamo::{DynamoStore, Tables};
pub use eventbridge::EventBridgeDestination;
pub use meter::WriteUnits;
pub use secrets::SecretsReader;
pub use sqs::{SqsQueue, SqsRedrive};
