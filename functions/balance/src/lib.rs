//! The read side: `GET /v1/catalog`, `GET /v1/orgs/{org}/balance`,
//! `GET /v1/orgs/{org}/ledger`, `GET /v1/orgs/{org}/notifications` (in-app
//! alert notifications, newest first), `GET /v1/orgs/{org}/alerts`, and the
//! problem+json answer for any route that does not exist (the API's
//! `$default` route: a 405 for a known path, a 404 for any other). A
//! history too long for one response is exported: `POST
//! /v1/orgs/{org}/exports` (the `/ledger` filters as query parameters)
//! starts a job the exports function writes to S3;
//! `GET /v1/orgs/{org}/exports/{export}` says how far it got and, once
//! done, links the file.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use ledger_domain::usage::UsageGroup;
use ledger_domain::{ActionId, CampaignId, UserId};
use ledger_http::csv::HistoryCsv;
use ledger_http::{
    json_response, only_query_params, path_param, query_param, respond, route_key, views, ApiError, Caller,
    DynamoLedger,
};
use ledger_store::{HistoryFilter, HistoryKey, HistoryPosition};
use serde_json::json;

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;
/// The most entries one inline CSV export holds (about 250 bytes a row).
pub const MAX_CSV_ENTRIES: usize = 20_000;

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
        "GET /v1/orgs/{org}/usage" => usage(ledger, req).await,
        "GET /v1/orgs/{org}/roi" => roi(ledger, req).await,
        "POST /v1/orgs/{org}/exports" => start_export(ledger, req).await,
        "GET /v1/orgs/{org}/exports/{export}" => export(ledger, req).await,
        // `$default`: no route matched. The caller is checked first, as on
        // every route; then a known path names the methods it takes.
        _ => {
            Caller::from_request(req)?;
            let path = req.uri().path();
            match ledger_http::routes::allowed_methods(path).as_slice() {
                [] => Err(ApiError::RouteNotFound(format!("{} {path}", req.method()))),
                methods => Err(ApiError::MethodNotAllowed(methods.to_vec())),
            }
        }
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
    only_query_params(req, &["limit", "cursor", "from", "to", "action", "user", "campaign"])?;
    let limit = page_limit(req)?;
    let filter = history_filter(req)?;
    // A cursor continues the listing it came from: same organization, same filter.
    let binding = format!("{org}|{}", filter_text(&filter));
    let after = query_param(req, "cursor")
        .map(|c| decode_cursor(&c, &binding))
        .transpose()?;
    let viewer = caller.actor(None)?;
    if wants_csv(req) {
        return export_csv(ledger, &org, &viewer, filter).await;
    }
    let page = ledger.history(&org, &viewer, filter, limit, after).await?;
    let entries: Vec<_> = page.entries.iter().map(views::entry).collect();
    let next = page.next.map(|p| encode_cursor(&binding, &p));
    let body = json!({ "entries": entries, "next_cursor": next });
    Ok(json_response(StatusCode::OK, &body))
}

/// Starts exporting the filtered history as CSV (anyone in the
/// organization: a member exports their own entries). Once per
/// Idempotency-Key: the same key answers the same job.
async fn start_export(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    only_query_params(req, &["from", "to", "action", "user", "campaign"])?;
    let filter = history_filter(req)?;
    let key = ledger_http::input::idempotency_key(req)?;
    let viewer = caller.actor(None)?;
    let text = filter_text(&filter);
    let job = ledger.start_export(&org, viewer, filter, key.as_str(), &text).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &export_view(&job, None, ledger.now()),
    ))
}

/// An export as it stands, with a download link once done.
async fn export(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    only_query_params(req, &[])?;
    let id = path_param(req, "export")?;
    let (job, link) = ledger.export(&org, &id).await?;
    // Only whoever started it (or an admin, or the service) sees it.
    let viewer = caller.actor(None)?;
    if viewer.caller == ledger_domain::CallerKind::Member && job.viewer.user != viewer.user {
        return Err(ledger_service::ServiceError::ExportNotFound.into());
    }
    Ok(json_response(StatusCode::OK, &export_view(&job, link, ledger.now())))
}

fn export_view(job: &ledger_store::ExportJob, link: Option<String>, now: DateTime<Utc>) -> serde_json::Value {
    let link_expires = link
        .as_ref()
        .map(|_| now + chrono::Duration::from_std(ledger_service::exports::LINK_VALID).unwrap_or_default());
    json!({
        "id": job.id,
        "state": job.state.as_str(),
        "rows": job.rows,
        "parts": job.parts.len(),
        "from": job.filter.from,
        "to": job.filter.to,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "url": link,
        "url_expires_at": link_expires,
    })
}

fn wants_csv(req: &Request) -> bool {
    req.headers()
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"))
}

/// The filtered history as one CSV, every page of it, newest first, up to
/// [`MAX_CSV_ENTRIES`] (well inside Lambda's 6 MB response); a longer
/// export is refused with a clear problem: narrow the range.
async fn export_csv(
    ledger: &DynamoLedger,
    org: &ledger_domain::OrgId,
    viewer: &ledger_domain::Actor,
    filter: HistoryFilter,
) -> Result<Response<Body>, ApiError> {
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let page = ledger.history(org, viewer, filter.clone(), MAX_PAGE, after).await?;
        entries.extend(page.entries);
        if entries.len() > MAX_CSV_ENTRIES {
            return Err(ApiError::BadRequest(format!(
                "an inline CSV export holds at most {MAX_CSV_ENTRIES} entries: narrow from and to, or POST /exports for a file of any length"
            )));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/csv; charset=utf-8")
        .header("content-disposition", "attachment; filename=\"ledger.csv\"")
        .body(Body::Text(HistoryCsv::for_catalog(ledger.catalog()).document(&entries)))
        .expect("valid response"))
}

/// `from` and `to` (an RFC 3339 instant, or a UTC day: `to` a day means
/// through its end) and at most one of `action`, `user`, `campaign`.
fn history_filter(req: &Request) -> Result<HistoryFilter, ApiError> {
    let instant = |name: &str, end_of_day: bool| -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(text) = query_param(req, name) else {
            return Ok(None);
        };
        if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
            return Ok(Some(at.with_timezone(&Utc)));
        }
        let day = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|_| ApiError::BadRequest(format!("{name} must be a date (YYYY-MM-DD) or an RFC 3339 instant")))?;
        let day = if end_of_day { day.succ_opt().unwrap_or(day) } else { day };
        Ok(Some(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()))
    };
    let (from, to) = (instant("from", false)?, instant("to", true)?);
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::BadRequest("from must be before to".into()));
        }
    }
    let mut keys = Vec::new();
    if let Some(a) = query_param(req, "action") {
        keys.push(HistoryKey::Action(ActionId::parse(&a)?));
    }
    if let Some(u) = query_param(req, "user") {
        keys.push(HistoryKey::User(UserId::parse(&u)?));
    }
    if let Some(c) = query_param(req, "campaign") {
        keys.push(HistoryKey::Campaign(CampaignId::parse(&c)?));
    }
    if keys.len() > 1 {
        return Err(ApiError::BadRequest(
            "filter by one of action, user or campaign (each has its own index), with from and to".into(),
        ));
    }
    Ok(HistoryFilter {
        from,
        to,
        by: keys.pop(),
    })
}

fn filter_text(f: &HistoryFilter) -> String {
    let by = match &f.by {
        None => String::new(),
        Some(HistoryKey::Action(a)) => format!("action={a}"),
        Some(HistoryKey::User(u)) => format!("user={u}"),
        Some(HistoryKey::Campaign(c)) => format!("campaign={c}"),
    };
    format!("{:?}|{:?}|{by}", f.from, f.to)
}

/// Credit ROI over a range of UTC days, by campaign (admins and the service).
async fn roi(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    only_query_params(req, &["from", "to"])?;
    let (from, to) = (report_day(req, "from")?, report_day(req, "to")?);
    let report = ledger.roi(&org, from, to).await?;
    Ok(json_response(StatusCode::OK, &views::roi(from, to, &report)))
}

fn report_day(req: &Request, name: &str) -> Result<NaiveDate, ApiError> {
    let text = query_param(req, name).ok_or_else(|| ApiError::BadRequest(format!("{name} is required")))?;
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest(format!("{name} must be a date (YYYY-MM-DD)")))
}

/// Usage over a range of UTC days, grouped by action, user, campaign or
/// day, from the day rollups (admins and the service).
async fn usage(ledger: &DynamoLedger, req: &Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(req)?;
    let org = caller.organization(&path_param(req, "org")?)?;
    caller.require_admin_or_service()?;
    only_query_params(req, &["from", "to", "group_by"])?;
    let (from, to) = (report_day(req, "from")?, report_day(req, "to")?);
    let group_text = query_param(req, "group_by").unwrap_or_else(|| "action".into());
    let group = UsageGroup::parse(&group_text)
        .ok_or_else(|| ApiError::BadRequest("group_by: action, user, campaign or day".into()))?;
    let report = ledger.usage(&org, from, to, group).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::usage(from, to, &group_text, &report),
    ))
}

fn page_limit(req: &Request) -> Result<u32, ApiError> {
    match query_param(req, "limit") {
        None => Ok(DEFAULT_PAGE),
        Some(l) => ledger_http::input::whole_number(&l)
            .filter(|l| (1..=u64::from(MAX_PAGE)).contains(l))
            .and_then(|l| u32::try_from(l).ok())
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

/// Cursors are opaque to clients: where the page ended, bound to the
/// organization and the filter it was listed with.
fn encode_cursor(binding: &str, p: &HistoryPosition) -> String {
    URL_SAFE_NO_PAD.encode(json!({ "b": binding, "p": p.placed, "k": p.sk }).to_string())
}

fn decode_cursor(cursor: &str, binding: &str) -> Result<HistoryPosition, ApiError> {
    let invalid = || ApiError::BadRequest("invalid cursor: it continues another listing".into());
    let value: serde_json::Value = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    if value["b"] != binding {
        return Err(invalid());
    }
    match (value["p"].as_str(), value["k"].as_str()) {
        (Some(placed), Some(sk)) => Ok(HistoryPosition {
            placed: placed.to_string(),
            sk: sk.to_string(),
        }),
        _ => Err(invalid()),
    }
}
