//! # hive-iam
//!
//! Identity and access for Hive, on any backend (everything is built on
//! [`hive_core::store::RecordStore`]):
//!
//! - [`Role`]s and their scope presets, and [`ScopePolicy`], the default
//!   [`hive_core::auth::Authorizer`]: the rules of
//!   [`hive_core::auth::ScopeAuthorizer`] with per-tenant role scopes.
//! - [`TokenService`]: API tokens (`hive_<id>.<secret>`, 256-bit secrets shown
//!   once and stored as SHA-256), resolved to a [`hive_core::Principal`].
//! - [`AuditTrail`]: the [`hive_core::audit::Auditor`] that keeps one SHA-256
//!   hash chain per tenant, with filtered listing and [`AuditTrail::verify`].
//!
//! Wiring an engine:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 1)]
//! # async fn main() -> hive_core::Result<()> {
//! use std::sync::Arc;
//! use hive_core::Principal;
//! use hive_core::store::Store;
//! use hive_iam::{AuditTrail, ScopePolicy, TokenKind, TokenRequest, TokenService};
//!
//! let store: Arc<dyn Store> = Arc::new(hive_store::memory::MemoryStore::default());
//! let policy = Arc::new(ScopePolicy::new());
//! let trail = Arc::new(AuditTrail::new(store.clone()));
//! let hive = hive_core::Hive::builder()
//!     .store(store)
//!     .authorizer(policy.clone())
//!     .auditor(trail.clone())
//!     .build()?;
//! let tokens = TokenService::for_hive(&hive);
//! let admin = Principal::admin("acme", "root");
//! let issued = tokens
//!     .issue(&hive, &admin, TokenRequest::new("ci-bot", TokenKind::User))
//!     .await?;
//! let bot = tokens.resolve(&issued.token).await?;
//! assert_eq!(bot.id.as_str(), "ci-bot");
//! // The issue was audited, and the tenant's chain is intact.
//! assert!(trail.verify(&hive, &admin, &admin.tenant).await?.ok);
//! # hive.shutdown();
//! # Ok(()) }
//! ```

pub mod audit;
pub mod policy;
#[cfg(feature = "registry-token")]
pub mod registry_token;
pub mod role;
pub mod token;

pub use audit::{
    AUDIT_KIND, AuditEvent, AuditPage, AuditQuery, AuditTrail, BrokenLink, ChainHead,
    ChainVerifier, GENESIS_HASH, VerifyReport, canonical_json, verify_chain,
};
pub use policy::ScopePolicy;

/// The identity services of an engine, from the engine itself:
/// `hive.audit_trail().verify(&hive, &admin, &tenant)`, `hive.tokens().issue(…)`.
/// In scope with `use hive::prelude::*` (or `use hive_iam::HiveIamExt`).
pub trait HiveIamExt {
    /// The audit trail in the engine's store ([`AuditTrail::for_hive`]).
    fn audit_trail(&self) -> AuditTrail;
    /// The API tokens in the engine's store ([`TokenService::for_hive`]).
    fn tokens(&self) -> TokenService;
}

impl HiveIamExt for hive_core::Hive {
    fn audit_trail(&self) -> AuditTrail {
        AuditTrail::for_hive(self)
    }

    fn tokens(&self) -> TokenService {
        TokenService::for_hive(self)
    }
}
pub use role::Role;
pub use token::{
    IssuedToken, TOKEN_KIND, TOKEN_PREFIX, TokenInfo, TokenKind, TokenRequest, TokenService,
    TokenStatus, is_invalid_token,
};

/// Authorizes a read across every tenant (`caller` needs `system:admin`):
/// without it the attempt is refused with `reason` and audited; with it the
/// engine's authorizer decides `action` on `resource` as usual.
pub(crate) async fn authorize_platform_read(
    hive: &hive_core::Hive,
    caller: &hive_core::Principal,
    action: hive_core::auth::Action,
    resource: &hive_core::auth::Resource,
    reason: &str,
) -> hive_core::Result<()> {
    if !caller.is_cross_tenant() {
        return Err(hive.deny(caller, action, resource, reason).await);
    }
    hive.authorize(caller, action, resource).await
}
