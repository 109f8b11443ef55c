//! The scope policy: [`hive_core::auth::ScopeAuthorizer`]'s rules with per-tenant
//! role ceilings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use hive_core::auth::{Action, Authorizer, Resource, ScopeAuthorizer};
use hive_core::principal::{Principal, Scope, Scopes, TenantId};
use hive_core::{Error, Result};
use parking_lot::RwLock;

use crate::role::Role;

/// The default authorizer of a Hive deployment.
///
/// # Rules
///
/// `ScopePolicy` decides exactly as [`ScopeAuthorizer`] does — it delegates to it
/// — after capping the principal's scopes by its role's configured scopes:
///
/// 1. A worker may only work ([`Action::WorkNode`]); every other action is
///    `Forbidden`.
/// 2. The principal needs the action's scope ([`Action::required_scope`]) or
///    `system:admin`.
/// 3. Cancelling or draining another principal's task, workflow or node needs an
///    `Operator`, an `Admin`, Hive itself or `system:admin`.
///
/// (The engine enforces tenancy before it asks: another tenant's object is
/// `NotFound`, and a worker only ever touches its own node's leases.)
///
/// # Role scopes
///
/// A principal carries the scopes it was granted (a role preset from
/// [`Role::scopes`], or the scopes of the API token it presented). A deployment
/// may configure, for one tenant or as a default for every tenant, the scopes of
/// a role: [`ScopePolicy::set_role_scopes`],
/// [`ScopePolicy::set_default_role_scopes`]. A configured set is a **ceiling**:
/// the scopes the policy checks are the principal's scopes that are also in the
/// set of its role in its tenant (the tenant's own setting if there is one,
/// otherwise the default setting). So:
///
/// - narrowing takes effect at once for every principal of that role in that
///   tenant (an operator of `acme` without `audit:read` cannot read the trail,
///   whatever its principal or token says);
/// - widening helps principals that carry the extra scope: build them with
///   [`ScopePolicy::role_scopes`] (e.g.
///   `Principal::user(t, id).with_scopes(policy.role_scopes(&t, Role::User))`),
///   or issue a token with it;
/// - with nothing configured, `ScopePolicy` answers exactly as `ScopeAuthorizer`.
///
/// `system:admin` is a grant of the platform, not of a tenant: it cannot be put
/// in a role's set (refused as `InvalidArgument`) and a principal that carries it
/// keeps it whatever its role's set says. Principals of kind `System` (Hive
/// itself) have no role and are never capped.
///
/// Settings can be changed while the engine runs (keep an `Arc<ScopePolicy>`
/// next to the one given to [`hive_core::HiveBuilder::authorizer`]); a decision
/// takes a read lock only when some setting exists.
#[derive(Debug, Default)]
pub struct ScopePolicy {
    configured: AtomicBool,
    roles: RwLock<HashMap<Option<TenantId>, [Option<Scopes>; 4]>>,
}

fn role_index(role: Role) -> usize {
    match role {
        Role::User => 0,
        Role::Operator => 1,
        Role::Admin => 2,
        Role::Worker => 3,
    }
}

impl ScopePolicy {
    /// A policy with no role settings: it answers as [`ScopeAuthorizer`].
    pub fn new() -> Self {
        ScopePolicy::default()
    }

    /// Builder form of [`ScopePolicy::set_role_scopes`].
    pub fn with_role_scopes(self, tenant: TenantId, role: Role, scopes: Scopes) -> Result<Self> {
        self.set_role_scopes(tenant, role, scopes)?;
        Ok(self)
    }

    /// Builder form of [`ScopePolicy::set_default_role_scopes`].
    pub fn with_default_role_scopes(self, role: Role, scopes: Scopes) -> Result<Self> {
        self.set_default_role_scopes(role, scopes)?;
        Ok(self)
    }

    /// Sets the scopes of `role` in `tenant` (see the type docs: a ceiling on
    /// what such principals may do). `system:admin` is refused.
    pub fn set_role_scopes(&self, tenant: TenantId, role: Role, scopes: Scopes) -> Result<()> {
        self.set(Some(tenant), role, Some(scopes))
    }

    /// Sets the scopes of `role` in every tenant that has no setting of its own
    /// for that role. `system:admin` is refused.
    pub fn set_default_role_scopes(&self, role: Role, scopes: Scopes) -> Result<()> {
        self.set(None, role, Some(scopes))
    }

    /// Removes `tenant`'s setting for `role` (the default setting, if any, applies
    /// again).
    pub fn clear_role_scopes(&self, tenant: &TenantId, role: Role) {
        // Clearing never fails: there is no scope to refuse.
        let _ = self.set(Some(tenant.clone()), role, None);
    }

    /// Removes the default setting for `role`.
    pub fn clear_default_role_scopes(&self, role: Role) {
        let _ = self.set(None, role, None);
    }

    fn set(&self, tenant: Option<TenantId>, role: Role, scopes: Option<Scopes>) -> Result<()> {
        if scopes.is_some_and(|s| s.contains(Scope::SystemAdmin)) {
            return Err(Error::InvalidArgument {
                message: "system:admin is a platform grant and cannot be given to a role".into(),
            });
        }
        let mut roles = self.roles.write();
        let slots = roles.entry(tenant.clone()).or_default();
        slots[role_index(role)] = scopes;
        if slots.iter().all(Option::is_none) {
            roles.remove(&tenant);
        }
        self.configured.store(!roles.is_empty(), Ordering::Release);
        Ok(())
    }

    /// The configured scopes of `role` in `tenant` (its own setting, else the
    /// default setting), or `None` when nothing is configured.
    pub fn configured_role_scopes(&self, tenant: &TenantId, role: Role) -> Option<Scopes> {
        if !self.configured.load(Ordering::Acquire) {
            return None;
        }
        let roles = self.roles.read();
        let i = role_index(role);
        roles
            .get(&Some(tenant.clone()))
            .and_then(|slots| slots[i])
            .or_else(|| roles.get(&None).and_then(|slots| slots[i]))
    }

    /// The scopes a principal of `role` in `tenant` gets: the configured set, or
    /// the role's preset ([`Role::scopes`]).
    pub fn role_scopes(&self, tenant: &TenantId, role: Role) -> Scopes {
        self.configured_role_scopes(tenant, role)
            .unwrap_or_else(|| role.scopes())
    }

    /// The scopes the policy checks for `p`: its own scopes, capped by its
    /// role's configured set (`system:admin` is kept).
    pub fn effective_scopes(&self, p: &Principal) -> Scopes {
        let Some(ceiling) =
            Role::of(&p.kind).and_then(|r| self.configured_role_scopes(&p.tenant, r))
        else {
            return p.scopes;
        };
        p.scopes
            .iter()
            .filter(|s| *s == Scope::SystemAdmin || ceiling.contains(*s))
            .collect()
    }
}

impl Authorizer for ScopePolicy {
    fn authorize(&self, principal: &Principal, action: Action, resource: &Resource) -> Result<()> {
        let scopes = self.effective_scopes(principal);
        if scopes == principal.scopes {
            ScopeAuthorizer.authorize(principal, action, resource)
        } else {
            let capped = principal.clone().with_scopes(scopes);
            ScopeAuthorizer.authorize(&capped, action, resource)
        }
    }
}
