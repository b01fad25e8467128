//! `POST /v1/orgs/{org}/purchases`: add a purchased pack after payment: a
//! catalog package or a custom number of credits at the catalog's unit
//! price. Once per payment reference, whatever the Idempotency-Key.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_domain::{Credits, DomainError, PurchaseGrant};
use ledger_http::{
    applied_response, json_body, kept_refusal, path_param, reply, respond, views, AmountInput, ApiError, AppState,
    Caller,
};
use serde::Deserialize;
use serde_json::json;

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

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    respond(purchase(state, &req).await)
}

fn payment_reference(text: &str) -> Result<String, DomainError> {
    if !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(text.to_string())
    } else {
        Err(DomainError::InvalidRequest(
            "payment_reference must be 1-255 printable characters".into(),
        ))
    }
}

async fn purchase(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let body = json_body::<PurchaseBody>(req)?;
    let b = &body.value;
    let actor = caller.actor(b.user.as_deref())?;
    let catalog = state.ledger.catalog();
    let payment_reference = payment_reference(&b.payment_reference)?;
    let (package, credits, price_cents): (_, Credits, u64) = match (&b.package, &b.credits) {
        (Some(id), None) => {
            let (id, p) = catalog.package(id)?;
            (Some(id.clone()), p.credits, p.price_cents)
        }
        (None, Some(amount)) => {
            let credits = amount.credits()?;
            (None, credits, catalog.custom_price_cents(credits)?)
        }
        _ => return Err(DomainError::InvalidRequest("name exactly one of `package` or `credits`".into()).into()),
    };
    let grant = PurchaseGrant {
        package,
        credits,
        price_cents,
        currency: catalog.currency.clone(),
        payment_reference,
    };
    let idempotency = body.idempotency(req, &caller)?;
    let guard = format!("payment:{}", grant.payment_reference);
    let applied = state
        .ledger
        .apply(
            &org,
            &idempotency,
            Some(guard),
            |account, _, now| {
                let entry = account.purchase(grant.clone(), actor.clone(), now)?;
                let view = views::entry(&entry);
                let body = json!({ "balance_after": view["balance_after"], "entry": view });
                Ok((entry, reply(StatusCode::CREATED, &body)))
            },
            kept_refusal,
        )
        .await?;
    Ok(applied_response(applied))
}
