//! API tokens: issued once, stored as a hash, resolved in constant time, refused
//! with one error whatever the reason, never escalating the issuer's rights.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hive_core::audit::AuditOutcome;
use hive_core::auth::AllowAll;
use hive_core::engine::HiveConfig;
use hive_core::store::RecordStore;
use hive_core::{Clock, Error, Hive, NodeId, Principal, PrincipalKind, Scope, Scopes};
use hive_iam::{
    TOKEN_KIND, TOKEN_PREFIX, TokenKind, TokenRequest, TokenService, TokenStatus, is_invalid_token,
};
use hive_store::MemoryStore;
use serde_json::json;
use sha2::{Digest, Sha256};

use common::{Fixture, assert_denial, fixture, forbidden, not_found};

fn admin() -> Principal {
    Principal::admin("acme", "root")
}

async fn issue(f: &Fixture, request: TokenRequest) -> hive_iam::IssuedToken {
    f.tokens
        .issue(&f.hive, &admin(), request)
        .await
        .expect("the admin issues")
}

#[track_caller]
fn invalid<T: std::fmt::Debug>(r: hive_core::Result<T>) {
    match r {
        Err(e) if is_invalid_token(&e) => {
            assert_eq!(e.to_string(), "forbidden: token.resolve: invalid token");
        }
        other => panic!("expected the invalid-token refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_issued_token_is_shown_once_and_stored_only_as_a_hash() {
    let f = fixture();
    let issued = issue(
        &f,
        TokenRequest::new("ci-bot", TokenKind::User).description("CI"),
    )
    .await;
    let rest = issued
        .token
        .strip_prefix(TOKEN_PREFIX)
        .expect("hive_ prefix");
    let (id, secret) = rest.split_once('.').expect("id.secret");
    assert_eq!(id, issued.info.id);
    assert_eq!(id.len(), 32);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .expect("base64url");
    assert_eq!(secret.len(), 32, "256 bits");

    let record = f
        .store
        .get_record(TOKEN_KIND, id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(record.tenant.as_str(), "acme");
    let stored = serde_json::to_string(&record.body).expect("json");
    let encoded = issued.token.split_once('.').expect("dot").1;
    assert!(!stored.contains(encoded), "the secret is not stored");
    assert_eq!(
        record.body["secret_sha256"],
        json!(hex::encode(Sha256::digest(&secret)))
    );
    let debug = format!("{issued:?}");
    assert!(!debug.contains(encoded), "Debug hides the secret: {debug}");

    let other = issue(&f, TokenRequest::new("ci-bot", TokenKind::User)).await;
    assert_ne!(other.token, issued.token);
    assert_ne!(other.info.id, issued.info.id);
}

#[tokio::test]
async fn a_token_resolves_to_its_principal() {
    let f = fixture();
    let scopes = Scopes::empty()
        .with(Scope::TaskRead)
        .with(Scope::TaskSubmit);
    let issued = issue(
        &f,
        TokenRequest::new("reader", TokenKind::Operator).scopes(scopes),
    )
    .await;
    let p = f.tokens.resolve(&issued.token).await.expect("resolves");
    assert_eq!(p.tenant.as_str(), "acme");
    assert_eq!(p.id.as_str(), "reader");
    assert_eq!(p.kind, PrincipalKind::Operator);
    assert_eq!(p.scopes, scopes);
    assert_eq!(p, issued.info.to_principal().expect("a user token"));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let f = fixture();
    let issued = issue(
        &f,
        TokenRequest::new("temp", TokenKind::User).ttl(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(
        issued.info.expires_at,
        Some(f.clock.now().saturating_add(Duration::from_secs(60)))
    );
    f.clock.advance(Duration::from_secs(59));
    f.tokens.resolve(&issued.token).await.expect("still valid");
    f.clock.advance(Duration::from_secs(1));
    invalid(f.tokens.resolve(&issued.token).await);
    let listed = f.tokens.list(&f.hive, &admin()).await.expect("list");
    assert_eq!(listed[0].status(f.clock.now()), TokenStatus::Expired);
}

#[tokio::test]
async fn a_revoked_token_is_refused_and_the_revocation_is_audited() {
    let f = fixture();
    let issued = issue(&f, TokenRequest::new("svc", TokenKind::User)).await;
    f.tokens.resolve(&issued.token).await.expect("valid");
    let before = f.count("acme").await;
    let info = f
        .tokens
        .revoke(&f.hive, &admin(), &issued.info.id)
        .await
        .expect("revoke");
    assert_eq!(info.revoked_by, Some(admin().id));
    assert_eq!(info.status(f.clock.now()), TokenStatus::Revoked);
    invalid(f.tokens.resolve(&issued.token).await);
    let new = f.events_since("acme", before).await;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].action, "token.revoke");
    assert_eq!(new[0].outcome, AuditOutcome::Allowed);
    assert_eq!(new[0].resource, format!("token/{}", issued.info.id));
    assert_eq!(new[0].details["principal"], json!("svc"));
    // Revoking again changes nothing.
    let again = f
        .tokens
        .revoke(&f.hive, &admin(), &issued.info.id)
        .await
        .expect("idempotent");
    assert_eq!(again.revoked_at, info.revoked_at);
    let record = f
        .store
        .get_record(TOKEN_KIND, &issued.info.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(record.status, "revoked");
}

#[tokio::test]
async fn malformed_unknown_and_wrong_tokens_get_one_error() {
    let f = fixture();
    let issued = issue(&f, TokenRequest::new("svc", TokenKind::User)).await;
    let (id_part, secret) = issued.token.split_once('.').expect("dot");
    let other_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    let unknown_id = "0".repeat(32);
    let flipped = {
        let mut s = secret.to_owned();
        let c = if s.starts_with('A') { "B" } else { "A" };
        s.replace_range(0..1, c);
        s
    };
    for bad in [
        String::new(),
        "hive_".to_owned(),
        "Bearer ".to_owned() + &issued.token,
        issued.token.to_uppercase(),
        id_part.to_owned(),
        format!("{id_part}.{other_secret}"),
        format!("{id_part}.{flipped}"),
        format!("{}.{}", issued.token, "x"),
        format!("{TOKEN_PREFIX}{unknown_id}.{secret}"),
        format!("{TOKEN_PREFIX}{}.{secret}", &issued.info.id[..31]),
        issued.token.replace(TOKEN_PREFIX, "tok_"),
        format!("{}=", issued.token),
    ] {
        invalid(f.tokens.resolve(&bad).await);
    }
    f.tokens
        .resolve(&issued.token)
        .await
        .expect("the real one still resolves");
}

#[tokio::test]
async fn issuing_is_audited_without_the_secret() {
    let f = fixture();
    let before = f.count("acme").await;
    let issued = issue(
        &f,
        TokenRequest::new("svc", TokenKind::User).ttl(Duration::from_secs(3600)),
    )
    .await;
    let new = f.events_since("acme", before).await;
    assert_eq!(new.len(), 1);
    let e = &new[0];
    assert_eq!(e.action, "token.issue");
    assert_eq!(e.outcome, AuditOutcome::Allowed);
    assert_eq!(e.actor.as_str(), "root");
    assert_eq!(e.actor_kind, "admin");
    assert_eq!(e.resource, format!("token/{}", issued.info.id));
    assert_eq!(e.details["token"], json!(issued.info.id));
    assert_eq!(e.details["principal"], json!("svc"));
    assert_eq!(e.details["kind"], json!("user"));
    assert_eq!(e.details["scopes"], json!(Scopes::user()));
    assert_eq!(e.details["expires_at"], json!(issued.info.expires_at));
    let encoded = issued.token.split_once('.').expect("dot").1;
    assert!(!serde_json::to_string(e).expect("json").contains(encoded));
}

#[tokio::test]
async fn a_caller_cannot_grant_scopes_it_does_not_hold() {
    let f = fixture();
    for scopes in [
        Scopes::admin().with(Scope::SystemAdmin),
        Scopes::empty().with(Scope::NodeWork),
        Scopes::empty().with(Scope::SystemAdmin),
    ] {
        let before = f.count("acme").await;
        let reason = forbidden(
            f.tokens
                .issue(
                    &f.hive,
                    &admin(),
                    TokenRequest::new("x", TokenKind::User).scopes(scopes),
                )
                .await,
        );
        assert!(reason.contains("missing"), "{reason}");
        let new = f.events_since("acme", before).await;
        assert_eq!(new.len(), 1, "one denial, no allowed entry: {new:?}");
        assert_denial(&new[0], &admin(), "token.issue", &new[0].resource);
    }
    assert!(
        f.tokens
            .list(&f.hive, &admin())
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_caller_cannot_mint_a_kind_above_its_own() {
    let f = fixture();
    // A user that was given tenant:admin still cannot mint operators or admins.
    let user = Principal::user("acme", "u").with_scopes(Scopes::admin());
    f.tokens
        .issue(&f.hive, &user, TokenRequest::new("x", TokenKind::User))
        .await
        .expect("a user token is fine");
    for kind in [TokenKind::Operator, TokenKind::Admin] {
        let reason = forbidden(
            f.tokens
                .issue(
                    &f.hive,
                    &user,
                    TokenRequest::new("x", kind).scopes(Scopes::user()),
                )
                .await,
        );
        assert!(reason.contains("may not issue"), "{reason}");
    }
}

#[tokio::test]
async fn issuing_needs_tenant_admin() {
    let f = fixture();
    for caller in [
        Principal::user("acme", "alice"),
        Principal::operator("acme", "carol"),
    ] {
        let before = f.count("acme").await;
        let reason = forbidden(
            f.tokens
                .issue(
                    &f.hive,
                    &caller,
                    TokenRequest::new("x", TokenKind::User).scopes(Scopes::empty()),
                )
                .await,
        );
        assert!(reason.contains("tenant:admin"), "{reason}");
        let new = f.events_since("acme", before).await;
        assert_eq!(new.len(), 1);
        assert_denial(&new[0], &caller, "token.issue", &new[0].resource);
        forbidden(f.tokens.list(&f.hive, &caller).await);
    }
}

#[tokio::test]
async fn tokens_are_issued_in_the_callers_tenant_unless_system_admin() {
    let f = fixture();
    let reason = forbidden(
        f.tokens
            .issue(
                &f.hive,
                &admin(),
                TokenRequest::new("x", TokenKind::User).tenant("globex"),
            )
            .await,
    );
    assert!(reason.contains("own tenant"), "{reason}");
    let system = Principal::system();
    let issued = f
        .tokens
        .issue(
            &f.hive,
            &system,
            TokenRequest::new("ops", TokenKind::Admin).tenant("globex"),
        )
        .await
        .expect("system:admin issues anywhere");
    let p = f.tokens.resolve(&issued.token).await.expect("resolves");
    assert_eq!(p.tenant.as_str(), "globex");
    assert_eq!(p.kind, PrincipalKind::Admin);
    // acme's admin does not see it; globex's does.
    assert!(
        f.tokens
            .list(&f.hive, &admin())
            .await
            .expect("list")
            .is_empty()
    );
    let globex = Principal::admin("globex", "root");
    let listed = f.tokens.list(&f.hive, &globex).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].issued_by_tenant.as_str(), "_system");
}

#[tokio::test]
async fn another_tenants_token_cannot_be_revoked() {
    let f = fixture();
    let issued = issue(&f, TokenRequest::new("svc", TokenKind::User)).await;
    let globex = Principal::admin("globex", "root");
    not_found(f.tokens.revoke(&f.hive, &globex, &issued.info.id).await);
    not_found(f.tokens.revoke(&f.hive, &globex, "not-a-token-id").await);
    not_found(f.tokens.revoke(&f.hive, &admin(), &"0".repeat(32)).await);
    f.tokens.resolve(&issued.token).await.expect("still valid");
    let user = Principal::user("acme", "alice");
    forbidden(f.tokens.revoke(&f.hive, &user, &issued.info.id).await);
    f.tokens.resolve(&issued.token).await.expect("still valid");
}

#[tokio::test]
async fn listing_shows_the_tenants_tokens_without_secrets() {
    let f = fixture();
    let a = issue(&f, TokenRequest::new("a", TokenKind::User)).await;
    let b = issue(&f, TokenRequest::new("b", TokenKind::Operator)).await;
    f.tokens
        .revoke(&f.hive, &admin(), &a.info.id)
        .await
        .expect("revoke");
    let listed = f.tokens.list(&f.hive, &admin()).await.expect("list");
    assert_eq!(listed.len(), 2);
    let now = f.clock.now();
    let by_id = |id: &str| listed.iter().find(|t| t.id == id).expect("listed");
    assert_eq!(by_id(&a.info.id).status(now), TokenStatus::Revoked);
    assert_eq!(by_id(&b.info.id).status(now), TokenStatus::Active);
    assert_eq!(by_id(&b.info.id).kind, TokenKind::Operator);
    let text = serde_json::to_string(&listed).expect("json");
    for issued in [&a, &b] {
        let secret = issued.token.split_once('.').expect("dot").1;
        assert!(!text.contains(secret));
    }
    assert!(!text.contains("secret_sha256"));
}

#[tokio::test]
async fn listing_every_tenants_tokens_needs_system_admin() {
    let f = fixture();
    let system = Principal::system();
    let a = issue(&f, TokenRequest::new("a", TokenKind::User)).await;
    let b = f
        .tokens
        .issue(
            &f.hive,
            &system,
            TokenRequest::new("b", TokenKind::Admin).tenant("globex"),
        )
        .await
        .expect("system issues into any tenant");
    let all = f.tokens.list_all(&f.hive, &system).await.expect("list_all");
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [a.info.id.as_str(), b.info.id.as_str()], "issue order");
    assert_eq!(all[1].tenant.as_str(), "globex");
    assert!(
        !serde_json::to_string(&all)
            .expect("json")
            .contains("secret")
    );

    // A tenant admin lists its own tenant's tokens, never every tenant's.
    forbidden(f.tokens.list_all(&f.hive, &admin()).await);
    let last = f.events("acme").await.pop().expect("the refusal");
    assert_denial(&last, &admin(), "token.read", "token/*");
}

#[tokio::test]
async fn a_worker_never_issues_even_under_a_permissive_policy() {
    let store = Arc::new(MemoryStore::default());
    let hive = Hive::builder()
        .store(store.clone())
        .authorizer(Arc::new(AllowAll))
        .config(HiveConfig {
            run_supervisor: false,
            ..HiveConfig::default()
        })
        .build()
        .expect("hive");
    let tokens = TokenService::new(store.clone());
    let worker = Principal::worker("acme", NodeId::new()).with_scopes(Scopes::admin());
    let reason = forbidden(
        tokens
            .issue(&hive, &worker, TokenRequest::new("x", TokenKind::User))
            .await,
    );
    assert!(reason.contains("worker"), "{reason}");
    forbidden(tokens.revoke(&hive, &worker, &"0".repeat(32)).await);
    forbidden(tokens.list(&hive, &worker).await);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_recorded() {
    let f = fixture();
    for request in [
        TokenRequest::new("", TokenKind::User),
        TokenRequest::new("x".repeat(257), TokenKind::User),
        TokenRequest::new("x", TokenKind::User).ttl(Duration::ZERO),
        TokenRequest::new("x", TokenKind::User).description("d".repeat(1025)),
    ] {
        match f.tokens.issue(&f.hive, &admin(), request).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(f.count("acme").await, 0);
}

#[tokio::test]
async fn a_worker_token_resolves_to_its_nodes_worker_and_nothing_more() {
    let f = fixture();
    let alice = Principal::user("acme", "alice");
    let node = f
        .hive
        .register_node(&alice, hive_core::NodeSpec::user("laptop", &alice, 2))
        .await
        .expect("alice registers her node");
    let before = f.count("acme").await;
    let issued = f
        .tokens
        .issue_worker(&f.hive, &alice, node.id, Some(Duration::from_secs(600)))
        .await
        .expect("the owner issues its node's worker token");
    assert_eq!(issued.info.kind, TokenKind::Worker);
    assert_eq!(issued.info.node, Some(node.id));
    let worker = f.tokens.resolve(&issued.token).await.expect("resolves");
    assert_eq!(worker, Principal::worker("acme", node.id));
    let new = f.events_since("acme", before).await;
    assert_eq!(new.len(), 1, "the issue is audited");
    assert_eq!(new[0].action, "token.issue_worker");
    assert_eq!(new[0].outcome, AuditOutcome::Allowed);
    assert_eq!(new[0].details["node"], json!(node.id));

    // The worker works its node and does nothing else.
    f.hive
        .claim(&worker, node.id, &Default::default())
        .await
        .expect("a worker claims for its node");
    forbidden(
        f.hive
            .submit(&worker, hive_core::TaskSpec::new("a", json!({})))
            .await,
    );
    // It cannot mint more tokens for itself.
    forbidden(f.tokens.issue_worker(&f.hive, &worker, node.id, None).await);
    // Another user of the tenant may not issue it; an operator may; another
    // tenant does not see the node.
    let bob = Principal::user("acme", "bob");
    let reason = forbidden(f.tokens.issue_worker(&f.hive, &bob, node.id, None).await);
    assert!(reason.contains("owner"), "{reason}");
    f.tokens
        .issue_worker(&f.hive, &Principal::operator("acme", "ops"), node.id, None)
        .await
        .expect("an operator issues");
    not_found(
        f.tokens
            .issue_worker(&f.hive, &Principal::admin("globex", "root"), node.id, None)
            .await,
    );
    // Revoked, it stops resolving; `issue` never mints a worker token.
    f.tokens
        .revoke(&f.hive, &admin(), &issued.info.id)
        .await
        .expect("revoke");
    invalid(f.tokens.resolve(&issued.token).await);
    let reason = forbidden(
        f.tokens
            .issue(&f.hive, &admin(), TokenRequest::new("w", TokenKind::Worker))
            .await,
    );
    assert!(reason.contains("one node"), "{reason}");
    match f
        .tokens
        .issue_worker(&f.hive, &alice, node.id, Some(Duration::ZERO))
        .await
    {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
