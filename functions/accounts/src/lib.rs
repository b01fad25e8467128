//! `PUT /v1/orgs/{org}/subscription`: subscribe an organization. The first
//! call provisions its account with today as the billing anchor and grants
//! the first month (and the plan's trial, once).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_domain::{Account, Billing, DomainError, Subscription};
use ledger_http::{
    applied_response, json_body, path_param, reply, respond, views, AmountInput, ApiError, AppState, Caller,
};
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

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    respond(subscribe(state, &req).await)
}

async fn subscribe(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let body = json_body::<SubscriptionBody>(req)?;
    let b = &body.value;
    let actor = caller.actor(None)?;
    let custom = b.monthly_credits.as_ref().map(AmountInput::credits).transpose()?;
    let subscription = Subscription::new(state.ledger.catalog(), &b.plan, b.seats, b.billing, custom)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = state
        .ledger
        .create(
            &idempotency,
            |catalog, now| {
                let (account, entry) = Account::provision(org.clone(), subscription.clone(), catalog, actor, now)?;
                let body = views::subscription(&account, Some(&entry));
                Ok((account, (entry, reply(StatusCode::CREATED, &body))))
            },
            // Subscribing again to what the account has is a no-op; plan
            // changes arrive with the billing-cycle work.
            |current| {
                if current.subscription == subscription {
                    Ok(reply(StatusCode::OK, &views::subscription(current, None)))
                } else {
                    Err(DomainError::PlanChangeUnsupported)
                }
            },
        )
        .await?;
    Ok(applied_response(applied))
}
