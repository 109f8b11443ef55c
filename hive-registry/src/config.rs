//! Where the registry is and what to trust: [`RegistryConfig`], built in code,
//! from the environment ([`RegistryConfig::from_env`]) or from one URL
//! ([`RegistryConfig::from_url`]). Every bad value gets its own
//! [`ConfigError`] naming the variable or parameter.

use std::net::IpAddr;
use std::path::Path;

use hive_core::principal::TenantId;
use url::Url;

use crate::catalog::{AgentRef, Channel, validate_component};
use crate::keys::TrustedKey;

pub use hive_core::registry::{ConfigError, URL_PARAMETERS};

/// The environment variables [`RegistryConfig::from_env`] reads.
pub mod env {
    /// The registry's base URL (`https://ghcr.io`, `http://127.0.0.1:55000`).
    /// Required.
    pub const URL: &str = "HIVE_REGISTRY_URL";
    /// The repository prefix (`acme-org/agents`); default `hive`.
    pub const PREFIX: &str = "HIVE_REGISTRY_PREFIX";
    /// Comma-separated paths of PEM public keys trusted for the sandbox.
    pub const SANDBOX_KEYS: &str = "HIVE_REGISTRY_SANDBOX_KEYS";
    /// Comma-separated paths of PEM public keys trusted for production.
    pub const PRODUCTION_KEYS: &str = "HIVE_REGISTRY_PRODUCTION_KEYS";
    /// Path of a PEM bundle of extra CA certificates for the registry's TLS.
    pub const CA_FILE: &str = "HIVE_REGISTRY_CA_FILE";
    /// `true` to accept any TLS certificate (never in production).
    pub const INSECURE_SKIP_VERIFY: &str = "HIVE_REGISTRY_INSECURE_SKIP_VERIFY";
    /// `true` to allow plain HTTP to a registry that is not on loopback.
    pub const ALLOW_HTTP: &str = "HIVE_REGISTRY_ALLOW_HTTP";
}

/// The default repository prefix.
pub const DEFAULT_PREFIX: &str = "hive";

/// TLS settings for the registry connection (with `https` URLs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Extra CA certificates (PEM) to trust besides the system's.
    pub ca_certificates_pem: Vec<String>,
    /// Accept any certificate. For a test registry only: it makes TLS
    /// worthless.
    pub accept_invalid_certificates: bool,
}

/// The public keys trusted for each channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    /// Keys that sign sandbox agents (what publishing uses).
    pub sandbox: Vec<TrustedKey>,
    /// Keys that sign production agents (what promotion uses).
    pub production: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// The keys of `channel`.
    pub fn of(&self, channel: Channel) -> &[TrustedKey] {
        match channel {
            Channel::Sandbox => &self.sandbox,
            Channel::Production => &self.production,
        }
    }

    fn of_mut(&mut self, channel: Channel) -> &mut Vec<TrustedKey> {
        match channel {
            Channel::Sandbox => &mut self.sandbox,
            Channel::Production => &mut self.production,
        }
    }
}

/// Where the registry is, how agents are laid out in it and which keys are
/// trusted.
///
/// An agent `tenant/channel/name:version` lives in the repository
/// `PREFIX/tenant/channel/name` under the tag `version`; its cosign signature
/// under `sha256-<digest>.sig` and its attestations under
/// `sha256-<digest>.att` in the same repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The registry's base URL: scheme, host and port only.
    pub url: Url,
    /// The repository prefix (one or more path components).
    pub repository_prefix: String,
    /// Trusted keys per channel. A channel without keys trusts nothing (pulls
    /// of it fail closed).
    pub trusted_keys: TrustedKeys,
    /// TLS settings.
    pub tls: TlsConfig,
}

impl RegistryConfig {
    /// A configuration for the registry at `url` (`https://host[:port]`, or
    /// `http://` for a loopback host) with repository prefix `prefix`, no
    /// trusted keys and default TLS.
    pub fn new(url: &str, prefix: &str) -> Result<Self, ConfigError> {
        let url = parse_base_url("url", url, false, "allow_http")?;
        if url.path() != "/" {
            return Err(ConfigError::InvalidUrl {
                name: "url".into(),
                value: url.to_string(),
                reason: "the base URL has no path: give the prefix separately".into(),
            });
        }
        validate_prefix("prefix", prefix)?;
        Ok(RegistryConfig {
            url,
            repository_prefix: prefix.trim_matches('/').to_owned(),
            trusted_keys: TrustedKeys::default(),
            tls: TlsConfig::default(),
        })
    }

    /// The same configuration trusting `key` for `channel`.
    pub fn with_trusted_key(mut self, channel: Channel, key: TrustedKey) -> Self {
        let keys = self.trusted_keys.of_mut(channel);
        if !keys.contains(&key) {
            keys.push(key);
        }
        self
    }

    /// The same configuration with `tls`.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Reads the configuration from the process environment (see [`env`](mod@env)).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `var` (a lookup of the [`env`](mod@env) variables),
    /// so tests and hosts with their own settings source need not touch the
    /// process environment.
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let allow_http = match get(env::ALLOW_HTTP) {
            Some(v) => parse_bool(env::ALLOW_HTTP, &v)?,
            None => false,
        };
        let raw_url = get(env::URL).ok_or_else(|| ConfigError::Missing {
            name: env::URL.into(),
        })?;
        let url = parse_base_url(env::URL, &raw_url, allow_http, env::ALLOW_HTTP)?;
        if url.path() != "/" {
            return Err(ConfigError::InvalidUrl {
                name: env::URL.into(),
                value: raw_url,
                reason: format!(
                    "the base URL has no path: set the prefix in {}",
                    env::PREFIX
                ),
            });
        }
        let prefix = get(env::PREFIX).unwrap_or_else(|| DEFAULT_PREFIX.into());
        validate_prefix(env::PREFIX, &prefix)?;
        let mut config = RegistryConfig {
            url,
            repository_prefix: prefix.trim_matches('/').to_owned(),
            trusted_keys: TrustedKeys::default(),
            tls: TlsConfig::default(),
        };
        for (name, channel) in [
            (env::SANDBOX_KEYS, Channel::Sandbox),
            (env::PRODUCTION_KEYS, Channel::Production),
        ] {
            for path in get(name).iter().flat_map(|v| v.split(',')) {
                let path = path.trim();
                if !path.is_empty() {
                    config = config.with_trusted_key(channel, read_key(name, Path::new(path))?);
                }
            }
        }
        if let Some(path) = get(env::CA_FILE) {
            config.tls.ca_certificates_pem = read_ca(env::CA_FILE, Path::new(&path))?;
        }
        if let Some(v) = get(env::INSECURE_SKIP_VERIFY) {
            config.tls.accept_invalid_certificates = parse_bool(env::INSECURE_SKIP_VERIFY, &v)?;
        }
        Ok(config)
    }

    /// Reads the configuration from one URL:
    /// `https://ghcr.io/acme-org/agents?sandbox_key=/etc/hive/sandbox.pub&production_key=/etc/hive/production.pub`.
    /// The path is the repository prefix (default `hive`); parameters:
    /// `sandbox_key` and `production_key` (paths of PEM public keys, may
    /// repeat), `ca_file`, `insecure_skip_verify`, `allow_http`.
    pub fn from_url(s: &str) -> Result<Self, ConfigError> {
        let parsed = Url::parse(s).map_err(|e| ConfigError::InvalidUrl {
            name: "registry URL".into(),
            value: s.into(),
            reason: e.to_string(),
        })?;
        let mut allow_http = false;
        for (k, v) in parsed.query_pairs() {
            if !URL_PARAMETERS.contains(&k.as_ref()) {
                return Err(ConfigError::UnknownParameter { name: k.into() });
            }
            if k == "allow_http" {
                allow_http = parse_bool("allow_http", &v)?;
            }
        }
        let url = parse_base_url("registry URL", s, allow_http, "allow_http")?;
        let prefix = match parsed.path().trim_matches('/') {
            "" => DEFAULT_PREFIX.to_owned(),
            p => p.to_owned(),
        };
        validate_prefix("registry URL path", &prefix)?;
        let mut config = RegistryConfig {
            url: base_of(&url),
            repository_prefix: prefix,
            trusted_keys: TrustedKeys::default(),
            tls: TlsConfig::default(),
        };
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sandbox_key" => {
                    config = config
                        .with_trusted_key(Channel::Sandbox, read_key(&k, Path::new(v.as_ref()))?);
                }
                "production_key" => {
                    config = config.with_trusted_key(
                        Channel::Production,
                        read_key(&k, Path::new(v.as_ref()))?,
                    );
                }
                "ca_file" => config.tls.ca_certificates_pem = read_ca(&k, Path::new(v.as_ref()))?,
                "insecure_skip_verify" => {
                    config.tls.accept_invalid_certificates = parse_bool(&k, &v)?;
                }
                _ => {}
            }
        }
        Ok(config)
    }

    /// `host[:port]` of the registry, as it appears in references.
    pub fn registry_host(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Whether the registry is reached over plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.url.scheme() == "http"
    }

    /// The repository of an agent: `PREFIX/tenant/channel/name`.
    pub fn repository(&self, r: &AgentRef) -> String {
        format!("{}/{}", self.repository_prefix, r.agent_key())
    }

    /// `host/repository`, the identity a signature must name.
    pub fn qualified(&self, repository: &str) -> String {
        format!("{}/{}", self.registry_host(), repository)
    }

    /// The tenant, channel and agent name of a repository under the prefix, or
    /// `None` if it is not an agent repository of this configuration.
    pub fn parse_repository(&self, repository: &str) -> Option<(TenantId, Channel, String)> {
        let rest = repository
            .strip_prefix(&self.repository_prefix)?
            .strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (Some(tenant), Some(channel), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let channel = channel.parse().ok()?;
        validate_component("tenant", tenant).ok()?;
        validate_component("name", name).ok()?;
        Some((TenantId::new(tenant), channel, name.to_owned()))
    }
}

fn base_of(url: &Url) -> Url {
    let mut base = url.clone();
    base.set_path("/");
    base.set_query(None);
    base.set_fragment(None);
    base
}

fn parse_base_url(
    name: &str,
    value: &str,
    allow_http: bool,
    opt_in: &str,
) -> Result<Url, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidUrl {
        name: name.into(),
        value: value.into(),
        reason,
    };
    let url = Url::parse(value.trim()).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "https" | "http" => {}
        other => {
            return Err(ConfigError::UnsupportedScheme {
                name: name.into(),
                scheme: other.into(),
            });
        }
    }
    let Some(host) = url.host_str() else {
        return Err(invalid("no host".into()));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in the registry URL: Hive mints registry tokens".into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("a fragment has no meaning here".into()));
    }
    if url.scheme() == "http" && !allow_http && !is_loopback(host) {
        return Err(ConfigError::InsecureHttp {
            name: name.into(),
            host: host.into(),
            opt_in: opt_in.into(),
        });
    }
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn validate_prefix(name: &str, prefix: &str) -> Result<(), ConfigError> {
    let p = prefix.trim_matches('/');
    let invalid = |reason: String| ConfigError::InvalidPrefix {
        name: name.into(),
        value: prefix.into(),
        reason,
    };
    if p.is_empty() {
        return Err(invalid("empty".into()));
    }
    if p.len() > 128 {
        return Err(invalid("longer than 128 bytes".into()));
    }
    for component in p.split('/') {
        validate_component("component", component).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::InvalidBool {
            name: name.into(),
            value: value.into(),
        }),
    }
}

fn read_file(name: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        name: name.into(),
        path: path.into(),
        source,
    })
}

fn read_key(name: &str, path: &Path) -> Result<TrustedKey, ConfigError> {
    TrustedKey::from_pem(&read_file(name, path)?).map_err(|reason| ConfigError::InvalidKey {
        name: name.into(),
        origin: path.display().to_string(),
        reason,
    })
}

fn read_ca(name: &str, path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = read_file(name, path)?;
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        certs.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    if certs.is_empty() {
        return Err(ConfigError::InvalidCertificate {
            name: name.into(),
            origin: path.display().to_string(),
        });
    }
    Ok(certs)
}
