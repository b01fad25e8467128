//! `make bench`: what a spend costs, measured against DynamoDB Local through
//! the real handlers. Prints figures; asserts nothing.
//!
//! - DynamoDB requests per operation, counted by an SDK interceptor;
//! - latency of sequential warm spends;
//! - many function instances spending on one account at once (commits per
//!   spend show the optimistic-lock retries), and on separate accounts;
//! - item sizes, capacity units and on-demand cost per million spends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use ledger_domain::{Catalog, SystemClock};
use ledger_local::gateway::Gateway;
use ledger_local::metrics::RequestCounter;
use ledger_local::template::{Route, Template};
use ledger_local::tokens::DevAuthority;
use ledger_service::dynamo_ledger;
use ledger_store::items::item_size;
use serde_json::Value;

/// On-demand prices (us-east-1, USD per million request units), for the estimate.
const WRITE_UNIT_PRICE: f64 = 0.625;
const READ_UNIT_PRICE: f64 = 0.125;

struct Bench {
    client: aws_sdk_dynamodb::Client,
    counter: RequestCounter,
    table: String,
    routes: Vec<Route>,
    authority: DevAuthority,
    catalog: Arc<Catalog>,
}

impl Bench {
    /// A new function instance (its own cache), as a fresh Lambda environment.
    fn instance(&self) -> Gateway {
        let ledger = dynamo_ledger(
            self.client.clone(),
            &self.table,
            self.catalog.clone(),
            Arc::new(SystemClock),
        );
        Gateway::new(self.routes.clone(), self.authority.clone(), Arc::new(ledger))
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
        let mut headers = vec![("authorization".to_string(), format!("Bearer {}", self.admin(org)))];
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
        let (status, reply) = self
            .call(
                &self.instance(),
                "PUT",
                &format!("/v1/orgs/{org}/subscription"),
                org,
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
    let config = aws_config::load_from_env().await;
    let counter = RequestCounter::default();
    let client = counter.client(&config);
    let template = Template::load(&ledger_local::project_root().join("template.yaml"))?;
    let table = format!("BenchLedger-{}", chrono::Utc::now().timestamp_millis());
    template.create_table(&client, "LedgerTable", &table).await?;
    let bench = Bench {
        client,
        counter,
        table,
        routes: template.routes()?,
        authority: DevAuthority::new(b"bench-key"),
        catalog: Arc::new(Catalog::default_catalog()),
    };

    // `bench contention` runs only the concurrency section.
    let only_contention = std::env::args().nth(1).as_deref() == Some("contention");
    if !only_contention {
        requests_and_latency(&bench).await;
    }
    contention(&bench).await;
    if !only_contention {
        capacity(&bench).await?;
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
    let buy = r#"{"package":"credits_500","payment_reference":"pay-1"}"#;
    bench
        .count("purchase", async {
            bench
                .call(&warm, "POST", "/v1/orgs/ops/purchases", "ops", Some("p1"), buy)
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

    let n = 300;
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

async fn contention(bench: &Bench) {
    println!("\nConcurrent function instances spending (400 spends in all):");
    println!(
        "  {:<34} {:>10} {:>14} {:>10} {:>6}",
        "", "spends/s", "commits/spend", "max ms", "503s"
    );
    for (k, shared) in [(1, true), (10, true), (50, true), (100, true), (20, false)] {
        let per = 400 / k;
        let orgs: Vec<String> = (0..k)
            .map(|i| {
                if shared {
                    format!("hot-{k}")
                } else {
                    format!("cold-{k}-{i}")
                }
            })
            .collect();
        for org in orgs.iter().collect::<std::collections::BTreeSet<_>>() {
            bench.subscribe(org, 1_000_000).await;
        }
        bench.counter.reset();
        let started = Instant::now();
        let tasks = (0..k).map(|i| {
            let gw = bench.instance();
            let org = orgs[i].clone();

            async move {
                let mut worst = Duration::ZERO;
                let mut contention = 0;
                for j in 0..per {
                    let t = Instant::now();
                    match bench.spend(&gw, &org, &format!("k{k}-{i}-{j}"), 1).await {
                        200 => {}
                        503 => contention += 1,
                        other => panic!("unexpected status {other}"),
                    }
                    worst = worst.max(t.elapsed());
                }
                (worst, contention)
            }
        });
        let results = join_all(tasks).await;
        let elapsed = started.elapsed();
        let commits = bench
            .counter
            .by_operation()
            .get("TransactWriteItems")
            .copied()
            .unwrap_or(0);
        let worst = results.iter().map(|r| r.0).max().unwrap_or_default();
        let contention: usize = results.iter().map(|r| r.1).sum();
        let label = if shared {
            format!("{k} instances, one account")
        } else {
            format!("{k} instances, own accounts")
        };
        println!(
            "  {label:<34} {:>10.0} {:>14.2} {:>10.1} {:>6}",
            (per * k) as f64 / elapsed.as_secs_f64(),
            commits as f64 / (per * k) as f64,
            worst.as_secs_f64() * 1e3,
            contention
        );
    }
}

async fn capacity(bench: &Bench) -> Result<()> {
    let account = bench.item("ORG#latency", "ACCOUNT").await?;
    let entry = bench.item("ORG#latency", "REQ#l1").await?;
    let (a, e) = (item_size(&account), item_size(&entry));
    let kb = |bytes: usize| bytes.div_ceil(1024);
    // Transactional writes cost two write units per KB of each item; each
    // index holding a copy of the item costs one more per KB of the copy.
    // `renewals_due` holds the account's keys only, which a spend leaves
    // unchanged: nothing there until the account renews.
    let parts = [
        ("account item (transactional put)", 2 * kb(a)),
        ("entry item (transactional put)", 2 * kb(e)),
        ("index ledger (entry copy)", kb(e)),
        ("index ledger_by_user (entry copy, entries with a user)", kb(e)),
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
