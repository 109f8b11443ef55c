//! Honeycomb's settings: defaults, then a TOML file, then `HONEYCOMB_*`
//! environment variables, then command-line flags — each later layer wins,
//! and the effective configuration remembers which layer set each value (for
//! `honeycomb config` and for errors that name the setting to change).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The address Honeycomb listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8780";
/// Where the APIary registry is expected unless told otherwise (a different
/// port from Honeycomb's, so both run on one host).
pub const DEFAULT_REGISTRY: &str = "127.0.0.1:5055";
/// The data directory unless told otherwise (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "honeycomb-data";

/// The settings with their environment variable and flag, in display order
/// (the Telegram settings have no flag: a secret on a command line is seen by
/// every user of the machine).
pub const SETTINGS: [(&str, &str, &str); 19] = [
    ("listen", "HONEYCOMB_LISTEN", "--listen"),
    ("data_dir", "HONEYCOMB_DATA_DIR", "--data-dir"),
    ("backend", "HONEYCOMB_BACKEND", "--backend"),
    ("registry", "HONEYCOMB_REGISTRY", "--registry"),
    (
        "registry_keys",
        "HONEYCOMB_REGISTRY_KEYS",
        "--registry-keys",
    ),
    (
        "shutdown_grace",
        "HONEYCOMB_SHUTDOWN_GRACE",
        "--shutdown-grace",
    ),
    ("log", "HONEYCOMB_LOG", "--log"),
    ("rate_limit", "HONEYCOMB_RATE_LIMIT", "--rate-limit"),
    (
        "metrics_token",
        "HONEYCOMB_METRICS_TOKEN",
        "--metrics-token",
    ),
    ("retention", "HONEYCOMB_RETENTION", "--retention"),
    (
        "retention_delete",
        "HONEYCOMB_RETENTION_DELETE",
        "--retention-delete",
    ),
    ("telegram_bot_token", "HONEYCOMB_TELEGRAM_BOT_TOKEN", ""),
    (
        "telegram_webhook_secret",
        "HONEYCOMB_TELEGRAM_WEBHOOK_SECRET",
        "",
    ),
    ("telegram_api_url", "HONEYCOMB_TELEGRAM_API_URL", ""),
    ("telegram_webhook_url", "HONEYCOMB_TELEGRAM_WEBHOOK_URL", ""),
    ("telegram_users", "HONEYCOMB_TELEGRAM_USERS", ""),
    ("telegram_groups", "HONEYCOMB_TELEGRAM_GROUPS", ""),
    (
        "telegram_source_ranges",
        "HONEYCOMB_TELEGRAM_SOURCE_RANGES",
        "",
    ),
    ("telegram_console_url", "HONEYCOMB_TELEGRAM_CONSOLE_URL", ""),
];

/// The environment variable naming the config file (not a setting itself).
pub const CONFIG_ENV: &str = "HONEYCOMB_CONFIG";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The config file is not valid TOML for Honeycomb (an unknown key is
    /// named in the message).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A `HONEYCOMB_*` environment variable that is no setting.
    #[error(
        "unknown setting {name} in the environment (known: HONEYCOMB_CONFIG, {known})",
        known = SETTINGS.map(|s| s.1).join(", ")
    )]
    UnknownEnv {
        /// The variable.
        name: String,
    },
    /// A value that does not parse.
    #[error("{setting} = {value:?} (from {origin}): {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: String,
        /// Where it came from.
        origin: Origin,
        /// Why it is refused.
        reason: String,
    },
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Honeycomb's default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(p) => write!(f, "the config file {}", p.display()),
            Origin::Env(v) => write!(f, "the environment variable {v}"),
            Origin::Flag(flag) => write!(f, "the flag {flag}"),
        }
    }
}

/// The values one layer sets (all optional, as text).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// `listen`: the address to serve on.
    pub listen: Option<String>,
    /// `data_dir`: where the default SQLite file lives.
    pub data_dir: Option<String>,
    /// `backend`: the store URL (default: an SQLite file in the data directory).
    pub backend: Option<String>,
    /// `registry`: the APIary registry's address.
    pub registry: Option<String>,
    /// `registry_keys`: the folder of APIary keys (`sandbox.pub`,
    /// `production.pub`, optionally `sandbox.key`, `production.key`); the
    /// APIary routes are on when it is set.
    pub registry_keys: Option<String>,
    /// `shutdown_grace`: how long a stop waits for work in flight (e.g. `30s`).
    pub shutdown_grace: Option<String>,
    /// `log`: the log filter (`info`, `honeycomb=debug,hive=info`…).
    pub log: Option<String>,
    /// `rate_limit`: requests per second per token (`0`: off).
    pub rate_limit: Option<String>,
    /// `metrics_token`: the bearer token `/metrics` needs (open when unset).
    pub metrics_token: Option<String>,
    /// `retention`: how long ended tasks keep their full event streams
    /// before they are compacted (e.g. `7d`; `off` keeps them forever).
    pub retention: Option<String>,
    /// `retention_delete`: how long ended tasks are kept at all before they
    /// are deleted whole (e.g. `30d`; `off` keeps them; needs `retention`).
    pub retention_delete: Option<String>,
    /// `telegram_bot_token`: the Telegram bot's token; the route
    /// `/telegram/webhook` is on when it is set (with the secret).
    pub telegram_bot_token: Option<String>,
    /// `telegram_webhook_secret`: what Telegram sends in
    /// `X-Telegram-Bot-Api-Secret-Token` (1–256 of `A-Za-z0-9_-`).
    pub telegram_webhook_secret: Option<String>,
    /// `telegram_api_url`: the Bot API's base URL.
    pub telegram_api_url: Option<String>,
    /// `telegram_webhook_url`: this service's public webhook URL; when set,
    /// `setWebhook` is called with it at start.
    pub telegram_webhook_url: Option<String>,
    /// `telegram_users`: the allow-list, `ID=tenant/principal:role` separated
    /// by commas (numeric Telegram user ids, never usernames).
    pub telegram_users: Option<String>,
    /// `telegram_groups`: group chat ids where commands are allowed (both the
    /// chat and the sender must be allowed).
    pub telegram_groups: Option<String>,
    /// `telegram_source_ranges`: if set, only these CIDR ranges may call the
    /// webhook (Telegram's published ranges).
    pub telegram_source_ranges: Option<String>,
    /// `telegram_console_url`: the console's base URL for links in replies.
    pub telegram_console_url: Option<String>,
}

impl Layer {
    fn get(&self, setting: &str) -> Option<&String> {
        match setting {
            "listen" => self.listen.as_ref(),
            "data_dir" => self.data_dir.as_ref(),
            "backend" => self.backend.as_ref(),
            "registry" => self.registry.as_ref(),
            "registry_keys" => self.registry_keys.as_ref(),
            "shutdown_grace" => self.shutdown_grace.as_ref(),
            "log" => self.log.as_ref(),
            "rate_limit" => self.rate_limit.as_ref(),
            "metrics_token" => self.metrics_token.as_ref(),
            "retention" => self.retention.as_ref(),
            "retention_delete" => self.retention_delete.as_ref(),
            "telegram_bot_token" => self.telegram_bot_token.as_ref(),
            "telegram_webhook_secret" => self.telegram_webhook_secret.as_ref(),
            "telegram_api_url" => self.telegram_api_url.as_ref(),
            "telegram_webhook_url" => self.telegram_webhook_url.as_ref(),
            "telegram_users" => self.telegram_users.as_ref(),
            "telegram_groups" => self.telegram_groups.as_ref(),
            "telegram_source_ranges" => self.telegram_source_ranges.as_ref(),
            "telegram_console_url" => self.telegram_console_url.as_ref(),
            _ => None,
        }
    }

    /// Reads a TOML config file; an unknown key is an error naming it.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Parse {
                path: path.to_owned(),
                message: match line {
                    Some(n) => format!("line {n}: {}", e.message()),
                    None => e.message().to_owned(),
                },
            }
        })
    }

    /// The `HONEYCOMB_*` variables of `vars`; an unknown one is an error
    /// naming it. `HONEYCOMB_CONFIG` (the file's path) is skipped.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        for (name, value) in vars {
            if !name.starts_with("HONEYCOMB_") || name == CONFIG_ENV {
                continue;
            }
            let slot = match name.as_str() {
                "HONEYCOMB_LISTEN" => &mut layer.listen,
                "HONEYCOMB_DATA_DIR" => &mut layer.data_dir,
                "HONEYCOMB_BACKEND" => &mut layer.backend,
                "HONEYCOMB_REGISTRY" => &mut layer.registry,
                "HONEYCOMB_REGISTRY_KEYS" => &mut layer.registry_keys,
                "HONEYCOMB_SHUTDOWN_GRACE" => &mut layer.shutdown_grace,
                "HONEYCOMB_LOG" => &mut layer.log,
                "HONEYCOMB_RATE_LIMIT" => &mut layer.rate_limit,
                "HONEYCOMB_METRICS_TOKEN" => &mut layer.metrics_token,
                "HONEYCOMB_RETENTION" => &mut layer.retention,
                "HONEYCOMB_RETENTION_DELETE" => &mut layer.retention_delete,
                "HONEYCOMB_TELEGRAM_BOT_TOKEN" => &mut layer.telegram_bot_token,
                "HONEYCOMB_TELEGRAM_WEBHOOK_SECRET" => &mut layer.telegram_webhook_secret,
                "HONEYCOMB_TELEGRAM_API_URL" => &mut layer.telegram_api_url,
                "HONEYCOMB_TELEGRAM_WEBHOOK_URL" => &mut layer.telegram_webhook_url,
                "HONEYCOMB_TELEGRAM_USERS" => &mut layer.telegram_users,
                "HONEYCOMB_TELEGRAM_GROUPS" => &mut layer.telegram_groups,
                "HONEYCOMB_TELEGRAM_SOURCE_RANGES" => &mut layer.telegram_source_ranges,
                "HONEYCOMB_TELEGRAM_CONSOLE_URL" => &mut layer.telegram_console_url,
                _ => return Err(ConfigError::UnknownEnv { name }),
            };
            *slot = Some(value);
        }
        Ok(layer)
    }
}

/// The effective configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The address to serve on.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The store URL given, if any (else an SQLite file in `data_dir`).
    pub backend: Option<String>,
    /// The APIary registry's address.
    pub registry: String,
    /// The folder of APIary keys, when the APIary routes are on.
    pub registry_keys: Option<PathBuf>,
    /// How long a stop waits for work in flight.
    pub shutdown_grace: Duration,
    /// The log filter.
    pub log: String,
    /// Requests per second per token (0: no limit; the burst is twice it).
    pub rate_limit: u32,
    /// Compact ended tasks after this long (`None`: never).
    pub retention: Option<Duration>,
    /// Delete compacted tasks after this long (`None`: never).
    pub retention_delete: Option<Duration>,
    /// The bearer token `/metrics` needs, if any.
    pub metrics_token: Option<String>,
    /// The Telegram route's settings, when it is on.
    pub telegram: Option<crate::telegram::TelegramSettings>,
    /// Where each setting's value came from.
    pub origins: BTreeMap<&'static str, Origin>,
}

impl Config {
    /// Merges the layers (each later one wins) over the defaults. `file` is
    /// the config file's layer with its path, `flags` the command line's.
    pub fn resolve(
        file: Option<(&Path, Layer)>,
        env: Layer,
        flags: Layer,
    ) -> Result<Config, ConfigError> {
        let mut chosen: BTreeMap<&'static str, (String, Origin)> = BTreeMap::new();
        let defaults = [
            ("listen", DEFAULT_LISTEN),
            ("data_dir", DEFAULT_DATA_DIR),
            ("registry", DEFAULT_REGISTRY),
            ("shutdown_grace", "30s"),
            ("log", "info"),
            ("rate_limit", "2000"),
            ("retention", "off"),
            ("retention_delete", "off"),
        ];
        for (k, v) in defaults {
            chosen.insert(k, (v.to_owned(), Origin::Default));
        }
        for (setting, var, flag) in SETTINGS {
            if let Some((path, layer)) = &file
                && let Some(v) = layer.get(setting)
            {
                chosen.insert(setting, (v.clone(), Origin::File(path.to_path_buf())));
            }
            if let Some(v) = env.get(setting) {
                chosen.insert(setting, (v.clone(), Origin::Env(var)));
            }
            if let Some(v) = flags.get(setting) {
                chosen.insert(setting, (v.clone(), Origin::Flag(flag)));
            }
        }
        // Every setting but `backend` has a default, so it is always chosen.
        let value = |setting: &'static str| {
            chosen
                .get(setting)
                .cloned()
                .unwrap_or((String::new(), Origin::Default))
        };
        let invalid = |setting: &'static str, (value, origin): (String, Origin), reason: String| {
            ConfigError::Invalid {
                setting,
                value,
                origin,
                reason,
            }
        };
        let (listen_text, listen_origin) = value("listen");
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            invalid(
                "listen",
                (listen_text.clone(), listen_origin.clone()),
                format!("not an address with a port ({e}); e.g. 127.0.0.1:8780"),
            )
        })?;
        let (data_dir, _) = value("data_dir");
        if data_dir.trim().is_empty() {
            return Err(invalid(
                "data_dir",
                value("data_dir"),
                "must not be empty".into(),
            ));
        }
        let backend = match chosen.get("backend").cloned() {
            Some((url, origin)) => {
                if !url.contains("://") {
                    return Err(invalid(
                        "backend",
                        (url, origin),
                        "not a store URL (memory://, sqlite://PATH, postgres://…, redis://…)"
                            .into(),
                    ));
                }
                Some(url)
            }
            None => None,
        };
        let (registry, registry_origin) = value("registry");
        if registry.trim().is_empty() {
            return Err(invalid(
                "registry",
                (registry, registry_origin),
                "must not be empty".into(),
            ));
        }
        let registry_keys = chosen
            .get("registry_keys")
            .map(|(v, _)| v.clone())
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from);
        let (grace_text, grace_origin) = value("shutdown_grace");
        let shutdown_grace = humantime_parse(&grace_text).map_err(|reason| {
            invalid("shutdown_grace", (grace_text.clone(), grace_origin), reason)
        })?;
        let (log, _) = value("log");
        let (rate_text, rate_origin) = value("rate_limit");
        let rate_limit = rate_text.trim().parse::<u32>().map_err(|_| {
            invalid(
                "rate_limit",
                (rate_text.clone(), rate_origin),
                "not a whole number of requests per second per token (0 turns it off)".into(),
            )
        })?;
        let age = |setting: &'static str| -> Result<Option<Duration>, ConfigError> {
            let (text, origin) = value(setting);
            if text.trim() == "off" {
                return Ok(None);
            }
            match humantime_parse(&text) {
                Ok(d) if !d.is_zero() => Ok(Some(d)),
                Ok(_) => Err(invalid(
                    setting,
                    (text.clone(), origin),
                    "must be longer than zero (or off)".into(),
                )),
                Err(reason) => Err(invalid(setting, (text.clone(), origin), reason)),
            }
        };
        let retention = age("retention")?;
        let retention_delete = age("retention_delete")?;
        if retention_delete.is_some() && retention.is_none() {
            let (text, origin) = value("retention_delete");
            return Err(invalid(
                "retention_delete",
                (text, origin),
                "needs retention (tasks are deleted once compacted)".into(),
            ));
        }
        let metrics_token = chosen
            .get("metrics_token")
            .map(|(v, _)| v.clone())
            .filter(|v| !v.is_empty());
        let telegram = crate::telegram::TelegramSettings::from_chosen(&chosen)?;
        let origins = chosen.iter().map(|(k, (_, o))| (*k, o.clone())).collect();
        Ok(Config {
            listen,
            data_dir: PathBuf::from(data_dir),
            backend,
            registry,
            registry_keys,
            shutdown_grace,
            log,
            rate_limit,
            retention,
            retention_delete,
            metrics_token,
            telegram,
            origins,
        })
    }

    /// The API's limits from these settings (the rest at their defaults).
    pub fn api_limits(&self) -> crate::api::ApiLimits {
        crate::api::ApiLimits {
            rate_per_second: self.rate_limit,
            rate_burst: self.rate_limit.saturating_mul(2),
            metrics_token: self.metrics_token.clone(),
            ..crate::api::ApiLimits::default()
        }
    }

    /// The engine's settings these choose (retention; the rest at defaults).
    pub fn engine(&self) -> hive::HiveConfig {
        hive::HiveConfig {
            retention: hive::RetentionConfig {
                keep_ended: self.retention,
                delete_ended: self.retention_delete,
                ..hive::RetentionConfig::default()
            },
            ..hive::HiveConfig::default()
        }
    }

    /// The store URL: the one given, or the SQLite file in the data directory.
    pub fn backend_url(&self) -> String {
        match &self.backend {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("hive.db").display()),
        }
    }

    /// Where `setting` came from.
    pub fn origin(&self, setting: &str) -> Origin {
        self.origins
            .get(setting)
            .cloned()
            .unwrap_or(Origin::Default)
    }

    /// The effective configuration as TOML, secrets masked, each line with
    /// where its value came from.
    pub fn render(&self) -> String {
        let grace = humantime::format_duration(self.shutdown_grace).to_string();
        let backend = mask_url(&self.backend_url());
        let metrics_token = match &self.metrics_token {
            Some(_) => "****".to_owned(),
            None => String::new(),
        };
        let keys = self
            .registry_keys
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let tg = self.telegram.as_ref();
        let secret = |set: bool| {
            if set {
                "****".to_owned()
            } else {
                String::new()
            }
        };
        let age = |d: Option<Duration>| {
            d.map_or("off".to_owned(), |d| {
                humantime::format_duration(d).to_string()
            })
        };
        let rows: [(&str, String); 19] = [
            ("listen", self.listen.to_string()),
            ("data_dir", self.data_dir.display().to_string()),
            ("backend", backend),
            ("registry", self.registry.clone()),
            ("registry_keys", keys),
            ("shutdown_grace", grace),
            ("log", self.log.clone()),
            ("rate_limit", self.rate_limit.to_string()),
            ("retention", age(self.retention)),
            ("retention_delete", age(self.retention_delete)),
            ("metrics_token", metrics_token),
            ("telegram_bot_token", secret(tg.is_some())),
            ("telegram_webhook_secret", secret(tg.is_some())),
            (
                "telegram_api_url",
                tg.map(|t| t.api_url.to_string()).unwrap_or_default(),
            ),
            (
                "telegram_webhook_url",
                tg.and_then(|t| t.webhook_url.as_ref().map(|u| u.to_string()))
                    .unwrap_or_default(),
            ),
            (
                "telegram_users",
                tg.map(|t| t.users_text()).unwrap_or_default(),
            ),
            (
                "telegram_groups",
                tg.map(|t| t.groups_text()).unwrap_or_default(),
            ),
            (
                "telegram_source_ranges",
                tg.map(|t| t.ranges_text()).unwrap_or_default(),
            ),
            (
                "telegram_console_url",
                tg.and_then(|t| t.console_url.clone()).unwrap_or_default(),
            ),
        ];
        let mut out = String::from("# honeycomb: the effective configuration (secrets masked)\n");
        for (k, v) in rows {
            let origin = if k == "backend" && self.backend.is_none() {
                "the default: an SQLite file in data_dir".to_owned()
            } else if k == "registry_keys" && self.registry_keys.is_none() {
                "not set: the APIary routes are off".to_owned()
            } else if k == "metrics_token" && self.metrics_token.is_none() {
                "not set: /metrics is open".to_owned()
            } else if k.starts_with("telegram_") && self.telegram.is_none() {
                "not set: the Telegram route is off".to_owned()
            } else {
                self.origin(k).to_string()
            };
            out.push_str(&format!("{k} = {}  # {origin}\n", toml_string(&v)));
        }
        out
    }
}

/// `"…"` with TOML escapes.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A URL with its password (and any `password`/`token`/`secret` query
/// parameter) replaced by `****`.
pub fn mask_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("****"));
    }
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        k.contains("password") || k.contains("token") || k.contains("secret")
    };
    if url.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "****".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A duration such as `30s`, `2m` or `1500ms` (humantime's syntax).
fn humantime_parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); e.g. 30s, 2m, 500ms"))
}
