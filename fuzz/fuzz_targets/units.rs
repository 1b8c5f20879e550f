//! Any text as a size, a duration, a time or "the last …": never a panic, never a wrap; a
//! parsed time formats back to the same second.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podcap_format::units::{format_rfc3339, parse_duration, parse_last, parse_rfc3339, parse_size};

fuzz_target!(|text: &str| {
    let _ = parse_size(text);
    let _ = parse_duration(text);
    if let Ok(from) = parse_last(text, 1_795_449_600_000_000_000) {
        assert!(from <= 1_795_449_600_000_000_000);
    }
    if let Ok(ns) = parse_rfc3339(text) {
        let again = parse_rfc3339(&format_rfc3339(ns)).expect("its own format parses");
        assert_eq!(again / 1_000_000_000, ns / 1_000_000_000);
    }
});
