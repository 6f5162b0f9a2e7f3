//! `--object-lifecycle-days` as the bucket's lifecycle configuration.
//!
//! object_store has no bucket-level calls, so this sends `PUT /{bucket}?lifecycle` itself, signed
//! with [`crate::sigv4`]. S3 (and MinIO) require `Content-MD5` on this call. The PUT replaces the
//! bucket's whole lifecycle configuration: a bucket shared with other rules should be managed by
//! hand instead.

use base64::Engine;
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::sigv4;
use crate::storage::ObjectStorage;

/// Rule id, so an operator looking at the bucket knows where it came from.
const RULE_ID: &str = "bitriver-recordings-expiry";
/// Parts of multipart uploads that were cut off (process killed mid-upload) go after this many days.
const ABORT_INCOMPLETE_DAYS: u32 = 1;

/// The `LifecycleConfiguration` document: objects under `prefix` expire after `days`.
pub(crate) fn lifecycle_xml(prefix: &str, days: u32) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
            "<Rule><ID>{id}</ID><Filter><Prefix>{prefix}</Prefix></Filter><Status>Enabled</Status>",
            "<Expiration><Days>{days}</Days></Expiration>",
            "<AbortIncompleteMultipartUpload><DaysAfterInitiation>{abort}</DaysAfterInitiation>",
            "</AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>"
        ),
        id = RULE_ID,
        prefix = xml_escape(prefix),
        days = days,
        abort = ABORT_INCOMPLETE_DAYS,
    )
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The text of `<tag>` in an S3 error document, if any.
fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

impl ObjectStorage {
    /// Sets the bucket's lifecycle rule: objects under the prefix expire after `days`.
    ///
    /// Returns [`Error::LifecycleUnsupported`] (after logging a warning) when the server does not
    /// implement lifecycle rules; the caller reports it and carries on.
    pub async fn apply_lifecycle(&self, days: u32) -> Result<()> {
        let config = &self.inner.config;
        let failed = |status: Option<u16>, code: Option<String>, message: String| Error::Lifecycle {
            bucket: config.bucket.clone(),
            status,
            code,
            message,
        };
        if days == 0 {
            return Err(failed(None, None, "days must be at least 1".to_owned()));
        }
        let Some(credentials) = &config.credentials else {
            return Err(failed(None, None, "needs --object-access-key and --object-secret-key".to_owned()));
        };

        let body = lifecycle_xml(&config.prefix, days);
        let content_md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let payload_sha256 = sigv4::sha256_hex(body.as_bytes());
        let time = chrono::Utc::now();
        let amz_date = sigv4::amz_date(time);
        let endpoint = &config.endpoint;
        // reqwest sends the port only when it is not the scheme's default, and so must we.
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(failed(None, None, "endpoint has no host".to_owned())),
        };
        let canonical_uri = format!("/{}", sigv4::uri_encode(&config.bucket, false));
        let canonical_query = sigv4::canonical_query(&[("lifecycle", "")]);
        let headers = [
            ("content-md5", content_md5.as_str()),
            ("content-type", "application/xml"),
            ("host", host.as_str()),
            ("x-amz-content-sha256", payload_sha256.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        let signer = sigv4::Signer {
            access_key: &credentials.access_key,
            secret_key: credentials.secret_key.expose(),
            region: &config.region,
            service: "s3",
            time,
        };
        let request = sigv4::Request {
            method: "PUT",
            canonical_uri: &canonical_uri,
            canonical_query: &canonical_query,
            headers: &headers,
            payload_sha256: &payload_sha256,
        };
        let authorization = sigv4::authorization(&signer, &request);

        let url = format!("{}{canonical_uri}?lifecycle", endpoint.as_str().trim_end_matches('/'));
        let mut put = self.inner.http.put(&url).header("authorization", authorization).body(body);
        for (name, value) in headers.iter().filter(|(name, _)| *name != "host") {
            put = put.header(*name, *value);
        }
        let response = put.send().await.map_err(|e| failed(None, None, format!("PUT {url}: {e}")))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            tracing::info!(bucket = %config.bucket, prefix = %config.prefix, days, "lifecycle rule set");
            return Ok(());
        }
        // An error body we cannot read still leaves the status to go on.
        let text = response.text().await.unwrap_or_default();
        let code = xml_field(&text, "Code").map(str::to_owned);
        if status == 501 || code.as_deref() == Some("NotImplemented") {
            tracing::warn!(
                bucket = %config.bucket,
                status,
                "the object store does not support lifecycle rules; recordings will not expire on their own"
            );
            return Err(Error::LifecycleUnsupported {
                bucket: config.bucket.clone(),
                status,
                code: code.unwrap_or_else(|| "NotImplemented".to_owned()),
            });
        }
        let message =
            xml_field(&text, "Message").map_or_else(|| format!("HTTP {status}"), |m| format!("HTTP {status}: {m}"));
        Err(failed(Some(status), code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_expires_the_prefix() {
        let xml = lifecycle_xml("tenant1/", 30);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Rule><ID>bitriver-recordings-expiry</ID><Filter><Prefix>tenant1/</Prefix></Filter>\
             <Status>Enabled</Status><Expiration><Days>30</Days></Expiration>\
             <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>\
             </AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>"
        );
        assert!(lifecycle_xml("", 1).contains("<Filter><Prefix></Prefix></Filter>"));
        assert!(lifecycle_xml("a&b<c>/", 7).contains("<Prefix>a&amp;b&lt;c&gt;/</Prefix>"));
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // RFC 1321 test suite: MD5("abc") = 900150983cd24fb0d6963f7d28e17f72.
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"abc"));
        assert_eq!(md5, "kAFQmDzST7DWlj99KOF/cg==");
    }

    #[test]
    fn error_fields() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NotImplemented</Code><Message>nope</Message></Error>";
        assert_eq!(xml_field(body, "Code"), Some("NotImplemented"));
        assert_eq!(xml_field(body, "Message"), Some("nope"));
        assert_eq!(xml_field(body, "RequestId"), None);
    }
}
