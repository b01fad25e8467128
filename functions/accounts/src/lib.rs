//! The account's lifecycle:
//! - `PUT /v1/orgs/{org}/subscription`: subscribe an organization. The first
//!   call provisions its account with today as the billing anchor and grants
//!   the first month (and the plan's trial, once).
//! - `DELETE /v1/orgs/{org}/subscription`: cancel (admins, the service): no
//!   allowance from the next renewal on; purchased credits stay usable.
//! - `POST /v1/orgs/{org}/renewals`: renew now, if due (the service's, for
//!   operators): what the scheduled sweep would do for this account.
//! - `PUT /v1/orgs/{org}/members/{user}` (`{"role": "admin"|"member"}`),
//!   `DELETE /v1/orgs/{org}/members/{user}`, `GET /v1/orgs/{org}/members`:
//!   the team (admins and the service); licenses follow it.
//! - `POST /v1/orgs/{org}/results/resume`: after a top-up, charge the held
//!   results in arrival order (admins and the service).
//! - `PUT /v1/orgs/{org}/members/{user}/limits` (`{"daily": "10",
//!   "monthly": "200", "blocked_actions": ["phone_lookup"]}`): a member's
//!   team controls, replacing what was set (admins and the service).
//! - `PUT|DELETE /v1/orgs/{org}/campaigns/{campaign}/budget`
//!   (`{"credits": "500"}`): a campaign's budget (admins and the service).
//! - `PUT|DELETE /v1/orgs/{org}/alerts/{alert}` (`{"meter": "credits",
//!   "percent": 20, "channel": "both"}`): a low-balance alert (admins and
//!   the service); `POST /v1/orgs/{org}/notifications/{id}/read` marks an
//!   in-app notification read (anyone in the organization).
//! - `POST /v1/orgs/{org}/outcomes` (`{"campaign": "spring", "outcome":
//!   "meeting_booked", "count": 1}`): what a campaign brought, for credit
//!   ROI (anyone in the organization, and the service).
//! - `PUT|DELETE /v1/orgs/{org}/top-up` (`{"meter": "credits", "below":
//!   "100", "monthly_cap": 2}`): a "top-up needed" event for the product's
//!   payment system when the balance falls below, at most `monthly_cap`
//!   times a billing period (admins and the service).
//! - `PUT /v1/orgs/{org}/overdraft` (`{"meter": "credits", "allowance":
//!   "100"}`): how far below zero the balance may go; credit extended
//!   before payment, so the service's only. `"0"` removes it.
//! - `PUT|DELETE /v1/orgs/{org}/approvals/threshold` (`{"credits": "100"}`):
//!   a member's spend costing more waits for an admin; `GET
//!   /v1/orgs/{org}/approvals` lists those pending, `POST
//!   /v1/orgs/{org}/approvals/{id}/approve|deny` answers one (admins and the
//!   service).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_domain::{
    Alert, AlertId, Billing, CampaignId, Channel, DomainError, MemberLimits, MemberRole, MeterId, Subject,
    Subscription, Threshold, TopUpTrigger, UserId,
};
use ledger_http::{
    applied_response, json_body, json_response, path_param, respond, route_key, views, AmountInput, ApiError, Caller,
    DynamoLedger,
};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    plan: String,
    #[serde(default, deserialize_with = "ledger_http::optional_integer")]
    seats: Option<u32>,
    #[serde(default)]
    billing: Option<Billing>,
    /// Custom (enterprise) plans: the contract's monthly credits.
    #[serde(default)]
    monthly_credits: Option<AmountInput>,
}

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(match route_key(&req).as_str() {
        "POST /v1/orgs/{org}/renewals" => renew_now(ledger, &req).await,
        "DELETE /v1/orgs/{org}/subscription" => cancel(ledger, &req).await,
        "PUT /v1/orgs/{org}/members/{user}" => set_member(ledger, &req).await,
        "DELETE /v1/orgs/{org}/members/{user}" => remove_member(ledger, &req).await,
        "GET /v1/orgs/{org}/members" => members(ledger, &req).await,
        "POST /v1/orgs/{org}/results/resume" => resume_results(ledger, &req).await,
        "PUT /v1/orgs/{org}/members/{user}/limits" => set_limits(ledger, &req).await,
        "PUT /v1/orgs/{org}/campaigns/{campaign}/budget" => set_budget(ledger, &req, true).await,
        "DELETE /v1/orgs/{org}/campaigns/{campaign}/budget" => set_budget(ledger, &req, false).await,
        "PUT /v1/orgs/{org}/alerts/{alert}" => set_alert(ledger, &req, true).await,
        "DELETE /v1/orgs/{org}/alerts/{alert}" => set_alert(ledger, &req, false).await,
        "POST /v1/orgs/{org}/notifications/{notification}/read" => mark_read(ledger, &req).await,
        "POST /v1/orgs/{org}/outcomes" => record_outcome(ledger, &req).await,
        "PUT /v1/orgs/{org}/top-up" => set_top_up(ledger, &req, true).await,
        "DELETE /v1/orgs/{org}/top-up" => set_top_up(ledger, &req, false).await,
        "PUT /v1/orgs/{org}/overdraft" => set_overdraft(ledger, &req).await,
        "PUT /v1/orgs/{org}/approvals/threshold" => set_threshold(ledger, &req, true).await,
        "DELETE /v1/orgs/{org}/approvals/threshold" => set_threshold(ledger, &req, false).await,
        "GET /v1/orgs/{org}/approvals" => approvals(ledger, &req).await,
        "POST /v1/orgs/{org}/approvals/{approval}/approve" => answer(ledger, &req, true).await,
        "POST /v1/orgs/{org}/approvals/{approval}/deny" => answer(ledger, &req, false).await,
        _ => subscribe(ledger, &req).await,
    })
}

/// A cancel or a member's removal carries no body (or `{}`) and an
/// Idempotency-Key like any mutation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {}

async fn cancel(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let body = json_body::<CancelBody>(req)?;
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.cancel(&org, actor, &idempotency).await?;
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    role: MemberRole,
}

async fn set_member(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let user = UserId::parse(&path_param(req, "user")?)?;
    let body = json_body::<MemberBody>(req)?;
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger
        .set_member(&org, user, body.value.role, actor, &idempotency)
        .await?;
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    #[serde(default)]
    daily: Option<AmountInput>,
    #[serde(default)]
    monthly: Option<AmountInput>,
    #[serde(default)]
    blocked_actions: Vec<String>,
}

async fn set_limits(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let user = UserId::parse(&path_param(req, "user")?)?;
    let body = json_body::<LimitsBody>(req)?;
    let b = &body.value;
    let blocked = b
        .blocked_actions
        .iter()
        .map(|a| ledger.catalog().action(a).map(|(id, _)| id.clone()))
        .collect::<Result<_, _>>()?;
    let limits = MemberLimits {
        daily: b.daily.as_ref().map(AmountInput::credits).transpose()?,
        monthly: b.monthly.as_ref().map(AmountInput::credits).transpose()?,
        blocked,
    };
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.set_limits(&org, user, limits, actor, &idempotency).await?;
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    credits: AmountInput,
}

/// Sets (`PUT`) or removes (`DELETE`, no body) a campaign's budget.
async fn set_budget(ledger: &DynamoLedger, req: &Request, set: bool) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let campaign = CampaignId::parse(&path_param(req, "campaign")?)?;
    let actor = caller.actor(None)?;
    let applied = if set {
        let body = json_body::<BudgetBody>(req)?;
        let limit = body.value.credits.credits()?;
        let idempotency = body.idempotency(req, &caller)?;
        ledger
            .set_budget(&org, campaign, Some(limit), actor, &idempotency)
            .await?
    } else {
        let body = json_body::<CancelBody>(req)?;
        let idempotency = body.idempotency(req, &caller)?;
        ledger.set_budget(&org, campaign, None, actor, &idempotency).await?
    };
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertBody {
    meter: String,
    #[serde(default, deserialize_with = "ledger_http::optional_integer")]
    percent: Option<u8>,
    #[serde(default)]
    amount: Option<AmountInput>,
    channel: String,
}

/// Sets (`PUT`) or removes (`DELETE`, no body) a low-balance alert.
async fn set_alert(ledger: &DynamoLedger, req: &Request, set: bool) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let id = AlertId::parse(&path_param(req, "alert")?)?;
    let actor = caller.actor(None)?;
    let invalid = |why: &str| ApiError::from(DomainError::InvalidRequest(why.into()));
    let applied = if set {
        let body = json_body::<AlertBody>(req)?;
        let b = &body.value;
        let meter = MeterId::parse(&b.meter)?;
        if !ledger.catalog().meters.contains_key(&meter) {
            return Err(invalid("unknown meter"));
        }
        let threshold = match (b.percent, &b.amount) {
            (Some(p), None) => Threshold::Percent(p),
            (None, Some(a)) => Threshold::Amount(a.credits()?),
            _ => return Err(invalid("an alert has a percent or an amount")),
        };
        let channel = Channel::parse(&b.channel).ok_or_else(|| invalid("channel: email, in_app or both"))?;
        let alert = Alert {
            meter,
            threshold,
            channel,
        };
        let idempotency = body.idempotency(req, &caller)?;
        ledger.set_alert(&org, id, Some(alert), actor, &idempotency).await?
    } else {
        let body = json_body::<CancelBody>(req)?;
        let idempotency = body.idempotency(req, &caller)?;
        ledger.set_alert(&org, id, None, actor, &idempotency).await?
    };
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeBody {
    campaign: String,
    outcome: String,
    #[serde(default = "one", deserialize_with = "ledger_http::integer")]
    count: u64,
}

fn one() -> u64 {
    1
}

async fn record_outcome(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let body = json_body::<OutcomeBody>(req)?;
    let b = &body.value;
    let campaign = CampaignId::parse(&b.campaign)?;
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger
        .record_outcome(&org, campaign, b.outcome.clone(), b.count, actor, &idempotency)
        .await?;
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpBody {
    meter: String,
    below: AmountInput,
    #[serde(deserialize_with = "ledger_http::integer")]
    monthly_cap: u32,
}

/// Sets (`PUT`) or removes (`DELETE`, no body) the top-up trigger.
async fn set_top_up(ledger: &DynamoLedger, req: &Request, set: bool) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let actor = caller.actor(None)?;
    let applied = if set {
        let body = json_body::<TopUpBody>(req)?;
        let b = &body.value;
        let meter = MeterId::parse(&b.meter)?;
        if !ledger.catalog().meters.contains_key(&meter) {
            return Err(DomainError::InvalidRequest("unknown meter".into()).into());
        }
        let trigger = TopUpTrigger {
            meter,
            below: b.below.credits()?,
            monthly_cap: b.monthly_cap,
        };
        let idempotency = body.idempotency(req, &caller)?;
        ledger.set_top_up(&org, Some(trigger), actor, &idempotency).await?
    } else {
        let body = json_body::<CancelBody>(req)?;
        let idempotency = body.idempotency(req, &caller)?;
        ledger.set_top_up(&org, None, actor, &idempotency).await?
    };
    Ok(applied_response(&applied))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverdraftBody {
    meter: String,
    allowance: AmountInput,
}

/// Sets a meter's overdraft allowance: the service's only, as it lets an
/// organization spend credits nobody has paid for yet.
async fn set_overdraft(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_service()?;
    let actor = caller.actor(None)?;
    let body = json_body::<OverdraftBody>(req)?;
    let meter = MeterId::parse(&body.value.meter)?;
    if !ledger.catalog().meters.contains_key(&meter) {
        return Err(DomainError::InvalidRequest("unknown meter".into()).into());
    }
    let allowance = body.value.allowance.credits()?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger
        .set_overdraft(&org, meter, allowance, actor, &idempotency)
        .await?;
    Ok(applied_response(&applied))
}

/// Sets (`PUT`) or removes (`DELETE`, no body) the approval threshold.
async fn set_threshold(ledger: &DynamoLedger, req: &Request, set: bool) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let actor = caller.actor(None)?;
    let applied = if set {
        let body = json_body::<BudgetBody>(req)?;
        let above = body.value.credits.credits()?;
        let idempotency = body.idempotency(req, &caller)?;
        ledger
            .set_approval_threshold(&org, Some(above), actor, &idempotency)
            .await?
    } else {
        let body = json_body::<CancelBody>(req)?;
        let idempotency = body.idempotency(req, &caller)?;
        ledger.set_approval_threshold(&org, None, actor, &idempotency).await?
    };
    Ok(applied_response(&applied))
}

async fn approvals(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let pending = ledger.pending_approvals(&org).await?;
    Ok(json_response(StatusCode::OK, &views::approvals(&pending)))
}

/// Approves or denies one pending approval (an admin's or the service's).
async fn answer(ledger: &DynamoLedger, req: &Request, approve: bool) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let approval = Subject::parse(&path_param(req, "approval")?)?;
    let body = json_body::<CancelBody>(req)?;
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger
        .answer_approval(&org, &approval, approve, actor, &idempotency)
        .await?;
    Ok(applied_response(&applied))
}

/// Marking read is idempotent by nature: no Idempotency-Key needed.
async fn mark_read(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let id = path_param(req, "notification")?;
    ledger.mark_read(&org, &id).await?;
    Ok(json_response(StatusCode::OK, &json!({ "id": id, "read": true })))
}

async fn remove_member(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let user = UserId::parse(&path_param(req, "user")?)?;
    let body = json_body::<CancelBody>(req)?;
    let actor = caller.actor(None)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.remove_member(&org, user, actor, &idempotency).await?;
    Ok(applied_response(&applied))
}

async fn members(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let account = ledger.balance(&org).await?;
    let now = ledger.now();
    let rolled = ledger
        .member_spending(&org, account.period.start, now.date_naive())
        .await?;
    Ok(json_response(StatusCode::OK, &views::members(&account, now, &rolled)))
}

/// Resuming is idempotent by nature (each held result is settled once, in
/// the transaction that charges it): no Idempotency-Key needed.
async fn resume_results(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let actor = caller.actor(None)?;
    let report = ledger.resume_results(&org, actor).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "settled": report.settled, "held": report.still_held, "paused": report.paused }),
    ))
}

/// Renewing is idempotent by nature (conditional on the period it renews):
/// no Idempotency-Key needed, a second call finds nothing due.
async fn renew_now(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_service()?;
    Ok(match ledger.renew_now(&org).await? {
        Some(entry) => json_response(
            StatusCode::CREATED,
            &json!({ "renewed": true, "entry": views::entry(&entry) }),
        ),
        None => {
            let account = ledger.balance(&org).await?;
            json_response(
                StatusCode::OK,
                &json!({ "renewed": false, "next_renewal": account.renews_at() }),
            )
        }
    })
}

async fn subscribe(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    let body = json_body::<SubscriptionBody>(req)?.with_defaults(&[("billing", serde_json::json!("monthly"))]);
    let b = &body.value;
    let actor = caller.actor(None)?;
    let custom = b.monthly_credits.as_ref().map(AmountInput::credits).transpose()?;
    let subscription = Subscription::new(ledger.catalog(), &b.plan, b.seats, b.billing, custom)?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.subscribe(&org, subscription, actor, &idempotency).await?;
    Ok(applied_response(&applied))
}
