//! One place that decides whether an AWS error is worth retrying.

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
    "TransactionConflict",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMS.ThrottlingException",
    "AWS.SimpleQueueService.RequestThrottled",
];

/// Whether a service error code is transient.
pub(crate) fn code_is_transient(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Classifies an SDK error: timeouts, dispatch failures, 5xx and throttling
/// are transient; the rest (bad request, missing queue or table, access
/// denied) is permanent.
pub(crate) fn classify<E>(op: &str, err: SdkError<E>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = format!("{op}: {}", DisplayErrorContext(&err));
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500 || status == 429 || service.err().code().is_some_and(code_is_transient)
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    };
    if transient {
        PortError::Transient(text)
    } else {
        PortError::Permanent(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(code_is_transient("ThrottlingException"));
        assert!(code_is_transient("ProvisionedThroughputExceededException"));
        assert!(!code_is_transient("ResourceNotFoundException"));
        assert!(!code_is_transient("AccessDeniedException"));
        assert!(!code_is_transient(
            "AWS.SimpleQueueService.NonExistentQueue"
        ));
    }
}
