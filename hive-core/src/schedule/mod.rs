//! Schedules: durable records that submit a task or a workflow from a
//! template on a cron calendar (seconds optional, IANA time zones) or a fixed
//! interval.
//!
//! A schedule's time line is a series of **slots** (the calendar's instants).
//! Each slot is decided exactly once, whatever the number of processes that
//! share the store: the decision (fire, skip, buffer, missed) is a
//! compare-and-set on the schedule's record that also advances it to the next
//! slot, and the task a fire submits carries the slot in its idempotency key,
//! so a process that crashes between the two is completed by the next one
//! without a second task. See [`crate::Hive::create_schedule`].
//!
//! | Policy            | When the previous fire's task or workflow is still running |
//! |-------------------|--------------------------------------------------|
//! | `skip` (default)  | the slot is skipped (counted in `skipped`)       |
//! | `buffer_one`      | the slot waits and fires when the previous ends; one slot at most waits, later ones are skipped |
//! | `cancel_previous` | the previous one is cancelled, then the slot fires |
//! | `allow_all`       | the slot fires                                   |
//!
//! Daylight saving time follows Vixie cron (through the `croner` crate): in a
//! spring-forward gap a fixed-time slot (`30 2 * * *`) fires once at the first
//! valid time after the gap and a wildcard one skips the missing times; in a
//! fall-back overlap a fixed-time slot fires once (the first occurrence) and a
//! wildcard one fires for every occurrence.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::principal::{Principal, TenantId};
use crate::task::TaskSpec;
use crate::workflow::WorkflowSpec;

/// The record kind schedules are stored under.
pub const RECORD_KIND: &str = "schedule";

/// The longest schedule id.
pub const MAX_ID_LEN: usize = 128;

/// The most slots one catch-up looks at before it jumps to the window: a
/// long outage of a per-second schedule costs bounded work.
const MAX_MISSED_SCAN: u64 = 10_000;

/// When a schedule's slots are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Calendar {
    /// A cron expression: five fields (minute granularity) or six (seconds
    /// first), names (`MON`, `JAN`), ranges, steps, `L`, `W`, `#`, and the
    /// aliases `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; read
    /// in `timezone` (an IANA name, default `UTC`).
    Cron {
        /// The expression.
        expr: String,
        /// The IANA time zone the expression is read in (`Europe/Berlin`).
        #[serde(default = "utc")]
        timezone: String,
    },
    /// Every `every`, from `anchor` (default the UNIX epoch): the slots are
    /// `anchor + k × every`.
    Interval {
        /// The period (at least 1 s).
        #[serde(with = "humantime_serde")]
        every: Duration,
        /// The instant the slots count from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor: Option<Timestamp>,
    },
}

fn utc() -> String {
    "UTC".into()
}

impl Calendar {
    /// A cron calendar in UTC.
    pub fn cron(expr: impl Into<String>) -> Self {
        Calendar::Cron {
            expr: expr.into(),
            timezone: utc(),
        }
    }

    /// A cron calendar read in an IANA time zone.
    pub fn cron_in(expr: impl Into<String>, timezone: impl Into<String>) -> Self {
        Calendar::Cron {
            expr: expr.into(),
            timezone: timezone.into(),
        }
    }

    /// An interval calendar counted from the UNIX epoch.
    pub fn every(every: Duration) -> Self {
        Calendar::Interval {
            every,
            anchor: None,
        }
    }

    /// Parses the calendar once, for many slot computations.
    pub fn compile(&self) -> Result<Slots> {
        match self {
            Calendar::Cron { expr, timezone } => {
                let tz = jiff::tz::TimeZone::get(timezone).map_err(|e| {
                    Error::invalid_spec(
                        "calendar.timezone",
                        format!("unknown IANA time zone {timezone:?}: {e}"),
                    )
                })?;
                let cron = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build()
                    .parse(expr)
                    .map_err(|e| {
                        Error::invalid_spec(
                            "calendar.expr",
                            format!("not a cron expression ({expr:?}): {e}"),
                        )
                    })?;
                Ok(Slots::Cron(Box::new((cron, tz))))
            }
            Calendar::Interval { every, anchor } => {
                if *every < Duration::from_secs(1) {
                    return Err(Error::invalid_spec("calendar.every", "must be at least 1s"));
                }
                let every = i64::try_from(every.as_millis())
                    .map_err(|_| Error::invalid_spec("calendar.every", "too long"))?;
                Ok(Slots::Interval {
                    every,
                    anchor: anchor.unwrap_or(Timestamp::EPOCH).as_millis(),
                })
            }
        }
    }
}

/// A compiled [`Calendar`]: answers "the first slot after t".
#[derive(Clone, Debug)]
pub enum Slots {
    /// A parsed cron expression and its zone.
    Cron(Box<(croner::Cron, jiff::tz::TimeZone)>),
    /// A fixed period from an anchor, in milliseconds.
    Interval {
        /// The period.
        every: i64,
        /// The first slot (and every `every` before and after it).
        anchor: i64,
    },
}

impl Slots {
    /// The first slot strictly after `t`, if any (a cron expression may
    /// have none, like `0 0 30 2 *`).
    pub fn after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Slots::Interval { every, anchor } => {
                let d = t.as_millis().checked_sub(*anchor)?;
                let k = d.div_euclid(*every) + 1;
                anchor
                    .checked_add(k.checked_mul(*every)?)
                    .map(Timestamp::from_millis)
            }
            Slots::Cron(c) => {
                let (cron, tz) = &**c;
                let ts = jiff::Timestamp::from_millisecond(t.as_millis()).ok()?;
                let zoned = ts.to_zoned(tz.clone());
                let next = cron.find_next_occurrence(&zoned, false).ok()?;
                Some(Timestamp::from_millis(next.timestamp().as_millisecond()))
            }
        }
    }

    /// The last slot at or before `t`, if any.
    pub fn at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Slots::Interval { every, anchor } => {
                let d = t.as_millis().checked_sub(*anchor)?;
                anchor
                    .checked_add(d.div_euclid(*every).checked_mul(*every)?)
                    .map(Timestamp::from_millis)
            }
            Slots::Cron(c) => {
                let (cron, tz) = &**c;
                let ts = jiff::Timestamp::from_millisecond(t.as_millis()).ok()?;
                let zoned = ts.to_zoned(tz.clone());
                let prev = cron.find_previous_occurrence(&zoned, true).ok()?;
                Some(Timestamp::from_millis(prev.timestamp().as_millisecond()))
            }
        }
    }

    /// The first slot at or after `t`.
    pub fn at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.after(Timestamp::from_millis(t.as_millis().saturating_sub(1)))
    }

    /// The next `n` slots after `t`.
    pub fn upcoming(&self, t: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut at = t;
        while out.len() < n {
            match self.after(at) {
                Some(s) => {
                    out.push(s);
                    at = s;
                }
                None => break,
            }
        }
        out
    }
}

/// What a schedule does when a slot comes while the previous fire's task or
/// workflow is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Skip the slot.
    #[default]
    Skip,
    /// Keep one slot waiting and fire it when the previous ends.
    BufferOne,
    /// Cancel the previous one, then fire.
    CancelPrevious,
    /// Fire regardless.
    AllowAll,
}

/// What happens to slots missed while no process ran the schedule (an
/// outage, a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CatchUp {
    /// Fire missed slots that are at most this old when seen (older ones are
    /// counted as `missed`); each still passes the overlap policy.
    Window(#[serde(with = "humantime_serde")] Duration),
    /// Fire only the latest missed slot.
    Latest,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp::Window(Duration::from_secs(60))
    }
}

/// What a schedule submits at each fire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleAction {
    /// A task from this template (its idempotency key is Hive's: the slot).
    Task(Box<TaskSpec>),
    /// A workflow from this template (its idempotency key is Hive's).
    Workflow(WorkflowSpec),
}

/// A schedule as its owner writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The schedule's id, unique in its tenant: 1 to 128 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// When its slots are.
    pub calendar: Calendar,
    /// What each fire submits.
    pub action: ScheduleAction,
    /// What a slot does while the previous fire still runs.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What happens to slots missed during an outage.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Each slot fires up to this much later, by an amount fixed per slot
    /// (spreads many schedules on one minute). Default none.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// No slot before this time. Default: from creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// No slot after this time; the schedule then completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<Timestamp>,
    /// Complete after this many fires (manual triggers not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fires: Option<u64>,
    /// Create paused.
    #[serde(default)]
    pub paused: bool,
    /// A free-form note (why it exists, why it is paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ScheduleSpec {
    /// The longest note.
    pub const MAX_NOTE_LEN: usize = 1024;
    /// The longest jitter.
    pub const MAX_JITTER: Duration = Duration::from_secs(24 * 3600);

    /// A schedule `id` that submits a task of `spec` on `calendar`, with
    /// defaults for everything else.
    pub fn task(id: impl Into<String>, calendar: Calendar, spec: TaskSpec) -> Self {
        Self::new(id, calendar, ScheduleAction::Task(Box::new(spec)))
    }

    /// A schedule `id` that submits a workflow of `spec` on `calendar`.
    pub fn workflow(id: impl Into<String>, calendar: Calendar, spec: WorkflowSpec) -> Self {
        Self::new(id, calendar, ScheduleAction::Workflow(spec))
    }

    fn new(id: impl Into<String>, calendar: Calendar, action: ScheduleAction) -> Self {
        ScheduleSpec {
            id: id.into(),
            calendar,
            action,
            overlap: OverlapPolicy::default(),
            catch_up: CatchUp::default(),
            jitter: None,
            start_at: None,
            end_at: None,
            max_fires: None,
            paused: false,
            note: None,
        }
    }

    /// Sets the overlap policy.
    pub fn overlap(mut self, policy: OverlapPolicy) -> Self {
        self.overlap = policy;
        self
    }

    /// Sets the catch-up policy.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Sets the end time.
    pub fn end_at(mut self, at: Timestamp) -> Self {
        self.end_at = Some(at);
        self
    }

    /// Sets the start time.
    pub fn start_at(mut self, at: Timestamp) -> Self {
        self.start_at = Some(at);
        self
    }

    /// Completes after `n` fires.
    pub fn max_fires(mut self, n: u64) -> Self {
        self.max_fires = Some(n);
        self
    }

    /// Creates it paused.
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Checks the spec (the calendar compiles, the template is valid, the
    /// bounds make sense); the error names the field. Returns the compiled
    /// calendar.
    pub fn validate(&self, limits: &crate::workflow::ValidationLimits) -> Result<Slots> {
        check_id(&self.id)?;
        let slots = self.calendar.compile()?;
        match &self.action {
            ScheduleAction::Task(spec) => {
                if spec.idempotency_key.is_some() {
                    return Err(Error::invalid_spec(
                        "action.task.idempotency_key",
                        "a schedule sets the key of each fire itself (from the slot)",
                    ));
                }
                spec.validate().map_err(|e| within(e, "action.task"))?;
            }
            ScheduleAction::Workflow(spec) => {
                if spec.idempotency_key.is_some() {
                    return Err(Error::invalid_spec(
                        "action.workflow.idempotency_key",
                        "a schedule sets the key of each fire itself (from the slot)",
                    ));
                }
                crate::workflow::validate(spec, limits)
                    .map_err(|e| within(e, "action.workflow"))?;
            }
        }
        if self.jitter.is_some_and(|j| j > Self::MAX_JITTER) {
            return Err(Error::invalid_spec("jitter", "must be at most 24h"));
        }
        if let (Some(s), Some(e)) = (self.start_at, self.end_at)
            && e <= s
        {
            return Err(Error::invalid_spec("end_at", "must be after start_at"));
        }
        if self.max_fires == Some(0) {
            return Err(Error::invalid_spec("max_fires", "must be at least 1"));
        }
        if let Some(n) = &self.note {
            crate::principal::check_text("note", n, Self::MAX_NOTE_LEN, true)?;
        }
        Ok(slots)
    }

    /// The fire time of `slot`: the slot plus its jitter (fixed per slot, so
    /// every process computes the same).
    pub fn fire_time(&self, slot: Timestamp) -> Timestamp {
        match self.jitter {
            Some(j) if !j.is_zero() => {
                let span = j.as_millis().min(i64::MAX as u128) as u64;
                let h = splitmix(slot.as_millis() as u64 ^ fnv(self.id.as_bytes()));
                Timestamp::from_millis(slot.as_millis().saturating_add((h % span) as i64))
            }
            _ => slot,
        }
    }
}

fn within(e: Error, prefix: &str) -> Error {
    match e {
        Error::InvalidSpec { field, message } => Error::InvalidSpec {
            field: format!("{prefix}.{field}"),
            message,
        },
        e => e,
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Checks a schedule id.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::invalid_spec(
            "id",
            format!("must be 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -, got {id:?}"),
        ));
    }
    Ok(())
}

/// The record id of schedule `id` of `tenant` (unambiguous: the tenant's
/// length first).
pub fn record_id(tenant: &TenantId, id: &str) -> String {
    format!("{}:{tenant}:{id}", tenant.as_str().len())
}

/// A schedule's lifecycle status (the record's indexed status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    /// Firing.
    Active,
    /// Not firing until resumed.
    Paused,
    /// Past its end time or fire count: no more slots.
    Completed,
    /// Deleted (the record stays as a tombstone; the id may be reused).
    Deleted,
}

impl ScheduleStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleStatus::Active => "active",
            ScheduleStatus::Paused => "paused",
            ScheduleStatus::Completed => "completed",
            ScheduleStatus::Deleted => "deleted",
        }
    }
}

impl FromStr for ScheduleStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => ScheduleStatus::Active,
            "paused" => ScheduleStatus::Paused,
            "completed" => ScheduleStatus::Completed,
            "deleted" => ScheduleStatus::Deleted,
            other => {
                return Err(Error::InvalidArgument {
                    message: format!(
                        "unknown schedule status {other:?} (active, paused, completed, deleted)"
                    ),
                });
            }
        })
    }
}

/// What one fire submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFire {
    /// The slot (for a manual trigger, the time of the trigger).
    pub slot: Timestamp,
    /// The task or workflow id it submitted.
    pub target: String,
    /// Whether a person triggered it (`trigger`), not the calendar.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// The previous fire's target to cancel first (`cancel_previous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
}

/// A schedule as stored: the spec, who owns it (fires act as this principal)
/// and where it is on its time line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// What the owner wrote.
    pub spec: ScheduleSpec,
    /// The principal that created (or last updated) it; fires act as it.
    pub owner: Principal,
    /// Distinguishes the slots of a re-created schedule from those of a
    /// deleted one with the same id (part of every fire's key).
    pub generation: i64,
    /// The next slot to decide (`None`: no more slots).
    pub next_slot: Option<Timestamp>,
    /// A decided fire whose submission may not be stored yet: whoever sees
    /// it completes it (idempotently) before anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<ScheduleFire>,
    /// A slot waiting for the previous fire to end (`buffer_one`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<Timestamp>,
    /// Slots fired by the calendar.
    pub fired: u64,
    /// Slots skipped by the overlap policy.
    pub skipped: u64,
    /// Slots missed beyond the catch-up window.
    pub missed: u64,
    /// Manual triggers.
    pub triggered: u64,
    /// The last fires, newest last (at most [`ScheduleRecord::RECENT`]).
    pub recent: Vec<ScheduleFire>,
}

impl ScheduleRecord {
    /// How many fires `recent` keeps.
    pub const RECENT: usize = 10;
}

/// A schedule as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its status.
    pub status: ScheduleStatus,
    /// The record as stored.
    #[serde(flatten)]
    pub record: ScheduleRecord,
    /// When the next slot fires (its jitter included), if active.
    pub next_fire: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The record's version.
    pub version: u64,
}

/// Filters and pagination for listing schedules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleQuery {
    /// Only these statuses (every status but `deleted` when empty).
    pub statuses: Vec<ScheduleStatus>,
    /// Resume after this schedule id.
    pub after: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// What a pass over the schedules did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleReport {
    /// Slots fired (tasks or workflows submitted).
    pub fired: u64,
    /// Slots skipped by an overlap policy.
    pub skipped: u64,
    /// Slots missed beyond a catch-up window.
    pub missed: u64,
    /// Decisions lost to another process (it decided them).
    pub conflicts: u64,
    /// Schedules that have more due work than one pass does.
    pub more: bool,
}

/// One decision for the next due slot of a schedule (pure: the engine
/// applies it with a compare-and-set).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    /// Nothing is due.
    Idle,
    /// Advance past slots beyond the catch-up window.
    Miss {
        /// How many were passed over.
        count: u64,
        /// The first slot to look at next.
        next: Option<Timestamp>,
    },
    /// Decide slot `slot` (due now).
    Due {
        /// The slot.
        slot: Timestamp,
        /// The slot after it.
        next: Option<Timestamp>,
    },
}

/// Whether the next slot of `rec` is due at `now`, after catch-up.
pub(crate) fn next_decision(rec: &ScheduleRecord, slots: &Slots, now: Timestamp) -> Decision {
    let Some(slot) = rec.next_slot else {
        return Decision::Idle;
    };
    let spec = &rec.spec;
    if spec.fire_time(slot) > now {
        return Decision::Idle;
    }
    // The first slot that may still fire: every due slot for a window, the
    // latest due one for `Latest`.
    let first_ok = match spec.catch_up {
        CatchUp::Window(w) => {
            let oldest = Timestamp::from_millis(
                now.as_millis()
                    .saturating_sub(i64::try_from(w.as_millis()).unwrap_or(i64::MAX)),
            );
            if spec.fire_time(slot) >= oldest {
                slot
            } else {
                // A slot's fire time is at most its jitter after it: start
                // that much early and step.
                let jitter = spec.jitter.map_or(0, |j| j.as_millis() as i64);
                let mut s = slots.at_or_after(Timestamp::from_millis(
                    oldest.as_millis().saturating_sub(jitter),
                ));
                while let Some(x) = s {
                    if spec.fire_time(x) >= oldest || x > now {
                        break;
                    }
                    s = slots.after(x);
                }
                match s {
                    Some(x) if x > slot => x,
                    _ => slot,
                }
            }
        }
        CatchUp::Latest => {
            let mut latest = slots.at_or_before(now).unwrap_or(slot);
            if spec.fire_time(latest) > now {
                latest = slots
                    .at_or_before(Timestamp::from_millis(latest.as_millis() - 1))
                    .unwrap_or(slot);
            }
            latest.max(slot)
        }
    };
    if first_ok > slot {
        // Count what is passed over (bounded: a long outage of a per-second
        // schedule counts at least the bound).
        let mut count = 0;
        let mut s = Some(slot);
        while let Some(x) = s {
            if x >= first_ok || count >= MAX_MISSED_SCAN {
                break;
            }
            count += 1;
            s = slots.after(x);
        }
        return Decision::Miss {
            count,
            next: Some(first_ok),
        };
    }
    Decision::Due {
        slot,
        next: slots.after(slot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        let t: jiff::Timestamp = s.parse().unwrap();
        Timestamp::from_millis(t.as_millisecond())
    }

    #[test]
    fn interval_slots_count_from_the_anchor() {
        let s = Calendar::Interval {
            every: Duration::from_secs(10),
            anchor: Some(Timestamp::from_millis(3_000)),
        }
        .compile()
        .unwrap();
        assert_eq!(
            s.after(Timestamp::from_millis(0)),
            Some(Timestamp::from_millis(3_000))
        );
        assert_eq!(
            s.after(Timestamp::from_millis(3_000)),
            Some(Timestamp::from_millis(13_000))
        );
        assert_eq!(
            s.at_or_after(Timestamp::from_millis(13_000)),
            Some(Timestamp::from_millis(13_000))
        );
        assert_eq!(
            s.upcoming(Timestamp::from_millis(12_999), 3),
            vec![
                Timestamp::from_millis(13_000),
                Timestamp::from_millis(23_000),
                Timestamp::from_millis(33_000)
            ]
        );
    }

    #[test]
    fn cron_with_and_without_seconds() {
        let five = Calendar::cron("*/15 * * * *").compile().unwrap();
        assert_eq!(
            five.after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T00:15:00Z"))
        );
        let six = Calendar::cron("30 */15 * * * *").compile().unwrap();
        assert_eq!(
            six.after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T00:00:30Z"))
        );
        let daily = Calendar::cron("@daily").compile().unwrap();
        assert_eq!(
            daily.after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn leap_day_slots_come_every_four_years() {
        let s = Calendar::cron("0 12 29 2 *").compile().unwrap();
        assert_eq!(
            s.upcoming(ts("2026-03-01T00:00:00Z"), 2),
            vec![ts("2028-02-29T12:00:00Z"), ts("2032-02-29T12:00:00Z")]
        );
        let never = Calendar::cron("0 0 30 2 *").compile().unwrap();
        assert_eq!(never.after(ts("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn dst_gap_and_overlap_follow_vixie_cron() {
        // New York springs forward on 2026-03-08 at 02:00 (to 03:00) and
        // falls back on 2026-11-01 at 02:00 (to 01:00).
        let fixed = Calendar::cron_in("30 2 * * *", "America/New_York")
            .compile()
            .unwrap();
        let days = fixed.upcoming(ts("2026-03-07T00:00:00Z"), 3);
        assert_eq!(
            days,
            vec![
                ts("2026-03-07T07:30:00Z"), // 02:30 EST
                ts("2026-03-08T07:00:00Z"), // the gap: 03:00 EDT, once
                ts("2026-03-09T06:30:00Z"), // 02:30 EDT
            ]
        );
        let once = Calendar::cron_in("30 1 * * *", "America/New_York")
            .compile()
            .unwrap();
        assert_eq!(
            once.upcoming(ts("2026-10-31T12:00:00Z"), 2),
            vec![
                ts("2026-11-01T05:30:00Z"), // 01:30 EDT, the first of two
                ts("2026-11-02T06:30:00Z"), // 01:30 EST the next day
            ]
        );
        let hourly = Calendar::cron_in("0 * * * *", "America/New_York")
            .compile()
            .unwrap();
        let count = |from: &str, to: &str| {
            let (from, to) = (ts(from), ts(to));
            hourly
                .upcoming(from, 100)
                .into_iter()
                .take_while(|&s| s < to)
                .count()
        };
        // Local days of 23 and 25 hours.
        assert_eq!(count("2026-03-08T04:59:59Z", "2026-03-09T04:00:00Z"), 23);
        assert_eq!(count("2026-11-01T03:59:59Z", "2026-11-02T05:00:00Z"), 25);
    }

    #[test]
    fn bad_calendars_name_the_field() {
        let field = |c: Calendar| match c.compile() {
            Err(Error::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        };
        assert_eq!(field(Calendar::cron("61 * * * *")), "calendar.expr");
        assert_eq!(field(Calendar::cron("not cron")), "calendar.expr");
        assert_eq!(
            field(Calendar::cron_in("* * * * *", "Mars/Olympus")),
            "calendar.timezone"
        );
        assert_eq!(
            field(Calendar::every(Duration::from_millis(10))),
            "calendar.every"
        );
        assert!(check_id("nightly-report_1.v2").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id("a/b").is_err());
    }

    #[test]
    fn jitter_is_fixed_per_slot_and_within_bounds() {
        let spec = ScheduleSpec::task(
            "j",
            Calendar::every(Duration::from_secs(60)),
            TaskSpec::new("echo", serde_json::Value::Null),
        )
        .jitter(Duration::from_secs(30));
        let mut distinct = std::collections::BTreeSet::new();
        for k in 0..200 {
            let slot = Timestamp::from_millis(k * 60_000);
            let f = spec.fire_time(slot);
            assert_eq!(f, spec.fire_time(slot), "the same every time");
            assert!(f >= slot && f.as_millis() < slot.as_millis() + 30_000);
            distinct.insert(f.as_millis() - slot.as_millis());
        }
        assert!(distinct.len() > 150, "spread out: {}", distinct.len());
    }
}
