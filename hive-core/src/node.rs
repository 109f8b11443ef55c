//! Worker nodes: who owns them, what they offer, and the eligibility rule that
//! decides which tasks a node may run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::principal::{Principal, PrincipalId, TenantId};
use crate::task::Owner;

/// Who owns a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeOwner {
    /// Hive's own capacity: may run any tenant's tasks.
    System,
    /// A user's node: runs only that user's tasks and those it is shared with.
    User {
        /// The owner's tenant.
        tenant: TenantId,
        /// The owner.
        principal: PrincipalId,
    },
}

impl NodeOwner {
    /// The user node owner `p` registers as: `p`'s tenant and id. (A worker
    /// principal names its node, not a user; register user nodes as the user.)
    pub fn user_of(p: &Principal) -> Self {
        NodeOwner::User {
            tenant: p.tenant.clone(),
            principal: p.id.clone(),
        }
    }
}

impl From<&Principal> for NodeOwner {
    fn from(p: &Principal) -> Self {
        NodeOwner::user_of(p)
    }
}

impl From<Owner> for NodeOwner {
    fn from(o: Owner) -> Self {
        NodeOwner::User {
            tenant: o.tenant,
            principal: o.principal,
        }
    }
}

/// The longest label key, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 128;
/// The longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// Checks labels (of a task or a node): keys 1 to [`MAX_LABEL_KEY_LEN`]
/// bytes, values up to [`MAX_LABEL_VALUE_LEN`], neither with control
/// characters or NUL — the same on every backend.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        crate::principal::check_text("labels", k, MAX_LABEL_KEY_LEN, false)?;
        crate::principal::check_text(&format!("labels.{k}"), v, MAX_LABEL_VALUE_LEN, true)?;
    }
    Ok(())
}

/// Someone a user node is explicitly shared with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShareTarget {
    /// Every principal of a tenant.
    Tenant {
        /// The tenant.
        tenant: TenantId,
    },
    /// One principal.
    User {
        /// Its tenant.
        tenant: TenantId,
        /// The principal.
        principal: PrincipalId,
    },
}

/// A node's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Accepting work.
    Ready,
    /// Finishing its leases; no new claims.
    Draining,
    /// Stopped heartbeating; its leases were reclaimed. A heartbeat revives it.
    Lost,
}

/// What a node registers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// A human-readable name.
    pub name: String,
    /// Who owns it. A user may register only nodes owned by itself; `System`
    /// needs `system:admin`.
    pub owner: NodeOwner,
    /// Labels tasks can require.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many tasks it runs at once (≥ 1).
    pub capacity: u32,
    /// Others a user node is shared with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<ShareTarget>,
}

impl NodeSpec {
    /// The largest capacity of one node.
    pub const MAX_CAPACITY: u32 = 1_000_000;

    /// A system-owned node.
    pub fn system(name: impl Into<String>, capacity: u32) -> Self {
        NodeSpec {
            name: name.into(),
            owner: NodeOwner::System,
            labels: BTreeMap::new(),
            capacity,
            shared_with: Vec::new(),
        }
    }

    /// A node owned by a user: an [`Owner`], or the `&Principal` who
    /// registers it (`NodeSpec::user("laptop", &alice, 4)`).
    pub fn user(name: impl Into<String>, owner: impl Into<NodeOwner>, capacity: u32) -> Self {
        NodeSpec {
            name: name.into(),
            owner: owner.into(),
            labels: BTreeMap::new(),
            capacity,
            shared_with: Vec::new(),
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Shares the node.
    pub fn share(mut self, target: ShareTarget) -> Self {
        self.shared_with.push(target);
        self
    }

    /// Checks the spec.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.len() > 256 {
            return Err(Error::invalid_spec("name", "must be 1 to 256 characters"));
        }
        if self.capacity == 0 || self.capacity > Self::MAX_CAPACITY {
            return Err(Error::invalid_spec(
                "capacity",
                format!(
                    "must be between 1 and {}, got {}",
                    Self::MAX_CAPACITY,
                    self.capacity
                ),
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err(Error::invalid_spec(
                "name",
                "must not contain control characters or NUL",
            ));
        }
        check_labels(&self.labels)?;
        for target in &self.shared_with {
            let (tenant, principal) = match target {
                ShareTarget::Tenant { tenant } => (tenant, None),
                ShareTarget::User { tenant, principal } => (tenant, Some(principal)),
            };
            let bad = |e: Error| Error::invalid_spec("shared_with", e.to_string());
            tenant.validate().map_err(bad)?;
            if let Some(p) = principal {
                p.validate().map_err(bad)?;
            }
        }
        if self.owner == NodeOwner::System && !self.shared_with.is_empty() {
            return Err(Error::invalid_spec(
                "shared_with",
                "a system node already serves every tenant; sharing applies to user nodes",
            ));
        }
        Ok(())
    }
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// What it registered with.
    pub spec: NodeSpec,
    /// Its status.
    pub status: NodeStatus,
    /// Leases it holds now.
    pub in_flight: u32,
    /// When it registered.
    pub registered_at: Timestamp,
    /// Its last sign of life (node heartbeat, claim, task heartbeat).
    pub last_seen: Timestamp,
}

impl Node {
    /// Free slots.
    pub fn free(&self) -> u32 {
        self.spec.capacity.saturating_sub(self.in_flight)
    }

    /// The tenant a worker of this node acts in.
    pub fn tenant(&self) -> TenantId {
        match &self.spec.owner {
            NodeOwner::System => TenantId::system(),
            NodeOwner::User { tenant, .. } => tenant.clone(),
        }
    }
}

/// The eligibility rule's ownership half: may a node owned by `node_owner`, shared
/// with `shared_with`, run a task owned by `task_owner`?
///
/// System nodes run anyone's tasks; a user node runs its owner's tasks and those
/// of the principals and tenants it is explicitly shared with. Never another
/// user's task otherwise.
pub fn owner_eligible(
    node_owner: &NodeOwner,
    shared_with: &[ShareTarget],
    task_owner: &Owner,
) -> bool {
    match node_owner {
        NodeOwner::System => true,
        NodeOwner::User { tenant, principal } => {
            (tenant == &task_owner.tenant && principal == &task_owner.principal)
                || shared_with.iter().any(|s| match s {
                    ShareTarget::Tenant { tenant } => tenant == &task_owner.tenant,
                    ShareTarget::User { tenant, principal } => {
                        tenant == &task_owner.tenant && principal == &task_owner.principal
                    }
                })
        }
    }
}

/// The labels half: does the node carry every label the task requires?
pub fn labels_eligible(
    node_labels: &BTreeMap<String, String>,
    required: &BTreeMap<String, String>,
) -> bool {
    required.iter().all(|(k, v)| node_labels.get(k) == Some(v))
}

/// The whole eligibility rule, except capacity (which the store checks when it
/// counts leases): owner and labels.
pub fn eligible(
    node: &NodeSpec,
    task_owner: &Owner,
    required_labels: &BTreeMap<String, String>,
) -> bool {
    owner_eligible(&node.owner, &node.shared_with, task_owner)
        && labels_eligible(&node.labels, required_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(t: &str, p: &str) -> Owner {
        Owner {
            tenant: t.into(),
            principal: p.into(),
        }
    }

    #[test]
    fn system_nodes_run_everyone_user_nodes_only_their_owner_and_shares() {
        let a = owner("acme", "alice");
        let b = owner("acme", "bob");
        let c = owner("globex", "carol");
        let sys = NodeSpec::system("sys", 1);
        let alice = NodeSpec::user("a", a.clone(), 1);
        let shared = NodeSpec::user("a2", a.clone(), 1).share(ShareTarget::User {
            tenant: "acme".into(),
            principal: "bob".into(),
        });
        let tenant_shared = NodeSpec::user("a3", a.clone(), 1).share(ShareTarget::Tenant {
            tenant: "globex".into(),
        });
        let none = BTreeMap::new();
        for o in [&a, &b, &c] {
            assert!(eligible(&sys, o, &none));
        }
        assert!(eligible(&alice, &a, &none));
        assert!(!eligible(&alice, &b, &none));
        assert!(!eligible(&alice, &c, &none));
        assert!(eligible(&shared, &b, &none));
        assert!(!eligible(&shared, &c, &none));
        assert!(eligible(&tenant_shared, &c, &none));
        assert!(!eligible(&tenant_shared, &b, &none));
    }

    #[test]
    fn required_labels_must_all_match() {
        let node = NodeSpec::system("gpu", 1)
            .label("gpu", "a100")
            .label("zone", "eu");
        let o = owner("t", "u");
        let mut req = BTreeMap::new();
        assert!(eligible(&node, &o, &req));
        req.insert("gpu".to_string(), "a100".to_string());
        assert!(eligible(&node, &o, &req));
        req.insert("zone".to_string(), "us".to_string());
        assert!(!eligible(&node, &o, &req));
    }

    #[test]
    fn bad_node_specs_are_refused() {
        assert!(NodeSpec::system("n", 0).validate().is_err());
        assert!(NodeSpec::system(" ", 1).validate().is_err());
        assert!(
            NodeSpec::system("n", 1)
                .share(ShareTarget::Tenant { tenant: "x".into() })
                .validate()
                .is_err()
        );
        assert!(NodeSpec::system("n", 1).label("", "x").validate().is_err());
        assert!(NodeSpec::system("n", 4).validate().is_ok());
    }
}
