//! Server-sent events: a reader of `text/event-stream` bodies, and the
//! verifier of a task's (or workflow's) event stream against the contract —
//! `id:` = seq, gapless from 1, no repeat (but a coalesced heartbeat handed
//! out again), exactly one terminal event and it last, then `end` naming it.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

/// One server-sent event (with data; comments and `retry:` are kept aside).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sse {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (`None` for a plain message).
    pub event: Option<String>,
    /// `data:` lines, joined.
    pub data: String,
}

/// How reading a stream stopped short.
#[derive(Debug)]
pub enum ReadError {
    /// The body failed (the connection was reset or the server went away).
    Transport(reqwest::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Transport(e) => write!(f, "the stream broke: {e}"),
        }
    }
}

/// An event stream being read.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
    /// The last `retry:` value seen, in milliseconds.
    pub retry_ms: Option<u64>,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buf.len())
            .field("retry_ms", &self.retry_ms)
            .finish()
    }
}

impl SseReader {
    /// Reads `response`'s body as events.
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            body: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buf: String::new(),
            retry_ms: None,
        }
    }

    /// The next event with data; `Ok(None)` when the body ended cleanly.
    pub async fn next(&mut self) -> Result<Option<Sse>, ReadError> {
        loop {
            if let Some(block) = self.take_block() {
                let mut e = Sse::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        e.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        e.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    } else if let Some(v) = line.strip_prefix("retry:") {
                        self.retry_ms = v.trim().parse().ok();
                    }
                }
                if data.is_empty() {
                    continue;
                }
                e.data = data.join("\n");
                return Ok(Some(e));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                Some(Err(e)) => return Err(ReadError::Transport(e)),
                None => return Ok(None),
            }
        }
    }

    fn take_block(&mut self) -> Option<String> {
        let end = self.buf.find("\n\n")?;
        Some(self.buf.drain(..end + 2).collect())
    }
}

/// The task event types that end a task.
pub const TERMINAL_TYPES: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

/// What a verifier accepts as terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// A task's events (`/api/tasks/{id}/events`): `queued` first.
    Task,
    /// A workflow's events (`/api/workflows/{id}/events`): `started` first,
    /// `finished` last.
    Workflow,
}

impl StreamKind {
    fn first(self) -> &'static str {
        match self {
            StreamKind::Task => "queued",
            StreamKind::Workflow => "started",
        }
    }

    fn is_terminal(self, ty: &str) -> bool {
        match self {
            StreamKind::Task => TERMINAL_TYPES.contains(&ty),
            StreamKind::Workflow => ty == "finished",
        }
    }

    fn owner_field(self) -> &'static str {
        match self {
            StreamKind::Task => "task",
            StreamKind::Workflow => "workflow",
        }
    }
}

/// Checks one stream's events, across reconnections, against the contract.
#[derive(Clone, Debug)]
pub struct SeqVerifier {
    kind: StreamKind,
    id: String,
    tenant: Option<String>,
    /// The highest seq seen.
    pub last: u64,
    last_type: String,
    /// Every seq seen once, with its type, in order.
    pub seen: Vec<(u64, String)>,
    /// The terminal event's seq and type, once seen.
    pub terminal: Option<(u64, String)>,
    /// The terminal event's data.
    pub terminal_data: Option<Value>,
    /// Whether the `end` event came.
    pub ended: bool,
    /// Heartbeats handed out again under the same seq (allowed).
    pub heartbeat_repeats: u64,
}

impl SeqVerifier {
    /// A verifier of the stream of `id` (of `tenant`, when known).
    pub fn new(kind: StreamKind, id: &str, tenant: Option<&str>) -> SeqVerifier {
        SeqVerifier {
            kind,
            id: id.to_owned(),
            tenant: tenant.map(str::to_owned),
            last: 0,
            last_type: String::new(),
            seen: Vec::new(),
            terminal: None,
            terminal_data: None,
            ended: false,
            heartbeat_repeats: 0,
        }
    }

    /// Takes one event; `Err` describes the breach.
    pub fn push(&mut self, e: &Sse) -> Result<(), String> {
        match e.event.as_deref() {
            None | Some("message") => self.event(e),
            Some("end") => self.end(e),
            Some("problem") => Err(format!("the stream sent a problem event: {}", e.data)),
            Some(other) => Err(format!("an unknown event type {other:?}: {}", e.data)),
        }
    }

    fn event(&mut self, e: &Sse) -> Result<(), String> {
        if self.ended {
            return Err("an event after the end event".into());
        }
        let data: Value = serde_json::from_str(&e.data)
            .map_err(|err| format!("event data is not JSON ({err}): {}", e.data))?;
        let seq = data["seq"]
            .as_u64()
            .ok_or_else(|| format!("an event without a seq: {data}"))?;
        let ty = data["type"].as_str().unwrap_or("").to_owned();
        match e.id.as_deref().map(str::parse::<u64>) {
            Some(Ok(id)) if id == seq => {}
            other => {
                return Err(format!(
                    "event seq {seq} ({ty}) has id {other:?}; the id must be its seq"
                ));
            }
        }
        let owner = self.kind.owner_field();
        if data[owner] != self.id.as_str() {
            return Err(format!(
                "event seq {seq} names {owner} {} instead of {}",
                data[owner], self.id
            ));
        }
        if let Some(t) = &self.tenant
            && self.kind == StreamKind::Task
            && data["tenant"] != t.as_str()
        {
            return Err(format!(
                "event seq {seq} names tenant {} instead of {t}",
                data["tenant"]
            ));
        }
        if let Some((tseq, tty)) = &self.terminal {
            return Err(format!(
                "event seq {seq} ({ty}) after the terminal event seq {tseq} ({tty})"
            ));
        }
        if seq == self.last && ty == "heartbeat" && self.last_type == "heartbeat" {
            // A coalesced heartbeat handed out again: the one allowed repeat.
            self.heartbeat_repeats += 1;
            return Ok(());
        }
        if seq <= self.last {
            return Err(format!(
                "seq {seq} ({ty}) repeated or out of order after seq {} ({})",
                self.last, self.last_type
            ));
        }
        if seq != self.last + 1 {
            return Err(format!(
                "a gap: seq {seq} ({ty}) after seq {} ({})",
                self.last, self.last_type
            ));
        }
        if seq == 1 && ty != self.kind.first() {
            return Err(format!(
                "seq 1 is {ty:?}, the contract says {:?}",
                self.kind.first()
            ));
        }
        if self.kind.is_terminal(&ty) {
            self.terminal = Some((seq, ty.clone()));
            self.terminal_data = Some(data);
        }
        self.last = seq;
        self.last_type = ty.clone();
        self.seen.push((seq, ty));
        Ok(())
    }

    fn end(&mut self, e: &Sse) -> Result<(), String> {
        let data: Value = serde_json::from_str(&e.data)
            .map_err(|err| format!("the end event's data is not JSON ({err}): {}", e.data))?;
        let Some((tseq, _)) = &self.terminal else {
            return Err(format!(
                "the end event came without a terminal event (last seq {} {:?}, end says {})",
                self.last, self.last_type, data
            ));
        };
        if data["last_event_id"].as_u64() != Some(*tseq) {
            return Err(format!(
                "the end event names last_event_id {} but the terminal event is seq {tseq}",
                data["last_event_id"]
            ));
        }
        self.ended = true;
        Ok(())
    }

    /// The seqs and types seen, for comparing two reads of one stream.
    pub fn history(&self) -> &[(u64, String)] {
        &self.seen
    }
}

/// How a stream is read.
#[derive(Clone, Copy, Debug)]
pub struct FollowPlan {
    /// Drop the connection after this many events and resume with
    /// `Last-Event-ID` (once).
    pub cut_after: Option<usize>,
    /// Whether a connection that closes before `end` is resumed (during a
    /// restart) rather than a breach.
    pub allow_reconnect: bool,
    /// When to give up waiting for `end`.
    pub deadline: tokio::time::Instant,
}

/// What reading one stream to its end found.
#[derive(Clone, Debug)]
pub struct Followed {
    /// The verifier, with everything it saw.
    pub verifier: SeqVerifier,
    /// Connections opened.
    pub connections: u32,
    /// Resumptions the plan asked for.
    pub planned_resumes: u32,
    /// Resumptions after the connection closed by itself.
    pub reconnects: u32,
    /// The first breach, if any.
    pub breach: Option<String>,
    /// The `retry:` the stream announced (ms).
    pub retry_ms: Option<u64>,
}

/// The most times a stream is resumed after closing by itself.
const MAX_RECONNECTS: u32 = 30;

/// Reads the stream at `path` as `token` until its `end` event, checking
/// every event with `verifier`, resuming with `Last-Event-ID` where `plan`
/// says; never fails, the breach is in the answer.
pub async fn follow(
    client: &crate::client::Client,
    path: &str,
    token: &str,
    verifier: SeqVerifier,
    plan: FollowPlan,
) -> Followed {
    let mut out = Followed {
        verifier,
        connections: 0,
        planned_resumes: 0,
        reconnects: 0,
        breach: None,
        retry_ms: None,
    };
    let mut cut_done = plan.cut_after.is_none();
    loop {
        out.connections += 1;
        let last = out.verifier.last;
        let mut call = client.get(path, token);
        if last > 0 {
            call = call.header("last-event-id", last.to_string());
        }
        let response = match tokio::time::timeout_at(plan.deadline, call.open_stream()).await {
            Err(_) => {
                out.breach = Some(format!(
                    "{path}: the stream did not open before the deadline (after seq {last})"
                ));
                return out;
            }
            Ok(Err(e)) => {
                out.breach = Some(format!(
                    "{path}: cannot open the stream after seq {last}: {e}"
                ));
                return out;
            }
            Ok(Ok(r)) => r,
        };
        let mut reader = SseReader::new(response);
        loop {
            match tokio::time::timeout_at(plan.deadline, reader.next()).await {
                Err(_) => {
                    out.breach = Some(format!(
                        "{path}: no end event before the deadline (last seq {})",
                        out.verifier.last
                    ));
                    return out;
                }
                Ok(Ok(Some(e))) => {
                    if reader.retry_ms.is_some() {
                        out.retry_ms = reader.retry_ms;
                    }
                    if let Err(b) = out.verifier.push(&e) {
                        out.breach = Some(format!("{path}: {b}"));
                        return out;
                    }
                    if out.verifier.ended {
                        return out;
                    }
                    if !cut_done && plan.cut_after == Some(out.verifier.seen.len()) {
                        cut_done = true;
                        out.planned_resumes += 1;
                        break;
                    }
                }
                Ok(closed) => {
                    let why = match closed {
                        Err(e) => e.to_string(),
                        Ok(_) => "the connection closed".to_owned(),
                    };
                    if !plan.allow_reconnect {
                        out.breach = Some(format!(
                            "{path}: {why} before the end event (last seq {})",
                            out.verifier.last
                        ));
                        return out;
                    }
                    out.reconnects += 1;
                    if out.reconnects > MAX_RECONNECTS {
                        out.breach = Some(format!(
                            "{path}: {why}; gave up after {MAX_RECONNECTS} resumptions (last seq {})",
                            out.verifier.last
                        ));
                        return out;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, ty: &str) -> Sse {
        Sse {
            id: Some(seq.to_string()),
            event: None,
            data: serde_json::json!({"task": "t", "tenant": "a", "seq": seq, "type": ty})
                .to_string(),
        }
    }

    fn end(last: u64) -> Sse {
        Sse {
            id: None,
            event: Some("end".into()),
            data: serde_json::json!({ "last_event_id": last }).to_string(),
        }
    }

    #[test]
    fn a_whole_stream_passes() {
        let mut v = SeqVerifier::new(StreamKind::Task, "t", Some("a"));
        for e in [
            ev(1, "queued"),
            ev(2, "scheduled"),
            ev(3, "started"),
            ev(4, "heartbeat"),
            ev(4, "heartbeat"),
            ev(5, "succeeded"),
            end(5),
        ] {
            v.push(&e).unwrap();
        }
        assert!(v.ended);
        assert_eq!(v.heartbeat_repeats, 1);
    }

    #[test]
    fn breaches_are_named() {
        let mut v = SeqVerifier::new(StreamKind::Task, "t", Some("a"));
        v.push(&ev(1, "queued")).unwrap();
        assert!(v.push(&ev(1, "queued")).unwrap_err().contains("repeated"));
        assert!(v.push(&ev(3, "started")).unwrap_err().contains("gap"));
        v.push(&ev(2, "scheduled")).unwrap();
        assert!(v.push(&end(2)).unwrap_err().contains("without a terminal"));
        v.push(&ev(3, "cancelled")).unwrap();
        assert!(
            v.push(&ev(4, "log"))
                .unwrap_err()
                .contains("after the terminal")
        );
        let mut w = SeqVerifier::new(StreamKind::Task, "t", Some("a"));
        assert!(w.push(&ev(1, "started")).unwrap_err().contains("seq 1"));
        let mut x = SeqVerifier::new(StreamKind::Task, "u", Some("a"));
        assert!(x.push(&ev(1, "queued")).unwrap_err().contains("names task"));
    }
}
