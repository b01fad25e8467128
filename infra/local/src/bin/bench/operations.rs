//! DynamoDB requests of the capabilities' operations, each counted on a
//! warm function instance (its account cached by its last write), through
//! the real handlers and consumers: the HTTP routes, the results queue's
//! consumer, the scheduled renewal and the stream function.

use std::sync::Arc;

use anyhow::{ensure, Result};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{Duration, TimeZone, Utc};
use ledger_domain::{Actor, FixedClock, IdempotencyKey, OrgId, Subscription};
use ledger_local::gateway::Gateway;
use ledger_local::streams::StreamPoller;
use ledger_service::{DynamoLedger, Idempotency, SweepLimits};
use serde_json::json;

use super::Bench;

/// The stream function's events go nowhere here: only its reads and
/// writes of the table are counted.
struct NoBus;

impl ledger_store::EventBus for NoBus {
    async fn publish(&self, _events: &[ledger_store::BusEvent]) -> Result<(), ledger_store::StoreError> {
        Ok(())
    }
}

pub async fn requests(bench: &Bench) -> Result<()> {
    println!("\nDynamoDB requests per operation, the capabilities (warm instance unless said):");
    let org = "caps";
    bench.subscribe(org, 1_000_000).await;
    let ledger = Arc::new(bench.ledger(Arc::new(ledger_domain::SystemClock)));
    let gw = bench.gateway(ledger.clone());
    bench.spend(&gw, org, "prime", 1).await;
    member_limit(bench, &gw, org).await?;
    subjects_and_reservations(bench, &gw, org).await;
    results_batch(bench, org).await?;
    renewal(bench).await?;
    stream_batch(bench, &ledger, &gw, org).await
}

async fn member_limit(bench: &Bench, gw: &Gateway, org: &str) -> Result<()> {
    // A member under a per-user limit: the limit is counted and checked in
    // the debit's own write.
    let (s, reply) = bench
        .call(
            gw,
            "PUT",
            "/v1/orgs/caps/members/alice",
            org,
            Some("m1"),
            r#"{"role":"member"}"#,
        )
        .await;
    ensure!(s == 200, "member: {reply}");
    let limits = r#"{"daily":"100000","monthly":"1000000"}"#;
    let (s, reply) = bench
        .call(gw, "PUT", "/v1/orgs/caps/members/alice/limits", org, Some("l1"), limits)
        .await;
    ensure!(s == 200, "limits: {reply}");

    let alice = bench.authority.user_token(org, "alice", "member", 3600);
    let spend = r#"{"action":"ai_email_generation","quantity":1}"#;
    bench
        .count("spend with a per-user limit", async {
            bench
                .call_as(gw, "POST", "/v1/orgs/caps/spend", &alice, Some("a1"), spend)
                .await
                .0
        })
        .await;
    Ok(())
}

async fn subjects_and_reservations(bench: &Bench, gw: &Gateway, org: &str) {
    // Fifty contacts revealed at once, each charged once per organization.
    let service = bench.authority.service_token("bench", 3600);
    let subjects: Vec<_> = (0..50)
        .map(|i| json!({"subject": format!("c{i}@x.com"), "outcome": "found"}))
        .collect();
    let bulk = json!({"action": "email_reveal", "subjects": subjects}).to_string();
    bench
        .count("bulk spend, 50 new subjects", async {
            bench
                .call_as(gw, "POST", "/v1/orgs/caps/spend", &service, Some("b1"), &bulk)
                .await
                .0
        })
        .await;

    // Ten contacts reserved on upload, five sent, five removed.
    let contacts = |range: std::ops::Range<usize>| -> Vec<String> { range.map(|i| format!("r{i}@x.com")).collect() };
    let reserve =
        json!({"action": "ai_email_generation", "campaign": "spring", "contacts": contacts(0..10)}).to_string();
    let commit = json!({"campaign": "spring", "contacts": contacts(0..5)}).to_string();
    let release = json!({"campaign": "spring", "contacts": contacts(5..10)}).to_string();
    for (what, path, key, body) in [
        ("reserve 10 contacts", "/v1/orgs/caps/reservations", "v1", &reserve),
        ("commit 5 of them", "/v1/orgs/caps/reservations/commit", "v2", &commit),
        (
            "release the other 5",
            "/v1/orgs/caps/reservations/release",
            "v3",
            &release,
        ),
    ] {
        bench
            .count(what, async {
                bench.call(gw, "POST", path, org, Some(key), body).await.0
            })
            .await;
    }
}

async fn results_batch(bench: &Bench, org: &str) -> Result<()> {
    // One SQS batch of ten results for one organization, through the
    // results queue's consumer.
    let batch = |from: usize, n: usize| {
        let mut event = SqsEvent::default();
        event.records = (from..from + n)
            .map(|i| {
                let mut m = SqsMessage::default();
                m.message_id = Some(format!("m{i}"));
                m.body = Some(
                    json!({
                        "org": org, "user": "alice", "action": "email_finder",
                        "subject": format!("f{i}@x.com"), "outcome": "deliverable",
                        "request_id": format!("res-{i}"), "occurred_at": "2026-01-31T10:00:00Z",
                    })
                    .to_string(),
                );
                m
            })
            .collect();
        event
    };
    let warm = bench.ledger(Arc::new(ledger_domain::SystemClock));
    ensure!(charged(&warm, batch(0, 1)).await == 200, "a result failed");
    bench
        .count("results batch of 10, one organization", charged(&warm, batch(1, 10)))
        .await;
    let cold = bench.ledger(Arc::new(ledger_domain::SystemClock));
    bench
        .count("results batch of 10, cold instance", charged(&cold, batch(11, 10)))
        .await;
    Ok(())
}

/// The results consumer's answer to a batch as a status: 200 when no
/// message failed.
async fn charged(ledger: &DynamoLedger, event: SqsEvent) -> u16 {
    match results::handle(ledger, event).await.batch_item_failures.is_empty() {
        true => 200,
        false => 500,
    }
}

async fn stream_batch(bench: &Bench, ledger: &DynamoLedger, gw: &Gateway, org: &str) -> Result<()> {
    // One stream batch: the records of ten spends, handed to the stream
    // function as Lambda would (after catching up with what came before).
    let mut stream = StreamPoller::for_table(&bench.config, &bench.table).await?;
    stream.drain(ledger, &NoBus).await?;
    for i in 0..10 {
        bench.spend(gw, org, &format!("st{i}"), 1).await;
    }
    let mut records = 0;
    bench
        .count("stream batch (10 spends' records)", async {
            match stream.drain(ledger, &NoBus).await {
                Ok(n) => {
                    records = n;
                    200
                }
                Err(_) => 500,
            }
        })
        .await;
    println!("    ({records} records: the spends' account changes and entries, and the placements' and rollups' own)");
    Ok(())
}

/// One account's renewal, by the scheduled sweep and lazily by a spend.
async fn renewal(bench: &Bench) -> Result<()> {
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap()));
    let ledger = bench.ledger(clock.clone());
    for org in ["renewed-by-sweep", "renewed-by-spend"] {
        let sub = Subscription::new(ledger.catalog(), "starter", None, None, None)?;
        let key = Idempotency {
            key: IdempotencyKey::parse("sub")?,
            fingerprint: "sub".into(),
        };
        ledger
            .subscribe(&OrgId::parse(org)?, sub, Actor::system(), &key)
            .await?;
    }
    clock.advance(Duration::days(32));
    let sweeping = bench.ledger(clock.clone());
    bench
        .count("renewal, by the sweep (its index query included)", async {
            let limits = SweepLimits {
                deadline: None,
                max_accounts: 1,
                concurrency: 1,
            };
            match sweeping.sweep(limits).await {
                Ok(report) if report.renewed == 1 => 200,
                _ => 500,
            }
        })
        .await;
    let gw = bench.gateway(Arc::new(bench.ledger(clock)));
    let spend = r#"{"action":"ai_email_generation","quantity":1}"#;
    bench
        .count("spend on a due account, cold (renews first)", async {
            bench
                .call(
                    &gw,
                    "POST",
                    "/v1/orgs/renewed-by-spend/spend",
                    "renewed-by-spend",
                    Some("d1"),
                    spend,
                )
                .await
                .0
        })
        .await;
    Ok(())
}
