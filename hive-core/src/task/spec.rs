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
        }
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
