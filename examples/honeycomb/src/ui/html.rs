//! The console's frame and small pieces: the layout, times, state badges,
//! JSON blocks, copy buttons.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::StatusCode;
use hive::Timestamp;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::UiCaller;

/// The section a page belongs to (highlighted in the navigation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nav {
    None,
    Tasks,
    Workflows,
    Experiments,
    Audit,
    Nodes,
}

const SECTIONS: [(Nav, &str, &str); 5] = [
    (Nav::Tasks, "/ui/tasks", "Tasks"),
    (Nav::Workflows, "/ui/workflows", "Workflows"),
    (Nav::Experiments, "/ui/experiments", "Experiments"),
    (Nav::Audit, "/ui/audit", "Promotion audit"),
    (Nav::Nodes, "/ui/nodes", "Nodes"),
];

/// A whole page: header with navigation and the signed-in principal, the
/// time-format choice (shown by the script), and `body` as `main`.
pub(crate) fn layout(title: &str, caller: Option<&UiCaller>, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Honeycomb" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/tasks" { "Honeycomb" }
                    @if let Some(c) = caller {
                        nav aria-label="Sections" {
                            ul {
                                @for (section, href, label) in SECTIONS {
                                    li {
                                        @if section == nav {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span #whoami data-tenant=(c.p.tenant) data-principal=(c.p.id) {
                                (c.p.tenant) "/" (c.p.id) " · " (role(&c.p))
                            }
                            div #timefmt hidden {
                                label for="timefmt-select" { "Times" }
                                select #timefmt-select {
                                    option value="utc" { "UTC" }
                                    option value="local" { "Local" }
                                    option value="relative" { "Relative" }
                                }
                            }
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(c.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// The principal's role, as a word.
pub(crate) fn role(p: &hive::Principal) -> &'static str {
    match hive::principal::Role::of(&p.kind) {
        Some(hive::principal::Role::User) => "user",
        Some(hive::principal::Role::Operator) => "operator",
        Some(hive::principal::Role::Admin) => "admin",
        Some(hive::principal::Role::Worker) => "worker",
        None => "system",
    }
}

/// An error page (signed-in navigation is not shown: the page may be
/// answering a refused request).
pub(crate) fn error_page(status: StatusCode, title: &str, detail: &str) -> Markup {
    layout(
        title,
        None,
        Nav::None,
        html! {
            h1 { (status.as_u16()) " " (title) }
            p.alert role="alert" #error-detail { (detail) }
            p { a href="/ui/tasks" { "Back to the tasks" } }
        },
    )
}

/// RFC 3339 (UTC, milliseconds) of a timestamp.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    let ms = t.as_millis().max(0) as u64;
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A `<time>` in UTC; the script shows it local or relative on request.
pub(crate) fn time(t: Timestamp) -> Markup {
    let iso = rfc3339(t);
    let shown = format!("{} UTC", iso[..19].replace('T', " "));
    html! { time datetime=(iso) { (shown) } }
}

/// An optional time, or a dash.
pub(crate) fn maybe_time(t: Option<Timestamp>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// A duration between two times, humanly (`1.25 s`, `3 min 2 s`).
pub(crate) fn duration(from: Timestamp, to: Timestamp) -> String {
    let ms = (to.as_millis() - from.as_millis()).max(0) as u64;
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.2} s", ms as f64 / 1000.0);
    }
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// A state badge (`class="badge state-<state>"`).
pub(crate) fn badge(state: &str) -> Markup {
    html! { span class={ "badge state-" (state) } data-state=(state) { (state.replace('_', " ")) } }
}

/// An id with a copy button (the button appears with the script).
pub(crate) fn copyable(id: &str) -> Markup {
    html! {
        code.id { (id) }
        " "
        button.copy type="button" data-copy=(id) hidden aria-label={ "Copy " (id) } { "Copy" }
    }
}

/// The most bytes of JSON shown inline.
const JSON_INLINE: usize = 64 * 1024;

/// Pretty JSON in a `<pre>`, cut at 64 KiB with a marker.
pub(crate) fn json_block(v: &serde_json::Value) -> Markup {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    let cut = text.len() > JSON_INLINE;
    if cut {
        let mut end = JSON_INLINE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    html! {
        pre.json tabindex="0" { (text) }
        @if cut { p.muted { "(cut at 64 KiB; the whole value is at the API)" } }
    }
}

/// Percent-encodes a query value.
pub(crate) fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A query string from pairs, skipping empty values.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// An inline script-free `<noscript>` hint for live sections.
pub(crate) fn live_hint() -> Markup {
    html! {
        noscript { p.muted { "Live updates need JavaScript; reload the page to see new events." } }
    }
}

/// Raw HTML (trusted, built here).
pub(crate) fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}
