//! Reading server replies without trusting them: every shape or parse problem is
//! `Error::Backend` naming what was being read, never a panic.

use hive_core::clock::Timestamp;
use hive_core::{Error, Result};
use redis::Value;

pub(super) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Backend {
        message: format!("redis: unexpected data: {what}"),
        source: None,
    }
}

/// The bytes of a string reply; `None` for nil.
pub(super) fn opt_bytes(v: &Value) -> Result<Option<&[u8]>> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.as_bytes())),
        Value::VerbatimString { text, .. } => Ok(Some(text.as_bytes())),
        Value::Okay => Ok(Some(b"OK")),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

pub(super) fn opt_str(v: &Value) -> Result<Option<&str>> {
    match opt_bytes(v)? {
        None => Ok(None),
        Some(b) => std::str::from_utf8(b)
            .map(Some)
            .map_err(|_| corrupt("a string that is not UTF-8")),
    }
}

pub(super) fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    opt_str(v)?.ok_or_else(|| corrupt(format_args!("{what} is missing")))
}

pub(super) fn opt_int(v: &Value) -> Result<Option<i64>> {
    match v {
        Value::Nil => Ok(None),
        Value::Int(i) => Ok(Some(*i)),
        Value::Double(d) if d.fract() == 0.0 => Ok(Some(*d as i64)),
        other => match opt_str(other)? {
            None => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| corrupt(format_args!("expected an integer, got {s:?}"))),
        },
    }
}

/// Whether a count read from Redis (a task's `seq`, a feed's length) is past a
/// client's cursor, whatever the cursor (up to `u64::MAX`).
pub(super) fn past(count: i64, after: u64) -> bool {
    u64::try_from(count).is_ok_and(|c| c > after)
}

pub(super) fn int_of(v: &Value, what: &str) -> Result<i64> {
    opt_int(v)?.ok_or_else(|| corrupt(format_args!("{what} is missing")))
}

pub(super) fn u64_of(v: &Value, what: &str) -> Result<u64> {
    u64::try_from(int_of(v, what)?).map_err(|_| corrupt(format_args!("{what} is negative")))
}

pub(super) fn time_of(v: &Value, what: &str) -> Result<Timestamp> {
    int_of(v, what).map(Timestamp::from_millis)
}

pub(super) fn array(v: &Value) -> Result<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(&[]),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// The bytes of a JSON field, for `serde_json::from_slice` (see [`from_json`]).
pub(super) fn json_bytes<'a>(v: &'a Value, what: &str) -> Result<&'a [u8]> {
    opt_bytes(v)?.ok_or_else(|| corrupt(format_args!("{what} is missing")))
}

pub(super) fn bad_json(what: &str, e: serde_json::Error) -> Error {
    Error::Backend {
        message: format!("redis: {what} is not valid: {e}"),
        source: Some(Box::new(e)),
    }
}

/// Parses a JSON field of a reply into the type the context asks for.
macro_rules! from_json {
    ($v:expr, $what:expr) => {
        serde_json::from_slice($crate::redis::decode::json_bytes($v, $what)?)
            .map_err(|e| $crate::redis::decode::bad_json($what, e))
    };
}
pub(super) use from_json;

pub(super) fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|_| corrupt(format_args!("{what} {s:?} does not parse")))
}

/// One stream entry: its id's first part, and its field → value pairs.
pub(super) type Entry<'a> = (u64, Vec<(&'a str, &'a Value)>);

/// The entries of an XRANGE reply.
pub(super) fn stream_entries(v: &Value) -> Result<Vec<Entry<'_>>> {
    let mut out = Vec::new();
    for entry in array(v)? {
        let parts = array(entry)?;
        let [id, fields] = parts else {
            return Err(corrupt("a stream entry without id and fields"));
        };
        let id = str_of(id, "stream id")?;
        let first = id.split('-').next().unwrap_or(id);
        let n = parse::<u64>(first, "stream id")?;
        let fields = array(fields)?;
        let mut pairs = Vec::with_capacity(fields.len() / 2);
        for pair in fields.chunks(2) {
            if let [k, val] = pair {
                pairs.push((str_of(k, "stream field")?, val));
            }
        }
        out.push((n, pairs));
    }
    Ok(out)
}

/// The value of `name` among stream entry fields.
pub(super) fn field<'a>(pairs: &[(&str, &'a Value)], name: &str) -> Result<&'a Value> {
    pairs
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| corrupt(format_args!("stream entry without {name}")))
}

pub(super) fn cannot_encode(e: serde_json::Error) -> Error {
    Error::Backend {
        message: format!("redis: cannot encode: {e}"),
        source: Some(Box::new(e)),
    }
}

/// Serializes to a JSON string, as `Result<String>`.
macro_rules! to_json {
    ($v:expr) => {
        serde_json::to_string($v).map_err($crate::redis::decode::cannot_encode)
    };
}
pub(super) use to_json;

#[cfg(test)]
mod tests {
    use super::past;

    #[test]
    fn a_count_is_past_a_cursor_only_when_greater() {
        assert!(past(5, 4));
        assert!(!past(4, 4));
        assert!(!past(0, 0));
        // A negative count (never stored) is past nothing.
        assert!(!past(-1, 0));
        // Cursors beyond what Redis can count are never reached.
        assert!(!past(i64::MAX, i64::MAX as u64));
        assert!(!past(i64::MAX, u64::MAX));
        assert!(past(i64::MAX, i64::MAX as u64 - 1));
    }
}
