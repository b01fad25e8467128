//! `make coldstart`: each function's cold start, measured as Lambda would
//! see it. A minimal Lambda Runtime API on loopback serves one real event
//! of the function's trigger at `/2018-06-01/runtime/invocation/next` and
//! takes its answer; the release binary is started fresh for every run.
//! Printed per function: the median over the runs of init (process start
//! to its first `next`), first answer (process start to its response) and
//! peak RSS, beside the Rust hello world on the same runtime and profile;
//! then one process kept warm for 200 more invocations, and the CPU time
//! (every thread) each of those took: the function's own cost per warm
//! invocation, apart from DynamoDB Local's latency.
//! The handlers run against DynamoDB Local and moto (`infra/coldstart.sh`
//! starts them), so a first answer includes the function's real requests.
//! Asserts nothing.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ledger_domain::SystemClock;
use ledger_local::template::Template;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

const RUNS: usize = 10;
/// Invocations of one warm process, for its CPU time per invocation.
const WARM_INVOCATIONS: usize = 200;
const ORG: &str = "coldstart";

/// What the runtime API saw of one process.
#[derive(Debug)]
enum Seen {
    Next(Instant),
    Answer(Instant, u16),
    Error(String),
}

struct RuntimeApi {
    /// The invocations to hand out, in order.
    events: Mutex<std::collections::VecDeque<String>>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl RuntimeApi {
    async fn serve(self: Arc<Self>, req: hyper::Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_string();
        let at = Instant::now();
        let reply = |status: u16, body: String| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("valid response")
        };
        if path == "/2018-06-01/runtime/invocation/next" {
            let _ = self.seen.send(Seen::Next(at));
            let event = self.events.lock().await.pop_front();
            let Some(event) = event else {
                // Every invocation served: later polls wait until it is killed.
                std::future::pending::<()>().await;
                unreachable!();
            };
            let deadline = chrono::Utc::now().timestamp_millis() + 10_000;
            let response = hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", "coldstart-1")
                .header("lambda-runtime-deadline-ms", deadline.to_string())
                .header(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:coldstart",
                )
                .header(
                    "lambda-runtime-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0",
                )
                .body(Full::new(Bytes::from(event)))
                .expect("valid response");
            return Ok(response);
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).to_string();
        if path.ends_with("/response") {
            let status = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["statusCode"].as_u64())
                .unwrap_or(200) as u16;
            let _ = self.seen.send(Seen::Answer(at, status));
        } else {
            let _ = self.seen.send(Seen::Error(text));
        }
        Ok(reply(202, "{}".into()))
    }
}

/// What one process did.
struct Run {
    init: Duration,
    first_answer: Duration,
    /// CPU time of the process (every thread) per invocation after the
    /// first: what a warm invocation costs in the function's own code,
    /// whatever DynamoDB Local's latency.
    warm_cpu: Option<Duration>,
    peak_rss_kib: u64,
    status: u16,
}

/// CPU time of every thread of `pid` so far (`/proc/<pid>/task/*/schedstat`).
fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(ns)
}

/// One process: the binary started with `env`, served `events` in turn,
/// killed after its last answer.
async fn run_once(binary: &PathBuf, env: &[(String, String)], events: Vec<String>) -> Result<Run> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let invocations = events.len();
    let api = Arc::new(RuntimeApi {
        events: Mutex::new(events.into()),
        seen: tx,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = {
        let api = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| api.clone().serve(req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("no pid")?;
    let mut init = None;
    let (mut first, mut answers, mut cpu_after_first) = (None, 0, Duration::ZERO);
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(seen) = rx.recv().await {
            match seen {
                Seen::Next(at) => {
                    init.get_or_insert(at - started);
                }
                Seen::Answer(at, status) => {
                    answers += 1;
                    if first.is_none() {
                        first = Some((at - started, status));
                        cpu_after_first = cpu_time(pid);
                    }
                    if answers == invocations {
                        return Ok(first.expect("the first answer"));
                    }
                }
                Seen::Error(text) => bail!("the function reported an error: {text}"),
            }
        }
        bail!("the runtime API closed")
    })
    .await;
    // The process is polling for its next event: its CPU time is settled.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let warm_cpu = (invocations > 1).then(|| (cpu_time(pid) - cpu_after_first) / (invocations as u32 - 1));
    // Peak RSS before the process goes.
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    let _ = child.start_kill();
    let stderr = match child.wait_with_output().await {
        Ok(out) => String::from_utf8_lossy(&out.stderr).to_string(),
        Err(_) => String::new(),
    };
    server.abort();
    let (answered, status) = match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => bail!("{e}; stderr: {stderr}"),
        Err(_) => bail!("no answer in 120 s; stderr: {stderr}"),
    };
    Ok(Run {
        init: init.unwrap_or(answered),
        first_answer: answered,
        warm_cpu,
        peak_rss_kib: rss,
        status,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// A payload 2.0 event as API Gateway's JWT authorizer delivers it.
fn http_event(method: &str, route: &str, path: &str, claims: Value, scopes: Value, body: Option<&str>) -> String {
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": { "content-type": "application/json", "idempotency-key": format!("cold-{}", uuid_ish()) },
        "pathParameters": { "org": ORG },
        "requestContext": {
            "routeKey": format!("{method} {route}"),
            "accountId": "123456789012",
            "stage": "$default",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "authorizer": { "jwt": { "claims": claims, "scopes": scopes } },
            "apiId": "a1b2c3",
            "domainName": "a1b2c3.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3",
            "time": "30/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_796_032_800_000_i64,
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "coldstart" }
        },
        "isBase64Encoded": false
    });
    if let Some(b) = body {
        event["body"] = json!(b);
    }
    event.to_string()
}

/// A fresh idempotency key per run: each run is a new request.
fn uuid_ish() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

fn sqs_event(body: &str) -> String {
    json!({ "Records": [{
        "messageId": "m-1", "receiptHandle": "r-1", "body": body,
        "attributes": { "ApproximateReceiveCount": "1", "SentTimestamp": "1796032800000", "SenderId": "AIDA", "ApproximateFirstReceiveTimestamp": "1796032800000" },
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue", "awsRegion": "us-east-1"
    }]})
    .to_string()
}

/// Each function's trigger, with a real event of it.
fn events() -> Vec<(&'static str, String)> {
    let member = json!({ "sub": "bob", "org": ORG, "role": "member", "iss": "https://idp.example", "aud": "client" });
    let admin = json!({ "sub": "alice", "org": ORG, "role": "admin", "iss": "https://idp.example", "aud": "client" });
    let service = json!({ "sub": "backend", "scope": "ledger/service", "iss": "https://idp.example", "aud": "client" });
    let spend = r#"{"action":"email_verification","quantity":1}"#;
    let result = json!({ "org": ORG, "action": "email_finder", "subject": "a@b.co", "outcome": "undeliverable", "request_id": "r-1", "occurred_at": "2026-11-30T10:00:00Z" }).to_string();
    vec![
        ("spend", http_event("POST", "/v1/orgs/{org}/spend", "/v1/orgs/coldstart/spend", member.clone(), Value::Null, Some(spend))),
        ("balance", http_event("GET", "/v1/orgs/{org}/balance", "/v1/orgs/coldstart/balance", member, Value::Null, None)),
        ("purchase", http_event("POST", "/v1/orgs/{org}/purchases", "/v1/orgs/coldstart/purchases", service, json!(["ledger/service"]), Some(&format!(r#"{{"credits":"10","payment_reference":"cold-{}"}}"#, uuid_ish())))),
        ("accounts", http_event("GET", "/v1/orgs/{org}/members", "/v1/orgs/coldstart/members", admin, Value::Null, None)),
        ("results", sqs_event(&result)),
        ("exports", sqs_event(&json!({ "org": ORG, "export": "none" }).to_string())),
        ("stream", json!({ "Records": [] }).to_string()),
        ("reset", json!({ "version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.scheduler", "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1", "resources": [], "detail": {} }).to_string()),
    ]
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = ledger_local::project_root();
    let release = root.join("target/release");
    let hello_bin = release.join("hello");
    for b in [
        release.join("ledger"),
        release.join("ledger-exports"),
        hello_bin.clone(),
    ] {
        if !b.exists() {
            bail!(
                "{} is not built: cargo build --release -p ledger-lambda --bins",
                b.display()
            );
        }
    }
    // The table, bus, bucket and queues the functions name, and an account to spend on.
    let template = Template::load(&root.join("template.yaml"))?;
    let config = ledger_service::config::sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    template.create_table(&dynamo, "LedgerTable", "coldstart").await?;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queues = template.create_queues(&sqs, "coldstart-").await?;
    let export_queue = queues
        .iter()
        .find(|(id, _)| id == "ExportQueue")
        .map(|(_, u)| u.clone())
        .context("ExportQueue")?;
    let s3 = ledger_store::ExportFiles::s3_client(&config);
    template.create_bucket(&s3, "ExportBucket", "coldstart-exports").await?;
    let events_client = aws_sdk_eventbridge::Client::new(&config);
    let bus = template
        .create_event_bus(&events_client, &sqs, "LedgerEventBus", "coldstart-bus")
        .await?;
    let ledger = ledger_service::dynamo_ledger(
        dynamo,
        "coldstart",
        Arc::new(ledger_domain::Catalog::default_catalog()),
        Arc::new(SystemClock),
    );
    let sub = ledger_domain::Subscription::new(ledger.catalog(), "growth", None, None, None)?;
    ledger
        .subscribe(
            &ledger_domain::OrgId::parse(ORG)?,
            sub,
            ledger_domain::Actor::system(),
            &ledger_service::Idempotency {
                key: ledger_domain::IdempotencyKey::parse("coldstart-subscription")?,
                fingerprint: "coldstart-subscription".into(),
            },
        )
        .await?;

    let mut env: Vec<(String, String)> = [
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_EVENTBRIDGE",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_EC2_METADATA_DISABLED",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    env.extend([
        ("TABLE_NAME".into(), "coldstart".into()),
        ("EVENT_BUS_NAME".into(), bus.name.clone()),
        ("EXPORT_BUCKET".into(), "coldstart-exports".into()),
        ("EXPORT_QUEUE_URL".into(), export_queue),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), "coldstart".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
        ("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()),
        ("RUST_LOG".into(), "warn".into()),
    ]);

    println!("Cold starts: {RUNS} fresh processes each, against a local Lambda Runtime API (medians)");
    println!(
        "{:<10} {:>10} {:>14} {:>10} {:>12} {:>14} {:>8}",
        "function", "init ms", "1st answer ms", "peak MiB", "init/hello", "warm CPU ms", "status"
    );
    let mut rows = Vec::new();
    let hello_event = json!({ "hello": "world" }).to_string();
    // The same environment for the hello world: the runtime reads Lambda's variables.
    let mut measured = vec![("hello", hello_bin.clone(), env.clone(), hello_event)];
    for (name, event) in events() {
        let mut e = env.clone();
        e.push(("LEDGER_FUNCTION".into(), name.to_string()));
        measured.push((name, release.join(template.binary_of(name)?), e, event));
    }
    for (name, binary, env, event) in &measured {
        let (mut inits, mut answers, mut rss, mut status) = (Vec::new(), Vec::new(), Vec::new(), 0);
        // Each invocation is a new request (fresh idempotency keys and references).
        let fresh = |i: usize| event.replace("cold-", &format!("cold-{}-{i}-", uuid_ish()));
        for _ in 0..RUNS {
            let run = run_once(binary, env, vec![fresh(0)]).await?;
            inits.push(run.init.as_secs_f64() * 1e3);
            answers.push(run.first_answer.as_secs_f64() * 1e3);
            rss.push(run.peak_rss_kib as f64 / 1024.0);
            status = run.status;
        }
        // Then one process kept warm for WARM_INVOCATIONS more.
        let warm = run_once(binary, env, (0..=WARM_INVOCATIONS).map(fresh).collect()).await?;
        let warm_cpu = warm.warm_cpu.unwrap_or_default().as_secs_f64() * 1e3;
        rows.push((
            name.to_string(),
            median(inits),
            median(answers),
            median(rss),
            warm_cpu,
            status,
        ));
    }
    let hello_init = rows[0].1;
    for (name, init, answer, rss, warm_cpu, status) in &rows {
        println!(
            "{:<10} {:>10.2} {:>14.2} {:>10.1} {:>12.2} {:>14.3} {:>8}",
            name,
            init,
            answer,
            rss,
            init / hello_init,
            warm_cpu,
            status
        );
    }
    let mb = |name: &str| std::fs::metadata(release.join(name)).map(|m| m.len() as f64 / 1e6);
    println!(
        "\nBinaries: ledger {:.2} MB, ledger-exports {:.2} MB, hello {:.2} MB (x86_64 here; `make bench` reports the arm64 package)",
        mb("ledger")?,
        mb("ledger-exports")?,
        mb("hello")?
    );
    Ok(())
}
