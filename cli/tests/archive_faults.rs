//! `podcap dump --archive s3://...` against a real S3 server (moto's, on loopback, started
//! here; `cargo xtask setup` installs it) behind a small proxy of the test's own that
//! misbehaves on purpose for chosen requests: S3's 503 `SlowDown`, a connection cut in the
//! middle of an object. Objects damaged in the bucket itself too: missing, truncated,
//! corrupt zstd whose digest the manifest repeats, a manifest that does not parse. Each
//! fault costs only what it touches, is named, and fails the exit unless `--allow-partial`;
//! a fault that passes is retried and costs nothing.
//!
//! Only loopback is used.
mod common;

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{
    archive::{archive_of_two_hours, rfc3339, segment_key, MINUTE, T0},
    dumped, packets, stderr, PODCAP,
};

const BUCKET: &str = "podcap-faults";

/// A free port on loopback (bound, then let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's S3 server on loopback with one bucket, ended by PID on drop.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (cargo xtask setup installs moto)");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_mins(1);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        ureq::put(&format!("http://127.0.0.1:{port}/{BUCKET}"))
            .call()
            .expect("creating the bucket");
        server
    }

    /// Copies every file under `dir` into the bucket, its path the key.
    fn upload_folder(&self, dir: &Path) {
        let mut folders = vec![dir.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                let key = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                ureq::put(&format!("http://127.0.0.1:{}/{BUCKET}/{key}", self.port))
                    .send_bytes(&std::fs::read(&path).unwrap())
                    .unwrap_or_else(|e| panic!("uploading {key}: {e}"));
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// 503 with S3's `SlowDown` error, as S3 answers a request rate it will not take.
    SlowDown,
    /// The answer's head and half its body, then the connection closed.
    CutMidBody,
}

/// A fault for the requests whose first line contains `needle`: `times` of them, or all.
struct Rule {
    needle: String,
    fault: Fault,
    left: Option<usize>,
    fired: usize,
}

#[derive(Clone, Default)]
struct Rules(Arc<Mutex<Vec<Rule>>>);

impl Rules {
    fn add(&self, needle: &str, fault: Fault, times: Option<usize>) {
        self.0.lock().unwrap().push(Rule {
            needle: needle.to_owned(),
            fault,
            left: times,
            fired: 0,
        });
    }

    /// How often the rule for `needle` fired.
    fn fired(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.needle == needle)
            .map(|r| r.fired)
            .sum()
    }

    fn take(&self, request_line: &str) -> Option<Fault> {
        let mut rules = self.0.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| request_line.contains(&r.needle) && r.left != Some(0))?;
        if let Some(left) = &mut rule.left {
            *left -= 1;
        }
        rule.fired += 1;
        Some(rule.fault)
    }
}

/// An HTTP proxy on loopback in front of moto, one request per connection, that applies
/// its [`Rules`]; the listener's thread ends on drop.
struct FaultyProxy {
    port: u16,
    rules: Rules,
    stop: Arc<AtomicBool>,
}

impl FaultyProxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules = Rules::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (rules, stop) = (rules.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    // Relaxed: a flag alone, no data published with it.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let rules = rules.clone();
                    std::thread::spawn(move || {
                        let _ = relay(client, upstream, &rules);
                    });
                }
            });
        }
        Self { port, rules, stop }
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// An HTTP head (request or answer line and headers) with `Connection: close` in place of
/// any `Connection` header.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn relay(mut client: TcpStream, upstream: u16, rules: &Rules) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let fault = rules.take(head.lines().next().unwrap_or_default());
    if fault == Some(Fault::SlowDown) {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                   <Message>Please reduce your request rate.</Message></Error>";
        return write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{xml}",
            xml.len()
        );
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(closing(&head).as_bytes())?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |at| at + 4);
    let (answer_head, answer_body) = answer.split_at(split);
    client.write_all(closing(&String::from_utf8_lossy(answer_head)).as_bytes())?;
    if fault == Some(Fault::CutMidBody) {
        // The connection closes with the rest of the body unsent.
        return client.write_all(&answer_body[..answer_body.len() / 2]);
    }
    client.write_all(answer_body)
}

/// `podcap dump --archive s3://BUCKET` through the proxy, of `[from, to)`, into `dest`.
fn dump_through(proxy: &FaultyProxy, (from, to): (u64, u64), dest: &Path, extra: &[&str]) -> Output {
    Command::new(PODCAP)
        .args([
            "dump",
            "--archive",
            &format!("s3://{BUCKET}"),
            "--cluster",
            "prod",
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--dest",
            dest.to_str().unwrap(),
        ])
        .args(extra)
        .env_remove("PODCAP_CLUSTER")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", proxy.port))
        .env("AWS_ACCESS_KEY_ID", "podcap-test")
        .env("AWS_SECRET_ACCESS_KEY", "podcap-test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap()
}

#[test]
fn faults_that_pass_are_retried_and_cost_nothing() {
    let folder = tempfile::tempdir().unwrap();
    archive_of_two_hours(folder.path());
    let server = S3Server::start();
    server.upload_folder(folder.path());
    let proxy = FaultyProxy::start(server.port);
    let (slow_object, _) = segment_key("node-a", 32);
    let (cut_object, _) = segment_key("node-b", 33);
    let (_, slow_manifest) = segment_key("node-a", 34);
    proxy.rules.add(&slow_object, Fault::SlowDown, Some(2));
    proxy.rules.add(&cut_object, Fault::CutMidBody, Some(1));
    proxy.rules.add(&slow_manifest, Fault::SlowDown, Some(1));
    proxy.rules.add("list-type=2", Fault::SlowDown, Some(1));
    let out = tempfile::tempdir().unwrap();
    // 10:32 to 10:35 on two nodes (node-b's 10:31 gap is outside).
    let result = dump_through(&proxy, (T0 + 32 * MINUTE, T0 + 35 * MINUTE), out.path(), &[]);
    let said = stderr(&result);
    assert!(result.status.success(), "{said}");
    assert_eq!(packets(&dumped(out.path())).len(), 3 * 2 * 180, "{said}");
    for (needle, times) in [
        (slow_object.as_str(), 2),
        (cut_object.as_str(), 1),
        (slow_manifest.as_str(), 1),
        ("list-type=2", 1),
    ] {
        assert_eq!(proxy.rules.fired(needle), times, "the fault on {needle} happened");
    }
}

#[test]
fn faults_that_last_cost_only_what_they_touch_and_are_named() {
    let folder = tempfile::tempdir().unwrap();
    archive_of_two_hours(folder.path());
    // Damaged in the bucket: node-a's 10:34 object missing, node-b's 10:34 truncated,
    // node-a's 10:35 corrupt zstd with a manifest that vouches for it, node-b's 10:35
    // manifest not JSON.
    let at = |key: &str| folder.path().join(key);
    std::fs::remove_file(at(&segment_key("node-a", 34).0)).unwrap();
    let truncated = at(&segment_key("node-b", 34).0);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (corrupt, vouching) = segment_key("node-a", 35);
    let mut bytes = std::fs::read(at(&corrupt)).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xa5;
    }
    std::fs::write(at(&corrupt), &bytes).unwrap();
    let mut manifest = podcap_archive::Manifest::parse(&std::fs::read(at(&vouching)).unwrap()).unwrap();
    manifest.stored_sha256 = podcap_archive::manifest::sha256_hex(&bytes);
    manifest.stored_bytes = bytes.len() as u64;
    std::fs::write(at(&vouching), manifest.to_bytes()).unwrap();
    std::fs::write(at(&segment_key("node-b", 35).1), b"{\"format\": ").unwrap();
    let server = S3Server::start();
    server.upload_folder(folder.path());
    let proxy = FaultyProxy::start(server.port);
    // Through the proxy: node-a's 10:32 object always answers 503, node-b's 10:33 is
    // always cut in the middle.
    let (slow, _) = segment_key("node-a", 32);
    let (cut, _) = segment_key("node-b", 33);
    proxy.rules.add(&slow, Fault::SlowDown, None);
    proxy.rules.add(&cut, Fault::CutMidBody, None);
    let out = tempfile::tempdir().unwrap();
    let window = (T0 + 30 * MINUTE, T0 + 36 * MINUTE);
    let result = dump_through(&proxy, window, &out.path().join("strict"), &[]);
    let said = stderr(&result);
    assert_eq!(result.status.code(), Some(1), "losses fail the exit: {said}");
    // 6 minutes on 2 nodes, less node-b's gap at 10:31 and the six faults.
    let kept = packets(&dumped(&out.path().join("strict")));
    assert_eq!(kept.len(), (6 * 2 - 7) * 180, "{said}");
    let lost: Vec<&str> = said.lines().filter(|l| l.starts_with("podcap: lost: ")).collect();
    assert_eq!(lost.len(), 7, "the gap and six faults, a line each: {said}");
    for (node, minute, what) in [
        ("node-a", 32, "SlowDown"),
        (
            "node-b",
            33,
            "the connection was cut before the whole object arrived",
        ),
        ("node-a", 34, "is not there"),
        ("node-b", 34, "what is stored has SHA-256"),
        ("node-a", 35, "its pcapng"),
        ("node-b", 35, "not a podcap manifest"),
    ] {
        let (data, manifest) = segment_key(node, minute);
        let key = if minute == 35 && node == "node-b" {
            manifest
        } else {
            data
        };
        assert!(
            lost.iter()
                .any(|l| l.contains(&format!("{node}: ")) && l.contains(&key) && l.contains(what)),
            "{node}'s {minute} ({what}) is named: {said}"
        );
    }
    assert!(proxy.rules.fired(&slow) >= 2, "the 503 was retried");
    assert!(proxy.rules.fired(&cut) >= 2, "the cut object was retried");

    let allowed = dump_through(&proxy, window, &out.path().join("allowed"), &["--allow-partial"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(packets(&dumped(&out.path().join("allowed"))).len(), kept.len());
}
