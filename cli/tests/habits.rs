//! The habits of kubectl, tcpdump and shell users: `--dest` as a folder or a `.pcapng`
//! file, never overwriting without `--force`, never creating a mistyped parent; shell
//! completion for bash, zsh and fish. Real sensor routers and stores on loopback.
mod common;

use std::{net::SocketAddr, process::Command};

use common::{podcap_with, sensor, stderr, PODCAP, TOKEN};

async fn dump_to(sensors: &[SocketAddr], dest: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["dump", "--time", "5m", "--dest", dest];
    args.extend_from_slice(extra);
    podcap_with(sensors, TOKEN, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dest_is_a_folder_or_a_pcapng_file_and_nothing_is_overwritten() {
    let store = tempfile::tempdir().unwrap();
    let sensors = [sensor(&store, 0, 0xaa).await];
    let work = tempfile::tempdir().unwrap();
    let path = |rest: &str| work.path().join(rest).display().to_string();

    // A file path: written there, exactly.
    let file = path("incident.pcapng");
    let out = dump_to(&sensors, &file, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let first = std::fs::read(&file).unwrap();
    assert!(first.len() > 1_000, "{} bytes", first.len());
    // Again: refused before anything is downloaded, the file untouched; --force replaces.
    std::fs::write(&file, b"evidence").unwrap();
    let out = dump_to(&sensors, &file, &[]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"evidence");
    let out = dump_to(&sensors, &file, &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&file).unwrap().len() > 1_000);

    // A new folder is made when only its last part is missing; the file is named in it.
    let out = dump_to(&sensors, &path("new"), &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(path("new")).unwrap().count(), 1);

    // A mistyped parent is named, not created.
    let out = dump_to(&sensors, &path("typo/deeper/here"), &[]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not exist") && stderr(&out).contains("typo"),
        "{}",
        stderr(&out)
    );
    assert!(!work.path().join("typo").exists(), "nothing created");
    let out = dump_to(&sensors, &path("typo/x.pcapng"), &[]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // A .pcap name, and an existing file that is not pcapng as a folder: named.
    let out = dump_to(&sensors, &path("x.pcap"), &[]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("name the file .pcapng"), "{}", stderr(&out));
    std::fs::write(path("notes.txt"), b"x").unwrap();
    let out = dump_to(&sensors, &path("notes.txt"), &[]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a file, not a folder"), "{}", stderr(&out));

    // Standard output when it is not a terminal: the pcapng itself.
    let out = dump_to(&sensors, "-", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(&out.stdout[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
}

#[test]
fn completion_scripts_for_three_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(PODCAP).args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["dump", "snapshot", "--dest", "--sensor"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    // bash itself reads the bash script.
    let out = Command::new("bash")
        .args([
            "-c",
            "source <(\"$0\" completion bash) && complete -p podcap",
            PODCAP,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("_podcap"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(PODCAP)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
    assert!(
        stderr(&out).contains("bash"),
        "the shells are listed: {}",
        stderr(&out)
    );
}

/// A sensor that cannot be reached is named with its cause said once, and no file is made.
#[test]
fn an_unreachable_sensor_is_named_with_its_cause_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new(PODCAP)
        .args(["dump", "--time", "1m", "--dest"])
        .arg(dest.path())
        .args(["--sensor", &format!("node-a=http://127.0.0.1:{port}")])
        .env("PODCAP_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = stderr(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("node-a") && text.contains("Connection refused"),
        "{text}"
    );
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0, "no file");
}

/// On a terminal the progress shows each sensor ending `done` or `failed` (never a stale
/// `…`); with `TERM=dumb` nothing moves the cursor. The terminal is a real pty (`script`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_on_a_terminal_says_how_each_sensor_ended_and_dumb_terminals_get_no_escapes() {
    let store = tempfile::tempdir().unwrap();
    let good = sensor(&store, 0, 0xaa).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    for term in ["xterm-256color", "dumb"] {
        let dest = tempfile::tempdir().unwrap();
        let command = format!(
            "{PODCAP} dump --time 5m --allow-partial --dest {} --sensor node-0=http://{good} \
             --sensor dead=http://127.0.0.1:{dead}",
            dest.path().display()
        );
        let out = tokio::task::spawn_blocking(move || {
            Command::new("script")
                .args(["-qec", &command, "/dev/null"])
                .env("TERM", term)
                .env("PODCAP_TOKEN", TOKEN)
                .env("COLUMNS", "60")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{term}: {text}");
        if term == "dumb" {
            assert!(!text.contains("\u{1b}["), "{term}: escapes: {text:?}");
        } else {
            let last_state = |label: &str| {
                text.rsplit(label)
                    .next()
                    .and_then(|rest| rest.lines().next())
                    .unwrap_or_default()
                    .to_owned()
            };
            assert!(last_state("node-0:").contains("done"), "{text:?}");
            assert!(last_state("dead:").contains("failed"), "{text:?}");
        }
    }
}

/// `--namespace` is `-n` (the pods' namespace, as kubectl users read it), and the flags
/// that only say where the cluster is are refused by name with `--sensor`, before anything
/// is downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_selects_pods_as_in_kubectl_and_cluster_flags_are_refused_with_sensor() {
    let store = tempfile::tempdir().unwrap();
    let sensors = [sensor(&store, 0, 0xaa).await];
    // The standalone sensor's eth0 belongs to no pod's namespace: nothing matches.
    for flag in ["--namespace", "-n", "--namespaces"] {
        let work = tempfile::tempdir().unwrap();
        let out = dump_to(&sensors, work.path().to_str().unwrap(), &[flag, "shop"]).await;
        assert_eq!(out.status.code(), Some(3), "{flag}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no interface matched -n shop"),
            "{flag}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "{flag}");
    }
    for (given, named) in [
        (&["--context", "lab"][..], "--context"),
        (&["--kubeconfig", "/nonexistent/config"], "--kubeconfig"),
        (&["-s", "podcap"], "-s/--release-namespace"),
        (&["--release-namespace", "podcap"], "-s/--release-namespace"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let out = dump_to(&sensors, work.path().to_str().unwrap(), given).await;
        let err = stderr(&out);
        assert!(!out.status.success(), "{given:?}: {err}");
        assert!(
            err.contains(named) && err.contains("give one or the other"),
            "{given:?}: {err}"
        );
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "{given:?}");
    }
    let help = Command::new(PODCAP).args(["dump", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("-n, --namespace <NS>"), "{help}");
    assert!(help.contains("-s, --release-namespace <NS>"), "{help}");
}

/// The same sensor twice is asked once (and the count is singular); `.pcapng.gz` is a gzip
/// file Wireshark opens; a dangling symlink as --dest is refused before any download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_given_twice_a_gzip_dest_and_a_dangling_symlink() {
    let store = tempfile::tempdir().unwrap();
    let addr = sensor(&store, 0, 0xaa).await;
    let work = tempfile::tempdir().unwrap();
    let path = |rest: &str| work.path().join(rest).display().to_string();
    let run = |args: Vec<String>, token: &'static str| {
        tokio::task::spawn_blocking(move || {
            Command::new(PODCAP)
                .args(&args)
                .env("PODCAP_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let url = format!("node-a=http://{addr}");

    // The same sensor twice: asked once, its packets once; "1 sensor".
    let file = path("twice.pcapng");
    let out = run(
        strings(&[
            "dump", "--time", "5m", "--sensor", &url, "--sensor", &url, "--dest", &file,
        ]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(common::packets(&std::fs::read(&file).unwrap()).len(), 120);
    assert!(stderr(&out).contains("(120 packets, "), "{}", stderr(&out));
    assert!(stderr(&out).contains(" from 1 sensor\n"), "{}", stderr(&out));

    // .pcapng.gz: gzip of the same pcapng.
    let gz = path("incident.pcapng.gz");
    let out = run(
        strings(&["dump", "--time", "5m", "--sensor", &url, "--dest", &gz]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let compressed = std::fs::read(&gz).unwrap();
    assert_eq!(&compressed[..2], &[0x1f, 0x8b], "gzip magic");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut plain).unwrap();
    assert_eq!(common::packets(&plain).len(), 120);
    if let Ok(tshark) = Command::new("tshark").arg("-r").arg(&gz).output() {
        assert!(
            tshark.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&tshark.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&tshark.stdout).lines().count(), 120);
    }

    // A dangling symlink: refused before any sensor is asked (this one is closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let link = path("evidence.pcapng");
    std::os::unix::fs::symlink(work.path().join("missing/target.pcapng"), &link).unwrap();
    let out = run(
        strings(&["dump", "--time", "5m", "--sensor", &dead, "--dest", &link]),
        TOKEN,
    )
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&link) && err.contains("symbolic link") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("Connection refused"), "asked a sensor first: {err}");
}

/// What a user gets wrong is said in their terms: a Wireshark display filter is told apart
/// from a capture filter; a time without an offset is refused with the time written
/// correctly; a 401 names --token-file and `PODCAP_TOKEN`; https:// against a plain sensor
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_are_named_in_the_users_terms() {
    let store = tempfile::tempdir().unwrap();
    let addr = sensor(&store, 0, 0xaa).await;
    let work = tempfile::tempdir().unwrap();
    let path = |rest: &str| work.path().join(rest).display().to_string();
    let run = |args: Vec<String>, token: &'static str| {
        tokio::task::spawn_blocking(move || {
            Command::new(PODCAP)
                .args(&args)
                .env("PODCAP_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let url = format!("node-a=http://{addr}");

    // A Wireshark display filter: the expression echoed, the two syntaxes told apart.
    let out = run(
        strings(&[
            "dump",
            "--time",
            "5m",
            "--sensor",
            &url,
            "--dest",
            &path("f.pcapng"),
            "--filter",
            "ip.addr == 198.18.0.1",
        ]),
        TOKEN,
    )
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("\"ip.addr == 198.18.0.1\"")
            && err
                .contains("capture filters use tcpdump syntax (pcap-filter), not Wireshark display filters"),
        "{err}"
    );

    // A time without its offset.
    let out = run(
        strings(&[
            "dump",
            "--from",
            "2026-12-07T00:00:10",
            "--sensor",
            &url,
            "--dest",
            &path("t.pcapng"),
        ]),
        TOKEN,
    )
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("no offset") && err.contains("2026-12-07T00:00:10Z"),
        "{err}"
    );

    // A wrong token: where the right one goes.
    let out = run(strings(&["segments", "--sensor", &url]), "not-the-token")
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("HTTP 401") && err.contains("--token-file") && err.contains("PODCAP_TOKEN"),
        "{err}"
    );
    let help = Command::new(PODCAP).args(["dump", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("PODCAP_TOKEN"));

    // https:// against a sensor that speaks plain HTTP.
    let out = run(
        strings(&["segments", "--sensor", &format!("https://{addr}")]),
        TOKEN,
    )
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("the sensor speaks http, not https"), "{err}");
}
