//! Just enough STUN (RFC 8489) to route a datagram from an address we have not seen yet: the
//! local ICE username fragment a binding request is addressed to. Everything else about STUN is
//! str0m's. Sans-IO, and the input is whatever arrives on the media port.

/// STUN's magic cookie, bytes 4..8 of every RFC 5389+ message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const USERNAME: u16 = 0x0006;
/// A binding request carries a handful of attributes; more than this is not one.
const MAX_ATTRIBUTES: usize = 32;
/// ICE usernames are two fragments of at most 256 characters and a colon (RFC 8445).
const MAX_USERNAME: usize = 513;

/// Whether `datagram` looks like a STUN message (its first two bits are zero and the cookie is
/// in place); RFC 7983 demultiplexing of STUN, DTLS and SRTP on one port.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// The local username fragment (the part before `:` of USERNAME) of a binding request: the
/// session the peer is checking connectivity with. `None` for anything else or anything
/// malformed.
pub fn binding_request_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let kind = u16::from_be_bytes([datagram[0], datagram[1]]);
    if kind != BINDING_REQUEST {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if length % 4 != 0 || HEADER + length > datagram.len() {
        return None;
    }
    let mut attributes = &datagram[HEADER..HEADER + length];
    for _ in 0..MAX_ATTRIBUTES {
        let [t0, t1, l0, l1, rest @ ..] = attributes else { return None };
        let (kind, len) = (u16::from_be_bytes([*t0, *t1]), usize::from(u16::from_be_bytes([*l0, *l1])));
        let padded = len.div_ceil(4) * 4;
        if padded > rest.len() {
            return None;
        }
        if kind == USERNAME {
            if len > MAX_USERNAME {
                return None;
            }
            let username = std::str::from_utf8(&rest[..len]).ok()?;
            let (local, _remote) = username.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        attributes = &rest[padded..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: u16, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attributes {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn the_local_fragment_of_a_binding_request() {
        let priority: &[u8] = &[0, 0, 1, 0];
        let datagram = request(BINDING_REQUEST, &[(0x0024, priority), (USERNAME, b"srvfrag:cli")]);
        assert!(is_stun(&datagram));
        assert_eq!(binding_request_ufrag(&datagram), Some("srvfrag"));
    }

    #[test]
    fn not_a_request_or_malformed_is_none() {
        // A binding success response.
        assert_eq!(binding_request_ufrag(&request(0x0101, &[(USERNAME, b"a:b")])), None);
        // No USERNAME, an empty local fragment, no colon, not UTF-8.
        assert_eq!(binding_request_ufrag(&request(BINDING_REQUEST, &[])), None);
        assert_eq!(binding_request_ufrag(&request(BINDING_REQUEST, &[(USERNAME, b":b")])), None);
        assert_eq!(binding_request_ufrag(&request(BINDING_REQUEST, &[(USERNAME, b"ab")])), None);
        assert_eq!(binding_request_ufrag(&request(BINDING_REQUEST, &[(USERNAME, &[0xff, b':', b'a'])])), None);
        // Length past the end, an attribute running past the body.
        let mut long = request(BINDING_REQUEST, &[(USERNAME, b"a:b")]);
        long[3] = 200;
        assert_eq!(binding_request_ufrag(&long), None);
        let mut cut = request(BINDING_REQUEST, &[(USERNAME, b"abcd:efgh")]);
        cut[HEADER + 3] = 60;
        assert_eq!(binding_request_ufrag(&cut), None);
        // DTLS and RTP are not STUN.
        assert!(!is_stun(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_stun(&[0x80, 96, 0, 1]));
        assert_eq!(binding_request_ufrag(&[]), None);
    }
}
