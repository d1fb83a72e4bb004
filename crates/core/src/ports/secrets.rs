//! The secrets port: a secret's current value by id or ARN (AWS Secrets
//! Manager is the adapter).

use async_trait::async_trait;
use secrecy::SecretString;

use super::PortError;

/// The secrets port: reads a secret's current value by id or ARN (AWS
/// Secrets Manager is the adapter).
#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, id: &str) -> Result<SecretString, PortError>;

    /// The value with the version it is (Secrets Manager's `VersionId` of
    /// `AWSCURRENT`), for `hookline keys status`; sources without versions
    /// answer `None`.
    async fn fetch_versioned(&self, id: &str) -> Result<Versioned, PortError> {
        Ok(Versioned {
            value: self.fetch(id).await?,
            version: None,
        })
    }

    /// The current version's id without reading the value (Secrets
    /// Manager's `DescribeSecret`): what `keys status` compares with the
    /// services when its caller may not read the secret itself.
    async fn current_version(&self, _id: &str) -> Result<Option<String>, PortError> {
        Ok(None)
    }
}

/// A secret's value and the version it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub value: SecretString,
    pub version: Option<String>,
}
