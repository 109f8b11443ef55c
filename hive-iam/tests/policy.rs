//! The scope policy: role presets, the same answers as the core scope
//! authorizer when nothing is configured, and per-tenant role ceilings.

mod common;

use std::sync::Arc;

use hive_core::auth::{Action, Authorizer, Resource, ScopeAuthorizer};
use hive_core::{Error, NodeId, Principal, PrincipalKind, Scope, Scopes, TaskId, TenantId};
use hive_iam::{AuditQuery, Role, ScopePolicy};

use common::{assert_denial, fixture_with, forbidden};

#[test]
fn role_presets_are_the_core_presets() {
    assert_eq!(Role::User.scopes(), Scopes::user());
    assert_eq!(Role::Operator.scopes(), Scopes::operator());
    assert_eq!(Role::Admin.scopes(), Scopes::admin());
    assert_eq!(Role::Worker.scopes(), Scopes::worker());
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>().expect("parses"), role);
    }
    assert!("root".parse::<Role>().is_err());
    assert_eq!(Role::of(&PrincipalKind::System), None);
    assert_eq!(
        Role::of(&PrincipalKind::Worker {
            node: NodeId::new()
        }),
        Some(Role::Worker)
    );
    assert_eq!(
        serde_json::to_string(&Role::Operator).expect("json"),
        "\"operator\""
    );
}

fn principals() -> Vec<Principal> {
    vec![
        Principal::user("acme", "alice"),
        Principal::user("acme", "bob").with_scopes(Scopes::empty()),
        Principal::user("acme", "eve").with_scopes(Scopes::admin()),
        Principal::operator("acme", "carol"),
        Principal::admin("acme", "root"),
        Principal::worker("acme", NodeId::new()),
        Principal::worker("acme", NodeId::new()).with_scopes(Scope::ALL.into_iter().collect()),
        Principal::user("acme", "ops").with_scopes(Scopes::empty().with(Scope::SystemAdmin)),
        Principal::system(),
    ]
}

fn resources() -> Vec<Resource> {
    let acme = TenantId::new("acme");
    vec![
        Resource::System,
        Resource::Tenant(acme.clone()),
        Resource::Task {
            id: TaskId::new(),
            tenant: acme.clone(),
            owner: "alice".into(),
        },
        Resource::Node {
            id: NodeId::new(),
            tenant: Some(acme.clone()),
            owner: Some("alice".into()),
        },
        Resource::Node {
            id: NodeId::new(),
            tenant: None,
            owner: None,
        },
        Resource::Workflow {
            id: "wf".into(),
            tenant: acme.clone(),
            owner: "alice".into(),
        },
        Resource::Named {
            kind: "token",
            id: "t".into(),
            tenant: acme,
        },
    ]
}

fn same(a: &hive_core::Result<()>, b: &hive_core::Result<()>) -> bool {
    match (a, b) {
        (Ok(()), Ok(())) => true,
        (
            Err(Error::Forbidden {
                action: a1,
                reason: r1,
            }),
            Err(Error::Forbidden {
                action: a2,
                reason: r2,
            }),
        ) => a1 == a2 && r1 == r2,
        _ => false,
    }
}

#[test]
fn without_settings_the_policy_answers_as_the_scope_authorizer() {
    let policy = ScopePolicy::new();
    let mut decisions = 0;
    for p in principals() {
        for action in Action::ALL {
            for resource in resources() {
                let ours = policy.authorize(&p, action, &resource);
                let core = ScopeAuthorizer.authorize(&p, action, &resource);
                assert!(
                    same(&ours, &core),
                    "{p:?} {action} {resource}: {ours:?} vs {core:?}"
                );
                decisions += 1;
            }
        }
    }
    assert_eq!(decisions, 9 * Action::ALL.len() * 7);
}

#[test]
fn a_tenant_setting_caps_that_tenants_role_only() {
    let policy = ScopePolicy::new()
        .with_role_scopes(
            "acme".into(),
            Role::Operator,
            Scopes::operator().without(Scope::AuditRead),
        )
        .expect("set");
    let audit = Resource::System;
    let acme_op = Principal::operator("acme", "carol");
    let globex_op = Principal::operator("globex", "oscar");
    forbidden(policy.authorize(&acme_op, Action::ReadAudit, &audit));
    policy
        .authorize(&globex_op, Action::ReadAudit, &audit)
        .expect("another tenant is not capped");
    policy
        .authorize(&acme_op, Action::SubmitTask, &audit)
        .expect("the rest of the role is kept");
    // Admins of acme are another role.
    policy
        .authorize(&Principal::admin("acme", "root"), Action::ReadAudit, &audit)
        .expect("admins keep audit:read");
    assert_eq!(
        policy.effective_scopes(&acme_op),
        Scopes::operator().without(Scope::AuditRead)
    );

    policy.clear_role_scopes(&"acme".into(), Role::Operator);
    policy
        .authorize(&acme_op, Action::ReadAudit, &audit)
        .expect("cleared");
}

#[test]
fn the_default_setting_applies_where_a_tenant_has_none() {
    let policy = ScopePolicy::new()
        .with_default_role_scopes(Role::User, Scopes::user().without(Scope::NodeRegister))
        .expect("default")
        .with_role_scopes("acme".into(), Role::User, Scopes::user())
        .expect("acme");
    let r = Resource::System;
    policy
        .authorize(&Principal::user("acme", "a"), Action::RegisterNode, &r)
        .expect("acme's own setting wins");
    forbidden(policy.authorize(&Principal::user("globex", "g"), Action::RegisterNode, &r));
    assert_eq!(
        policy.role_scopes(&"globex".into(), Role::User),
        Scopes::user().without(Scope::NodeRegister)
    );
    assert_eq!(
        policy.role_scopes(&"initech".into(), Role::Admin),
        Scopes::admin(),
        "no setting: the preset"
    );
    policy.clear_default_role_scopes(Role::User);
    policy
        .authorize(&Principal::user("globex", "g"), Action::RegisterNode, &r)
        .expect("cleared");
}

#[test]
fn widening_a_role_helps_principals_built_from_the_policy() {
    let policy = ScopePolicy::new()
        .with_role_scopes(
            "acme".into(),
            Role::User,
            Scopes::user().with(Scope::ExperimentPromote),
        )
        .expect("set");
    let r = Resource::System;
    let tenant = TenantId::new("acme");
    let plain = Principal::user("acme", "alice");
    forbidden(policy.authorize(&plain, Action::PromoteExperiment, &r));
    let granted =
        Principal::user("acme", "alice").with_scopes(policy.role_scopes(&tenant, Role::User));
    policy
        .authorize(&granted, Action::PromoteExperiment, &r)
        .expect("granted by the tenant's role");
}

#[test]
fn system_admin_is_not_a_tenant_setting_and_is_never_capped() {
    let policy = ScopePolicy::new();
    let refused = policy.set_role_scopes(
        "acme".into(),
        Role::Admin,
        Scopes::admin().with(Scope::SystemAdmin),
    );
    assert!(matches!(refused, Err(Error::InvalidArgument { .. })));
    policy
        .set_role_scopes("acme".into(), Role::User, Scopes::empty())
        .expect("set");
    let ops = Principal::user("acme", "ops").with_scopes(Scopes::empty().with(Scope::SystemAdmin));
    policy
        .authorize(&ops, Action::Supervise, &Resource::System)
        .expect("system:admin is kept");
    forbidden(policy.authorize(
        &Principal::user("acme", "alice"),
        Action::ReadTask,
        &Resource::System,
    ));
    // Hive itself has no role.
    policy
        .authorize(&Principal::system(), Action::ReadTask, &Resource::System)
        .expect("system");
}

#[test]
fn a_worker_may_only_work_whatever_its_role_allows() {
    let policy = ScopePolicy::new()
        .with_role_scopes(
            "acme".into(),
            Role::Worker,
            Scopes::admin().with(Scope::NodeWork),
        )
        .expect("set");
    let worker =
        Principal::worker("acme", NodeId::new()).with_scopes(Scopes::admin().with(Scope::NodeWork));
    for action in Action::ALL {
        let r = policy.authorize(&worker, action, &Resource::System);
        if action == Action::WorkNode {
            r.expect("work");
        } else {
            forbidden(r);
        }
    }
    // A ceiling without node:work stops even that.
    policy
        .set_role_scopes("acme".into(), Role::Worker, Scopes::empty())
        .expect("set");
    forbidden(policy.authorize(&worker, Action::WorkNode, &Resource::System));
}

#[tokio::test]
async fn the_engine_applies_a_tenants_ceiling_and_audits_the_refusal() {
    let policy = Arc::new(ScopePolicy::new());
    let f = fixture_with(policy.clone());
    let carol = Principal::operator("acme", "carol");
    f.trail
        .list(&f.hive, &carol, &AuditQuery::default())
        .await
        .expect("operators read the trail");
    policy
        .set_role_scopes(
            "acme".into(),
            Role::Operator,
            Scopes::operator().without(Scope::AuditRead),
        )
        .expect("set at run time");
    let reason = forbidden(f.trail.list(&f.hive, &carol, &AuditQuery::default()).await);
    assert_eq!(reason, "missing scope audit:read");
    let events = f.events("acme").await;
    assert_denial(
        events.last().expect("the denial"),
        &carol,
        "audit.read",
        "audit/acme",
    );
}
