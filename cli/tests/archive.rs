//! `podcap dump --archive` and `podcap archive ls` against a real archive in a local folder
//! (`file://`, the same code path as `s3://`), written with podcap-archive's own upload: two
//! nodes, segments a minute long over two hours, pod interfaces, a gap, and objects damaged
//! on purpose. The `podcap` binary runs as a user would run it.
mod common;

use common::{
    archive::{archive_of_two_hours, podcap, rfc3339, segment_key, MINUTE, SECOND, T0},
    dumped, packets, stderr,
};

/// `podcap dump --archive URL` of node-a's window `[from, to)` into `dest`.
fn node_a_dump(url: &str, (from, to): (&str, &str), dest: &std::path::Path) -> std::process::Output {
    podcap(&[
        "dump",
        "--archive",
        url,
        "--cluster",
        "prod",
        "--archive-node",
        "node-a",
        "--from",
        from,
        "--to",
        to,
        "--dest",
        dest.to_str().unwrap(),
    ])
}

#[test]
fn a_window_is_cut_exactly_from_only_the_objects_it_needs() {
    let store = tempfile::tempdir().unwrap();
    let url = archive_of_two_hours(store.path());
    let out = tempfile::tempdir().unwrap();
    // 10:05:30 to 10:10:30 on node-a: 300 s of three interfaces.
    let (from, to) = (T0 + 5 * MINUTE + 30 * SECOND, T0 + 10 * MINUTE + 30 * SECOND);
    let dest = out.path().join("a");
    let result = node_a_dump(&url, (&rfc3339(from), &rfc3339(to)), &dest);
    assert!(result.status.success(), "{}", stderr(&result));
    let got = packets(&dumped(&dest));
    assert_eq!(got.len(), 900, "three a second for 300 s");
    assert!(got
        .iter()
        .all(|(_, ts, marker)| (from..to).contains(ts) && *marker == 0xa));
    assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "time order");
    assert_eq!(got[0].1, from, "cut exactly at the start");
    let names: std::collections::BTreeSet<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "node-a/eth0",
            "node-a/kube-system/dns-1/eth0",
            "node-a/shop/web-1/eth0"
        ]
    );
    // Only what the window needs: 6 objects of 240, their 6 manifests, the node folders
    // and node-a's keys from the hour before the window to its end listed.
    let said = stderr(&result);
    assert!(said.contains("from 6 objects of 1 node:"), "{said}");
    assert!(said.contains("2 listings, 6 manifests read"), "{said}");

    // A century costs what the two hours stored in it cost: one listing of node-a's keys.
    let century = node_a_dump(
        &url,
        ("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"),
        &out.path().join("century"),
    );
    let said = stderr(&century);
    assert!(century.status.success(), "{said}");
    assert!(said.contains(" 2 listings, "), "{said}");
    assert!(said.contains("of 1 node:"), "{said}");
}

#[test]
fn pods_namespaces_and_interfaces_are_selected_as_a_sensor_selects_them() {
    let store = tempfile::tempdir().unwrap();
    let url = archive_of_two_hours(store.path());
    let out = tempfile::tempdir().unwrap();
    let window = [
        "--from",
        &rfc3339(T0 + 40 * MINUTE),
        "--to",
        &rfc3339(T0 + 41 * MINUTE),
    ];
    let run = |name: &str, extra: &[&str]| {
        let dest = out.path().join(name);
        let mut args = vec![
            "dump",
            "--archive",
            &url,
            "--cluster",
            "prod",
            "--dest",
            dest.to_str().unwrap(),
        ];
        args.extend(window);
        args.extend(extra);
        let result = podcap(&args);
        assert!(result.status.success(), "{}", stderr(&result));
        packets(&dumped(&dest))
    };
    let web = run("web", &["--pod", "^web-"]);
    assert_eq!(web.len(), 120, "60 s of web-1 on two nodes");
    assert!(web.iter().all(|(n, _, _)| n.ends_with("/shop/web-1/eth0")));
    let system = run("system", &["-n", "kube-system"]);
    assert!(system.len() == 120 && system.iter().all(|(n, _, _)| n.contains("/kube-system/dns-1/")));
    let node = run("node", &["--iface", "eth0"]);
    assert!(
        node.len() == 120
            && node
                .iter()
                .all(|(n, _, _)| n.ends_with("/eth0") && n.matches('/').count() == 1)
    );
    let all = run("all", &[]);
    assert_eq!(all.len(), 360);

    // A tcpdump filter is run on the laptop, by its libpcap: what tcpdump -r keeps of the
    // whole window, no more, no less.
    let udp = run("udp", &["--filter", "udp port 53"]);
    assert_eq!(
        udp.len(),
        180,
        "the even seconds of 60 s, three interfaces, two nodes"
    );
    assert!(udp
        .iter()
        .all(|(_, ts, _)| ((ts - T0) / SECOND).is_multiple_of(2)));
    let whole = out.path().join("all.pcapng");
    std::fs::write(&whole, dumped(&out.path().join("all"))).unwrap();
    let oracle = std::process::Command::new("tcpdump")
        .args(["-nr", whole.to_str().unwrap(), "udp port 53"])
        .output()
        .expect("tcpdump (cargo xtask setup installs it)");
    assert_eq!(String::from_utf8_lossy(&oracle.stdout).lines().count(), udp.len());
    let web_tcp = run("web-tcp", &["--pod", "^web-", "--filter", "tcp"]);
    assert!(
        web_tcp.len() == 60
            && web_tcp
                .iter()
                .all(|(n, ts, _)| n.ends_with("/shop/web-1/eth0") && !((ts - T0) / SECOND).is_multiple_of(2))
    );

    let refused = podcap(&[
        "dump",
        "--archive",
        &url,
        "--cluster",
        "prod",
        "--time",
        "5m",
        "--filter",
        "tcp and and",
        "--dest",
        out.path().join("refused").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--filter") && stderr(&refused).contains("syntax error"),
        "libpcap's own message: {}",
        stderr(&refused)
    );
    assert!(!out.path().join("refused").exists(), "nothing written");
}

#[test]
fn a_gap_or_a_damaged_object_is_a_named_loss_and_the_rest_is_kept() {
    let store = tempfile::tempdir().unwrap();
    let url = archive_of_two_hours(store.path());
    let out = tempfile::tempdir().unwrap();
    // node-b's 10:31 is a gap; damage node-a's 10:32 object.
    let damaged = store.path().join(segment_key("node-a", 32).0);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();
    let window = [
        "--from".to_owned(),
        rfc3339(T0 + 30 * MINUTE),
        "--to".to_owned(),
        rfc3339(T0 + 34 * MINUTE),
    ];
    let dest = out.path().join("partial");
    let mut args = vec![
        "dump",
        "--archive",
        &url,
        "--cluster",
        "prod",
        "--dest",
        dest.to_str().unwrap(),
    ];
    args.extend(window.iter().map(String::as_str));
    let result = podcap(&args);
    assert!(!result.status.success(), "a loss fails without --allow-partial");
    let said = stderr(&result);
    assert!(
        said.contains("node-b:") && said.contains("was never uploaded"),
        "{said}"
    );
    assert!(said.contains("what is stored has SHA-256"), "{said}");
    let got = packets(&dumped(&dest));
    // 4 minutes x 2 nodes x 180, less node-b's gap and node-a's damaged minute.
    assert_eq!(got.len(), 4 * 2 * 180 - 2 * 180);
    let comments: Vec<String> = podcap_format::pcapng::read::Blocks::new(&dumped(&dest))
        .flat_map(|b| podcap_format::pcapng::read::section_comments(&b.unwrap()))
        .collect();
    assert!(
        comments.iter().any(|c| c.starts_with("gap: node-b")),
        "{comments:?}"
    );
    let dest = out.path().join("allowed");
    let mut args = vec![
        "dump",
        "--archive",
        &url,
        "--cluster",
        "prod",
        "--allow-partial",
        "--dest",
        dest.to_str().unwrap(),
    ];
    args.extend(window.iter().map(String::as_str));
    assert!(podcap(&args).status.success());

    let listing = podcap(&["archive", "ls", &url, "--cluster", "prod"]);
    assert!(listing.status.success(), "{}", stderr(&listing));
    let text = String::from_utf8_lossy(&listing.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("node-b") && l.contains(" 2026-11-30T10:00:00Z "))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cells[2], cells[cells.len() - 1]),
        ("59", "1"),
        "59 segments and a gap: {row}"
    );
}

#[test]
fn what_the_archive_does_not_hold_is_said() {
    let store = tempfile::tempdir().unwrap();
    let url = archive_of_two_hours(store.path());
    let unknown = podcap(&[
        "dump",
        "--archive",
        &url,
        "--cluster",
        "prod",
        "--archive-node",
        "node-z",
        "--time",
        "5m",
    ]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("the archive has no node \"node-z\" (it has: node-a, node-b)"),
        "{}",
        stderr(&unknown)
    );
    // Nothing in the window, or nothing the selection matches: no file, exit 3.
    let dest = tempfile::tempdir().unwrap();
    let empty = podcap(&[
        "dump",
        "--archive",
        &url,
        "--cluster",
        "prod",
        "--time",
        "5m",
        "--dest",
        dest.path().to_str().unwrap(),
    ]);
    assert_eq!(empty.status.code(), Some(3), "{}", stderr(&empty));
    assert!(
        stderr(&empty).contains("the archive holds nothing for"),
        "{}",
        stderr(&empty)
    );
    let unmatched = |selection: &[&str]| {
        let mut args = vec![
            "dump",
            "--archive",
            &url,
            "--cluster",
            "prod",
            "--dest",
            dest.path().to_str().unwrap(),
        ];
        let window = [
            "--from".to_owned(),
            rfc3339(T0 + 40 * MINUTE),
            "--to".to_owned(),
            rfc3339(T0 + 41 * MINUTE),
        ];
        args.extend(window.iter().map(String::as_str));
        args.extend(selection);
        let result = podcap(&args);
        let err = stderr(&result);
        assert_eq!(result.status.code(), Some(3), "{err}");
        assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0, "no file");
        err
    };
    // No interface of the window's objects is selected: none is fetched (their manifests
    // name their interfaces).
    let err = unmatched(&["--pod", "^nothing-"]);
    assert!(
        !err.contains("fetched")
            && err.contains("holds 2 objects of node-a, node-b for")
            && err.contains("none of their interfaces matched the selection"),
        "{err}"
    );
    let err = unmatched(&["--filter", "udp port 9"]);
    assert!(
        err.contains("holds 2 objects of node-a, node-b for")
            && err.contains("none of their packets matched the selection"),
        "{err}"
    );
    let missing = podcap(&["archive", "ls", "file:///nonexistent/podcap"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no such bucket"),
        "{}",
        stderr(&missing)
    );
    let scheme = podcap(&["archive", "ls", "ftp://x/y"]);
    assert!(
        stderr(&scheme).contains("unknown scheme \"ftp\""),
        "{}",
        stderr(&scheme)
    );
}

#[test]
fn an_object_longer_than_its_manifest_and_a_foreign_key_are_named_and_cost_only_themselves() {
    let store = tempfile::tempdir().unwrap();
    let url = archive_of_two_hours(store.path());
    let out = tempfile::tempdir().unwrap();
    // node-a's 10:32 object grows past what its manifest says.
    let longer = store.path().join(segment_key("node-a", 32).0);
    let mut bytes = std::fs::read(&longer).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&longer, bytes).unwrap();
    // A manifest under a key the layout would not write (its first packet padded to 21
    // digits): named, never read as the segment it resembles.
    let manifest = segment_key("node-a", 33).1;
    let (folder, name) = manifest.rsplit_once('/').unwrap();
    let foreign = format!("{folder}/0{name}");
    std::fs::copy(store.path().join(&manifest), store.path().join(&foreign)).unwrap();
    let dest = out.path().join("a");
    let result = node_a_dump(
        &url,
        (&rfc3339(T0 + 30 * MINUTE), &rfc3339(T0 + 34 * MINUTE)),
        &dest,
    );
    let said = stderr(&result);
    assert_eq!(result.status.code(), Some(1), "{said}");
    assert!(
        said.contains("longer than the") && said.contains("bytes its manifest says"),
        "{said}"
    );
    assert!(
        said.contains(&foreign) && said.contains("not a key podcap writes"),
        "{said}"
    );
    // 4 minutes of node-a less the longer object's minute; the foreign key adds nothing.
    assert_eq!(packets(&dumped(&dest)).len(), 3 * 180, "{said}");
}
