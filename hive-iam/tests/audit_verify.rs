//! `verify_chain` over hand-edited event lists: every kind of tampering is found,
//! at the right seq. (Stores never rewrite events, so these lists stand for rows
//! edited behind Hive's back; backend tests feed it rows edited by raw SQL.)

use hive_core::Timestamp;
use hive_core::audit::{AuditEntry, AuditOutcome};
use hive_core::store::RecordEvent;
use hive_iam::{
    AuditEvent, BrokenLink, ChainHead, ChainVerifier, GENESIS_HASH, VerifyReport, verify_chain,
};
use serde_json::json;

/// An intact chain of `n` events and its head.
fn chain(n: u64) -> (Vec<RecordEvent>, ChainHead) {
    let mut prev = GENESIS_HASH.to_owned();
    let mut out = Vec::new();
    for seq in 1..=n {
        let entry = AuditEntry {
            at: Timestamp::from_millis(1_700_000_000_000 + seq as i64),
            tenant: "acme".into(),
            actor: format!("user{}", seq % 3).into(),
            actor_kind: "user".into(),
            action: "task.submit".into(),
            resource: "tenant/acme".into(),
            outcome: if seq % 4 == 0 {
                AuditOutcome::Denied
            } else {
                AuditOutcome::Allowed
            },
            details: json!({"tasks": seq, "note": "ünïcode \"quoted\""}),
        };
        let event = AuditEvent::chain(entry, seq, prev);
        prev = event.hash.clone();
        out.push(RecordEvent {
            seq,
            at: event.at,
            body: serde_json::to_value(&event).expect("json"),
        });
    }
    (out, ChainHead { seq: n, hash: prev })
}

#[track_caller]
fn broken_at(report: &VerifyReport, seq: u64, kind: BrokenLink) {
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_broken, Some(seq), "{report:?}");
    assert_eq!(report.broken, Some(kind), "{report:?}");
    assert!(report.reason.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(report.head, None);
}

/// Re-hashes event `i` after an edit, as a forger would.
fn rehash(events: &mut [RecordEvent], i: usize) {
    let mut e: AuditEvent = serde_json::from_value(events[i].body.clone()).expect("event");
    e.hash = e.compute_hash();
    events[i].body = serde_json::to_value(&e).expect("json");
}

#[test]
fn an_intact_chain_verifies() {
    let (events, head) = chain(10);
    let report = verify_chain(&events, Some(&head));
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 10);
    assert_eq!(report.first_broken, None);
    assert_eq!(report.head, Some(head));
}

#[test]
fn an_empty_chain_verifies() {
    let report = verify_chain(&[], None);
    assert!(report.ok && report.checked == 0, "{report:?}");
    let report = verify_chain(&[], Some(&ChainHead::genesis()));
    assert!(report.ok && report.checked == 0, "{report:?}");
}

#[test]
fn an_edited_event_is_a_hash_mismatch_at_its_seq() {
    for field in ["actor", "action", "resource", "tenant", "actor_kind"] {
        let (mut events, head) = chain(10);
        events[3].body[field] = json!("someone-else");
        broken_at(
            &verify_chain(&events, Some(&head)),
            4,
            BrokenLink::HashMismatch,
        );
    }
    let (mut events, head) = chain(10);
    events[6].body["details"]["tasks"] = json!(0);
    broken_at(
        &verify_chain(&events, Some(&head)),
        7,
        BrokenLink::HashMismatch,
    );
    let (mut events, head) = chain(10);
    events[0].body["at"] = json!(1);
    broken_at(
        &verify_chain(&events, Some(&head)),
        1,
        BrokenLink::HashMismatch,
    );
    let (mut events, head) = chain(10);
    events[1].body["outcome"] = json!("denied");
    broken_at(
        &verify_chain(&events, Some(&head)),
        2,
        BrokenLink::HashMismatch,
    );
    let (mut events, head) = chain(10);
    events[9].body["hash"] = json!(GENESIS_HASH);
    broken_at(
        &verify_chain(&events, Some(&head)),
        10,
        BrokenLink::HashMismatch,
    );
}

#[test]
fn an_edited_and_rehashed_event_breaks_the_next_link() {
    let (mut events, head) = chain(10);
    events[3].body["details"] = json!({"tasks": 0});
    rehash(&mut events, 3);
    broken_at(
        &verify_chain(&events, Some(&head)),
        5,
        BrokenLink::PrevHashMismatch,
    );
    // The last event, edited and re-hashed, no longer matches the head.
    let (mut events, head) = chain(10);
    events[9].body["actor"] = json!("mallory");
    rehash(&mut events, 9);
    broken_at(
        &verify_chain(&events, Some(&head)),
        10,
        BrokenLink::HeadMismatch,
    );
}

#[test]
fn a_deleted_event_is_a_gap_at_its_seq() {
    for deleted in [0usize, 4, 8] {
        let (mut events, head) = chain(10);
        events.remove(deleted);
        broken_at(
            &verify_chain(&events, Some(&head)),
            deleted as u64 + 1,
            BrokenLink::Missing,
        );
    }
}

#[test]
fn a_deleted_event_with_the_rest_renumbered_is_still_found() {
    let (mut events, head) = chain(10);
    events.remove(4);
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    broken_at(
        &verify_chain(&events, Some(&head)),
        5,
        BrokenLink::SeqMismatch,
    );
    // Renumbered bodies too (and re-hashed): the next link breaks.
    for (i, e) in events.iter_mut().enumerate().skip(4) {
        e.body["seq"] = json!(i + 1);
    }
    rehash(&mut events, 4);
    broken_at(
        &verify_chain(&events, Some(&head)),
        5,
        BrokenLink::PrevHashMismatch,
    );
}

#[test]
fn a_truncated_tail_is_found_through_the_head() {
    let (mut events, head) = chain(10);
    events.truncate(7);
    broken_at(
        &verify_chain(&events, Some(&head)),
        8,
        BrokenLink::Truncated,
    );
    // Everything gone.
    broken_at(&verify_chain(&[], Some(&head)), 1, BrokenLink::Truncated);
    // Without the head a truncated chain looks whole: the head is what tells.
    let (mut events, _) = chain(10);
    events.truncate(7);
    assert!(verify_chain(&events, None).ok);
}

#[test]
fn a_head_that_does_not_name_the_last_event_is_found() {
    let (events, head) = chain(10);
    let wrong_hash = ChainHead {
        seq: 10,
        hash: GENESIS_HASH.into(),
    };
    broken_at(
        &verify_chain(&events, Some(&wrong_hash)),
        10,
        BrokenLink::HeadMismatch,
    );
    let behind = ChainHead {
        seq: 8,
        hash: head.hash.clone(),
    };
    broken_at(
        &verify_chain(&events, Some(&behind)),
        9,
        BrokenLink::HeadMismatch,
    );
}

#[test]
fn reordered_duplicated_or_foreign_events_are_found() {
    let (mut events, head) = chain(10);
    events.swap(2, 3);
    broken_at(&verify_chain(&events, Some(&head)), 3, BrokenLink::Missing);

    let (mut events, head) = chain(10);
    let (b2, b3) = (events[2].body.clone(), events[3].body.clone());
    events[2].body = b3;
    events[3].body = b2;
    broken_at(
        &verify_chain(&events, Some(&head)),
        3,
        BrokenLink::SeqMismatch,
    );

    let (mut events, head) = chain(10);
    let dup = events[4].clone();
    events.insert(5, dup);
    broken_at(&verify_chain(&events, Some(&head)), 6, BrokenLink::Missing);

    // An event of another, valid chain spliced in.
    let (mut events, head) = chain(10);
    let (mut other, _) = chain(10);
    other[5].body["tenant"] = json!("globex");
    rehash(&mut other, 5);
    events[5] = other[5].clone();
    events[5].body["prev_hash"] = json!(GENESIS_HASH);
    rehash(&mut events, 5);
    broken_at(
        &verify_chain(&events, Some(&head)),
        6,
        BrokenLink::PrevHashMismatch,
    );
}

#[test]
fn a_malformed_event_is_found() {
    for bad in [
        json!(null),
        json!("text"),
        json!({"seq": 3}),
        json!({"outcome": "maybe"}),
    ] {
        let (mut events, head) = chain(5);
        if bad.get("outcome").is_some() {
            events[2].body["outcome"] = bad["outcome"].clone();
        } else {
            events[2].body = bad;
        }
        broken_at(
            &verify_chain(&events, Some(&head)),
            3,
            BrokenLink::Malformed,
        );
    }
}

#[test]
fn the_streaming_verifier_agrees_with_the_one_call_form() {
    let (mut events, head) = chain(20);
    events[12].body["action"] = json!("node.drain");
    let mut verifier = ChainVerifier::new();
    let mut fed = 0;
    for e in &events {
        fed += 1;
        if !verifier.push(e) {
            break;
        }
    }
    assert_eq!(fed, 13, "the walk stops at the first broken link");
    assert_eq!(verifier.checked(), 12);
    assert_eq!(
        verifier.finish(Some(&head)),
        verify_chain(&events, Some(&head))
    );
}
