//! Faults AWS delivers and DynamoDB Local never does, injected at the wire
//! of a DynamoDB client, so the real adapter, executor and handlers meet
//! them as they would on AWS:
//!
//! - **throttling**: a request answered `ThrottlingException` before it
//!   reaches the table (the SDK backs off and retries it);
//! - **transaction conflict**: a `TransactWriteItems` cancelled with
//!   `TransactionConflict` before it reaches the table (the executor
//!   re-reads and retries);
//! - **lost answer**: a write that reaches the table and commits, whose
//!   answer never comes back: the function is cut off after its write and
//!   before it answers (a timeout, a crash). The caller's own timeout ends
//!   the call, and its retry must find the write done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// How often each fault strikes, per request it can strike.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultRates {
    /// Any request.
    pub throttle: f64,
    /// `TransactWriteItems` only.
    pub conflict: f64,
    /// Writes only (`TransactWriteItems`, `PutItem`, `UpdateItem`, `DeleteItem`).
    pub lost_answer: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttle,
    Conflict,
    LostAnswer,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::Throttle, Fault::Conflict, Fault::LostAnswer];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Throttle => "throttling",
            Fault::Conflict => "transaction conflict",
            Fault::LostAnswer => "write committed, answer lost",
        }
    }
}

/// One fault plan, shared by every client made from it; off until
/// [`Faults::arm`] (so set-up and the checker's reads meet none).
#[derive(Clone, Debug)]
pub struct Faults(Arc<Plan>);

#[derive(Debug, Default)]
struct Plan {
    rates: FaultRates,
    armed: AtomicBool,
    injected: [AtomicU64; 3],
}

impl Faults {
    pub fn new(rates: FaultRates) -> Self {
        Faults(Arc::new(Plan {
            rates,
            ..Plan::default()
        }))
    }

    pub fn arm(&self, armed: bool) {
        self.0.armed.store(armed, Ordering::SeqCst);
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        Fault::ALL
            .iter()
            .map(|f| (f.name(), self.0.injected[*f as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// A DynamoDB client on `config` whose requests meet these faults.
    pub fn client(&self, config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let inner = config.http_client().expect("the SDK config has an HTTP client");
        let conf = aws_sdk_dynamodb::config::Builder::from(config)
            .http_client(SharedHttpClient::new(FaultyClient {
                inner,
                faults: self.clone(),
            }))
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    /// The fault this request meets, if any (counted).
    fn draw(&self, operation: &str) -> Option<Fault> {
        if !self.0.armed.load(Ordering::SeqCst) {
            return None;
        }
        let rates = self.0.rates;
        let write = matches!(
            operation,
            "TransactWriteItems" | "PutItem" | "UpdateItem" | "DeleteItem"
        );
        let candidates = [
            (Fault::Throttle, rates.throttle, true),
            (Fault::Conflict, rates.conflict, operation == "TransactWriteItems"),
            (Fault::LostAnswer, rates.lost_answer, write),
        ];
        let fault = candidates
            .into_iter()
            .find(|(_, rate, applies)| *applies && fastrand::f64() < *rate)
            .map(|(fault, _, _)| fault)?;
        self.0.injected[fault as usize].fetch_add(1, Ordering::Relaxed);
        Some(fault)
    }
}

#[derive(Debug)]
struct FaultyClient {
    inner: SharedHttpClient,
    faults: Faults,
}

impl HttpClient for FaultyClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            faults: self.faults.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    faults: Faults,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // The operation is named by the X-Amz-Target header: DynamoDB_20120810.GetItem.
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default()
            .to_string();
        match self.faults.draw(&operation) {
            None => self.inner.call(request),
            Some(Fault::Throttle) => HttpConnectorFuture::ready(Ok(refusal(
                "ThrottlingException",
                r#""message":"Rate of requests exceeds the allowed throughput.""#.to_string(),
            ))),
            Some(Fault::Conflict) => {
                // One reason per item, as DynamoDB answers: the first item
                // was being written by another transaction.
                let items = request
                    .body()
                    .bytes()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|b| b["TransactItems"].as_array().map(Vec::len))
                    .unwrap_or(1);
                let reasons: Vec<_> = (0..items)
                    .map(|i| match i {
                        0 => serde_json::json!({ "Code": "TransactionConflict", "Message": "Transaction is ongoing for the item" }),
                        _ => serde_json::json!({ "Code": "None" }),
                    })
                    .collect();
                let body = format!(
                    r#""message":"Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]","CancellationReasons":{}"#,
                    serde_json::Value::from(reasons)
                );
                HttpConnectorFuture::ready(Ok(refusal("TransactionCanceledException", body)))
            }
            Some(Fault::LostAnswer) => {
                let sent = self.inner.call(request);
                HttpConnectorFuture::new(async move {
                    // The write reaches the table; its answer never reaches
                    // the function, cut off here until its caller gives up.
                    let _committed = sent.await;
                    std::future::pending::<Result<HttpResponse, _>>().await
                })
            }
        }
    }
}

/// DynamoDB's answer refusing a request with `kind` (a JSON 1.0 error).
fn refusal(kind: &str, fields: String) -> HttpResponse {
    let body = format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}",{fields}}}"#);
    let mut response = HttpResponse::new(400u16.try_into().expect("a status"), SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    response
}
