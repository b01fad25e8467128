//! Approvals end to end: a member's spend above the threshold is held
//! pending (credits reserved, not spent) until an admin approves (spent)
//! or denies (returned), or nobody answers and it expires.

mod common;

use chrono::Duration;
use common::*;
use serde_json::{json, Value};

async fn post(stack: &Stack, path: &str, token: &str, key: &str, body: Value) -> HttpReply {
    let path = format!("/v1/orgs/{ORG}/{path}");
    call(
        &stack.gateway(),
        "POST",
        &path,
        Some(token),
        Some(key),
        Some(&body.to_string()),
    )
    .await
}

async fn credits(stack: &Stack) -> (String, String) {
    let b = balance(&stack.gateway(), &stack.admin()).await;
    let m = &b["meters"]["credits"];
    (
        m["available"].as_str().unwrap().into(),
        m["reserved"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn one_approval_approved_one_denied_one_expiring_with_exact_balances() {
    // starter: 500 credits; a member's spend above 100 waits for an admin.
    let stack = Stack::with_account("starter").await;
    let path = format!("/v1/orgs/{ORG}/approvals/threshold");
    let body = json!({ "credits": "100" }).to_string();
    let r = call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.admin()),
        Some("t"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Within the threshold, or by an admin: spent at once.
    let r = spend(&stack.gateway(), &stack.member(), "small", "ai_email_generation", 100).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = spend(
        &stack.gateway(),
        &stack.admin(),
        "admin-big",
        "ai_email_generation",
        150,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits(&stack).await, ("250".into(), "0".into()));
    // Two members' spends above it: held, their credits reserved.
    for (key, quantity) in [("a1", 120), ("a2", 101)] {
        let r = spend(&stack.gateway(), &stack.member(), key, "ai_email_generation", quantity).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(
            (r.body["approval"].as_str(), r.body["state"].as_str()),
            (Some(key), Some("pending"))
        );
    }
    assert_eq!(credits(&stack).await, ("29".into(), "221".into()));
    // One the balance cannot cover is refused, not held.
    let r = spend(&stack.gateway(), &stack.member(), "too-big", "ai_email_generation", 110).await;
    assert_eq!(r.status, 402, "{}", r.body);
    let r = call(
        &stack.gateway(),
        "GET",
        &format!("/v1/orgs/{ORG}/approvals"),
        Some(&stack.admin()),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["approvals"].as_array().unwrap().len(), 2, "{}", r.body);
    // Approved: spent for good. Denied: back where it came from.
    let r = post(&stack, "approvals/a1/approve", &stack.admin(), "yes", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits(&stack).await, ("29".into(), "101".into()));
    let r = post(&stack, "approvals/a2/deny", &stack.admin(), "no", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits(&stack).await, ("130".into(), "0".into()));
    // Each is answered once; a member answers none.
    let r = post(&stack, "approvals/a1/deny", &stack.admin(), "no-again", json!({})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = post(
        &stack,
        "approvals/a2/approve",
        &stack.admin(),
        "yes-after-no",
        json!({}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = post(&stack, "approvals/a2/approve", &stack.member(), "self", json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // A third waits and nobody answers: 8 days on it has returned by itself.
    let r = spend(&stack.gateway(), &stack.member(), "a3", "ai_email_generation", 110).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(credits(&stack).await, ("20".into(), "110".into()));
    stack.clock.advance(Duration::days(8));
    assert_eq!(
        stack.ledger().expire_reservations(None).await.unwrap(),
        1,
        "the sweep returns it"
    );
    assert_eq!(credits(&stack).await, ("130".into(), "0".into()));
    let r = post(&stack, "approvals/a3/approve", &stack.admin(), "late", json!({})).await;
    assert_eq!(r.status, 409, "expired: {}", r.body);
    // The history says each step, and sums to the balance.
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 100).await;
    assert_eq!(ledger_total(&entries, "credits"), 130_000);
    let results: Vec<&str> = entries
        .iter()
        .rev()
        .filter(|e| e["kind"] == "approval")
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["requested", "requested", "approved", "denied", "requested", "expired"]
    );
}
