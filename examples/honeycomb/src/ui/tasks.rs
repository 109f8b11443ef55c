//! Tasks: the filtered list, and a task's whole story on one page — state,
//! timings, attempts, input/output/error, why it waits, and its log (paged,
//! filtered, downloadable, live while it runs).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use hive::prelude::*;
use hive::task::EventKind;
use hive::{NodeId, TaskError, TaskQuery, Timestamp};
use maud::{Markup, html};
use serde::Deserialize;

use super::html::{self as h, Nav};
use super::{UiCaller, UiError, UiResult};
use crate::api::ApiState;
use crate::api::sse;
use crate::api::tasks::TaskEvents;

/// Lines per log page.
pub(crate) const LOG_PAGE: usize = 500;
/// The most events one page view reads.
const MAX_SCAN: u64 = 1_000_000;
/// Tasks per list page.
const LIST_PAGE: u32 = 50;

/// A query string, or a `400` page naming what is wrong.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, UiError> {
    q.map(|Query(v)| v)
        .map_err(|e| UiError::BadRequest(e.body_text()))
}

/// A time filter: RFC 3339 or `YYYY-MM-DD HH:MM[:SS]` (UTC), or a
/// duration ago (`15m`, `2h`).
pub(crate) fn parse_time(field: &str, s: &str) -> Result<Timestamp, UiError> {
    let s = s.trim();
    if let Some(d) = crate::api::parse_duration(s) {
        let now = Timestamp::now().as_millis();
        return Ok(Timestamp::from_millis(now - d.as_millis() as i64));
    }
    let padded = if s.len() == 16 {
        format!("{s}:00")
    } else {
        s.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(&padded)
        .or_else(|_| humantime::parse_rfc3339(s))
        .map_err(|_| {
            UiError::BadRequest(format!(
                "{field}={s:?}: not a time (2026-12-04 08:30 UTC, or 15m for 15 minutes ago)"
            ))
        })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(Timestamp::from_millis(ms))
}

/// The smallest task id of tasks created at `t` or later (ids are UUIDv7).
pub(crate) fn first_id_at(t: Timestamp) -> TaskId {
    let ms = t.as_millis().max(0) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    TaskId::from_uuid(uuid::Uuid::from_bytes(b))
}

/// The list's filters (every one optional).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
}

const STATES: [&str; 7] = [
    "pending",
    "scheduled",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
];

/// `GET /ui/tasks`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    c: UiCaller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> UiResult {
    let q = query(q)?;
    let mut tq = TaskQuery {
        limit: Some(LIST_PAGE),
        ..TaskQuery::default()
    };
    if !q.state.is_empty() {
        tq.states = vec![
            q.state
                .parse()
                .map_err(|_| UiError::BadRequest(format!("state={:?}: no such state", q.state)))?,
        ];
    }
    if !q.agent.is_empty() {
        tq.agent = Some(hive::AgentRef::new(q.agent.as_str()));
    }
    if !q.owner.is_empty() {
        tq.owner = Some(hive::PrincipalId::new(q.owner.clone()));
    }
    let until = if q.until.is_empty() {
        None
    } else {
        Some(parse_time("until", &q.until)?)
    };
    if !q.after.is_empty() {
        tq.after = Some(
            q.after
                .parse()
                .map_err(|_| UiError::BadRequest(format!("after={:?}: not a task id", q.after)))?,
        );
    } else if !q.since.is_empty() {
        tq.after = Some(first_id_at(parse_time("since", &q.since)?));
    }
    let page = state.hive().list_tasks(&c.p, &tq).await?;
    let mut items = page.items;
    let mut next = page.next;
    if let Some(until) = until
        && let Some(cut) = items.iter().position(|t| t.created_at > until)
    {
        items.truncate(cut);
        next = None;
    }
    let filters = [
        ("state", q.state.as_str()),
        ("agent", q.agent.as_str()),
        ("owner", q.owner.as_str()),
        ("since", q.since.as_str()),
        ("until", q.until.as_str()),
    ];
    let next_href = next.map(|n| {
        let after = n.to_string();
        let mut pairs = filters.to_vec();
        pairs.push(("after", after.as_str()));
        format!("/ui/tasks?{}", h::query(&pairs))
    });
    let body = html! {
        h1 { "Tasks" }
        form.filters method="get" action="/ui/tasks" aria-label="Filter tasks" {
            div {
                label for="f-state" { "State" }
                select #f-state name="state" {
                    option value="" selected[q.state.is_empty()] { "any" }
                    @for s in STATES {
                        option value=(s) selected[q.state == s] { (s) }
                    }
                }
            }
            div {
                label for="f-agent" { "Agent" }
                input #f-agent name="agent" value=(q.agent) placeholder="summarize";
            }
            div {
                label for="f-owner" { "Owner" }
                input #f-owner name="owner" value=(q.owner) placeholder="alice";
            }
            div {
                label for="f-since" { "Since (UTC, or 15m)" }
                input #f-since name="since" value=(q.since) placeholder="2026-12-04 08:00";
            }
            div {
                label for="f-until" { "Until (UTC)" }
                input #f-until name="until" value=(q.until);
            }
            div.actions { button type="submit" { "Filter" } a href="/ui/tasks" { "Clear" } }
        }
        @if items.is_empty() {
            p #empty { "No tasks match." }
        } @else {
            div.scroll {
                table #tasks {
                    caption.visually-hidden { "Tasks, oldest first" }
                    thead { tr { th scope="col" { "Task" } th scope="col" { "Agent" } th scope="col" { "State" } th scope="col" { "Attempt" } th scope="col" { "Owner" } th scope="col" { "Submitted" } } }
                    tbody {
                        @for t in &items {
                            tr data-task=(t.id) {
                                td { a href={ "/ui/tasks/" (t.id) } { code.id { (t.id) } } }
                                td { (t.spec.agent) }
                                td { (h::badge(t.state.as_str())) }
                                td { (t.attempt) }
                                td { (t.owner.principal) }
                                td { (h::time(t.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next_href {
            nav.pager aria-label="Pages" { a #next-page rel="next" href=(href) { "Next page →" } }
        }
    };
    Ok(h::layout("Tasks", Some(&c), Nav::Tasks, body).into_response())
}

/// One attempt, as the events tell it.
#[derive(Debug, Default)]
struct Attempt {
    n: u32,
    node: Option<NodeId>,
    started_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
    outcome: String,
    error: Option<TaskError>,
    lines: usize,
}

/// One log line.
#[derive(Debug)]
pub(crate) struct Line {
    pub seq: u64,
    pub at: Timestamp,
    pub attempt: u32,
    pub stream: String,
    pub line: String,
    pub level: &'static str,
}

/// The level of a line: a level word near its start, else `warn` for
/// stderr and `info` for the rest (the script decides the same way).
pub(crate) fn level(stream: &str, line: &str) -> &'static str {
    let head: String = line
        .chars()
        .take(40)
        .collect::<String>()
        .to_ascii_uppercase();
    for (word, level) in [
        ("ERROR", "error"),
        ("FATAL", "error"),
        ("WARN", "warn"),
        ("INFO", "info"),
        ("DEBUG", "debug"),
        ("TRACE", "debug"),
    ] {
        if head.contains(word) {
            return level;
        }
    }
    if stream == "stderr" { "warn" } else { "info" }
}

fn level_rank(level: &str) -> u8 {
    match level {
        "debug" => 0,
        "info" => 1,
        "warn" => 2,
        "error" => 3,
        _ => 0,
    }
}

/// A task's events, read once: its attempts and its log.
#[derive(Debug, Default)]
struct Story {
    attempts: Vec<Attempt>,
    lines: Vec<Line>,
    first_start: Option<Timestamp>,
    ended_at: Option<Timestamp>,
    /// The events read stopped at the scan limit.
    cut: bool,
}

async fn story(hive: &Hive, p: &Principal, id: TaskId) -> Result<Story, UiError> {
    let mut s = Story::default();
    let mut attempt = 0u32;
    let mut cursor = 0u64;
    loop {
        if cursor >= MAX_SCAN {
            s.cut = true;
            break;
        }
        let batch = hive.read_events(p, id, cursor, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            cursor = e.seq;
            match e.kind {
                EventKind::Started { node, attempt: a } => {
                    attempt = a;
                    s.first_start.get_or_insert(e.at);
                    s.attempts.push(Attempt {
                        n: a,
                        node: Some(node),
                        started_at: Some(e.at),
                        outcome: "running".into(),
                        ..Attempt::default()
                    });
                }
                EventKind::Log { stream, line } => {
                    if let Some(a) = s.attempts.last_mut() {
                        a.lines += 1;
                    }
                    s.lines.push(Line {
                        seq: e.seq,
                        at: e.at,
                        attempt,
                        level: level(&stream, &line),
                        stream,
                        line,
                    });
                }
                EventKind::AttemptFailed {
                    attempt: a,
                    error,
                    retry_at,
                } => {
                    if let Some(last) = s.attempts.iter_mut().rev().find(|x| x.n == a) {
                        last.ended_at = Some(e.at);
                        last.outcome = format!("failed, retry at {}", h::rfc3339(retry_at));
                        last.error = Some(error);
                    }
                }
                kind if kind.is_terminal() => {
                    s.ended_at = Some(e.at);
                    let (outcome, error) = match kind {
                        EventKind::Succeeded { .. } => ("succeeded".to_owned(), None),
                        EventKind::Failed { error } => ("failed".to_owned(), Some(error)),
                        EventKind::Cancelled { by, reason } => {
                            (format!("cancelled by {by}: {reason}"), None)
                        }
                        EventKind::TimedOut { phase } => (format!("timed out ({phase})"), None),
                        _ => (String::new(), None),
                    };
                    if let Some(last) = s.attempts.last_mut()
                        && last.ended_at.is_none()
                    {
                        last.ended_at = Some(e.at);
                        last.outcome = outcome;
                        last.error = error;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(s)
}

/// The task page's query: the log's page and filters, or one part alone.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    log_page: Option<usize>,
    #[serde(default)]
    level: String,
    #[serde(default)]
    q: String,
    attempt: Option<u32>,
    #[serde(default)]
    part: String,
}

fn parse_task_id(id: &str) -> Result<TaskId, UiError> {
    id.parse()
        .map_err(|_| UiError::NotFound(format!("{id:?} is not a task id")))
}

/// `GET /ui/tasks/{id}`.
pub(crate) async fn page(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> UiResult {
    let q = query(q)?;
    let id = parse_task_id(&id)?;
    let hive = state.hive();
    let task = hive.get_task(&c.p, id).await?;
    let story = story(hive, &c.p, id).await?;
    let waiting = if task.state.is_terminal() || task.state == TaskState::Running {
        None
    } else {
        Some(hive.diagnose_task(&c.p, id).await?)
    };
    let summary = summary(&task, &story, waiting.as_ref());
    if q.part == "summary" {
        return Ok(summary.into_response());
    }
    if !q.level.is_empty() && !["debug", "info", "warn", "error"].contains(&q.level.as_str()) {
        return Err(UiError::BadRequest(format!(
            "level={:?}: one of debug, info, warn, error",
            q.level
        )));
    }
    let min = level_rank(&q.level);
    let needle = q.q.to_lowercase();
    let shown: Vec<&Line> = story
        .lines
        .iter()
        .filter(|l| level_rank(l.level) >= min)
        .filter(|l| needle.is_empty() || l.line.to_lowercase().contains(&needle))
        .filter(|l| q.attempt.is_none_or(|a| l.attempt == a))
        .collect();
    let pages = shown.len().div_ceil(LOG_PAGE).max(1);
    let default_page = if task.state.is_terminal() { 1 } else { pages };
    let log_page = q.log_page.unwrap_or(default_page).clamp(1, pages);
    let from = (log_page - 1) * LOG_PAGE;
    let lines = &shown[from.min(shown.len())..(from + LOG_PAGE).min(shown.len())];
    let filtered = !q.level.is_empty() || !q.q.is_empty() || q.attempt.is_some();
    let tail = log_page == pages && !filtered;
    let attempt_s = q.attempt.map(|a| a.to_string()).unwrap_or_default();
    let page_href = |n: usize| {
        let n = n.to_string();
        format!(
            "/ui/tasks/{id}?{}#log",
            h::query(&[
                ("log_page", n.as_str()),
                ("level", q.level.as_str()),
                ("q", q.q.as_str()),
                ("attempt", attempt_s.as_str()),
            ])
        )
    };
    let terminal = task.state.is_terminal();
    let body = html! {
        h1 { "Task " (h::copyable(&id.to_string())) }
        p.lead {
            (h::badge(task.state.as_str()))
            " " span #task-agent { (task.spec.agent) }
            " · submitted by " (task.owner.principal) " " (h::time(task.created_at))
        }
        div #live hidden data-stream={ "/ui/tasks/" (id) "/stream" } data-after=(task.last_seq)
            data-terminal=(terminal) data-tail=(tail) data-summary={ "/ui/tasks/" (id) "?part=summary" } {}
        (h::live_hint())
        (summary)
        section #log-section aria-labelledby="log-h" {
            h2 #log-h { "Log" }
            form.filters #log-filters method="get" action={ "/ui/tasks/" (id) } aria-label="Filter the log" {
                div {
                    label for="f-level" { "Level at least" }
                    select #f-level name="level" {
                        option value="" selected[q.level.is_empty()] { "any" }
                        @for l in ["debug", "info", "warn", "error"] {
                            option value=(l) selected[q.level == l] { (l) }
                        }
                    }
                }
                div {
                    label for="f-q" { "Text" }
                    input #f-q name="q" value=(q.q) type="search";
                }
                div {
                    label for="f-attempt" { "Attempt" }
                    input #f-attempt name="attempt" value=(attempt_s) inputmode="numeric" size="4";
                }
                div.actions { button type="submit" { "Filter" } }
            }
            div.log-controls #log-controls hidden {
                label { input #follow type="checkbox" checked; " Follow" }
                button #pause type="button" aria-pressed="false" { "Pause" }
                span #pending role="status" aria-live="polite" {}
            }
            p.muted #log-count {
                (story.lines.len()) " lines"
                @if filtered { ", " (shown.len()) " shown" }
                @if pages > 1 { " · page " (log_page) " of " (pages) }
                @if story.cut { " · the log is longer than this page can read; download it" }
                " · " a #download href={ "/ui/tasks/" (id) "/log.txt" } download { "Download" }
            }
            @if pages > 1 {
                nav.pager aria-label="Log pages" {
                    @if log_page > 1 {
                        a href=(page_href(1)) { "« First" }
                        a rel="prev" href=(page_href(log_page - 1)) { "‹ Previous" }
                    }
                    @if log_page < pages {
                        a rel="next" href=(page_href(log_page + 1)) { "Next ›" }
                        a #last-page href=(page_href(pages)) { "Last »" }
                    }
                }
            }
            ol.log #log aria-label="Log lines" tabindex="0" {
                @for l in lines { (line_item(l)) }
            }
            @if lines.is_empty() { p.muted #log-empty { "No log lines" @if filtered { " match" } "." } }
        }
    };
    Ok(h::layout(&format!("Task {id}"), Some(&c), Nav::Tasks, body).into_response())
}

fn line_item(l: &Line) -> Markup {
    html! {
        li #{ "L" (l.seq) } data-seq=(l.seq) data-level=(l.level) data-attempt=(l.attempt) data-stream=(l.stream) {
            a.ln href={ "#L" (l.seq) } aria-label={ "line " (l.seq) } { (l.seq) }
            span.lv { (l.level) }
            span.text { (l.line) }
        }
    }
}

fn summary(task: &Task, story: &Story, waiting: Option<&hive::TaskDiagnosis>) -> Markup {
    let ended = if task.state.is_terminal() {
        story.ended_at.or(Some(task.updated_at))
    } else {
        None
    };
    html! {
        section #summary aria-labelledby="summary-h" data-state=(task.state.as_str()) {
            h2 #summary-h { "Summary" }
            dl.facts {
                dt { "State" } dd #task-state { (h::badge(task.state.as_str())) }
                dt { "Attempt" } dd { (task.attempt) " of " (match task.spec.retry.max_attempts { hive::MaxAttempts::Limited(n) => n.to_string(), hive::MaxAttempts::Unlimited => "unlimited".to_owned() }) }
                dt { "Agent" } dd { (task.spec.agent) }
                dt { "Owner" } dd { (task.owner.tenant) "/" (task.owner.principal) }
                dt { "Node" } dd { @if let Some(n) = task.node { a href={ "/ui/nodes#node-" (n) } { code.id { (n) } } } @else { span.muted { "none yet" } } }
                dt { "Submitted" } dd { (h::time(task.created_at)) }
                dt { "First started" } dd { (h::maybe_time(story.first_start)) }
                dt { "Ended" } dd #task-ended { (h::maybe_time(ended)) }
                @if let Some(s) = story.first_start {
                    dt { "Waited" } dd { (h::duration(task.created_at, s)) }
                }
                @if let (Some(s), Some(e)) = (story.first_start, ended) {
                    dt { "Ran" } dd { (h::duration(s, e)) }
                }
                @if !task.spec.labels.is_empty() {
                    dt { "Labels" } dd { @for (k, v) in &task.spec.labels { code { (k) "=" (v) } " " } }
                }
            }
            @if let Some(d) = waiting {
                div.waiting #waiting role="status" {
                    strong { "Why it is not running: " } (d.message)
                }
            }
            h3 { "Input" }
            (h::json_block(&task.spec.input))
            @if let Some(out) = &task.output {
                h3 { "Output" }
                div #output { (h::json_block(out)) }
            }
            @if let Some(err) = &task.error {
                h3 { @if task.state.is_terminal() { "Error" } @else { "Last attempt's error" } }
                div #task-error.error-box {
                    p { code { (err.code) } ": " (err.message) @if err.non_retryable { " (not retryable)" } }
                    @if let Some(d) = &err.details { (h::json_block(d)) }
                }
            }
            div.attempts aria-labelledby="attempts-h" {
                h2 #attempts-h { "Attempts" }
                @if story.attempts.is_empty() {
                    p.muted { "No attempt has started." }
                } @else {
                    div.scroll {
                        table #attempts {
                            thead { tr { th scope="col" { "#" } th scope="col" { "Node" } th scope="col" { "Started" } th scope="col" { "Ended" } th scope="col" { "Took" } th scope="col" { "Outcome" } th scope="col" { "Log" } } }
                            tbody {
                                @for a in &story.attempts {
                                    tr #{ "attempt-" (a.n) } {
                                        td { a href={ "#attempt-" (a.n) } { (a.n) } }
                                        td { @if let Some(n) = a.node { a href={ "/ui/nodes#node-" (n) } { code.id { (n) } } } }
                                        td { (h::maybe_time(a.started_at)) }
                                        td { (h::maybe_time(a.ended_at)) }
                                        td { @if let (Some(s), Some(e)) = (a.started_at, a.ended_at) { (h::duration(s, e)) } }
                                        td {
                                            (a.outcome)
                                            @if let Some(err) = &a.error {
                                                br; code { (err.code) } ": " (err.message)
                                            }
                                        }
                                        td { a href={ "/ui/tasks/" (task.id) "?attempt=" (a.n) "#log" } { (a.lines) " lines" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/tasks/{id}/log.txt`: the whole log as text.
pub(crate) async fn download(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
) -> UiResult {
    let id = parse_task_id(&id)?;
    let hive = state.hive();
    hive.get_task(&c.p, id).await?;
    let story = story(hive, &c.p, id).await?;
    let mut text = String::new();
    for l in &story.lines {
        text.push_str(&format!(
            "{}\tattempt={}\t{}\t{}\n",
            h::rfc3339(l.at),
            l.attempt,
            l.stream,
            l.line
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"task-{id}.log\""),
            ),
        ],
        text,
    )
        .into_response())
}

/// The stream's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamQuery {
    pub(crate) last_event_id: Option<String>,
}

/// `GET /ui/tasks/{id}/stream`: the task's events as SSE for the page (the
/// session's principal; resumable like the API's).
pub(crate) async fn stream(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
    q: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let after = stream_after(q, &headers)?;
    let id = parse_task_id(&id)?;
    let sub = state.hive().subscribe(&c.p, id, after).await?;
    stream_response(&state, &c, TaskEvents::new(sub), after)
}

/// Where a console stream resumes: `Last-Event-ID`, else `?last_event_id=`,
/// else the start.
pub(crate) fn stream_after(
    q: Result<Query<StreamQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<u64, UiError> {
    let q = query(q)?;
    Ok(sse::resume_from(headers, q.last_event_id.as_deref(), 0)?)
}

/// A console stream of `source` after `after`, counted against the
/// principal's open streams.
pub(crate) fn stream_response(
    state: &ApiState,
    c: &UiCaller,
    source: impl sse::Source,
    after: u64,
) -> Result<Response, UiError> {
    let slot = state.open_stream(&c.p)?;
    Ok(sse::respond(state, slot, sse::events(source, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_come_from_the_line_then_the_stream() {
        assert_eq!(level("stdout", "2026 ERROR disk full"), "error");
        assert_eq!(level("stdout", "[warn] slow"), "warn");
        assert_eq!(level("stdout", "plain"), "info");
        assert_eq!(level("stderr", "plain"), "warn");
        assert_eq!(level("stdout", "debug: x"), "debug");
    }

    #[test]
    fn first_id_at_sorts_before_later_ids() {
        let now = Timestamp::now();
        let first = first_id_at(now);
        let later = TaskId::new();
        assert!(first < later);
        let earlier = first_id_at(Timestamp::from_millis(now.as_millis() - 1000));
        assert!(earlier < first);
    }

    #[test]
    fn times_parse_absolute_and_relative() {
        let t = parse_time("since", "2026-12-04 08:30").unwrap();
        assert_eq!(t.as_millis(), 1_796_373_000_000);
        let ago = parse_time("since", "15m").unwrap();
        assert!(ago.as_millis() < Timestamp::now().as_millis());
        assert!(matches!(
            parse_time("since", "yesterday"),
            Err(UiError::BadRequest(_))
        ));
    }
}
