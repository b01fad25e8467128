//! problem+json (RFC 9457): every error of every layer maps to one stable
//! problem type here, and nowhere else.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use ledger_domain::DomainError;
use ledger_service::ServiceError;
use ledger_store::StoreError;
use serde_json::{json, Map, Value};

/// The base of every problem `type`; the suffix names the kind and is stable.
pub const PROBLEM_BASE: &str = "urn:credit-ledger:problem:";
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body is {0}; send it as application/json")]
    UnsupportedMediaType(String),
    #[error("this route needs an Idempotency-Key header")]
    IdempotencyKeyMissing,
    #[error("no valid token")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(&'static str),
    /// Also the answer for another organization's data: nothing is revealed.
    #[error("no such resource")]
    NotFound,
    #[error("no route {0}")]
    RouteNotFound(String),
    /// A known path named with a method it does not take: the methods it takes.
    #[error("this path takes {}", .0.join(", "))]
    MethodNotAllowed(Vec<&'static str>),
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Service(ServiceError::Domain(e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Service(ServiceError::Store(e))
    }
}

impl ApiError {
    /// Status, stable type suffix, title, and the figures that explain it.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, Map<String, Value>) {
        use DomainError as D;
        let none = Map::new;
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", none()),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON", none()),
            ApiError::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                none(),
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                none(),
            ),
            ApiError::IdempotencyKeyMissing => (
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency-Key header missing",
                none(),
            ),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthenticated", none()),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", none()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found", none()),
            ApiError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "route-not-found", "No such route", none()),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                none(),
            ),
            ApiError::Service(ServiceError::IdempotencyKeyReused) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                none(),
            ),
            ApiError::Service(ServiceError::ExportNotFound) => {
                (StatusCode::NOT_FOUND, "export-not-found", "No such export", none())
            }
            ApiError::Service(ServiceError::ExportsUnavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "exports-unavailable",
                "Exports not configured",
                none(),
            ),
            ApiError::Service(ServiceError::NotificationNotFound) => (
                StatusCode::NOT_FOUND,
                "notification-not-found",
                "No such notification",
                none(),
            ),
            ApiError::Service(ServiceError::AlreadyReversed) => (
                StatusCode::CONFLICT,
                "already-reversed",
                "Entry reversed already",
                none(),
            ),
            ApiError::Service(ServiceError::PaymentReferenceReused | ServiceError::AlreadyClaimed) => (
                StatusCode::CONFLICT,
                "payment-reference-reused",
                "Payment reference already recorded",
                none(),
            ),
            ApiError::Service(
                ServiceError::Contention
                | ServiceError::SubjectChanged
                | ServiceError::AlreadySettled
                | ServiceError::Store(StoreError::Unavailable(_)),
            ) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "contention",
                "Too many concurrent changes; retry",
                none(),
            ),
            ApiError::Service(ServiceError::Store(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", none())
            }
            ApiError::Service(ServiceError::Domain(d)) => match d {
                D::InsufficientCredits {
                    meter,
                    needed,
                    available,
                } => {
                    let mut m = Map::new();
                    m.insert("meter".into(), json!(meter.as_str()));
                    m.insert("needed".into(), json!(needed.to_string()));
                    m.insert("available".into(), json!(available.to_string()));
                    (
                        StatusCode::PAYMENT_REQUIRED,
                        "insufficient-credits",
                        "Insufficient credits",
                        m,
                    )
                }
                D::InvalidAmount { .. } => (StatusCode::BAD_REQUEST, "invalid-amount", "Invalid amount", none()),
                D::InvalidQuantity(_) => (StatusCode::BAD_REQUEST, "invalid-quantity", "Invalid quantity", none()),
                D::InvalidId { .. } | D::InvalidSubject | D::InvalidRequest(_) => {
                    (StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", none())
                }
                D::InvalidIdempotencyKey => (
                    StatusCode::BAD_REQUEST,
                    "idempotency-key-invalid",
                    "Invalid Idempotency-Key",
                    none(),
                ),
                D::UnknownAction(_) => (StatusCode::BAD_REQUEST, "unknown-action", "Unknown action", none()),
                D::ChargedOnResult(_) => (
                    StatusCode::BAD_REQUEST,
                    "action-charged-on-result",
                    "Action charged on its result",
                    none(),
                ),
                D::UnknownPlan(_) => (StatusCode::BAD_REQUEST, "unknown-plan", "Unknown plan", none()),
                D::UnknownPackage(_) => (StatusCode::BAD_REQUEST, "unknown-package", "Unknown package", none()),
                D::SubscriptionUnchanged => (
                    StatusCode::CONFLICT,
                    "subscription-unchanged",
                    "Subscription unchanged",
                    none(),
                ),
                D::PaidByService => (
                    StatusCode::FORBIDDEN,
                    "paid-by-service",
                    "Paid changes are the service's",
                    none(),
                ),
                D::AlreadyCancelled => (
                    StatusCode::CONFLICT,
                    "subscription-cancelled",
                    "Subscription cancelled already",
                    none(),
                ),
                D::AccountNotFound => (StatusCode::NOT_FOUND, "account-not-found", "No account", none()),
                D::UnitState { .. } => (StatusCode::CONFLICT, "unit-state", "Unit not in that state", none()),
                D::EntryNotFound(_) => (StatusCode::NOT_FOUND, "entry-not-found", "No such entry", none()),
                D::NotReversible(_) => (StatusCode::CONFLICT, "not-reversible", "Entry not reversible", none()),
                D::OverdraftOwed { owed, .. } => {
                    let mut m = Map::new();
                    m.insert("owed".into(), json!(owed.to_string()));
                    (StatusCode::CONFLICT, "overdraft-owed", "Overdraft still owed", m)
                }
                D::MemberNotFound(_) => (StatusCode::NOT_FOUND, "member-not-found", "No such member", none()),
                D::AlertNotFound(_) => (StatusCode::NOT_FOUND, "alert-not-found", "No such alert", none()),
                D::TooMany { .. } => (StatusCode::CONFLICT, "too-many", "Too many", none()),
                D::ActionBlocked { action, .. } => {
                    let mut m = Map::new();
                    m.insert("action".into(), json!(action));
                    (
                        StatusCode::FORBIDDEN,
                        "action-blocked",
                        "Action blocked for this user",
                        m,
                    )
                }
                D::LimitReached {
                    kind,
                    limit,
                    left,
                    needed,
                } => {
                    let mut m = Map::new();
                    m.insert("limit".into(), json!(kind));
                    m.insert("allowed".into(), json!(limit.to_string()));
                    m.insert("left".into(), json!(left.to_string()));
                    m.insert("needed".into(), json!(needed.to_string()));
                    (StatusCode::FORBIDDEN, "limit-reached", "Spending limit reached", m)
                }
                D::InvalidCatalog(_) | D::InvariantViolated(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", none())
                }
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn problem_type(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.parts().1)
    }

    /// The problem: its status and its problem+json body.
    pub fn problem(&self) -> (StatusCode, Value) {
        let (status, kind, title, extra) = self.parts();
        // Internals are logged, never echoed.
        let detail = if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
            "The ledger could not complete the request; it changed nothing you were not told about. Retry with the same Idempotency-Key.".to_string()
        } else {
            self.to_string()
        };
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("{PROBLEM_BASE}{kind}")));
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(status.as_u16()));
        body.insert("detail".into(), json!(detail));
        body.extend(extra);
        (status, Value::Object(body))
    }

    pub fn to_response(&self) -> Response<Body> {
        let (status, body) = self.problem();
        let mut response = Response::builder().status(status).header("content-type", PROBLEM_JSON);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Contention: the retry budget ran out with nothing written.
            response = response.header("retry-after", "1");
        }
        if let ApiError::MethodNotAllowed(methods) = self {
            // RFC 9110: a 405 says which methods the resource takes.
            response = response.header("allow", methods.join(", "));
        }
        response.body(Body::Text(body.to_string())).expect("valid response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_is_a_retryable_503_that_says_when() {
        let response = ApiError::Service(ServiceError::Contention).to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        let refused = ApiError::from(DomainError::AccountNotFound).to_response();
        assert!(!refused.headers().contains_key("retry-after"));
    }
}
