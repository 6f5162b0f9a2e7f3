//! AWS Signature Version 4 (header form), for the S3 calls object_store does not make.
//!
//! Pure: the caller hands in the request's parts and the time; the result is the
//! `Authorization` header value. Checked against the examples in AWS's documentation.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of a request that the signature covers.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// Path, already URI-encoded (`/bucket`).
    pub(crate) canonical_uri: &'a str,
    /// Query from [`canonical_query`].
    pub(crate) canonical_query: &'a str,
    /// Every signed header: lowercase name and value. `host` and `x-amz-date` must be among them.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body (also sent as `x-amz-content-sha256` to S3).
    pub(crate) payload_sha256: &'a str,
}

/// Who signs, where, and when.
pub(crate) struct Signer<'a> {
    pub(crate) access_key: &'a str,
    pub(crate) secret_key: &'a str,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) time: DateTime<Utc>,
}

/// `20130524T000000Z`, the `x-amz-date` format.
pub(crate) fn amz_date(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub(crate) fn signing_key(secret_key: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// URI-encodes per SigV4: unreserved characters stay, everything else is `%XX` (uppercase);
/// `/` stays only in paths.
pub(crate) fn uri_encode(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') || (keep_slash && byte == b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Sorted, encoded `name=value` pairs; a bare flag such as `?lifecycle` is `("lifecycle", "")`.
pub(crate) fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> =
        params.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    encoded.sort();
    encoded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn sorted_headers<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            // Values are trimmed and inner runs of spaces collapse to one.
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    sorted.sort();
    sorted
}

/// `host;x-amz-content-sha256;x-amz-date`
pub(crate) fn signed_headers(headers: &[(&str, &str)]) -> String {
    sorted_headers(headers).into_iter().map(|(name, _)| name).collect::<Vec<_>>().join(";")
}

pub(crate) fn canonical_request(request: &Request<'_>) -> String {
    let headers = sorted_headers(request.headers);
    let mut canonical_headers = String::new();
    for (name, value) in &headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.canonical_uri,
        request.canonical_query,
        canonical_headers,
        signed_headers(request.headers),
        request.payload_sha256
    )
}

fn scope(signer: &Signer<'_>) -> String {
    format!("{}/{}/{}/aws4_request", signer.time.format("%Y%m%d"), signer.region, signer.service)
}

pub(crate) fn string_to_sign(signer: &Signer<'_>, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}\n{}\n{}", amz_date(signer.time), scope(signer), sha256_hex(canonical_request.as_bytes()))
}

/// Hex signature of `request`.
pub(crate) fn signature(signer: &Signer<'_>, request: &Request<'_>) -> String {
    let date = signer.time.format("%Y%m%d").to_string();
    let key = signing_key(signer.secret_key, &date, signer.region, signer.service);
    let to_sign = string_to_sign(signer, &canonical_request(request));
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

/// The `Authorization` header value.
pub(crate) fn authorization(signer: &Signer<'_>, request: &Request<'_>) -> String {
    format!(
        "{ALGORITHM} Credential={}/{},SignedHeaders={},Signature={}",
        signer.access_key,
        scope(signer),
        signed_headers(request.headers),
        signature(signer, request)
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// AWS General Reference, "Examples of how to derive a signing key for Signature Version 4".
    #[test]
    fn signing_key_matches_aws_example() {
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(hex::encode(key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    fn example_signer() -> Signer<'static> {
        Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
            time: Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap(),
        }
    }

    /// Amazon S3 API Reference, "Signature calculations for the Authorization header", GET Object.
    #[test]
    fn get_object_matches_aws_example() {
        let signer = example_signer();
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let request = Request {
            method: "GET",
            canonical_uri: "/test.txt",
            canonical_query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let canonical = canonical_request(&request);
        assert_eq!(
            canonical,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(&signer, &canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            authorization(&signer, &request),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// Same reference, GET Bucket Lifecycle: a bare `?lifecycle` query.
    #[test]
    fn get_bucket_lifecycle_matches_aws_example() {
        let signer = example_signer();
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let query = canonical_query(&[("lifecycle", "")]);
        assert_eq!(query, "lifecycle=");
        let request = Request {
            method: "GET",
            canonical_uri: "/",
            canonical_query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(signature(&signer, &request), "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    }

    #[test]
    fn encoding_and_header_normalisation() {
        assert_eq!(uri_encode("a b/c~d*", true), "a%20b/c~d%2A");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(canonical_query(&[("prefix", "J"), ("max-keys", "2")]), "max-keys=2&prefix=J");
        let headers = [("X-Amz-Date", "  20130524T000000Z "), ("Content-Type", "text/plain;  charset=utf-8")];
        assert_eq!(signed_headers(&headers), "content-type;x-amz-date");
        let request =
            Request { method: "PUT", canonical_uri: "/", canonical_query: "", headers: &headers, payload_sha256: "x" };
        assert!(canonical_request(&request)
            .contains("content-type:text/plain; charset=utf-8\nx-amz-date:20130524T000000Z\n"));
        assert_eq!(amz_date(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()), "20240102T030405Z");
    }
}
