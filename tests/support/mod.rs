//! Shared by the cross-crate tests: private PostgreSQL and Redis servers that a
//! test may stop and restart (the shared ones of `scripts/test-all` must not be
//! disturbed), child processes that embed Hive, and small waits.

#![allow(dead_code)] // each test file uses a part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the tests run under CI (`CI=true`): a missing server is a failure there.
pub(crate) fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says loudly that a test cannot run here; panics under CI.
pub(crate) fn skip_or_fail(what: &str) {
    assert!(!under_ci(), "{what} (CI=true: this must not be skipped)");
    eprintln!("SKIPPED: {what} (run scripts/test-all; under CI=true this fails)");
}

/// A free TCP port on loopback.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_port(port: u16, open: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if ok == open {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A PostgreSQL server of this test's own, in a temporary folder, on a free
/// port. As root it runs as the `postgres` user (initdb refuses root).
pub(crate) struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PgServer {
    /// Starts one, or `None` (after `skip_or_fail`) if PostgreSQL is not installed.
    pub(crate) fn start() -> Option<PgServer> {
        let Some(bin) = pg_bin() else {
            skip_or_fail("PostgreSQL server binaries not found under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("hive-pg-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let s = PgServer { dir, bin, port };
        std::fs::create_dir_all(s.dir.path().join("sock")).unwrap();
        if is_root() {
            run(Command::new("chmod").arg("755").arg(s.dir.path()));
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(s.dir.path()));
        }
        s.pg(&[
            "initdb",
            "-D",
            s.data().to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        s.start_server();
        s.pg(&[
            "psql",
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "create database hive",
        ]);
        Some(s)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, args: &[&str]) {
        let exe = self.bin.join(args[0]);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(&args[1..]).current_dir(self.dir.path());
        run(&mut cmd);
    }

    fn start_server(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on -c max_connections=100",
            self.port,
            self.dir.path().join("sock").display()
        );
        let log = self.dir.path().join("server.log");
        self.pg(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            wait_port(self.port, true, Duration::from_secs(30)),
            "PostgreSQL did not open its port"
        );
    }

    /// The URL of its `hive` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/hive", self.port)
    }

    /// Stops it (fast shutdown: clients are disconnected).
    pub(crate) fn stop(&self) {
        self.pg(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
        assert!(wait_port(self.port, false, Duration::from_secs(30)));
    }

    /// Starts it again on the same port and data.
    pub(crate) fn restart(&self) {
        self.start_server();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let exe = self.bin.join("pg_ctl");
            let mut cmd = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(exe);
                c
            } else {
                Command::new(exe)
            };
            let _ = cmd
                .args([
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .current_dir(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A Redis server of this test's own, with an append-only file fsynced on
/// every write (so that a restart loses nothing acknowledged).
pub(crate) struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` (after `skip_or_fail`) if redis-server is missing.
    pub(crate) fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            skip_or_fail("redis-server is not installed");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("hive-redis-")
            .tempdir()
            .expect("temp dir");
        let mut s = RedisServer {
            dir,
            port: free_port(),
            child: None,
        };
        s.restart();
        Some(s)
    }

    /// The URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it (SIGTERM: Redis flushes its append-only file and exits).
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        assert!(wait_port(self.port, false, Duration::from_secs(30)));
    }

    /// Starts it (again) on the same port and files.
    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        assert!(
            wait_port(self.port, true, Duration::from_secs(30)),
            "Redis did not open its port"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process that embeds Hive: this test binary, re-run with only its
/// ignored entry-point test selected. The child reads its settings from the
/// environment and runs until its stdin closes (or it is killed).
pub(crate) struct HostProcess {
    child: Child,
}

impl HostProcess {
    /// Starts `entry` (an `#[ignore]`d test of the current test binary) with `env`.
    pub(crate) fn spawn(entry: &str, env: &[(&str, String)]) -> HostProcess {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        HostProcess {
            child: cmd.spawn().expect("child process starts"),
        }
    }

    /// Kills it at once (SIGKILL): no cleanup, no report.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (closes its stdin) and waits.
    pub(crate) fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child process: returns when the parent closes our stdin.
pub(crate) async fn until_stdin_closes() {
    tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .ok();
}

/// A file path as a `sqlite://` URL.
pub(crate) fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}
