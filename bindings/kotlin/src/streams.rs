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

/// A subscription's answer for [`Held::call`]: `Ok(None)` once it has ended.
fn step<E>(answer: Option<hive::Result<E>>) -> Result<Option<E>, HiveError> {
    answer.transpose().map_err(HiveError::from)
}

/// A subscription shared between its FFI object and the call in flight;
/// `None` once it has ended or was stopped.
struct Held<S>(Arc<Mutex<Option<S>>>);

impl<S: Send + 'static> Held<S> {
    fn new(sub: S) -> Self {
        Held(Arc::new(Mutex::new(Some(sub))))
    }

    /// Runs `step` on the subscription on the runtime: `Ok(None)` ends it
    /// (and every later call answers `empty`), as does a stopped one.
    async fn call<T, F>(&self, empty: T, step: F) -> Result<T, HiveError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut S,
            )
                -> futures::future::BoxFuture<'a, Result<Option<T>, HiveError>>
            + Send
            + 'static,
    {
        let sub = self.0.clone();
        run(async move {
            let mut guard = sub.lock().await;
            let Some(s) = guard.as_mut() else {
                return Ok(empty);
            };
            match step(s).await? {
                Some(out) => Ok(out),
                None => {
                    *guard = None;
                    Ok(empty)
                }
            }
        })
        .await
    }

    /// Stops following (a call in flight ends when its coroutine is cancelled).
    fn stop(&self) {
        if let Ok(mut g) = self.0.try_lock() {
            *g = None;
        }
    }
}

/// A task's event stream; ends (an empty batch, `null` from `next`) right
/// after the terminal event.
#[derive(uniffi::Object)]
pub struct TaskEventStream {
    sub: Held<hive::TaskSubscription>,
}

impl TaskEventStream {
    pub(crate) fn new(sub: hive::TaskSubscription) -> Arc<Self> {
        Arc::new(TaskEventStream {
            sub: Held::new(sub),
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl TaskEventStream {
    /// The next event, waiting for it; `null` once the stream has ended.
    pub async fn next(&self) -> Result<Option<TaskEvent>, HiveError> {
        self.sub
            .call(None, |s| {
                Box::pin(async move { Ok(step(s.next().await)?.map(|e| Some(e.into()))) })
            })
            .await
    }

    /// Up to `max` events (at least one, waiting for it); empty once the
    /// stream has ended.
    pub async fn next_batch(&self, max: u32) -> Result<Vec<TaskEvent>, HiveError> {
        self.sub
            .call(Vec::new(), move |s| {
                Box::pin(async move {
                    let batch = step(s.next_batch(self::max(max)).await)?;
                    Ok(batch.map(|events| events.into_iter().map(Into::into).collect()))
                })
            })
            .await
    }

    /// Stops following (a `next` in flight is answered when its coroutine
    /// is cancelled). Idempotent.
    pub fn stop(&self) {
        self.sub.stop();
    }
}

/// A workflow's event stream; ends after its `finished` event.
#[derive(uniffi::Object)]
pub struct WorkflowEventStream {
    sub: Held<hive::WorkflowSubscription>,
}

impl WorkflowEventStream {
    pub(crate) fn new(sub: hive::WorkflowSubscription) -> Arc<Self> {
        Arc::new(WorkflowEventStream {
            sub: Held::new(sub),
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl WorkflowEventStream {
    /// The next event, waiting for it; `null` once the stream has ended.
    pub async fn next(&self) -> Result<Option<WorkflowEvent>, HiveError> {
        self.sub
            .call(None, |s| {
                Box::pin(async move { Ok(step(s.next().await)?.map(|e| Some(e.into()))) })
            })
            .await
    }

    /// Stops following. Idempotent.
    pub fn stop(&self) {
        self.sub.stop();
    }
}

/// The tenant's feed; never ends by itself.
#[derive(uniffi::Object)]
pub struct FeedStream {
    sub: Held<hive::FeedSubscription>,
    terminal_only: bool,
}

impl FeedStream {
    pub(crate) fn new(sub: hive::FeedSubscription, terminal_only: bool) -> Arc<Self> {
        Arc::new(FeedStream {
            sub: Held::new(sub),
            terminal_only,
        })
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl FeedStream {
    /// Up to `max` feed events (at least one, waiting for it; only terminal
    /// ones if the feed was opened so); empty once closed.
    pub async fn next_batch(&self, max: u32) -> Result<Vec<FeedEvent>, HiveError> {
        let terminal_only = self.terminal_only;
        self.sub
            .call(Vec::new(), move |s| {
                Box::pin(async move {
                    loop {
                        let out: Vec<FeedEvent> = s
                            .next_batch(self::max(max))
                            .await?
                            .into_iter()
                            .filter(|e| !terminal_only || e.event.kind.is_terminal())
                            .map(FeedEvent::from)
                            .collect();
                        if !out.is_empty() {
                            return Ok(Some(out));
                        }
                    }
                })
            })
            .await
    }

    /// The cursor to resume from (after the last event returned), if the
    /// stream is not busy.
    pub fn cursor(&self) -> Option<u64> {
        self.sub
            .0
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.cursor()))
    }

    /// Stops following. Idempotent.
    pub fn stop(&self) {
        self.sub.stop();
    }
}
