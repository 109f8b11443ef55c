//! Subscriptions hand out each event exactly once, in order, whatever the
//! order of calls: random sequences of `next`, `next_batch` and `drain_ready`
//! interleaved with new events, on every backend (issue 11, item 3: the feed's
//! `drain_ready` used to re-read what `next` had buffered).

use std::sync::Arc;
use std::time::Duration;

use hive_core::store::Store;
use hive_core::task::{EventKind, TaskEvent, TaskSpec};
use hive_core::{Principal, TaskError};
use serde_json::json;

use super::Harness;

/// A small deterministic PRNG (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// The tenant feed under random call sequences: every `Queued` event of every
/// submitted task is handed out once, in cursor order. Tasks are submitted
/// through two Hives on the one store (as two processes would), the
/// subscription lives on the first.
pub async fn feed_calls_in_any_order_hand_out_each_event_once(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    let other = Harness::new(store);
    for seed in 1..=8u64 {
        let mut rng = Rng::new(seed);
        let p = Principal::user(format!("prop{seed}"), "alice");
        let mut feed = h.hive.feed(&p, 0).await.unwrap();
        let mut produced = 0usize;
        let mut seen: Vec<u64> = Vec::new();
        for step in 0..60 {
            let pending = produced - seen.len();
            match rng.below(5) {
                0 | 1 => {
                    let n = 1 + rng.below(400) as usize;
                    let specs = vec![TaskSpec::new("echo", json!(null)); n];
                    let via = if rng.below(2) == 0 {
                        &h.hive
                    } else {
                        &other.hive
                    };
                    via.submit_batch(&p, specs).await.unwrap();
                    produced += n;
                }
                2 if pending > 0 => {
                    let ev = tokio::time::timeout(WAIT, feed.next())
                        .await
                        .unwrap_or_else(|_| panic!("seed {seed} step {step}: next waited"))
                        .unwrap();
                    seen.push(ev.cursor);
                }
                3 if pending > 0 => {
                    let max = 1 + rng.below(400) as usize;
                    let batch = tokio::time::timeout(WAIT, feed.next_batch(max))
                        .await
                        .unwrap_or_else(|_| panic!("seed {seed} step {step}: next_batch waited"))
                        .unwrap();
                    assert!(!batch.is_empty() && batch.len() <= max, "seed {seed}");
                    seen.extend(batch.iter().map(|e| e.cursor));
                }
                _ => {
                    let ready = feed.drain_ready().await.unwrap();
                    seen.extend(ready.iter().map(|e| e.cursor));
                }
            }
            assert!(
                seen.len() <= produced,
                "seed {seed} step {step}: {} handed out, {produced} produced",
                seen.len()
            );
            assert_eq!(
                feed.cursor(),
                seen.last().copied().unwrap_or(0),
                "seed {seed}"
            );
        }
        while seen.len() < produced {
            let ready = feed.drain_ready().await.unwrap();
            assert!(!ready.is_empty(), "seed {seed}: events missing");
            seen.extend(ready.iter().map(|e| e.cursor));
        }
        assert!(feed.drain_ready().await.unwrap().is_empty(), "seed {seed}");
        let mut stored: Vec<u64> = Vec::new();
        loop {
            let page = h
                .hive
                .read_feed(&p, stored.last().copied().unwrap_or(0), 10_000)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            stored.extend(page.iter().map(|e| e.cursor));
        }
        assert_eq!(stored.len(), produced, "seed {seed}");
        assert_eq!(seen, stored, "seed {seed}: each event once, in order");
    }
}

/// One task's subscription under random `next` / `next_batch` calls while
/// its worker logs and heartbeats: seq 1..=last once each, ending after the
/// terminal event. The subscription lives on a second Hive on the same store
/// (another process, as a Honeycomb replica would be).
pub async fn task_subscription_calls_in_any_order_hand_out_each_event_once(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    let other = Harness::new(store);
    let (node, w) = h.system_node(16).await;
    for seed in 1..=8u64 {
        let mut rng = Rng::new(seed);
        let p = Principal::user("acme", format!("sub{seed}"));
        let id = h
            .hive
            .submit(&p, TaskSpec::new("echo", json!(seed)))
            .await
            .unwrap()
            .id;
        let mut sub = other.hive.subscribe(&p, id, 0).await.unwrap();
        let lease = h.claim(&w, node, 1, true).await.remove(0).token;
        let mut seen: Vec<TaskEvent> = Vec::new();
        let distinct = |seen: &[TaskEvent]| seen.last().map_or(0, |e| e.seq as usize);
        for step in 0..40 {
            let stored = h.events(id).await.len();
            let pending = stored - distinct(&seen);
            match rng.below(4) {
                0 => {
                    for i in 0..1 + rng.below(40) {
                        h.hive
                            .log(&w, lease, "stdout", &format!("{step}.{i}"))
                            .await
                            .unwrap();
                    }
                }
                1 if pending > 0 => {
                    let ev = tokio::time::timeout(WAIT, sub.next())
                        .await
                        .expect("next waited")
                        .expect("not ended")
                        .unwrap();
                    seen.push(ev);
                }
                2 if pending > 0 => {
                    let max = 1 + rng.below(50) as usize;
                    let batch = tokio::time::timeout(WAIT, sub.next_batch(max))
                        .await
                        .expect("next_batch waited")
                        .expect("not ended")
                        .unwrap();
                    assert!(batch.len() <= max);
                    seen.extend(batch);
                }
                _ => {
                    h.hive
                        .heartbeat(&w, vec![(lease, Some(json!({"step": step})))])
                        .await
                        .unwrap()
                        .remove(0)
                        .unwrap();
                }
            }
            assert_eq!(sub.position(), distinct(&seen) as u64);
        }
        if rng.below(2) == 0 {
            h.hive
                .report_success(&w, lease, json!("done"))
                .await
                .unwrap();
        } else {
            h.hive
                .report_failure(&w, lease, TaskError::new("no", "no").non_retryable())
                .await
                .unwrap();
        }
        while let Some(batch) = tokio::time::timeout(WAIT, sub.next_batch(7))
            .await
            .expect("the subscription ends")
        {
            seen.extend(batch.unwrap());
        }
        // Every stored event once, in order; a heartbeat again (same seq) only
        // when a later beat replaced it, and the last copy is what is stored.
        let stored = h.events(id).await;
        let mut last_copy: Vec<TaskEvent> = Vec::new();
        for ev in seen {
            match last_copy.last_mut() {
                Some(prev) if prev.seq == ev.seq => {
                    assert!(
                        matches!(ev.kind, EventKind::Heartbeat { .. }) && *prev != ev,
                        "seed {seed}: only a replaced heartbeat comes again: {prev:?} then {ev:?}"
                    );
                    *prev = ev;
                }
                _ => last_copy.push(ev),
            }
        }
        let seqs: Vec<u64> = last_copy.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "seed {seed}"
        );
        assert_eq!(last_copy, stored, "seed {seed}");
    }
}

/// Terminal acknowledgements under random sequences of ends, acknowledgements
/// (of ended tasks not listed yet, of tasks listed, twice, of tasks still
/// pending) and listings with random limits: `unacked_terminal` always answers
/// the oldest `limit` ended tasks not acknowledged, in the order they ended
/// (issue 11, item 14: Redis now keeps a per-consumer unacknowledged set instead
/// of scanning every later terminal event).
pub async fn terminal_acknowledgements_in_any_order_list_exactly_the_unacked(
    store: Arc<dyn Store>,
) {
    let h = Harness::new(store.clone());
    // Acknowledgements come through either of two Hives on the store.
    let other = Harness::new(store);
    for seed in 1..=6u64 {
        let mut rng = Rng::new(seed);
        let p = Principal::user(format!("ack{seed}"), "alice");
        let consumer = format!("c{seed}");
        let mut pending: Vec<hive_core::TaskId> = Vec::new();
        // Ended tasks not acknowledged, in the order they ended.
        let mut unacked: Vec<hive_core::TaskId> = Vec::new();
        let mut ended: Vec<hive_core::TaskId> = Vec::new();
        for step in 0..50 {
            match rng.below(6) {
                0 => {
                    let n = 1 + rng.below(20) as usize;
                    let specs = vec![TaskSpec::new("echo", json!(null)); n];
                    let got = h.hive.submit_batch(&p, specs).await.unwrap();
                    pending.extend(got.iter().map(|s| s.id));
                }
                1 | 2 if !pending.is_empty() => {
                    for _ in 0..1 + rng.below(pending.len() as u64 + 1) {
                        if pending.is_empty() {
                            break;
                        }
                        let id = pending.remove(rng.below(pending.len() as u64) as usize);
                        h.hive.cancel(&p, id, "ended").await.unwrap();
                        unacked.push(id);
                        ended.push(id);
                    }
                }
                3 if !ended.is_empty() => {
                    // Any ended tasks, listed or not, acknowledged or not,
                    // and sometimes a pending one (harmless).
                    let mut ack = Vec::new();
                    for _ in 0..1 + rng.below(8) {
                        ack.push(ended[rng.below(ended.len() as u64) as usize]);
                    }
                    if !pending.is_empty() && rng.below(3) == 0 {
                        ack.push(pending[rng.below(pending.len() as u64) as usize]);
                    }
                    other.hive.ack_terminal(&p, &consumer, &ack).await.unwrap();
                    unacked.retain(|id| !ack.contains(id));
                }
                _ => {
                    let limit = 1 + rng.below(12) as usize;
                    let listed: Vec<_> = h
                        .hive
                        .unacked_terminal(&p, &consumer, limit)
                        .await
                        .unwrap()
                        .iter()
                        .map(|e| e.event.task)
                        .collect();
                    let expected: Vec<_> = unacked.iter().copied().take(limit).collect();
                    assert_eq!(listed, expected, "seed {seed} step {step}");
                    if rng.below(2) == 0 && !listed.is_empty() {
                        h.hive.ack_terminal(&p, &consumer, &listed).await.unwrap();
                        unacked.retain(|id| !listed.contains(id));
                    }
                }
            }
        }
        let all: Vec<_> = h
            .hive
            .unacked_terminal(&p, &consumer, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event.task)
            .collect();
        assert_eq!(
            all, unacked,
            "seed {seed}: the rest, in the order they ended"
        );
        let fresh: Vec<_> = h
            .hive
            .unacked_terminal(&p, "newcomer", 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event.task)
            .collect();
        assert_eq!(
            fresh, ended,
            "seed {seed}: a new consumer sees every ended task"
        );
    }
}
