//! Go's function table (`.gopclntab`): where a function starts, found by its name in a Go
//! program that has no symbol table (built with `-ldflags="-s -w"`, as most images are).
//!
//! Rules:
//! - Go keeps this table in every program, stripped or not: the runtime needs it for
//!   stack traces. Only the layout of Go 1.18 and later is read (magic `0xfffffff0`,
//!   1.18-1.19; `0xfffffff1`, 1.20 and later, the same fields); any other is refused by
//!   name, never guessed at.
//! - The header (`runtime/symtab.go`'s `pcHeader`): magic (4 bytes), two zero pad bytes,
//!   the instruction quantum, the pointer size, then pointer-sized `nfunc`, `nfiles`,
//!   `textStart`, and the offsets (from the header) of the function name table, the
//!   compilation units, the file table, the pc tables and the function table. The function
//!   table has `nfunc` pairs of 32-bit (entry offset from `textStart`, offset of the
//!   function's `_func` record from the function table); a `_func` starts with its entry
//!   offset again and the offset of its NUL-terminated name in the name table.
//! - The table is the section `.gopclntab`, or `.data.rel.ro.gopclntab` in a
//!   position-independent program of Go's own linker; a system linker (cgo,
//!   `-linkmode=external`) merges the latter into `.data.rel.ro`, where the table is found
//!   by its header (magic, zero pads, quantum 1, 8-byte pointers, tables inside the section).
//! - `textStart` is the address of `runtime.text`. Go 1.18-1.25 write it into the header
//!   (in a position-independent program too: a dynamic relocation adds the load address, as
//!   it does to every address the probe's file offset is computed from). Go 1.26 leaves the
//!   word zero; the address is then read from the runtime's module data
//!   (`runtime.firstmoduledata`, in `.go.module` since 1.26: the data word pointing at the
//!   table, followed by pointers to its name and function tables), whose `maxpc` must lie
//!   exactly the function table's end entry after its `text`. A table whose text start
//!   neither gives is refused.
//! - Sections over [`MAX_SECTION_BYTES`] are not read (a hostile file could claim any size).
//! - Every offset and length is checked against the table's bytes: a damaged or hostile
//!   table is an error naming what is wrong, never a panic or a read past its end. A
//!   function found is checked again: its record's entry must be the table's.
use object::{Object, ObjectSection, ReadRef};

/// The magic of the layouts read: Go 1.18-1.19, and Go 1.20 and later.
const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;

/// Why a function could not be looked up.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PclntabError {
    #[error("no Go function table (.gopclntab)")]
    NoTable,
    #[error("a .gopclntab section that cannot be read")]
    Unreadable,
    #[error("a .gopclntab of a Go release before 1.18 (magic {0:#x}): not read")]
    OldLayout(u32),
    #[error("a .gopclntab with an unknown magic {0:#x}")]
    UnknownMagic(u32),
    #[error("a .gopclntab whose header says {0}-byte pointers")]
    PointerSize(u8),
    #[error("a .gopclntab cut short: {0} lies past its end")]
    Short(&'static str),
    #[error("a .gopclntab whose function record disagrees with its table")]
    Inconsistent,
    #[error("a .gopclntab whose text start neither its header nor the runtime's module data gives")]
    NoTextStart,
    #[error("a section of {0} bytes: too large to be read for Go's function table")]
    TooLarge(u64),
}

/// The header's fields that the lookup needs.
#[derive(Debug)]
struct Header {
    nfunc: usize,
    text_start: u64,
    funcname_offset: usize,
    functab_offset: usize,
}

/// The largest table (or section searched for one) read: a hostile file that claims more
/// is refused rather than read into memory. Go's own tables stay far below it.
const MAX_SECTION_BYTES: u64 = 512 << 20;

/// The virtual address where the function named `name` starts (`None`: the program has no
/// such function), from Go's function table in `file`.
pub fn function_entry<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    name: &str,
) -> Result<Option<u64>, PclntabError> {
    let (address, table) = find_table(file)?;
    let header = read_header(table)?;
    let text_start = match header.text_start {
        0 => text_from_moduledata(file, address, table, &header)?,
        text_start => text_start,
    };
    lookup(table, &header, text_start, name)
}

/// A section's bytes, unless it is larger than [`MAX_SECTION_BYTES`].
fn section_bytes<'data, R: ReadRef<'data>>(
    section: &object::Section<'data, '_, R>,
) -> Result<&'data [u8], PclntabError> {
    if section.size() > MAX_SECTION_BYTES {
        return Err(PclntabError::TooLarge(section.size()));
    }
    section.data().map_err(|_| PclntabError::Unreadable)
}

/// The table's address and bytes (to the end of the section holding it): its own section
/// as Go's linker names it, else found by its header inside `.data.rel.ro`, where a system
/// linker merges `.data.rel.ro.gopclntab` (cgo or `-linkmode=external`, position-independent).
fn find_table<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
) -> Result<(u64, &'data [u8]), PclntabError> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(section) = file.section_by_name(name) {
            return Ok((section.address(), section_bytes(&section)?));
        }
    }
    let section = file
        .section_by_name(".data.rel.ro")
        .ok_or(PclntabError::NoTable)?;
    let bytes = section_bytes(&section)?;
    (0..bytes.len())
        .step_by(8)
        .find(|&at| plausible_table(&bytes[at..]))
        .map(|at| (section.address() + at as u64, &bytes[at..]))
        .ok_or(PclntabError::NoTable)
}

/// Whether `bytes` start with a table header of a layout read here, whose tables lie
/// inside `bytes`.
fn plausible_table(bytes: &[u8]) -> bool {
    let Some(head) = bytes.get(..8) else { return false };
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if !matches!(magic, MAGIC_GO118 | MAGIC_GO120) || head[4..8] != [0, 0, 1, 8] {
        return false;
    }
    read_header(bytes).is_ok_and(|h| {
        h.nfunc > 0
            && h.funcname_offset < bytes.len()
            && h.functab_offset < bytes.len()
            && h.nfunc
                .checked_mul(8)
                .is_some_and(|len| len <= bytes.len() - h.functab_offset)
    })
}

/// `runtime.text` read from the runtime's module data (Go 1.26 and later no longer write
/// it into the table's header): the data word that points at the table, followed by the
/// pointers to its name and function tables, is `runtime.firstmoduledata`, whose `text`
/// word (the 23rd) must lie exactly the function table's end entry before its `maxpc`
/// (the 22nd).
fn text_from_moduledata<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    table_address: u64,
    table: &[u8],
    header: &Header,
) -> Result<u64, PclntabError> {
    let end_entry = header
        .nfunc
        .checked_mul(8)
        .and_then(|at| at.checked_add(header.functab_offset))
        .ok_or(PclntabError::Short("the function table's end"))?;
    let text_len = u64::from(u32_at(table, end_entry, "the function table's end")?);
    let names_at = table_address.checked_add(header.funcname_offset as u64);
    let functab_at = table_address.checked_add(header.functab_offset as u64);
    let loaded_data = |s: &object::Section<'data, '_, R>| {
        use object::SectionKind::{Data, Other, ReadOnlyData, ReadOnlyDataWithRel};
        s.address() != 0 && matches!(s.kind(), Data | ReadOnlyData | ReadOnlyDataWithRel | Other)
    };
    for section in file.sections().filter(loaded_data) {
        let Ok(bytes) = section_bytes(&section) else {
            continue;
        };
        let word = |at: usize| -> Option<u64> {
            let field = bytes.get(at..at.checked_add(8)?)?;
            Some(u64::from_le_bytes(field.try_into().ok()?))
        };
        for at in (0..bytes.len()).step_by(8) {
            if word(at) != Some(table_address) || word(at + 8) != names_at || word(at + 16 * 8) != functab_at
            {
                continue;
            }
            // `maxpc` (word 21) is where the function table's end entry points.
            if let (Some(maxpc), Some(text)) = (word(at + 21 * 8), word(at + 22 * 8)) {
                if text != 0 && maxpc.checked_sub(text) == Some(text_len) {
                    return Ok(text);
                }
            }
        }
    }
    Err(PclntabError::NoTextStart)
}

fn read_header(table: &[u8]) -> Result<Header, PclntabError> {
    let magic = u32_at(table, 0, "the magic")?;
    match magic {
        MAGIC_GO118 | MAGIC_GO120 => {}
        0xffff_fffa | 0xffff_fffb => return Err(PclntabError::OldLayout(magic)),
        other => return Err(PclntabError::UnknownMagic(other)),
    }
    let ptr_size = *table.get(7).ok_or(PclntabError::Short("the pointer size"))?;
    if ptr_size != 8 {
        return Err(PclntabError::PointerSize(ptr_size));
    }
    let ptr_size = usize::from(ptr_size);
    let word = |index: usize, what: &'static str| -> Result<u64, PclntabError> {
        let at = 8 + index * ptr_size;
        let bytes = table.get(at..at + ptr_size).ok_or(PclntabError::Short(what))?;
        let mut value = [0u8; 8];
        value[..ptr_size].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(value))
    };
    let offset = |index: usize, what: &'static str| -> Result<usize, PclntabError> {
        usize::try_from(word(index, what)?).map_err(|_| PclntabError::Short(what))
    };
    Ok(Header {
        nfunc: offset(0, "the function count")?,
        text_start: word(2, "the text start")?,
        funcname_offset: offset(3, "the name table")?,
        functab_offset: offset(7, "the function table")?,
    })
}

fn lookup(table: &[u8], header: &Header, text_start: u64, name: &str) -> Result<Option<u64>, PclntabError> {
    let functab = table
        .get(header.functab_offset..)
        .ok_or(PclntabError::Short("the function table"))?;
    let names = table
        .get(header.funcname_offset..)
        .ok_or(PclntabError::Short("the name table"))?;
    let wanted = name.as_bytes();
    for index in 0..header.nfunc {
        let pair = index.checked_mul(8).ok_or(PclntabError::Short("a function"))?;
        let entry_off = u32_at(functab, pair, "a function's entry")?;
        let func_off = u32_at(functab, pair + 4, "a function's record")? as usize;
        let name_off = u32_at(functab, func_off + 4, "a function's name")? as usize;
        let text = names
            .get(name_off..)
            .ok_or(PclntabError::Short("a function's name"))?;
        if text.get(..wanted.len()) != Some(wanted) || text.get(wanted.len()) != Some(&0) {
            continue;
        }
        if u32_at(functab, func_off, "a function's record")? != entry_off {
            return Err(PclntabError::Inconsistent);
        }
        return Ok(text_start.checked_add(u64::from(entry_off)));
    }
    Ok(None)
}

fn u32_at(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, PclntabError> {
    let end = at.checked_add(4).ok_or(PclntabError::Short(what))?;
    let field = bytes.get(at..end).ok_or(PclntabError::Short(what))?;
    Ok(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of Go 1.20's layout with the functions `names` at entries 0x100, 0x200, …
    /// from a text start of `0x40_1000`.
    fn table(magic: u32, names: &[&str]) -> Vec<u8> {
        let mut header = Vec::new();
        header.extend_from_slice(&magic.to_le_bytes());
        header.extend_from_slice(&[0, 0, 1, 8]);
        let header_len = 8 + 8 * 8;
        let mut name_table = Vec::new();
        let mut name_offsets = Vec::new();
        for name in names {
            name_offsets.push(name_table.len() as u32);
            name_table.extend_from_slice(name.as_bytes());
            name_table.push(0);
        }
        let funcname_offset = header_len;
        let functab_offset = funcname_offset + name_table.len();
        let mut functab = Vec::new();
        let records_at = (names.len() + 1) * 8;
        for (i, _) in names.iter().enumerate() {
            functab.extend_from_slice(&(0x100 * (i as u32 + 1)).to_le_bytes());
            functab.extend_from_slice(&((records_at + i * 8) as u32).to_le_bytes());
        }
        functab.extend_from_slice(&[0; 8]);
        for (i, offset) in name_offsets.iter().enumerate() {
            functab.extend_from_slice(&(0x100 * (i as u32 + 1)).to_le_bytes());
            functab.extend_from_slice(&offset.to_le_bytes());
        }
        for word in [
            names.len() as u64,
            0,
            0x40_1000,
            funcname_offset as u64,
            0,
            0,
            0,
            functab_offset as u64,
        ] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        [header, name_table, functab].concat()
    }

    #[test]
    fn a_function_is_found_by_its_whole_name() {
        let names = ["runtime.main", "crypto/tls.(*Config).writeKeyLog", "main.main"];
        for magic in [MAGIC_GO118, MAGIC_GO120] {
            let bytes = table(magic, &names);
            let header = read_header(&bytes).unwrap();
            let found = |name| lookup(&bytes, &header, header.text_start, name).unwrap();
            assert_eq!(found("crypto/tls.(*Config).writeKeyLog"), Some(0x40_1200));
            assert_eq!(found("main.main"), Some(0x40_1300));
            assert_eq!(
                found("crypto/tls.(*Config).writeKey"),
                None,
                "a prefix is no match"
            );
            assert_eq!(found("main.mai"), None);
        }
    }

    #[test]
    fn old_unknown_and_damaged_tables_are_refused_by_name() {
        let names = ["crypto/tls.(*Config).writeKeyLog"];
        assert_eq!(
            read_header(&table(0xffff_fffb, &names)).unwrap_err(),
            PclntabError::OldLayout(0xffff_fffb)
        );
        assert_eq!(
            read_header(&table(0x1234_5678, &names)).unwrap_err(),
            PclntabError::UnknownMagic(0x1234_5678)
        );
        let whole = table(MAGIC_GO120, &names);
        // Every cut: an error or a miss, never a panic or a wrong address.
        for len in 0..whole.len() {
            let cut = &whole[..len];
            if let Ok(header) = read_header(cut) {
                assert!(lookup(cut, &header, 1, names[0]).is_err_and(|e| matches!(e, PclntabError::Short(_))));
            }
        }
        // A function count past the table's end.
        let mut endless = whole.clone();
        endless[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let header = read_header(&endless).unwrap();
        assert!(lookup(&endless, &header, 1, "nothing").is_err());
        // A record whose entry is not the table's.
        let mut lying = whole;
        let record = lying.len() - 8;
        lying[record] ^= 1;
        let header = read_header(&lying).unwrap();
        assert_eq!(
            lookup(&lying, &header, 1, names[0]),
            Err(PclntabError::Inconsistent)
        );
    }
}
