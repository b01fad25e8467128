//! Plan settings and the team, end to end on the local stack: per-user
//! licenses managed over HTTP, rollover, a year granted up front, and
//! several monthly meters renewing on one anchor.

mod common;

use chrono::Duration;
use common::*;
use ledger_domain::Clock;
use ledger_service::SweepLimits;
use serde_json::Value;

fn sweep_all() -> SweepLimits {
    SweepLimits {
        deadline: None,
        max_accounts: usize::MAX,
        concurrency: 4,
    }
}

async fn put_member(stack: &Stack, token: &str, key: &str, user: &str, role: &str) -> HttpReply {
    let gw = stack.gateway();
    let path = format!("/v1/orgs/{ORG}/members/{user}");
    call(
        &gw,
        "PUT",
        &path,
        Some(token),
        Some(key),
        Some(&format!(r#"{{"role":"{role}"}}"#)),
    )
    .await
}

fn license_left(balance: &Value, user: &str) -> Option<String> {
    balance["licenses"]
        .as_array()?
        .iter()
        .find(|l| l["user"] == user)
        .map(|l| l["left"].as_str().unwrap().to_string())
}

/// Every meter's balance equals the sum of its ledger lines.
async fn assert_ledger_sums_to_balance(stack: &Stack, meters: &[&str]) {
    stack.settle().await;
    let gw = stack.gateway();
    let entries = ledger(&gw, &stack.service(), 100).await;
    let seen = balance(&stack.gateway(), &stack.service()).await;
    for meter in meters {
        // The service's view with no user: shared buckets plus every license.
        let held: i64 = seen["meters"][meter]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| thousandths(b["remaining"].as_str().unwrap()))
            .sum();
        assert_eq!(ledger_total(&entries, meter), held, "{meter}");
    }
}

#[tokio::test]
async fn members_spend_their_own_license_first_then_the_organizations_credits() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let (service, admin) = (stack.service(), stack.admin());
    let r = put_subscription(&gw, &service, ORG, "sub", r#"{"plan":"team_licenses","seats":2}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Two seats, three members: the first two to join hold a license.
    for (key, user) in [("m1", "alice"), ("m2", "bob"), ("m3", "carol")] {
        let r = put_member(&stack, &admin, key, user, "member").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A member may not manage the team; the same key on another member is
    // another request, never a replay.
    let r = put_member(&stack, &stack.member(), "m9", "dave", "member").await;
    assert_eq!(
        (r.status, r.body["type"].as_str().unwrap().ends_with("forbidden")),
        (403, true),
        "{}",
        r.body
    );
    let r = put_member(&stack, &admin, "m1", "alice", "admin").await;
    assert_eq!(r.status, 422, "same key, other body: {}", r.body);
    let r = purchase(&gw, &service, "buy", r#"{"credits":"500","payment_reference":"pay-1"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // `gw` was made before the members joined: its cached account misses
    // their licenses. The spend must still draw alice's license first (the
    // store refuses a draw decided on a state that missed a grant).
    let alice = stack.authority.user_token(ORG, "alice", "member", 3600);
    let r = spend(&gw, &alice, "a1", "ai_email_generation", 250).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let paid: Vec<(String, String)> = r.body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap().into(),
                b["amount"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        paid,
        vec![("license".into(), "-200".into()), ("purchased".into(), "-50".into())],
        "her license, then purchased credits"
    );
    // Bob's license is untouched; carol has none and spends the shared pool.
    let b = balance(&stack.gateway(), &stack.member()).await;
    assert_eq!(license_left(&b, "bob").as_deref(), Some("200"));
    assert_eq!(license_left(&b, "alice"), None, "a member sees only their own");
    assert_eq!(b["meters"]["credits"]["available"], "650");
    let carol = stack.authority.user_token(ORG, "carol", "member", 3600);
    let b = balance(&stack.gateway(), &carol).await;
    assert_eq!(b["meters"]["credits"]["available"], "450");
    let r = spend(&gw, &carol, "c1", "ai_email_generation", 451).await;
    assert_eq!(
        (r.status, r.body["available"].as_str()),
        (402, Some("450")),
        "{}",
        r.body
    );
    // Admins see every member's gauge.
    let b = balance(&stack.gateway(), &admin).await;
    assert_eq!(license_left(&b, "alice").as_deref(), Some("0"));
    assert_eq!(license_left(&b, "bob").as_deref(), Some("200"));
    let r = call(&gw, "GET", &format!("/v1/orgs/{ORG}/members"), Some(&admin), None, None).await;
    let members: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec!["alice", "bob", "carol"]);
    assert_eq!(r.body["members"][2]["licenses"], serde_json::json!([]));
    // What each spent, by the usage rollups (no limit counts it on the
    // account): alice 250 today, the others nothing.
    stack.settle().await;
    let r = call(&gw, "GET", &format!("/v1/orgs/{ORG}/members"), Some(&admin), None, None).await;
    let spent: Vec<(&str, &str)> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["controls"]["used_today"].as_str().unwrap(),
                m["controls"]["used_this_period"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(spent, vec![("250", "250"), ("0", "0"), ("0", "0")], "{}", r.body);

    // Bob leaves: what he had left expires and his seat stays used this month.
    let path = format!("/v1/orgs/{ORG}/members/bob");
    let r = call(&gw, "DELETE", &path, Some(&admin), Some("rm-bob"), None).await;
    assert_eq!(
        (r.status, r.body["licenses"][0]["amount"].as_str()),
        (200, Some("-200")),
        "{}",
        r.body
    );
    let r = call(&gw, "DELETE", &path, Some(&admin), Some("rm-bob-2"), None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(license_left(&balance(&stack.gateway(), &carol).await, "carol"), None);
    // A seat bought mid-month: carol's license, the whole month, at once.
    let r = put_subscription(&gw, &service, ORG, "seats-3", r#"{"plan":"team_licenses","seats":3}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        license_left(&balance(&stack.gateway(), &carol).await, "carol").as_deref(),
        Some("200")
    );

    // At the renewal the licenses renew for the members who hold them.
    stack.clock.advance(Duration::days(29));
    assert_eq!(stack.ledger().sweep(sweep_all()).await.unwrap().renewed, 1);
    let b = balance(&stack.gateway(), &admin).await;
    assert_eq!(license_left(&b, "alice").as_deref(), Some("200"));
    assert_eq!(license_left(&b, "carol").as_deref(), Some("200"));
    assert_eq!(license_left(&b, "bob"), None);
    assert_ledger_sums_to_balance(&stack, &["credits"]).await;
}

#[tokio::test]
async fn rollover_and_a_second_monthly_meter_renew_on_the_anchor_and_a_year_up_front_waits() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let service = stack.service();
    // growth: 1,000 credits and 6,000 email sends a month, up to a month's
    // worth of credits rolling over.
    let r = put_subscription(&gw, &service, ORG, "sub", r#"{"plan":"growth"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = spend(&gw, &stack.member(), "s1", "ai_email_generation", 400).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Anchored Jan 31: due Feb 28.
    stack.clock.advance(
        ledger_domain::period::start_of_day(chrono::NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()) - stack.clock.now(),
    );
    assert_eq!(stack.ledger().sweep(sweep_all()).await.unwrap().renewed, 1);
    let b = balance(&stack.gateway(), &service).await;
    assert_eq!(
        b["meters"]["credits"]["available"], "1600",
        "600 carried, 1,000 granted"
    );
    assert_eq!(
        b["meters"]["email_sends"]["available"], "6000",
        "its own meter, same anchor"
    );
    let sources: Vec<&str> = b["meters"]["credits"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, vec!["rollover", "plan"], "carried credits are spent first");
    assert_ledger_sums_to_balance(&stack, &["credits", "email_sends"]).await;

    // Annual billing on this plan grants the year up front; a downgrade
    // then waits for the anniversary, not the next month.
    let annual = r#"{"plan":"growth","billing":"annual"}"#;
    let r = put_subscription(&gw, &service, OTHER_ORG, "g-sub", annual).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let down = r#"{"plan":"starter","billing":"annual"}"#;
    let r = put_subscription(&gw, &service, OTHER_ORG, "g-down", down).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &gw,
        "GET",
        &format!("/v1/orgs/{OTHER_ORG}/balance"),
        Some(&service),
        None,
        None,
    )
    .await;
    assert_eq!(r.body["meters"]["credits"]["available"], "12000");
    assert_eq!(
        r.body["scheduled_change"]["takes_effect"], "2027-02-28T00:00:00Z",
        "{}",
        r.body
    );
}

#[tokio::test]
async fn exhausted_email_sends_refuse_sends_until_the_renewal_while_credit_actions_go_on() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let r = put_subscription(&gw, &stack.service(), ORG, "sub", r#"{"plan":"growth"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let member = stack.member();
    // First emails, follow-ups and replies: one send each, 6,000 a month.
    let r = spend(&gw, &member, "sends-1", "sequence_email", 6_000).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = spend(&gw, &member, "sends-2", "sequence_email", 1).await;
    assert_eq!(
        (r.status, r.body["meter"].as_str(), r.body["available"].as_str()),
        (402, Some("email_sends"), Some("0")),
        "{}",
        r.body
    );
    // Other meters are untouched: AI actions on credits, free actions.
    assert_eq!(spend(&gw, &member, "ai-1", "ai_email_generation", 3).await.status, 200);
    assert_eq!(spend(&gw, &member, "li-1", "linkedin_message", 3).await.status, 200);
    // The renewal restores the month's sends.
    stack.clock.advance(Duration::days(28) + Duration::hours(15));
    let r = spend(&gw, &member, "sends-3", "sequence_email", 1).await;
    assert_eq!(r.status, 200, "renewed on Feb 28: {}", r.body);
    assert_eq!(available(&gw, &member, "email_sends").await, "5999");
    assert_ledger_sums_to_balance(&stack, &["credits", "email_sends"]).await;
}

async fn contacts(stack: &Stack, path: &str, key: &str, contacts: &[String], campaign: Option<&str>) -> HttpReply {
    let mut body = serde_json::json!({ "contacts": contacts });
    if let Some(c) = campaign {
        body["campaign"] = c.into();
    }
    let path = format!("/v1/orgs/{ORG}/{path}");
    call(
        &stack.gateway(),
        "POST",
        &path,
        Some(&stack.member()),
        Some(key),
        Some(&body.to_string()),
    )
    .await
}

fn counted(body: &Value, outcome: &str) -> usize {
    body["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == outcome)
        .count()
}

#[tokio::test]
async fn unique_contacts_take_one_lead_slot_across_campaigns_and_deleting_frees_them() {
    // starter: 400 lead slots.
    let stack = Stack::with_account("starter").await;
    // 500 uploads: 380 contacts, 120 of them uploaded again to a second campaign.
    let first: Vec<String> = (0..380).map(|i| format!("Lead{i}@X.com")).collect();
    let again: Vec<String> = (0..120).map(|i| format!("lead{}@x.com ", i * 3)).collect();
    let mut held = 0;
    for (n, chunk) in first.chunks(50).enumerate() {
        let r = contacts(&stack, "contacts", &format!("up-a-{n}"), chunk, Some("spring")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        held += counted(&r.body, "held");
    }
    for (n, chunk) in again.chunks(50).enumerate() {
        let r = contacts(&stack, "contacts", &format!("up-b-{n}"), chunk, Some("summer")).await;
        assert_eq!(counted(&r.body, "already_held"), chunk.len(), "{}", r.body);
    }
    let b = balance(&stack.gateway(), &stack.member()).await;
    assert_eq!(
        (
            held,
            &b["meters"]["lead_slots"]["used_this_period"],
            &b["meters"]["lead_slots"]["available"]
        ),
        (380, &serde_json::json!("380"), &serde_json::json!("20"))
    );
    // Deleting 50 frees 50; deleting them again frees nothing.
    let gone: Vec<String> = first[..50].to_vec();
    let r = contacts(&stack, "contacts/removals", "rm-1", &gone, None).await;
    assert_eq!(
        (counted(&r.body, "freed"), r.body["used"].as_u64()),
        (50, Some(330)),
        "{}",
        r.body
    );
    let r = contacts(&stack, "contacts/removals", "rm-2", &gone, None).await;
    assert_eq!(counted(&r.body, "not_held"), 50);
    // Beyond the capacity: as many as fit, the rest reported.
    let more: Vec<String> = (0..100).map(|i| format!("new{i}@x.com")).collect();
    let (mut fit, mut over) = (0, 0);
    for (n, chunk) in more.chunks(50).enumerate() {
        let r = contacts(&stack, "contacts", &format!("up-c-{n}"), chunk, None).await;
        fit += counted(&r.body, "held");
        over += counted(&r.body, "over_capacity");
    }
    assert_eq!((fit, over), (70, 30));
    // Racing uploads of overlapping contacts never pass the capacity.
    let r = contacts(&stack, "contacts/removals", "rm-3", &first[50..100], None).await;
    assert_eq!(counted(&r.body, "freed"), 50);
    let racing: Vec<Vec<String>> = (0..6)
        .map(|k| (0..30).map(|i| format!("race{}@x.com", i + k * 5)).collect())
        .collect();
    let replies = futures::future::join_all(racing.iter().enumerate().map(|(k, list)| {
        let stack = &stack;
        async move { call_retrying_contacts(stack, &format!("race-{k}"), list).await }
    }))
    .await;
    let taken: usize = replies.iter().map(|r| counted(&r.body, "held")).sum();
    let b = balance(&stack.gateway(), &stack.member()).await;
    assert_eq!(taken, 50, "55 unique contacts race for 50 slots");
    assert_eq!(b["meters"]["lead_slots"]["used_this_period"], "400");
    assert_eq!(b["meters"]["lead_slots"]["available"], "0");
}

/// An upload retried after a 503, as a client following the contract would.
async fn call_retrying_contacts(stack: &Stack, key: &str, list: &[String]) -> HttpReply {
    loop {
        let r = contacts(stack, "contacts", key, list, None).await;
        if r.status != 503 {
            assert_eq!(r.status, 200, "{}", r.body);
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A change retried under its key replays what it did, even now that the
/// account is as asked (not "nothing to change"); a request that changed
/// nothing keeps that answer under its key; asking again for what is
/// already so, or already scheduled, writes nothing; asking for the plan it
/// has drops a waiting downgrade.
#[tokio::test]
async fn a_change_retried_under_its_key_replays_it_and_asking_again_for_what_is_so_writes_nothing() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let first = put_member(&stack, &stack.admin(), "m-1", "bob", "member").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let joined = first.body["entry_id"]
        .as_str()
        .expect("joining writes an entry")
        .to_string();
    let retry = put_member(&stack, &stack.admin(), "m-1", "bob", "member").await;
    assert_eq!((retry.status, retry.replayed), (200, true), "{}", retry.body);
    assert_eq!(retry.body["entry_id"], joined.as_str(), "the retry names what it wrote");
    // The same role again under a new key: nothing to change, kept so.
    let same = put_member(&stack, &stack.admin(), "m-2", "bob", "member").await;
    assert_eq!((same.status, same.body.get("entry_id")), (200, None), "{}", same.body);
    let path = format!("/v1/orgs/{ORG}/members/bob");
    let r = call(&gw, "DELETE", &path, Some(&stack.admin()), Some("rm-1"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let retry = put_member(&stack, &stack.admin(), "m-2", "bob", "member").await;
    assert_eq!((retry.status, retry.replayed), (200, true), "{}", retry.body);
    let members = get(&stack, &format!("/v1/orgs/{ORG}/members"), &stack.admin()).await;
    assert!(
        !members["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "bob"),
        "a replay brings no one back: {members}"
    );

    // Plans: an upgrade retried replays it; a downgrade asked for twice is
    // scheduled once.
    let upgrade = put_subscription(&gw, &stack.service(), ORG, "up-1", r#"{"plan":"professional"}"#).await;
    assert_eq!(upgrade.status, 200, "{}", upgrade.body);
    let retry = put_subscription(&gw, &stack.service(), ORG, "up-1", r#"{"plan":"professional"}"#).await;
    assert_eq!((retry.status, retry.replayed), (200, true), "{}", retry.body);
    assert_eq!(retry.body, upgrade.body, "the same answer");
    for key in ["down-1", "down-2"] {
        let r = put_subscription(&gw, &stack.admin(), ORG, key, r#"{"plan":"starter"}"#).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["scheduled_change"]["plan"], "starter", "{}", r.body);
    }
    // Asking for the plan it has drops the waiting downgrade (an admin may:
    // it costs nothing); asking again changes nothing.
    for key in ["keep-1", "keep-2"] {
        let r = put_subscription(&gw, &stack.admin(), ORG, key, r#"{"plan":"professional"}"#).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body.get("scheduled_change"), None, "{}", r.body);
    }
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 100).await;
    let kinds = |kind: &str| entries.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!((kinds("membership"), kinds("plan_change")), (2, 3), "{entries:#?}");
    assert_ledger_sums_to_balance(&stack, &["credits"]).await;
}
