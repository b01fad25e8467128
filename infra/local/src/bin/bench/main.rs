//! `make bench`: what a spend costs, measured against DynamoDB Local through
//! the real handlers. Prints figures; times nothing against a target. The
//! only checks are of correctness: after each concurrent level, every
//! organization was charged exactly its acknowledged spends.
//!
//! - DynamoDB requests per operation, counted by an SDK interceptor;
//! - latency of sequential warm spends;
//! - a hot organization with 1 to 100 concurrent function instances, next to
//!   the raw rate of a bare 2-item transaction, and 100 organizations;
//! - the hot organization under AWS's transaction rule (see `aws_conflicts`);
//! - item sizes, write units per spend and per index, on-demand cost;
//! - the capabilities' operations: a spend under a per-user limit, a bulk
//!   spend of 50 subjects, reserve/commit/release, a results batch of 10,
//!   one renewal, one stream batch (`operations`);
//! - the renewal sweep over 1,000, 5,000 and 10,000 due accounts (`sweeps`).
//!
//! `bench contention` runs the concurrency sections only; `bench quick` a
//! short run of everything (the test command runs it). `infra/bench.sh`
//! adds the package size and the cold starts.

// The capabilities' futures nest deep (handler inside gateway inside counter).
#![recursion_limit = "256"]

mod operations;
mod sweeps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use ledger_domain::{Catalog, Clock, SystemClock};
use ledger_local::gateway::Gateway;
use ledger_local::metrics::RequestCounter;
use ledger_local::template::{Route, Template};
use ledger_local::tokens::DevAuthority;
use ledger_service::{dynamo_ledger, DynamoLedger};
use ledger_store::items::item_size;
use serde_json::Value;

/// On-demand prices (us-east-1, USD per million request units), for the estimate.
const WRITE_UNIT_PRICE: f64 = 0.625;
const READ_UNIT_PRICE: f64 = 0.125;

struct Bench {
    config: aws_config::SdkConfig,
    client: aws_sdk_dynamodb::Client,
    counter: RequestCounter,
    table: String,
    routes: Vec<Route>,
    authority: DevAuthority,
    catalog: Arc<Catalog>,
    /// Spends per measured level: steady figures, or a quick run.
    spends_per_level: usize,
    quick: bool,
}

impl Bench {
    /// A new function instance (its own cache), as a fresh Lambda environment.
    fn instance(&self) -> Gateway {
        self.gateway(Arc::new(self.ledger(Arc::new(SystemClock))))
    }

    /// A new function instance's ledger, on the given clock.
    fn ledger(&self, clock: Arc<dyn Clock>) -> DynamoLedger {
        dynamo_ledger(self.client.clone(), &self.table, self.catalog.clone(), clock)
    }

    fn gateway(&self, ledger: Arc<DynamoLedger>) -> Gateway {
        Gateway::new(self.routes.clone(), self.authority.clone(), ledger)
    }

    fn admin(&self, org: &str) -> String {
        self.authority.user_token(org, "admin", "admin", 3600)
    }

    async fn call(
        &self,
        gw: &Gateway,
        method: &str,
        path: &str,
        org: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        self.call_as(gw, method, path, &self.admin(org), key, body).await
    }

    async fn call_as(
        &self,
        gw: &Gateway,
        method: &str,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let mut headers = vec![
            ("authorization".to_string(), format!("Bearer {token}")),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        if let Some(k) = key {
            headers.push(("idempotency-key".into(), k.into()));
        }
        let response = gw.respond(method, path, None, &headers, body.as_bytes()).await;
        let status = response.status().as_u16();
        let body = match response.into_body() {
            lambda_http::Body::Text(t) => serde_json::from_str(&t).unwrap_or_default(),
            _ => Value::Null,
        };
        (status, body)
    }

    async fn subscribe(&self, org: &str, monthly: u64) {
        let body = format!(r#"{{"plan":"enterprise","monthly_credits":{monthly}}}"#);
        let service = self.authority.service_token("bench", 3600);
        let (status, reply) = self
            .call_as(
                &self.instance(),
                "PUT",
                &format!("/v1/orgs/{org}/subscription"),
                &service,
                Some("sub"),
                &body,
            )
            .await;
        assert_eq!(status, 201, "{reply}");
    }

    async fn spend(&self, gw: &Gateway, org: &str, key: &str, quantity: u64) -> u16 {
        let body = format!(r#"{{"action":"ai_email_generation","quantity":{quantity}}}"#);
        self.call(gw, "POST", &format!("/v1/orgs/{org}/spend"), org, Some(key), &body)
            .await
            .0
    }

    async fn item(&self, pk: &str, sk: &str) -> Result<HashMap<String, AttributeValue>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await?;
        Ok(out.item.unwrap_or_default())
    }

    /// Requests `f` made, by operation.
    async fn count<F: std::future::Future<Output = u16>>(&self, what: &str, f: F) {
        self.counter.reset();
        let status = f.await;
        let ops: Vec<String> = self
            .counter
            .by_operation()
            .iter()
            .map(|(op, n)| format!("{n} {op}"))
            .collect();
        println!(
            "  {what:<44} {:>2} request(s)  [{}]  -> {status}",
            self.counter.total(),
            ops.join(", ")
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    let quick = std::env::args().nth(1).as_deref() == Some("quick");
    let config = ledger_service::config::sdk_config().await;
    let counter = RequestCounter::default();
    let client = counter.client(&config);
    let template = Template::load(&ledger_local::project_root().join("template.yaml"))?;
    let table = format!("BenchLedger-{}", chrono::Utc::now().timestamp_millis());
    template.create_table(&client, "LedgerTable", &table).await?;
    let bench = Bench {
        config: config.clone(),
        client,
        counter,
        table,
        routes: template.routes()?,
        authority: DevAuthority::new(b"bench-key"),
        catalog: Arc::new(Catalog::default_catalog()),
        // `bench quick`: a short run of every section (the test command's).
        spends_per_level: if quick { 40 } else { 800 },
        quick,
    };

    // `bench contention` runs only the concurrency section.
    let only_contention = std::env::args().nth(1).as_deref() == Some("contention");
    if !only_contention {
        requests_and_latency(&bench).await;
    }
    contention(&bench).await;
    aws_conflict_model(&bench).await;
    if !only_contention {
        capacity(&bench).await?;
        operations::requests(&bench).await?;
        sweeps::sweeps(&bench).await?;
    }
    Ok(())
}

async fn requests_and_latency(bench: &Bench) {
    println!("DynamoDB requests per operation (through the real handlers):");
    bench.subscribe("ops", 1_000).await;
    let warm = bench.instance();
    bench.spend(&warm, "ops", "prime", 1).await;
    bench
        .count("spend, warm instance (fast path)", bench.spend(&warm, "ops", "w1", 1))
        .await;
    let cold = bench.instance();
    bench
        .count(
            "spend, cold instance (nothing cached)",
            bench.spend(&cold, "ops", "c1", 1),
        )
        .await;
    bench
        .count(
            "spend, stale cache (another instance wrote)",
            bench.spend(&warm, "ops", "s1", 1),
        )
        .await;
    bench
        .count("spend replayed (same key and body)", bench.spend(&warm, "ops", "s1", 1))
        .await;
    bench
        .count("spend refused, 402", bench.spend(&warm, "ops", "r1", 5_000))
        .await;
    let dry = r#"{"action":"ai_email_generation","quantity":3,"dry_run":true}"#;
    bench
        .count("spend dry run", async {
            bench
                .call(&warm, "POST", "/v1/orgs/ops/spend", "ops", None, dry)
                .await
                .0
        })
        .await;
    let buy = r#"{"package":"credits_500","payment_reference":"pay-1","user":"admin"}"#;
    let service = bench.authority.service_token("bench", 3600);
    bench
        .count("purchase", async {
            bench
                .call_as(&warm, "POST", "/v1/orgs/ops/purchases", &service, Some("p1"), buy)
                .await
                .0
        })
        .await;
    bench
        .count("balance", async {
            bench
                .call(&warm, "GET", "/v1/orgs/ops/balance", "ops", None, "")
                .await
                .0
        })
        .await;
    bench
        .count("ledger page (50)", async {
            bench.call(&warm, "GET", "/v1/orgs/ops/ledger", "ops", None, "").await.0
        })
        .await;

    let n = bench.spends_per_level.min(300);
    bench.subscribe("latency", 1_000_000).await;
    let gw = bench.instance();
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        assert_eq!(bench.spend(&gw, "latency", &format!("l{i}"), 1).await, 200);
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    println!("\nSequential warm spends on one account ({n}):");
    println!(
        "  p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   max {:.2} ms   {:.0} spends/s",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
        n as f64 / total.as_secs_f64()
    );
}

/// The ceiling to compare with: a bare 2-item conditional transaction (a
/// counter updated on a condition, a new item put on `attribute_not_exists`,
/// the shape of a spend) by `writers` tasks on one counter, same server, same run.
async fn raw_transactions(bench: &Bench, writers: usize) -> f64 {
    let per = (bench.spends_per_level / writers).max(1);
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pk = format!("RAW#{writers}#{run}");
    bench
        .client
        .put_item()
        .table_name(&bench.table)
        .item("pk", AttributeValue::S(pk.clone()))
        .item("sk", AttributeValue::S("COUNTER".into()))
        .item("n", AttributeValue::N("0".into()))
        .send()
        .await
        .expect("counter");
    let started = Instant::now();
    join_all((0..writers).map(|w| {
        let pk = pk.clone();
        async move {
            for i in 0..per {
                bare_transaction(bench, &pk, "COUNTER", &format!("E#{w}-{i}")).await;
            }
        }
    }))
    .await;
    (per * writers) as f64 / started.elapsed().as_secs_f64()
}

/// A bare 2-item conditional transaction, the shape of a spend or a
/// renewal: item `(pk, counter)` counted up on a condition, a new item
/// `(pk, new_item)` put on `attribute_not_exists`.
async fn bare_transaction(bench: &Bench, pk: &str, counter: &str, new_item: &str) {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
    let pk = AttributeValue::S(pk.to_string());
    let update = Update::builder()
        .table_name(&bench.table)
        .key("pk", pk.clone())
        .key("sk", AttributeValue::S(counter.into()))
        .update_expression("SET n = if_not_exists(n, :zero) + :one")
        .condition_expression("attribute_not_exists(n) OR n >= :zero")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .build()
        .expect("update");
    let put = Put::builder()
        .table_name(&bench.table)
        .item("pk", pk)
        .item("sk", AttributeValue::S(new_item.into()))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("put");
    bench
        .client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(update).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .send()
        .await
        .expect("a bare transaction");
}

struct Level {
    spends: usize,
    spends_per_s: f64,
    commits_per_spend: f64,
    contention: usize,
    p50: f64,
    p99: f64,
}

/// `writers` function instances, each spending one credit at a time, on
/// `orgs` organizations (writer `i` on org `i % orgs`). Afterwards checks
/// that every acknowledged spend was charged exactly once and nothing else.
async fn spend_level(bench: &Bench, label: &str, writers: usize, orgs: usize) -> Level {
    let per = (bench.spends_per_level / writers).max(1);
    let names: Vec<String> = (0..orgs).map(|o| format!("{label}-{writers}-{o}")).collect();
    for org in &names {
        bench.subscribe(org, 1_000_000).await;
    }
    bench.counter.reset();
    let started = Instant::now();
    let results = join_all((0..writers).map(|w| {
        let gw = bench.instance();
        let org = names[w % orgs].clone();
        async move {
            let (mut times, mut ok, mut contention) = (Vec::with_capacity(per), 0usize, 0usize);
            for j in 0..per {
                let t = Instant::now();
                match bench.spend(&gw, &org, &format!("w{w}-{j}"), 1).await {
                    200 => ok += 1,
                    503 => contention += 1,
                    other => panic!("unexpected status {other}"),
                }
                times.push(t.elapsed());
            }
            (org, times, ok, contention)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let commits = bench
        .counter
        .by_operation()
        .get("TransactWriteItems")
        .copied()
        .unwrap_or(0);
    let mut times: Vec<Duration> = results.iter().flat_map(|r| r.1.iter().copied()).collect();
    times.sort();
    // Nothing lost, nothing doubled: each organization's balance fell by
    // exactly its acknowledged spends.
    for org in &names {
        let acknowledged: usize = results.iter().filter(|r| &r.0 == org).map(|r| r.2).sum();
        let account = bench.item(&format!("ORG#{org}"), "ACCOUNT").await.expect("account");
        let account = ledger_store::items::account_from_item(&account).expect("an account");
        let spent = 1_000_000 - account.available(&ledger_domain::credits_meter()).thousandths() / 1_000;
        assert_eq!(
            spent as usize, acknowledged,
            "{org}: charged exactly the acknowledged spends"
        );
        assert_eq!(account.seq as usize, 1 + acknowledged, "{org}: one entry per spend");
    }
    let spends = per * writers;
    Level {
        spends,
        spends_per_s: results.iter().map(|r| r.2).sum::<usize>() as f64 / elapsed.as_secs_f64(),
        commits_per_spend: commits as f64 / spends as f64,
        contention: results.iter().map(|r| r.3).sum(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
    }
}

async fn contention(bench: &Bench) {
    println!(
        "\nHot organization: function instances spending 1 credit each, {} spends a level:",
        bench.spends_per_level
    );
    // Warm the server (its JIT) before measuring the ceiling.
    raw_transactions(bench, 32).await;
    let raw = raw_transactions(bench, 32).await;
    println!("  raw 2-item conditional TransactWriteItems, 32 writers on one item: {raw:.0}/s");
    println!(
        "  {:<30} {:>9} {:>8} {:>13} {:>7} {:>8} {:>8}",
        "", "spends/s", "x raw", "commits/spend", "503s", "p50 ms", "p99 ms"
    );
    let levels = [
        ("1 writer, one org", 1, 1),
        ("10 writers, one org", 10, 1),
        ("32 writers, one org", 32, 1),
        ("40 writers, one org", 40, 1),
        ("100 writers, one org", 100, 1),
        ("100 writers, 100 orgs", 100, 100),
    ];
    for (label, writers, orgs) in levels {
        let tag = if orgs == 1 { "hot" } else { "spread" };
        let l = spend_level(bench, tag, writers, orgs).await;
        println!(
            "  {label:<30} {:>9.0} {:>8.2} {:>13.2} {:>6.1}% {:>8.1} {:>8.1}",
            l.spends_per_s,
            l.spends_per_s / raw,
            l.commits_per_spend,
            100.0 * l.contention as f64 / l.spends as f64,
            l.p50,
            l.p99
        );
    }
    println!("  (after each level: every organization's balance fell by exactly its acknowledged spends)");
}

/// The same hot organization under AWS's transaction rule (a commit is
/// refused while another on the account is in flight), through the real
/// executor: what one account item sustains on AWS, and how retries behave.
async fn aws_conflict_model(bench: &Bench) {
    println!("\nHot organization under AWS's transaction rule (one commit in flight per account; DynamoDB Local underneath):");
    println!(
        "  {:<22} {:>9} {:>18} {:>7} {:>8} {:>8}",
        "", "spends/s", "conflicts/spend", "503s", "p50 ms", "p99 ms"
    );
    for writers in [1usize, 10, 40, 100] {
        let org_name = format!("aws-{writers}");
        bench.subscribe(&org_name, 1_000_000).await;
        let store = ledger_store::DynamoLedgerStore::new(bench.client.clone(), bench.table.clone());
        let aws = ledger_local::aws_conflicts::AwsConflicts::new(store.clone());
        let per = (bench.spends_per_level / 2 / writers).max(1);
        let started = Instant::now();
        let results = join_all((0..writers).map(|w| {
            let (store, aws) = (store.clone(), aws.clone());
            let org_name = org_name.clone();
            async move {
                // A function instance of its own: its own cache.
                let ledger = ledger_service::Ledger::over(
                    aws,
                    store.clone(),
                    store,
                    bench.catalog.clone(),
                    Arc::new(SystemClock),
                );
                let org = ledger_domain::OrgId::parse(&org_name).expect("org");
                let (action_id, action) = bench.catalog.action("ai_email_generation").expect("action");
                let (mut times, mut ok, mut contention) = (Vec::new(), 0usize, 0usize);
                for j in 0..per {
                    let request = ledger_domain::SpendRequest {
                        action_id,
                        action,
                        quantity: 1,
                        mode: ledger_domain::SpendMode::All,
                        actor: ledger_domain::Actor::system(),
                        campaign: None,
                        subject: None,
                    };
                    let idempotency = ledger_service::Idempotency {
                        key: ledger_domain::IdempotencyKey::parse(&format!("aws-{w}-{j}")).expect("key"),
                        fingerprint: format!("aws-{w}-{j}"),
                    };
                    let t = Instant::now();
                    match ledger.spend(&org, &request, &idempotency).await {
                        Ok(_) => ok += 1,
                        Err(ledger_service::ServiceError::Contention) => contention += 1,
                        Err(other) => panic!("{other:?}"),
                    }
                    times.push(t.elapsed());
                }
                (times, ok, contention)
            }
        }))
        .await;
        let elapsed = started.elapsed();
        let mut times: Vec<Duration> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
        times.sort();
        let ok: usize = results.iter().map(|r| r.1).sum();
        let contention: usize = results.iter().map(|r| r.2).sum();
        let conflicts = aws.conflicts();
        println!(
            "  {:<22} {:>9.0} {:>18.2} {:>6.1}% {:>8.1} {:>8.1}",
            format!("{writers} writers"),
            ok as f64 / elapsed.as_secs_f64(),
            conflicts as f64 / (per * writers) as f64,
            100.0 * contention as f64 / (per * writers) as f64,
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

async fn capacity(bench: &Bench) -> Result<()> {
    let account = bench.item("ORG#latency", "ACCOUNT").await?;
    let entry = bench.item("ORG#latency", "REQ#l1").await?;
    let (a, e) = (item_size(&account), item_size(&entry));
    let kb = |bytes: usize| bytes.div_ceil(1024);
    // An index copy costs only if the entry carries that index's key.
    let copy = |attr: &str| if entry.contains_key(attr) { kb(e) } else { 0 };
    // Transactional writes cost two write units per KB of each item, others
    // one; each index holding a copy of the item costs one more per KB of
    // the copy. The history indexes take the entry once the sequencer has
    // placed it (`placed` is their sort key), so the put itself writes none.
    // `renewals_due` holds the account's keys only, which a spend leaves
    // unchanged: nothing there until the account renews.
    let parts = [
        ("account item (transactional update)", 2 * kb(a)),
        ("entry item (transactional put)", 2 * kb(e)),
        ("entry placement (the sequencer's update, from the stream)", kb(e)),
        ("index ledger (entry copy, once placed)", copy("ledger_org")),
        ("index ledger_by_user (entries with a user)", copy("ledger_user")),
        ("index ledger_by_action (every spend)", copy("ledger_action")),
        (
            "index ledger_by_campaign (entries with a campaign; none here)",
            copy("ledger_campaign"),
        ),
        ("index renewals_due (keys unchanged by a spend)", 0),
    ];
    let wru: usize = parts.iter().map(|(_, u)| u).sum();
    let rru = a.div_ceil(4096);
    println!("\nCapacity and cost (on-demand, ${WRITE_UNIT_PRICE}/M write units, ${READ_UNIT_PRICE}/M read units):");
    println!("  account item {a} B, spend entry item {e} B");
    for (what, units) in parts {
        println!("  {what:<58} {units} write unit(s)");
    }
    println!(
        "  warm spend: {wru} write units -> ${:.2} per million spends; balance read: {rru} read unit(s) -> ${:.3} per million",
        wru as f64 * WRITE_UNIT_PRICE,
        rru as f64 * READ_UNIT_PRICE
    );
    Ok(())
}
