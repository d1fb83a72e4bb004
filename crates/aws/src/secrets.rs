//! Secrets from AWS Secrets Manager. Values come back as `SecretString`
//! and are never logged.

use hookline_core::ports::PortError;
use hookline_core::secrets::Versioned;
use secrecy::SecretString;

use crate::errors::classify;

/// Reads the current value of a secret (id or ARN).
pub async fn fetch(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<SecretString, PortError> {
    Ok(fetch_versioned(client, secret_id).await?.value)
}

/// Reads the current value of a secret with its `VersionId`.
pub async fn fetch_versioned(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<Versioned, PortError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| classify("GetSecretValue", e))?;
    let version = out.version_id;
    out.secret_string
        .map(|v| Versioned {
            value: SecretString::from(v),
            version,
        })
        .ok_or_else(|| PortError::permanent(format!("secret {secret_id} has no string value")))
}

/// The `VersionId` that holds the `AWSCURRENT` stage, without the value.
pub async fn current_version(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<Option<String>, PortError> {
    let out = client
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| classify("DescribeSecret", e))?;
    Ok(out.version_ids_to_stages.and_then(|m| {
        m.into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(v, _)| v)
    }))
}

/// A Secrets Manager reader, cheap to clone.
#[derive(Debug, Clone)]
pub struct SecretsReader {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsReader {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }

    /// Builds a reader from the standard SDK configuration chain.
    pub async fn from_env() -> Self {
        Self::new(aws_sdk_secretsmanager::Client::new(
            &crate::config::load().await,
        ))
    }

    pub async fn fetch(&self, secret_id: &str) -> Result<SecretString, PortError> {
        fetch(&self.client, secret_id).await
    }
}

#[async_trait::async_trait]
impl hookline_core::secrets::SecretSource for SecretsReader {
    async fn fetch(&self, id: &str) -> Result<SecretString, PortError> {
        fetch(&self.client, id).await
    }

    async fn fetch_versioned(&self, id: &str) -> Result<Versioned, PortError> {
        fetch_versioned(&self.client, id).await
    }

    async fn current_version(&self, id: &str) -> Result<Option<String>, PortError> {
        current_version(&self.client, id).await
    }
}
