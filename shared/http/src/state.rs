//! What every HTTP function builds once at start-up: the ledger over
//! DynamoDB, the catalog, the clock.

use std::sync::Arc;

use ledger_domain::{Catalog, Clock, SystemClock};
use ledger_store::{DynamoLedgerStore, Ledger};

pub type DynamoLedger = Ledger<DynamoLedgerStore>;

pub struct AppState {
    pub ledger: DynamoLedger,
}

impl AppState {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        AppState {
            ledger: Ledger::new(DynamoLedgerStore::new(client, table), catalog, clock),
        }
    }

    /// From the Lambda environment: `TABLE_NAME`, optional `LEDGER_CATALOG`
    /// (JSON; empty means the catalog compiled in), SDK config as usual
    /// (`AWS_ENDPOINT_URL_DYNAMODB` points it at DynamoDB Local).
    pub async fn from_env() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME is not set")?;
        let catalog = catalog_from_env()?;
        let config = aws_config::load_from_env().await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        Ok(AppState::new(client, &table, Arc::new(catalog), Arc::new(SystemClock)))
    }
}

pub fn catalog_from_env() -> Result<Catalog, ledger_domain::DomainError> {
    match std::env::var("LEDGER_CATALOG") {
        Ok(json) if !json.trim().is_empty() => Catalog::from_json(&json),
        _ => Ok(Catalog::default_catalog()),
    }
}
