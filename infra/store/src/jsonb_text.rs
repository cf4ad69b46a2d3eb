//! PostgreSQL's text of a `jsonb` value (`payload::text`), rendered in Rust.
//!
//! The hash chain (`schemas/event-hash-chain.md`) covers the texts Postgres returns
//! for the stored `payload` and `metadata`. The group committer computes the
//! canonical bytes before the INSERT, so it must know those texts without asking the
//! server. [`render`] produces them for the values it can render exactly and says
//! `None` for the others, which are then left to the trigger (the event is stored
//! and hashed as before).
//!
//! jsonb's output (`JsonbToCString`, PostgreSQL 15):
//! - object keys ordered by byte length, then by bytes; duplicate keys cannot occur
//!   in a `serde_json::Value`;
//! - `", "` between members and elements, `": "` after a key, `{}` and `[]` when empty;
//! - strings as `escape_json` writes them: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`,
//!   other characters below U+0020 as `\u00xx` (lowercase hex), everything else as is
//!   (non-ASCII unescaped);
//! - numbers as `numeric` prints them. Only integers are rendered here (their digits,
//!   with a `-` when negative, are what `numeric` prints); a number with a fraction or
//!   an exponent gives `None`.
//!
//! `None` too for a string holding U+0000, which jsonb refuses (the INSERT then fails
//! in the trigger's path with Postgres's own error). The integration tests
//! (`infra/store/tests/event_store_sql.rs`) compare [`render`] with Postgres's text
//! over many random values.

use serde_json::Value;

/// Deepest nesting rendered; deeper values are left to the trigger (`None`).
pub const DEPTH_MAX: usize = 64;

/// jsonb's text of `value`, or `None` if it is not certain to be byte-identical.
pub fn render(value: &Value) -> Option<String> {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, 0)?;
    Some(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Option<()> {
    if depth > DEPTH_MAX {
        return None;
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            if let Some(i) = number.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = number.as_u64() {
                out.push_str(&u.to_string());
            } else {
                return None;
            }
        }
        Value::String(s) => write_string(out, s)?,
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members
                .sort_unstable_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key)?;
                out.push_str(": ");
                write_value(out, item, depth + 1)?;
            }
            out.push('}');
        }
    }
    Some(())
}

fn write_string(out: &mut String, s: &str) -> Option<()> {
    out.push('"');
    for c in s.chars() {
        match c {
            '\0' => return None,
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_by_length_then_bytes_and_postgres_separators() {
        let value = json!({"nickname": "小明", "level": 1, "b": [1, -2, {}], "a": [], "aa": {"z": null, "y": true}});
        assert_eq!(
            render(&value).as_deref(),
            Some(r#"{"a": [], "b": [1, -2, {}], "aa": {"y": true, "z": null}, "level": 1, "nickname": "小明"}"#)
        );
    }

    #[test]
    fn the_spec_worked_example_texts() {
        let payload = json!({"level": 1, "nickname": "小明"});
        let metadata = json!({"tenant_id": "tenant-a", "request_hash": "9f2c", "idempotency_key": "req-7"});
        assert_eq!(render(&payload).as_deref(), Some(r#"{"level": 1, "nickname": "小明"}"#));
        assert_eq!(
            render(&metadata).as_deref(),
            Some(r#"{"tenant_id": "tenant-a", "request_hash": "9f2c", "idempotency_key": "req-7"}"#)
        );
    }

    #[test]
    fn strings_escaped_as_escape_json_does() {
        let value = json!("q\" b\\ \u{8}\u{c}\n\r\t \u{1} \u{1f} \u{7f} é 😀");
        assert_eq!(render(&value).as_deref(), Some("\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001 \\u001f \u{7f} é 😀\""));
    }

    #[test]
    fn what_postgres_might_print_otherwise_is_left_to_the_trigger() {
        assert_eq!(render(&json!({"x": 1.5})), None, "fractions");
        assert_eq!(render(&json!([1e3])), None, "exponents (f64)");
        assert_eq!(render(&json!({"k": "a\u{0}b"})), None, "U+0000, which jsonb refuses");
        assert_eq!(render(&json!({"a\u{0}": 1})), None, "U+0000 in a key");
        let mut deep = json!(1);
        for _ in 0..=DEPTH_MAX {
            deep = json!([deep]);
        }
        assert_eq!(render(&deep), None, "deeper than DEPTH_MAX");
        assert_eq!(render(&json!(u64::MAX)).as_deref(), Some("18446744073709551615"));
        assert_eq!(render(&json!(i64::MIN)).as_deref(), Some("-9223372036854775808"));
    }
}
