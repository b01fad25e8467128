//! Low-balance alerts end to end: set over HTTP, crossed by racing spends,
//! notified once per crossing from the table's stream (in-app, and an
//! event on the bus), again after the renewal re-arms them.

mod common;

use chrono::Duration;
use common::*;
use serde_json::{json, Value};

async fn notifications(stack: &Stack) -> Vec<Value> {
    let path = format!("/v1/orgs/{ORG}/notifications");
    let r = call(&stack.gateway(), "GET", &path, Some(&stack.member()), None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["notifications"].as_array().unwrap().clone()
}

#[tokio::test]
async fn thirty_racing_spends_across_the_threshold_notify_once_and_the_renewal_rearms_it() {
    // starter: 500 credits a month; the alert fires below 20 % of it, 100.
    let stack = Stack::with_account("starter").await;
    let path = format!("/v1/orgs/{ORG}/alerts/low-20");
    let body = json!({ "meter": "credits", "percent": 20, "channel": "both" }).to_string();
    let r = call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.admin()),
        Some("alert"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &stack.gateway(),
        "GET",
        &format!("/v1/orgs/{ORG}/alerts"),
        Some(&stack.admin()),
        None,
        None,
    )
    .await;
    assert_eq!(r.body["alerts"][0]["level"], "100", "{}", r.body);
    let r = spend(&stack.gateway(), &stack.member(), "big", "ai_email_generation", 390).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // 110 left: thirty spends of one credit race across 100.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (gateway, token) = (stack.gateway(), stack.member());
        tasks.push(tokio::spawn(async move {
            let body = r#"{"action":"ai_email_generation","quantity":1}"#;
            call_retrying(
                &gateway,
                "POST",
                &format!("/v1/orgs/{ORG}/spend"),
                &token,
                &format!("s-{i}"),
                body,
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    stack.settle().await;
    let notes = notifications(&stack).await;
    assert_eq!(notes.len(), 1, "one crossing, one notification: {notes:?}");
    assert_eq!(
        (
            notes[0]["alert"].as_str(),
            notes[0]["level"].as_str(),
            notes[0]["left"].as_str()
        ),
        (Some("low-20"), Some("100"), Some("99"))
    );
    let events = stack.bus_events().await;
    assert_eq!(events.len(), 1, "one email event: {events:?}");
    assert_eq!(events[0]["notification_id"], notes[0]["id"]);
    // The whole stream delivered again notifies nothing new.
    assert!(stack.redeliver_stream().await > 30);
    assert_eq!(notifications(&stack).await.len(), 1);
    assert_eq!(stack.bus_events().await.len(), 0, "published once");
    // Read over HTTP.
    let id = notes[0]["id"].as_str().unwrap();
    let path = format!("/v1/orgs/{ORG}/notifications/{id}/read");
    let r = call(&stack.gateway(), "POST", &path, Some(&stack.member()), None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(notifications(&stack).await[0]["read"], true);
    let path = format!("/v1/orgs/{ORG}/notifications/nope/read");
    let r = call(&stack.gateway(), "POST", &path, Some(&stack.member()), None, None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // Further spends below the level notify nothing.
    let r = spend(&stack.gateway(), &stack.member(), "more", "ai_email_generation", 50).await;
    assert_eq!(r.status, 200, "{}", r.body);
    stack.settle().await;
    assert_eq!(notifications(&stack).await.len(), 1);
    // The renewal (Feb 28) lifts the balance back to 500: the next fall
    // below 100 notifies again.
    stack.clock.advance(Duration::days(29));
    let r = spend(&stack.gateway(), &stack.member(), "feb", "ai_email_generation", 401).await;
    assert_eq!(r.status, 200, "{}", r.body);
    stack.settle().await;
    let notes = notifications(&stack).await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(
        (notes[0]["left"].as_str(), notes[0]["read"].as_bool()),
        (Some("99"), Some(false))
    );
    assert_eq!(stack.bus_events().await.len(), 1);
}

#[tokio::test]
async fn an_in_app_alert_on_an_amount_puts_nothing_on_the_bus() {
    let stack = Stack::with_account("starter").await;
    let path = format!("/v1/orgs/{ORG}/alerts/under-50");
    let body = json!({ "meter": "credits", "amount": "50", "channel": "in_app" }).to_string();
    let r = call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.admin()),
        Some("a"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A member may not set alerts; a bad one changes nothing.
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
    let bad = json!({ "meter": "credits", "percent": 20, "amount": "5", "channel": "in_app" }).to_string();
    let r = call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.admin()),
        Some("b"),
        Some(&bad),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = spend(&stack.gateway(), &stack.member(), "s", "ai_email_generation", 460).await;
    assert_eq!(r.status, 200, "{}", r.body);
    stack.settle().await;
    let notes = notifications(&stack).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["left"], "40");
    assert_eq!(stack.bus_events().await.len(), 0);
}

#[tokio::test]
async fn top_up_events_are_capped_per_billing_period_however_often_the_balance_falls() {
    // starter: 500 credits; below 100, a top-up event, at most twice a month.
    let stack = Stack::with_account("starter").await;
    let path = format!("/v1/orgs/{ORG}/top-up");
    let body = json!({ "meter": "credits", "below": "100", "monthly_cap": 2 }).to_string();
    let r = call(
        &stack.gateway(),
        "PUT",
        &path,
        Some(&stack.service()),
        Some("t"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let top_ups = |events: Vec<Value>| events.into_iter().filter(|e| e["alert"] == "top-up").count();
    // Falls below three times, each after a purchase lifted it back.
    let mut fell = 0;
    for round in 0..3 {
        let r = spend(
            &stack.gateway(),
            &stack.member(),
            &format!("fall-{round}"),
            "ai_email_generation",
            450,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        fell += 1;
        let body = format!(r#"{{"credits":"450","payment_reference":"top-{round}"}}"#);
        let r = purchase(&stack.gateway(), &stack.service(), &format!("buy-{round}"), &body).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    stack.settle().await;
    assert_eq!(fell, 3);
    assert_eq!(top_ups(stack.bus_events().await), 2, "capped at two this period");
    // Delivered again: still two.
    stack.redeliver_shuffled().await;
    assert_eq!(top_ups(stack.bus_events().await), 0);
    // The next period (Feb 28: its 500 and the 500 purchased) counts afresh.
    stack.clock.advance(Duration::days(29));
    let r = spend(&stack.gateway(), &stack.member(), "march", "ai_email_generation", 950).await;
    assert_eq!(r.status, 200, "{}", r.body);
    stack.settle().await;
    assert_eq!(top_ups(stack.bus_events().await), 1);
}

#[tokio::test]
async fn racing_spends_borrow_no_further_than_the_overdraft_and_a_purchase_repays_it_first() {
    // starter: 500 credits; the service allows 50 below zero.
    let stack = Stack::with_account("starter").await;
    let (gw, service) = (stack.gateway(), stack.service());
    let path = format!("/v1/orgs/{ORG}/overdraft");
    let body = json!({ "meter": "credits", "allowance": "50" }).to_string();
    let r = call(&gw, "PUT", &path, Some(&stack.admin()), Some("od-admin"), Some(&body)).await;
    assert_eq!(
        (r.status, r.body["message"].as_str()),
        (403, Some("Forbidden")),
        "credit before payment is the service's to give (the authorizer refuses a user's token): {}",
        r.body
    );
    let r = call(&gw, "PUT", &path, Some(&service), Some("od-50"), Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let overdraft = |b: &Value| b["meters"]["credits"]["overdraft"].clone();
    assert_eq!(
        overdraft(&balance(&gw, &stack.admin()).await),
        json!({ "allowance": "50", "owed": "0", "balance": "500" })
    );
    let r = spend(&gw, &stack.member(), "most", "ai_email_generation", 480).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // 20 left and 50 to borrow: thirty spends of 3 race for 70.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (gateway, token) = (stack.gateway(), stack.member());
        tasks.push(tokio::spawn(async move {
            let body = r#"{"action":"ai_email_generation","quantity":3}"#;
            call_retrying(
                &gateway,
                "POST",
                &format!("/v1/orgs/{ORG}/spend"),
                &token,
                &format!("race-{i}"),
                body,
            )
            .await
            .0
            .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let charged = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        (charged, statuses.iter().filter(|s| **s == 402).count()),
        (23, 7),
        "23 × 3 = 69 of the 70: {statuses:?}"
    );
    let b = balance(&gw, &stack.admin()).await;
    assert_eq!(
        overdraft(&b),
        json!({ "allowance": "50", "owed": "49", "balance": "-49" })
    );
    assert_eq!(b["meters"]["credits"]["available"], "1", "one credit still to borrow");
    // The allowance cannot go below what is owed.
    let lower = json!({ "meter": "credits", "allowance": "40" }).to_string();
    let r = call(&gw, "PUT", &path, Some(&service), Some("od-40"), Some(&lower)).await;
    assert_eq!(
        (r.status, r.body["type"].as_str(), r.body["owed"].as_str()),
        (409, Some("urn:credit-ledger:problem:overdraft-owed"), Some("49"))
    );
    // A pack repays what is owed first; the rest is the pool's.
    let r = purchase(
        &gw,
        &service,
        "repay",
        r#"{"package":"credits_500","payment_reference":"pay-od"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let b = balance(&gw, &stack.admin()).await;
    assert_eq!(
        overdraft(&b),
        json!({ "allowance": "50", "owed": "0", "balance": "451" })
    );
    assert_eq!(b["meters"]["credits"]["available"], "501");
    // Every credit accounted for: the entries sum to the balance.
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 100).await;
    assert_eq!(ledger_total(&entries, "credits"), thousandths("451"));
    let repaid: Vec<&Value> = entries[0]["lines"].as_array().unwrap().iter().collect();
    assert_eq!(
        repaid
            .iter()
            .map(|l| (l["source"].as_str(), l["amount"].as_str()))
            .collect::<Vec<_>>(),
        vec![(Some("overdraft"), Some("49")), (Some("purchased"), Some("451"))],
        "{repaid:?}"
    );
}
