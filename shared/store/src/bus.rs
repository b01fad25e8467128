//! The event bus adapter: EventBridge's PutEvents (moto's EventBridge on
//! the local stack).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::port::{BusEvent, EventBus, StoreError};

/// The source every event of the ledger carries: rules match on it.
pub const EVENT_SOURCE: &str = "credit-ledger";

#[derive(Clone, Debug)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: &str) -> Self {
        EventBridgeBus {
            client,
            bus: bus.to_string(),
        }
    }
}

impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[BusEvent]) -> Result<(), StoreError> {
        // PutEvents takes at most 10 entries a call.
        for chunk in events.chunks(10) {
            let entries = chunk
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(EVENT_SOURCE)
                        .detail_type(&e.detail_type)
                        .detail(&e.detail)
                        .build()
                })
                .collect();
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| StoreError::Request(format!("{e:?}")))?;
            if out.failed_entry_count() > 0 {
                return Err(StoreError::Request(format!(
                    "{} of {} events refused by the bus",
                    out.failed_entry_count(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}
