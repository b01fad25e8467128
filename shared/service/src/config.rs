//! What a function builds once per cold start: the catalog, the SDK client,
//! the ledger over DynamoDB.

use std::sync::Arc;

use ledger_domain::{Catalog, DomainError, SystemClock};
use ledger_store::DynamoLedgerStore;

use crate::Ledger;

pub type DynamoLedger = Ledger<DynamoLedgerStore>;

/// The deployment's catalog: `LEDGER_CATALOG_FILE` (a JSON file, e.g. for
/// local runs) or else `LEDGER_CATALOG`, the name of a catalog shipped under
/// `infra/catalogs/` (`default` when unset). Validated here: a bad catalog
/// stops the function at start-up with a clear error.
pub fn catalog_from_env() -> Result<Catalog, DomainError> {
    if let Ok(path) = std::env::var("LEDGER_CATALOG_FILE") {
        if !path.trim().is_empty() {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| DomainError::InvalidCatalog(format!("reading {path}: {e}")))?;
            return Catalog::from_json(&json).map_err(|e| DomainError::InvalidCatalog(format!("{path}: {e}")));
        }
    }
    match std::env::var("LEDGER_CATALOG") {
        Ok(name) if !name.trim().is_empty() => Catalog::shipped(name.trim()),
        _ => Ok(Catalog::default_catalog()),
    }
}

/// The ledger from the Lambda environment: `TABLE_NAME`, the catalog (see
/// [`catalog_from_env`]), SDK config as usual (`AWS_ENDPOINT_URL_DYNAMODB`
/// points it at DynamoDB Local).
pub async fn from_env() -> Result<DynamoLedger, Box<dyn std::error::Error + Send + Sync>> {
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME is not set")?;
    let catalog = catalog_from_env()?;
    let config = sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let ledger = dynamo_ledger(client, &table, Arc::new(catalog), Arc::new(SystemClock));
    Ok(match export_files(&config) {
        Some(files) => ledger.with_exports(files),
        None => ledger,
    })
}

/// Where history exports go, for the functions that write or link them:
/// `EXPORT_BUCKET` and `EXPORT_QUEUE_URL` (`AWS_ENDPOINT_URL_S3` points S3
/// at moto locally).
pub fn export_files(config: &aws_config::SdkConfig) -> Option<ledger_store::ExportFiles> {
    let bucket = std::env::var("EXPORT_BUCKET").ok()?;
    let queue = std::env::var("EXPORT_QUEUE_URL").ok()?;
    Some(ledger_store::ExportFiles::new(
        ledger_store::ExportFiles::s3_client(config),
        &bucket,
        aws_sdk_sqs::Client::new(config),
        &queue,
    ))
}

/// The SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL_*`), with the one HTTPS client every SDK client of
/// this process shares: rustls on ring. The SDKs' own default client
/// (rustls on aws-lc) is not compiled in: ring is the smaller library.
pub async fn sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls;
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
}

pub fn dynamo_ledger(
    client: aws_sdk_dynamodb::Client,
    table: &str,
    catalog: Arc<Catalog>,
    clock: Arc<dyn ledger_domain::Clock>,
) -> DynamoLedger {
    Ledger::new(DynamoLedgerStore::new(client, table), catalog, clock)
}

/// The event bus from the Lambda environment: `EVENT_BUS_NAME`, SDK config
/// as usual (`AWS_ENDPOINT_URL_EVENTBRIDGE` points it at moto locally).
pub async fn bus_from_env() -> Result<ledger_store::EventBridgeBus, Box<dyn std::error::Error + Send + Sync>> {
    let bus = std::env::var("EVENT_BUS_NAME").map_err(|_| "EVENT_BUS_NAME is not set")?;
    let config = sdk_config().await;
    Ok(ledger_store::EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&config),
        &bus,
    ))
}
