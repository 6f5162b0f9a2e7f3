//! AMF0, the value encoding of RTMP commands (`connect`, `publish`, ...) and data messages
//! (`@setDataFrame` / `onMetaData`).
//!
//! Decoding works on a byte slice and returns the value plus the number of bytes it used, so the
//! caller can walk a message payload value by value. A slice that ends inside a value is
//! [`Amf0Error::Incomplete`]; every other error means the bytes can never become a valid value.
//! Nesting depth and the number of values one call may produce are bounded, so a small hostile
//! payload can neither overflow the stack nor blow up into a large tree.
//!
//! Written here rather than taken from a crate: it is small, and we want these exact limits and the
//! Incomplete/Invalid split.

use thiserror::Error;

/// Deepest nesting of objects/arrays accepted by the decoder.
pub const MAX_DEPTH: usize = 32;
/// Most values (including nested ones and object properties) one [`decode`] call may produce.
pub const MAX_VALUES: usize = 65_536;

const MARKER_NUMBER: u8 = 0x00;
const MARKER_BOOLEAN: u8 = 0x01;
const MARKER_STRING: u8 = 0x02;
const MARKER_OBJECT: u8 = 0x03;
const MARKER_NULL: u8 = 0x05;
const MARKER_UNDEFINED: u8 = 0x06;
const MARKER_ECMA_ARRAY: u8 = 0x08;
const MARKER_OBJECT_END: u8 = 0x09;
const MARKER_STRICT_ARRAY: u8 = 0x0a;
const MARKER_LONG_STRING: u8 = 0x0c;

/// One AMF0 value.
///
/// Long strings decode to [`Amf0Value::String`]; strings longer than 65535 bytes are encoded as
/// long strings, so decode → encode → decode gives back the same value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// Anonymous object: properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// Associative array: properties in wire order (the count on the wire is only a hint).
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
}

impl Amf0Value {
    /// The string if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number if this is a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The first property called `key` of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Appends the encoding of this value to `out`.
    ///
    /// Property names longer than 65535 bytes cannot be represented in AMF0; they are cut at the
    /// last character boundary that fits (the decoder never produces such names).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Amf0Value::Number(n) => {
                out.push(MARKER_NUMBER);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf0Value::Boolean(b) => {
                out.push(MARKER_BOOLEAN);
                out.push(u8::from(*b));
            }
            Amf0Value::String(s) => match u16::try_from(s.len()) {
                Ok(len) => {
                    out.push(MARKER_STRING);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Err(_) => {
                    out.push(MARKER_LONG_STRING);
                    // Strings over 4 GiB cannot occur: our messages are at most 16 MiB.
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&s.as_bytes()[..len as usize]);
                }
            },
            Amf0Value::Object(props) => {
                out.push(MARKER_OBJECT);
                encode_properties(props, out);
            }
            Amf0Value::Null => out.push(MARKER_NULL),
            Amf0Value::Undefined => out.push(MARKER_UNDEFINED),
            Amf0Value::EcmaArray(props) => {
                out.push(MARKER_ECMA_ARRAY);
                let count = u32::try_from(props.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                encode_properties(props, out);
            }
            Amf0Value::StrictArray(items) => {
                out.push(MARKER_STRICT_ARRAY);
                let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                for item in items.iter().take(count as usize) {
                    item.encode(out);
                }
            }
        }
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Amf0Value::String(s.to_owned())
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Amf0Value::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Amf0Value::Boolean(b)
    }
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        let mut end = key.len().min(usize::from(u16::MAX));
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        // `end` <= u16::MAX by construction.
        out.extend_from_slice(&(end as u16).to_be_bytes());
        out.extend_from_slice(&key.as_bytes()[..end]);
        value.encode(out);
    }
    out.extend_from_slice(&[0, 0, MARKER_OBJECT_END]);
}

/// Encodes a sequence of values (a command or data message body).
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.encode(&mut out);
    }
    out
}

/// Why bytes could not be decoded as AMF0.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Amf0Error {
    /// The bytes end inside a value: more input could complete it.
    #[error("AMF0 value is incomplete")]
    Incomplete,
    #[error("unknown or unsupported AMF0 type marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    #[error("AMF0 object-end marker outside an object")]
    UnexpectedObjectEnd,
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_VALUES} AMF0 values")]
    TooManyValues,
    #[error("AMF0 string is not UTF-8")]
    InvalidUtf8,
}

impl Amf0Error {
    /// True when more bytes could make the input valid.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Amf0Error::Incomplete)
    }
}

/// Decodes one value from the start of `buf`; returns it and the number of bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut d = Decoder { buf, pos: 0, values: 0 };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// Decodes values until `buf` is used up (a whole command or data message body).
///
/// A value cut short at the end is [`Amf0Error::Incomplete`]; the value budget ([`MAX_VALUES`])
/// covers the whole call.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut d = Decoder { buf, pos: 0, values: 0 };
    let mut out = Vec::new();
    while d.pos < buf.len() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Incomplete)?;
        let s = self.buf.get(self.pos..end).ok_or(Amf0Error::Incomplete)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| Amf0Error::InvalidUtf8)
    }

    fn count_value(&mut self) -> Result<(), Amf0Error> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(Amf0Error::TooManyValues);
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        self.count_value()?;
        let marker = self.u8()?;
        Ok(match marker {
            MARKER_NUMBER => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Amf0Value::Number(f64::from_be_bytes(a))
            }
            MARKER_BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            MARKER_STRING => {
                let len = self.u16()?;
                Amf0Value::String(self.string(usize::from(len))?)
            }
            MARKER_LONG_STRING => {
                let len = self.u32()?;
                Amf0Value::String(self.string(len as usize)?)
            }
            MARKER_OBJECT => Amf0Value::Object(self.properties(depth)?),
            MARKER_NULL => Amf0Value::Null,
            MARKER_UNDEFINED => Amf0Value::Undefined,
            MARKER_ECMA_ARRAY => {
                // The count is advisory (encoders disagree on it); the end marker terminates.
                let _count = self.u32()?;
                Amf0Value::EcmaArray(self.properties(depth)?)
            }
            MARKER_STRICT_ARRAY => {
                let count = self.u32()? as usize;
                // Never trust the count for allocation: every element takes at least one byte.
                let remaining = self.buf.len() - self.pos;
                if count > remaining {
                    // Checking each element would find the same, but only after decoding them all.
                    return Err(Amf0Error::Incomplete);
                }
                let mut items = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            MARKER_OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            let len = self.u16()?;
            if len == 0 {
                // An empty key followed by the end marker closes the object.
                if self.buf.get(self.pos) == Some(&MARKER_OBJECT_END) {
                    self.pos += 1;
                    return Ok(props);
                }
            }
            let key = self.string(usize::from(len))?;
            self.count_value()?;
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(props: &[(&str, Amf0Value)]) -> Amf0Value {
        Amf0Value::Object(props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn decodes_hand_built_connect_command() {
        let mut b = vec![0x02, 0x00, 0x07];
        b.extend_from_slice(b"connect");
        b.push(0x00);
        b.extend_from_slice(&1.0f64.to_be_bytes());
        b.extend_from_slice(&[0x03, 0x00, 0x03]);
        b.extend_from_slice(b"app");
        b.extend_from_slice(&[0x02, 0x00, 0x04]);
        b.extend_from_slice(b"live");
        b.extend_from_slice(&[0x00, 0x00, 0x09]);
        let values = decode_all(&b).unwrap();
        assert_eq!(
            values,
            vec![Amf0Value::from("connect"), Amf0Value::Number(1.0), obj(&[("app", Amf0Value::from("live"))])]
        );
        assert_eq!(values[2].get("app").and_then(Amf0Value::as_str), Some("live"));
    }

    #[test]
    fn round_trips_every_type() {
        let v = Amf0Value::StrictArray(vec![
            Amf0Value::Number(-2.5),
            Amf0Value::Boolean(true),
            Amf0Value::from("hé"),
            Amf0Value::String("x".repeat(70_000)),
            Amf0Value::Null,
            Amf0Value::Undefined,
            obj(&[("a", Amf0Value::Null), ("", Amf0Value::Number(1.0))]),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]),
            Amf0Value::StrictArray(vec![]),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        let (back, used) = decode(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(back, v);
    }

    #[test]
    fn long_string_marker_decodes() {
        let mut b = vec![MARKER_LONG_STRING, 0, 0, 0, 3];
        b.extend_from_slice(b"abc");
        assert_eq!(decode(&b).unwrap(), (Amf0Value::from("abc"), 8));
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let v = obj(&[
            ("n", Amf0Value::Number(3.0)),
            ("s", Amf0Value::from("text")),
            ("e", Amf0Value::EcmaArray(vec![("k".into(), Amf0Value::Boolean(false))])),
            ("a", Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Number(1.0)])),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), Err(Amf0Error::Incomplete), "cut at {cut}");
        }
        assert!(decode(&out).is_ok());
    }

    #[test]
    fn invalid_inputs_are_typed() {
        assert_eq!(decode(&[0x0d]), Err(Amf0Error::UnsupportedMarker(0x0d)));
        assert_eq!(decode(&[0x09]), Err(Amf0Error::UnexpectedObjectEnd));
        assert_eq!(decode(&[0x02, 0x00, 0x02, 0xff, 0xfe]), Err(Amf0Error::InvalidUtf8));
        // A strict array claiming 4 billion elements is not allocated.
        assert_eq!(decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x05]), Err(Amf0Error::Incomplete));
        // A long string claiming 4 GiB is just incomplete.
        assert_eq!(decode(&[0x0c, 0xff, 0xff, 0xff, 0xff]), Err(Amf0Error::Incomplete));
    }

    #[test]
    fn depth_is_bounded() {
        let mut b = Vec::new();
        for _ in 0..(MAX_DEPTH + 5) {
            b.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        b.push(0x05);
        assert_eq!(decode(&b), Err(Amf0Error::TooDeep));
        // Exactly MAX_DEPTH levels of nesting is fine.
        let mut ok = Vec::new();
        for _ in 0..MAX_DEPTH {
            ok.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        ok.push(0x05);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn value_count_is_bounded() {
        let n = (MAX_VALUES + 10) as u32;
        let mut b = vec![0x0a];
        b.extend_from_slice(&n.to_be_bytes());
        b.extend(std::iter::repeat_n(0x05, n as usize));
        assert_eq!(decode(&b), Err(Amf0Error::TooManyValues));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(values) = decode_all(&bytes) {
                let re = encode_all(&values);
                let again = decode_all(&re).unwrap();
                proptest::prop_assert_eq!(encode_all(&again), re);
            }
        }
    }
}
