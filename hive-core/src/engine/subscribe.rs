//! Subscriptions: replay what is stored after an offset, then go live.

use std::collections::VecDeque;

use futures::Stream;

use super::Hive;
use crate::error::Result;
use crate::id::TaskId;
use crate::principal::TenantId;
use crate::task::{FeedEvent, TaskEvent};

const PAGE: usize = 512;

/// An event of a stream that ends: its seq and whether it is the last.
pub(crate) trait Ending {
    fn seq(&self) -> u64;
    fn ends(&self) -> bool;
}

impl Ending for TaskEvent {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ends(&self) -> bool {
        self.kind.is_terminal()
    }
}

impl Ending for crate::workflow::WorkflowEvent {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ends(&self) -> bool {
        self.kind.is_terminal()
    }
}

/// What task and workflow subscriptions share: the position, the events read
/// ahead, and whether the terminal event was handed out.
#[derive(Debug)]
pub(crate) struct Replay<E> {
    pub(crate) after: u64,
    pub(crate) buffer: VecDeque<E>,
    pub(crate) done: bool,
}

impl<E: Ending> Replay<E> {
    pub(crate) fn new(after: u64) -> Self {
        Replay {
            after,
            buffer: VecDeque::new(),
            done: false,
        }
    }

    /// The next buffered event, moving the position; nothing after the terminal one.
    pub(crate) fn pop(&mut self) -> Option<E> {
        let ev = self.buffer.pop_front()?;
        self.after = ev.seq();
        if ev.ends() {
            self.done = true;
            self.buffer.clear();
        }
        Some(ev)
    }

    /// Moves buffered events into `out` until it holds `max`.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<E>, max: usize) {
        while out.len() < max {
            match self.pop() {
                Some(ev) => out.push(ev),
                None => break,
            }
        }
    }
}

/// The events of one task after an offset: replayed from the store, then live.
/// Ends (yields `None`) right after the terminal event.
#[derive(Debug)]
pub struct TaskSubscription {
    hive: Hive,
    task: TaskId,
    replay: Replay<TaskEvent>,
    /// The last event handed out, while it is a heartbeat: the store may
    /// replace it in place (same seq, later beat), and the newer one is handed
    /// out again.
    beat: Option<TaskEvent>,
}

impl TaskSubscription {
    pub(crate) fn new(hive: Hive, task: TaskId, after: u64) -> Self {
        TaskSubscription {
            hive,
            task,
            replay: Replay::new(after),
            beat: None,
        }
    }

    /// The next buffered event, remembering it while it is a heartbeat.
    fn pop(&mut self) -> Option<TaskEvent> {
        let ev = self.replay.pop()?;
        self.beat = matches!(ev.kind, crate::task::EventKind::Heartbeat { .. }).then(|| ev.clone());
        Some(ev)
    }

    /// Reads what follows the position; when the last event handed out is a
    /// heartbeat, reads it again too and keeps it only if a later beat took
    /// its place.
    async fn read_more(&mut self) -> Result<()> {
        let after = self.replay.after;
        let again = self
            .beat
            .as_ref()
            .is_some_and(|b| b.seq == after && after > 0);
        let from = if again { after - 1 } else { after };
        let mut events = self.hive.store().read_events(self.task, from, PAGE).await?;
        if again
            && let Some(first) = events.first()
            && first.seq == after
            && Some(first) == self.beat.as_ref()
        {
            events.remove(0);
        }
        self.replay.buffer.extend(events);
        Ok(())
    }

    /// The task.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// The seq of the last event handed out (resume after it).
    pub fn position(&self) -> u64 {
        self.replay.after
    }

    /// The next event; `None` after the terminal event. An error (the store is
    /// unreachable) leaves the subscription usable: call again to retry.
    pub async fn next(&mut self) -> Option<Result<TaskEvent>> {
        loop {
            if let Some(ev) = self.pop() {
                return Some(Ok(ev));
            }
            if self.replay.done {
                return None;
            }
            let after = self.replay.after;
            match self.read_more().await {
                Ok(()) if !self.replay.buffer.is_empty() => {}
                Ok(()) => {
                    let store = self.hive.store();
                    if self.hive.is_shut_down() {
                        return Some(Err(crate::Error::Shutdown));
                    }
                    // Subscribed at or after the end: nothing more will come.
                    match store.get_task(self.task).await {
                        Ok(Some(t)) if t.state.is_terminal() && t.last_seq <= after => {
                            self.replay.done = true;
                            return None;
                        }
                        Ok(_) => {}
                        Err(e) => return Some(Err(e)),
                    }
                    let poll = self.hive.config().subscription_poll;
                    if let Err(e) = store.wait_for_events(self.task, after, poll).await {
                        return Some(Err(e));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Up to `max` events: the next one (waiting for it), then those already
    /// read ahead; `None` after the terminal event. For consumers that hand
    /// events on in batches (bindings, SSE).
    pub async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<TaskEvent>>> {
        let first = match self.next().await? {
            Ok(ev) => ev,
            Err(e) => return Some(Err(e)),
        };
        let mut out = vec![first];
        while out.len() < max {
            match self.pop() {
                Some(ev) => out.push(ev),
                None => break,
            }
        }
        Some(Ok(out))
    }

    /// Collects every remaining event, until the terminal one.
    pub async fn collect(mut self) -> Result<Vec<TaskEvent>> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await {
            out.push(ev?);
        }
        Ok(out)
    }

    /// The subscription as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<TaskEvent>> + Send {
        futures::stream::unfold(
            self,
            |mut s| async move { s.next().await.map(|ev| (ev, s)) },
        )
    }
}

/// A tenant's feed after a cursor: replayed, then live. Never ends by itself.
#[derive(Debug)]
pub struct FeedSubscription {
    hive: Hive,
    tenant: TenantId,
    after: u64,
    buffer: VecDeque<FeedEvent>,
}

impl FeedSubscription {
    /// The most events one [`FeedSubscription::drain_ready`] reads from the store.
    pub const DRAIN_LIMIT: usize = 10_000;

    pub(crate) fn new(hive: Hive, tenant: TenantId, after: u64) -> Self {
        FeedSubscription {
            hive,
            tenant,
            after,
            buffer: VecDeque::new(),
        }
    }

    /// The cursor of the last event handed out (resume after it).
    pub fn cursor(&self) -> u64 {
        self.after
    }

    /// Where the next read from the store starts: after the last event read
    /// ahead (buffered), or after the last one handed out. Reading from
    /// `after` while events are buffered would hand those out twice.
    fn read_from(&self) -> u64 {
        self.buffer.back().map_or(self.after, |e| e.cursor)
    }

    /// The next event. `OffsetExpired` if retention dropped events after the
    /// cursor; `Shutdown` once the engine stops.
    pub async fn next(&mut self) -> Result<FeedEvent> {
        loop {
            if let Some(ev) = self.buffer.pop_front() {
                self.after = ev.cursor;
                return Ok(ev);
            }
            let store = self.hive.store();
            let events = store.read_feed(&self.tenant, self.after, PAGE).await?;
            if events.is_empty() {
                if self.hive.is_shut_down() {
                    return Err(crate::Error::Shutdown);
                }
                let poll = self.hive.config().subscription_poll;
                store.wait_for_feed(&self.tenant, self.after, poll).await?;
            } else {
                self.buffer.extend(events);
            }
        }
    }

    /// Up to `max` events: those available now, or, if there are none, the next
    /// ones to arrive (waits). For consumers that process events in batches.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<FeedEvent>> {
        let max = max.max(1);
        loop {
            if !self.buffer.is_empty() {
                let n = self.buffer.len().min(max);
                let out: Vec<FeedEvent> = self.buffer.drain(..n).collect();
                if let Some(last) = out.last() {
                    self.after = last.cursor;
                }
                return Ok(out);
            }
            let store = self.hive.store();
            let events = store.read_feed(&self.tenant, self.after, max).await?;
            if !events.is_empty() {
                self.after = events.last().map_or(self.after, |e| e.cursor);
                return Ok(events);
            }
            if self.hive.is_shut_down() {
                return Err(crate::Error::Shutdown);
            }
            let poll = self.hive.config().subscription_poll;
            store.wait_for_feed(&self.tenant, self.after, poll).await?;
        }
    }

    /// The events available now, without waiting (possibly none): what is
    /// buffered plus at most [`FeedSubscription::DRAIN_LIMIT`] more from the
    /// store, each handed out once whatever came before (`next` and
    /// `next_batch` may have read ahead). If the store cannot be read, the
    /// buffered events are still handed out; with none, the error is.
    pub async fn drain_ready(&mut self) -> Result<Vec<FeedEvent>> {
        let read = self
            .hive
            .store()
            .read_feed(&self.tenant, self.read_from(), Self::DRAIN_LIMIT)
            .await;
        let mut out: Vec<FeedEvent> = self.buffer.drain(..).collect();
        match read {
            Ok(events) => out.extend(events),
            Err(e) if out.is_empty() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "feed read failed; handing out what was buffered")
            }
        }
        if let Some(last) = out.last() {
            self.after = last.cursor;
        }
        Ok(out)
    }
}
