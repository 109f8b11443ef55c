//! An APIary registry for the tests: Debian's `docker-registry` on a free
//! loopback port (under `CI=true` a missing binary fails), and the sandbox
//! agents the tests publish to it.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hive::prelude::*;
use hive_registry::{
    AgentSigningKey, Apiary, Channel, Link, PromotionPolicy, Provenance, PublishRequest,
    RegistryConfig,
};

pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(port: u16) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A `docker-registry` on a free loopback port, or `None` outside CI when it
/// is not installed.
pub fn registry() -> Option<Registry> {
    let bin = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file());
    let Some(bin) = bin else {
        let ci = matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"));
        assert!(
            !ci,
            "CI=true: docker-registry is not installed (scripts/test-all installs it)"
        );
        eprintln!("SKIPPED: docker-registry is not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: honeycomb-test\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = Registry {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(port) != Some(200) {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(r)
}

/// A sandbox agent from loop `l1` with its accuracy.
pub fn request(name: &str, accuracy: f64) -> PublishRequest {
    PublishRequest {
        description: format!("{name} agent"),
        metrics: [("accuracy".to_owned(), accuracy)].into(),
        provenance: Some(Provenance {
            builder_id: "https://hive.example/loops/l1".into(),
            invocation_id: format!("run-{name}"),
            rationale: Some(Link::new(format!("s3://hive/rationale/{name}.md"))),
            ..Provenance::default()
        }),
        ..PublishRequest::new(name, "1.0.0", format!("{name} weights").into_bytes())
    }
}

/// An Apiary on `reg` whose policy needs `accuracy >= 0.9`, with fresh
/// sandbox and production keys.
pub fn apiary(hive: &Hive, reg: &Registry) -> Apiary {
    let sandbox = AgentSigningKey::generate();
    let production = AgentSigningKey::generate();
    let config = RegistryConfig::new(&format!("http://127.0.0.1:{}", reg.port), "hive")
        .unwrap()
        .with_trusted_key(Channel::Sandbox, sandbox.public_key().clone())
        .with_trusted_key(Channel::Production, production.public_key().clone());
    Apiary::builder(hive.clone(), config)
        .signing_key(Channel::Sandbox, sandbox)
        .signing_key(Channel::Production, production)
        .promotion_policy(PromotionPolicy::new().require_metric("accuracy", 0.9))
        .build()
        .unwrap()
}
