use super::*;

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn open(dir: &std::path::Path, mode: WriteMode) -> (SegmentFile, std::path::PathBuf) {
    let path = dir.join("segment");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    (SegmentFile::new(file, mode), path)
}

/// Writes of every awkward length land byte for byte; the file is padded with zeros
/// to a block while open and exact after close.
#[test]
fn direct_writes_of_any_length_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut file, path) = open(dir.path(), WriteMode::Direct);
    let mut expected = Vec::new();
    for (i, len) in [1usize, 4095, 1, 4096, 10_000, 3, 3 << 20, 17]
        .into_iter()
        .enumerate()
    {
        let part: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
        let (a, b) = part.split_at(len / 2);
        file.append(&[a, b]).unwrap();
        expected.extend_from_slice(&part);
        assert_eq!(file.len(), expected.len() as u64);
        let on_disk = read(&path);
        assert_eq!(&on_disk[..expected.len()], &expected[..]);
        assert!(on_disk[expected.len()..].iter().all(|&b| b == 0));
        if file.is_direct() {
            assert_eq!(on_disk.len() % ALIGN, 0, "padded to a block while open");
        }
    }
    file.close().unwrap();
    assert_eq!(read(&path), expected);
}

/// A file written directly on /var/tmp (a disk), or `None`, said, where it takes no
/// direct writes.
fn direct_file_on_disk() -> Option<(tempfile::TempDir, SegmentFile, std::path::PathBuf)> {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (file, path) = open(dir.path(), WriteMode::Direct);
    if !file.is_direct() {
        eprintln!("skipped: /var/tmp takes no direct writes");
        return None;
    }
    Some((dir, file, path))
}

/// The open file holds `expected`, then zeros to a whole block (or further: blocks
/// allocated ahead).
fn assert_holds(path: &std::path::Path, expected: &[u8], what: &str) {
    let on_disk = read(path);
    assert_eq!(&on_disk[..expected.len()], expected, "{what}");
    assert!(on_disk[expected.len()..].iter().all(|&b| b == 0), "{what}");
    assert_eq!(on_disk.len() % ALIGN, 0, "{what}: padded to a block while open");
}

/// Buffers placed for it are written from themselves, whatever the partly written
/// block before them, with the same bytes on disk as through the staging buffer; a
/// buffer not placed, or too short, goes through the staging buffer.
#[test]
fn placed_buffers_are_written_from_themselves() {
    use podcap_format::pcapng::BlockWriter;
    let Some((_dir, mut file, path)) = direct_file_on_disk() else {
        return;
    };
    let mut expected = Vec::new();
    let mut buf = BlockWriter::with_capacity(1 << 20);
    for (i, len) in [4096usize, 10_000, 8192 + 12, 3 << 18, 6400, 50_000]
        .into_iter()
        .enumerate()
    {
        let part: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        buf.clear_placed(ALIGN, (file.len() % ALIGN as u64) as usize);
        buf.raw(&part);
        let written = file.append_in_place(buf.bytes());
        assert!(
            matches!(written, Some(Ok(1))),
            "write {i} of {len} bytes: {written:?}"
        );
        expected.extend_from_slice(&part);
        assert_eq!(file.len(), expected.len() as u64);
        assert_holds(&path, &expected, &format!("write {i}"));
    }
    buf.clear_placed(ALIGN, (file.len() % ALIGN as u64 + 1) as usize);
    buf.raw(&[3u8; 3 * ALIGN]);
    assert!(
        file.append_in_place(buf.bytes()).is_none(),
        "not placed where it lands"
    );
    buf.clear_placed(ALIGN, (file.len() % ALIGN as u64) as usize);
    buf.raw(&[4u8; 100]);
    assert!(file.append_in_place(buf.bytes()).is_none(), "not a whole block");
    file.append_all(buf.bytes()).unwrap();
    expected.extend_from_slice(&[4u8; 100]);
    file.close().unwrap();
    assert_eq!(read(&path), expected);
}

/// A large write goes as two halves side by side into blocks allocated ahead up to the
/// segment's size, and reads back exactly; close cuts what was allocated and not
/// written.
#[test]
fn a_large_write_goes_in_two_halves_into_blocks_allocated_ahead() {
    use podcap_format::pcapng::BlockWriter;
    let Some((_dir, mut file, path)) = direct_file_on_disk() else {
        return;
    };
    file.allocate_up_to(16 << 20);
    let mut expected = Vec::new();
    let mut buf = BlockWriter::with_capacity(8 << 20);
    for (i, len) in [100usize, (5 << 20) + 77, 3 << 20, 12_345]
        .into_iter()
        .enumerate()
    {
        let part: Vec<u8> = (0..len).map(|j| (i * 13 + j % 251) as u8).collect();
        buf.clear_placed(ALIGN, (file.len() % ALIGN as u64) as usize);
        buf.raw(&part);
        if len >= 2 * PIECE {
            let side_by_side = file.append_in_place(buf.bytes()).unwrap().unwrap();
            assert_eq!(side_by_side, 2, "write {i}: two halves at once");
        } else {
            file.append_all(buf.bytes()).unwrap();
        }
        expected.extend_from_slice(&part);
        assert_holds(&path, &expected, &format!("write {i}"));
        if i == 1 {
            assert_eq!(
                read(&path).len(),
                16 << 20,
                "allocated ahead to the segment's size"
            );
        }
    }
    file.close().unwrap();
    assert_eq!(read(&path), expected);
}

/// A recycled file written from placed buffers keeps its section length current too.
#[test]
fn a_recycled_file_written_in_place_carries_its_section_length() {
    use podcap_format::pcapng::BlockWriter;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("segment");
    std::fs::write(&path, vec![0xAB; 40 * ALIGN]).unwrap();
    let handle = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut file = SegmentFile::new(handle, WriteMode::Direct);
    if !file.is_direct() {
        eprintln!("skipped: /var/tmp takes no direct writes");
        return;
    }
    file.keep_section_length(28);
    let mut buf = BlockWriter::with_capacity(1 << 16);
    buf.clear_placed(ALIGN, 0);
    buf.raw(&[0u8; 28]);
    buf.raw(&[1u8; 3 * ALIGN]);
    assert!(
        file.append_in_place(buf.bytes()).is_none(),
        "the first block is patched in a copy"
    );
    file.append_all(buf.bytes()).unwrap();
    let section_length = |bytes: &[u8]| u64::from_ne_bytes(bytes[16..24].try_into().unwrap());
    assert_eq!(section_length(&read(&path)), 3 * ALIGN as u64);
    buf.clear_placed(ALIGN, 28);
    buf.raw(&vec![2u8; 5 * ALIGN]);
    assert!(matches!(file.append_in_place(buf.bytes()), Some(Ok(1))));
    let bytes = read(&path);
    assert_eq!(section_length(&bytes), 8 * ALIGN as u64);
    assert!(bytes[28 + 3 * ALIGN..28 + 8 * ALIGN].iter().all(|&b| b == 2));
    assert_eq!(bytes.len(), 40 * ALIGN, "old bytes stay until close");
    file.close().unwrap();
    assert_eq!(read(&path).len(), 28 + 8 * ALIGN);
}

/// On tmpfs, which takes `O_DIRECT` but keeps files in memory all the same, a file asked
/// to be direct is written through the page cache, and says why once.
#[test]
fn a_file_in_memory_is_not_written_directly() {
    let shm = std::path::Path::new("/dev/shm");
    let Ok(dir) = tempfile::tempdir_in(shm) else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let (mut file, path) = open(dir.path(), WriteMode::Direct);
    assert!(crate::sys::is_in_memory(&std::fs::File::open(&path).unwrap()).unwrap());
    assert!(!file.is_direct());
    let reason = file.take_fallback().expect("the reason is kept for the writer");
    assert!(reason.to_string().contains("tmpfs"), "{reason}");
    assert!(file.take_fallback().is_none(), "said once");
    file.append(&[&[5u8; 5000]]).unwrap();
    file.close().unwrap();
    assert_eq!(read(&path), vec![5u8; 5000]);
}

/// A recycled file's section length is current after every write, in both modes, and
/// the old bytes behind stay until close.
#[test]
fn a_recycled_file_carries_its_section_length() {
    for mode in [WriteMode::Direct, WriteMode::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, vec![0xAB; 3 * ALIGN + 5]).unwrap();
        let handle = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut file = SegmentFile::new(handle, mode);
        let header_len = 28u64;
        file.keep_section_length(header_len);
        let mut header = vec![0u8; header_len as usize];
        header[16..24].copy_from_slice(&u64::MAX.to_ne_bytes());
        let section_length = |bytes: &[u8]| u64::from_ne_bytes(bytes[16..24].try_into().unwrap());
        file.append(&[&header]).unwrap();
        assert_eq!(section_length(&read(&path)), 0, "{mode:?}");
        file.append(&[&[1u8; 5000]]).unwrap();
        let bytes = read(&path);
        assert_eq!(section_length(&bytes), 5000, "{mode:?}");
        assert_eq!(bytes.len(), 3 * ALIGN + 5, "{mode:?}: old bytes stay until close");
        file.append(&[&[2u8; 10]]).unwrap();
        assert_eq!(section_length(&read(&path)), 5010, "{mode:?}");
        file.close().unwrap();
        assert_eq!(read(&path).len(), 28 + 5010, "{mode:?}");
    }
}

/// After a failed write, `cut_back` leaves exactly what was written, and the next
/// write goes on from there.
#[test]
fn cut_back_leaves_what_was_written() {
    for mode in [WriteMode::Direct, WriteMode::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, path) = open(dir.path(), mode);
        file.append(&[&[7u8; 6000]]).unwrap();
        file.cut_back().unwrap();
        assert_eq!(read(&path), vec![7u8; 6000], "{mode:?}");
        file.append(&[&[8u8; 100]]).unwrap();
        file.close().unwrap();
        let bytes = read(&path);
        assert_eq!(bytes.len(), 6100, "{mode:?}");
        assert!(bytes[6000..].iter().all(|&b| b == 8), "{mode:?}");
    }
}
