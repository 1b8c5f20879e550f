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
        Output::Yaml => print!("{}", serde_yaml::to_string(doc)?),
    }
    Ok(())
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
    use super::count;

    #[test]
    fn one_is_singular_and_every_other_number_plural() {
        assert_eq!(count(1u64, "sensor"), "1 sensor");
        assert_eq!(count(0u64, "sensor"), "0 sensors");
        assert_eq!(count(2u64, "packet"), "2 packets");
        assert_eq!(count(1u64, "loss"), "1 loss");
        assert_eq!(count(3u64, "loss"), "3 losses");
    }
}
