//! One task per `WatchEvents` stream: sends the snapshot (or the replay), then forwards live
//! events that match the watcher's accounts, with a heartbeat when idle.
//!
//! Memory per watcher is bounded twice: the bounded channel to the client, and the shared
//! broadcast buffer. A watcher that stops reading falls behind the broadcast and is ended with
//! `ABORTED`, naming the sequence to resume from; it never slows a check or an outcome. On
//! shutdown every stream ends with `UNAVAILABLE`, also naming where to resume.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert;
use crate::clock::Clock;
use crate::error::Error;
use crate::proto::{watch_events_response::Kind, Heartbeat, SnapshotComplete, WatchEventsResponse};
use crate::registry::Subscription;

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long a stream may stay silent before a heartbeat is sent.
    pub heartbeat: Duration,
    /// Messages buffered towards one client.
    pub buffer: usize,
    /// Becomes `true` when the server is shutting down.
    pub shutdown: watch::Receiver<bool>,
}

type Item = Result<WatchEventsResponse, Status>;

/// Starts the stream's task. It holds the clock, not the registry, so that a stopped server's
/// registry (and its store) is released as soon as the server returns.
pub fn start(
    clock: Arc<dyn Clock>,
    subscription: Subscription,
    accounts: Vec<String>,
    options: WatchOptions,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> ReceiverStream<Item> {
    let (sender, receiver) = mpsc::channel(options.buffer.max(1));
    tokio::spawn(async move {
        crate::metrics::watchers(1.0);
        forward(clock, subscription, accounts, sender, options).await;
        crate::metrics::watchers(-1.0);
        // The watcher's place is free once its stream has ended.
        drop(slot);
    });
    ReceiverStream::new(receiver)
}

async fn forward(
    clock: Arc<dyn Clock>,
    subscription: Subscription,
    accounts: Vec<String>,
    sender: mpsc::Sender<Item>,
    mut options: WatchOptions,
) {
    let Subscription {
        snapshot,
        replay,
        mut live,
        as_of,
    } = subscription;
    let watched: HashSet<String> = accounts.into_iter().collect();
    // Firm-wide and group halts (no account) concern every watcher.
    let matches = |account_id: &str| {
        watched.is_empty() || account_id.is_empty() || watched.contains(account_id)
    };
    let mut out = Outbox {
        sender,
        shutdown: options.shutdown.clone(),
    };

    // Breakers that changed between subscribing and being read: their snapshot already
    // reflects events up to their own last sequence.
    let mut reflected: HashMap<String, u64> = HashMap::new();
    if let Some(snapshot) = snapshot {
        let breaker_count = u32::try_from(snapshot.len()).unwrap_or(u32::MAX);
        for view in snapshot {
            if view.last_sequence > as_of {
                reflected.insert(view.account_id.clone(), view.last_sequence);
            }
            if !out.send(Kind::Snapshot(convert::breaker(view))).await {
                return;
            }
        }
        let complete = SnapshotComplete {
            as_of_sequence: as_of,
            breaker_count,
        };
        if !out.send(Kind::SnapshotComplete(complete)).await {
            return;
        }
    }

    // The sequence this watcher is current as of: every event up to it was sent or filtered.
    let mut current = as_of;
    for event in replay {
        current = event.sequence;
        if matches(&event.account_id) {
            if !out.send(Kind::Event(convert::event(&event))).await {
                return;
            }
            crate::metrics::event_sent();
        }
    }

    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + options.heartbeat,
        options.heartbeat,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = options.shutdown.changed() => {
                out.end(Error::WatchShutdown { resume_after: current }.into())
                .await;
                return;
            }
            received = live.recv() => match received {
                Ok(event) => {
                    if event.sequence <= current {
                        continue;
                    }
                    current = event.sequence;
                    let already = reflected.get(&event.account_id).is_some_and(|&s| event.sequence <= s);
                    if !matches(&event.account_id) || already {
                        continue;
                    }
                    if !out.send(Kind::Event(convert::event(&event))).await {
                        return;
                    }
                    crate::metrics::event_sent();
                    heartbeat.reset();
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, resume_after = current, "ending a watcher that fell behind");
                    crate::metrics::watcher_lagged();
                    out.end(Error::WatcherLagged { missed, resume_after: current }.into())
                    .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => {
                let beat = Heartbeat {
                    sequence: current,
                    time: Some(convert::timestamp(clock.now())),
                };
                if !out.send(Kind::Heartbeat(beat)).await {
                    return;
                }
            }
        }
    }
}

/// The client side of one stream.
struct Outbox {
    sender: mpsc::Sender<Item>,
    shutdown: watch::Receiver<bool>,
}

impl Outbox {
    /// Sends one message; `false` when the client has gone or the server is shutting down.
    async fn send(&mut self, kind: Kind) -> bool {
        let message = Ok(WatchEventsResponse { kind: Some(kind) });
        tokio::select! {
            sent = self.sender.send(message) => sent.is_ok(),
            _ = self.shutdown.wait_for(|stopping| *stopping) => {
                // A client that is not reading cannot receive a final status either.
                false
            }
        }
    }

    async fn end(&mut self, status: Status) {
        // Bounded: a client that does not read cannot hold the task (or shutdown) forever.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sender.send(Err(status))).await;
    }
}
