use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// What runs a task: a handler name registered in-process (`summarize`) or an
/// OCI reference to an agent in the registry (`ghcr.io/acme/agents/summarize:1.2`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentRef(Arc<str>);

impl AgentRef {
    /// The longest accepted reference.
    pub const MAX_LEN: usize = 512;

    /// Wraps a reference (validated at submit).
    pub fn new(s: impl AsRef<str>) -> Self {
        AgentRef(Arc::from(s.as_ref()))
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this looks like an OCI reference (has a registry path or a tag).
    pub fn is_oci(&self) -> bool {
        self.0.contains('/')
    }
}

impl fmt::Display for AgentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AgentRef {
    fn from(s: &str) -> Self {
        AgentRef::new(s)
    }
}

/// The deadlines of a task. Every non-terminal state has one, so the supervisor
/// can always bring a task to an end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How long a task may wait to be started: first in the queue for a
    /// placement (from submission, or from the end of a retry's backoff), then,
    /// once leased, for its node to start it (each wait counts from its own
    /// beginning). A pending task that no node takes in time ends
    /// `TimedOut { schedule_to_start }` without a retry; a leased task that is
    /// not started in time loses the attempt (retried by the policy). Default
    /// 5 minutes.
    #[serde(with = "humantime_serde")]
    pub schedule_to_start: Duration,
    /// How long one attempt may run. Default 1h.
    #[serde(with = "humantime_serde")]
    pub start_to_close: Duration,
    /// How long a running attempt may go without a heartbeat. Default 30s.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The whole task's deadline, from submission (from `not_before` for a delayed
    /// task), across attempts. A pending task
    /// with no eligible node ends `TimedOut` when it passes. Default: none.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            schedule_to_start: Duration::from_secs(300),
            start_to_close: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(30),
            deadline: None,
        }
    }
}

/// What a caller submits: one unit of agent work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The agent that runs it.
    pub agent: AgentRef,
    /// Its input.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Labels a node must carry (with these values) to run it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Higher runs first within the owner's tenant. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Deadlines.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Resubmitting with the same key (in the same tenant) returns the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Not claimable before this time (a delayed task): it is `Pending` until
    /// then, visible and cancellable, and its schedule-to-start and overall
    /// deadlines count from this time. A time in the past means now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Not claimable before this long after submission; the relative form of
    /// `not_before` (set one or the other).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// A concurrency limit shared by every task of the owner's tenant with
    /// the same key: at most `max_running` of them hold a slot (are claimable,
    /// leased or running) at once; the others wait their turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// A rate limit shared by every task of the owner's tenant with the same
    /// key: a claim takes `units` tokens from the key's bucket, and a task
    /// whose tokens are not there yet stays pending until they are (its
    /// `available_at` moves to that time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A rate limit per key (see [`TaskSpec::rate_limit`](TaskSpec#structfield.rate_limit)):
/// a token bucket of `limit` tokens refilled at `limit` per `per`, kept by
/// the store (one per tenant and key) as a generic cell rate algorithm, so
/// that however many processes claim, no window of length `per` starts
/// tasks worth more than `limit` tokens beyond the steady rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The bucket's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// An RFC 6901 JSON pointer into the input whose value is the key
    /// (resolved at submission into `key`, like [`Concurrency::key_from`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<String>,
    /// Tokens a claim of this task takes (default 1, at most `limit`).
    #[serde(default = "Concurrency::one")]
    pub units: u32,
    /// The bucket's size and the tokens it gets back per `per`.
    pub limit: u32,
    /// The refill period.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl RateLimit {
    /// The most tokens per period.
    pub const MAX_LIMIT: u32 = 1_000_000;

    /// `limit` tokens per `per` on the literal `key`, one per task.
    pub fn key(key: impl Into<String>, limit: u32, per: Duration) -> Self {
        RateLimit {
            key: Some(key.into()),
            key_from: None,
            units: 1,
            limit,
            per,
        }
    }

    /// The same on the value at `pointer` in the input.
    pub fn key_from(pointer: impl Into<String>, limit: u32, per: Duration) -> Self {
        RateLimit {
            key: None,
            key_from: Some(pointer.into()),
            units: 1,
            limit,
            per,
        }
    }

    /// Sets the tokens one task takes.
    pub fn units(mut self, units: u32) -> Self {
        self.units = units;
        self
    }

    /// The bucket's time per token, in microseconds (at least 1).
    pub fn interval_us(&self) -> i64 {
        let per = i64::try_from(self.per.as_micros()).unwrap_or(i64::MAX);
        (per / i64::from(self.limit.max(1))).max(1)
    }

    /// The generic cell rate algorithm: with the bucket's stored
    /// theoretical arrival time `tat_us` (0 for a new bucket), a claim at
    /// `now_us` takes this task's tokens and the bucket's new time is
    /// `Ok(tat)`; or the tokens are not there yet and `Err(at)` is the first
    /// microsecond they are.
    pub fn take(&self, tat_us: i64, now_us: i64) -> std::result::Result<i64, i64> {
        let per = i64::try_from(self.per.as_micros()).unwrap_or(i64::MAX);
        let new = tat_us
            .max(now_us)
            .saturating_add(self.interval_us().saturating_mul(i64::from(self.units)));
        if new.saturating_sub(now_us) <= per {
            Ok(new)
        } else {
            Err(new.saturating_sub(per))
        }
    }

    /// When a task held back by [`RateLimit::take`] (first possible at
    /// `earliest_us`) should be claimable again, with `ahead_units` tokens
    /// of tasks held back before it in the same claim: one after the other,
    /// so that a claim sees the tasks of a busy bucket as they become due
    /// instead of all of them at each token.
    pub fn queue_at(&self, earliest_us: i64, ahead_units: u64) -> i64 {
        let ahead = i64::try_from(ahead_units).unwrap_or(i64::MAX);
        earliest_us.saturating_add(self.interval_us().saturating_mul(ahead))
    }

    fn validate(&self) -> Result<()> {
        match (&self.key, &self.key_from) {
            (None, None) => {
                return Err(Error::invalid_spec("rate_limit.key", "set key or key_from"));
            }
            (_, Some(p)) if !p.is_empty() && !p.starts_with('/') => {
                return Err(Error::invalid_spec(
                    "rate_limit.key_from",
                    format!("must be a JSON pointer starting with '/', got {p:?}"),
                ));
            }
            _ => {}
        }
        if let Some(k) = &self.key {
            crate::principal::check_text("rate_limit.key", k, TaskSpec::MAX_KEY_LEN, false)?;
        }
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(Error::invalid_spec(
                "rate_limit.limit",
                format!("must be 1 to {}, got {}", Self::MAX_LIMIT, self.limit),
            ));
        }
        if self.per < Duration::from_millis(1) || self.per > Duration::from_secs(366 * 24 * 3600) {
            return Err(Error::invalid_spec(
                "rate_limit.per",
                "must be 1 ms to 1 year",
            ));
        }
        if self.units == 0 || self.units > self.limit {
            return Err(Error::invalid_spec(
                "rate_limit.units",
                format!(
                    "must be 1 to the limit ({}), got {}",
                    self.limit, self.units
                ),
            ));
        }
        Ok(())
    }
}

/// What a task does when its concurrency key is full at submission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyStrategy {
    /// Wait for a slot. Waiting tasks get slots in priority then submission
    /// order within their key, and a task given a slot joins the end of the
    /// ready queue, so busy keys take turns (round-robin across keys).
    #[default]
    Queue,
    /// The new task is cancelled (the running ones go on).
    CancelNewest,
    /// The oldest tasks holding slots are cancelled to make room for the new
    /// one.
    CancelInProgress,
}

impl ConcurrencyStrategy {
    /// Its name in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyStrategy::Queue => "queue",
            ConcurrencyStrategy::CancelNewest => "cancel_newest",
            ConcurrencyStrategy::CancelInProgress => "cancel_in_progress",
        }
    }
}

/// A concurrency limit per key (see [`TaskSpec::concurrency`](TaskSpec#structfield.concurrency)).
///
/// The key is `key`, or the value at the JSON pointer `key_from` in the
/// task's input (a string, number or boolean), which the engine resolves at
/// submission and stores in `key`. Keys are per tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// The key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// An RFC 6901 JSON pointer into the input (`/customer/id`); when set,
    /// `key` is replaced by the value found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<String>,
    /// How many tasks of the key may hold a slot at once (default 1).
    #[serde(default = "Concurrency::one")]
    pub max_running: u32,
    /// What happens when the key is full at submission.
    #[serde(default)]
    pub strategy: ConcurrencyStrategy,
}

impl Concurrency {
    /// The most slots a key may have.
    pub const MAX_RUNNING: u32 = 100_000;

    fn one() -> u32 {
        1
    }

    /// A limit of `max_running` on the literal `key`, queueing when full.
    pub fn key(key: impl Into<String>, max_running: u32) -> Self {
        Concurrency {
            key: Some(key.into()),
            key_from: None,
            max_running,
            strategy: ConcurrencyStrategy::Queue,
        }
    }

    /// A limit of `max_running` on the value at `pointer` in the input.
    pub fn key_from(pointer: impl Into<String>, max_running: u32) -> Self {
        Concurrency {
            key: None,
            key_from: Some(pointer.into()),
            max_running,
            strategy: ConcurrencyStrategy::Queue,
        }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: ConcurrencyStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    fn validate(&self) -> Result<()> {
        match (&self.key, &self.key_from) {
            (None, None) => {
                return Err(Error::invalid_spec(
                    "concurrency.key",
                    "set key or key_from",
                ));
            }
            (_, Some(p)) if !p.is_empty() && !p.starts_with('/') => {
                return Err(Error::invalid_spec(
                    "concurrency.key_from",
                    format!("must be a JSON pointer starting with '/', got {p:?}"),
                ));
            }
            _ => {}
        }
        if let Some(k) = &self.key {
            crate::principal::check_text("concurrency.key", k, TaskSpec::MAX_KEY_LEN, false)?;
        }
        if self.max_running == 0 || self.max_running > Self::MAX_RUNNING {
            return Err(Error::invalid_spec(
                "concurrency.max_running",
                format!(
                    "must be 1 to {}, got {}",
                    Self::MAX_RUNNING,
                    self.max_running
                ),
            ));
        }
        Ok(())
    }
}

impl TaskSpec {
    /// The largest accepted input, serialized.
    pub const MAX_INPUT_BYTES: usize = 4 << 20;
    /// The longest accepted idempotency key.
    pub const MAX_KEY_LEN: usize = 256;
    /// The most labels a task may require.
    pub const MAX_LABELS: usize = 64;
    /// The longest accepted `delay` (and the furthest `not_before` may be
    /// after submission is not checked: a far date is a valid request).
    pub const MAX_DELAY: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

    /// A spec for `agent` with `input` and defaults for everything else.
    pub fn new(agent: impl Into<AgentRef>, input: serde_json::Value) -> Self {
        TaskSpec {
            agent: agent.into(),
            input,
            labels: BTreeMap::new(),
            priority: 0,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            idempotency_key: None,
            not_before: None,
            delay: None,
            concurrency: None,
            rate_limit: None,
        }
    }

    /// Limits how fast tasks with the same rate-limit key are claimed.
    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// The resolved rate-limit key and its bucket, if the task has one.
    pub fn rate_limit_key(&self) -> Option<(&str, &RateLimit)> {
        let r = self.rate_limit.as_ref()?;
        Some((r.key.as_deref()?, r))
    }

    /// Limits how many tasks with the same concurrency key run at once.
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// The resolved concurrency key and its slot count, if the task has one
    /// (after [`TaskSpec::resolve_concurrency`]).
    pub fn concurrency_key(&self) -> Option<(&str, u32)> {
        let c = self.concurrency.as_ref()?;
        Some((c.key.as_deref()?, c.max_running))
    }

    /// Resolves `concurrency.key_from` and `rate_limit.key_from` against the
    /// input into their `key` (the engine does this at submission). A pointer
    /// that finds nothing, or a value that is not a string, number or
    /// boolean, is `InvalidSpec` naming the field.
    pub fn resolve_concurrency(&mut self) -> Result<()> {
        // Both are tried, so a caller that falls back on a failure (a
        // workflow step) keeps every key that did resolve.
        let mut first = Ok(());
        if let Some(c) = self.concurrency.as_mut()
            && let Some(p) = &c.key_from
        {
            match resolve_key(&self.input, p, "concurrency.key_from") {
                Ok(k) => c.key = Some(k),
                Err(e) => first = Err(e),
            }
        }
        if let Some(r) = self.rate_limit.as_mut()
            && let Some(p) = &r.key_from
        {
            match resolve_key(&self.input, p, "rate_limit.key_from") {
                Ok(k) => r.key = Some(k),
                Err(e) => first = first.and(Err(e)),
            }
        }
        first
    }

    /// Not claimable before `at` (see [`TaskSpec::not_before`](Self#structfield.not_before)).
    pub fn not_before(mut self, at: Timestamp) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Not claimable before `delay` after submission.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// When a task of this spec submitted at `submitted` first becomes
    /// claimable: `not_before` or `submitted + delay`, never before
    /// `submitted`. Its schedule-to-start and overall deadlines count from
    /// here.
    pub fn available_from(&self, submitted: Timestamp) -> Timestamp {
        let at = match (self.not_before, self.delay) {
            (Some(at), _) => at,
            (None, Some(d)) => submitted.saturating_add(d),
            (None, None) => submitted,
        };
        at.max(submitted)
    }

    /// Requires a node label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Checks the spec; the error names the offending field. Nothing is stored for
    /// an invalid spec.
    pub fn validate(&self) -> Result<()> {
        let agent = self.agent.as_str();
        if agent.trim().is_empty() {
            return Err(Error::invalid_spec("agent", "must not be empty"));
        }
        if agent.len() > AgentRef::MAX_LEN
            || agent.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid_spec(
                "agent",
                format!(
                    "must be at most {} characters with no whitespace, got {agent:?}",
                    AgentRef::MAX_LEN
                ),
            ));
        }
        if self.labels.len() > Self::MAX_LABELS {
            return Err(Error::invalid_spec(
                "labels",
                format!(
                    "at most {} labels, got {}",
                    Self::MAX_LABELS,
                    self.labels.len()
                ),
            ));
        }
        crate::node::check_labels(&self.labels)?;
        if let Some(key) = &self.idempotency_key
            && key.starts_with("hive:")
        {
            return Err(Error::invalid_spec(
                "idempotency_key",
                "keys starting with \"hive:\" are reserved for Hive's own tasks (workflow steps)",
            ));
        }
        if let Some(key) = &self.idempotency_key {
            crate::principal::check_text("idempotency_key", key, Self::MAX_KEY_LEN, false)?;
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("timeouts.schedule_to_start", t.schedule_to_start),
            ("timeouts.start_to_close", t.start_to_close),
            ("timeouts.heartbeat", t.heartbeat),
        ] {
            if d.is_zero() {
                return Err(Error::invalid_spec(name, "must be greater than zero"));
            }
        }
        if t.deadline.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid_spec(
                "timeouts.deadline",
                "must be greater than zero",
            ));
        }
        self.retry.validate("retry")?;
        if self.not_before.is_some() && self.delay.is_some() {
            return Err(Error::invalid_spec(
                "delay",
                "set either not_before or delay, not both",
            ));
        }
        if self.not_before.is_some_and(|t| t < Timestamp::EPOCH) {
            return Err(Error::invalid_spec(
                "not_before",
                "must not be before 1970-01-01T00:00:00Z",
            ));
        }
        if self.delay.is_some_and(|d| d > Self::MAX_DELAY) {
            return Err(Error::invalid_spec(
                "delay",
                "must be at most 10 years (use not_before for a fixed date)",
            ));
        }
        if let Some(c) = &self.concurrency {
            c.validate()?;
        }
        if let Some(r) = &self.rate_limit {
            r.validate()?;
        }
        // Cheap for small inputs; only large ones pay for the size check.
        if !matches!(
            self.input,
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_)
        ) {
            let size = serde_json::to_vec(&self.input)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > Self::MAX_INPUT_BYTES {
                return Err(Error::invalid_spec(
                    "input",
                    format!(
                        "{size} bytes serialized; at most {} allowed",
                        Self::MAX_INPUT_BYTES
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The key at JSON pointer `p` in `input` (a string, or a number or boolean
/// as written).
fn resolve_key(input: &serde_json::Value, p: &str, field: &str) -> Result<String> {
    let key = match input.pointer(p) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
        Some(v) => {
            return Err(Error::invalid_spec(
                field,
                format!(
                    "{p:?} names a {} in the input; a key must be a string, number or boolean",
                    json_kind(v)
                ),
            ));
        }
        None => {
            return Err(Error::invalid_spec(
                field,
                format!("{p:?} names nothing in the input"),
            ));
        }
    };
    crate::principal::check_text(field, &key, TaskSpec::MAX_KEY_LEN, false)?;
    Ok(key)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}
