//! Placement policy: which of the eligible pending tasks a claiming node gets.
//!
//! Placement is pull-based: a node claims when it has free capacity, and never
//! more than that, so work flows to the least-loaded nodes. The store filters
//! candidates by the eligibility rule (owner, shares, labels, agent) *inside its
//! query*; the [`Scheduler`] only orders what is already eligible. A scheduler can
//! therefore never place a task on an ineligible node.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::id::TaskId;
use crate::node::Node;
use crate::principal::TenantId;

/// One eligible pending task offered to the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The task.
    pub task: TaskId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its priority (higher first).
    pub priority: i32,
    /// Enqueue order (lower first) among tasks of equal priority.
    pub order: u64,
}

/// Picks which candidates a node gets.
pub trait Scheduler: Send + Sync + fmt::Debug + 'static {
    /// Returns indices into `candidates`, in the order to lease them, at most `max`.
    /// Every returned index must be distinct and in range; the store ignores any
    /// that are not.
    fn select(&self, node: &Node, candidates: &[Candidate], max: usize) -> Vec<usize>;
}

/// The default: round-robin across tenants (so that one tenant's burst cannot
/// starve another), and within a tenant by priority, then age.
#[derive(Debug, Default)]
pub struct FairScheduler {
    rotation: AtomicUsize,
}

impl Scheduler for FairScheduler {
    fn select(&self, _node: &Node, candidates: &[Candidate], max: usize) -> Vec<usize> {
        let n = candidates.len();
        if n == 0 || max == 0 {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&candidates[a], &candidates[b]);
            x.tenant
                .cmp(&y.tenant)
                .then(y.priority.cmp(&x.priority))
                .then(x.order.cmp(&y.order))
        });
        // Split into per-tenant runs.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        for i in 1..=n {
            if i == n || candidates[order[i]].tenant != candidates[order[start]].tenant {
                runs.push(start..i);
                start = i;
            }
        }
        if runs.len() == 1 {
            order.truncate(max);
            return order;
        }
        // Round-robin across tenants, starting from a rotating offset so that the
        // first slot does not always go to the same tenant.
        let offset = self.rotation.fetch_add(1, Ordering::Relaxed) % runs.len();
        let mut picked = Vec::with_capacity(max.min(n));
        let mut cursors: Vec<usize> = runs.iter().map(|r| r.start).collect();
        while picked.len() < max {
            let mut progressed = false;
            for k in 0..runs.len() {
                let r = (k + offset) % runs.len();
                if cursors[r] < runs[r].end && picked.len() < max {
                    picked.push(order[cursors[r]]);
                    cursors[r] += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::id::NodeId;
    use crate::node::{NodeSpec, NodeStatus};

    fn node() -> Node {
        Node {
            id: NodeId::new(),
            spec: NodeSpec::system("n", 10),
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: Timestamp::EPOCH,
            last_seen: Timestamp::EPOCH,
        }
    }

    fn cand(tenant: &str, priority: i32, order: u64) -> Candidate {
        Candidate {
            task: TaskId::new(),
            tenant: tenant.into(),
            priority,
            order,
        }
    }

    #[test]
    fn a_burst_from_one_tenant_does_not_starve_another() {
        let mut cands: Vec<Candidate> = (0..100).map(|i| cand("burst", 0, i)).collect();
        cands.push(cand("quiet", 0, 1000));
        let picked = FairScheduler::default().select(&node(), &cands, 4);
        assert_eq!(picked.len(), 4);
        assert!(picked.iter().any(|&i| cands[i].tenant.as_str() == "quiet"));
    }

    #[test]
    fn within_a_tenant_priority_then_age() {
        let cands = vec![
            cand("t", 0, 1),
            cand("t", 5, 3),
            cand("t", 5, 2),
            cand("t", -1, 0),
        ];
        let picked = FairScheduler::default().select(&node(), &cands, 3);
        assert_eq!(picked, vec![2, 1, 0]);
    }
}
