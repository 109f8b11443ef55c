//! `/subscribe`: a message to the chat when one of the user's tasks ends,
//! delivered through a named consumer of the tenant's terminal events with
//! acknowledgement — at least once, deduplicated per (chat, task) by a
//! record written before sending, none lost across a restart (what was not
//! acknowledged is delivered by the next process to run).

use std::sync::Arc;
use std::time::Duration;

use hive::Timestamp;
use hive::prelude::*;
use hive::store::{RecordQuery, RecordWrite};
use hive::task::EventKind;
use serde_json::json;

use super::commands::{code, esc};
use super::{AllowedUser, Telegram};
use crate::api::ApiState;

/// The record kind of a chat's subscription (id: the chat id).
pub const SUB_KIND: &str = "telegram.sub";
/// The record kind of a delivered notification (id: `<chat>:<task>`).
pub const NOTE_KIND: &str = "telegram.note";
/// How often the delivery looks for new terminal events when idle.
const IDLE: Duration = Duration::from_millis(500);

fn consumer(chat: i64) -> String {
    format!("telegram-{chat}")
}

/// `/subscribe` (`on`) and `/unsubscribe`.
pub(crate) async fn subscribe(
    state: &ApiState,
    p: &Principal,
    who: &AllowedUser,
    chat: i64,
    on: bool,
) -> hive::Result<String> {
    // Reading the feed is what delivery does: check it now, through the
    // engine (a principal without task:read is refused and audited here).
    state.hive().unacked_terminal(p, &consumer(chat), 1).await?;
    let store = state.hive().store();
    let id = chat.to_string();
    let existing = store.get_record(SUB_KIND, &id).await?;
    let body = json!({
        "chat": chat,
        "tenant": who.tenant.as_str(),
        "principal": who.principal,
        "role": super::settings_role(who),
        "since_ms": Timestamp::now().as_millis(),
    });
    let write = RecordWrite {
        kind: SUB_KIND.into(),
        id,
        tenant: p.tenant.clone(),
        expected_version: existing.as_ref().map_or(0, |r| r.version),
        status: if on { "active" } else { "off" }.into(),
        body,
        events: Vec::new(),
        now: Timestamp::now(),
    };
    store.write_record(write).await?;
    Ok(esc(if on {
        "Subscribed: I will write here when one of your tasks ends."
    } else {
        "Unsubscribed."
    }))
}

/// Delivers notifications until the service stops.
pub(crate) async fn deliver(state: ApiState, tg: Arc<Telegram>) {
    let stop = state.stop().clone();
    loop {
        let delivered = match round(&state, &tg).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %tg.settings().redact(&e.to_string()), "telegram: delivery round failed");
                0
            }
        };
        if delivered > 0 {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(IDLE) => {}
        }
    }
}

/// One pass over the active subscriptions; the number of events handled.
pub(crate) async fn round(state: &ApiState, tg: &Telegram) -> hive::Result<usize> {
    let store = state.hive().store();
    let subs = store
        .list_records(
            SUB_KIND,
            &RecordQuery {
                statuses: vec!["active".into()],
                limit: Some(1000),
                ..RecordQuery::default()
            },
        )
        .await?;
    let mut handled = 0;
    for sub in subs {
        let b = &sub.body;
        let (Some(chat), Some(tenant), Some(principal)) = (
            b["chat"].as_i64(),
            b["tenant"].as_str(),
            b["principal"].as_str(),
        ) else {
            continue;
        };
        // The subscriber as the allow-list says now (removed: no delivery).
        let Some(who) = tg
            .settings()
            .users
            .values()
            .find(|u| u.tenant.as_str() == tenant && u.principal == principal)
        else {
            continue;
        };
        let p = who.principal();
        let since = b["since_ms"].as_i64().unwrap_or(0);
        let name = consumer(chat);
        let events = state.hive().unacked_terminal(&p, &name, 100).await?;
        for fe in events {
            let e = fe.event;
            if e.at.as_millis() >= since {
                let task = state.hive().get_task(&p, e.task).await?;
                if task.owner.principal.as_str() == principal {
                    notify(state, tg, chat, &task, &e.kind).await?;
                }
            }
            state.hive().ack_terminal(&p, &name, &[e.task]).await?;
            handled += 1;
        }
    }
    Ok(handled)
}

/// Sends one notification unless it was sent before: a record per (chat,
/// task) is written first (`sending`), then the message, then `sent`. A
/// process that stopped between the two sends again (at least once).
async fn notify(
    state: &ApiState,
    tg: &Telegram,
    chat: i64,
    task: &Task,
    kind: &EventKind,
) -> hive::Result<()> {
    let store = state.hive().store();
    let id = format!("{chat}:{}", task.id);
    let version = match store.get_record(NOTE_KIND, &id).await? {
        Some(r) if r.status == "sent" => return Ok(()),
        Some(r) => r.version,
        None => {
            let write = RecordWrite {
                kind: NOTE_KIND.into(),
                id: id.clone(),
                tenant: task.owner.tenant.clone(),
                expected_version: 0,
                status: "sending".into(),
                body: json!({ "chat": chat, "task": task.id }),
                events: Vec::new(),
                now: Timestamp::now(),
            };
            match store.write_record(write).await {
                Ok(w) => w.version,
                // Another process is sending it.
                Err(hive::Error::Conflict { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let mut text = format!(
        "{} {} {}",
        esc("Task"),
        code(&task.id.to_string()),
        esc(&format!("({}) ended: {}", task.spec.agent, kind.name()))
    );
    if let Some(e) = &task.error {
        text.push_str(&format!(
            "\n{}",
            code(&format!("{}: {}", e.code, e.message))
        ));
    }
    if !tg.send(chat, text).await {
        return Err(hive::Error::BackendUnavailable {
            message: "telegram: sendMessage failed; the notification is retried".into(),
            source: None,
        });
    }
    let sent = RecordWrite {
        kind: NOTE_KIND.into(),
        id,
        tenant: task.owner.tenant.clone(),
        expected_version: version,
        status: "sent".into(),
        body: json!({ "chat": chat, "task": task.id }),
        events: Vec::new(),
        now: Timestamp::now(),
    };
    match store.write_record(sent).await {
        Ok(_) | Err(hive::Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
