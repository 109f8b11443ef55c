//! Roles and their scope presets.

use std::fmt;
use std::str::FromStr;

use hive_core::principal::{PrincipalKind, Scopes};
use hive_core::{Error, Result};
use serde::{Deserialize, Serialize};

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

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::InvalidArgument {
                message: format!("unknown role {s:?}: expected user, operator, admin or worker"),
            })
    }
}
