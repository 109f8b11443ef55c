//! Canonical JSON: one byte string per JSON value, whatever the key order or
//! number spelling a store gave back. The rules are documented on
//! [`canonical_json`].

use std::io::Write as _;

use serde_json::{Number, Value};

/// The canonical serialization of `value`, as hashed by the audit chain.
///
/// The output is UTF-8 JSON without any whitespace, where:
///
/// - object members are sorted by key, comparing keys as UTF-8 byte strings
///   (which is Unicode code point order); keys are written as strings are;
/// - array items keep their order;
/// - `null`, `true`, `false` are written as such;
/// - strings are written between `"`, escaping `"` as `\"`, `\` as `\\`,
///   U+0008 as `\b`, U+000C as `\f`, U+000A as `\n`, U+000D as `\r`, U+0009 as
///   `\t`, every other code point below U+0020 as `\u00xx` (lowercase hex), and
///   nothing else (non-ASCII characters are written as their UTF-8 bytes);
/// - a number that is an integer in the range of `i64` or `u64` (written without
///   a fraction or exponent) is written in decimal, `-` for negatives;
/// - any other number is read as an IEEE-754 binary64 and written as the
///   shortest decimal that reads back as the same binary64, in positional
///   notation (never an exponent), without a fractional part when it is
///   integral (`1.0` → `1`, `1e21` → `1000000000000000000000`,
///   `1.5e-7` → `0.00000015`, `-0.0` → `-0`). This is Rust's `f64` `Display`;
///   in Python: `s = format(decimal.Decimal(repr(x)), "f")`, then strip trailing
///   zeros and a trailing `.` if `s` has a `.`.
///
/// The rules are those of RFC 8785 (JCS) except for key order (code points,
/// not UTF-16 units) and numbers (positional, not ECMAScript's exponent form).
/// Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` produces the same bytes for values without non-integer
/// numbers.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(value, &mut out);
    out
}

pub(crate) fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else {
        // serde_json has no NaN or infinity: every other number is a finite f64.
        write!(out, "{}", n.as_f64().unwrap_or(0.0))
    };
}

pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::canonical_json;

    fn canon(v: serde_json::Value) -> String {
        String::from_utf8(canonical_json(&v)).expect("utf-8")
    }

    #[test]
    fn object_keys_are_sorted_by_code_point_and_nested() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": true}], "é": false, "A": "s"}});
        assert_eq!(
            canon(v),
            r#"{"a":{"A":"s","z":[3,{"x":true,"y":null}],"é":false},"b":1}"#
        );
    }

    #[test]
    fn strings_escape_only_quotes_backslashes_and_controls() {
        let v = json!("q\"b\\n\nt\tc\u{1}\u{1f}\u{7f}é€😀\u{8}\u{c}\r/");
        assert_eq!(
            canon(v),
            "\"q\\\"b\\\\n\\nt\\tc\\u0001\\u001f\u{7f}é€😀\\b\\f\\r/\""
        );
    }

    #[test]
    fn numbers_have_one_spelling() {
        let parse = |s: &str| canon(serde_json::from_str(s).expect("json"));
        assert_eq!(parse("1"), "1");
        assert_eq!(parse("1.0"), "1");
        assert_eq!(parse("1e2"), "100");
        assert_eq!(parse("-7"), "-7");
        assert_eq!(parse("18446744073709551615"), "18446744073709551615");
        assert_eq!(parse("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(parse("0.1"), "0.1");
        assert_eq!(parse("1.5e-7"), "0.00000015");
        assert_eq!(parse("1e21"), "1000000000000000000000");
        assert_eq!(parse("-0.0"), "-0");
        assert_eq!(parse("0.30000000000000004"), "0.30000000000000004");
    }
}
