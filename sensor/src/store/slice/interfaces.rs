//! The interfaces of a slice's output: each one (by name and link type) declared once,
//! whichever segments it comes from, just before its first packet.
//!
//! Rules:
//! - An interface's IDB is copied from the segment when its packets can be copied too
//!   (native byte order, nanosecond timestamps), else re-encoded with nanosecond
//!   timestamps.
//! - Output ids follow the order the IDBs are written, as pcapng numbers them; a damage
//!   note starts a new section, after which every interface is declared again
//!   (`notes.rs`).
use super::{Selection, Slicer};
use crate::pcapng::{read::Section, BlockWriter};

/// An interface of the output.
pub(super) struct OutInterface {
    /// Its IDB as written: the segment's own bytes when they can be copied (native byte
    /// order, nanosecond timestamps), else re-encoded with nanosecond timestamps.
    pub(super) block: Vec<u8>,
    /// Its id in the output once the IDB is written (pcapng numbers interfaces in the
    /// order their blocks appear).
    pub(super) written: Option<u32>,
}

/// How a segment's interface maps to the output.
#[derive(Clone, Copy)]
pub(super) struct LocalInterface {
    pub(super) out: usize,
    /// The segment's EPBs of this interface can be copied as they are (only the interface
    /// id changes): native byte order and nanosecond timestamps, as the output's.
    pub(super) copy: bool,
}

impl Slicer {
    /// The output id of `interface`, writing its IDB first if this is its first packet.
    pub(super) fn output_id(&mut self, interface: usize) -> u32 {
        let iface = &mut self.interfaces[interface];
        if let Some(id) = iface.written {
            return id;
        }
        self.blocks.raw(&iface.block);
        let id = self.written_interfaces;
        iface.written = Some(id);
        self.written_interfaces += 1;
        id
    }

    /// The output interface of each interface the segment declared since the last call,
    /// or `None` for one the slice leaves out.
    pub(super) fn map_interfaces(
        &mut self,
        section: &Section,
        local: &mut Vec<Option<LocalInterface>>,
        selection: &Selection,
    ) {
        for (i, iface) in section.interfaces.iter().enumerate().skip(local.len()) {
            if !selection.wants_interface(&iface.name) {
                local.push(None);
                continue;
            }
            let native_ns = !section.swapped && section.ticks_per_second[i] == 1_000_000_000;
            let out = *self
                .declared
                .entry((iface.name.clone(), iface.link_type))
                .or_insert_with(|| {
                    let block = if native_ns {
                        section.raw_interfaces[i].clone()
                    } else {
                        let mut w = BlockWriter::default();
                        w.interface(iface);
                        w.bytes().to_vec()
                    };
                    self.interfaces.push(OutInterface { block, written: None });
                    self.interfaces.len() - 1
                });
            local.push(Some(LocalInterface { out, copy: native_ns }));
        }
    }
}
