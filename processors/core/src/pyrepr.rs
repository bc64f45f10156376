//! Python's `str()` and `repr()` of JSON values, for rejection details that name a value
//! the way Python names it (`got 1e+20`, `got 'shoes'`, `got {'a': [1, None]}`).
//!
//! ```
//! use _core::pyrepr::{float_repr, str_repr};
//! assert_eq!(float_repr(1e20), "1e+20");
//! assert_eq!(float_repr(0.1), "0.1");
//! assert_eq!(float_repr(3.0), "3.0");
//! assert_eq!(str_repr("it's"), "\"it's\"");
//! ```

use std::fmt::Write;

use jiter::JsonValue;
use unicode_general_category::{get_general_category, GeneralCategory};

/// `repr(x)` of a Python float: the shortest digits that read back, in fixed notation
/// for decimal exponents from -4 to 15, else scientific with a signed two-digit exponent.
pub fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .into();
    }
    let scientific = format!("{:e}", value.abs()); // shortest digits: "1.2345e-7"
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("an integer exponent");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{text}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.abs())
    }
}

/// Whether Python's `str.isprintable` holds for `c`.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::SpaceSeparator
    )
}

/// `repr(s)` of a Python string.
pub fn str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x7f && (c as u32) >= 0x20 => out.push(c),
            c if (c as u32) < 0x100 && !printable(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
    out
}

/// `repr()` of the Python object a JSON value becomes.
pub fn repr(value: &JsonValue) -> String {
    match value {
        JsonValue::Str(text) => str_repr(text),
        other => str_of(other),
    }
}

/// `str()` of the Python object a JSON value becomes (a string is itself).
pub fn str_of(value: &JsonValue) -> String {
    match value {
        JsonValue::Null => "None".into(),
        JsonValue::Bool(true) => "True".into(),
        JsonValue::Bool(false) => "False".into(),
        JsonValue::Int(number) => number.to_string(),
        JsonValue::BigInt(number) => number.to_string(),
        JsonValue::Float(number) => float_repr(*number),
        JsonValue::Str(text) => text.to_string(),
        JsonValue::Array(items) => {
            let parts: Vec<String> = items.iter().map(repr).collect();
            format!("[{}]", parts.join(", "))
        }
        JsonValue::Object(object) => {
            let mut keys: Vec<&str> = Vec::new();
            for (key, _) in object.iter() {
                if !keys.contains(&key.as_ref()) {
                    keys.push(key);
                }
            }
            let parts: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    let last = object
                        .iter()
                        .rev()
                        .find(|(k, _)| k.as_ref() == key)
                        .map(|(_, v)| v)
                        .expect("a key of the object");
                    format!("{}: {}", str_repr(key), repr(last))
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// The first `limit` characters of `text` (Python's `{:.60}`).
pub fn truncated(text: String, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_python_writes_them() {
        for (value, text) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
            (123456789.123, "123456789.123"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(float_repr(value), text);
        }
    }

    #[test]
    fn strings_escape_what_python_escapes() {
        assert_eq!(
            str_repr("a\u{0}b\u{7f}é\u{200b}\u{1F600}"),
            "'a\\x00b\\x7fé\\u200b\u{1F600}'"
        );
        assert_eq!(str_repr("both ' and \""), "'both \\' and \"'");
    }
}
