//! Retry policies: when a failed, timed-out or lost attempt is tried again, and
//! after how long. The same policy type serves plain tasks and workflow steps.
//!
//! The next attempt's time is computed when the attempt fails and stored with the
//! task (`available_at`), so no process sleeps through a backoff.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::TaskError;

/// How many attempts a task gets in total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MaxAttempts {
    /// At most this many attempts (at least 1).
    Limited(u32),
    /// Retry for ever (bounded only by `max_elapsed` and the task deadline).
    #[default]
    Unlimited,
}

impl Serialize for MaxAttempts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MaxAttempts::Limited(n) => s.serialize_u32(*n),
            MaxAttempts::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for MaxAttempts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            N(u32),
            S(String),
        }
        match Repr::deserialize(d)? {
            Repr::N(n) => Ok(MaxAttempts::Limited(n)),
            Repr::S(s) if s == "unlimited" => Ok(MaxAttempts::Unlimited),
            Repr::S(s) => Err(serde::de::Error::custom(format!(
                "max_attempts must be a number or \"unlimited\", got {s:?}"
            ))),
        }
    }
}

/// What kinds of attempt failure are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryOn {
    /// The handler reported an error.
    pub error: bool,
    /// The attempt hit its schedule-to-start, heartbeat or start-to-close timeout.
    pub timeout: bool,
    /// The node running the attempt was lost or removed.
    pub lost: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            error: true,
            timeout: true,
            lost: true,
        }
    }
}

/// Where a retry may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryPlacement {
    /// On any eligible node, the previous one included.
    #[default]
    Any,
    /// Not on the node that ran the failed attempt. The store's claim enforces
    /// it: with a single eligible node, the retry waits for another one (or its
    /// deadline).
    AvoidPreviousNode,
}

/// Per-error-code changes to a [`RetryPolicy`]: every field that is set replaces
/// the policy's own when an attempt fails with that code.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryOverride {
    /// Total attempts for this code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<MaxAttempts>,
    /// Initial interval for this code.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub initial_interval: Option<Duration>,
    /// Backoff coefficient for this code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_coefficient: Option<f64>,
    /// Largest delay for this code.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<Duration>,
}

/// Why an attempt ended without success.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FailureCause<'a> {
    /// The handler reported this error.
    Error(&'a TaskError),
    /// A per-attempt timeout fired.
    Timeout,
    /// The placement was lost.
    Lost,
}

/// When and how often a task is retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, including the first. Default 3.
    pub max_attempts: MaxAttempts,
    /// Delay before the second attempt. Default 1s.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// Each further delay is the previous one times this (≥ 1). Default 2.
    pub backoff_coefficient: f64,
    /// Upper bound of a delay. Default 100 × `initial_interval`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<Duration>,
    /// Random spread of each delay as a fraction in `[0, 1]`: a delay `d` becomes
    /// a value in `[d·(1−jitter), d·(1+jitter)]`. Default 0.1.
    pub jitter: f64,
    /// No retry is scheduled later than this after the task was submitted.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_elapsed: Option<Duration>,
    /// Which failures are retried. Default: all.
    pub retry_on: RetryOn,
    /// Error codes that are never retried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub non_retryable: Vec<String>,
    /// Per-error-code overrides of the fields above.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, RetryOverride>,
    /// Where the retry may run. Default: any node.
    #[serde(skip_serializing_if = "is_any")]
    pub placement: RetryPlacement,
}

fn is_any(p: &RetryPlacement) -> bool {
    *p == RetryPlacement::Any
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: MaxAttempts::Limited(3),
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: None,
            jitter: 0.1,
            max_elapsed: None,
            retry_on: RetryOn::default(),
            non_retryable: Vec::new(),
            overrides: BTreeMap::new(),
            placement: RetryPlacement::Any,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: MaxAttempts::Limited(1),
            ..RetryPolicy::default()
        }
    }

    /// A policy with `n` total attempts and the given initial interval, no jitter.
    pub fn attempts(n: u32, initial_interval: Duration) -> Self {
        RetryPolicy {
            max_attempts: MaxAttempts::Limited(n),
            initial_interval,
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    /// Checks the policy; `prefix` names its place in the spec (`retry`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        self.validate_fields(prefix)?;
        for (code, o) in &self.overrides {
            if code.is_empty() {
                return Err(Error::invalid_spec(
                    format!("{prefix}.overrides"),
                    "error codes must not be empty",
                ));
            }
            self.with_override(o)
                .validate_fields(&format!("{prefix}.overrides.{code}"))?;
        }
        Ok(())
    }

    /// The policy an attempt that failed with `code` follows: this one with the
    /// code's override applied, if there is one.
    pub fn for_code(&self, code: &str) -> Cow<'_, RetryPolicy> {
        match self.overrides.get(code) {
            Some(o) => Cow::Owned(self.with_override(o)),
            None => Cow::Borrowed(self),
        }
    }

    fn with_override(&self, o: &RetryOverride) -> RetryPolicy {
        RetryPolicy {
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
            initial_interval: o.initial_interval.unwrap_or(self.initial_interval),
            backoff_coefficient: o.backoff_coefficient.unwrap_or(self.backoff_coefficient),
            max_interval: o.max_interval.or(self.max_interval),
            overrides: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// The largest delay between attempts.
    pub fn effective_max_interval(&self) -> Duration {
        self.max_interval
            .unwrap_or_else(|| self.initial_interval.saturating_mul(100))
    }

    /// A delay a worker suggested (e.g. from a rate limit's `Retry-After`),
    /// clamped to `[0, max_interval]`.
    pub fn clamp_suggested(&self, suggested: Duration) -> Duration {
        suggested.min(self.effective_max_interval())
    }

    fn validate_fields(&self, prefix: &str) -> Result<()> {
        if self.max_attempts == MaxAttempts::Limited(0) {
            return Err(Error::invalid_spec(
                format!("{prefix}.max_attempts"),
                "must be at least 1 (or \"unlimited\")",
            ));
        }
        if !self.backoff_coefficient.is_finite() || self.backoff_coefficient < 1.0 {
            return Err(Error::invalid_spec(
                format!("{prefix}.backoff_coefficient"),
                format!(
                    "must be a finite number ≥ 1, got {}",
                    self.backoff_coefficient
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid_spec(
                format!("{prefix}.jitter"),
                format!("must be between 0 and 1, got {}", self.jitter),
            ));
        }
        if let Some(max) = self.max_interval
            && max < self.initial_interval
        {
            return Err(Error::invalid_spec(
                format!("{prefix}.max_interval"),
                format!(
                    "must not be shorter than initial_interval ({:?} < {:?})",
                    max, self.initial_interval
                ),
            ));
        }
        Ok(())
    }

    /// Whether an attempt that ended with `cause` may be retried at all (before
    /// counting attempts).
    pub fn retries_cause(&self, cause: FailureCause<'_>) -> bool {
        match cause {
            FailureCause::Error(e) => {
                self.retry_on.error && !e.non_retryable && !self.non_retryable.contains(&e.code)
            }
            FailureCause::Timeout => self.retry_on.timeout,
            FailureCause::Lost => self.retry_on.lost,
        }
    }

    /// The backoff after attempt number `attempt` (1-based) failed, before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let max = self.effective_max_interval();
        let exp = attempt.saturating_sub(1).min(1_000) as i32;
        let secs = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exp);
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay after attempt `attempt` failed, with jitter drawn
    /// deterministically from `seed` (so that the same task and attempt always
    /// get the same delay, on every backend).
    pub fn delay(&self, attempt: u32, seed: u128) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        // splitmix64 over the seed and the attempt gives a uniform value in [-1, 1].
        let mut x = (seed as u64)
            ^ ((seed >> 64) as u64)
            ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        base.mul_f64((1.0 + self.jitter * unit).max(0.0))
    }

    /// Whether another attempt is allowed after attempt number `attempt` failed.
    pub fn has_attempts_left(&self, attempt: u32) -> bool {
        match self.max_attempts {
            MaxAttempts::Limited(n) => attempt < n,
            MaxAttempts::Unlimited => true,
        }
    }
}

/// The backoff of Hive's own retry loops — a worker's claims and reports, the
/// stores' notification listeners, opening a busy SQLite file: the delay
/// starts at `initial`, doubles after each failure up to `max`, and goes back
/// to `initial` after a success. (Task retries follow the task's
/// [`RetryPolicy`] instead.)
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `initial` up to `max` (a `max` below `initial` is
    /// raised to it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay to wait after a failure; the next one is twice as long, up
    /// to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_coefficient_and_is_capped() {
        let p = RetryPolicy {
            initial_interval: Duration::from_millis(100),
            backoff_coefficient: 3.0,
            max_interval: Some(Duration::from_secs(1)),
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1, 7), Duration::from_millis(100));
        assert_eq!(p.delay(2, 7), Duration::from_millis(300));
        assert_eq!(p.delay(3, 7), Duration::from_millis(900));
        assert_eq!(p.delay(4, 7), Duration::from_secs(1));
        assert_eq!(p.delay(4_000_000, 7), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_is_deterministic() {
        let p = RetryPolicy {
            initial_interval: Duration::from_secs(10),
            jitter: 0.2,
            ..RetryPolicy::default()
        };
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..500u128 {
            let d = p.delay(1, seed * 0x1234_5678_9abc);
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
            assert_eq!(d, p.delay(1, seed * 0x1234_5678_9abc));
            distinct.insert(d);
        }
        assert!(distinct.len() > 100, "jitter should spread delays");
    }

    #[test]
    fn invalid_policies_are_refused_with_the_field_named() {
        let bad = [
            (
                RetryPolicy {
                    backoff_coefficient: 0.5,
                    ..Default::default()
                },
                "retry.backoff_coefficient",
            ),
            (
                RetryPolicy {
                    backoff_coefficient: f64::NAN,
                    ..Default::default()
                },
                "retry.backoff_coefficient",
            ),
            (
                RetryPolicy {
                    jitter: 1.5,
                    ..Default::default()
                },
                "retry.jitter",
            ),
            (
                RetryPolicy {
                    max_attempts: MaxAttempts::Limited(0),
                    ..Default::default()
                },
                "retry.max_attempts",
            ),
            (
                RetryPolicy {
                    max_interval: Some(Duration::from_millis(1)),
                    ..Default::default()
                },
                "retry.max_interval",
            ),
        ];
        for (policy, field) in bad {
            match policy.validate("retry") {
                Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidSpec for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn non_retryable_codes_and_causes_are_honoured() {
        let p = RetryPolicy {
            non_retryable: vec!["bad_input".into()],
            retry_on: RetryOn {
                lost: false,
                ..RetryOn::default()
            },
            ..RetryPolicy::default()
        };
        let bad = TaskError::new("bad_input", "no");
        let flaky = TaskError::new("flaky", "try again");
        assert!(!p.retries_cause(FailureCause::Error(&bad)));
        assert!(p.retries_cause(FailureCause::Error(&flaky)));
        assert!(!p.retries_cause(FailureCause::Error(&flaky.clone().non_retryable())));
        assert!(p.retries_cause(FailureCause::Timeout));
        assert!(!p.retries_cause(FailureCause::Lost));
    }

    #[test]
    fn overrides_replace_fields_for_their_code_only() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts":3,"initial_interval":"1s","jitter":0,
                "overrides":{"rate_limited":{"max_attempts":10,"initial_interval":"30s"}},
                "placement":"avoid_previous_node"}"#,
        )
        .unwrap();
        assert_eq!(p.placement, RetryPlacement::AvoidPreviousNode);
        let rl = p.for_code("rate_limited");
        assert_eq!(rl.max_attempts, MaxAttempts::Limited(10));
        assert_eq!(rl.delay(1, 0), Duration::from_secs(30));
        let other = p.for_code("boom");
        assert_eq!(other.max_attempts, MaxAttempts::Limited(3));
        assert_eq!(other.delay(1, 0), Duration::from_secs(1));
        let bad: RetryPolicy =
            serde_json::from_str(r#"{"overrides":{"x":{"backoff_coefficient":0.5}}}"#).unwrap();
        match bad.validate("retry") {
            Err(Error::InvalidSpec { field, .. }) => {
                assert_eq!(field, "retry.overrides.x.backoff_coefficient")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn suggested_delays_are_clamped_to_the_max_interval() {
        let p = RetryPolicy {
            initial_interval: Duration::from_secs(1),
            max_interval: Some(Duration::from_secs(60)),
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.clamp_suggested(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.clamp_suggested(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn max_attempts_round_trips_through_json() {
        let p: RetryPolicy =
            serde_json::from_str(r#"{"max_attempts":"unlimited","initial_interval":"250ms"}"#)
                .unwrap();
        assert_eq!(p.max_attempts, MaxAttempts::Unlimited);
        assert_eq!(p.initial_interval, Duration::from_millis(250));
        let p: RetryPolicy = serde_json::from_str(r#"{"max_attempts":5}"#).unwrap();
        assert_eq!(p.max_attempts, MaxAttempts::Limited(5));
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attempts":"lots"}"#).is_err());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_atempts":5}"#).is_err());
    }

    #[test]
    fn backoff_doubles_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![10, 20, 40, 50, 50]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        let mut low = Backoff::new(Duration::from_secs(1), Duration::ZERO);
        assert_eq!(low.next_delay(), Duration::from_secs(1));
        assert_eq!(low.next_delay(), Duration::from_secs(1));
    }
}
