//! What the admin commands print: tables for people, JSON for scripts,
//! progress bars on stderr when it is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{Table, presets};
use hive::Timestamp;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::AdminError;

/// Writes `text` to stdout (a closed stdout is an error whose exit code says
/// so, never a panic).
pub(crate) fn print(text: &str) -> Result<(), AdminError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|error| AdminError::Write {
            target: "stdout".into(),
            error,
        })
}

/// Prints `value` as one pretty JSON document.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), AdminError> {
    let mut text = serde_json::to_string_pretty(value).map_err(json_error)?;
    text.push('\n');
    print(&text)
}

/// Prints `table`, or `empty` when it has no rows.
pub(crate) fn print_table(table: &Table, empty: &str) -> Result<(), AdminError> {
    if table.is_empty() {
        return print(&format!("{empty}\n"));
    }
    print(&format!("{table}\n"))
}

/// A note for people on stderr (ignored if stderr is gone).
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "honeycomb: {text}");
}

/// A table with `header`, in the style every admin command uses.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

/// A progress bar of `len` steps (a counter without a length when `None`)
/// on stderr, hidden when stderr is not a terminal.
pub(crate) fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(len, target);
    let template = match len {
        Some(_) => format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"),
        None => format!("{{spinner}} {what}: {{pos}} {{msg}}"),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// `t` as RFC 3339 in UTC, to the second.
pub(crate) fn time(t: Timestamp) -> String {
    let ms = u64::try_from(t.as_millis()).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// An optional time, or `-`.
pub(crate) fn time_or_dash(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

pub(crate) fn json_error(e: serde_json::Error) -> AdminError {
    AdminError::Hive(hive::Error::Backend {
        message: format!("cannot encode the output as JSON: {e}"),
        source: None,
    })
}
