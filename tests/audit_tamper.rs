//! The audit trail detects tampering done behind Hive's back, directly in each
//! durable backend: an edited row and a deleted row, in SQLite and PostgreSQL
//! (SQL) and in Redis (stream commands). `verify` names the broken seq.

use hive::iam::{AuditTrail, BrokenLink, VerifyReport};
use hive::{Hive, NodeSpec, Principal, TaskSpec};
use hive_store::testing::{server_url, unique_name};
use serde_json::json;
use sqlx::AssertSqlSafe;

/// Builds a trail of several events in tenant `acme` and checks it verifies.
async fn trail(url: &str) -> (Hive, AuditTrail) {
    let hive = hive::open(url).await.expect("open");
    let alice = Principal::user("acme", "alice");
    for i in 0..3 {
        hive.submit(&alice, TaskSpec::new("echo", json!({ "i": i })))
            .await
            .unwrap();
    }
    hive.register_node(
        &alice,
        NodeSpec::user(
            "laptop",
            hive::Owner {
                tenant: "acme".into(),
                principal: "alice".into(),
            },
            2,
        ),
    )
    .await
    .unwrap();
    // A denial is audited too.
    assert!(
        hive.register_node(&alice, NodeSpec::system("nope", 1))
            .await
            .is_err()
    );
    hive.submit(&alice, TaskSpec::new("echo", json!(null)))
        .await
        .unwrap();
    let trail = AuditTrail::for_hive(&hive);
    let report = verify(&hive, &trail).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 6);
    (hive, trail)
}

async fn verify(hive: &Hive, trail: &AuditTrail) -> VerifyReport {
    trail
        .verify(hive, &Principal::operator("acme", "olga"), &"acme".into())
        .await
        .expect("verify runs")
}

fn assert_broken_at(report: &VerifyReport, seq: u64, kinds: &[BrokenLink]) {
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_broken, Some(seq), "{report:?}");
    assert!(
        report.broken.as_ref().is_some_and(|b| kinds.contains(b)),
        "{report:?}"
    );
    assert_eq!(report.checked, seq - 1);
}

// ----- SQLite ------------------------------------------------------------------

async fn sqlite_case(edit: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.db");
    let (hive, trail) = trail(&format!("sqlite://{}", path.display())).await;
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let sql = if edit {
        "update record_events set body = json_set(body, '$.details.tasks', 99) \
         where kind = 'audit' and id = 'acme' and seq = 3"
    } else {
        "delete from record_events where kind = 'audit' and id = 'acme' and seq = 3"
    };
    let changed = sqlx::query(sql).execute(&db).await.unwrap().rows_affected();
    assert_eq!(changed, 1);
    db.close().await;
    let report = verify(&hive, &trail).await;
    if edit {
        assert_broken_at(&report, 3, &[BrokenLink::HashMismatch]);
    } else {
        assert_broken_at(&report, 3, &[BrokenLink::Missing]);
    }
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_edited_audit_row_is_detected() {
    sqlite_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_deleted_audit_row_is_detected() {
    sqlite_case(false).await;
}

// ----- PostgreSQL ----------------------------------------------------------------

async fn postgres_case(edit: bool) {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    let schema = unique_name("tamper");
    let (hive, trail) = trail(&format!("{base}?schema={schema}")).await;
    let db = sqlx::PgPool::connect(&base).await.unwrap();
    let sql = if edit {
        format!(
            "update \"{schema}\".record_events \
             set body = jsonb_set(body::jsonb, '{{details,tasks}}', '99')::json \
             where kind = 'audit' and id = 'acme' and seq = 3"
        )
    } else {
        format!(
            "delete from \"{schema}\".record_events where kind = 'audit' and id = 'acme' and seq = 3"
        )
    };
    let changed = sqlx::query(AssertSqlSafe(sql))
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    db.close().await;
    let report = verify(&hive, &trail).await;
    if edit {
        assert_broken_at(&report, 3, &[BrokenLink::HashMismatch]);
    } else {
        assert_broken_at(&report, 3, &[BrokenLink::Missing]);
    }
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_edited_audit_row_is_detected() {
    postgres_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deleted_audit_row_is_detected() {
    postgres_case(false).await;
}

// ----- Redis -----------------------------------------------------------------------

async fn redis_case(edit: bool) {
    let Some(base) = server_url("HIVE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = unique_name("tamper");
    let (hive, trail) = trail(&format!("{base}?prefix={prefix}")).await;
    let client = redis::Client::open(base.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    // The trail of tenant `acme`: record kind `audit`, id `acme`, one stream
    // entry per event with id `{seq}-0` and the body under field `b`.
    let key = format!("{prefix}:re:audit:acme");
    if edit {
        // Streams cannot be edited in place: rewrite the whole stream with event
        // 3's body changed, as an attacker with server access would.
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(entries.len(), 6);
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        for (id, fields) in entries {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&key).arg(&id);
            for (f, v) in fields {
                let v = if id == "3-0" && f == "b" {
                    let mut body: serde_json::Value = serde_json::from_str(&v).unwrap();
                    body["details"]["tasks"] = json!(99);
                    body.to_string()
                } else {
                    v
                };
                cmd.arg(f).arg(v);
            }
            let _: String = cmd.query_async(&mut con).await.unwrap();
        }
    } else {
        let deleted: i64 = redis::cmd("XDEL")
            .arg(&key)
            .arg("3-0")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
    }
    let report = verify(&hive, &trail).await;
    if edit {
        assert_broken_at(&report, 3, &[BrokenLink::HashMismatch]);
    } else {
        assert_broken_at(&report, 3, &[BrokenLink::Missing]);
    }
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_edited_audit_entry_is_detected() {
    redis_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_deleted_audit_entry_is_detected() {
    redis_case(false).await;
}
