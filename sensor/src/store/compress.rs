//! Optional gzip compression of finished segments (`--compress gzip`; Wireshark and tshark
//! read `.pcapng.gz` natively).
//!
//! Rules: compression runs on its own thread, never on the writer's. It writes
//! `podcap-<seq>.pcapng.gz.tmp`, fsyncs and renames it to `.pcapng.gz`; the writer then
//! points the index at the compressed file and only after that deletes the original, so
//! the index never names a missing or half-written file. Compressed segments are read
//! whole (no seeking inside them).
use std::{
    fs::{self, File},
    io::{self, BufReader, BufWriter, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender},
    thread,
};

use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};

use super::name::GZIP_SUFFIX;

/// A segment the compressor finished.
#[derive(Debug)]
pub struct Compressed {
    pub seq: u64,
    pub original: PathBuf,
    pub file: String,
    pub bytes: u64,
}

/// The compression thread and its two channels.
pub struct Compressor {
    jobs: Option<Sender<(u64, PathBuf)>>,
    done: Receiver<Result<Compressed, (u64, io::Error)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Compressor {
    pub fn start() -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<(u64, PathBuf)>();
        let (report, done) = mpsc::channel();
        let thread = thread::Builder::new().name("podcap-gzip".into()).spawn(move || {
            for (seq, path) in queue {
                let _ = report.send(gzip(&path, seq).map_err(|e| (seq, e)));
            }
        })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Queues a finished segment.
    pub fn submit(&self, seq: u64, path: PathBuf) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send((seq, path));
        }
    }

    /// Segments finished since the last call.
    #[must_use]
    pub fn finished(&self) -> Vec<Result<Compressed, (u64, io::Error)>> {
        self.done.try_iter().collect()
    }

    /// Waits for the queue to empty and returns what it finished.
    pub fn drain(&mut self) -> Vec<Result<Compressed, (u64, io::Error)>> {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.finished()
    }
}

fn gzip(path: &Path, seq: u64) -> io::Result<Compressed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pcapng"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a segment name"))?;
    let file = format!("{name}{GZIP_SUFFIX}");
    let target = path.with_file_name(&file);
    let tmp = path.with_file_name(format!("{file}.tmp"));
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut encoder = GzEncoder::new(
        BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
        Compression::fast(),
    );
    io::copy(&mut input, &mut encoder)?;
    let out = encoder
        .finish()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    out.sync_all()?;
    let bytes = out.metadata()?.len();
    fs::rename(&tmp, &target)?;
    Ok(Compressed {
        seq,
        original: path.to_owned(),
        file,
        bytes,
    })
}

/// Reads a segment, plain or gzip, by its file name.
pub enum SegmentReader {
    /// A plain file, read up to `limit` bytes (the part of an active segment known whole).
    Plain {
        inner: BufReader<File>,
        pos: u64,
        limit: u64,
    },
    Gzip(Box<BufReader<MultiGzDecoder<File>>>),
}

impl SegmentReader {
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_limited(path, u64::MAX)
    }

    /// Opens a segment of which only the first `limit` bytes are read.
    pub fn open_limited(path: &Path, limit: u64) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(if path.to_string_lossy().ends_with(GZIP_SUFFIX) {
            Self::Gzip(Box::new(BufReader::with_capacity(
                1 << 20,
                MultiGzDecoder::new(file),
            )))
        } else {
            // Small: the slicer reads in large chunks, which then bypass this buffer
            // instead of being copied through it.
            Self::Plain {
                inner: BufReader::with_capacity(64 << 10, file),
                pos: 0,
                limit,
            }
        })
    }

    /// At the end of a plain segment read up to a limit: how many bytes short of the
    /// limit the file ended (`None` when it did not, or the limit is unknown).
    #[must_use]
    pub fn short_by(&self) -> Option<u64> {
        match self {
            Self::Plain { pos, limit, .. } if *limit != u64::MAX && pos < limit => Some(limit - pos),
            _ => None,
        }
    }

    #[must_use]
    pub fn seekable(&self) -> bool {
        matches!(self, Self::Plain { .. })
    }

    /// The whole segment, decompressed.
    pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        Self::open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// As much of the segment as can be read, and whether a read error (a damaged gzip
    /// stream, an I/O error) left the rest unread. Only opening it can fail.
    pub fn read_readable(path: &Path) -> io::Result<(Vec<u8>, bool)> {
        let mut reader = Self::open(path)?;
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return Ok((bytes, false)),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("{}: unreadable after byte {}: {e}", path.display(), bytes.len());
                    return Ok((bytes, true));
                }
            }
        }
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain { inner, pos, limit } => {
                let room = usize::try_from(limit.saturating_sub(*pos))
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let n = inner.read(&mut buf[..room])?;
                *pos += n as u64;
                Ok(n)
            }
            Self::Gzip(r) => r.read(buf),
        }
    }
}

impl Seek for SegmentReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Self::Plain { inner, pos: at, .. } => {
                *at = inner.seek(pos)?;
                Ok(*at)
            }
            Self::Gzip(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "compressed segments are read whole",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_and_keeps_the_original_until_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("podcap-0000000007.pcapng");
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_ne_bytes()).collect();
        fs::write(&path, &data).unwrap();
        let mut c = Compressor::start().unwrap();
        c.submit(7, path.clone());
        let done = c.drain();
        let done = done.into_iter().next().unwrap().unwrap();
        assert_eq!(done.file, "podcap-0000000007.pcapng.gz");
        assert!(path.exists(), "the original stays until the index moved");
        let gz = dir.path().join(&done.file);
        assert_eq!(fs::metadata(&gz).unwrap().len(), done.bytes);
        assert!(done.bytes < data.len() as u64 / 2);
        assert_eq!(SegmentReader::read_all(&gz).unwrap(), data);
        assert!(!SegmentReader::open(&gz).unwrap().seekable());
    }
}
