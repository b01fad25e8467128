//! `POST /v1/orgs/{org}/spend`: debit credits for an action: all units or
//! as many as the balance covers, or a dry-run quote that charges nothing.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_domain::{CampaignId, SpendMode, SpendRequest, Subject};
use ledger_http::{
    applied_response, json_body, json_response, path_param, respond, views, ApiError, Caller, DynamoLedger,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendBody {
    action: String,
    #[serde(default)]
    quantity: Option<u64>,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    mode: SpendMode,
    #[serde(default)]
    dry_run: bool,
    /// Service calls only: the user the spend is for.
    #[serde(default)]
    user: Option<String>,
}

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(spend(ledger, &req).await)
}

async fn spend(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let body = json_body::<SpendBody>(req)?;
    let b = &body.value;
    let actor = caller.actor(b.user.as_deref())?;
    let (action_id, action) = ledger.catalog().action(&b.action)?;
    let request = SpendRequest {
        action_id,
        action,
        quantity: b.quantity.unwrap_or(1),
        mode: b.mode,
        actor,
        campaign: b.campaign.as_deref().map(CampaignId::parse).transpose()?,
        subject: b.subject.as_deref().map(Subject::parse).transpose()?,
    };
    if b.dry_run {
        let quote = ledger.quote(&org, &request).await?;
        return Ok(json_response(
            StatusCode::OK,
            &views::spend_quote(action_id.as_str(), &quote),
        ));
    }
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.spend(&org, &request, &idempotency).await?;
    Ok(applied_response(&applied))
}
