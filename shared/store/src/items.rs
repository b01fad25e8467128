//! The table's item layout, mapped by hand: every attribute is named here
//! and nowhere else, so renaming a domain field never changes stored data.
//! Amounts are stored as whole numbers of thousandths of a credit; dates as
//! `YYYY-MM-DD`; instants as RFC 3339 UTC with microseconds (they sort as
//! text). The README's storage table is this module in prose.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use ledger_domain::entry::Placement;
use ledger_domain::{
    Account, ActionId, Actor, Alert, AlertId, Billing, Bucket, BucketId, CallerKind, CampaignBudget, CampaignId,
    Channel, Credits, EntryKind, EntryLine, IdempotencyKey, LedgerEntry, Member, MemberLimits, MemberRole, MemberUsage,
    MeterId, OrgId, Period, PurchaseRecord, Subject, Subscription, SubscriptionStatus, Threshold, TopUpTrigger, Unit,
    UnitState, Unlock, UserId,
};

use crate::port::{EntryKey, HeldResult, KeptRequest, Notification, Receipt, StoreError};

pub type Item = HashMap<String, AttributeValue>;

pub const ACCOUNT_SK: &str = "ACCOUNT";
/// GSI: every entry of an organization by time and seq (`ledger_org`, `placed`).
pub const LEDGER_INDEX: &str = "ledger";
/// GSI: an organization's entries by user (`ledger_user` = `<org>#<user>`, `placed`).
pub const LEDGER_BY_USER_INDEX: &str = "ledger_by_user";
/// GSI: an organization's entries by action (`ledger_action` = `<org>#<action>`, `placed`).
pub const LEDGER_BY_ACTION_INDEX: &str = "ledger_by_action";
/// GSI: an organization's entries by campaign (`ledger_campaign` = `<org>#<campaign>`, `placed`).
pub const LEDGER_BY_CAMPAIGN_INDEX: &str = "ledger_by_campaign";
/// GSI, sparse, keys only: reserved units by deadline (`unit_shard`, `deadline`).
pub const RESERVATIONS_INDEX: &str = "reservations_due";
/// GSI, sparse, keys only: accounts by next renewal (`renewal_shard`, `renews_at`).
pub const RENEWALS_INDEX: &str = "renewals_due";
/// Due accounts are spread over this many index partitions.
pub const RENEWAL_SHARDS: u32 = 8;

pub fn org_pk(org: &OrgId) -> String {
    format!("ORG#{org}")
}

pub fn request_sk(key: &IdempotencyKey) -> String {
    format!("REQ#{}", key.as_str())
}

pub fn entry_sk(key: &EntryKey) -> String {
    match key {
        EntryKey::Request(k) => request_sk(k),
        EntryKey::Renewal(d) => format!("RENEWAL#{d}"),
    }
}

/// An entry's id: its sort key, opaque to clients, so it is known the moment
/// the entry is written and leads back to it in one read.
pub fn entry_id(sk: &str) -> String {
    format!("ent_{}", URL_SAFE_NO_PAD.encode(sk))
}

/// The sort key an entry id names, if it names one.
pub fn entry_sk_of_id(id: &str) -> Option<String> {
    let sk = String::from_utf8(URL_SAFE_NO_PAD.decode(id.strip_prefix("ent_")?).ok()?).ok()?;
    (sk.starts_with("REQ#") || sk.starts_with("RENEWAL#")).then_some(sk)
}

pub fn claim_pk(name: &str) -> String {
    format!("CLAIM#{name}")
}

pub fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// The renewal index partition of an organization: a stable hash, so the
/// sweep can read the shards in parallel and an account never moves.
pub fn renewal_shard(org: &OrgId) -> String {
    format!("RENEWAL#{}", shard_of(org))
}

/// The deadline index partition of an organization's reserved units.
pub fn unit_shard(org: &OrgId) -> String {
    format!("UNITS#{}", shard_of(org))
}

/// A stable hash of the organization over the index shards.
fn shard_of(org: &OrgId) -> u32 {
    let hash = org
        .as_str()
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash % RENEWAL_SHARDS
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn amount(c: Credits) -> AttributeValue {
    n(c.thousandths())
}

pub fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn meter_amounts(map: &BTreeMap<MeterId, Credits>) -> AttributeValue {
    AttributeValue::M(map.iter().map(|(m, c)| (m.to_string(), amount(*c))).collect())
}

/// Reads one item's attributes, naming the item in every error.
pub struct Attrs<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Attrs<'a> {
    pub fn of(item: &'a Item, what: &'static str) -> Self {
        Attrs { item, what }
    }

    fn bad(&self, name: &str, why: &str) -> StoreError {
        StoreError::Malformed(format!("{} attribute {name}: {why}", self.what))
    }

    pub fn opt_s(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(_) => Err(self.bad(name, "not a string")),
        }
    }

    pub fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        self.opt_s(name)?.ok_or_else(|| self.bad(name, "missing"))
    }

    pub fn opt_n<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.bad(name, "not a number")),
            Some(_) => Err(self.bad(name, "not a number")),
        }
    }

    pub fn n<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError> {
        self.opt_n(name)?.ok_or_else(|| self.bad(name, "missing"))
    }

    fn credits(&self, name: &str) -> Result<Credits, StoreError> {
        self.n::<i64>(name).map(Credits::from_thousandths)
    }

    fn opt_credits(&self, name: &str) -> Result<Option<Credits>, StoreError> {
        Ok(self.opt_n::<i64>(name)?.map(Credits::from_thousandths))
    }

    fn parsed<T>(&self, name: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, StoreError> {
        let text = self.s(name)?;
        parse(text).ok_or_else(|| self.bad(name, "unreadable"))
    }

    pub fn opt_parsed<T>(&self, name: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>, StoreError> {
        match self.opt_s(name)? {
            None => Ok(None),
            Some(text) => parse(text).map(Some).ok_or_else(|| self.bad(name, "unreadable")),
        }
    }

    fn date(&self, name: &str) -> Result<NaiveDate, StoreError> {
        self.parsed(name, |t| t.parse().ok())
    }

    fn instant(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
        self.parsed(name, parse_instant)
    }

    fn list(&self, name: &str) -> Result<&'a [AttributeValue], StoreError> {
        match self.item.get(name) {
            None => Ok(&[]),
            Some(AttributeValue::L(l)) => Ok(l),
            Some(_) => Err(self.bad(name, "not a list")),
        }
    }

    fn opt_map(&self, name: &str) -> Result<Option<&'a Item>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::M(m)) => Ok(Some(m)),
            Some(_) => Err(self.bad(name, "not a map")),
        }
    }

    fn meter_amounts(&self, name: &str) -> Result<BTreeMap<MeterId, Credits>, StoreError> {
        let Some(map) = self.opt_map(name)? else {
            return Ok(BTreeMap::new());
        };
        map.iter()
            .map(|(m, v)| {
                let meter = MeterId::parse(m).map_err(|_| self.bad(name, "bad meter"))?;
                let amount = match v {
                    AttributeValue::N(t) => t.parse::<i64>().map_err(|_| self.bad(name, "not a number"))?,
                    _ => return Err(self.bad(name, "not a number")),
                };
                Ok((meter, Credits::from_thousandths(amount)))
            })
            .collect()
    }
}

pub(crate) fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

fn maps<'a>(list: &'a [AttributeValue], what: &'static str) -> impl Iterator<Item = Result<Attrs<'a>, StoreError>> {
    list.iter().map(move |v| match v {
        AttributeValue::M(m) => Ok(Attrs::of(m, what)),
        _ => Err(StoreError::Malformed(format!("{what}: not a map"))),
    })
}

// ---- account -------------------------------------------------------------

/// The whole account, as provisioning writes it. Later changes update it
/// in place ([`account_update`]); `last_entry` names the entry each change
/// wrote, for the sequencer.
pub fn account_item(account: &Account, last_entry: &str) -> Item {
    let sub = &account.subscription;
    let mut item = key(org_pk(&account.org), ACCOUNT_SK.into());
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_string(), v);
    };
    put("org", s(account.org.as_str()));
    put("seq", n(account.seq));
    put("plan", s(sub.plan.as_str()));
    put("seats", n(sub.seats));
    put("billing", s(sub.billing.as_str()));
    if let Some(c) = sub.custom_monthly {
        put("custom_monthly", amount(c));
    }
    if let Some(next) = &account.scheduled {
        for (attr, value) in scheduled_attrs(next) {
            put(attr, value);
        }
    }
    put("status", s(account.status.as_str()));
    put("anchor", s(account.anchor.to_string()));
    put("period_start", s(account.period.start.to_string()));
    put("period_end", s(account.period.end.to_string()));
    put("created_at", s(instant(account.created_at)));
    // The renewal index's keys: the sweep finds the account by them.
    if account.renews_on_schedule() {
        put("renewal_shard", s(renewal_shard(&account.org)));
    }
    put("renews_at", s(instant(account.renews_at())));
    for (user, m) in &account.members {
        put(&member_attr(user), member_value(m));
    }
    for b in &account.buckets {
        put(&bucket_attr(&b.id), bucket_value(b));
    }
    for (meter, used) in &account.used_this_period {
        put(&used_attr(meter), amount(*used));
    }
    for (meter, slots) in &account.slots_used {
        put(&slots_attr(meter), n(*slots));
    }
    for (meter, held) in &account.reserved {
        put(&reserved_attr(meter), amount(*held));
    }
    for (campaign, budget) in &account.budgets {
        put(&budget_attr(campaign), budget_value(budget));
    }
    for (id, alert) in &account.alerts {
        put(&alert_attr(id), alert_value(alert));
    }
    if let Some(above) = account.approval_above {
        put("approval_above", amount(above));
    }
    if let Some(t) = &account.top_up {
        put("top_up", top_up_value(t));
    }
    for ((meter, day), count) in account.units_due.iter().filter(|(_, c)| **c > 0) {
        put(&units_due_attr(meter, *day), n(*count));
    }
    put("grants", n(account.grants));
    if account.results_paused {
        put("results_paused", AttributeValue::Bool(true));
    }
    if account.held_results > 0 {
        put("held_results", n(account.held_results));
    }
    put("last_entry", s(last_entry));
    item
}

impl AccountUpdate {
    /// Records when the change was decided (`last_at`): its entries' time,
    /// which the sequencer keys them by.
    pub fn decided_at(&mut self, at: DateTime<Utc>) {
        let (a, v) = (self.name("last_at"), self.value(s(instant(at))));
        self.sets.push(format!("{a} = {v}"));
    }
}

/// A downgrade waiting for the next renewal, attribute by attribute.
fn scheduled_attrs(next: &Subscription) -> Vec<(&'static str, AttributeValue)> {
    let mut attrs = vec![
        ("scheduled_plan", s(next.plan.as_str())),
        ("scheduled_seats", n(next.seats)),
        ("scheduled_billing", s(next.billing.as_str())),
    ];
    if let Some(c) = next.custom_monthly {
        attrs.push(("scheduled_custom_monthly", amount(c)));
    }
    attrs
}

const SCHEDULED_ATTRS: [&str; 4] = [
    "scheduled_plan",
    "scheduled_seats",
    "scheduled_billing",
    "scheduled_custom_monthly",
];

/// Each bucket is a top-level attribute of the account, so a change updates
/// exactly the buckets it touches.
fn bucket_attr(id: &BucketId) -> String {
    format!("bucket:{id}")
}

/// Each member is a top-level attribute, like buckets: adding one conflicts
/// with nothing but adding the same member.
fn member_attr(user: &UserId) -> String {
    format!("member:{user}")
}

/// A spend counted against a member's limits: today's and the period's
/// usage move by their delta (or start again on a new day or period),
/// conditioned on staying within the limits as read, whatever was counted
/// meanwhile, and on the limits being those read.
fn count_member_usage(u: &mut AccountUpdate, path: &str, b: &Member, a: &Member) {
    let (Some(was), Some(now)) = (&b.usage, &a.usage) else {
        return;
    };
    let joined = u.name("joined_by");
    let jb = u.value(n(b.joined_by));
    u.conditions.push(format!("{path}.{joined} = {jb}"));
    let windows = [
        (
            "usage_day",
            "used_today",
            "daily_limit",
            was.day,
            now.day,
            was.today,
            now.today,
            a.limits.daily,
        ),
        (
            "usage_period",
            "used_period",
            "monthly_limit",
            was.period_start,
            now.period_start,
            was.this_period,
            now.this_period,
            a.limits.monthly,
        ),
    ];
    for (key, used, limit, was_key, now_key, was_used, now_used, cap) in windows {
        if was_key == now_key && was_used == now_used {
            continue;
        }
        let (k, used, l) = (u.name(key), u.name(used), u.name(limit));
        let wk = u.value(s(was_key.to_string()));
        u.conditions.push(format!("{path}.{k} = {wk}"));
        match cap {
            Some(cap) => {
                let c = u.value(amount(cap));
                u.conditions.push(format!("{path}.{l} = {c}"));
            }
            None => u.conditions.push(format!("attribute_not_exists({path}.{l})")),
        }
        if was_key == now_key {
            let d = now_used.thousandths() - was_used.thousandths();
            let dv = u.value(n(d));
            // A spend the limit allowed stays within it whatever others
            // counted meanwhile. A change that leaves usage past the limit
            // was counted, not limited (a result: the work is done), so it
            // must not wait for room that will never come.
            if let Some(cap) = cap.filter(|cap| d > 0 && now_used <= *cap) {
                let max = u.value(n(cap.thousandths() - d));
                u.conditions.push(format!("{path}.{used} <= {max}"));
            }
            u.sets.push(format!("{path}.{used} = {path}.{used} + {dv}"));
        } else {
            let (nk, v) = (u.value(s(now_key.to_string())), u.value(amount(now_used)));
            u.sets.push(format!("{path}.{k} = {nk}"));
            u.sets.push(format!("{path}.{used} = {v}"));
        }
    }
}

fn member_value(m: &Member) -> AttributeValue {
    let mut map = HashMap::from([
        ("role".to_string(), s(m.role.as_str())),
        ("joined_at".to_string(), s(instant(m.joined_at))),
        ("joined_by".to_string(), n(m.joined_by)),
    ]);
    if let Some(limit) = m.limits.daily {
        map.insert("daily_limit".into(), amount(limit));
    }
    if let Some(limit) = m.limits.monthly {
        map.insert("monthly_limit".into(), amount(limit));
    }
    // Never an empty list: DynamoDB Local's stream cannot render one.
    if !m.limits.blocked.is_empty() {
        map.insert(
            "blocked".into(),
            AttributeValue::L(m.limits.blocked.iter().map(|a| s(a.as_str())).collect()),
        );
    }
    if let Some(u) = &m.usage {
        map.insert("usage_day".into(), s(u.day.to_string()));
        map.insert("used_today".into(), amount(u.today));
        map.insert("usage_period".into(), s(u.period_start.to_string()));
        map.insert("used_period".into(), amount(u.this_period));
    }
    AttributeValue::M(map)
}

fn member_from_value(m: &Item) -> Result<Member, StoreError> {
    let m = Attrs::of(m, "member");
    let usage = match m.opt_s("usage_day")? {
        None => None,
        Some(_) => Some(MemberUsage {
            day: m.date("usage_day")?,
            today: m.credits("used_today")?,
            period_start: m.date("usage_period")?,
            this_period: m.credits("used_period")?,
        }),
    };
    let blocked = m
        .list("blocked")?
        .iter()
        .map(|v| match v {
            AttributeValue::S(a) => ActionId::parse(a).map_err(|e| StoreError::Malformed(e.to_string())),
            _ => Err(StoreError::Malformed("member blocked: not a string".into())),
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Member {
        role: m.parsed("role", MemberRole::parse)?,
        joined_at: m.instant("joined_at")?,
        joined_by: m.n("joined_by")?,
        limits: MemberLimits {
            daily: m.opt_credits("daily_limit")?,
            monthly: m.opt_credits("monthly_limit")?,
            blocked,
        },
        usage,
    })
}

/// A low-balance alert, a top-level map (`meter`, `percent` or `amount`, `channel`).
fn alert_attr(id: &AlertId) -> String {
    format!("alert:{id}")
}

fn alert_value(a: &Alert) -> AttributeValue {
    let mut m = HashMap::from([
        ("meter".to_string(), s(a.meter.as_str())),
        ("channel".to_string(), s(a.channel.as_str())),
    ]);
    match a.threshold {
        Threshold::Percent(p) => m.insert("percent".into(), n(p)),
        Threshold::Amount(c) => m.insert("amount".into(), amount(c)),
    };
    AttributeValue::M(m)
}

fn alert_from_value(m: &Item) -> Result<Alert, StoreError> {
    let m = Attrs::of(m, "alert");
    let threshold = match m.opt_n::<u8>("percent")? {
        Some(p) => Threshold::Percent(p),
        None => Threshold::Amount(m.credits("amount")?),
    };
    Ok(Alert {
        meter: MeterId::parse(m.s("meter")?).map_err(|e| StoreError::Malformed(e.to_string()))?,
        threshold,
        channel: m.parsed("channel", Channel::parse)?,
    })
}

fn top_up_value(t: &TopUpTrigger) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("meter".to_string(), s(t.meter.as_str())),
        ("below".to_string(), amount(t.below)),
        ("monthly_cap".to_string(), n(t.monthly_cap)),
    ]))
}

/// A campaign's budget, a top-level map (`limit`, `spent`).
fn budget_attr(campaign: &CampaignId) -> String {
    format!("budget:{campaign}")
}

fn budget_value(b: &CampaignBudget) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("limit".to_string(), amount(b.limit)),
        ("spent".to_string(), amount(b.spent)),
    ]))
}

/// Credits held by reservations on a meter, a top-level number.
fn reserved_attr(meter: &MeterId) -> String {
    format!("reserved:{meter}")
}

/// Slots in use on a capacity meter, a top-level number.
fn units_due_attr(meter: &MeterId, day: NaiveDate) -> String {
    format!("units_due:{meter}:{day}")
}

fn slots_attr(meter: &MeterId) -> String {
    format!("slots:{meter}")
}

/// Each meter's usage this period, a top-level number.
fn used_attr(meter: &MeterId) -> String {
    format!("used:{meter}")
}

fn bucket_value(b: &Bucket) -> AttributeValue {
    let mut m = HashMap::from([
        ("granted".to_string(), amount(b.granted)),
        ("remaining".to_string(), amount(b.remaining)),
        ("granted_at".to_string(), s(instant(b.granted_at))),
        ("granted_by".to_string(), n(b.granted_by)),
    ]);
    if let Some(at) = b.expires_at {
        m.insert("expires_at".into(), s(instant(at)));
    }
    if !b.voided.is_empty() {
        m.insert("voided".into(), voided_value(&b.voided));
    }
    AttributeValue::M(m)
}

fn voided_value(ranges: &[(Credits, Credits)]) -> AttributeValue {
    AttributeValue::L(
        ranges
            .iter()
            .map(|(o, a)| {
                AttributeValue::M(HashMap::from([
                    ("offset".to_string(), amount(*o)),
                    ("amount".to_string(), amount(*a)),
                ]))
            })
            .collect(),
    )
}

pub fn account_from_item(item: &Item) -> Result<Account, StoreError> {
    let a = Attrs::of(item, "account");
    let org = a.parsed("org", |t| OrgId::parse(t).ok())?;
    let subscription = Subscription {
        plan: a.parsed("plan", |t| ledger_domain::PlanId::parse(t).ok())?,
        seats: a.n("seats")?,
        billing: a.parsed("billing", Billing::parse)?,
        custom_monthly: a.opt_credits("custom_monthly")?,
    };
    let buckets = item
        .iter()
        .filter_map(|(attr, b)| Some((attr.strip_prefix("bucket:")?, b)))
        .map(|(id, b)| {
            let AttributeValue::M(b) = b else {
                return Err(StoreError::Malformed(format!("bucket {id}: not a map")));
            };
            let b = Attrs::of(b, "bucket");
            Ok(Bucket {
                id: BucketId::parse(id).map_err(|e| StoreError::Malformed(e.to_string()))?,
                granted: b.credits("granted")?,
                remaining: b.credits("remaining")?,
                expires_at: b.opt_parsed("expires_at", parse_instant)?,
                granted_at: b.instant("granted_at")?,
                granted_by: b.n("granted_by")?,
                voided: maps(b.list("voided")?, "voided range")
                    .map(|r| {
                        let r = r?;
                        Ok((r.credits("offset")?, r.credits("amount")?))
                    })
                    .collect::<Result<_, StoreError>>()?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut buckets = buckets;
    // Attributes have no order; the account's is the order of grants.
    buckets.sort_by(|x, y| (x.granted_by, &x.id).cmp(&(y.granted_by, &y.id)));
    let scheduled = match a.opt_s("scheduled_plan")? {
        None => None,
        Some(plan) => Some(Subscription {
            plan: ledger_domain::PlanId::parse(plan).map_err(|e| StoreError::Malformed(e.to_string()))?,
            seats: a.n("scheduled_seats")?,
            billing: a.parsed("scheduled_billing", Billing::parse)?,
            custom_monthly: a.opt_credits("scheduled_custom_monthly")?,
        }),
    };
    Ok(Account {
        org,
        seq: a.n("seq")?,
        subscription,
        scheduled,
        status: a.parsed("status", SubscriptionStatus::parse)?,
        anchor: a.date("anchor")?,
        period: Period {
            start: a.date("period_start")?,
            end: a.date("period_end")?,
        },
        buckets,
        used_this_period: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("used:")?, v)))
            .map(|(meter, v)| {
                let meter = MeterId::parse(meter).map_err(|e| StoreError::Malformed(e.to_string()))?;
                match v {
                    AttributeValue::N(t) => t
                        .parse()
                        .map(|t| (meter, Credits::from_thousandths(t)))
                        .map_err(|_| StoreError::Malformed("usage: not a number".into())),
                    _ => Err(StoreError::Malformed("usage: not a number".into())),
                }
            })
            .collect::<Result<_, StoreError>>()?,
        grants: a.opt_n("grants")?.unwrap_or(0),
        reserved: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("reserved:")?, v)))
            .filter_map(|(meter, v)| match v {
                AttributeValue::N(t) if t != "0" => Some((meter, t)),
                _ => None,
            })
            .map(|(meter, t)| {
                let meter = MeterId::parse(meter).map_err(|e| StoreError::Malformed(e.to_string()))?;
                let held = t
                    .parse()
                    .map_err(|_| StoreError::Malformed("reserved: not a number".into()))?;
                Ok((meter, Credits::from_thousandths(held)))
            })
            .collect::<Result<_, StoreError>>()?,
        units_due: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("units_due:")?.rsplit_once(':')?, v)))
            .map(|((meter, day), v)| {
                let meter = MeterId::parse(meter).map_err(|e| StoreError::Malformed(e.to_string()))?;
                let day = NaiveDate::parse_from_str(day, "%Y-%m-%d")
                    .map_err(|_| StoreError::Malformed("units_due: not a date".into()))?;
                match v {
                    AttributeValue::N(t) => t
                        .parse()
                        .map(|t| ((meter, day), t))
                        .map_err(|_| StoreError::Malformed("units_due: not a number".into())),
                    _ => Err(StoreError::Malformed("units_due: not a number".into())),
                }
            })
            .collect::<Result<_, StoreError>>()?,
        approval_above: a.opt_credits("approval_above")?,
        top_up: match a.opt_map("top_up")? {
            None => None,
            Some(m) => {
                let m = Attrs::of(m, "top_up");
                Some(TopUpTrigger {
                    meter: MeterId::parse(m.s("meter")?).map_err(|e| StoreError::Malformed(e.to_string()))?,
                    below: m.credits("below")?,
                    monthly_cap: m.n("monthly_cap")?,
                })
            }
        },
        alerts: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("alert:")?, v)))
            .map(|(id, v)| {
                let id = AlertId::parse(id).map_err(|e| StoreError::Malformed(e.to_string()))?;
                let AttributeValue::M(m) = v else {
                    return Err(StoreError::Malformed(format!("alert {id}: not a map")));
                };
                Ok((id, alert_from_value(m)?))
            })
            .collect::<Result<_, StoreError>>()?,
        budgets: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("budget:")?, v)))
            .map(|(campaign, v)| {
                let campaign = CampaignId::parse(campaign).map_err(|e| StoreError::Malformed(e.to_string()))?;
                let AttributeValue::M(m) = v else {
                    return Err(StoreError::Malformed(format!("budget {campaign}: not a map")));
                };
                let m = Attrs::of(m, "budget");
                let budget = CampaignBudget {
                    limit: m.credits("limit")?,
                    spent: m.credits("spent")?,
                };
                Ok((campaign, budget))
            })
            .collect::<Result<_, StoreError>>()?,
        slots_used: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("slots:")?, v)))
            .map(|(meter, v)| {
                let meter = MeterId::parse(meter).map_err(|e| StoreError::Malformed(e.to_string()))?;
                match v {
                    AttributeValue::N(t) => t
                        .parse()
                        .map(|t| (meter, t))
                        .map_err(|_| StoreError::Malformed("slots: not a number".into())),
                    _ => Err(StoreError::Malformed("slots: not a number".into())),
                }
            })
            .collect::<Result<_, StoreError>>()?,
        results_paused: matches!(item.get("results_paused"), Some(AttributeValue::Bool(true))),
        held_results: a.opt_n("held_results")?.unwrap_or(0),
        members: item
            .iter()
            .filter_map(|(attr, v)| Some((attr.strip_prefix("member:")?, v)))
            .map(|(user, v)| {
                let user = UserId::parse(user).map_err(|e| StoreError::Malformed(e.to_string()))?;
                let AttributeValue::M(m) = v else {
                    return Err(StoreError::Malformed(format!("member {user}: not a map")));
                };
                Ok((user, member_from_value(m)?))
            })
            .collect::<Result<_, StoreError>>()?,
        created_at: a.instant("created_at")?,
    })
}

/// An update of the account item: expressions with their names and values.
#[derive(Debug, Default)]
pub struct AccountUpdate {
    sets: Vec<String>,
    removes: Vec<String>,
    conditions: Vec<String>,
    pub names: HashMap<String, String>,
    pub values: Item,
}

impl AccountUpdate {
    /// The placeholder of an attribute name, registered on first use
    /// (DynamoDB refuses placeholders an expression does not use).
    fn name(&mut self, name: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, n)| n.as_str() == name) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), name.to_string());
        placeholder
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    pub fn update_expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.sets.is_empty() {
            parts.push(format!("SET {}", self.sets.join(", ")));
        }
        if !self.removes.is_empty() {
            parts.push(format!("REMOVE {}", self.removes.join(", ")));
        }
        parts.join(" ")
    }

    pub fn condition_expression(&self) -> String {
        self.conditions.join(" AND ")
    }
}

/// The change from `before` (the state a decision was made on) to `after`,
/// as an update that applies only what changed, conditioned only on what
/// the decision relied on. Spends lower buckets (`remaining >= amount`),
/// purchases raise the pool (its `granted` as read, which places the pack),
/// and neither conditions on anything else: concurrent changes commute and
/// none invalidates another unless they compete for the last credits. What
/// a change replaces (a renewal's period, an expiring bucket's remainder, the
/// subscription) is conditioned on its value as read.
pub fn account_update(before: &Account, after: &Account, last_entry: &str) -> AccountUpdate {
    account_update_with(before, after, last_entry, &[])
}

/// [`account_update`] for a change that writes several entries: `earlier`
/// names those before `last_entry` with what the entries after each add per
/// meter, for the sequencer. A change of one entry removes any such list.
pub fn account_update_with(
    before: &Account,
    after: &Account,
    last_entry: &str,
    earlier: &[(String, BTreeMap<MeterId, Credits>)],
) -> AccountUpdate {
    let mut u = AccountUpdate::default();
    let pk = u.name("pk");
    u.conditions.push(format!("attribute_exists({pk})"));
    // Every change is decided within one billing period.
    let (attr, period_start) = (u.name("period_start"), u.value(s(before.period.start.to_string())));
    u.conditions.push(format!("{attr} = {period_start}"));
    if before.period != after.period {
        for (attr, value) in [
            ("period_start", s(after.period.start.to_string())),
            ("period_end", s(after.period.end.to_string())),
            ("renews_at", s(instant(after.renews_at()))),
        ] {
            let (a, v) = (u.name(attr), u.value(value));
            u.sets.push(format!("{a} = {v}"));
        }
        // A new period starts its usage afresh.
        for meter in before.used_this_period.keys() {
            if !after.used_this_period.contains_key(meter) {
                let a = u.name(&used_attr(meter));
                u.removes.push(a);
            }
        }
        for (meter, used) in &after.used_this_period {
            let (a, v) = (u.name(&used_attr(meter)), u.value(amount(*used)));
            u.sets.push(format!("{a} = {v}"));
        }
    } else {
        for meter in before.used_this_period.keys() {
            if !after.used_this_period.contains_key(meter) {
                let a = u.name(&used_attr(meter));
                u.removes.push(a);
            }
        }
        for (meter, now) in &after.used_this_period {
            let was = before.used_this_period.get(meter).copied().unwrap_or_default();
            let delta = now.thousandths() - was.thousandths();
            if delta != 0 {
                let used = u.name(&used_attr(meter));
                let (zero, d) = (u.value(n(0)), u.value(n(delta)));
                u.sets.push(format!("{used} = if_not_exists({used}, {zero}) + {d}"));
            }
        }
    }
    let (sb, sa) = (&before.subscription, &after.subscription);
    let replaced = [
        ("plan", s(sb.plan.as_str()), s(sa.plan.as_str()), sb.plan != sa.plan),
        ("seats", n(sb.seats), n(sa.seats), sb.seats != sa.seats),
        (
            "billing",
            s(sb.billing.as_str()),
            s(sa.billing.as_str()),
            sb.billing != sa.billing,
        ),
        (
            "status",
            s(before.status.as_str()),
            s(after.status.as_str()),
            before.status != after.status,
        ),
        (
            "anchor",
            s(before.anchor.to_string()),
            s(after.anchor.to_string()),
            before.anchor != after.anchor,
        ),
    ];
    for (attr, was, now, changed) in replaced {
        if changed {
            let (a, w, v) = (u.name(attr), u.value(was), u.value(now));
            u.conditions.push(format!("{a} = {w}"));
            u.sets.push(format!("{a} = {v}"));
        }
    }
    if sb.custom_monthly != sa.custom_monthly {
        let a = u.name("custom_monthly");
        match sa.custom_monthly {
            Some(c) => {
                let v = u.value(amount(c));
                u.sets.push(format!("{a} = {v}"));
            }
            None => u.removes.push(a),
        }
    }
    if before.scheduled != after.scheduled {
        // Conditioned on what was scheduled, as read.
        match &before.scheduled {
            Some(was) => {
                let (a, v) = (u.name("scheduled_plan"), u.value(s(was.plan.as_str())));
                u.conditions.push(format!("{a} = {v}"));
            }
            None => {
                let a = u.name("scheduled_plan");
                u.conditions.push(format!("attribute_not_exists({a})"));
            }
        }
        for attr in SCHEDULED_ATTRS {
            let a = u.name(attr);
            u.removes.push(a);
        }
        if let Some(next) = &after.scheduled {
            for (attr, value) in scheduled_attrs(next) {
                let a = u.name(attr);
                u.removes.retain(|r| r != &a);
                let v = u.value(value);
                u.sets.push(format!("{a} = {v}"));
            }
        }
    }
    if before.renews_on_schedule() != after.renews_on_schedule() {
        let a = u.name("renewal_shard");
        if after.renews_on_schedule() {
            let v = u.value(s(renewal_shard(&after.org)));
            u.sets.push(format!("{a} = {v}"));
        } else {
            u.removes.push(a);
        }
    }
    let mut users: Vec<&UserId> = before.members.keys().chain(after.members.keys()).collect();
    users.sort();
    users.dedup();
    for user in users {
        let (b, a) = (before.members.get(user), after.members.get(user));
        if b == a {
            continue;
        }
        let path = u.name(&member_attr(user));
        match (b, a) {
            (None, Some(a)) => {
                let v = u.value(member_value(a));
                u.conditions.push(format!("attribute_not_exists({path})"));
                u.sets.push(format!("{path} = {v}"));
            }
            (Some(b), None) => {
                let joined = u.name("joined_by");
                let was = u.value(n(b.joined_by));
                u.conditions.push(format!("{path}.{joined} = {was}"));
                u.removes.push(path);
            }
            (Some(b), Some(a))
                if b.role == a.role && b.limits == a.limits && b.usage.is_some() == a.usage.is_some() =>
            {
                count_member_usage(&mut u, &path, b, a);
            }
            (Some(b), Some(a)) => {
                // An admin's change rewrites the member, conditioned on
                // what it read of them (a spend counted meanwhile is not
                // lost: its usage no longer matches).
                let joined = u.name("joined_by");
                let jb = u.value(n(b.joined_by));
                u.conditions.push(format!("{path}.{joined} = {jb}"));
                match &b.usage {
                    Some(usage) => {
                        let (today, period) = (u.name("used_today"), u.name("used_period"));
                        let (t, p) = (u.value(amount(usage.today)), u.value(amount(usage.this_period)));
                        u.conditions.push(format!("{path}.{today} = {t}"));
                        u.conditions.push(format!("{path}.{period} = {p}"));
                    }
                    None => {
                        let day = u.name("usage_day");
                        u.conditions.push(format!("attribute_not_exists({path}.{day})"));
                    }
                }
                let v = u.value(member_value(a));
                u.sets.push(format!("{path} = {v}"));
            }
            (None, None) => {}
        }
    }
    let find = |account: &Account, id: &BucketId| account.buckets.iter().find(|b| &b.id == id).cloned();
    let mut ids: Vec<&BucketId> = before.buckets.iter().chain(&after.buckets).map(|b| &b.id).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let (b, a) = (find(before, id), find(after, id));
        if b == a {
            continue;
        }
        let path = u.name(&bucket_attr(id));
        match (b, a) {
            // Granted anew under the same id (subscribing again the day the
            // cancelled month began: that month's bucket expires and the new
            // one is the same day's): the bucket as read is replaced whole,
            // whatever its figures happen to be.
            (Some(b), Some(a))
                if a.granted_by != b.granted_by || a.granted_at != b.granted_at || a.expires_at != b.expires_at =>
            {
                let (by, was_by) = (u.name("granted_by"), u.value(n(b.granted_by)));
                let (remaining, held) = (u.name("remaining"), u.value(amount(b.remaining)));
                u.conditions.push(format!("{path}.{by} = {was_by}"));
                u.conditions.push(format!("{path}.{remaining} = {held}"));
                let v = u.value(bucket_value(&a));
                u.sets.push(format!("{path} = {v}"));
            }
            (Some(b), Some(a)) => {
                if a.granted != b.granted {
                    let granted = u.name("granted");
                    let was = u.value(amount(b.granted));
                    let d = u.value(n(a.granted.thousandths() - b.granted.thousandths()));
                    u.conditions.push(format!("{path}.{granted} = {was}"));
                    u.sets.push(format!("{path}.{granted} = {path}.{granted} + {d}"));
                }
                let draws_pool = a.remaining < b.remaining && b.source() == ledger_domain::BucketSource::Purchased;
                if a.voided != b.voided || draws_pool {
                    // Conditioned on the ranges as read: two voids at once
                    // must not lose one, and a draw must skip every range
                    // (its offset says which pack paid).
                    let voided = u.name("voided");
                    match b.voided.len() {
                        0 => u.conditions.push(format!("attribute_not_exists({path}.{voided})")),
                        n => {
                            let v = u.value(AttributeValue::N(n.to_string()));
                            u.conditions.push(format!("size({path}.{voided}) = {v}"));
                        }
                    }
                    if a.voided != b.voided {
                        let v = u.value(voided_value(&a.voided));
                        u.sets.push(format!("{path}.{voided} = {v}"));
                    }
                }
                let delta = a.remaining.thousandths() - b.remaining.thousandths();
                if delta != 0 {
                    let remaining = u.name("remaining");
                    if delta < 0 {
                        let need = u.value(n(-delta));
                        u.conditions.push(format!("{path}.{remaining} >= {need}"));
                    }
                    let d = u.value(n(delta));
                    u.sets.push(format!("{path}.{remaining} = {path}.{remaining} + {d}"));
                }
            }
            (Some(b), None) => {
                // It expires with exactly what it held when decided.
                let (remaining, held) = (u.name("remaining"), u.value(amount(b.remaining)));
                u.conditions.push(format!("{path}.{remaining} = {held}"));
                u.removes.push(path);
            }
            (None, Some(a)) => {
                let v = u.value(bucket_value(&a));
                u.conditions.push(format!("attribute_not_exists({path})"));
                u.sets.push(format!("{path} = {v}"));
            }
            (None, None) => {}
        }
    }
    // An overdraft is borrowed only while the purchased pool is empty and
    // repaid before the pool is raised: a spend drawing on it and a
    // purchase decided at once must not both commit, or credits would sit
    // in the pool while the overdraft stays owed. So a draw is conditioned
    // on the pool's grants as read, and a repayment or a purchase on what
    // the overdraft held.
    for od in after
        .buckets
        .iter()
        .filter(|b| b.source() == ledger_domain::BucketSource::Overdraft)
    {
        let Some(was) = find(before, &od.id) else { continue };
        let pool = BucketId::Purchased {
            meter: od.meter().clone(),
        };
        let (pool_before, pool_after) = (find(before, &pool), find(after, &pool));
        if od.remaining < was.remaining {
            let path = u.name(&bucket_attr(&pool));
            match &pool_before {
                Some(p) => {
                    let (granted, held) = (u.name("granted"), u.value(amount(p.granted)));
                    u.conditions.push(format!("{path}.{granted} = {held}"));
                }
                None => u.conditions.push(format!("attribute_not_exists({path})")),
            }
        }
        let pool_raised = pool_before.map(|p| p.granted) != pool_after.map(|p| p.granted);
        if od.remaining > was.remaining || pool_raised {
            let path = u.name(&bucket_attr(&od.id));
            let (remaining, held) = (u.name("remaining"), u.value(amount(was.remaining)));
            u.conditions.push(format!("{path}.{remaining} = {held}"));
        }
    }
    if before.top_up != after.top_up {
        let a = u.name("top_up");
        match &after.top_up {
            Some(t) => {
                let v = u.value(top_up_value(t));
                u.sets.push(format!("{a} = {v}"));
            }
            None => u.removes.push(a),
        }
    }
    if before.approval_above != after.approval_above {
        let a = u.name("approval_above");
        match after.approval_above {
            Some(above) => {
                let v = u.value(amount(above));
                u.sets.push(format!("{a} = {v}"));
            }
            None => u.removes.push(a),
        }
    }
    // Alerts are settings: set or removed whole (an admin's change).
    let mut alerts: Vec<&AlertId> = before.alerts.keys().chain(after.alerts.keys()).collect();
    alerts.sort();
    alerts.dedup();
    for id in alerts {
        let (b, a) = (before.alerts.get(id), after.alerts.get(id));
        if b == a {
            continue;
        }
        let path = u.name(&alert_attr(id));
        match a {
            Some(a) => {
                let v = u.value(alert_value(a));
                u.sets.push(format!("{path} = {v}"));
            }
            None => u.removes.push(path),
        }
    }
    let mut campaigns: Vec<&CampaignId> = before.budgets.keys().chain(after.budgets.keys()).collect();
    campaigns.sort();
    campaigns.dedup();
    for campaign in campaigns {
        let (b, a) = (before.budgets.get(campaign), after.budgets.get(campaign));
        if b == a {
            continue;
        }
        let path = u.name(&budget_attr(campaign));
        match (b, a) {
            (None, Some(a)) => {
                let v = u.value(budget_value(a));
                u.conditions.push(format!("attribute_not_exists({path})"));
                u.sets.push(format!("{path} = {v}"));
            }
            (Some(_), None) => {
                u.conditions.push(format!("attribute_exists({path})"));
                u.removes.push(path);
            }
            (Some(b), Some(a)) => {
                let limit = u.name("limit");
                let was = u.value(amount(b.limit));
                u.conditions.push(format!("{path}.{limit} = {was}"));
                if a.limit != b.limit {
                    let v = u.value(amount(a.limit));
                    u.sets.push(format!("{path}.{limit} = {v}"));
                }
                let d = a.spent.thousandths() - b.spent.thousandths();
                if d != 0 {
                    let spent = u.name("spent");
                    let dv = u.value(n(d));
                    // Within the budget as read, whatever others spent
                    // meanwhile; a result counted past it is not held to it
                    // (as for a member's limits).
                    if d > 0 && a.spent <= a.limit {
                        let max = u.value(n(a.limit.thousandths() - d));
                        u.conditions.push(format!("{path}.{spent} <= {max}"));
                    }
                    u.sets.push(format!("{path}.{spent} = {path}.{spent} + {dv}"));
                }
            }
            (None, None) => {}
        }
    }
    // Reserved credits move by their delta: the buckets' conditions guard them.
    let mut held: Vec<&MeterId> = before.reserved.keys().chain(after.reserved.keys()).collect();
    held.sort();
    held.dedup();
    for meter in held {
        let d = after.reserved(meter).thousandths() - before.reserved(meter).thousandths();
        if d != 0 {
            let attr = u.name(&reserved_attr(meter));
            let (zero, d) = (u.value(n(0)), u.value(n(d)));
            u.sets.push(format!("{attr} = if_not_exists({attr}, {zero}) + {d}"));
        }
    }
    // A day's count of reserved units moves by its delta, and leaves at
    // zero: a count that falls is conditioned on staying above zero, or on
    // being exactly what leaves (so no zero is ever kept, and a stale guess
    // about which applies fails its condition and is decided again).
    let mut days: Vec<&(MeterId, NaiveDate)> = before.units_due.keys().chain(after.units_due.keys()).collect();
    days.sort();
    days.dedup();
    for key in days {
        let (was, now) = (
            before.units_due.get(key).copied().unwrap_or(0),
            after.units_due.get(key).copied().unwrap_or(0),
        );
        if was == now {
            continue;
        }
        let attr = u.name(&units_due_attr(&key.0, key.1));
        if now > was {
            let (zero, d) = (u.value(n(0)), u.value(n(now - was)));
            u.sets.push(format!("{attr} = if_not_exists({attr}, {zero}) + {d}"));
        } else if now == 0 {
            let d = u.value(n(was));
            u.conditions.push(format!("{attr} = {d}"));
            u.removes.push(attr);
        } else {
            let d = u.value(n(was - now));
            u.conditions.push(format!("{attr} > {d}"));
            u.sets.push(format!("{attr} = {attr} - {d}"));
        }
    }
    // Slots move by their delta: taking them is conditioned on room for
    // them (so concurrent uploads never exceed the capacity the decision
    // saw), freeing them on their being there.
    let mut meters: Vec<&MeterId> = before.slots_used.keys().chain(after.slots_used.keys()).collect();
    meters.sort();
    meters.dedup();
    for meter in meters {
        let (was, now) = (before.slots_used(meter), after.slots_used(meter));
        if was == now {
            continue;
        }
        let slots = u.name(&slots_attr(meter));
        let zero = u.value(n(0));
        if now > was {
            // At most as many in use as the decision saw: adding keeps the
            // total within the capacity it checked.
            let (seen, d) = (u.value(n(was)), u.value(n(now - was)));
            u.conditions
                .push(format!("(attribute_not_exists({slots}) OR {slots} <= {seen})"));
            u.sets.push(format!("{slots} = if_not_exists({slots}, {zero}) + {d}"));
        } else {
            let d = u.value(n(was - now));
            u.conditions.push(format!("{slots} >= {d}"));
            u.sets.push(format!("{slots} = if_not_exists({slots}, {zero}) - {d}"));
        }
    }
    // A change that draws from buckets relied on the grants it saw: a grant
    // it missed would change which bucket pays first.
    let draws = before.buckets.iter().any(|b| {
        after
            .buckets
            .iter()
            .find(|a| a.id == b.id)
            .is_none_or(|a| a.remaining < b.remaining)
    });
    if after.grants != before.grants {
        let grants = u.name("grants");
        let (zero, d) = (u.value(n(0)), u.value(n(after.grants - before.grants)));
        u.sets.push(format!("{grants} = if_not_exists({grants}, {zero}) + {d}"));
    } else if draws {
        let (grants, was) = (u.name("grants"), u.value(n(before.grants)));
        u.conditions.push(format!("{grants} = {was}"));
    }
    // Holding and settling results: the count moves by its delta; a change
    // decided on the paused flag is conditioned on it as read (a hold must
    // not land after a resume, nor a resume after a hold).
    if after.held_results != before.held_results || after.results_paused != before.results_paused {
        let paused = u.name("results_paused");
        if before.results_paused {
            let t = u.value(AttributeValue::Bool(true));
            u.conditions.push(format!("{paused} = {t}"));
        } else {
            u.conditions.push(format!("attribute_not_exists({paused})"));
        }
        if after.results_paused {
            let t = u.value(AttributeValue::Bool(true));
            u.sets.push(format!("{paused} = {t}"));
        } else {
            u.removes.push(paused);
        }
        let held = u.name("held_results");
        if before.held_results == 0 {
            u.conditions.push(format!("attribute_not_exists({held})"));
        } else {
            let was = u.value(n(before.held_results));
            u.conditions.push(format!("{held} = {was}"));
        }
        if after.held_results == 0 {
            u.removes.push(held);
        } else {
            let v = u.value(n(after.held_results));
            u.sets.push(format!("{held} = {v}"));
        }
    }
    let (seq, count) = (u.name("seq"), u.value(n(after.seq - before.seq)));
    let (last, entry) = (u.name("last_entry"), u.value(s(last_entry)));
    u.sets.push(format!("{seq} = {seq} + {count}"));
    u.sets.push(format!("{last} = {entry}"));
    let batch = u.name("batch_entries");
    if earlier.is_empty() {
        u.removes.push(batch);
    } else {
        let list = earlier
            .iter()
            .map(|(sk, later)| {
                let mut m = HashMap::from([("sk".to_string(), s(sk.as_str()))]);
                // No empty map: DynamoDB Local's stream cannot carry one.
                if !later.is_empty() {
                    m.insert("later".to_string(), meter_amounts(later));
                }
                AttributeValue::M(m)
            })
            .collect();
        let v = u.value(AttributeValue::L(list));
        u.sets.push(format!("{batch} = {v}"));
    }
    u
}

/// The placements an account's stream image gives the entries its change
/// wrote: the account's count of entries is the last one's number, and its
/// buckets the balances right after it; a batch's earlier entries come
/// before it, each with the balances less what the entries after it added.
pub fn placement_of_account_image(image: &Item) -> Result<(OrgId, Vec<(String, Placement)>), StoreError> {
    let account = account_from_item(image)?;
    let a = Attrs::of(image, "account");
    let last_entry = a.s("last_entry")?.to_string();
    let balances = account.balances();
    let earlier: Vec<(String, BTreeMap<MeterId, Credits>)> = maps(a.list("batch_entries")?, "batch entry")
        .map(|m| {
            let m = m?;
            Ok((m.s("sk")?.to_string(), m.meter_amounts("later")?))
        })
        .collect::<Result<_, StoreError>>()?;
    let n = earlier.len() as u64;
    let mut placed = Vec::with_capacity(earlier.len() + 1);
    for (i, (sk, later)) in earlier.into_iter().enumerate() {
        let balance_after = balances
            .iter()
            .map(|(m, b)| {
                let less = later.get(m).copied().unwrap_or_default();
                (m.clone(), b.checked_sub(less).unwrap_or_default())
            })
            .collect();
        placed.push((
            sk,
            Placement {
                seq: account.seq - (n - i as u64),
                balance_after,
            },
        ));
    }
    placed.push((
        last_entry,
        Placement {
            seq: account.seq,
            balance_after: balances,
        },
    ));
    Ok((account.org, placed))
}

// ---- ledger entries --------------------------------------------------------

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Subscription => "subscription",
        EntryKind::Renewal => "renewal",
        EntryKind::Spend => "spend",
        EntryKind::Purchase => "purchase",
        EntryKind::Cancellation => "cancellation",
        EntryKind::PlanChange => "plan_change",
        EntryKind::Membership => "membership",
        EntryKind::Controls => "controls",
        EntryKind::Approval => "approval",
        EntryKind::Outcome => "outcome",
        EntryKind::Result => "result",
        EntryKind::Reversal => "reversal",
        EntryKind::SlotsHeld => "slots_held",
        EntryKind::Reservation => "reservation",
        EntryKind::SlotsFreed => "slots_freed",
        EntryKind::ResultHeld => "result_held",
        EntryKind::ResultsResumed => "results_resumed",
    }
}

fn kind_of(text: &str) -> Option<EntryKind> {
    Some(match text {
        "subscription" => EntryKind::Subscription,
        "renewal" => EntryKind::Renewal,
        "spend" => EntryKind::Spend,
        "purchase" => EntryKind::Purchase,
        "cancellation" => EntryKind::Cancellation,
        "plan_change" => EntryKind::PlanChange,
        "membership" => EntryKind::Membership,
        "controls" => EntryKind::Controls,
        "approval" => EntryKind::Approval,
        "outcome" => EntryKind::Outcome,
        "result" => EntryKind::Result,
        "reversal" => EntryKind::Reversal,
        "slots_held" => EntryKind::SlotsHeld,
        "reservation" => EntryKind::Reservation,
        "slots_freed" => EntryKind::SlotsFreed,
        "result_held" => EntryKind::ResultHeld,
        "results_resumed" => EntryKind::ResultsResumed,
        _ => return None,
    })
}

pub(crate) fn caller_name(caller: CallerKind) -> &'static str {
    match caller {
        CallerKind::Admin => "admin",
        CallerKind::Member => "member",
        CallerKind::Service => "service",
        CallerKind::System => "system",
    }
}

pub(crate) fn caller_of(text: &str) -> Option<CallerKind> {
    Some(match text {
        "admin" => CallerKind::Admin,
        "member" => CallerKind::Member,
        "service" => CallerKind::Service,
        "system" => CallerKind::System,
        _ => return None,
    })
}

/// The user-filter index's partition: one organization's user.
pub fn ledger_user(org: &OrgId, user: &str) -> String {
    format!("{org}#{user}")
}

/// The action-filter index's partition: one organization's action.
pub fn ledger_action(org: &OrgId, action: &str) -> String {
    format!("{org}#{action}")
}

/// The campaign-filter index's partition: one organization's campaign.
pub fn ledger_campaign(org: &OrgId, campaign: &str) -> String {
    format!("{org}#{campaign}")
}

/// The history indexes' sort key: when the entry's change was decided,
/// then its number. Time ranges are key conditions on it; entries of one
/// instant keep their ledger order. Written once the entry is placed.
pub fn placed_key(at: DateTime<Utc>, seq: u64) -> String {
    format!("{}#{seq:020}", instant(at))
}

/// Whether a sort key names a ledger entry's item (a request's or a renewal's).
pub fn is_entry_sk(sk: &str) -> bool {
    sk.starts_with("REQ#") || sk.starts_with("RENEWAL#")
}

/// The organization an item of its partition belongs to.
pub fn org_of_image(image: &Item) -> Result<OrgId, StoreError> {
    let pk = Attrs::of(image, "item").s("pk")?;
    pk.strip_prefix("ORG#")
        .and_then(|o| OrgId::parse(o).ok())
        .ok_or_else(|| StoreError::Malformed(format!("partition {pk}")))
}

/// When an account's last change was decided (`last_at`), from its image:
/// its entries' time, for the sequencer to key them by.
pub fn change_time(image: &Item) -> Result<Option<DateTime<Utc>>, StoreError> {
    Attrs::of(image, "account").opt_parsed("last_at", parse_instant)
}

/// An entry item: the entry with its filterable fields top-level (time,
/// kind, user, action, campaign, subject), its index keys, and the receipt
/// of the request that wrote it.
pub fn entry_item(org: &OrgId, key: &EntryKey, e: &LedgerEntry, receipt: Option<&Receipt>) -> Item {
    let mut item = self::key(org_pk(org), entry_sk(key));
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_string(), v);
    };
    put("ledger_org", s(org.as_str()));
    put("at", s(instant(e.at)));
    put("kind", s(kind_name(e.kind)));
    put("caller", s(caller_name(e.actor.caller)));
    if let Some(user) = &e.actor.user {
        put("user", s(user.as_str()));
        put("ledger_user", s(ledger_user(org, user.as_str())));
    }
    let mut opt = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            item.insert(k.to_string(), s(v));
        }
    };
    opt("action", e.action.as_ref().map(|x| x.to_string()));
    opt("campaign", e.campaign.as_ref().map(|x| x.to_string()));
    opt(
        "ledger_action",
        e.action.as_ref().map(|x| ledger_action(org, x.as_str())),
    );
    opt(
        "ledger_campaign",
        e.campaign.as_ref().map(|x| ledger_campaign(org, x.as_str())),
    );
    opt("subject", e.subject.as_ref().map(|x| x.as_str().to_string()));
    opt("plan", e.plan.as_ref().map(|x| x.to_string()));
    opt("member", e.member.as_ref().map(|x| x.to_string()));
    opt("result", e.result.clone());
    opt("reverses", e.reverses.clone());
    opt("note", e.note.clone());
    if !e.subjects.is_empty() {
        let list = e.subjects.iter().map(|x| s(x.as_str())).collect();
        item.insert("subjects".into(), AttributeValue::L(list));
    }
    if let Some(q) = e.quantity {
        item.insert("quantity".into(), n(q));
    }
    if let Some(q) = e.requested {
        item.insert("requested".into(), n(q));
    }
    if let Some(p) = &e.purchase {
        let mut m = HashMap::from([
            ("credits".to_string(), amount(p.credits)),
            ("price_cents".to_string(), n(p.price_cents)),
            ("currency".to_string(), s(p.currency.clone())),
            ("payment_reference".to_string(), s(p.payment_reference.clone())),
        ]);
        if let Some(pkg) = &p.package {
            m.insert("package".into(), s(pkg.as_str()));
        }
        item.insert("purchase".into(), AttributeValue::M(m));
    }
    let lines = e
        .lines
        .iter()
        .map(|l| {
            let mut m = HashMap::from([
                ("bucket".to_string(), s(l.bucket.to_string())),
                ("amount".to_string(), amount(l.amount)),
            ]);
            if let Some(o) = l.offset {
                m.insert("offset".into(), amount(o));
            }
            AttributeValue::M(m)
        })
        .collect();
    item.insert("lines".into(), AttributeValue::L(lines));
    if let Some(p) = &e.placement {
        item.extend(placement_attrs(p, Some(e.at)));
    }
    if let Some(r) = receipt {
        put_receipt(&mut item, r);
    }
    item
}

fn put_receipt(item: &mut Item, r: &Receipt) {
    item.insert("fingerprint".into(), s(r.fingerprint.clone()));
    item.insert("outcome".into(), s(r.outcome.clone()));
}

/// What the sequencer adds to an entry: its number (which also puts it in
/// the `ledger` indexes) and the balances right after it.
pub fn placement_attrs(p: &Placement, at: Option<DateTime<Utc>>) -> Item {
    let mut item = HashMap::from([
        ("seq".to_string(), n(p.seq)),
        ("balance_after".to_string(), meter_amounts(&p.balance_after)),
    ]);
    if let Some(at) = at {
        item.insert("placed".to_string(), s(placed_key(at, p.seq)));
    }
    item
}

pub fn entry_from_item(item: &Item) -> Result<LedgerEntry, StoreError> {
    let a = Attrs::of(item, "entry");
    let placement = match a.opt_n::<u64>("seq")? {
        None => None,
        Some(seq) => Some(Placement {
            seq,
            balance_after: a.meter_amounts("balance_after")?,
        }),
    };
    let lines = maps(a.list("lines")?, "entry line")
        .map(|l| {
            let l = l?;
            Ok(EntryLine {
                bucket: l.parsed("bucket", |t| BucketId::parse(t).ok())?,
                amount: l.credits("amount")?,
                offset: l.opt_credits("offset")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let purchase = match a.opt_map("purchase")? {
        None => None,
        Some(m) => {
            let p = Attrs::of(m, "purchase");
            Some(PurchaseRecord {
                package: p.opt_parsed("package", |t| ledger_domain::PackageId::parse(t).ok())?,
                credits: p.credits("credits")?,
                price_cents: p.n("price_cents")?,
                currency: p.s("currency")?.to_string(),
                payment_reference: p.s("payment_reference")?.to_string(),
            })
        }
    };
    Ok(LedgerEntry {
        id: entry_id(a.s("sk")?),
        placement,
        at: a.instant("at")?,
        kind: a.parsed("kind", kind_of)?,
        actor: Actor {
            user: a.opt_parsed("user", |t| ledger_domain::UserId::parse(t).ok())?,
            caller: a.parsed("caller", caller_of)?,
        },
        action: a.opt_parsed("action", |t| ledger_domain::ActionId::parse(t).ok())?,
        quantity: a.opt_n("quantity")?,
        requested: a.opt_n("requested")?,
        campaign: a.opt_parsed("campaign", |t| ledger_domain::CampaignId::parse(t).ok())?,
        subject: a.opt_parsed("subject", |t| ledger_domain::Subject::parse(t).ok())?,
        plan: a.opt_parsed("plan", |t| ledger_domain::PlanId::parse(t).ok())?,
        member: a.opt_parsed("member", |t| UserId::parse(t).ok())?,
        result: a.opt_s("result")?.map(str::to_string),
        reverses: a.opt_s("reverses")?.map(str::to_string),
        note: a.opt_s("note")?.map(str::to_string),
        subjects: a
            .list("subjects")?
            .iter()
            .map(|v| match v {
                AttributeValue::S(t) => Subject::parse(t).map_err(|e| StoreError::Malformed(e.to_string())),
                _ => Err(StoreError::Malformed("entry subjects: not strings".into())),
            })
            .collect::<Result<_, _>>()?,
        purchase,
        lines,
    })
}

// ---- request keys ------------------------------------------------------------

/// An answer that wrote nothing (a refusal, nothing to change) kept under
/// its request key: no entry, gone after a while (TTL).
pub fn answer_item(org: &OrgId, key: &IdempotencyKey, receipt: &Receipt, expires_at: DateTime<Utc>) -> Item {
    let mut item = self::key(org_pk(org), request_sk(key));
    put_receipt(&mut item, receipt);
    item.insert("expires_at_epoch".into(), n(expires_at.timestamp()));
    item
}

/// What a request key's item holds: the receipt, and the entry if the
/// request wrote one. `None` for an entry without a receipt (a renewal).
pub fn kept_request_from_item(item: &Item) -> Result<Option<KeptRequest>, StoreError> {
    let a = Attrs::of(item, "request");
    let (Some(fingerprint), Some(outcome)) = (a.opt_s("fingerprint")?, a.opt_s("outcome")?) else {
        return Ok(None);
    };
    let entry = if item.contains_key("kind") {
        Some(entry_from_item(item)?)
    } else {
        None
    };
    Ok(Some(KeptRequest {
        receipt: Receipt {
            fingerprint: fingerprint.to_string(),
            outcome: outcome.to_string(),
        },
        entry,
    }))
}

// ---- unlocked subjects and held results ----------------------------------------

pub fn unlock_sk(action: &ActionId, subject: &Subject) -> String {
    format!("SUBJECT#{action}#{}", subject.as_str())
}

pub fn slot_sk(meter: &MeterId, contact: &Subject) -> String {
    format!("SLOT#{meter}#{}", contact.as_str())
}

/// Where a campaign's units start in the organization's partition.
pub fn unit_prefix(campaign: &CampaignId) -> String {
    format!("UNIT#{campaign}#")
}

pub fn unit_sk(campaign: &CampaignId, contact: &Subject) -> String {
    format!("{}{}", unit_prefix(campaign), contact.as_str())
}

pub fn unit_item(org: &OrgId, unit: &Unit) -> Item {
    let mut item = key(org_pk(org), unit_sk(&unit.campaign, &unit.contact));
    let draws = unit
        .draws
        .iter()
        .map(|(b, c)| {
            AttributeValue::M(HashMap::from([
                ("bucket".to_string(), s(b.to_string())),
                ("amount".to_string(), amount(*c)),
            ]))
        })
        .collect();
    item.insert("campaign".into(), s(unit.campaign.as_str()));
    item.insert("contact".into(), s(unit.contact.as_str()));
    item.insert("action".into(), s(unit.action.as_str()));
    item.insert("meter".into(), s(unit.meter.as_str()));
    item.insert("unit_state".into(), s(unit.state.as_str()));
    item.insert("draws".into(), AttributeValue::L(draws));
    item.insert("deadline".into(), s(instant(unit.deadline)));
    // In the deadline index only while reserved.
    if unit.state == UnitState::Reserved {
        item.insert("unit_shard".into(), s(unit_shard(org)));
    }
    item
}

/// Which unit a deadline-index key names: (org, campaign, contact).
pub fn unit_of_key(item: &Item) -> Result<(OrgId, CampaignId, Subject), StoreError> {
    let a = Attrs::of(item, "due unit");
    let bad = || StoreError::Malformed("due unit keys".into());
    let org = a
        .s("pk")?
        .strip_prefix("ORG#")
        .and_then(|o| OrgId::parse(o).ok())
        .ok_or_else(bad)?;
    // Campaign ids have no `#`; a contact may.
    let (campaign, contact) = a
        .s("sk")?
        .strip_prefix("UNIT#")
        .and_then(|r| r.split_once('#'))
        .ok_or_else(bad)?;
    Ok((
        org,
        CampaignId::parse(campaign).map_err(|_| bad())?,
        Subject::parse(contact).map_err(|_| bad())?,
    ))
}

pub fn unit_from_item(item: &Item) -> Result<Unit, StoreError> {
    let a = Attrs::of(item, "reservation unit");
    let bad = |e: ledger_domain::DomainError| StoreError::Malformed(e.to_string());
    Ok(Unit {
        campaign: CampaignId::parse(a.s("campaign")?).map_err(bad)?,
        contact: Subject::parse(a.s("contact")?).map_err(bad)?,
        action: ActionId::parse(a.s("action")?).map_err(bad)?,
        meter: MeterId::parse(a.s("meter")?).map_err(bad)?,
        state: a.parsed("unit_state", UnitState::parse)?,
        draws: maps(a.list("draws")?, "unit draw")
            .map(|d| {
                let d = d?;
                let bucket = BucketId::parse(d.s("bucket")?).map_err(bad)?;
                Ok((bucket, d.credits("amount")?))
            })
            .collect::<Result<_, StoreError>>()?,
        deadline: a.instant("deadline")?,
    })
}

pub fn held_sk(seq: u64) -> String {
    // Zero-padded: held results sort in arrival order.
    format!("HELD#{seq:020}")
}

pub fn unlock_item(
    org: &OrgId,
    action: &ActionId,
    subject: &Subject,
    until: Option<DateTime<Utc>>,
    entry_id: &str,
) -> Item {
    let mut item = key(org_pk(org), unlock_sk(action, subject));
    item.insert("entry".into(), s(entry_id));
    if let Some(until) = until {
        item.insert("unlocked_until".into(), s(instant(until)));
    }
    item
}

pub fn unlock_from_item(item: &Item) -> Result<Unlock, StoreError> {
    let a = Attrs::of(item, "unlocked subject");
    Ok(Unlock {
        until: a.opt_parsed("unlocked_until", parse_instant)?,
        entry_id: a.s("entry")?.to_string(),
    })
}

pub fn held_item(org: &OrgId, seq: u64, report: &str) -> Item {
    let mut item = key(org_pk(org), held_sk(seq));
    item.insert("report".into(), s(report));
    item
}

pub fn held_from_item(item: &Item) -> Result<HeldResult, StoreError> {
    let a = Attrs::of(item, "held result");
    let sk = a.s("sk")?;
    let seq = sk
        .strip_prefix("HELD#")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Malformed(format!("held result key {sk}")))?;
    Ok(HeldResult {
        seq,
        report: a.s("report")?.to_string(),
    })
}

// ---- usage rollups -----------------------------------------------------------

pub fn rollup_sk(day: NaiveDate) -> String {
    format!("ROLLUP#{day}")
}

/// The mark that an entry is in its day's rollup.
pub fn rolled_sk(entry_sk: &str) -> String {
    format!("ROLLED#{entry_sk}")
}

/// A day's rollup: every counter (`<group>/<value>/<meter or entries>`).
pub fn rollup_from_item(item: &Item) -> Result<(NaiveDate, BTreeMap<String, i64>), StoreError> {
    let a = Attrs::of(item, "rollup");
    let sk = a.s("sk")?;
    let day = sk
        .strip_prefix("ROLLUP#")
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| StoreError::Malformed(format!("rollup key {sk}")))?;
    let counters = item
        .iter()
        .filter(|(name, _)| name.contains('/'))
        .map(|(name, v)| match v {
            AttributeValue::N(t) => t
                .parse()
                .map(|n| (name.clone(), n))
                .map_err(|_| StoreError::Malformed(format!("rollup counter {name}"))),
            _ => Err(StoreError::Malformed(format!("rollup counter {name}"))),
        })
        .collect::<Result<_, _>>()?;
    Ok((day, counters))
}

// ---- notifications ---------------------------------------------------------

pub fn note_sk(id: &str) -> String {
    format!("NOTE#{id}")
}

pub fn note_item(org: &OrgId, note: &Notification) -> Item {
    let mut item = key(org_pk(org), note_sk(&note.id));
    item.insert("alert".into(), s(note.alert.as_str()));
    item.insert("meter".into(), s(note.meter.as_str()));
    item.insert("channel".into(), s(note.channel.as_str()));
    item.insert("level".into(), amount(note.level));
    item.insert("left".into(), amount(note.left));
    item.insert("entry_seq".into(), n(note.entry_seq));
    item.insert("entry".into(), s(&note.entry));
    item.insert("at".into(), s(instant(note.at)));
    item.insert("read".into(), AttributeValue::Bool(note.read));
    item.insert("published".into(), AttributeValue::Bool(note.published));
    item
}

pub fn note_from_item(item: &Item) -> Result<Notification, StoreError> {
    let a = Attrs::of(item, "notification");
    let sk = a.s("sk")?;
    let flag = |name: &str| matches!(item.get(name), Some(AttributeValue::Bool(true)));
    Ok(Notification {
        id: sk
            .strip_prefix("NOTE#")
            .ok_or_else(|| StoreError::Malformed(format!("notification key {sk}")))?
            .to_string(),
        alert: AlertId::parse(a.s("alert")?).map_err(|e| StoreError::Malformed(e.to_string()))?,
        meter: MeterId::parse(a.s("meter")?).map_err(|e| StoreError::Malformed(e.to_string()))?,
        channel: a.parsed("channel", Channel::parse)?,
        level: a.credits("level")?,
        left: a.credits("left")?,
        entry_seq: a.n("entry_seq")?,
        entry: a.s("entry")?.to_string(),
        at: a.instant("at")?,
        read: flag("read"),
        published: flag("published"),
    })
}

// ---- claims --------------------------------------------------------------------

pub fn claim_item(name: &str, org: &OrgId, claimed_by: &IdempotencyKey) -> Item {
    let mut item = key(claim_pk(name), "CLAIM".into());
    item.insert("org".into(), s(org.as_str()));
    item.insert("claimed_by".into(), s(claimed_by.as_str()));
    item
}

pub fn claim_from_item(item: &Item) -> Result<(OrgId, IdempotencyKey), StoreError> {
    let a = Attrs::of(item, "claim");
    Ok((
        a.parsed("org", |t| OrgId::parse(t).ok())?,
        a.parsed("claimed_by", |t| IdempotencyKey::parse(t).ok())?,
    ))
}

/// The size DynamoDB bills an item at: attribute names plus values.
pub fn item_size(item: &Item) -> usize {
    fn value_size(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len().div_ceil(2) + 1,
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
            AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ledger_domain::{Catalog, PurchaseGrant, SpendMode, SpendRequest};
    use std::collections::BTreeMap;

    fn account() -> (Catalog, Account, Vec<LedgerEntry>) {
        let catalog = Catalog::default_catalog();
        let sub = Subscription::new(&catalog, "per_seat_1500", Some(2), Some(Billing::Annual), None).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 10, 11, 12).unwrap();
        let admin = Actor {
            user: Some(ledger_domain::UserId::parse("alice").unwrap()),
            caller: CallerKind::Admin,
        };
        let (mut account, first) =
            Account::provision(OrgId::parse("acme").unwrap(), sub, &catalog, admin.clone(), now).unwrap();
        let grant = PurchaseGrant::priced(&catalog, Some("credits_500"), None, "pi_1").unwrap();
        let bought = account.purchase(grant, admin.clone(), now).unwrap();
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: 3_001,
            mode: SpendMode::All,
            actor: admin,
            campaign: Some(ledger_domain::CampaignId::parse("c1").unwrap()),
            subject: Some(ledger_domain::Subject::parse("a@b.co").unwrap()),
        };
        let (_, spent) = account.spend(&req, now).unwrap();
        (catalog, account, vec![first, bought, spent])
    }

    #[test]
    fn accounts_and_entries_read_back_what_was_written() {
        let (_, account, entries) = account();
        assert_eq!(account_from_item(&account_item(&account, "REQ#k")).unwrap(), account);
        let receipt = Receipt {
            fingerprint: "f".into(),
            outcome: "{}".into(),
        };
        for (i, mut e) in entries.into_iter().enumerate() {
            let key = EntryKey::Request(IdempotencyKey::parse(&format!("k{i}")).unwrap());
            e.id = key.entry_id();
            if i == 0 {
                e.placement = Some(Placement {
                    seq: 1,
                    balance_after: BTreeMap::from([(MeterId::parse("credits").unwrap(), Credits::whole(3_000))]),
                });
            }
            let item = entry_item(&account.org, &key, &e, Some(&receipt));
            assert_eq!(entry_from_item(&item).unwrap(), e);
            let kept = kept_request_from_item(&item).unwrap().unwrap();
            assert_eq!((kept.receipt, kept.entry), (receipt.clone(), Some(e)));
            assert_eq!(entry_sk_of_id(&key.entry_id()), Some(format!("REQ#k{i}")));
        }
        assert_eq!(entry_sk_of_id("ent_bm9wZQ"), None, "an id naming no entry");
        assert_eq!(entry_sk_of_id("nope"), None);
    }

    #[test]
    fn filterable_fields_are_top_level() {
        let (_, account, entries) = account();
        let key = EntryKey::Request(IdempotencyKey::parse("k").unwrap());
        let item = entry_item(&account.org, &key, &entries[2], None);
        for name in [
            "at",
            "kind",
            "user",
            "action",
            "campaign",
            "subject",
            "ledger_org",
            "ledger_user",
        ] {
            assert!(
                matches!(item.get(name), Some(AttributeValue::S(_) | AttributeValue::N(_))),
                "{name}"
            );
        }
        assert_eq!(item["ledger_user"], s("acme#alice"));
        assert!(
            !item.contains_key("seq"),
            "placed by the sequencer, not guessed by the writer"
        );
    }

    #[test]
    fn a_stored_account_names_its_renewal_for_the_index() {
        let (_, account, _) = account();
        let item = account_item(&account, "REQ#k");
        assert_eq!(item["renews_at"], s("2026-04-30T00:00:00.000000Z"));
        assert!(matches!(&item["renewal_shard"], AttributeValue::S(t) if t.starts_with("RENEWAL#")));
    }

    #[test]
    fn a_spend_updates_only_the_buckets_it_draws_on_what_they_hold() {
        let (catalog, before, _) = account();
        let mut after = before.clone();
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: 2,
            mode: SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        after
            .spend(&req, Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap())
            .unwrap();
        let u = account_update(&before, &after, "REQ#s");
        // What the spend drew on, the pool's voided ranges it skipped (none),
        // and the grants it saw (a grant it missed could change which
        // bucket pays first); nothing else is read. The plan's 3,000 went
        // to the helper's spend: the pool pays.
        let plan = "bucket:purchased:credits";
        assert_eq!(
            shown(&u, &u.condition_expression()),
            format!(
                "attribute_exists(pk) AND period_start = 2026-03-31 AND attribute_not_exists({plan}.voided) AND {plan}.remaining >= 2000 AND grants = {}",
                before.grants
            )
        );
        assert_eq!(
            shown(&u, &u.update_expression()),
            format!(
                "SET used:credits = if_not_exists(used:credits, 0) + 2000, {plan}.remaining = {plan}.remaining + -2000, seq = seq + 1, last_entry = REQ#s REMOVE batch_entries"
            )
        );
    }

    /// An update's expression with its placeholders replaced by what they
    /// stand for.
    fn shown(u: &AccountUpdate, text: &str) -> String {
        let named = u.names.iter().fold(text.to_string(), |t, (placeholder, name)| {
            t.replace(placeholder.as_str(), name)
        });
        u.values.iter().fold(named, |t, (placeholder, v)| {
            let shown = match v {
                AttributeValue::S(x) | AttributeValue::N(x) => x.clone(),
                _ => "{..}".into(),
            };
            t.replace(placeholder.as_str(), &shown)
        })
    }

    #[test]
    fn borrowing_and_purchasing_at_once_cannot_both_commit() {
        // The pool holds 499 of its 500; the overdraft allows 100.
        let (catalog, mut before, _) = account();
        let now = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let meter = ledger_domain::credits_meter();
        before
            .set_overdraft(&meter, Credits::whole(100), Actor::system(), now)
            .unwrap();
        let (action_id, action) = catalog.action("ai_email_generation").unwrap();
        let req = SpendRequest {
            action_id,
            action,
            quantity: 500,
            mode: SpendMode::All,
            actor: Actor::system(),
            campaign: None,
            subject: None,
        };
        let mut borrowed = before.clone();
        borrowed.spend(&req, now).unwrap();
        let u = account_update(&before, &borrowed, "REQ#s");
        let conditions = shown(&u, &u.condition_expression());
        assert!(
            conditions.contains("bucket:overdraft:credits.remaining >= 1000")
                && conditions.contains("bucket:purchased:credits.granted = 500000"),
            "a draw on the overdraft holds only while no pack came in: {conditions}"
        );
        let mut bought = borrowed.clone();
        let grant = PurchaseGrant::priced(&catalog, Some("credits_500"), None, "pi_2").unwrap();
        bought.purchase(grant, Actor::system(), now).unwrap();
        let u = account_update(&borrowed, &bought, "REQ#p");
        let conditions = shown(&u, &u.condition_expression());
        assert!(
            conditions.contains("bucket:overdraft:credits.remaining = 99000"),
            "a repayment holds only while the debt is what was read: {conditions}"
        );
        // With nothing owed a purchase still checks that nothing was borrowed meanwhile.
        let mut again = bought.clone();
        let grant = PurchaseGrant::priced(&catalog, Some("credits_500"), None, "pi_3").unwrap();
        again.purchase(grant, Actor::system(), now).unwrap();
        let u = account_update(&bought, &again, "REQ#q");
        assert!(shown(&u, &u.condition_expression()).contains("bucket:overdraft:credits.remaining = 100000"));
    }

    #[test]
    fn the_sequencer_reads_an_entrys_place_from_the_account_image() {
        let (_, account, _) = account();
        let (org, placed) = placement_of_account_image(&account_item(&account, "REQ#k3")).unwrap();
        let (last, placement) = &placed[0];
        assert_eq!(
            (org, placed.len(), last.as_str(), placement.seq),
            (account.org.clone(), 1, "REQ#k3", 3)
        );
        assert_eq!(placement.balance_after, account.balances());
    }

    #[test]
    fn a_batchs_earlier_entries_are_placed_before_its_last_with_their_own_balances() {
        let (_, account, _) = account();
        let mut item = account_item(&account, "REQ#c");
        let credits = ledger_domain::credits_meter();
        let u = account_update_with(
            &account,
            &account,
            "REQ#c",
            &[
                ("REQ#a".into(), BTreeMap::from([(credits.clone(), Credits::whole(-10))])),
                ("REQ#b".into(), BTreeMap::from([(credits.clone(), Credits::whole(-5))])),
            ],
        );
        let (placeholder, _) = u.names.iter().find(|(_, n)| *n == "batch_entries").unwrap();
        let value = u
            .update_expression()
            .split(", ")
            .find_map(|part| part.strip_prefix(&format!("{placeholder} = ")).map(str::to_string))
            .unwrap();
        item.insert("batch_entries".into(), u.values[value.trim()].clone());
        let (_, placed) = placement_of_account_image(&item).unwrap();
        let seen: Vec<(&str, u64, Credits)> = placed
            .iter()
            .map(|(sk, p)| (sk.as_str(), p.seq, p.balance_after[&credits]))
            .collect();
        let now = account.available(&credits);
        let plus = |c: i64| now.checked_add(Credits::whole(c)).unwrap();
        assert_eq!(
            seen,
            vec![("REQ#a", 1, plus(10)), ("REQ#b", 2, plus(5)), ("REQ#c", 3, now)]
        );
    }
}
