//! `PUT /v1/orgs/{org}/subscription`: subscribe an organization. The first
//! call provisions its account with today as the billing anchor and grants
//! the first month (and the plan's trial, once).

use lambda_http::{Body, Request, Response};
use ledger_domain::{Billing, Subscription};
use ledger_http::{applied_response, json_body, path_param, respond, AmountInput, ApiError, Caller, DynamoLedger};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    plan: String,
    #[serde(default)]
    seats: Option<u32>,
    #[serde(default)]
    billing: Option<Billing>,
    /// Custom (enterprise) plans: the contract's monthly credits.
    #[serde(default)]
    monthly_credits: Option<AmountInput>,
}

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(subscribe(ledger, &req).await)
}

async fn subscribe(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let body = json_body::<SubscriptionBody>(req)?;
    let b = &body.value;
    let actor = caller.actor(None)?;
    let custom = b.monthly_credits.as_ref().map(AmountInput::credits).transpose()?;
    let subscription = Subscription::new(ledger.catalog(), &b.plan, b.seats, b.billing, custom)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.subscribe(&org, subscription, actor, &idempotency).await?;
    Ok(applied_response(&applied))
}
