//! Capture filters with tcpdump's semantics (`--filter` of the sensor, and of `podcap dump
//! --archive`, which filters on the laptop).
//!
//! Rules:
//! - An expression is compiled by libpcap itself (`sys`), so it means exactly what it
//!   means to tcpdump; an invalid one is refused with libpcap's own message. libpcap is
//!   loaded when the first filter is compiled; where it is missing, the error says so.
//! - The classic BPF program is checked once (every jump lands inside the program, every
//!   path ends in a return, scratch memory indices and constant divisors are valid), so
//!   running it cannot fail: `matches` never panics on any packet.
//! - It is compiled the way tcpdump compiles for a live capture on Linux, where the outer
//!   VLAN tag of a frame is kernel metadata, not bytes (`udp` matches a tagged UDP frame,
//!   `vlan 42` reads the metadata). podcap records that tag in the bytes, so `matches`
//!   takes it out again and hands it to the program's ancillary loads, exactly as the
//!   kernel does for tcpdump. Without the right to open a packet socket (a user's laptop),
//!   libpcap compiles with `tcpdump -r` semantics instead (tags in the bytes) and frames
//!   are run as recorded: the same verdicts for every untagged frame.
//! - [`Filter::matches`] runs it on a frame as recorded (cut to the snap length) with its
//!   original length, like libpcap's `bpf_filter`: a load beyond the captured bytes
//!   rejects the packet. The sensor also translates the program to eBPF to run it in the
//!   kernel (its `filter::ebpf`), with this interpreter as the translation's oracle in
//!   tests. Rejected packets are counted as filtered, not dropped.
pub mod classic;
mod sys;

pub use sys::{BpfInsn, Semantics};

use classic::{
    ABS, ALU, B, H, IMM, IND, JMP, LD, LDX, LEN, MEM, MISC, MSH, RET, SCRATCH_WORDS, SKF_AD_OFF,
    SKF_AD_VLAN_TAG, SKF_AD_VLAN_TAG_PRESENT, SKF_AD_VLAN_TPID, SRC_X, ST, STX, W,
};
use sys::compile_filter;

/// LINKTYPE_ETHERNET: the frames podcap records.
const LINKTYPE_ETHERNET: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{0}")]
    Compile(String),
    #[error("instruction {index} ({code:#06x}) is not supported: {why}")]
    Unsupported {
        index: usize,
        code: u16,
        why: &'static str,
    },
}

/// A compiled, checked filter.
#[derive(Clone, Debug)]
pub struct Filter {
    expression: String,
    program: Vec<BpfInsn>,
    semantics: Semantics,
}

/// What the kernel knows of a frame besides its bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Metadata {
    /// The outer VLAN tag taken out of the bytes: (TPID, TCI).
    vlan: Option<(u16, u16)>,
}

impl Filter {
    /// Compiles `expression` for Ethernet frames.
    pub fn compile(expression: &str, snaplen: u32) -> Result<Self, FilterError> {
        let (program, semantics) =
            compile_filter(expression, LINKTYPE_ETHERNET, snaplen).map_err(FilterError::Compile)?;
        if semantics == Semantics::Offline {
            log::warn!(
                "--filter: no packet socket allowed; VLAN-tagged frames are filtered as by `tcpdump -r`"
            );
        }
        check(&program)?;
        Ok(Self {
            expression: expression.to_owned(),
            program,
            semantics,
        })
    }

    /// The checked classic BPF program.
    #[must_use]
    pub fn program(&self) -> &[BpfInsn] {
        &self.program
    }

    /// Whether it was compiled as a live tcpdump compiles it (the outer VLAN tag as kernel
    /// metadata): then the kernel can run it as it is.
    #[must_use]
    pub fn is_live_semantics(&self) -> bool {
        self.semantics == Semantics::LiveLinux
    }

    #[must_use]
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Whether the filter accepts `packet` (the captured bytes) of `wire_len` bytes.
    #[must_use]
    pub fn matches(&self, packet: &[u8], wire_len: u32) -> bool {
        if self.semantics == Semantics::LiveLinux {
            if let Some(tpid @ (0x8100 | 0x88a8)) =
                packet.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]))
            {
                if let Some(tci) = packet.get(14..16).map(|b| u16::from_be_bytes([b[0], b[1]])) {
                    // The kernel's view: the tag in the metadata, the frame 4 bytes shorter.
                    let mut untagged = Vec::with_capacity(packet.len() - 4);
                    untagged.extend_from_slice(&packet[..12]);
                    untagged.extend_from_slice(&packet[16..]);
                    let meta = Metadata {
                        vlan: Some((tpid, tci)),
                    };
                    return run(&self.program, &untagged, wire_len.saturating_sub(4), meta) != 0;
                }
            }
        }
        run(&self.program, packet, wire_len, Metadata::default()) != 0
    }
}

fn unsupported(index: usize, code: u16, why: &'static str) -> FilterError {
    FilterError::Unsupported { index, code, why }
}

/// The checks that make `run` total (the kernel's `bpf_check_classic`, in short).
fn check(program: &[BpfInsn]) -> Result<(), FilterError> {
    if program.is_empty() {
        return Err(unsupported(0, 0, "empty program"));
    }
    for (i, insn) in program.iter().enumerate() {
        let rest = program.len() - i - 1;
        let code = insn.code;
        let class = code & 0x07;
        match class {
            LD | LDX => {
                let mode = code & 0xe0;
                if mode == MEM && insn.k as usize >= SCRATCH_WORDS {
                    return Err(unsupported(i, code, "scratch memory index out of range"));
                }
                if !matches!(mode, IMM | ABS | IND | MEM | LEN | MSH) {
                    return Err(unsupported(i, code, "unknown load mode"));
                }
                if mode == ABS
                    && insn.k >= SKF_AD_OFF
                    && !matches!(
                        insn.k - SKF_AD_OFF,
                        SKF_AD_VLAN_TAG | SKF_AD_VLAN_TAG_PRESENT | SKF_AD_VLAN_TPID
                    )
                {
                    return Err(unsupported(
                        i,
                        code,
                        "reads kernel metadata podcap does not record (e.g. inbound/outbound, ifindex)",
                    ));
                }
            }
            ST | STX => {
                if insn.k as usize >= SCRATCH_WORDS {
                    return Err(unsupported(i, code, "scratch memory index out of range"));
                }
            }
            ALU => {
                let op = code & 0xf0;
                if (op == 0x30 || op == 0x90) && code & SRC_X == 0 && insn.k == 0 {
                    return Err(unsupported(i, code, "division by a constant zero"));
                }
                if op > 0xa0 {
                    return Err(unsupported(i, code, "unknown ALU operation"));
                }
            }
            JMP => {
                let op = code & 0xf0;
                let fits = if op == 0x00 {
                    (insn.k as usize) < rest
                } else {
                    (insn.jt as usize) < rest && (insn.jf as usize) < rest
                };
                if !fits {
                    return Err(unsupported(i, code, "jump beyond the end"));
                }
                if op > 0x40 {
                    return Err(unsupported(i, code, "unknown jump"));
                }
            }
            RET | MISC => {}
            _ => return Err(unsupported(i, code, "unknown class")),
        }
    }
    match program.last() {
        Some(last) if last.code & 0x07 == RET => Ok(()),
        _ => Err(unsupported(
            program.len() - 1,
            0,
            "the program does not end in a return",
        )),
    }
}

fn load(packet: &[u8], offset: u32, size: u16) -> Option<u32> {
    let start = offset as usize;
    let bytes = packet.get(
        start..start.checked_add(match size {
            W => 4,
            H => 2,
            _ => 1,
        })?,
    )?;
    Some(match bytes {
        [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
        [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
        [a] => u32::from(*a),
        _ => return None,
    })
}

/// Runs a checked program: libpcap's `bpf_filter` (0 = reject).
fn run(program: &[BpfInsn], packet: &[u8], wire_len: u32, meta: Metadata) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; SCRATCH_WORDS];
    let mut pc = 0usize;
    while let Some(insn) = program.get(pc) {
        pc += 1;
        let (code, k) = (insn.code, insn.k);
        match code & 0x07 {
            LD => {
                a = match code & 0xe0 {
                    IMM => k,
                    LEN => wire_len,
                    MEM => mem[k as usize % SCRATCH_WORDS],
                    ABS if k >= SKF_AD_OFF => match k - SKF_AD_OFF {
                        SKF_AD_VLAN_TAG => meta.vlan.map_or(0, |(_, tci)| u32::from(tci)),
                        SKF_AD_VLAN_TAG_PRESENT => u32::from(meta.vlan.is_some()),
                        SKF_AD_VLAN_TPID => meta.vlan.map_or(0, |(tpid, _)| u32::from(tpid)),
                        _ => return 0,
                    },
                    ABS => match load(packet, k, code & 0x18) {
                        Some(v) => v,
                        None => return 0,
                    },
                    IND => match x.checked_add(k).and_then(|o| load(packet, o, code & 0x18)) {
                        Some(v) => v,
                        None => return 0,
                    },
                    _ => return 0,
                };
            }
            LDX => {
                x = match code & 0xe0 {
                    IMM => k,
                    LEN => wire_len,
                    MEM => mem[k as usize % SCRATCH_WORDS],
                    MSH => match load(packet, k, B) {
                        Some(v) => (v & 0xf) << 2,
                        None => return 0,
                    },
                    _ => return 0,
                };
            }
            ST => mem[k as usize % SCRATCH_WORDS] = a,
            STX => mem[k as usize % SCRATCH_WORDS] = x,
            ALU => {
                let operand = if code & SRC_X != 0 { x } else { k };
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(operand),
                    0x10 => a.wrapping_sub(operand),
                    0x20 => a.wrapping_mul(operand),
                    0x30 => match a.checked_div(operand) {
                        Some(v) => v,
                        None => return 0,
                    },
                    0x40 => a | operand,
                    0x50 => a & operand,
                    0x60 => a.checked_shl(operand).unwrap_or(0),
                    0x70 => a.checked_shr(operand).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => match a.checked_rem(operand) {
                        Some(v) => v,
                        None => return 0,
                    },
                    _ => a ^ operand,
                };
            }
            JMP => {
                let operand = if code & SRC_X != 0 { x } else { k };
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == operand,
                    0x20 => a > operand,
                    0x30 => a >= operand,
                    _ => a & operand != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            RET => {
                return match code & 0x18 {
                    0x00 => k,
                    0x10 => a,
                    _ => x,
                };
            }
            _ => {
                if code & 0xf8 == 0 {
                    x = a;
                } else {
                    a = x;
                }
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(dst_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&4000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f
    }

    #[test]
    fn tcpdump_expressions_select_what_they_say() {
        let f = Filter::compile("udp dst port 53 and src host 198.18.0.1", 65535).unwrap();
        assert!(f.matches(&udp_frame(53), 42));
        assert!(!f.matches(&udp_frame(54), 42));
        assert!(
            !f.matches(&udp_frame(53)[..30], 42),
            "a load past the captured bytes rejects"
        );
        let g = Filter::compile("greater 100", 65535).unwrap();
        assert!(!g.matches(&udp_frame(53), 42));
        assert!(g.matches(&udp_frame(53), 1500), "lengths are the original length");
    }

    #[test]
    fn the_outer_vlan_tag_is_metadata_as_for_a_live_tcpdump() {
        let mut tagged = udp_frame(53);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 42]);
        let udp = Filter::compile("udp port 53", 65535).unwrap();
        let vlan42 = Filter::compile("vlan 42", 65535).unwrap();
        let vlan43 = Filter::compile("vlan 43", 65535).unwrap();
        assert!(vlan42.matches(&tagged, 46));
        assert!(!vlan43.matches(&tagged, 46));
        assert!(!vlan42.matches(&udp_frame(53), 42));
        // Live semantics (root, as the sensor runs): `udp` sees through the outer tag.
        assert_eq!(
            udp.matches(&tagged, 46),
            udp.semantics == Semantics::LiveLinux,
            "{:?}",
            udp.semantics
        );
    }

    #[test]
    fn a_bad_expression_gets_libpcaps_message() {
        let e = Filter::compile("port 99999", 65535).unwrap_err().to_string();
        assert!(e.contains("99999"), "{e}");
        let e = Filter::compile("tcp and and", 65535).unwrap_err().to_string();
        assert!(e.contains("syntax error"), "{e}");
    }

    #[test]
    fn malformed_programs_are_refused_and_any_bytes_are_safe() {
        let ret = BpfInsn {
            code: RET,
            jt: 0,
            jf: 0,
            k: 1,
        };
        let jump_out = BpfInsn {
            code: JMP | 0x10,
            jt: 5,
            jf: 0,
            k: 0,
        };
        assert!(check(&[jump_out, ret]).is_err());
        assert!(check(&[
            BpfInsn {
                code: LD | MEM,
                jt: 0,
                jf: 0,
                k: 16
            },
            ret
        ])
        .is_err());
        assert!(check(&[
            BpfInsn {
                code: ALU | 0x30,
                jt: 0,
                jf: 0,
                k: 0
            },
            ret
        ])
        .is_err());
        assert!(check(&[BpfInsn {
            code: LD | IMM,
            jt: 0,
            jf: 0,
            k: 0
        }])
        .is_err());
        let f = Filter::compile("tcp[tcpflags] & tcp-syn != 0 or ip6 or vlan 7", 65535).unwrap();
        let mut seed = 7u64;
        for len in 0..200u32 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            let _ = f.matches(&bytes, len);
        }
    }
}
