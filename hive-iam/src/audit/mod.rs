//! The audit trail: a hash chain per tenant over a [`RecordStore`].
//!
//! # Layout
//!
//! Each tenant has one record of kind [`AUDIT_KIND`] whose id is the tenant's
//! name. Each audited attempt is one event of that record's stream, with the same
//! seq, whose body is an [`AuditEvent`]; the record's body is the chain's
//! [`ChainHead`] (`{"seq":…,"hash":…}` of the last event). Events and head are
//! written together by one compare-and-set [`RecordStore::write_record`], so
//! the chain never forks: a writer that lost the race (another process appended
//! first) gets `Conflict`, re-reads the head and chains after it.
//!
//! # What `verify` detects, and what it cannot
//!
//! An edited event (its hash no longer matches), a deleted event (a seq gap), a
//! moved or replaced event (`prev_hash` mismatch), a malformed event, and a
//! removed tail (the head promises more than the stream has). A hash chain
//! cannot tell a trail rewritten *whole* — every event re-hashed and the head
//! updated, by someone with write access to the store — from the original:
//! keep [`VerifyReport::head`] somewhere else from time to time and compare.

mod canonical;
mod event;
mod verify;

pub use canonical::canonical_json;
pub use event::{AuditEvent, ChainHead, GENESIS_HASH};
pub use verify::{BrokenLink, ChainVerifier, VerifyReport, verify_chain};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hive_core::Hive;
use hive_core::audit::{AuditEntry, AuditOutcome, Auditor};
use hive_core::auth::{Action, Resource};
use hive_core::principal::{Principal, PrincipalId, TenantId};
use hive_core::store::{RecordQuery, RecordStore, RecordWrite};
use hive_core::{Error, Result, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The record kind of audit chains (one record per tenant, id = the tenant).
pub const AUDIT_KIND: &str = "audit";

/// At most this many events go into one record write.
const MAX_EVENTS_PER_WRITE: usize = 1000;
/// How often an append is retried after losing a compare-and-set race.
const MAX_APPEND_ATTEMPTS: u32 = 64;
/// Events read per store call when listing or verifying.
const READ_PAGE: usize = 1000;
/// At most this many events are scanned by one `list` call.
const MAX_LIST_SCAN: usize = 100_000;

/// Filters and pagination of [`AuditTrail::list`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// The tenant whose trail to read: the caller's when `None`; another
    /// tenant's only with `system:admin` (otherwise `NotFound`).
    pub tenant: Option<TenantId>,
    /// Only this action (its wire name, e.g. `token.issue`).
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<PrincipalId>,
    /// Only this outcome.
    pub outcome: Option<AuditOutcome>,
    /// Only events after this seq (0: from the start).
    pub after_seq: u64,
    /// At most this many events (clamped to 1..=1000; default 100).
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// Only `action`.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action.as_str().to_owned());
        self
    }

    /// Only `actor`.
    pub fn actor(mut self, actor: impl Into<PrincipalId>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Only `outcome`.
    pub fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// The effective page size.
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1000) as usize
    }

    /// Whether `event` passes the filters (not the pagination).
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.action.as_ref().is_none_or(|a| *a == event.action)
            && self.actor.as_ref().is_none_or(|a| *a == event.actor)
            && self.outcome.is_none_or(|o| o == event.outcome)
    }
}

/// One page of [`AuditTrail::list`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The matching events, in seq order.
    pub events: Vec<AuditEvent>,
    /// Pass as `after_seq` to read on; `None` when the end of the trail was
    /// reached. A page may hold fewer than `limit` events and still have a next
    /// one (a call scans a bounded number of events).
    pub next_after_seq: Option<u64>,
}

/// The hash-chained audit trail: an [`Auditor`] for the engine
/// ([`hive_core::HiveBuilder::auditor`]), and its reader.
///
/// Appends are serialized per tenant inside one process (callers arriving while
/// a write is in flight are written together by the next one) and
/// compare-and-set across processes. An append that cannot be stored is an
/// error, so the engine refuses the privileged action (fail closed).
#[derive(Debug)]
pub struct AuditTrail {
    store: Arc<dyn RecordStore>,
    chains: Mutex<HashMap<TenantId, Arc<TenantChain>>>,
}

#[derive(Debug, Default)]
struct TenantChain {
    pending: Mutex<Vec<Pending>>,
    /// Held by the one caller writing for the tenant; caches the head it wrote.
    writer: tokio::sync::Mutex<Option<Tip>>,
}

#[derive(Debug)]
struct Pending {
    entries: Vec<AuditEntry>,
    done: oneshot::Sender<Result<()>>,
}

/// The chain's head and the record version it was read or written at.
#[derive(Clone, Debug)]
struct Tip {
    version: u64,
    head: ChainHead,
}

impl AuditTrail {
    /// A trail over `store` (any backend's; an `Arc<dyn Store>` converts).
    pub fn new(store: Arc<dyn RecordStore>) -> Self {
        AuditTrail {
            store,
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// The trail in the engine's store: to read ([`AuditTrail::list`]) and
    /// verify ([`AuditTrail::verify`]) what the engine audited. (The engine's
    /// own auditor is the one given to [`hive_core::HiveBuilder::auditor`];
    /// readers need not be that instance.)
    pub fn for_hive(hive: &Hive) -> Self {
        let store: Arc<dyn RecordStore> = hive.store().clone();
        AuditTrail::new(store)
    }

    fn chain(&self, tenant: &TenantId) -> Arc<TenantChain> {
        self.chains
            .lock()
            .entry(tenant.clone())
            .or_default()
            .clone()
    }

    /// Appends `entries` to `tenant`'s chain, in order.
    async fn append(&self, tenant: &TenantId, entries: Vec<AuditEntry>) -> Result<()> {
        let chain = self.chain(tenant);
        let (done, mut rx) = oneshot::channel();
        chain.pending.lock().push(Pending { entries, done });
        let mut tip = chain.writer.lock().await;
        // An earlier writer may have taken our entries along.
        match rx.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Err(interrupted()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch = std::mem::take(&mut *chain.pending.lock());
        let mut entries = Vec::new();
        let mut waiters = Vec::with_capacity(batch.len());
        for p in batch {
            entries.extend(p.entries);
            waiters.push(p.done);
        }
        let result = self.write(tenant, &mut tip, entries).await;
        for w in waiters {
            let _ = w.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(replicate(e)),
            });
        }
        // Ours was in the batch (it was still pending when we got the lock).
        result
    }

    async fn write(
        &self,
        tenant: &TenantId,
        tip: &mut Option<Tip>,
        entries: Vec<AuditEntry>,
    ) -> Result<()> {
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<AuditEntry> = entries.by_ref().take(MAX_EVENTS_PER_WRITE).collect();
            self.write_chunk(tenant, tip, &chunk).await?;
        }
        Ok(())
    }

    async fn write_chunk(
        &self,
        tenant: &TenantId,
        tip: &mut Option<Tip>,
        chunk: &[AuditEntry],
    ) -> Result<()> {
        let now = chunk
            .iter()
            .map(|e| e.at)
            .max()
            .unwrap_or_else(Timestamp::now);
        let mut attempt = 0;
        loop {
            // Taken out so that a write interrupted half-way leaves no stale tip.
            let base = match tip.take() {
                Some(t) => t,
                None => self.load_tip(tenant).await?,
            };
            let mut prev = base.head.hash.clone();
            let mut events = Vec::with_capacity(chunk.len());
            for (i, entry) in chunk.iter().enumerate() {
                let event = AuditEvent::chain(entry.clone(), base.head.seq + 1 + i as u64, prev);
                prev = event.hash.clone();
                events.push(to_json(&event)?);
            }
            let head = ChainHead {
                seq: base.head.seq + chunk.len() as u64,
                hash: prev,
            };
            let write = RecordWrite {
                kind: AUDIT_KIND.to_owned(),
                id: tenant.as_str().to_owned(),
                tenant: tenant.clone(),
                expected_version: base.version,
                status: "active".to_owned(),
                body: to_json(&head)?,
                events,
                now,
            };
            match self.store.write_record(write).await {
                Ok(w) if w.last_seq == head.seq => {
                    *tip = Some(Tip {
                        version: w.version,
                        head,
                    });
                    return Ok(());
                }
                Ok(w) => {
                    return Err(Error::Backend {
                        message: format!(
                            "the store numbered tenant {tenant}'s audit events up to {} \
                             but the chain's head is {}; run verify",
                            w.last_seq, head.seq
                        ),
                        source: None,
                    });
                }
                Err(Error::Conflict { .. } | Error::NotFound { .. })
                    if attempt + 1 < MAX_APPEND_ATTEMPTS =>
                {
                    // Another process appended (or the record changed) since the
                    // head was read: re-read it and chain after the new head.
                    attempt += 1;
                    backoff(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn load_tip(&self, tenant: &TenantId) -> Result<Tip> {
        let Some(record) = self.store.get_record(AUDIT_KIND, tenant.as_str()).await? else {
            return Ok(Tip {
                version: 0,
                head: ChainHead::genesis(),
            });
        };
        let head: ChainHead = serde_json::from_value(record.body).map_err(|e| Error::Backend {
            message: format!("tenant {tenant}'s audit head is malformed ({e}); run verify"),
            source: None,
        })?;
        if head.seq != record.last_seq {
            return Err(Error::Backend {
                message: format!(
                    "tenant {tenant}'s audit head is at seq {} but its stream at {}; run verify",
                    head.seq, record.last_seq
                ),
                source: None,
            });
        }
        Ok(Tip {
            version: record.version,
            head,
        })
    }

    /// The tenant a caller reads: its own, or the one it names if it may see it
    /// (another tenant's trail is `NotFound`, as every object of another tenant).
    fn readable_tenant(caller: &Principal, named: Option<&TenantId>) -> Result<TenantId> {
        match named {
            None => Ok(caller.tenant.clone()),
            Some(t) if caller.can_see_tenant(t) => Ok(t.clone()),
            Some(t) => Err(Error::NotFound {
                kind: "audit trail",
                id: t.to_string(),
            }),
        }
    }

    /// A page of a tenant's trail, oldest first. Needs `audit:read`
    /// ([`Action::ReadAudit`]); reads the caller's tenant, or with
    /// `system:admin` the tenant the query names.
    pub async fn list(
        &self,
        hive: &Hive,
        caller: &Principal,
        query: &AuditQuery,
    ) -> Result<AuditPage> {
        let tenant = Self::readable_tenant(caller, query.tenant.as_ref())?;
        hive.authorize(caller, Action::ReadAudit, &audit_resource(&tenant))
            .await?;
        let limit = query.effective_limit();
        let mut events = Vec::new();
        let mut cursor = query.after_seq;
        let mut scanned = 0;
        loop {
            let page = self.read_page(&tenant, cursor).await?;
            if page.is_empty() {
                return Ok(AuditPage {
                    events,
                    next_after_seq: None,
                });
            }
            for stored in page {
                cursor = stored.seq;
                scanned += 1;
                let event: AuditEvent =
                    serde_json::from_value(stored.body).map_err(|e| Error::Backend {
                        message: format!(
                            "tenant {tenant}'s audit event {} is malformed ({e}); run verify",
                            stored.seq
                        ),
                        source: None,
                    })?;
                if query.matches(&event) {
                    events.push(event);
                }
                if events.len() >= limit || scanned >= MAX_LIST_SCAN {
                    return Ok(AuditPage {
                        events,
                        next_after_seq: Some(cursor),
                    });
                }
            }
        }
    }

    /// The tenants that have an audit trail — every tenant in which an
    /// audited action was taken or refused — ordered by name: what an
    /// operator walks to verify or export every trail. Listing every tenant is
    /// a platform read: without `system:admin` it is `Forbidden` (the refusal
    /// is audited); with it, the caller also needs `audit:read`
    /// ([`Action::ReadAudit`]).
    pub async fn tenants(&self, hive: &Hive, caller: &Principal) -> Result<Vec<TenantId>> {
        let resource = Resource::Named {
            kind: AUDIT_KIND,
            id: "*".to_owned(),
            tenant: caller.tenant.clone(),
        };
        crate::authorize_platform_read(
            hive,
            caller,
            Action::ReadAudit,
            &resource,
            "listing every tenant's audit trail needs system:admin",
        )
        .await?;
        let mut tenants = Vec::new();
        let mut query = RecordQuery {
            limit: Some(READ_PAGE as u32),
            ..RecordQuery::default()
        };
        loop {
            let page = self.store.list_records(AUDIT_KIND, &query).await?;
            let full = page.len() >= query.effective_limit();
            query.after = page.last().map(|r| r.id.clone());
            tenants.extend(page.into_iter().map(|r| r.tenant));
            if !full {
                return Ok(tenants);
            }
        }
    }

    async fn read_page(
        &self,
        tenant: &TenantId,
        after: u64,
    ) -> Result<Vec<hive_core::store::RecordEvent>> {
        match self
            .store
            .read_record_events(AUDIT_KIND, tenant.as_str(), after, READ_PAGE)
            .await
        {
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Walks `tenant`'s whole chain and reports the first broken link (see
    /// [`verify_chain`]); also checks the record's own event count against the
    /// head. Needs `audit:read`; another tenant needs `system:admin`.
    pub async fn verify(
        &self,
        hive: &Hive,
        caller: &Principal,
        tenant: &TenantId,
    ) -> Result<VerifyReport> {
        let tenant = Self::readable_tenant(caller, Some(tenant))?;
        hive.authorize(caller, Action::ReadAudit, &audit_resource(&tenant))
            .await?;
        let Some(record) = self.store.get_record(AUDIT_KIND, tenant.as_str()).await? else {
            return Ok(verify_chain(&[], None));
        };
        let mut verifier = ChainVerifier::new();
        let mut cursor = 0;
        'read: loop {
            let page = self.read_page(&tenant, cursor).await?;
            if page.is_empty() {
                break;
            }
            for stored in &page {
                cursor = stored.seq;
                if !verifier.push(stored) {
                    break 'read;
                }
            }
        }
        let checked = verifier.checked();
        let head: Option<ChainHead> = serde_json::from_value(record.body).ok();
        let Some(head) = head else {
            let report = verifier.finish(None);
            if !report.ok {
                return Ok(report);
            }
            return Ok(VerifyReport::broken(
                checked,
                checked.max(1),
                BrokenLink::HeadMismatch,
                "the audit record's body is not a chain head".to_owned(),
            ));
        };
        let report = verifier.finish(Some(&head));
        if report.ok && record.last_seq != head.seq {
            let (seq, kind) = if record.last_seq > head.seq {
                (head.seq + 1, BrokenLink::Truncated)
            } else {
                (record.last_seq + 1, BrokenLink::HeadMismatch)
            };
            return Ok(VerifyReport::broken(
                checked,
                seq,
                kind,
                format!(
                    "the audit record counts {} events but its head says {}",
                    record.last_seq, head.seq
                ),
            ));
        }
        Ok(report)
    }
}

#[async_trait]
impl Auditor for AuditTrail {
    async fn record(&self, entries: Vec<AuditEntry>) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if entries.iter().all(|e| e.tenant == first.tenant) {
            let tenant = first.tenant.clone();
            return self.append(&tenant, entries).await;
        }
        let mut groups: Vec<(TenantId, Vec<AuditEntry>)> = Vec::new();
        for entry in entries {
            match groups.iter_mut().find(|(t, _)| *t == entry.tenant) {
                Some((_, group)) => group.push(entry),
                None => groups.push((entry.tenant.clone(), vec![entry])),
            }
        }
        for (tenant, group) in groups {
            self.append(&tenant, group).await?;
        }
        Ok(())
    }
}

fn audit_resource(tenant: &TenantId) -> Resource {
    Resource::Named {
        kind: AUDIT_KIND,
        id: tenant.to_string(),
        tenant: tenant.clone(),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Backend {
        message: format!("cannot encode an audit event: {e}"),
        source: Some(Box::new(e)),
    })
}

fn interrupted() -> Error {
    Error::BackendUnavailable {
        message: "the audit append carrying this entry was interrupted; retry".into(),
        source: None,
    }
}

/// The same error for another waiter of a failed batch (sources are not
/// cloneable; their text is kept).
fn replicate(e: &Error) -> Error {
    match e {
        Error::BackendUnavailable { .. } | Error::Timeout(_) | Error::Shutdown => {
            Error::BackendUnavailable {
                message: e.to_string(),
                source: None,
            }
        }
        Error::Conflict { message } => Error::Conflict {
            message: message.clone(),
        },
        Error::InvalidArgument { message } => Error::InvalidArgument {
            message: message.clone(),
        },
        other => Error::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}

async fn backoff(attempt: u32) {
    if attempt <= 2 {
        tokio::task::yield_now().await;
        return;
    }
    // Up to 1, 2, 4 … 32 ms, jittered so that racing processes spread out.
    let cap_us = 1000u64 << (attempt - 3).min(5);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_micros(cap_us / 2 + nanos % (cap_us / 2))).await;
}
