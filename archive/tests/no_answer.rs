//! A server that takes the connection and never answers: every request is given up after
//! the archive's request timeout, as one failure (`ArchiveError::NoAnswer`), not after the
//! HTTP client's own retries of it. Its own process (a test binary of its own), because the
//! S3 endpoint comes from the environment, the standard AWS way.
use std::{
    net::TcpListener,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use podcap_archive::{Archive, ArchiveError};

/// Takes connections on loopback and never answers, until dropped.
struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Acquire: pairs with the Release store in `drop`.
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((connection, _)) => held.push(connection),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        // Release: the accepting thread's Acquire load sees it and ends.
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test]
async fn a_request_with_no_answer_fails_after_the_request_timeout() {
    let server = SilentServer::start();
    // The only test of this binary: nothing else reads the environment meanwhile.
    for (key, value) in [
        ("AWS_ACCESS_KEY_ID", "podcap".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "podcap-secret".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", server.port)),
    ] {
        std::env::set_var(key, value);
    }
    let timeout = Duration::from_secs(1);
    let archive = Archive::open_with_timeout("s3://bucket/prefix", "prod", timeout).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let error = archive.check().await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(error, ArchiveError::NoAnswer { .. }), "{error}");
        assert!(error.to_string().contains("no answer within 1s"), "{error}");
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(1500),
            "given up after {took:?}, with a request timeout of {timeout:?}"
        );
    }
}
