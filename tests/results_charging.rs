//! Success-only charging end to end: result messages on moto's SQS, the
//! results function as Lambda's event source mapping would call it, the
//! charges on DynamoDB Local.

mod common;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Duration;
use common::*;
use ledger_domain::{ActionId, ResultReport, Subject, UserId};
use ledger_local::results_queue::QueuePoller;
use serde_json::{json, Value};

struct Queues {
    sqs: aws_sdk_sqs::Client,
    results: String,
    dead_letters: String,
}

async fn queues(stack: &Stack) -> Queues {
    let sqs = aws_sdk_sqs::Client::new(&stack.config);
    let prefix = format!("{}-", stack.table);
    let created = stack.template.create_queues(&sqs, &prefix).await.unwrap();
    let url = |id: &str| created.iter().find(|(q, _)| q == id).unwrap().1.clone();
    Queues {
        results: url("ResultsQueue"),
        dead_letters: url("ResultsDeadLetterQueue"),
        sqs,
    }
}

fn message(request_id: &str, action: &str, subject: &str, outcome: &str) -> String {
    json!({
        "org": ORG, "user": "bob", "action": action, "subject": subject, "outcome": outcome,
        "campaign": "spring", "request_id": request_id, "occurred_at": "2026-01-31T10:00:00Z",
    })
    .to_string()
}

async fn send(q: &Queues, bodies: &[String]) {
    for body in bodies {
        q.sqs
            .send_message()
            .queue_url(&q.results)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
}

async fn dead_letter_count(q: &Queues) -> u64 {
    let attrs = q
        .sqs
        .get_queue_attributes()
        .queue_url(&q.dead_letters)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    attrs[&QueueAttributeName::ApproximateNumberOfMessages].parse().unwrap()
}

async fn results(stack: &Stack) -> Vec<Value> {
    stack.settle().await;
    let mut entries = ledger(&stack.gateway(), &stack.admin(), 100).await;
    entries.retain(|e| e["kind"] == "result" || e["kind"] == "result_held");
    entries.reverse();
    entries
}

#[tokio::test]
async fn each_result_is_charged_once_however_delivered_and_poison_goes_to_the_dead_letter_queue() {
    let stack = Stack::with_account("starter").await;
    let q = queues(&stack).await;
    let finder = [
        ("r1", "a@x.com", "deliverable"),
        ("r2", "b@x.com", "risky"),
        ("r3", "c@x.com", "invalid"),
        ("r4", "d@x.com", "not_found"),
    ];
    let once: Vec<String> = finder
        .iter()
        .map(|(id, s, o)| message(id, "email_finder", s, o))
        .collect();
    send(&q, &once).await;
    // A poison message and a result for an organization with no account.
    send(&q, &["{\"org\": \"acme\", \"oops\": true}".to_string()]).await;
    let stranger = message("r9", "email_finder", "z@x.com", "deliverable").replace("\"acme\"", "\"nobody\"");
    send(&q, &[stranger]).await;
    let poller = QueuePoller::new(&stack.config, &q.results);
    let first = poller.drain(&stack.ledger()).await.unwrap();
    assert_eq!(first.messages - first.failed, 4, "{first:?}");
    // Everything again, in another order, in other batches.
    let mut again = once.clone();
    again.reverse();
    send(&q, &again).await;
    let second = poller.drain(&stack.ledger()).await.unwrap();
    assert_eq!((second.messages, second.failed), (4, 0), "{second:?}");

    assert_eq!(dead_letter_count(&q).await, 2, "the poison message and the stranger's");
    assert_eq!(
        available(&stack.gateway(), &stack.member(), "credits").await,
        "490",
        "5 + 5"
    );
    let charged: Vec<(String, String, String)> = results(&stack)
        .await
        .iter()
        .map(|e| {
            let amount = e["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["amount"].as_str().unwrap().to_string())
                .next();
            (
                e["subject"].as_str().unwrap().into(),
                e["result"].as_str().unwrap().into(),
                amount.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        charged,
        vec![
            ("a@x.com".into(), "deliverable".into(), "-5".into()),
            ("b@x.com".into(), "risky".into(), "-5".into()),
            ("c@x.com".into(), "invalid".into(), String::new()),
            ("d@x.com".into(), "not_found".into(), String::new()),
        ]
    );
}

/// A result for `action` as the service operation takes it.
fn report(id: &str, action: &str, subject: &str, outcome: &str, user: &str) -> ResultReport {
    ResultReport {
        request_id: id.into(),
        action: ActionId::parse(action).unwrap(),
        subject: Subject::parse(subject).unwrap(),
        outcome: outcome.into(),
        user: Some(UserId::parse(user).unwrap()),
        campaign: None,
        occurred_at: start_time(),
    }
}

#[tokio::test]
async fn a_revealed_subject_is_never_charged_twice_and_a_dedup_window_runs_out() {
    let stack = Stack::with_account("starter").await;
    let ledger = stack.ledger();
    let org = ledger_domain::OrgId::parse(ORG).unwrap();
    let charge = |r: ResultReport| {
        let ledger = &ledger;
        let org = &org;
        async move {
            match ledger.charge_result(org, &r).await.unwrap().outcome {
                ledger_service::Outcome::Result { charge, .. } => charge.as_str(),
                other => panic!("{other:?}"),
            }
        }
    };
    // Bob reveals three emails; one is not found.
    assert_eq!(
        charge(report("b1", "email_reveal", "Ann@x.com", "found", "bob")).await,
        "charged"
    );
    assert_eq!(
        charge(report("b2", "email_reveal", "ben@x.com", "found", "bob")).await,
        "charged"
    );
    assert_eq!(
        charge(report("b3", "email_reveal", "cy@x.com", "not_found", "bob")).await,
        "free"
    );
    // Alice, later, asks for the same people: what bob unlocked is free.
    assert_eq!(
        charge(report("a1", "email_reveal", "ann@x.com ", "found", "alice")).await,
        "already_unlocked"
    );
    assert_eq!(
        charge(report("a2", "email_reveal", "ben@x.com", "found", "alice")).await,
        "already_unlocked"
    );
    assert_eq!(
        charge(report("a3", "email_reveal", "cy@x.com", "found", "alice")).await,
        "charged"
    );
    assert_eq!(available(&stack.gateway(), &stack.member(), "credits").await, "497");

    // Phone numbers: once per 90 days.
    assert_eq!(
        charge(report("p1", "phone_lookup", "+15550100", "found", "bob")).await,
        "charged"
    );
    stack.clock.advance(Duration::days(89));
    assert_eq!(
        charge(report("p2", "phone_lookup", "+15550100", "found", "bob")).await,
        "already_unlocked"
    );
    stack.clock.advance(Duration::days(2));
    assert_eq!(
        charge(report("p3", "phone_lookup", "+15550100", "found", "bob")).await,
        "charged"
    );
    // Racing colleagues unlock a subject once.
    let racing = futures::future::join_all((0..8).map(|i| {
        charge(report(
            &format!("race-{i}"),
            "email_reveal",
            "dee@x.com",
            "found",
            "bob",
        ))
    }))
    .await;
    assert_eq!(racing.iter().filter(|c| **c == "charged").count(), 1, "{racing:?}");
    assert_eq!(racing.iter().filter(|c| **c == "already_unlocked").count(), 7);
}

#[tokio::test]
async fn results_the_balance_cannot_pay_are_held_until_a_top_up_and_a_resume() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let r = spend(&gw, &stack.member(), "most", "ai_email_generation", 490).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let q = queues(&stack).await;
    let bodies: Vec<String> = (1..=5)
        .map(|i| message(&format!("f{i}"), "email_finder", &format!("p{i}@x.com"), "deliverable"))
        .collect();
    send(&q, &bodies).await;
    let delivered = QueuePoller::new(&stack.config, &q.results)
        .drain(&stack.ledger())
        .await
        .unwrap();
    assert_eq!(delivered.failed, 0, "{delivered:?}");
    // 10 credits pay two results; three are held and charging pauses.
    let b = balance(&gw, &stack.admin()).await;
    assert_eq!(
        (b["meters"]["credits"]["available"].as_str(), &b["results"]),
        (Some("0"), &json!({"paused": true, "held": 3}))
    );

    let resume = || async {
        call(
            &gw,
            "POST",
            &format!("/v1/orgs/{ORG}/results/resume"),
            Some(&stack.admin()),
            None,
            None,
        )
        .await
    };
    assert_eq!(
        call(
            &gw,
            "POST",
            &format!("/v1/orgs/{ORG}/results/resume"),
            Some(&stack.member()),
            None,
            None
        )
        .await
        .status,
        403
    );
    let r = purchase(
        &gw,
        &stack.service(),
        "top-up-1",
        r#"{"credits":"12","payment_reference":"t1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Paused: a result arriving after the top-up waits behind the held ones.
    send(&q, &[message("f6", "email_finder", "p6@x.com", "deliverable")]).await;
    QueuePoller::new(&stack.config, &q.results)
        .drain(&stack.ledger())
        .await
        .unwrap();
    let r = resume().await;
    assert_eq!(
        r.body,
        json!({"settled": 2, "held": 2, "paused": true}),
        "12 credits pay two of four"
    );
    let r = purchase(
        &gw,
        &stack.service(),
        "top-up-2",
        r#"{"credits":"10","payment_reference":"t2"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = resume().await;
    assert_eq!(r.body, json!({"settled": 2, "held": 0, "paused": false}));
    assert_eq!(available(&gw, &stack.member(), "credits").await, "2");
    // Charged in arrival order.
    let charged: Vec<String> = results(&stack)
        .await
        .iter()
        .filter(|e| e["kind"] == "result")
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        charged,
        vec!["p1@x.com", "p2@x.com", "p3@x.com", "p4@x.com", "p5@x.com", "p6@x.com"]
    );
    let entries = ledger(&gw, &stack.admin(), 100).await;
    assert_eq!(ledger_total(&entries, "credits"), 2_000, "entries sum to the balance");
}

fn outcomes(body: &Value) -> Vec<String> {
    body["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}={}", s["subject"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_bulk_reveal_charges_only_new_found_subjects_and_a_repeat_charges_nothing() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let service = stack.service();
    let reveal = |key: &str, subjects: Value, dry_run: bool| {
        let body =
            json!({ "action": "email_reveal", "subjects": subjects, "user": "bob", "dry_run": dry_run }).to_string();
        let gw = &gw;
        let service = &service;
        let key = key.to_string();
        async move {
            let key = (!dry_run).then_some(key);
            call(
                gw,
                "POST",
                &format!("/v1/orgs/{ORG}/spend"),
                Some(service),
                key.as_deref(),
                Some(&body),
            )
            .await
        }
    };
    let found = |s: &str| json!({ "subject": s, "outcome": "found" });
    // A colleague revealed two of them last week.
    let r = reveal("alice", json!([found("ann@x.com"), found("ben@x.com")]), false).await;
    assert_eq!((r.status, r.body["charged"].as_str()), (200, Some("2")), "{}", r.body);

    let list = json!([
        found("Ann@X.com"),
        found("ben@x.com"),
        { "subject": "cy@x.com", "outcome": "not_found" },
        found("dee@x.com"),
        found("eve@x.com"),
        found("dee@x.com"),
    ]);
    let quote = reveal("-", list.clone(), true).await;
    let r = reveal("bob", list.clone(), false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let expected = vec![
        "ann@x.com=already_unlocked",
        "ben@x.com=already_unlocked",
        "cy@x.com=not_billable",
        "dee@x.com=charged",
        "eve@x.com=charged",
        "dee@x.com=duplicate",
    ];
    assert_eq!(outcomes(&r.body), expected);
    assert_eq!(
        (r.body["quantity"].as_u64(), r.body["charged"].as_str()),
        (Some(2), Some("2"))
    );
    assert_eq!(outcomes(&quote.body), expected, "the dry run said the same");
    // The same list again, under a new key: nothing is new.
    let again = reveal("bob-again", list, false).await;
    assert_eq!(
        (again.body["quantity"].as_u64(), again.body["charged"].as_str()),
        (Some(0), Some("0")),
        "{}",
        again.body
    );
    assert_eq!(available(&gw, &stack.member(), "credits").await, "496");
    // A result for an unlocked subject arriving by the queue is free too.
    let org = ledger_domain::OrgId::parse(ORG).unwrap();
    let applied = stack
        .ledger()
        .charge_result(&org, &report("q1", "email_reveal", "eve@x.com", "found", "carl"))
        .await
        .unwrap();
    assert!(matches!(
        applied.outcome,
        ledger_service::Outcome::Result {
            charge: ledger_domain::ResultCharge::AlreadyUnlocked,
            ..
        }
    ));

    // Outcomes are the service's to report; lists are bounded.
    let body = json!({ "action": "email_reveal", "subjects": [found("x@x.com")] }).to_string();
    let r = call(
        &gw,
        "POST",
        &format!("/v1/orgs/{ORG}/spend"),
        Some(&stack.member()),
        Some("m1"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let many: Vec<Value> = (0..51).map(|i| found(&format!("p{i}@x.com"))).collect();
    let r = reveal("many", json!(many), false).await;
    assert_eq!(
        (r.status, r.body["type"].as_str().unwrap().ends_with("invalid-quantity")),
        (400, true),
        "{}",
        r.body
    );
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 100).await;
    assert_eq!(ledger_total(&entries, "credits"), 496_000);
}

#[tokio::test]
async fn a_bounce_in_time_refunds_once_into_the_bucket_that_paid_and_a_late_one_says_why() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let service = stack.ledger();
    let org = ledger_domain::OrgId::parse(ORG).unwrap();
    let charge = |r: ResultReport| {
        let service = &service;
        let org = &org;
        async move { service.charge_result(org, &r).await.unwrap() }
    };
    let revealed = charge(report("r1", "email_reveal", "ann@x.com", "found", "bob")).await;
    let charged_entry = revealed.entry.unwrap().id;
    charge(report("r2", "email_reveal", "ben@x.com", "found", "bob")).await;
    assert_eq!(available(&gw, &stack.member(), "credits").await, "498");
    // Ann's email bounces ten days later (the window is 14): refunded into
    // this month's plan bucket, once.
    stack.clock.advance(Duration::days(10));
    let bounce = charge(report("b1", "email_reveal", "ann@x.com", "bounced", "bob")).await;
    match &bounce.outcome {
        ledger_service::Outcome::Reversed {
            original,
            returned,
            stayed_expired,
            ..
        } => {
            assert_eq!(
                (original, returned.to_string(), stayed_expired.to_string()),
                (&charged_entry, "1".into(), "0".into())
            );
        }
        other => panic!("{other:?}"),
    }
    let line = &bounce.entry.as_ref().unwrap().lines[0];
    assert_eq!(
        (line.bucket.to_string(), line.amount.to_string()),
        ("plan:credits:2026-01-31".into(), "1".into())
    );
    let twice = charge(report("b2", "email_reveal", "ann@x.com", "bounced", "bob")).await;
    assert!(matches!(
        twice.outcome,
        ledger_service::Outcome::Result {
            charge: ledger_domain::ResultCharge::BounceNotRefunded,
            ..
        }
    ));
    // The same bounce message delivered again replays its refund.
    let replay = charge(report("b1", "email_reveal", "ann@x.com", "bounced", "bob")).await;
    assert!(replay.replayed);
    assert_eq!(available(&gw, &stack.member(), "credits").await, "499");
    // Ben's bounces after the window: nothing back, and it says so.
    stack.clock.advance(Duration::days(5));
    let late = charge(report("b3", "email_reveal", "ben@x.com", "bounced", "bob")).await;
    assert!(matches!(
        late.outcome,
        ledger_service::Outcome::Result {
            charge: ledger_domain::ResultCharge::BounceNotRefunded,
            ..
        }
    ));

    // A credit-back the operator grants after the month renewed: the plan
    // credit stays expired, and the reversal says so.
    let r = spend(&gw, &stack.member(), "s1", "ai_email_generation", 3).await;
    let spend_entry = r.body["entry_id"].as_str().unwrap().to_string();
    stack.clock.advance(Duration::days(20));
    let reverse = |key: &str, token: &str| {
        // The same reversal under another key replays it; another is refused.
        let note = if key == "rev-2" {
            "second thoughts"
        } else {
            "vendor outage"
        };
        let body = json!({ "entry_id": spend_entry, "reason": "invalid_result", "note": note }).to_string();
        let gw = &gw;
        let (key, token) = (key.to_string(), token.to_string());
        async move {
            call(
                gw,
                "POST",
                &format!("/v1/orgs/{ORG}/reversals"),
                Some(&token),
                Some(&key),
                Some(&body),
            )
            .await
        }
    };
    assert_eq!(reverse("rev-0", &stack.admin()).await.status, 403, "the service's");
    let r = reverse("rev-1", &stack.service()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["returned"].as_str(), r.body["stayed_expired"].as_str()),
        (Some("0"), Some("3")),
        "{}",
        r.body
    );
    assert_eq!(r.body["entry"]["reverses"], spend_entry.as_str());
    let again = reverse("rev-1", &stack.service()).await;
    assert_eq!((again.status, again.replayed), (201, true));
    let other_key = reverse("rev-2", &stack.service()).await;
    assert_eq!(
        (
            other_key.status,
            other_key.body["type"].as_str().unwrap().ends_with("already-reversed")
        ),
        (409, true),
        "{}",
        other_key.body
    );
    let body = json!({ "entry_id": "ent_nope", "reason": "correction" }).to_string();
    let r = call(
        &gw,
        "POST",
        &format!("/v1/orgs/{ORG}/reversals"),
        Some(&stack.service()),
        Some("rev-3"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 100).await;
    let held = thousandths(&available(&gw, &stack.service(), "credits").await);
    assert_eq!(ledger_total(&entries, "credits"), held, "entries sum to the balance");
}

#[tokio::test]
async fn ten_results_of_one_organization_in_a_batch_cost_one_request_warm_and_are_placed_in_order() {
    let stack = Stack::with_account("starter").await;
    let q = queues(&stack).await;
    let outcomes = ["deliverable", "risky", "invalid", "not_found"];
    let bodies: Vec<String> = (0..10)
        .map(|i| {
            message(
                &format!("t{i}"),
                "email_finder",
                &format!("c{i}@x.com"),
                outcomes[i % 4],
            )
        })
        .collect();
    send(&q, &bodies).await;
    let ledger = stack.ledger();
    let before = stack.dynamodb_requests();
    let delivered = QueuePoller::new(&stack.config, &q.results)
        .drain(&ledger)
        .await
        .unwrap();
    let requests = stack.dynamodb_requests() - before;
    assert_eq!((delivered.batches, delivered.messages, delivered.failed), (1, 10, 0));
    // A cold instance: one BatchGetItem (the account and the ten keys), one
    // TransactWriteItems.
    assert_eq!(requests, 2, "a batch of ten for one organization, cold");
    // 3 deliverable + 3 risky, 5 credits each.
    assert_eq!(available(&stack.gateway(), &stack.member(), "credits").await, "470");
    let entries = results(&stack).await;
    let placed: Vec<(u64, String)> = entries
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["balance_after"]["credits"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = (0..10)
        .scan(500, |left, i| {
            if i % 4 < 2 {
                *left -= 5;
            }
            Some((2 + i as u64, left.to_string()))
        })
        .collect();
    assert_eq!(placed, expected, "each entry placed with its own balance after");
    // Delivered again (a retry of the whole batch): one by one, all replays.
    send(&q, &bodies).await;
    QueuePoller::new(&stack.config, &q.results)
        .drain(&ledger)
        .await
        .unwrap();
    assert_eq!(available(&stack.gateway(), &stack.member(), "credits").await, "470");

    // The instance is warm now: the next batch is one TransactWriteItems,
    // its subjects' unlocks written under the transaction's conditions.
    let mut warm: Vec<String> = (0..5)
        .map(|i| message(&format!("p{i}"), "phone_lookup", &format!("+1555000{i}"), "found"))
        .collect();
    warm.extend((0..5).map(|i| message(&format!("d{i}"), "email_finder", &format!("d{i}@x.com"), "deliverable")));
    send(&q, &warm).await;
    let before = stack.dynamodb_requests();
    let delivered = QueuePoller::new(&stack.config, &q.results)
        .drain(&ledger)
        .await
        .unwrap();
    assert_eq!((delivered.batches, delivered.messages, delivered.failed), (1, 10, 0));
    assert_eq!(
        stack.dynamodb_requests() - before,
        1,
        "a batch of ten for one organization, warm"
    );
    // 5 numbers found at 2, 5 deliverable at 5.
    assert_eq!(available(&stack.gateway(), &stack.member(), "credits").await, "435");

    // A subject unlocked already fails the warm guess's condition: the
    // batch goes one by one on fresh reads, and the number is not charged again.
    let again = vec![
        message("p0-again", "phone_lookup", "+15550000", "found"),
        message("p5", "phone_lookup", "+15550005", "found"),
        message("d5", "email_finder", "d5@x.com", "deliverable"),
    ];
    send(&q, &again).await;
    QueuePoller::new(&stack.config, &q.results)
        .drain(&ledger)
        .await
        .unwrap();
    assert_eq!(available(&stack.gateway(), &stack.member(), "credits").await, "428");
}
