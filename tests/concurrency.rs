//! Real concurrency against DynamoDB Local: many function instances (each
//! with its own cache, as separate Lambda environments) spending on one
//! account at once; invariants checked afterwards.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use futures::future::join_all;
use ledger_domain::{Catalog, IdempotencyKey, OrgId, SpendMode, SpendRequest};
use ledger_service::{Applied, Idempotency, Ledger, RetryPolicy, ServiceError};
use ledger_store::{AccountStore, Commit, CommitError, DynamoLedgerStore, KeptRequest, StoreError};
use serde_json::Value;

/// Checks the ledger against the balance: seq 1..n with no gap, every
/// `balance_after` the running sum, the sum equal to the balance, no entry
/// id twice, nothing negative.
async fn assert_ledger_consistent(stack: &Stack, expected_balance: &str) -> Vec<Value> {
    let gw = stack.gateway();
    stack.settle().await;
    let mut entries = ledger(&gw, &stack.admin(), 200).await;
    entries.reverse();
    let mut running = 0i64;
    let mut ids = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "no gaps in the ledger");
        assert!(ids.insert(e["id"].to_string()), "entry {} twice", e["id"]);
        running += ledger_total(std::slice::from_ref(e), "credits");
        assert!(running >= 0, "balance went negative at {}", e["seq"]);
        assert_eq!(thousandths(e["balance_after"]["credits"].as_str().unwrap()), running);
    }
    assert_eq!(running, thousandths(expected_balance));
    assert_eq!(available(&gw, &stack.admin(), "credits").await, expected_balance);
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_spends_charge_exactly_what_the_balance_covers() {
    let stack = Stack::with_account("starter").await;

    // 500 credits, 100 spends of 7: exactly 71 fit (497), 29 must be refused.
    let member = stack.member();
    let spends = (0..100).map(|i| {
        let gateway = stack.gateway();
        let token = member.clone();
        tokio::spawn(async move {
            let body = r#"{"action":"ai_email_generation","quantity":7}"#;
            call_retrying(
                &gateway,
                "POST",
                "/v1/orgs/acme/spend",
                &token,
                &format!("race-{i}"),
                body,
            )
            .await
        })
    });
    let (replies, retries): (Vec<HttpReply>, Vec<u32>) = join_all(spends).await.into_iter().map(Result::unwrap).unzip();
    println!("503s retried by clients: {}", retries.iter().sum::<u32>());

    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 402).count();
    let other: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 200 && r.status != 402)
        .map(|r| &r.body)
        .collect();
    assert!(other.is_empty(), "unexpected replies: {other:?}");
    assert_eq!((ok, refused), (71, 29));

    let entries = assert_ledger_consistent(&stack, "3").await;
    assert_eq!(entries.len(), 72, "one subscription entry and one per successful spend");
    let charged_keys: BTreeSet<_> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["entry_id"].to_string())
        .collect();
    assert_eq!(charged_keys.len(), 71, "every success has its own entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_raced_by_many_instances_charges_once() {
    let stack = Stack::with_account("starter").await;
    let member = stack.member();
    let racers = (0..20).map(|_| {
        let gateway = stack.gateway();
        let token = member.clone();
        tokio::spawn(async move { spend(&gateway, &token, "same-key", "email_verification", 4).await })
    });
    let replies: Vec<HttpReply> = join_all(racers).await.into_iter().map(Result::unwrap).collect();
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        replies.iter().all(|r| r.body == replies[0].body),
        "every retry sees the original body"
    );
    assert_eq!(
        replies.iter().filter(|r| !r.replayed).count(),
        1,
        "exactly one was applied"
    );
    let entries = assert_ledger_consistent(&stack, "498").await;
    assert_eq!(entries.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purchases_racing_spends_lose_nothing() {
    let stack = Stack::with_account("starter").await;
    let (service, member) = (stack.service(), stack.member());
    // One pack first: 1,000 credits cover the 750 spent whatever the order
    // (spends may well run ahead of the purchases), and spends cross from
    // the plan into the pool while four more packs raise it.
    let first = r#"{"package":"credits_500","payment_reference":"pay-0"}"#;
    assert_eq!(
        purchase(&stack.gateway(), &stack.service(), "p-0", first).await.status,
        201
    );
    let mut tasks = Vec::new();
    for i in 0..30 {
        let gateway = stack.gateway();
        let token = member.clone();
        tasks.push(tokio::spawn(async move {
            let body = r#"{"action":"company_enrichment","quantity":25}"#;
            call_retrying(&gateway, "POST", "/v1/orgs/acme/spend", &token, &format!("s-{i}"), body)
                .await
                .0
        }));
    }
    for i in 1..5 {
        let gateway = stack.gateway();
        let token = service.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"package":"credits_500","payment_reference":"pay-{i}"}}"#);
            call_retrying(
                &gateway,
                "POST",
                "/v1/orgs/acme/purchases",
                &token,
                &format!("p-{i}"),
                &body,
            )
            .await
            .0
        }));
    }
    let replies: Vec<HttpReply> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 201),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // 500 + 5 × 500 granted, 30 × 25 spent: all fit, whatever the order.
    assert_ledger_consistent(&stack, "2250").await;
}

/// Wraps the DynamoDB store and answers the first `conflicts` commits with
/// the `TransactionConflict` cancellation real DynamoDB raises (DynamoDB
/// Local never does), to exercise the retry path.
struct ConflictingStore {
    inner: DynamoLedgerStore,
    conflicts: AtomicU32,
    commits: AtomicU32,
    /// After the first `conflicts`: this percentage of commits, at random.
    rate_percent: u32,
    injected: AtomicU32,
}

/// Only the accounts port is wrapped: request keys and history go to
/// DynamoDB directly.
impl AccountStore for ConflictingStore {
    async fn load_account(&self, org: &OrgId) -> Result<Option<ledger_domain::Account>, StoreError> {
        self.inner.load_account(org).await
    }

    async fn load_account_and_request(
        &self,
        org: &OrgId,
        key: &IdempotencyKey,
    ) -> Result<(Option<ledger_domain::Account>, Option<KeptRequest>), StoreError> {
        self.inner.load_account_and_request(org, key).await
    }

    async fn commit(&self, commit: Commit<'_>) -> Result<(), CommitError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let left = self.conflicts.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts.store(left - 1, Ordering::SeqCst);
            return Err(CommitError::Conflict);
        }
        if fastrand::u32(0..100) < self.rate_percent {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(CommitError::Conflict);
        }
        self.inner.commit(commit).await
    }
}

type ConflictingLedger = Ledger<ConflictingStore, DynamoLedgerStore, DynamoLedgerStore>;

fn conflicting_ledger(stack: &Stack, conflicts: u32, retry: RetryPolicy) -> ConflictingLedger {
    conflicting_ledger_at_rate(stack, conflicts, 0, retry)
}

fn conflicting_ledger_at_rate(
    stack: &Stack,
    conflicts: u32,
    rate_percent: u32,
    retry: RetryPolicy,
) -> ConflictingLedger {
    let dynamo = DynamoLedgerStore::new(stack.client.clone(), stack.table.clone());
    let store = ConflictingStore {
        inner: dynamo.clone(),
        conflicts: AtomicU32::new(conflicts),
        commits: AtomicU32::new(0),
        rate_percent,
        injected: AtomicU32::new(0),
    };
    Ledger::over(
        store,
        dynamo.clone(),
        dynamo,
        Arc::new(Catalog::default_catalog()),
        stack.clock.clone(),
    )
    .with_retry_policy(retry)
}

async fn spend_through(ledger: &ConflictingLedger, key: &str) -> Result<Applied, ServiceError> {
    let catalog = Catalog::default_catalog();
    let (action_id, action) = catalog.action("ai_email_generation").unwrap();
    let request = SpendRequest {
        action_id,
        action,
        quantity: 2,
        mode: SpendMode::All,
        actor: ledger_domain::Actor {
            user: None,
            caller: ledger_domain::CallerKind::Service,
        },
        campaign: None,
        subject: None,
    };
    let idempotency = Idempotency {
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: key.into(),
    };
    ledger.spend(&OrgId::parse(ORG).unwrap(), &request, &idempotency).await
}

#[tokio::test]
async fn transaction_conflicts_are_retried_and_bounded() {
    let stack = Stack::with_account("starter").await;
    let retry = RetryPolicy {
        max_attempts: 16,
        budget: std::time::Duration::from_secs(30),
    };
    let ledger = conflicting_ledger(&stack, 3, retry);

    // Three conflicts, then the commit lands: charged once.
    let applied = spend_through(&ledger, "conflicted").await.unwrap();
    assert!(!applied.replayed);
    assert_eq!(ledger.accounts().commits.load(Ordering::SeqCst), 4);
    assert_ledger_consistent(&stack, "498").await;

    // Conflicts without end: a bounded number of attempts, then a retryable
    // error and nothing written.
    ledger.accounts().conflicts.store(u32::MAX, Ordering::SeqCst);
    ledger.accounts().commits.store(0, Ordering::SeqCst);
    let before = stack.snapshot().await;
    let err = spend_through(&ledger, "hopeless").await.unwrap_err();
    assert!(matches!(err, ServiceError::Contention), "{err:?}");
    assert_eq!(ledger.accounts().commits.load(Ordering::SeqCst), retry.max_attempts);
    assert_eq!(stack.snapshot().await, before);

    // However many attempts are allowed, retrying stops at the time budget.
    let retry = RetryPolicy {
        max_attempts: 10_000,
        budget: std::time::Duration::from_secs(1),
    };
    let ledger = conflicting_ledger(&stack, u32::MAX, retry);
    let started = std::time::Instant::now();
    let err = spend_through(&ledger, "out-of-time").await.unwrap_err();
    assert!(matches!(err, ServiceError::Contention), "{err:?}");
    let commits = ledger.accounts().commits.load(Ordering::SeqCst);
    // Other tests load the server at the same time: the bound that matters
    // is that retrying stopped near the budget, far below max_attempts.
    assert!((2..400).contains(&commits), "{commits} commits in 1 s of backoff");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(stack.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_organization_near_zero_refuses_no_spend_its_total_covers() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    // 60 credits left across two buckets: 30 of the plan, 30 purchased.
    assert_eq!(
        spend(&gw, &stack.member(), "drain", "ai_email_generation", 470)
            .await
            .status,
        200
    );
    let r = purchase(
        &gw,
        &stack.service(),
        "top-up",
        r#"{"credits":"30","payment_reference":"near-zero"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // 80 instances race to spend one credit each: exactly 60 fit.
    let member = stack.member();
    let spends = (0..80).map(|i| {
        let gateway = stack.gateway();
        let token = member.clone();
        tokio::spawn(async move {
            let body = r#"{"action":"ai_variables"}"#;
            call_retrying(
                &gateway,
                "POST",
                "/v1/orgs/acme/spend",
                &token,
                &format!("last-{i}"),
                body,
            )
            .await
        })
    });
    let replies: Vec<HttpReply> = join_all(spends).await.into_iter().map(|r| r.unwrap().0).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&HttpReply> = replies.iter().filter(|r| r.status == 402).collect();
    assert_eq!((ok, refused.len()), (60, 20), "every credit spent, no more");
    // A refusal is only final on fresh state: none said no while a credit
    // was left (no false 402).
    for r in &refused {
        assert_eq!(r.body["available"], "0", "{}", r.body);
    }
    let entries = assert_ledger_consistent(&stack, "0").await;
    let drawn_from_pool = entries
        .iter()
        .flat_map(|e| e["lines"].as_array().unwrap())
        .filter(|l| l["source"] == "purchased" && l["amount"] == "-1")
        .count();
    assert_eq!(drawn_from_pool, 30, "both buckets paid, each to zero");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_conflicts_at_a_high_rate_lose_and_double_nothing() {
    let stack = Stack::with_account("starter").await;
    // Half of all commits answer TransactionConflict, as real DynamoDB does
    // when transactions on one item overlap.
    let ledger = Arc::new(conflicting_ledger_at_rate(&stack, 0, 50, RetryPolicy::default()));
    let tasks = (0..40).map(|w| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let mut charged = 0;
            for j in 0..5 {
                let key = format!("hot-{w}-{j}");
                // A client retries a 503 with the same key: never twice.
                for _ in 0..20 {
                    match spend_through(&ledger, &key).await {
                        Ok(_) => {
                            charged += 1;
                            break;
                        }
                        Err(ServiceError::Contention) => continue,
                        Err(other) => panic!("{other:?}"),
                    }
                }
            }
            charged
        })
    });
    let charged: usize = join_all(tasks).await.into_iter().map(Result::unwrap).sum();
    let injected = ledger.accounts().injected.load(Ordering::SeqCst);
    println!("{charged} spends through {injected} injected conflicts");
    assert!(injected > 50, "conflicts were injected: {injected}");
    assert_eq!(charged, 200, "every spend landed once its client retried");
    // 200 spends of 2 credits from 500: nothing lost, nothing doubled.
    assert_ledger_consistent(&stack, "100").await;
}
