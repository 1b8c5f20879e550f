//! Any text as the targeting document (a ConfigMap anyone with the tap role can edit):
//! never a panic; an accepted document answers selections.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podcap_format::targeting::TargetingDoc;

fuzz_target!(|text: &str| {
    if let Ok(doc) = TargetingDoc::parse(text) {
        let _ = doc.selects("shop", "web-1");
        let _ = doc.settings();
    }
});
