//! Who is calling: tenants, principals and scopes.
//!
//! Every engine call takes a [`Principal`]. `hive-iam` resolves tokens to
//! principals and refines the policy; the types live here so that the engine's
//! signatures never change when it does.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::NodeId;

macro_rules! str_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a name.
            pub fn new(s: impl AsRef<str>) -> Self {
                $name(Arc::from(s.as_ref()))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }
    };
}

str_id!(
    /// A tenant: the unit of isolation. Reads never cross tenants.
    TenantId
);
str_id!(
    /// A principal's name, unique within its tenant.
    PrincipalId
);

impl TenantId {
    /// The longest tenant id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// The tenant of system principals and system-owned worker nodes.
    pub fn system() -> Self {
        TenantId::new("_system")
    }

    /// A tenant id from outside (a header, a config file), checked: see
    /// [`TenantId::validate`].
    pub fn parse(s: &str) -> Result<Self> {
        let t = TenantId::new(s);
        t.validate()?;
        Ok(t)
    }

    /// Checks the id: 1 to [`TenantId::MAX_LEN`] bytes of ASCII letters,
    /// digits, `-`, `_` and `.` — no `/` or `:` (they separate the parts of
    /// token subjects and record keys), no whitespace, control characters or
    /// NUL (which some backends cannot store). The engine checks every
    /// caller's tenant before it acts.
    pub fn validate(&self) -> Result<()> {
        let s = self.as_str();
        if s.is_empty()
            || s.len() > Self::MAX_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::InvalidArgument {
                message: format!(
                    "tenant id {s:?}: must be 1 to {} ASCII letters, digits, '-', '_' or '.'",
                    Self::MAX_LEN
                ),
            });
        }
        Ok(())
    }
}

impl PrincipalId {
    /// The longest principal id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// A principal id from outside, checked: see [`PrincipalId::validate`].
    pub fn parse(s: &str) -> Result<Self> {
        let p = PrincipalId::new(s);
        p.validate()?;
        Ok(p)
    }

    /// Checks the id: 1 to [`PrincipalId::MAX_LEN`] bytes with no `/` (it
    /// separates tenant and principal in token subjects), whitespace, control
    /// characters or NUL. (`:` is allowed: worker ids are `worker:<node>`.)
    pub fn validate(&self) -> Result<()> {
        let s = self.as_str();
        if s.is_empty()
            || s.len() > Self::MAX_LEN
            || s.chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(Error::InvalidArgument {
                message: format!(
                    "principal id {s:?}: must be 1 to {} bytes with no '/', whitespace or \
                     control characters",
                    Self::MAX_LEN
                ),
            });
        }
        Ok(())
    }
}

/// Checks a free-form name (a label key or value, an idempotency key, a
/// stream): at most `max` bytes (at least one unless `may_be_empty`), no
/// control characters or NUL.
pub(crate) fn check_text(field: &str, s: &str, max: usize, may_be_empty: bool) -> Result<()> {
    if (!may_be_empty && s.is_empty()) || s.len() > max {
        return Err(Error::invalid_spec(
            field,
            format!(
                "must be {} to {max} bytes, got {}",
                usize::from(!may_be_empty),
                s.len()
            ),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid_spec(
            field,
            format!("must not contain control characters or NUL, got {s:?}"),
        ));
    }
    Ok(())
}

/// What kind of actor a principal is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person or service acting for a tenant.
    User,
    /// An operator of the tenant: may cancel others' tasks and drain nodes.
    Operator,
    /// A tenant administrator.
    Admin,
    /// A worker bound to one node: may only work that node's tasks.
    Worker {
        /// The node this worker is bound to.
        node: NodeId,
    },
    /// Hive itself (the supervisor, internal drivers).
    System,
}

impl PrincipalKind {
    /// The kind's wire name (`user`, `operator`, `admin`, `worker`, `system`).
    pub fn name(&self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Operator => "operator",
            PrincipalKind::Admin => "admin",
            PrincipalKind::Worker { .. } => "worker",
            PrincipalKind::System => "system",
        }
    }
}

/// A permission. The wire form is `area:verb`, e.g. `task:submit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Scope {
    /// Submit tasks (and prompts).
    #[serde(rename = "task:submit")]
    TaskSubmit,
    /// Read tasks, their events and the tenant feed.
    #[serde(rename = "task:read")]
    TaskRead,
    /// Cancel tasks (one's own; others' too with `Operator` or `Admin`).
    #[serde(rename = "task:cancel")]
    TaskCancel,
    /// Submit workflows.
    #[serde(rename = "workflow:submit")]
    WorkflowSubmit,
    /// Register, drain and remove nodes.
    #[serde(rename = "node:register")]
    NodeRegister,
    /// Lease, heartbeat, log and report the tasks of one's own node.
    #[serde(rename = "node:work")]
    NodeWork,
    /// Promote an experiment from sandbox to production.
    #[serde(rename = "experiment:promote")]
    ExperimentPromote,
    /// Publish agents to the registry.
    #[serde(rename = "registry:publish")]
    RegistryPublish,
    /// Read the audit trail.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Everything, across tenants.
    #[serde(rename = "system:admin")]
    SystemAdmin,
    /// Administer one's own tenant: issue and revoke its API tokens.
    #[serde(rename = "tenant:admin")]
    TenantAdmin,
}

impl Scope {
    /// Every scope, in declaration order.
    pub const ALL: [Scope; 11] = [
        Scope::TaskSubmit,
        Scope::TaskRead,
        Scope::TaskCancel,
        Scope::WorkflowSubmit,
        Scope::NodeRegister,
        Scope::NodeWork,
        Scope::ExperimentPromote,
        Scope::RegistryPublish,
        Scope::AuditRead,
        Scope::SystemAdmin,
        Scope::TenantAdmin,
    ];

    /// The wire name (`task:submit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TaskSubmit => "task:submit",
            Scope::TaskRead => "task:read",
            Scope::TaskCancel => "task:cancel",
            Scope::WorkflowSubmit => "workflow:submit",
            Scope::NodeRegister => "node:register",
            Scope::NodeWork => "node:work",
            Scope::ExperimentPromote => "experiment:promote",
            Scope::RegistryPublish => "registry:publish",
            Scope::AuditRead => "audit:read",
            Scope::SystemAdmin => "system:admin",
            Scope::TenantAdmin => "tenant:admin",
        }
    }

    fn bit(self) -> u32 {
        1 << (Scope::ALL.iter().position(|s| *s == self).unwrap_or(0) as u32)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes (serialized as a list of wire names).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u32);

impl Scopes {
    /// No scopes.
    pub const fn empty() -> Self {
        Scopes(0)
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set with `scope` added.
    pub fn with(self, scope: Scope) -> Self {
        Scopes(self.0 | scope.bit())
    }

    /// The set with `scope` removed.
    pub fn without(self, scope: Scope) -> Self {
        Scopes(self.0 & !scope.bit())
    }

    /// The scopes in the set.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Default scopes of a user.
    pub fn user() -> Self {
        Scopes::from_iter([
            Scope::TaskSubmit,
            Scope::TaskRead,
            Scope::TaskCancel,
            Scope::WorkflowSubmit,
            Scope::NodeRegister,
        ])
    }

    /// Default scopes of an operator.
    pub fn operator() -> Self {
        Scopes::user().with(Scope::AuditRead)
    }

    /// Default scopes of a tenant admin.
    pub fn admin() -> Self {
        Scopes::operator()
            .with(Scope::ExperimentPromote)
            .with(Scope::RegistryPublish)
            .with(Scope::TenantAdmin)
    }

    /// Default scopes of a worker.
    pub fn worker() -> Self {
        Scopes::empty().with(Scope::NodeWork)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::empty(), Scopes::with)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<Scope>::deserialize(d)?;
        Ok(list.into_iter().collect())
    }
}

/// The caller of an engine operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// Its name within the tenant.
    pub id: PrincipalId,
    /// What kind of actor it is.
    pub kind: PrincipalKind,
    /// What it may do.
    pub scopes: Scopes,
}

impl Principal {
    /// A user of `tenant` with the default user scopes.
    pub fn user(tenant: impl Into<TenantId>, id: impl Into<PrincipalId>) -> Self {
        Principal {
            tenant: tenant.into(),
            id: id.into(),
            kind: PrincipalKind::User,
            scopes: Scopes::user(),
        }
    }

    /// An operator of `tenant` with the default operator scopes.
    pub fn operator(tenant: impl Into<TenantId>, id: impl Into<PrincipalId>) -> Self {
        Principal {
            kind: PrincipalKind::Operator,
            scopes: Scopes::operator(),
            ..Principal::user(tenant, id)
        }
    }

    /// An admin of `tenant` with the default admin scopes.
    pub fn admin(tenant: impl Into<TenantId>, id: impl Into<PrincipalId>) -> Self {
        Principal {
            kind: PrincipalKind::Admin,
            scopes: Scopes::admin(),
            ..Principal::user(tenant, id)
        }
    }

    /// A worker bound to `node`, acting in `tenant` (the node owner's tenant, or
    /// [`TenantId::system`] for system nodes).
    pub fn worker(tenant: impl Into<TenantId>, node: NodeId) -> Self {
        Principal {
            tenant: tenant.into(),
            id: PrincipalId::new(format!("worker:{node}")),
            kind: PrincipalKind::Worker { node },
            scopes: Scopes::worker(),
        }
    }

    /// Hive itself: every scope, across tenants.
    pub fn system() -> Self {
        Principal {
            tenant: TenantId::system(),
            id: PrincipalId::new("hive"),
            kind: PrincipalKind::System,
            scopes: Scope::ALL.into_iter().collect(),
        }
    }

    /// The same principal with `scopes` instead of its own.
    pub fn with_scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// Whether the principal may act across tenants (`system:admin`).
    pub fn is_cross_tenant(&self) -> bool {
        self.scopes.contains(Scope::SystemAdmin)
    }

    /// Checks the tenant and the id (see [`TenantId::validate`] and
    /// [`PrincipalId::validate`]); the engine checks every caller.
    pub fn validate(&self) -> Result<()> {
        self.tenant.validate()?;
        self.id.validate()
    }

    /// The node a worker principal is bound to.
    pub fn worker_node(&self) -> Option<NodeId> {
        match self.kind {
            PrincipalKind::Worker { node } => Some(node),
            _ => None,
        }
    }

    /// Whether the principal may see objects of `tenant`.
    pub fn can_see_tenant(&self, tenant: &TenantId) -> bool {
        &self.tenant == tenant || self.is_cross_tenant()
    }
}

/// The role of a tenant principal: what kind of actor it is, and (through
/// [`Role::scopes`]) what it may do by default.
///
/// A role is the [`PrincipalKind`] without its payload and without `System`
/// (Hive itself is not a role a tenant hands out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person or service acting for a tenant.
    User,
    /// An operator of the tenant: may also cancel others' tasks, drain others'
    /// nodes and read the audit trail.
    Operator,
    /// A tenant administrator: may also promote experiments, publish agents and
    /// issue and revoke the tenant's API tokens.
    Admin,
    /// A worker bound to one node: may only work that node's tasks.
    Worker,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 4] = [Role::User, Role::Operator, Role::Admin, Role::Worker];

    /// The role's preset scopes: [`Scopes::user`], [`Scopes::operator`],
    /// [`Scopes::admin`] or [`Scopes::worker`].
    pub fn scopes(self) -> Scopes {
        match self {
            Role::User => Scopes::user(),
            Role::Operator => Scopes::operator(),
            Role::Admin => Scopes::admin(),
            Role::Worker => Scopes::worker(),
        }
    }

    /// The role of a principal kind (`None` for [`PrincipalKind::System`]).
    pub fn of(kind: &PrincipalKind) -> Option<Role> {
        match kind {
            PrincipalKind::User => Some(Role::User),
            PrincipalKind::Operator => Some(Role::Operator),
            PrincipalKind::Admin => Some(Role::Admin),
            PrincipalKind::Worker { .. } => Some(Role::Worker),
            PrincipalKind::System => None,
        }
    }

    /// The wire name (`user`, `operator`, `admin`, `worker`), the same as
    /// [`PrincipalKind::name`].
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| crate::Error::InvalidArgument {
                message: format!("unknown role {s:?}: expected user, operator, admin or worker"),
            })
    }
}
