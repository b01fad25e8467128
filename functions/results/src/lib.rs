//! The results queue's consumer: success-only charging. Producers (the
//! product's enrichment workers) send one message per result; a billable
//! result is charged, the rest recorded free, each once per producer
//! request id however often SQS delivers it.
//!
//! A batch answers with the ids of the messages that failed only (partial
//! batch response): a malformed message, or one for an organization that
//! has no account, fails alone and reaches the dead-letter queue after the
//! queue's redrive count; the others are charged. Results of one
//! organization are charged in arrival order, as one transaction where they
//! can be, organizations side by side.

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use ledger_domain::{ActionId, CampaignId, DomainError, OrgId, ResultReport, Subject, UserId};
use ledger_service::DynamoLedger;
use serde::Deserialize;
use tracing::{error, warn};

/// Organizations charged at once within one batch.
const ORGS_IN_FLIGHT: usize = 4;

/// One result message, as producers send it (the README's contract).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultMessage {
    org: String,
    #[serde(default)]
    user: Option<String>,
    action: String,
    subject: String,
    outcome: String,
    #[serde(default)]
    campaign: Option<String>,
    request_id: String,
    occurred_at: DateTime<Utc>,
}

/// Reads and validates a message body: every field, strictly.
pub fn parse(body: &str) -> Result<(OrgId, ResultReport), DomainError> {
    let m: ResultMessage =
        serde_json::from_str(body).map_err(|e| DomainError::InvalidRequest(format!("result message: {e}")))?;
    ResultReport::check_request_id(&m.request_id)?;
    Ok((
        OrgId::parse(&m.org)?,
        ResultReport {
            request_id: m.request_id,
            action: ActionId::parse(&m.action)?,
            subject: Subject::parse(&m.subject)?,
            outcome: m.outcome,
            user: m.user.as_deref().map(UserId::parse).transpose()?,
            campaign: m.campaign.as_deref().map(CampaignId::parse).transpose()?,
            occurred_at: m.occurred_at,
        },
    ))
}

pub async fn handle(ledger: &DynamoLedger, event: SqsEvent) -> SqsBatchResponse {
    let mut failed: Vec<String> = Vec::new();
    let mut by_org: BTreeMap<OrgId, Vec<(String, ResultReport)>> = BTreeMap::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        match read(&message) {
            Ok((org, report)) => by_org.entry(org).or_default().push((id, report)),
            Err(e) => {
                warn!(message = %id, error = %e, "malformed result; left for the dead-letter queue");
                failed.push(id);
            }
        }
    }
    let per_org: Vec<Vec<String>> = stream::iter(by_org)
        .map(|(org, results)| async move {
            let reports: Vec<ResultReport> = results.iter().map(|(_, r)| r.clone()).collect();
            let answers = ledger.charge_results(&org, &reports).await;
            let mut failed = Vec::new();
            for ((id, report), answer) in results.into_iter().zip(answers) {
                if let Err(e) = answer {
                    error!(message = %id, %org, request_id = %report.request_id, error = %e, "result not charged; retried");
                    failed.push(id);
                }
            }
            failed
        })
        .buffer_unordered(ORGS_IN_FLIGHT)
        .collect()
        .await;
    failed.extend(per_org.into_iter().flatten());
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

fn read(message: &SqsMessage) -> Result<(OrgId, ResultReport), DomainError> {
    parse(message.body.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_read_strictly_and_its_subject_normalised() {
        let ok = r#"{"org":"acme","user":"u1","action":"email_finder","subject":" Jane@Example.com","outcome":"deliverable","campaign":"c1","request_id":"req-1","occurred_at":"2026-11-22T10:00:00Z"}"#;
        let (org, r) = parse(ok).unwrap();
        assert_eq!((org.as_str(), r.subject.as_str()), ("acme", "jane@example.com"));
        for bad in [
            r#"{"org":"acme","action":"email_finder","subject":"x","outcome":"found","request_id":"r","occurred_at":"2026-11-22T10:00:00Z","extra":1}"#,
            r#"{"org":"acme","action":"email_finder","subject":"x","outcome":"found","occurred_at":"2026-11-22T10:00:00Z"}"#,
            r#"{"org":"a b","action":"email_finder","subject":"x","outcome":"found","request_id":"r","occurred_at":"2026-11-22T10:00:00Z"}"#,
            r#"{"org":"acme","action":"email_finder","subject":"x","outcome":"found","request_id":"has space","occurred_at":"2026-11-22T10:00:00Z"}"#,
            r#"{"org":"acme","action":"email_finder","subject":"x","outcome":"found","request_id":"r","occurred_at":"yesterday"}"#,
            "not json",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
