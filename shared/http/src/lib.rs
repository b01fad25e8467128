//! HTTP plumbing the ledger's functions share: the caller from the token's
//! claims, request parsing, idempotency, views and problem+json. Handlers
//! parse, authorise, call one operation of the service layer, and render.

pub mod auth;
pub mod csv;
pub mod input;
pub mod problem;
pub mod routes;
pub mod views;

pub use auth::Caller;
pub use input::{
    integer, json_body, only_query_params, optional_integer, path_param, query_param, route_key, AmountInput, JsonBody,
};
pub use ledger_service::DynamoLedger;
pub use problem::ApiError;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use ledger_service::Applied;

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body.to_string()))
        .expect("valid response")
}

/// The answer to a mutation, original or replayed (marked so for clients).
pub fn applied_response(applied: &Applied) -> Response<Body> {
    let mut response = match views::outcome(applied) {
        Ok((status, body)) => json_response(status, &body),
        Err(refusal) => refusal.to_response(),
    };
    if applied.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", "true".parse().expect("valid header"));
    }
    response
}

/// Every handler's result becomes a response here: errors as problem+json.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|e| e.to_response())
}
