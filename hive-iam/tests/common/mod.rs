//! A memory-backed engine wired with the scope policy and the audit trail, and
//! helpers to read the trail without going through authorization.

#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::Arc;

use hive_core::audit::AuditOutcome;
use hive_core::engine::HiveConfig;
use hive_core::store::{RecordEvent, RecordStore};
use hive_core::{Error, Hive, ManualClock, Principal, Result};
use hive_iam::{AUDIT_KIND, AuditEvent, AuditTrail, ScopePolicy, TokenService, VerifyReport};
use hive_store::MemoryStore;

pub(crate) struct Fixture {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) policy: Arc<ScopePolicy>,
    pub(crate) trail: Arc<AuditTrail>,
    pub(crate) hive: Hive,
    pub(crate) tokens: TokenService,
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(Arc::new(ScopePolicy::new()))
}

pub(crate) fn fixture_with(policy: Arc<ScopePolicy>) -> Fixture {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::default());
    let trail = Arc::new(AuditTrail::new(store.clone()));
    let hive = Hive::builder()
        .store(store.clone())
        .clock(clock.clone())
        .authorizer(policy.clone())
        .auditor(trail.clone())
        .config(HiveConfig {
            run_supervisor: false,
            ..HiveConfig::default()
        })
        .build()
        .expect("hive builds");
    let tokens = TokenService::for_hive(&hive);
    Fixture {
        store,
        clock,
        policy,
        trail,
        hive,
        tokens,
    }
}

impl Fixture {
    /// The stored events of `tenant`'s chain, read from the store directly.
    pub(crate) async fn stored(&self, tenant: &str) -> Vec<RecordEvent> {
        match self
            .store
            .read_record_events(AUDIT_KIND, tenant, 0, 100_000)
            .await
        {
            Ok(events) => events,
            Err(Error::NotFound { .. }) => Vec::new(),
            Err(e) => panic!("reading the trail: {e}"),
        }
    }

    /// `tenant`'s audit events, read from the store directly.
    pub(crate) async fn events(&self, tenant: &str) -> Vec<AuditEvent> {
        self.stored(tenant)
            .await
            .into_iter()
            .map(|e| serde_json::from_value(e.body).expect("an audit event"))
            .collect()
    }

    /// How many events `tenant`'s chain has.
    pub(crate) async fn count(&self, tenant: &str) -> usize {
        self.stored(tenant).await.len()
    }

    /// `tenant`'s events after the first `from`.
    pub(crate) async fn events_since(&self, tenant: &str, from: usize) -> Vec<AuditEvent> {
        self.events(tenant).await.split_off(from)
    }

    /// Verifies `tenant`'s chain as Hive itself.
    pub(crate) async fn verify(&self, tenant: &str) -> VerifyReport {
        self.trail
            .verify(&self.hive, &Principal::system(), &tenant.into())
            .await
            .expect("verify runs")
    }
}

/// Asserts `r` is `Forbidden` and returns the reason.
#[track_caller]
pub(crate) fn forbidden<T: Debug>(r: Result<T>) -> String {
    match r {
        Err(Error::Forbidden { reason, .. }) => reason,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

/// Asserts `r` is `NotFound`.
#[track_caller]
pub(crate) fn not_found<T: Debug>(r: Result<T>) {
    match r {
        Err(Error::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Asserts `event` records `actor`'s denied attempt at `action` on `resource`,
/// with a reason.
#[track_caller]
pub(crate) fn assert_denial(event: &AuditEvent, actor: &Principal, action: &str, resource: &str) {
    assert_eq!(event.outcome, AuditOutcome::Denied, "{event:?}");
    assert_eq!(event.action, action, "{event:?}");
    assert_eq!(event.resource, resource, "{event:?}");
    assert_eq!(event.actor, actor.id, "{event:?}");
    assert_eq!(event.actor_kind, actor.kind.name(), "{event:?}");
    assert_eq!(event.tenant, actor.tenant, "{event:?}");
    let reason = event.details["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "a denial carries its reason: {event:?}");
}
