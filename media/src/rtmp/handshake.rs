//! Server side of the RTMP handshake: C0+C1 in, S0+S1+S2 out, then C2 in.
//!
//! This is the plain handshake of the RTMP spec (section 5.2). ffmpeg and OBS publish with it;
//! ffmpeg puts a Flash-style digest into C1, but as a publisher it does not check the server's
//! reply, so echoing C1 as S2 satisfies both. Clients that insist on a digest-signed S1 (Flash
//! players pulling a stream) are not ingest clients and are out of scope.
//!
//! Once C2 has arrived the handshake is over and the bytes after it in the same read are handed
//! back for the chunk layer ([`HandshakeStatus::Done`]).

use thiserror::Error;

/// RTMP version byte (C0/S0).
pub const RTMP_VERSION: u8 = 3;
/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// C0 asked for another version: 6 and 8 are RTMPE (encrypted), anything else is not RTMP.
    #[error("unsupported RTMP version {0} in C0 (only 3 is accepted)")]
    UnsupportedVersion(u8),
}

/// Progress after [`Handshake::handle_input`].
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeStatus<'a> {
    /// More bytes are needed.
    InProgress,
    /// C2 was read. `leftover` are the bytes of this input that follow C2: the start of the chunk
    /// stream.
    Done { leftover: &'a [u8] },
}

#[derive(Debug)]
enum Phase {
    ReadC0C1,
    ReadC2,
    Done,
}

/// Server handshake state machine. Feed bytes with `handle_input`, send what `poll_transmit`
/// returns after every call.
#[derive(Debug)]
pub struct Handshake {
    phase: Phase,
    buf: Vec<u8>,
    out: Vec<u8>,
    seed: u64,
}

impl Handshake {
    /// `seed` fills S1's random part; it needs no cryptographic quality (RTMP uses it only to
    /// match S1 against C2), but different connections should get different seeds.
    pub fn new(seed: u64) -> Self {
        Handshake { phase: Phase::ReadC0C1, buf: Vec::with_capacity(1 + HANDSHAKE_SIZE), out: Vec::new(), seed }
    }

    /// True once C2 has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Consumes handshake bytes. After `Done`, further calls return `Done` with all input as
    /// leftover.
    pub fn handle_input<'a>(&mut self, mut bytes: &'a [u8]) -> Result<HandshakeStatus<'a>, HandshakeError> {
        loop {
            match self.phase {
                Phase::ReadC0C1 => {
                    if let Some(&version) = self.buf.first().or(bytes.first()) {
                        if version != RTMP_VERSION {
                            return Err(HandshakeError::UnsupportedVersion(version));
                        }
                    }
                    bytes = self.fill(bytes, 1 + HANDSHAKE_SIZE);
                    if self.buf.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(HandshakeStatus::InProgress);
                    }
                    let c1 = std::mem::take(&mut self.buf);
                    self.write_s0_s1_s2(&c1[1..]);
                    self.phase = Phase::ReadC2;
                }
                Phase::ReadC2 => {
                    // C2 should echo S1, but clients that did a digest handshake send something
                    // else, and nothing depends on it: read and drop.
                    bytes = self.fill(bytes, HANDSHAKE_SIZE);
                    if self.buf.len() < HANDSHAKE_SIZE {
                        return Ok(HandshakeStatus::InProgress);
                    }
                    self.buf = Vec::new();
                    self.phase = Phase::Done;
                }
                Phase::Done => return Ok(HandshakeStatus::Done { leftover: bytes }),
            }
        }
    }

    /// Bytes to send to the client, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// Moves bytes into `buf` until it holds `want`; returns the rest of the input.
    fn fill<'a>(&mut self, bytes: &'a [u8], want: usize) -> &'a [u8] {
        let n = want.saturating_sub(self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        &bytes[n..]
    }

    fn write_s0_s1_s2(&mut self, c1: &[u8]) {
        self.out.reserve(1 + 2 * HANDSHAKE_SIZE);
        self.out.push(RTMP_VERSION);
        // S1: time 0 (our epoch), four zero bytes (a plain, non-digest handshake), filler.
        self.out.extend_from_slice(&[0; 8]);
        let mut x = self.seed | 1;
        while self.out.len() < 1 + HANDSHAKE_SIZE {
            // xorshift64: cheap filler; see `new` for why quality does not matter.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.out.extend_from_slice(&x.to_le_bytes());
        }
        self.out.truncate(1 + HANDSHAKE_SIZE);
        // S2: echo of C1.
        self.out.extend_from_slice(c1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1() -> Vec<u8> {
        let mut v = vec![3];
        v.extend((0..HANDSHAKE_SIZE).map(|i| (i % 251) as u8));
        v
    }

    #[test]
    fn plain_handshake_in_one_read() {
        let mut hs = Handshake::new(42);
        let mut input = c0c1();
        input.extend_from_slice(&[0xaa; HANDSHAKE_SIZE]);
        input.extend_from_slice(&[1, 2, 3]);
        assert_eq!(hs.handle_input(&input).unwrap(), HandshakeStatus::Done { leftover: &[1, 2, 3] });
        let out = hs.poll_transmit().unwrap();
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..9], &[0; 8]);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c0c1()[1..]);
        assert!(hs.poll_transmit().is_none());
        assert!(hs.is_done());
    }

    #[test]
    fn byte_by_byte() {
        let mut hs = Handshake::new(1);
        let c = c0c1();
        for (i, b) in c.iter().enumerate() {
            assert_eq!(hs.handle_input(std::slice::from_ref(b)).unwrap(), HandshakeStatus::InProgress);
            assert_eq!(hs.poll_transmit().is_some(), i == c.len() - 1);
        }
        for _ in 0..HANDSHAKE_SIZE - 1 {
            assert_eq!(hs.handle_input(&[0]).unwrap(), HandshakeStatus::InProgress);
        }
        assert_eq!(hs.handle_input(&[0]).unwrap(), HandshakeStatus::Done { leftover: &[] });
        assert_eq!(hs.handle_input(&[9]).unwrap(), HandshakeStatus::Done { leftover: &[9] });
    }

    #[test]
    fn rejects_other_versions_early() {
        let mut hs = Handshake::new(1);
        assert_eq!(hs.handle_input(&[6]), Err(HandshakeError::UnsupportedVersion(6)));
        let mut hs = Handshake::new(1);
        assert_eq!(hs.handle_input(b"GET / HTTP/1.1\r\n"), Err(HandshakeError::UnsupportedVersion(b'G')));
    }
}
