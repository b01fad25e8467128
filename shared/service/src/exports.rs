//! History exports: a filtered history too long for one response becomes a
//! job that the exports function writes to S3 in parts (see
//! [`ledger_store::exports`]); the answer is a link to the file.

use std::time::{Duration, Instant};

use ledger_domain::{Actor, DomainError, OrgId};
use ledger_store::{AccountStore, ExportFiles, ExportJob, ExportState, HistoryFilter, HistoryStore, RequestStore};

use crate::executor::Ledger;
use crate::ServiceError;

/// How long a download link works.
pub const LINK_VALID: Duration = Duration::from_secs(15 * 60);

/// Turns pages of entries into the file's bytes: the header once, then
/// rows (the export's columns must not depend on which entries a part holds).
pub trait ExportFormat {
    fn header(&self) -> String;
    fn rows(&self, entries: &[ledger_domain::LedgerEntry]) -> String;
}

/// How one run of a job goes.
#[derive(Clone, Copy, Debug)]
pub struct ExportLimits {
    /// Entries read a query.
    pub page: u32,
    /// A part is uploaded once it holds this much (S3 wants 5 MiB but for
    /// the last part).
    pub part_bytes: usize,
    /// When to stop and queue the rest.
    pub deadline: Instant,
}

/// How far one run of a job got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportRun {
    Done,
    /// Out of time: queued again to go on from its last part.
    Continued,
    /// Another run recorded progress first: that one goes on.
    Overtaken,
}

impl<A, R, H: HistoryStore> Ledger<A, R, H> {
    fn export_files(&self) -> Result<&ExportFiles, ServiceError> {
        self.exports.as_ref().ok_or(ServiceError::ExportsUnavailable)
    }
}

impl<A: AccountStore, R: RequestStore> Ledger<A, R, ledger_store::DynamoLedgerStore> {
    /// Starts exporting `filter` as `viewer` sees it, once per `request`
    /// (the Idempotency-Key): the same key again answers the same job; with
    /// another filter it is refused.
    pub async fn start_export(
        &self,
        org: &OrgId,
        viewer: Actor,
        mut filter: HistoryFilter,
        request: &str,
        filter_text: &str,
    ) -> Result<ExportJob, ServiceError> {
        crate::operations::check_history_filter(&viewer.history_scope(), &filter)?;
        let files = self.export_files()?;
        // An organization without an account has no ledger (404, as for
        // `history`): a job for it would fail on every run.
        if self.accounts.load_account(org).await?.is_none() {
            return Err(DomainError::AccountNotFound.into());
        }
        let now = self.clock.now();
        // An open range ends as the job starts (a second on, for entries of
        // this very instant): every run of the job lists the same entries,
        // so a part uploaded twice by doubled runs holds the same rows.
        let end = now + chrono::Duration::seconds(1);
        if filter.to.is_none_or(|to| to > end) {
            filter.to = Some(end);
        }
        let id = export_id(org, &viewer, request);
        let job = ExportJob {
            org: org.clone(),
            object: format!("exports/{org}/{}-{id}.csv", now.format("%Y%m%dT%H%M%S%.6f")),
            id,
            request: filter_text.to_string(),
            filter,
            viewer,
            state: ExportState::Running,
            upload: None,
            parts: Vec::new(),
            after: None,
            rows: 0,
            created_at: now,
            finished_at: None,
        };
        let kept = self.history.create_export(&job).await?;
        if kept.request != job.request {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        if kept == job {
            files.schedule(org, &job.id).await?;
        }
        Ok(kept)
    }

    /// A job as it stands, with a download link once done.
    pub async fn export(&self, org: &OrgId, id: &str) -> Result<(ExportJob, Option<String>), ServiceError> {
        let job = self
            .history
            .load_export(org, id)
            .await?
            .ok_or(ServiceError::ExportNotFound)?;
        let link = match job.state {
            ExportState::Done => Some(self.export_files()?.link(&job.object, LINK_VALID).await?),
            ExportState::Running => None,
        };
        Ok((job, link))
    }

    /// Runs a job until it is done or `limits.deadline` comes: pages of
    /// the history into parts of at least `limits.part_bytes` (S3's minimum
    /// is 5 MiB but for the last), each part checkpointed as it is
    /// uploaded. Every run uploads at least one part, so a job always gets
    /// on, however short its runs.
    pub async fn run_export(
        &self,
        org: &OrgId,
        id: &str,
        format: &impl ExportFormat,
        limits: ExportLimits,
    ) -> Result<ExportRun, ServiceError> {
        let files = self.export_files()?;
        let Some(mut job) = self.history.load_export(org, id).await? else {
            return Err(ServiceError::ExportNotFound);
        };
        if job.state == ExportState::Done {
            return Ok(ExportRun::Done);
        }
        let upload = match &job.upload {
            Some(u) => u.clone(),
            None => {
                let upload = files.begin(&job.object).await?;
                let began = ExportJob {
                    upload: Some(upload.clone()),
                    ..job.clone()
                };
                if !self.history.save_export(&job, &began).await? {
                    return Ok(ExportRun::Overtaken);
                }
                job = began;
                upload
            }
        };
        let mut text = if job.parts.is_empty() {
            format.header()
        } else {
            String::new()
        };
        let (mut after, mut rows, mut parts) = (job.after.clone(), 0u64, 0);
        loop {
            if parts > 0 && Instant::now() >= limits.deadline {
                files.schedule(org, id).await?;
                return Ok(ExportRun::Continued);
            }
            let page = self
                .history(org, &job.viewer, job.filter.clone(), limits.page, after.clone())
                .await?;
            text.push_str(&format.rows(&page.entries));
            rows += page.entries.len() as u64;
            after = page.next;
            let last = after.is_none();
            if text.len() < limits.part_bytes && !last {
                continue;
            }
            let mut next = job.clone();
            // A full last page leaves an empty one after it: no empty part.
            if !text.is_empty() || job.parts.is_empty() {
                let number = job.parts.len() + 1;
                let tag = files
                    .upload_part(&job.object, &upload, number, std::mem::take(&mut text).into_bytes())
                    .await?;
                next.parts.push(tag);
            }
            next.rows += rows;
            next.after = after.clone();
            if last {
                files.complete(&job.object, &upload, &next.parts).await?;
                next.state = ExportState::Done;
                next.finished_at = Some(self.clock.now());
            }
            if !self.history.save_export(&job, &next).await? {
                return Ok(ExportRun::Overtaken);
            }
            if last {
                return Ok(ExportRun::Done);
            }
            job = next;
            rows = 0;
            parts += 1;
        }
    }
}

/// A job's id: the same request (organization, who asked, key) names the
/// same job, whatever instance or version of the function is asked.
fn export_id(org: &OrgId, viewer: &Actor, request: &str) -> String {
    use sha2::{Digest, Sha256};
    let user = viewer.user.as_ref().map(|u| u.to_string()).unwrap_or_default();
    let digest = Sha256::digest(format!("{org}\n{user}\n{:?}\n{request}", viewer.caller));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
