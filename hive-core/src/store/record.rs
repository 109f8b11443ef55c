//! Records: versioned documents with an append-only event stream each, for the
//! state that is not a task — workflows, the audit chain, API tokens, registry
//! experiments. A backend implements [`RecordStore`] once; every feature built on
//! it works on that backend.
//!
//! # Guarantees every implementation gives
//!
//! - **Compare-and-set writes.** [`RecordStore::write_record`] creates a record
//!   (`expected_version == 0`) or replaces it only if its stored version is
//!   `expected_version`; otherwise it is [`Error::Conflict`](crate::Error::Conflict)
//!   and nothing changes. Concurrent writers (threads, processes, machines) see
//!   exactly one winner per version.
//! - **Events in the same step.** The events of a write are appended to the
//!   record's stream in the same atomic step as the new body, with seq continuing
//!   gaplessly from the record's `last_seq` (the first event of a record is seq 1).
//! - **Stable reads.** A record's stream is never rewritten by the store; reads
//!   return the stored event bodies as written.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::principal::TenantId;

/// The longest accepted record kind, id or status, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 256;

/// One compare-and-set write of a record, with the events it appends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordWrite {
    /// What kind of record (`workflow`, `audit`, `token`…). Kinds never share ids.
    pub kind: String,
    /// The record's id within its kind.
    pub id: String,
    /// The tenant the record belongs to (fixed at creation; a later write with a
    /// different tenant is refused as `InvalidArgument`).
    pub tenant: TenantId,
    /// `0` to create (a record with this id must not exist), otherwise the version
    /// the caller read.
    pub expected_version: u64,
    /// A short indexed status (`running`, `succeeded`…) that listings filter on.
    pub status: String,
    /// The new body.
    pub body: serde_json::Value,
    /// Events to append to the record's stream, in order.
    pub events: Vec<serde_json::Value>,
    /// The time of the write.
    pub now: Timestamp,
}

impl RecordWrite {
    /// Checks the write's keys; backends call this first.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("kind", &self.kind),
            ("id", &self.id),
            ("status", &self.status),
        ] {
            if v.is_empty() || v.len() > MAX_RECORD_KEY_LEN {
                return Err(Error::InvalidArgument {
                    message: format!(
                        "record {name} must be 1 to {MAX_RECORD_KEY_LEN} bytes, got {} bytes",
                        v.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What a successful write produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordWritten {
    /// The record's new version (1 after creation).
    pub version: u64,
    /// The seq of the record's last event after the write (unchanged if the write
    /// appended none).
    pub last_seq: u64,
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its kind.
    pub kind: String,
    /// Its id within the kind.
    pub id: String,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its version: 1 after creation, +1 per write.
    pub version: u64,
    /// Its indexed status.
    pub status: String,
    /// Its body.
    pub body: serde_json::Value,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// The seq of its last event (0 when it has none).
    pub last_seq: u64,
}

/// One event of a record's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordEvent {
    /// Position in the record's stream: 1, 2, 3… without gaps.
    pub seq: u64,
    /// When it was stored.
    pub at: Timestamp,
    /// What was appended.
    pub body: serde_json::Value,
}

/// Filters and pagination for [`RecordStore::list_records`]. Results are ordered
/// by id (byte order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordQuery {
    /// Only this tenant's records (every tenant's when `None`).
    pub tenant: Option<TenantId>,
    /// Only records with one of these statuses (any when empty).
    pub statuses: Vec<String>,
    /// Resume after this id.
    pub after: Option<String>,
    /// At most this many (clamped to 1..=1000; default 100).
    pub limit: Option<u32>,
}

impl RecordQuery {
    /// The effective page size.
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1000) as usize
    }

    /// Whether `r` passes the tenant and status filters (not pagination).
    pub fn matches(&self, r: &Record) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == r.tenant)
            && (self.statuses.is_empty() || self.statuses.contains(&r.status))
    }
}

/// Versioned documents with event streams. See the module docs for the contract.
#[async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates or compare-and-set replaces a record and appends its events, in one
    /// atomic step. A version mismatch (or an existing record on create) is
    /// `Conflict`; a missing record with `expected_version > 0` is `NotFound`.
    async fn write_record(&self, write: RecordWrite) -> Result<RecordWritten>;

    /// One record.
    async fn get_record(&self, kind: &str, id: &str) -> Result<Option<Record>>;

    /// A page of records of `kind` matching `query`, ordered by id.
    async fn list_records(&self, kind: &str, query: &RecordQuery) -> Result<Vec<Record>>;

    /// Up to `limit` events of a record with seq > `after_seq`, in order. A missing
    /// record is `NotFound`.
    async fn read_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>>;

    /// Returns when the record has an event after `after_seq`, or after `timeout`.
    /// Spurious returns are allowed.
    async fn wait_for_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        timeout: Duration,
    ) -> Result<()>;
}
