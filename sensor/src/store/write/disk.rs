//! The disk thread: the active segment's writes, off the thread that drains the kernel.
//!
//! Rules:
//! - The writer never waits on the disk to go on recording: a full buffer moves to the
//!   disk thread with the segment's file (the buffer itself, no copy), and the writer fills
//!   its other buffer meanwhile. Capture and disk writes overlap.
//! - One write is in flight at a time, as `dd oflag=direct` writes; its result comes back
//!   with the file and the buffer, in order. The writer takes it before it hands over the
//!   next buffer or touches the file itself (rotation, a flush on demand, stop).
//! - The disk thread writes the buffer itself where the writer placed it for direct
//!   writes, and otherwise in pieces through the file's small aligned staging buffer
//!   (`file.rs`, [`super::file::SegmentFile::append_all`]).
//! - A segment's last write also closes it ([`Job::close`]): its file is cut to its
//!   length and synced here (after a failed write, cut back to its last whole block
//!   first), so rotation costs the capture thread no disk wait either.
//! - The thread ends when the writer drops its handle, after the write in flight: a store
//!   dropped without being finished (a crash, in tests) still has every handed-over byte in
//!   its file.
use std::{
    io,
    sync::mpsc::{self, Receiver, SyncSender},
    thread::{self, JoinHandle},
};

use super::file::SegmentFile;
use crate::pcapng::BlockWriter;

/// A write for the disk thread: `buf`'s bytes appended to `file`, and the file closed
/// after them if `close`.
pub(super) struct Job {
    pub(super) file: SegmentFile,
    pub(super) buf: BlockWriter,
    pub(super) close: bool,
}

/// A write done: the file and the buffer back, the file's length before it, the result.
pub(super) struct Done {
    pub(super) file: SegmentFile,
    pub(super) buf: BlockWriter,
    pub(super) written_from: u64,
    pub(super) result: io::Result<()>,
    /// For a closing write: cutting the file back after a failed write, if it was needed.
    pub(super) cut: Option<io::Result<()>>,
    /// For a closing write: cutting the file to its length and syncing it.
    pub(super) closed: Option<io::Result<()>>,
}

pub(super) struct DiskThread {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl DiskThread {
    pub(super) fn start() -> io::Result<Self> {
        // One job waits at most: the writer hands over the next only after the last's result.
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(1);
        let (done_tx, done) = mpsc::channel();
        let thread = thread::Builder::new().name("podcap-disk".into()).spawn(move || {
            for Job { mut file, buf, close } in job_rx {
                let written_from = file.len();
                let result = file.append_all(buf.bytes());
                let cut = (close && result.is_err()).then(|| file.cut_back());
                let closed = close.then(|| file.close());
                if done_tx
                    .send(Done {
                        file,
                        buf,
                        written_from,
                        result,
                        cut,
                        closed,
                    })
                    .is_err()
                {
                    return;
                }
            }
        })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands a write over; it comes back through [`DiskThread::wait`] or
    /// [`DiskThread::try_done`]. The caller has taken the previous one's result.
    pub(super) fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|mpsc::SendError(job)| Box::new(job)),
            None => Err(Box::new(job)),
        }
    }

    /// The result of the write in flight, waiting for it (`None`: the thread is gone).
    pub(super) fn wait(&self) -> Option<Done> {
        self.done.recv().ok()
    }

    /// The result of the write in flight if it is done; `Disconnected` if the thread is
    /// gone (it panicked), so the writer never waits for a result that cannot come.
    pub(super) fn try_done(&self) -> Result<Done, mpsc::TryRecvError> {
        self.done.try_recv()
    }
}

impl Drop for DiskThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the write in flight.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
