//! What the API shows: domain values rendered for clients, amounts as
//! decimal strings.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use ledger_domain::{Account, Catalog, Credits, LedgerEntry, SpendQuote, SubscriptionStatus};
use serde::Serialize;
use serde_json::{json, Value};

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
}

pub fn lines(entry_lines: &[ledger_domain::EntryLine]) -> Vec<LineView> {
    entry_lines
        .iter()
        .map(|l| LineView {
            meter: l.meter.to_string(),
            bucket: l.bucket.clone(),
            source: l.source.as_str(),
            amount: l.amount.to_string(),
        })
        .collect()
}

pub fn entry(e: &LedgerEntry) -> Value {
    let mut v = json!({
        "id": e.id(),
        "seq": e.seq,
        "at": e.at,
        "kind": e.kind,
        "user": e.actor.user.as_ref().map(|u| u.to_string()),
        "caller": e.actor.caller,
        "lines": lines(&e.lines),
        "balance_after": amounts(&e.balance_after),
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

/// The reply of a spend that was applied.
pub fn spend_applied(quote: &SpendQuote, e: &LedgerEntry) -> Value {
    json!({
        "entry_id": e.id(),
        "action": e.action.as_ref().map(|a| a.to_string()),
        "meter": quote.meter.to_string(),
        "requested": quote.requested,
        "quantity": quote.units,
        "charged": quote.amount.to_string(),
        "buckets": lines(&e.lines),
        "balance_after": amounts(&e.balance_after),
        "dry_run": false,
    })
}

/// The answer of a dry run: what it would cost and how much the balance covers.
pub fn spend_quote(action: &str, quote: &SpendQuote) -> Value {
    json!({
        "action": action,
        "meter": quote.meter.to_string(),
        "requested": quote.requested,
        "unit_cost": quote.unit_cost.to_string(),
        "cost": quote.unit_cost.checked_mul(quote.requested).unwrap_or_default().to_string(),
        "affordable": quote.affordable,
        "sufficient": quote.sufficient(),
        "quantity": quote.units,
        "charged": quote.amount.to_string(),
        "available": quote.available.to_string(),
        "buckets": lines(&quote.lines),
        "dry_run": true,
    })
}

pub fn subscription(account: &Account, e: Option<&LedgerEntry>) -> Value {
    let mut v = json!({
        "org": account.org.to_string(),
        "plan": account.subscription.plan.to_string(),
        "seats": account.subscription.seats,
        "billing": account.subscription.billing,
        "status": account.status,
        "anchor": account.anchor,
        "period": { "start": account.period.start, "end": account.period.end },
        "next_renewal": account.period.renews_at(),
    });
    if let Some(e) = e {
        v["entry_id"] = json!(e.id());
        v["granted"] = json!(lines(&e.lines));
        v["balance_after"] = amounts(&e.balance_after);
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
    meters: BTreeMap<String, MeterView>,
}

#[derive(Serialize)]
struct PeriodView {
    start: NaiveDate,
    end: NaiveDate,
}

pub fn balance(account: &Account, catalog: &Catalog) -> Value {
    let mut meters = BTreeMap::new();
    let with_buckets = account.buckets.iter().map(|b| &b.meter);
    let used = account.used_this_period.keys();
    let names: std::collections::BTreeSet<_> = with_buckets
        .chain(used)
        .chain(std::iter::once(&ledger_domain::credits_meter()))
        .cloned()
        .collect();
    for meter in names.into_iter().filter(|m| catalog.meters.contains_key(m)) {
        let buckets = account
            .buckets_in_priority(&meter)
            .into_iter()
            .map(|b| BucketView {
                id: b.id.clone(),
                source: b.source.as_str(),
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
        meters,
    })
    .expect("serializable")
}

/// The catalog as clients see it (amounts as decimal strings, as in the file).
pub fn catalog(catalog: &Catalog) -> Value {
    serde_json::to_value(catalog).expect("serializable")
}
