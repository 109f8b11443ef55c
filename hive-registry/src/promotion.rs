//! The promotion policy: which rules a sandbox agent must pass to be promoted
//! to production. The rules run in a fixed order and the first that fails
//! refuses the promotion, by name ([`PromotionRule`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::PromotionRule;

/// Configurable promotion rules. The caller always needs
/// `experiment:promote` ([`PromotionRule::CallerScope`], checked by the
/// engine's authorizer); the rest is configured here. The default requires a
/// sandbox signature and provenance, and no metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionPolicy {
    /// The sandbox artifact must carry a valid signature by a trusted sandbox
    /// key ([`PromotionRule::SignedBySandboxKey`]).
    pub require_sandbox_signature: bool,
    /// A SLSA provenance attestation signed by a trusted sandbox key must be
    /// attached ([`PromotionRule::ProvenancePresent`]).
    pub require_provenance: bool,
    /// Metric name → minimum value ([`PromotionRule::MetricThreshold`]). Values
    /// come from the signed provenance (or, without provenance, from the
    /// signed manifest's annotations); a missing metric fails its rule.
    pub min_metrics: BTreeMap<String, f64>,
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        PromotionPolicy {
            require_sandbox_signature: true,
            require_provenance: true,
            min_metrics: BTreeMap::new(),
        }
    }
}

impl PromotionPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same policy also requiring `metric >= min`.
    pub fn require_metric(mut self, metric: impl Into<String>, min: f64) -> Self {
        self.min_metrics.insert(metric.into(), min);
        self
    }

    /// The rules, in the order they are checked.
    pub fn rules(&self) -> Vec<PromotionRule> {
        let mut rules = vec![PromotionRule::CallerScope];
        if self.require_sandbox_signature {
            rules.push(PromotionRule::SignedBySandboxKey);
        }
        if self.require_provenance {
            rules.push(PromotionRule::ProvenancePresent);
        }
        rules.extend(
            self.min_metrics
                .iter()
                .map(|(metric, min)| PromotionRule::MetricThreshold {
                    metric: metric.clone(),
                    min: *min,
                }),
        );
        rules
    }

    /// The first metric rule `values` fail, with why.
    pub fn check_metrics(
        &self,
        values: &BTreeMap<String, f64>,
    ) -> Result<(), (PromotionRule, String)> {
        for (metric, min) in &self.min_metrics {
            let rule = PromotionRule::MetricThreshold {
                metric: metric.clone(),
                min: *min,
            };
            match values.get(metric) {
                None => return Err((rule, format!("metric {metric} is not reported"))),
                // NaN is below every threshold.
                Some(v) if v.partial_cmp(min).is_none_or(|o| o.is_lt()) => {
                    return Err((rule, format!("metric {metric} is {v}, below {min}")));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_ordered_and_metrics_checked_with_names() {
        let p = PromotionPolicy::new()
            .require_metric("accuracy", 0.9)
            .require_metric("latency_score", 0.5);
        assert_eq!(
            p.rules()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "caller-has-experiment:promote",
                "signed-by-sandbox-key",
                "provenance-present",
                "metric:accuracy>=0.9",
                "metric:latency_score>=0.5"
            ]
        );
        let ok = [
            ("accuracy".to_owned(), 0.95),
            ("latency_score".to_owned(), 0.5),
        ]
        .into();
        assert!(p.check_metrics(&ok).is_ok());
        let low = [
            ("accuracy".to_owned(), 0.85),
            ("latency_score".to_owned(), 0.9),
        ]
        .into();
        let (rule, why) = p.check_metrics(&low).unwrap_err();
        assert_eq!(rule.to_string(), "metric:accuracy>=0.9");
        assert!(why.contains("0.85"), "{why}");
        let missing = [("accuracy".to_owned(), 0.95)].into();
        assert!(
            p.check_metrics(&missing)
                .unwrap_err()
                .1
                .contains("not reported")
        );
        let nan = [
            ("accuracy".to_owned(), f64::NAN),
            ("latency_score".to_owned(), 1.0),
        ]
        .into();
        assert!(p.check_metrics(&nan).is_err());
    }
}
