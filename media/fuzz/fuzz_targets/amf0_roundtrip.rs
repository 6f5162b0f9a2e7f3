//! decode → encode → decode gives the same values, and encoding again gives the same bytes
//! (byte equality also covers NaN numbers, which are not equal to themselves).
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtmp::amf0::{self, Amf0Value};

fuzz_target!(|data: &[u8]| {
    let Ok(values) = amf0::decode_all(data) else { return };
    let encoded = amf0::encode_all(&values);
    let again = amf0::decode_all(&encoded).expect("our own encoding decodes");
    assert_eq!(amf0::encode_all(&again), encoded);
    if !values.iter().any(has_nan) {
        assert_eq!(again, values);
    }
});

fn has_nan(v: &Amf0Value) -> bool {
    match v {
        Amf0Value::Number(n) => n.is_nan(),
        Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => p.iter().any(|(_, v)| has_nan(v)),
        Amf0Value::StrictArray(items) => items.iter().any(has_nan),
        _ => false,
    }
}
