//! Server-sent event streams: task, workflow and feed events with the
//! engine's seq (or feed cursor) as `id:`, resumable with `Last-Event-ID`
//! or `?last_event_id=`, and a final `end` event after a terminal one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use hive::Principal;
use parking_lot::Mutex;

use super::{ApiError, ApiState};

/// How long a browser waits before it reconnects (the `retry:` field).
pub const RETRY: Duration = Duration::from_secs(2);

/// Open streams per token holder.
#[derive(Default)]
pub(crate) struct StreamCounter {
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream; dropping it frees its slot.
pub(crate) struct StreamSlot {
    state: ApiState,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.state.streams().open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl ApiState {
    /// Takes a stream slot of `p`'s, or `429` when it holds
    /// [`super::ApiLimits::streams_per_token`] already.
    pub(crate) fn open_stream(&self, p: &Principal) -> Result<StreamSlot, ApiError> {
        let key = format!("{}/{}", p.tenant, p.id);
        let max = self.limits().streams_per_token;
        let mut open = self.streams().open.lock();
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= max {
            return Err(ApiError::rate_limited(
                format!("at most {max} event streams may be open per token; close one"),
                1,
            ));
        }
        *n += 1;
        Ok(StreamSlot {
            state: self.clone(),
            key,
        })
    }

    /// Streams open now, across tokens.
    pub fn open_streams(&self) -> usize {
        self.streams().open.lock().values().sum()
    }
}

/// Where a stream resumes: the `Last-Event-ID` header, else the
/// `last_event_id` query parameter, else `default`.
pub(crate) fn resume_from(
    headers: &HeaderMap,
    query: Option<&str>,
    default: u64,
) -> Result<u64, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").trim().to_owned());
    match header.as_deref().or(query) {
        None | Some("") => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            ApiError::bad_request(format!("Last-Event-ID {s:?} is not an event id (a seq)"))
        }),
    }
}

/// One item of a stream.
pub(crate) struct Item {
    /// The `id:` (seq or cursor).
    pub id: u64,
    /// The event's JSON.
    pub data: serde_json::Value,
    /// Whether it ends the stream (an `end` event follows).
    pub terminal: bool,
}

/// What a stream reads from.
pub(crate) trait Source: Send + 'static {
    /// The next item; `None` when the source ended.
    fn next_item(&mut self) -> impl Future<Output = Option<hive::Result<Item>>> + Send;
}

enum Phase<S> {
    Open(S, u64),
    End(u64),
    Done,
}

/// The stream of `source`'s items as events (resuming after `after`), then
/// an `end` event after a terminal one — or at once when the source had
/// ended before `after`; a failure is a `problem` event, after which the
/// stream closes (the client resumes from its last id).
pub(crate) fn events<S: Source>(source: S, after: u64) -> impl Stream<Item = Event> + Send {
    stream::unfold(Phase::Open(source, after), |phase| async move {
        match phase {
            Phase::Open(mut source, last) => match source.next_item().await {
                Some(Ok(item)) => {
                    let event = Event::default()
                        .id(item.id.to_string())
                        .data(item.data.to_string());
                    let next = if item.terminal {
                        Phase::End(item.id)
                    } else {
                        Phase::Open(source, item.id)
                    };
                    Some((event, next))
                }
                Some(Err(e)) => {
                    let problem = ApiError::from(e);
                    let data = serde_json::to_string(&*problem.0).unwrap_or_default();
                    Some((Event::default().event("problem").data(data), Phase::Done))
                }
                None => Some((end_event(last), Phase::Done)),
            },
            Phase::End(last) => Some((end_event(last), Phase::Done)),
            Phase::Done => None,
        }
    })
}

fn end_event(last: u64) -> Event {
    Event::default()
        .event("end")
        .data(serde_json::json!({ "last_event_id": last }).to_string())
}

/// The SSE answer: a `retry:` first, then `events`, keep-alive comments
/// while idle; it closes when the service stops, and frees `slot` when the
/// client goes away.
pub(crate) fn respond(
    state: &ApiState,
    slot: StreamSlot,
    events: impl Stream<Item = Event> + Send + 'static,
) -> Response {
    let opening = stream::once(async { Event::default().retry(RETRY).comment("hive") });
    let stop = state.stop().clone().cancelled_owned();
    let body = opening.chain(events).take_until(stop).map(move |e| {
        let _held = &slot;
        Ok::<_, Infallible>(e)
    });
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(state.limits().keep_alive))
        .into_response()
}
