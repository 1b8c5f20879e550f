use super::*;

const FLOORS: Floors = Floors {
    segment_size: 50_000_000,
    segment_time: Duration::from_mins(1),
};

fn doc(enabled: Option<bool>, max_time: Option<&str>, max_size: Option<&str>) -> SettingsDoc {
    SettingsDoc {
        enabled,
        max_time: max_time.map(Into::into),
        max_size: max_size.map(Into::into),
    }
}

fn start(dir: &Path, flags: SettingsDoc, targeting: SettingsDoc) -> RuntimeSettings {
    RuntimeSettings::start(dir, StartInputs { flags, targeting }, FLOORS).unwrap()
}

#[test]
fn changes_apply_persist_and_survive_a_restart_with_the_same_flags() {
    let dir = tempfile::tempdir().unwrap();
    let flags = doc(None, Some("1h"), Some("500MB"));
    let s = start(dir.path(), flags.clone(), SettingsDoc::default());
    assert_eq!(
        (s.enabled(), s.max_size(), s.max_time()),
        (true, 500_000_000, Duration::from_hours(1))
    );
    assert_eq!(s.view().sources.max_size.source, Source::Flag);
    let view = s.apply_api(&doc(Some(false), None, Some("2GB"))).unwrap();
    assert_eq!((view.enabled, view.max_size.as_str()), (false, "2GB"));
    assert_eq!(view.sources.max_size.source, Source::Api);
    assert_eq!(view.sources.max_time.source, Source::Flag);
    let again = start(dir.path(), flags, SettingsDoc::default());
    assert_eq!(
        (again.enabled(), again.max_size(), again.max_time()),
        (false, 2_000_000_000, Duration::from_hours(1))
    );
    assert_eq!(again.view().sources.max_size.source, Source::Api);
}

#[test]
fn a_restart_with_a_new_flag_is_the_newest_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), doc(None, None, Some("500MB")), SettingsDoc::default());
    s.apply_api(&doc(None, None, Some("2GB"))).unwrap();
    drop(s);
    let s = start(dir.path(), doc(None, None, Some("1GB")), SettingsDoc::default());
    assert_eq!(s.max_size(), 1_000_000_000, "the changed flag wins");
    assert_eq!(s.view().sources.max_size.source, Source::Flag);
    drop(s);
    // The flag removed: the file's value, else the default.
    let s = start(dir.path(), SettingsDoc::default(), doc(None, None, Some("3GB")));
    assert_eq!(s.max_size(), 3_000_000_000);
    assert_eq!(s.view().sources.max_size.source, Source::TargetingFile);
}

#[test]
fn the_targeting_file_applies_what_changed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = doc(Some(true), Some("2h"), Some("1GB"));
    let s = start(dir.path(), doc(None, None, Some("800MB")), file.clone());
    assert_eq!(s.max_size(), 800_000_000, "at one start the flag beats the file");
    s.apply_api(&doc(Some(false), None, None)).unwrap();
    // A reload of the same file (a helm upgrade with the same values) changes nothing.
    s.apply_targeting(&file).unwrap();
    assert_eq!((s.enabled(), s.max_size()), (false, 800_000_000));
    // An edit of one key applies that key only.
    s.apply_targeting(&doc(Some(true), Some("3h"), Some("1GB")))
        .unwrap();
    assert_eq!(
        (s.enabled(), s.max_size(), s.max_time()),
        (false, 800_000_000, Duration::from_hours(3))
    );
    assert_eq!(s.view().sources.max_time.source, Source::TargetingFile);
    // A key taken out of the file goes back to the flag's value.
    s.apply_targeting(&doc(Some(true), Some("3h"), None)).unwrap();
    assert_eq!(s.max_size(), 800_000_000);
    s.apply_targeting(&doc(Some(true), Some("3h"), Some("1GB")))
        .unwrap();
    assert_eq!(s.max_size(), 1_000_000_000);
    // And the file edited while the sensor was down wins at the next start.
    drop(s);
    let s = start(
        dir.path(),
        doc(None, None, Some("800MB")),
        doc(Some(true), Some("4h"), Some("1GB")),
    );
    assert_eq!(s.max_time(), Duration::from_hours(4));
    assert!(!s.enabled(), "the API's change to enabled stands");
}

#[test]
fn a_destructive_or_bad_change_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        doc(None, Some("1h"), Some("500MB")),
        SettingsDoc::default(),
    );
    for (change, needle) in [
        (
            doc(Some(false), Some("soon"), None),
            "maxTime: invalid duration \"soon\"",
        ),
        (doc(None, None, Some("5")), "maxSize: \"5\" has no unit"),
        (
            doc(None, None, Some("1MB")),
            "maxSize: 1MB keeps fewer than 4 segments of 50 MB",
        ),
        (
            doc(None, Some("1ms"), None),
            "maxTime: 1ms keeps fewer than 4 segments",
        ),
        (
            doc(Some(false), Some("2h"), Some("199MB")),
            "give at least 200 MB",
        ),
    ] {
        let err = s.apply_api(&change).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(
            (s.enabled(), s.max_size(), s.max_time()),
            (true, 500_000_000, Duration::from_hours(1))
        );
    }
    // Nor at start: a persisted value below the floor gives way, said in the log.
    drop(s);
    let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
    fs::write(dir.path().join(FILE), text.replace("\"500MB\"", "\"1MB\"")).unwrap();
    let s = start(
        dir.path(),
        doc(None, Some("1h"), Some("500MB")),
        SettingsDoc::default(),
    );
    assert_eq!(s.max_size(), 500_000_000);
}

#[test]
fn a_refused_size_names_its_floor_exactly() {
    // The case: 256 KB segments, a floor of 1.024 MB, and "1.02MB" asked for.
    let floors = Floors {
        segment_size: 256_000,
        segment_time: Duration::from_secs(1),
    };
    let refused = floors
        .check(&doc(None, None, Some("1.02MB")))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("segments of 256 KB; give at least 1.024 MB"),
        "{refused}"
    );
    assert!(
        floors.check(&doc(None, None, Some("1.024MB"))).is_ok(),
        "the floor as the message writes it is accepted"
    );
}

/// The writer learns of retention changes through the listener, in order, whatever made
/// them; a change of `enabled` alone and a refused change tell it nothing.
#[test]
fn retention_changes_reach_the_listener_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        doc(None, Some("1h"), Some("500MB")),
        SettingsDoc::default(),
    );
    let (tx, heard) = std::sync::mpsc::channel();
    s.on_retention_change(move |size, time| tx.send((size, time)).unwrap());
    s.apply_api(&doc(None, None, Some("2GB"))).unwrap();
    s.apply_api(&doc(Some(false), None, None)).unwrap();
    assert!(
        s.apply_api(&doc(None, Some("1s"), None)).is_err(),
        "below the floor"
    );
    s.apply_targeting(&doc(None, Some("3h"), None)).unwrap();
    let heard: Vec<(u64, Duration)> = heard.try_iter().collect();
    assert_eq!(
        heard,
        [
            (2_000_000_000, Duration::from_hours(1)),
            (2_000_000_000, Duration::from_hours(3)),
        ]
    );
}
