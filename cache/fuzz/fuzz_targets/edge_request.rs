//! Arbitrary viewer request paths and query strings into the edge's cache-key parser, and
//! arbitrary `Cache-Control` values into `max_age`: nothing may panic, and the key rules hold: a
//! key is the path plus only the LL-HLS parameters, so extra parameters or their order never
//! split the cache, and a key never carries bytes that would need escaping.
#![no_main]

use cache::policy::{max_age, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = max_age(&text);
    // First line: the path; the rest: the query.
    let (path, query) = text.split_once('\n').unwrap_or((&text, ""));
    let Some(request) = parse(path, Some(query)) else { return };
    assert!(request.key.starts_with(path));
    assert!(request.key.bytes().all(|b| b.is_ascii_graphic()), "{:?}", request.key);
    let extra = format!("utm_source=x&{query}&viewer=42");
    let again = parse(path, Some(&extra)).expect("extra parameters do not change what is asked");
    assert_eq!(request.key, again.key);
    assert_eq!(request.kind, again.kind);
    assert_eq!(request.channel, again.channel);
    // The parameters the key kept, in any order, give the same key.
    if let Some((_, kept)) = request.key.split_once('?') {
        let reversed: Vec<&str> = kept.split('&').rev().collect();
        let reordered = parse(path, Some(&reversed.join("&"))).expect("same request");
        assert_eq!(request.key, reordered.key);
    }
});
