//! `make run`: the template's tables and queues on the local servers, dev
//! tokens, and the HTTP API served by the real handlers until Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use ledger_domain::SystemClock;
use ledger_local::gateway::Gateway;
use ledger_local::streams::StreamPoller;
use ledger_local::template::Template;
use ledger_local::tokens::DevAuthority;
use ledger_service::{catalog_from_env, dynamo_ledger};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(env("RUST_LOG", "info"))
        .init();
    let root = ledger_local::project_root();
    let template = Template::load(&root.join("template.yaml"))?;
    let dynamodb = env("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000");
    let sqs = env("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:5000");
    let port: u16 = env("API_PORT", "3000").parse().context("API_PORT")?;

    let config = ledger_service::config::sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    for id in template.table_ids() {
        template.create_table(&dynamo, &id, &id).await?;
    }
    let sqs_client = aws_sdk_sqs::Client::new(&config);
    let queues = template.create_queues(&sqs_client, "").await?;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let bus = template
        .create_event_bus(&events, &sqs_client, "LedgerEventBus", "ledger-local")
        .await?;

    let s3 = ledger_store::ExportFiles::s3_client(&config);
    template.create_bucket(&s3, "ExportBucket", "ledger-exports").await?;
    let export_queue = queues
        .iter()
        .find(|(id, _)| id == "ExportQueue")
        .map(|(_, url)| url.clone())
        .context("template.yaml declares no ExportQueue")?;
    let export_files =
        ledger_store::ExportFiles::new(&config, "ledger-exports", sqs_client.clone(), &export_queue).with_uploads(s3);

    let catalog = Arc::new(catalog_from_env()?);
    let ledger = dynamo_ledger(dynamo.clone(), "LedgerTable", catalog.clone(), Arc::new(SystemClock))
        .with_exports(export_files.clone());
    // The table's stream into the stream function, as Lambda's event source
    // mapping would deliver it.
    let mut poller = StreamPoller::for_table(&config, "LedgerTable").await?;
    let sequencer = dynamo_ledger(dynamo.clone(), "LedgerTable", catalog.clone(), Arc::new(SystemClock));
    let publisher = ledger_store::EventBridgeBus::new(events, &bus.name);
    tokio::spawn(async move {
        loop {
            if let Err(e) = poller.drain(&sequencer, &publisher).await {
                tracing::warn!(error = %e, "stream delivery failed; retrying");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    // The results queue into the results function, as Lambda's event
    // source mapping would deliver it.
    if let Some((_, url)) = queues.iter().find(|(id, _)| id == "ResultsQueue") {
        let consumer = ledger_local::results_queue::QueuePoller::new(&config, url.clone());
        let charger = dynamo_ledger(dynamo.clone(), "LedgerTable", catalog.clone(), Arc::new(SystemClock));
        tokio::spawn(async move {
            loop {
                if let Err(e) = consumer.drain(&charger).await {
                    tracing::warn!(error = %e, "results delivery failed; retrying");
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
    }
    // The exports queue into the exports function (one job a message).
    let exporter =
        dynamo_ledger(dynamo.clone(), "LedgerTable", catalog.clone(), Arc::new(SystemClock)).with_exports(export_files);
    let export_consumer = ledger_local::results_queue::QueuePoller::new(&config, export_queue);
    tokio::spawn(async move {
        loop {
            let run = |event| {
                let limits = exports::ExportLimits {
                    page: exports::PAGE,
                    part_bytes: exports::MIN_PART_BYTES,
                    deadline: std::time::Instant::now() + std::time::Duration::from_secs(840),
                };
                exports::handle(&exporter, event, limits)
            };
            if let Err(e) = export_consumer.drain_to(1, run).await {
                tracing::warn!(error = %e, "export delivery failed; retrying");
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    // The scheduled renewal, every minute (`make sweep` runs it at once).
    let resetter = dynamo_ledger(dynamo, "LedgerTable", catalog, Arc::new(SystemClock));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            if let Err(e) = reset::handle(&resetter, std::time::Duration::from_secs(50)).await {
                tracing::warn!(error = %e, "renewal sweep failed; the next one retries");
            }
        }
    });
    let authority = DevAuthority::new(env("DEV_JWT_KEY", "local-dev-key-not-for-production").as_bytes());
    let routes = template.routes()?;
    let addr = Gateway::new(routes.clone(), authority.clone(), Arc::new(ledger))
        .spawn(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;

    let day = 24 * 3600;
    let admin = authority.user_token("acme", "alice", "admin", day);
    let member = authority.user_token("acme", "bob", "member", day);
    let service = authority.service_token("product-backend", day);
    let base = format!("http://{addr}");
    println!("\nCredit ledger running on {base}  (DynamoDB Local {dynamodb}, SQS {sqs})");
    for (id, url) in &queues {
        println!("  queue {id}: {url}");
    }
    println!(
        "  event bus {}: its events (low-balance alerts) copied to {}",
        bus.name, bus.watch_queue_url
    );
    println!("\nRoutes (from template.yaml):");
    for r in &routes {
        println!("  {:<40} -> {}", r.key(), r.function);
    }
    println!("\nDev tokens (24 h), organization `acme`:");
    println!("  export ADMIN_TOKEN={admin}");
    println!("  export MEMBER_TOKEN={member}");
    println!("  export SERVICE_TOKEN={service}");
    println!("\nTry it:");
    println!(
        "  curl -s -X PUT {base}/v1/orgs/acme/subscription -H \"Authorization: Bearer $SERVICE_TOKEN\" \\\n    -H 'Idempotency-Key: sub-1' -H 'content-type: application/json' -d '{{\"plan\":\"starter\"}}'"
    );
    println!(
        "  curl -s -X POST {base}/v1/orgs/acme/spend -H \"Authorization: Bearer $MEMBER_TOKEN\" \\\n    -H 'Idempotency-Key: spend-1' -H 'content-type: application/json' -d '{{\"action\":\"email_verification\",\"quantity\":3}}'"
    );
    println!("  curl -s {base}/v1/orgs/acme/balance -H \"Authorization: Bearer $MEMBER_TOKEN\"");
    println!("\nCtrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
