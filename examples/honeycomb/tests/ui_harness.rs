//! The browser-test harness itself, against tiny pages served from the test:
//! axe-core finds what it should (and nothing on a clean page), screenshots
//! are real PNGs, `wait_for` sees a late DOM change, the window size holds.

mod browser;

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use browser::Browser;
use futures::FutureExt;

const GOOD: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Good page</title></head>
<body>
<main>
  <h1>Tasks</h1>
  <form>
    <label for="q">Search tasks</label>
    <input id="q" name="q" type="search">
    <button type="submit">Search</button>
  </form>
</main>
</body>
</html>"#;

const BAD: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>Bad page</title></head>
<body>
<main>
  <h1>Tasks</h1>
  <img src="/logo.png" width="40" height="40">
  <form><input type="text" name="q"></form>
</main>
</body>
</html>"#;

const LATE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Late page</title></head>
<body>
<main>
  <h1>Waiting</h1>
  <div id="slot"></div>
  <script>
    setTimeout(() => {
      const p = document.createElement('p');
      p.id = 'late';
      p.textContent = 'arrived';
      document.getElementById('slot').appendChild(p);
    }, 300);
  </script>
</main>
</body>
</html>"#;

/// Serves the pages on 127.0.0.1:0; returns the base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/good", get(|| async { Html(GOOD) }))
        .route("/bad", get(|| async { Html(BAD) }))
        .route("/late", get(|| async { Html(LATE) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

fn skip_without_axe() -> bool {
    if browser::axe_source_path().is_none()
        && !matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
    {
        eprintln!("SKIPPED: axe-core not found (run scripts/ui-deps and set HIVE_AXE_JS)");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_page_has_no_serious_or_critical_violations() {
    let Some(b) = Browser::start().await else {
        return;
    };
    if skip_without_axe() {
        return;
    }
    let base = serve().await;
    b.goto(&format!("{base}/good")).await;
    assert_eq!(b.eval("document.title").await, "Good page");
    let violations = b.axe().await;
    assert!(violations.is_empty(), "clean page: {violations:#?}");
    b.assert_accessible("/good").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_page_reports_image_alt_label_and_lang() {
    let Some(b) = Browser::start().await else {
        return;
    };
    if skip_without_axe() {
        return;
    }
    let base = serve().await;
    b.goto(&format!("{base}/bad")).await;
    let violations = b.axe().await;
    let ids: Vec<&str> = violations.iter().map(|v| v.id.as_str()).collect();
    for want in ["image-alt", "label", "html-has-lang"] {
        assert!(ids.contains(&want), "{want} missing from {violations:#?}");
    }
    assert!(
        violations
            .iter()
            .all(|v| v.impact == "serious" || v.impact == "critical"),
        "only serious/critical are returned: {violations:#?}"
    );
    let img = violations.iter().find(|v| v.id == "image-alt").unwrap();
    assert_eq!(img.impact, "critical");
    assert_eq!(img.nodes, 1);
    assert_eq!(img.targets, ["img"]);
    assert!(!img.help.is_empty());

    // Running axe twice on one page (axe already injected) gives the same.
    let again = b.axe().await;
    assert_eq!(again, violations);

    let panic = std::panic::AssertUnwindSafe(b.assert_accessible("the bad page"))
        .catch_unwind()
        .await
        .expect_err("assert_accessible must panic on the bad page");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("the bad page"), "{msg}");
    assert!(
        msg.contains("image-alt") && msg.contains("html-has-lang"),
        "{msg}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_is_a_png_of_the_viewport() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let base = serve().await;
    b.goto(&format!("{base}/good")).await;
    assert_eq!(b.eval("window.innerWidth").await, 1280);
    assert_eq!(b.eval("window.innerHeight").await, 900);
    let path = b.screenshot("ui-harness good").await;
    assert!(
        path.ends_with("ui-screenshots/ui-harness_good.png"),
        "{}",
        path.display()
    );
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        path.display()
    );
    // IHDR: width and height, big-endian, at bytes 16..24.
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (1280, 900));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrow_window_keeps_its_size() {
    let Some(b) = Browser::start_with_size(390, 844).await else {
        return;
    };
    let base = serve().await;
    b.goto(&format!("{base}/good")).await;
    assert_eq!(
        b.eval("[window.innerWidth, window.innerHeight]").await,
        serde_json::json!([390, 844])
    );
    let path = b.screenshot("ui-harness narrow").await;
    let png = std::fs::read(&path).unwrap();
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(w, 390);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_sees_a_late_dom_change() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let base = serve().await;
    b.goto(&format!("{base}/late")).await;
    // The load event has fired but the 300 ms timer has not.
    assert_eq!(
        b.eval("document.getElementById('late') === null;").await,
        true
    );
    b.wait_for(
        "document.getElementById('late') !== null",
        Duration::from_secs(5),
        "the late paragraph",
    )
    .await;
    assert_eq!(
        b.eval("document.getElementById('late').textContent").await,
        "arrived"
    );

    let panic = std::panic::AssertUnwindSafe(b.wait_for(
        "document.getElementById('never') !== null",
        Duration::from_millis(200),
        "an element that never comes",
    ))
    .catch_unwind()
    .await
    .expect_err("wait_for must panic on timeout");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("an element that never comes"), "{msg}");
    b.close().await;
}
