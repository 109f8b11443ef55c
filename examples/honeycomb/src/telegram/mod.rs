//! The Telegram route: `POST /telegram/webhook`, off unless configured.
//!
//! Hardened like the HTTP API, because a chat message that cancels tasks or
//! promotes an agent is a privileged action:
//!
//! - the `X-Telegram-Bot-Api-Secret-Token` header is compared in constant
//!   time; a missing or wrong one is `401`, audited with the source address,
//!   and nothing else happens (so is a source outside `telegram_source_ranges`
//!   when that is set: `403`);
//! - each `update_id` is recorded in the store before anything runs (a
//!   compare-and-set create), so a redelivered update runs nothing twice,
//!   across restarts and across Honeycomb processes on one store;
//! - senders and chats are mapped to Hive principals by an allow-list of
//!   numeric ids; commands run in private chats, or in a group that is
//!   allowed when the sender is allowed too; anyone else gets one polite
//!   refusal and an audit entry;
//! - the webhook answers `200` at once and the update is processed in the
//!   background; every command goes through the engine (scope-checked and
//!   audited as from Rust);
//! - a per-chat rate limit, a message size limit, help for unknown commands;
//!   the bot token (part of every Bot API URL) is redacted from every log
//!   line and error.
//!
//! The Bot API types and client are `teloxide-core`'s, pointed at
//! `telegram_api_url` (a fake server on loopback in the tests).

mod commands;
mod notify;
mod settings;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hive::auth::{Action, Resource};
use hive::store::RecordWrite;
use serde_json::json;
use subtle::ConstantTimeEq;
use teloxide_core::Bot;
use teloxide_core::requests::Requester;
use teloxide_core::types::{AllowedUpdate, ChatId, Update, UpdateKind};

pub use commands::{CONFIRM_KIND, CONFIRM_TTL, code, esc, fit};
pub use notify::{NOTE_KIND, SUB_KIND};
pub use settings::{AllowedUser, DEFAULT_API_URL, RATE_PER_MINUTE, TelegramSettings};

use crate::api::{ApiError, ApiState};

/// The record kind of a seen update (its id is `<bot id>:<update_id>`).
pub const UPDATE_KIND: &str = "telegram.update";
/// The header Telegram sends the webhook secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// The largest message text the bot reads.
pub const MAX_TEXT: usize = 4096;
/// The largest update body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// The running Telegram route: its settings, the Bot API client and the
/// per-chat rate limiter.
pub struct Telegram {
    settings: TelegramSettings,
    bot: Bot,
    limiter: DefaultKeyedRateLimiter<i64>,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why the Telegram route could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// The HTTP client could not be built.
    #[error("telegram: cannot build the Bot API client: {0}")]
    Client(String),
    /// `setWebhook` failed (the token is redacted).
    #[error("telegram: setWebhook failed: {0}")]
    SetWebhook(String),
}

impl Telegram {
    /// The route over `settings` (nothing is sent yet).
    pub fn new(settings: TelegramSettings) -> Result<Telegram, TelegramError> {
        // The Bot API client takes the process's rustls provider: aws-lc-rs,
        // as everywhere else in Hive, unless the host installed one.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = reqwest_bot::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| TelegramError::Client(settings.redact(&e.to_string())))?;
        let bot = Bot::with_client(settings.bot_token.clone(), client)
            .set_api_url(settings.api_url.clone());
        let per_minute = NonZeroU32::new(RATE_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Ok(Telegram {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            settings,
            bot,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &TelegramSettings {
        &self.settings
    }

    /// Registers the webhook (`setWebhook` with the secret and the update
    /// kinds the bot reads) when `telegram_webhook_url` is set.
    pub async fn set_webhook(&self) -> Result<(), TelegramError> {
        let Some(url) = self.settings.webhook_url.clone() else {
            return Ok(());
        };
        use teloxide_core::payloads::SetWebhookSetters;
        self.bot
            .set_webhook(url)
            .secret_token(self.settings.webhook_secret.clone())
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .await
            .map(|_| ())
            .map_err(|e| TelegramError::SetWebhook(self.settings.redact(&e.to_string())))
    }

    /// Sends `text` (MarkdownV2, cut to Telegram's 4,096 characters) to
    /// `chat`; a failure is logged with the token redacted.
    pub(crate) async fn send(&self, chat: i64, text: String) -> bool {
        self.send_with(chat, text, None).await
    }

    pub(crate) async fn send_with(
        &self,
        chat: i64,
        text: String,
        markup: Option<teloxide_core::types::InlineKeyboardMarkup>,
    ) -> bool {
        use teloxide_core::payloads::SendMessageSetters;
        let text = commands::fit(text);
        let mut request = self
            .bot
            .send_message(ChatId(chat), text)
            .parse_mode(teloxide_core::types::ParseMode::MarkdownV2);
        if let Some(m) = markup {
            request = request.reply_markup(m);
        }
        match request.await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(chat, error = %self.settings.redact(&e.to_string()), "telegram: sendMessage failed");
                false
            }
        }
    }

    pub(crate) async fn answer_callback(
        &self,
        id: teloxide_core::types::CallbackQueryId,
        text: &str,
    ) {
        use teloxide_core::payloads::AnswerCallbackQuerySetters;
        if let Err(e) = self
            .bot
            .answer_callback_query(id)
            .text(text.to_owned())
            .await
        {
            tracing::warn!(error = %self.settings.redact(&e.to_string()), "telegram: answerCallbackQuery failed");
        }
    }

    fn allowed_source(&self, peer: Option<SocketAddr>) -> bool {
        if self.settings.source_ranges.is_empty() {
            return true;
        }
        peer.is_some_and(|p| {
            self.settings
                .source_ranges
                .iter()
                .any(|r| r.contains(&p.ip()))
        })
    }
}

/// The role of an allowed user, as written in the settings.
fn settings_role(u: &AllowedUser) -> &'static str {
    match u.role {
        hive::principal::Role::Admin => "admin",
        hive::principal::Role::Operator => "operator",
        _ => "user",
    }
}

/// The principal a refused webhook call or chat is audited as.
fn stranger(what: &str) -> hive::Principal {
    let mut p = hive::Principal::user(hive::TenantId::system(), "telegram");
    p.id = format!("telegram:{what}").into();
    p.scopes = hive::Scopes::empty();
    p
}

/// Starts the route for `state`: registers the webhook when configured and
/// runs the notification delivery until the service stops.
pub async fn start(state: &ApiState, telegram: Arc<Telegram>) -> Result<(), TelegramError> {
    telegram.set_webhook().await?;
    state.set_telegram(telegram.clone());
    tokio::spawn(notify::deliver(state.clone(), telegram));
    Ok(())
}

/// `POST /telegram/webhook`.
pub(crate) async fn webhook(State(state): State<ApiState>, request: Request) -> Response {
    let Some(tg) = state.telegram() else {
        return ApiError::no_route("/telegram/webhook").into_response();
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let source = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
    let (parts, body) = request.into_parts();
    if !tg.allowed_source(peer) {
        let e = state
            .hive()
            .deny(
                &stranger("webhook"),
                Action::ChatCommand,
                &Resource::System,
                &format!("telegram webhook called from {source}, outside telegram_source_ranges"),
            )
            .await;
        tracing::warn!(%source, "telegram: webhook refused (source address)");
        return ApiError::from(e).into_response();
    }
    if !secret_ok(&parts.headers, &tg.settings.webhook_secret) {
        let _ = state
            .hive()
            .deny(
                &stranger("webhook"),
                Action::ChatCommand,
                &Resource::System,
                &format!(
                    "telegram webhook called from {source} with a missing or wrong secret token"
                ),
            )
            .await;
        tracing::warn!(%source, "telegram: webhook refused (secret token)");
        return ApiError::unauthorized("missing or wrong X-Telegram-Bot-Api-Secret-Token")
            .into_response();
    }
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "Too large",
                "the update is larger than 256 KiB",
            )
            .into_response();
        }
    };
    let update: Update = match serde_json::from_slice(&bytes) {
        Ok(u) => u,
        Err(e) => {
            return ApiError::bad_request(format!("not a Telegram update: {e}")).into_response();
        }
    };
    // Seen before (a redelivery, or another process took it)? Then nothing.
    let first = match record_update(&state, &tg, &update).await {
        Ok(first) => first,
        Err(e) => {
            // Not recorded: Telegram will send it again.
            tracing::warn!(error = %e, "telegram: cannot record an update");
            return ApiError::from(e).into_response();
        }
    };
    if first {
        tokio::spawn(commands::process(state.clone(), tg.clone(), update));
    } else {
        tracing::info!(
            update = update.id.0,
            "telegram: a redelivered update was ignored"
        );
    }
    StatusCode::OK.into_response()
}

fn secret_ok(headers: &HeaderMap, secret: &str) -> bool {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    given.ct_eq(secret.as_bytes()).into()
}

/// Records `update` as seen; `false` when it was recorded before.
async fn record_update(
    state: &ApiState,
    tg: &Telegram,
    update: &Update,
) -> Result<bool, hive::Error> {
    let kind = match &update.kind {
        UpdateKind::Message(_) => "message",
        UpdateKind::CallbackQuery(_) => "callback_query",
        _ => "other",
    };
    let write = RecordWrite {
        kind: UPDATE_KIND.into(),
        id: format!("{}:{}", tg.settings.bot_id(), update.id.0),
        tenant: hive::TenantId::system(),
        expected_version: 0,
        status: "received".into(),
        body: json!({ "kind": kind }),
        events: Vec::new(),
        now: hive::Timestamp::now(),
    };
    match state.hive().store().write_record(write).await {
        Ok(_) => Ok(true),
        Err(hive::Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The Telegram routes.
pub(crate) fn routes() -> axum::Router<ApiState> {
    axum::Router::new().route("/telegram/webhook", axum::routing::post(webhook))
}
