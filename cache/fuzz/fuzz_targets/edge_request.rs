//! Arbitrary viewer request paths and query strings into the edge's cache-key parser, and
//! arbitrary `Cache-Control` values into `max_age`: nothing may panic, and the key rules hold: a
//! key is the path plus only the LL-HLS parameters, so extra parameters or their order never
//! split the cache, a key never carries bytes that would need escaping, and a key asks the
//! origin for exactly what the viewer asked (its path and parameters parse back to the same
//! object in the shared grammar).
#![no_main]

use cache::policy::{max_age, parse};
use hls_names::HlsPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = max_age(&text);
    // First line: the path; the rest: the query.
    let (path, query) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(request) = parse(path, Some(query)) else { return };
    assert!(request.key.starts_with(path));
    assert!(request.key.bytes().all(|b| b.is_ascii_graphic()), "{:?}", request.key);
    let extra = format!("utm_source=x&{query}&viewer=42");
    let again = parse(path, Some(&extra)).expect("extra parameters do not change what is asked");
    assert_eq!(request.key, again.key);
    assert_eq!(request.kind, again.kind);
    assert_eq!(request.channel, again.channel);
    assert_eq!(request.vod, again.vod, "live or recording is the path's business only");
    // The parameters the key kept, in any order, give the same key.
    let (key_path, key_query) = request.key.split_once('?').unwrap_or((&request.key, ""));
    assert_eq!(HlsPath::parse(key_path), HlsPath::parse(path));
    assert_eq!(HlsPath::parse_vod(key_path), HlsPath::parse_vod(path));
    let again = parse(key_path, Some(key_query)).expect("a key is itself a served request");
    assert_eq!(again.key, request.key, "keys are canonical");
    if let Some((_, kept)) = request.key.split_once('?') {
        let reversed: Vec<&str> = kept.split('&').rev().collect();
        let reordered = parse(path, Some(&reversed.join("&"))).expect("same request");
        assert_eq!(request.key, reordered.key);
    }
});
