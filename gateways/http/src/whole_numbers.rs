//! Whole numbers written with a fraction or an exponent (`595.0`, `5.95e2`)
//! are integers: JSON Schema (draft 6 on, so OpenAPI 3.1) says so, and the
//! document's `type: integer` fields are checked by it. serde's integer
//! fields refuse them, so [`crate::extract::ApiJson`] first rewrites each
//! such number token to its plain integer spelling. Only the spelling
//! changes: a number that is not whole (`595.5`, `1e-3`) is left as it is,
//! and the integer field still refuses it (422 `invalid_body`); bounds are
//! checked on the value as before. The rewrite works on the text, so
//! duplicate keys and everything else the parser refuses stay refused.

use std::borrow::Cow;

/// Digits of the largest integer a rewrite spells (`i64`/`u64` need at most
/// 20); a whole number beyond it stays a float, which integer fields refuse.
const INTEGER_DIGITS_MAX: usize = 20;

/// `body` with every whole number outside strings spelled as an integer;
/// borrowed when nothing needed a rewrite.
pub fn integers_spelled_plainly(body: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => i = string_end(body, i + 1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < body.len() && matches!(body[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                if let Some(integer) = whole_integer(&body[start..i]) {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
                    out.extend_from_slice(&body[copied..start]);
                    out.extend_from_slice(integer.as_bytes());
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(body),
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            Cow::Owned(out)
        }
    }
}

/// The index just past the string whose content starts at `i` (past the end
/// of `body` when it is not closed: the parser reports that).
fn string_end(body: &[u8], mut i: usize) -> usize {
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The plain spelling of a JSON number token with a fraction or an exponent
/// whose value is a whole number of at most [`INTEGER_DIGITS_MAX`] digits;
/// None for anything else (plain integers, fractions, malformed tokens).
/// Exact decimal arithmetic: no float is involved.
fn whole_integer(token: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(token).ok()?;
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // JSON's grammar: no leading zeros, at least one digit after a point.
    let int_ok = digits_only(int) && (int == "0" || !int.starts_with('0'));
    if !int_ok || frac.is_some_and(|f| !digits_only(f)) || (frac.is_none() && exponent.is_none()) {
        return None;
    }
    let frac = frac.unwrap_or("");
    let digits: String = format!("{int}{frac}").trim_start_matches('0').to_owned();
    if digits.is_empty() {
        return exponent_value(exponent).map(|_| "0".to_owned());
    }
    // value = digits × 10^scale
    let scale = exponent_value(exponent)?.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let trimmed = digits.trim_end_matches('0');
    let scale = scale.checked_add(i64::try_from(digits.len() - trimmed.len()).ok()?)?;
    if scale < 0 {
        return None;
    }
    let zeros = usize::try_from(scale).ok()?;
    if trimmed.len().checked_add(zeros)? > INTEGER_DIGITS_MAX {
        return None;
    }
    let sign = if negative { "-" } else { "" };
    Some(format!("{sign}{trimmed}{}", "0".repeat(zeros)))
}

/// The exponent's value (0 without one); None when malformed or beyond any
/// integer we spell (its magnitude only matters up to a few digits).
fn exponent_value(exponent: Option<&str>) -> Option<i64> {
    let Some(exponent) = exponent else {
        return Some(0);
    };
    let (negative, digits) = match exponent.as_bytes().first() {
        Some(b'-') => (true, &exponent[1..]),
        Some(b'+') => (false, &exponent[1..]),
        _ => (false, exponent),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    // 10^±9999 is as good as infinite here and keeps the arithmetic small.
    let magnitude: i64 = if digits.len() > 4 { 9999 } else { digits.parse().unwrap_or(0) };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &str) -> String {
        String::from_utf8(integers_spelled_plainly(body.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn whole_numbers_become_integers() {
        assert_eq!(
            rewrite(r#"{"a":595.0,"b":[1.00,-2.0],"c":5.95e2,"d":1E3}"#),
            r#"{"a":595,"b":[1,-2],"c":595,"d":1000}"#
        );
        assert_eq!(
            rewrite(r#"{"a":0.0,"b":-0.0,"c":0e5,"d":1.5e1,"e":150e-1}"#),
            r#"{"a":0,"b":0,"c":0,"d":15,"e":15}"#
        );
        assert_eq!(rewrite(r#"{"a":1e19,"b":9.9e19}"#), r#"{"a":10000000000000000000,"b":99000000000000000000}"#);
    }

    #[test]
    fn everything_else_is_left_alone() {
        for body in [
            r#"{"a":595,"b":-3,"c":0}"#,
            r#"{"a":595.5,"b":1e-3,"c":0.1,"d":1.0000000000000001}"#,
            r#"{"a":1e21,"b":1e99999999}"#,
            r#"{"s":"595.0","t":"a\"1.0\\","u":1.0.0,"v":01.0,"w":1.,"x":.5,"y":1e}"#,
            r#"{"a":1, "a":2.5}"#,
        ] {
            assert_eq!(rewrite(body), body);
            assert!(matches!(integers_spelled_plainly(body.as_bytes()), Cow::Borrowed(_)), "{body}");
        }
    }

    #[test]
    fn strings_are_never_touched() {
        assert_eq!(rewrite(r#"{"a\"":"x\\",  "b":2.0, "c":"2.0"}"#), r#"{"a\"":"x\\",  "b":2, "c":"2.0"}"#);
        assert_eq!(rewrite(r#"{"a":"unclosed 2.0"#), r#"{"a":"unclosed 2.0"#);
    }

    /// The rewrite keeps the value: whole numbers read back as the same integer (up to f64's exact
    /// range and beyond), fractions are left as they were.
    #[test]
    fn values_are_kept() {
        let edges = [0, 1, -1, 9, 10, 595, -595, 1 << 31, (1 << 53) - 1, 1 << 53, -(1 << 53), i64::MAX, i64::MIN + 1];
        let spread = (0..2000i64).map(|k| k * k * k * 1_000_003 % (1 << 53) - (1 << 52));
        for n in edges.into_iter().chain(spread) {
            let shifted = (n != 0).then(|| format!("{n}0e-1"));
            for spelled in [format!("{n}.0"), format!("{n}e0"), format!("{n}.000E+0")].into_iter().chain(shifted) {
                let body = format!("{{\"v\":{spelled}}}");
                let read: serde_json::Value =
                    serde_json::from_slice(&integers_spelled_plainly(body.as_bytes())).unwrap();
                assert_eq!(read["v"].as_i64(), Some(n), "{body}");
            }
            for frac in ["5", "001", "999"] {
                let body = format!("{{\"v\":{n}.{frac}}}");
                assert_eq!(rewrite(&body), body);
            }
        }
    }
}
