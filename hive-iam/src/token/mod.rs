//! API tokens: issued by tenant admins, shown once, stored only as a hash,
//! resolved to a [`Principal`].
//!
//! # Format
//!
//! A token is `hive_<id>.<secret>`: `<id>` is the token's id (a UUIDv7 in 32
//! lowercase hex digits, not secret: it names the token in listings, audit
//! entries and [`TokenService::revoke`]); `<secret>` is 256 bits from the
//! operating system's RNG in unpadded base64url (43 characters). The secret is
//! in the answer to [`TokenService::issue`] and nowhere else: the store keeps
//! the lowercase hex SHA-256 of its 32 bytes (`secret_sha256`), in a record of
//! kind [`TOKEN_KIND`] whose id is the token id.
//!
//! # Resolving
//!
//! [`TokenService::resolve`] looks the id up and compares the SHA-256 of the
//! presented secret with the stored one in constant time. A malformed string, an
//! unknown id, a wrong secret, an expired or a revoked token all get the same
//! error — `Error::Forbidden { action: "token.resolve", reason: "invalid token" }`
//! ([`is_invalid_token`]) — so a caller learns nothing about which. Store
//! failures are returned as they are (`BackendUnavailable`…): they say nothing
//! about the token, and must not be mistaken for a refusal.

mod secret;

pub use secret::TOKEN_PREFIX;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hive_core::auth::{Action, Resource};
use hive_core::clock::{Clock, SystemClock, Timestamp};
use hive_core::id::NodeId;
use hive_core::node::{Node, NodeOwner};
use hive_core::principal::{Principal, PrincipalId, PrincipalKind, Scope, Scopes, TenantId};
use hive_core::store::{Record, RecordQuery, RecordStore, RecordWrite};
use hive_core::{Error, Hive, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::role::Role;

/// The record kind of API tokens (id = the token id).
pub const TOKEN_KIND: &str = "token";

/// The `action` of the error every refused [`TokenService::resolve`] gets.
pub const RESOLVE_ACTION: &str = "token.resolve";

/// The `reason` of the error every refused [`TokenService::resolve`] gets.
pub const INVALID_TOKEN: &str = "invalid token";

/// The longest accepted description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// The longest accepted principal name, in bytes.
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// Whether `e` is [`TokenService::resolve`]'s refusal (as opposed to a store
/// failure).
pub fn is_invalid_token(e: &Error) -> bool {
    matches!(e, Error::Forbidden { action, reason } if action == RESOLVE_ACTION && reason == INVALID_TOKEN)
}

fn invalid_token() -> Error {
    Error::Forbidden {
        action: RESOLVE_ACTION.to_owned(),
        reason: INVALID_TOKEN.to_owned(),
    }
}

/// What kind of principal a token stands for. A worker token is bound to one
/// node ([`TokenService::issue_worker`]) and resolves to that node's
/// [`Principal::worker`]; [`TokenService::issue`] refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A user.
    User,
    /// An operator.
    Operator,
    /// A tenant admin.
    Admin,
    /// The worker of one node (a remote worker over HTTP).
    Worker,
}

impl TokenKind {
    /// The role of the token's principal.
    pub fn role(self) -> Role {
        match self {
            TokenKind::User => Role::User,
            TokenKind::Operator => Role::Operator,
            TokenKind::Admin => Role::Admin,
            TokenKind::Worker => Role::Worker,
        }
    }

    /// The wire name (`user`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        self.role().as_str()
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to issue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// The tenant the token acts in: the caller's when `None`; another one only
    /// for a caller with `system:admin`.
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// The principal the token stands for.
    pub principal: PrincipalId,
    /// Its kind. Not above the caller's own (a user cannot mint an operator)
    /// unless the caller has `system:admin`.
    pub kind: TokenKind,
    /// Its scopes. Only scopes the caller holds itself, unless the caller has
    /// `system:admin`.
    pub scopes: Scopes,
    /// How long it is valid (forever when `None`).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// What it is for, for people.
    #[serde(default)]
    pub description: String,
}

impl TokenRequest {
    /// A token for `principal` of kind `kind`, with the kind's preset scopes, in
    /// the caller's tenant, that never expires.
    pub fn new(principal: impl Into<PrincipalId>, kind: TokenKind) -> Self {
        TokenRequest {
            tenant: None,
            principal: principal.into(),
            kind,
            scopes: kind.role().scopes(),
            ttl: None,
            description: String::new(),
        }
    }

    /// With these scopes instead of the kind's preset.
    pub fn scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// Valid for `ttl` from issue.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// With a description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// In `tenant` (needs `system:admin` unless it is the caller's).
    pub fn tenant(mut self, tenant: impl Into<TenantId>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidArgument { message });
        let principal = self.principal.as_str();
        if principal.is_empty() || principal.len() > MAX_PRINCIPAL_LEN {
            return invalid(format!(
                "a token's principal must be 1 to {MAX_PRINCIPAL_LEN} bytes"
            ));
        }
        if self.tenant.as_ref().is_some_and(|t| t.as_str().is_empty()) {
            return invalid("a token's tenant must not be empty".into());
        }
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return invalid(format!(
                "a token's description must be at most {MAX_DESCRIPTION_LEN} bytes"
            ));
        }
        if self.ttl.is_some_and(|d| d.is_zero()) {
            return invalid("a token's ttl must be greater than zero".into());
        }
        Ok(())
    }
}

/// Whether a token may be used now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// It resolves.
    Active,
    /// Its ttl has passed.
    Expired,
    /// It was revoked.
    Revoked,
}

/// A token without its secret: what listings and audit show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token id.
    pub id: String,
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// The principal it stands for.
    pub principal: PrincipalId,
    /// The principal's kind.
    pub kind: TokenKind,
    /// The node a worker token works (`None` for every other kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// The principal's scopes.
    pub scopes: Scopes,
    /// What it is for.
    pub description: String,
    /// Who issued it.
    pub issued_by: PrincipalId,
    /// The issuer's tenant.
    pub issued_by_tenant: TenantId,
    /// When.
    pub issued_at: Timestamp,
    /// When it stops resolving (never when `None`).
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
    /// Who revoked it.
    pub revoked_by: Option<PrincipalId>,
}

impl TokenInfo {
    /// Its status at `now`: revoked, else expired once `now >= expires_at`, else
    /// active.
    pub fn status(&self, now: Timestamp) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|e| now >= e) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    /// The principal the token stands for; `None` for a worker token that
    /// names no node (a malformed record).
    pub fn to_principal(&self) -> Option<Principal> {
        let kind = match (self.kind, self.node) {
            (TokenKind::User, _) => PrincipalKind::User,
            (TokenKind::Operator, _) => PrincipalKind::Operator,
            (TokenKind::Admin, _) => PrincipalKind::Admin,
            (TokenKind::Worker, Some(node)) => PrincipalKind::Worker { node },
            (TokenKind::Worker, None) => return None,
        };
        Some(Principal {
            tenant: self.tenant.clone(),
            id: self.principal.clone(),
            kind,
            scopes: self.scopes,
        })
    }
}

/// The answer to [`TokenService::issue`]: the token string (the only time its
/// secret is shown) and its description. `Debug` does not show the secret.
#[derive(Clone, PartialEq)]
pub struct IssuedToken {
    /// `hive_<id>.<secret>`: hand it to the holder; it cannot be shown again.
    pub token: String,
    /// The token without its secret.
    pub info: TokenInfo,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field(
                "token",
                &format_args!("{TOKEN_PREFIX}{}.<redacted>", self.info.id),
            )
            .field("info", &self.info)
            .finish()
    }
}

/// The body of a token record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// Lowercase hex SHA-256 of the secret's 32 bytes.
    secret_sha256: String,
}

impl StoredToken {
    fn from_record(record: Record) -> Result<StoredToken> {
        serde_json::from_value(record.body).map_err(|e| Error::Backend {
            message: format!("token {} is malformed: {e}", record.id),
            source: None,
        })
    }

    fn hash_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.secret_sha256, &mut out).ok()?;
        Some(out)
    }
}

/// Issues, resolves, revokes and lists API tokens over a [`RecordStore`] (any
/// backend's). See the module docs for the format.
///
/// Issuing and revoking are privileged: authorized through
/// [`Hive::authorize_with`] (scope `tenant:admin`) and audited, as is every
/// refusal.
#[derive(Clone, Debug)]
pub struct TokenService {
    store: Arc<dyn RecordStore>,
    clock: Arc<dyn Clock>,
}

/// How often a revoke re-reads a token that changed under it.
const MAX_REVOKE_ATTEMPTS: u32 = 16;

impl TokenService {
    /// Tokens in `store`, timed by the wall clock.
    pub fn new(store: Arc<dyn RecordStore>) -> Self {
        TokenService {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// Tokens in the engine's store, timed by its clock.
    pub fn for_hive(hive: &Hive) -> Self {
        let store: Arc<dyn RecordStore> = hive.store().clone();
        TokenService {
            store,
            clock: hive.clock().clone(),
        }
    }

    /// Times issue, expiry and revocation by `clock` (tests use a
    /// [`hive_core::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Issues a token. Refused (`Forbidden`, audited) for a worker, for another
    /// tenant (without `system:admin`), for a kind above the caller's or scopes
    /// the caller does not hold (without `system:admin`), and by the policy
    /// without `tenant:admin`. The allowed issue is audited with the token id,
    /// principal, kind, scopes and expiry (never the secret).
    pub async fn issue(
        &self,
        hive: &Hive,
        caller: &Principal,
        request: TokenRequest,
    ) -> Result<IssuedToken> {
        request.validate()?;
        let tenant = request
            .tenant
            .clone()
            .unwrap_or_else(|| caller.tenant.clone());
        let id = secret::new_id();
        let resource = Resource::Named {
            kind: TOKEN_KIND,
            id: id.clone(),
            tenant: tenant.clone(),
        };
        if let Some(reason) = issue_refusal(caller, &tenant, &request) {
            return Err(hive
                .deny(caller, Action::IssueToken, &resource, &reason)
                .await);
        }
        let now = self.clock.now();
        let expires_at = request.ttl.map(|ttl| now.saturating_add(ttl));
        hive.authorize_with(caller, Action::IssueToken, &resource, || {
            json!({
                "token": id,
                "tenant": tenant,
                "principal": request.principal,
                "kind": request.kind,
                "scopes": request.scopes,
                "expires_at": expires_at,
            })
        })
        .await?;
        let secret = secret::new_secret()?;
        let info = TokenInfo {
            id: id.clone(),
            tenant: tenant.clone(),
            principal: request.principal,
            kind: request.kind,
            node: None,
            scopes: request.scopes,
            description: request.description,
            issued_by: caller.id.clone(),
            issued_by_tenant: caller.tenant.clone(),
            issued_at: now,
            expires_at,
            revoked_at: None,
            revoked_by: None,
        };
        let body = StoredToken {
            info: info.clone(),
            secret_sha256: hex::encode(secret::secret_hash(&secret)),
        };
        self.store
            .write_record(RecordWrite {
                kind: TOKEN_KIND.to_owned(),
                id: id.clone(),
                tenant,
                expected_version: 0,
                status: "active".to_owned(),
                body: to_json(&body)?,
                events: vec![json!({
                    "type": "issued",
                    "by": caller.id,
                    "by_tenant": caller.tenant,
                    "at": now,
                })],
                now,
            })
            .await?;
        Ok(IssuedToken {
            token: secret::format_token(&id, &secret),
            info,
        })
    }

    /// Issues a worker token for `node`: the credential a remote worker
    /// presents (over HTTP) to claim, start, heartbeat, log and report as the
    /// node's [`Principal::worker`], and nothing else. The node must be visible
    /// to the caller (else `NotFound`); its owner may, and so may an operator
    /// or admin of its tenant (a system node: `system:admin`); a worker never
    /// may. Authorized as [`Action::IssueWorkerToken`] (scope `node:register`)
    /// and audited, allowed or refused; the secret is shown once, as for
    /// [`TokenService::issue`], and the token is revoked the same way.
    pub async fn issue_worker(
        &self,
        hive: &Hive,
        caller: &Principal,
        node: NodeId,
        ttl: Option<Duration>,
    ) -> Result<IssuedToken> {
        if ttl.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidArgument {
                message: "a token's ttl must be greater than zero".into(),
            });
        }
        let id = secret::new_id();
        if matches!(caller.kind, PrincipalKind::Worker { .. }) {
            let resource = Resource::Named {
                kind: TOKEN_KIND,
                id,
                tenant: caller.tenant.clone(),
            };
            return Err(hive
                .deny(
                    caller,
                    Action::IssueWorkerToken,
                    &resource,
                    "a worker may never issue tokens",
                )
                .await);
        }
        let node = hive.get_node(caller, node).await?;
        let tenant = match &node.spec.owner {
            NodeOwner::User { tenant, .. } => tenant.clone(),
            NodeOwner::System => TenantId::system(),
        };
        let resource = Resource::Named {
            kind: TOKEN_KIND,
            id: id.clone(),
            tenant: tenant.clone(),
        };
        if let Some(reason) = worker_token_refusal(caller, &node) {
            return Err(hive
                .deny(caller, Action::IssueWorkerToken, &resource, reason)
                .await);
        }
        let now = self.clock.now();
        let expires_at = ttl.map(|ttl| now.saturating_add(ttl));
        hive.authorize_with(caller, Action::IssueWorkerToken, &resource, || {
            json!({
                "token": id,
                "tenant": tenant,
                "node": node.id,
                "expires_at": expires_at,
            })
        })
        .await?;
        let worker = Principal::worker(tenant.clone(), node.id);
        let secret = secret::new_secret()?;
        let info = TokenInfo {
            id: id.clone(),
            tenant: tenant.clone(),
            principal: worker.id,
            kind: TokenKind::Worker,
            node: Some(node.id),
            scopes: worker.scopes,
            description: format!("worker of node {} ({})", node.id, node.spec.name),
            issued_by: caller.id.clone(),
            issued_by_tenant: caller.tenant.clone(),
            issued_at: now,
            expires_at,
            revoked_at: None,
            revoked_by: None,
        };
        let body = StoredToken {
            info: info.clone(),
            secret_sha256: hex::encode(secret::secret_hash(&secret)),
        };
        self.store
            .write_record(RecordWrite {
                kind: TOKEN_KIND.to_owned(),
                id: id.clone(),
                tenant,
                expected_version: 0,
                status: "active".to_owned(),
                body: to_json(&body)?,
                events: vec![json!({
                    "type": "issued",
                    "by": caller.id,
                    "by_tenant": caller.tenant,
                    "at": now,
                })],
                now,
            })
            .await?;
        Ok(IssuedToken {
            token: secret::format_token(&id, &secret),
            info,
        })
    }

    /// The principal a token stands for. Every refusal — malformed, unknown,
    /// wrong secret, expired, revoked — is the same `Forbidden` error (see
    /// [`is_invalid_token`]); store failures are returned as they are.
    pub async fn resolve(&self, token: &str) -> Result<Principal> {
        let Some((id, presented)) = secret::parse_token(token) else {
            return Err(invalid_token());
        };
        let presented = secret::secret_hash(&presented);
        let record = self.store.get_record(TOKEN_KIND, id).await?;
        let stored = record.and_then(|r| {
            let tenant = r.tenant.clone();
            StoredToken::from_record(r)
                .ok()
                .filter(|s| s.info.id == id && s.info.tenant == tenant)
        });
        // Compare even for an unknown id, so both paths do the same work.
        let stored_hash = stored
            .as_ref()
            .and_then(StoredToken::hash_bytes)
            .unwrap_or([0u8; 32]);
        let matches = secret::hashes_match(&presented, &stored_hash);
        match stored {
            Some(s) if matches && s.info.status(self.clock.now()) == TokenStatus::Active => {
                s.info.to_principal().ok_or_else(invalid_token)
            }
            _ => Err(invalid_token()),
        }
    }

    /// Revokes a token of the caller's tenant (another tenant's, or an unknown
    /// id, is `NotFound`; `system:admin` sees every tenant). Refused for a worker
    /// and by the policy without `tenant:admin` (audited); the allowed revoke is
    /// audited. Revoking a revoked token changes nothing and answers its info.
    pub async fn revoke(
        &self,
        hive: &Hive,
        caller: &Principal,
        token_id: &str,
    ) -> Result<TokenInfo> {
        if matches!(caller.kind, PrincipalKind::Worker { .. }) {
            let resource = Resource::Named {
                kind: TOKEN_KIND,
                id: token_id.to_owned(),
                tenant: caller.tenant.clone(),
            };
            return Err(hive
                .deny(
                    caller,
                    Action::RevokeToken,
                    &resource,
                    "a worker may never revoke tokens",
                )
                .await);
        }
        let not_found = || Error::NotFound {
            kind: "token",
            id: token_id.to_owned(),
        };
        if !secret::is_token_id(token_id) {
            return Err(not_found());
        }
        let mut record = match self.store.get_record(TOKEN_KIND, token_id).await? {
            Some(r) if caller.can_see_tenant(&r.tenant) => r,
            _ => return Err(not_found()),
        };
        let resource = Resource::Named {
            kind: TOKEN_KIND,
            id: token_id.to_owned(),
            tenant: record.tenant.clone(),
        };
        let first = StoredToken::from_record(record.clone())?;
        hive.authorize_with(caller, Action::RevokeToken, &resource, || {
            json!({
                "token": token_id,
                "principal": first.info.principal,
                "kind": first.info.kind,
            })
        })
        .await?;
        let mut attempt = 0;
        loop {
            let mut stored = StoredToken::from_record(record.clone())?;
            if stored.info.revoked_at.is_some() {
                return Ok(stored.info);
            }
            let now = self.clock.now();
            stored.info.revoked_at = Some(now);
            stored.info.revoked_by = Some(caller.id.clone());
            let write = RecordWrite {
                kind: TOKEN_KIND.to_owned(),
                id: token_id.to_owned(),
                tenant: record.tenant.clone(),
                expected_version: record.version,
                status: "revoked".to_owned(),
                body: to_json(&stored)?,
                events: vec![json!({
                    "type": "revoked",
                    "by": caller.id,
                    "by_tenant": caller.tenant,
                    "at": now,
                })],
                now,
            };
            match self.store.write_record(write).await {
                Ok(_) => return Ok(stored.info),
                Err(Error::Conflict { .. }) if attempt + 1 < MAX_REVOKE_ATTEMPTS => {
                    attempt += 1;
                    record = self
                        .store
                        .get_record(TOKEN_KIND, token_id)
                        .await?
                        .ok_or_else(not_found)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The caller's tenant's tokens, without secrets, ordered by id (which is
    /// issue order). Needs `tenant:admin` (or `system:admin`), checked by the
    /// engine's authorizer as `token.read`; a refusal is audited.
    pub async fn list(&self, hive: &Hive, caller: &Principal) -> Result<Vec<TokenInfo>> {
        let resource = Resource::Named {
            kind: TOKEN_KIND,
            id: "*".to_owned(),
            tenant: caller.tenant.clone(),
        };
        if matches!(caller.kind, PrincipalKind::Worker { .. }) {
            return Err(hive
                .deny(
                    caller,
                    Action::ReadToken,
                    &resource,
                    "a worker may only work its own node's tasks",
                )
                .await);
        }
        hive.authorize(caller, Action::ReadToken, &resource).await?;
        self.read_all(Some(caller.tenant.clone())).await
    }

    /// Every tenant's tokens, without secrets, ordered by id (issue order):
    /// what the platform's operators audit. Listing across tenants needs
    /// `system:admin`: without it the call is `Forbidden` (the refusal is
    /// audited as `token.read`); with it, it is checked by the engine's
    /// authorizer as `token.read`.
    pub async fn list_all(&self, hive: &Hive, caller: &Principal) -> Result<Vec<TokenInfo>> {
        let resource = Resource::Named {
            kind: TOKEN_KIND,
            id: "*".to_owned(),
            tenant: caller.tenant.clone(),
        };
        crate::authorize_platform_read(
            hive,
            caller,
            Action::ReadToken,
            &resource,
            "listing every tenant's tokens needs system:admin",
        )
        .await?;
        self.read_all(None).await
    }

    /// The stored tokens of `tenant` (every tenant's when `None`), in pages.
    async fn read_all(&self, tenant: Option<TenantId>) -> Result<Vec<TokenInfo>> {
        let mut out = Vec::new();
        let mut query = RecordQuery {
            tenant,
            limit: Some(1000),
            ..RecordQuery::default()
        };
        loop {
            let page = self.store.list_records(TOKEN_KIND, &query).await?;
            let full = page.len() >= query.effective_limit();
            query.after = page.last().map(|r| r.id.clone());
            for record in page {
                out.push(StoredToken::from_record(record)?.info);
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

/// Why `caller` may not issue a worker token for `node`, if it may not (the
/// engine already made sure the node is visible to the caller).
fn worker_token_refusal(caller: &Principal, node: &Node) -> Option<&'static str> {
    if caller.is_cross_tenant() || caller.kind == PrincipalKind::System {
        return None;
    }
    match &node.spec.owner {
        NodeOwner::System => Some("a system node's worker token needs system:admin"),
        NodeOwner::User { principal, .. } if principal == &caller.id => None,
        NodeOwner::User { .. }
            if matches!(caller.kind, PrincipalKind::Operator | PrincipalKind::Admin) =>
        {
            None
        }
        NodeOwner::User { .. } => {
            Some("only the node's owner, an operator or an admin may issue its worker token")
        }
    }
}

/// Why `caller` may not issue `request` into `tenant`, if it may not (the policy
/// is asked afterwards).
fn issue_refusal(caller: &Principal, tenant: &TenantId, request: &TokenRequest) -> Option<String> {
    let rank = match caller.kind {
        PrincipalKind::Worker { .. } => return Some("a worker may never issue tokens".into()),
        PrincipalKind::User => 0,
        PrincipalKind::Operator => 1,
        PrincipalKind::Admin => 2,
        PrincipalKind::System => 3,
    };
    if caller.is_cross_tenant() {
        return None;
    }
    if tenant != &caller.tenant {
        return Some("a token may only be issued for the caller's own tenant".into());
    }
    let wanted = match request.kind {
        TokenKind::User => 0,
        TokenKind::Operator => 1,
        TokenKind::Admin => 2,
        TokenKind::Worker => {
            return Some("a worker token is issued for one node (issue_worker)".into());
        }
    };
    if wanted > rank {
        return Some(format!(
            "a {} may not issue a {} token",
            caller.kind.name(),
            request.kind
        ));
    }
    let missing: Vec<&str> = request
        .scopes
        .iter()
        .filter(|s| !caller.scopes.contains(*s))
        .map(Scope::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "a token may only grant scopes the caller holds; missing {}",
            missing.join(", ")
        ));
    }
    None
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Backend {
        message: format!("cannot encode a token: {e}"),
        source: Some(Box::new(e)),
    })
}
