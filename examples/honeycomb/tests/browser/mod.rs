//! A headless Chromium for the console's browser tests, driven over WebDriver.
//!
//! Include it from a test with `mod browser;`. [`Browser::start`] runs Debian's
//! `/usr/bin/chromedriver` on a free loopback port, which launches Debian's
//! `/usr/bin/chromium` (headless, fresh profile) — never a downloaded browser.
//! Both come from `scripts/ui-deps`, which also fetches axe-core (the
//! accessibility rules [`Browser::axe`] runs) into a cache folder and prints
//! `HIVE_AXE_JS=<path>` as its last line.
//!
//! When the browser is missing, `start` returns `None` (the test should return
//! early) — except under `CI=true`/`CI=1`, where it panics: CI never skips
//! quietly.

#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver gets to answer `/status` with `ready: true`.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long creating the session (launching Chromium) may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// WebDriver script and page-load timeouts for the session.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// True when `CI` says this is a CI run (`true` or `1`), where nothing skips.
fn under_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref().map(str::trim),
        Ok("true") | Ok("1")
    )
}

/// One axe-core rule that failed on the page, with a few of the elements it
/// failed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxeViolation {
    /// The axe rule id, e.g. `image-alt`, `label`, `html-has-lang`.
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// A one-line description of what the rule wants.
    pub help: String,
    /// Where the rule is documented.
    pub help_url: String,
    /// CSS selectors of (up to five of) the failing elements.
    pub targets: Vec<String>,
    /// How many elements failed the rule in all.
    pub nodes: usize,
}

impl fmt::Display for AxeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {} ({} element(s): {}) {}",
            self.impact,
            self.id,
            self.help,
            self.nodes,
            self.targets.join(", "),
            self.help_url
        )
    }
}

/// A headless Chromium session: the chromedriver child (on a free loopback
/// port, its whole process group killed on drop), a fresh temporary
/// `--user-data-dir`, and the WebDriver client.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    /// Holds the profile and the driver's log; removed on drop, after the
    /// driver and Chromium are gone.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts a 1280×900 headless Chromium; see [`Browser::start_with_size`].
    ///
    /// None (printing "SKIPPED: ...") when /usr/bin/chromium or
    /// /usr/bin/chromedriver is missing and CI is not "true"/"1"; under CI a
    /// missing browser panics with a message naming scripts/ui-deps.
    pub async fn start() -> Option<Browser> {
        Browser::start_with_size(1280, 900).await
    }

    /// Starts a headless Chromium whose window (and, headless, viewport) is
    /// `width`×`height` CSS pixels. Missing browser: as [`Browser::start`].
    pub async fn start_with_size(width: u32, height: u32) -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let what = format!(
                "browser tests need {} (install them with scripts/ui-deps)",
                missing.join(" and ")
            );
            if under_ci() {
                panic!("{what}; CI is set, so this fails instead of skipping");
            }
            eprintln!("SKIPPED: {what}");
            return None;
        }

        let dir = tempfile::Builder::new()
            .prefix("hive-browser-")
            .tempdir()
            .expect("create a temporary folder for the browser profile");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).expect("create the browser profile folder");
        let driver_log = dir.path().join("chromedriver.log");

        // A port taken between probing and chromedriver's bind makes the
        // driver exit at once: try again on another port.
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let port = free_port();
            let mut driver = spawn_driver(port, &driver_log);
            match wait_ready(&mut driver, port, &driver_log).await {
                Ok(()) => break (driver, port),
                Err(e) if attempt < 3 => {
                    eprintln!("browser: chromedriver on port {port} did not start ({e}); retrying");
                    kill_group(&mut driver);
                }
                Err(e) => {
                    kill_group(&mut driver);
                    panic!(
                        "chromedriver did not become ready on 127.0.0.1:{port}: {e}\n\
                         --- chromedriver output ---\n{}",
                        read_log(&driver_log)
                    );
                }
            }
        };

        let mut browser = Browser {
            client: None,
            driver,
            driver_log,
            dir,
        };

        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": chromium_args(width, height, &profile),
                // Headless "new" Chromium keeps a real window frame: with
                // --window-size alone the viewport is ~143 px shorter and
                // never narrower than 500 px. Emulating the device metrics
                // (desktop: no touch, not mobile) makes the viewport and
                // screenshots exactly width x height.
                "mobileEmulation": {
                    "deviceMetrics": {
                        "width": width,
                        "height": height,
                        "pixelRatio": 1.0,
                        "touch": false,
                        "mobile": false,
                    },
                },
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let connect = async {
            ClientBuilder::rustls()
                .expect("rustls connector for the WebDriver client")
                .capabilities(caps)
                .connect(&webdriver)
                .await
        };
        let client = match tokio::time::timeout(SESSION_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "could not start Chromium through chromedriver: {e}\n\
                 --- chromedriver output ---\n{}",
                read_log(&browser.driver_log)
            ),
            Err(_) => panic!(
                "Chromium did not start within {SESSION_TIMEOUT:?}\n\
                 --- chromedriver output ---\n{}",
                read_log(&browser.driver_log)
            ),
        };
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(SCRIPT_TIMEOUT),
                Some(PAGE_LOAD_TIMEOUT),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set WebDriver timeouts");
        browser.client = Some(client);
        Some(browser)
    }

    /// The WebDriver client, for anything this wrapper does not cover
    /// (finding elements, clicking, typing, forms).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser already closed")
    }

    /// Navigates to `url` and waits for the page's load event.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("browser could not open {url}: {e}"));
    }

    /// Runs axe-core (injected from the file named by env HIVE_AXE_JS, else
    /// from the cache path scripts/ui-deps uses; under CI a missing file
    /// panics) on the current page and returns the violations whose impact is
    /// "serious" or "critical", each as (id, impact, help, a few target
    /// selectors). Outside CI a missing file prints "SKIPPED: ..." and
    /// returns no violations; see [`axe_source_path`].
    pub async fn axe(&self) -> Vec<AxeViolation> {
        let Some(path) = axe_source_path() else {
            let what = match std::env::var_os("HIVE_AXE_JS").filter(|v| !v.is_empty()) {
                Some(p) => format!(
                    "axe-core not found: HIVE_AXE_JS={} is no file (run scripts/ui-deps)",
                    Path::new(&p).display()
                ),
                None => format!(
                    "axe-core not found: HIVE_AXE_JS unset and {} missing (run scripts/ui-deps)",
                    default_axe_path().display()
                ),
            };
            if under_ci() {
                panic!("{what}; CI is set, so this fails instead of skipping");
            }
            eprintln!("SKIPPED: accessibility check: {what}");
            return Vec::new();
        };
        let c = self.client();
        let loaded = c
            .execute("return typeof window.axe === 'object';", vec![])
            .await
            .expect("check for axe-core on the page");
        if loaded != Value::Bool(true) {
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read axe-core from {}: {e}", path.display()));
            c.execute(&source, vec![])
                .await
                .unwrap_or_else(|e| panic!("inject axe-core from {}: {e}", path.display()));
        }
        let out = c
            .execute_async(AXE_RUN, vec![])
            .await
            .expect("run axe-core on the page");
        if let Some(err) = out.get("error") {
            panic!("axe-core failed on the page: {err}");
        }
        let violations = out
            .get("violations")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("unexpected axe-core result: {out}"));
        violations
            .iter()
            .map(|v| {
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                AxeViolation {
                    id: s("id"),
                    impact: s("impact"),
                    help: s("help"),
                    help_url: s("helpUrl"),
                    targets: v
                        .get("targets")
                        .and_then(Value::as_array)
                        .map(|t| {
                            t.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    nodes: v.get("nodes").and_then(Value::as_u64).unwrap_or(0) as usize,
                }
            })
            .filter(|v| v.impact == "serious" || v.impact == "critical")
            .collect()
    }

    /// Panics listing every serious/critical violation, naming `page`.
    pub async fn assert_accessible(&self, page: &str) {
        let violations = self.axe().await;
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(|v| format!("  - {v}")).collect();
            panic!(
                "{page}: {} serious/critical accessibility violation(s):\n{}",
                violations.len(),
                list.join("\n")
            );
        }
    }

    /// Saves a PNG to <workspace target dir>/ui-screenshots/<name>.png
    /// (workspace target = CARGO_TARGET_DIR if set, else
    /// CARGO_MANIFEST_DIR/../../target); returns the path. Characters of
    /// `name` other than letters, digits, `-`, `_` and `.` become `_`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Polls a JS expression (returning a boolean) every 25 ms until true or
    /// `timeout`, panicking with `what` on timeout. An expression that throws
    /// (say, mid-navigation) counts as not yet true; the last error is shown
    /// on timeout.
    pub async fn wait_for(&self, js: &str, timeout: Duration, what: &str) {
        let script = format!("return !!({});", trim_expr(js));
        let start = Instant::now();
        let mut last;
        loop {
            match self.client().execute(&script, vec![]).await {
                Ok(Value::Bool(true)) => return,
                Ok(v) => last = format!("last value: {v}"),
                Err(e) => last = format!("last error: {e}"),
            }
            if start.elapsed() >= timeout {
                panic!("timed out after {timeout:?} waiting for {what} (`{js}`; {last})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Evaluates JS and returns its JSON value. `js` is an expression (a
    /// trailing `;` is fine); for statements use an arrow function called in
    /// place, `(() => { ...; return x; })()`. DOM elements come back as
    /// WebDriver element references.
    pub async fn eval(&self, js: &str) -> Value {
        let script = format!("return ({});", trim_expr(js));
        self.client()
            .execute(&script, vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluating `{js}`: {e}"))
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver
    /// and removes the profile. Dropping a `Browser` without closing it also
    /// cleans up, by killing the driver's process group.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            // A failure here is no test failure: drop kills what is left.
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers share chromedriver's process group (the
        // crash handler, in its own session, exits with them). No session
        // delete here (no async in drop): after `close` Chromium is already
        // gone; otherwise the group kill ends it.
        kill_group(&mut self.driver);
    }
}

/// The axe-core script the harness injects: env `HIVE_AXE_JS` if set, else
/// the cache path `scripts/ui-deps` fills; `None` when that file is missing.
pub fn axe_source_path() -> Option<PathBuf> {
    let path = match std::env::var_os("HIVE_AXE_JS").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => default_axe_path(),
    };
    path.is_file().then_some(path)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/hive/axe-core-VERSION/axe.min.js`, with
/// VERSION read from `AXE_VERSION=` in scripts/ui-deps so the two never drift.
fn default_axe_path() -> PathBuf {
    let script = workspace_root().join("scripts/ui-deps");
    let text = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("read {}: {e}", script.display()));
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("AXE_VERSION="))
        .map(|v| v.trim_matches(|c| c == '"' || c == '\''))
        .unwrap_or_else(|| panic!("no AXE_VERSION= line in {}", script.display()));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache
        .join("hive")
        .join(format!("axe-core-{version}"))
        .join("axe.min.js")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<workspace target>/ui-screenshots`; a relative `CARGO_TARGET_DIR` is
/// taken relative to the workspace root.
fn screenshot_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        }
        None => workspace_root().join("target"),
    };
    target.join("ui-screenshots")
}

/// Runs axe on the whole document and hands back a small JSON summary (the
/// full result has every passing check too and is large).
const AXE_RUN: &str = r#"
const done = arguments[arguments.length - 1];
const sel = (t) => Array.isArray(t) ? t.join(' >>> ') : String(t);
window.axe.run(document, { resultTypes: ['violations'] })
  .then((r) => done({
    violations: r.violations.map((v) => ({
      id: v.id,
      impact: v.impact || '',
      help: v.help,
      helpUrl: v.helpUrl,
      nodes: v.nodes.length,
      targets: v.nodes.slice(0, 5).map((n) => n.target.map(sel).join(' ')),
    })),
  }))
  .catch((e) => done({ error: String((e && e.stack) || e) }));
"#;

/// The flags Chromium runs with.
fn chromium_args(width: u32, height: u32, profile: &Path) -> Vec<String> {
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ]
}

fn trim_expr(js: &str) -> &str {
    js.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free loopback port")
        .port()
}

/// chromedriver in a process group of its own (which Chromium joins), its
/// output appended to `log`.
fn spawn_driver(port: u16, log: &Path) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = out.try_clone().expect("clone the chromedriver log handle");
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"))
}

/// Polls chromedriver's `/status` until it says ready, it exits, or
/// [`DRIVER_READY_TIMEOUT`] passes.
async fn wait_ready(driver: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/status");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client for chromedriver's /status");
    let start = Instant::now();
    let mut last;
    loop {
        if let Some(status) = driver.try_wait().expect("poll chromedriver") {
            return Err(format!("chromedriver exited ({status}): {}", read_log(log)));
        }
        match http.get(&url).send().await {
            Ok(r) => match r.json::<Value>().await {
                Ok(v) if v["value"]["ready"] == Value::Bool(true) => return Ok(()),
                Ok(v) => last = format!("status: {v}"),
                Err(e) => last = format!("status body: {e}"),
            },
            Err(e) => last = format!("status request: {e}"),
        }
        if start.elapsed() >= DRIVER_READY_TIMEOUT {
            return Err(format!(
                "not ready after {DRIVER_READY_TIMEOUT:?} (last: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL to the driver's whole process group (Chromium included), then
/// reap the driver.
fn kill_group(driver: &mut Child) {
    if matches!(driver.try_wait(), Ok(Some(_))) {
        return;
    }
    let pgid = format!("-{}", driver.id());
    let killed = Command::new("kill")
        .args(["-KILL", "--", &pgid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !killed {
        let _ = driver.kill();
    }
    let _ = driver.wait();
}

fn read_log(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(s) if s.trim().is_empty() => "(empty)".into(),
        Ok(s) => s,
        Err(e) => format!("(unreadable: {e})"),
    }
}
