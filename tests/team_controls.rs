//! Team controls end to end: a member's daily and monthly limits, blocked
//! actions and campaign budgets, set by admins over HTTP and enforced in the
//! debit's own conditional write, under real concurrency.

mod common;

use chrono::Duration;
use common::*;
use serde_json::{json, Value};

async fn put(stack: &Stack, path: &str, key: &str, body: Value) -> HttpReply {
    let path = format!("/v1/orgs/{ORG}/{path}");
    call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.admin()),
        Some(key),
        Some(&body.to_string()),
    )
    .await
}

/// `n` spends of one credit by the member at once; returns how many were
/// charged, and asserts every other one was refused by `refusal`.
async fn race(stack: &Stack, tag: &str, n: usize, campaign: Option<&str>, refusal: &str) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (gateway, token, key) = (stack.gateway(), stack.member(), format!("{tag}-{i}"));
        let mut body = json!({ "action": "ai_email_generation", "quantity": 1 });
        if let Some(c) = campaign {
            body["campaign"] = json!(c);
        }
        tasks.push(tokio::spawn(async move {
            let path = format!("/v1/orgs/{ORG}/spend");
            call_retrying(&gateway, "POST", &path, &token, &key, &body.to_string())
                .await
                .0
        }));
    }
    let mut charged = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => charged += 1,
            403 => assert!(r.body["type"].as_str().unwrap().ends_with(refusal), "{}", r.body),
            _ => panic!("unexpected {}: {}", r.status, r.body),
        }
    }
    charged
}

async fn available(stack: &Stack) -> String {
    let b = balance(&stack.gateway(), &stack.service()).await;
    b["meters"]["credits"]["available"].as_str().unwrap().to_string()
}

async fn member_controls(stack: &Stack, user: &str) -> Value {
    let path = format!("/v1/orgs/{ORG}/members");
    let r = call(&stack.gateway(), "GET", &path, Some(&stack.admin()), None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == user)
        .map(|m| m["controls"].clone())
        .unwrap()
}

async fn join_bob(stack: &Stack) {
    let r = put(stack, "members/bob", "join", json!({ "role": "member" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn fifty_racing_spends_never_exceed_a_members_daily_or_monthly_limit() {
    // starter: 500 credits shared; bob may spend 30 a day and 45 a month.
    let stack = Stack::with_account("starter").await;
    join_bob(&stack).await;
    let r = put(
        &stack,
        "members/bob/limits",
        "limits",
        json!({ "daily": "30", "monthly": 45 }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(race(&stack, "d1", 50, None, "limit-reached").await, 30, "the day's 30");
    assert_eq!(available(&stack).await, "470", "the pool gave no more");
    let c = member_controls(&stack, "bob").await;
    assert_eq!(
        (c["used_today"].as_str(), c["used_this_period"].as_str()),
        (Some("30"), Some("30"))
    );
    // A refusal says which limit and what is left.
    let r = spend(&stack.gateway(), &stack.member(), "over", "ai_email_generation", 2).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        (
            r.body["limit"].as_str(),
            r.body["left"].as_str(),
            r.body["needed"].as_str()
        ),
        (Some("daily"), Some("0"), Some("2"))
    );
    // The next day the daily limit allows 30 again, the month only 15.
    stack.clock.advance(Duration::days(1));
    assert_eq!(
        race(&stack, "d2", 50, None, "limit-reached").await,
        15,
        "the month's last 15"
    );
    assert_eq!(available(&stack).await, "455");
    // The member sees their own gauge in the balance.
    let b = balance(&stack.gateway(), &stack.member()).await;
    assert_eq!(
        (
            b["controls"]["daily_limit"].as_str(),
            b["controls"]["used_today"].as_str(),
            b["controls"]["used_this_period"].as_str()
        ),
        (Some("30"), Some("15"), Some("45")),
        "{b}"
    );
    // Others in the organization are not limited by bob's limits.
    let r = spend(&stack.gateway(), &stack.admin(), "alice", "ai_email_generation", 100).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(available(&stack).await, "355");
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 100).await;
    assert_eq!(
        ledger_total(&entries, "credits"),
        355_000,
        "history sums to the balance"
    );
}

#[tokio::test]
async fn a_blocked_action_is_refused_by_name_while_others_go_on() {
    let stack = Stack::with_account("starter").await;
    join_bob(&stack).await;
    let r = put(
        &stack,
        "members/bob/limits",
        "block",
        json!({ "blocked_actions": ["ai_email_generation"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = spend(&stack.gateway(), &stack.member(), "ai", "ai_email_generation", 1).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["type"].as_str().unwrap().ends_with("action-blocked"),
        "{}",
        r.body
    );
    assert_eq!(r.body["action"], "ai_email_generation");
    let r = spend(&stack.gateway(), &stack.member(), "send", "email_send", 1).await;
    assert_eq!(r.status, 200, "free actions go on: {}", r.body);
    assert_eq!(available(&stack).await, "500", "nothing charged");
    // An unknown action in the list is a 400 that changes nothing.
    let r = put(
        &stack,
        "members/bob/limits",
        "bad",
        json!({ "blocked_actions": ["teleport"] }),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        member_controls(&stack, "bob").await["blocked_actions"],
        json!(["ai_email_generation"])
    );
    // Lifted: the action works again.
    let r = put(&stack, "members/bob/limits", "lift", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = spend(&stack.gateway(), &stack.member(), "ai-2", "ai_email_generation", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_campaign_budget_holds_under_racing_spends_and_other_campaigns_go_on() {
    let stack = Stack::with_account("starter").await;
    let r = put(&stack, "campaigns/spring/budget", "budget", json!({ "credits": "12" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(race(&stack, "spring", 20, Some("spring"), "limit-reached").await, 12);
    let r = spend(&stack.gateway(), &stack.member(), "other", "ai_email_generation", 5).await;
    assert_eq!(r.status, 200, "no campaign, no budget: {}", r.body);
    let b = balance(&stack.gateway(), &stack.admin()).await;
    assert_eq!(
        b["budgets"]["spring"],
        json!({ "limit": "12", "spent": "12", "left": "0" }),
        "{b}"
    );
    assert_eq!(available(&stack).await, "483");
    // Raised: the campaign spends again, within the new budget.
    let r = put(&stack, "campaigns/spring/budget", "raise", json!({ "credits": "15" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(race(&stack, "spring-2", 5, Some("spring"), "limit-reached").await, 3);
    // A member may not set budgets.
    let path = format!("/v1/orgs/{ORG}/campaigns/spring/budget");
    let body = json!({ "credits": "1000" }).to_string();
    let r = call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.member()),
        Some("m"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 100).await;
    assert_eq!(
        ledger_total(&entries, "credits"),
        480_000,
        "history sums to the balance"
    );
    assert_eq!(entries.iter().filter(|e| e["kind"] == "controls").count(), 2);
}

/// A result reports work already done: it counts against the member's
/// limits and the campaign's budget but is never refused by them, also
/// once they are spent (the store's write must not wait for room).
#[tokio::test]
async fn results_count_past_a_members_limit_and_a_campaign_budget_and_are_charged_all_the_same() {
    use ledger_domain::{ActionId, CampaignId, OrgId, ResultReport, Subject, UserId};
    use ledger_service::Outcome;
    let stack = Stack::with_account("starter").await;
    join_bob(&stack).await;
    let r = put(&stack, "members/bob/limits", "limits", json!({ "daily": "2" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = put(&stack, "campaigns/spring/budget", "budget", json!({ "credits": "1" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ledger = stack.ledger();
    let org = OrgId::parse(ORG).unwrap();
    for n in 0..4 {
        let report = ResultReport {
            request_id: format!("reveal-{n}"),
            action: ActionId::parse("email_reveal").unwrap(),
            subject: Subject::parse(&format!("lead-{n}@x.com")).unwrap(),
            outcome: "found".into(),
            user: Some(UserId::parse("bob").unwrap()),
            campaign: Some(CampaignId::parse("spring").unwrap()),
            occurred_at: start_time(),
        };
        let applied = ledger
            .charge_result(&org, &report)
            .await
            .expect("a result is never refused");
        match applied.outcome {
            Outcome::Result { charge, .. } => assert_eq!(charge.as_str(), "charged", "result {n}"),
            other => panic!("result {n}: {other:?}"),
        }
    }
    let c = member_controls(&stack, "bob").await;
    assert_eq!(c["used_today"].as_str(), Some("4"), "counted past the limit: {c}");
    let b = balance(&stack.gateway(), &stack.admin()).await;
    assert_eq!(b["budgets"]["spring"]["spent"].as_str(), Some("4"), "{b}");
    assert_eq!(available(&stack).await, "496");
    // Bob's own spends stay refused: the limit is spent.
    let r = spend(&stack.gateway(), &stack.member(), "after", "ai_email_generation", 1).await;
    assert_eq!(r.status, 403, "{}", r.body);
}
