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

/// Where the last round of [`shares`] starts: moves with every claim.
static ROTATION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
);

/// A row of [`ONE_TENANT`]: a candidate row (all `None` in the row that says
/// how many tenants wait), the node's lease count, the tenants waiting.
#[derive(sqlx::FromRow)]
struct FirstRow(
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

impl FirstRow {
    fn candidate(self) -> Option<CandidateRow> {
        Some((
            self.0?, self.1?, self.2?, self.3?, self.4?, self.5?, self.6?, self.7?, self.8?,
        ))
    }
}

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
        let labels = codec::encode_labels(&node.spec.labels)?;
        // The common case, one tenant waiting, in one statement: its first
        // `free` eligible tasks, locked. With several tenants the statement
        // locks nothing and answers how many there are; then, without locking
        // anything, how many eligible tasks each has (up to the free slots),
        // and only each tenant's round-robin share of the free slots is
        // locked (issue 11, item 13): a claim locks at most `free` rows, not
        // `free` per tenant.
        // Binds the eligibility rule's parameters ($1–$10 of each statement).
        macro_rules! eligible_for_node {
            ($q:expr) => {
                $q.bind(now.as_millis())
                    .bind(req.node.to_string())
                    .bind(&agents)
                    .bind(&labels)
                    .bind(system)
                    .bind(owner_tenant)
                    .bind(owner_principal)
                    .bind(&share_tenants)
                    .bind(&share_user_tenants)
                    .bind(&share_user_principals)
            };
        }
        let first: Vec<FirstRow> = eligible_for_node!(sqlx::query_as(ONE_TENANT))
            .bind(i64::from(req.max))
            .bind(i64::from(node.spec.capacity))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db("read candidates", e))?;
        // The leases counted after the node's lock was granted (the locking
        // statement's snapshot may predate a claim it waited for).
        if let Some(r) = first.first() {
            node.in_flight = u32::try_from(r.9).unwrap_or(u32::MAX);
        }
        let several = matches!(first.as_slice(), [r] if r.0.is_none() && r.10 > 1);
        let rows: Vec<CandidateRow> = if several {
            let counts: Vec<(String, i64, i64)> = eligible_for_node!(sqlx::query_as(COUNTS))
                .bind(i64::from(req.max))
                .bind(i64::from(node.spec.capacity))
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db("count candidates", e))?;
            let free = counts.first().map_or(0, |c| c.2);
            let n: Vec<i64> = counts.iter().map(|c| c.1).collect();
            let tenants: Vec<String> = counts.into_iter().map(|c| c.0).collect();
            let start = ROTATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let quotas = shares(&n, free, start);
            if tenants.is_empty() {
                Vec::new()
            } else {
                eligible_for_node!(sqlx::query_as(CANDIDATES))
                    .bind(&tenants)
                    .bind(&quotas)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| db("read candidates", e))?
            }
        } else {
            first.into_iter().filter_map(FirstRow::candidate).collect()
        };
        if rows.is_empty() {
            let next_due = next_due(&mut tx, now).await?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            return Ok(ClaimResult {
                tasks: Vec::new(),
                epoch,
                next_due,
            });
        }
        let max = req.max.min(node.free());
        let mut batch = Transitions::default();
        let mut candidates = Vec::with_capacity(rows.len());
        let mut principals = Vec::with_capacity(rows.len());
        for (id, tenant, principal, priority, order, created_at, spec, input, core) in rows {
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
        let mut buckets = RateBuckets::lock(&mut tx, &batch, &picked).await?;
        let mut taken = vec![false; candidates.len()];
        let mut claimed = Vec::with_capacity(picked.len().min(max as usize));
        for i in picked {
            if i >= candidates.len() || taken[i] || claimed.len() >= max as usize {
                continue;
            }
            taken[i] = true;
            if !buckets.take(batch.task(i), now) {
                continue;
            }
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
        buckets.store(&mut tx).await?;
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

/// The rate-limit buckets of a claim's picked tasks, locked (sorted, so
/// concurrent claims never deadlock on them) and read in one statement, then
/// taken from in memory and written back with the held-back tasks' new
/// `available_at` before the claim commits.
#[derive(Default)]
struct RateBuckets {
    /// (tenant, key) → theoretical arrival time (µs), and whether it changed.
    tat: rustc_hash::FxHashMap<(String, String), (i64, bool)>,
    /// Tokens of the tasks held back per bucket in this claim.
    held: rustc_hash::FxHashMap<(String, String), u64>,
    /// Held-back tasks and when they are claimable again (ms).
    moved: Vec<(String, i64)>,
}

impl RateBuckets {
    async fn lock(
        conn: &mut sqlx::PgConnection,
        batch: &Transitions,
        picked: &[usize],
    ) -> Result<RateBuckets> {
        let mut keys: Vec<(&str, &str)> = picked
            .iter()
            .filter(|&&i| i < batch.len())
            .filter_map(|&i| {
                let t = batch.task(i);
                Some((t.tenant.as_str(), t.spec.rate_limit_key()?.0))
            })
            .collect();
        let mut out = RateBuckets::default();
        if keys.is_empty() {
            return Ok(out);
        }
        keys.sort_unstable();
        keys.dedup();
        let (tenants, names): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "INSERT INTO rate_buckets AS b (tenant, key, tat) \
             SELECT t, k, 0 FROM UNNEST($1::text[], $2::text[]) AS x(t, k) ORDER BY t, k \
             ON CONFLICT (tenant, key) DO UPDATE SET tat = b.tat \
             RETURNING b.tenant, b.key, b.tat",
        )
        .bind(tenants)
        .bind(names)
        .fetch_all(conn)
        .await
        .map_err(|e| db("lock rate-limit buckets", e))?;
        for (tenant, key, tat) in rows {
            out.tat.insert((tenant, key), (tat, false));
        }
        Ok(out)
    }

    /// Takes the task's tokens (true), or holds it back in line (false).
    fn take(&mut self, task: &super::transition::Loaded, now: Timestamp) -> bool {
        let Some((key, rl)) = task.spec.rate_limit_key() else {
            return true;
        };
        let bucket = (task.tenant.as_str().to_owned(), key.to_owned());
        let Some(entry) = self.tat.get_mut(&bucket) else {
            return true;
        };
        match rl.take(entry.0, now.as_millis().saturating_mul(1000)) {
            Ok(tat) => {
                *entry = (tat, true);
                true
            }
            Err(at_us) => {
                let ahead = self.held.entry(bucket).or_insert(0);
                let at_us = rl.queue_at(at_us, *ahead);
                *ahead += u64::from(rl.units);
                self.moved
                    .push((task.id.to_string(), at_us.saturating_add(999) / 1000));
                false
            }
        }
    }

    async fn store(self, conn: &mut sqlx::PgConnection) -> Result<()> {
        let (mut tenants, mut keys, mut tats) = (Vec::new(), Vec::new(), Vec::new());
        for ((tenant, key), (tat, changed)) in self.tat {
            if changed {
                tenants.push(tenant);
                keys.push(key);
                tats.push(tat);
            }
        }
        if !tenants.is_empty() {
            sqlx::query(
                "UPDATE rate_buckets b SET tat = u.tat \
                 FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u(tenant, key, tat) \
                 WHERE b.tenant = u.tenant AND b.key = u.key",
            )
            .bind(tenants)
            .bind(keys)
            .bind(tats)
            .execute(&mut *conn)
            .await
            .map_err(|e| db("take rate-limit tokens", e))?;
        }
        if !self.moved.is_empty() {
            let (ids, ats): (Vec<String>, Vec<i64>) = self.moved.into_iter().unzip();
            sqlx::query(
                "UPDATE tasks t SET available_at = u.at \
                 FROM UNNEST($1::text[], $2::int8[]) AS u(id, at) WHERE t.id = u.id::uuid",
            )
            .bind(ids)
            .bind(ats)
            .execute(&mut *conn)
            .await
            .map_err(|e| db("hold rate-limited tasks", e))?;
        }
        Ok(())
    }
}

/// When the earliest pending task in its backoff becomes claimable (an index
/// lookup on `tasks_delayed`).
async fn next_due(conn: &mut sqlx::PgConnection, now: Timestamp) -> Result<Option<Timestamp>> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT min(available_at) FROM tasks \
         WHERE state = 'pending' AND available_at > created_at AND available_at > $1 \
         AND available_at < 253402300799999",
    )
    .bind(now.as_millis())
    .fetch_one(conn)
    .await
    .map_err(|e| db("read the next due retry", e))?;
    Ok(at.map(Timestamp::from_millis))
}

/// Each tenant's share of `free` slots when tenant `k` has `counts[k]`
/// eligible tasks, as a round-robin across tenants hands them out: every
/// tenant gets `min(count, K - 1)` for the level `K` the round-robin reaches
/// (the smallest with `sum(min(count, K)) >= free`), and the slots left for
/// the last round go to tenants that have a `K`-th task, from the tenant at
/// `start` on (rotating across claims, so no tenant is always last). The
/// shares add up to `min(free, sum(counts))`: a claim locks no more rows than
/// it can take.
pub(crate) fn shares(counts: &[i64], free: i64, start: usize) -> Vec<i64> {
    let total: i64 = counts.iter().sum();
    if total <= free {
        return counts.to_vec();
    }
    let reach = |k: i64| counts.iter().map(|&n| n.min(k)).sum::<i64>();
    let (mut lo, mut hi) = (0, counts.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if reach(mid) >= free {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut out: Vec<i64> = counts.iter().map(|&n| n.min(lo - 1).max(0)).collect();
    let mut left = free - out.iter().sum::<i64>();
    let n = counts.len();
    for k in 0..n {
        if left == 0 {
            break;
        }
        let t = (start + k) % n;
        if counts[t] >= lo {
            out[t] += 1;
            left -= 1;
        }
    }
    out
}

/// The eligibility rule of a pending task `t` for the node (shared by
/// [`COUNTS`] and [`CANDIDATES`]): available, not avoiding the node, an
/// accepted agent, labels the node has, and an owner the node may run (a
/// system node runs anyone's; a user node its owner's and those it is shared
/// with).
macro_rules! eligible {
    () => {
        r#"t.state = 'pending' AND t.key_wait IS NULL AND t.available_at <= $1
      AND (t.avoid_node IS NULL OR t.avoid_node <> $2::uuid)
      AND (cardinality($3::text[]) = 0 OR t.agent = ANY($3::text[]))
      AND t.labels <@ $4::jsonb
      AND ($5::bool
           OR (t.tenant = $6::text AND t.principal = $7::text)
           OR t.tenant = ANY($8::text[])
           OR EXISTS (SELECT 1 FROM UNNEST($9::text[], $10::text[]) AS s(tenant, principal)
                      WHERE s.tenant = t.tenant AND s.principal = t.principal))"#
    };
}

/// The loose index scan over the tenants with pending tasks, the node's
/// lease count and free slots (capacity `$12` minus its leases, at most
/// `$11`), and the tenants the node may run (shared by [`ONE_TENANT`] and
/// [`COUNTS`]).
macro_rules! tenants_cte {
    () => {
        r#"
WITH RECURSIVE leases AS (
    SELECT count(*) AS n FROM tasks WHERE lease_node = $2::uuid
), free AS (
    SELECT greatest(0, least($11::int8, $12::int8 - leases.n)) AS n FROM leases
), tenants(tenant) AS (
    (SELECT tenant FROM tasks WHERE state = 'pending' AND key_wait IS NULL
     ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT t.tenant FROM tasks t
            WHERE t.state = 'pending' AND t.key_wait IS NULL AND t.tenant > tenants.tenant
            ORDER BY t.tenant LIMIT 1)
    FROM tenants WHERE tenants.tenant IS NOT NULL
), visible AS (
    SELECT tenants.tenant FROM tenants
    WHERE tenants.tenant IS NOT NULL
      AND ($5::bool OR tenants.tenant = $6::text OR tenants.tenant = ANY($8::text[])
           OR tenants.tenant = ANY($9::text[]))
)"#
    };
}

/// When exactly one tenant the node may run has pending tasks: its first
/// eligible ones by priority then enqueue order, as many as the node has free
/// slots, locked or skipped if another transaction holds them. Otherwise one
/// row of `NULL`s. Every row carries the node's lease count and the number of
/// such tenants.
const ONE_TENANT: &str = concat!(
    tenants_cte!(),
    r#", nv AS (
    SELECT count(*) AS n FROM visible
)
SELECT c.id::text, c.tenant, c.principal, c.priority, c.queue_order, c.created_at,
       c.spec::text, c.input::text, c.core::text, (SELECT n FROM leases), (SELECT n FROM nv)
FROM visible CROSS JOIN LATERAL (
    SELECT t.* FROM tasks t
    WHERE t.tenant = visible.tenant AND "#,
    eligible!(),
    r#"
    ORDER BY t.priority DESC, t.queue_order
    LIMIT (SELECT n FROM free)
    FOR UPDATE OF t SKIP LOCKED
) c
WHERE (SELECT n FROM nv) = 1
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT n FROM leases), (SELECT n FROM nv)
WHERE (SELECT n FROM nv) <> 1
"#
);

/// For every tenant the node may run that has pending tasks, how many
/// eligible tasks it has, counted up to the node's free slots; each row also
/// carries the free slots. Nothing is locked.
const COUNTS: &str = concat!(
    tenants_cte!(),
    r#"
SELECT c.tenant, c.n, (SELECT n FROM free)
FROM (
    SELECT v.tenant, (
        SELECT count(*) FROM (
            SELECT 1 FROM tasks t
            WHERE t.tenant = v.tenant AND "#,
    eligible!(),
    r#"
            LIMIT (SELECT n FROM free)
        ) x
    ) AS n
    FROM visible v
) c
WHERE c.n > 0
"#
);

/// The eligible pending tasks of each tenant `$11[k]`, its first `$12[k]` by
/// priority then enqueue order, locked or skipped if another transaction
/// holds them.
const CANDIDATES: &str = concat!(
    r#"
SELECT c.id::text, c.tenant, c.principal, c.priority, c.queue_order, c.created_at,
       c.spec::text, c.input::text, c.core::text
FROM UNNEST($11::text[], $12::int8[]) AS q(tenant, quota) CROSS JOIN LATERAL (
    SELECT t.* FROM tasks t
    WHERE t.tenant = q.tenant AND "#,
    eligible!(),
    r#"
    ORDER BY t.priority DESC, t.queue_order
    LIMIT q.quota
    FOR UPDATE OF t SKIP LOCKED
) c
"#
);

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn shares_fill_free_slots_round_robin() {
        assert_eq!(shares(&[1000], 100, 0), vec![100]);
        assert_eq!(shares(&[30, 40], 100, 0), vec![30, 40]);
        assert_eq!(shares(&[1000, 1000], 100, 0), vec![50, 50]);
        assert_eq!(shares(&[1000, 1000, 1000], 100, 0), vec![34, 33, 33]);
        assert_eq!(shares(&[1000, 1000, 1000], 100, 2), vec![33, 33, 34]);
        assert_eq!(shares(&[5, 1000, 1000], 100, 0), vec![5, 48, 47]);
        assert_eq!(shares(&[0, 7], 100, 0), vec![0, 7]);
        let many = vec![1; 1000];
        let s = shares(&many, 100, 950);
        assert_eq!(s.iter().sum::<i64>(), 100, "one each for 100 tenants");
        assert!(s[950..].iter().all(|&n| n == 1) && s[..50].iter().all(|&n| n == 1));
        let skew: Vec<i64> = (0..50).map(|i| if i == 0 { 1000 } else { 1 }).collect();
        let s = shares(&skew, 100, 7);
        assert_eq!(s[0], 51);
        assert_eq!(s.iter().sum::<i64>(), 100);
        assert_eq!(shares(&[], 100, 0), Vec::<i64>::new());
        for start in 0..5 {
            let s = shares(&[3, 9, 1, 20, 6], 17, start);
            assert_eq!(s.iter().sum::<i64>(), 17);
            assert!(s.iter().zip([3, 9, 1, 20, 6]).all(|(a, n)| *a <= n));
        }
    }
}
