//! The Telegram route against a fake Bot API on loopback (it speaks the real
//! protocol: `POST /bot{token}/{method}` answering `{"ok":true,"result":…}`
//! and records every call) and real PostgreSQL (under `CI=true` a missing
//! server fails): the webhook secret, replayed updates (also through a
//! second Honeycomb on the same store), the allow-list for users and groups,
//! refusals audited, every command, the promotion confirmation (another
//! user's press, an expired one, a second press), notifications delivered
//! once across a restart, the rate and size limits, setWebhook, and the bot
//! token kept out of errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use common::Server;
use hive::prelude::*;
use hive::principal::Role;
use hive::registry::AgentRegistry;
use hive::store::RecordWrite;
use hive::worker::handler_fn;
use hive_store::testing::{server_url, unique_name};
use honeycomb::api::{ApiLimits, ApiState};
use honeycomb::telegram::{self, AllowedUser, Telegram, TelegramSettings};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "4242:TEST-secret-bot-token-xyz";
const SECRET: &str = "hook-secret_1";
const ALICE: u64 = 1001; // operator
const UMA: u64 = 1002; // user
const ROOT: u64 = 1003; // admin
const GROUP: i64 = -100_500;

/// The fake Bot API: every call, in order.
#[derive(Clone, Default)]
struct FakeBot {
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeBot {
    async fn start() -> (FakeBot, String) {
        let bot = FakeBot::default();
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::post(answer))
            .with_state(bot.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (bot, format!("http://{addr}"))
    }

    fn sent(&self, chat: i64) -> Vec<String> {
        self.calls
            .lock()
            .iter()
            .filter(|(m, b)| m == "sendmessage" && b["chat_id"].as_i64() == Some(chat))
            .map(|(_, b)| b["text"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls
            .lock()
            .iter()
            .filter(|(m, _)| *m == method.to_ascii_lowercase())
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits until chat `chat` got `n` messages, and returns them.
    async fn wait_sent(&self, chat: i64, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent = self.sent(chat);
            if sent.len() >= n {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "chat {chat} got {} of {n} messages: {sent:?}",
                sent.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A request body as JSON: the Bot API takes JSON, and multipart form data
/// (what a client sends for methods that may carry a file, `setWebhook`
/// among them; each part's value is kept, parsed as JSON when it is).
fn body_json(headers: &axum::http::HeaderMap, body: &[u8]) -> Value {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = ct.split("boundary=").nth(1) else {
        return serde_json::from_slice(body).expect("a JSON body");
    };
    let text = String::from_utf8_lossy(body);
    let mut out = serde_json::Map::new();
    for part in text.split(&format!("--{}", boundary.trim_matches('"'))) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|n| n.split('"').next())
        else {
            continue;
        };
        let value = value.trim_end_matches("\r\n");
        let parsed = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        out.insert(name.to_owned(), parsed);
    }
    Value::Object(out)
}

async fn answer(
    State(bot): State<FakeBot>,
    Path((path_bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Json<Value> {
    let body = body_json(&headers, &body);
    // Method names are case-insensitive (teloxide sends `SendMessage`).
    let method = method.to_ascii_lowercase();
    assert_eq!(path_bot, format!("bot{TOKEN}"), "the token is in the path");
    bot.calls.lock().push((method.clone(), body.clone()));
    let result = match method.as_str() {
        "sendmessage" => json!({
            "message_id": 7,
            "date": 1_800_000_000,
            "chat": {"id": body["chat_id"], "type": "private", "first_name": "x"},
            "text": body["text"],
        }),
        _ => json!(true),
    };
    Json(json!({"ok": true, "result": result}))
}

fn settings(api: &str) -> TelegramSettings {
    let user = |tenant: &str, principal: &str, role| AllowedUser {
        tenant: tenant.into(),
        principal: principal.into(),
        role,
    };
    TelegramSettings {
        bot_token: TOKEN.into(),
        webhook_secret: SECRET.into(),
        api_url: api.parse().unwrap(),
        webhook_url: Some("https://hc.example/telegram/webhook".parse().unwrap()),
        users: BTreeMap::from([
            (ALICE, user("acme", "alice", Role::Operator)),
            (UMA, user("acme", "uma", Role::User)),
            (ROOT, user("acme", "root", Role::Admin)),
        ]),
        groups: BTreeSet::from([GROUP]),
        source_ranges: Vec::new(),
        console_url: Some("https://hc.example".into()),
    }
}

/// A Honeycomb on `url` (with `registry`) with the Telegram route on.
async fn honeycomb(url: &str, api: &str, registry: Option<Arc<dyn AgentRegistry>>) -> Server {
    honeycomb_on(hive::open(url).await.unwrap(), api, registry).await
}

/// [`honeycomb`] over an open engine.
async fn honeycomb_on(hive: Hive, api: &str, registry: Option<Arc<dyn AgentRegistry>>) -> Server {
    honeycomb_with(hive, settings(api), registry).await
}

/// [`honeycomb_on`] with these settings.
async fn honeycomb_with(
    hive: Hive,
    settings: TelegramSettings,
    registry: Option<Arc<dyn AgentRegistry>>,
) -> Server {
    let state = ApiState::with_registry(
        hive.clone(),
        ApiLimits::default(),
        CancellationToken::new(),
        registry,
    );
    telegram::start(&state, Arc::new(Telegram::new(settings).unwrap()))
        .await
        .expect("the route starts and registers its webhook");
    Server::with_state(hive, state).await
}

fn pg() -> Option<String> {
    server_url("HIVE_TEST_POSTGRES_URL").map(|base| format!("{base}?schema={}", unique_name("tg")))
}

static NEXT_UPDATE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

fn next_id() -> u32 {
    NEXT_UPDATE.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn message(update: u32, chat: i64, user: u64, text: &str) -> Value {
    let chat_json = if chat < 0 {
        json!({"id": chat, "type": "supergroup", "title": "ops"})
    } else {
        json!({"id": chat, "type": "private", "first_name": "x"})
    };
    json!({
        "update_id": update,
        "message": {
            "message_id": update,
            "date": 1_800_000_000,
            "chat": chat_json,
            "from": {"id": user, "is_bot": false, "first_name": "x"},
            "text": text,
        }
    })
}

fn press(update: u32, chat: i64, user: u64, data: &str) -> Value {
    json!({
        "update_id": update,
        "callback_query": {
            "id": format!("cb{update}"),
            "from": {"id": user, "is_bot": false, "first_name": "x"},
            "chat_instance": "ci",
            "data": data,
            "message": {
                "message_id": 9,
                "date": 1_800_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "x"},
                "text": "Promote?",
            }
        }
    })
}

async fn post(s: &Server, secret: Option<&str>, update: &Value) -> StatusCode {
    let mut r = s.http.post(s.url("/telegram/webhook")).json(update);
    if let Some(secret) = secret {
        r = r.header("x-telegram-bot-api-secret-token", secret);
    }
    r.send().await.unwrap().status()
}

/// Sends `text` as `user` in their private chat and returns the reply.
async fn say(s: &Server, bot: &FakeBot, user: u64, text: &str) -> String {
    let chat = user as i64;
    let before = bot.sent(chat).len();
    let status = post(s, Some(SECRET), &message(next_id(), chat, user, text)).await;
    assert_eq!(status, StatusCode::OK);
    bot.wait_sent(chat, before + 1).await[before].clone()
}

async fn denials(s: &Server, tenant: &str, action: &str) -> Vec<hive::iam::AuditEvent> {
    s.state
        .audit()
        .list(
            &s.hive,
            &Principal::system(),
            &AuditQuery {
                tenant: Some(tenant.into()),
                action: Some(action.into()),
                outcome: Some(hive::AuditOutcome::Denied),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_checked_updates_run_once_and_strangers_are_refused() {
    let Some(url) = pg() else { return };
    let (bot, api) = FakeBot::start().await;
    let a = honeycomb(&url, &api, None).await;

    // setWebhook was called with the secret and the update kinds.
    let hooks = bot.calls("setWebhook");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["url"], "https://hc.example/telegram/webhook");
    assert_eq!(hooks[0]["secret_token"], SECRET);
    assert_eq!(
        hooks[0]["allowed_updates"],
        json!(["message", "callback_query"])
    );

    // Missing or wrong secret: 401, audited with the source, nothing runs.
    let update = message(next_id(), ALICE as i64, ALICE, "/status");
    assert_eq!(post(&a, None, &update).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(&a, Some("wrong"), &update).await,
        StatusCode::UNAUTHORIZED
    );
    let refused = denials(&a, "_system", "chat.command").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].details["reason"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bot.sent(ALICE as i64).is_empty(), "nothing ran");

    // The right secret: answered at once, the command runs once — also when
    // Telegram redelivers, to this process or to another on the same store.
    assert_eq!(post(&a, Some(SECRET), &update).await, StatusCode::OK);
    let first = bot.wait_sent(ALICE as i64, 1).await;
    assert!(first[0].contains("Queued"), "{first:?}");
    assert_eq!(post(&a, Some(SECRET), &update).await, StatusCode::OK);
    let (bot_b, api_b) = (bot.clone(), api.clone());
    let b = honeycomb(&url, &api_b, None).await;
    assert_eq!(post(&b, Some(SECRET), &update).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bot_b.sent(ALICE as i64).len(),
        1,
        "a replayed update runs nothing"
    );

    // A stranger: one polite refusal, audited.
    let stranger = 999_999u64;
    let reply = say(
        &a,
        &bot,
        stranger,
        "/cancel 01a24048-5333-74c7-af99-f606a0978400",
    )
    .await;
    assert!(reply.contains("allow\\-list"), "{reply}");
    let refused = denials(&a, "_system", "chat.command").await;
    assert!(
        refused
            .iter()
            .any(|e| e.actor.as_str() == "telegram:999999")
    );

    // Groups: only an allowed group, and then only allowed senders.
    let status = post(
        &a,
        Some(SECRET),
        &message(next_id(), -777, ALICE, "/status"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sent = bot.wait_sent(-777, 1).await;
    assert!(
        sent[0].contains("allow\\-list") || sent[0].contains("Sorry"),
        "{sent:?}"
    );
    post(
        &a,
        Some(SECRET),
        &message(next_id(), GROUP, ALICE, "/status@hivebot"),
    )
    .await;
    assert!(bot.wait_sent(GROUP, 1).await[0].contains("Queued"));
    post(
        &a,
        Some(SECRET),
        &message(next_id(), GROUP, stranger, "/status"),
    )
    .await;
    assert!(bot.wait_sent(GROUP, 2).await[1].contains("Sorry"));

    // Unknown commands get help; a message over 4,096 characters is refused.
    assert!(
        say(&a, &bot, ALICE, "/frobnicate")
            .await
            .contains("Commands")
    );
    let long = format!("/status {}", "x".repeat(5000));
    assert!(say(&a, &bot, ALICE, &long).await.contains("too long"));

    // Bad bodies: 400, nothing recorded.
    let r = a
        .http
        .post(a.url("/telegram/webhook"))
        .header("x-telegram-bot-api-secret-token", SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_ranges_is_refused_and_audited() {
    let Some(url) = pg() else { return };
    let (bot, api) = FakeBot::start().await;
    let mut only_telegram = settings(&api);
    only_telegram.source_ranges = vec!["149.154.160.0/20".parse().unwrap()];
    let s = honeycomb_with(hive::open(&url).await.unwrap(), only_telegram, None).await;
    let update = message(next_id(), ALICE as i64, ALICE, "/status");
    assert_eq!(post(&s, Some(SECRET), &update).await, StatusCode::FORBIDDEN);
    let refused = denials(&s, "_system", "chat.command").await;
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].details["reason"]
            .as_str()
            .unwrap()
            .contains("outside telegram_source_ranges")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bot.sent(ALICE as i64).is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_over_its_rate_limit_is_not_answered() {
    let Some(url) = pg() else { return };
    let (bot, api) = FakeBot::start().await;
    let s = honeycomb(&url, &api, None).await;
    for _ in 0..(telegram::RATE_PER_MINUTE + 10) {
        let status = post(
            &s,
            Some(SECRET),
            &message(next_id(), UMA as i64, UMA, "/help"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "answered at once, whatever happens next"
        );
    }
    bot.wait_sent(UMA as i64, telegram::RATE_PER_MINUTE as usize)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bot.sent(UMA as i64).len(),
        telegram::RATE_PER_MINUTE as usize
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_runs_through_the_engine() {
    let Some(url) = pg() else { return };
    let (bot, api) = FakeBot::start().await;
    let s = honeycomb(&url, &api, None).await;
    let alice = Principal::operator("acme", "alice");
    let uma = Principal::user("acme", "uma");
    let worker = s
        .hive
        .start_worker(
            &Principal::system(),
            WorkerOptions::new("tg-node").system().capacity(4).handler(
                "echo",
                handler_fn(|ctx| async move {
                    ctx.log("stdout", "INFO echoing")
                        .await
                        .map_err(|e| TaskError::new("log", e.to_string()))?;
                    if ctx.input()["fail"] == true {
                        return Err(TaskError::new("boom", "asked to fail").non_retryable());
                    }
                    Ok(ctx.input().clone())
                }),
            ),
        )
        .await
        .unwrap();
    let done = s
        .hive
        .submit(&alice, TaskSpec::new("echo", json!({"n": 1})))
        .await
        .unwrap()
        .id;
    let failed = s
        .hive
        .submit(&alice, TaskSpec::new("echo", json!({"fail": true})))
        .await
        .unwrap()
        .id;
    for id in [done, failed] {
        s.hive
            .wait_timeout(&alice, id, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let waiting = s
        .hive
        .submit(&alice, TaskSpec::new("nobody", json!({})))
        .await
        .unwrap()
        .id;
    let umas = s
        .hive
        .submit(&uma, TaskSpec::new("nobody", json!({})))
        .await
        .unwrap()
        .id;

    let status = say(&s, &bot, ALICE, "/status").await;
    assert!(status.contains("Queued: 2"), "{status}");
    assert!(status.contains("Failed in the last hour: 1"), "{status}");
    let list = say(&s, &bot, ALICE, "/tasks").await;
    assert!(
        list.contains(&done.to_string()) && list.contains(&waiting.to_string()),
        "{list}"
    );
    let list = say(&s, &bot, ALICE, "/tasks failed").await;
    assert!(
        list.contains(&failed.to_string()) && !list.contains(&done.to_string()),
        "{list}"
    );
    assert!(
        say(&s, &bot, ALICE, "/tasks sleepy")
            .await
            .contains("not a state")
    );
    let one = say(&s, &bot, ALICE, &format!("/task {failed}")).await;
    assert!(
        one.contains("boom") && one.contains("INFO echoing"),
        "{one}"
    );
    assert!(
        one.contains(&format!("https://hc.example/ui/tasks/{failed}")),
        "{one}"
    );

    // Cancel: an operator may; a user may not cancel another's task.
    let refused = say(&s, &bot, UMA, &format!("/cancel {waiting}")).await;
    assert!(
        refused.contains("Refused") || refused.contains("Not found"),
        "{refused}"
    );
    assert_eq!(
        s.hive.get_task(&alice, waiting).await.unwrap().state,
        TaskState::Pending
    );
    let ok = say(&s, &bot, ALICE, &format!("/cancel {waiting}")).await;
    assert!(ok.contains("Cancelled"), "{ok}");
    assert_eq!(
        s.hive.get_task(&alice, waiting).await.unwrap().state,
        TaskState::Cancelled
    );
    let again = say(&s, &bot, ALICE, &format!("/cancel {waiting}")).await;
    assert!(again.contains("already ended"), "{again}");
    assert!(
        say(&s, &bot, ALICE, "/cancel nonsense")
            .await
            .contains("not a task id")
    );

    // A workflow.
    let spec: WorkflowSpec = serde_json::from_value(json!({
        "name": "pair",
        "steps": [{"id": "one", "agent": "echo"}, {"id": "two", "agent": "echo", "depends_on": ["one"]}]
    }))
    .unwrap();
    let wf = s.hive.submit_workflow(&alice, spec).await.unwrap().id;
    let w = say(&s, &bot, ALICE, &format!("/workflow {wf}")).await;
    assert!(
        w.contains("Workflow pair") && w.contains("`one`") && w.contains("`two`"),
        "{w}"
    );

    // The audit chain: an operator may verify it; a user is refused (audited).
    assert!(
        say(&s, &bot, ALICE, "/audit verify")
            .await
            .contains("intact")
    );
    let before = denials(&s, "acme", "audit.read").await.len();
    let r = say(&s, &bot, UMA, "/audit verify").await;
    assert!(r.contains("Refused"), "{r}");
    assert_eq!(denials(&s, "acme", "audit.read").await.len(), before + 1);
    // No registry here: said plainly.
    assert!(
        say(&s, &bot, ALICE, "/experiments")
            .await
            .contains("no APIary registry")
    );
    let _ = umas;
    worker.shutdown().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_needs_a_confirmation_from_the_same_user_in_time_once() {
    let Some(url) = pg() else { return };
    let Some(reg) = common::apiary::registry() else {
        return;
    };
    let (bot, api) = FakeBot::start().await;
    let hive = hive::open(&url).await.unwrap();
    let apiary = common::apiary::apiary(&hive, &reg);
    let root = Principal::admin("acme", "root");
    let good = apiary
        .publish(&root, common::apiary::request("summarize", 0.95))
        .await
        .unwrap()
        .reference
        .to_string();
    let weak = apiary
        .publish(&root, common::apiary::request("translate", 0.5))
        .await
        .unwrap()
        .reference
        .to_string();
    let s = honeycomb_on(hive, &api, Some(Arc::new(apiary) as Arc<dyn AgentRegistry>)).await;
    let chat = ROOT as i64;

    let list = say(&s, &bot, ROOT, "/experiments").await;
    assert!(
        list.contains("summarize") && list.contains("min 0\\.9"),
        "{list}"
    );

    // A user lacks experiment:promote: refused at once, audited.
    let before = denials(&s, "acme", "experiment.promote").await.len();
    let r = say(&s, &bot, UMA, &format!("/promote {good}")).await;
    assert!(r.contains("Refused"), "{r}");
    assert_eq!(
        denials(&s, "acme", "experiment.promote").await.len(),
        before + 1
    );

    // The admin is asked to confirm, with a button carrying a nonce.
    let ask = |r: &str| {
        let last = bot
            .calls("sendMessage")
            .into_iter()
            .rev()
            .find(|m| m["chat_id"] == chat)
            .unwrap();
        let data = last["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(data.len() <= 64, "Telegram's limit: {data}");
        assert!(last["text"].as_str().unwrap().contains("Promote"), "{r}");
        data
    };
    let r = say(&s, &bot, ROOT, &format!("/promote {weak}")).await;
    let weak_data = ask(&r);
    // Another (allowed) user presses it: refused, audited, nothing happens.
    let before = denials(&s, "acme", "experiment.promote").await.len();
    post(&s, Some(SECRET), &press(next_id(), chat, ALICE, &weak_data)).await;
    let n = bot.sent(chat).len();
    let sent = bot.wait_sent(chat, n + 1).await;
    assert!(
        sent.last().unwrap().contains("Only the person who asked"),
        "{sent:?}"
    );
    assert_eq!(
        denials(&s, "acme", "experiment.promote").await.len(),
        before + 1
    );
    // The admin presses it: refused by the metric rule, named.
    post(&s, Some(SECRET), &press(next_id(), chat, ROOT, &weak_data)).await;
    let sent = bot.wait_sent(chat, n + 2).await;
    assert!(
        sent.last().unwrap().contains("metric:accuracy>=0.9"),
        "{sent:?}"
    );
    assert!(
        !bot.calls("answerCallbackQuery").is_empty(),
        "every press is answered"
    );

    // An expired confirmation.
    let r = say(&s, &bot, ROOT, &format!("/promote {good}")).await;
    let expired_data = ask(&r);
    let nonce = expired_data.trim_start_matches("promote:");
    let rec = s
        .hive
        .store()
        .get_record(telegram::CONFIRM_KIND, nonce)
        .await
        .unwrap()
        .unwrap();
    let mut body = rec.body.clone();
    body["expires_ms"] = json!(0);
    s.hive
        .store()
        .write_record(RecordWrite {
            kind: telegram::CONFIRM_KIND.into(),
            id: nonce.into(),
            tenant: rec.tenant.clone(),
            expected_version: rec.version,
            status: rec.status.clone(),
            body,
            events: Vec::new(),
            now: hive::Timestamp::now(),
        })
        .await
        .unwrap();
    let n = bot.sent(chat).len();
    post(
        &s,
        Some(SECRET),
        &press(next_id(), chat, ROOT, &expired_data),
    )
    .await;
    assert!(
        bot.wait_sent(chat, n + 1)
            .await
            .last()
            .unwrap()
            .contains("expired")
    );

    // A fresh one: promoted; pressed again: used already.
    let r = say(&s, &bot, ROOT, &format!("/promote {good}")).await;
    let data = ask(&r);
    let n = bot.sent(chat).len();
    post(&s, Some(SECRET), &press(next_id(), chat, ROOT, &data)).await;
    let sent = bot.wait_sent(chat, n + 1).await;
    assert!(sent.last().unwrap().contains("Promoted"), "{sent:?}");
    post(&s, Some(SECRET), &press(next_id(), chat, ROOT, &data)).await;
    let sent = bot.wait_sent(chat, n + 2).await;
    assert!(sent.last().unwrap().contains("used already"), "{sent:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_once_across_a_restart() {
    let Some(url) = pg() else { return };
    let (bot, api) = FakeBot::start().await;
    let chat = ALICE as i64;
    let alice = Principal::operator("acme", "alice");
    let s = honeycomb(&url, &api, None).await;
    assert!(
        say(&s, &bot, ALICE, "/subscribe")
            .await
            .contains("Subscribed")
    );
    let t1 = s
        .hive
        .submit(&alice, TaskSpec::new("nobody", json!({})))
        .await
        .unwrap()
        .id;
    s.hive.cancel(&alice, t1, "test").await.unwrap();
    // Another user's task is not alice's business.
    let uma = Principal::user("acme", "uma");
    let other = s
        .hive
        .submit(&uma, TaskSpec::new("nobody", json!({})))
        .await
        .unwrap()
        .id;
    s.hive.cancel(&uma, other, "test").await.unwrap();
    let sent = bot.wait_sent(chat, 2).await;
    assert!(
        sent[1].contains(&t1.to_string()) && sent[1].contains("cancelled"),
        "{sent:?}"
    );
    s.stop().await;

    // While no Honeycomb runs, a task ends; the next one delivers it, once,
    // and nothing delivered before again.
    let hive = hive::open(&url).await.unwrap();
    let t2 = hive
        .submit(&alice, TaskSpec::new("nobody", json!({})))
        .await
        .unwrap()
        .id;
    hive.cancel(&alice, t2, "while down").await.unwrap();
    hive.shutdown();
    let s = honeycomb(&url, &api, None).await;
    let sent = bot.wait_sent(chat, 3).await;
    assert!(sent[2].contains(&t2.to_string()), "{sent:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = bot.sent(chat);
    assert_eq!(sent.len(), 3, "exactly once each: {sent:?}");
    assert!(!sent.iter().any(|m| m.contains(&other.to_string())));

    // Unsubscribed: nothing more.
    assert!(
        say(&s, &bot, ALICE, "/unsubscribe")
            .await
            .contains("Unsubscribed")
    );
    let t3 = s
        .hive
        .submit(&alice, TaskSpec::new("nobody", json!({})))
        .await
        .unwrap()
        .id;
    s.hive.cancel(&alice, t3, "after").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        bot.sent(chat).len(),
        4,
        "two replies and two notifications, none after unsubscribing"
    );
    s.stop().await;
}

#[test]
fn the_bot_token_is_redacted_and_settings_parse_with_clear_errors() {
    let s = settings("http://127.0.0.1:1");
    let e = format!("error sending request for url (http://127.0.0.1:1/bot{TOKEN}/sendMessage)");
    let r = s.redact(&e);
    assert!(!r.contains("TEST-secret-bot-token-xyz"), "{r}");
    assert!(r.contains("<bot-token>"));
    assert!(!format!("{s:?}").contains("TEST-secret"), "Debug masks it");

    use honeycomb::{Config, Layer};
    let layer = |users: &str| Layer {
        telegram_bot_token: Some(TOKEN.into()),
        telegram_webhook_secret: Some(SECRET.into()),
        telegram_users: Some(users.into()),
        ..Layer::default()
    };
    let c = Config::resolve(
        None,
        layer("12=acme/alice:operator, 13=acme/bob"),
        Layer::default(),
    )
    .unwrap();
    let tg = c.telegram.as_ref().unwrap();
    assert_eq!(tg.users[&12].role, Role::Operator);
    assert_eq!(tg.users[&13].role, Role::User);
    assert!(
        !c.render().contains("TEST-secret"),
        "config masks the token"
    );
    for (users, needle) in [
        ("alice=acme/alice", "must be a number"),
        ("12=acme", "no tenant/"),
        ("12=acme/alice:root", "user, operator or admin"),
    ] {
        let e = Config::resolve(None, layer(users), Layer::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("telegram_users") && e.contains(needle), "{e}");
    }
    let no_secret = Layer {
        telegram_bot_token: Some(TOKEN.into()),
        ..Layer::default()
    };
    let e = Config::resolve(None, no_secret, Layer::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("telegram_webhook_secret") && !e.contains("TEST-secret"),
        "{e}"
    );
    let _: SocketAddr = "127.0.0.1:1".parse().unwrap();
}
