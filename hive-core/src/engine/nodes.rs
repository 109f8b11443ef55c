//! Nodes: registration, reads, drain, removal, heartbeats.

use super::*;

impl Hive {
    /// Registers a node. A user may register nodes owned by itself; a `System`
    /// node needs `system:admin`. Returns the node; its worker acts as
    /// [`Principal::worker`]`(node.tenant(), node.id)`.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant, name = %spec.name))]
    pub async fn register_node(&self, p: &Principal, spec: NodeSpec) -> Result<Node> {
        self.check_live()?;
        let id = NodeId::new();
        let resource = Resource::Node {
            id,
            tenant: node_tenant(&spec.owner),
            owner: node_principal(&spec.owner),
        };
        let refusal = match &spec.owner {
            NodeOwner::System if !p.is_cross_tenant() && p.kind != PrincipalKind::System => {
                Some("a system node needs system:admin")
            }
            NodeOwner::User { tenant, principal }
                if !p.is_cross_tenant() && (tenant != &p.tenant || principal != &p.id) =>
            {
                Some("a user may only register nodes it owns")
            }
            _ => None,
        };
        if let Some(reason) = refusal {
            if matches!(p.kind, PrincipalKind::Worker { .. }) {
                // A worker gets the policy's own answer (and its audit entry).
                self.authorize(p, Action::RegisterNode, &resource).await?;
            }
            return Err(self.deny(p, Action::RegisterNode, &resource, reason).await);
        }
        self.authorize_checked(
            p,
            Action::RegisterNode,
            &resource,
            || serde_json::json!({ "name": spec.name, "capacity": spec.capacity }),
            || spec.validate(),
        )
        .await?;
        let now = self.inner.clock.now();
        let node = Node {
            id,
            spec,
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: now,
            last_seen: now,
        };
        self.inner.store.register_node(node.clone()).await?;
        tracing::info!(node = %node.id, "node registered");
        Ok(node)
    }

    pub(super) async fn visible_node(&self, p: &Principal, id: NodeId) -> Result<Node> {
        match self.inner.store.get_node(id).await? {
            Some(n) if node_visible(p, &n) => Ok(n),
            _ => Err(Error::not_found("node", id)),
        }
    }

    /// One node: system nodes and the caller's tenant's nodes are visible.
    pub async fn get_node(&self, p: &Principal, id: NodeId) -> Result<Node> {
        let node = self.visible_node(p, id).await?;
        self.authorize(p, Action::ReadNode, &node_resource(&node))
            .await?;
        Ok(node)
    }

    /// The nodes visible to the caller.
    pub async fn list_nodes(&self, p: &Principal) -> Result<Vec<Node>> {
        self.authorize(p, Action::ReadNode, &Resource::Tenant(p.tenant.clone()))
            .await?;
        let mut nodes = self.inner.store.list_nodes().await?;
        nodes.retain(|n| node_visible(p, n));
        Ok(nodes)
    }

    /// Drains a node: it keeps its leases but claims nothing new.
    pub async fn drain_node(&self, p: &Principal, id: NodeId) -> Result<Node> {
        let node = self.visible_node(p, id).await?;
        self.authorize(p, Action::DrainNode, &node_resource(&node))
            .await?;
        self.inner
            .store
            .set_node_status(id, NodeStatus::Draining, self.inner.clock.now())
            .await
    }

    /// Removes a node; its leases are reclaimed at once (as placement lost).
    /// Its owner, an operator or an admin may, and its own worker (as it shuts
    /// down); every removal is authorized and audited as `node.remove`.
    pub async fn remove_node(&self, p: &Principal, id: NodeId) -> Result<()> {
        let node = match self.worker_node(p) {
            // A worker sees no nodes, but its own it may remove.
            Some(own) if own == id => self
                .inner
                .store
                .get_node(id)
                .await?
                .ok_or_else(|| Error::not_found("node", id))?,
            _ => self.visible_node(p, id).await?,
        };
        self.authorize(p, Action::RemoveNode, &node_resource(&node))
            .await?;
        self.inner
            .store
            .remove_node(node.id, self.inner.clock.now())
            .await
    }

    /// A node's heartbeat, by its own worker.
    pub async fn node_heartbeat(&self, p: &Principal, id: NodeId) -> Result<Node> {
        self.check_worker(p, id).await?;
        self.inner
            .store
            .touch_node(id, self.inner.clock.now())
            .await
    }
}
