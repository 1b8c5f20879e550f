//! The classic BPF instruction set as libpcap emits it (linux/filter.h, pcap/bpf.h): the
//! interpreter here and the sensor's eBPF translation read programs by these names.

/// Linux's ancillary data area (`SKF_AD_OFF`) and the fields libpcap reads from it.
pub const SKF_AD_OFF: u32 = 0xffff_f000;
pub const SKF_AD_VLAN_TAG: u32 = 44;
pub const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;
pub const SKF_AD_VLAN_TPID: u32 = 60;

/// Words of scratch memory (`M[]`).
pub const SCRATCH_WORDS: usize = 16;

// Instruction classes.
pub const LD: u16 = 0x00;
pub const LDX: u16 = 0x01;
pub const ST: u16 = 0x02;
pub const STX: u16 = 0x03;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const MISC: u16 = 0x07;
// Load sizes.
pub const W: u16 = 0x00;
pub const H: u16 = 0x08;
pub const B: u16 = 0x10;
// Load modes.
pub const IMM: u16 = 0x00;
pub const ABS: u16 = 0x20;
pub const IND: u16 = 0x40;
pub const MEM: u16 = 0x60;
pub const LEN: u16 = 0x80;
pub const MSH: u16 = 0xa0;
/// The operand is X, not k.
pub const SRC_X: u16 = 0x08;
