//! Registry tokens: short-lived ES256 JSON Web Tokens for a distribution
//! registry in `auth.token` mode, so that the registry itself enforces what
//! Hive decided.
//!
//! # The flow
//!
//! A client (Hive's own `hive-registry`, a worker runtime, `docker`, `curl`)
//! asks the registry for something; the registry answers `401` with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="repository:NAME:pull"`.
//! The client calls the realm — an HTTP endpoint the host serves — with its
//! credentials and the scopes it wants. The endpoint resolves the credentials
//! to a [`Principal`] and calls [`RegistryTokenService::answer`], which asks the
//! [`RegistryAccess`] policy which of the requested actions the principal gets
//! on each resource and mints a token carrying exactly those grants (the
//! distribution token protocol: a token grants a subset of the request, never
//! an error for the part that is refused). The registry checks the token's
//! signature, issuer, audience and lifetime and allows only what its `access`
//! claim lists.
//!
//! # Token format
//!
//! A compact JWS with header `{"typ":"JWT","alg":"ES256","kid":KID}` where
//! `KID` is the libtrust key id of the signing key (base32 of the first 240
//! bits of the SHA-256 of the key's DER `SubjectPublicKeyInfo`, in 12 groups of
//! four joined by `:`), which is how distribution 2.x finds the key among the
//! certificates of its `auth.token.rootcertbundle`. Claims: `iss`, `sub`
//! (`tenant/principal`), `aud` (the registry's service name, a single string as
//! distribution 2.8 requires), `exp`, `nbf`, `iat`, `jti` and `access`
//! (`[{"type","name","actions"}]`).
//!
//! # Registry configuration
//!
//! ```yaml
//! auth:
//!   token:
//!     realm: https://hive.example/registry/token   # the host's endpoint
//!     service: hive-registry                        # RegistryTokenConfig::service
//!     issuer: hive                                  # RegistryTokenConfig::issuer
//!     rootcertbundle: /etc/registry/hive-token.pem  # a certificate of the key
//! ```
//!
//! The certificate only carries the public key (any self-signed certificate of
//! the key works, e.g. `openssl req -new -x509 -key key.pem -subj /CN=hive`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hive_core::clock::{Clock, SystemClock};
use hive_core::principal::Principal;
use hive_core::{Error, Result};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The action name of registry token refusals (`Forbidden { action, .. }`).
pub const REGISTRY_TOKEN_ACTION: &str = "registry.token";

/// The longest accepted token lifetime.
pub const MAX_REGISTRY_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// One entry of a token request or of a token's `access` claim: a resource of
/// the registry and actions on it.
///
/// The wire form is distribution's scope string `TYPE:NAME:ACTIONS`, e.g.
/// `repository:hive/acme/sandbox/summarize:pull,push` or
/// `registry:catalog:*`. A repository name may itself contain `:` (a registry
/// host with a port), so the type is everything before the first `:` and the
/// actions everything after the last one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegistryScope {
    /// The resource type: `repository` or `registry`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The resource name: a repository path, or `catalog`.
    pub name: String,
    /// The actions: `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

impl RegistryScope {
    /// A repository scope.
    pub fn repository(name: impl Into<String>, actions: &[&str]) -> Self {
        RegistryScope {
            resource_type: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// The registry catalog scope (`registry:catalog:*`).
    pub fn catalog() -> Self {
        RegistryScope {
            resource_type: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }

    /// Parses a scope string (see the type docs). An empty action list is
    /// allowed (`repository:x:`), an empty type or name is not.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument {
            message: format!("registry scope {s:?}: {why} (expected TYPE:NAME:ACTIONS)"),
        };
        let (resource_type, rest) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("no actions part"))?;
        if resource_type.is_empty() {
            return Err(bad("empty type"));
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let actions = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(RegistryScope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// Whether the scope grants `action` (`*` grants everything).
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == "*")
    }
}

impl fmt::Display for RegistryScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name,
            self.actions.join(",")
        )
    }
}

/// Decides which of the requested registry actions a principal gets.
///
/// Implemented by the component that owns the catalog (`hive-registry`'s
/// access policy). Contract:
///
/// - return the subset of `requested.actions` to grant (possibly empty); never
///   an action that was not requested;
/// - a resource the principal may not know about gets an empty grant, not an
///   error (the registry then answers `401`/`403` as it does for anything
///   else), so a token request reveals nothing;
/// - an `Err` means the decision could not be made (a store failure): the
///   realm answers with an error and mints nothing. Refusals of privileged
///   actions should be audited by the implementation (through the engine's
///   `Hive::deny`/`Hive::authorize`).
#[async_trait]
pub trait RegistryAccess: Send + Sync + fmt::Debug + 'static {
    /// The actions of `requested` that `principal` is granted.
    async fn grant(&self, principal: &Principal, requested: &RegistryScope) -> Result<Vec<String>>;
}

/// Settings of the registry token issuer. They must match the registry's
/// `auth.token` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryTokenConfig {
    /// The `iss` claim; the registry's `auth.token.issuer`.
    pub issuer: String,
    /// The `aud` claim; the registry's `auth.token.service`. A request naming
    /// another service is refused.
    pub service: String,
    /// How long a token is valid (1 second to [`MAX_REGISTRY_TOKEN_TTL`]).
    /// Distribution allows 60 seconds of clock skew on top.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for RegistryTokenConfig {
    fn default() -> Self {
        RegistryTokenConfig {
            issuer: "hive".into(),
            service: "hive-registry".into(),
            ttl: Duration::from_secs(300),
        }
    }
}

impl RegistryTokenConfig {
    /// Checks the settings: non-empty issuer and service, a TTL of 1 second to
    /// [`MAX_REGISTRY_TOKEN_TTL`].
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { message });
        if self.issuer.trim().is_empty() {
            return bad("registry token issuer must not be empty".into());
        }
        if self.service.trim().is_empty() {
            return bad("registry token service must not be empty".into());
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > MAX_REGISTRY_TOKEN_TTL {
            return bad(format!(
                "registry token ttl must be 1s to {}s, got {:?}",
                MAX_REGISTRY_TOKEN_TTL.as_secs(),
                self.ttl
            ));
        }
        Ok(())
    }
}

/// The claims of a registry token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: `tenant/principal`.
    pub sub: String,
    /// Audience: the registry's service name.
    pub aud: String,
    /// Expiry, seconds since the UNIX epoch.
    pub exp: i64,
    /// Not before, seconds since the UNIX epoch.
    pub nbf: i64,
    /// Issued at, seconds since the UNIX epoch.
    pub iat: i64,
    /// A unique id (128 random bits, hex).
    pub jti: String,
    /// What the token grants.
    pub access: Vec<RegistryScope>,
}

/// A minted token, with what the realm answers.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryToken {
    /// The compact JWS.
    pub token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// Its claims (what it grants).
    pub claims: RegistryClaims,
}

impl fmt::Debug for RegistryToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryToken")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("claims", &self.claims)
            .finish()
    }
}

impl RegistryToken {
    /// The realm's JSON answer: `{"token", "access_token", "expires_in"}` (both
    /// names, as distribution's clients accept either).
    pub fn to_response(&self) -> serde_json::Value {
        serde_json::json!({
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
        })
    }
}

/// The key that signs registry tokens (ECDSA P-256).
#[derive(Clone)]
pub struct RegistrySigningKey {
    key: SigningKey,
    key_id: String,
}

impl fmt::Debug for RegistrySigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrySigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl RegistrySigningKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::generate())
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| Error::InvalidArgument {
            message: format!("registry token key: not a PKCS#8 PEM P-256 private key: {e}"),
        })?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let key_id = libtrust_key_id(&spki_der(key.verifying_key()));
        RegistrySigningKey { key, key_id }
    }

    /// The private key as PKCS#8 PEM (to hand to `openssl` for the
    /// registry's certificate, or to store as a secret).
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::Backend {
                message: format!("encoding the registry token key: {e}"),
                source: None,
            })
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The libtrust key id distribution uses to find the key (the JWS `kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The libtrust key id of a public key given as DER `SubjectPublicKeyInfo`:
/// the first 30 bytes of its SHA-256, base32 (RFC 4648, no padding), in 12
/// groups of 4 joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut out = String::with_capacity(59);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in &hash[..30] {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            if !out.is_empty() && out.len() % 5 == 4 {
                out.push(':');
            }
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    out
}

/// Mints and checks registry tokens. Holds the signing key; knows nothing of
/// policy (the caller decides the grants). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RegistryTokenIssuer {
    key: RegistrySigningKey,
    config: RegistryTokenConfig,
    clock: Arc<dyn Clock>,
}

impl RegistryTokenIssuer {
    /// An issuer with `key` and `config` (checked with
    /// [`RegistryTokenConfig::validate`]), on the wall clock.
    pub fn new(key: RegistrySigningKey, config: RegistryTokenConfig) -> Result<Self> {
        config.validate()?;
        Ok(RegistryTokenIssuer {
            key,
            config,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same issuer reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The settings.
    pub fn config(&self) -> &RegistryTokenConfig {
        &self.config
    }

    /// The signing key (its public half and key id).
    pub fn key(&self) -> &RegistrySigningKey {
        &self.key
    }

    /// Mints a token for `subject` granting exactly `access`. The caller has
    /// decided the grants; use [`RegistryTokenService::issue`] to have a
    /// [`RegistryAccess`] policy decide them.
    pub fn mint(&self, subject: &str, access: Vec<RegistryScope>) -> Result<RegistryToken> {
        let now = self.clock.now().as_millis().div_euclid(1000);
        let ttl = self.config.ttl.as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| Error::Backend {
            message: format!("no randomness for a registry token id: {e}"),
            source: None,
        })?;
        let claims = RegistryClaims {
            iss: self.config.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.config.service.clone(),
            exp: now + ttl as i64,
            nbf: now,
            iat: now,
            jti: hex::encode(jti),
            access,
        };
        let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "kid": self.key.key_id });
        let signing_input = format!("{}.{}", b64_json(&header), b64_json(&claims));
        let signature: Signature = self.key.key.sign(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", B64URL.encode(signature.to_bytes()));
        Ok(RegistryToken {
            token,
            expires_in: ttl,
            claims,
        })
    }

    /// Checks a token as the registry does — the signature (ES256, this
    /// issuer's key id), issuer, audience and lifetime (with no leeway) — and
    /// returns its claims. Every failure is `Forbidden` with the reason.
    pub fn verify(&self, token: &str) -> Result<RegistryClaims> {
        let deny = |reason: &str| Error::Forbidden {
            action: REGISTRY_TOKEN_ACTION.into(),
            reason: format!("invalid registry token: {reason}"),
        };
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(deny("not a compact JWS"));
        };
        let header: serde_json::Value = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| deny("malformed header"))?;
        if header["alg"] != "ES256" {
            return Err(deny("alg is not ES256"));
        }
        if header["kid"] != self.key.key_id.as_str() {
            return Err(deny("signed by another key"));
        }
        let signature = B64URL
            .decode(s)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| deny("malformed signature"))?;
        self.key
            .key
            .verifying_key()
            .verify(format!("{h}.{c}").as_bytes(), &signature)
            .map_err(|_| deny("bad signature"))?;
        let claims: RegistryClaims = B64URL
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| deny("malformed claims"))?;
        if claims.iss != self.config.issuer {
            return Err(deny("wrong issuer"));
        }
        if claims.aud != self.config.service {
            return Err(deny("wrong audience"));
        }
        let now = self.clock.now().as_millis().div_euclid(1000);
        if now >= claims.exp || now < claims.nbf {
            return Err(deny("expired or not yet valid"));
        }
        Ok(claims)
    }
}

/// Unpadded base64url of a value's JSON (serializing plain data cannot fail).
fn b64_json<T: Serialize>(value: &T) -> String {
    B64URL.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// The registry's token service: an issuer plus the policy that decides the
/// grants. What a realm endpoint calls.
#[derive(Clone, Debug)]
pub struct RegistryTokenService {
    issuer: Arc<RegistryTokenIssuer>,
    access: Arc<dyn RegistryAccess>,
}

impl RegistryTokenService {
    /// A service minting with `issuer` the grants `access` decides.
    pub fn new(issuer: Arc<RegistryTokenIssuer>, access: Arc<dyn RegistryAccess>) -> Self {
        RegistryTokenService { issuer, access }
    }

    /// The issuer.
    pub fn issuer(&self) -> &Arc<RegistryTokenIssuer> {
        &self.issuer
    }

    /// A token for `principal` granting, for each requested scope, the
    /// actions the policy allows (resources with no allowed action are left
    /// out). `service`, when given, must be the configured service.
    pub async fn issue(
        &self,
        principal: &Principal,
        service: Option<&str>,
        requested: &[RegistryScope],
    ) -> Result<RegistryToken> {
        if let Some(service) = service
            && service != self.issuer.config.service
        {
            return Err(Error::InvalidArgument {
                message: format!(
                    "registry token requested for service {service:?}, this issuer serves {:?}",
                    self.issuer.config.service
                ),
            });
        }
        let mut access: Vec<RegistryScope> = Vec::new();
        for scope in requested {
            let granted = self.access.grant(principal, scope).await?;
            let actions: Vec<String> = scope
                .actions
                .iter()
                .filter(|a| granted.contains(a))
                .cloned()
                .collect();
            if actions.is_empty() {
                continue;
            }
            match access
                .iter_mut()
                .find(|s| s.resource_type == scope.resource_type && s.name == scope.name)
            {
                Some(existing) => {
                    for a in actions {
                        if !existing.actions.contains(&a) {
                            existing.actions.push(a);
                        }
                    }
                }
                None => access.push(RegistryScope {
                    actions,
                    ..scope.clone()
                }),
            }
        }
        let subject = format!("{}/{}", principal.tenant, principal.id);
        self.issuer.mint(&subject, access)
    }

    /// Answers a realm request: `query` is the request's raw query string
    /// (`service=…&scope=…&scope=…`, percent-encoded; other parameters such
    /// as `account` or `client_id` are ignored). The caller has resolved the
    /// request's credentials to `principal`.
    pub async fn answer(&self, principal: &Principal, query: &str) -> Result<RegistryToken> {
        let mut service = None;
        let mut scopes = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            match percent_decode(k)?.as_str() {
                "service" => service = Some(v),
                // One parameter may carry several scopes separated by spaces.
                "scope" => {
                    for s in v.split(' ').filter(|s| !s.is_empty()) {
                        scopes.push(RegistryScope::parse(s)?);
                    }
                }
                _ => {}
            }
        }
        self.issue(principal, service.as_deref(), &scopes).await
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn percent_decode(s: &str) -> Result<String> {
    let bad = || Error::InvalidArgument {
        message: format!("malformed percent-encoding in {s:?}"),
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The username and password of an HTTP `Authorization: Basic …` header value
/// (what a realm endpoint receives from `docker login`, `curl -u` or
/// oci-client), or `None` if it is not Basic or malformed.
pub fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_core::ManualClock;
    use hive_core::clock::Timestamp;

    #[derive(Debug)]
    struct PullOnly;

    #[async_trait]
    impl RegistryAccess for PullOnly {
        async fn grant(&self, p: &Principal, s: &RegistryScope) -> Result<Vec<String>> {
            if s.resource_type == "repository" && s.name.starts_with(&format!("hive/{}/", p.tenant))
            {
                Ok(vec!["pull".into()])
            } else {
                Ok(vec![])
            }
        }
    }

    fn issuer_at(ms: i64) -> (RegistryTokenIssuer, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(ms)));
        let issuer = RegistryTokenIssuer::new(
            RegistrySigningKey::generate(),
            RegistryTokenConfig::default(),
        )
        .expect("valid config")
        .with_clock(clock.clone());
        (issuer, clock)
    }

    #[test]
    fn scope_strings_round_trip_and_keep_ports_in_names() {
        let s = RegistryScope::parse("repository:localhost:5000/hive/a:pull,push").unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.name, "localhost:5000/hive/a");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:localhost:5000/hive/a:pull,push");
        assert!(RegistryScope::catalog().allows("anything"));
        for bad in [
            "",
            "repository",
            "repository:x",
            ":x:pull",
            "repository::pull",
        ] {
            assert!(
                RegistryScope::parse(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn key_id_has_twelve_groups_of_four_base32_characters() {
        let key = RegistrySigningKey::generate();
        let groups: Vec<&str> = key.key_id().split(':').collect();
        assert_eq!(groups.len(), 12, "{}", key.key_id());
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        }));
        // The same key read back from PEM has the same id.
        let again = RegistrySigningKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(again.key_id(), key.key_id());
    }

    #[test]
    fn libtrust_key_id_matches_a_known_vector() {
        // SHA-256("") = e3b0c442…; its first 30 bytes in base32.
        assert_eq!(
            libtrust_key_id(b""),
            "4OYM:IQUY:7QOB:JGX3:6TEJ:S35Z:EQT2:4QPE:MSNZ:GTFE:SWMR:W6CS"
        );
    }

    #[test]
    fn minted_token_verifies_and_carries_es256_header_and_claims() {
        let (issuer, _) = issuer_at(1_700_000_000_000);
        let t = issuer
            .mint(
                "acme/alice",
                vec![RegistryScope::repository("hive/acme/x", &["pull"])],
            )
            .unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(t.token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], issuer.key().key_id());
        let claims = issuer.verify(&t.token).unwrap();
        assert_eq!(claims.sub, "acme/alice");
        assert_eq!(claims.aud, "hive-registry");
        assert_eq!(claims.exp - claims.iat, 300);
        assert_eq!(claims.access[0].name, "hive/acme/x");
        assert_eq!(t.to_response()["expires_in"], 300);
    }

    #[test]
    fn verify_refuses_expired_foreign_and_altered_tokens() {
        let (issuer, clock) = issuer_at(1_700_000_000_000);
        let t = issuer.mint("acme/alice", vec![]).unwrap();
        let (other, _) = issuer_at(1_700_000_000_000);
        assert!(other.verify(&t.token).is_err(), "another key's token");
        let mut parts: Vec<String> = t.token.split('.').map(str::to_owned).collect();
        let mut claims = t.claims.clone();
        claims.access = vec![RegistryScope::catalog()];
        parts[1] = B64URL.encode(serde_json::to_vec(&claims).unwrap());
        assert!(issuer.verify(&parts.join(".")).is_err(), "altered claims");
        clock.advance(Duration::from_secs(301));
        assert!(issuer.verify(&t.token).is_err(), "expired");
    }

    #[tokio::test]
    async fn answer_grants_only_what_the_policy_allows() {
        let (issuer, _) = issuer_at(1_700_000_000_000);
        let service = RegistryTokenService::new(Arc::new(issuer), Arc::new(PullOnly));
        let alice = Principal::user("acme", "alice");
        let t = service
            .answer(
                &alice,
                "account=alice&service=hive-registry\
                 &scope=repository%3Ahive%2Facme%2Fsandbox%2Fx%3Apull%2Cpush\
                 &scope=repository:hive/globex/sandbox/y:pull+registry:catalog:*",
            )
            .await
            .unwrap();
        assert_eq!(
            t.claims.access,
            [RegistryScope::repository("hive/acme/sandbox/x", &["pull"])]
        );
        let wrong = service
            .answer(&alice, "service=another&scope=repository:x:pull")
            .await;
        assert!(matches!(wrong, Err(Error::InvalidArgument { .. })));
        assert!(service.answer(&alice, "scope=%zz").await.is_err());
    }

    #[test]
    fn basic_credentials_are_decoded() {
        assert_eq!(
            basic_credentials("Basic YWxpY2U6aGl2ZV94Lnk="),
            Some(("alice".into(), "hive_x.y".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn config_validation_names_the_bad_value() {
        let long = RegistryTokenConfig {
            ttl: Duration::from_secs(7200),
            ..RegistryTokenConfig::default()
        };
        assert!(long.validate().unwrap_err().to_string().contains("ttl"));
        let blank = RegistryTokenConfig {
            service: " ".into(),
            ..RegistryTokenConfig::default()
        };
        assert!(
            blank
                .validate()
                .unwrap_err()
                .to_string()
                .contains("service")
        );
    }
}
