//! The exports queue's consumer: runs history export jobs. A message names
//! one job (`{"org": "acme", "export": "<id>"}`); the job is written to S3
//! in parts until it is done or the invocation's time runs short, when it
//! queues its own continuation and stops at its last checkpoint. A message
//! that fails (a store or S3 error) is reported alone and redelivered,
//! then dead-lettered after the queue's redrive count.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use ledger_domain::OrgId;
use ledger_http::csv::HistoryCsv;
pub use ledger_service::exports::ExportLimits;
use ledger_service::DynamoLedger;
use serde::Deserialize;
use tracing::{error, info};

/// S3's smallest part but for the last.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of 8 MiB: a million entries (about 250 MB of CSV) in about 30
/// parts, far below S3's 10,000.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportMessage {
    org: String,
    export: String,
}

/// Entries read a query (DynamoDB answers at most 1 MB a page anyway).
pub const PAGE: u32 = 1_000;

/// How one invocation runs its jobs: `deadline` is the invocation's less a
/// margin for the last part's upload and checkpoint.
pub async fn handle(ledger: &DynamoLedger, event: SqsEvent, limits: ExportLimits) -> SqsBatchResponse {
    let format = HistoryCsv::for_catalog(ledger.catalog());
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let run = async {
            let m: ExportMessage = serde_json::from_str(message.body.as_deref().unwrap_or_default())
                .map_err(|e| format!("malformed export message: {e}"))?;
            let org = OrgId::parse(&m.org).map_err(|e| e.to_string())?;
            ledger
                .run_export(&org, &m.export, &format, limits)
                .await
                .map_err(|e| e.to_string())
        };
        match run.await {
            Ok(outcome) => info!(message = %id, ?outcome, "export run"),
            Err(e) => {
                error!(message = %id, error = %e, "export run failed");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}
