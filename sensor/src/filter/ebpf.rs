//! The capture filter translated to eBPF, to run in the kernel before the copy.
//!
//! Rules:
//! - The input is a program [`super::check`] accepted, so every jump lands inside it and
//!   every path returns; the output is a `BPF_PROG_TYPE_SCHED_CLS` program the tc
//!   programs tail-call into (`FILTER_CHAIN` slot 0 of `sensor-ebpf`).
//! - Its semantics are the user-space interpreter's ([`super::run`]), which stays the
//!   oracle in tests, and the kernel's for a socket filter: packet loads go through
//!   `bpf_skb_load_bytes` (a load beyond the packet rejects), the length is the skb's, the
//!   VLAN ancillary loads read the skb's VLAN metadata, division by a zero `X` rejects,
//!   shifts by 32 or more give 0, and `X + k` beyond 32 bits rejects. The only difference
//!   from user space: the kernel sees the whole packet, not the snap length (as tcpdump's
//!   socket filter does).
//! - Registers: `r6` the context, `r7` A, `r8` X, `r9` how many of the packet's first bytes
//!   are held on the stack; the 16 scratch words at `fp-64`, zeroed first; 8 bytes at
//!   `fp-72` for loads; the packet's first [`HEAD_LEN`] bytes at `fp-136`. Classic jumps only
//!   go forward, so the program has no loop.
//! - The head: the prologue copies the packet's first `min(len, HEAD_LEN)` bytes to the
//!   stack with one `bpf_skb_load_bytes`, and a load that lies inside them reads the stack
//!   (an expression's header fields mostly do): one helper call per packet instead of one
//!   per field, which is what a filter that rejects everything costs. A load that does not
//!   (or if the copy failed) takes the helper as before, so the verdicts are the same. The
//!   stack is read at aligned offsets in one access, else byte by byte (the verifier
//!   refuses a misaligned stack access), and at a variable offset only after a check the
//!   verifier can follow (`X + k` at most `HEAD_LEN - size`).
//! - What it does with the verdict is [`Verdict`]: tail-call on to the program that takes
//!   the packet, or (tests) return 1 or 0.
use crate::sys::bpf::EbpfInsn;
use podcap_filter::{
    classic::{
        ALU, B, H, IMM, IND, JMP, LD, LDX, LEN, MEM, MISC, MSH, RET, SCRATCH_WORDS, SKF_AD_OFF,
        SKF_AD_VLAN_TAG, SKF_AD_VLAN_TAG_PRESENT, SKF_AD_VLAN_TPID, SRC_X, ST, STX, W,
    },
    BpfInsn,
};

/// What the program does with its verdict.
#[derive(Clone, Copy, Debug)]
pub enum Verdict {
    /// Accepted: tail call into `index` of the program array `map_fd`; rejected (or the
    /// tail call failed): return `TC_ACT_UNSPEC`, the packet goes on untouched.
    TailCall { map_fd: i32, index: u32 },
    /// Return 1 for accepted, 0 for rejected (tests, through `BPF_PROG_TEST_RUN`).
    Return,
}

// eBPF encoding (linux/bpf.h).
const E_LD: u8 = 0x00;
const E_LDX: u8 = 0x01;
const E_ST: u8 = 0x02;
const E_STX: u8 = 0x03;
const E_ALU: u8 = 0x04;
const E_JMP: u8 = 0x05;
const E_JMP32: u8 = 0x06;
const E_ALU64: u8 = 0x07;
const E_W: u8 = 0x00;
const E_H: u8 = 0x08;
const E_B: u8 = 0x10;
const E_DW: u8 = 0x18;
const E_IMM: u8 = 0x00;
const E_MEM: u8 = 0x60;
const E_K: u8 = 0x00;
const E_X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_OR: u8 = 0x40;
const OP_LSH: u8 = 0x60;
const OP_RSH: u8 = 0x70;
const OP_MOV: u8 = 0xb0;
const OP_END_TO_BE: u8 = 0xd8;
const OP_JA: u8 = 0x00;
const OP_JEQ: u8 = 0x10;
const OP_JNE: u8 = 0x50;
const OP_JGT: u8 = 0x20;
const OP_JLT: u8 = 0xa0;
const OP_JLE: u8 = 0xb0;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_TAIL_CALL: i32 = 12;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
/// `TC_ACT_UNSPEC`: the packet goes on to the next classifier, as without podcap.
const TC_ACT_UNSPEC: i32 = -1;

// `struct __sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_VLAN_TCI: i16 = 24;
const SKB_VLAN_PROTO: i16 = 28;

const CTX: u8 = 6;
const A: u8 = 7;
const X: u8 = 8;
/// How many of the packet's first bytes `HEAD_AT` holds (0: none).
const HELD: u8 = 9;
const FP: u8 = 10;
const SCRATCH_AT: i16 = -64;
const LOAD_AT: i16 = -72;
/// The packet's first bytes, copied once: Ethernet, VLAN, IPv4 with options or IPv6, and
/// the ports behind them.
const HEAD_LEN: u32 = 64;
const HEAD_AT: i16 = LOAD_AT - 64;

/// Where a jump goes, resolved once every instruction is placed.
#[derive(Clone, Copy)]
enum Target {
    Classic(usize),
    Accept,
    Reject,
}

struct Emitter {
    code: Vec<EbpfInsn>,
    /// (index of a jump in `code`, where it goes).
    jumps: Vec<(usize, Target)>,
    /// Loads outside the head: through the helper, or (tests, to show the head alone
    /// decides) rejected.
    outside_head: OutsideHead,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutsideHead {
    Helper,
    Reject,
}

impl Emitter {
    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(EbpfInsn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        });
    }

    fn mov32_imm(&mut self, dst: u8, imm: u32) {
        self.raw(E_ALU | OP_MOV | E_K, dst, 0, 0, imm.cast_signed());
    }

    fn mov64_reg(&mut self, dst: u8, src: u8) {
        self.raw(E_ALU64 | OP_MOV | E_X, dst, src, 0, 0);
    }

    fn load_ctx_u32(&mut self, dst: u8, offset: i16) {
        self.raw(E_LDX | E_MEM | E_W, dst, CTX, offset, 0);
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Target) {
        self.jumps.push((self.code.len(), to));
        self.raw(code, dst, src, 0, imm);
    }

    fn goto(&mut self, to: Target) {
        self.jump(E_JMP | OP_JA, 0, 0, 0, to);
    }

    fn call(&mut self, helper: i32) {
        self.raw(E_JMP | OP_CALL, 0, 0, 0, helper);
    }

    fn scratch(word: u32) -> i16 {
        // `check` keeps `word` below SCRATCH_WORDS (16): the offset is -64..=-4.
        let word = i16::try_from(word % SCRATCH_WORDS as u32).unwrap_or(0);
        SCRATCH_AT + 4 * word
    }

    /// `dst` = the `size` bytes (big-endian) at the offset in `r2`; a failed load rejects.
    fn load_packet_at_r2(&mut self, dst: u8, size: u16) {
        if self.outside_head == OutsideHead::Reject {
            self.goto(Target::Reject);
            return;
        }
        let (bytes, ldx_size, swap) = match size {
            W => (4, E_W, Some(32)),
            H => (2, E_H, Some(16)),
            _ => (1, E_B, None),
        };
        self.mov64_reg(1, CTX);
        self.mov64_reg(3, FP);
        self.raw(E_ALU64 | OP_ADD | E_K, 3, 0, 0, i32::from(LOAD_AT));
        self.mov32_imm(4, bytes);
        self.call(HELPER_SKB_LOAD_BYTES);
        self.jump(E_JMP | OP_JNE | E_K, 0, 0, 0, Target::Reject);
        self.raw(E_LDX | E_MEM | ldx_size, dst, FP, LOAD_AT, 0);
        if let Some(bits) = swap {
            self.raw(E_ALU | OP_END_TO_BE, dst, 0, 0, bits);
        }
    }

    /// A jump whose offset [`Emitter::land_here`] sets: its index.
    fn jump_ahead(&mut self, code: u8, dst: u8, src: u8, imm: i32) -> usize {
        self.raw(code, dst, src, 0, imm);
        self.code.len() - 1
    }

    /// Points the jump at `from` to the next instruction emitted.
    fn land_here(&mut self, from: usize) {
        let off = i16::try_from(self.code.len() - from - 1).unwrap_or(i16::MIN);
        self.code[from].off = off;
    }

    /// Prologue: `HELD` = bytes of the packet's head copied to `HEAD_AT` (zeroed first, so
    /// the verifier sees the whole area written whatever the copy did).
    fn copy_head(&mut self) {
        for pair in 0..8 {
            self.raw(E_ST | E_MEM | E_DW, FP, 0, HEAD_AT + 8 * pair, 0);
        }
        self.mov32_imm(HELD, 0);
        self.load_ctx_u32(4, SKB_LEN);
        self.raw(E_JMP | OP_JLE | E_K, 4, 0, 1, HEAD_LEN.cast_signed());
        self.mov32_imm(4, HEAD_LEN);
        let empty = self.jump_ahead(E_JMP | OP_JLT | E_K, 4, 0, 1);
        self.mov64_reg(HELD, 4);
        self.mov64_reg(1, CTX);
        self.mov32_imm(2, 0);
        self.mov64_reg(3, FP);
        self.raw(E_ALU64 | OP_ADD | E_K, 3, 0, 0, i32::from(HEAD_AT));
        self.call(HELPER_SKB_LOAD_BYTES);
        self.raw(E_JMP | OP_JEQ | E_K, 0, 0, 1, 0);
        self.mov32_imm(HELD, 0);
        self.land_here(empty);
    }

    /// `dst` = the `size` bytes (big-endian) at `base + off` on the stack: one access
    /// where it is aligned (`off` known), else byte by byte through `r3`.
    fn load_stack(&mut self, dst: u8, base: u8, off: i16, bytes: u8, aligned: bool) {
        let (ldx_size, swap) = match bytes {
            4 => (E_W, Some(32)),
            2 => (E_H, Some(16)),
            _ => (E_B, None),
        };
        if aligned || bytes == 1 {
            self.raw(E_LDX | E_MEM | ldx_size, dst, base, off, 0);
            if let Some(bits) = swap {
                self.raw(E_ALU | OP_END_TO_BE, dst, 0, 0, bits);
            }
            return;
        }
        self.raw(E_LDX | E_MEM | E_B, dst, base, off, 0);
        for i in 1..i16::from(bytes) {
            self.raw(E_LDX | E_MEM | E_B, 3, base, off + i, 0);
            self.raw(E_ALU | OP_LSH | E_K, dst, 0, 0, 8);
            self.raw(E_ALU | OP_OR | E_X, dst, 3, 0, 0);
        }
    }

    fn load_absolute(&mut self, dst: u8, offset: u32, size: u16) {
        let bytes: u8 = match size {
            W => 4,
            H => 2,
            _ => 1,
        };
        let end = offset
            .checked_add(u32::from(bytes))
            .filter(|&end| end <= HEAD_LEN);
        // The stack when the head holds the bytes, else the helper.
        let mut past_slow = None;
        if let Some(end) = end {
            let not_held = self.jump_ahead(E_JMP | OP_JLT | E_K, HELD, 0, end.cast_signed());
            // `offset` < HEAD_LEN (64): the sum stays far inside i16.
            let at = HEAD_AT + i16::try_from(offset).unwrap_or(0);
            self.load_stack(dst, FP, at, bytes, at % i16::from(bytes) == 0);
            past_slow = Some(self.jump_ahead(E_JMP | OP_JA, 0, 0, 0));
            self.land_here(not_held);
        }
        self.mov32_imm(2, offset);
        self.load_packet_at_r2(dst, size);
        if let Some(from) = past_slow {
            self.land_here(from);
        }
    }

    /// `X + k` in 64 bits; beyond 32 bits rejects (the user-space `checked_add`).
    fn load_indirect(&mut self, offset: u32, size: u16) {
        let bytes: u8 = match size {
            W => 4,
            H => 2,
            _ => 1,
        };
        self.mov64_reg(2, X);
        self.mov32_imm(3, offset);
        self.raw(E_ALU64 | OP_ADD | E_X, 2, 3, 0, 0);
        self.mov64_reg(3, 2);
        self.raw(E_ALU64 | OP_RSH | E_K, 3, 0, 0, 32);
        self.jump(E_JMP | OP_JNE | E_K, 3, 0, 0, Target::Reject);
        // The stack when `r2 + bytes` <= HELD: first a bound the verifier can follow.
        let last = HEAD_LEN - u32::from(bytes);
        let beyond = self.jump_ahead(E_JMP | OP_JGT | E_K, 2, 0, last.cast_signed());
        self.mov64_reg(3, 2);
        self.raw(E_ALU64 | OP_ADD | E_K, 3, 0, 0, i32::from(bytes));
        let not_held = self.jump_ahead(E_JMP | OP_JGT | E_X, 3, HELD, 0);
        self.mov64_reg(4, FP);
        self.raw(E_ALU64 | OP_ADD | E_K, 4, 0, 0, i32::from(HEAD_AT));
        self.raw(E_ALU64 | OP_ADD | E_X, 4, 2, 0, 0);
        self.load_stack(A, 4, 0, bytes, false);
        let past_slow = self.jump_ahead(E_JMP | OP_JA, 0, 0, 0);
        self.land_here(beyond);
        self.land_here(not_held);
        self.load_packet_at_r2(A, size);
        self.land_here(past_slow);
    }
}

/// Translates a checked classic program.
#[must_use]
pub fn translate(program: &[BpfInsn], verdict: Verdict) -> Vec<EbpfInsn> {
    translate_with(program, verdict, OutsideHead::Helper)
}

fn translate_with(program: &[BpfInsn], verdict: Verdict, outside_head: OutsideHead) -> Vec<EbpfInsn> {
    let mut e = Emitter {
        code: Vec::with_capacity(program.len() * 8 + 32),
        jumps: Vec::new(),
        outside_head,
    };
    // Prologue: the context kept, A = X = 0, the scratch words zeroed, the head copied.
    e.mov64_reg(CTX, 1);
    e.mov32_imm(A, 0);
    e.mov32_imm(X, 0);
    for pair in 0..8 {
        e.raw(E_ST | E_MEM | E_DW, FP, 0, SCRATCH_AT + 8 * pair, 0);
    }
    e.copy_head();
    let mut starts = Vec::with_capacity(program.len());
    for (i, insn) in program.iter().enumerate() {
        starts.push(e.code.len());
        classic(&mut e, *insn, i + 1);
    }
    let reject = e.code.len();
    match verdict {
        Verdict::TailCall { .. } => e.raw(E_ALU64 | OP_MOV | E_K, 0, 0, 0, TC_ACT_UNSPEC),
        Verdict::Return => e.raw(E_ALU64 | OP_MOV | E_K, 0, 0, 0, 0),
    }
    e.raw(E_JMP | OP_EXIT, 0, 0, 0, 0);
    let accept = e.code.len();
    match verdict {
        Verdict::TailCall { map_fd, index } => {
            e.mov64_reg(1, CTX);
            // A 16-byte load of the map's address, from its descriptor.
            e.raw(E_LD | E_DW | E_IMM, 2, PSEUDO_MAP_FD, 0, map_fd);
            e.raw(0, 0, 0, 0, 0);
            e.mov32_imm(3, index);
            e.call(HELPER_TAIL_CALL);
            e.raw(E_ALU64 | OP_MOV | E_K, 0, 0, 0, TC_ACT_UNSPEC);
        }
        Verdict::Return => e.raw(E_ALU64 | OP_MOV | E_K, 0, 0, 0, 1),
    }
    e.raw(E_JMP | OP_EXIT, 0, 0, 0, 0);
    for (at, target) in std::mem::take(&mut e.jumps) {
        let to = match target {
            Target::Classic(i) => starts.get(i).copied().unwrap_or(reject),
            Target::Accept => accept,
            Target::Reject => reject,
        };
        // Forward only, and a classic program of at most 4096 instructions stays far from
        // the 16-bit limit; beyond it the verifier refuses the program, never a wrong jump.
        let off = to
            .checked_sub(at + 1)
            .and_then(|d| i16::try_from(d).ok())
            .unwrap_or(i16::MIN);
        e.code[at].off = off;
    }
    e.code
}

/// Emits one classic instruction; `next` is the index of the one after it.
fn classic(e: &mut Emitter, insn: BpfInsn, next: usize) {
    let (code, k) = (insn.code, insn.k);
    match code & 0x07 {
        LD => match code & 0xe0 {
            IMM => e.mov32_imm(A, k),
            LEN => e.load_ctx_u32(A, SKB_LEN),
            MEM => e.raw(E_LDX | E_MEM | E_W, A, FP, Emitter::scratch(k), 0),
            mode if mode != IND && k >= SKF_AD_OFF => match k - SKF_AD_OFF {
                SKF_AD_VLAN_TAG => e.load_ctx_u32(A, SKB_VLAN_TCI),
                SKF_AD_VLAN_TAG_PRESENT => e.load_ctx_u32(A, SKB_VLAN_PRESENT),
                SKF_AD_VLAN_TPID => {
                    e.load_ctx_u32(A, SKB_VLAN_PROTO);
                    e.raw(E_ALU | OP_END_TO_BE, A, 0, 0, 16);
                }
                _ => e.goto(Target::Reject),
            },
            IND => e.load_indirect(k, code & 0x18),
            _ => e.load_absolute(A, k, code & 0x18),
        },
        LDX => match code & 0xe0 {
            IMM => e.mov32_imm(X, k),
            LEN => e.load_ctx_u32(X, SKB_LEN),
            MEM => e.raw(E_LDX | E_MEM | E_W, X, FP, Emitter::scratch(k), 0),
            MSH => {
                e.load_absolute(X, k, B);
                e.raw(E_ALU | 0x50 | E_K, X, 0, 0, 0x0f);
                e.raw(E_ALU | 0x60 | E_K, X, 0, 0, 2);
            }
            _ => e.goto(Target::Reject),
        },
        ST => e.raw(E_STX | E_MEM | E_W, FP, A, Emitter::scratch(k), 0),
        STX => e.raw(E_STX | E_MEM | E_W, FP, X, Emitter::scratch(k), 0),
        ALU => alu(e, code, k),
        JMP => {
            let op = low_byte(code & 0xf0);
            if op == 0x00 {
                e.goto(Target::Classic(next + k as usize));
            } else {
                let (source, src, imm) = if code & SRC_X != 0 {
                    (E_X, X, 0)
                } else {
                    (E_K, 0, k.cast_signed())
                };
                let on_true = Target::Classic(next + usize::from(insn.jt));
                e.jump(E_JMP32 | op | source, A, src, imm, on_true);
                if insn.jf != 0 {
                    e.goto(Target::Classic(next + usize::from(insn.jf)));
                }
            }
        }
        RET => match code & 0x18 {
            0x00 if k == 0 => e.goto(Target::Reject),
            0x00 => e.goto(Target::Accept),
            source => {
                let reg = if source == 0x10 { A } else { X };
                e.jump(E_JMP32 | OP_JNE | E_K, reg, 0, 0, Target::Accept);
                e.goto(Target::Reject);
            }
        },
        MISC => {
            if code & 0xf8 == 0 {
                e.raw(E_ALU | OP_MOV | E_X, X, A, 0, 0);
            } else {
                e.raw(E_ALU | OP_MOV | E_X, A, X, 0, 0);
            }
        }
        _ => e.goto(Target::Reject),
    }
}

/// The low byte of a classic opcode (its operation and source bits).
fn low_byte(code: u16) -> u8 {
    code.to_le_bytes()[0]
}

/// A classic ALU instruction on A, with the user-space interpreter's edge cases.
fn alu(e: &mut Emitter, code: u16, k: u32) {
    let op = low_byte(code & 0xf0);
    let by_x = code & SRC_X != 0;
    match op {
        // NEG
        0x80 => e.raw(E_ALU | 0x80, A, 0, 0, 0),
        // DIV, MOD: by a zero X rejects (a zero K is refused by `check`).
        0x30 | 0x90 if by_x => {
            e.jump(E_JMP32 | OP_JEQ | E_K, X, 0, 0, Target::Reject);
            e.raw(E_ALU | op | E_X, A, X, 0, 0);
        }
        // LSH, RSH: by 32 or more gives 0.
        0x60 | 0x70 if by_x => {
            // if X < 32 skip the next two: shift; else A = 0.
            e.raw(E_JMP32 | OP_JLT | E_K, X, 0, 2, 32);
            e.mov32_imm(A, 0);
            e.raw(E_JMP | OP_JA, 0, 0, 1, 0);
            e.raw(E_ALU | op | E_X, A, X, 0, 0);
        }
        0x60 | 0x70 if k >= 32 => e.mov32_imm(A, 0),
        _ if by_x => e.raw(E_ALU | op | E_X, A, X, 0, 0),
        _ => e.raw(E_ALU | op | E_K, A, 0, 0, k.cast_signed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;

    /// The expressions of the live oracle test, and a few that use every instruction kind.
    const EXPRESSIONS: &[&str] = &[
        "udp",
        "tcp port 80",
        "udp dst port 53 and src host 198.18.0.1",
        "icmp or arp",
        "ip6",
        "ip6 and udp",
        "net 198.18.0.0/30",
        "not host 198.18.0.9",
        "tcp[tcpflags] & tcp-syn != 0",
        "greater 100",
        "less 64",
        "ip[2:2] > 40 and ip[8] < 65",
        "vlan",
        "vlan 42",
        "udp[8:4] = 0x41414141",
        "tcp and (tcp[12] >> 4) * 4 + 14 > 30",
        "ip[0] & 0xf != 5 or udp[4:2] / 2 > 10",
        "ether host 02:00:00:00:00:01 or ether broadcast",
        "portrange 5000-6000",
        "ip proto 47 or ip6 proto 58",
    ];

    fn frame(seed: &mut u64, kind: u64) -> Vec<u8> {
        let mut next = || {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (*seed >> 33) as u8
        };
        // At least Ethernet's minimum: the kernel's test run refuses a frame too short for
        // the header its EtherType names.
        let len = 60 + usize::from(next()) % 200 + usize::from(next());
        let mut f: Vec<u8> = (0..len).map(|_| next()).collect();
        // Mostly plausible headers, so the expressions' later tests run too.
        let (ether, proto) = match kind % 5 {
            0 => (0x0800u16, 17u8),
            1 => (0x0800, 6),
            2 => (0x86dd, 17),
            3 => (0x0806, 0),
            _ => (0x0800, 1),
        };
        f[12..14].copy_from_slice(&ether.to_be_bytes());
        if ether == 0x0800 && f.len() > 34 {
            f[14] = 0x45;
            f[23] = proto;
            f[26..30].copy_from_slice(&[198, 18, 0, (kind % 4) as u8]);
        } else if ether == 0x86dd && f.len() > 54 {
            f[14] = 0x60;
            f[20] = proto;
        }
        f
    }

    /// Each expression's translation (`outside_head` for loads beyond the head) gives the
    /// interpreter's verdict on 300 generated frames each, at least `min_len` bytes long,
    /// in the kernel (`BPF_PROG_TEST_RUN`), and the frames exercise both verdicts.
    fn assert_the_kernel_agrees(expressions: &[&str], outside_head: OutsideHead, min_len: usize) {
        let mut seed = 11u64;
        let (mut accepted, mut compared) = (0, 0);
        for expression in expressions {
            let filter = Filter::compile(expression, 65_535).unwrap();
            let code = translate_with(filter.program(), Verdict::Return, outside_head);
            let program = crate::sys::bpf::load_sched_cls(&code)
                .unwrap_or_else(|e| panic!("{expression}: the verifier refused it: {e}"));
            for kind in 0..300u64 {
                let mut bytes = frame(&mut seed, kind);
                bytes.resize(bytes.len().max(min_len), 0);
                let len = u32::try_from(bytes.len()).unwrap();
                let expected = filter.matches(&bytes, len);
                let verdict = crate::sys::bpf::test_run(&program, &bytes)
                    .unwrap_or_else(|e| panic!("{expression}: {e} on {} bytes {bytes:02x?}", bytes.len()));
                assert_eq!(verdict == 1, expected, "{expression} on {bytes:02x?}");
                accepted += usize::from(expected);
                compared += 1;
            }
        }
        assert!(
            accepted > compared / 10 && accepted < compared * 9 / 10,
            "the frames exercise both verdicts: {accepted} of {compared}"
        );
    }

    /// The translated program gives the interpreter's verdict on every frame: run in the
    /// kernel when this process may load programs.
    #[test]
    fn the_kernel_gives_the_interpreters_verdict() {
        if crate::sys::effective_uid() != 0 {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        assert_the_kernel_agrees(EXPRESSIONS, OutsideHead::Helper, 0);
    }

    /// Loads inside the packet's first `HEAD_LEN` bytes read the copy on the stack: with
    /// every other load rejecting, expressions whose fields all lie there still give the
    /// interpreter's verdict on frames at least that long (at aligned and unaligned
    /// offsets, absolute and behind the IPv4 header's length).
    #[test]
    fn loads_inside_the_head_read_its_copy() {
        const INSIDE_HEAD: &[&str] = &[
            "udp",
            "tcp port 80",
            "udp dst port 53 and src host 198.18.0.1",
            "net 198.18.0.0/30",
            "ip[2:2] > 40 and ip[8] < 65",
            "tcp[tcpflags] & tcp-syn != 0",
            "portrange 5000-6000",
            "ether host 02:00:00:00:00:01 or ether broadcast",
        ];
        if crate::sys::effective_uid() != 0 {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        assert_the_kernel_agrees(INSIDE_HEAD, OutsideHead::Reject, HEAD_LEN as usize);
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for expression in EXPRESSIONS {
            let filter = Filter::compile(expression, 65_535).unwrap();
            for verdict in [Verdict::Return, Verdict::TailCall { map_fd: 3, index: 1 }] {
                let code = translate(filter.program(), verdict);
                for (at, insn) in code.iter().enumerate() {
                    let class = insn.code & 0x07;
                    let op = insn.code & 0xf0;
                    if (class == E_JMP || class == E_JMP32) && op != OP_CALL && op != OP_EXIT {
                        let to = usize::try_from(insn.off).map(|off| at + 1 + off);
                        assert!(
                            to.is_ok_and(|to| to < code.len()),
                            "{expression}: jump at {at} by {} of {}",
                            insn.off,
                            code.len()
                        );
                    }
                }
                assert_eq!(code.last().unwrap().code, E_JMP | OP_EXIT);
            }
        }
    }
}
