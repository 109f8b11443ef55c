//! Claims: the node's row is locked (one claim per node at a time, so its free
//! capacity is exact), the eligible pending tasks of every tenant are read with
//! `FOR UPDATE SKIP LOCKED` (so concurrent claimers never wait on each other),
//! the scheduler orders them, and the machine schedules (and starts) the picked
//! ones; all in one transaction.

use std::sync::Arc;

use hive_core::clock::Timestamp;
use hive_core::id::LeaseId;
use hive_core::node::{NodeOwner, NodeStatus, ShareTarget};
use hive_core::scheduler::Candidate;
use hive_core::store::{ClaimRequest, ClaimResult, ClaimedTask};
use hive_core::task::machine::Op;
use hive_core::task::{LeaseToken, Owner, TaskState};
use hive_core::{Error, Result};

use super::PostgresStore;
use super::codec::{self, NodeRow};
use super::error::db;
use super::transition::{Loaded, Transitions};

/// A row of [`CANDIDATES`].
type CandidateRow = (
    String,
    String,
    String,
    i32,
    i64,
    i64,
    String,
    String,
    String,
    i64,
);

impl PostgresStore {
    pub(super) async fn claim_tasks(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        let epoch = self.hub.epoch();
        let now = req.now;
        let mut tx = self.begin().await?;
        let row: Option<NodeRow> = sqlx::query_as(
            "UPDATE nodes SET last_seen = greatest(last_seen, $2) WHERE id = $1::uuid \
             RETURNING id::text, spec::text, status, registered_at, last_seen, 0::int8",
        )
        .bind(req.node.to_string())
        .bind(now.as_millis())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db("lock node", e))?;
        let mut node = match row {
            Some(row) => codec::node(row)?,
            None => {
                return Err(Error::NotFound {
                    kind: "node",
                    id: req.node.to_string(),
                });
            }
        };
        if node.status != NodeStatus::Ready || req.max == 0 {
            tx.commit().await.map_err(|e| db("commit", e))?;
            return Ok(ClaimResult {
                tasks: Vec::new(),
                epoch,
                next_due: None,
            });
        }
        let (system, owner_tenant, owner_principal) = match &node.spec.owner {
            NodeOwner::System => (true, None, None),
            NodeOwner::User { tenant, principal } => {
                (false, Some(tenant.as_str()), Some(principal.as_str()))
            }
        };
        let mut share_tenants = Vec::new();
        let mut share_user_tenants = Vec::new();
        let mut share_user_principals = Vec::new();
        for s in &node.spec.shared_with {
            match s {
                ShareTarget::Tenant { tenant } => share_tenants.push(tenant.as_str()),
                ShareTarget::User { tenant, principal } => {
                    share_user_tenants.push(tenant.as_str());
                    share_user_principals.push(principal.as_str());
                }
            }
        }
        let agents: Vec<&str> = req.agents.iter().map(|a| a.as_str()).collect();
        let rows: Vec<CandidateRow> = sqlx::query_as(CANDIDATES)
            .bind(now.as_millis())
            .bind(req.node.to_string())
            .bind(agents)
            .bind(codec::encode_labels(&node.spec.labels)?)
            .bind(system)
            .bind(owner_tenant)
            .bind(owner_principal)
            .bind(share_tenants)
            .bind(share_user_tenants)
            .bind(share_user_principals)
            .bind(i64::from(req.max))
            .bind(i64::from(node.spec.capacity))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db("read candidates", e))?;
        if rows.is_empty() {
            let next_due = next_due(&mut tx, now).await?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            return Ok(ClaimResult {
                tasks: Vec::new(),
                epoch,
                next_due,
            });
        }
        // The leases counted by the candidates' statement, which started after
        // the node's lock was granted (the locking statement's snapshot may
        // predate a claim it waited for).
        node.in_flight = u32::try_from(rows[0].9).unwrap_or(u32::MAX);
        let max = req.max.min(node.free());
        let mut batch = Transitions::default();
        let mut candidates = Vec::with_capacity(rows.len());
        let mut principals = Vec::with_capacity(rows.len());
        for (id, tenant, principal, priority, order, created_at, spec, input, core, _) in rows {
            let id = codec::task_id(&id)?;
            let tenant: hive_core::TenantId = tenant.into();
            candidates.push(Candidate {
                task: id,
                tenant: tenant.clone(),
                priority,
                order: u64::try_from(order).unwrap_or(0),
            });
            principals.push(principal);
            batch.add(Loaded::new(
                id,
                tenant,
                Timestamp::from_millis(created_at),
                Arc::new(codec::decode_spec(&spec, Some(&input))?),
                codec::decode_core(&core)?,
            ));
        }
        let picked = req.scheduler.select(&node, &candidates, max as usize);
        let mut taken = vec![false; candidates.len()];
        let mut claimed = Vec::with_capacity(picked.len().min(max as usize));
        for i in picked {
            if i >= candidates.len() || taken[i] || claimed.len() >= max as usize {
                continue;
            }
            taken[i] = true;
            let lease = LeaseId::new();
            let scheduled = batch.apply(
                i,
                Op::Schedule {
                    node: node.id,
                    lease,
                },
                now,
            );
            let mut ack = match scheduled {
                Ok(ack) => ack,
                Err(e) => {
                    let task = batch.task(i).id;
                    tracing::error!(%task, error = %e, "eligible pending task could not be scheduled");
                    continue;
                }
            };
            let token = LeaseToken {
                task: batch.task(i).id,
                attempt: batch.task(i).core.attempt,
                lease,
            };
            if req.start {
                match batch.apply(
                    i,
                    Op::Start {
                        token,
                        node: node.id,
                    },
                    now,
                ) {
                    Ok(a) => ack = a,
                    Err(e) => {
                        tracing::error!(task = %token.task, error = %e, "claimed task could not be started")
                    }
                }
            }
            let t = batch.task(i);
            claimed.push(ClaimedTask {
                token,
                owner: Owner {
                    tenant: t.tenant.clone(),
                    principal: principals[i].as_str().into(),
                },
                spec: t.spec.clone(),
                started: ack.state == TaskState::Running,
                last_seq: ack.seq,
            });
        }
        debug_assert_eq!(batch.len(), candidates.len());
        batch.persist(&mut tx, &self.channel, now, &[]).await?;
        // Only a worker that found less than it asked for goes idle and needs
        // to know when the next retry is due.
        let next_due = if claimed.len() < req.max as usize {
            next_due(&mut tx, now).await?
        } else {
            None
        };
        tx.commit().await.map_err(|e| db("commit", e))?;
        Ok(ClaimResult {
            tasks: claimed,
            epoch,
            next_due,
        })
    }
}

/// When the earliest pending task in its backoff becomes claimable (an index
/// lookup on `tasks_delayed`).
async fn next_due(conn: &mut sqlx::PgConnection, now: Timestamp) -> Result<Option<Timestamp>> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT min(available_at) FROM tasks \
         WHERE state = 'pending' AND available_at > created_at AND available_at > $1",
    )
    .bind(now.as_millis())
    .fetch_one(conn)
    .await
    .map_err(|e| db("read the next due retry", e))?;
    Ok(at.map(Timestamp::from_millis))
}

/// The eligible, available pending tasks: for every tenant with pending tasks
/// (a loose index scan), its first ones by priority then enqueue order, as many
/// as the node has free slots (capacity `$12` minus its leases) and at most
/// `$11`, locked or skipped if another transaction holds them; each row also
/// carries the node's lease count. Eligibility is decided here:
/// agent filter, labels (the node's contain the task's), `avoid_node`, and
/// ownership (a system node runs anyone's; a user node its owner's and those it
/// is shared with).
const CANDIDATES: &str = r#"
WITH RECURSIVE leases AS (
    SELECT count(*) AS n FROM tasks WHERE lease_node = $2::uuid
), free AS (
    SELECT greatest(0, least($11::int8, $12::int8 - leases.n)) AS n FROM leases
), tenants(tenant) AS (
    (SELECT tenant FROM tasks WHERE state = 'pending' ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT t.tenant FROM tasks t
            WHERE t.state = 'pending' AND t.tenant > tenants.tenant
            ORDER BY t.tenant LIMIT 1)
    FROM tenants WHERE tenants.tenant IS NOT NULL
)
SELECT c.id::text, c.tenant, c.principal, c.priority, c.queue_order, c.created_at,
       c.spec::text, c.input::text, c.core::text, (SELECT n FROM leases)
FROM tenants CROSS JOIN LATERAL (
    SELECT t.* FROM tasks t
    WHERE t.state = 'pending' AND t.tenant = tenants.tenant AND t.available_at <= $1
      AND (t.avoid_node IS NULL OR t.avoid_node <> $2::uuid)
      AND (cardinality($3::text[]) = 0 OR t.agent = ANY($3::text[]))
      AND t.labels <@ $4::jsonb
      AND ($5::bool
           OR (t.tenant = $6::text AND t.principal = $7::text)
           OR t.tenant = ANY($8::text[])
           OR EXISTS (SELECT 1 FROM UNNEST($9::text[], $10::text[]) AS s(tenant, principal)
                      WHERE s.tenant = t.tenant AND s.principal = t.principal))
    ORDER BY t.priority DESC, t.queue_order
    LIMIT (SELECT n FROM free)
    FOR UPDATE OF t SKIP LOCKED
) c
WHERE tenants.tenant IS NOT NULL
  AND ($5::bool OR tenants.tenant = $6::text OR tenants.tenant = ANY($8::text[])
       OR tenants.tenant = ANY($9::text[]))
"#;
