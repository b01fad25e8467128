//! Reservations end to end: a campaign's units reserved up front,
//! committed when sent, released when removed, refunded when the first
//! email bounces; every transition conditional on the unit's state.

mod common;

use chrono::Duration;
use common::*;
use serde_json::{json, Value};

fn contacts(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("c{i}@x.com")).collect()
}

async fn post(stack: &Stack, path: &str, key: &str, body: Value, token: &str) -> HttpReply {
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

/// Reserves `list` in requests of 50; returns (reserved, not covered).
async fn reserve(stack: &Stack, tag: &str, list: &[String]) -> (u64, usize) {
    let (mut reserved, mut short) = (0, 0);
    for (n, chunk) in list.chunks(50).enumerate() {
        let body = json!({ "action": "ai_email_generation", "campaign": "spring", "contacts": chunk });
        let r = post(stack, "reservations", &format!("{tag}-{n}"), body, &stack.member()).await;
        // Nothing covered at all is a 402 (with what is available).
        if r.status == 402 {
            short += chunk.len();
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        reserved += r.body["reserved"].as_u64().unwrap();
        short += r.body["not_covered"].as_array().unwrap().len();
    }
    (reserved, short)
}

async fn settle(stack: &Stack, transition: &str, tag: &str, list: &[String], token: &str) -> Vec<HttpReply> {
    let mut replies = Vec::new();
    for (n, chunk) in list.chunks(50).enumerate() {
        let body = json!({ "campaign": "spring", "contacts": chunk });
        replies.push(
            post(
                stack,
                &format!("reservations/{transition}"),
                &format!("{tag}-{n}"),
                body,
                token,
            )
            .await,
        );
    }
    replies
}

async fn credits(stack: &Stack) -> (String, String) {
    let b = balance(&stack.gateway(), &stack.member()).await;
    let m = &b["meters"]["credits"];
    (
        m["available"].as_str().unwrap().into(),
        m["reserved"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn a_campaign_reserves_what_the_balance_covers_and_each_unit_settles_once() {
    // starter: 500 credits; a campaign of 600 contacts at 1 credit each.
    let stack = Stack::with_account("starter").await;
    let all = contacts(0..600);
    let body = json!({ "action": "ai_email_generation", "campaign": "spring", "contacts": all[..50], "dry_run": true });
    let quote = post(&stack, "reservations", "-", body, &stack.member()).await;
    assert_eq!(
        (quote.body["reserved"].as_u64(), quote.body["dry_run"].as_bool()),
        (Some(50), Some(true))
    );
    assert_eq!(
        reserve(&stack, "r", &all).await,
        (500, 100),
        "500 reserved, the shortfall reported"
    );
    assert_eq!(credits(&stack).await, ("0".into(), "500".into()));
    // Reserving a contact again reserves nothing more.
    let body = json!({ "action": "ai_email_generation", "campaign": "spring", "contacts": all[..3] });
    let r = post(&stack, "reservations", "again", body, &stack.member()).await;
    assert_eq!(
        (
            r.status,
            r.body["reserved"].as_u64(),
            r.body["already_reserved"].as_array().unwrap().len()
        ),
        (200, Some(0), 3),
        "{}",
        r.body
    );

    // 300 sent, 100 removed before sending, 20 first emails bounced.
    for r in settle(&stack, "commit", "send", &all[..300], &stack.member()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(credits(&stack).await, ("0".into(), "200".into()));
    for r in settle(&stack, "release", "remove", &all[300..400], &stack.member()).await {
        assert_eq!(
            (r.status, r.body["stayed_expired"].as_str()),
            (200, Some("0")),
            "{}",
            r.body
        );
    }
    assert_eq!(credits(&stack).await, ("100".into(), "100".into()));
    for r in settle(&stack, "refund", "bounce", &all[..20], &stack.service()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(credits(&stack).await, ("120".into(), "100".into()));

    // Wrong transitions are clear problems that change nothing.
    let wrong = [
        ("commit", &all[300..301], "commit after release"),
        ("release", &all[300..301], "double release"),
        ("refund", &all[450..451], "refund of an uncommitted unit"),
        ("refund", &all[0..1], "refund twice"),
        ("commit", &all[550..551], "a contact never reserved"),
    ];
    for (transition, list, why) in wrong {
        let r = &settle(
            &stack,
            transition,
            &format!("wrong-{}", why.replace(' ', "-")),
            list,
            &stack.service(),
        )
        .await[0];
        assert_eq!(
            (r.status, r.body["type"].as_str().unwrap().ends_with("unit-state")),
            (409, true),
            "{why}: {}",
            r.body
        );
    }
    assert_eq!(credits(&stack).await, ("120".into(), "100".into()));
    assert_eq!(
        settle(&stack, "refund", "member-refund", &all[20..21], &stack.member()).await[0].status,
        403
    );

    // Commit and release of the same unit at once: exactly one wins.
    let (unit, member) = (&all[450..451], stack.member());
    let (a, b) = tokio::join!(
        settle(&stack, "commit", "race-commit", unit, &member),
        settle(&stack, "release", "race-release", unit, &member)
    );
    let statuses = [a[0].status, b[0].status];
    assert!(statuses.contains(&200) && statuses.contains(&409), "{statuses:?}");

    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 200).await;
    let (available, _) = credits(&stack).await;
    assert_eq!(
        ledger_total(&entries, "credits"),
        thousandths(&available),
        "entries sum to the balance"
    );
}

#[tokio::test]
async fn a_release_after_the_renewal_returns_the_purchased_part_and_the_plan_part_stays_expired() {
    let stack = Stack::with_account("starter").await;
    let r = purchase(
        &stack.gateway(),
        &stack.service(),
        "buy",
        r#"{"credits":"10","payment_reference":"p1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let all = contacts(0..510);
    assert_eq!(reserve(&stack, "r", &all).await, (510, 0));
    // The month renews (Feb 28): the plan's 500 reserved credits are of a
    // month that has ended.
    stack.clock.advance(Duration::days(29));
    let (mut returned, mut expired) = (0, 0);
    for r in settle(&stack, "release", "late", &all, &stack.member()).await {
        assert_eq!(r.status, 200, "{}", r.body);
        returned += thousandths(r.body["returned"].as_str().unwrap());
        expired += thousandths(r.body["stayed_expired"].as_str().unwrap());
    }
    assert_eq!((returned, expired), (10_000, 500_000));
    assert_eq!(
        credits(&stack).await,
        ("510".into(), "0".into()),
        "this month's 500 and the 10 purchased"
    );
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 200).await;
    assert_eq!(ledger_total(&entries, "credits"), 510_000);
}

#[tokio::test]
async fn units_neither_spent_nor_released_by_their_deadline_return_by_the_sweep_once() {
    let stack = Stack::with_account("starter").await;
    let r = purchase(
        &stack.gateway(),
        &stack.service(),
        "buy",
        r#"{"credits":"10","payment_reference":"p1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let all = contacts(0..8);
    assert_eq!(reserve(&stack, "r", &all).await, (8, 0));
    for r in settle(&stack, "commit", "sent", &all[..1], &stack.member()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(credits(&stack).await, ("502".into(), "7".into()));
    // Not due yet: nothing returns.
    assert_eq!(stack.ledger().expire_reservations(None).await.unwrap(), 0);
    // 31 days on (the deadline is 30 days, and the month renewed on Feb 28).
    stack.clock.advance(Duration::days(31));
    let (one, two) = (stack.ledger(), stack.ledger());
    let (first, again) = tokio::join!(one.expire_reservations(None), two.expire_reservations(None));
    assert_eq!(
        first.unwrap() + again.unwrap(),
        7,
        "two sweeps at once return each unit once"
    );
    assert_eq!(stack.ledger().expire_reservations(None).await.unwrap(), 0);
    // The plan credits they held belonged to January: they stay expired.
    assert_eq!(
        credits(&stack).await,
        ("510".into(), "0".into()),
        "February's 500 and the 10 purchased"
    );
    let r = &settle(&stack, "release", "late", &all[1..2], &stack.member()).await[0];
    assert_eq!(r.status, 409, "expired already: {}", r.body);
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 200).await;
    assert_eq!(ledger_total(&entries, "credits"), 510_000);
}

#[tokio::test]
async fn a_campaign_of_two_thousand_contacts_on_fifteen_hundred_credits() {
    // starter's 500 this month and 1,000 purchased.
    let stack = Stack::with_account("starter").await;
    let r = purchase(
        &stack.gateway(),
        &stack.service(),
        "buy",
        r#"{"credits":"1000","payment_reference":"p1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let all = contacts(0..2_000);
    assert_eq!(
        reserve(&stack, "r", &all).await,
        (1_500, 500),
        "1,500 reserved, 500 short"
    );
    assert_eq!(credits(&stack).await, ("0".into(), "1500".into()));
    // 1,000 sent.
    for r in settle(&stack, "commit", "sent", &all[..1_000], &stack.member()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(credits(&stack).await, ("0".into(), "500".into()));
    // 300 removed before sending: back to the purchased pool that paid.
    for r in settle(&stack, "release", "removed", &all[1_000..1_300], &stack.member()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(credits(&stack).await, ("300".into(), "200".into()));
    // 20 first emails bounce: back to this month's plan bucket.
    for r in settle(&stack, "refund", "bounced", &all[..20], &stack.service()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(credits(&stack).await, ("320".into(), "200".into()));
    // The other 200 are left; 31 days on they return by the sweep (to the
    // pool), and the renewal has expired January's 20.
    stack.clock.advance(Duration::days(31));
    assert_eq!(stack.ledger().expire_reservations(None).await.unwrap(), 200);
    assert_eq!(
        credits(&stack).await,
        ("1000".into(), "0".into()),
        "February's 500 and 500 purchased"
    );
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 200).await;
    assert_eq!(
        ledger_total(&entries, "credits"),
        1_000_000,
        "history sums to the balance"
    );
    let kinds = |result: &str| {
        entries
            .iter()
            .filter(|e| e["kind"] == "reservation" && e["result"] == result)
            .count()
    };
    assert_eq!(
        (
            kinds("reserve"),
            kinds("commit"),
            kinds("release"),
            kinds("refund"),
            kinds("expire")
        ),
        (30, 20, 6, 1, 4),
        "every transition is in the history"
    );
}

#[tokio::test]
async fn units_past_their_deadline_return_at_the_accounts_next_use_without_a_sweep() {
    // starter: January's 500 spent, then 10 purchased; 6 units reserved
    // from the pool on Jan 31, one of them sent.
    let stack = Stack::with_account("starter").await;
    let r = spend(&stack.gateway(), &stack.member(), "all", "ai_email_generation", 500).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = purchase(
        &stack.gateway(),
        &stack.service(),
        "buy",
        r#"{"credits":"10","payment_reference":"p1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let all = contacts(0..6);
    assert_eq!(reserve(&stack, "r", &all).await, (6, 0));
    for r in settle(&stack, "commit", "sent", &all[..1], &stack.member()).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let b = balance(&stack.gateway(), &stack.member()).await;
    assert_eq!(b["meters"]["credits"]["reserved"], "5");
    assert_eq!(
        b["meters"]["credits"]["nearest_reserved_expiry"], "2026-03-02",
        "30 days after Jan 31"
    );
    // 31 days on, and no sweep has run: the balance shows them returned.
    stack.clock.advance(Duration::days(31));
    let b = balance(&stack.gateway(), &stack.member()).await;
    assert_eq!(
        (
            b["meters"]["credits"]["available"].as_str(),
            b["meters"]["credits"]["reserved"].as_str()
        ),
        (Some("509"), Some("0")),
        "February's 500, 4 never reserved, 5 returned: {b}"
    );
    assert!(b["meters"]["credits"].get("nearest_reserved_expiry").is_none(), "{b}");
    // The next spend returns them for good before it decides.
    let r = spend(&stack.gateway(), &stack.member(), "after", "ai_email_generation", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(credits(&stack).await, ("508".into(), "0".into()));
    assert_eq!(
        stack.ledger().expire_reservations(None).await.unwrap(),
        0,
        "nothing left for the sweep"
    );
    let r = &settle(&stack, "release", "late", &all[1..2], &stack.member()).await[0];
    assert_eq!(r.status, 409, "returned already: {}", r.body);
    stack.settle().await;
    let entries = ledger(&stack.gateway(), &stack.admin(), 200).await;
    assert_eq!(
        ledger_total(&entries, "credits"),
        508_000,
        "history sums to the balance"
    );
    let expired: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "reservation" && e["result"] == "expire")
        .collect();
    assert_eq!(expired.len(), 1, "one change returned the five");
    assert_eq!(expired[0]["quantity"], 5);
}
