//! Arbitrary pending bytes into the edge's early request reader (`cache::early::plain_get`):
//! nothing may panic, and what it takes is exactly one request head: never more bytes than are
//! there, the same answer from those bytes alone or with anything after them (pipelined bytes are
//! left alone), and a target that is a path.
#![no_main]

use cache::early::plain_get;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(get) = plain_get(data) else { return };
    assert!(get.len <= data.len());
    assert!(data[..get.len].ends_with(b"\n"), "a head ends with its blank line");
    assert!(get.path.starts_with('/'));
    assert!(!get.path.contains('?'));
    assert_eq!(plain_get(&data[..get.len]), Some(get.clone()), "the head alone reads the same");
    let mut more = data[..get.len].to_vec();
    more.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    assert_eq!(plain_get(&more), Some(get), "pipelined bytes change nothing");
});
