//! Any text as the store's `index.tsv`: parsing never panics, and a manifest it accepts
//! answers lookups over any range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podcap_format::index::Index;

fuzz_target!(|text: &str| {
    if let Ok(index) = Index::parse(text) {
        let _ = index.total_bytes();
        let _ = index.oldest();
        for (from, to) in [(0, u64::MAX), (u64::MAX / 2, u64::MAX), (1, 2)] {
            for record in index.overlapping(from, to) {
                assert!(record.overlaps(from, to));
            }
        }
    }
});
