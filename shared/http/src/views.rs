//! What the API shows: domain values rendered for clients, amounts as
//! decimal strings.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use lambda_http::http::StatusCode;
use ledger_domain::{
    Account, Actor, CallerKind, Catalog, Credits, EntryLine, LedgerEntry, SpendQuote, SubscriptionStatus,
};
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
        } => (StatusCode::OK, spent(entry()?, meter, *requested, *units, *charged)),
        Outcome::Purchased => {
            let view = self::entry(entry()?);
            (StatusCode::CREATED, json!({ "entry": view }))
        }
        Outcome::Subscribed(state) => (StatusCode::CREATED, subscription(state, Some(entry()?))),
        Outcome::AlreadySubscribed(state) => (StatusCode::OK, subscription(state, None)),
        Outcome::Cancelled(state) | Outcome::PlanChanged(state) => {
            (StatusCode::OK, subscription(state, Some(entry()?)))
        }
        Outcome::Member { user, role } => {
            let mut body = json!({ "user": user.to_string() });
            match role {
                Some(role) => body["role"] = json!(role),
                None => body["removed"] = json!(true),
            }
            if let Some(e) = &applied.entry {
                body["entry_id"] = json!(e.id);
                // Licenses granted (a member added) or expired (removed).
                body["licenses"] = json!(lines(&e.lines));
            }
            (StatusCode::OK, body)
        }
        Outcome::Result {
            action,
            subject,
            outcome,
            charge,
        } => {
            let charged = match charge {
                ledger_domain::ResultCharge::Charged(c) => *c,
                _ => Credits::ZERO,
            };
            let mut body = json!({
                "action": action.to_string(),
                "subject": subject.as_str(),
                "outcome": outcome,
                "charge": charge.as_str(),
                "charged": charged.to_string(),
            });
            if let Some(e) = &applied.entry {
                body["entry_id"] = json!(e.id);
                body["buckets"] = json!(lines(&e.lines));
            }
            (StatusCode::OK, body)
        }
        Outcome::ResultsResumed => (StatusCode::OK, json!({ "resumed": true })),
        Outcome::ControlsSet => (StatusCode::OK, json!({ "entry_id": entry()?.id })),
        Outcome::Recorded => (StatusCode::CREATED, json!({ "entry_id": entry()?.id })),
        // Accepted, not done: an admin approves or denies it.
        Outcome::PendingApproval {
            approval,
            meter,
            amount,
        } => (
            StatusCode::ACCEPTED,
            json!({
                "approval": approval.as_str(),
                "state": "pending",
                "meter": meter.to_string(),
                "amount": amount.to_string(),
                "entry_id": entry()?.id,
            }),
        ),
        Outcome::Reserved {
            meter,
            requested,
            reserved,
            already,
            short,
            held,
        } => {
            let mut body = reservation(meter, *requested, reserved, already, short, *held);
            body["entry_id"] = json!(entry()?.id);
            body["buckets"] = json!(lines(&entry()?.lines));
            (StatusCode::OK, body)
        }
        Outcome::UnitsMoved {
            transition,
            contacts,
            returned,
            stayed_expired,
        } => {
            let e = entry()?;
            let body = json!({
                "entry_id": e.id,
                "transition": transition.as_str(),
                "contacts": contacts.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "returned": returned.to_string(),
                // Plan credits of a month that has renewed since the reservation.
                "stayed_expired": stayed_expired.to_string(),
                "buckets": lines(&e.lines),
            });
            (StatusCode::OK, body)
        }
        Outcome::Slots {
            meter,
            capacity,
            used,
            contacts,
        } => {
            let e = entry()?;
            let contacts: Vec<Value> = contacts
                .iter()
                .map(|(c, o)| json!({ "contact": c.as_str(), "outcome": o.as_str() }))
                .collect();
            let body = json!({
                "entry_id": e.id,
                "meter": meter.to_string(),
                "changed": e.quantity,
                "requested": e.requested,
                "capacity": capacity,
                "used": used,
                "available": capacity.saturating_sub(*used),
                "contacts": contacts,
            });
            (StatusCode::OK, body)
        }
        Outcome::Reversed {
            original,
            reason,
            returned,
            stayed_expired,
        } => {
            let e = entry()?;
            let body = match reason {
                // A voided pack: what left the balance, and what was spent
                // of it already (spent, it stays spent).
                ledger_domain::ReversalReason::Refunded => json!({
                    "entry": self::entry(e),
                    "reverses": original,
                    "reason": reason.as_str(),
                    "taken_back": Credits::ZERO.checked_sub(*returned).unwrap_or_default().to_string(),
                    "not_taken_back": stayed_expired.to_string(),
                }),
                _ => json!({
                    "entry": self::entry(e),
                    "reverses": original,
                    "reason": reason.as_str(),
                    "returned": returned.to_string(),
                    // Plan credits of a month that has renewed since the charge.
                    "stayed_expired": stayed_expired.to_string(),
                }),
            };
            (StatusCode::CREATED, body)
        }
        Outcome::SpentSubjects {
            meter,
            requested,
            units,
            charged,
            subjects,
        } => {
            let mut body = spent(entry()?, meter, *requested, *units, *charged);
            body["subjects"] = subject_outcomes(subjects);
            (StatusCode::OK, body)
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
    put("member", json!(e.member.as_ref().map(|m| m.to_string())));
    put("result", json!(e.result));
    put("reverses", json!(e.reverses));
    put("note", json!(e.note));
    if !e.subjects.is_empty() {
        put(
            "subjects",
            json!(e.subjects.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        );
    }
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

/// A spend's answer: what it charged and which buckets paid.
fn spent(e: &LedgerEntry, meter: &ledger_domain::MeterId, requested: u64, units: u64, charged: Credits) -> Value {
    json!({
        "entry_id": e.id,
        "action": e.action.as_ref().map(|a| a.to_string()),
        "meter": meter.to_string(),
        "requested": requested,
        "quantity": units,
        "charged": charged.to_string(),
        "buckets": lines(&e.lines),
        "dry_run": false,
    })
}

fn subject_outcomes(subjects: &[(ledger_domain::Subject, ledger_domain::SubjectOutcome)]) -> Value {
    subjects
        .iter()
        .map(|(s, o)| json!({ "subject": s.as_str(), "outcome": o.as_str() }))
        .collect()
}

/// A reservation's answer (or its dry run): reserved N of M, and who was not.
pub fn reservation(
    meter: &ledger_domain::MeterId,
    requested: u64,
    reserved: &[ledger_domain::Subject],
    already: &[ledger_domain::Subject],
    short: &[ledger_domain::Subject],
    held: Credits,
) -> Value {
    let names = |list: &[ledger_domain::Subject]| -> Value { list.iter().map(|s| json!(s.as_str())).collect() };
    json!({
        "meter": meter.to_string(),
        "requested": requested,
        "reserved": reserved.len(),
        "contacts": names(reserved),
        "already_reserved": names(already),
        "not_covered": names(short),
        "meter_reserved": held.to_string(),
    })
}

/// A bulk dry run: what each subject would get and what it would cost.
pub fn bulk_quote(action: &str, quote: &ledger_domain::BulkQuote) -> Value {
    let charged = quote.charged();
    let mut v = json!({
        "action": action,
        "requested": quote.outcomes.len(),
        "quantity": quote.units(),
        "charged": charged.to_string(),
        "subjects": subject_outcomes(&quote.outcomes),
        "dry_run": true,
    });
    if let Some(q) = &quote.quote {
        v["meter"] = json!(q.meter.to_string());
        v["unit_cost"] = json!(q.unit_cost.to_string());
        v["cost"] = json!(q.cost().to_string());
        v["available"] = json!(q.available.to_string());
        v["sufficient"] = json!(q.sufficient());
    }
    v
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
    /// What the viewer may spend: the shared buckets and their own license.
    available: String,
    /// Held by reservations.
    reserved: String,
    /// The day the first of the reserved units returns by itself, if
    /// neither spent nor released before.
    #[serde(skip_serializing_if = "Option::is_none")]
    nearest_reserved_expiry: Option<NaiveDate>,
    used_this_period: String,
    buckets: Vec<BucketView>,
    /// Capacity meters: slots the plan allows (`used_this_period` is then
    /// the slots in use, which never renew).
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<u64>,
    /// How far below zero the meter may go, and how far it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    overdraft: Option<OverdraftView>,
}

#[derive(Serialize)]
struct OverdraftView {
    allowance: String,
    /// Borrowed and not repaid yet: the next purchase repays it first.
    owed: String,
    /// The meter's balance: what its buckets hold less what is owed.
    balance: String,
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
    /// This month's licenses: a member's own; every member's for admins and
    /// the service. Left out on plans without licenses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<LicenseView>,
    /// Success-only charging: paused when a billable result could not be
    /// paid, and how many results are held unpaid.
    results: Value,
    /// The viewing member's own limits and blocked actions, if an admin set any.
    #[serde(skip_serializing_if = "Option::is_none")]
    controls: Option<Value>,
    /// Campaign budgets and what each has spent (admins and the service).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    budgets: BTreeMap<String, Value>,
}

#[derive(Serialize)]
struct LicenseView {
    user: String,
    meter: String,
    granted: String,
    used: String,
    left: String,
    resets_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct PeriodView {
    start: NaiveDate,
    end: NaiveDate,
}

/// The balance as `viewer` sees it: a member their own license and the
/// shared buckets; admins and the service every bucket and every license.
/// `available` is what the viewer's user may spend.
pub fn balance(account: &Account, catalog: &Catalog, viewer: &Actor, now: DateTime<Utc>) -> Value {
    let sees_all = viewer.caller != CallerKind::Member;
    let user = viewer.user.as_ref();
    let visible = |b: &&ledger_domain::Bucket| sees_all || b.id.licensee().is_none_or(|l| Some(l) == user);
    let mut meters = BTreeMap::new();
    for meter in account.meters().into_iter().filter(|m| catalog.meters.contains_key(m)) {
        // An emptied purchased pool stays on the account (its totals place
        // future packs) but holds nothing to show.
        let buckets = account
            .buckets_in_priority(&meter)
            .into_iter()
            .filter(|b| b.remaining.is_positive())
            .filter(visible)
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
                available: account.spendable(&meter, user).to_string(),
                reserved: account.reserved(&meter).to_string(),
                nearest_reserved_expiry: account.nearest_unit_deadline(&meter),
                used_this_period: account
                    .used_this_period
                    .get(&meter)
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                buckets,
                capacity: None,
                overdraft: account.overdraft(&meter).map(|b| OverdraftView {
                    allowance: b.granted.to_string(),
                    owed: b.owed().to_string(),
                    balance: account.available(&meter).to_string(),
                }),
            },
        );
    }
    for (meter, _) in catalog
        .meters
        .iter()
        .filter(|(_, m)| m.kind == ledger_domain::catalog::MeterKind::Capacity)
    {
        let (capacity, used) = (account.capacity(catalog, meter), account.slots_used(meter));
        if capacity == 0 && used == 0 {
            continue;
        }
        meters.insert(
            meter.to_string(),
            MeterView {
                available: capacity.saturating_sub(used).to_string(),
                reserved: "0".into(),
                nearest_reserved_expiry: None,
                used_this_period: used.to_string(),
                buckets: Vec::new(),
                capacity: Some(capacity),
                overdraft: None,
            },
        );
    }
    let licenses = account
        .licenses()
        .into_iter()
        .filter(|l| sees_all || Some(&l.user) == user)
        .map(|l| LicenseView {
            user: l.user.to_string(),
            meter: l.meter.to_string(),
            granted: l.granted.to_string(),
            used: l.used().to_string(),
            left: l.remaining.to_string(),
            resets_at: l.expires_at,
        })
        .collect();
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
            .map(|next| scheduled_change(next, account.scheduled_change_at(catalog))),
        meters,
        licenses,
        results: json!({ "paused": account.results_paused, "held": account.held_results }),
        controls: user
            .and_then(|u| account.members.get(u))
            .filter(|m| m.limits != Default::default())
            .map(|m| controls(account, m, now, None)),
        budgets: account
            .budgets
            .iter()
            .filter(|_| sees_all)
            .map(|(c, b)| {
                let left = b.limit.checked_sub(b.spent).unwrap_or_default();
                (
                    c.to_string(),
                    json!({ "limit": b.limit.to_string(), "spent": b.spent.to_string(), "left": left.to_string() }),
                )
            })
            .collect(),
    })
    .expect("serializable")
}

/// A member's team controls and what they spent: counted on the account
/// under a limit (exact at commit), else `rolled` up from the stream.
fn controls(
    account: &Account,
    member: &ledger_domain::Member,
    now: DateTime<Utc>,
    rolled: Option<&ledger_domain::MemberGauge>,
) -> Value {
    let limits = &member.limits;
    let gauge = match (&member.usage, rolled) {
        (Some(usage), _) => Some(account.gauge(Some(usage), now)),
        (None, Some(rolled)) => Some(rolled.clone()),
        (None, None) => None,
    };
    json!({
        "daily_limit": limits.daily.map(|c| c.to_string()),
        "monthly_limit": limits.monthly.map(|c| c.to_string()),
        "used_today": gauge.as_ref().map(|g| g.used_today.to_string()),
        "used_this_period": gauge.as_ref().map(|g| g.used_this_period.to_string()),
        "blocked_actions": limits.blocked.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

/// The organization's members, in the order they joined, with this
/// month's licenses and their team controls; `rolled` is what each spent
/// by the usage rollups (for those no limit counts on the account).
pub fn members(account: &Account, now: DateTime<Utc>, rolled: &BTreeMap<String, ledger_domain::MemberGauge>) -> Value {
    let licenses = account.licenses();
    let members: Vec<Value> = account
        .members_by_joining()
        .into_iter()
        .map(|user| {
            let m = &account.members[user];
            let own: Vec<Value> = licenses
                .iter()
                .filter(|l| &l.user == user)
                .map(|l| json!({ "meter": l.meter.to_string(), "granted": l.granted.to_string(), "used": l.used().to_string(), "left": l.remaining.to_string(), "resets_at": l.expires_at }))
                .collect();
            let spent = rolled.get(user.as_str()).cloned().unwrap_or_default();
            json!({ "user": user.to_string(), "role": m.role, "joined_at": m.joined_at, "licenses": own, "controls": controls(account, m, now, Some(&spent)) })
        })
        .collect();
    json!({ "members": members, "seats": account.subscription.seats })
}

/// The catalog as clients see it (amounts as decimal strings, as in the file).
pub fn catalog(catalog: &Catalog) -> Value {
    serde_json::to_value(catalog).expect("serializable")
}

/// An in-app notification: an alert's level crossed by an entry.
pub fn notification(n: &ledger_store::Notification) -> Value {
    json!({
        "id": n.id,
        "alert": n.alert.to_string(),
        "meter": n.meter.to_string(),
        "channel": n.channel.as_str(),
        "level": n.level.to_string(),
        "left": n.left.to_string(),
        "entry_seq": n.entry_seq,
        "at": n.at,
        "read": n.read,
    })
}

/// The organization's low-balance alerts, with the level each fires below now.
pub fn alerts(account: &Account) -> Value {
    let alerts: Vec<Value> = account
        .alerts
        .iter()
        .map(|(id, a)| {
            let mut v = json!({
                "id": id.to_string(),
                "meter": a.meter.to_string(),
                "channel": a.channel.as_str(),
                "level": account.alert_level(a).map(|l| l.to_string()),
            });
            match a.threshold {
                ledger_domain::Threshold::Percent(p) => v["percent"] = json!(p),
                ledger_domain::Threshold::Amount(c) => v["amount"] = json!(c.to_string()),
            }
            v
        })
        .collect();
    json!({ "alerts": alerts })
}

/// A usage report: totals by group value (credits per meter, entries).
pub fn usage(
    from: NaiveDate,
    to: NaiveDate,
    group_by: &str,
    report: &BTreeMap<String, ledger_domain::usage::UsageTotals>,
) -> Value {
    let groups: Vec<Value> = report
        .iter()
        .map(|(key, t)| {
            let used: BTreeMap<String, String> = t
                .used
                .iter()
                .map(|(m, v)| (m.to_string(), Credits::from_thousandths(*v).to_string()))
                .collect();
            json!({ "key": key, "used": used, "entries": t.entries })
        })
        .collect();
    json!({ "from": from, "to": to, "group_by": group_by, "groups": groups })
}

/// Approvals still pending: what each would spend, and when it expires.
pub fn approvals(pending: &[ledger_domain::Unit]) -> Value {
    let list: Vec<Value> = pending
        .iter()
        .map(|u| {
            json!({
                "approval": u.contact.as_str(),
                "action": u.action.to_string(),
                "meter": u.meter.to_string(),
                "amount": u.cost().to_string(),
                "expires_at": u.deadline,
            })
        })
        .collect();
    json!({ "approvals": list })
}

/// Credit ROI by campaign: credits used (per meter and, for credits, by
/// action), outcomes, and credits per outcome of each kind.
pub fn roi(from: NaiveDate, to: NaiveDate, report: &BTreeMap<String, ledger_domain::usage::CampaignRoi>) -> Value {
    let per = |credits: i64, count: i64| Credits::from_thousandths(credits / count.max(1)).to_string();
    let campaigns: Vec<Value> = report
        .iter()
        .map(|(campaign, r)| {
            let credits = r
                .used
                .iter()
                .find(|(m, _)| m.as_str() == "credits")
                .map(|(_, v)| *v)
                .unwrap_or(0);
            let used: BTreeMap<String, String> = r
                .used
                .iter()
                .map(|(m, v)| (m.to_string(), Credits::from_thousandths(*v).to_string()))
                .collect();
            let per_outcome: BTreeMap<&String, String> =
                r.outcomes.iter().map(|(k, n)| (k, per(credits, *n))).collect();
            let by_action: BTreeMap<&String, Value> = r
                .by_action
                .iter()
                .map(|(action, spent)| {
                    let per_outcome: BTreeMap<&String, String> =
                        r.outcomes.iter().map(|(k, n)| (k, per(*spent, *n))).collect();
                    (
                        action,
                        json!({ "credits": Credits::from_thousandths(*spent).to_string(), "per_outcome": per_outcome }),
                    )
                })
                .collect();
            json!({
                "campaign": campaign,
                "used": used,
                "outcomes": r.outcomes,
                "credits_per_outcome": per_outcome,
                "by_action": by_action,
            })
        })
        .collect();
    json!({ "from": from, "to": to, "campaigns": campaigns })
}
