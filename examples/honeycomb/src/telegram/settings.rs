//! The Telegram route's settings: the bot token and webhook secret (secrets,
//! never printed), the Bot API's URL, the allow-list of numeric user ids and
//! group chats, and the optional source ranges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hive::principal::Role;

use crate::config::{ConfigError, Origin};

/// Telegram's Bot API, unless told otherwise.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// Messages a chat may send per minute before the bot stops answering.
pub const RATE_PER_MINUTE: u32 = 20;

/// Who a Telegram user is in Hive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedUser {
    /// The tenant.
    pub tenant: hive::TenantId,
    /// The principal id.
    pub principal: String,
    /// The role (`user`, `operator`, `admin`).
    pub role: Role,
}

impl AllowedUser {
    /// The principal this user acts as.
    pub fn principal(&self) -> hive::Principal {
        let (t, p) = (self.tenant.clone(), self.principal.as_str());
        match self.role {
            Role::Admin => hive::Principal::admin(t, p),
            Role::Operator => hive::Principal::operator(t, p),
            _ => hive::Principal::user(t, p),
        }
    }
}

/// The Telegram route's settings (present when the bot token is set).
#[derive(Clone, PartialEq)]
pub struct TelegramSettings {
    /// The bot's token (in every Bot API URL: never logged).
    pub bot_token: String,
    /// What Telegram must send in `X-Telegram-Bot-Api-Secret-Token`.
    pub webhook_secret: String,
    /// The Bot API's base URL.
    pub api_url: url::Url,
    /// The public webhook URL registered with `setWebhook` at start.
    pub webhook_url: Option<url::Url>,
    /// Numeric Telegram user id → who it is in Hive.
    pub users: BTreeMap<u64, AllowedUser>,
    /// Group chats where commands are allowed.
    pub groups: BTreeSet<i64>,
    /// Source ranges the webhook accepts (any when empty).
    pub source_ranges: Vec<ipnet::IpNet>,
    /// The console's base URL, for links in replies.
    pub console_url: Option<String>,
}

impl fmt::Debug for TelegramSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("bot_token", &"****")
            .field("webhook_secret", &"****")
            .field("api_url", &self.api_url.as_str())
            .field(
                "webhook_url",
                &self.webhook_url.as_ref().map(|u| u.as_str()),
            )
            .field("users", &self.users_text())
            .field("groups", &self.groups_text())
            .field("source_ranges", &self.ranges_text())
            .finish()
    }
}

type Chosen = BTreeMap<&'static str, (String, Origin)>;

fn invalid(setting: &'static str, chosen: &Chosen, reason: String) -> ConfigError {
    let (value, origin) = chosen
        .get(setting)
        .cloned()
        .unwrap_or((String::new(), Origin::Default));
    let value = if setting == "telegram_bot_token" || setting == "telegram_webhook_secret" {
        "****".into()
    } else {
        value
    };
    ConfigError::Invalid {
        setting,
        value,
        origin,
        reason,
    }
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split([',', '\n', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
}

impl TelegramSettings {
    /// The settings from the chosen values: `None` when no bot token is set;
    /// an error naming the setting for anything that does not parse (a bot
    /// token without a secret among them).
    pub(crate) fn from_chosen(chosen: &Chosen) -> Result<Option<TelegramSettings>, ConfigError> {
        let get = |k: &str| {
            chosen
                .get(k)
                .map(|(v, _)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let Some(bot_token) = get("telegram_bot_token") else {
            for k in [
                "telegram_webhook_secret",
                "telegram_users",
                "telegram_webhook_url",
            ] {
                if get(k).is_some() {
                    return Err(invalid(
                        k,
                        chosen,
                        "set telegram_bot_token too (the Telegram route is off without it)".into(),
                    ));
                }
            }
            return Ok(None);
        };
        if !bot_token.contains(':') || bot_token.chars().any(char::is_whitespace) {
            return Err(invalid(
                "telegram_bot_token",
                chosen,
                "not a bot token (123456:ABC…, from @BotFather)".into(),
            ));
        }
        let Some(webhook_secret) = get("telegram_webhook_secret") else {
            return Err(invalid(
                "telegram_webhook_secret",
                chosen,
                "required with telegram_bot_token: the webhook refuses requests without it".into(),
            ));
        };
        if webhook_secret.is_empty()
            || webhook_secret.len() > 256
            || !webhook_secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "telegram_webhook_secret",
                chosen,
                "1 to 256 characters of A-Z a-z 0-9 _ - (Telegram's rule)".into(),
            ));
        }
        let api_text = get("telegram_api_url").unwrap_or_else(|| DEFAULT_API_URL.into());
        let api_url = url::Url::parse(&api_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| invalid("telegram_api_url", chosen, "not an http(s) URL".into()))?;
        let webhook_url = match get("telegram_webhook_url") {
            None => None,
            Some(t) => Some(
                url::Url::parse(&t)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        invalid(
                            "telegram_webhook_url",
                            chosen,
                            "not an http(s) URL (Telegram needs https)".into(),
                        )
                    })?,
            ),
        };
        let mut users = BTreeMap::new();
        for entry in list(&get("telegram_users").unwrap_or_default()) {
            let bad = |why: &str| {
                invalid(
                    "telegram_users",
                    chosen,
                    format!(
                        "{entry:?}: {why} (write ID=tenant/principal:role, e.g. 12345=acme/alice:operator)"
                    ),
                )
            };
            let (id, who) = entry.split_once('=').ok_or_else(|| bad("no ="))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| bad("the Telegram user id must be a number (never a username)"))?;
            let (who, role) = who.split_once(':').unwrap_or((who, "user"));
            let (tenant, principal) = who.split_once('/').ok_or_else(|| bad("no tenant/"))?;
            let tenant = hive::TenantId::parse(tenant).map_err(|e| bad(&e.to_string()))?;
            hive::PrincipalId::new(principal)
                .validate()
                .map_err(|e| bad(&e.to_string()))?;
            let role = match role {
                "user" => Role::User,
                "operator" => Role::Operator,
                "admin" => Role::Admin,
                _ => return Err(bad("the role is user, operator or admin")),
            };
            users.insert(
                id,
                AllowedUser {
                    tenant,
                    principal: principal.to_owned(),
                    role,
                },
            );
        }
        let mut groups = BTreeSet::new();
        for g in list(&get("telegram_groups").unwrap_or_default()) {
            groups.insert(g.parse::<i64>().map_err(|_| {
                invalid(
                    "telegram_groups",
                    chosen,
                    format!("{g:?} is not a numeric chat id"),
                )
            })?);
        }
        let mut source_ranges = Vec::new();
        for r in list(&get("telegram_source_ranges").unwrap_or_default()) {
            source_ranges.push(r.parse::<ipnet::IpNet>().map_err(|_| {
                invalid(
                    "telegram_source_ranges",
                    chosen,
                    format!("{r:?} is not a CIDR range (149.154.160.0/20)"),
                )
            })?);
        }
        Ok(Some(TelegramSettings {
            bot_token,
            webhook_secret,
            api_url,
            webhook_url,
            users,
            groups,
            source_ranges,
            console_url: get("telegram_console_url").map(|u| u.trim_end_matches('/').to_owned()),
        }))
    }

    /// The allow-list as written in the settings.
    pub fn users_text(&self) -> String {
        self.users
            .iter()
            .map(|(id, u)| {
                let role = match u.role {
                    Role::Admin => "admin",
                    Role::Operator => "operator",
                    _ => "user",
                };
                format!("{id}={}/{}:{role}", u.tenant, u.principal)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The group chats as written in the settings.
    pub fn groups_text(&self) -> String {
        self.groups
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The source ranges as written in the settings.
    pub fn ranges_text(&self) -> String {
        self.source_ranges
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The bot's id (the token's part before `:`; not secret).
    pub fn bot_id(&self) -> &str {
        self.bot_token.split(':').next().unwrap_or("bot")
    }

    /// `text` with the bot token replaced (it is part of every Bot API URL,
    /// so errors from the client carry it).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.replace(&self.bot_token, "<bot-token>");
        if let Some((_, secret_part)) = self.bot_token.split_once(':')
            && secret_part.len() >= 8
        {
            out = out.replace(secret_part, "<bot-token>");
        }
        out.replace(&self.webhook_secret, "<webhook-secret>")
    }
}
