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
//!   position-independent program linked by the system's linker (cgo).
//! - `textStart` is the address of `runtime.text`, which the file holds also in a
//!   position-independent program (a dynamic relocation adds the load address, as it does
//!   to every address the probe's file offset is computed from). A table without it is
//!   refused.
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
    #[error("no .gopclntab section")]
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
    #[error("a .gopclntab without its text start")]
    NoTextStart,
}

/// The header's fields that the lookup needs.
#[derive(Debug)]
struct Header {
    nfunc: usize,
    text_start: u64,
    funcname_offset: usize,
    functab_offset: usize,
}

/// The virtual address where the function named `name` starts (`None`: the program has no
/// such function), from the `.gopclntab` section of `file`.
pub fn function_entry<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
    name: &str,
) -> Result<Option<u64>, PclntabError> {
    let section = file
        .section_by_name(".gopclntab")
        .or_else(|| file.section_by_name(".data.rel.ro.gopclntab"))
        .ok_or(PclntabError::NoTable)?;
    let table = section.data().map_err(|_| PclntabError::Unreadable)?;
    let header = read_header(table)?;
    if header.text_start == 0 {
        return Err(PclntabError::NoTextStart);
    }
    lookup(table, &header, name)
}

fn read_header(table: &[u8]) -> Result<Header, PclntabError> {
    let magic = u32_at(table, 0, "the magic")?;
    match magic {
        MAGIC_GO118 | MAGIC_GO120 => {}
        0xffff_fffa | 0xffff_fffb => return Err(PclntabError::OldLayout(magic)),
        other => return Err(PclntabError::UnknownMagic(other)),
    }
    let ptr_size = *table.get(7).ok_or(PclntabError::Short("the pointer size"))?;
    if ptr_size != 8 && ptr_size != 4 {
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

fn lookup(table: &[u8], header: &Header, name: &str) -> Result<Option<u64>, PclntabError> {
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
        return Ok(header.text_start.checked_add(u64::from(entry_off)));
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
            let found = |name| lookup(&bytes, &header, name).unwrap();
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
                assert!(lookup(cut, &header, names[0]).is_err_and(|e| matches!(e, PclntabError::Short(_))));
            }
        }
        // A function count past the table's end.
        let mut endless = whole.clone();
        endless[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let header = read_header(&endless).unwrap();
        assert!(lookup(&endless, &header, "nothing").is_err());
        // A record whose entry is not the table's.
        let mut lying = whole;
        let record = lying.len() - 8;
        lying[record] ^= 1;
        let header = read_header(&lying).unwrap();
        assert_eq!(lookup(&lying, &header, names[0]), Err(PclntabError::Inconsistent));
    }
}
