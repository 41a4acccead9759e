//! Mapping of AWS SDK errors onto [`PortError`].
//!
//! Every adapter funnels its SDK errors through [`classify`], which sorts
//! them into transient (unreachable, timeout, 5xx, throttling), denied and
//! "service said no" cases; the adapter then names the missing bucket, key or
//! queue from the error code.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use facefleet_ports::PortError;

/// Error codes AWS services use for throttling.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Error codes meaning "you may not do this".
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "UnrecognizedClientException",
    "AccessDeniedException",
    "Forbidden",
    "KMS.AccessDeniedException",
];

/// What an SDK error means, backend-neutrally.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The service's error code, if it sent one.
    pub code: Option<String>,
    /// HTTP status, if a response came back.
    pub status: Option<u16>,
    /// Human-readable description (never contains credentials: the SDK
    /// does not put them in errors).
    pub message: String,
    /// Sorted kind.
    pub kind: FailureKind,
}

/// Sorted kinds of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Retry later: connection refused/reset, timeout, 5xx, throttling.
    Transient,
    /// Permission problem.
    Denied,
    /// The service refused the request for another reason (look at `code`).
    Service,
    /// The request could not be built (bad argument).
    Construction,
}

impl Failure {
    /// True if the error code is one of `codes`.
    pub fn code_is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    /// The generic [`PortError`] for this failure, `what` naming the call.
    pub fn into_port(self, what: &str) -> PortError {
        match self.kind {
            FailureKind::Transient => PortError::Unavailable(format!("{what}: {}", self.message)),
            FailureKind::Denied => PortError::AccessDenied(format!("{what}: {}", self.message)),
            FailureKind::Construction => {
                PortError::InvalidArgument(format!("{what}: {}", self.message))
            }
            FailureKind::Service => PortError::Other(format!("{what}: {}", self.message)),
        }
    }
}

/// Sorts an SDK error.
pub(crate) fn classify<E>(err: SdkError<E, Response>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = match &err {
        SdkError::ServiceError(e) => e.err().code().map(str::to_string),
        _ => None,
    };
    let service_message = match &err {
        SdkError::ServiceError(e) => e.err().message().map(str::to_string),
        _ => None,
    };
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            FailureKind::Transient
        }
        SdkError::ConstructionFailure(_) => FailureKind::Construction,
        SdkError::ServiceError(_) => {
            let c = code.as_deref().unwrap_or("");
            if THROTTLING_CODES.contains(&c) || status.is_some_and(|s| s >= 500 || s == 429) {
                FailureKind::Transient
            } else if DENIED_CODES.contains(&c) || status == Some(403) {
                FailureKind::Denied
            } else {
                FailureKind::Service
            }
        }
        // SdkError is non-exhaustive; anything new is treated as retryable.
        _ => FailureKind::Transient,
    };
    let message = match (&code, service_message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => match status {
            Some(s) => format!("{c} (HTTP {s})"),
            None => c.clone(),
        },
        (None, Some(m)) => m,
        (None, None) => match status {
            Some(s) if kind == FailureKind::Service || kind == FailureKind::Denied => {
                format!("HTTP {s}")
            }
            _ => DisplayErrorContext(&err).to_string(),
        },
    };
    Failure {
        code,
        status,
        message,
        kind,
    }
}
