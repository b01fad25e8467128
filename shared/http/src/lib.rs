//! HTTP plumbing the ledger's functions share: the caller from the token's
//! claims, request parsing, idempotency, views and problem+json.

pub mod auth;
pub mod input;
pub mod problem;
pub mod state;
pub mod views;

pub use auth::Caller;
pub use input::{json_body, only_query_params, path_param, query_param, route_key, AmountInput, JsonBody};
pub use problem::{kept_refusal, ApiError};
pub use state::{AppState, DynamoLedger};

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use ledger_store::{Applied, Reply};

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body.to_string()))
        .expect("valid response")
}

/// The reply of a mutation, original or replayed (marked so for clients).
pub fn applied_response(applied: Applied) -> Response<Body> {
    let Reply { status, body } = applied.reply;
    // A kept refusal replays as the problem it was.
    let content_type = if status >= 400 {
        problem::PROBLEM_JSON
    } else {
        "application/json"
    };
    let mut builder = Response::builder().status(status).header("content-type", content_type);
    if applied.replayed {
        builder = builder.header("idempotent-replayed", "true");
    }
    builder.body(Body::Text(body)).expect("valid response")
}

/// Every handler's result becomes a response here: errors as problem+json.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|e| e.to_response())
}

/// A reply to keep with an entry: status and JSON body.
pub fn reply(status: StatusCode, body: &serde_json::Value) -> Reply {
    Reply {
        status: status.as_u16(),
        body: body.to_string(),
    }
}
