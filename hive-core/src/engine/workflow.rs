//! The engine's workflow API and the durable driver.
//!
//! A workflow is a record (kind `workflow`) whose body is the
//! [`WorkflowRecord`] and whose event stream is its [`WorkflowEvent`]s. The
//! driver — a loop in every `Hive` — reads a running workflow and its tasks,
//! computes a [`plan`], writes it back with a compare-and-set (so concurrent
//! drivers in many processes decide every step exactly once), then submits the
//! step tasks the plan fixed (ids and idempotency keys are in the record, so a
//! crash between the write and the submit is repaired by the next pass).

use rustc_hash::{FxHashMap, FxHashSet};
use tracing::instrument;

use serde::{Deserialize, Serialize};

use super::Hive;
use super::partitions::Partitions;
use super::subscribe::Replay;
use crate::auth::{Action, Resource};
use crate::error::{Error, Result};
use crate::principal::Principal;
use crate::store::{Command, Record, RecordQuery, RecordWrite};
use crate::task::machine::Op;
use crate::workflow::{
    self, KEY_RECORD_KIND, RECORD_KIND, StepState, StepView, WorkflowEvent, WorkflowEventKind,
    WorkflowId, WorkflowPage, WorkflowQuery, WorkflowRecord, WorkflowSpec, WorkflowState,
    WorkflowSubmitted, WorkflowSummary, WorkflowView,
};

/// A driver's partition leases last this many scan intervals.
const LEASE_SCANS: u32 = 5;

/// How many times a driver pass retries after losing a compare-and-set race.
const CAS_RETRIES: usize = 16;

fn decode(rec: &Record) -> Result<WorkflowRecord> {
    serde_json::from_value(rec.body.clone()).map_err(|e| Error::Backend {
        message: format!("workflow record {} is not readable: {e}", rec.id),
        source: Some(Box::new(e)),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Backend {
        message: format!("could not encode a workflow: {e}"),
        source: Some(Box::new(e)),
    })
}

fn resource(r: &WorkflowRecord) -> Resource {
    Resource::Workflow {
        id: r.id.to_string(),
        tenant: r.owner.tenant.clone(),
        owner: r.owner.principal.clone(),
    }
}

impl Hive {
    /// Submits a workflow owned by `p`. The spec is validated first (see
    /// [`workflow::validate`]): nothing runs for an invalid spec. Steps without
    /// dependencies start at once. A reused idempotency key returns the existing
    /// workflow.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant, name = %spec.name))]
    pub async fn submit_workflow(
        &self,
        p: &Principal,
        spec: WorkflowSpec,
    ) -> Result<WorkflowSubmitted> {
        self.submit_workflow_as(p, spec, WorkflowId::new()).await
    }

    /// [`Hive::submit_workflow`] with the id chosen by the caller (a
    /// schedule's fire decides it before submitting).
    pub(crate) async fn submit_workflow_as(
        &self,
        p: &Principal,
        spec: WorkflowSpec,
        id: WorkflowId,
    ) -> Result<WorkflowSubmitted> {
        self.check_live()?;
        let steps = spec.steps.len();
        let order = self
            .authorize_checked(
                p,
                Action::SubmitWorkflow,
                &Resource::Tenant(p.tenant.clone()),
                || serde_json::json!({ "name": spec.name, "steps": steps }),
                || {
                    let order = workflow::validate(&spec, &self.inner.config.workflow_limits)?;
                    if let Some(key) = &spec.idempotency_key
                        && workflow::key_record_id(&p.tenant, key).len()
                            > crate::store::MAX_RECORD_KEY_LEN
                    {
                        return Err(Error::InvalidSpec {
                            field: "idempotency_key".into(),
                            message: "too long together with the tenant's name".into(),
                        });
                    }
                    Ok(order)
                },
            )
            .await?;
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        if let Some(key) = &spec.idempotency_key {
            let key_id = workflow::key_record_id(&p.tenant, key);
            let claim = store
                .write_record(RecordWrite {
                    kind: KEY_RECORD_KIND.into(),
                    id: key_id.clone(),
                    tenant: p.tenant.clone(),
                    expected_version: 0,
                    status: "taken".into(),
                    body: serde_json::json!({ "workflow": id }),
                    events: Vec::new(),
                    now,
                })
                .await;
            match claim {
                Ok(_) => {}
                Err(Error::Conflict { .. }) => {
                    let record = store.get_record(KEY_RECORD_KIND, &key_id).await?;
                    if let Some(r) = &record
                        && r.tenant != p.tenant
                    {
                        // Ids are unambiguous per tenant; a record of another
                        // tenant here was not written by this engine.
                        return Err(Error::Backend {
                            message: format!(
                                "workflow key record {key_id} belongs to tenant {}, not {}",
                                r.tenant, p.tenant
                            ),
                            source: None,
                        });
                    }
                    let existing = record
                        .and_then(|r| r.body.get("workflow").cloned())
                        .and_then(|v| serde_json::from_value::<WorkflowId>(v).ok())
                        .ok_or_else(|| Error::Backend {
                            message: format!("workflow key record {key_id} is unreadable"),
                            source: None,
                        })?;
                    if store
                        .get_record(RECORD_KIND, &existing.to_string())
                        .await?
                        .is_some()
                    {
                        return Ok(WorkflowSubmitted {
                            id: existing,
                            created: false,
                        });
                    }
                    // The key was taken by a submission that crashed before it
                    // stored its workflow: finish that submission under its id.
                    return self.create_workflow(p, existing, spec, order, now).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.create_workflow(p, id, spec, order, now).await
    }

    async fn create_workflow(
        &self,
        p: &Principal,
        id: WorkflowId,
        spec: WorkflowSpec,
        order: Vec<usize>,
        now: crate::clock::Timestamp,
    ) -> Result<WorkflowSubmitted> {
        let owner = crate::task::Owner {
            tenant: p.tenant.clone(),
            principal: p.id.clone(),
        };
        let mut record = WorkflowRecord::new(id, owner, spec, order, now);
        let plan = workflow::plan(
            &mut record,
            &FxHashMap::default(),
            &self.inner.config.workflow_limits,
            now,
        );
        let mut events = vec![encode(&WorkflowEventKind::Started)?];
        for e in &plan.events {
            events.push(encode(e)?);
        }
        let write = RecordWrite {
            kind: RECORD_KIND.into(),
            id: id.to_string(),
            tenant: p.tenant.clone(),
            expected_version: 0,
            status: record.state.as_str().into(),
            body: encode(&record)?,
            events,
            now,
        };
        match self.inner.store.write_record(write).await {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => {
                return Ok(WorkflowSubmitted { id, created: false });
            }
            Err(e) => return Err(e),
        }
        if !plan.submit.is_empty() {
            let submitted: Vec<_> = plan.submit.iter().map(|t| t.id).collect();
            // A failure here is repaired by the driver's next pass.
            match self.inner.store.submit(plan.submit, now).await {
                Ok(_) => self.recheck_cancelled(id, submitted).await,
                Err(e) => {
                    tracing::warn!(workflow = %id, error = %e, "could not submit step tasks yet");
                }
            }
        }
        if !record.state.is_terminal() {
            self.inner.workflows.active.lock().insert(id);
            self.inner.workflows.fresh.lock().insert(id);
            self.inner.workflows.wake.notify_one();
        }
        Ok(WorkflowSubmitted { id, created: true })
    }

    async fn visible_workflow(
        &self,
        p: &Principal,
        id: WorkflowId,
    ) -> Result<(Record, WorkflowRecord)> {
        match self
            .inner
            .store
            .get_record(RECORD_KIND, &id.to_string())
            .await?
        {
            Some(r) if p.can_see_tenant(&r.tenant) => {
                let body = decode(&r)?;
                Ok((r, body))
            }
            _ => Err(Error::not_found("workflow", id)),
        }
    }

    /// A workflow with every step: task ids, state, attempts, timings, result.
    /// Another tenant's workflow is `NotFound`.
    pub async fn get_workflow(&self, p: &Principal, id: WorkflowId) -> Result<WorkflowView> {
        let (rec, body) = self.visible_workflow(p, id).await?;
        self.authorize(p, Action::ReadWorkflow, &resource(&body))
            .await?;
        let ids: Vec<_> = body
            .steps
            .iter()
            .flat_map(|s| s.tasks.iter().copied())
            .collect();
        let tasks: FxHashMap<_, _> = self
            .inner
            .store
            .get_tasks(&ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let steps = body
            .spec
            .steps
            .iter()
            .zip(&body.steps)
            .map(|(spec, s)| StepView {
                id: spec.id.clone(),
                state: s.state,
                tasks: s.tasks.clone(),
                attempts: s
                    .tasks
                    .iter()
                    .filter_map(|t| tasks.get(t))
                    .map(|t| t.attempt)
                    .sum(),
                started_at: s.started_at,
                ended_at: s.ended_at,
                output: s.output.clone(),
                error: s.error.clone(),
                skip_reason: s.skip_reason,
                agent: spec.agent.clone(),
                depends_on: spec.depends_on.clone(),
                trigger: spec.trigger,
                join: spec.join,
                input: s.input.clone(),
            })
            .collect();
        Ok(WorkflowView {
            id: body.id,
            name: body.spec.name.clone(),
            owner: body.owner.clone(),
            state: body.state,
            created_at: body.created_at,
            ended_at: body.ended_at,
            last_seq: rec.last_seq,
            steps,
        })
    }

    /// A page of the caller's tenant's workflows.
    pub async fn list_workflows(
        &self,
        p: &Principal,
        query: &WorkflowQuery,
    ) -> Result<WorkflowPage> {
        self.authorize(p, Action::ReadWorkflow, &Resource::Tenant(p.tenant.clone()))
            .await?;
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let records = self
            .inner
            .store
            .list_records(
                RECORD_KIND,
                &RecordQuery {
                    tenant: Some(p.tenant.clone()),
                    statuses: query
                        .states
                        .iter()
                        .flat_map(|s| match s {
                            WorkflowState::Cancelled => vec![
                                s.as_str().to_owned(),
                                workflow::STATUS_CANCELLING.to_owned(),
                            ],
                            s => vec![s.as_str().to_owned()],
                        })
                        .collect(),
                    after: query.after.map(|a| a.to_string()),
                    limit: Some(limit),
                },
            )
            .await?;
        let mut items = Vec::with_capacity(records.len());
        for r in &records {
            let b = decode(r)?;
            items.push(WorkflowSummary {
                id: b.id,
                name: b.spec.name,
                owner: b.owner,
                state: b.state,
                created_at: b.created_at,
                ended_at: b.ended_at,
            });
        }
        let next = if items.len() == limit as usize {
            items.last().map(|w| w.id)
        } else {
            None
        };
        Ok(WorkflowPage { items, next })
    }

    /// Cancels a running workflow: its waiting steps are cancelled, the tasks of
    /// its running steps are cancelled, and it ends `Cancelled`. A workflow that
    /// already ended is `Conflict`.
    #[instrument(level = "debug", skip_all, fields(workflow = %id))]
    pub async fn cancel_workflow(
        &self,
        p: &Principal,
        id: WorkflowId,
        reason: impl Into<String>,
    ) -> Result<()> {
        let reason = reason.into();
        let (_, body) = self.visible_workflow(p, id).await?;
        self.authorize_with(
            p,
            Action::CancelWorkflow,
            &resource(&body),
            || serde_json::json!({ "reason": reason }),
        )
        .await?;
        for _ in 0..CAS_RETRIES {
            let (rec, mut body) = self.visible_workflow(p, id).await?;
            if body.state.is_terminal() {
                return Err(Error::Conflict {
                    message: format!("workflow {id} already ended as {}", body.state),
                });
            }
            let now = self.inner.clock.now();
            let mut events = Vec::new();
            let mut to_cancel = Vec::new();
            for (spec, s) in body.spec.steps.iter().zip(body.steps.iter_mut()) {
                if s.state.is_terminal() {
                    continue;
                }
                to_cancel.extend(s.tasks.iter().copied());
                s.state = StepState::Cancelled;
                s.ended_at = Some(now);
                events.push(encode(&WorkflowEventKind::Step {
                    step: spec.id.clone(),
                    state: StepState::Cancelled,
                    tasks: Vec::new(),
                })?);
            }
            body.state = WorkflowState::Cancelled;
            body.ended_at = Some(now);
            body.cancelled = Some(workflow::Cancellation {
                by: p.id.clone(),
                reason: reason.clone(),
            });
            events.push(encode(&WorkflowEventKind::Finished {
                state: WorkflowState::Cancelled,
            })?);
            // Stored as `cancelling` until every step task has ended: a failed
            // task cancel, or a crash right after this write, leaves it for
            // the drivers (this process's or any other's, after a restart
            // too) to finish.
            let write = RecordWrite {
                kind: RECORD_KIND.into(),
                id: id.to_string(),
                tenant: rec.tenant.clone(),
                expected_version: rec.version,
                status: workflow::STATUS_CANCELLING.into(),
                body: encode(&body)?,
                events,
                now,
            };
            match self.inner.store.write_record(write).await {
                Ok(written) => {
                    let ended = self.cancel_tasks(p.id.clone(), &reason, to_cancel).await;
                    let done = ended
                        && self
                            .mark_cancelled(id, &rec.tenant, written.version, &body)
                            .await
                            .is_ok();
                    if done {
                        self.inner.workflows.active.lock().remove(&id);
                    } else {
                        self.inner.workflows.active.lock().insert(id);
                        self.inner.workflows.fresh.lock().insert(id);
                        self.inner.workflows.wake.notify_one();
                    }
                    return Ok(());
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            message: format!("workflow {id} kept changing; try again"),
        })
    }

    /// Sets a cancelled workflow's record status from `cancelling` to
    /// `cancelled` (its step tasks have all ended). A lost race means another
    /// writer got there first: its pass decides again.
    async fn mark_cancelled(
        &self,
        id: WorkflowId,
        tenant: &crate::principal::TenantId,
        version: u64,
        body: &WorkflowRecord,
    ) -> Result<()> {
        let write = RecordWrite {
            kind: RECORD_KIND.into(),
            id: id.to_string(),
            tenant: tenant.clone(),
            expected_version: version,
            status: WorkflowState::Cancelled.as_str().into(),
            body: encode(body)?,
            events: Vec::new(),
            now: self.inner.clock.now(),
        };
        self.inner.store.write_record(write).await.map(|_| ())
    }

    /// Cancels the step tasks of a cancelled workflow; whether every one of
    /// them has ended now (cancelled by this call, or already terminal, or
    /// never submitted: a driver that submits step tasks re-reads the record
    /// afterwards and cancels what it submitted for a cancelled workflow).
    async fn cancel_tasks(
        &self,
        by: crate::principal::PrincipalId,
        reason: &str,
        ids: Vec<crate::id::TaskId>,
    ) -> bool {
        if ids.is_empty() {
            return true;
        }
        let commands = ids
            .into_iter()
            .map(|task| Command {
                task,
                op: Op::Cancel {
                    by: by.clone(),
                    reason: format!("workflow cancelled: {reason}"),
                },
            })
            .collect();
        // Tasks that already ended answer AlreadyTerminal: nothing to do.
        match self
            .inner
            .store
            .apply(commands, self.inner.clock.now())
            .await
        {
            Ok(answers) => answers.iter().all(|a| match a {
                Ok(ack) => ack.state.is_terminal(),
                Err(Error::AlreadyTerminal { .. } | Error::NotFound { .. }) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not cancel a cancelled workflow's task yet");
                    false
                }
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not cancel a cancelled workflow's tasks yet");
                false
            }
        }
    }

    /// After submitting step tasks: if the workflow was cancelled meanwhile
    /// (its canceller may have found them not yet submitted), cancels them.
    async fn recheck_cancelled(&self, id: WorkflowId, submitted: Vec<crate::id::TaskId>) {
        let record = self
            .inner
            .store
            .get_record(RECORD_KIND, &id.to_string())
            .await;
        let cancelled = match record {
            Ok(Some(r)) => decode(&r)
                .map(|b| (b.state == WorkflowState::Cancelled).then_some(b))
                .ok()
                .flatten(),
            Ok(None) => None,
            Err(e) => {
                // The drivers' next pass over the cancelling record covers it.
                tracing::warn!(workflow = %id, error = %e, "could not re-read a workflow after submitting its steps");
                None
            }
        };
        if let Some(body) = cancelled {
            let by = body
                .cancelled
                .as_ref()
                .map_or_else(|| body.owner.principal.clone(), |c| c.by.clone());
            self.cancel_tasks(by, "workflow cancelled", submitted).await;
        }
    }

    /// The events of a workflow after `after_seq`, then live ones; ends right
    /// after its `Finished` event.
    pub async fn subscribe_workflow(
        &self,
        p: &Principal,
        id: WorkflowId,
        after_seq: u64,
    ) -> Result<WorkflowSubscription> {
        let (_, body) = self.visible_workflow(p, id).await?;
        self.authorize(p, Action::ReadWorkflow, &resource(&body))
            .await?;
        Ok(WorkflowSubscription {
            hive: self.detached(),
            id,
            replay: Replay::new(after_seq),
        })
    }

    /// Runs one driver pass over every running workflow now (the background
    /// driver does this whenever a task ends and every `workflow_poll`). Tests on
    /// a manual clock call it. Returns how many workflows are still running.
    pub async fn drive_workflows(&self, p: &Principal) -> Result<usize> {
        self.authorize(p, Action::Supervise, &Resource::System)
            .await?;
        self.scan_workflows(true).await?;
        self.drive_active(true).await
    }

    /// What the background workflow driver did: its partitions, passes and
    /// the time of its last and longest pass.
    pub fn workflow_driver_stats(&self) -> DriverStats {
        *self.inner.workflows.stats.lock()
    }

    /// Adds every running workflow in the store to this process's active set,
    /// and every cancelled one whose step tasks may still be running: all of
    /// them, or (`all` false, the background driver) those of the partitions
    /// this driver holds.
    pub(crate) async fn scan_workflows(&self, all: bool) -> Result<()> {
        let mut after = None;
        loop {
            let page = self.unfinished_workflows(after.clone(), 1000).await?;
            let last = page.last().map(|r| r.id.clone());
            {
                let mut active = self.inner.workflows.active.lock();
                let partitions = &self.inner.workflows.partitions;
                for r in &page {
                    if let Ok(id) = r.id.parse::<WorkflowId>()
                        && (all || partitions.drives(id))
                    {
                        active.insert(id);
                    }
                }
            }
            if page.len() < 1000 {
                return Ok(());
            }
            after = last;
        }
    }

    /// A page of the workflow records still to drive: running, or cancelled
    /// with step tasks that may still be running.
    async fn unfinished_workflows(&self, after: Option<String>, limit: u32) -> Result<Vec<Record>> {
        self.inner
            .store
            .list_records(
                RECORD_KIND,
                &RecordQuery {
                    tenant: None,
                    statuses: vec![
                        WorkflowState::Running.as_str().into(),
                        workflow::STATUS_CANCELLING.into(),
                    ],
                    after,
                    limit: Some(limit),
                },
            )
            .await
    }

    /// Whether any workflow is still to drive (one short read).
    async fn any_running_workflow(&self) -> Result<bool> {
        Ok(!self.unfinished_workflows(None, 1).await?.is_empty())
    }

    /// One pass over the active workflows: all of them, or (`all` false, the
    /// background driver) those of this driver's partitions and the fresh ones;
    /// the others are left to their partition's driver.
    pub(crate) async fn drive_active(&self, all: bool) -> Result<usize> {
        let started = std::time::Instant::now();
        let ids: Vec<WorkflowId> = {
            let w = &self.inner.workflows;
            let mut active = w.active.lock();
            let mut fresh = w.fresh.lock();
            if !all {
                active.retain(|id| w.partitions.drives(*id) || fresh.contains(id));
            }
            fresh.clear();
            active.iter().copied().collect()
        };
        let driven = ids.len() as u64;
        let mut running = 0;
        let mut first_error = None;
        for id in ids {
            match self.drive_workflow(id).await {
                Ok(state) if !state.is_terminal() => running += 1,
                Ok(_) => {
                    self.inner.workflows.active.lock().remove(&id);
                }
                Err(Error::NotFound { .. }) => {
                    self.inner.workflows.active.lock().remove(&id);
                }
                Err(e) => {
                    running += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        {
            let took = started.elapsed();
            let mut stats = self.inner.workflows.stats.lock();
            stats.passes += 1;
            stats.last_driven = driven;
            stats.last_pass = took;
            stats.longest_pass = stats.longest_pass.max(took);
            stats.partitions = self.inner.workflows.partitions.held();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(running),
        }
    }

    /// One pass over one workflow; retries lost compare-and-set races.
    async fn drive_workflow(&self, id: WorkflowId) -> Result<WorkflowState> {
        let store = &self.inner.store;
        for _ in 0..CAS_RETRIES {
            let Some(rec) = store.get_record(RECORD_KIND, &id.to_string()).await? else {
                return Err(Error::not_found("workflow", id));
            };
            let mut body = decode(&rec)?;
            let cancelled = body.state == WorkflowState::Cancelled;
            if body.state.is_terminal() && !cancelled {
                return Ok(body.state);
            }
            let ids: Vec<_> = body
                .steps
                .iter()
                .filter(|s| s.state == StepState::Running || cancelled)
                .flat_map(|s| s.tasks.iter().copied())
                .collect();
            let tasks: FxHashMap<_, _> = store
                .get_tasks(&ids)
                .await?
                .into_iter()
                .map(|t| (t.id, t))
                .collect();
            if cancelled {
                if rec.status != workflow::STATUS_CANCELLING {
                    return Ok(WorkflowState::Cancelled);
                }
                let live: Vec<_> = tasks
                    .values()
                    .filter(|t| !t.state.is_terminal())
                    .map(|t| t.id)
                    .collect();
                let by = body
                    .cancelled
                    .as_ref()
                    .map_or_else(|| body.owner.principal.clone(), |c| c.by.clone());
                if !self.cancel_tasks(by, "workflow cancelled", live).await {
                    // Still cancelling: stays active, tried again next pass.
                    return Ok(WorkflowState::Running);
                }
                match self
                    .mark_cancelled(id, &rec.tenant, rec.version, &body)
                    .await
                {
                    Ok(()) => return Ok(WorkflowState::Cancelled),
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let now = self.inner.clock.now();
            let plan = workflow::plan(&mut body, &tasks, &self.inner.config.workflow_limits, now);
            if plan.changed {
                let mut events = Vec::with_capacity(plan.events.len());
                for e in &plan.events {
                    events.push(encode(e)?);
                }
                let write = RecordWrite {
                    kind: RECORD_KIND.into(),
                    id: id.to_string(),
                    tenant: rec.tenant.clone(),
                    expected_version: rec.version,
                    status: body.state.as_str().into(),
                    body: encode(&body)?,
                    events,
                    now,
                };
                match store.write_record(write).await {
                    Ok(_) => {}
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            if !plan.submit.is_empty() {
                let submitted: Vec<_> = plan.submit.iter().map(|t| t.id).collect();
                store.submit(plan.submit, now).await?;
                self.recheck_cancelled(id, submitted).await;
            }
            return Ok(body.state);
        }
        Err(Error::Conflict {
            message: format!("workflow {id}: lost {CAS_RETRIES} races in a row"),
        })
    }

    /// Tells the driver that something it may be waiting for happened.
    pub(crate) fn wake_workflows(&self) {
        self.inner.workflows.wake.notify_one();
    }
}

/// The driver's shared state in one engine.
#[derive(Debug, Default)]
pub(crate) struct Workflows {
    pub(crate) active: parking_lot::Mutex<FxHashSet<WorkflowId>>,
    /// Submitted or cancelled here: driven once by this process whoever
    /// holds their partition (their first steps start without waiting for
    /// the owner's next scan).
    pub(crate) fresh: parking_lot::Mutex<FxHashSet<WorkflowId>>,
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) partitions: Partitions,
    pub(crate) stats: parking_lot::Mutex<DriverStats>,
}

/// What this engine's background workflow driver did (for metrics and
/// benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverStats {
    /// Workflow partitions this driver holds (of [`super::partitions::PARTITIONS`]).
    pub partitions: u32,
    /// Passes so far.
    pub passes: u64,
    /// Workflows driven by the last pass.
    pub last_driven: u64,
    /// How long the last pass took.
    #[serde(with = "humantime_serde")]
    pub last_pass: std::time::Duration,
    /// The longest pass so far.
    #[serde(with = "humantime_serde")]
    pub longest_pass: std::time::Duration,
}

/// The background driver: a pass whenever woken (a task ended, a workflow was
/// submitted) and at least every `workflow_poll`; a scan of the store for
/// running workflows (restarts, other processes) every `workflow_scan`.
pub(super) async fn run(hive: Hive) {
    let poll = hive.config().workflow_poll;
    let scan_every = hive.config().workflow_scan;
    let stop = hive.shutdown_token().clone();
    let lease = scan_every * LEASE_SCANS;
    let mut last_scan: Option<tokio::time::Instant> = None;
    loop {
        if last_scan.is_none_or(|t| t.elapsed() >= scan_every) {
            let store = hive.store();
            let now = hive.inner.clock.now();
            // No leases while there is nothing to drive: a host that runs
            // only tasks writes no lease records, and a driver whose
            // workflows all ended gives its partitions back.
            let partitions = &hive.inner.workflows.partitions;
            let scanned = match hive.any_running_workflow().await {
                Ok(true) => match partitions.balance(&**store, now, lease).await {
                    Ok(_) => hive.scan_workflows(false).await,
                    Err(e) => Err(e),
                },
                Ok(false) => {
                    if partitions.held() > 0 {
                        partitions.release(&**store, now).await;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
            match scanned {
                Ok(()) => last_scan = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "workflow scan failed; retrying"),
            }
        }
        if let Err(e) = hive.drive_active(false).await {
            tracing::warn!(error = %e, "workflow driver pass failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = hive.inner.workflows.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    // Another process takes over at its next scan instead of after the lease.
    let now = hive.inner.clock.now();
    hive.inner
        .workflows
        .partitions
        .release(&**hive.store(), now)
        .await;
    tracing::debug!("workflow driver stopped");
}

/// A workflow's events after an offset: replayed, then live. Ends after the
/// `Finished` event.
#[derive(Debug)]
pub struct WorkflowSubscription {
    hive: Hive,
    id: WorkflowId,
    replay: Replay<WorkflowEvent>,
}

impl WorkflowSubscription {
    /// The seq of the last event handed out.
    pub fn position(&self) -> u64 {
        self.replay.after
    }

    /// The next event; `None` after the terminal one.
    pub async fn next(&mut self) -> Option<Result<WorkflowEvent>> {
        loop {
            if let Some(ev) = self.replay.pop() {
                return Some(Ok(ev));
            }
            if self.replay.done {
                return None;
            }
            let after = self.replay.after;
            let store = self.hive.store();
            let key = self.id.to_string();
            match store
                .read_record_events(RECORD_KIND, &key, after, 512)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        let kind = match serde_json::from_value::<WorkflowEventKind>(e.body) {
                            Ok(k) => k,
                            Err(err) => {
                                return Some(Err(Error::Backend {
                                    message: format!(
                                        "workflow {key} event {} is unreadable: {err}",
                                        e.seq
                                    ),
                                    source: Some(Box::new(err)),
                                }));
                            }
                        };
                        self.replay.buffer.push_back(WorkflowEvent {
                            workflow: self.id,
                            seq: e.seq,
                            at: e.at,
                            kind,
                        });
                    }
                }
                Ok(_) => {
                    if self.hive.is_shut_down() {
                        return Some(Err(Error::Shutdown));
                    }
                    let poll = self.hive.config().subscription_poll;
                    if let Err(e) = store
                        .wait_for_record_events(RECORD_KIND, &key, after, poll)
                        .await
                    {
                        return Some(Err(e));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Up to `max` events: the next one (waiting for it), then those already
    /// read ahead; `None` after the `Finished` event.
    pub async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<WorkflowEvent>>> {
        let first = match self.next().await? {
            Ok(ev) => ev,
            Err(e) => return Some(Err(e)),
        };
        let mut out = vec![first];
        self.replay.drain_into(&mut out, max);
        Some(Ok(out))
    }

    /// Collects every remaining event, until the terminal one.
    pub async fn collect(mut self) -> Result<Vec<WorkflowEvent>> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await {
            out.push(ev?);
        }
        Ok(out)
    }
}
