//! Object key rules, shared by the flags (prefix), the store and the uploader.
//!
//! Keys are `/`-separated segments such as `rec123/720p/seg_00001.m4s`: no empty, `.` or `..`
//! segment and no control characters, so a key maps to exactly one file on servers that store
//! objects as files, and can never climb out of the configured prefix.

/// S3's limit on a whole key (prefix included), in bytes.
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// Checks one key (relative to the prefix).
pub(crate) fn check(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("longer than 1024 bytes");
    }
    check_segments(key)
}

fn check_segments(path: &str) -> Result<(), &'static str> {
    if path.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("has an empty segment (leading, trailing or double '/')"),
            "." | ".." => return Err("has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// `""` or `a/b/`: leading and trailing slashes are dropped, then one `/` is put back at the end.
pub(crate) fn normalize_prefix(raw: &str) -> Result<String, &'static str> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    check_segments(trimmed)?;
    if trimmed.len() >= MAX_KEY_LEN {
        return Err("longer than 1024 bytes");
    }
    Ok(format!("{trimmed}/"))
}

/// The "directory" of a key: uploads that share it go in order.
pub(crate) fn parent(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
pub(crate) fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check("rec1/720p/seg_00001.m4s").is_ok());
        assert!(check("init.mp4").is_ok());
        for bad in ["", "/abs", "a/", "a//b", "a/./b", "../x", "a\tb"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn parents() {
        assert_eq!(parent("rec1/720p/seg.m4s"), "rec1/720p");
        assert_eq!(parent("top.jpg"), "");
    }

    #[test]
    fn encoding() {
        assert_eq!(percent_encode_path("a b/ü~x.m4s"), "a%20b/%C3%BC~x.m4s");
    }
}
