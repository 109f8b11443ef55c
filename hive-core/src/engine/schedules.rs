//! Schedules: create, read, change, pause, resume, delete, trigger, and the
//! pass that fires due slots (run by the supervisor in every process; each
//! decision is a compare-and-set on the schedule's record, so every slot is
//! decided once however many processes run it). See [`crate::schedule`].

use super::*;

use crate::clock::Timestamp;
use crate::schedule::{
    self, Decision, OverlapPolicy, Schedule, ScheduleAction, ScheduleFire, ScheduleQuery,
    ScheduleRecord, ScheduleReport, ScheduleSpec, ScheduleStatus,
};
use crate::store::{Record, RecordQuery, RecordWrite};
use crate::workflow::{self as wf, WorkflowId};

/// Decisions one pass makes for one schedule before it moves on (the rest
/// waits for the next pass, so a schedule far behind never pins the pass).
const MAX_STEPS_PER_PASS: usize = 256;

/// Compare-and-set rounds of an API change before it gives up as `Conflict`.
const MAX_ROUNDS: usize = 16;

fn decode(r: &Record) -> Result<ScheduleRecord> {
    serde_json::from_value(r.body.clone()).map_err(|e| Error::Backend {
        message: format!("schedule record {} is unreadable: {e}", r.id),
        source: None,
    })
}

fn encode(body: &ScheduleRecord) -> Result<serde_json::Value> {
    serde_json::to_value(body).map_err(|e| Error::Backend {
        message: format!("cannot encode a schedule: {e}"),
        source: None,
    })
}

/// The compare-and-set write of schedule record `r` (at `version`) with a
/// new status, body and events.
fn rewrite(
    r: &Record,
    version: u64,
    status: &str,
    body: &ScheduleRecord,
    events: Vec<serde_json::Value>,
    now: Timestamp,
) -> Result<RecordWrite> {
    Ok(RecordWrite {
        kind: schedule::RECORD_KIND.into(),
        id: r.id.clone(),
        tenant: r.tenant.clone(),
        expected_version: version,
        status: status.into(),
        body: encode(body)?,
        events,
        now,
    })
}

fn status_of(r: &Record) -> Result<ScheduleStatus> {
    r.status.parse().map_err(|_| Error::Backend {
        message: format!("schedule record {} has status {:?}", r.id, r.status),
        source: None,
    })
}

fn view(r: &Record, body: ScheduleRecord) -> Result<Schedule> {
    let status = status_of(r)?;
    let next_fire = match status {
        ScheduleStatus::Active => body
            .buffered
            .or(body.next_slot)
            .map(|s| body.spec.fire_time(s)),
        _ => None,
    };
    Ok(Schedule {
        id: body.spec.id.clone(),
        tenant: r.tenant.clone(),
        status,
        next_fire,
        created_at: r.created_at,
        updated_at: r.updated_at,
        version: r.version,
        record: body,
    })
}

/// The first slot to decide from `now` on: not before `start_at`, after the
/// last slot already decided, not after `end_at`.
fn first_slot(
    spec: &ScheduleSpec,
    slots: &schedule::Slots,
    now: Timestamp,
    last: Option<Timestamp>,
) -> Option<Timestamp> {
    let from = spec.start_at.map_or(now, |s| s.max(now));
    let mut next = slots.at_or_after(from)?;
    if let Some(last) = last
        && next <= last
    {
        next = slots.after(last)?;
    }
    within_end(spec, Some(next))
}

fn within_end(spec: &ScheduleSpec, slot: Option<Timestamp>) -> Option<Timestamp> {
    slot.filter(|s| spec.end_at.is_none_or(|e| *s <= e))
}

fn last_calendar_slot(body: &ScheduleRecord) -> Option<Timestamp> {
    body.recent.iter().rev().find(|f| !f.manual).map(|f| f.slot)
}

/// What an API change does to a schedule record.
enum Change {
    Replace(Box<ScheduleSpec>),
    Pause(Option<String>),
    Resume,
    Delete,
}

impl Change {
    fn name(&self) -> &'static str {
        match self {
            Change::Replace(_) => "update",
            Change::Pause(_) => "pause",
            Change::Resume => "resume",
            Change::Delete => "delete",
        }
    }
}

impl Hive {
    /// Creates a schedule owned by `p` (its fires act as `p`, with `p`'s
    /// scopes as they are now). A privileged action: audited, allowed or
    /// not. The spec is validated first (`InvalidSpec` names the field, e.g.
    /// `calendar.expr`, `action.task.agent`); an id in use in the tenant is
    /// `Conflict` (a deleted schedule's id may be reused).
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant, schedule = %spec.id))]
    pub async fn create_schedule(&self, p: &Principal, spec: ScheduleSpec) -> Result<Schedule> {
        self.check_live()?;
        let slots = self
            .authorize_checked(
                p,
                Action::ManageSchedule,
                &Resource::Tenant(p.tenant.clone()),
                || serde_json::json!({ "schedule": spec.id, "op": "create" }),
                || self.check_schedule(p, &spec),
            )
            .await?;
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let rid = schedule::record_id(&p.tenant, &spec.id);
        let mut generation = now.as_millis();
        let mut expected = 0;
        if let Some(old) = store.get_record(schedule::RECORD_KIND, &rid).await? {
            if status_of(&old)? != ScheduleStatus::Deleted {
                return Err(Error::Conflict {
                    message: format!("schedule {:?} already exists", spec.id),
                });
            }
            // Re-creating a deleted id: a new generation keeps the new
            // slots' keys apart from the old ones.
            expected = old.version;
            let old = decode(&old).map(|b| b.generation).unwrap_or(0);
            generation = generation.max(old + 1);
        }
        let next_slot = first_slot(&spec, &slots, now, None);
        let status = if spec.paused {
            ScheduleStatus::Paused
        } else if next_slot.is_none() {
            ScheduleStatus::Completed
        } else {
            ScheduleStatus::Active
        };
        let body = ScheduleRecord {
            spec,
            owner: p.clone(),
            generation,
            next_slot,
            in_flight: None,
            buffered: None,
            fired: 0,
            skipped: 0,
            missed: 0,
            triggered: 0,
            recent: Vec::new(),
        };
        let write = RecordWrite {
            kind: schedule::RECORD_KIND.into(),
            id: rid.clone(),
            tenant: p.tenant.clone(),
            expected_version: expected,
            status: status.as_str().into(),
            body: encode(&body)?,
            events: vec![serde_json::json!({ "op": "create", "by": p.id })],
            now,
        };
        match store.write_record(write).await {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => {
                return Err(Error::Conflict {
                    message: format!("schedule {:?} already exists", body.spec.id),
                });
            }
            Err(e) => return Err(e),
        }
        self.visible_schedule(p, &body.spec.id)
            .await
            .map(|(s, _)| s)
    }

    fn check_schedule(&self, p: &Principal, spec: &ScheduleSpec) -> Result<schedule::Slots> {
        let slots = spec.validate(&self.inner.config.workflow_limits)?;
        // The longest key a fire uses must fit the stores' record ids.
        let key = format!(
            "hive:schedule:{}:{}:manual:{}",
            i64::MAX,
            spec.id,
            TaskId::new()
        );
        if schedule::record_id(&p.tenant, &spec.id).len() > crate::store::MAX_RECORD_KEY_LEN
            || wf::key_record_id(&p.tenant, &key).len() > crate::store::MAX_RECORD_KEY_LEN
        {
            return Err(Error::invalid_spec(
                "id",
                "too long together with the tenant's name",
            ));
        }
        Ok(slots)
    }

    async fn visible_schedule(&self, p: &Principal, id: &str) -> Result<(Schedule, Record)> {
        schedule::check_id(id)?;
        let rid = schedule::record_id(&p.tenant, id);
        match self
            .inner
            .store
            .get_record(schedule::RECORD_KIND, &rid)
            .await?
        {
            Some(r) if p.can_see_tenant(&r.tenant) && r.status != "deleted" => {
                let body = decode(&r)?;
                Ok((view(&r, body)?, r))
            }
            _ => Err(Error::not_found("schedule", id)),
        }
    }

    /// One schedule of `p`'s tenant: its spec, status, counters, last fires
    /// and next fire time. A missing or deleted one is `NotFound`.
    pub async fn get_schedule(&self, p: &Principal, id: &str) -> Result<Schedule> {
        let (s, _) = self.visible_schedule(p, id).await?;
        self.authorize(p, Action::ReadSchedule, &Resource::Tenant(s.tenant.clone()))
            .await?;
        Ok(s)
    }

    /// A page of `p`'s tenant's schedules, ordered by id.
    pub async fn list_schedules(
        &self,
        p: &Principal,
        query: &ScheduleQuery,
    ) -> Result<Vec<Schedule>> {
        self.authorize(p, Action::ReadSchedule, &Resource::Tenant(p.tenant.clone()))
            .await?;
        let statuses = if query.statuses.is_empty() {
            vec!["active".into(), "paused".into(), "completed".into()]
        } else {
            query.statuses.iter().map(|s| s.as_str().into()).collect()
        };
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        if let Some(after) = &query.after {
            schedule::check_id(after)?;
        }
        let records = self
            .inner
            .store
            .list_records(
                schedule::RECORD_KIND,
                &RecordQuery {
                    tenant: Some(p.tenant.clone()),
                    statuses,
                    after: query
                        .after
                        .as_ref()
                        .map(|a| schedule::record_id(&p.tenant, a)),
                    limit: Some(limit),
                },
            )
            .await?;
        records
            .iter()
            .map(|r| view(r, decode(r)?))
            .collect::<Result<Vec<_>>>()
    }

    /// Replaces a schedule's spec (same id), keeping its counters and last
    /// fires; its next slot is computed again from now. The new owner is `p`.
    pub async fn update_schedule(&self, p: &Principal, spec: ScheduleSpec) -> Result<Schedule> {
        self.check_live()?;
        self.authorize_checked(
            p,
            Action::ManageSchedule,
            &Resource::Tenant(p.tenant.clone()),
            || serde_json::json!({ "schedule": spec.id, "op": "update" }),
            || self.check_schedule(p, &spec).map(|_| ()),
        )
        .await?;
        let id = spec.id.clone();
        self.change_schedule(p, &id, Change::Replace(Box::new(spec)))
            .await
    }

    /// Pauses a schedule: no slot fires until it is resumed (slots of the
    /// pause are not caught up). `note` says why.
    pub async fn pause_schedule(
        &self,
        p: &Principal,
        id: &str,
        note: Option<String>,
    ) -> Result<Schedule> {
        self.manage(p, id, "pause", || {
            if let Some(n) = &note {
                crate::principal::check_text("note", n, ScheduleSpec::MAX_NOTE_LEN, true)?;
            }
            Ok(())
        })
        .await?;
        self.change_schedule(p, id, Change::Pause(note)).await
    }

    /// Resumes a paused schedule from the first slot after now.
    pub async fn resume_schedule(&self, p: &Principal, id: &str) -> Result<Schedule> {
        self.manage(p, id, "resume", || Ok(())).await?;
        self.change_schedule(p, id, Change::Resume).await
    }

    /// Deletes a schedule: it fires no more (what it submitted is left
    /// alone). Its id may be reused.
    pub async fn delete_schedule(&self, p: &Principal, id: &str) -> Result<()> {
        self.manage(p, id, "delete", || Ok(())).await?;
        self.change_schedule(p, id, Change::Delete)
            .await
            .map(|_| ())
    }

    async fn manage(
        &self,
        p: &Principal,
        id: &str,
        op: &str,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.check_live()?;
        self.authorize_checked(
            p,
            Action::ManageSchedule,
            &Resource::Tenant(p.tenant.clone()),
            || serde_json::json!({ "schedule": id, "op": op }),
            || {
                schedule::check_id(id)?;
                check()
            },
        )
        .await
    }

    async fn change_schedule(&self, p: &Principal, id: &str, change: Change) -> Result<Schedule> {
        let store = &self.inner.store;
        for _ in 0..MAX_ROUNDS {
            let (current, r) = self.visible_schedule(p, id).await?;
            let now = self.inner.clock.now();
            let mut body = current.record;
            let mut status = current.status;
            match &change {
                Change::Replace(spec) => {
                    let slots = spec.calendar.compile()?;
                    body.spec = (**spec).clone();
                    body.owner = p.clone();
                    body.next_slot = first_slot(&body.spec, &slots, now, last_calendar_slot(&body));
                    if body.spec.paused {
                        status = ScheduleStatus::Paused;
                    } else {
                        status = if body.next_slot.is_none() {
                            ScheduleStatus::Completed
                        } else {
                            ScheduleStatus::Active
                        };
                    }
                }
                Change::Pause(note) => {
                    if status == ScheduleStatus::Completed {
                        return Err(Error::Conflict {
                            message: format!("schedule {id:?} has completed"),
                        });
                    }
                    status = ScheduleStatus::Paused;
                    body.spec.paused = true;
                    if note.is_some() {
                        body.spec.note = note.clone();
                    }
                }
                Change::Resume => {
                    if status != ScheduleStatus::Paused {
                        return Err(Error::Conflict {
                            message: format!("schedule {id:?} is {}, not paused", status.as_str()),
                        });
                    }
                    let slots = body.spec.calendar.compile()?;
                    body.spec.paused = false;
                    body.buffered = None;
                    body.next_slot = first_slot(&body.spec, &slots, now, last_calendar_slot(&body));
                    status = if body.next_slot.is_none() {
                        ScheduleStatus::Completed
                    } else {
                        ScheduleStatus::Active
                    };
                }
                Change::Delete => status = ScheduleStatus::Deleted,
            }
            let events = vec![serde_json::json!({ "op": change.name(), "by": p.id })];
            let write = rewrite(&r, r.version, status.as_str(), &body, events, now)?;
            match store.write_record(write).await {
                Ok(w) => {
                    let r = Record {
                        status: status.as_str().into(),
                        version: w.version,
                        updated_at: now,
                        ..r
                    };
                    return view(&r, body);
                }
                // A fire decided in between: read again and redo.
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            message: format!("schedule {id:?} kept changing; try again"),
        })
    }

    /// Fires a schedule now, outside its calendar and whatever its overlap
    /// policy (a manual run; not counted against `max_fires`). Returns what
    /// was submitted. A paused schedule may be triggered.
    pub async fn trigger_schedule(&self, p: &Principal, id: &str) -> Result<ScheduleFire> {
        self.manage(p, id, "trigger", || Ok(())).await?;
        let store = &self.inner.store;
        for _ in 0..MAX_ROUNDS {
            let (current, r) = self.visible_schedule(p, id).await?;
            let mut body = current.record;
            if body.in_flight.is_some() {
                // Finish the decided fire first (it is somebody's slot).
                self.drive_schedule(r, self.inner.clock.now(), &mut ScheduleReport::default(), 1)
                    .await?;
                continue;
            }
            let now = self.inner.clock.now();
            let fire = ScheduleFire {
                slot: now,
                target: new_target(&body.spec.action),
                manual: true,
                cancel: None,
            };
            body.in_flight = Some(fire.clone());
            body.triggered += 1;
            let events =
                vec![serde_json::json!({ "op": "trigger", "by": p.id, "target": fire.target })];
            let write = rewrite(&r, r.version, &r.status, &body, events, now)?;
            match store.write_record(write).await {
                Ok(w) => {
                    let target = self.perform_fire(&body, &fire).await?;
                    // Record it done; a conflict means another process
                    // completed it already.
                    let mut done = body.clone();
                    done.in_flight = None;
                    push_recent(
                        &mut done,
                        ScheduleFire {
                            target: target.clone(),
                            ..fire.clone()
                        },
                    );
                    let _ = store
                        .write_record(rewrite(&r, w.version, &r.status, &done, Vec::new(), now)?)
                        .await;
                    return Ok(ScheduleFire { target, ..fire });
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            message: format!("schedule {id:?} kept changing; try again"),
        })
    }

    /// The next `n` fire times of a schedule (its jitter included), from now
    /// or from its start time, up to its end time; empty when it is paused
    /// past its end or completed. At most 1000.
    pub async fn upcoming_fires(
        &self,
        p: &Principal,
        id: &str,
        n: usize,
    ) -> Result<Vec<Timestamp>> {
        let s = self.get_schedule(p, id).await?;
        let slots = s.record.spec.calendar.compile()?;
        let spec = &s.record.spec;
        let mut out = Vec::new();
        let Some(first) = s.record.next_slot else {
            return Ok(out);
        };
        let budget = spec
            .max_fires
            .map_or(usize::MAX, |m| m.saturating_sub(s.record.fired) as usize);
        let mut slot = Some(first);
        while let Some(x) = within_end(spec, slot) {
            if out.len() >= n.min(1000) || out.len() >= budget {
                break;
            }
            out.push(spec.fire_time(x));
            slot = slots.after(x);
        }
        Ok(out)
    }

    /// Fires every due slot of every active schedule, as the supervisor does
    /// each `sweep_interval` (for hosts that run no supervisor, and for
    /// tests on a manual clock). Needs `system.supervise`.
    pub async fn run_schedules(&self, p: &Principal) -> Result<ScheduleReport> {
        self.authorize(p, Action::Supervise, &Resource::System)
            .await?;
        self.run_schedules_inner().await
    }

    pub(crate) async fn run_schedules_inner(&self) -> Result<ScheduleReport> {
        let mut report = ScheduleReport::default();
        let now = self.inner.clock.now();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .list_records(
                    schedule::RECORD_KIND,
                    &RecordQuery {
                        tenant: None,
                        statuses: vec!["active".into()],
                        after: after.clone(),
                        limit: Some(1000),
                    },
                )
                .await?;
            let n = page.len();
            after = page.last().map(|r| r.id.clone());
            for r in page {
                if self.is_shut_down() {
                    return Ok(report);
                }
                let id = r.id.clone();
                if let Err(e) = self
                    .drive_schedule(r, now, &mut report, MAX_STEPS_PER_PASS)
                    .await
                {
                    tracing::warn!(schedule = %id, error = %e, "schedule pass failed; retrying next pass");
                }
            }
            if n < 1000 {
                break;
            }
        }
        if report.fired + report.skipped + report.missed > 0 {
            metrics::counter!("hive_schedule_fires_total").increment(report.fired);
            metrics::counter!("hive_schedule_skips_total").increment(report.skipped);
        }
        Ok(report)
    }

    /// Decides and performs up to `steps` steps of one schedule at `now`.
    async fn drive_schedule(
        &self,
        mut r: Record,
        now: Timestamp,
        report: &mut ScheduleReport,
        steps: usize,
    ) -> Result<()> {
        let store = &self.inner.store;
        for _ in 0..steps {
            let mut step = ScheduleReport::default();
            let mut body = decode(&r)?;
            let mut status = status_of(&r)?;
            let mut events = Vec::new();
            if let Some(fire) = body.in_flight.take() {
                let target = self.perform_fire(&body, &fire).await?;
                push_recent(&mut body, ScheduleFire { target, ..fire });
            } else {
                if status != ScheduleStatus::Active {
                    return Ok(());
                }
                let slots = body.spec.calendar.compile()?;
                if let Some(b) = body.buffered
                    && !self.previous_running(&body).await?
                {
                    body.buffered = None;
                    body.in_flight = Some(ScheduleFire {
                        slot: b,
                        target: new_target(&body.spec.action),
                        manual: false,
                        cancel: None,
                    });
                    body.fired += 1;
                    step.fired += 1;
                } else {
                    match schedule::next_decision(&body, &slots, now) {
                        Decision::Idle => return Ok(()),
                        Decision::Miss { count, next } => {
                            body.missed += count;
                            step.missed += count;
                            body.next_slot = within_end(&body.spec, next);
                        }
                        Decision::Due { slot, next } => {
                            let overlap = body.spec.overlap;
                            let running = overlap != OverlapPolicy::AllowAll
                                && self.previous_running(&body).await?;
                            let fire = |cancel: Option<String>| ScheduleFire {
                                slot,
                                target: new_target(&body.spec.action),
                                manual: false,
                                cancel,
                            };
                            match (overlap, running) {
                                (OverlapPolicy::Skip, true) => {
                                    body.skipped += 1;
                                    step.skipped += 1;
                                }
                                (OverlapPolicy::BufferOne, true) => {
                                    if body.buffered.is_none() {
                                        body.buffered = Some(slot);
                                    } else {
                                        body.skipped += 1;
                                        step.skipped += 1;
                                    }
                                }
                                (OverlapPolicy::CancelPrevious, true) => {
                                    let prev = body.recent.last().map(|f| f.target.clone());
                                    body.in_flight = Some(fire(prev));
                                    body.fired += 1;
                                    step.fired += 1;
                                }
                                _ => {
                                    body.in_flight = Some(fire(None));
                                    body.fired += 1;
                                    step.fired += 1;
                                }
                            }
                            body.next_slot = within_end(&body.spec, next);
                        }
                    }
                    if body.spec.max_fires.is_some_and(|m| body.fired >= m) {
                        body.next_slot = None;
                        body.buffered = None;
                    }
                }
                if body.next_slot.is_none() && body.buffered.is_none() {
                    status = ScheduleStatus::Completed;
                    events.push(serde_json::json!({ "op": "complete" }));
                }
            }
            let write = rewrite(
                &r,
                r.version,
                status.as_str(),
                &body,
                events,
                self.inner.clock.now(),
            )?;
            match store.write_record(write).await {
                Ok(w) => {
                    report.fired += step.fired;
                    report.skipped += step.skipped;
                    report.missed += step.missed;
                    r.version = w.version;
                    r.status = status.as_str().into();
                    r.body = encode(&body)?;
                }
                Err(Error::Conflict { .. }) => {
                    // Another process decided this step; take its result.
                    report.conflicts += 1;
                    match store.get_record(schedule::RECORD_KIND, &r.id).await? {
                        Some(fresh) => r = fresh,
                        None => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        report.more = true;
        Ok(())
    }

    /// Whether the last fire's task or workflow is still running.
    async fn previous_running(&self, body: &ScheduleRecord) -> Result<bool> {
        let Some(last) = body.recent.last() else {
            return Ok(false);
        };
        Ok(match &body.spec.action {
            ScheduleAction::Task(_) => match last.target.parse::<TaskId>() {
                Ok(id) => self
                    .inner
                    .store
                    .get_task(id)
                    .await?
                    .is_some_and(|t| !t.state.is_terminal()),
                Err(_) => false,
            },
            ScheduleAction::Workflow(_) => self
                .inner
                .store
                .get_record(wf::RECORD_KIND, &last.target)
                .await?
                .is_some_and(|r| r.status == "running"),
        })
    }

    /// Submits what a decided fire submits (idempotently: the key is the
    /// schedule's generation and the slot, the id was decided with it) after
    /// cancelling the previous one if asked. Returns the target's id.
    async fn perform_fire(&self, body: &ScheduleRecord, fire: &ScheduleFire) -> Result<String> {
        let owner = &body.owner;
        let key = if fire.manual {
            format!(
                "hive:schedule:{}:{}:manual:{}",
                body.generation, body.spec.id, fire.target
            )
        } else {
            format!(
                "hive:schedule:{}:{}:{}",
                body.generation,
                body.spec.id,
                fire.slot.as_millis()
            )
        };
        let reason = format!("cancelled by schedule {} (cancel_previous)", body.spec.id);
        match &body.spec.action {
            ScheduleAction::Task(template) => {
                if let Some(prev) = fire.cancel.as_ref().and_then(|t| t.parse::<TaskId>().ok()) {
                    match self.cancel(owner, prev, reason).await {
                        Ok(_)
                        | Err(Error::AlreadyTerminal { .. })
                        | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                let id: TaskId = fire.target.parse().map_err(|_| Error::Backend {
                    message: format!("schedule fire target {:?} is not a task id", fire.target),
                    source: None,
                })?;
                self.authorize_with(
                    owner,
                    Action::SubmitTask,
                    &Resource::Tenant(owner.tenant.clone()),
                    || serde_json::json!({ "tasks": 1, "schedule": body.spec.id }),
                )
                .await?;
                let mut spec = template.clone();
                spec.idempotency_key = Some(key);
                let out = self
                    .inner
                    .store
                    .submit(
                        vec![NewTask {
                            id,
                            owner: Owner::from(owner),
                            spec: Arc::new(*spec),
                        }],
                        self.inner.clock.now(),
                    )
                    .await?;
                Ok(out
                    .first()
                    .map_or(fire.target.clone(), |s| s.id.to_string()))
            }
            ScheduleAction::Workflow(template) => {
                if let Some(prev) = fire
                    .cancel
                    .as_ref()
                    .and_then(|t| t.parse::<WorkflowId>().ok())
                {
                    match self.cancel_workflow(owner, prev, reason).await {
                        Ok(()) | Err(Error::Conflict { .. }) | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                let id: WorkflowId = fire.target.parse().map_err(|_| Error::Backend {
                    message: format!(
                        "schedule fire target {:?} is not a workflow id",
                        fire.target
                    ),
                    source: None,
                })?;
                let mut spec = template.clone();
                spec.idempotency_key = Some(key);
                let out = self.submit_workflow_as(owner, spec, id).await?;
                Ok(out.id.to_string())
            }
        }
    }
}

fn new_target(action: &ScheduleAction) -> String {
    match action {
        ScheduleAction::Task(_) => TaskId::new().to_string(),
        ScheduleAction::Workflow(_) => WorkflowId::new().to_string(),
    }
}

fn push_recent(body: &mut ScheduleRecord, fire: ScheduleFire) {
    body.recent.push(fire);
    let extra = body.recent.len().saturating_sub(ScheduleRecord::RECENT);
    body.recent.drain(..extra);
}
