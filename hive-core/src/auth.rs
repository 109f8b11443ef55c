//! Authorization: the [`Authorizer`] trait the engine consults before every
//! operation, and the default scope policy.
//!
//! The engine itself enforces what does not depend on policy: reads are
//! tenant-scoped (another tenant's object is `NotFound`), and a worker may only
//! touch leases of its own node. The authorizer decides the rest from the
//! principal, the [`Action`] and the [`Resource`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{NodeId, TaskId};
use crate::principal::{Principal, PrincipalId, PrincipalKind, Scope, TenantId};

/// An operation the engine is about to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Submit tasks.
    SubmitTask,
    /// Read a task, its events, a list of tasks, or the tenant feed.
    ReadTask,
    /// Cancel a task.
    CancelTask,
    /// Acknowledge or list terminal events as a named consumer.
    ConsumeFeed,
    /// Register a node.
    RegisterNode,
    /// Drain a node.
    DrainNode,
    /// Remove a node (its leases are reclaimed at once). Its owner, an
    /// operator or an admin may; so may the node's own worker, for its node
    /// only (a worker that shuts down removes its node).
    RemoveNode,
    /// Read nodes.
    ReadNode,
    /// Claim, start, heartbeat, log or report tasks of a node.
    WorkNode,
    /// Run a supervisor sweep.
    Supervise,
    /// Submit a workflow.
    SubmitWorkflow,
    /// Read workflows and their events.
    ReadWorkflow,
    /// Cancel a workflow.
    CancelWorkflow,
    /// Issue an API token.
    IssueToken,
    /// Issue a worker token: the credential a remote worker presents to
    /// work one node over HTTP (the node's owner, or an operator or admin of
    /// its tenant, may).
    IssueWorkerToken,
    /// Revoke an API token.
    RevokeToken,
    /// List a tenant's API tokens (never their secrets).
    ReadToken,
    /// Read the audit trail (and verify it).
    ReadAudit,
    /// Promote an experiment from sandbox to production.
    PromoteExperiment,
    /// Publish an agent to the registry.
    PublishAgent,
    /// Read the agent registry.
    ReadRegistry,
    /// Create or change tenants.
    ManageTenant,
    /// Run an operator command from a chat (Honeycomb's Telegram route):
    /// audited when refused (an unknown chat or sender, a bad webhook
    /// secret); each command then needs its own action's scope.
    ChatCommand,
    /// Create, change, pause, resume, delete or trigger a schedule (its fires
    /// then act as its owner).
    ManageSchedule,
    /// Read schedules.
    ReadSchedule,
}

impl Action {
    /// The scope this action needs.
    pub fn required_scope(self) -> Scope {
        match self {
            Action::SubmitTask => Scope::TaskSubmit,
            Action::ReadTask | Action::ConsumeFeed | Action::ReadNode => Scope::TaskRead,
            Action::CancelTask => Scope::TaskCancel,
            Action::RegisterNode
            | Action::DrainNode
            | Action::RemoveNode
            | Action::IssueWorkerToken => Scope::NodeRegister,
            Action::WorkNode => Scope::NodeWork,
            Action::Supervise | Action::ManageTenant => Scope::SystemAdmin,
            Action::SubmitWorkflow => Scope::WorkflowSubmit,
            Action::ReadWorkflow | Action::ReadRegistry | Action::ChatCommand => Scope::TaskRead,
            Action::CancelWorkflow => Scope::TaskCancel,
            Action::IssueToken | Action::RevokeToken | Action::ReadToken => Scope::TenantAdmin,
            Action::ReadAudit => Scope::AuditRead,
            Action::PromoteExperiment => Scope::ExperimentPromote,
            Action::PublishAgent => Scope::RegistryPublish,
            Action::ManageSchedule => Scope::TaskSubmit,
            Action::ReadSchedule => Scope::TaskRead,
        }
    }

    /// Whether the action is privileged: every attempt is audited, allowed or not
    /// (other actions are audited only when denied).
    pub fn is_privileged(self) -> bool {
        matches!(
            self,
            Action::SubmitTask
                | Action::CancelTask
                | Action::RegisterNode
                | Action::DrainNode
                | Action::RemoveNode
                | Action::SubmitWorkflow
                | Action::CancelWorkflow
                | Action::IssueToken
                | Action::IssueWorkerToken
                | Action::RevokeToken
                | Action::PromoteExperiment
                | Action::PublishAgent
                | Action::ManageTenant
                | Action::ManageSchedule
        )
    }

    /// Every action, in declaration order.
    pub const ALL: [Action; 25] = [
        Action::SubmitTask,
        Action::ReadTask,
        Action::CancelTask,
        Action::ConsumeFeed,
        Action::RegisterNode,
        Action::DrainNode,
        Action::RemoveNode,
        Action::ReadNode,
        Action::WorkNode,
        Action::Supervise,
        Action::SubmitWorkflow,
        Action::ReadWorkflow,
        Action::CancelWorkflow,
        Action::IssueToken,
        Action::IssueWorkerToken,
        Action::RevokeToken,
        Action::ReadToken,
        Action::ReadAudit,
        Action::PromoteExperiment,
        Action::PublishAgent,
        Action::ReadRegistry,
        Action::ManageTenant,
        Action::ChatCommand,
        Action::ManageSchedule,
        Action::ReadSchedule,
    ];

    /// The action's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SubmitTask => "task.submit",
            Action::ReadTask => "task.read",
            Action::CancelTask => "task.cancel",
            Action::ConsumeFeed => "feed.consume",
            Action::RegisterNode => "node.register",
            Action::DrainNode => "node.drain",
            Action::RemoveNode => "node.remove",
            Action::ReadNode => "node.read",
            Action::WorkNode => "node.work",
            Action::Supervise => "system.supervise",
            Action::SubmitWorkflow => "workflow.submit",
            Action::ReadWorkflow => "workflow.read",
            Action::CancelWorkflow => "workflow.cancel",
            Action::IssueToken => "token.issue",
            Action::IssueWorkerToken => "token.issue_worker",
            Action::RevokeToken => "token.revoke",
            Action::ReadToken => "token.read",
            Action::ReadAudit => "audit.read",
            Action::PromoteExperiment => "experiment.promote",
            Action::PublishAgent => "registry.publish",
            Action::ReadRegistry => "registry.read",
            Action::ManageTenant => "tenant.manage",
            Action::ChatCommand => "chat.command",
            Action::ManageSchedule => "schedule.manage",
            Action::ReadSchedule => "schedule.read",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action is applied to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resource {
    /// The caller's tenant as a whole (submit, list, feed).
    Tenant(TenantId),
    /// One task, with its owner.
    Task {
        /// The task.
        id: TaskId,
        /// Its tenant.
        tenant: TenantId,
        /// The principal that submitted it.
        owner: PrincipalId,
    },
    /// One node.
    Node {
        /// The node.
        id: NodeId,
        /// The owner's tenant (`None` for system nodes).
        tenant: Option<TenantId>,
        /// The owning principal (`None` for system nodes).
        owner: Option<PrincipalId>,
    },
    /// One workflow, with its owner.
    Workflow {
        /// The workflow's id.
        id: String,
        /// Its tenant.
        tenant: TenantId,
        /// The principal that submitted it.
        owner: PrincipalId,
    },
    /// Another named object of a tenant (`token/<id>`, `agent/<name>`…).
    Named {
        /// Its kind.
        kind: &'static str,
        /// Its id.
        id: String,
        /// Its tenant.
        tenant: TenantId,
    },
    /// Hive as a whole.
    System,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Tenant(t) => write!(f, "tenant/{t}"),
            Resource::Task { id, .. } => write!(f, "task/{id}"),
            Resource::Node { id, .. } => write!(f, "node/{id}"),
            Resource::Workflow { id, .. } => write!(f, "workflow/{id}"),
            Resource::Named { kind, id, .. } => write!(f, "{kind}/{id}"),
            Resource::System => f.write_str("system"),
        }
    }
}

/// Decides whether a principal may perform an action on a resource.
///
/// Called by the engine before every operation, after the tenant check. Must be
/// cheap (it is on the hot path of every call) and must not block.
pub trait Authorizer: Send + Sync + fmt::Debug + 'static {
    /// `Ok(())` to allow; [`Error::Forbidden`] to deny.
    fn authorize(&self, principal: &Principal, action: Action, resource: &Resource) -> Result<()>;
}

/// The default policy: the principal needs the action's scope; a worker may only
/// work (never submit, read, cancel, register or supervise); cancelling or draining
/// another principal's object needs `Operator`, `Admin` or `system:admin`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScopeAuthorizer;

impl Authorizer for ScopeAuthorizer {
    fn authorize(&self, principal: &Principal, action: Action, resource: &Resource) -> Result<()> {
        let deny = |reason: String| {
            Err(Error::Forbidden {
                action: action.as_str().to_owned(),
                reason,
            })
        };
        let is_worker = matches!(principal.kind, PrincipalKind::Worker { .. });
        // A worker may remove its own node (as it shuts down), with the scope
        // it works that node with.
        let own_removal = is_worker
            && action == Action::RemoveNode
            && matches!(resource, Resource::Node { id, .. } if principal.worker_node() == Some(*id));
        if is_worker && action != Action::WorkNode && !own_removal {
            return deny("a worker may only work its own node's tasks".into());
        }
        let scope = if own_removal {
            Scope::NodeWork
        } else {
            action.required_scope()
        };
        if !principal.scopes.contains(scope) && !principal.scopes.contains(Scope::SystemAdmin) {
            return deny(format!("missing scope {scope}"));
        }
        let elevated = matches!(
            principal.kind,
            PrincipalKind::Operator | PrincipalKind::Admin | PrincipalKind::System
        ) || principal.is_cross_tenant();
        match (action, resource) {
            (Action::CancelTask, Resource::Task { owner, .. })
                if *owner != principal.id && !elevated =>
            {
                deny("only the owner, an operator or an admin may cancel this task".into())
            }
            (Action::DrainNode, Resource::Node { owner, .. })
                if owner.as_ref() != Some(&principal.id) && !elevated =>
            {
                deny("only the node's owner, an operator or an admin may drain it".into())
            }
            (Action::RemoveNode, Resource::Node { owner, .. })
                if owner.as_ref() != Some(&principal.id) && !elevated && !own_removal =>
            {
                deny("only the node's owner, an operator or an admin may remove it".into())
            }
            (Action::CancelWorkflow, Resource::Workflow { owner, .. })
                if *owner != principal.id && !elevated =>
            {
                deny("only the owner, an operator or an admin may cancel this workflow".into())
            }
            _ => Ok(()),
        }
    }
}

/// Allows everything. For tests and benchmarks that measure the engine without
/// policy (`iam=off`); never for a deployment.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &Principal, _: Action, _: &Resource) -> Result<()> {
        Ok(())
    }
}
