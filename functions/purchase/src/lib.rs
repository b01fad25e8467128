//! Credits coming in:
//! - `POST /v1/orgs/{org}/purchases`: add a purchased pack after payment: a
//!   catalog package or a custom number of credits at the catalog's unit
//!   price. Once per payment reference, whatever the Idempotency-Key.
//! - `POST /v1/orgs/{org}/reversals`: reverse one charge (the service's: a
//!   credit-back for an invalid result, an operator's correction), once per
//!   entry, its credits back into the buckets that paid.

use lambda_http::{Body, Request, Response};
use ledger_domain::{PurchaseGrant, ReversalReason};
use ledger_http::{
    applied_response, json_body, path_param, respond, route_key, AmountInput, ApiError, Caller, DynamoLedger,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseBody {
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    credits: Option<AmountInput>,
    payment_reference: String,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReversalBody {
    entry_id: String,
    /// `invalid_result` or `correction` (bounces come with results).
    reason: String,
    #[serde(default)]
    note: Option<String>,
}

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(match route_key(&req).as_str() {
        "POST /v1/orgs/{org}/reversals" => reverse(ledger, &req).await,
        _ => purchase(ledger, &req).await,
    })
}

async fn reverse(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_service()?;
    let body = json_body::<ReversalBody>(req)?;
    let b = &body.value;
    let reason = match ReversalReason::parse(&b.reason) {
        Some(r @ (ReversalReason::InvalidResult | ReversalReason::Correction | ReversalReason::Refunded)) => r,
        _ => {
            return Err(ApiError::BadRequest(
                "reason must be `invalid_result`, `correction` or `refunded` (a purchase)".into(),
            ))
        }
    };
    if b.note
        .as_ref()
        .is_some_and(|n| n.chars().count() > 500 || n.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(
            "note: at most 500 characters, no control characters".into(),
        ));
    }
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger
        .reverse(&org, &b.entry_id, reason, b.note.clone(), actor, &idempotency)
        .await?;
    Ok(applied_response(&applied))
}

async fn purchase(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let body = json_body::<PurchaseBody>(req)?;
    let b = &body.value;
    let actor = caller.actor(b.user.as_deref())?;
    let credits = b.credits.as_ref().map(AmountInput::credits).transpose()?;
    let grant = PurchaseGrant::priced(ledger.catalog(), b.package.as_deref(), credits, &b.payment_reference)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.purchase(&org, grant, actor, &idempotency).await?;
    Ok(applied_response(&applied))
}
