//! `POST /v1/orgs/{org}/spend`: debit credits for an action: all units or
//! as many as the balance covers, or a dry-run quote that charges nothing.
//! With `subjects` (a list of contacts) only the new ones are charged: see
//! [`ledger_domain::bulk`].

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_domain::{
    BulkSpend, CampaignId, ListedSubject, MeterId, ReserveRequest, SpendMode, SpendRequest, Subject, Transition,
};
use ledger_http::{
    applied_response, json_body, json_response, path_param, respond, route_key, views, ApiError, Caller, DynamoLedger,
};
use ledger_service::Outcome;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendBody {
    action: String,
    #[serde(default, deserialize_with = "ledger_http::optional_integer")]
    quantity: Option<u64>,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    /// Contacts: strings, or `{"subject", "outcome"}` for an action charged
    /// on its result (the service's: it knows the results).
    #[serde(default)]
    subjects: Option<Vec<SubjectInput>>,
    #[serde(default)]
    mode: SpendMode,
    #[serde(default)]
    dry_run: bool,
    /// Service calls only: the user the spend is for.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SubjectInput {
    Plain(String),
    WithOutcome(SubjectWithOutcome),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectWithOutcome {
    subject: String,
    outcome: String,
}

/// Contacts uploaded to (or deleted from) the organization: lead slots.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsBody {
    contacts: Vec<String>,
    #[serde(default)]
    campaign: Option<String>,
    /// The capacity meter: the catalog's only one unless named.
    #[serde(default)]
    meter: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

pub async fn handle(ledger: &DynamoLedger, req: Request) -> Response<Body> {
    respond(match route_key(&req).as_str() {
        "POST /v1/orgs/{org}/contacts" => contacts(ledger, &req, true).await,
        "POST /v1/orgs/{org}/contacts/removals" => contacts(ledger, &req, false).await,
        "POST /v1/orgs/{org}/reservations" => reserve(ledger, &req).await,
        "POST /v1/orgs/{org}/reservations/{transition}" => settle_units(ledger, &req).await,
        _ => spend(ledger, &req).await,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationBody {
    #[serde(default)]
    action: Option<String>,
    campaign: String,
    contacts: Vec<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    user: Option<String>,
}

impl ReservationBody {
    /// The campaign and its contacts, parsed and normalised.
    fn units(&self) -> Result<(CampaignId, Vec<Subject>), ApiError> {
        let contacts = self
            .contacts
            .iter()
            .map(|c| Subject::parse(c))
            .collect::<Result<_, _>>()?;
        Ok((CampaignId::parse(&self.campaign)?, contacts))
    }
}

/// Reserves one unit per new contact of a campaign, as many as covered.
async fn reserve(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let body = json_body::<ReservationBody>(req)?;
    let b = &body.value;
    if b.dry_run {
        // A dry run needs no key, but one sent is checked like any other.
        ledger_http::input::optional_idempotency_key(req)?;
    }
    let action = b
        .action
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("a reservation names its `action`".into()))?;
    let (action_id, action) = ledger.catalog().action(action)?;
    let (campaign, contacts) = b.units()?;
    let request = ReserveRequest {
        action_id,
        action,
        campaign: &campaign,
        contacts: &contacts,
        actor: caller.actor(b.user.as_deref())?,
    };
    if b.dry_run {
        if let Outcome::Reserved {
            meter,
            requested,
            reserved,
            already,
            short,
            held,
        } = ledger.quote_reservation(&org, &request).await?
        {
            let mut v = views::reservation(&meter, requested, &reserved, &already, &short, held);
            v["dry_run"] = true.into();
            return Ok(json_response(StatusCode::OK, &v));
        }
    }
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger.reserve(&org, &request, &idempotency).await?;
    Ok(applied_response(&applied))
}

/// Commits (sent), releases (removed before sending) or refunds (first
/// email bounced; the service's) units.
async fn settle_units(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let transition = match path_param(req, "transition")?.as_str() {
        "commit" => Transition::Commit,
        "release" => Transition::Release,
        "refund" => {
            caller.require_service()?;
            Transition::Refund
        }
        _ => return Err(ApiError::NotFound),
    };
    let body = json_body::<ReservationBody>(req)?;
    let b = &body.value;
    if b.action.is_some() || b.dry_run {
        return Err(ApiError::BadRequest("`action` and `dry_run` are for reserving".into()));
    }
    let (campaign, contacts) = b.units()?;
    let actor = caller.actor(b.user.as_deref())?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = ledger
        .settle_units(&org, transition, &campaign, &contacts, actor, &idempotency)
        .await?;
    Ok(applied_response(&applied))
}

/// Uploads (`hold`) or deletes contacts: each unique contact holds one slot.
async fn contacts(ledger: &DynamoLedger, req: &Request, hold: bool) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let body = json_body::<ContactsBody>(req)?;
    let b = &body.value;
    let actor = caller.actor(b.user.as_deref())?;
    let meter = match b.meter.as_deref() {
        Some(m) => MeterId::parse(m)?,
        None => ledger.catalog().capacity_meter()?.clone(),
    };
    let contacts = b
        .contacts
        .iter()
        .map(|c| Subject::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let idempotency = body.idempotency(req, &caller)?;
    let applied = if hold {
        let campaign = b.campaign.as_deref().map(CampaignId::parse).transpose()?;
        ledger
            .hold_slots(&org, &meter, &contacts, campaign, actor, &idempotency)
            .await?
    } else {
        if b.campaign.is_some() {
            return Err(ApiError::BadRequest(
                "a deleted contact frees its slot in every campaign: no `campaign`".into(),
            ));
        }
        ledger.free_slots(&org, &meter, &contacts, actor, &idempotency).await?
    };
    Ok(applied_response(&applied))
}

async fn spend(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    let body = json_body::<SpendBody>(req)?.with_defaults(&[
        ("mode", serde_json::json!("all")),
        ("dry_run", serde_json::json!(false)),
        ("quantity", serde_json::json!(1)),
    ]);
    let b = &body.value;
    if b.dry_run {
        // A dry run needs no key, but one sent is checked like any other.
        ledger_http::input::optional_idempotency_key(req)?;
    }
    let actor = caller.actor(b.user.as_deref())?;
    let (action_id, action) = ledger.catalog().action(&b.action)?;
    let campaign = b.campaign.as_deref().map(CampaignId::parse).transpose()?;
    // A listed subject, or one subject of an action charged once per
    // subject, goes the bulk way: it is charged only if new.
    if b.subjects.is_some() && (b.quantity.is_some() || b.subject.is_some()) {
        return Err(ApiError::BadRequest(
            "`subjects` replaces `quantity` and `subject`".into(),
        ));
    }
    let listed = match (&b.subjects, &b.subject) {
        (Some(list), _) => Some(list_subjects(list, &caller)?),
        (None, Some(one)) if action.once_per_subject && b.quantity.is_none_or(|q| q == 1) => {
            Some(list_subjects(&[SubjectInput::Plain(one.clone())], &caller)?)
        }
        _ => None,
    };
    if let Some(subjects) = listed {
        let bulk = BulkSpend {
            action_id,
            action,
            subjects,
            mode: b.mode,
            actor,
            campaign,
        };
        if b.dry_run {
            let quote = ledger.quote_subjects(&org, &bulk).await?;
            return Ok(json_response(
                StatusCode::OK,
                &views::bulk_quote(action_id.as_str(), &quote),
            ));
        }
        let idempotency = body.idempotency(req, &caller)?;
        let applied = ledger.spend_subjects(&org, &bulk, &idempotency).await?;
        return Ok(applied_response(&applied));
    }
    let request = SpendRequest {
        action_id,
        action,
        quantity: b.quantity.unwrap_or(1),
        mode: b.mode,
        actor,
        campaign,
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

/// The listed subjects, normalised. Outcomes decide what is billable, so
/// only the service (which ran the action) may report them.
fn list_subjects(list: &[SubjectInput], caller: &Caller) -> Result<Vec<ListedSubject>, ApiError> {
    list.iter()
        .map(|item| match item {
            SubjectInput::Plain(s) => Ok(ListedSubject {
                subject: Subject::parse(s)?,
                outcome: None,
            }),
            SubjectInput::WithOutcome(w) => {
                caller.require_service()?;
                Ok(ListedSubject {
                    subject: Subject::parse(&w.subject)?,
                    outcome: Some(w.outcome.clone()),
                })
            }
        })
        .collect()
}
