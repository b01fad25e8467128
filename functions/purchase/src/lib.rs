//! `POST /v1/orgs/{org}/purchases`: add a purchased pack after payment: a
//! catalog package or a custom number of credits at the catalog's unit
//! price. Once per payment reference, whatever the Idempotency-Key.

use lambda_http::{Body, Request, Response};
use ledger_domain::PurchaseGrant;
use ledger_http::{applied_response, json_body, path_param, respond, AmountInput, ApiError, Caller, DynamoLedger};
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

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(purchase(ledger, &req).await)
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
