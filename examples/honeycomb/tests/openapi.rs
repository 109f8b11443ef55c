//! The OpenAPI 3.1 document: generated from the routes, served, kept in
//! `docs/openapi.json`, naming every route — and real answers validate
//! against the schemas it gives them.

mod common;

use common::Server;
use hive::iam::TokenKind;
use reqwest::Method;
use serde_json::{Value, json};

/// Every route the API serves, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/tasks"),
    ("get", "/api/tasks"),
    ("get", "/api/tasks/{id}"),
    ("get", "/api/tasks/{id}/result"),
    ("post", "/api/tasks/{id}/cancel"),
    ("post", "/api/tasks/cancel"),
    ("get", "/api/tasks/{id}/events"),
    ("get", "/api/tasks/{id}/logs"),
    ("get", "/api/tasks/{id}/diagnostics"),
    ("post", "/api/workflows"),
    ("get", "/api/workflows"),
    ("get", "/api/workflows/{id}"),
    ("post", "/api/workflows/{id}/cancel"),
    ("get", "/api/workflows/{id}/events"),
    ("get", "/api/feed"),
    ("get", "/api/feed/events"),
    ("post", "/api/consumers/{name}/ack"),
    ("get", "/api/consumers/{name}/unacked"),
    ("post", "/api/nodes"),
    ("get", "/api/nodes"),
    ("get", "/api/nodes/{id}"),
    ("delete", "/api/nodes/{id}"),
    ("post", "/api/nodes/{id}/drain"),
    ("post", "/api/nodes/{id}/worker-tokens"),
    ("post", "/api/worker/claim"),
    ("post", "/api/worker/start"),
    ("post", "/api/worker/heartbeat"),
    ("post", "/api/worker/log"),
    ("post", "/api/worker/report"),
    ("post", "/api/worker/node-heartbeat"),
    ("post", "/api/tokens"),
    ("get", "/api/tokens"),
    ("delete", "/api/tokens/{id}"),
    ("get", "/api/audit"),
    ("get", "/api/audit/verify"),
    ("get", "/api/whoami"),
    ("get", "/api/agents"),
    ("get", "/api/agents/get"),
    ("get", "/api/experiments"),
    ("post", "/api/experiments/promote"),
];

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a local ref");
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Validates `value` against `schema`: the subset of JSON Schema the
/// generator emits (`$ref`, `type` with null, `properties`, `required`,
/// `items`, `oneOf`/`anyOf`/`allOf`, `enum`, `minimum`).
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(doc, s, value, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema.get(key).and_then(Value::as_array)
            && !any.iter().any(|s| validate(doc, s, value, at).is_ok())
        {
            return Err(format!("{at}: matches none of {key}"));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        return Err(format!("{at}: {value} not in {e:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        return Err(format!("{at}: {n} < {min}"));
    }
    if let Some(obj) = value.as_object() {
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{at}: missing required {r}"));
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in obj {
                match props.get(k) {
                    Some(s) => validate(doc, s, v, &format!("{at}.{k}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: unexpected {k}"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The schema the document gives `method path` answering `status`.
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let r = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(!r.is_null(), "{method} {path} documents no {status}");
    let content = r["content"].as_object().expect("content");
    let (_, media) = content.iter().next().expect("a media type");
    &media["schema"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_every_route_and_is_kept_in_docs() {
    let s = Server::start().await;
    let doc: Value = s
        .req(Method::GET, "/api/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut documented = 0;
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented += 1;
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} is not unique");
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not in the test's list"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, r) in responses {
                assert!(
                    r["description"].is_string(),
                    "{method} {path} {status}: a description"
                );
                if let Some(content) = r["content"].as_object() {
                    for media in content.values() {
                        resolve(&doc, &media["schema"]);
                    }
                }
            }
        }
    }
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is served but not documented"
        );
    }
    assert_eq!(documented, ROUTES.len());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // The repo's copy is the document the code generates.
    let kept = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .expect("docs/openapi.json");
    let kept: Value = serde_json::from_str(&kept).expect("JSON");
    assert!(
        kept == doc,
        "docs/openapi.json is stale: run `cargo run -p honeycomb -- openapi > docs/openapi.json`"
    );
    // The docs page loads it.
    let page = s
        .req(Method::GET, "/api/docs", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/api/openapi.json"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_validate_against_their_schemas() {
    let s = Server::start().await;
    let doc: Value = s
        .req(Method::GET, "/api/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = s.token("acme", "alice", TokenKind::User).await;
    let check = |method: &str, path: &str, status: u16, body: &Value| {
        let schema = response_schema(&doc, method, path, status);
        if let Err(e) = validate(&doc, schema, body, "$") {
            panic!("{method} {path} {status}: {e}\n{body:#}");
        }
    };
    let r = s
        .post(
            "/api/tasks",
            &t,
            json!({"agent": "echo", "input": {"a": 1}, "priority": 3}),
        )
        .await;
    let created: Value = r.json().await.unwrap();
    check("post", "/api/tasks", 201, &created);
    let id = created["id"].as_str().unwrap().to_owned();
    let snap: Value = s
        .get(&format!("/api/tasks/{id}"), &t)
        .await
        .json()
        .await
        .unwrap();
    check("get", "/api/tasks/{id}", 200, &snap);
    let page: Value = s.get("/api/tasks", &t).await.json().await.unwrap();
    check("get", "/api/tasks", 200, &page);
    let missing: Value = s
        .get(&format!("/api/tasks/{}", hive::TaskId::new()), &t)
        .await
        .json()
        .await
        .unwrap();
    check("get", "/api/tasks/{id}", 404, &missing);
    let (_, worker) = s.node(&t, 2).await;
    let node: Value = s
        .post("/api/nodes", &t, json!({"name": "n2", "capacity": 1}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/nodes", 201, &node);
    let claim: Value = s
        .post("/api/worker/claim", &worker, json!({"start": true}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/worker/claim", 200, &claim);
    assert_eq!(claim["tasks"].as_array().map(Vec::len), Some(1), "{claim}");
    let token = claim["tasks"][0]["token"].clone();
    let logged: Value = s
        .post(
            "/api/worker/log",
            &worker,
            json!({"lines": [{"token": token, "stream": "stdout", "line": "hi"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/worker/log", 200, &logged);
    let reported: Value = s
        .post(
            "/api/worker/report",
            &worker,
            json!({"reports": [{"token": token, "outcome": "success", "output": {"ok": true}}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/worker/report", 200, &reported);
    let stale: Value = s
        .post("/api/worker/report", &worker, json!({"reports": [{"token": token, "outcome": "failure", "error": {"code": "x", "message": "y"}}]}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/worker/report", 200, &stale);
    let logs: Value = s
        .get(&format!("/api/tasks/{id}/logs"), &t)
        .await
        .json()
        .await
        .unwrap();
    check("get", "/api/tasks/{id}/logs", 200, &logs);
    let result: Value = s
        .get(&format!("/api/tasks/{id}/result"), &t)
        .await
        .json()
        .await
        .unwrap();
    check("get", "/api/tasks/{id}/result", 200, &result);
    let other = s.submit(&t, "echo").await;
    let ack: Value = s
        .post(&format!("/api/tasks/{other}/cancel"), &t, json!({}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/tasks/{id}/cancel", 200, &ack);
    let conflict: Value = s
        .post(&format!("/api/tasks/{other}/cancel"), &t, json!({}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/tasks/{id}/cancel", 409, &conflict);
    let bulk: Value = s
        .post("/api/tasks/cancel", &t, json!({"dry_run": true}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/tasks/cancel", 200, &bulk);
    let wf: Value = s
        .post("/api/workflows", &t, json!({"name": "w", "steps": [{"id": "a", "agent": "x", "input": {}}, {"id": "b", "agent": "y", "input": {}, "depends_on": ["a"]}]}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/workflows", 201, &wf);
    let view: Value = s
        .get(
            &format!("/api/workflows/{}", wf["id"].as_str().unwrap()),
            &t,
        )
        .await
        .json()
        .await
        .unwrap();
    check("get", "/api/workflows/{id}", 200, &view);
    assert_eq!(
        view["steps"][0]["task_states"][0]["state"], "pending",
        "{view}"
    );
    assert_eq!(view["steps"][1]["state"], "waiting", "{view}");
    let bad: Value = s
        .post("/api/tasks", &t, json!({"agent": ""}))
        .await
        .json()
        .await
        .unwrap();
    check("post", "/api/tasks", 422, &bad);
    let bad_query: Value = s
        .get("/api/tasks?colour=red", &t)
        .await
        .json()
        .await
        .unwrap();
    check("get", "/api/tasks", 400, &bad_query);
    s.stop().await;
}
