//! One place that decides what an AWS error means for the event behind it:
//! try again soon (transient), wait for an operator (configuration), or
//! give up on this request (permanent).

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use hookline_core::ports::PortError;

/// Service error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "TransactionInProgressException",
    // A single-item write that met a transaction in flight on its item, and
    // the same reason inside a cancelled transaction.
    "TransactionConflictException",
    "TransactionConflict",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMS.ThrottlingException",
    "AWS.SimpleQueueService.RequestThrottled",
];

/// Service error codes that mean the setup is wrong: a resource is missing,
/// the role may not call the action or use the key, the credentials are
/// missing, invalid or expired. An operator fixes these; events wait.
const CONFIGURATION_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "OptInRequired",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KmsException",
    "KMS.AccessDeniedException",
    "KMS.DisabledException",
    "KMS.InvalidStateException",
    "KMS.NotFoundException",
    "KMS.KeyUnavailableException",
    "KMS.OptInRequired",
    "KMS.InvalidKeyUsageException",
];

/// Whether a service error code is transient.
pub(crate) fn code_is_transient(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Whether a service error code is a configuration problem.
pub(crate) fn code_is_configuration(code: &str) -> bool {
    CONFIGURATION_CODES.contains(&code)
}

/// How an error code is classified.
pub(crate) fn classify_code(code: &str, text: String) -> PortError {
    if code_is_transient(code) {
        PortError::transient(text)
    } else if code_is_configuration(code) {
        PortError::configuration(configuration_hint(text))
    } else {
        PortError::permanent(text)
    }
}

fn configuration_hint(text: String) -> String {
    format!(
        "{text} (check that the resource exists in this account and region, that the task role may call the action on it and use its KMS key, and that credentials are present and current)"
    )
}

/// Classifies an SDK error. `op` names the action and the resource
/// (`"UpdateItem on table hookline-events"`), so the log says what to fix.
/// Timeouts, connection failures, 5xx and throttling are transient; a
/// failure before the request was sent (credentials could not be resolved)
/// and the codes above are configuration; the rest is permanent.
pub(crate) fn classify<E>(op: &str, err: SdkError<E>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = format!("{op}: {}", DisplayErrorContext(&err));
    kind_of(text, &err).with_source(err)
}

fn kind_of<E>(text: String, err: &SdkError<E>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => PortError::transient(text),
        SdkError::DispatchFailure(d) => {
            if d.is_io() || d.is_timeout() {
                PortError::transient(text)
            } else {
                // Identity resolution fails here: no or unusable credentials.
                PortError::configuration(configuration_hint(text))
            }
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default();
            if status >= 500 || status == 429 {
                PortError::transient(text)
            } else if code.is_empty() && (status == 403 || status == 401) {
                PortError::configuration(configuration_hint(text))
            } else {
                classify_code(code, text)
            }
        }
        SdkError::ConstructionFailure(_) => PortError::configuration(configuration_hint(text)),
        _ => PortError::transient(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert!(code_is_transient("ThrottlingException"));
        assert!(code_is_transient("ProvisionedThroughputExceededException"));
        // A single-item write colliding with a transaction in flight.
        assert!(classify_code("TransactionConflictException", String::new()).is_retryable());
        for code in [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "KMS.AccessDeniedException",
            "ExpiredTokenException",
            "UnrecognizedClientException",
        ] {
            assert!(
                classify_code(code, String::new()).is_configuration(),
                "{code}"
            );
        }
        assert_eq!(
            classify_code("ValidationException", String::new()).kind(),
            hookline_core::ports::ErrorKind::Permanent
        );
    }
}
