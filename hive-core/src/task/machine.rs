//! The task state machine: one pure function, [`apply`], that every backend calls
//! inside its atomic step (a lock, a transaction) to decide a transition and the
//! one event it appends.
//!
//! ```text
//! Pending ──► Scheduled ──► Running ──► Succeeded | Failed | Cancelled | TimedOut
//!    ▲            │             │
//!    └────────────┴─────────────┘   (placement lost, or attempt failed with retries left)
//! Pending / Scheduled may also go straight to Cancelled or TimedOut.
//! ```
//!
//! | op              | from                          | to                                     | event |
//! |-----------------|-------------------------------|----------------------------------------|-------|
//! | `Schedule`      | Pending (available)           | Scheduled                              | `Scheduled` |
//! | `Start`         | Scheduled (own lease)         | Running                                | `Started` |
//! | `Heartbeat`     | Running (own lease)           | Running                                | `Heartbeat` (replaces the last one if it was this lease's heartbeat) |
//! | `Log`           | Scheduled, Running (own lease)| unchanged                              | `Log` |
//! | `Succeed`       | Running (own lease)           | Succeeded                              | `Succeeded` |
//! | `Fail`          | Scheduled, Running (own lease)| Pending (retry) or Failed              | `AttemptFailed` / `Failed` |
//! | `LosePlacement` | Scheduled, Running            | Pending (retry) or Failed              | `AttemptFailed` / `Failed` |
//! | `Expire`        | per phase, see [`TimeoutPhase`] | Pending (retry) or TimedOut          | `AttemptFailed` / `TimedOut` |
//! | `Cancel`        | any non-terminal              | Cancelled                              | `Cancelled` |
//!
//! Terminal states are absorbing. A report from a lease that is no longer current
//! gets [`Error::LeaseLost`]; a repeated report from the lease whose report was
//! accepted gets the same acknowledgement ([`Outcome::Duplicate`]) and appends
//! nothing — the first report wins: a repeat with a different output or error
//! gets the same answer, changes nothing and is logged as a warning; a report
//! of the other kind on an ended task gets [`Error::AlreadyTerminal`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{EventKind, TaskError, TaskSpec, TaskState, TimeoutPhase};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{LeaseId, NodeId, TaskId};
use crate::principal::PrincipalId;
use crate::retry::FailureCause;

/// The fencing token of one lease: a worker presents it with every start,
/// heartbeat, log and report. Once the lease is gone, the token gets `LeaseLost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseToken {
    /// The task.
    pub task: TaskId,
    /// The attempt the lease is for.
    pub attempt: u32,
    /// The lease.
    pub lease: LeaseId,
}

/// The current placement of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease id (fencing).
    pub id: LeaseId,
    /// The node holding it.
    pub node: NodeId,
    /// The attempt it is for.
    pub attempt: u32,
    /// When it was granted.
    pub granted_at: Timestamp,
    /// When the node started the attempt.
    pub started_at: Option<Timestamp>,
    /// The last sign of life of the attempt.
    pub last_heartbeat: Timestamp,
    /// The task's last stored event is this lease's heartbeat: the next
    /// heartbeat replaces it ([`Outcome::Replaced`]) instead of appending one,
    /// so a task stores O(attempts + log lines) events however often it beats.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub beat_is_last: bool,
}

/// What kind of report was accepted last, to recognise duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// A success report.
    Success,
    /// A failure report.
    Failure,
}

/// The last report the machine accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedReport {
    /// The lease that reported.
    pub lease: LeaseId,
    /// What it reported.
    pub kind: ReportKind,
    /// The seq of the event the report appended.
    pub seq: u64,
    /// The state the report led to.
    pub state: TaskState,
}

/// The mutable part of a task: what [`apply`] reads and writes. Backends store it
/// (as columns, a hash, a struct) next to the immutable spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskCore {
    /// The state.
    pub state: TaskState,
    /// Attempts scheduled so far.
    pub attempt: u32,
    /// The current lease (Scheduled and Running only).
    pub lease: Option<Lease>,
    /// The node of the last placement.
    pub node: Option<NodeId>,
    /// The seq of the last event.
    pub last_seq: u64,
    /// When a pending task may be claimed.
    pub available_at: Timestamp,
    /// The last accepted report.
    pub last_report: Option<AcceptedReport>,
    /// The output, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The last error.
    pub error: Option<TaskError>,
    /// When the core last changed.
    pub updated_at: Timestamp,
    /// A pending retry must not be claimed by this node (the policy's
    /// `placement: avoid_previous_node`). Stores enforce it in their claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid_node: Option<NodeId>,
}

impl TaskCore {
    /// The core of a task of `spec` submitted at `now`: claimable from
    /// [`TaskSpec::available_from`] (later than `now` for a delayed task).
    pub fn submitted_for(spec: &TaskSpec, now: Timestamp) -> Self {
        TaskCore {
            available_at: spec.available_from(now),
            ..TaskCore::submitted(now)
        }
    }

    /// The core of a task just submitted at `now`, with its `Queued` event (seq 1)
    /// already counted.
    pub fn submitted(now: Timestamp) -> Self {
        TaskCore {
            state: TaskState::Pending,
            attempt: 0,
            lease: None,
            node: None,
            last_seq: 1,
            available_at: now,
            last_report: None,
            output: None,
            error: None,
            updated_at: now,
            avoid_node: None,
        }
    }
}

/// The immutable facts about a task the machine needs.
#[derive(Clone, Copy, Debug)]
pub struct TaskFacts<'a> {
    /// The task's id (seeds the retry jitter).
    pub id: TaskId,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// Its spec.
    pub spec: &'a TaskSpec,
}

/// A requested transition.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Lease a pending task to `node`.
    Schedule {
        /// The node.
        node: NodeId,
        /// The new lease's id.
        lease: LeaseId,
    },
    /// The node starts the attempt.
    Start {
        /// The lease.
        token: LeaseToken,
        /// The node presenting it.
        node: NodeId,
    },
    /// The attempt is alive.
    Heartbeat {
        /// The lease.
        token: LeaseToken,
        /// The node presenting it.
        node: NodeId,
        /// Progress, if any.
        progress: Option<serde_json::Value>,
    },
    /// A line of output.
    Log {
        /// The lease.
        token: LeaseToken,
        /// The node presenting it.
        node: NodeId,
        /// The stream.
        stream: String,
        /// The line.
        line: String,
    },
    /// The attempt succeeded.
    Succeed {
        /// The lease.
        token: LeaseToken,
        /// The node presenting it.
        node: NodeId,
        /// The output.
        output: serde_json::Value,
    },
    /// The attempt failed.
    Fail {
        /// The lease.
        token: LeaseToken,
        /// The node presenting it.
        node: NodeId,
        /// The error.
        error: TaskError,
    },
    /// The node holding the lease was lost or removed.
    LosePlacement {
        /// The node that was lost.
        node: NodeId,
    },
    /// A deadline expired (issued by the supervisor).
    Expire {
        /// Which one.
        phase: TimeoutPhase,
    },
    /// A principal cancels the task.
    Cancel {
        /// Who.
        by: PrincipalId,
        /// Why.
        reason: String,
    },
}

/// The kind of an [`Op`], for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// [`Op::Schedule`].
    Schedule,
    /// [`Op::Start`].
    Start,
    /// [`Op::Heartbeat`].
    Heartbeat,
    /// [`Op::Log`].
    Log,
    /// [`Op::Succeed`].
    Succeed,
    /// [`Op::Fail`].
    Fail,
    /// [`Op::LosePlacement`].
    LosePlacement,
    /// [`Op::Expire`].
    Expire,
    /// [`Op::Cancel`].
    Cancel,
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionKind::Schedule => "schedule",
            TransitionKind::Start => "start",
            TransitionKind::Heartbeat => "heartbeat",
            TransitionKind::Log => "log",
            TransitionKind::Succeed => "succeed",
            TransitionKind::Fail => "fail",
            TransitionKind::LosePlacement => "lose the placement of",
            TransitionKind::Expire => "expire",
            TransitionKind::Cancel => "cancel",
        })
    }
}

impl Op {
    /// The op's kind.
    pub fn kind(&self) -> TransitionKind {
        match self {
            Op::Schedule { .. } => TransitionKind::Schedule,
            Op::Start { .. } => TransitionKind::Start,
            Op::Heartbeat { .. } => TransitionKind::Heartbeat,
            Op::Log { .. } => TransitionKind::Log,
            Op::Succeed { .. } => TransitionKind::Succeed,
            Op::Fail { .. } => TransitionKind::Fail,
            Op::LosePlacement { .. } => TransitionKind::LosePlacement,
            Op::Expire { .. } => TransitionKind::Expire,
            Op::Cancel { .. } => TransitionKind::Cancel,
        }
    }
}

/// The result of an accepted op.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The transition happened; append this event with seq `core.last_seq`.
    Appended(EventKind),
    /// A heartbeat after a heartbeat of the same lease: store this event in
    /// place of the one at `core.last_seq` (same seq, new time and progress),
    /// wake the task's subscribers, add nothing to the tenant's feed.
    Replaced(EventKind),
    /// The same report was accepted before: answer with its acknowledgement,
    /// append nothing.
    Duplicate {
        /// The seq of the event the first report appended.
        seq: u64,
        /// The state it led to.
        state: TaskState,
    },
}

/// Decides `op` on `core`. On success `core` is updated (state, lease, seq…) and
/// the event to append is returned; on error `core` is untouched.
pub fn apply(core: &mut TaskCore, facts: TaskFacts<'_>, op: Op, now: Timestamp) -> Result<Outcome> {
    let kind = op.kind();
    let invalid = |from| Error::InvalidTransition {
        task: facts.id,
        from,
        op: kind,
    };
    let event = match op {
        Op::Schedule { node, lease } => {
            if core.state != TaskState::Pending || core.available_at > now {
                return Err(invalid(core.state));
            }
            if core.avoid_node == Some(node) {
                return Err(Error::Conflict {
                    message: format!(
                        "task {}: its retry policy avoids node {node}, which ran the last attempt",
                        facts.id
                    ),
                });
            }
            core.avoid_node = None;
            core.attempt += 1;
            core.lease = Some(Lease {
                id: lease,
                node,
                attempt: core.attempt,
                granted_at: now,
                started_at: None,
                last_heartbeat: now,
                beat_is_last: false,
            });
            core.node = Some(node);
            core.state = TaskState::Scheduled;
            EventKind::Scheduled { node }
        }
        Op::Start { token, node } => {
            check_lease(core, facts, &token, node, kind)?;
            if core.state != TaskState::Scheduled {
                return Err(invalid(core.state));
            }
            let lease = core.lease.as_mut().expect("checked by check_lease");
            lease.started_at = Some(now);
            lease.last_heartbeat = now;
            core.state = TaskState::Running;
            EventKind::Started {
                node,
                attempt: token.attempt,
            }
        }
        Op::Heartbeat {
            token,
            node,
            progress,
        } => {
            check_lease(core, facts, &token, node, kind)?;
            if core.state != TaskState::Running {
                return Err(invalid(core.state));
            }
            let lease = core.lease.as_mut().expect("checked by check_lease");
            lease.last_heartbeat = now;
            let event = EventKind::Heartbeat {
                node,
                attempt: token.attempt,
                progress,
            };
            if lease.beat_is_last {
                // Coalesce: the stored heartbeat at `last_seq` takes this one's
                // progress and time; no new seq, no feed entry.
                core.updated_at = now;
                return Ok(Outcome::Replaced(event));
            }
            lease.beat_is_last = true;
            event
        }
        Op::Log {
            token,
            node,
            stream,
            line,
        } => {
            check_lease(core, facts, &token, node, kind)?;
            EventKind::Log { stream, line }
        }
        Op::Succeed {
            token,
            node,
            output,
        } => {
            if let Some(dup) = duplicate_report(core, facts, &token, ReportKind::Success)? {
                if core.output.as_ref() != Some(&output) {
                    tracing::warn!(
                        task = %facts.id,
                        "a repeated success report carries a different output; the first \
                         report was accepted and stands"
                    );
                }
                return Ok(dup);
            }
            check_lease(core, facts, &token, node, kind)?;
            if core.state != TaskState::Running {
                return Err(invalid(core.state));
            }
            core.state = TaskState::Succeeded;
            core.lease = None;
            core.output = Some(output.clone());
            core.last_report = Some(AcceptedReport {
                lease: token.lease,
                kind: ReportKind::Success,
                seq: core.last_seq + 1,
                state: TaskState::Succeeded,
            });
            EventKind::Succeeded { output }
        }
        Op::Fail { token, node, error } => {
            if let Some(dup) = duplicate_report(core, facts, &token, ReportKind::Failure)? {
                if core.error.as_ref() != Some(&error) {
                    tracing::warn!(
                        task = %facts.id,
                        "a repeated failure report carries a different error; the first \
                         report was accepted and stands"
                    );
                }
                return Ok(dup);
            }
            check_lease(core, facts, &token, node, kind)?;
            let cause = FailureCause::Error(&error);
            let event = end_attempt(core, facts, cause, error.clone(), None, now);
            core.last_report = Some(AcceptedReport {
                lease: token.lease,
                kind: ReportKind::Failure,
                seq: core.last_seq + 1,
                state: core.state,
            });
            event
        }
        Op::LosePlacement { node } => {
            match &core.lease {
                Some(lease) if lease.node == node => {}
                _ => return Err(invalid(core.state)),
            }
            let error = TaskError::new("lost", format!("node {node} was lost"));
            end_attempt(core, facts, FailureCause::Lost, error, None, now)
        }
        Op::Expire { phase } => {
            let expected = match phase {
                TimeoutPhase::Deadline => !core.state.is_terminal(),
                TimeoutPhase::ScheduleToStart => {
                    matches!(core.state, TaskState::Pending | TaskState::Scheduled)
                }
                TimeoutPhase::Heartbeat | TimeoutPhase::StartToClose => {
                    core.state == TaskState::Running
                }
            };
            if !expected {
                return Err(invalid(core.state));
            }
            if phase == TimeoutPhase::Deadline {
                terminate(core, TaskState::TimedOut, now);
                EventKind::TimedOut { phase }
            } else if core.state == TaskState::Pending {
                // No node took the task in time: waiting for a placement is
                // not an attempt, so there is nothing to retry.
                terminate(core, TaskState::TimedOut, now);
                core.error = Some(TaskError::new(
                    "timeout",
                    format!(
                        "no node took the task within its schedule-to-start timeout ({:?})",
                        facts.spec.timeouts.schedule_to_start
                    ),
                ));
                EventKind::TimedOut { phase }
            } else {
                let error = TaskError::new("timeout", format!("{phase} timeout expired"));
                end_attempt(core, facts, FailureCause::Timeout, error, Some(phase), now)
            }
        }
        Op::Cancel { by, reason } => {
            if core.state.is_terminal() {
                return Err(Error::AlreadyTerminal {
                    task: facts.id,
                    state: core.state,
                    seq: core.last_seq,
                });
            }
            terminate(core, TaskState::Cancelled, now);
            EventKind::Cancelled { by, reason }
        }
    };
    if !matches!(event, EventKind::Heartbeat { .. })
        && let Some(lease) = core.lease.as_mut()
    {
        lease.beat_is_last = false;
    }
    core.last_seq += 1;
    core.updated_at = now;
    Ok(Outcome::Appended(event))
}

/// When the task's current state times out, and which deadline that is; `None`
/// only for terminal tasks. A pending task waits for a placement at most its
/// schedule-to-start timeout, counted from when it became claimable
/// (`available_at`: submission, or the end of a retry's backoff), so a task
/// that no node can take still ends, `TimedOut { schedule_to_start }`.
pub fn deadline(core: &TaskCore, facts: TaskFacts<'_>) -> Option<(Timestamp, TimeoutPhase)> {
    let t = &facts.spec.timeouts;
    let start = facts.spec.available_from(facts.created_at);
    let overall = t
        .deadline
        .map(|d| (start.saturating_add(d), TimeoutPhase::Deadline));
    let attempt = match (&core.state, &core.lease) {
        (TaskState::Pending, _) => Some((
            core.available_at.saturating_add(t.schedule_to_start),
            TimeoutPhase::ScheduleToStart,
        )),
        (TaskState::Scheduled, Some(l)) => Some((
            l.granted_at.saturating_add(t.schedule_to_start),
            TimeoutPhase::ScheduleToStart,
        )),
        (TaskState::Running, Some(l)) => {
            let hb = (
                l.last_heartbeat.saturating_add(t.heartbeat),
                TimeoutPhase::Heartbeat,
            );
            let stc = (
                l.started_at
                    .unwrap_or(l.granted_at)
                    .saturating_add(t.start_to_close),
                TimeoutPhase::StartToClose,
            );
            Some(if stc.0 < hb.0 { stc } else { hb })
        }
        _ => None,
    };
    if core.state.is_terminal() {
        return None;
    }
    match (attempt, overall) {
        (Some(a), Some(o)) => Some(if o.0 <= a.0 { o } else { a }),
        (a, o) => a.or(o),
    }
}

fn check_lease(
    core: &TaskCore,
    facts: TaskFacts<'_>,
    token: &LeaseToken,
    node: NodeId,
    op: TransitionKind,
) -> Result<()> {
    if token.task != facts.id {
        return Err(Error::InvalidArgument {
            message: format!("lease token is for task {}, not {}", token.task, facts.id),
        });
    }
    match &core.lease {
        Some(l) if l.id == token.lease && l.attempt == token.attempt => {
            if l.node != node {
                Err(Error::Forbidden {
                    action: format!("task.{op}"),
                    reason: format!("task {} is leased to another node", facts.id),
                })
            } else {
                Ok(())
            }
        }
        _ => Err(Error::LeaseLost { task: facts.id }),
    }
}

fn duplicate_report(
    core: &TaskCore,
    facts: TaskFacts<'_>,
    token: &LeaseToken,
    kind: ReportKind,
) -> Result<Option<Outcome>> {
    match core.last_report {
        Some(r) if r.lease == token.lease && token.task == facts.id => {
            if r.kind == kind {
                Ok(Some(Outcome::Duplicate {
                    seq: r.seq,
                    state: r.state,
                }))
            } else if core.state.is_terminal() {
                Err(Error::AlreadyTerminal {
                    task: facts.id,
                    state: core.state,
                    seq: core.last_seq,
                })
            } else {
                Err(Error::LeaseLost { task: facts.id })
            }
        }
        _ if core.state.is_terminal() && core.lease.is_none() => {
            // A report from a lease that never reported, on an ended task: the
            // lease was taken away by the end (cancel, timeout).
            Err(Error::LeaseLost { task: facts.id })
        }
        _ => Ok(None),
    }
}

fn terminate(core: &mut TaskCore, state: TaskState, _now: Timestamp) {
    core.state = state;
    core.lease = None;
}

/// Ends the current attempt: schedules a retry if the policy allows one, else
/// ends the task.
fn end_attempt(
    core: &mut TaskCore,
    facts: TaskFacts<'_>,
    cause: FailureCause<'_>,
    error: TaskError,
    timeout: Option<TimeoutPhase>,
    now: Timestamp,
) -> EventKind {
    let policy = match cause {
        FailureCause::Error(e) => facts.spec.retry.for_code(&e.code),
        _ => std::borrow::Cow::Borrowed(&facts.spec.retry),
    };
    let attempt = core.attempt;
    let delay = match cause {
        FailureCause::Error(TaskError {
            retry_after: Some(d),
            ..
        }) => policy.clamp_suggested(*d),
        _ => policy.delay(attempt, facts.id.as_u128()),
    };
    let retry_at = now.saturating_add(delay);
    let previous_node = core.lease.as_ref().map(|l| l.node);
    let within_elapsed = policy
        .max_elapsed
        .is_none_or(|m| retry_at <= facts.created_at.saturating_add(m));
    let within_deadline = facts
        .spec
        .timeouts
        .deadline
        .is_none_or(|d| retry_at < facts.created_at.saturating_add(d));
    core.lease = None;
    if policy.retries_cause(cause)
        && policy.has_attempts_left(attempt)
        && within_elapsed
        && within_deadline
    {
        core.state = TaskState::Pending;
        core.available_at = retry_at;
        if policy.placement == crate::retry::RetryPlacement::AvoidPreviousNode {
            core.avoid_node = previous_node;
        }
        core.error = Some(error.clone());
        EventKind::AttemptFailed {
            attempt,
            error,
            retry_at,
        }
    } else if let Some(phase) = timeout {
        core.state = TaskState::TimedOut;
        core.error = Some(error);
        EventKind::TimedOut { phase }
    } else {
        core.state = TaskState::Failed;
        core.error = Some(error.clone());
        EventKind::Failed { error }
    }
}
