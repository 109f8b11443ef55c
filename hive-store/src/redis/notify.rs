//! Wake-ups: one pub/sub connection per store, dispatching to local waiters.
//!
//! Scripts PUBLISH on `ch:work` (the new work epoch), `ch:tasks` (the ids of
//! tasks with new events, one message per script call), `ch:f:{tenant}` and
//! `ch:r:{kind}:{id}`. The listener subscribes to `ch:work` always and to the
//! other channels only while a local waiter needs them (reference counted), and
//! wakes the waiters' [`Notify`]s. A waiter registers before it checks the
//! store, so a message published after the check is never missed; while the
//! connection is down, waiters fall back on their timeouts, and every waiter is
//! woken after a reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use hive_core::retry::Backoff;
use rustc_hash::FxHashSet;
use tokio::sync::{Notify, oneshot, watch};

use super::keys::Keys;
use crate::waiters::Waiters;

#[derive(Default)]
struct SinkState {
    sink: Option<redis::aio::PubSubSink>,
    subscribed: FxHashSet<String>,
}

pub(super) struct Shared {
    keys: Keys,
    work_channel: String,
    tasks_channel: String,
    epoch: AtomicU64,
    work: Notify,
    /// Task id → its waiters.
    tasks: Waiters<String>,
    /// Channel → its waiters (the tasks channel counts every task waiter).
    channels: Waiters<String>,
    sink: tokio::sync::Mutex<SinkState>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The store's notifier. Dropping it stops the listener.
#[derive(Debug)]
pub(super) struct Notifier {
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

/// How long a (un)subscribe may take before the waiter goes on without it.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Notifier {
    /// Starts the listener; waits up to `timeout` for its first subscription.
    pub(super) async fn start(
        client: redis::Client,
        conn: redis::aio::ConnectionManager,
        keys: Keys,
        timeout: Duration,
    ) -> Notifier {
        let shared = Arc::new(Shared {
            work_channel: keys.channel_work(),
            tasks_channel: keys.channel_tasks(),
            keys,
            epoch: AtomicU64::new(0),
            work: Notify::new(),
            tasks: Waiters::default(),
            channels: Waiters::default(),
            sink: tokio::sync::Mutex::new(SinkState::default()),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        tokio::spawn(listen(
            shared.clone(),
            client,
            conn,
            timeout,
            stop_rx,
            ready_tx,
        ));
        let _ = tokio::time::timeout(timeout, ready_rx.wait_for(|r| *r)).await;
        Notifier {
            shared,
            _stop: stop_tx,
        }
    }

    /// The latest work epoch this process has heard of.
    pub(super) fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    /// Records an epoch read from the store.
    pub(super) fn saw_epoch(&self, epoch: u64) {
        self.shared.epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// Waits for a work notification after `epoch`, or `timeout`.
    pub(super) async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        let notified = self.shared.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.epoch() != epoch {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// Registers a waiter on a task's events; it is woken when a script reports
    /// new events of the task.
    pub(super) async fn task_waiter(&self, task: String) -> Waiter {
        let notify = self.shared.tasks.acquire(task.clone());
        let channel = self.shared.tasks_channel.clone();
        self.count(&channel);
        let waiter = Waiter {
            shared: self.shared.clone(),
            notify,
            task: Some(task),
            channel,
        };
        self.subscribe(&waiter.channel).await;
        waiter
    }

    /// Registers a waiter on a channel (a feed, a record).
    pub(super) async fn channel_waiter(&self, channel: String) -> Waiter {
        let waiter = Waiter {
            shared: self.shared.clone(),
            notify: self.count(&channel),
            task: None,
            channel: channel.clone(),
        };
        self.subscribe(&channel).await;
        waiter
    }

    /// Counts a waiter on `channel`.
    fn count(&self, channel: &str) -> Arc<Notify> {
        self.shared.channels.acquire(channel.to_owned())
    }

    /// Makes sure `channel` is subscribed (unless the connection is down: then
    /// waiters rely on their timeouts until the listener reconnects).
    async fn subscribe(&self, channel: &str) {
        let mut state = self.shared.sink.lock().await;
        if state.subscribed.contains(channel) {
            return;
        }
        if let Some(sink) = state.sink.as_mut() {
            let r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(channel)).await;
            match r {
                Ok(Ok(())) => {
                    state.subscribed.insert(channel.to_owned());
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "redis: subscribe failed"),
                Err(_) => tracing::debug!("redis: subscribe timed out"),
            }
        }
    }
}

/// One registered waiter. Wait on [`Waiter::notify`]; dropping it unregisters.
pub(super) struct Waiter {
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    task: Option<String>,
    channel: String,
}

impl Waiter {
    /// The notify to wait on (enable the `notified()` future before checking).
    pub(super) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            self.shared.tasks.release(task);
        }
        let last = self.shared.channels.release(&self.channel);
        if last && let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let channel = std::mem::take(&mut self.channel);
            rt.spawn(async move { release(shared, channel).await });
        }
    }
}

/// Unsubscribes from `channel` unless a waiter came back for it meanwhile.
async fn release(shared: Arc<Shared>, channel: String) {
    let mut state = shared.sink.lock().await;
    if shared.channels.contains(&channel) || !state.subscribed.contains(&channel) {
        return;
    }
    if let Some(sink) = state.sink.as_mut()
        && let Ok(Ok(())) =
            tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&channel)).await
    {
        state.subscribed.remove(&channel);
    }
}

fn wake_all(shared: &Shared) {
    shared.work.notify_waiters();
    shared.tasks.wake_all();
    shared.channels.wake_all();
}

fn dispatch(shared: &Shared, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let payload = std::str::from_utf8(msg.get_payload_bytes()).unwrap_or("");
    if channel == shared.work_channel {
        if let Ok(epoch) = payload.parse::<u64>() {
            shared.epoch.fetch_max(epoch, Ordering::SeqCst);
        }
        shared.work.notify_waiters();
    } else if channel == shared.tasks_channel {
        shared.tasks.wake(payload.split(' '));
    } else {
        shared.channels.wake([channel]);
    }
}

async fn read_epoch(shared: &Shared, conn: &mut redis::aio::ConnectionManager) {
    let r: redis::RedisResult<Option<u64>> = redis::cmd("GET")
        .arg(shared.keys.work())
        .query_async(conn)
        .await;
    if let Ok(Some(epoch)) = r {
        shared.epoch.fetch_max(epoch, Ordering::SeqCst);
    }
}

/// The listener: connects, subscribes to what is wanted, dispatches messages;
/// on a lost connection wakes everyone and reconnects with a backoff.
async fn listen(
    shared: Arc<Shared>,
    client: redis::Client,
    mut conn: redis::aio::ConnectionManager,
    timeout: Duration,
    mut stop: oneshot::Receiver<()>,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let connected = tokio::select! {
            _ = &mut stop => return,
            r = tokio::time::timeout(timeout, client.get_async_pubsub()) => r,
        };
        if let Ok(Ok(pubsub)) = connected {
            let (mut sink, mut stream) = pubsub.split();
            let installed = {
                let mut state = shared.sink.lock().await;
                let mut wanted: Vec<String> = shared.channels.keys();
                wanted.push(shared.work_channel.clone());
                let r = tokio::time::timeout(timeout, sink.subscribe(&wanted)).await;
                if let Ok(Ok(())) = r {
                    state.subscribed = wanted.into_iter().collect();
                    state.sink = Some(sink);
                    true
                } else {
                    false
                }
            };
            if installed {
                backoff.reset();
                read_epoch(&shared, &mut conn).await;
                let _ = ready.send(true);
                wake_all(&shared);
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        msg = stream.next() => match msg {
                            Some(msg) => dispatch(&shared, &msg),
                            None => break,
                        },
                    }
                }
                let mut state = shared.sink.lock().await;
                state.sink = None;
                state.subscribed.clear();
                drop(state);
                tracing::warn!("redis: pub/sub connection lost; reconnecting");
                wake_all(&shared);
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
