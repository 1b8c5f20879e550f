//! `-o table|json|yaml`, as kubectl has it: a table for people; for scripts one document
//! (JSON or YAML) with times as RFC 3339 strings to the nanosecond, so `jq` never rounds
//! a timestamp through a float.
use anyhow::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

impl Output {
    /// Whether a document is printed instead of a table.
    #[must_use]
    pub fn structured(self) -> bool {
        self != Self::Table
    }
}

/// Prints `doc` as JSON or YAML (nothing for `table`: the caller prints its table).
pub fn print(doc: &serde_json::Value, output: Output) -> Result<()> {
    match output {
        Output::Table => {}
        Output::Json => println!("{}", serde_json::to_string_pretty(doc)?),
        Output::Yaml => print!("{}", yaml(doc)),
    }
    Ok(())
}

/// `doc` as YAML that every reader takes the same way: every string is double-quoted
/// (JSON's escapes are YAML's), so a YAML 1.1 reader never reads `12:30` as 750 or `no` as
/// false; keys are quoted unless they are plain words no reader mistakes.
#[must_use]
pub fn yaml(doc: &serde_json::Value) -> String {
    let mut out = String::new();
    if is_block(doc) {
        yaml_block(doc, 0, &mut out);
    } else {
        out.push_str(&yaml_scalar(doc));
        out.push('\n');
    }
    out
}

/// A scalar, or an empty collection, on one line.
fn yaml_scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(_) => "{}".into(),
        serde_json::Value::Array(_) => "[]".into(),
        // JSON's number, bool, null and quoted string are YAML's too.
        other => other.to_string(),
    }
}

fn yaml_key(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        key.to_owned()
    } else {
        serde_json::Value::String(key.to_owned()).to_string()
    }
}

/// A mapping or sequence with something in it (written as lines of its own).
fn is_block(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => !map.is_empty(),
        serde_json::Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

/// A non-empty mapping or sequence, its lines indented by `indent`.
fn yaml_block(value: &serde_json::Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(key));
                out.push(':');
                if is_block(item) {
                    out.push('\n');
                    yaml_block(item, indent + 2, out);
                } else {
                    out.push(' ');
                    out.push_str(&yaml_scalar(item));
                    out.push('\n');
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                if is_block(item) {
                    // The item's first line goes after the dash.
                    let mut nested = String::new();
                    yaml_block(item, indent + 2, &mut nested);
                    out.push_str(&nested[indent + 2..]);
                } else {
                    out.push_str(&yaml_scalar(item));
                    out.push('\n');
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// `n` and the noun, in the number it takes: `1 sensor`, `2 sensors`, `0 packets`.
#[must_use]
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    // Every noun counted here takes an s, except these.
    let plural = match noun {
        "loss" => "losses",
        other => return format!("{n} {other}{}", if n == 1 { "" } else { "s" }),
    };
    format!("{n} {}", if n == 1 { noun } else { plural })
}

#[cfg(test)]
mod tests {
    use super::{count, yaml};

    #[test]
    fn yaml_quotes_every_string_and_reads_back_the_same() {
        let doc = serde_json::json!({
            "start": "12:30",
            "enabled": "no",
            "on": true,
            "127.0.0.1:9090": {"packets": 3, "note": "a: b\n- c \"d\"", "empty": "", "none": null},
            "jobs": [{"name": "nightly", "days": ["mon", "1e3"]}, [], {}, 7, [1, [2, 3]]],
            "nested": {"deep": {"list": [{"x": "y", "z": [0.5]}]}},
        });
        let text = yaml(&doc);
        assert!(text.contains("start: \"12:30\""), "{text}");
        assert!(text.contains("\"on\": true"), "{text}");
        let back: serde_json::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(back, doc, "{text}");
        for scalar in [
            serde_json::json!("x"),
            serde_json::json!(3),
            serde_json::json!([]),
            serde_json::json!({}),
        ] {
            let back: serde_json::Value = serde_norway::from_str(&yaml(&scalar)).unwrap();
            assert_eq!(back, scalar);
        }
    }

    #[test]
    fn one_is_singular_and_every_other_number_plural() {
        assert_eq!(count(1u64, "sensor"), "1 sensor");
        assert_eq!(count(0u64, "sensor"), "0 sensors");
        assert_eq!(count(2u64, "packet"), "2 packets");
        assert_eq!(count(1u64, "loss"), "1 loss");
        assert_eq!(count(3u64, "loss"), "3 losses");
    }
}
