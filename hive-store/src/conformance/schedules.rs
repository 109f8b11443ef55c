//! Schedules: slots fire exactly once (also with several engines on one store
//! and across a crash mid-fire), overlap policies, catch-up, the lifecycle.

use hive_core::clock::Timestamp;
use hive_core::store::RecordWrite;
use hive_core::{
    Calendar, CatchUp, OverlapPolicy, ScheduleQuery, ScheduleSpec, ScheduleStatus, WorkflowSpec,
};

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

fn every_minute(id: &str, agent: &str) -> ScheduleSpec {
    ScheduleSpec::task(id, Calendar::every(MINUTE), spec(agent))
}

/// Tasks of `tenant`'s principal `p` for `agent`, oldest first.
async fn tasks_of(h: &Harness, p: &Principal, agent: &str) -> Vec<hive_core::Task> {
    let q = TaskQuery {
        agent: Some(agent.into()),
        limit: Some(1000),
        ..TaskQuery::default()
    };
    h.hive.list_tasks(p, &q).await.unwrap().items
}

/// Moves to the start of the next minute (slots are on whole minutes).
fn align(h: &Harness) {
    let now = h.clock.now().as_millis();
    let next = (now / 60_000 + 1) * 60_000;
    h.clock.advance(Duration::from_millis((next - now) as u64));
}

/// Each slot fires once, with the slot in the task's idempotency key, even
/// with three engines on one store passing over the schedules at once; the
/// counters, the last fires and the next fire time say what happened.
pub async fn schedule_slots_fire_exactly_once_across_engines(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    align(&h);
    let others: Vec<Hive> = (0..2)
        .map(|_| {
            Hive::builder()
                .store(store.clone())
                .clock(h.clock.clone())
                .config(HiveConfig {
                    run_supervisor: false,
                    run_workflows: false,
                    ..HiveConfig::default()
                })
                .build()
                .unwrap()
        })
        .collect();
    let created = h
        .hive
        .create_schedule(
            &alice(),
            every_minute("tick", "ticker").overlap(OverlapPolicy::AllowAll),
        )
        .await
        .unwrap();
    let t0 = h.clock.now();
    assert_eq!(created.status, ScheduleStatus::Active);
    assert_eq!(
        created.next_fire,
        Some(t0),
        "an interval slot at creation time is due at once"
    );
    let system = h.system.clone();
    for minute in 0..20 {
        let (a, b, c) = tokio::join!(
            h.hive.run_schedules(&system),
            others[0].run_schedules(&system),
            others[1].run_schedules(&system),
        );
        let fired = a.unwrap().fired + b.unwrap().fired + c.unwrap().fired;
        assert_eq!(
            fired, 1,
            "minute {minute}: exactly one engine fires the slot"
        );
        h.clock.advance(MINUTE);
    }
    let tasks = tasks_of(&h, &alice(), "ticker").await;
    assert_eq!(tasks.len(), 20, "one task per slot");
    let mut keys: Vec<String> = tasks
        .iter()
        .map(|t| t.spec.idempotency_key.clone().unwrap())
        .collect();
    keys.dedup();
    assert_eq!(keys.len(), 20);
    for (k, t) in tasks.iter().enumerate() {
        let slot = t0.as_millis() + k as i64 * 60_000;
        assert!(
            t.spec
                .idempotency_key
                .as_ref()
                .unwrap()
                .ends_with(&format!(":{slot}")),
            "the key names the slot: {:?}",
            t.spec.idempotency_key
        );
        assert_eq!(t.owner.principal, alice().id, "fires act as the owner");
    }
    let s = h.hive.get_schedule(&alice(), "tick").await.unwrap();
    assert_eq!(s.record.fired, 20);
    assert_eq!(s.record.recent.len(), 10, "the last 10 fires are kept");
    assert_eq!(
        s.record.recent.last().unwrap().target,
        tasks.last().unwrap().id.to_string()
    );
    assert_eq!(s.next_fire, Some(h.clock.now()));
    assert_eq!(
        h.hive.upcoming_fires(&alice(), "tick", 3).await.unwrap(),
        vec![
            h.clock.now(),
            Timestamp::from_millis(h.clock.now().as_millis() + 60_000),
            Timestamp::from_millis(h.clock.now().as_millis() + 120_000),
        ]
    );
    // Another tenant sees nothing of it.
    assert!(matches!(
        h.hive.get_schedule(&carol(), "tick").await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        h.hive
            .list_schedules(&carol(), &ScheduleQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Rewrites schedule record `rid` as a crashed process would have left it.
async fn edit_record(
    h: &Harness,
    rid: &str,
    edit: impl FnOnce(&mut hive_core::schedule::ScheduleRecord),
) {
    let store = h.hive.store();
    let r = store.get_record("schedule", rid).await.unwrap().unwrap();
    let mut body: hive_core::schedule::ScheduleRecord =
        serde_json::from_value(r.body.clone()).unwrap();
    edit(&mut body);
    store
        .write_record(RecordWrite {
            kind: "schedule".into(),
            id: rid.to_owned(),
            tenant: r.tenant.clone(),
            expected_version: r.version,
            status: r.status.clone(),
            body: serde_json::to_value(&body).unwrap(),
            events: Vec::new(),
            now: h.clock.now(),
        })
        .await
        .unwrap();
}

/// A process that decided a fire and crashed before (or after) submitting
/// it: the next pass completes the fire with the decided task id, and never
/// submits a second task for the slot.
pub async fn a_fire_interrupted_by_a_crash_completes_once(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    align(&h);
    h.hive
        .create_schedule(&alice(), every_minute("crashy", "crash-agent"))
        .await
        .unwrap();
    // What a crashed process leaves: the decision stored, nothing submitted.
    let rid = hive_core::schedule::record_id(&alice().tenant, "crashy");
    let target = TaskId::new();
    edit_record(&h, &rid, |body| {
        let slot = body.next_slot.unwrap();
        body.in_flight = Some(hive_core::ScheduleFire {
            slot,
            target: target.to_string(),
            manual: false,
            cancel: None,
        });
        body.fired = 1;
        body.next_slot = Some(Timestamp::from_millis(slot.as_millis() + 60_000));
    })
    .await;
    let report = h.hive.run_schedules(&h.system).await.unwrap();
    assert_eq!(report.fired, 0, "the slot was decided before the crash");
    let tasks = tasks_of(&h, &alice(), "crash-agent").await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, target, "the decided id is the one submitted");
    // Crash after the submit, before the record says so: the pass submits
    // again, gets the same task back, and records it.
    edit_record(&h, &rid, |body| {
        body.in_flight = Some(body.recent.pop().unwrap())
    })
    .await;
    h.hive.run_schedules(&h.system).await.unwrap();
    assert_eq!(tasks_of(&h, &alice(), "crash-agent").await.len(), 1);
    let s = h.hive.get_schedule(&alice(), "crashy").await.unwrap();
    assert!(s.record.in_flight.is_none());
    assert_eq!(s.record.fired, 1);
    assert_eq!(s.record.recent.last().unwrap().target, target.to_string());
}

/// Each overlap policy with a previous fire that never ends (no worker).
pub async fn schedule_overlap_policies(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    align(&h);
    for (id, policy) in [
        ("skip", OverlapPolicy::Skip),
        ("buffer", OverlapPolicy::BufferOne),
        ("cancel", OverlapPolicy::CancelPrevious),
        ("all", OverlapPolicy::AllowAll),
    ] {
        h.hive
            .create_schedule(
                &alice(),
                every_minute(id, &format!("ov-{id}")).overlap(policy),
            )
            .await
            .unwrap();
    }
    for _ in 0..3 {
        h.hive.run_schedules(&h.system).await.unwrap();
        h.clock.advance(MINUTE);
    }
    let states =
        |tasks: &[hive_core::Task]| -> Vec<TaskState> { tasks.iter().map(|t| t.state).collect() };
    let get = |id: &'static str| {
        let h = &h;
        async move { h.hive.get_schedule(&alice(), id).await.unwrap() }
    };
    // skip: the first fires, the next two are skipped while it runs.
    let s = get("skip").await;
    assert_eq!((s.record.fired, s.record.skipped), (1, 2));
    assert_eq!(tasks_of(&h, &alice(), "ov-skip").await.len(), 1);
    // allow_all: all three.
    let s = get("all").await;
    assert_eq!((s.record.fired, s.record.skipped), (3, 0));
    assert_eq!(
        states(&tasks_of(&h, &alice(), "ov-all").await),
        vec![TaskState::Pending; 3]
    );
    // cancel_previous: each fire cancels the one before.
    let s = get("cancel").await;
    assert_eq!(s.record.fired, 3);
    assert_eq!(
        states(&tasks_of(&h, &alice(), "ov-cancel").await),
        vec![
            TaskState::Cancelled,
            TaskState::Cancelled,
            TaskState::Pending
        ]
    );
    // buffer_one: the second slot waits, the third is skipped; when the
    // first ends, the waiting one fires.
    let s = get("buffer").await;
    assert_eq!((s.record.fired, s.record.skipped), (1, 1));
    let waiting = s.record.buffered.expect("the second slot waits");
    let first = tasks_of(&h, &alice(), "ov-buffer").await;
    assert_eq!(first.len(), 1);
    h.hive
        .cancel(&alice(), first[0].id, "done with it")
        .await
        .unwrap();
    h.hive.run_schedules(&h.system).await.unwrap();
    let s = get("buffer").await;
    assert_eq!(
        s.record.fired, 2,
        "the buffered slot fired when the first ended"
    );
    assert_eq!(s.record.recent[1].slot, waiting, "as the slot it buffered");
    let tasks = tasks_of(&h, &alice(), "ov-buffer").await;
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks[1]
            .spec
            .idempotency_key
            .as_ref()
            .unwrap()
            .ends_with(&waiting.as_millis().to_string())
    );
    // The slot due now waits behind the new fire.
    assert!(s.record.buffered.is_some());
}

/// After a simulated outage of an hour: a window fires the slots it still
/// covers and counts the rest as missed; `latest` fires one.
pub async fn schedule_catch_up_after_an_outage(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    align(&h);
    h.hive
        .create_schedule(
            &alice(),
            every_minute("window", "cu-window")
                .overlap(OverlapPolicy::AllowAll)
                .catch_up(CatchUp::Window(Duration::from_secs(600))),
        )
        .await
        .unwrap();
    h.hive
        .create_schedule(
            &alice(),
            every_minute("latest", "cu-latest")
                .overlap(OverlapPolicy::AllowAll)
                .catch_up(CatchUp::Latest),
        )
        .await
        .unwrap();
    let t0 = h.clock.now();
    h.clock.advance(Duration::from_secs(3600));
    h.hive.run_schedules(&h.system).await.unwrap();
    // Slots t0, t0+1m … t0+60m are due: 61. The window keeps t0+50m … t0+60m.
    let s = h.hive.get_schedule(&alice(), "window").await.unwrap();
    assert_eq!((s.record.fired, s.record.missed), (11, 50));
    let tasks = tasks_of(&h, &alice(), "cu-window").await;
    assert_eq!(tasks.len(), 11);
    let first_key = tasks[0].spec.idempotency_key.clone().unwrap();
    assert!(first_key.ends_with(&(t0.as_millis() + 50 * 60_000).to_string()));
    let s = h.hive.get_schedule(&alice(), "latest").await.unwrap();
    assert_eq!((s.record.fired, s.record.missed), (1, 60));
    let tasks = tasks_of(&h, &alice(), "cu-latest").await;
    assert_eq!(tasks.len(), 1);
    assert!(
        tasks[0]
            .spec
            .idempotency_key
            .as_ref()
            .unwrap()
            .ends_with(&(t0.as_millis() + 60 * 60_000).to_string())
    );
    assert_eq!(
        s.next_fire,
        Some(Timestamp::from_millis(t0.as_millis() + 61 * 60_000))
    );
}

/// Pause, resume, update, trigger, delete and re-create, an end by count
/// and by time, a workflow action, and bad specs refused with the field.
pub async fn schedule_lifecycle(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    align(&h);
    h.hive
        .create_schedule(&alice(), every_minute("life", "life-agent"))
        .await
        .unwrap();
    assert!(matches!(
        h.hive
            .create_schedule(&alice(), every_minute("life", "life-agent"))
            .await,
        Err(Error::Conflict { .. })
    ));
    h.hive.run_schedules(&h.system).await.unwrap();
    let paused = h
        .hive
        .pause_schedule(&alice(), "life", Some("maintenance".into()))
        .await
        .unwrap();
    assert_eq!(paused.status, ScheduleStatus::Paused);
    assert_eq!(paused.next_fire, None);
    assert_eq!(paused.record.spec.note.as_deref(), Some("maintenance"));
    h.clock.advance(Duration::from_secs(600));
    let r = h.hive.run_schedules(&h.system).await.unwrap();
    assert_eq!(r.fired, 0, "a paused schedule does not fire");
    // A manual trigger works while paused and does not count as a fire.
    let fire = h.hive.trigger_schedule(&alice(), "life").await.unwrap();
    assert!(fire.manual);
    let tasks = tasks_of(&h, &alice(), "life-agent").await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[1].id.to_string(), fire.target);
    let resumed = h.hive.resume_schedule(&alice(), "life").await.unwrap();
    assert_eq!(resumed.status, ScheduleStatus::Active);
    assert_eq!(
        resumed.next_fire,
        Some(h.clock.now()),
        "resumes at the first slot from now; the pause is not caught up"
    );
    assert!(matches!(
        h.hive.resume_schedule(&alice(), "life").await,
        Err(Error::Conflict { .. })
    ));
    // Update: a new calendar, counters kept.
    let updated = h
        .hive
        .update_schedule(
            &alice(),
            ScheduleSpec::task("life", Calendar::cron("*/5 * * * *"), spec("life-agent")),
        )
        .await
        .unwrap();
    assert_eq!(updated.record.fired, 1);
    assert_eq!(updated.record.triggered, 1);
    let next = updated.next_fire.unwrap().as_millis();
    assert_eq!(next % 300_000, 0, "on a five-minute boundary");
    // Delete, then the id is free again.
    h.hive.delete_schedule(&alice(), "life").await.unwrap();
    assert!(matches!(
        h.hive.get_schedule(&alice(), "life").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.delete_schedule(&alice(), "life").await,
        Err(Error::NotFound { .. })
    ));
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.hive.run_schedules(&h.system).await.unwrap().fired, 0);
    let again = h
        .hive
        .create_schedule(
            &alice(),
            every_minute("life", "life-agent")
                .overlap(OverlapPolicy::AllowAll)
                .max_fires(2),
        )
        .await
        .unwrap();
    assert_eq!(again.record.fired, 0);
    for _ in 0..4 {
        h.hive.run_schedules(&h.system).await.unwrap();
        h.clock.advance(MINUTE);
    }
    let s = h.hive.get_schedule(&alice(), "life").await.unwrap();
    assert_eq!(s.status, ScheduleStatus::Completed, "after max_fires");
    assert_eq!(s.record.fired, 2);
    assert_eq!(tasks_of(&h, &alice(), "life-agent").await.len(), 4);
    // An end time.
    let end = Timestamp::from_millis(h.clock.now().as_millis() + 150_000);
    h.hive
        .create_schedule(
            &alice(),
            every_minute("ends", "end-agent")
                .overlap(OverlapPolicy::AllowAll)
                .end_at(end),
        )
        .await
        .unwrap();
    assert_eq!(
        h.hive
            .upcoming_fires(&alice(), "ends", 10)
            .await
            .unwrap()
            .len(),
        3,
        "upcoming stops at the end time"
    );
    for _ in 0..5 {
        h.hive.run_schedules(&h.system).await.unwrap();
        h.clock.advance(MINUTE);
    }
    let s = h.hive.get_schedule(&alice(), "ends").await.unwrap();
    assert_eq!((s.status, s.record.fired), (ScheduleStatus::Completed, 3));
    // A workflow action.
    let wf: WorkflowSpec = serde_json::from_value(json!({
        "name": "nightly",
        "steps": [{"id": "a", "agent": "wf-agent"}, {"id": "b", "agent": "wf-agent", "depends_on": ["a"]}]
    }))
    .unwrap();
    h.hive
        .create_schedule(
            &alice(),
            ScheduleSpec::workflow("wf", Calendar::every(MINUTE), wf),
        )
        .await
        .unwrap();
    h.hive.run_schedules(&h.system).await.unwrap();
    let s = h.hive.get_schedule(&alice(), "wf").await.unwrap();
    assert_eq!(s.record.fired, 1);
    let id: hive_core::WorkflowId = s.record.recent[0].target.parse().unwrap();
    let view = h.hive.get_workflow(&alice(), id).await.unwrap();
    assert_eq!(view.name, "nightly");
    // The listing: every live schedule of the tenant, by id.
    let ids: Vec<String> = h
        .hive
        .list_schedules(&alice(), &ScheduleQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec!["ends", "life", "wf"]);
    let active: Vec<String> = h
        .hive
        .list_schedules(
            &alice(),
            &ScheduleQuery {
                statuses: vec![ScheduleStatus::Active],
                ..ScheduleQuery::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(active, vec!["wf"]);
    // Bad specs name the field; nothing is stored.
    let bad = |s: ScheduleSpec| {
        let h = &h;
        async move {
            match h.hive.create_schedule(&alice(), s).await {
                Err(Error::InvalidSpec { field, .. }) => field,
                other => panic!("expected InvalidSpec, got {other:?}"),
            }
        }
    };
    assert_eq!(
        bad(ScheduleSpec::task(
            "x",
            Calendar::cron("99 * * * *"),
            spec("a")
        ))
        .await,
        "calendar.expr"
    );
    assert_eq!(
        bad(ScheduleSpec::task(
            "x",
            Calendar::cron_in("* * * * *", "Nowhere/City"),
            spec("a")
        ))
        .await,
        "calendar.timezone"
    );
    assert_eq!(bad(every_minute("has space", "a")).await, "id");
    assert_eq!(bad(every_minute("x", "")).await, "action.task.agent");
    assert_eq!(
        bad(ScheduleSpec::task(
            "x",
            Calendar::every(MINUTE),
            spec("a").idempotency_key("k")
        ))
        .await,
        "action.task.idempotency_key"
    );
    assert_eq!(bad(every_minute("x", "a").max_fires(0)).await, "max_fires");
    assert_eq!(
        bad(every_minute("x", "a").jitter(Duration::from_secs(2 * 86_400))).await,
        "jitter"
    );
    assert!(matches!(
        h.hive.get_schedule(&alice(), "x").await,
        Err(Error::NotFound { .. })
    ));
}
