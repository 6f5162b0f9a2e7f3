//! Arbitrary bytes into the AMF0 decoder, as one value and as a whole message body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtmp::amf0;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, used)) = amf0::decode(data) {
        assert!(used <= data.len());
    }
    let _ = amf0::decode_all(data);
});
