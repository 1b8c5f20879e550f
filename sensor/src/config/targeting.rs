//! The targeting configuration: what to record, from a YAML file (a mounted ConfigMap in
//! a cluster) with Kubeshark's keys, reloaded when it changes.
//!
//! ```yaml
//! tap:
//!   regex: "^web-"              # pod names (empty: all pods)
//!   namespaces: [shop]          # empty: all namespaces
//!   excludedNamespaces: [kube-system]
//!   bpfOverride: "tcp port 80"  # a tcpdump filter on everything captured
//!   stopped: false              # true: record nothing
//! pcapdump:
//!   enabled: true
//!   maxTime: 1h
//!   maxSize: 500MB
//! ```
//!
//! Rules:
//! - A document is validated whole before anything applies; an error names the key
//!   (`tap.regex: …`). Keys outside `tap` and `pcapdump` are ignored (a Kubeshark values
//!   file may be reused); unknown keys inside them are errors, but Kubeshark's other `tap`
//!   keys are accepted and ignored.
//! - At start an invalid file refuses the start. At a reload, the last good document stays
//!   in force and the error is kept for `/readyz` and the log until a good one comes.
//! - Flags given on the command line win over the file (`--filter` over `tap.bpfOverride`).
//! - The file is compared by content every `RELOAD_INTERVAL`, which follows both edits and
//!   the symlink swap by which the kubelet updates a mounted ConfigMap.
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

pub use podcap_format::targeting::{TargetingDoc, TargetingError};

use crate::filter::Filter;

/// How often the file is looked at.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A validated targeting document with its filter compiled; reads as the document.
#[derive(Clone, Debug, Default)]
pub struct Targeting {
    pub doc: TargetingDoc,
    /// `tap.bpfOverride`, compiled.
    pub filter: Option<Filter>,
}

impl std::ops::Deref for Targeting {
    type Target = TargetingDoc;

    fn deref(&self) -> &TargetingDoc {
        &self.doc
    }
}

impl Targeting {
    /// Parses and validates a document, compiling its filter for `snaplen`.
    pub fn parse(text: &str, snaplen: u32) -> Result<Self, TargetingError> {
        let doc = TargetingDoc::parse(text)?;
        let filter = doc
            .bpf_override
            .as_deref()
            .map(|text| {
                Filter::compile(text, snaplen)
                    .map_err(|e| podcap_format::targeting::key_error("tap.bpfOverride", e.to_string()))
            })
            .transpose()?;
        // Each job's filter is compiled too, so a bad one is refused with the document.
        for (n, job) in doc.recordings.iter().enumerate() {
            if let Some(text) = job.filter.as_deref().filter(|f| !f.trim().is_empty()) {
                Filter::compile(text, snaplen).map_err(|e| {
                    podcap_format::targeting::key_error(&format!("recordings[{n}].filter"), e.to_string())
                })?;
            }
        }
        Ok(Self { doc, filter })
    }
}

/// The capture filter in force, swappable while the capture thread runs.
#[derive(Debug, Default)]
pub struct FilterSlot {
    /// Bumped after every change; the capture thread re-reads the filter when it moves.
    /// `Relaxed` is enough: the filter itself is handed over under the mutex.
    generation: AtomicU64,
    filter: Mutex<Option<Arc<Filter>>>,
}

impl FilterSlot {
    #[must_use]
    pub fn new(filter: Option<Filter>) -> Self {
        Self {
            generation: AtomicU64::new(0),
            filter: Mutex::new(filter.map(Arc::new)),
        }
    }

    pub fn set(&self, filter: Option<Filter>) {
        *self
            .filter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = filter.map(Arc::new);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn get(&self) -> Option<Arc<Filter>> {
        self.filter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Follows a targeting file.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    snaplen: u32,
    last_text: Option<String>,
}

impl ConfigFile {
    /// Reads and validates the file at start: any error refuses the start.
    pub fn open(path: &Path, snaplen: u32) -> Result<(Self, Targeting), TargetingError> {
        let text = std::fs::read_to_string(path).map_err(|source| TargetingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let targeting = Targeting::parse(&text, snaplen)?;
        Ok((
            Self {
                path: path.to_owned(),
                snaplen,
                last_text: Some(text),
            },
            targeting,
        ))
    }

    /// `None` if the file is unchanged since the last call; else the new document or why
    /// it cannot apply (the caller keeps the last good one).
    pub fn poll(&mut self) -> Option<Result<Targeting, TargetingError>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(source) => {
                let changed = self.last_text.take().is_some();
                return changed.then(|| {
                    Err(TargetingError::Read {
                        path: self.path.display().to_string(),
                        source,
                    })
                });
            }
        };
        if self.last_text.as_deref() == Some(text.as_str()) {
            return None;
        }
        let result = Targeting::parse(&text, self.snaplen);
        self.last_text = Some(text);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::SettingsDoc;

    #[test]
    fn a_full_document_parses_and_selects() {
        let t = Targeting::parse(
            "tap:\n  regex: ^web-\n  namespaces: [shop, blog]\n  excludedNamespaces: [blog]\n  bpfOverride: tcp port 80\n  docker: {}\npcapdump:\n  enabled: false\n  maxTime: 2h\n  maxSize: 1GB\nfront:\n  port: 8899\n",
            65535,
        )
        .unwrap();
        assert!(t.selects("shop", "web-1"));
        assert!(!t.selects("shop", "db-1"), "regex");
        assert!(!t.selects("blog", "web-1"), "excluded");
        assert!(!t.selects("other", "web-1"), "not listed");
        assert_eq!(t.filter.as_ref().unwrap().expression(), "tcp port 80");
        assert_eq!(
            t.pcapdump,
            SettingsDoc {
                enabled: Some(false),
                max_time: Some("2h".into()),
                max_size: Some("1GB".into())
            }
        );
        let empty = Targeting::parse("", 65535).unwrap();
        assert!(empty.selects("any", "pod"));
        assert!(!Targeting::parse("tap:\n  stopped: true\n", 65535)
            .unwrap()
            .selects("a", "b"));
    }

    #[test]
    fn errors_name_the_key() {
        for (doc, needle) in [
            ("tap:\n  regex: '(['\n", "tap.regex:"),
            ("tap:\n  namespaces: shop\n", "tap.namespaces: expected a list"),
            ("tap:\n  bpfOverride: tcp port 99999\n", "tap.bpfOverride:"),
            ("tap:\n  regexp: x\n", "tap.regexp: unknown key"),
            ("tap:\n  stopped: maybe\n", "tap.stopped: expected true or false"),
            ("pcapdump:\n  maxSize: lots\n", "pcapdump.maxSize: invalid size"),
            ("pcapdump:\n  maxTime: 5x\n", "pcapdump.maxTime: invalid duration"),
            ("pcapdump:\n  enable: true\n", "pcapdump.enable: unknown key"),
            ("tap: [1, 2]\n", "tap: expected a mapping"),
            ("tap:\n  regex: [unclosed\n", "not valid YAML"),
        ] {
            let e = Targeting::parse(doc, 65535).unwrap_err().to_string();
            assert!(e.starts_with(needle), "{doc:?}: {e}");
        }
    }

    #[test]
    fn the_file_is_followed_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "pcapdump:\n  maxTime: 1h\n").unwrap();
        let (mut file, first) = ConfigFile::open(&path, 65535).unwrap();
        assert_eq!(first.pcapdump.max_time.as_deref(), Some("1h"));
        assert!(file.poll().is_none(), "unchanged");
        std::fs::write(&path, "pcapdump:\n  maxTime: soon\n").unwrap();
        assert!(file.poll().unwrap().is_err());
        assert!(file.poll().is_none(), "the same bad text is reported once");
        // The kubelet's way: a new file renamed over the old one.
        let next = dir.path().join("next.yaml");
        std::fs::write(&next, "pcapdump:\n  maxTime: 3h\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            file.poll().unwrap().unwrap().pcapdump.max_time.as_deref(),
            Some("3h")
        );
        std::fs::remove_file(&path).unwrap();
        assert!(file.poll().unwrap().is_err(), "a vanished file is reported");
    }
}
