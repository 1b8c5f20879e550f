//! The client random of a TLS ClientHello in a captured frame: what a key log names a
//! session by, so the writer knows which sessions it recorded.
//!
//! Rules: Ethernet (one or two VLAN tags), IPv4 or IPv6 (no extension headers), TCP; the
//! segment's payload must begin a handshake record (type 22, version 3.x) holding a
//! ClientHello (handshake type 1) whose random lies in the captured bytes. Anything else
//! is no ClientHello: never an error, never a guess.
use crate::pcapng::secrets::ClientRandom;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 2] = [0x8100, 0x88a8];
const PROTOCOL_TCP: u8 = 6;
const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Record header (5), handshake header (4), client version (2).
const RANDOM_AT: usize = 11;

/// The ClientHello's random, if `frame` (from its Ethernet header) carries one.
#[must_use]
pub fn client_hello_random(frame: &[u8]) -> Option<ClientRandom> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
    for _ in 0..2 {
        if !ETHERTYPE_VLAN.contains(&ethertype) {
            break;
        }
        at += 4;
        ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
    }
    let ip = frame.get(at + 2..)?;
    let tcp = match ethertype {
        ETHERTYPE_IPV4 => {
            let header_len = usize::from(ip.first()? & 0x0f) * 4;
            // A fragment past the first carries no TCP header.
            let fragment = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?) & 0x1fff;
            if *ip.get(9)? != PROTOCOL_TCP || fragment != 0 || header_len < 20 {
                return None;
            }
            ip.get(header_len..)?
        }
        ETHERTYPE_IPV6 if *ip.get(6)? == PROTOCOL_TCP => ip.get(40..)?,
        _ => return None,
    };
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let payload = tcp.get(data_offset..)?;
    if *payload.first()? != RECORD_HANDSHAKE
        || *payload.get(1)? != 3
        || *payload.get(5)? != HANDSHAKE_CLIENT_HELLO
    {
        return None;
    }
    payload.get(RANDOM_AT..RANDOM_AT + 32)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(vlan: bool, v6: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        }
        if v6 {
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[6] = PROTOCOL_TCP;
            f.extend_from_slice(&ip);
        } else {
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[9] = PROTOCOL_TCP;
            f.extend_from_slice(&ip);
        }
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        f
    }

    fn hello(random: &ClientRandom) -> Vec<u8> {
        let mut p = vec![
            RECORD_HANDSHAKE,
            3,
            1,
            0,
            200,
            HANDSHAKE_CLIENT_HELLO,
            0,
            0,
            196,
            3,
            3,
        ];
        p.extend_from_slice(random);
        p.extend_from_slice(&[0; 40]);
        p
    }

    #[test]
    fn the_random_of_a_client_hello_is_found() {
        let random: ClientRandom = std::array::from_fn(|i| i as u8 + 1);
        for (vlan, v6) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(
                client_hello_random(&frame(vlan, v6, &hello(&random))),
                Some(random),
                "vlan {vlan}, IPv6 {v6}"
            );
        }
    }

    #[test]
    fn anything_else_is_no_client_hello() {
        let random = [7u8; 32];
        let mut server_hello = hello(&random);
        server_hello[5] = 2;
        let mut application_data = hello(&random);
        application_data[0] = 23;
        let cut = hello(&random)[..30].to_vec();
        for payload in [server_hello, application_data, cut, Vec::new()] {
            assert_eq!(client_hello_random(&frame(false, false, &payload)), None);
        }
        assert_eq!(client_hello_random(&[0u8; 10]), None);
    }
}
