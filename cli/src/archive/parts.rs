//! The parts of an offline read, merged: each node's part files read as one stream.
use std::{collections::BTreeMap, io::Read, path::PathBuf};

use super::Part;

/// One merge input per node: its parts' files in time order, read one after the other
/// (each part is a whole pcapng section, so together they are one valid stream).
#[must_use]
pub fn inputs_by_node(parts: Vec<Part>) -> Vec<podcap_format::merge::Input<PartFiles>> {
    let mut by_node: BTreeMap<String, Vec<Part>> = BTreeMap::new();
    for part in parts {
        by_node.entry(part.node.clone()).or_default().push(part);
    }
    by_node
        .into_iter()
        .map(|(node, mut parts)| {
            parts.sort_by_key(|p| p.first_ns);
            podcap_format::merge::Input {
                label: node,
                reader: PartFiles {
                    files: parts.into_iter().map(|p| p.file).collect(),
                    current: None,
                },
            }
        })
        .collect()
}

/// A node's part files read as one stream, each opened when the one before ends.
pub struct PartFiles {
    files: std::collections::VecDeque<PathBuf>,
    current: Option<std::io::BufReader<std::fs::File>>,
}

impl Read for PartFiles {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(current) = &mut self.current {
                let n = current.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some(next) = self.files.pop_front() else {
                return Ok(0);
            };
            self.current = Some(std::io::BufReader::new(std::fs::File::open(next)?));
        }
    }
}
