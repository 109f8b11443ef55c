//! What the bot does with an update: who sent it (the allow-list), whether
//! it may run here (private chat, or an allowed group), the rate limit, then
//! the command through the engine; and the promotion confirmation button.

use std::sync::Arc;
use std::time::Duration;

use hive::auth::{Action, Resource};
use hive::prelude::*;
use hive::registry::{AgentRef, ApiaryError, ExperimentQuery, PromotionRule};
use hive::store::RecordWrite;
use hive::task::EventKind;
use hive::{Scope, TaskQuery, Timestamp, WorkflowId};
use serde_json::json;
use teloxide_core::types::{
    CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, UpdateKind,
};

use super::{AllowedUser, MAX_TEXT, Telegram, stranger};
use crate::api::ApiState;

/// The record kind of a pending promotion confirmation (id: its nonce).
pub const CONFIRM_KIND: &str = "telegram.confirm";
/// How long a confirmation button works.
pub const CONFIRM_TTL: Duration = Duration::from_secs(120);
/// The callback data prefix of a promotion confirmation.
const PROMOTE_PREFIX: &str = "promote:";

/// Escapes text for MarkdownV2.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "_*[]()~`>#+-=|{}.!\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Inline code for MarkdownV2.
pub fn code(s: &str) -> String {
    format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A MarkdownV2 link.
fn link(label: &str, url: &str) -> String {
    format!(
        "[{}]({})",
        esc(label),
        url.replace('\\', "\\\\").replace(')', "\\)")
    )
}

/// Cuts a message to Telegram's 4,096 characters at a line boundary (each
/// line is built with balanced markup, so a cut never breaks one).
pub fn fit(text: String) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text;
    }
    let mut out = String::new();
    let marker = esc("… (cut; open the console for the rest)");
    for line in text.lines() {
        if out.chars().count() + line.chars().count() + marker.chars().count() + 2 > MAX_TEXT {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&marker);
    out
}

const HELP: &str = "Commands:
/status: queue depth, running, failed in the last hour
/tasks [state]: recent tasks
/task <id>: state, attempts, last log lines
/cancel <id>
/workflow <id>
/experiments
/promote <experiment>: asks for confirmation
/audit verify
/subscribe, /unsubscribe: a message when your tasks end";

/// Processes one update (already deduplicated).
pub(crate) async fn process(state: ApiState, tg: Arc<Telegram>, update: Update) {
    match update.kind {
        UpdateKind::Message(m) => message(&state, &tg, m).await,
        UpdateKind::CallbackQuery(q) => callback(&state, &tg, q).await,
        _ => {}
    }
}

/// Who sent a message in `chat`, if the allow-list says they may act there.
async fn sender(
    state: &ApiState,
    tg: &Telegram,
    chat: i64,
    private: bool,
    user: Option<u64>,
) -> Result<AllowedUser, ()> {
    let settings = tg.settings();
    let allowed = user.and_then(|u| settings.users.get(&u));
    let chat_ok = private || settings.groups.contains(&chat);
    match (allowed, chat_ok) {
        (Some(who), true) => Ok(who.clone()),
        _ => {
            let reason = match (allowed, chat_ok) {
                (None, _) => format!(
                    "telegram user {} in chat {chat} is not on the allow-list",
                    user.map_or_else(|| "unknown".into(), |u| u.to_string())
                ),
                _ => format!("telegram chat {chat} is a group that is not allowed"),
            };
            let _ = state
                .hive()
                .deny(
                    &stranger(&user.map_or_else(|| "unknown".into(), |u| u.to_string())),
                    Action::ChatCommand,
                    &Resource::System,
                    &reason,
                )
                .await;
            tg.send(
                chat,
                esc("Sorry, I can't take commands from you here. Ask an operator to add your Telegram id to the allow-list."),
            )
            .await;
            Err(())
        }
    }
}

async fn message(state: &ApiState, tg: &Telegram, m: Message) {
    let chat = m.chat.id.0;
    let Some(text) = m.text() else {
        return;
    };
    if tg.limiter.check_key(&chat).is_err() {
        tracing::info!(chat, "telegram: chat over its rate limit; message ignored");
        return;
    }
    let user = m.from.as_ref().map(|u| u.id.0);
    let Ok(who) = sender(state, tg, chat, m.chat.is_private(), user).await else {
        return;
    };
    if text.chars().count() > MAX_TEXT {
        tg.send(
            chat,
            esc("That message is too long (4,096 characters at most)."),
        )
        .await;
        return;
    }
    let reply = run(state, tg, &who, chat, user.unwrap_or(0), text).await;
    match reply {
        Reply::Text(t) => {
            tg.send(chat, t).await;
        }
        Reply::Confirm(t, markup) => {
            tg.send_with(chat, t, Some(markup)).await;
        }
    }
}

enum Reply {
    Text(String),
    Confirm(String, InlineKeyboardMarkup),
}

/// A refusal or failure, politely (never a trace).
fn failure(e: &hive::Error) -> String {
    match e {
        hive::Error::NotFound { .. } => esc("Not found (or not yours to see)."),
        hive::Error::Forbidden { reason, .. } => esc(&format!(
            "Refused: {reason}. (The refusal is in the audit trail.)"
        )),
        hive::Error::InvalidArgument { message } => esc(&format!("That does not work: {message}")),
        hive::Error::AlreadyTerminal { .. } => esc("It has already ended."),
        other => {
            tracing::warn!(error = %other, "telegram: a command failed");
            esc(&format!("That failed ({}). Try again later.", other.kind()))
        }
    }
}

fn console(tg: &Telegram, path: &str) -> String {
    match &tg.settings().console_url {
        Some(base) => format!(
            "\n{}",
            link("open in the console", &format!("{base}{path}"))
        ),
        None => String::new(),
    }
}

async fn run(
    state: &ApiState,
    tg: &Telegram,
    who: &AllowedUser,
    chat: i64,
    user: u64,
    text: &str,
) -> Reply {
    let p = who.principal();
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or("");
    // `/cmd@botname` in groups.
    let command = command.split('@').next().unwrap_or(command);
    let arg = words.next();
    let result = match (command, arg) {
        ("/status", _) => status(state, &p).await,
        ("/tasks", state_arg) => tasks(state, tg, &p, state_arg).await,
        ("/task", Some(id)) => task(state, tg, &p, id).await,
        ("/cancel", Some(id)) => cancel(state, &p, id).await,
        ("/workflow", Some(id)) => workflow(state, tg, &p, id).await,
        ("/experiments", _) => experiments(state, &p).await,
        ("/promote", Some(r)) => return promote(state, &p, chat, user, r).await,
        ("/audit", Some("verify")) => audit_verify(state, &p).await,
        ("/subscribe", _) => super::notify::subscribe(state, &p, who, chat, true).await,
        ("/unsubscribe", _) => super::notify::subscribe(state, &p, who, chat, false).await,
        _ => Ok(esc(HELP)),
    };
    Reply::Text(result.unwrap_or_else(|e| failure(&e)))
}

/// Tasks matching `query`, counted up to 10,000 (`true` when there are more).
async fn count(
    state: &ApiState,
    p: &Principal,
    mut query: TaskQuery,
) -> hive::Result<(usize, bool)> {
    query.limit = Some(TaskQuery::MAX_LIMIT);
    let mut n = 0;
    for _ in 0..10 {
        let page = state.hive().list_tasks(p, &query).await?;
        n += page.items.len();
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok((n, false)),
        }
    }
    Ok((n, true))
}

fn shown((n, more): (usize, bool)) -> String {
    if more { format!("{n}+") } else { n.to_string() }
}

async fn status(state: &ApiState, p: &Principal) -> hive::Result<String> {
    let q = |states: Vec<TaskState>| TaskQuery {
        states,
        ..TaskQuery::default()
    };
    let queued = count(state, p, q(vec![TaskState::Pending, TaskState::Scheduled])).await?;
    let running = count(state, p, q(vec![TaskState::Running])).await?;
    let hour_ago = Timestamp::from_millis(Timestamp::now().as_millis() - 3_600_000);
    let mut failed_q = q(vec![TaskState::Failed]);
    failed_q.after = Some(crate::ui::first_id_at(Timestamp::from_millis(
        hour_ago.as_millis() - 23 * 3_600_000,
    )));
    failed_q.limit = Some(TaskQuery::MAX_LIMIT);
    let mut failed = 0;
    let mut query = failed_q;
    loop {
        let page = state.hive().list_tasks(p, &query).await?;
        failed += page
            .items
            .iter()
            .filter(|t| t.updated_at >= hour_ago)
            .count();
        match page.next {
            Some(n) => query.after = Some(n),
            None => break,
        }
    }
    Ok(format!(
        "*{}*\n{}\n{}\n{}",
        esc(&format!("Tenant {}", p.tenant)),
        esc(&format!("Queued: {}", shown(queued))),
        esc(&format!("Running: {}", shown(running))),
        esc(&format!("Failed in the last hour: {failed}")),
    ))
}

async fn tasks(
    state: &ApiState,
    tg: &Telegram,
    p: &Principal,
    state_arg: Option<&str>,
) -> hive::Result<String> {
    let mut query = TaskQuery {
        limit: Some(TaskQuery::MAX_LIMIT),
        after: Some(crate::ui::first_id_at(Timestamp::from_millis(
            Timestamp::now().as_millis() - 24 * 3_600_000,
        ))),
        ..TaskQuery::default()
    };
    if let Some(s) = state_arg {
        let parsed: TaskState = s.parse().map_err(|_| hive::Error::InvalidArgument {
            message: format!("{s:?} is not a state (pending, running, succeeded, failed, …)"),
        })?;
        query.states = vec![parsed];
    }
    let mut last = Vec::new();
    for _ in 0..10 {
        let page = state.hive().list_tasks(p, &query).await?;
        last.extend(page.items);
        if last.len() > 10 {
            last.drain(..last.len() - 10);
        }
        match page.next {
            Some(n) => query.after = Some(n),
            None => break,
        }
    }
    if last.is_empty() {
        return Ok(esc("No tasks in the last 24 hours."));
    }
    let mut out = format!("*{}*\n", esc("The latest tasks (24 h)"));
    for t in last.iter().rev() {
        out.push_str(&format!(
            "{} {} {}\n",
            code(&t.id.to_string()),
            esc(t.state.as_str()),
            esc(t.spec.agent.as_str()),
        ));
    }
    out.push_str(&console(tg, "/ui/tasks"));
    Ok(out)
}

fn parse_task(id: &str) -> hive::Result<TaskId> {
    id.parse().map_err(|_| hive::Error::InvalidArgument {
        message: format!("{id:?} is not a task id"),
    })
}

async fn task(state: &ApiState, tg: &Telegram, p: &Principal, id: &str) -> hive::Result<String> {
    let id = parse_task(id)?;
    let t = state.hive().get_task(p, id).await?;
    let mut lines: Vec<String> = Vec::new();
    let mut cursor = 0;
    while cursor < 100_000 {
        let batch = state.hive().read_events(p, id, cursor, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            cursor = e.seq;
            if let EventKind::Log { line, .. } = e.kind {
                lines.push(line);
                if lines.len() > 5 {
                    lines.remove(0);
                }
            }
        }
    }
    let mut out = format!(
        "*{}* {}\n{}\n",
        esc("Task"),
        code(&id.to_string()),
        esc(&format!(
            "{} · agent {} · attempt {}",
            t.state.as_str(),
            t.spec.agent,
            t.attempt
        ))
    );
    if let Some(e) = &t.error {
        out.push_str(&format!(
            "{} {}\n",
            esc("Error:"),
            code(&format!("{}: {}", e.code, e.message))
        ));
    }
    if !lines.is_empty() {
        out.push_str(&format!("{}\n", esc("Last log lines:")));
        for l in &lines {
            let l: String = l.chars().take(300).collect();
            out.push_str(&format!("{}\n", code(&l)));
        }
    }
    out.push_str(&console(tg, &format!("/ui/tasks/{id}")));
    Ok(out)
}

async fn cancel(state: &ApiState, p: &Principal, id: &str) -> hive::Result<String> {
    let id = parse_task(id)?;
    state
        .hive()
        .cancel(p, id, format!("cancelled from Telegram by {}", p.id))
        .await?;
    Ok(format!("{} {}", esc("Cancelled"), code(&id.to_string())))
}

async fn workflow(
    state: &ApiState,
    tg: &Telegram,
    p: &Principal,
    id: &str,
) -> hive::Result<String> {
    let wid: WorkflowId = id.parse().map_err(|_| hive::Error::InvalidArgument {
        message: format!("{id:?} is not a workflow id"),
    })?;
    let w = state.hive().get_workflow(p, wid).await?;
    let mut out = format!(
        "*{}* {}\n",
        esc(&format!("Workflow {}", w.name)),
        esc(w.state.as_str())
    );
    for s in &w.steps {
        out.push_str(&format!(
            "{} {}{}\n",
            code(&s.id),
            esc(s.state.as_str()),
            if s.tasks.len() > 1 {
                esc(&format!(" ({} tasks)", s.tasks.len()))
            } else {
                String::new()
            }
        ));
    }
    out.push_str(&console(tg, &format!("/ui/workflows/{wid}")));
    Ok(out)
}

async fn experiments(state: &ApiState, p: &Principal) -> hive::Result<String> {
    let Some(registry) = state.registry() else {
        return Ok(esc("This Honeycomb has no APIary registry."));
    };
    let list = registry
        .experiments(p, &ExperimentQuery::default())
        .await
        .map_err(hive::Error::from)?;
    if list.is_empty() {
        return Ok(esc("No experiments."));
    }
    let thresholds = registry.promotion_thresholds();
    let mut out = format!("*{}*\n", esc("Experiments"));
    for e in list.iter().take(20) {
        let metrics: Vec<String> = e
            .metrics
            .iter()
            .map(|(k, v)| match thresholds.get(k) {
                Some(min) => format!("{k}={v} (min {min})"),
                None => format!("{k}={v}"),
            })
            .collect();
        out.push_str(&format!(
            "{} {} {}\n",
            code(&e.reference.to_string()),
            esc(e.status.as_str()),
            esc(&metrics.join(", "))
        ));
    }
    Ok(out)
}

async fn audit_verify(state: &ApiState, p: &Principal) -> hive::Result<String> {
    let report = state.audit().verify(state.hive(), p, &p.tenant).await?;
    Ok(if report.ok {
        esc(&format!(
            "Audit chain intact: {} events verified.",
            report.checked
        ))
    } else {
        format!(
            "*{}*\n{}",
            esc(&format!(
                "AUDIT CHAIN BROKEN at seq {}",
                report.first_broken.unwrap_or(0)
            )),
            esc(report.reason.as_deref().unwrap_or(""))
        )
    })
}

/// `/promote <experiment>`: asks for confirmation with a button whose
/// callback data carries a one-time nonce (stored, so any process can check
/// it), valid for the same user for two minutes.
async fn promote(state: &ApiState, p: &Principal, chat: i64, user: u64, r: &str) -> Reply {
    let text = |s: String| Reply::Text(s);
    let reference: AgentRef = match r.parse() {
        Ok(r) => r,
        Err(e) => return text(esc(&format!("{r:?} is not an agent reference: {e}"))),
    };
    if state.registry().is_none() {
        return text(esc("This Honeycomb has no APIary registry."));
    }
    let resource = Resource::Named {
        kind: "experiment",
        id: reference.to_string(),
        tenant: p.tenant.clone(),
    };
    if !p.scopes.contains(Scope::ExperimentPromote) {
        let e = state
            .hive()
            .deny(
                p,
                Action::PromoteExperiment,
                &resource,
                "missing scope experiment:promote",
            )
            .await;
        return text(failure(&e));
    }
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        return text(esc("No randomness for a confirmation; try again."));
    }
    let nonce = hex::encode(bytes);
    let now = Timestamp::now();
    let write = RecordWrite {
        kind: CONFIRM_KIND.into(),
        id: nonce.clone(),
        tenant: p.tenant.clone(),
        expected_version: 0,
        status: "pending".into(),
        body: json!({
            "user": user,
            "chat": chat,
            "reference": reference.to_string(),
            "expires_ms": now.as_millis() + CONFIRM_TTL.as_millis() as i64,
        }),
        events: Vec::new(),
        now,
    };
    if let Err(e) = state.hive().store().write_record(write).await {
        return text(failure(&e));
    }
    let markup = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback(
        format!("Promote {}", reference.name),
        format!("{PROMOTE_PREFIX}{nonce}"),
    )]]);
    Reply::Confirm(
        esc(&format!(
            "Promote {reference} to production? Press the button within {} s.",
            CONFIRM_TTL.as_secs()
        )),
        markup,
    )
}

/// A button press: only a promotion confirmation, from the user who asked,
/// within its time, once.
async fn callback(state: &ApiState, tg: &Telegram, q: CallbackQuery) {
    let user = q.from.id.0;
    let Some(chat) = q.message.as_ref().map(|m| m.chat().id.0) else {
        tg.answer_callback(q.id, "This button has expired.").await;
        return;
    };
    if tg.limiter.check_key(&chat).is_err() {
        return;
    }
    let Some(nonce) = q
        .data
        .as_deref()
        .and_then(|d| d.strip_prefix(PROMOTE_PREFIX))
    else {
        tg.answer_callback(q.id, "Unknown button.").await;
        return;
    };
    let outcome = confirm(state, tg, chat, user, nonce).await;
    let (answer, message) = match outcome {
        Ok(m) => ("Done.", m),
        Err(m) => ("Not done.", m),
    };
    tg.answer_callback(q.id, answer).await;
    tg.send(chat, message).await;
}

async fn confirm(
    state: &ApiState,
    tg: &Telegram,
    chat: i64,
    user: u64,
    nonce: &str,
) -> Result<String, String> {
    let store = state.hive().store();
    let record = store
        .get_record(CONFIRM_KIND, nonce)
        .await
        .map_err(|e| failure(&e))?
        .ok_or_else(|| esc("This confirmation is unknown or expired."))?;
    let body = &record.body;
    let from_user = body["user"].as_u64() == Some(user) && body["chat"].as_i64() == Some(chat);
    let who = tg.settings().users.get(&user).cloned();
    let Some(who) = who.filter(|_| from_user) else {
        let p = tg
            .settings()
            .users
            .get(&user)
            .map(AllowedUser::principal)
            .unwrap_or_else(|| stranger(&user.to_string()));
        let _ = state
            .hive()
            .deny(
                &p,
                Action::PromoteExperiment,
                &Resource::System,
                &format!("telegram user {user} pressed another user's promotion confirmation"),
            )
            .await;
        return Err(esc("Only the person who asked can confirm this promotion."));
    };
    if record.status != "pending" {
        return Err(esc("This confirmation was used already."));
    }
    let expired = body["expires_ms"].as_i64().unwrap_or(0) < Timestamp::now().as_millis();
    // Use it up (compare-and-set: one press wins, here or in another process).
    let used = RecordWrite {
        kind: CONFIRM_KIND.into(),
        id: nonce.into(),
        tenant: record.tenant.clone(),
        expected_version: record.version,
        status: if expired { "expired" } else { "used" }.into(),
        body: body.clone(),
        events: Vec::new(),
        now: Timestamp::now(),
    };
    match store.write_record(used).await {
        Ok(_) => {}
        Err(hive::Error::Conflict { .. }) => {
            return Err(esc("This confirmation was used already."));
        }
        Err(e) => return Err(failure(&e)),
    }
    if expired {
        return Err(esc("This confirmation has expired; send /promote again."));
    }
    let Some(registry) = state.registry() else {
        return Err(esc("This Honeycomb has no APIary registry."));
    };
    let reference: AgentRef = body["reference"]
        .as_str()
        .unwrap_or("")
        .parse()
        .map_err(|_| esc("The confirmation names no agent."))?;
    match registry.promote(&who.principal(), &reference).await {
        Ok(p) => Ok(format!(
            "{} {} {}",
            esc("Promoted:"),
            code(&p.production.reference.to_string()),
            console(tg, "/ui/experiments")
        )),
        Err(ApiaryError::PromotionRefused { rule, reason, .. })
            if rule != PromotionRule::CallerScope =>
        {
            Err(format!(
                "{} {}\n{}",
                esc("Refused by the rule"),
                code(&rule.to_string()),
                esc(&reason)
            ))
        }
        Err(e) => Err(failure(&hive::Error::from(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_escaped_and_messages_fit() {
        assert_eq!(esc("a_b*c.d!"), "a\\_b\\*c\\.d\\!");
        assert_eq!(code("x`y\\"), "`x\\`y\\\\`");
        let long = (0..2000)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let cut = fit(long);
        assert!(cut.chars().count() <= MAX_TEXT);
        assert!(cut.ends_with(&esc("… (cut; open the console for the rest)")));
    }
}
