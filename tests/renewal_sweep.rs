//! The scheduled renewal against DynamoDB Local: every due account renewed
//! once, whatever cuts a sweep off, however many sweeps and spends race.

mod common;

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, NaiveDate};
use common::*;
use futures::future::join_all;
use futures::StreamExt;
use ledger_domain::{Actor, Clock, OrgId, Subscription};
use ledger_service::{Idempotency, SweepLimits};

fn limits(max_accounts: usize) -> SweepLimits {
    SweepLimits {
        deadline: None,
        max_accounts,
        concurrency: 16,
    }
}

/// The renewal entries of the table, as (org, period start).
async fn renewals(stack: &Stack) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let out = stack
            .client
            .scan()
            .table_name(&stack.table)
            .filter_expression("begins_with(sk, :r)")
            .expression_attribute_values(":r", AttributeValue::S("RENEWAL#".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in out.items.unwrap_or_default() {
            let s = |k: &str| match &item[k] {
                AttributeValue::S(v) => v.clone(),
                _ => panic!("{k}"),
            };
            found.push((s("pk"), s("sk")));
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            return found;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_renews_every_due_account_once_even_when_cut_off_midway() {
    let stack = Stack::new().await;
    let ledger = stack.ledger();
    // Accounts anchored over four days: 500 here, 2,000 with `make sweep-test`.
    let total: usize = std::env::var("LEDGER_SWEEP_ACCOUNTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let per_day = total / 4;
    let total = per_day * 4;
    for day in 0..4 {
        let subscribing = (0..per_day).map(|i| {
            let ledger = &ledger;
            async move {
                let org = OrgId::parse(&format!("org-{day}-{i}")).unwrap();
                let sub = Subscription::new(ledger.catalog(), "starter", None, None, None).unwrap();
                let key = Idempotency {
                    key: ledger_domain::IdempotencyKey::parse("sub").unwrap(),
                    fingerprint: "sub".into(),
                };
                ledger.subscribe(&org, sub, Actor::system(), &key).await.unwrap();
            }
        });
        // Sixteen at a time, as many function instances would.
        futures::stream::iter(subscribing)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        stack.clock.advance(Duration::days(1));
    }
    // Nothing is due yet: a sweep renews nothing.
    assert_eq!(ledger.sweep(limits(usize::MAX)).await.unwrap().renewed, 0);

    // A month later every account is due. The first invocation is cut off
    // after a third of them; the next picks up the rest, a third finds none.
    stack.clock.advance(Duration::days(31));
    let cut = total / 3;
    let first = ledger.sweep(limits(cut)).await.unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.renewed, cut);
    let second = stack.ledger().sweep(limits(usize::MAX)).await.unwrap();
    assert_eq!((second.renewed, second.failed), (total - cut, 0), "{second:?}");
    let third = stack.ledger().sweep(limits(usize::MAX)).await.unwrap();
    assert_eq!(third.renewed, 0);

    let found = renewals(&stack).await;
    let orgs: BTreeSet<&String> = found.iter().map(|(pk, _)| pk).collect();
    assert_eq!(
        (found.len(), orgs.len()),
        (total, total),
        "each account renewed exactly once"
    );
    println!("{total} accounts renewed once each, the first sweep cut off after {cut}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweeps_and_twenty_spends_racing_at_the_renewal_instant_grant_once() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    assert_eq!(
        spend(&gw, &stack.member(), "before", "ai_email_generation", 100)
            .await
            .status,
        200
    );
    // The renewal instant: Feb 28, 00:00 UTC (anchored on Jan 31).
    let renews_at = ledger_domain::period::start_of_day(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap());
    stack.clock.advance(renews_at - stack.clock.now());

    let sweeps = (0..2).map(|_| {
        let ledger = stack.ledger();
        tokio::spawn(async move { ledger.sweep(limits(usize::MAX)).await.unwrap() })
    });
    let member = stack.member();
    let spends = (0..20).map(|i| {
        let gateway = stack.gateway();
        let token = member.clone();
        tokio::spawn(async move {
            let body = r#"{"action":"ai_email_generation","quantity":3}"#;
            call_retrying(
                &gateway,
                "POST",
                "/v1/orgs/acme/spend",
                &token,
                &format!("at-{i}"),
                body,
            )
            .await
            .0
            .status
        })
    });
    let (sweeps, spends) = futures::join!(join_all(sweeps), join_all(spends));
    let renewed: usize = sweeps.into_iter().map(|r| r.unwrap().renewed).sum();
    assert!(spends.into_iter().all(|s| s.unwrap() == 200));
    assert!(renewed <= 1, "the sweeps renewed {renewed} times");

    // One renewal in all (by a sweep or a spend), 400 of last month's plan
    // expired, 500 granted, every spend in the new month.
    assert_eq!(renewals(&stack).await.len(), 1);
    assert_eq!(available(&gw, &member, "credits").await, "440");
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 200).await;
    assert_eq!(ledger_total(&entries, "credits"), thousandths("440"));
    let seqs: BTreeSet<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=23).collect(),
        "subscription, spend, renewal, 20 spends: no gap"
    );
}

#[tokio::test]
async fn an_account_anchored_on_the_31st_renews_on_its_day_for_fourteen_months() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let sub = r#"{"plan":"business","billing":"annual"}"#;
    let r = call(
        &gw,
        "PUT",
        "/v1/orgs/acme/subscription",
        Some(&stack.service()),
        Some("sub"),
        Some(sub),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let expected = [
        (2026, 2, 28),
        (2026, 3, 31),
        (2026, 4, 30),
        (2026, 5, 31),
        (2026, 6, 30),
        (2026, 7, 31),
        (2026, 8, 31),
        (2026, 9, 30),
        (2026, 10, 31),
        (2026, 11, 30),
        (2026, 12, 31),
        (2027, 1, 31),
        (2027, 2, 28),
        (2027, 3, 31),
    ];
    let service = stack.ledger();
    for (n, (y, m, d)) in expected.into_iter().enumerate() {
        let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        // An hour before its day: not due.
        let at = ledger_domain::period::start_of_day(day);
        stack.clock.advance(at - Duration::hours(1) - stack.clock.now());
        assert_eq!(
            service.sweep(limits(usize::MAX)).await.unwrap().renewed,
            0,
            "early on {day}"
        );
        // Spend a little of the month, then the sweep at 00:05 renews it.
        let r = spend(&gw, &stack.member(), &format!("m-{n}"), "ai_email_generation", 7).await;
        assert_eq!(r.status, 200, "{}", r.body);
        stack.clock.advance(Duration::minutes(65));
        assert_eq!(service.sweep(limits(usize::MAX)).await.unwrap().renewed, 1, "on {day}");
        let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&stack.member()), None, None)
            .await
            .body;
        assert_eq!(balance["period"]["start"], day.to_string());
        assert_eq!(
            balance["meters"]["credits"]["available"], "5000",
            "annual billing grants monthly"
        );
    }
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 200).await;
    let renewals: Vec<&serde_json::Value> = entries.iter().filter(|e| e["kind"] == "renewal").collect();
    assert_eq!(renewals.len(), 14);
    for r in renewals {
        // Each renewal expired what was left (5,000 - 7) and granted 5,000.
        let lines: Vec<&str> = r["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["amount"].as_str().unwrap())
            .collect();
        assert_eq!(lines, vec!["-4993", "5000"], "{r}");
    }
}

#[tokio::test]
async fn the_service_renews_one_account_now_and_only_once() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let renew = |token: String| {
        let gw = &gw;
        async move { call(gw, "POST", "/v1/orgs/acme/renewals", Some(&token), None, None).await }
    };
    // Users may not; the service may, and nothing is due yet.
    assert_eq!(renew(stack.admin()).await.status, 403);
    let r = renew(stack.service()).await;
    assert_eq!(
        (r.status, r.body["renewed"].as_bool()),
        (200, Some(false)),
        "{}",
        r.body
    );
    assert_eq!(r.body["next_renewal"], "2026-02-28T00:00:00Z");

    // Two months late: one renewal into the current month, then nothing.
    stack.clock.advance(Duration::days(60));
    let r = renew(stack.service()).await;
    assert_eq!((r.status, r.body["renewed"].as_bool()), (201, Some(true)), "{}", r.body);
    assert_eq!(r.body["entry"]["kind"], "renewal");
    assert_eq!(renew(stack.service()).await.body["renewed"], false);
    let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&stack.member()), None, None)
        .await
        .body;
    assert_eq!(balance["period"]["start"], "2026-03-31");
    assert_eq!(
        balance["meters"]["credits"]["available"], "500",
        "nothing of the skipped month"
    );
    assert_eq!(renewals(&stack).await.len(), 1);
}

#[tokio::test]
async fn cancel_keeps_what_was_paid_for_and_subscribing_again_never_repeats_the_trial() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let (admin, member) = (stack.admin(), stack.member());
    let cancel = |key: &'static str| {
        let (gw, admin) = (&gw, admin.clone());
        async move {
            call(
                gw,
                "DELETE",
                "/v1/orgs/acme/subscription",
                Some(&admin),
                Some(key),
                None,
            )
            .await
        }
    };
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "free_trial").await.status, 201);
    let r = purchase(
        &gw,
        &stack.service(),
        "p-1",
        r#"{"credits":"40","payment_reference":"cancel-1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(spend(&gw, &member, "s-1", "ai_email_generation", 100).await.status, 200);

    // Members may not cancel; admins may, once.
    let r = call(
        &gw,
        "DELETE",
        "/v1/orgs/acme/subscription",
        Some(&member),
        Some("c-0"),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = cancel("c-1").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.body
    );
    assert!(cancel("c-1").await.replayed, "a retry replays");
    let r = cancel("c-2").await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (409, Some("urn:credit-ledger:problem:subscription-cancelled"))
    );
    // What was granted stays usable: the trial's 400 and the 40 bought.
    assert_eq!(available(&gw, &member, "credits").await, "440");
    assert_eq!(spend(&gw, &member, "s-2", "ai_email_generation", 10).await.status, 200);

    // Subscribing again, weeks later: a new anchor, a first month, no second trial.
    stack.clock.advance(Duration::days(40));
    let body = Some(r#"{"plan":"starter"}"#);
    // Not the admin's to do: it grants a month that must be paid for.
    let r = call(
        &gw,
        "PUT",
        "/v1/orgs/acme/subscription",
        Some(&admin),
        Some("sub-2-admin"),
        body,
    )
    .await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (403, Some("urn:credit-ledger:problem:paid-by-service"))
    );
    let r = call(
        &gw,
        "PUT",
        "/v1/orgs/acme/subscription",
        Some(&stack.service()),
        Some("sub-2"),
        body,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["anchor"], "2026-03-12");
    assert_eq!(available(&gw, &member, "credits").await, "930");
    let r = cancel("c-3").await;
    assert_eq!(r.status, 200);
    let r = call(
        &gw,
        "PUT",
        "/v1/orgs/acme/subscription",
        Some(&stack.service()),
        Some("sub-again"),
        Some(r#"{"plan":"free_trial"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&member), None, None)
        .await
        .body;
    let trial: Vec<&serde_json::Value> = balance["meters"]["credits"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["source"] == "trial")
        .collect();
    assert_eq!(
        (trial.len(), trial[0]["granted"].as_str()),
        (1, Some("500")),
        "the trial once, ever"
    );
    assert_eq!(
        balance["meters"]["credits"]["available"], "430",
        "starter's month expired on the change"
    );
    stack.settle().await;
    let entries = ledger(&gw, &admin, 100).await;
    assert_eq!(ledger_total(&entries, "credits"), thousandths("430"));
}

#[tokio::test]
async fn an_upgrade_applies_now_once_and_a_downgrade_at_the_renewal() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let (admin, member, service) = (stack.admin(), stack.member(), stack.service());
    assert_eq!(spend(&gw, &member, "s-1", "ai_email_generation", 100).await.status, 200);
    stack.clock.advance(Duration::days(10));
    let change = |token: &str, key: &str, plan: &str| {
        let (gw, token, key) = (&gw, token.to_string(), key.to_string());
        let body = format!(r#"{{"plan":"{plan}"}}"#);
        async move {
            call(
                gw,
                "PUT",
                "/v1/orgs/acme/subscription",
                Some(&token),
                Some(&key),
                Some(&body),
            )
            .await
        }
    };
    // An upgrade grants paid credits: the service's, never an admin's.
    let r = change(&admin, "up-admin", "professional").await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (403, Some("urn:credit-ledger:problem:paid-by-service"))
    );
    let r = change(&service, "up-1", "professional").await;
    assert_eq!(
        (r.status, r.body["plan"].as_str()),
        (200, Some("professional")),
        "{}",
        r.body
    );
    assert_eq!(r.body["granted"][0]["amount"], "1500", "the difference, for this month");
    assert!(
        change(&service, "up-1", "professional").await.replayed,
        "granted once, even on retry"
    );
    assert_eq!(available(&gw, &member, "credits").await, "1900");

    // An admin downgrades: nothing changes until the renewal, balance says when.
    let r = change(&admin, "down-1", "starter").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&member), None, None)
        .await
        .body;
    assert_eq!(balance["plan"], "professional");
    assert_eq!(balance["scheduled_change"]["plan"], "starter");
    assert_eq!(balance["scheduled_change"]["takes_effect"], "2026-02-28T00:00:00Z");
    assert_eq!(balance["meters"]["credits"]["available"], "1900");

    stack.clock.advance(Duration::days(20));
    assert_eq!(stack.ledger().sweep(limits(usize::MAX)).await.unwrap().renewed, 1);
    let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&member), None, None)
        .await
        .body;
    assert_eq!(balance["plan"], "starter");
    assert!(balance.get("scheduled_change").is_none());
    assert_eq!(balance["meters"]["credits"]["available"], "500");
    stack.settle().await;
    let entries = ledger(&gw, &admin, 100).await;
    assert_eq!(entries.iter().filter(|e| e["kind"] == "plan_change").count(), 2);
    assert_eq!(ledger_total(&entries, "credits"), thousandths("500"));
}

#[tokio::test]
async fn a_schedule_missing_two_months_then_a_spend_renews_once_into_the_current_month() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let r = spend(&gw, &stack.member(), "jan", "ai_email_generation", 100).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // No sweep ran on Feb 28 or Mar 31; the first use is on Apr 10.
    stack.clock.advance(Duration::days(69));
    let r = spend(&gw, &stack.member(), "apr", "ai_email_generation", 501).await;
    assert_eq!(
        (r.status, r.body["available"].as_str()),
        (402, Some("500")),
        "this month's 500 only: {}",
        r.body
    );
    let r = spend(&gw, &stack.member(), "apr-2", "ai_email_generation", 500).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        renewals(&stack).await,
        vec![("ORG#acme".to_string(), "RENEWAL#2026-03-31".to_string())]
    );
    // The sweep after it finds nothing due.
    assert_eq!(stack.ledger().sweep(limits(usize::MAX)).await.unwrap().renewed, 0);
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 50).await;
    assert_eq!(
        ledger_total(&entries, "credits"),
        0,
        "400 expired, 500 granted and spent"
    );
}
