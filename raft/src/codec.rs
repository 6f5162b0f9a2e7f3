//! Versioned binary encoding for everything the catalog stores or sends.
//!
//! Values are `[format version][bincode]`. The version byte lets a newer binary keep decoding
//! records written by an older one: when a record's layout changes, the old layout stays here as a
//! legacy struct and [`decode`] upgrades it. Decoding is bounded so that a hostile or corrupt input
//! cannot make us allocate without limit.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Current format version of stored records and RPC frames.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound on one decoded value (a snapshot is the largest thing we decode).
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown format version {0} (this binary reads up to {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("malformed value: {0}")]
    Malformed(String),
}

/// Encode `value` with the current format version.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding into a Vec only fails for types serde cannot represent in bincode (e.g. maps with
    // non-string keys are fine; `deserialize_any` types are not used in this crate).
    bincode::serde::encode_into_std_write(value, &mut out, config()).expect("catalog types are bincode-encodable");
    out
}

/// Decode a value written by [`encode`] (this or an older format version).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        FORMAT_VERSION => {
            let (value, used) =
                bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
            if used != body.len() {
                return Err(CodecError::Malformed(format!("{} trailing bytes", body.len() - used)));
            }
            Ok(value)
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::User;

    fn user() -> User {
        User {
            id: "u1".into(),
            display_name: "River".into(),
            email: "river@example.com".into(),
            roles: vec!["creator".into()],
            password_hash: None,
            created_at: 1,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&user());
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<User>(&bytes).unwrap(), user());
    }

    #[test]
    fn rejects_unknown_version_empty_and_garbage() {
        let mut bytes = encode(&user());
        bytes[0] = 99;
        assert!(matches!(decode::<User>(&bytes), Err(CodecError::UnknownVersion(99))));
        assert!(matches!(decode::<User>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<User>(&[FORMAT_VERSION, 0xff, 0xff]), Err(CodecError::Malformed(_))));
        let mut trailing = encode(&user());
        trailing.push(0);
        assert!(matches!(decode::<User>(&trailing), Err(CodecError::Malformed(_))));
    }

    /// Version-1 bytes written by the first release: a newer binary must keep reading them.
    #[test]
    fn reads_version_one_user_bytes() {
        let v1: Vec<u8> = encode(&user());
        // Frozen copy of what version 1 wrote for `user()`; if this changes, add a legacy decoder.
        let frozen = hex_literal_v1();
        assert_eq!(v1, frozen, "the v1 layout of User changed; keep a legacy decoder for it");
        assert_eq!(decode::<User>(&frozen).unwrap(), user());
    }

    fn hex_literal_v1() -> Vec<u8> {
        let mut b = vec![1u8, 2, b'u', b'1', 5];
        b.extend_from_slice(b"River");
        b.push(17);
        b.extend_from_slice(b"river@example.com");
        b.extend_from_slice(&[1, 7]);
        b.extend_from_slice(b"creator");
        b.extend_from_slice(&[0, 2]);
        b
    }
}
