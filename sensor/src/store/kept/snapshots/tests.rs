use super::*;

const NOW: u64 = 1_800_000_000_000_000_000;

fn request(name: &str, expires_ns: Option<u64>) -> Request {
    Request {
        name: name.to_owned(),
        from_ns: NOW - 60_000_000_000,
        to_ns: NOW,
        selection: Selection::default(),
        described: SelectionDoc::default(),
        expires_ns,
        live: Vec::new(),
    }
}

#[test]
fn names_are_words_never_paths_or_hidden() {
    for good in ["incident-1", "a", "2026.11.30_outage", &"x".repeat(MAX_NAME_LEN)] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "..",
        ".hidden",
        "a/b",
        "../x",
        "-x",
        "a b",
        "é",
        &"x".repeat(MAX_NAME_LEN + 1),
    ] {
        assert!(matches!(check_name(bad), Err(SnapshotError::BadName(_))), "{bad}");
    }
}

#[test]
fn a_snapshot_is_listed_read_back_and_deleted() {
    let data = tempfile::tempdir().unwrap();
    let snapshots = Snapshots::open(data.path(), 1 << 20).unwrap();
    let made = snapshots
        .create(data.path(), &[], &request("one", None), NOW)
        .unwrap();
    assert_eq!(made.packets, 0);
    let file = fs::read(data.path().join("snapshots/one/snapshot.pcapng")).unwrap();
    assert_eq!(made.bytes, file.len() as u64);
    assert_eq!(
        made.sha256,
        hex(ring::digest::digest(&ring::digest::SHA256, &file).as_ref())
    );
    let listing = snapshots.list(NOW).unwrap();
    assert_eq!(listing.snapshots, vec![made.clone()]);
    assert_eq!(listing.used_bytes, made.bytes);
    // A name is taken once.
    assert!(matches!(
        snapshots.create(data.path(), &[], &request("one", None), NOW),
        Err(SnapshotError::Exists(_))
    ));
    assert_eq!(snapshots.get("one", NOW).unwrap(), made);
    snapshots.delete("one").unwrap();
    assert!(matches!(snapshots.delete("one"), Err(SnapshotError::NotFound(_))));
    assert!(matches!(
        snapshots.get("one", NOW),
        Err(SnapshotError::NotFound(_))
    ));
    assert!(snapshots.list(NOW).unwrap().snapshots.is_empty());
}

#[test]
fn one_that_does_not_fit_is_refused_remembered_and_deletes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let first_size = {
        let probe = Snapshots::open(data.path(), 1 << 20).unwrap();
        let made = probe
            .create(data.path(), &[], &request("first", None), NOW)
            .unwrap();
        made.bytes
    };
    // Room for the first and not for a second one.
    let snapshots = Snapshots::open(data.path(), first_size + first_size / 2).unwrap();
    let error = snapshots
        .create(data.path(), &[], &request("second", None), NOW)
        .unwrap_err();
    assert!(matches!(error, SnapshotError::TooLarge { .. }), "{error}");
    assert!(error.to_string().contains("--snapshot-max-size"), "{error}");
    let listing = snapshots.list(NOW).unwrap();
    assert_eq!(listing.snapshots.len(), 1, "the first is kept");
    assert_eq!(listing.failed.len(), 1);
    assert_eq!(listing.failed[0].name, "second");
    assert!(listing.failed[0].reason.contains("does not fit"));
    // Nothing half made is left.
    let names: Vec<String> = fs::read_dir(data.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");
    // Deleting the name clears its failure.
    snapshots.delete("second").unwrap();
    assert!(snapshots.list(NOW).unwrap().failed.is_empty());
}

#[test]
fn expired_snapshots_go_and_the_others_stay() {
    let data = tempfile::tempdir().unwrap();
    let snapshots = Snapshots::open(data.path(), 1 << 20).unwrap();
    snapshots
        .create(data.path(), &[], &request("soon", Some(NOW + 10)), NOW)
        .unwrap();
    snapshots
        .create(data.path(), &[], &request("later", Some(NOW + 1000)), NOW)
        .unwrap();
    snapshots
        .create(data.path(), &[], &request("kept", None), NOW)
        .unwrap();
    assert!(snapshots.expire(NOW + 9).unwrap().is_empty());
    assert_eq!(snapshots.expire(NOW + 10).unwrap(), vec!["soon".to_owned()]);
    let names: Vec<String> = snapshots
        .list(NOW + 999)
        .unwrap()
        .snapshots
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["kept", "later"]);
    let names: Vec<String> = snapshots
        .list(u64::MAX)
        .unwrap()
        .snapshots
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["kept"]);
}

#[test]
fn what_a_crash_left_half_made_is_removed_and_damage_is_listed_never_deleted() {
    let data = tempfile::tempdir().unwrap();
    let snapshots = Snapshots::open(data.path(), 1 << 20).unwrap();
    snapshots
        .create(data.path(), &[], &request("good", None), NOW)
        .unwrap();
    snapshots
        .create(data.path(), &[], &request("cut", None), NOW)
        .unwrap();
    let root = data.path().join("snapshots");
    // A crash in the middle of making one, and of deleting one.
    fs::create_dir(root.join(".tmp-half")).unwrap();
    fs::write(root.join(".tmp-half/snapshot.pcapng"), b"partial").unwrap();
    fs::create_dir(root.join(".deleting-old-1")).unwrap();
    // A snapshot file cut short, and a folder that is not a snapshot at all.
    let cut = root.join("cut/snapshot.pcapng");
    let len = fs::metadata(&cut).unwrap().len();
    File::options()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    fs::create_dir(root.join("stranger")).unwrap();
    drop(snapshots);
    let snapshots = Snapshots::open(data.path(), 1 << 20).unwrap();
    assert!(!root.join(".tmp-half").exists() && !root.join(".deleting-old-1").exists());
    let listing = snapshots.list(NOW).unwrap();
    assert_eq!(listing.snapshots.len(), 1);
    let damaged: Vec<&str> = listing.damaged.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(damaged, ["cut", "stranger"]);
    assert!(
        listing.damaged[0].reason.contains("its manifest says"),
        "{:?}",
        listing.damaged
    );
    assert!(snapshots
        .get("cut", NOW)
        .unwrap_err()
        .to_string()
        .contains("damaged"));
    // Still there until deleted by name.
    assert!(root.join("cut").exists() && root.join("stranger").exists());
    snapshots.delete("cut").unwrap();
    assert!(!root.join("cut").exists());
}

#[test]
fn failure_records_are_bounded_and_the_newest_kept() {
    let data = tempfile::tempdir().unwrap();
    // A budget no snapshot fits in: every creation fails and is remembered.
    let snapshots = Snapshots::open(data.path(), 1).unwrap();
    let tries = MAX_FAILED_RECORDS as u64 + 8;
    for i in 0..tries {
        let error = snapshots
            .create(data.path(), &[], &request(&format!("try-{i:02}"), None), NOW + i)
            .unwrap_err();
        assert!(matches!(error, SnapshotError::TooLarge { .. }), "{error}");
    }
    let records = fs::read_dir(data.path().join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(FAILED_PREFIX)
        })
        .count();
    assert_eq!(
        records, MAX_FAILED_RECORDS,
        "{tries} failures, at most {MAX_FAILED_RECORDS} records"
    );
    let failed: Vec<String> = snapshots
        .list(NOW + tries)
        .unwrap()
        .failed
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        failed.first().map(String::as_str),
        Some("try-08"),
        "the oldest 8 went"
    );
    assert_eq!(
        failed.last().map(String::as_str),
        Some("try-39"),
        "the newest stays"
    );
}
