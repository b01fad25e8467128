//! The read side: `GET /v1/catalog`, `GET /v1/orgs/{org}/balance`,
//! `GET /v1/orgs/{org}/ledger`, `GET /v1/orgs/{org}/notifications` (in-app
//! alert notifications, newest first), `GET /v1/orgs/{org}/alerts`, and the
//! problem+json answer for any route that does not exist (the API's
//! `$default` route).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_http::{
    json_response, only_query_params, path_param, query_param, respond, route_key, views, ApiError, Caller,
    DynamoLedger,
};
use serde_json::json;

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(route(ledger, &req).await)
}

async fn route(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    match route_key(req).as_str() {
        "GET /v1/catalog" => {
            Caller::from_request(req)?;
            Ok(json_response(StatusCode::OK, &views::catalog(ledger.catalog())))
        }
        "GET /v1/orgs/{org}/balance" => balance(ledger, req).await,
        "GET /v1/orgs/{org}/ledger" => history(ledger, req).await,
        "GET /v1/orgs/{org}/notifications" => notifications(ledger, req).await,
        "GET /v1/orgs/{org}/alerts" => alerts(ledger, req).await,
        _ => Err(ApiError::RouteNotFound(format!(
            "{} {}",
            req.method(),
            req.uri().path()
        ))),
    }
}

async fn balance(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    only_query_params(req, &["user"])?;
    // The service may look through one user's eyes (`?user=`).
    let viewer = caller.actor(query_param(req, "user").as_deref())?;
    let account = ledger.balance(&org).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::balance(&account, ledger.catalog(), &viewer, ledger.now()),
    ))
}

async fn history(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    only_query_params(req, &["limit", "cursor"])?;
    let limit = page_limit(req)?;
    let before = query_param(req, "cursor").map(|c| decode_cursor(&c)).transpose()?;
    let viewer = caller.actor(None)?;
    let page = ledger.history(&org, &viewer, limit, before).await?;
    let entries: Vec<_> = page.entries.iter().map(views::entry).collect();
    let body = json!({ "entries": entries, "next_cursor": page.next_before.map(encode_cursor) });
    Ok(json_response(StatusCode::OK, &body))
}

fn page_limit(req: &Request) -> Result<u32, ApiError> {
    match query_param(req, "limit") {
        None => Ok(DEFAULT_PAGE),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1-{MAX_PAGE}"))),
    }
}

async fn notifications(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    only_query_params(req, &["limit", "cursor"])?;
    let limit = page_limit(req)?;
    let after = query_param(req, "cursor")
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("note:").map(str::to_string))
                .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
        })
        .transpose()?;
    let (notes, next) = ledger.notifications(&org, limit, after).await?;
    let notes: Vec<_> = notes.iter().map(views::notification).collect();
    let next = next.map(|id| URL_SAFE_NO_PAD.encode(format!("note:{id}")));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "notifications": notes, "next_cursor": next }),
    ))
}

async fn alerts(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    only_query_params(req, &[])?;
    let account = ledger.balance(&org).await?;
    Ok(json_response(StatusCode::OK, &views::alerts(&account)))
}

/// Cursors are opaque to clients: they name the seq to continue below.
fn encode_cursor(before: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("before:{before}"))
}

fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("before:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}
