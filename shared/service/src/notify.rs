//! Alert notifications, derived from the stream: each alert an entry
//! crossed (see [`ledger_domain::alerts`]) becomes one in-app notification
//! and, for email channels, one event on the bus. Both are keyed by the
//! crossing entry's number, so a redelivered record notifies once; an event
//! whose notification was kept but not yet marked published is published
//! again (at least once: receivers drop repeats by `notification_id`).

use chrono::{DateTime, Utc};
use ledger_domain::{top_up_id, Actor, Alert, AlertId, Crossing, OrgId, TopUpTrigger};
use ledger_store::{AccountStore, BusEvent, EventBus, Kept, Notification, NotificationStore, RequestStore};
use serde_json::json;

use crate::executor::{Idempotency, Ledger};
use crate::outcome::{Applied, Outcome};
use crate::ServiceError;

/// The bus's detail type for a low-balance alert.
pub const ALERT_EVENT: &str = "credit-ledger.low-balance";
/// The bus's detail type for the top-up trigger, for the payment system.
pub const TOP_UP_EVENT: &str = "credit-ledger.top-up-needed";

/// Keeps and publishes the notifications of one entry's crossings.
pub async fn notify_crossings<N: NotificationStore, B: EventBus>(
    notes: &N,
    bus: &B,
    org: &OrgId,
    entry: (u64, &str),
    crossings: Vec<Crossing>,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    let (seq, entry_sk) = entry;
    for c in crossings {
        let cap = c.cap;
        let note = Notification {
            id: Notification::id_of(seq, &c.alert),
            alert: c.alert,
            meter: c.meter,
            channel: c.channel,
            level: c.level,
            left: c.after,
            entry_seq: seq,
            entry: entry_sk.to_string(),
            at: now,
            read: false,
            published: !c.channel.emails(),
        };
        let note = match notes.keep_notification(org, &note, cap).await? {
            Kept::New => note,
            Kept::Existing(kept) => kept,
            Kept::CapReached => continue,
        };
        if note.published {
            continue;
        }
        let detail_type = if note.alert == top_up_id() {
            TOP_UP_EVENT
        } else {
            ALERT_EVENT
        };
        let event = BusEvent {
            id: note.id.clone(),
            detail_type: detail_type.into(),
            detail: json!({
                "org": org.as_str(),
                "notification_id": note.id,
                "alert": note.alert.as_str(),
                "meter": note.meter.as_str(),
                "level": note.level.to_string(),
                "left": note.left.to_string(),
                "entry_seq": note.entry_seq,
                "channel": note.channel.as_str(),
            })
            .to_string(),
        };
        bus.publish(&[event]).await?;
        notes.mark_published(org, &note.id).await?;
    }
    Ok(())
}

impl<A: AccountStore + NotificationStore, R: RequestStore, H> Ledger<A, R, H> {
    /// Sets a low-balance alert, or removes it (`None`).
    pub async fn set_alert(
        &self,
        org: &OrgId,
        id: AlertId,
        alert: Option<Alert>,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.set_alert(&id, alert.clone(), actor.clone(), now)?;
            Ok((entry, Outcome::ControlsSet))
        })
        .await
    }

    /// Sets the top-up trigger, or removes it (`None`).
    pub async fn set_top_up(
        &self,
        org: &OrgId,
        trigger: Option<TopUpTrigger>,
        actor: Actor,
        request: &Idempotency,
    ) -> Result<Applied, ServiceError> {
        self.apply(org, request, None, |account, _, now| {
            let entry = account.set_top_up(trigger.clone(), actor.clone(), now)?;
            Ok((entry, Outcome::ControlsSet))
        })
        .await
    }

    /// The organization's in-app notifications, newest first.
    pub async fn notifications(
        &self,
        org: &OrgId,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Notification>, Option<String>), ServiceError> {
        Ok(self.accounts.notifications(org, limit, cursor).await?)
    }

    /// Marks one notification read (reading twice is harmless).
    pub async fn mark_read(&self, org: &OrgId, id: &str) -> Result<(), ServiceError> {
        match self.accounts.mark_read(org, id).await? {
            true => Ok(()),
            false => Err(ServiceError::NotificationNotFound),
        }
    }
}
