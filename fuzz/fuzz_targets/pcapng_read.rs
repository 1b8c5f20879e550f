//! Any bytes through every pcapng reader podcap has: the strict block iterator, the
//! salvaging one, the streaming reader, the section state, packets, statistics, comments,
//! name records, resynchronisation. Nothing may panic; what the strict reader accepts,
//! the salvaging one yields too, block for block.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podcap_format::pcapng::read::{
    complete_prefix_len, names_valid, next_plausible_block, parse_packet, parse_statistics, resync,
    section_comments, BlockReader, Blocks, Piece, SalvagedBlocks, Section,
};

fuzz_target!(|bytes: &[u8]| {
    let mut section = Section::default();
    let mut strict = Vec::new();
    for block in Blocks::new(bytes) {
        let Ok(block) = block else { break };
        strict.push(block.offset);
        let _ = section.observe(&block);
        let _ = parse_packet(&block, &section);
        let _ = parse_statistics(&block, &section);
        let _ = section_comments(&block);
        let _ = names_valid(&block, section.swapped);
    }
    let mut section = Section::default();
    let mut salvaged = Vec::new();
    for piece in SalvagedBlocks::new(bytes) {
        if let Piece::Block(block) = piece {
            salvaged.push(block.offset);
            let _ = section.observe(&block);
            let _ = parse_packet(&block, &section);
        }
    }
    // The salvaging reader finds every block the strict one does, from the same start
    // (a damaged first Section Header is the one place it reads otherwise).
    if strict.first() == Some(&0) && salvaged.first() == Some(&0) {
        assert!(strict.iter().all(|o| salvaged.contains(o)), "{strict:?} vs {salvaged:?}");
    }
    let prefix = complete_prefix_len(bytes);
    assert!(prefix <= bytes.len());
    let _ = next_plausible_block(bytes, bytes.len() / 2, false);
    let _ = resync(bytes, bytes.len() / 3, true);
    let mut reader = BlockReader::new(std::io::Cursor::new(bytes));
    let mut section = Section::default();
    while let Ok(Some(block)) = reader.next_block() {
        let _ = section.observe(&block);
        let _ = parse_packet(&block, &section);
    }
});
