//! The chained audit event and its hash.

use hive_core::audit::{AuditEntry, AuditOutcome};
use hive_core::clock::Timestamp;
use hive_core::principal::{PrincipalId, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::canonical::{write_str, write_value};

/// The `prev_hash` of a tenant's first event: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event of a tenant's audit chain, as stored in the body of the event with
/// the same seq in the stream of the tenant's `audit` record.
///
/// # The hash
///
/// `hash` is the lowercase hex SHA-256 of the [canonical
/// JSON](super::canonical_json) of the object holding exactly these ten members
/// of the event — every member but `hash` itself:
///
/// ```text
/// {"action":…,"actor":…,"actor_kind":…,"at":…,"details":…,"outcome":…,
///  "prev_hash":…,"resource":…,"seq":…,"tenant":…}
/// ```
///
/// (`at` is milliseconds since the UNIX epoch, `outcome` is `allowed` or
/// `denied`, `seq` counts from 1.) `prev_hash` is the `hash` of the event with
/// the previous seq, and [`GENESIS_HASH`] for seq 1. To re-verify a trail
/// outside Hive, read the events in seq order and check, for each, that its seq
/// is one more than the previous one, that its `prev_hash` is the previous
/// event's `hash`, and that its `hash` is the hash of its other members; then
/// that the record's body (`{"seq":…,"hash":…}`, the chain's head) names the last
/// event and its hash. In Python, for events without non-integer numbers:
///
/// ```text
/// body = {k: v for k, v in event.items() if k in MEMBERS}
/// canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
/// assert hashlib.sha256(canon.encode()).hexdigest() == event["hash"]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the tenant's chain: 1, 2, 3… without gaps.
    pub seq: u64,
    /// When the attempt was made.
    pub at: Timestamp,
    /// The tenant whose trail it is (the actor's tenant).
    pub tenant: TenantId,
    /// Who.
    pub actor: PrincipalId,
    /// The actor's kind (`user`, `operator`, `admin`, `worker`, `system`).
    pub actor_kind: String,
    /// What (`task.submit`, `token.issue`…).
    pub action: String,
    /// On what (`task/<id>`, `token/<id>`, `tenant/<name>`, `system`).
    pub resource: String,
    /// Allowed or denied.
    pub outcome: AuditOutcome,
    /// The rest: a denial's reason, the number of tasks submitted, the token
    /// issued…
    pub details: serde_json::Value,
    /// The hash of the previous event ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// The hash of this event (see the type docs).
    pub hash: String,
}

impl AuditEvent {
    /// Numbers and chains `entry` after the event with hash `prev_hash`.
    pub fn chain(entry: AuditEntry, seq: u64, prev_hash: String) -> AuditEvent {
        let mut event = AuditEvent {
            seq,
            at: entry.at,
            tenant: entry.tenant,
            actor: entry.actor,
            actor_kind: entry.actor_kind,
            action: entry.action,
            resource: entry.resource,
            outcome: entry.outcome,
            details: entry.details,
            prev_hash,
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }

    /// The canonical bytes the hash is computed over (see the type docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"action\":");
        write_str(&self.action, &mut out);
        out.extend_from_slice(b",\"actor\":");
        write_str(self.actor.as_str(), &mut out);
        out.extend_from_slice(b",\"actor_kind\":");
        write_str(&self.actor_kind, &mut out);
        out.extend_from_slice(b",\"at\":");
        out.extend_from_slice(self.at.as_millis().to_string().as_bytes());
        out.extend_from_slice(b",\"details\":");
        write_value(&self.details, &mut out);
        out.extend_from_slice(b",\"outcome\":");
        write_str(&self.outcome.to_string(), &mut out);
        out.extend_from_slice(b",\"prev_hash\":");
        write_str(&self.prev_hash, &mut out);
        out.extend_from_slice(b",\"resource\":");
        write_str(&self.resource, &mut out);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"tenant\":");
        write_str(self.tenant.as_str(), &mut out);
        out.push(b'}');
        out
    }

    /// The hash the event should carry: lowercase hex SHA-256 of
    /// [`AuditEvent::canonical_bytes`]. Ignores the current `hash`.
    pub fn compute_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

/// The head of a tenant's chain: its last event's seq and hash. It is the body of
/// the tenant's `audit` record, written in the same atomic step as the events, so
/// a stream that ends before the head has lost its tail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last event's seq (0 for an empty chain).
    pub seq: u64,
    /// The last event's hash ([`GENESIS_HASH`] for an empty chain).
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}
