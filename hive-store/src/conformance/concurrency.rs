//! Concurrency keys: at most `max_running` tasks of a key hold a slot, the
//! rest wait (pending, not claimable) and get freed slots in order; keys take
//! turns; the strategies of a full key. Rate limits: token buckets per key
//! taken from in the claim.

use hive_core::clock::Timestamp;
use hive_core::task::{Concurrency, ConcurrencyStrategy, RateLimit};

use super::*;

fn keyed(key: &str, max: u32) -> TaskSpec {
    spec("echo").concurrency(Concurrency::key(key, max))
}

async fn submit(h: &Harness, s: TaskSpec) -> TaskId {
    h.hive.submit(&alice(), s).await.expect("submit").id
}

async fn slots(h: &Harness, key: &str) -> (Vec<TaskId>, u64) {
    let s = h
        .hive
        .store()
        .key_slots(&"acme".into(), key)
        .await
        .expect("key slots");
    (s.holding, s.waiting)
}

async fn succeed(h: &Harness, w: &Principal, c: &ClaimedTask) {
    h.hive
        .report_success(w, c.token, json!({"ok": true}))
        .await
        .expect("report");
}

fn ids(claimed: &[ClaimedTask]) -> Vec<TaskId> {
    claimed.iter().map(|c| c.token.task).collect()
}

/// A key with `max_running = 2`: two of five tasks hold slots, three wait
/// (pending, counted, not claimable) while another key and unkeyed tasks run;
/// each ended holder hands its slot to the next waiting task in submission
/// order; a waiting task can be cancelled; keys are per tenant.
pub async fn concurrency_key_limits_slots_and_hands_them_over(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(16).await;
    let mut k = Vec::new();
    for _ in 0..5 {
        k.push(submit(&h, keyed("customer-1", 2)).await);
    }
    let other = submit(&h, keyed("customer-2", 2)).await;
    let free = submit(&h, spec("echo")).await;
    // The same key in another tenant is another key.
    let globex = h
        .hive
        .submit(&carol(), keyed("customer-1", 2))
        .await
        .unwrap()
        .id;
    assert_eq!(slots(&h, "customer-1").await, (vec![k[0], k[1]], 3));
    assert_eq!(slots(&h, "customer-2").await, (vec![other], 0));
    assert_eq!(slots(&h, "nobody").await, (vec![], 0));
    let waiting = h.hive.get_task(&alice(), k[2]).await.unwrap();
    assert_eq!(waiting.state, TaskState::Pending);
    if let Some(n) = h.hive.store().pending_count().await.unwrap() {
        assert_eq!(n, 8, "tasks waiting for a slot count as pending");
    }

    let first = h.claim(&w, node, 16, true).await;
    let got: BTreeSet<TaskId> = ids(&first).into_iter().collect();
    let want: BTreeSet<TaskId> = [k[0], k[1], other, free, globex].into_iter().collect();
    assert_eq!(
        got, want,
        "only slot holders and unkeyed tasks are claimable"
    );
    assert!(h.claim(&w, node, 16, true).await.is_empty());

    // A waiting task can be cancelled; it never held a slot.
    h.hive.cancel(&alice(), k[3], "not needed").await.unwrap();
    assert_eq!(slots(&h, "customer-1").await, (vec![k[0], k[1]], 2));

    // k[0] ends: k[2] (the first waiting) gets its slot; k[4] still waits.
    let c0 = first.iter().find(|c| c.token.task == k[0]).unwrap();
    succeed(&h, &w, c0).await;
    assert_eq!(slots(&h, "customer-1").await, (vec![k[1], k[2]], 1));
    assert_eq!(ids(&h.claim(&w, node, 16, true).await), vec![k[2]]);
    // k[1] ends: k[4] gets the slot.
    let c1 = first.iter().find(|c| c.token.task == k[1]).unwrap();
    succeed(&h, &w, c1).await;
    assert_eq!(slots(&h, "customer-1").await, (vec![k[2], k[4]], 0));
    assert_eq!(ids(&h.claim(&w, node, 16, true).await), vec![k[4]]);
    assert_eq!(h.state(k[3]).await, TaskState::Cancelled);
    let events = h.events(k[2]).await;
    assert_event_contract(&events);
}

/// Keys take turns: with one slot per key and one worker slot, tasks of two
/// keys submitted one key after the other run alternately, because a task
/// given a freed slot joins the end of the ready queue.
pub async fn concurrency_keys_take_turns(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(1).await;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..4 {
        a.push(submit(&h, keyed("a", 1)).await);
    }
    for _ in 0..4 {
        b.push(submit(&h, keyed("b", 1)).await);
    }
    let mut order = Vec::new();
    for _ in 0..8 {
        let c = h.claim(&w, node, 1, true).await;
        assert_eq!(c.len(), 1, "one task claimable at every step: {order:?}");
        order.push(c[0].token.task);
        succeed(&h, &w, &c[0]).await;
    }
    let want: Vec<TaskId> = a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect();
    assert_eq!(order, want, "a1 b1 a2 b2 …");
    assert_eq!(slots(&h, "a").await, (vec![], 0));
}

/// A task keeps its slot through a retry (its backoff and the next attempt)
/// and a lost placement; a timed-out task frees it; a key from a JSON
/// pointer into the input; waiting tasks get slots by priority first.
pub async fn concurrency_slots_survive_retries_and_follow_priority(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let retry = RetryPolicy {
        backoff_coefficient: 1.0,
        jitter: 0.0,
        ..RetryPolicy::attempts(3, Duration::from_secs(10))
    };
    let timeouts = Timeouts {
        schedule_to_start: Duration::from_secs(7200),
        start_to_close: Duration::from_secs(60),
        ..Timeouts::default()
    };
    let by_input = |n: u64, p: i32| {
        TaskSpec::new("echo", json!({"customer": {"id": 7}, "n": n}))
            .concurrency(Concurrency::key_from("/customer/id", 1))
            .retry(if p > 0 {
                RetryPolicy::none()
            } else {
                retry.clone()
            })
            .timeouts(timeouts.clone())
            .priority(p)
    };
    let t1 = submit(&h, by_input(1, 0)).await;
    let low = submit(&h, by_input(2, 0)).await;
    let high = submit(&h, by_input(3, 5)).await;
    let stored = h.hive.get_task(&alice(), t1).await.unwrap();
    assert_eq!(
        stored.spec.concurrency_key(),
        Some(("7", 1)),
        "the pointer was resolved at submission"
    );
    assert_eq!(slots(&h, "7").await, (vec![t1], 2));
    let c = h.claim(&w, node, 8, true).await;
    assert_eq!(ids(&c), vec![t1]);
    h.hive
        .report_failure(&w, c[0].token, TaskError::new("flaky", "try again"))
        .await
        .unwrap();
    assert_eq!(h.state(t1).await, TaskState::Pending);
    assert_eq!(
        slots(&h, "7").await,
        (vec![t1], 2),
        "a retry in its backoff keeps the slot"
    );
    h.clock.advance(Duration::from_secs(10));
    let c = h.claim(&w, node, 8, true).await;
    assert_eq!(ids(&c), vec![t1], "only the retry runs");
    // The node is removed: the attempt is lost, the task keeps its slot.
    h.hive.remove_node(&h.system, node).await.unwrap();
    assert_eq!(slots(&h, "7").await, (vec![t1], 2));
    let (node, w) = h.system_node(8).await;
    h.clock.advance(Duration::from_secs(10));
    let c = h.claim(&w, node, 8, true).await;
    assert_eq!(ids(&c), vec![t1], "the lost attempt's retry");
    succeed(&h, &w, &c[0]).await;
    // The waiting task with the higher priority gets the slot first.
    assert_eq!(slots(&h, "7").await, (vec![high], 1));
    let c = h.claim(&w, node, 8, true).await;
    assert_eq!(ids(&c), vec![high]);
    // Its start-to-close deadline expires with no retry left: the slot goes on.
    h.advance_and_sweep(Duration::from_secs(61)).await;
    assert!(h.state(high).await.is_terminal());
    assert_eq!(slots(&h, "7").await, (vec![low], 0));
    // (The silent node was marked lost by that sweep.)
    let (node, w) = h.system_node(8).await;
    assert_eq!(ids(&h.claim(&w, node, 8, true).await), vec![low]);
}

/// A full key's strategies: `cancel_newest` cancels the new task,
/// `cancel_in_progress` cancels the oldest holder and runs the new one.
pub async fn concurrency_strategies_cancel_newest_or_in_progress(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let newest = |key: &str, s: ConcurrencyStrategy| {
        spec("echo").concurrency(Concurrency::key(key, 1).strategy(s))
    };
    let n1 = submit(&h, newest("n", ConcurrencyStrategy::CancelNewest)).await;
    let n2 = submit(&h, newest("n", ConcurrencyStrategy::CancelNewest)).await;
    assert_eq!(h.state(n1).await, TaskState::Pending);
    assert_eq!(h.state(n2).await, TaskState::Cancelled, "the newest goes");
    assert_eq!(slots(&h, "n").await, (vec![n1], 0));

    let p1 = submit(&h, newest("p", ConcurrencyStrategy::CancelInProgress)).await;
    let first = h.claim(&w, node, 8, true).await;
    let got: BTreeSet<TaskId> = ids(&first).into_iter().collect();
    assert_eq!(got, [n1, p1].into_iter().collect());
    let p2 = submit(&h, newest("p", ConcurrencyStrategy::CancelInProgress)).await;
    assert_eq!(
        h.state(p1).await,
        TaskState::Cancelled,
        "the running one goes"
    );
    assert_eq!(slots(&h, "p").await, (vec![p2], 0));
    let p3 = submit(&h, newest("p", ConcurrencyStrategy::CancelInProgress)).await;
    assert_eq!(h.state(p2).await, TaskState::Cancelled);
    assert_eq!(slots(&h, "p").await, (vec![p3], 0));
    let c = h.claim(&w, node, 8, true).await;
    assert_eq!(ids(&c), vec![p3]);
    // The cancelled task's late report is refused; the slot stays p3's.
    let c1 = first.iter().find(|c| c.token.task == p1).unwrap();
    assert!(
        h.hive
            .report_success(&w, c1.token, json!(null))
            .await
            .is_err()
    );
    assert_eq!(slots(&h, "p").await, (vec![p3], 0));
    assert_eq!(h.state(p1).await, TaskState::Cancelled);
}

/// Bad concurrency specs are refused with the field, and nothing is stored.
pub async fn invalid_concurrency_specs_are_refused(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let bad = [
        (
            spec("echo").concurrency(Concurrency {
                key: None,
                key_from: None,
                max_running: 1,
                strategy: ConcurrencyStrategy::Queue,
            }),
            "concurrency.key",
        ),
        (
            spec("echo").concurrency(Concurrency::key("k", 0)),
            "concurrency.max_running",
        ),
        (
            spec("echo").concurrency(Concurrency::key("", 1)),
            "concurrency.key",
        ),
        (
            spec("echo").concurrency(Concurrency::key("x".repeat(300), 1)),
            "concurrency.key",
        ),
        (
            spec("echo").concurrency(Concurrency::key_from("customer", 1)),
            "concurrency.key_from",
        ),
        (
            spec("echo").concurrency(Concurrency::key_from("/missing", 1)),
            "concurrency.key_from",
        ),
        (
            TaskSpec::new("echo", json!({"c": {"a": 1}}))
                .concurrency(Concurrency::key_from("/c", 1)),
            "concurrency.key_from",
        ),
    ];
    assert_refused(&h, bad).await;
}

fn limited(key: &str, limit: u32, per_ms: u64) -> TaskSpec {
    spec("echo").rate_limit(RateLimit::key(key, limit, Duration::from_millis(per_ms)))
}

/// A rate limit of 5 per second: a burst of 5, then one every 200 ms; a
/// task over the limit stays pending, claimable only when its tokens are
/// there (claims say when: `next_due`), other keys and tenants have
/// their own buckets, unlimited tasks are not held back, and a task taking
/// 2 units waits for two tokens.
pub async fn rate_limits_hold_claims_to_the_bucket(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(64).await;
    let t0 = h.clock.now();
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(submit(&h, limited("api", 5, 1000)).await);
    }
    let other = submit(&h, limited("other-api", 5, 1000)).await;
    let free = submit(&h, spec("echo")).await;
    let globex = h
        .hive
        .submit(&carol(), limited("api", 5, 1000))
        .await
        .unwrap()
        .id;
    let opts = ClaimOptions {
        max: 64,
        agents: Vec::new(),
        start: true,
    };
    let r = h.hive.claim(&w, node, &opts).await.unwrap();
    let got: BTreeSet<TaskId> = ids(&r.tasks).into_iter().collect();
    let mut want: BTreeSet<TaskId> = slow[..5].iter().copied().collect();
    want.extend([other, free, globex]);
    assert_eq!(got, want, "a burst of 5 per key and tenant, unlimited ones");
    let t200 = Timestamp::from_millis(t0.as_millis() + 200);
    assert_eq!(
        r.next_due,
        Some(t200),
        "the claim says when a token is back"
    );
    let held = h.hive.get_task(&alice(), slow[5]).await.unwrap();
    assert_eq!(held.state, TaskState::Pending);
    assert_eq!(held.attempt, 0, "held back before any attempt");
    h.clock.advance(Duration::from_millis(199));
    assert!(
        h.claim(&w, node, 64, true).await.is_empty(),
        "not a ms early"
    );
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&h.claim(&w, node, 64, true).await), vec![slow[5]]);
    h.clock.advance(Duration::from_millis(1000));
    let c = h.claim(&w, node, 64, true).await;
    assert_eq!(ids(&c), slow[6..].to_vec(), "the rest, in submission order");

    // Two units take two tokens: after a quiet second the bucket is full
    // (5): two double tasks fit, a third finds one token and waits 200 ms
    // for the second.
    h.clock.advance(Duration::from_millis(1000));
    let double = |_: usize| {
        spec("echo").rate_limit(RateLimit::key("api", 5, Duration::from_millis(1000)).units(2))
    };
    let mut d = Vec::new();
    for i in 0..3 {
        d.push(submit(&h, double(i)).await);
    }
    assert_eq!(ids(&h.claim(&w, node, 64, true).await), d[..2].to_vec());
    h.clock.advance(Duration::from_millis(199));
    assert!(h.claim(&w, node, 64, true).await.is_empty());
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&h.claim(&w, node, 64, true).await), vec![d[2]]);
}

/// 100 per second, claimed every 10 ms of a manual clock for 11 s with
/// plenty of waiting tasks: after the first second's burst, the next 10 s
/// start 1,000 tasks within 5%, and no second starts more than 100 + 100.
pub async fn rate_limit_of_100_per_second_holds_over_10_seconds(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(2000).await;
    let specs: Vec<TaskSpec> = (0..1300).map(|_| limited("llm", 100, 1000)).collect();
    for chunk in specs.chunks(500) {
        h.hive.submit_batch(&alice(), chunk.to_vec()).await.unwrap();
    }
    let mut per_tick = Vec::new();
    for _ in 0..1100 {
        let c = h.claim(&w, node, 2000, true).await;
        per_tick.push(c.len());
        h.clock.advance(Duration::from_millis(10));
    }
    let burst: usize = per_tick[..100].iter().sum();
    let steady: usize = per_tick[100..].iter().sum();
    assert!(
        (950..=1050).contains(&steady),
        "{steady} tasks started in the 10 s after the first second"
    );
    assert!(burst <= 200, "{burst} started in the first second");
    let worst = per_tick
        .windows(100)
        .map(|w| w.iter().sum::<usize>())
        .max()
        .unwrap();
    assert!(worst <= 200, "{worst} started within one second");
}

/// Bad rate limits are refused with the field, and nothing is stored.
pub async fn invalid_rate_limits_are_refused(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let second = Duration::from_secs(1);
    let bad = [
        (limited("k", 0, 1000), "rate_limit.limit"),
        (
            spec("echo").rate_limit(RateLimit::key("k", 5, Duration::ZERO)),
            "rate_limit.per",
        ),
        (
            spec("echo").rate_limit(RateLimit::key("k", 5, second).units(6)),
            "rate_limit.units",
        ),
        (
            spec("echo").rate_limit(RateLimit::key("k", 5, second).units(0)),
            "rate_limit.units",
        ),
        (
            spec("echo").rate_limit(RateLimit::key("", 5, second)),
            "rate_limit.key",
        ),
        (
            spec("echo").rate_limit(RateLimit::key_from("/nope", 5, second)),
            "rate_limit.key_from",
        ),
    ];
    assert_refused(&h, bad).await;
}

/// Each spec is refused with `InvalidSpec` naming its field; nothing stored.
async fn assert_refused<const N: usize>(h: &Harness, bad: [(TaskSpec, &str); N]) {
    for (s, field) in bad {
        match h.hive.submit(&alice(), s).await {
            Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidSpec on {field}, got {other:?}"),
        }
    }
    let page = h
        .hive
        .list_tasks(&alice(), &TaskQuery::default())
        .await
        .unwrap();
    assert!(page.items.is_empty(), "nothing stored");
}
