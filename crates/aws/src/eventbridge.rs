//! The `eventbridge` destination: routed events put on an Amazon
//! EventBridge bus of the team's.
//!
//! Each event becomes one `PutEvents` entry: `EventBusName` = the bus,
//! `Source` = the destination's source (default `hookline`), `DetailType` =
//! the Stripe event type, `Detail` = the Stripe event as Stripe sent it.
//! Concurrent deliveries are coalesced, up to 10 entries and 256 KB a call
//! (EventBridge's limits), through the same [`Coalescer`] as the queue's
//! batched calls.
//!
//! | answer | class |
//! | --- | --- |
//! | entry accepted | delivered |
//! | entry failed with `ThrottlingException` or `InternalFailure` | transient |
//! | entry failed with any other code | permanent: the code and message |
//! | the call failed: throttling, 5xx, timeout, network | transient |
//! | the call failed: missing bus, access denied, credentials | configuration (retried like transient) |
//! | the entry is over 256 KB | permanent, without a call |

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use hookline_core::coalescer::{Batched, Coalescer, CoalescerConfig};
use hookline_core::ports::{BatchLimits, DeliveryError, Destination, Outgoing, PortError};
use hookline_core::routes::EventBridge;

use crate::errors::classify;

/// EventBridge's limit on an entry, and on the entries of one call.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// EventBridge's limit on the entries of one call.
pub const MAX_ENTRIES: usize = 10;

/// Per-entry error codes that mean "try again later".
const TRANSIENT_ENTRY_CODES: &[&str] = &[
    "ThrottlingException",
    "InternalFailure",
    "InternalException",
    "ServiceUnavailable",
];

/// One entry to put; the bus and source are the destination's.
#[derive(Debug)]
pub struct Entry {
    detail_type: String,
    detail: String,
    size: usize,
}

/// The batched call: `PutEvents` to one bus with one source.
#[derive(Debug)]
struct PutEvents {
    client: aws_sdk_eventbridge::Client,
    bus: String,
    source: String,
}

#[async_trait]
impl Batched for PutEvents {
    type Entry = Entry;

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_entries: MAX_ENTRIES,
            max_bytes: MAX_ENTRY_BYTES,
        }
    }

    fn size(entry: &Entry) -> usize {
        entry.size
    }

    async fn call(&self, batch: &[Entry]) -> Vec<Result<(), PortError>> {
        let entries: Vec<PutEventsRequestEntry> = batch
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(&self.source)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .build()
            })
            .collect();
        let answer = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let error = classify(&format!("PutEvents on bus {}", self.bus), e);
                return batch.iter().map(|_| Err(error.clone())).collect();
            }
        };
        let results = answer.entries();
        (0..batch.len())
            .map(|i| match results.get(i) {
                Some(r) => match r.error_code() {
                    Some(code) => Err(entry_error(code, r.error_message().unwrap_or_default())),
                    None => Ok(()),
                },
                None => Err(PortError::transient(
                    "PutEvents answered fewer entries than it was given".to_owned(),
                )),
            })
            .collect()
    }
}

/// The class of a failed entry: throttling and internal failures are
/// retried, any other code is permanent.
pub fn entry_error(code: &str, message: &str) -> PortError {
    let text = format!("EventBridge refused the entry: {code}: {message}");
    if TRANSIENT_ENTRY_CODES.contains(&code) {
        PortError::transient(text)
    } else {
        PortError::permanent(text)
    }
}

/// The size EventBridge counts for an entry: `Source`, `DetailType` and
/// `Detail` in UTF-8 (no `Time`, no `Resources`).
pub fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    source.len() + detail_type.len() + detail.len()
}

/// An `eventbridge` destination.
pub struct EventBridgeDestination {
    name: String,
    bus: String,
    source: String,
    retry_for: Duration,
    puts: Coalescer<PutEvents>,
}

impl std::fmt::Debug for EventBridgeDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeDestination")
            .field("name", &self.name)
            .field("bus", &self.bus)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl EventBridgeDestination {
    /// Starts the destination's call coalescer on the current tokio runtime.
    pub fn new(name: &str, settings: &EventBridge, client: aws_sdk_eventbridge::Client) -> Self {
        let puts = Coalescer::start(
            PutEvents {
                client,
                bus: settings.bus.clone(),
                source: settings.source.clone(),
            },
            CoalescerConfig::remote(),
        );
        Self {
            name: name.to_owned(),
            bus: settings.bus.clone(),
            source: settings.source.clone(),
            retry_for: settings.retry_for,
            puts,
        }
    }

    /// With a client from the standard SDK chain.
    pub async fn from_env(name: &str, settings: &EventBridge) -> Self {
        let client = aws_sdk_eventbridge::Client::new(&crate::config::load().await);
        Self::new(name, settings, client)
    }

    /// `PutEvents` calls made so far (each with up to 10 entries).
    pub fn calls(&self) -> u64 {
        self.puts.stats().batches.get()
    }
}

#[async_trait]
impl Destination for EventBridgeDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_for(&self) -> Duration {
        self.retry_for
    }

    async fn deliver(&self, event: Outgoing<'_>) -> Result<(), DeliveryError> {
        let detail = std::str::from_utf8(event.body)
            .map_err(|_| DeliveryError::permanent("the event is not UTF-8 text"))?;
        let size = entry_size(&self.source, event.event_type, detail);
        if size > MAX_ENTRY_BYTES {
            return Err(DeliveryError::permanent(format!(
                "the entry is {size} bytes, over EventBridge's limit of {MAX_ENTRY_BYTES} bytes (256 KB) for one event"
            )));
        }
        let entry = Entry {
            detail_type: event.event_type.to_owned(),
            detail: detail.to_owned(),
            size,
        };
        self.puts.submit(entry).await.map_err(|e| DeliveryError {
            kind: e.kind(),
            message: e.message().to_owned(),
            retry_after: None,
            not_sent: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::ports::ErrorKind;

    #[test]
    fn throttled_entries_are_retried_and_others_refused() {
        for code in ["ThrottlingException", "InternalFailure"] {
            assert!(entry_error(code, "slow down").is_retryable(), "{code}");
        }
        for code in [
            "MalformedDetail",
            "InvalidArgument",
            "NotAuthorizedForSourceException",
            "AccessDeniedException",
        ] {
            let e = entry_error(code, "no");
            assert_eq!(e.kind(), ErrorKind::Permanent, "{code}");
            assert!(e.to_string().contains(code), "{e}");
        }
    }

    #[test]
    fn the_size_is_what_eventbridge_counts() {
        assert_eq!(entry_size("hookline", "invoice.paid", "{}"), 8 + 12 + 2);
        assert_eq!(entry_size("s", "t", "é"), 4, "UTF-8 bytes, not characters");
    }
}
