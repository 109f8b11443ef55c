//! A real `distribution` registry (the Debian `docker-registry` package) per
//! test, started by a guard on a free loopback port with a throwaway config,
//! plain or in `auth.token` mode with Hive's token service serving the realm;
//! and an engine wired with the scope policy and a recording auditor.
//!
//! Without the `docker-registry` binary the suite says so loudly and skips —
//! except under `CI=true`, where it fails.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hive_core::audit::{AuditEntry, AuditOutcome, Auditor};
use hive_core::engine::HiveConfig;
use hive_core::{Hive, Principal};
use hive_iam::ScopePolicy;
use hive_iam::registry_token::{
    RegistrySigningKey, RegistryTokenConfig, RegistryTokenIssuer, RegistryTokenService,
    basic_credentials,
};
use hive_iam::{TokenKind, TokenRequest, TokenService};
use hive_registry::{
    AgentSigningKey, Apiary, Channel, PromotionPolicy, RegistryConfig, RegistryCredentials,
};
use hive_store::MemoryStore;
use std::sync::Mutex;

/// The registry binary the Debian package installs.
pub const REGISTRY_BIN: &str = "docker-registry";

fn ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("yes")
    )
}

fn find_binary() -> Option<PathBuf> {
    // An explicit binary (or a path that does not exist, to see the
    // missing-binary behaviour).
    if let Ok(p) = std::env::var("HIVE_TEST_REGISTRY_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(REGISTRY_BIN))
        .find(|p| p.is_file())
}

/// `auth.token` settings of a registry.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert: PathBuf,
}

/// A running `docker-registry`; dropping it kills the process.
pub struct RegistryGuard {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RegistryGuard {
    /// Starts a registry, or `None` (after saying so) when the binary is
    /// missing outside CI. Panics when it cannot start.
    pub fn start(dir: tempfile::TempDir, auth: Option<&TokenAuth>) -> Option<RegistryGuard> {
        let Some(bin) = find_binary() else {
            let msg = format!(
                "{REGISTRY_BIN} is not installed (apt-get install docker-registry, or \
                 scripts/test-all): the APIary registry suite cannot run"
            );
            if ci() {
                panic!("CI=true: {msg}");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        };
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(&config, registry_config(dir.path(), port, auth)).expect("write config");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let mut guard = RegistryGuard { child, port, dir };
        if guard.wait_ready(Duration::from_secs(30)) {
            return Some(guard);
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        drop(guard);
        panic!("docker-registry did not become ready on 127.0.0.1:{port}; log:\n{log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(status) = http_status(self.port, "/v2/")
                && (status == 200 || status == 401)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps the blob `digest` on disk (to tamper with it).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn registry_config(dir: &Path, port: u16, auth: Option<&TokenAuth>) -> String {
    let mut c = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: hive-test-secret\n",
        dir.join("data").display()
    );
    if let Some(a) = auth {
        c.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            a.realm,
            a.service,
            a.issuer,
            a.cert.display()
        ));
    }
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status code of `GET path` on the loopback port, if it answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_millis(200),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Records every audit entry.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<AuditEntry>>);

#[async_trait]
impl Auditor for Recorder {
    async fn record(&self, entries: Vec<AuditEntry>) -> hive_core::Result<()> {
        self.0.lock().expect("recorder lock").extend(entries);
        Ok(())
    }
}

impl Recorder {
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.0.lock().expect("recorder lock").clone()
    }

    /// Entries of `action` with `outcome` by `actor`.
    pub fn find(&self, actor: &str, action: &str, outcome: AuditOutcome) -> Vec<AuditEntry> {
        self.entries()
            .into_iter()
            .filter(|e| e.actor.as_str() == actor && e.action == action && e.outcome == outcome)
            .collect()
    }
}

/// A registry, an engine and an APIary on it.
pub struct Fixture {
    pub hive: Hive,
    pub audit: Arc<Recorder>,
    pub apiary: Apiary,
    pub config: RegistryConfig,
    pub sandbox: AgentSigningKey,
    pub production: AgentSigningKey,
    pub api_tokens: TokenService,
    pub realm_port: Option<u16>,
    pub issuer: Option<Arc<RegistryTokenIssuer>>,
    // Dropped last: the registry outlives the clients.
    pub registry: RegistryGuard,
}

fn engine() -> (Hive, Arc<Recorder>) {
    let store = Arc::new(MemoryStore::default());
    let audit = Arc::new(Recorder::default());
    let hive = Hive::builder()
        .store(store)
        .authorizer(Arc::new(ScopePolicy::new()))
        .auditor(audit.clone())
        .config(HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            ..HiveConfig::default()
        })
        .build()
        .expect("hive builds");
    (hive, audit)
}

fn base_config(
    registry: &RegistryGuard,
    sandbox: &AgentSigningKey,
    production: &AgentSigningKey,
) -> RegistryConfig {
    RegistryConfig::new(&registry.url(), "hive")
        .expect("valid config")
        .with_trusted_key(Channel::Sandbox, sandbox.public_key().clone())
        .with_trusted_key(Channel::Production, production.public_key().clone())
}

/// A plain registry (no auth): Hive alone enforces its decisions.
pub async fn plain(policy: PromotionPolicy) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryGuard::start(dir, None)?;
    let (hive, audit) = engine();
    let sandbox = AgentSigningKey::generate();
    let production = AgentSigningKey::generate();
    let config = base_config(&registry, &sandbox, &production);
    let apiary = Apiary::builder(hive.clone(), config.clone())
        .signing_key(Channel::Sandbox, sandbox.clone())
        .signing_key(Channel::Production, production.clone())
        .promotion_policy(policy)
        .build()
        .expect("apiary builds");
    let api_tokens = TokenService::for_hive(&hive);
    Some(Fixture {
        hive,
        audit,
        apiary,
        config,
        sandbox,
        production,
        api_tokens,
        realm_port: None,
        issuer: None,
        registry,
    })
}

pub const SERVICE: &str = "hive-test-registry";
pub const ISSUER: &str = "hive-test";

/// A registry in `auth.token` mode whose realm is Hive's token service,
/// served by this test over HTTP (axum): API tokens (`hive_…`) as the Basic
/// password authenticate.
pub async fn with_tokens(policy: PromotionPolicy) -> Option<Fixture> {
    find_binary().or_else(|| {
        // Let start() report the missing binary consistently.
        RegistryGuard::start(tempfile::tempdir().expect("tempdir"), None);
        None
    })?;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = RegistrySigningKey::generate();
    let key_path = dir.path().join("token-key.pem");
    let cert = dir.path().join("token-cert.pem");
    std::fs::write(&key_path, key.to_pkcs8_pem().expect("pem")).expect("write key");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=hive-test-token",
            "-key",
        ])
        .arg(&key_path)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("realm listener");
    let realm_port = listener.local_addr().expect("addr").port();
    let auth = TokenAuth {
        realm: format!("http://127.0.0.1:{realm_port}/token"),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert,
    };
    let registry = RegistryGuard::start(dir, Some(&auth))?;
    let (hive, audit) = engine();
    let sandbox = AgentSigningKey::generate();
    let production = AgentSigningKey::generate();
    let config = base_config(&registry, &sandbox, &production);
    let issuer = Arc::new(
        RegistryTokenIssuer::new(
            key,
            RegistryTokenConfig {
                issuer: ISSUER.into(),
                service: SERVICE.into(),
                ttl: Duration::from_secs(120),
            },
        )
        .expect("issuer"),
    );
    let apiary = Apiary::builder(hive.clone(), config.clone())
        .credentials(RegistryCredentials::Tokens(issuer.clone()))
        .signing_key(Channel::Sandbox, sandbox.clone())
        .signing_key(Channel::Production, production.clone())
        .promotion_policy(policy)
        .build()
        .expect("apiary builds");
    let api_tokens = TokenService::for_hive(&hive);
    let realm = Realm {
        registry_tokens: apiary.token_service().expect("token mode"),
        api_tokens: api_tokens.clone(),
    };
    tokio::spawn(serve_realm(listener, realm));
    Some(Fixture {
        hive,
        audit,
        apiary,
        config,
        sandbox,
        production,
        api_tokens,
        realm_port: Some(realm_port),
        issuer: Some(issuer),
        registry,
    })
}

#[derive(Clone)]
struct Realm {
    registry_tokens: RegistryTokenService,
    api_tokens: TokenService,
}

async fn serve_realm(listener: tokio::net::TcpListener, realm: Realm) {
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    async fn token(
        State(realm): State<Realm>,
        headers: HeaderMap,
        RawQuery(query): RawQuery,
    ) -> axum::response::Response {
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_credentials);
        let Some((_user, password)) = credentials else {
            return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
        };
        let principal = match realm.api_tokens.resolve(&password).await {
            Ok(p) => p,
            Err(_) => return (StatusCode::UNAUTHORIZED, "invalid credentials").into_response(),
        };
        match realm
            .registry_tokens
            .answer(&principal, query.as_deref().unwrap_or(""))
            .await
        {
            Ok(t) => axum::Json(t.to_response()).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }

    let app = axum::Router::new()
        .route("/token", axum::routing::get(token))
        .with_state(realm);
    let _ = axum::serve(listener, app).await;
}

impl Fixture {
    /// An API token for `principal` of `tenant` with `kind`, issued by that
    /// tenant's admin.
    pub async fn api_token(&self, tenant: &str, principal: &str, kind: TokenKind) -> String {
        let admin = Principal::admin(tenant, "token-admin");
        self.api_tokens
            .issue(&self.hive, &admin, TokenRequest::new(principal, kind))
            .await
            .expect("token issued")
            .token
    }
}

/// Runs a command, returning stdout; panics with stderr on failure.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
