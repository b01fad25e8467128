//! Success-only charging: results reported by producers (through the
//! results queue), held results, and resuming after a top-up.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger_domain::catalog::BOUNCED;
use ledger_domain::{
    ActionId, Actor, BulkQuote, BulkSpend, CampaignId, DomainError, IdempotencyKey, OrgId, ResultCharge, ResultReport,
    ReversalReason, Subject, Unlock, UserId,
};
use ledger_store::{
    AccountStore, Commit, EarlierEntry, EntryKey, HistoryStore, RequestStore, ResultStore, SideWrite, StoredEntry,
};
use serde::{Deserialize, Serialize};

use crate::executor::{retry_on_subject_change, Idempotency, Ledger};
use crate::outcome::{Applied, Outcome};
use crate::ServiceError;

/// A report as a held result keeps it. Field names are the stored schema.
#[derive(Serialize, Deserialize)]
struct StoredReport {
    request_id: String,
    action: String,
    subject: String,
    outcome: String,
    user: Option<String>,
    campaign: Option<String>,
    occurred_at: DateTime<Utc>,
}

impl StoredReport {
    fn of(r: &ResultReport) -> String {
        let stored = StoredReport {
            request_id: r.request_id.clone(),
            action: r.action.to_string(),
            subject: r.subject.as_str().to_string(),
            outcome: r.outcome.clone(),
            user: r.user.as_ref().map(|u| u.to_string()),
            campaign: r.campaign.as_ref().map(|c| c.to_string()),
            occurred_at: r.occurred_at,
        };
        serde_json::to_string(&stored).expect("reports serialize")
    }

    fn read(text: &str) -> Result<ResultReport, ServiceError> {
        let malformed =
            |why: String| ServiceError::Store(ledger_store::StoreError::Malformed(format!("held result: {why}")));
        let s: StoredReport = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        Ok(ResultReport {
            request_id: s.request_id,
            action: ActionId::parse(&s.action)?,
            subject: Subject::parse(&s.subject)?,
            outcome: s.outcome,
            user: s.user.as_deref().map(UserId::parse).transpose()?,
            campaign: s.campaign.as_deref().map(CampaignId::parse).transpose()?,
            occurred_at: s.occurred_at,
        })
    }
}

/// What a resume did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// Held results settled: charged, or free because unlocked meanwhile.
    pub settled: usize,
    /// Still held (credits ran out again).
    pub still_held: u64,
    pub paused: bool,
}

/// The most results of one organization charged as one transaction: each
/// writes an entry and at most one unlock or hold, within DynamoDB's 100 items.
const MAX_BATCH: usize = 25;

/// Held results read per page by a resume.
const HELD_PAGE: u32 = 25;

impl<A: AccountStore, R: RequestStore, H: HistoryStore> Ledger<A, R, H> {
    /// Reverses one charge: its credits back into the buckets that paid
    /// (a renewed month's plan credits stay expired), once per entry
    /// whatever the key: the original is claimed in the same transaction.
    pub async fn reverse(
        &self,
        org: &OrgId,
        entry_id: &str,
        reason: ReversalReason,
        note: Option<String>,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        let original = self
            .history
            .entry(org, entry_id)
            .await?
            .ok_or_else(|| DomainError::EntryNotFound(entry_id.chars().take(128).collect()))?;
        let claim = format!("reversal:{org}:{}", original.id);
        self.apply(org, request, Some(claim), |account, _, now| {
            let (reversal, entry) = account.reverse(&original, reason, note.clone(), actor.clone(), now)?;
            let outcome = Outcome::Reversed {
                original: original.id.clone(),
                reason,
                returned: reversal.returned,
                stayed_expired: reversal.stayed_expired,
            };
            Ok((entry, outcome))
        })
        .await
        .map_err(|e| match e {
            ServiceError::AlreadyClaimed => ServiceError::AlreadyReversed,
            other => other,
        })
    }
}

impl<A: AccountStore + ResultStore, R: RequestStore, H: HistoryStore> Ledger<A, R, H> {
    /// Charges one reported result, once per producer request id however
    /// often it is delivered: billable outcomes are charged (or, for an
    /// action charged once per subject, free when the organization has the
    /// subject unlocked), the rest recorded free; a billable result the
    /// balance cannot pay is held and pauses result charging.
    pub async fn charge_result(&self, org: &OrgId, report: &ResultReport) -> Result<Applied, ServiceError> {
        let key = IdempotencyKey::parse(&format!("result:{}", report.request_id))?;
        if report.outcome == BOUNCED {
            if let Some(refund) = self.refund_bounce(org, report, &key).await? {
                return Ok(refund);
            }
        }
        self.settle(org, report, key, None).await
    }

    /// A bounce within the action's refund window reverses the charge that
    /// unlocked the subject; `None` when there is nothing to refund in time
    /// (then the bounce is recorded free, saying so).
    async fn refund_bounce(
        &self,
        org: &OrgId,
        report: &ResultReport,
        key: &IdempotencyKey,
    ) -> Result<Option<Applied>, ServiceError> {
        let (action_id, action) = self.catalog.action(report.action.as_str())?;
        let Some(days) = action.bounce_refund_days else {
            return Ok(None);
        };
        let Some(unlock) = self.accounts.load_unlock(org, action_id, &report.subject).await? else {
            return Ok(None);
        };
        let Some(charge) = self.history.entry(org, &unlock.entry_id).await? else {
            return Ok(None);
        };
        let charged = charge.lines.iter().any(|l| l.amount.is_negative());
        if !charged || self.clock.now() > charge.at + chrono::Duration::days(i64::from(days)) {
            return Ok(None);
        }
        let request = Idempotency {
            key: key.clone(),
            fingerprint: fingerprint(report),
        };
        let actor = Actor::service(report.user.clone());
        match self
            .reverse(org, &charge.id, ReversalReason::Bounced, None, actor, &request)
            .await
        {
            // Refunded once already (another bounce report for it): this
            // one is recorded free.
            Err(ServiceError::AlreadyReversed) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Charges the results of one organization that arrived together, in
    /// their order: as one transaction when it can (one read of the account
    /// and the results' keys, one of the subjects' unlocks, one write of
    /// every entry), else one by one. Each answer is the result's own, as
    /// [`Ledger::charge_result`] would give it.
    pub async fn charge_results(&self, org: &OrgId, reports: &[ResultReport]) -> Vec<Result<Applied, ServiceError>> {
        if reports.len() > 1 {
            match self.charge_batch(org, reports).await {
                Ok(Some(applied)) => return applied.into_iter().map(Ok).collect(),
                Ok(None) => {}
                Err(e) => tracing::debug!(%org, error = %e, "batch not charged at once; one by one"),
            }
        }
        let mut answers = Vec::with_capacity(reports.len());
        for report in reports {
            answers.push(self.charge_result(org, report).await);
        }
        answers
    }

    /// The batch as one change, or `None` when it must go one by one: a
    /// redelivery among them (a key taken), a bounce, a result id twice, an
    /// account due for renewal, or a race lost.
    async fn charge_batch(&self, org: &OrgId, reports: &[ResultReport]) -> Result<Option<Vec<Applied>>, ServiceError> {
        let mut requests = Vec::with_capacity(reports.len());
        for r in reports {
            requests.push(Idempotency {
                key: IdempotencyKey::parse(&format!("result:{}", r.request_id))?,
                fingerprint: fingerprint(r),
            });
        }
        let mut ids: Vec<&str> = reports.iter().map(|r| r.request_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        let simple =
            reports.len() <= MAX_BATCH && ids.len() == reports.len() && reports.iter().all(|r| r.outcome != BOUNCED);
        if !simple {
            return Ok(None);
        }
        // A warm instance decides on the account it last wrote and reads
        // nothing: the transaction's conditions (the account as guessed,
        // every key and unlock still free) reject a stale guess, and the
        // batch then goes one by one on fresh reads.
        let guessed = self.cached(org);
        let fresh = guessed.is_none();
        let before = match guessed {
            Some(account) => account,
            None => {
                let keys: Vec<IdempotencyKey> = requests.iter().map(|r| r.key.clone()).collect();
                let (account, taken) = self.accounts.load_account_and_keys(org, &keys).await?;
                if taken > 0 {
                    return Ok(None);
                }
                account.ok_or(DomainError::AccountNotFound)?
            }
        };
        // The unlocks of every subject an action charges once, per action.
        let mut unlocked: BTreeMap<(ActionId, Subject), Unlock> = BTreeMap::new();
        let mut by_action: BTreeMap<ActionId, Vec<Subject>> = BTreeMap::new();
        for r in reports {
            let (action_id, action, billable) = r.resolve(&self.catalog)?;
            if billable && action.once_per_subject {
                by_action.entry(action_id.clone()).or_default().push(r.subject.clone());
            }
        }
        for (action, subjects) in by_action.iter().filter(|_| fresh) {
            for (subject, unlock) in self.accounts.load_unlocks(org, action, subjects).await? {
                unlocked.insert((action.clone(), subject), unlock);
            }
        }
        let now = self.clock.now();
        let mut next = before.clone();
        if next.renew_if_due(&self.catalog, now)?.is_some() {
            return Ok(None);
        }
        let mut decided: Vec<(StoredEntry, Applied)> = Vec::with_capacity(reports.len());
        let mut side = Vec::new();
        for (r, request) in reports.iter().zip(&requests) {
            let action_id = r.resolve(&self.catalog)?.0.clone();
            let key = (action_id.clone(), r.subject.clone());
            let d = next.charge_result(&self.catalog, r, unlocked.get(&key), false, now)?;
            if let Some(until) = d.unlocks_until {
                side.push(SideWrite::Unlock {
                    action: action_id.clone(),
                    subject: r.subject.clone(),
                    until,
                    now,
                });
                // A later result of the batch for the same subject finds it unlocked.
                let entry_key = EntryKey::Request(request.key.clone());
                unlocked.insert(
                    key,
                    Unlock {
                        until,
                        entry_id: entry_key.entry_id(),
                    },
                );
            }
            if d.charge == ResultCharge::Held {
                side.push(SideWrite::Hold {
                    seq: next.seq,
                    report: StoredReport::of(r),
                });
            }
            let outcome = Outcome::Result {
                action: action_id,
                subject: r.subject.clone(),
                outcome: r.outcome.clone(),
                charge: d.charge,
            };
            if !fresh && outcome.needs_fresh_state() {
                return Ok(None);
            }
            let key = EntryKey::Request(request.key.clone());
            let mut entry = d.entry;
            entry.id = key.entry_id();
            let stored = StoredEntry {
                key,
                entry: entry.clone(),
                receipt: Some(request.receipt(&outcome)),
            };
            decided.push((
                stored,
                Applied {
                    outcome,
                    entry: Some(entry),
                    replayed: false,
                },
            ));
        }
        // What the entries after each one add, for the sequencer.
        let mut earlier = Vec::with_capacity(decided.len() - 1);
        for (i, (stored, _)) in decided[..decided.len() - 1].iter().enumerate() {
            let mut later: BTreeMap<ledger_domain::MeterId, ledger_domain::Credits> = BTreeMap::new();
            for (after, _) in &decided[i + 1..] {
                for line in &after.entry.lines {
                    let sum = later.entry(line.meter().clone()).or_default();
                    *sum = sum.checked_add(line.amount).expect("credits within range");
                }
            }
            earlier.push(EarlierEntry {
                stored: stored.clone(),
                later,
            });
        }
        let last = decided.last().expect("a batch of two or more").0.clone();
        let commit = Commit {
            before: Some(&before),
            account: &next,
            entry: last,
            earlier,
            claims: Vec::new(),
            side,
        };
        match self.accounts.commit(commit).await {
            Ok(()) => {
                self.remember(next);
                Ok(Some(decided.into_iter().map(|(_, applied)| applied).collect()))
            }
            Err(e) => {
                tracing::debug!(%org, error = %e, "batch lost a race; one by one");
                Ok(None)
            }
        }
    }

    /// Charges the held results in arrival order until none is left
    /// (result charging resumes) or the balance runs out again (it stays
    /// paused). Without held results it only lifts the pause.
    pub async fn resume_results(&self, org: &OrgId, actor: Actor) -> Result<ResumeReport, ServiceError> {
        let mut report = ResumeReport::default();
        loop {
            let held = self.accounts.held_results(org, HELD_PAGE).await?;
            if held.is_empty() {
                let account = self.current_account(org).await?;
                if account.results_paused && account.held_results == 0 {
                    let request = Idempotency {
                        key: attempt_key("resume", account.seq)?,
                        fingerprint: "resume".into(),
                    };
                    self.apply(org, &request, None, |account, _, now| {
                        let entry = account.resume_results(actor.clone(), now)?;
                        Ok((entry, Outcome::ResultsResumed))
                    })
                    .await?;
                }
                let account = self.current_account(org).await?;
                report.still_held = account.held_results;
                report.paused = account.results_paused;
                return Ok(report);
            }
            for h in held {
                let result = StoredReport::read(&h.report)?;
                // A fresh key per attempt: a refusal (credits ran out) is
                // kept under it and must not answer the next resume. The
                // held item's removal, in the same transaction as the
                // charge, is what settles it once.
                let key = attempt_key("held", h.seq)?;
                match self.settle(org, &result, key, Some(h.seq)).await {
                    Ok(Applied {
                        outcome: Outcome::Refused(_),
                        ..
                    }) => {
                        let account = self.current_account(org).await?;
                        report.still_held = account.held_results;
                        report.paused = account.results_paused;
                        return Ok(report);
                    }
                    Ok(_) => report.settled += 1,
                    // Another resume settled it.
                    Err(ServiceError::AlreadySettled) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Charges a bulk spend: only the listed subjects that are new (and,
    /// for an action charged on its result, billable), unlocking them in
    /// the same write; a colleague unlocking one meanwhile makes it decide again.
    pub async fn spend_subjects(
        &self,
        org: &OrgId,
        spend: &BulkSpend<'_>,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        spend.check()?;
        retry_on_subject_change(|| async {
            let unlocked = self.unlocks(org, spend).await?;
            self.apply_with(org, request, None, |account, _, now| {
                let until = spend.unlock_until(account, now);
                let (plan, entry) = account.spend_subjects(spend, &unlocked, now)?;
                let side = match until {
                    Some(until) => entry
                        .subjects
                        .iter()
                        .map(|subject| SideWrite::Unlock {
                            action: spend.action_id.clone(),
                            subject: subject.clone(),
                            until,
                            now,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let outcome = Outcome::SpentSubjects {
                    meter: spend.action.meter.clone(),
                    requested: spend.subjects.len() as u64,
                    units: plan.units(),
                    charged: plan.charged(),
                    subjects: plan.outcomes,
                };
                Ok((entry, outcome, side))
            })
            .await
        })
        .await
    }

    /// What a bulk spend would charge now, subject by subject; writes nothing.
    pub async fn quote_subjects(&self, org: &OrgId, spend: &BulkSpend<'_>) -> Result<BulkQuote, ServiceError> {
        spend.check()?;
        let unlocked = self.unlocks(org, spend).await?;
        let account = self.current_account(org).await?;
        Ok(account.quote_subjects(spend, &unlocked, self.clock.now())?)
    }

    async fn unlocks(&self, org: &OrgId, spend: &BulkSpend<'_>) -> Result<BTreeMap<Subject, Unlock>, ServiceError> {
        if !spend.action.once_per_subject {
            return Ok(BTreeMap::new());
        }
        let subjects: Vec<Subject> = spend.subjects.iter().map(|s| s.subject.clone()).collect();
        Ok(self.accounts.load_unlocks(org, spend.action_id, &subjects).await?)
    }

    async fn settle(
        &self,
        org: &OrgId,
        report: &ResultReport,
        key: IdempotencyKey,
        held: Option<u64>,
    ) -> Result<Applied, ServiceError> {
        let (action_id, action, billable) = report.resolve(&self.catalog)?;
        let request = Idempotency {
            key,
            fingerprint: fingerprint(report),
        };
        retry_on_subject_change(|| async {
            let unlocked = match billable && action.once_per_subject {
                true => self.accounts.load_unlock(org, action_id, &report.subject).await?,
                false => None,
            };
            self.apply_with(org, &request, None, |account, catalog, now| {
                let d = account.charge_result(catalog, report, unlocked.as_ref(), held.is_some(), now)?;
                let mut side = Vec::new();
                if let Some(until) = d.unlocks_until {
                    side.push(SideWrite::Unlock {
                        action: action_id.clone(),
                        subject: report.subject.clone(),
                        until,
                        now,
                    });
                }
                match (d.charge, held) {
                    (ResultCharge::Held, _) => side.push(SideWrite::Hold {
                        seq: account.seq,
                        report: StoredReport::of(report),
                    }),
                    (_, Some(seq)) => side.push(SideWrite::Release { seq }),
                    (_, None) => {}
                }
                let outcome = Outcome::Result {
                    action: action_id.clone(),
                    subject: report.subject.clone(),
                    outcome: report.outcome.clone(),
                    charge: d.charge,
                };
                Ok((d.entry, outcome, side))
            })
            .await
        })
        .await
    }
}

/// What a result says, for recognising a redelivery (same request id and
/// same result) from a different result under a reused id.
fn fingerprint(r: &ResultReport) -> String {
    format!(
        "result\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        r.request_id,
        r.action,
        r.subject.as_str(),
        r.outcome,
        r.user.as_ref().map(|u| u.as_str()).unwrap_or_default(),
        r.campaign.as_ref().map(|c| c.as_str()).unwrap_or_default(),
        r.occurred_at.timestamp_micros()
    )
}

pub(crate) fn attempt_key(what: &str, n: u64) -> Result<IdempotencyKey, DomainError> {
    IdempotencyKey::parse(&format!("{what}:{n}:{:016x}", fastrand::u64(..)))
}
