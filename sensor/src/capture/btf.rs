//! Member offsets of kernel structures, read from the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the one thing the tc programs must read from kernel
//! memory themselves: the cgroup of a socket found by lookup (`bpf_sk_cgroup_id` is not
//! offered to tc programs).
//!
//! Rules:
//! - Only the BTF encoding is parsed (header, type section, string section); a file that
//!   does not parse, or a structure or member that is missing, is an error naming it, and
//!   the capture then simply does not attribute ingress packets to hostNetwork pods.
//! - Offsets are of members directly in the structure or inside its anonymous structs and
//!   unions; bitfield members are refused.
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BtfError {
    #[error("not BTF: {0}")]
    Format(&'static str),
    #[error("no struct {0} in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {structure} has no member {member}")]
    NoMember { structure: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield: bool,
}

struct Type {
    name: u32,
    kind: u32,
    /// The `size_or_type` word: the target type of typedefs and qualifiers.
    target: u32,
    members: Vec<Member>,
}

/// The parsed types of one BTF blob.
pub(crate) struct Btf {
    strings: Vec<u8>,
    /// Index 0 is the void type (ids start at 1).
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Format("truncated"))
}

impl Btf {
    /// The running kernel's BTF.
    pub(crate) fn kernel() -> Result<Self, BtfError> {
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|_| BtfError::Format("cannot read /sys/kernel/btf/vmlinux"))?;
        Self::parse(&bytes)
    }

    /// Parses a little-endian BTF blob.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        if bytes.len() < 24 || u16::from_le_bytes([bytes[0], bytes[1]]) != MAGIC {
            return Err(BtfError::Format("bad magic"));
        }
        let header_len = u32_at(bytes, 4)? as usize;
        let (type_off, type_len) = (u32_at(bytes, 8)? as usize, u32_at(bytes, 12)? as usize);
        let (str_off, str_len) = (u32_at(bytes, 16)? as usize, u32_at(bytes, 20)? as usize);
        let section = |off: usize, len: usize| {
            bytes
                .get(header_len + off..header_len + off + len)
                .ok_or(BtfError::Format("section out of bounds"))
        };
        let type_section = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            target: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < type_section.len() {
            let name = u32_at(type_section, at)?;
            let info = u32_at(type_section, at + 4)?;
            let (vlen, kind, kind_flag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31 == 1);
            let target = u32_at(type_section, at + 8)?;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(type_section, m + 8)?;
                        let (bit_offset, bitfield) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24 != 0)
                        } else {
                            (offset, false)
                        };
                        members.push(Member {
                            name: u32_at(type_section, m)?,
                            type_id: u32_at(type_section, m + 4)?,
                            bit_offset,
                            bitfield,
                        });
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,
                15 | 19 => vlen * 12,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Format("unknown type kind")),
            };
            at += extra;
            types.push(Type {
                name,
                kind,
                target,
                members,
            });
        }
        let mut btf = Self {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.string(t.name).to_owned();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let start = offset as usize;
        let rest = self.strings.get(start..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// Byte offset of `member` in `struct structure`.
    pub(crate) fn member_offset(&self, structure: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(structure)
            .ok_or_else(|| BtfError::NoStruct(structure.to_owned()))?;
        self.find_member(id, member, 0).ok_or_else(|| BtfError::NoMember {
            structure: structure.to_owned(),
            member: member.to_owned(),
        })
    }

    fn find_member(&self, id: u32, member: &str, depth: usize) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.bitfield || m.bit_offset % 8 != 0 {
                continue;
            }
            if m.name != 0 && self.string(m.name) == member {
                return Some(m.bit_offset / 8);
            }
            // Anonymous struct or union: look inside (through modifiers and typedefs).
            if m.name == 0 && depth < 4 {
                let inner = self.resolve(m.type_id);
                if let Some(found) = self.find_member(inner, member, depth + 1) {
                    return Some(m.bit_offset / 8 + found);
                }
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..8 {
            match self.types.get(id as usize) {
                Some(t) if matches!(t.kind, 8..=11 | 18) => id = t.target,
                _ => break,
            }
        }
        id
    }
}

/// The offsets the tc programs need to read the cgroup v2 ids of a socket's cgroup and of
/// its ancestors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketCgroupOffsets {
    /// `sock.sk_cgrp_data` + `sock_cgroup_data.cgroup`.
    pub sock_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kn_id: u32,
    /// `cgroup.level`.
    pub cgroup_level: u32,
    /// `cgroup.ancestors` (pointers, 6.1 on) or `cgroup.ancestor_ids` (ids, before).
    pub cgroup_ancestors: u32,
    pub ancestor_ids: bool,
}

impl SocketCgroupOffsets {
    pub(crate) fn find(btf: &Btf) -> Result<Self, BtfError> {
        let (cgroup_ancestors, ancestor_ids) = match btf.member_offset("cgroup", "ancestors") {
            Ok(offset) => (offset, false),
            Err(_) => (btf.member_offset("cgroup", "ancestor_ids")?, true),
        };
        Ok(Self {
            sock_cgroup: btf.member_offset("sock", "sk_cgrp_data")?
                + btf.member_offset("sock_cgroup_data", "cgroup")?,
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            kn_id: btf.member_offset("kernfs_node", "id")?,
            cgroup_level: btf.member_offset("cgroup", "level")?,
            cgroup_ancestors,
            ancestor_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_has_the_socket_cgroup_chain() {
        let btf = Btf::kernel().unwrap();
        let offsets = SocketCgroupOffsets::find(&btf).unwrap();
        assert!(offsets.sock_cgroup > 0 && offsets.sock_cgroup < podcap_common::SOCK_READ_LEN - 8);
        assert!(offsets.cgroup_kn > 0 && offsets.kn_id > 0 && offsets.cgroup_level > 0);
        assert!(
            offsets.cgroup_ancestors > offsets.cgroup_level,
            "a trailing array"
        );
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(
            btf.member_offset("sock", "no_such_member"),
            Err(BtfError::NoMember {
                structure: "sock".into(),
                member: "no_such_member".into()
            })
        );
        assert_eq!(
            btf.member_offset("no_such_struct", "x"),
            Err(BtfError::NoStruct("no_such_struct".into()))
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Btf::parse(b"not btf at all, not at all, no").is_err());
        let mut truncated = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        truncated.extend_from_slice(&[0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Btf::parse(&truncated).err(),
            Some(BtfError::Format("section out of bounds"))
        );
    }
}
