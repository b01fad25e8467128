//! The integration harness: a table of its own per test, created from
//! template.yaml on the DynamoDB Local that `make test` started, the real
//! handlers behind the local gateway, dev tokens, a clock tests can move,
//! and a count of the DynamoDB requests made.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone, Utc};
use ledger_domain::{Catalog, FixedClock};
use ledger_local::gateway::Gateway;
use ledger_local::metrics::RequestCounter;
use ledger_local::template::{LocalBus, Template};
use ledger_local::tokens::DevAuthority;
use ledger_service::{dynamo_ledger, DynamoLedger};
use serde_json::Value;

pub const ORG: &str = "acme";
pub const OTHER_ORG: &str = "globex";

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 31, 9, 30, 0).unwrap()
}

pub struct Stack {
    pub config: aws_config::SdkConfig,
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub clock: Arc<FixedClock>,
    pub requests: RequestCounter,
    pub authority: DevAuthority,
    pub template: Template,
    stream: tokio::sync::Mutex<Option<(ledger_local::streams::StreamPoller, LocalBus)>>,
    /// This stack's exports queue (one bucket serves every stack).
    pub export_queue: String,
    exports: ledger_store::ExportFiles,
    /// The catalog every function instance of this stack runs.
    pub catalog: Arc<Catalog>,
}

pub struct HttpReply {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
    pub replayed: bool,
}

/// A test's table goes when the test does: DynamoDB Local keeps every
/// table in one process, and a long run of tables full of entries (with
/// their indexes and streams) slows every later test.
impl Drop for Stack {
    fn drop(&mut self) {
        let (config, table) = (self.config.clone(), self.table.clone());
        // Drop cannot await, and the test's runtime may be single-threaded:
        // delete from a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                let client = aws_sdk_dynamodb::Client::new(&config);
                let _ = runtime.block_on(client.delete_table().table_name(table).send());
            }
        })
        .join();
    }
}

impl Stack {
    pub async fn new() -> Stack {
        Stack::running(Catalog::default_catalog()).await
    }

    /// A stack whose functions run the catalog shipped as `name`
    /// (`infra/catalogs/<name>.json`), as `CatalogName` deploys it.
    pub async fn with_catalog(name: &str) -> Stack {
        Stack::running(Catalog::shipped(name).expect("a shipped catalog")).await
    }

    async fn running(catalog: Catalog) -> Stack {
        assert!(
            std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok(),
            "integration tests run against DynamoDB Local: use `make test`, which starts it"
        );
        let config = ledger_service::config::sdk_config().await;
        let requests = RequestCounter::default();
        let client = requests.client(&config);
        let template = Template::load(&ledger_local::project_root().join("template.yaml")).unwrap();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let table = format!(
            "LedgerTable-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            Utc::now().timestamp_micros()
        );
        template.create_table(&client, "LedgerTable", &table).await.unwrap();
        let s3 = ledger_store::ExportFiles::s3_client(&config);
        template
            .create_bucket(&s3, "ExportBucket", "test-exports")
            .await
            .unwrap();
        let sqs = aws_sdk_sqs::Client::new(&config);
        let export_queue = sqs
            .create_queue()
            .queue_name(format!("exports-{table}"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let exports = ledger_store::ExportFiles::new(&config, "test-exports", sqs, &export_queue).with_uploads(s3);
        Stack {
            export_queue,
            exports,
            config,
            client,
            table,
            clock: Arc::new(FixedClock::new(start_time())),
            requests,
            authority: DevAuthority::new(b"integration-test-key"),
            template,
            stream: tokio::sync::Mutex::new(None),
            catalog: Arc::new(catalog),
        }
    }

    /// A stack whose organization `acme` the service has subscribed to `plan`.
    pub async fn with_account(plan: &str) -> Stack {
        let stack = Stack::new().await;
        let reply = subscribe(&stack.gateway(), &stack.service(), ORG, plan).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        stack
    }

    /// A fresh function instance: its own (empty) account cache, as a new
    /// Lambda execution environment would have.
    pub fn ledger(&self) -> DynamoLedger {
        self.ledger_on(self.client.clone())
    }

    /// A fresh function instance on a DynamoDB client of its own (one
    /// that meets injected faults, say).
    pub fn ledger_on(&self, client: aws_sdk_dynamodb::Client) -> DynamoLedger {
        dynamo_ledger(client, &self.table, self.catalog.clone(), self.clock.clone()).with_exports(self.exports.clone())
    }

    /// Delivers the exports queue to the exports function until it is
    /// empty, each invocation given `run_for` (a job out of time queues its
    /// own continuation, delivered in turn). Returns the invocations.
    pub async fn run_exports(&self, page: u32, part_bytes: usize, run_for: std::time::Duration) -> usize {
        let poller = ledger_local::results_queue::QueuePoller::new(&self.config, &self.export_queue);
        let ledger = self.ledger();
        let delivered = poller
            .drain_to(1, |event| {
                let limits = exports::ExportLimits {
                    page,
                    part_bytes,
                    deadline: std::time::Instant::now() + run_for,
                };
                exports::handle(&ledger, event, limits)
            })
            .await
            .unwrap();
        assert_eq!(delivered.failed, 0, "no export run fails");
        delivered.messages
    }

    pub fn gateway(&self) -> Gateway {
        self.gateway_on(self.ledger())
    }

    /// The local gateway in front of `ledger`'s function instance.
    pub fn gateway_on(&self, ledger: DynamoLedger) -> Gateway {
        Gateway::new(
            self.template.routes().unwrap(),
            self.authority.clone(),
            Arc::new(ledger),
        )
    }

    pub fn admin(&self) -> String {
        self.authority.user_token(ORG, "alice", "admin", 3600)
    }

    pub fn member(&self) -> String {
        self.authority.user_token(ORG, "bob", "member", 3600)
    }

    pub fn service(&self) -> String {
        self.authority.service_token("product-backend", 3600)
    }

    /// Delivers the table's stream to the stream function until it is
    /// caught up, as Lambda's event source mapping would: afterwards every
    /// committed entry is placed (seq, balance after).
    pub async fn settle(&self) -> usize {
        let mut stream = self.stream.lock().await;
        if stream.is_none() {
            let poller = ledger_local::streams::StreamPoller::for_table(&self.config, &self.table)
                .await
                .unwrap();
            let (events, sqs) = (
                aws_sdk_eventbridge::Client::new(&self.config),
                aws_sdk_sqs::Client::new(&self.config),
            );
            let name = format!("bus-{}", self.table);
            let bus = self
                .template
                .create_event_bus(&events, &sqs, "LedgerEventBus", &name)
                .await
                .unwrap();
            *stream = Some((poller, bus));
        }
        let (poller, bus) = stream.as_mut().expect("just set");
        let publisher = ledger_store::EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&self.config), &bus.name);
        poller.drain(&self.ledger(), &publisher).await.unwrap()
    }

    /// The stream caught up, and a publisher onto this stack's bus.
    async fn settled_publisher(&self) -> ledger_store::EventBridgeBus {
        self.settle().await;
        let bus = match &*self.stream.lock().await {
            Some((_, bus)) => bus.name.clone(),
            None => unreachable!("settled above"),
        };
        ledger_store::EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&self.config), &bus)
    }

    /// Delivers the whole stream again from its start, as Lambda may after
    /// a failure: every record a second time.
    pub async fn redeliver_stream(&self) -> usize {
        let publisher = self.settled_publisher().await;
        let mut again = ledger_local::streams::StreamPoller::for_table(&self.config, &self.table)
            .await
            .unwrap();
        again.drain(&self.ledger(), &publisher).await.unwrap()
    }

    /// Delivers the whole stream again from its start with every record
    /// shuffled (across items and within one), in batches: the worst of
    /// at-least-once delivery. Returns how many records it delivered.
    pub async fn redeliver_shuffled(&self) -> usize {
        let publisher = self.settled_publisher().await;
        let mut again = ledger_local::streams::StreamPoller::for_table(&self.config, &self.table)
            .await
            .unwrap();
        let mut records = Vec::new();
        loop {
            let got = again.poll().await.unwrap();
            if got.is_empty() {
                break;
            }
            records.extend(got);
        }
        fastrand::shuffle(&mut records);
        let ledger = self.ledger();
        for batch in records.chunks(100) {
            let mut event = aws_lambda_events::event::dynamodb::Event::default();
            event.records = batch.to_vec();
            let response = stream::handle(&ledger, &publisher, event).await;
            assert!(
                response.batch_item_failures.is_empty(),
                "{:?}",
                response.batch_item_failures
            );
        }
        records.len()
    }

    /// The `detail` of every event the stream function put on the bus since
    /// the last call (read from the local bus's watch queue).
    pub async fn bus_events(&self) -> Vec<Value> {
        let url = match &*self.stream.lock().await {
            Some((_, bus)) => bus.watch_queue_url.clone(),
            None => return Vec::new(),
        };
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let mut events = Vec::new();
        loop {
            let out = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return events;
            }
            for m in messages {
                let event: Value = serde_json::from_str(m.body().unwrap()).unwrap();
                events.push(event["detail"].clone());
                sqs.delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    pub fn dynamodb_requests(&self) -> usize {
        self.requests.total()
    }

    /// Every item of the table, in key order, for before/after comparisons.
    pub async fn snapshot(&self) -> Vec<BTreeMap<String, Value>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in out.items.unwrap_or_default() {
                items.push(
                    item.into_iter()
                        .map(|(k, v)| (k, canonical(&v)))
                        .collect::<BTreeMap<_, _>>(),
                );
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        items.sort_by_key(|i| (i["pk"].to_string(), i["sk"].to_string()));
        items
    }
}

/// One request through the local gateway (authorizer, routing, payload 2.0
/// event) into the real handler, as `make run` serves it but without a socket.
pub async fn call(
    gateway: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<&str>,
) -> HttpReply {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    if let Some(k) = key {
        headers.push(("idempotency-key".into(), k.to_string()));
    }
    // Boxed: every handler's future is in this one, and a long scenario's
    // test future would otherwise outgrow the test thread's stack.
    let response = Box::pin(gateway.respond(method, path, query, &headers, body.unwrap_or_default().as_bytes())).await;
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status().as_u16();
    let body = match response.into_body() {
        lambda_http::Body::Text(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
        lambda_http::Body::Empty => Value::Null,
        other => panic!("unexpected body {other:?}"),
    };
    HttpReply {
        status,
        body,
        content_type,
        replayed,
    }
}

pub async fn purchase(gateway: &Gateway, token: &str, key: &str, body: &str) -> HttpReply {
    call(
        gateway,
        "POST",
        &format!("/v1/orgs/{ORG}/purchases"),
        Some(token),
        Some(key),
        Some(body),
    )
    .await
}

pub async fn subscribe(gateway: &Gateway, token: &str, org: &str, plan: &str) -> HttpReply {
    let body = format!(r#"{{"plan":"{plan}"}}"#);
    put_subscription(gateway, token, org, &format!("sub-{org}"), &body).await
}

/// `PUT /subscription` with any body: subscribe, change plan or seats.
pub async fn put_subscription(gateway: &Gateway, token: &str, org: &str, key: &str, body: &str) -> HttpReply {
    call(
        gateway,
        "PUT",
        &format!("/v1/orgs/{org}/subscription"),
        Some(token),
        Some(key),
        Some(body),
    )
    .await
}

pub async fn spend(gateway: &Gateway, token: &str, key: &str, action: &str, quantity: u64) -> HttpReply {
    let body = format!(r#"{{"action":"{action}","quantity":{quantity}}}"#);
    call(
        gateway,
        "POST",
        &format!("/v1/orgs/{ORG}/spend"),
        Some(token),
        Some(key),
        Some(&body),
    )
    .await
}

pub async fn available(gateway: &Gateway, token: &str, meter: &str) -> String {
    balance(gateway, token).await["meters"][meter]["available"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A `GET` that must answer 200: its body.
pub async fn get(stack: &Stack, path: &str, token: &str) -> Value {
    let r = call(&stack.gateway(), "GET", path, Some(token), None, None).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}

/// `GET /balance` of the organization, as `token` sees it.
pub async fn balance(gateway: &Gateway, token: &str) -> Value {
    let r = call(
        gateway,
        "GET",
        &format!("/v1/orgs/{ORG}/balance"),
        Some(token),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The whole ledger, newest first, walking every page.
pub async fn ledger(gateway: &Gateway, token: &str, page: u32) -> Vec<Value> {
    ledger_of(gateway, ORG, token, page).await
}

/// [`ledger`] of any organization.
pub async fn ledger_of(gateway: &Gateway, org: &str, token: &str, page: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/orgs/{org}/ledger?limit={page}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = call(gateway, "GET", &path, Some(token), None, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        entries.extend(r.body["entries"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return entries,
        }
    }
}

/// Sum of a meter's ledger lines, in thousandths.
pub fn ledger_total(entries: &[Value], meter: &str) -> i64 {
    entries
        .iter()
        .flat_map(|e| e["lines"].as_array().unwrap().iter())
        .filter(|l| l["meter"] == meter)
        .map(|l| thousandths(l["amount"].as_str().unwrap()))
        .sum()
}

pub fn thousandths(decimal: &str) -> i64 {
    let negative = decimal.starts_with('-');
    let c = ledger_domain::Credits::parse_decimal(decimal.trim_start_matches('-'))
        .unwrap()
        .thousandths();
    if negative {
        -c
    } else {
        c
    }
}

/// An attribute value in a form that compares by content (maps sorted).
fn canonical(v: &AttributeValue) -> Value {
    use serde_json::json;
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(canonical).collect::<Vec<_>>() }),
        AttributeValue::M(m) => {
            let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
            json!({ "M": sorted })
        }
        AttributeValue::Ss(ss) => {
            let mut ss = ss.clone();
            ss.sort();
            json!({ "SS": ss })
        }
        other => json!({ "other": format!("{other:?}") }),
    }
}

/// A client that follows the contract: a 503 (contention) is retried with
/// the same Idempotency-Key after a pause, so it can never charge twice.
pub async fn call_retrying(
    gateway: &Gateway,
    method: &str,
    path: &str,
    token: &str,
    key: &str,
    body: &str,
) -> (HttpReply, u32) {
    let mut retries = 0;
    loop {
        let reply = call(gateway, method, path, Some(token), Some(key), Some(body)).await;
        if reply.status != 503 || retries == 50 {
            return (reply, retries);
        }
        retries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20 + 10 * u64::from(retries))).await;
    }
}
