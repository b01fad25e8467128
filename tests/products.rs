//! The five products' credit systems, each run from its shipped catalog
//! (`infra/catalogs/<product>.json`) through the real handlers on the
//! local stack, walking the rules its help page states (../shared/seeds/)
//! with figures of our own. The README's "Running a system like X" shows
//! the same figures.

mod common;

use chrono::Duration;
use common::*;
use serde_json::{json, Value};

/// One request with a JSON body, by `token`, under `key`.
async fn post(stack: &Stack, path: &str, token: &str, key: &str, body: Value) -> HttpReply {
    let body = body.to_string();
    call(&stack.gateway(), "POST", path, Some(token), Some(key), Some(&body)).await
}

async fn put(stack: &Stack, path: &str, token: &str, key: &str, body: Value) -> HttpReply {
    let body = body.to_string();
    call(&stack.gateway(), "PUT", path, Some(token), Some(key), Some(&body)).await
}

/// A spend of `quantity` × `action` by `token`, with a campaign if given.
async fn spend_in(
    stack: &Stack,
    token: &str,
    key: &str,
    action: &str,
    quantity: u64,
    campaign: Option<&str>,
) -> HttpReply {
    let mut body = json!({ "action": action, "quantity": quantity });
    if let Some(c) = campaign {
        body["campaign"] = json!(c);
    }
    post(stack, &format!("/v1/orgs/{ORG}/spend"), token, key, body).await
}

/// The scheduled renewal, run now (the clock moved past a renewal).
async fn renew(stack: &Stack) {
    let limits = ledger_service::SweepLimits {
        deadline: None,
        max_accounts: usize::MAX,
        concurrency: 4,
    };
    let report = stack.ledger().sweep(limits).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
}

/// The sources of the buckets a spend's answer says paid.
fn paid_from(reply: &HttpReply) -> Vec<String> {
    reply.body["buckets"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|b| b["source"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The history entries a filter of the ledger finds, every page.
async fn history(stack: &Stack, token: &str, filter: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor = String::new();
    loop {
        let body = get(
            stack,
            &format!("/v1/orgs/{ORG}/ledger?limit=100&{filter}{cursor}"),
            token,
        )
        .await;
        entries.extend(body["entries"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return entries,
        }
    }
}

/// Once the stream has placed every entry, the ledger's entries sum to
/// what `meter` has available.
async fn entries_sum_to_the_balance(stack: &Stack, meter: &str) {
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 100).await;
    // A meter with nothing left in any bucket is not in the balance: 0.
    let balance = balance(&stack.gateway(), &stack.admin()).await["meters"][meter]["available"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    assert_eq!(
        ledger_total(&entries, meter),
        thousandths(&balance),
        "{meter}: the entries sum to the balance"
    );
}

#[tokio::test]
async fn salestools_plan_credits_first_ai_paused_at_zero_while_sending_goes_on_limits_history_alerts_and_plan_changes()
{
    let stack = Stack::with_catalog("salestools").await;
    let (admin, bob, service) = (stack.admin(), stack.member(), stack.service());
    let org = format!("/v1/orgs/{ORG}");
    let r = subscribe(&stack.gateway(), &stack.service(), ORG, "starter").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "500");

    // The action table: verification at 0.5, AI and enrichment at 1, phone at 2.
    for (key, action, quantity, charged) in [
        ("t-1", "email_verification", 3, "1.5"),
        ("t-2", "ai_email_generation", 10, "10"),
        ("t-3", "phone_lookup", 2, "4"),
        ("t-4", "company_enrichment", 1, "1"),
        ("t-5", "email_send", 40, "0"),
    ] {
        let r = spend_in(&stack, &bob, key, action, quantity, Some("spring")).await;
        assert_eq!(
            (r.status, r.body["charged"].as_str()),
            (200, Some(charged)),
            "{action}: {}",
            r.body
        );
    }
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "483.5");

    // A pack bought mid-cycle (the product's backend, after the payment):
    // plan credits are spent before it.
    let r = purchase(
        &stack.gateway(),
        &service,
        "buy-1",
        r#"{"package":"credits_500","payment_reference":"inv-1","user":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "983.5");
    let r = spend_in(&stack, &bob, "t-6", "ai_reply_handling", 80, None).await;
    assert_eq!(paid_from(&r), ["plan"], "plan credits first: {}", r.body);

    // Per-user limits and a restricted feature, set by an admin.
    let r = put(
        &stack,
        &format!("{org}/members/bob"),
        &admin,
        "m-bob",
        json!({ "role": "member" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let limits = json!({ "daily": "20", "blocked_actions": ["phone_lookup"] });
    let r = put(&stack, &format!("{org}/members/bob/limits"), &admin, "l-bob", limits).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        spend_in(&stack, &bob, "t-7", "ai_email_generation", 15, Some("spring"))
            .await
            .status,
        200
    );
    let r = spend_in(&stack, &bob, "t-8", "ai_email_generation", 10, Some("spring")).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (403, Some("urn:credit-ledger:problem:limit-reached")),
        "{}",
        r.body
    );
    let r = spend_in(&stack, &bob, "t-9", "phone_lookup", 1, None).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (403, Some("urn:credit-ledger:problem:action-blocked")),
        "{}",
        r.body
    );
    // The admin, under no limit, goes on.
    assert_eq!(
        spend_in(&stack, &admin, "t-10", "phone_lookup", 1, Some("autumn"))
            .await
            .status,
        200
    );
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "886.5");

    // Usage history by action, date range, campaign and user.
    stack.settle().await;
    assert_eq!(history(&stack, &admin, "action=phone_lookup").await.len(), 2);
    assert_eq!(history(&stack, &admin, "campaign=spring").await.len(), 6);
    let alices = history(&stack, &admin, "user=alice").await;
    let spends = alices.iter().filter(|e| e["kind"] == "spend").count();
    assert_eq!(spends, 1, "the admin's one spend among her changes: {alices:?}");
    let today = history(&stack, &admin, "from=2026-01-31T00:00:00Z&to=2026-02-01T00:00:00Z").await;
    assert_eq!(
        today.len(),
        12,
        "the subscription, bob's seven spends, the purchase, his membership and limits, alice's spend"
    );

    // An alert at 20 % of the month's allowance (100 credits), email and in-app.
    let r = put(
        &stack,
        &format!("{org}/alerts/low-20"),
        &admin,
        "alert",
        json!({ "meter": "credits", "percent": 20, "channel": "both" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // At zero, AI features pause; sending and LinkedIn actions go on.
    let r = spend_in(&stack, &admin, "drain", "ai_email_generation", 886, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        spend_in(&stack, &admin, "half", "email_verification", 1, None)
            .await
            .status,
        200
    );
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "0");
    let r = spend_in(&stack, &admin, "ai-at-zero", "ai_email_generation", 1, None).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (402, Some("urn:credit-ledger:problem:insufficient-credits")),
        "{}",
        r.body
    );
    for (key, action) in [
        ("send", "email_send"),
        ("connect", "linkedin_connect"),
        ("message", "linkedin_message"),
        ("import", "csv_import"),
    ] {
        let r = spend_in(&stack, &bob, key, action, 5, None).await;
        assert_eq!(r.status, 200, "{action} at zero: {}", r.body);
    }
    stack.settle().await;
    let notes = get(&stack, &format!("{org}/notifications"), &bob).await;
    let notes = notes["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["level"], "100");
    assert_eq!(stack.bus_events().await.len(), 1, "the email's event");

    // An upgrade (paid: the service's) applies now; a downgrade waits for the renewal.
    let r = put_subscription(&stack.gateway(), &service, ORG, "up", r#"{"plan":"business"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        available(&stack.gateway(), &bob, "credits").await,
        "4500",
        "5,000 less the month's 500, now"
    );
    let r = put_subscription(&stack.gateway(), &admin, ORG, "down", r#"{"plan":"professional"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let balance = get(&stack, &format!("{org}/balance"), &bob).await;
    assert_eq!(
        (balance["plan"].as_str(), balance["scheduled_change"]["plan"].as_str()),
        (Some("business"), Some("professional"))
    );
    // The renewal (Feb 28): the month's plan credits reset to the new plan's;
    // the purchased pack was spent, none of it expires.
    stack.clock.advance(Duration::days(29));
    let r = spend_in(&stack, &bob, "feb", "ai_email_generation", 1, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let balance = get(&stack, &format!("{org}/balance"), &bob).await;
    assert_eq!(balance["plan"], "professional");
    assert_eq!(balance["meters"]["credits"]["available"], "1999");
    entries_sum_to_the_balance(&stack, "credits").await;
}

/// Results reported by the product's workers, through the results queue's
/// consumer (one SQS batch), as `(request id, action, subject, outcome)`.
async fn report(stack: &Stack, results: &[(&str, &str, &str, &str)]) {
    report_as(stack, "bob", results).await
}

/// [`report`], for `user`'s requests.
async fn report_as(stack: &Stack, user: &str, results: &[(&str, &str, &str, &str)]) {
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records = results
        .iter()
        .map(|(id, action, subject, outcome)| {
            let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
            m.message_id = Some(id.to_string());
            m.body = Some(
                json!({
                    "org": ORG, "user": user, "action": action, "subject": subject, "outcome": outcome,
                    "request_id": id, "occurred_at": "2026-01-31T10:00:00Z",
                })
                .to_string(),
            );
            m
        })
        .collect();
    let answer = Box::pin(::results::handle(&stack.ledger(), event)).await;
    assert!(
        answer.batch_item_failures.is_empty(),
        "{:?}",
        answer.batch_item_failures
    );
}

#[tokio::test]
async fn lemlist_pays_for_found_data_only_per_seat_credits_calling_minutes_admin_purchases_and_paused_enrichment() {
    let stack = Stack::with_catalog("lemlist").await;
    let (admin, bob, service) = (stack.admin(), stack.member(), stack.service());
    let org = format!("/v1/orgs/{ORG}");
    // The free trial: 500 credits, once.
    let r = subscribe(&stack.gateway(), &stack.service(), ORG, "free_trial").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "500");

    // Email finder & verifier: 5 credits, only for deliverable or risky.
    report(
        &stack,
        &[
            ("f1", "email_finder", "ann@acme.io", "deliverable"),
            ("f2", "email_finder", "ben@acme.io", "risky"),
            ("f3", "email_finder", "cat@acme.io", "invalid"),
            ("f4", "email_finder", "dan@acme.io", "not_found"),
            ("p1", "phone_finder", "ann@acme.io", "found"),
            ("p2", "phone_finder", "ben@acme.io", "not_found"),
            ("e1", "linkedin_enrichment", "ann@acme.io", "found"),
        ],
    )
    .await;
    // 2 × 5 + 20 + 1.
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "469");
    assert_eq!(
        spend_in(&stack, &bob, "ai-1", "ai_variables", 4, None).await.status,
        200
    );
    // No calling credits on the trial.
    let r = spend_in(&stack, &bob, "call-1", "call_minute", 1, None).await;
    assert_eq!(r.status, 402, "{}", r.body);

    // Multichannel Expert for 3 seats: 1,500 a seat and 400 calling credits a month.
    let r = put_subscription(
        &stack.gateway(),
        &service,
        ORG,
        "expert",
        r#"{"plan":"multichannel_expert","seats":3}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        available(&stack.gateway(), &bob, "credits").await,
        "4965",
        "4,500 and the trial's 465"
    );
    assert_eq!(available(&stack.gateway(), &bob, "calling_credits").await, "400");
    // A 7-minute call: 4 credits a started minute, from the calling credits.
    let r = spend_in(&stack, &bob, "call-2", "call_minute", 7, None).await;
    assert_eq!((r.status, r.body["charged"].as_str()), (200, Some("28")), "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "calling_credits").await, "372");
    // Free (plan) credits go before the trial's and purchased ones.
    let r = spend_in(&stack, &bob, "ai-2", "ai_variables", 10, None).await;
    assert_eq!(paid_from(&r), ["plan"], "{}", r.body);

    // Extra credits: packages or any amount at $0.10; only admins (for the
    // product: its backend, after payment) buy, never a member.
    let r = purchase(
        &stack.gateway(),
        &bob,
        "bob-buys",
        r#"{"credits":"100","payment_reference":"bob-1"}"#,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = purchase(
        &stack.gateway(),
        &service,
        "buy-250",
        r#"{"credits":"250","payment_reference":"inv-250","user":"alice"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.body["entry"]["purchase"]["price_cents"].as_u64()),
        (201, Some(2500)),
        "{}",
        r.body
    );
    let r = purchase(
        &stack.gateway(),
        &service,
        "buy-1000",
        r#"{"package":"credits_1000","payment_reference":"inv-1000","user":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "6205");

    // Cancelled: this month's credits stay usable; at the renewal the plan's
    // expire, the purchased stay (and the trial's, spent or not, is never given again).
    let r = call(
        &stack.gateway(),
        "DELETE",
        &format!("{org}/subscription"),
        Some(&admin),
        Some("cancel"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    stack.clock.advance(Duration::days(29));
    renew(&stack).await;
    let b = balance(&stack.gateway(), &bob).await;
    assert_eq!(
        b["meters"]["credits"]["available"], "1715",
        "the 465 of the trial and 1,250 bought: {b}"
    );
    let r = subscribe(&stack.gateway(), &stack.service(), ORG, "free_trial").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        available(&stack.gateway(), &bob, "credits").await,
        "1715",
        "no second trial"
    );

    // Enrichment at zero pauses and does not resume by itself, even topped up.
    assert_eq!(
        spend_in(&stack, &bob, "drain", "ai_variables", 1710, None).await.status,
        200
    );
    report(
        &stack,
        &[
            ("f5", "email_finder", "eve@acme.io", "deliverable"),
            ("f6", "email_finder", "fay@acme.io", "deliverable"),
        ],
    )
    .await;
    let b = balance(&stack.gateway(), &admin).await;
    assert_eq!(
        (b["meters"]["credits"]["available"].as_str(), &b["results"]),
        (Some("0"), &json!({ "paused": true, "held": 1 }))
    );
    let r = purchase(
        &stack.gateway(),
        &service,
        "top-up",
        r#"{"package":"credits_1000","payment_reference":"inv-top","user":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let b = balance(&stack.gateway(), &admin).await;
    assert_eq!(
        &b["results"],
        &json!({ "paused": true, "held": 1 }),
        "topped up, still paused"
    );
    let r = call(
        &stack.gateway(),
        "POST",
        &format!("{org}/results/resume"),
        Some(&admin),
        None,
        None,
    )
    .await;
    assert_eq!(r.body, json!({ "settled": 1, "held": 0, "paused": false }));
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "995");
    // Email Pro for 2 seats: 1,000 credits a seat, no calling credits.
    let r = put_subscription(
        &stack.gateway(),
        &service,
        ORG,
        "pro",
        r#"{"plan":"email_pro","seats":2}"#,
    )
    .await;
    // From the trial, a new paid subscription (201), anchored today.
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "credits").await, "2995");
    let r = spend_in(&stack, &bob, "call-3", "call_minute", 1, None).await;
    assert_eq!(r.status, 402, "{}", r.body);
    entries_sum_to_the_balance(&stack, "credits").await;
    entries_sum_to_the_balance(&stack, "calling_credits").await;
}

/// Uploads `contacts` to `campaign` in requests of 50; the per-contact outcomes.
async fn upload(stack: &Stack, key: &str, campaign: &str, contacts: &[String]) -> Vec<String> {
    let mut outcomes = Vec::new();
    for (i, chunk) in contacts.chunks(50).enumerate() {
        let body = json!({ "campaign": campaign, "contacts": chunk });
        let r = post(
            stack,
            &format!("/v1/orgs/{ORG}/contacts"),
            &stack.member(),
            &format!("{key}-{i}"),
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        for c in r.body["contacts"].as_array().unwrap() {
            outcomes.push(c["outcome"].as_str().unwrap().to_string());
        }
    }
    outcomes
}

fn count(outcomes: &[String], outcome: &str) -> usize {
    outcomes.iter().filter(|o| *o == outcome).count()
}

fn leads(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("lead{i}@prospect.io")).collect()
}

#[tokio::test]
async fn smartlead_lead_credits_count_unique_contacts_and_free_on_delete_email_credits_renew_and_refuse_when_spent() {
    let stack = Stack::with_catalog("smartlead").await;
    let (bob, service) = (stack.member(), stack.service());
    let org = format!("/v1/orgs/{ORG}");
    // Basic: 2,000 lead credits (held at once, never renewed), 6,000 email credits a month.
    let r = subscribe(&stack.gateway(), &stack.service(), ORG, "basic").await;
    assert_eq!(r.status, 201, "{}", r.body);

    // 1,990 contacts in one campaign; 30 in another, 10 of them the same
    // people: one credit a unique contact, however many campaigns.
    let first = upload(&stack, "spring", "spring", &leads(0, 1990)).await;
    assert_eq!(count(&first, "held"), 1990);
    let mut autumn = leads(1980, 1990);
    autumn.extend(leads(5000, 5020));
    let second = upload(&stack, "autumn", "autumn", &autumn).await;
    assert_eq!(
        (count(&second, "already_held"), count(&second, "held")),
        (10, 10),
        "10 fit: {second:?}"
    );
    assert_eq!(count(&second, "over_capacity"), 10, "the plan's 2,000 are held");
    assert_eq!(available(&stack.gateway(), &bob, "lead_credits").await, "0");

    // Deleting the leads of a finished campaign frees their credits.
    for (i, chunk) in leads(0, 100).chunks(50).enumerate() {
        let body = json!({ "contacts": chunk });
        let r = post(
            &stack,
            &format!("{org}/contacts/removals"),
            &bob,
            &format!("del-{i}"),
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let third = upload(&stack, "retry", "autumn", &leads(5010, 5020)).await;
    assert_eq!(count(&third, "held"), 10);
    assert_eq!(
        available(&stack.gateway(), &bob, "lead_credits").await,
        "90",
        "1,910 held"
    );

    // Email credits: every email, follow-ups and replies too.
    for (key, action, n) in [
        ("first", "email_send", 5000),
        ("follow", "follow_up", 900),
        ("reply", "reply", 100),
    ] {
        let r = spend_in(&stack, &bob, key, action, n, Some("spring")).await;
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    }
    assert_eq!(available(&stack.gateway(), &bob, "email_credits").await, "0");
    // Spent: no email goes out until the renewal or an upgrade.
    let r = spend_in(&stack, &bob, "one-more", "email_send", 1, None).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (402, Some("urn:credit-ledger:problem:insufficient-credits")),
        "{}",
        r.body
    );
    stack.clock.advance(Duration::days(28));
    renew(&stack).await;
    assert_eq!(
        available(&stack.gateway(), &bob, "email_credits").await,
        "6000",
        "reset monthly"
    );
    assert_eq!(
        available(&stack.gateway(), &bob, "lead_credits").await,
        "90",
        "lead credits do not reset"
    );
    // An upgrade (the service's, once paid): Pro's allowance now, and its 30,000 leads.
    let r = put_subscription(&stack.gateway(), &service, ORG, "pro", r#"{"plan":"pro"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(available(&stack.gateway(), &bob, "email_credits").await, "150000");
    assert_eq!(available(&stack.gateway(), &bob, "lead_credits").await, "28090");
    let fourth = upload(&stack, "big", "winter", &leads(9000, 9100)).await;
    assert_eq!(count(&fourth, "held"), 100);
}

/// `n` email reveals by one user from `from`, each found unless listed in `missing`.
fn reveals(prefix: &str, from: usize, n: usize, missing: usize) -> Vec<(String, String, String)> {
    (from..from + n)
        .map(|i| {
            let outcome = if i < from + missing { "not_found" } else { "found" };
            (
                format!("{prefix}-{i}"),
                format!("person{i}@corp.io"),
                outcome.to_string(),
            )
        })
        .collect()
}

async fn report_reveals(stack: &Stack, user: &str, list: &[(String, String, String)]) {
    for chunk in list.chunks(10) {
        let results: Vec<(&str, &str, &str, &str)> = chunk
            .iter()
            .map(|(id, subject, outcome)| (id.as_str(), "email_reveal", subject.as_str(), outcome.as_str()))
            .collect();
        report_as(stack, user, &results).await;
    }
}

#[tokio::test]
async fn crystal_licenses_first_then_organization_credits_and_no_email_is_ever_paid_twice_across_users_and_months() {
    let stack = Stack::with_catalog("crystal").await;
    let (admin, service) = (stack.admin(), stack.service());
    let org = format!("/v1/orgs/{ORG}");
    // Two licenses of 100 credits a month, billed annually but granted
    // monthly, valid from the day they are issued (Jan 31: renewed Feb 28).
    let r = put_subscription(
        &stack.gateway(),
        &service,
        ORG,
        "sub",
        r#"{"plan":"license_100","seats":2,"billing":"annual"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for (user, role) in [("alice", "admin"), ("bob", "member"), ("carol", "member")] {
        let r = put(
            &stack,
            &format!("{org}/members/{user}"),
            &admin,
            &format!("m-{user}"),
            json!({ "role": role }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let carol = stack.authority.user_token(ORG, "carol", "member", 3600);
    let battery = |body: &Value, user: &str| -> (String, String) {
        let m = body["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user"] == user)
            .unwrap()
            .clone();
        let license = &m["licenses"][0];
        (
            license["left"].as_str().unwrap_or("-").to_string(),
            license["granted"].as_str().unwrap_or("-").to_string(),
        )
    };

    // Bob exports 50 contacts; emails are found for 45: 45 credits, from his license.
    report_reveals(&stack, "bob", &reveals("bob", 0, 50, 5)).await;
    let members = get(&stack, &format!("{org}/members"), &admin).await;
    assert_eq!(
        battery(&members, "bob"),
        ("55".to_string(), "100".to_string()),
        "{members}"
    );
    assert_eq!(battery(&members, "alice"), ("100".to_string(), "100".to_string()));
    // Valid from the day they were issued, for a month.
    assert_eq!(
        members["members"][0]["licenses"][0]["resets_at"], "2026-02-28T00:00:00Z",
        "{members}"
    );
    // Licenses are not transferable: carol has none, and the organization no credits.
    report_as(&stack, "carol", &[("c-1", "email_reveal", "new@corp.io", "found")]).await;
    let b = balance(&stack.gateway(), &admin).await;
    assert_eq!(&b["results"], &json!({ "paused": true, "held": 1 }), "{b}");
    // Add-on credits (bought through the product, for anyone in the organization).
    let r = purchase(
        &stack.gateway(),
        &service,
        "addon",
        r#"{"package":"addon_500","payment_reference":"po-7","user":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call(
        &stack.gateway(),
        "POST",
        &format!("{org}/results/resume"),
        Some(&admin),
        None,
        None,
    )
    .await;
    assert_eq!(r.body["settled"], 1, "{}", r.body);

    // Next month, alice exports 50 contacts: 20 are bob's, already revealed
    // and visible to everyone; she pays for the 30 new ones only.
    stack.clock.advance(Duration::days(28));
    renew(&stack).await;
    let mut alices = reveals("alice", 30, 20, 0);
    alices.extend(reveals("alice", 100, 30, 0));
    report_reveals(&stack, "alice", &alices).await;
    let members = get(&stack, &format!("{org}/members"), &admin).await;
    assert_eq!(
        battery(&members, "alice"),
        ("70".to_string(), "100".to_string()),
        "{members}"
    );
    assert_eq!(
        battery(&members, "bob"),
        ("100".to_string(), "100".to_string()),
        "renewed monthly, not a year at once"
    );
    // Carol reveals one of them again: free, as it is the organization's.
    report_as(&stack, "carol", &[("c-2", "email_reveal", "person40@corp.io", "found")]).await;
    assert_eq!(
        available(&stack.gateway(), &carol, "credits").await,
        "499",
        "the add-on, less carol's first reveal"
    );

    // The history says which budget paid: a license or the organization's credits.
    stack.settle().await;
    let entries = history(&stack, &admin, "action=email_reveal").await;
    let sources = |user: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["user"] == user)
            .flat_map(|e| {
                e["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["source"].as_str().unwrap().to_string())
            })
            .collect()
    };
    assert!(sources("bob").iter().all(|s| s == "license"), "{:?}", sources("bob"));
    assert_eq!(sources("carol"), ["purchased"]);
    let free = entries
        .iter()
        .filter(|e| e["kind"] == "result" && e["lines"].as_array().unwrap().is_empty())
        .count();
    assert_eq!(
        free,
        5 + 20 + 1,
        "not found, or revealed before: no charge, still in the history"
    );
}

#[tokio::test]
async fn autoklose_contacts_reserved_on_upload_partly_when_short_returned_when_removed_refunded_on_bounce_spent_when_sent(
) {
    let stack = Stack::with_catalog("autoklose").await;
    let (bob, service) = (stack.member(), stack.service());
    let org = format!("/v1/orgs/{ORG}");
    let r = subscribe(&stack.gateway(), &stack.service(), ORG, "credits").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = purchase(
        &stack.gateway(),
        &service,
        "buy",
        r#"{"credits":"120","payment_reference":"ak-1","user":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let contacts = |from: usize, to: usize| -> Vec<String> { (from..to).map(|i| format!("db{i}@lead.io")).collect() };

    // Uploading reserves a credit a contact; the third upload finds 20 left.
    for (key, range, reserved, short) in [
        ("u1", (0, 50), 50, 0),
        ("u2", (50, 100), 50, 0),
        ("u3", (100, 150), 20, 30),
    ] {
        let body = json!({ "action": "database_contact", "campaign": "q1", "contacts": contacts(range.0, range.1) });
        let r = post(&stack, &format!("{org}/reservations"), &bob, key, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            (
                r.body["reserved"].as_u64(),
                r.body["not_covered"].as_array().map(Vec::len)
            ),
            (Some(reserved), Some(short)),
            "{}",
            r.body
        );
    }
    let b = balance(&stack.gateway(), &bob).await;
    assert_eq!(
        (
            b["meters"]["credits"]["available"].as_str(),
            b["meters"]["credits"]["reserved"].as_str()
        ),
        (Some("0"), Some("120")),
        "{b}"
    );

    // Ten removed before anything was sent: their credits come back.
    let body = json!({ "campaign": "q1", "contacts": contacts(110, 120) });
    let r = post(&stack, &format!("{org}/reservations/release"), &bob, "removed", body).await;
    assert_eq!((r.status, r.body["returned"].as_str()), (200, Some("10")), "{}", r.body);
    // Sent: the first 100 are spent for good.
    for (key, from) in [("sent-1", 0), ("sent-2", 50)] {
        let body = json!({ "campaign": "q1", "contacts": contacts(from, from + 50) });
        let r = post(&stack, &format!("{org}/reservations/commit"), &bob, key, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Five first emails bounced: refunded once (the product reports it).
    let body = json!({ "campaign": "q1", "contacts": contacts(0, 5) });
    let r = post(
        &stack,
        &format!("{org}/reservations/refund"),
        &service,
        "bounced",
        body.clone(),
    )
    .await;
    assert_eq!((r.status, r.body["returned"].as_str()), (200, Some("5")), "{}", r.body);
    let r = post(
        &stack,
        &format!("{org}/reservations/refund"),
        &service,
        "bounced-again",
        body,
    )
    .await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (409, Some("urn:credit-ledger:problem:unit-state")),
        "{}",
        r.body
    );
    // A removed contact cannot be sent: it is released already.
    let body = json!({ "campaign": "q1", "contacts": contacts(110, 111) });
    let r = post(&stack, &format!("{org}/reservations/commit"), &bob, "late", body).await;
    assert_eq!(r.status, 409, "{}", r.body);

    let b = balance(&stack.gateway(), &bob).await;
    assert_eq!(
        (
            b["meters"]["credits"]["available"].as_str(),
            b["meters"]["credits"]["reserved"].as_str()
        ),
        (Some("15"), Some("10")),
        "{b}"
    );
    // Reserved credits left `available` with their reservations' entries.
    entries_sum_to_the_balance(&stack, "credits").await;
}
