//! pcapng encoding: the blocks podcap writes, and a reader for the files it serves.
//!
//! Rules:
//! - Every block is built whole in a caller-owned buffer (no allocation per packet) and
//!   written with `write_all`; a file is a Section Header Block, then Interface Description
//!   Blocks, Enhanced Packet Blocks and, at a segment's end, Interface Statistics Blocks.
//! - Timestamps are nanoseconds since the Unix epoch: every IDB carries `if_tsresol = 9`.
//! - Byte order is the host's (little-endian on every platform the sensor runs on); the
//!   reader accepts both.
//!
//! Block references: draft-ietf-opsawg-pcapng (SHB 0x0A0D0D0A, IDB 1, ISB 5, EPB 6, NRB 4,
//! DSB 0x0A).
pub mod read;
pub mod secrets;

/// Block types.
pub const BLOCK_SHB: u32 = 0x0A0D_0D0A;
pub const BLOCK_IDB: u32 = 1;
pub const BLOCK_NRB: u32 = 4;
pub const BLOCK_ISB: u32 = 5;
pub const BLOCK_EPB: u32 = 6;
/// Decryption Secrets Block.
pub const BLOCK_DSB: u32 = 0x0A;
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// How a Section Header comment that names lost data begins: podcap writes one at the end
/// of a stream that had to skip damage (`podcap-damage: <what> …`), and readers collect
/// them.
pub const DAMAGE_PREFIX: &str = "podcap-damage: ";

/// How the comment of a segment's totals block begins: a segment ends with one statistics
/// block per interface repeating what the whole segment counted, for readers that show an
/// interface's last block (Wireshark); podcap's readers skip it, the blocks before count
/// the same time second by second.
pub const SEGMENT_TOTALS_COMMENT: &str = "podcap segment totals: ";

/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;
const ISB_OSDROP: u16 = 7;

/// Packet direction as `epb_flags` bits 0-1 encode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Unknown = 0,
    Inbound = 1,
    Outbound = 2,
}

impl Direction {
    #[must_use]
    pub fn from_epb_flags(flags: u32) -> Self {
        match flags & 3 {
            1 => Self::Inbound,
            2 => Self::Outbound,
            _ => Self::Unknown,
        }
    }
}

/// An interface as its IDB describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceDescription {
    pub name: String,
    pub description: String,
    pub link_type: u16,
    pub snaplen: u32,
}

/// Statistics for one interface's ISB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStatistics {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Packets the interface handed to capture.
    pub received: u64,
    /// Packets lost before user space (clone, XDP, AF_XDP ring).
    pub kernel_drops: u64,
    /// Packets lost in the sensor (user ring full, writer or disk).
    pub sensor_drops: u64,
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// What follows the packet data of an Enhanced Packet Block built by
/// [`BlockWriter::packet_around`]: at most 3 bytes of padding, the flags option with the
/// end of options, and the trailing block length.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketTail {
    bytes: [u8; 20],
    len: usize,
}

impl PacketTail {
    fn push(&mut self, part: &[u8]) {
        self.bytes[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
    }

    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Builds blocks into one reusable buffer.
#[derive(Debug, Default)]
pub struct BlockWriter {
    buf: Vec<u8>,
    /// Where the built bytes begin in `buf`: the bytes before are filler that places them
    /// ([`BlockWriter::clear_placed`]).
    start: usize,
}

impl BlockWriter {
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    /// The bytes built so far.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Empties the writer and places the first byte it builds at an address `offset` past
    /// a multiple of `align` (a power of two), so that a direct write, which needs aligned
    /// memory, can go from the buffer itself. The placement lasts while the buffer does not
    /// grow past its capacity; whoever relies on it checks the address of [`bytes`].
    ///
    /// [`bytes`]: BlockWriter::bytes
    pub fn clear_placed(&mut self, align: usize, offset: usize) {
        self.buf.clear();
        self.buf.reserve(align);
        let at = self.buf.as_ptr().addr() % align;
        let lead = (offset % align + align - at) % align;
        self.buf.resize(lead, 0);
        self.start = lead;
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    fn ts(&mut self, ns: u64) {
        self.u32((ns >> 32) as u32);
        self.u32(ns as u32);
    }

    fn option(&mut self, code: u16, value: &[u8]) {
        let len = value.len().min(usize::from(u16::MAX));
        self.u16(code);
        self.u16(len as u16);
        self.buf.extend_from_slice(&value[..len]);
        self.buf.resize(self.buf.len() + pad4(len), 0);
    }

    fn begin(&mut self, block_type: u32) -> usize {
        let start = self.buf.len();
        self.u32(block_type);
        self.u32(0); // total length, patched by `end`
        start
    }

    fn end(&mut self, start: usize) {
        let total = (self.buf.len() - start + 4) as u32;
        self.buf[start + 4..start + 8].copy_from_slice(&total.to_ne_bytes());
        self.u32(total);
    }

    fn end_options(&mut self) {
        self.u16(OPT_END);
        self.u16(0);
    }

    /// Section Header Block (section length unknown: -1).
    pub fn section_header(&mut self, application: &str) {
        self.section_header_with_comments(application, &[]);
    }

    /// Section Header Block with comments (`opt_comment`, one per line given): what a
    /// reader should know about the section, or about the stream before it.
    pub fn section_header_with_comments(&mut self, application: &str, comments: &[String]) {
        let start = self.begin(BLOCK_SHB);
        self.u32(BYTE_ORDER_MAGIC);
        self.u16(1);
        self.u16(0);
        self.buf.extend_from_slice(&(-1i64).to_ne_bytes());
        for comment in comments {
            // An option holds at most 65535 bytes; a longer comment is cut at a character.
            let mut end = comment.len().min(usize::from(u16::MAX));
            while !comment.is_char_boundary(end) {
                end -= 1;
            }
            self.option(OPT_COMMENT, &comment.as_bytes()[..end]);
        }
        self.option(SHB_USERAPPL, application.as_bytes());
        self.end_options();
        self.end(start);
    }

    /// Interface Description Block with nanosecond timestamps.
    pub fn interface(&mut self, iface: &InterfaceDescription) {
        let start = self.begin(BLOCK_IDB);
        self.u16(iface.link_type);
        self.u16(0);
        self.u32(iface.snaplen);
        if !iface.name.is_empty() {
            self.option(IF_NAME, iface.name.as_bytes());
        }
        if !iface.description.is_empty() {
            self.option(IF_DESCRIPTION, iface.description.as_bytes());
        }
        self.option(IF_TSRESOL, &[9]);
        self.end_options();
        self.end(start);
    }

    /// Enhanced Packet Block.
    pub fn packet(
        &mut self,
        interface_id: u32,
        timestamp_ns: u64,
        original_len: u32,
        data: &[u8],
        direction: Direction,
    ) {
        let start = self.begin(BLOCK_EPB);
        self.u32(interface_id);
        self.ts(timestamp_ns);
        self.u32(data.len() as u32);
        self.u32(original_len.max(data.len() as u32));
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + pad4(data.len()), 0);
        if direction != Direction::Unknown {
            self.option(EPB_FLAGS, &(direction as u32).to_ne_bytes());
            self.end_options();
        }
        self.end(start);
    }

    /// The same Enhanced Packet Block as [`BlockWriter::packet`] without copying the packet:
    /// the block's head is built here, and the returned tail (padding, options, trailing
    /// length) must follow `data_len` bytes of packet data in the file.
    pub fn packet_around(
        &mut self,
        interface_id: u32,
        timestamp_ns: u64,
        original_len: u32,
        data_len: usize,
        direction: Direction,
    ) -> PacketTail {
        let pad = pad4(data_len);
        let options = if direction == Direction::Unknown { 0 } else { 12 };
        let total = (28 + data_len + pad + options + 4) as u32;
        self.u32(BLOCK_EPB);
        self.u32(total);
        self.u32(interface_id);
        self.ts(timestamp_ns);
        self.u32(data_len as u32);
        self.u32(original_len.max(data_len as u32));
        // The padding is the tail's first, zeroed, bytes.
        let mut tail = PacketTail {
            len: pad,
            ..PacketTail::default()
        };
        if direction != Direction::Unknown {
            tail.push(&EPB_FLAGS.to_ne_bytes());
            tail.push(&4u16.to_ne_bytes());
            tail.push(&(direction as u32).to_ne_bytes());
            tail.push(&OPT_END.to_ne_bytes());
            tail.push(&0u16.to_ne_bytes());
        }
        tail.push(&total.to_ne_bytes());
        tail
    }

    /// Name Resolution Block: one record per address (Wireshark shows the name for it).
    pub fn names(&mut self, names: &[(std::net::IpAddr, String)]) {
        if names.is_empty() {
            return;
        }
        let start = self.begin(BLOCK_NRB);
        for (ip, name) in names {
            let mut value = match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            value.extend_from_slice(name.as_bytes());
            value.push(0);
            // nrb_record_ipv4 = 1, nrb_record_ipv6 = 2.
            self.option(if ip.is_ipv4() { 1 } else { 2 }, &value);
        }
        // nrb_record_end.
        self.u16(0);
        self.u16(0);
        self.end(start);
    }

    /// Appends an already encoded block (a reader's raw block) unchanged.
    pub fn raw(&mut self, block: &[u8]) {
        self.buf.extend_from_slice(block);
    }

    /// Puts already encoded blocks in at byte `at` of what is built (clamped to its end);
    /// `at` must be where a block starts or the end.
    pub fn insert_raw(&mut self, at: usize, blocks: &[u8]) {
        let at = self.start + at.min(self.len());
        self.buf.splice(at..at, blocks.iter().copied());
    }

    /// Interface Statistics Block; `comment` may break the drops down by stage.
    pub fn statistics(&mut self, interface_id: u32, stats: &InterfaceStatistics, comment: &str) {
        let start = self.begin(BLOCK_ISB);
        self.u32(interface_id);
        self.ts(stats.end_ns);
        let ts_bytes = |ns: u64| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&((ns >> 32) as u32).to_ne_bytes());
            b[4..].copy_from_slice(&(ns as u32).to_ne_bytes());
            b
        };
        if !comment.is_empty() {
            self.option(OPT_COMMENT, comment.as_bytes());
        }
        self.option(ISB_STARTTIME, &ts_bytes(stats.start_ns));
        self.option(ISB_ENDTIME, &ts_bytes(stats.end_ns));
        self.option(ISB_IFRECV, &stats.received.to_ne_bytes());
        self.option(ISB_IFDROP, &stats.kernel_drops.to_ne_bytes());
        self.option(ISB_OSDROP, &stats.sensor_drops.to_ne_bytes());
        self.end_options();
        self.end(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_written_around_its_data_is_the_same_block() {
        for direction in [Direction::Unknown, Direction::Inbound, Direction::Outbound] {
            for len in 0u8..9 {
                let data: Vec<u8> = (0..len).collect();
                let mut copied = BlockWriter::default();
                copied.packet(3, 1_700_000_000_000_000_007, 1500, &data, direction);
                let mut around = BlockWriter::default();
                let tail = around.packet_around(3, 1_700_000_000_000_000_007, 1500, data.len(), direction);
                let mut bytes = around.bytes().to_vec();
                bytes.extend_from_slice(&data);
                bytes.extend_from_slice(tail.bytes());
                assert_eq!(bytes, copied.bytes(), "{direction:?}, {len} bytes");
            }
        }
    }

    /// A placed writer builds the same bytes as any other, from an address at the offset
    /// asked for, and inserts where its own bytes say.
    #[test]
    fn a_placed_writer_builds_the_same_bytes_at_the_address_asked_for() {
        let build = |w: &mut BlockWriter| {
            w.section_header("podcap test");
            w.packet(0, 7, 60, &[1, 2, 3], Direction::Inbound);
        };
        let mut header = BlockWriter::default();
        header.section_header("podcap test");
        let header_len = header.len();
        let mut plain = BlockWriter::default();
        build(&mut plain);
        plain.insert_raw(header_len, &[9; 8]);
        for offset in [0, 1, 100, 4092, 4096 + 12] {
            let mut placed = BlockWriter::with_capacity(64);
            placed.clear_placed(4096, offset);
            assert!(placed.is_empty());
            build(&mut placed);
            placed.insert_raw(header_len, &[9; 8]);
            assert_eq!(placed.bytes(), plain.bytes(), "offset {offset}");
            assert_eq!(placed.bytes().as_ptr().addr() % 4096, offset % 4096);
            placed.clear();
            assert_eq!(placed.len(), 0);
        }
    }

    #[test]
    fn blocks_are_padded_and_lengths_match() {
        let mut w = BlockWriter::default();
        w.section_header("podcap test");
        w.interface(&InterfaceDescription {
            name: "eth0".into(),
            description: "d".into(),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65535,
        });
        w.packet(0, 1_700_000_000_123_456_789, 61, &[0xab; 61], Direction::Outbound);
        w.statistics(
            0,
            &InterfaceStatistics {
                received: 3,
                kernel_drops: 1,
                ..Default::default()
            },
            "x",
        );
        let bytes = w.bytes();
        assert_eq!(bytes.len() % 4, 0);
        let blocks: Vec<_> = read::Blocks::new(bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(blocks.len(), 4);
        for b in &blocks {
            assert_eq!(b.raw.len() % 4, 0);
        }
        let mut section = read::Section::default();
        for b in &blocks {
            section.observe(b).unwrap();
        }
        assert_eq!(section.interfaces[0].name, "eth0");
        let packet = read::parse_packet(&blocks[2], &section).unwrap().unwrap();
        assert_eq!(packet.timestamp_ns, 1_700_000_000_123_456_789);
        assert_eq!(packet.data, &[0xab; 61][..]);
        assert_eq!(packet.original_len, 61);
        assert_eq!(packet.direction, Direction::Outbound);
    }
}
