//! Who drives which workflows (issue 11, item 15).
//!
//! Running workflows fall into [`PARTITIONS`] partitions by id. Each driver
//! (the background loop of one `Hive`) holds a lease on some of them — a
//! record of kind [`LEASE_KIND`] per partition, `{owner, until}`, written with
//! a compare-and-set — and drives only the workflows of its partitions. Every
//! scan it renews its leases, takes free or expired ones up to its share
//! (`PARTITIONS / live drivers`, rounded up), gives back what it holds beyond
//! that share, and, while below it, takes one partition at a time from the
//! driver that holds the most (a new process gets its share at once). So the
//! time of one pass grows with the workflows per process, not with the number
//! of processes.
//!
//! Leases are an optimisation, not a lock: every driving decision is still a
//! compare-and-set on the workflow record, so two drivers that briefly both
//! think they hold a partition (a steal, an expiry) only duplicate work. A
//! stopped `Hive` gives its partitions back; a crashed one's expire after the
//! lease time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::principal::TenantId;
use crate::store::{Record, RecordQuery, RecordWrite, Store};
use crate::workflow::WorkflowId;

/// How many partitions running workflows fall into (a bit each in a `u64`).
pub const PARTITIONS: u32 = 64;

/// The record kind of partition leases (tenant `_system`).
pub const LEASE_KIND: &str = "workflow-lease";

/// The partition of a workflow: its id's random low bits.
pub fn partition(id: WorkflowId) -> u32 {
    (id.as_uuid().as_u128() % u128::from(PARTITIONS)) as u32
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lease {
    /// The driver holding it (`""`: nobody).
    owner: String,
    /// Held until then (milliseconds since the epoch).
    until: i64,
}

/// One driver's partitions.
#[derive(Debug)]
pub(crate) struct Partitions {
    me: String,
    held: AtomicU64,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            me: uuid::Uuid::now_v7().to_string(),
            held: AtomicU64::new(0),
        }
    }
}

impl Partitions {
    /// Whether this driver holds `id`'s partition.
    pub(crate) fn drives(&self, id: WorkflowId) -> bool {
        self.held.load(Ordering::Relaxed) & (1 << partition(id)) != 0
    }

    /// How many partitions this driver holds.
    pub(crate) fn held(&self) -> u32 {
        self.held.load(Ordering::Relaxed).count_ones()
    }

    /// One round of renewing, giving back and taking leases (see the module
    /// docs). Answers how many partitions this driver holds afterwards.
    pub(crate) async fn balance(
        &self,
        store: &dyn Store,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<u32> {
        let records = store
            .list_records(
                LEASE_KIND,
                &RecordQuery {
                    tenant: Some(TenantId::system()),
                    statuses: Vec::new(),
                    after: None,
                    limit: Some(PARTITIONS),
                },
            )
            .await?;
        let mut leases: BTreeMap<u32, (Record, Lease)> = BTreeMap::new();
        for r in records {
            let (Ok(p), Ok(lease)) = (r.id.parse::<u32>(), serde_json::from_value(r.body.clone()))
            else {
                tracing::warn!(id = %r.id, "skipping a malformed workflow partition lease");
                continue;
            };
            if p < PARTITIONS {
                leases.insert(p, (r, lease));
            }
        }
        let live = |l: &Lease| !l.owner.is_empty() && l.until > now.as_millis();
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for (_, l) in leases.values() {
            if live(l) && l.owner != self.me {
                *counts.entry(l.owner.clone()).or_default() += 1;
            }
        }
        let drivers = counts.len() as u32 + 1;
        let share = PARTITIONS.div_ceil(drivers);
        let until = now
            .as_millis()
            .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mine: Vec<u32> = leases
            .iter()
            .filter(|(_, (_, l))| l.owner == self.me)
            .map(|(&p, _)| p)
            .collect();
        let mut held: u64 = 0;
        let mut kept = 0;
        for p in mine {
            let (rec, lease) = &leases[&p];
            let (owner, status) = if kept < share {
                (self.me.as_str(), "held")
            } else {
                ("", "free")
            };
            // Renew when half the lease time is gone; give back beyond the share.
            let renew = owner.is_empty()
                || lease.until - now.as_millis() < until.saturating_sub(now.as_millis()) / 2;
            let ok = !renew
                || self
                    .write(store, p, Some(rec), owner, status, until, now)
                    .await?;
            if ok && !owner.is_empty() {
                held |= 1 << p;
                kept += 1;
            }
        }
        // Free or expired partitions, up to the share.
        for p in 0..PARTITIONS {
            if kept >= share {
                break;
            }
            if held & (1 << p) != 0 {
                continue;
            }
            let existing = leases.get(&p);
            if existing.is_some_and(|(_, l)| live(l)) {
                continue;
            }
            if self
                .write(
                    store,
                    p,
                    existing.map(|(r, _)| r),
                    &self.me,
                    "held",
                    until,
                    now,
                )
                .await?
            {
                held |= 1 << p;
                kept += 1;
            }
        }
        // Still below the share: one at a time from whoever holds the most.
        while kept < share {
            let Some((owner, n)) = counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(o, n)| (o.clone(), *n))
            else {
                break;
            };
            if n <= share {
                break;
            }
            let Some((&p, (rec, _))) = leases
                .iter()
                .rev()
                .find(|(_, (_, l))| l.owner == owner && live(l))
            else {
                break;
            };
            let rec = rec.clone();
            if let Some(c) = counts.get_mut(&owner) {
                *c -= 1;
            }
            leases.remove(&p);
            if self
                .write(store, p, Some(&rec), &self.me, "held", until, now)
                .await?
            {
                held |= 1 << p;
                kept += 1;
            }
        }
        self.held.store(held, Ordering::Relaxed);
        Ok(kept)
    }

    /// Gives every held partition back (a stopping driver).
    pub(crate) async fn release(&self, store: &dyn Store, now: Timestamp) {
        let held = self.held.swap(0, Ordering::Relaxed);
        for p in 0..PARTITIONS {
            if held & (1 << p) == 0 {
                continue;
            }
            let rec = match store.get_record(LEASE_KIND, &p.to_string()).await {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "could not give a workflow partition back");
                    continue;
                }
            };
            let mine =
                serde_json::from_value::<Lease>(rec.body.clone()).is_ok_and(|l| l.owner == self.me);
            if mine && let Err(e) = self.write(store, p, Some(&rec), "", "free", 0, now).await {
                tracing::warn!(partition = p, error = %e, "could not give a workflow partition back");
            }
        }
    }

    /// Writes partition `p`'s lease; `false` when another driver wrote first.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        store: &dyn Store,
        p: u32,
        existing: Option<&Record>,
        owner: &str,
        status: &str,
        until: i64,
        now: Timestamp,
    ) -> Result<bool> {
        let body = serde_json::to_value(Lease {
            owner: owner.to_owned(),
            until,
        })
        .map_err(|e| Error::Backend {
            message: format!("encode a workflow partition lease: {e}"),
            source: None,
        })?;
        let write = RecordWrite {
            kind: LEASE_KIND.into(),
            id: p.to_string(),
            tenant: TenantId::system(),
            expected_version: existing.map_or(0, |r| r.version),
            status: status.into(),
            body,
            events: Vec::new(),
            now,
        };
        match store.write_record(write).await {
            Ok(_) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
