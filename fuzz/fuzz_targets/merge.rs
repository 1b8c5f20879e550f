//! Any bytes, split into two inputs, through the merge `podcap dump` writes files with:
//! nothing may panic, and what it writes is always well-formed pcapng, readable to its end
//! by the strict reader, whatever it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podcap_format::{
    merge::{merge, Input},
    pcapng::read::{parse_packet, Blocks, Section},
};

fuzz_target!(|bytes: &[u8]| {
    let cut = bytes.first().map_or(0, |&b| usize::from(b) * bytes.len() / 256);
    let (a, b) = bytes.split_at(cut.min(bytes.len()));
    let inputs = vec![
        Input {
            label: "a".to_owned(),
            reader: std::io::Cursor::new(a),
        },
        Input {
            label: "b".to_owned(),
            reader: std::io::Cursor::new(b),
        },
    ];
    let mut out = Vec::new();
    merge(inputs, &["fuzz".to_owned()], &mut out).expect("writing to memory cannot fail");
    let mut section = Section::default();
    for block in Blocks::new(&out) {
        let block = block.expect("the merge wrote a malformed block");
        section.observe(&block).expect("the merge wrote a malformed interface block");
        parse_packet(&block, &section).expect("the merge wrote a malformed packet block");
    }
});
