//! Verifying a chain: a pure walk over stored events, so that any backend's rows
//! (or a test's hand-edited ones) can be checked the same way.

use hive_core::store::RecordEvent;
use serde::{Deserialize, Serialize};

use super::event::{AuditEvent, ChainHead, GENESIS_HASH};

/// How a chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BrokenLink {
    /// An event is missing: the stream skips a seq (a deleted event).
    Missing,
    /// An event's body is not an audit event (edited into something else).
    Malformed,
    /// An event's `seq` member differs from its position in the stream.
    SeqMismatch,
    /// An event's `prev_hash` is not the previous event's hash (the previous
    /// event was replaced, or this one was moved).
    PrevHashMismatch,
    /// An event's `hash` is not the hash of its content (it was edited).
    HashMismatch,
    /// The stream ends before the chain's head: its tail was removed.
    Truncated,
    /// The chain's head does not name the last event (the head, or the stream
    /// past it, was edited).
    HeadMismatch,
}

/// What [`verify_chain`] (or `AuditTrail::verify`) found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Events checked and found intact, from seq 1 up to the first broken link.
    pub checked: u64,
    /// Whether the whole chain is intact.
    pub ok: bool,
    /// The seq of the first broken link: the edited or malformed event, the
    /// first missing seq, the event whose `prev_hash` does not match, or for a
    /// truncated chain the first seq the head promises but the stream lacks.
    pub first_broken: Option<u64>,
    /// How it is broken.
    pub broken: Option<BrokenLink>,
    /// A sentence for people.
    pub reason: Option<String>,
    /// The head of the intact chain (its last checked event), when the whole
    /// chain is intact. Keep it elsewhere to detect a later rewrite of the whole
    /// trail.
    pub head: Option<ChainHead>,
}

impl VerifyReport {
    pub(crate) fn broken(checked: u64, seq: u64, kind: BrokenLink, reason: String) -> Self {
        VerifyReport {
            checked,
            ok: false,
            first_broken: Some(seq),
            broken: Some(kind),
            reason: Some(reason),
            head: None,
        }
    }
}

/// Walks a chain event by event, in seq order; for streams too long to hold at
/// once. [`verify_chain`] is the one-call form.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: String,
    broken: Option<(u64, BrokenLink, String)>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier::new()
    }
}

impl ChainVerifier {
    /// A verifier expecting seq 1.
    pub fn new() -> Self {
        ChainVerifier {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            broken: None,
        }
    }

    /// Checks the next stored event. Returns `false` once a link is broken (the
    /// rest need not be fed).
    pub fn push(&mut self, stored: &RecordEvent) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let expected = self.next_seq;
        if stored.seq != expected {
            let reason = if stored.seq > expected {
                format!(
                    "event {expected} is missing: the stream goes on at {}",
                    stored.seq
                )
            } else {
                format!(
                    "the stream repeats or reorders seq {} where {expected} was expected",
                    stored.seq
                )
            };
            return self.fail(expected, BrokenLink::Missing, reason);
        }
        let event: AuditEvent = match serde_json::from_value(stored.body.clone()) {
            Ok(e) => e,
            Err(e) => {
                return self.fail(
                    expected,
                    BrokenLink::Malformed,
                    format!("event {expected} is not an audit event: {e}"),
                );
            }
        };
        if event.seq != expected {
            return self.fail(
                expected,
                BrokenLink::SeqMismatch,
                format!("event {expected} says it is seq {}", event.seq),
            );
        }
        if event.prev_hash != self.prev_hash {
            let reason = if expected == 1 {
                "event 1's prev_hash is not the genesis hash".to_owned()
            } else {
                format!(
                    "event {expected}'s prev_hash is not the hash of event {}",
                    expected - 1
                )
            };
            return self.fail(expected, BrokenLink::PrevHashMismatch, reason);
        }
        if event.compute_hash() != event.hash {
            return self.fail(
                expected,
                BrokenLink::HashMismatch,
                format!("event {expected}'s content does not match its hash: it was edited"),
            );
        }
        self.prev_hash = event.hash;
        self.next_seq += 1;
        true
    }

    fn fail(&mut self, seq: u64, kind: BrokenLink, reason: String) -> bool {
        self.broken = Some((seq, kind, reason));
        false
    }

    /// The events checked and found intact so far.
    pub fn checked(&self) -> u64 {
        self.next_seq - 1
    }

    /// The report, checking the chain's `head` (the record body) against the
    /// last event when given. With `None` (no record) the stream must be empty
    /// or is judged on its events alone.
    pub fn finish(mut self, head: Option<&ChainHead>) -> VerifyReport {
        let checked = self.checked();
        if self.broken.is_none()
            && let Some(head) = head
        {
            if head.seq > checked {
                let seq = checked + 1;
                let reason = format!(
                    "the head says the chain has {} events but the stream ends at {checked}",
                    head.seq
                );
                self.broken = Some((seq, BrokenLink::Truncated, reason));
            } else if head.seq < checked {
                let reason = format!("the stream has events past the head (seq {})", head.seq);
                self.broken = Some((head.seq + 1, BrokenLink::HeadMismatch, reason));
            } else if head.hash != self.prev_hash {
                let reason = format!("the head's hash is not the hash of event {checked}");
                self.broken = Some((checked.max(1), BrokenLink::HeadMismatch, reason));
            }
        }
        match self.broken {
            None => VerifyReport {
                checked,
                ok: true,
                first_broken: None,
                broken: None,
                reason: None,
                head: Some(ChainHead {
                    seq: checked,
                    hash: self.prev_hash,
                }),
            },
            Some((seq, kind, reason)) => VerifyReport::broken(checked, seq, kind, reason),
        }
    }
}

/// Verifies a whole chain: `events` as a store returned them (seq order, from
/// seq 1), and the record's `head` (its body) if there is a record. Pure: feed
/// it rows edited by hand to check that tampering is found.
///
/// Reports the first broken link: a missing seq (a deleted event), a body that
/// is not an audit event, a `seq` member that differs from the position, a
/// `prev_hash` that is not the previous hash, a `hash` that is not the content's
/// (an edited event), a stream that ends before the head (a truncated tail), or
/// a head that does not name the last event.
pub fn verify_chain(events: &[RecordEvent], head: Option<&ChainHead>) -> VerifyReport {
    let mut verifier = ChainVerifier::new();
    for event in events {
        if !verifier.push(event) {
            break;
        }
    }
    verifier.finish(head)
}
