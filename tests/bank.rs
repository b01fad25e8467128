//! The bank test, in the style of Jepsen's: many clients at once over a few
//! organizations, mixing every kind of change the ledger takes, through the
//! real handlers, while AWS's faults are injected: DynamoDB throttling and
//! transaction conflicts, writes that commit while their function is cut
//! off before answering, clients that time out and retry with the same key,
//! results delivered twice and out of order, stream records redelivered
//! and shuffled, two sweeps at once and one cut off. The clock moves over a
//! month while they run, so every organization renews mid-workload. Admins
//! move limits and budgets under their members' spends, leads take and free
//! slots, and one organization stays lean enough to run dry.
//!
//! After quiescence a checker reads everything back and verifies the
//! invariants; it prints its figures and fails on any violation.
//! `make test` runs a short workload; `make bank` a long one
//! (`BANK_CLIENTS`, `BANK_OPS` per client, `BANK_ORGS`; `BANK_FAULTS` scales
//! the fault rates, `BANK_LOG` traces the service, `BANK_DUMP` names a
//! directory to write each organization's balance and entries to).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use common::*;
use ledger_domain::{Clock, IdempotencyKey};
use ledger_local::faults::{FaultRates, Faults};
use ledger_local::gateway::Gateway;
use ledger_store::EntryKey;
use serde_json::{json, Value};

/// How long a client waits for an answer before it gives up on the call
/// and retries it (a write whose answer was lost hangs until then).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the results function may run (its timeout): a batch whose
/// write committed but whose answer was lost runs until then.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per call before a client reports it unanswered.
const ATTEMPTS: usize = 12;
/// Reveals and phone lookups are asked of these subjects, so colleagues,
/// bulk spends and results race for the same ones.
const SUBJECTS: usize = 40;
/// Leads the clients upload and delete, per organization: few enough
/// that they race for the same ones.
const LEADS: usize = 30;
/// How far below zero the lean organization may go.
const OVERDRAFT: &str = "30";
/// A low-balance alert's level: crossed again and again as purchases refill.
const ALERT_LEVEL: i64 = 300_000;

struct Settings {
    orgs: usize,
    clients: usize,
    ops: usize,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Settings {
            orgs: var("BANK_ORGS", 3),
            clients: var("BANK_CLIENTS", 8),
            ops: var("BANK_OPS", 20),
        }
    }
}

/// What callers were told for one Idempotency-Key.
#[derive(Clone, Default)]
struct Sent {
    org: String,
    route: String,
    /// Every answer, retries and replays included: (status, entry id).
    answers: Vec<(u16, Option<String>)>,
}

/// A result message on the (modelled) results queue.
#[derive(Clone)]
struct Message {
    id: String,
    body: String,
    receives: u32,
}

#[derive(Default)]
struct ResultsQueue {
    visible: Vec<Message>,
    /// Delivered and deleted: SQS may still deliver them again.
    done: Vec<Message>,
    dead: Vec<Message>,
    delivered: u64,
    duplicated: u64,
    failed_batches: u64,
}

/// Results put on the queue: well-formed ones by organization, and the
/// malformed ones (which must end in the dead-letter queue).
#[derive(Default)]
struct Reported {
    wellformed: BTreeMap<String, Vec<String>>,
    malformed: BTreeSet<String>,
}

#[derive(Default)]
struct Figures {
    ops: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<u16, u64>,
    client_timeouts: u64,
    cut_short: u64,
    contention_retries: u64,
    sweeps: u64,
    sweeps_cut_off: u64,
}

struct World {
    stack: Stack,
    faults: Faults,
    orgs: Vec<String>,
    keys: Mutex<BTreeMap<String, Sent>>,
    /// Charges a void may reverse, and packs a refund may void: (org, entry).
    spends: Mutex<Vec<(String, String)>>,
    packs: Mutex<Vec<(String, String)>>,
    /// Reservation units as their clients left them: (org, contact) → state.
    units: Mutex<BTreeMap<(String, String), &'static str>>,
    /// Well-formed result request ids by organization, and malformed ones.
    results: Mutex<Reported>,
    queue: Mutex<ResultsQueue>,
    figures: Mutex<Figures>,
    violations: Mutex<Vec<String>>,
    done_ops: AtomicUsize,
    /// What each client is doing now (for a long run's progress lines).
    doing: Mutex<BTreeMap<usize, String>>,
    /// What the background task (clock, sweeps, stream) is doing now.
    stage: Mutex<&'static str>,
}

impl World {
    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }

    fn count(&self, op: &'static str) {
        *self.figures.lock().unwrap().ops.entry(op).or_default() += 1;
    }

    /// A function instance meeting the faults.
    fn instance(&self) -> Gateway {
        self.stack
            .gateway_on(self.stack.ledger_on(self.faults.client(&self.stack.config)))
    }

    fn token(&self, org: &str, who: Caller) -> String {
        let ttl = 6 * 3600;
        match who {
            Caller::Admin => self.stack.authority.user_token(org, "alice", "admin", ttl),
            Caller::Member => self.stack.authority.user_token(org, "bob", "member", ttl),
            Caller::Service => self.stack.authority.service_token("product-backend", ttl),
        }
    }

    /// One call as a client makes it: on a timeout (its own, or a function
    /// cut off) or a 503 it retries with the same key and body on a fresh
    /// function instance; every answer is kept under the key.
    async fn request(
        &self,
        gateway: &mut Gateway,
        org: &str,
        who: Caller,
        (method, route): (&str, &str),
        key: Option<&str>,
        body: Option<Value>,
    ) -> HttpReply {
        let path = format!("/v1/orgs/{org}/{route}");
        let token = self.token(org, who);
        let body = body.map(|b| b.to_string());
        for attempt in 0..ATTEMPTS {
            // Now and then a client gives up almost at once: the call may be
            // cut anywhere, before or after its write.
            let cut_short = attempt == 0 && fastrand::f64() < 0.04;
            let wait = match cut_short {
                true => Duration::from_millis(fastrand::u64(1..30)),
                false => CLIENT_TIMEOUT,
            };
            let call = call(gateway, method, &path, Some(&token), key, body.as_deref());
            match tokio::time::timeout(wait, call).await {
                Err(_) => {
                    let mut f = self.figures.lock().unwrap();
                    match cut_short {
                        true => f.cut_short += 1,
                        false => f.client_timeouts += 1,
                    }
                    drop(f);
                    *gateway = self.instance();
                }
                Ok(reply) => {
                    *self.figures.lock().unwrap().statuses.entry(reply.status).or_default() += 1;
                    if let Some(key) = key {
                        let mut keys = self.keys.lock().unwrap();
                        let sent = keys.entry(key.to_string()).or_default();
                        sent.org = org.to_string();
                        sent.route = route.to_string();
                        sent.answers.push((reply.status, entry_id(&reply.body)));
                    }
                    if reply.status == 503 {
                        self.figures.lock().unwrap().contention_retries += 1;
                        tokio::time::sleep(Duration::from_millis(fastrand::u64(5..40))).await;
                        continue;
                    }
                    if reply.status >= 500 {
                        self.violation(format!(
                            "{method} {path} ({key:?}, {}): {} {}",
                            body.as_deref().unwrap_or_default(),
                            reply.status,
                            reply.body
                        ));
                    }
                    return reply;
                }
            }
        }
        self.violation(format!("{method} {path} ({key:?}): no answer in {ATTEMPTS} attempts"));
        HttpReply {
            status: 0,
            body: Value::Null,
            content_type: String::new(),
            replayed: false,
        }
    }

    /// Expects one of `statuses`, else records a violation.
    fn expect(&self, what: &str, reply: &HttpReply, statuses: &[u16]) -> bool {
        let ok = statuses.contains(&reply.status);
        if !ok && reply.status != 0 {
            self.violation(format!("{what}: {} {}", reply.status, reply.body));
        }
        ok
    }
}

/// The entry an answer names (`entry_id`, or the whole `entry`).
fn entry_id(body: &Value) -> Option<String> {
    body["entry_id"]
        .as_str()
        .or(body["entry"]["id"].as_str())
        .map(str::to_string)
}

impl World {
    /// A claimed request (a payment reference, a reversed entry) sent again
    /// by the service under another key: it answers one of `statuses`, and
    /// any success names `first`, the entry the first request wrote, never
    /// a second one. (From any function instance: a retry of the backend's
    /// lands where it lands.)
    async fn sent_again(&self, org: &str, route: &str, key: &str, body: Value, first: &str, statuses: &[u16]) {
        let again = self
            .request(
                &mut self.instance(),
                org,
                Caller::Service,
                ("POST", route),
                Some(&format!("{key}-again")),
                Some(body),
            )
            .await;
        if self.expect(&format!("{route} again"), &again, statuses)
            && (200..300).contains(&again.status)
            && entry_id(&again.body).as_deref() != Some(first)
        {
            self.violation(format!("{route} {key} applied twice: {first}, then {}", again.body));
        }
    }
}

#[derive(Clone, Copy)]
enum Caller {
    Admin,
    Member,
    Service,
}

const SPEND_ACTIONS: [&str; 4] = [
    "ai_email_generation",
    "email_verification",
    "company_enrichment",
    "ai_variables",
];

fn subject() -> String {
    format!("lead{}@example.com", fastrand::usize(..SUBJECTS))
}

/// One client: `ops` changes picked at random, each under a key of its own.
async fn client(world: Arc<World>, c: usize, ops: usize) {
    let mut gw = world.instance();
    for i in 0..ops {
        let org = world.orgs[fastrand::usize(..world.orgs.len())].clone();
        let key = format!("c{c}-{i}");
        let roll = fastrand::u32(..100);
        world
            .doing
            .lock()
            .unwrap()
            .insert(c, format!("{key} on {org} (roll {roll})"));
        match roll {
            0..=32 => spend(&world, &mut gw, &org, &key).await,
            33..=42 => bulk_spend(&world, &mut gw, &org, &key).await,
            43..=54 => reserve_and_settle(&world, &mut gw, &org, &key).await,
            55..=62 => buy(&world, &mut gw, &org, &key).await,
            63..=70 => void(&world, &mut gw, &key).await,
            71..=74 => change_plan(&world, &mut gw, &org, &key).await,
            75..=77 => team_controls(&world, &mut gw, &org, &key).await,
            78 => resume_results(&world, &mut gw, &org, &key).await,
            79..=82 => contacts(&world, &mut gw, &org, &key).await,
            _ => report_results(&world, &org, &key),
        }
        world.done_ops.fetch_add(1, Ordering::SeqCst);
    }
    world.doing.lock().unwrap().remove(&c);
}

async fn spend(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    world.count("spend");
    let member = fastrand::bool();
    // The lean organization spends more than it tops up.
    let most = if org == world.orgs[0] { 40 } else { 20 };
    let mut body = json!({
        "action": SPEND_ACTIONS[fastrand::usize(..SPEND_ACTIONS.len())],
        "quantity": fastrand::u64(1..=most),
    });
    if fastrand::u8(..5) == 0 {
        body["mode"] = json!("up_to");
    }
    if fastrand::bool() {
        body["campaign"] = json!(["spring", "fall"][fastrand::usize(..2)]);
    }
    let budgeted = body["campaign"] == "spring";
    let who = if member { Caller::Member } else { Caller::Admin };
    let r = world
        .request(gw, org, who, ("POST", "spend"), Some(key), Some(body))
        .await;
    // A member meets the daily limit set on them, anyone the spring
    // campaign's budget; anyone can run out.
    let allowed: &[u16] = if member || budgeted {
        &[200, 402, 403]
    } else {
        &[200, 402]
    };
    if world.expect("spend", &r, allowed) && r.status == 200 && r.body["charged"] != "0" {
        let entry = r.body["entry_id"].as_str().unwrap().to_string();
        world.spends.lock().unwrap().push((org.to_string(), entry));
    }
}

async fn bulk_spend(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    world.count("bulk spend (reveals)");
    let subjects: Vec<Value> = (0..fastrand::usize(1..=4))
        .map(|_| json!({ "subject": subject(), "outcome": "found" }))
        .collect();
    let body = json!({ "action": "email_reveal", "subjects": subjects, "user": "bob" });
    let r = world
        .request(gw, org, Caller::Service, ("POST", "spend"), Some(key), Some(body))
        .await;
    // The service spends for bob: his daily limit applies.
    world.expect("bulk spend", &r, &[200, 402, 403]);
}

async fn reserve_and_settle(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    world.count("reservation");
    let contacts: Vec<String> = (0..fastrand::usize(1..=3))
        .map(|k| format!("{key}-{k}@example.com"))
        .collect();
    let body = json!({ "action": "ai_email_generation", "campaign": "seq", "contacts": contacts });
    let r = world
        .request(gw, org, Caller::Member, ("POST", "reservations"), Some(key), Some(body))
        .await;
    if !world.expect("reserve", &r, &[200, 402, 403]) || r.status != 200 {
        return;
    }
    let reserved: Vec<String> = r.body["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    for c in &reserved {
        world
            .units
            .lock()
            .unwrap()
            .insert((org.to_string(), c.clone()), "reserved");
    }
    let (transition, moved, other) = match fastrand::u8(..5) < 3 {
        true => ("commit", "committed", "release"),
        false => ("release", "released", "commit"),
    };
    let route = format!("reservations/{transition}");
    let body = json!({ "campaign": "seq", "contacts": reserved });
    let r = world
        .request(
            gw,
            org,
            Caller::Member,
            ("POST", &route),
            Some(&format!("{key}-t")),
            Some(body.clone()),
        )
        .await;
    if world.expect("settle reservation", &r, &[200]) {
        for c in &reserved {
            world.units.lock().unwrap().insert((org.to_string(), c.clone()), moved);
        }
    }
    // A unit moves once: the other transition afterwards is refused.
    if fastrand::u8(..4) == 0 {
        world.count("reservation moved twice");
        let route = format!("reservations/{other}");
        let r = world
            .request(
                gw,
                org,
                Caller::Member,
                ("POST", &route),
                Some(&format!("{key}-u")),
                Some(body),
            )
            .await;
        world.expect("a unit moved twice", &r, &[409]);
    }
}

async fn buy(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    world.count("purchase");
    // The lean organization tops up little (see `change_plan`).
    let credits = match org == world.orgs[0] {
        true => "20",
        false => ["20", "50", "100"][fastrand::usize(..3)],
    };
    let body = json!({ "credits": credits, "payment_reference": format!("pay-{key}"), "user": "alice" });
    let r = world
        .request(
            gw,
            org,
            Caller::Service,
            ("POST", "purchases"),
            Some(key),
            Some(body.clone()),
        )
        .await;
    if !world.expect("purchase", &r, &[201]) {
        return;
    }
    let entry = entry_id(&r.body).unwrap();
    world.packs.lock().unwrap().push((org.to_string(), entry.clone()));
    // The product's backend retries the payment under another key: the
    // reference is claimed once, the retry gets the original.
    if fastrand::u8(..3) == 0 {
        world.count("purchase retried under another key");
        world.sent_again(org, "purchases", key, body, &entry, &[200, 201]).await;
    }
}

async fn void(world: &World, gw: &mut Gateway, key: &str) {
    // Mostly charges reversed as invalid results; now and then a pack refunded.
    let (list, reason) = match fastrand::u8(..5) {
        0 => (&world.packs, "refunded"),
        _ => (&world.spends, "invalid_result"),
    };
    let picked = {
        let mut list = list.lock().unwrap();
        let n = list.len();
        (n > 0).then(|| list.swap_remove(fastrand::usize(..n)))
    };
    let Some((org, entry)) = picked else { return };
    world.count(if reason == "refunded" {
        "pack refunded"
    } else {
        "charge voided"
    });
    let body = json!({ "entry_id": entry, "reason": reason });
    let r = world
        .request(
            gw,
            &org,
            Caller::Service,
            ("POST", "reversals"),
            Some(key),
            Some(body.clone()),
        )
        .await;
    if !world.expect("void", &r, &[201]) {
        return;
    }
    // Once per entry: the same void under another key gets the first one's
    // answer (the original is claimed by the first), any other is a 409.
    if fastrand::u8(..4) == 0 {
        world.count("voided twice");
        world
            .sent_again(
                &org,
                "reversals",
                key,
                body,
                &entry_id(&r.body).unwrap_or_default(),
                &[201, 409],
            )
            .await;
    }
}

async fn change_plan(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    // The service upgrades once paid; an admin downgrades (at the renewal).
    // The first organization stays on its small plan: it runs dry now and
    // then, so spends are refused and results held until a resume.
    let lean = org == world.orgs[0];
    let (who, plan) = match fastrand::bool() && !lean {
        true => (Caller::Service, "professional"),
        false => (Caller::Admin, "starter"),
    };
    world.count(if plan == "professional" { "upgrade" } else { "downgrade" });
    let r = world
        .request(
            gw,
            org,
            who,
            ("PUT", "subscription"),
            Some(key),
            Some(json!({ "plan": plan })),
        )
        .await;
    world.expect("plan change", &r, &[200]);
}

/// An admin moves bob's daily limit or the spring campaign's budget while
/// bob and his colleagues spend under them.
async fn team_controls(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    let (route, body) = match fastrand::bool() {
        true => {
            world.count("member limit moved");
            let daily = [20, 40, 80][fastrand::usize(..3)];
            ("members/bob/limits", json!({ "daily": daily.to_string() }))
        }
        false => {
            world.count("campaign budget moved");
            let credits = [60, 120, 240][fastrand::usize(..3)];
            ("campaigns/spring/budget", json!({ "credits": credits.to_string() }))
        }
    };
    let r = world
        .request(gw, org, Caller::Admin, ("PUT", route), Some(key), Some(body))
        .await;
    world.expect(route, &r, &[200]);
}

/// Leads uploaded to a campaign take a slot each, once however many
/// campaigns list them; deleting one frees its slot. Colleagues upload and
/// delete the same leads at once.
async fn contacts(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    let leads: BTreeSet<String> = (0..fastrand::usize(1..=5))
        .map(|_| format!("contact{}@example.com", fastrand::usize(..LEADS)))
        .collect();
    let (route, body) = match fastrand::u8(..3) {
        0 => {
            world.count("contacts deleted");
            ("contacts/removals", json!({ "contacts": leads }))
        }
        _ => {
            world.count("contacts uploaded");
            let campaign = ["spring", "fall"][fastrand::usize(..2)];
            ("contacts", json!({ "contacts": leads, "campaign": campaign }))
        }
    };
    let r = world
        .request(gw, org, Caller::Member, ("POST", route), Some(key), Some(body))
        .await;
    world.expect(route, &r, &[200]);
}

/// The service resumes result charging, as after a top-up (with nothing
/// held it only lifts a pause).
async fn resume_results(world: &World, gw: &mut Gateway, org: &str, key: &str) {
    world.count("results resumed");
    let r = world
        .request(gw, org, Caller::Service, ("POST", "results/resume"), Some(key), None)
        .await;
    world.expect("resume results", &r, &[200]);
}

/// Puts results on the queue: 1-5 of them, now and then a malformed one.
fn report_results(world: &World, org: &str, key: &str) {
    world.count("results reported");
    let now = world.stack.clock.now().to_rfc3339();
    for k in 0..fastrand::usize(1..=5) {
        let request_id = format!("{key}-r{k}");
        let (action, outcome) = match fastrand::u8(..4) {
            0 => (
                "email_finder",
                ["deliverable", "risky", "invalid"][fastrand::usize(..3)],
            ),
            1 => ("phone_lookup", ["found", "not_found"][fastrand::usize(..2)]),
            _ => ("email_reveal", "found"),
        };
        let mut body = json!({
            "org": org, "user": "bob", "action": action, "subject": subject(), "outcome": outcome,
            "request_id": request_id, "occurred_at": now,
        });
        let malformed = fastrand::u8(..20) == 0;
        {
            let mut results = world.results.lock().unwrap();
            if malformed {
                // An organization with no account: it can never be charged.
                body["org"] = json!("nobody");
                results.malformed.insert(request_id.clone());
            } else {
                results
                    .wellformed
                    .entry(org.to_string())
                    .or_default()
                    .push(request_id.clone());
            }
        }
        world.queue.lock().unwrap().visible.push(Message {
            id: request_id,
            body: body.to_string(),
            receives: 0,
        });
    }
}

/// The results function's event source: batches of up to 10 in any order,
/// now and then a message delivered again; a batch whose invocation is
/// cut off comes back whole, a failed item alone; after 5 receives a
/// message goes to the dead-letter queue.
async fn deliver_results(world: &World, faults: bool) -> bool {
    let batch: Vec<Message> = {
        let mut q = world.queue.lock().unwrap();
        fastrand::shuffle(&mut q.visible);
        let n = q.visible.len().min(fastrand::usize(1..=10));
        let mut batch: Vec<Message> = q.visible.drain(..n).collect();
        if !q.done.is_empty() && fastrand::u8(..3) == 0 {
            let again = q.done[fastrand::usize(..q.done.len())].clone();
            batch.push(again);
            q.duplicated += 1;
        }
        batch
    };
    if batch.is_empty() {
        return false;
    }
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.id.clone());
            record.body = Some(m.body.clone());
            record
        })
        .collect();
    let ledger = match faults {
        true => world.stack.ledger_on(world.faults.client(&world.stack.config)),
        false => world.stack.ledger(),
    };
    let answer = tokio::time::timeout(INVOCATION_TIMEOUT, Box::pin(::results::handle(&ledger, event))).await;
    let failed: BTreeSet<String> = match &answer {
        Ok(response) => response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect(),
        Err(_) => batch.iter().map(|m| m.id.clone()).collect(),
    };
    let mut q = world.queue.lock().unwrap();
    q.delivered += batch.len() as u64;
    if answer.is_err() {
        q.failed_batches += 1;
    }
    for mut m in batch {
        m.receives += 1;
        if !failed.contains(&m.id) {
            if !q.done.iter().any(|d| d.id == m.id) {
                q.done.push(m);
            }
        } else if m.receives >= 5 {
            q.dead.push(m);
        } else {
            q.visible.push(m);
        }
    }
    true
}

/// The sweep storm at the renewal: two sweeps at once, one cut off by its
/// deadline, one whose invocation dies midway; then the next one.
async fn sweeps(world: &World) {
    let limits = |deadline: Option<std::time::Instant>| ledger_service::SweepLimits {
        deadline,
        max_accounts: usize::MAX,
        concurrency: 4,
    };
    let cut = world.stack.ledger_on(world.faults.client(&world.stack.config));
    let dies = world.stack.ledger_on(world.faults.client(&world.stack.config));
    let soon = std::time::Instant::now() + Duration::from_millis(3);
    // Each runs as an invocation: a renewal whose answer is lost holds it
    // until the function's timeout.
    let (a, b) = futures::join!(
        tokio::time::timeout(INVOCATION_TIMEOUT, cut.sweep(limits(Some(soon)))),
        tokio::time::timeout(Duration::from_millis(fastrand::u64(5..60)), dies.sweep(limits(None)))
    );
    let mut f = world.figures.lock().unwrap();
    f.sweeps += 2;
    f.sweeps_cut_off += 1 + u64::from(b.is_err());
    drop(f);
    // A sweep fails only as a whole; one account's failure is reported.
    if let Ok(Err(e)) = a {
        world.violation(format!("a sweep cut off by its deadline failed: {e}"));
    }
}

/// `BANK_LOG=ledger_service=debug,results=error` shows why changes retry
/// (targets and levels as tracing-subscriber's `Targets` reads them).
fn trace_from_env() {
    use tracing_subscriber::prelude::*;
    let Ok(spec) = std::env::var("BANK_LOG") else { return };
    let targets: tracing_subscriber::filter::Targets = spec.parse().expect("BANK_LOG: target=level,...");
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(targets))
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_of_concurrent_clients_under_faults_conserves_every_credit() {
    let settings = Settings::from_env();
    trace_from_env();
    let stack = Stack::new().await;
    let scale = std::env::var("BANK_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let faults = Faults::new(FaultRates {
        throttle: 0.02 * scale,
        conflict: 0.03 * scale,
        lost_answer: 0.01 * scale,
    });
    let orgs: Vec<String> = (0..settings.orgs).map(|n| format!("bank-{n}")).collect();
    let world = Arc::new(World {
        stack,
        faults,
        orgs: orgs.clone(),
        keys: Mutex::default(),
        spends: Mutex::default(),
        packs: Mutex::default(),
        units: Mutex::default(),
        results: Mutex::default(),
        queue: Mutex::default(),
        figures: Mutex::default(),
        violations: Mutex::default(),
        done_ops: AtomicUsize::new(0),
        doing: Mutex::default(),
        stage: Mutex::new("before the renewal"),
    });

    // Each organization: a plan, a pack, a member with a daily limit, an
    // alert, a campaign budget.
    let mut renews_at: Option<DateTime<Utc>> = None;
    let mut gw = world.instance();
    for org in &orgs {
        let pack = if *org == orgs[0] { "20" } else { "500" };
        let setup: [(Caller, (&str, &str), Value); 6] = [
            (Caller::Service, ("PUT", "subscription"), json!({ "plan": "starter" })),
            (
                Caller::Service,
                ("POST", "purchases"),
                json!({ "credits": pack, "payment_reference": format!("pay-{org}"), "user": "alice" }),
            ),
            (Caller::Admin, ("PUT", "members/bob"), json!({ "role": "member" })),
            (Caller::Admin, ("PUT", "members/bob/limits"), json!({ "daily": "40" })),
            (
                Caller::Admin,
                ("PUT", "alerts/low"),
                json!({ "meter": "credits", "amount": "300", "channel": "in_app" }),
            ),
            (
                Caller::Admin,
                ("PUT", "campaigns/spring/budget"),
                json!({ "credits": "120" }),
            ),
        ];
        for (n, (who, (method, route), body)) in setup.into_iter().enumerate() {
            let key = format!("setup-{org}-{n}");
            let r = world
                .request(&mut gw, org, who, (method, route), Some(&key), Some(body))
                .await;
            assert!(r.status == 200 || r.status == 201, "{route}: {} {}", r.status, r.body);
            if let Some(at) = r.body["next_renewal"].as_str() {
                renews_at = Some(at.parse().unwrap());
            }
        }
    }
    let renews_at = renews_at.expect("the subscription says when it renews");
    // The lean organization may go below zero, as far as the service allows.
    let r = world
        .request(
            &mut gw,
            &orgs[0],
            Caller::Service,
            ("PUT", "overdraft"),
            Some("setup-overdraft"),
            Some(json!({ "meter": "credits", "allowance": OVERDRAFT })),
        )
        .await;
    assert_eq!(r.status, 200, "overdraft: {}", r.body);

    // The run: clients, the results queue, the stream, and the clock
    // moving from the anchor to a day past the renewal as work completes.
    world.faults.arm(true);
    let total = settings.clients * settings.ops;
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..settings.clients)
        .map(|c| tokio::spawn(client(world.clone(), c, settings.ops)))
        .collect();
    // The clock on its own task: the stream's consumer can take long
    // enough that a clock waiting on it would see the clients finish first.
    let clock = {
        let world = world.clone();
        tokio::spawn(async move {
            // Past the renewal at three quarters of the work: the sweeps
            // race the last quarter.
            let start = world.stack.clock.now();
            let span = renews_at + chrono::Duration::hours(1) - start;
            let mut swept = false;
            while world.done_ops.load(Ordering::SeqCst) < total {
                let done = world.done_ops.load(Ordering::SeqCst) as f64;
                let progress = (done / (0.75 * total as f64)).min(1.0);
                let target = start + chrono::Duration::seconds((span.num_seconds() as f64 * progress) as i64);
                let now = world.stack.clock.now();
                if target > now {
                    world.stack.clock.advance(target - now);
                }
                if !swept && world.stack.clock.now() > renews_at + chrono::Duration::minutes(5) {
                    swept = true;
                    *world.stage.lock().unwrap() = "sweeping";
                    sweeps(&world).await;
                    *world.stage.lock().unwrap() = "swept";
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let now = world.stack.clock.now();
            world.stack.clock.advance(start + span - now);
        })
    };
    let stream = {
        let world = world.clone();
        tokio::spawn(async move {
            while world.done_ops.load(Ordering::SeqCst) < total {
                world.stack.settle().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let deliverer = {
        let world = world.clone();
        tokio::spawn(async move {
            while world.done_ops.load(Ordering::SeqCst) < total {
                if !deliver_results(&world, true).await {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    // A long run says how far it got, and where each client is.
    let reporter = {
        let world = world.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let doing = world.doing.lock().unwrap().clone();
                eprintln!(
                    "progress: {}/{total} changes, clock {} ({}), clients at {doing:?}",
                    world.done_ops.load(Ordering::SeqCst),
                    world.stack.clock.now(),
                    world.stage.lock().unwrap(),
                );
            }
        })
    };
    for c in clients {
        c.await.unwrap();
    }
    clock.await.unwrap();
    stream.await.unwrap();
    deliverer.await.unwrap();
    if world.figures.lock().unwrap().sweeps == 0 {
        world.violation("the clients finished before the clock crossed the renewal: no sweep raced them".into());
    }
    reporter.abort();

    // Quiescence: faults off, the queue drained, a last sweep, the stream
    // caught up and then delivered again from its start, shuffled.
    world.faults.arm(false);
    while deliver_results(&world, false).await {}
    let report = world
        .stack
        .ledger()
        .sweep(ledger_service::SweepLimits {
            deadline: None,
            max_accounts: usize::MAX,
            concurrency: 4,
        })
        .await
        .unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    world.stack.settle().await;
    let redelivered = world.stack.redeliver_shuffled().await;
    let elapsed = started.elapsed();

    // The table as a whole, read once: what the items say beside the account.
    let items = world.stack.snapshot().await;
    for org in &orgs {
        check(&world, org, &items).await;
    }

    let f = world.figures.lock().unwrap();
    let q = world.queue.lock().unwrap();
    println!(
        "bank: {} organizations, {} clients × {} operations in {:.1?}",
        orgs.len(),
        settings.clients,
        settings.ops,
        elapsed
    );
    println!("operations: {:?}", f.ops);
    println!("answers by status: {:?}", f.statuses);
    println!("faults injected at DynamoDB: {:?}", world.faults.injected());
    println!(
        "client timeouts: {}, calls cut short by their client: {}, 503 retried: {}",
        f.client_timeouts, f.cut_short, f.contention_retries
    );
    println!(
        "results: {} deliveries ({} duplicates, {} invocations cut off), {} dead-lettered",
        q.delivered,
        q.duplicated,
        q.failed_batches,
        q.dead.len()
    );
    let malformed = world.results.lock().unwrap().malformed.clone();
    println!(
        "well-formed results dead-lettered: {}",
        q.dead.iter().filter(|m| !malformed.contains(&m.id)).count()
    );
    println!(
        "sweeps racing at the renewal: {} ({} cut off)",
        f.sweeps, f.sweeps_cut_off
    );
    println!("stream records redelivered shuffled: {redelivered}");
    let violations = world.violations.lock().unwrap();
    println!("violations: {}", violations.len());
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Every entry of `org`, oldest first.
async fn entries_of(stack: &Stack, org: &str, token: &str) -> Vec<Value> {
    let mut entries = ledger_of(&stack.gateway(), org, token, 200).await;
    entries.sort_by_key(|e| e["seq"].as_u64());
    entries
}

/// The checker: reads `org` back (and finds its items among `items`, the
/// table read once) and records every invariant broken.
async fn check(world: &World, org: &str, items: &[BTreeMap<String, Value>]) {
    let stack = &world.stack;
    let admin = world.token(org, Caller::Admin);
    let entries = entries_of(stack, org, &admin).await;
    let balance = get(stack, &format!("/v1/orgs/{org}/balance"), &admin).await;
    let fail = |what: String| world.violation(format!("{org}: {what}"));

    // The ledger: numbered 1..n, each id once, each balance after the
    // running sum, never below zero beyond the overdraft, summing to the
    // balance.
    let allowance = |meter: &str| {
        balance["meters"][meter]["overdraft"]["allowance"]
            .as_str()
            .map(thousandths)
            .unwrap_or_default()
    };
    let mut running: BTreeMap<String, i64> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut crossings = BTreeSet::new();
    for (n, e) in entries.iter().enumerate() {
        if e["seq"].as_u64() != Some(n as u64 + 1) {
            fail(format!(
                "entry {} has seq {} (a gap or an unplaced entry)",
                n + 1,
                e["seq"]
            ));
        }
        if !ids.insert(e["id"].as_str().unwrap().to_string()) {
            fail(format!("entry {} twice", e["id"]));
        }
        let credits_before = running.get("credits").copied().unwrap_or_default();
        for line in e["lines"].as_array().unwrap() {
            *running.entry(line["meter"].as_str().unwrap().to_string()).or_default() +=
                thousandths(line["amount"].as_str().unwrap());
        }
        for (meter, sum) in &running {
            let after = e["balance_after"][meter].as_str().map(thousandths).unwrap_or_default();
            if after != *sum {
                fail(format!(
                    "entry {}: {meter} balance after {after}, entries sum to {sum}",
                    e["seq"]
                ));
            }
            if *sum < -allowance(meter) {
                fail(format!("entry {}: {meter} at {sum} thousandths", e["seq"]));
            }
        }
        let credits_after = running.get("credits").copied().unwrap_or_default();
        if credits_before >= ALERT_LEVEL && credits_after < ALERT_LEVEL {
            crossings.insert(e["seq"].as_u64().unwrap());
        }
    }
    for (meter, sum) in &running {
        // With an overdraft, what may be spent includes what may be
        // borrowed; the balance is what the buckets hold less what is owed.
        let meter_view = &balance["meters"][meter];
        let available = meter_view["overdraft"]["balance"]
            .as_str()
            .or(meter_view["available"].as_str())
            .map(thousandths)
            .unwrap_or_default();
        if available != *sum {
            fail(format!("{meter}: available {available}, entries sum to {sum}"));
        }
        for bucket in balance["meters"][meter]["buckets"].as_array().into_iter().flatten() {
            let remaining = thousandths(bucket["remaining"].as_str().unwrap());
            if remaining < 0 {
                fail(format!("bucket {} negative: {remaining}", bucket["id"]));
            }
            if remaining > thousandths(bucket["granted"].as_str().unwrap()) {
                fail(format!(
                    "bucket {} holds {remaining}, more than granted: {bucket}",
                    bucket["id"]
                ));
            }
        }
    }
    // Each bucket as its entries' lines left it: what is live holds their
    // sum, what expired holds nothing.
    let mut by_bucket: BTreeMap<String, i64> = BTreeMap::new();
    for line in entries.iter().flat_map(|e| e["lines"].as_array().unwrap()) {
        *by_bucket
            .entry(line["bucket"].as_str().unwrap().to_string())
            .or_default() += thousandths(line["amount"].as_str().unwrap());
    }
    let mut live = BTreeMap::new();
    for meter in balance["meters"].as_object().unwrap().values() {
        for bucket in meter["buckets"].as_array().into_iter().flatten() {
            // An overdraft is granted without a line (nothing is paid in):
            // its lines sum to what is owed on it, below zero.
            let remaining = thousandths(bucket["remaining"].as_str().unwrap());
            let unlined = match bucket["source"] == "overdraft" {
                true => thousandths(bucket["granted"].as_str().unwrap()),
                false => 0,
            };
            live.insert(bucket["id"].as_str().unwrap().to_string(), remaining - unlined);
        }
    }
    for (bucket, sum) in &by_bucket {
        let holds = live.get(bucket).copied().unwrap_or_default();
        if holds != *sum {
            fail(format!("bucket {bucket} holds {holds}, its lines sum to {sum}"));
        }
    }
    if let Ok(dir) = std::env::var("BANK_DUMP") {
        let dump = json!({ "balance": balance, "entries": entries });
        std::fs::write(
            format!("{dir}/{org}.json"),
            serde_json::to_string_pretty(&dump).unwrap(),
        )
        .unwrap();
    }

    // Reservations: every unit in the one state its client left it in;
    // what is still reserved is exactly what balance holds back.
    let units = world.units.lock().unwrap().clone();
    let still_reserved = units.iter().filter(|((o, _), s)| o == org && **s == "reserved").count() as i64;
    let reserved = balance["meters"]["credits"]["reserved"]
        .as_str()
        .map(thousandths)
        .unwrap_or_default();
    if reserved != still_reserved * 1000 {
        fail(format!(
            "{reserved} thousandths reserved, clients left {still_reserved} units reserved"
        ));
    }
    let moved: BTreeMap<&str, usize> =
        units
            .iter()
            .filter(|((o, _), _)| o == org)
            .fold(BTreeMap::new(), |mut m, (_, s)| {
                *m.entry(*s).or_default() += 1;
                m
            });
    let mut in_ledger: BTreeMap<String, i64> = BTreeMap::new();
    for e in entries.iter().filter(|e| e["kind"] == "reservation") {
        let n = e["subjects"].as_array().map(Vec::len).unwrap_or_default() as i64;
        *in_ledger
            .entry(e["result"].as_str().unwrap_or("reserved").to_string())
            .or_default() += n;
    }
    for (state, transition) in [("committed", "commit"), ("released", "release")] {
        let clients = moved.get(state).copied().unwrap_or_default() as i64;
        if in_ledger.get(transition).copied().unwrap_or_default() != clients {
            fail(format!(
                "{state}: the ledger moved {:?}, clients {clients}",
                in_ledger.get(state)
            ));
        }
    }

    // Idempotency: one entry per key, whatever the retries and replays,
    // and no entry that no request was answered with.
    let mut answered = BTreeSet::new();
    let keys: Vec<(String, Sent)> = world
        .keys
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.org == org)
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    for (key, Sent { route, answers, .. }) in &keys {
        let oks: BTreeSet<_> = answers
            .iter()
            .filter(|(status, _)| (200..300).contains(status))
            .map(|(_, entry)| entry.clone())
            .collect();
        if oks.len() > 1 {
            fail(format!("{key} ({}) answered with different entries: {oks:?}", route));
        }
        answered.extend(oks.into_iter().flatten());
        let refused = answers.last().is_some_and(|(s, _)| (400..500).contains(s));
        let own = EntryKey::Request(IdempotencyKey::parse(key).unwrap()).entry_id();
        if refused && ids.contains(&own) {
            fail(format!(
                "{key} ({}) was refused, yet its entry {own} is in the ledger",
                route
            ));
        }
    }
    let (wellformed, malformed) = {
        let results = world.results.lock().unwrap();
        (
            results.wellformed.get(org).cloned().unwrap_or_default(),
            results.malformed.clone(),
        )
    };
    for id in &wellformed {
        let entry = EntryKey::Request(IdempotencyKey::parse(&format!("result:{id}")).unwrap()).entry_id();
        let dead = world.queue.lock().unwrap().dead.iter().any(|m| &m.id == id);
        if !ids.contains(&entry) && !dead {
            fail(format!("result {id} lost: not charged, free, held nor dead-lettered"));
        }
        // The dead-letter queue keeps it, but the product waits on a
        // well-formed result: one there was never settled.
        if dead {
            fail(format!("well-formed result {id} dead-lettered"));
        }
        answered.insert(entry);
    }
    for e in &entries {
        // What the ledger writes by itself: renewals, and a resume's
        // settlements of held results (each under a key of its own).
        let key = ledger_store::items::entry_sk_of_id(e["id"].as_str().unwrap()).unwrap_or_default();
        let system = ["RENEWAL#", "REQ#held:", "REQ#resume:"]
            .iter()
            .any(|prefix| key.starts_with(prefix));
        if !system && !answered.contains(e["id"].as_str().unwrap()) {
            fail(format!("entry {} ({}) answers no request", e["id"], e["kind"]));
        }
    }
    let dead: BTreeSet<String> = world.queue.lock().unwrap().dead.iter().map(|m| m.id.clone()).collect();
    for id in &malformed {
        if !dead.contains(id) {
            fail(format!("malformed result {id} not in the dead-letter queue"));
        }
    }

    // Never twice for the same information: one charge per subject.
    let mut charged: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("spend" | "result")))
        .filter(|e| matches!(e["action"].as_str(), Some("email_reveal" | "phone_lookup")))
        .filter(|e| !e["lines"].as_array().unwrap().is_empty())
    {
        let subjects = e["subjects"].as_array().cloned().unwrap_or_default();
        for s in subjects
            .iter()
            .chain(std::iter::once(&e["subject"]))
            .filter_map(Value::as_str)
        {
            *charged
                .entry((e["action"].as_str().unwrap().to_string(), s.to_string()))
                .or_default() += 1;
        }
    }
    for ((action, subject), n) in charged.iter().filter(|(_, n)| **n > 1) {
        fail(format!("{action} charged {n} times for {subject}"));
    }

    // The spring budget: what it counted is what spring's spends charged
    // (no result or reservation of the bank names it), never over its limit
    // when spent (a lowered limit may leave it over).
    let spring: i64 = entries
        .iter()
        .filter(|e| e["kind"] == "spend" && e["campaign"] == "spring")
        .flat_map(|e| e["lines"].as_array().unwrap())
        .filter(|l| l["meter"] == "credits")
        .map(|l| -thousandths(l["amount"].as_str().unwrap()))
        .sum();
    let budget = &balance["budgets"]["spring"];
    let counted = budget["spent"].as_str().map(thousandths).unwrap_or_default();
    if counted != spring {
        fail(format!(
            "the spring budget counted {counted}, its spends charged {spring}: {budget}"
        ));
    }

    // Lead slots: the count the account keeps is the leads holding one.
    let prefix = "SLOT#lead_slots#";
    let holding = items
        .iter()
        .filter(|i| i["pk"]["S"] == format!("ORG#{org}") && i["sk"]["S"].as_str().unwrap().starts_with(prefix))
        .count();
    let used = &balance["meters"]["lead_slots"]["used_this_period"];
    if used.as_str().map(thousandths) != Some(holding as i64 * 1000) {
        fail(format!("{used} lead slots counted, {holding} leads hold one"));
    }

    // Each charge reversed at most once.
    let mut reversed: BTreeMap<&str, usize> = BTreeMap::new();
    for e in entries.iter().filter(|e| e["kind"] == "reversal") {
        *reversed.entry(e["reverses"].as_str().unwrap_or_default()).or_default() += 1;
    }
    for (original, n) in reversed.iter().filter(|(_, n)| **n > 1) {
        fail(format!("{original} reversed {n} times"));
    }

    // One renewal, by whichever of the sweeps and spends got there first.
    let renewals = entries.iter().filter(|e| e["kind"] == "renewal").count();
    if renewals != 1 {
        fail(format!("{renewals} renewals for one renewal date"));
    }

    // Rollups (built from the stream, delivered twice and shuffled) equal
    // the entries: what each action used, and how many entries.
    let usage = get(
        stack,
        &format!("/v1/orgs/{org}/usage?from=2026-01-01&to=2026-12-31&group_by=action"),
        &admin,
    )
    .await;
    let mut rolled: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for g in usage["groups"].as_array().unwrap() {
        let used = g["used"]["credits"].as_str().map(thousandths).unwrap_or_default();
        rolled.insert(
            g["key"].as_str().unwrap().to_string(),
            (used, g["entries"].as_i64().unwrap()),
        );
    }
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in entries.iter().filter(|e| {
        matches!(
            e["kind"].as_str(),
            Some("spend" | "result" | "reservation" | "reversal" | "approval")
        )
    }) {
        let Some(action) = e["action"].as_str() else { continue };
        let used: i64 = e["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["meter"] == "credits")
            .map(|l| -thousandths(l["amount"].as_str().unwrap()))
            .sum();
        let totals = expected.entry(action.to_string()).or_default();
        totals.0 += used;
        totals.1 += 1;
    }
    if rolled != expected {
        fail(format!("usage rollups {rolled:?}, the entries say {expected:?}"));
    }

    // One notification per crossing of the alert's level, on that entry.
    let notes = get(stack, &format!("/v1/orgs/{org}/notifications?limit=200"), &admin).await;
    let mut notified = BTreeMap::new();
    for n in notes["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["alert"] == "low")
    {
        *notified.entry(n["entry_seq"].as_u64().unwrap()).or_insert(0) += 1;
    }
    let once: BTreeSet<u64> = notified.keys().copied().collect();
    if once != crossings || notified.values().any(|n| *n > 1) {
        fail(format!(
            "notifications on entries {notified:?}, crossings on {crossings:?}"
        ));
    }
}

/// Throttling that outlasts the SDK's own retries is a 503 `contention`
/// (retry with the same key), not a 500; nothing is written, and the retry
/// once DynamoDB answers again charges once.
#[tokio::test]
async fn throttling_past_the_sdks_retries_is_a_503_to_retry_and_writes_nothing() {
    let stack = Stack::with_account("starter").await;
    let faults = Faults::new(FaultRates {
        throttle: 1.0,
        ..FaultRates::default()
    });
    let gateway = stack.gateway_on(stack.ledger_on(faults.client(&stack.config)));
    let before = stack.snapshot().await;
    faults.arm(true);
    let body = r#"{"action":"ai_email_generation","quantity":3}"#;
    let path = format!("/v1/orgs/{ORG}/spend");
    let member = stack.member();
    let r = call(&gateway, "POST", &path, Some(&member), Some("k-1"), Some(body)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["type"], "urn:credit-ledger:problem:contention");
    assert!(faults.injected()["throttling"] >= 1);
    faults.arm(false);
    assert_eq!(stack.snapshot().await, before, "nothing written");
    let r = call(&gateway, "POST", &path, Some(&member), Some("k-1"), Some(body)).await;
    assert_eq!((r.status, r.body["charged"].as_str()), (200, Some("3")), "{}", r.body);
    assert_eq!(available(&gateway, &member, "credits").await, "497");
}
