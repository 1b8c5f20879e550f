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
