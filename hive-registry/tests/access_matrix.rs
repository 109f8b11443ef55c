//! Who may do what, against a real `distribution` registry in `auth.token`
//! mode whose realm is Hive's token service: a role × operation matrix with
//! the expected result in every cell (as Harbor tests its project
//! permissions), the listing set equal to the pullable set for every role,
//! every denial audited, and the registry itself refusing what Hive did not
//! grant.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use hive_core::audit::AuditOutcome;
use hive_core::{NodeId, Principal};
use hive_iam::registry_token::RegistryScope;
use hive_iam::{Role, TokenKind};
use hive_registry::{
    AgentQuery, AgentRef, AgentRegistry, ApiaryError, Channel, Link, PromotionPolicy,
    PromotionRule, Provenance, PublishRequest, Visibility,
};

use common::{Fixture, run};

/// The result of one cell.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cell {
    Ok,
    NotFound,
    Forbidden,
    /// A promotion refused by this rule.
    Refused(&'static str),
}

use Cell::{Forbidden, NotFound, Ok as Allowed, Refused};

fn cell<T: std::fmt::Debug>(r: Result<T, ApiaryError>) -> Cell {
    match r {
        Ok(_) => Cell::Ok,
        Err(ApiaryError::NotFound { .. }) => NotFound,
        Err(ApiaryError::Forbidden { .. }) => Forbidden,
        Err(ApiaryError::PromotionRefused {
            rule: PromotionRule::CallerScope,
            ..
        }) => Refused("caller-has-experiment:promote"),
        Err(e) => panic!("unexpected error in a matrix cell: {e:?}"),
    }
}

const AGENTS: [&str; 4] = ["pub-agent", "ten-agent", "ops-agent", "adm-agent"];

fn sandbox(name: &str) -> AgentRef {
    AgentRef::new("acme", Channel::Sandbox, name, "1.0.0")
}

fn roles() -> Vec<(&'static str, Principal)> {
    vec![
        ("user", Principal::user("acme", "uma")),
        ("operator", Principal::operator("acme", "otto")),
        ("admin", Principal::admin("acme", "ada")),
        ("worker", Principal::worker("acme", NodeId::new())),
        ("other-tenant", Principal::admin("globex", "gina")),
    ]
}

async fn seed(f: &Fixture) {
    let admin = Principal::admin("acme", "ada");
    let visibilities = [
        Visibility::Public,
        Visibility::Tenant,
        Visibility::private([Role::Operator, Role::Admin]),
        Visibility::private([Role::Admin]),
    ];
    for (name, visibility) in AGENTS.into_iter().zip(visibilities) {
        f.apiary
            .publish(
                &admin,
                PublishRequest {
                    visibility,
                    metrics: [("accuracy".to_owned(), 0.97)].into(),
                    provenance: Some(Provenance {
                        builder_id: "https://hive.example/loops/matrix".into(),
                        invocation_id: format!("run-{name}"),
                        metrics: Some(Link::new("s3://m")),
                        ..Provenance::default()
                    }),
                    ..PublishRequest::new(name, "1.0.0", name.as_bytes().to_vec())
                },
            )
            .await
            .unwrap_or_else(|e| panic!("seeding {name}: {e}"));
    }
}

/// The status code of `curl` against the registry with an optional bearer.
fn registry_status(f: &Fixture, method: &str, path: &str, bearer: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
    if let Some(t) = bearer {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"]);
    cmd.arg(format!("{}{path}", f.registry.url()));
    String::from_utf8(run(&mut cmd)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_by_operation_matrix() {
    let Some(f) = common::with_tokens(PromotionPolicy::new().require_metric("accuracy", 0.9)).await
    else {
        return;
    };
    seed(&f).await;

    // Expected visible agents per role (what list shows, get finds, pull pulls).
    let visible: [(&str, &[&str]); 5] = [
        ("user", &["pub-agent", "ten-agent"]),
        ("operator", &["pub-agent", "ten-agent", "ops-agent"]),
        (
            "admin",
            &["pub-agent", "ten-agent", "ops-agent", "adm-agent"],
        ),
        ("worker", &[]),
        ("other-tenant", &["pub-agent"]),
    ];
    // Expected cells per role:   list,      push,      promote,                                 catalog
    let expected: [(&str, Cell, Cell, Cell, Cell); 5] = [
        (
            "user",
            Allowed,
            Forbidden,
            Refused("caller-has-experiment:promote"),
            Forbidden,
        ),
        (
            "operator",
            Allowed,
            Forbidden,
            Refused("caller-has-experiment:promote"),
            Forbidden,
        ),
        ("admin", Allowed, Allowed, Allowed, Forbidden),
        (
            "worker",
            Forbidden,
            Forbidden,
            Refused("caller-has-experiment:promote"),
            Forbidden,
        ),
        ("other-tenant", Allowed, Allowed, NotFound, Forbidden),
    ];

    let mut table = Vec::new();
    for ((role, p), ((_, shown), (_, list_cell, push_cell, promote_cell, catalog_cell))) in
        roles().into_iter().zip(visible.iter().zip(expected.iter()))
    {
        // list
        let listed = f.apiary.list(&p, &AgentQuery::default()).await;
        assert_eq!(
            cell(listed.as_ref().map(|_| ()).map_err(clone_err)),
            *list_cell,
            "{role}: list"
        );
        let listed: BTreeSet<String> = listed
            .map(|l| l.into_iter().map(|e| e.reference.name).collect())
            .unwrap_or_default();
        let want: BTreeSet<String> = shown.iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, want, "{role}: listed agents");

        // get and pull, for every agent: the gettable and pullable sets are the listed set.
        let mut gettable = BTreeSet::new();
        let mut pullable = BTreeSet::new();
        for name in AGENTS {
            let expected_cell = if role == "worker" {
                Forbidden
            } else if want.contains(name) {
                Allowed
            } else {
                NotFound
            };
            let got = cell(f.apiary.get(&p, &sandbox(name)).await);
            assert_eq!(got, expected_cell, "{role}: get {name}");
            if got == Allowed {
                gettable.insert(name.to_owned());
            }
            let pulled = cell(f.apiary.pull(&p, &sandbox(name)).await);
            assert_eq!(pulled, expected_cell, "{role}: pull {name}");
            if pulled == Allowed {
                pullable.insert(name.to_owned());
            }
            table.push(format!("{role:12} get/pull {name:9} -> {got:?}"));
        }
        assert_eq!(gettable, listed, "{role}: gettable == listed");
        assert_eq!(pullable, listed, "{role}: pullable == listed");

        // push (publish a new agent in the caller's own tenant)
        let pushed = f
            .apiary
            .publish(
                &p,
                PublishRequest::new(format!("new-{}", role.replace('-', "")), "1", b"x".to_vec()),
            )
            .await;
        assert_eq!(cell(pushed), *push_cell, "{role}: push");

        // promote acme's tenant-visible sandbox agent
        let promoted = cell(f.apiary.promote(&p, &sandbox("ten-agent")).await);
        assert_eq!(promoted, *promote_cell, "{role}: promote");

        // catalog (spans tenants: system:admin only)
        let catalog = cell(f.apiary.catalog(&p).await);
        assert_eq!(catalog, *catalog_cell, "{role}: catalog");
        table.push(format!(
            "{role:12} list={list_cell:?} push={push_cell:?} promote={promote_cell:?} catalog={catalog_cell:?}"
        ));
    }
    eprintln!("{}", table.join("\n"));

    // Hive itself may read the catalog, and it lists what was published.
    let catalog = f
        .apiary
        .catalog(&Principal::system())
        .await
        .expect("system reads the catalog");
    assert!(
        catalog.contains(&"hive/acme/sandbox/pub-agent".to_owned()),
        "{catalog:?}"
    );
    assert!(
        catalog.contains(&"hive/acme/production/ten-agent".to_owned()),
        "{catalog:?}"
    );
    assert!(
        catalog.contains(&"hive/globex/sandbox/new-othertenant".to_owned()),
        "{catalog:?}"
    );

    // Every Forbidden or refused cell left a denied audit entry.
    for (actor, action) in [
        ("uma", "registry.publish"),
        ("uma", "experiment.promote"),
        ("uma", "registry.read"),
        ("otto", "registry.publish"),
        ("otto", "experiment.promote"),
        ("ada", "registry.read"),
        ("gina", "registry.read"),
    ] {
        assert!(
            !f.audit.find(actor, action, AuditOutcome::Denied).is_empty(),
            "{actor}: no denied {action} in the audit"
        );
    }
    let worker_denials: Vec<String> = f
        .audit
        .entries()
        .into_iter()
        .filter(|e| e.actor_kind == "worker" && e.outcome == AuditOutcome::Denied)
        .map(|e| e.action)
        .collect();
    for action in ["registry.read", "registry.publish", "experiment.promote"] {
        assert!(
            worker_denials.iter().any(|a| a == action),
            "worker: {action} not audited: {worker_denials:?}"
        );
    }
    // The allowed privileged actions are audited too.
    assert_eq!(
        f.audit
            .find("ada", "experiment.promote", AuditOutcome::Allowed)
            .len(),
        1
    );
    assert!(
        !f.audit
            .find("ada", "registry.publish", AuditOutcome::Allowed)
            .is_empty()
    );
}

fn clone_err(e: &ApiaryError) -> ApiaryError {
    match e {
        ApiaryError::NotFound { reference } => ApiaryError::NotFound {
            reference: reference.clone(),
        },
        ApiaryError::Forbidden { action, reason } => ApiaryError::Forbidden {
            action: action.clone(),
            reason: reason.clone(),
        },
        other => panic!("unexpected: {other:?}"),
    }
}

/// The registry enforces the grants on its own: tokens the realm mints for
/// each role carry exactly Hive's decision, and the registry refuses the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_itself_enforces_hives_grants() {
    let Some(f) = common::with_tokens(PromotionPolicy::default()).await else {
        return;
    };
    seed(&f).await;
    let service = f.apiary.token_service().expect("token mode");

    // Without a token the registry answers 401 to everything.
    assert_eq!(
        registry_status(
            &f,
            "GET",
            "/v2/hive/acme/sandbox/pub-agent/manifests/1.0.0",
            None
        ),
        "401"
    );
    assert_eq!(registry_status(&f, "GET", "/v2/_catalog", None), "401");

    // Registry-level pull and push into acme's repositories, per role.
    //               role,           pull of each agent (pub, ten, ops, adm),  push into ten-agent
    let expected: [(&str, [&str; 4], &str); 5] = [
        ("user", ["200", "200", "401", "401"], "401"),
        ("operator", ["200", "200", "200", "401"], "401"),
        ("admin", ["200", "200", "200", "200"], "202"),
        ("worker", ["401", "401", "401", "401"], "401"),
        ("other-tenant", ["200", "401", "401", "401"], "401"),
    ];
    for ((role, p), (_, pulls, push)) in roles().into_iter().zip(expected) {
        for (name, want) in AGENTS.into_iter().zip(pulls) {
            let repo = format!("hive/acme/sandbox/{name}");
            let token = service
                .issue(
                    &p,
                    None,
                    &[RegistryScope::repository(repo.clone(), &["pull"])],
                )
                .await
                .unwrap();
            let path = format!("/v2/{repo}/manifests/1.0.0");
            assert_eq!(
                registry_status(&f, "GET", &path, Some(&token.token)),
                want,
                "{role}: registry pull {name}"
            );
        }
        let repo = "hive/acme/sandbox/ten-agent";
        let token = service
            .issue(
                &p,
                None,
                &[RegistryScope::repository(repo, &["pull", "push"])],
            )
            .await
            .unwrap();
        let path = format!("/v2/{repo}/blobs/uploads/");
        assert_eq!(
            registry_status(&f, "POST", &path, Some(&token.token)),
            push,
            "{role}: registry push"
        );
        // Nobody in the matrix gets the cross-tenant catalog, and nobody pushes to production.
        let token = service
            .issue(&p, None, &[RegistryScope::catalog()])
            .await
            .unwrap();
        assert!(token.claims.access.is_empty(), "{role}: catalog granted");
        assert_eq!(
            registry_status(&f, "GET", "/v2/_catalog", Some(&token.token)),
            "401",
            "{role}: catalog"
        );
        let prod = "hive/acme/production/ten-agent";
        let token = service
            .issue(&p, None, &[RegistryScope::repository(prod, &["push"])])
            .await
            .unwrap();
        assert!(
            token.claims.access.is_empty(),
            "{role}: production push granted"
        );
    }
    // A token of another registry service is refused by the token service.
    let err = service
        .issue(&Principal::admin("acme", "ada"), Some("elsewhere"), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("elsewhere"), "{err}");
}

/// The realm over HTTP, as `docker` or `curl` use it: Basic credentials with a
/// Hive API token, the scope in the query, a bearer token back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_endpoint_answers_docker_style_token_requests() {
    let Some(f) = common::with_tokens(PromotionPolicy::default()).await else {
        return;
    };
    seed(&f).await;
    let realm = format!("http://127.0.0.1:{}/token", f.realm_port.unwrap());
    let api_token = f.api_token("acme", "uma", TokenKind::User).await;
    let token_for = |scope: &str, secret: &str| {
        let out = run(Command::new("curl").args([
            "-sf",
            "-u",
            &format!("uma:{secret}"),
            &format!("{realm}?service={}&scope={scope}", common::SERVICE),
        ]));
        let body: serde_json::Value = serde_json::from_slice(&out).unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    let visible = token_for("repository:hive/acme/sandbox/ten-agent:pull", &api_token);
    assert_eq!(
        registry_status(
            &f,
            "GET",
            "/v2/hive/acme/sandbox/ten-agent/manifests/1.0.0",
            Some(&visible)
        ),
        "200"
    );
    let hidden = token_for("repository:hive/acme/sandbox/adm-agent:pull", &api_token);
    assert_eq!(
        registry_status(
            &f,
            "GET",
            "/v2/hive/acme/sandbox/adm-agent/manifests/1.0.0",
            Some(&hidden)
        ),
        "401"
    );
    // The token of one repository does not open another.
    assert_eq!(
        registry_status(
            &f,
            "GET",
            "/v2/hive/acme/sandbox/pub-agent/manifests/1.0.0",
            Some(&visible)
        ),
        "401"
    );
    // A wrong API token gets no registry token at all.
    let status = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        "uma:hive_nope.nope",
        &format!(
            "{realm}?service={}&scope=repository:hive/acme/sandbox/pub-agent:pull",
            common::SERVICE
        ),
    ]));
    assert_eq!(String::from_utf8_lossy(&status), "401");
    // A registry token is short-lived: it names the service and expires.
    let claims = f.issuer.as_ref().unwrap().verify(&visible).unwrap();
    assert_eq!(claims.aud, common::SERVICE);
    assert_eq!(claims.exp - claims.iat, 120);
    assert_eq!(claims.sub, "acme/uma");
}
