//! Arbitrary bytes into the relay's frame decoder (both sides' variants, fed in uneven chunks)
//! and every decoded frame through the subscriber's state machine; decoded frames must survive
//! encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::track::Subscription;
use relay::wire::{decode_payload, encode_to_bytes, Decoder, HEADER};

fuzz_target!(|data: &[u8]| {
    for mut decoder in [Decoder::new(), Decoder::for_server(), Decoder::for_subscriber()] {
        let mut subscription = Subscription::new("source");
        let mut at = 0;
        while at < data.len() {
            let n = decoder.wants().min(data.len() - at).min(usize::from(data[at]) + 1);
            decoder.handle_data(&data[at..at + n]);
            at += n;
            loop {
                match decoder.poll_frame() {
                    Ok(Some(frame)) => {
                        let wire = encode_to_bytes(&frame);
                        let again = decode_payload(wire[0], wire.slice(HEADER..)).expect("our own encoding decodes");
                        assert_eq!(again, frame);
                        let _ = subscription.handle_frame(frame);
                        while subscription.poll_event().is_some() {}
                    }
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
        }
    }
});
