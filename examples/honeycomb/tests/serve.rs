//! Starting and stopping Honeycomb: a taken port, health and version, a clean stop.

use std::net::SocketAddr;
use std::time::Duration;

use honeycomb::{Config, Layer, Origin, ServeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

fn config(flags: Layer) -> Config {
    Config::resolve(None, Layer::default(), flags).unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_at_start_naming_the_address_and_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let c = config(Layer {
        listen: Some(addr.to_string()),
        backend: Some("memory://".into()),
        ..Layer::default()
    });
    let err = honeycomb::serve(c, std::future::pending(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ServeError::AddrInUse { addr: a, origin: Origin::Flag("--listen") } if *a == addr),
        "{err:?}"
    );
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.contains(&addr.to_string()) && line.contains("--listen"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_version_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data").display().to_string()),
        ..Layer::default()
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let server = tokio::spawn(honeycomb::serve(
        c,
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let addr = addr_rx.await.unwrap();
    let health = get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let version = get(addr, "/api/version").await;
    assert!(version.starts_with("HTTP/1.1 200"), "{version}");
    let body = version.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["name"], "honeycomb");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let ready = get(addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready\n"),
        "{ready}"
    );
    honeycomb::healthcheck(addr, Duration::from_secs(5))
        .await
        .expect("healthy");
    let missing = get(addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // The default store is an SQLite file in the data directory.
    assert!(dir.path().join("data").join("hive.db").exists());
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped listening"
    );
    let down = honeycomb::healthcheck(addr, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(down.contains(&addr.to_string()), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_store_is_a_clear_error_with_the_secret_masked() {
    let c = config(Layer {
        listen: Some("127.0.0.1:0".into()),
        backend: Some("postgres://hive:s3cret@127.0.0.1:1/hive".into()),
        ..Layer::default()
    });
    let err = honeycomb::serve(c, std::future::pending(), |_| {})
        .await
        .unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, ServeError::Store { .. }), "{err:?}");
    assert!(
        line.contains("postgres://hive:****@127.0.0.1:1/hive") && !line.contains("s3cret"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_keys_turn_the_apiary_routes_on_and_bad_ones_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let data = dir.path().join("data");
    let layer = |keys: &std::path::Path| Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data.display().to_string()),
        registry_keys: Some(keys.display().to_string()),
        ..Layer::default()
    };
    // No key files: the start fails naming the file.
    let err = honeycomb::serve(config(layer(&keys)), std::future::pending(), |_| {})
        .await
        .unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, ServeError::Registry(_)), "{err:?}");
    assert!(line.contains("sandbox.pub"), "{line}");
    std::fs::write(keys.join("sandbox.pub"), "not a key").unwrap();
    std::fs::write(keys.join("production.pub"), "not a key").unwrap();
    let err = honeycomb::serve(config(layer(&keys)), std::future::pending(), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a valid key"), "{err}");

    // Real keys: the routes answer (an empty catalog).
    for name in ["sandbox", "production"] {
        let key = hive_registry::AgentSigningKey::generate();
        std::fs::write(keys.join(format!("{name}.pub")), key.public_key().pem()).unwrap();
        std::fs::write(keys.join(format!("{name}.key")), key.to_pkcs8_pem()).unwrap();
    }
    let c = config(layer(&keys));
    let token = honeycomb::admin::issue_token(
        &c,
        honeycomb::admin::IssueRequest {
            tenant: "acme".into(),
            principal: "root".into(),
            kind: "admin".into(),
            ttl: Some("1h".into()),
            description: "test".into(),
        },
    )
    .await
    .unwrap()
    .token;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let server = tokio::spawn(honeycomb::serve(
        c,
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let addr = addr_rx.await.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/experiments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("[]"), "{out}");
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_open_streams_and_long_polls_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data").display().to_string()),
        shutdown_grace: Some("5s".into()),
        ..Layer::default()
    });
    let token = honeycomb::admin::issue_token(
        &c,
        honeycomb::admin::IssueRequest {
            tenant: "acme".into(),
            principal: "u".into(),
            kind: "user".into(),
            ttl: None,
            description: String::new(),
        },
    )
    .await
    .unwrap()
    .token;
    c.rate_limit = 0;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let server = tokio::spawn(honeycomb::serve(
        c,
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let addr = addr_rx.await.unwrap();
    let send = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        s
    };
    let body = r#"{"agent":"echo","input":{}}"#;
    let mut s = send(format!(
        "POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let json = out.split("\r\n\r\n").nth(1).unwrap();
    let id = serde_json::from_str::<serde_json::Value>(json).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An event stream and a long poll, both waiting.
    let mut stream = send(format!(
        "GET /api/tasks/{id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    ))
    .await;
    let mut poll = send(format!(
        "GET /api/tasks/{id}?after_seq=1&wait=25s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stopped within the grace: {took:?}"
    );
    // The long poll was answered (unchanged), the stream ended.
    let mut answer = String::new();
    poll.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
        .await
        .expect("the stream closed")
        .unwrap();
}
