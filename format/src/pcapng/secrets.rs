//! Decryption Secrets Blocks: the TLS secrets of recorded sessions carried in the file
//! itself, which Wireshark and tshark (3.0 and later) apply to every TLS session of the
//! section with no preference to set (draft-ietf-opsawg-pcapng, "Decryption Secrets
//! Block"; `editcap --inject-secrets tls,KEYLOG` writes the same block).
//!
//! Rules: a block carries one TLS key log in NSS's format (`LABEL <client random>
//! <secret>` lines, hex), secrets type `TLSK`; a reader takes a block's secrets as they are
//! and never guesses at one it cannot parse (it is refused, naming why); which sessions a
//! key log serves is known by its client randoms ([`client_randoms`]), so whoever passes
//! blocks on can keep exactly those whose sessions it passes on.
use std::collections::BTreeSet;

use super::{
    pad4,
    read::{Block, ReadError, Section},
    BlockWriter, BLOCK_DSB, BLOCK_SHB, BYTE_ORDER_MAGIC,
};

/// Secrets type of a TLS key log (`TLSK`).
pub const SECRETS_TLS_KEY_LOG: u32 = 0x544c_534b;

/// The random of a TLS ClientHello: what names a session in a key log.
pub type ClientRandom = [u8; 32];

/// A Decryption Secrets Block's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptionSecrets<'a> {
    pub secrets_type: u32,
    pub data: &'a [u8],
}

impl BlockWriter {
    /// Decryption Secrets Block carrying `data`, a secrets blob of `secrets_type`
    /// ([`SECRETS_TLS_KEY_LOG`]: a key log). `data` longer than a block can say is cut at
    /// the last whole line that fits (never at all in practice: a key log line is ~200 B).
    pub fn decryption_secrets(&mut self, secrets_type: u32, data: &[u8]) {
        let limit = usize::try_from(u32::MAX / 2).unwrap_or(usize::MAX);
        let data = if data.len() > limit {
            let cut = data[..limit]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |at| at + 1);
            &data[..cut]
        } else {
            data
        };
        let start = self.begin(BLOCK_DSB);
        self.u32(secrets_type);
        // Fits: cut to at most u32::MAX / 2 above.
        self.u32(data.len() as u32);
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + pad4(data.len()), 0);
        self.end(start);
    }
}

/// The secrets of a Decryption Secrets Block (`None` for any other block).
pub fn parse_decryption_secrets<'a>(
    block: &Block<'a>,
    section: &Section,
) -> Result<Option<DecryptionSecrets<'a>>, ReadError> {
    if block.block_type != BLOCK_DSB {
        return Ok(None);
    }
    let malformed = |reason| ReadError::Malformed {
        offset: block.offset,
        reason,
    };
    let raw: &'a [u8] = block.raw;
    let body = raw
        .get(8..raw.len().saturating_sub(4))
        .ok_or_else(|| malformed("short decryption secrets block"))?;
    let field = |at: usize| -> Option<u32> {
        let v = u32::from_ne_bytes(body.get(at..at + 4)?.try_into().ok()?);
        Some(if section.swapped { v.swap_bytes() } else { v })
    };
    let (Some(secrets_type), Some(length)) = (field(0), field(4)) else {
        return Err(malformed("short decryption secrets block"));
    };
    let end = usize::try_from(length)
        .ok()
        .and_then(|length| length.checked_add(8))
        .filter(|end| *end <= body.len())
        .ok_or_else(|| malformed("decryption secrets longer than their block"))?;
    Ok(Some(DecryptionSecrets {
        secrets_type,
        data: &body[8..end],
    }))
}

/// One line of a TLS key log: `label client_random secret`.
#[must_use]
pub fn key_log_line(label: &str, client_random: &ClientRandom, secret: &[u8]) -> String {
    let mut line = String::with_capacity(label.len() + 2 + 2 * (client_random.len() + secret.len()) + 1);
    line.push_str(label);
    line.push(' ');
    push_hex(&mut line, client_random);
    line.push(' ');
    push_hex(&mut line, secret);
    line.push('\n');
    line
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The client randoms a key log names (comment lines and lines that are no key log line
/// are passed over: Wireshark ignores them too).
#[must_use]
pub fn client_randoms(key_log: &[u8]) -> BTreeSet<ClientRandom> {
    key_log_lines(key_log).map(|(random, _)| random).collect()
}

/// Each key log line of `key_log` (with its newline, which the last line may lack) and
/// the client random it names; comment lines and lines that are no key log line are passed
/// over.
pub fn key_log_lines(key_log: &[u8]) -> impl Iterator<Item = (ClientRandom, &[u8])> {
    key_log.split_inclusive(|&b| b == b'\n').filter_map(|line| {
        let text = std::str::from_utf8(line).ok()?;
        let mut fields = text.split_ascii_whitespace();
        let label = fields.next()?;
        if label.starts_with('#') {
            return None;
        }
        Some((parse_random(fields.next()?)?, line))
    })
}

fn parse_random(hex: &str) -> Option<ClientRandom> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut random = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        random[i] = u8::try_from(value).ok()?;
    }
    Some(random)
}

/// A pcapng stream without its Decryption Secrets Blocks, block by block as the bytes
/// come (a kept file served to a reader who may not have its secrets, and the digest of
/// that). Every other block passes whole and unchanged, so a stream cut where its DSBs were
/// is itself a valid pcapng.
#[derive(Debug, Default)]
pub struct WithoutSecrets {
    /// The block header read so far: type and length, and a section header's byte order.
    header: [u8; 12],
    have: usize,
    /// Bytes of the current block still to pass on or leave out.
    remaining: u64,
    leaving_out: bool,
    big_endian: bool,
}

/// Why a stream is no sequence of pcapng blocks.
#[derive(Debug, thiserror::Error)]
#[error("not a pcapng stream: {0}")]
pub struct NotBlocks(&'static str);

impl WithoutSecrets {
    /// Takes the next bytes of the stream; hands `keep` every byte that is not part of a
    /// Decryption Secrets Block.
    pub fn feed(&mut self, mut bytes: &[u8], mut keep: impl FnMut(&[u8])) -> Result<(), NotBlocks> {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let want = if self.have >= 4 && self.block_type() == BLOCK_SHB {
                    12
                } else {
                    8
                };
                let take = (want - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < want {
                    continue;
                }
                if self.block_type() == BLOCK_SHB && want == 8 {
                    // Its byte order follows the length: read it first.
                    continue;
                }
                if want == 12 {
                    let magic = [self.header[8], self.header[9], self.header[10], self.header[11]];
                    self.big_endian = if u32::from_le_bytes(magic) == BYTE_ORDER_MAGIC {
                        false
                    } else if u32::from_be_bytes(magic) == BYTE_ORDER_MAGIC {
                        true
                    } else {
                        return Err(NotBlocks("a section header without its byte-order magic"));
                    };
                }
                let length = [self.header[4], self.header[5], self.header[6], self.header[7]];
                let length = if self.big_endian {
                    u32::from_be_bytes(length)
                } else {
                    u32::from_le_bytes(length)
                };
                if length < 12 || length % 4 != 0 || (length as usize) < want {
                    return Err(NotBlocks("a block length that no block has"));
                }
                self.leaving_out = self.block_type() == BLOCK_DSB;
                if !self.leaving_out {
                    keep(&self.header[..want]);
                }
                self.remaining = u64::from(length) - want as u64;
                self.have = 0;
                continue;
            }
            let take = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            if !self.leaving_out {
                keep(&bytes[..take]);
            }
            self.remaining -= take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Whether the stream ended between blocks (else its last block was cut).
    #[must_use]
    pub fn at_block_boundary(&self) -> bool {
        self.remaining == 0 && self.have == 0
    }

    fn block_type(&self) -> u32 {
        let bytes = [self.header[0], self.header[1], self.header[2], self.header[3]];
        // A section header's type reads the same in either order; others follow the section.
        if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapng::read::Blocks;

    const KEY_LOG: &str =
        "# a comment\nCLIENT_RANDOM 0001020304050607080910111213141516171819202122232425262728293031 \
        4c6f72656d20697073756d20646f6c6f722073697420616d65742c20636f6e7365637465747572206164697069736369\n";

    #[test]
    fn a_stream_without_its_secrets_is_the_stream_written_without_them() {
        use crate::pcapng::{Direction, InterfaceDescription, LINKTYPE_ETHERNET};
        let write = |secrets: bool| {
            let mut w = BlockWriter::with_capacity(4096);
            w.section_header("test");
            w.interface(&InterfaceDescription {
                name: "eth0".into(),
                description: String::new(),
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            });
            for (i, frame) in [&[1u8; 61][..], &[2u8; 64][..]].into_iter().enumerate() {
                if secrets {
                    w.decryption_secrets(SECRETS_TLS_KEY_LOG, KEY_LOG.as_bytes());
                }
                w.packet(0, i as u64, frame.len() as u32, frame, Direction::Inbound);
            }
            w.bytes().to_vec()
        };
        let (with, without) = (write(true), write(false));
        assert_ne!(with, without);
        for piece in [1, 3, 7, with.len()] {
            let mut stripper = WithoutSecrets::default();
            let mut out = Vec::new();
            for chunk in with.chunks(piece) {
                stripper.feed(chunk, |kept| out.extend_from_slice(kept)).unwrap();
            }
            assert!(stripper.at_block_boundary());
            assert_eq!(out, without, "fed {piece} bytes at a time");
        }
        let mut cut = WithoutSecrets::default();
        cut.feed(&with[..with.len() - 2], |_| {}).unwrap();
        assert!(!cut.at_block_boundary(), "a cut last block is noticed");
        let mut garbage = WithoutSecrets::default();
        assert!(garbage
            .feed(&[0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 1, 2, 3, 4], |_| {})
            .is_err());
        assert!(WithoutSecrets::default()
            .feed(&[6, 0, 0, 0, 5, 0, 0, 0], |_| {})
            .is_err());
    }

    #[test]
    fn a_block_reads_back_as_written() {
        let mut w = BlockWriter::with_capacity(256);
        w.section_header("test");
        w.decryption_secrets(SECRETS_TLS_KEY_LOG, KEY_LOG.as_bytes());
        let mut section = Section::default();
        let mut found = Vec::new();
        for block in Blocks::new(w.bytes()) {
            let block = block.unwrap();
            section.observe(&block).unwrap();
            if let Some(secrets) = parse_decryption_secrets(&block, &section).unwrap() {
                assert_eq!(block.raw.len() % 4, 0, "blocks are padded to 32 bits");
                found.push((secrets.secrets_type, secrets.data.to_vec()));
            }
        }
        assert_eq!(found, vec![(SECRETS_TLS_KEY_LOG, KEY_LOG.as_bytes().to_vec())]);
    }

    #[test]
    fn a_length_past_the_block_is_refused() {
        let mut w = BlockWriter::with_capacity(256);
        w.decryption_secrets(SECRETS_TLS_KEY_LOG, b"CLIENT_RANDOM x y\n");
        let mut raw = w.bytes().to_vec();
        raw[12..16].copy_from_slice(&1000u32.to_ne_bytes());
        let block = Block {
            block_type: BLOCK_DSB,
            offset: 0,
            raw: &raw,
        };
        assert!(parse_decryption_secrets(&block, &Section::default()).is_err());
    }

    #[test]
    fn client_randoms_are_read_from_the_lines() {
        let randoms = client_randoms(KEY_LOG.as_bytes());
        let expected: ClientRandom = std::array::from_fn(|i| {
            let n = u8::try_from(i).unwrap();
            n / 10 * 16 + n % 10
        });
        assert_eq!(randoms.into_iter().collect::<Vec<_>>(), vec![expected]);
        let line = key_log_line("CLIENT_RANDOM", &expected, b"Lorem");
        assert_eq!(client_randoms(line.as_bytes()).len(), 1);
        assert!(line.ends_with(" 4c6f72656d\n"), "{line}");
        assert!(client_randoms(b"CLIENT_RANDOM 00ff x\nnot a line\n").is_empty());
    }

    #[test]
    fn each_line_is_given_with_its_random() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let first = key_log_line("CLIENT_TRAFFIC_SECRET_0", &a, b"one");
        let second = key_log_line("SERVER_TRAFFIC_SECRET_0", &b, b"two");
        let log = format!("# comment\n{first}junk\n{}", second.trim_end());
        let lines: Vec<_> = key_log_lines(log.as_bytes()).collect();
        assert_eq!(
            lines,
            vec![(a, first.as_bytes()), (b, second.trim_end().as_bytes())]
        );
    }
}
