//! Subscriptions as objects with an async `next_batch`: the Kotlin layer
//! turns each into a `Flow` (collecting it in batches keeps FFI calls few),
//! and closes it when the collector is cancelled.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::HiveError;
use crate::runtime::run;
use crate::types::{FeedEvent, TaskEvent, WorkflowEvent};

fn max(n: u32) -> usize {
    n.clamp(1, 10_000) as usize
}

/// A task's event stream; ends (an empty batch, `null` from `next`) right
/// after the terminal event.
#[derive(uniffi::Object)]
pub struct TaskEventStream {
    sub: Arc<Mutex<Option<hive::TaskSubscription>>>,
}

impl TaskEventStream {
    pub(crate) fn new(sub: hive::TaskSubscription) -> Arc<Self> {
        Arc::new(TaskEventStream {
            sub: Arc::new(Mutex::new(Some(sub))),
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl TaskEventStream {
    /// The next event, waiting for it; `null` once the stream has ended.
    pub async fn next(&self) -> Result<Option<TaskEvent>, HiveError> {
        let sub = self.sub.clone();
        run(async move {
            let mut guard = sub.lock().await;
            let Some(s) = guard.as_mut() else {
                return Ok(None);
            };
            match s.next().await {
                Some(Ok(e)) => Ok(Some(e.into())),
                Some(Err(e)) => Err(e.into()),
                None => {
                    *guard = None;
                    Ok(None)
                }
            }
        })
        .await
    }

    /// Up to `max` events (at least one, waiting for it); empty once the
    /// stream has ended.
    pub async fn next_batch(&self, max: u32) -> Result<Vec<TaskEvent>, HiveError> {
        let sub = self.sub.clone();
        run(async move {
            let mut guard = sub.lock().await;
            let Some(s) = guard.as_mut() else {
                return Ok(Vec::new());
            };
            match s.next_batch(self::max(max)).await {
                Some(Ok(events)) => Ok(events.into_iter().map(TaskEvent::from).collect()),
                Some(Err(e)) => Err(e.into()),
                None => {
                    *guard = None;
                    Ok(Vec::new())
                }
            }
        })
        .await
    }

    /// Stops following (a `next` in flight is answered when its coroutine
    /// is cancelled). Idempotent.
    pub fn stop(&self) {
        if let Ok(mut g) = self.sub.try_lock() {
            *g = None;
        }
    }
}

/// A workflow's event stream; ends after its `finished` event.
#[derive(uniffi::Object)]
pub struct WorkflowEventStream {
    sub: Arc<Mutex<Option<hive::WorkflowSubscription>>>,
}

impl WorkflowEventStream {
    pub(crate) fn new(sub: hive::WorkflowSubscription) -> Arc<Self> {
        Arc::new(WorkflowEventStream {
            sub: Arc::new(Mutex::new(Some(sub))),
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl WorkflowEventStream {
    /// The next event, waiting for it; `null` once the stream has ended.
    pub async fn next(&self) -> Result<Option<WorkflowEvent>, HiveError> {
        let sub = self.sub.clone();
        run(async move {
            let mut guard = sub.lock().await;
            let Some(s) = guard.as_mut() else {
                return Ok(None);
            };
            match s.next().await {
                Some(Ok(e)) => Ok(Some(e.into())),
                Some(Err(e)) => Err(e.into()),
                None => {
                    *guard = None;
                    Ok(None)
                }
            }
        })
        .await
    }

    /// Stops following. Idempotent.
    pub fn stop(&self) {
        if let Ok(mut g) = self.sub.try_lock() {
            *g = None;
        }
    }
}

/// The tenant's feed; never ends by itself.
#[derive(uniffi::Object)]
pub struct FeedStream {
    sub: Arc<Mutex<Option<hive::FeedSubscription>>>,
    terminal_only: bool,
}

impl FeedStream {
    pub(crate) fn new(sub: hive::FeedSubscription, terminal_only: bool) -> Arc<Self> {
        Arc::new(FeedStream {
            sub: Arc::new(Mutex::new(Some(sub))),
            terminal_only,
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl FeedStream {
    /// Up to `max` feed events (at least one, waiting for it; only terminal
    /// ones if the feed was opened so); empty once closed.
    pub async fn next_batch(&self, max: u32) -> Result<Vec<FeedEvent>, HiveError> {
        let (sub, terminal_only) = (self.sub.clone(), self.terminal_only);
        run(async move {
            let mut guard = sub.lock().await;
            let Some(s) = guard.as_mut() else {
                return Ok(Vec::new());
            };
            loop {
                let events = s.next_batch(self::max(max)).await?;
                let out: Vec<FeedEvent> = events
                    .into_iter()
                    .filter(|e| !terminal_only || e.event.kind.is_terminal())
                    .map(FeedEvent::from)
                    .collect();
                if !out.is_empty() {
                    return Ok(out);
                }
            }
        })
        .await
    }

    /// The cursor to resume from (after the last event returned), if the
    /// stream is not busy.
    pub fn cursor(&self) -> Option<u64> {
        self.sub
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.cursor()))
    }

    /// Stops following. Idempotent.
    pub fn stop(&self) {
        if let Ok(mut g) = self.sub.try_lock() {
            *g = None;
        }
    }
}
