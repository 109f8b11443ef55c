//! The task state machine against the transition table of ARCHITECTURE.md: a
//! table test of every (state, op) pair, and a property test that drives random
//! operation sequences (stale tokens, wrong nodes, clock jumps included) and
//! checks the invariants every backend relies on.

use std::time::Duration;

use hive_core::id::{LeaseId, NodeId, TaskId};
use hive_core::task::machine::{self, Op, Outcome, TaskCore, TaskFacts};
use hive_core::task::{EventKind, LeaseToken, TaskError, TaskSpec, TaskState, TimeoutPhase};
use hive_core::{Error, RetryPolicy, Timestamp};
use proptest::prelude::*;

const T0: Timestamp = Timestamp::from_millis(1_000_000);

fn spec(attempts: u32) -> TaskSpec {
    let mut s = TaskSpec::new("echo", serde_json::Value::Null)
        .retry(RetryPolicy::attempts(attempts, Duration::from_millis(100)));
    s.timeouts.deadline = Some(Duration::from_secs(3600));
    s
}

fn facts(id: TaskId, spec: &TaskSpec) -> TaskFacts<'_> {
    TaskFacts {
        id,
        created_at: T0,
        spec,
    }
}

fn token(core: &TaskCore, id: TaskId) -> LeaseToken {
    let l = core.lease.as_ref().expect("leased");
    LeaseToken {
        task: id,
        attempt: l.attempt,
        lease: l.id,
    }
}

/// A task driven into `state` (with one attempt left when `retries`).
fn core_in(state: TaskState, id: TaskId, spec: &TaskSpec, node: NodeId) -> TaskCore {
    let mut c = TaskCore::submitted(T0);
    let f = facts(id, spec);
    let go = |c: &mut TaskCore, op: Op| {
        machine::apply(c, f, op, T0).expect("setup transition");
    };
    match state {
        TaskState::Pending => {}
        TaskState::Scheduled => go(
            &mut c,
            Op::Schedule {
                node,
                lease: LeaseId::new(),
            },
        ),
        _ => {
            go(
                &mut c,
                Op::Schedule {
                    node,
                    lease: LeaseId::new(),
                },
            );
            let t = token(&c, id);
            go(&mut c, Op::Start { token: t, node });
            let t = token(&c, id);
            match state {
                TaskState::Running => {}
                TaskState::Succeeded => go(
                    &mut c,
                    Op::Succeed {
                        token: t,
                        node,
                        output: serde_json::json!(1),
                    },
                ),
                TaskState::Failed => go(
                    &mut c,
                    Op::Fail {
                        token: t,
                        node,
                        error: TaskError::new("x", "y").non_retryable(),
                    },
                ),
                TaskState::Cancelled => go(
                    &mut c,
                    Op::Cancel {
                        by: "alice".into(),
                        reason: "r".into(),
                    },
                ),
                TaskState::TimedOut => go(
                    &mut c,
                    Op::Expire {
                        phase: TimeoutPhase::Deadline,
                    },
                ),
                _ => unreachable!(),
            }
        }
    }
    assert_eq!(c.state, state);
    c
}

/// Every op the table covers, built for a task in any state: `own` ops present
/// the current lease (or a made-up one when there is none).
fn ops(core: &TaskCore, id: TaskId, node: NodeId) -> Vec<(&'static str, Op)> {
    let t = core.lease.as_ref().map_or(
        LeaseToken {
            task: id,
            attempt: 1,
            lease: LeaseId::new(),
        },
        |_| token(core, id),
    );
    vec![
        (
            "schedule",
            Op::Schedule {
                node,
                lease: LeaseId::new(),
            },
        ),
        ("start", Op::Start { token: t, node }),
        (
            "heartbeat",
            Op::Heartbeat {
                token: t,
                node,
                progress: None,
            },
        ),
        (
            "log",
            Op::Log {
                token: t,
                node,
                stream: "stdout".into(),
                line: "hi".into(),
            },
        ),
        (
            "succeed",
            Op::Succeed {
                token: t,
                node,
                output: serde_json::json!(2),
            },
        ),
        (
            "fail",
            Op::Fail {
                token: t,
                node,
                error: TaskError::new("boom", "again"),
            },
        ),
        ("lose", Op::LosePlacement { node }),
        (
            "expire_sts",
            Op::Expire {
                phase: TimeoutPhase::ScheduleToStart,
            },
        ),
        (
            "expire_hb",
            Op::Expire {
                phase: TimeoutPhase::Heartbeat,
            },
        ),
        (
            "expire_stc",
            Op::Expire {
                phase: TimeoutPhase::StartToClose,
            },
        ),
        (
            "expire_deadline",
            Op::Expire {
                phase: TimeoutPhase::Deadline,
            },
        ),
        (
            "cancel",
            Op::Cancel {
                by: "alice".into(),
                reason: "r".into(),
            },
        ),
    ]
}

/// The expected answer: `Ok(state after)` or the name of the error kind.
fn expected(state: TaskState, op: &str) -> Result<TaskState, &'static str> {
    use TaskState::*;
    let terminal_refusal = |op: &str| match op {
        // A report from a lease that is gone: the lease was taken by the end.
        "start" | "heartbeat" | "log" | "succeed" | "fail" => Err("lease_lost"),
        "cancel" => Err("already_terminal"),
        _ => Err("invalid_transition"),
    };
    match (state, op) {
        (Pending, "schedule") => Ok(Scheduled),
        (Pending, "start" | "heartbeat" | "log" | "succeed" | "fail") => Err("lease_lost"),
        (Pending, "expire_deadline" | "expire_sts") => Ok(TimedOut),
        (Pending, "cancel") => Ok(Cancelled),
        (Pending, _) => Err("invalid_transition"),

        (Scheduled, "start") => Ok(Running),
        (Scheduled, "log") => Ok(Scheduled),
        (Scheduled, "fail" | "lose" | "expire_sts") => Ok(Pending),
        (Scheduled, "expire_deadline") => Ok(TimedOut),
        (Scheduled, "cancel") => Ok(Cancelled),
        (Scheduled, _) => Err("invalid_transition"),

        (Running, "heartbeat" | "log") => Ok(Running),
        (Running, "succeed") => Ok(Succeeded),
        (Running, "fail" | "lose" | "expire_hb" | "expire_stc") => Ok(Pending),
        (Running, "expire_deadline") => Ok(TimedOut),
        (Running, "cancel") => Ok(Cancelled),
        (Running, _) => Err("invalid_transition"),

        (Succeeded | Failed | Cancelled | TimedOut, op) => terminal_refusal(op),
    }
}

#[test]
fn every_state_and_op_follows_the_transition_table() {
    let id = TaskId::new();
    let node = NodeId::new();
    let s = spec(3);
    let mut checked = 0;
    for state in TaskState::ALL {
        let probe = core_in(state, id, &s, node);
        for (name, op) in ops(&probe, id, node) {
            let mut core = core_in(state, id, &s, node);
            let op = match (&core.lease, op) {
                // Rebuild lease-carrying ops against this core's lease.
                (Some(_), _) => ops(&core, id, node)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, o)| o)
                    .expect("same op list"),
                (None, op) => op,
            };
            let before = core.clone();
            let got = machine::apply(&mut core, facts(id, &s), op, T0);
            match (expected(state, name), got) {
                (Ok(to), Ok(Outcome::Appended(ev))) => {
                    assert_eq!(core.state, to, "{state} --{name}-->");
                    assert_eq!(core.last_seq, before.last_seq + 1, "{state} {name}");
                    assert_eq!(ev.is_terminal(), to.is_terminal(), "{state} {name}: {ev:?}");
                }
                (Err(kind), Err(e)) => {
                    assert_eq!(e.kind(), kind, "{state} --{name}--> {e}");
                    assert_eq!(
                        core, before,
                        "a refused op changes nothing ({state} {name})"
                    );
                }
                (want, got) => panic!("{state} --{name}-->: expected {want:?}, got {got:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * 12);
}

#[test]
fn a_pending_task_has_a_schedule_to_start_deadline_from_when_it_became_claimable() {
    let id = TaskId::new();
    let mut s = TaskSpec::new("echo", serde_json::Value::Null)
        .retry(RetryPolicy::attempts(3, Duration::from_secs(10)));
    s.timeouts.schedule_to_start = Duration::from_secs(1);
    let mut core = TaskCore::submitted(T0);
    assert_eq!(
        machine::deadline(&core, facts(id, &s)),
        Some((
            T0.saturating_add(Duration::from_secs(1)),
            TimeoutPhase::ScheduleToStart
        )),
        "a fresh task waits at most schedule_to_start for a placement"
    );
    // An attempt fails: the retry's wait for a placement starts when its
    // backoff ends, not at submission.
    let node = NodeId::new();
    machine::apply(
        &mut core,
        facts(id, &s),
        Op::Schedule {
            node,
            lease: LeaseId::new(),
        },
        T0,
    )
    .unwrap();
    let t = token(&core, id);
    machine::apply(&mut core, facts(id, &s), Op::Start { token: t, node }, T0).unwrap();
    let failed = machine::apply(
        &mut core,
        facts(id, &s),
        Op::Fail {
            token: t,
            node,
            error: TaskError::new("boom", "x"),
        },
        T0,
    )
    .unwrap();
    let Outcome::Appended(EventKind::AttemptFailed { retry_at, .. }) = failed else {
        panic!("expected a retry, got {failed:?}");
    };
    assert_eq!(core.state, TaskState::Pending);
    let (at, phase) = machine::deadline(&core, facts(id, &s)).expect("pending has a deadline");
    assert_eq!(phase, TimeoutPhase::ScheduleToStart);
    assert_eq!(at, retry_at.saturating_add(Duration::from_secs(1)));
    // Expiring it ends the task at once: waiting is not an attempt.
    let out = machine::apply(
        &mut core,
        facts(id, &s),
        Op::Expire {
            phase: TimeoutPhase::ScheduleToStart,
        },
        at,
    )
    .unwrap();
    assert_eq!(
        out,
        Outcome::Appended(EventKind::TimedOut {
            phase: TimeoutPhase::ScheduleToStart
        })
    );
    assert_eq!(core.state, TaskState::TimedOut);
    assert_eq!(
        core.error.as_ref().map(|e| e.code.as_str()),
        Some("timeout")
    );
    assert_eq!(machine::deadline(&core, facts(id, &s)), None);
}

#[test]
fn a_report_from_another_node_is_forbidden_and_a_foreign_token_is_refused() {
    let id = TaskId::new();
    let node = NodeId::new();
    let s = spec(3);
    let mut core = core_in(TaskState::Running, id, &s, node);
    let t = token(&core, id);
    let before = core.clone();
    let e = machine::apply(
        &mut core,
        facts(id, &s),
        Op::Succeed {
            token: t,
            node: NodeId::new(),
            output: serde_json::Value::Null,
        },
        T0,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e:?}");
    let foreign = LeaseToken {
        task: TaskId::new(),
        ..t
    };
    let e = machine::apply(
        &mut core,
        facts(id, &s),
        Op::Heartbeat {
            token: foreign,
            node,
            progress: None,
        },
        T0,
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert_eq!(core, before);
}

/// Issue 18, item 5: the first report wins. The same lease reporting success
/// again with a different output gets the first answer and changes nothing.
#[test]
fn consecutive_heartbeats_of_a_lease_replace_one_stored_event() {
    let id = TaskId::new();
    let node = NodeId::new();
    let s = spec(3);
    let mut core = core_in(TaskState::Running, id, &s, node);
    let t = token(&core, id);
    let beat = |core: &mut TaskCore, n: i64| {
        machine::apply(
            core,
            facts(id, &s),
            Op::Heartbeat {
                token: t,
                node,
                progress: Some(serde_json::json!(n)),
            },
            T0.saturating_add(Duration::from_secs(n as u64)),
        )
        .expect("a running lease beats")
    };
    let started = core.last_seq;
    assert!(matches!(beat(&mut core, 1), Outcome::Appended(_)));
    assert_eq!(core.last_seq, started + 1);
    for n in 2..100 {
        let Outcome::Replaced(EventKind::Heartbeat { progress, .. }) = beat(&mut core, n) else {
            panic!("beat {n} appended instead of replacing");
        };
        assert_eq!(progress, Some(serde_json::json!(n)));
    }
    assert_eq!(core.last_seq, started + 1, "99 beats, one stored event");
    let lease = core.lease.as_ref().expect("running");
    assert_eq!(
        lease.last_heartbeat,
        T0.saturating_add(Duration::from_secs(99))
    );
    // A log line ends the run: the next beat is a new event, then coalesces.
    machine::apply(
        &mut core,
        facts(id, &s),
        Op::Log {
            token: t,
            node,
            stream: "stdout".into(),
            line: "x".into(),
        },
        T0,
    )
    .expect("log");
    assert!(matches!(beat(&mut core, 100), Outcome::Appended(_)));
    assert!(matches!(beat(&mut core, 101), Outcome::Replaced(_)));
    assert_eq!(core.last_seq, started + 3);
    // A new attempt's first beat is its own event.
    machine::apply(&mut core, facts(id, &s), Op::LosePlacement { node }, T0).expect("lose");
    assert!(!core.lease.as_ref().is_some_and(|l| l.beat_is_last));
}

#[test]
fn a_repeated_report_with_a_different_output_gets_the_first_answer() {
    let id = TaskId::new();
    let node = NodeId::new();
    let s = spec(3);
    let mut core = core_in(TaskState::Running, id, &s, node);
    let t = token(&core, id);
    let first = machine::apply(
        &mut core,
        facts(id, &s),
        Op::Succeed {
            token: t,
            node,
            output: serde_json::json!("first"),
        },
        T0,
    )
    .unwrap();
    assert_eq!(
        first,
        Outcome::Appended(EventKind::Succeeded {
            output: serde_json::json!("first")
        })
    );
    let after_first = core.clone();
    let again = machine::apply(
        &mut core,
        facts(id, &s),
        Op::Succeed {
            token: t,
            node,
            output: serde_json::json!("second"),
        },
        T0,
    )
    .unwrap();
    assert_eq!(
        again,
        Outcome::Duplicate {
            seq: after_first.last_seq,
            state: TaskState::Succeeded
        }
    );
    assert_eq!(core, after_first, "nothing changed");
    assert_eq!(core.output, Some(serde_json::json!("first")));
}

// ----- property test ------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Schedule(usize),
    Start(usize, usize),
    Heartbeat(usize, usize),
    Log(usize, usize),
    Succeed(usize, usize),
    Fail(usize, usize, bool),
    Lose(usize),
    Expire(u8),
    Cancel,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    // Token choice: 0 = the current lease, k > 0 = the k-th most recent old token.
    let tok = 0usize..4;
    let node = 0usize..3;
    prop_oneof![
        3 => node.clone().prop_map(Step::Schedule),
        3 => (tok.clone(), node.clone()).prop_map(|(t, n)| Step::Start(t, n)),
        2 => (tok.clone(), node.clone()).prop_map(|(t, n)| Step::Heartbeat(t, n)),
        1 => (tok.clone(), node.clone()).prop_map(|(t, n)| Step::Log(t, n)),
        2 => (tok.clone(), node.clone()).prop_map(|(t, n)| Step::Succeed(t, n)),
        2 => (tok.clone(), node.clone(), any::<bool>()).prop_map(|(t, n, r)| Step::Fail(t, n, r)),
        1 => node.prop_map(Step::Lose),
        1 => (0u8..4).prop_map(Step::Expire),
        1 => Just(Step::Cancel),
        2 => (0u64..5_000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever happens: nothing leaves a terminal state, a refused op changes
    /// nothing, every accepted op appends exactly one event with the next seq, the
    /// stream has exactly one terminal event iff the task ended (and it is last),
    /// and a lease exists exactly while Scheduled or Running.
    #[test]
    fn random_operation_sequences_keep_the_contract(
        steps in prop::collection::vec(step(), 1..60),
        attempts in 1u32..4,
    ) {
        let id = TaskId::new();
        let nodes = [NodeId::new(), NodeId::new(), NodeId::new()];
        let s = spec(attempts);
        let mut core = TaskCore::submitted(T0);
        let mut now = T0;
        let mut events: Vec<(u64, EventKind)> = vec![(1, EventKind::Queued)];
        let mut tokens: Vec<LeaseToken> = Vec::new();
        for st in steps {
            let pick = |k: usize, core: &TaskCore| -> LeaseToken {
                if k == 0
                    && let Some(l) = &core.lease {
                        return LeaseToken { task: id, attempt: l.attempt, lease: l.id };
                    }
                tokens
                    .iter()
                    .rev()
                    .nth(k.saturating_sub(1))
                    .copied()
                    .unwrap_or(LeaseToken { task: id, attempt: 1, lease: LeaseId::new() })
            };
            let op = match st {
                Step::Advance(ms) => {
                    now = now.saturating_add(Duration::from_millis(ms));
                    continue;
                }
                Step::Schedule(n) => Op::Schedule { node: nodes[n], lease: LeaseId::new() },
                Step::Start(k, n) => Op::Start { token: pick(k, &core), node: nodes[n] },
                Step::Heartbeat(k, n) => {
                    Op::Heartbeat { token: pick(k, &core), node: nodes[n], progress: None }
                }
                Step::Log(k, n) => Op::Log {
                    token: pick(k, &core),
                    node: nodes[n],
                    stream: "stdout".into(),
                    line: "x".into(),
                },
                Step::Succeed(k, n) => Op::Succeed {
                    token: pick(k, &core),
                    node: nodes[n],
                    output: serde_json::json!(k),
                },
                Step::Fail(k, n, retryable) => {
                    let mut e = TaskError::new("boom", "x");
                    e.non_retryable = !retryable;
                    Op::Fail { token: pick(k, &core), node: nodes[n], error: e }
                }
                Step::Lose(n) => Op::LosePlacement { node: nodes[n] },
                Step::Expire(p) => Op::Expire {
                    phase: [
                        TimeoutPhase::ScheduleToStart,
                        TimeoutPhase::Heartbeat,
                        TimeoutPhase::StartToClose,
                        TimeoutPhase::Deadline,
                    ][p as usize],
                },
                Step::Cancel => Op::Cancel { by: "alice".into(), reason: "r".into() },
            };
            let before = core.clone();
            let was_terminal = before.state.is_terminal();
            match machine::apply(&mut core, facts(id, &s), op, now) {
                Ok(Outcome::Appended(ev)) => {
                    prop_assert!(!was_terminal, "left terminal {:?} with {:?}", before.state, ev);
                    prop_assert_eq!(core.last_seq, before.last_seq + 1);
                    prop_assert_eq!(ev.is_terminal(), core.state.is_terminal());
                    prop_assert!(core.attempt >= before.attempt);
                    if let EventKind::Scheduled { .. } = ev {
                        let l = core.lease.as_ref().expect("scheduled has a lease");
                        tokens.push(LeaseToken { task: id, attempt: l.attempt, lease: l.id });
                    }
                    events.push((core.last_seq, ev));
                }
                Ok(Outcome::Replaced(ev)) => {
                    // A heartbeat right after a heartbeat of the same lease
                    // takes its place: same seq, still running.
                    prop_assert!(matches!(ev, EventKind::Heartbeat { .. }), "only heartbeats coalesce: {:?}", ev);
                    prop_assert_eq!(core.last_seq, before.last_seq);
                    prop_assert_eq!(core.state, TaskState::Running);
                    let last = events.last_mut().expect("a heartbeat follows an event");
                    prop_assert!(matches!(last.1, EventKind::Heartbeat { .. }), "replaces a heartbeat, not {:?}", last.1);
                    last.1 = ev;
                }
                Ok(Outcome::Duplicate { seq, state }) => {
                    // The first answer again: the seq and the state that report
                    // led to (the task may have moved on since).
                    prop_assert_eq!(&core, &before, "a duplicate changes nothing");
                    prop_assert!(seq <= core.last_seq);
                    let (_, first) = &events[seq as usize - 1];
                    prop_assert!(
                        matches!(first, EventKind::AttemptFailed { .. }) || first.is_terminal(),
                        "a duplicate names the seq of a report's event, got {:?} ({:?})", first, state
                    );
                }
                Err(_) => prop_assert_eq!(&core, &before, "a refused op changes nothing"),
            }
            prop_assert_eq!(
                core.lease.is_some(),
                matches!(core.state, TaskState::Scheduled | TaskState::Running)
            );
        }
        for (i, (seq, _)) in events.iter().enumerate() {
            prop_assert_eq!(*seq, i as u64 + 1, "gapless seq");
        }
        let terminals = events.iter().filter(|(_, e)| e.is_terminal()).count();
        if core.state.is_terminal() {
            prop_assert_eq!(terminals, 1);
            prop_assert!(events.last().is_some_and(|(_, e)| e.is_terminal()));
        } else {
            prop_assert_eq!(terminals, 0);
        }
    }
}
