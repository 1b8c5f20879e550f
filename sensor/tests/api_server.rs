//! The API's listener against hostile and clumsy clients, over real sockets on loopback:
//! clients that never send a request, send it a byte at a time, or go idle after one;
//! a request body that stalls; more connections than the limit; a stop while clients hold
//! connections open; TLS with a certificate made by `openssl` and checked by `curl`. No
//! privileges needed.
mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use podcap_sensor::{
    api::{
        router,
        server::{self, ServerLimits},
        ApiState,
    },
    shutdown::Shutdown,
};

/// A running API server on loopback, stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(limits: ServerLimits, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        Self::start_with(limits, tls, |_| {})
    }

    /// [`Server::start`] with the API's state changed by `configure` first.
    fn start_with(
        limits: ServerLimits,
        tls: Option<tokio_rustls::TlsAcceptor>,
        configure: impl FnOnce(&mut ApiState),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ApiState::builder(dir.path())
            .interfaces(["eth0"])
            .build()
            .unwrap();
        state.health.set_attached(true);
        configure(&mut state);
        let stop = Shutdown::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(server::run(listener, router(state), tls, limits, stopping));
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Stops the server; how long it took to return.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn limits(header_timeout_ms: u64) -> ServerLimits {
    ServerLimits {
        max_connections: 8,
        header_timeout: Duration::from_millis(header_timeout_ms),
        shutdown_grace: Duration::from_millis(500),
    }
}

/// Whether the server closed `stream` (a read gives end of file or a reset) within `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn healthz(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn silent_slow_and_idle_clients_are_closed() {
    let server = Server::start(limits(600), None);
    // Connects and says nothing.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    // Sends its request a byte at a time, too slowly to finish in time.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let slow_writer = {
        let mut writer = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" {
                if writer.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Asks once on a kept-alive connection, then goes idle.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 256];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = idle.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));

    let started = Instant::now();
    for (name, stream) in [("silent", &mut silent), ("slow", &mut slow), ("idle", &mut idle)] {
        assert!(
            closed_within(stream, Duration::from_secs(3)),
            "the {name} client was not closed"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = slow_writer.join();
    // The server still answers everyone else.
    assert!(
        healthz(server.addr).starts_with("HTTP/1.1 200"),
        "after the timeouts"
    );
    common::report(
        "HTTP clients that send nothing, a byte at a time, or go idle after a request",
        "one of each",
        "nothing",
        "each closed within the header timeout; everyone else still served",
    );
}

/// The status line of the answer on `stream`, if one comes within `wait`.
fn status_line_within(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .map(str::to_owned)
}

#[test]
fn a_body_that_never_completes_is_refused_in_time() {
    let server = Server::start_with(limits(10_000), None, |state| {
        state.body_timeout = Duration::from_millis(500);
    });
    // Admin requests whose head says 100 bytes of JSON and whose body stops at 10.
    let mut held = Vec::new();
    for head in [
        "POST /api/v1/snapshots HTTP/1.1",
        "PATCH /api/v1/config HTTP/1.1",
        "POST /api/v1/recordings HTTP/1.1",
    ] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .write_all(
                format!("{head}\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\": ")
                    .as_bytes(),
            )
            .unwrap();
        held.push((head, stream, Instant::now()));
    }
    for (head, mut stream, sent) in held {
        let answer = status_line_within(&mut stream, Duration::from_secs(5));
        assert_eq!(
            answer.as_deref(),
            Some("HTTP/1.1 408 Request Timeout"),
            "{head}: the stalled body was not refused"
        );
        assert!(
            sent.elapsed() < Duration::from_secs(4),
            "{head}: refused after {:?}",
            sent.elapsed()
        );
    }
    // A whole body within the time is read as before.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"PATCH /api/v1/config HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        .unwrap();
    let answer = status_line_within(&mut stream, Duration::from_secs(5)).unwrap_or_default();
    assert!(!answer.contains("408"), "{answer}");
    common::report(
        "an admin request whose body never completes",
        "POST snapshots, PATCH config, POST recordings: a head of 100 bytes, 10 sent",
        "nothing",
        "408 once the body timeout passed (10 s in the sensor; 0.5 s here); the connection is not held",
    );
}

#[test]
fn connections_beyond_the_limit_get_a_503_and_the_rest_are_served() {
    let server = Server::start(limits(10_000), None);
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = healthz(server.addr);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        healthz(server.addr).starts_with("HTTP/1.1 200"),
        "served again once they left"
    );
    common::report(
        "more connections than the API's limit",
        "limit + 1",
        "nothing",
        "the extra one gets a 503 and is closed; served again once the others leave",
    );
}

#[test]
fn a_stop_ends_the_server_within_its_grace_whatever_clients_hold_open() {
    let mut server = Server::start(limits(60_000), None);
    let mut open: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // One client in the middle of sending its request.
    open[0].write_all(b"GET /healthz HTTP/1.1\r\nho").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let took = server.stop();
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    for stream in &mut open {
        assert!(closed_within(stream, Duration::from_secs(1)));
    }
    assert!(TcpStream::connect(server.addr).is_err(), "still accepting");
    common::report(
        "stop (SIGTERM) while clients hold connections open, one mid-request",
        "6 connections",
        "nothing",
        &format!("the API was down {took:.1?} after the stop (grace 0.5 s in the test, 3 s in the sensor)"),
    );
}

/// A self-signed certificate for `localhost` and 127.0.0.1 made by openssl: (cert, key).
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some((cert, key))
}

#[test]
fn tls_serves_with_the_given_certificate_and_refuses_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        panic!("openssl could not make a certificate (cargo xtask setup installs openssl)");
    };
    // Bad files are refused naming the flag.
    let error = server::tls_acceptor(&key, &key).err().unwrap().to_string();
    assert!(error.starts_with("--tls-cert"), "{error}");
    let error = server::tls_acceptor(&cert, &cert).err().unwrap().to_string();
    assert!(error.starts_with("--tls-key"), "{error}");

    let acceptor = server::tls_acceptor(&cert, &key).unwrap();
    let server = Server::start(limits(2_000), Some(acceptor));
    let url = format!("https://localhost:{}/healthz", server.addr.port());
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", "--resolve"])
            .arg(format!("localhost:{}:127.0.0.1", server.addr.port()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let trusted = curl(&["--cacert", cert.to_str().unwrap()]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "ok\n");
    assert!(
        !curl(&[]).status.success(),
        "an unknown CA must fail verification"
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = healthz(server.addr);
    assert!(!plain.contains("200 OK"), "{plain}");
}
