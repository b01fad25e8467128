//! What the API shows: domain values rendered for clients, amounts as
//! decimal strings.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use lambda_http::http::StatusCode;
use ledger_domain::{Account, Catalog, Credits, EntryLine, LedgerEntry, SpendQuote, SubscriptionStatus};
use ledger_service::{Applied, Outcome, SubscriptionState};
use serde::Serialize;
use serde_json::{json, Value};

use crate::ApiError;

fn amounts(map: &BTreeMap<ledger_domain::MeterId, Credits>) -> Value {
    map.iter()
        .map(|(m, c)| (m.to_string(), json!(c.to_string())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[derive(Serialize)]
pub struct LineView {
    pub meter: String,
    pub bucket: String,
    pub source: &'static str,
    /// Signed: a debit is negative.
    pub amount: String,
    /// Purchased pool only: where the line starts in the pool's packs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
}

pub fn lines<'a>(entry_lines: impl IntoIterator<Item = &'a EntryLine>) -> Vec<LineView> {
    entry_lines
        .into_iter()
        .map(|l| LineView {
            meter: l.meter().to_string(),
            bucket: l.bucket.to_string(),
            source: l.source().as_str(),
            amount: l.amount.to_string(),
            offset: l.offset.map(|o| o.to_string()),
        })
        .collect()
}

/// A mutation's outcome as status and body; a kept refusal as the problem it was.
pub fn outcome(applied: &Applied) -> Result<(StatusCode, Value), ApiError> {
    let entry = || {
        applied.entry.as_ref().ok_or_else(|| {
            ApiError::from(ledger_domain::DomainError::InvariantViolated(
                "outcome without its entry".into(),
            ))
        })
    };
    Ok(match &applied.outcome {
        Outcome::Spent {
            meter,
            requested,
            units,
            charged,
        } => {
            let e = entry()?;
            let body = json!({
                "entry_id": e.id,
                "action": e.action.as_ref().map(|a| a.to_string()),
                "meter": meter.to_string(),
                "requested": requested,
                "quantity": units,
                "charged": charged.to_string(),
                "buckets": lines(&e.lines),
                "dry_run": false,
            });
            (StatusCode::OK, body)
        }
        Outcome::Purchased => {
            let view = self::entry(entry()?);
            (StatusCode::CREATED, json!({ "entry": view }))
        }
        Outcome::Subscribed(state) => (StatusCode::CREATED, subscription(state, Some(entry()?))),
        Outcome::AlreadySubscribed(state) => (StatusCode::OK, subscription(state, None)),
        Outcome::Cancelled(state) | Outcome::PlanChanged(state) => {
            (StatusCode::OK, subscription(state, Some(entry()?)))
        }
        Outcome::Refused(refusal) => return Err(refusal.clone().into()),
    })
}

pub fn entry(e: &LedgerEntry) -> Value {
    let mut v = json!({
        "id": e.id,
        // Placed by the sequencer once committed: until then, null.
        "seq": e.seq(),
        "at": e.at,
        "kind": e.kind,
        "user": e.actor.user.as_ref().map(|u| u.to_string()),
        "caller": e.actor.caller,
        "lines": lines(&e.lines),
        "balance_after": e.placement.as_ref().map(|p| amounts(&p.balance_after)),
    });
    let o = v.as_object_mut().expect("object");
    let mut put = |k: &str, val: Value| {
        if !val.is_null() {
            o.insert(k.into(), val);
        }
    };
    put("action", json!(e.action.as_ref().map(|a| a.to_string())));
    put("quantity", json!(e.quantity));
    put("requested", json!(e.requested));
    put("campaign", json!(e.campaign.as_ref().map(|c| c.to_string())));
    put("subject", json!(e.subject.as_ref().map(|s| s.as_str())));
    put("plan", json!(e.plan.as_ref().map(|p| p.to_string())));
    if let Some(p) = &e.purchase {
        put(
            "purchase",
            json!({
                "package": p.package.as_ref().map(|x| x.to_string()),
                "credits": p.credits.to_string(),
                "price_cents": p.price_cents,
                "currency": p.currency,
                "payment_reference": p.payment_reference,
            }),
        );
    }
    v
}

/// The answer of a dry run: what it would cost and how much the balance covers.
pub fn spend_quote(action: &str, quote: &SpendQuote) -> Value {
    json!({
        "action": action,
        "meter": quote.meter.to_string(),
        "requested": quote.requested,
        "unit_cost": quote.unit_cost.to_string(),
        "cost": quote.cost().to_string(),
        "affordable": quote.affordable,
        "sufficient": quote.sufficient(),
        "quantity": quote.units,
        "charged": quote.amount.to_string(),
        "available": quote.available.to_string(),
        "buckets": lines(&quote.draws.iter().map(|d| d.debit_line()).collect::<Vec<_>>()),
        "dry_run": true,
    })
}

/// A downgrade waiting for the renewal that applies it.
fn scheduled_change(next: &ledger_domain::Subscription, at: DateTime<Utc>) -> Value {
    json!({
        "plan": next.plan.to_string(),
        "seats": next.seats,
        "billing": next.billing,
        "takes_effect": at,
    })
}

fn subscription(state: &SubscriptionState, e: Option<&LedgerEntry>) -> Value {
    let mut v = json!({
        "org": state.org.to_string(),
        "plan": state.subscription.plan.to_string(),
        "seats": state.subscription.seats,
        "billing": state.subscription.billing,
        "status": state.status,
        "anchor": state.anchor,
        "period": { "start": state.period.start, "end": state.period.end },
        "next_renewal": state.period.renews_at(),
    });
    if let Some(next) = &state.scheduled {
        v["scheduled_change"] = scheduled_change(next, state.period.renews_at());
    }
    if let Some(e) = e {
        v["entry_id"] = json!(e.id);
        v["granted"] = json!(lines(&e.lines));
        if let Some(p) = &e.placement {
            v["balance_after"] = amounts(&p.balance_after);
        }
    }
    v
}

#[derive(Serialize)]
struct BucketView {
    id: String,
    source: &'static str,
    granted: String,
    remaining: String,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct MeterView {
    available: String,
    /// Held by reservations (none until reservations exist).
    reserved: String,
    used_this_period: String,
    buckets: Vec<BucketView>,
}

#[derive(Serialize)]
struct BalanceView {
    org: String,
    plan: String,
    status: SubscriptionStatus,
    period: PeriodView,
    next_renewal: DateTime<Utc>,
    /// A downgrade waiting for the next renewal.
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_change: Option<Value>,
    meters: BTreeMap<String, MeterView>,
}

#[derive(Serialize)]
struct PeriodView {
    start: NaiveDate,
    end: NaiveDate,
}

pub fn balance(account: &Account, catalog: &Catalog) -> Value {
    let mut meters = BTreeMap::new();
    for meter in account.meters().into_iter().filter(|m| catalog.meters.contains_key(m)) {
        // An emptied purchased pool stays on the account (its totals place
        // future packs) but holds nothing to show.
        let buckets = account
            .buckets_in_priority(&meter)
            .into_iter()
            .filter(|b| b.remaining.is_positive())
            .map(|b| BucketView {
                id: b.id.to_string(),
                source: b.source().as_str(),
                granted: b.granted.to_string(),
                remaining: b.remaining.to_string(),
                expires_at: b.expires_at,
            })
            .collect();
        meters.insert(
            meter.to_string(),
            MeterView {
                available: account.available(&meter).to_string(),
                reserved: Credits::ZERO.to_string(),
                used_this_period: account
                    .used_this_period
                    .get(&meter)
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                buckets,
            },
        );
    }
    serde_json::to_value(BalanceView {
        org: account.org.to_string(),
        plan: account.subscription.plan.to_string(),
        status: account.status,
        period: PeriodView {
            start: account.period.start,
            end: account.period.end,
        },
        next_renewal: account.period.renews_at(),
        scheduled_change: account
            .scheduled
            .as_ref()
            .map(|next| scheduled_change(next, account.renews_at())),
        meters,
    })
    .expect("serializable")
}

/// The catalog as clients see it (amounts as decimal strings, as in the file).
pub fn catalog(catalog: &Catalog) -> Value {
    serde_json::to_value(catalog).expect("serializable")
}
