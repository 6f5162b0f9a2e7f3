//! The `--object-*` flags and the validated [`ObjectConfig`] they become.
//!
//! [`ObjectArgs`] is flattened into the node's CLI; [`ObjectArgs::validate`] turns it into `None`
//! (no endpoint: object storage is off) or an [`ObjectConfig`] whose endpoint, bucket, prefix and
//! keys have been checked, with errors that name the flag at fault.

use std::fmt;

use clap::ArgAction;
use url::Url;

use crate::key;

/// 2 GiB: how much may wait in the spool while the store is unreachable.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A secret value whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for signing requests only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Object storage flags. Field names carry the `object_` prefix so that flattening them into the
/// node's CLI cannot clash with its own argument ids (`region`, ...).
#[derive(Clone, Debug, clap::Args)]
pub struct ObjectArgs {
    /// S3-compatible endpoint for recordings, a URL or host:port; object storage is off without it.
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_ENDPOINT")]
    pub object_endpoint: Option<String>,

    /// Region used to sign requests.
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_REGION", default_value = "us-east-1")]
    pub object_region: String,

    /// Access key id; without keys requests are anonymous.
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_ACCESS_KEY")]
    pub object_access_key: Option<String>,

    /// Secret access key.
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_SECRET_KEY", hide_env_values = true)]
    pub object_secret_key: Option<Secret>,

    /// Bucket that holds recordings (required with --object-endpoint).
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_BUCKET")]
    pub object_bucket: Option<String>,

    /// Prepended to every object key, e.g. `tenant1/`.
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_PREFIX", default_value = "")]
    pub object_prefix: String,

    /// Base URL handed to clients for objects (e.g. a CDN in front of the bucket).
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_PUBLIC_ENDPOINT")]
    pub object_public_endpoint: Option<String>,

    /// Use https when --object-endpoint has no scheme.
    #[arg(
        long,
        env = "BITRIVER_LIVE_OBJECT_USE_SSL",
        action = ArgAction::Set,
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub object_use_ssl: bool,

    /// Expire recordings under the prefix after this many days (bucket lifecycle rule).
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_LIFECYCLE_DAYS")]
    pub object_lifecycle_days: Option<u32>,

    /// Bytes of recordings that may wait locally while the store is unreachable.
    #[arg(long, env = "BITRIVER_LIVE_OBJECT_SPOOL_MAX_BYTES", default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    pub object_spool_max_bytes: u64,
}

impl Default for ObjectArgs {
    /// The same values clap gives when no flag is set (object storage off).
    fn default() -> Self {
        ObjectArgs {
            object_endpoint: None,
            object_region: "us-east-1".to_owned(),
            object_access_key: None,
            object_secret_key: None,
            object_bucket: None,
            object_prefix: String::new(),
            object_public_endpoint: None,
            object_use_ssl: false,
            object_lifecycle_days: None,
            object_spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
        }
    }
}

/// A flag with a bad value, or a missing flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    /// The flag at fault, e.g. `--object-bucket`.
    pub flag: &'static str,
    pub reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { flag, reason: reason.into() }
}

/// Keys for SigV4; absent means anonymous requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: Secret,
}

/// Validated object storage settings; only [`ObjectArgs::validate`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectConfig {
    /// Scheme, host and port only, path `/` (path-style requests append the bucket).
    pub endpoint: Url,
    pub region: String,
    pub credentials: Option<Credentials>,
    pub bucket: String,
    /// Empty, or segments ending in `/`.
    pub prefix: String,
    pub public_endpoint: Option<Url>,
    pub lifecycle_days: Option<u32>,
    pub spool_max_bytes: u64,
}

impl ObjectConfig {
    /// Where clients fetch `key` (relative to the prefix), when a public endpoint is configured.
    pub fn public_url(&self, key: &str) -> Option<String> {
        let base = self.public_endpoint.as_ref()?;
        key::check(key).ok()?;
        let base = base.as_str().trim_end_matches('/');
        Some(format!("{base}/{}", key::percent_encode_path(&format!("{}{key}", self.prefix))))
    }

    /// `true` when requests go over plain http.
    pub fn is_plain_http(&self) -> bool {
        self.endpoint.scheme() == "http"
    }
}

impl ObjectArgs {
    /// Checks the flags; `Ok(None)` when no endpoint is set (object storage off).
    pub fn validate(&self) -> Result<Option<ObjectConfig>, ConfigError> {
        let Some(endpoint) = self.object_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) else {
            return self.check_unused().map(|()| None);
        };
        let endpoint = parse_endpoint(endpoint, self.object_use_ssl)?;

        let region = self.object_region.trim();
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad("--object-region", format!("{region:?} is not a region name (e.g. us-east-1)")));
        }

        let bucket = self
            .object_bucket
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("--object-bucket", "required when --object-endpoint is set"))?;
        check_bucket(bucket)?;

        let credentials = match (&self.object_access_key, &self.object_secret_key) {
            (None, None) => None,
            (Some(access), Some(secret)) => {
                let access = access.trim();
                if access.is_empty() {
                    return Err(bad("--object-access-key", "empty"));
                }
                if secret.expose().is_empty() {
                    return Err(bad("--object-secret-key", "empty"));
                }
                Some(Credentials { access_key: access.to_owned(), secret_key: secret.clone() })
            }
            (None, Some(_)) => return Err(bad("--object-access-key", "required when --object-secret-key is set")),
            (Some(_), None) => return Err(bad("--object-secret-key", "required when --object-access-key is set")),
        };

        let prefix = key::normalize_prefix(&self.object_prefix).map_err(|reason| bad("--object-prefix", reason))?;

        let public_endpoint = match self.object_public_endpoint.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            None => None,
            Some(raw) => {
                let url = Url::parse(raw)
                    .map_err(|e| bad("--object-public-endpoint", format!("{raw:?} is not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(bad("--object-public-endpoint", format!("{raw:?} must be an http(s) URL with a host")));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(bad("--object-public-endpoint", "must not have a query or fragment"));
                }
                Some(url)
            }
        };

        if self.object_lifecycle_days == Some(0) {
            return Err(bad("--object-lifecycle-days", "must be at least 1 (leave it unset to keep objects)"));
        }
        if self.object_spool_max_bytes == 0 {
            return Err(bad("--object-spool-max-bytes", "must be greater than 0"));
        }

        Ok(Some(ObjectConfig {
            endpoint,
            region: region.to_owned(),
            credentials,
            bucket: bucket.to_owned(),
            prefix,
            public_endpoint,
            lifecycle_days: self.object_lifecycle_days,
            spool_max_bytes: self.object_spool_max_bytes,
        }))
    }

    /// Flags that only mean something with an endpoint: setting them without one is a mistake
    /// worth stopping for, rather than silently keeping recordings local.
    fn check_unused(&self) -> Result<(), ConfigError> {
        let set: [(&'static str, bool); 6] = [
            ("--object-bucket", self.object_bucket.is_some()),
            ("--object-access-key", self.object_access_key.is_some()),
            ("--object-secret-key", self.object_secret_key.is_some()),
            ("--object-public-endpoint", self.object_public_endpoint.is_some()),
            ("--object-prefix", !self.object_prefix.is_empty()),
            ("--object-lifecycle-days", self.object_lifecycle_days.is_some()),
        ];
        match set.iter().find(|(_, is_set)| *is_set) {
            Some((flag, _)) => Err(bad(flag, "set without --object-endpoint")),
            None => Ok(()),
        }
    }
}

fn parse_endpoint(raw: &str, use_ssl: bool) -> Result<Url, ConfigError> {
    const FLAG: &str = "--object-endpoint";
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("{}://{raw}", if use_ssl { "https" } else { "http" })
    };
    let url = Url::parse(&with_scheme).map_err(|e| bad(FLAG, format!("{raw:?} is not a URL or host:port: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if use_ssl => {
            return Err(bad(FLAG, format!("{raw:?} is http:// but --object-use-ssl is true")));
        }
        "http" => {}
        other => return Err(bad(FLAG, format!("scheme {other:?} is not http or https"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(FLAG, format!("{raw:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(FLAG, "must not carry credentials; use --object-access-key and --object-secret-key"));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(bad(FLAG, format!("{raw:?} has a path; give scheme, host and port only")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(FLAG, "must not have a query or fragment"));
    }
    Ok(url)
}

/// S3's bucket naming rules (the DNS-compatible subset, so path- and host-style both work).
fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    const FLAG: &str = "--object-bucket";
    if !(3..=63).contains(&bucket.len()) {
        return Err(bad(FLAG, format!("{bucket:?} must be 3 to 63 characters")));
    }
    if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return Err(bad(FLAG, format!("{bucket:?} may hold only lowercase letters, digits, '.' and '-'")));
    }
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    // Length is at least 3 (checked above), so first and last exist.
    if !edge_ok(bucket.as_bytes()[0]) || !edge_ok(bucket.as_bytes()[bucket.len() - 1]) {
        return Err(bad(FLAG, format!("{bucket:?} must start and end with a letter or digit")));
    }
    if bucket.contains("..") {
        return Err(bad(FLAG, format!("{bucket:?} must not contain '..'")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        objects: ObjectArgs,
    }

    fn args(endpoint: &str) -> ObjectArgs {
        ObjectArgs {
            object_endpoint: Some(endpoint.to_owned()),
            object_bucket: Some("recordings".to_owned()),
            object_access_key: Some("AKIDEXAMPLE".to_owned()),
            object_secret_key: Some(Secret::new("s3cr3t-value")),
            ..ObjectArgs::default()
        }
    }

    fn flag_of(args: &ObjectArgs) -> &'static str {
        args.validate().expect_err("should be rejected").flag
    }

    #[test]
    fn no_endpoint_means_off() {
        assert!(ObjectArgs::default().validate().unwrap().is_none());
        let blank = ObjectArgs { object_endpoint: Some("  ".into()), ..ObjectArgs::default() };
        assert!(blank.validate().unwrap().is_none());
    }

    #[test]
    fn flags_without_endpoint_are_rejected() {
        let a = ObjectArgs { object_bucket: Some("recordings".into()), ..ObjectArgs::default() };
        let err = a.validate().unwrap_err();
        assert_eq!(err.flag, "--object-bucket");
        assert!(err.to_string().contains("without --object-endpoint"), "{err}");
        let a = ObjectArgs { object_lifecycle_days: Some(3), ..ObjectArgs::default() };
        assert_eq!(flag_of(&a), "--object-lifecycle-days");
    }

    #[test]
    fn host_port_gets_scheme_from_use_ssl() {
        let config = args("minio.local:9000").validate().unwrap().unwrap();
        assert_eq!(config.endpoint.as_str(), "http://minio.local:9000/");
        assert!(config.is_plain_http());
        let config = ObjectArgs { object_use_ssl: true, ..args("minio.local:9000") }.validate().unwrap().unwrap();
        assert_eq!(config.endpoint.as_str(), "https://minio.local:9000/");
        let config = args("https://s3.example.com/").validate().unwrap().unwrap();
        assert_eq!(config.endpoint.as_str(), "https://s3.example.com/");
        assert_eq!(config.region, "us-east-1");
    }

    #[test]
    fn bad_endpoints_name_the_flag() {
        for bad in ["ftp://host", "http://", "http://host/some/path", "http://user:pw@host", "http://host?x=1"] {
            let err = args(bad).validate().unwrap_err();
            assert_eq!(err.flag, "--object-endpoint", "{bad}: {err}");
        }
        let conflict = ObjectArgs { object_use_ssl: true, ..args("http://host:9000") };
        let err = conflict.validate().unwrap_err();
        assert_eq!(err.flag, "--object-endpoint");
        assert!(err.reason.contains("--object-use-ssl"), "{err}");
    }

    #[test]
    fn bucket_is_required_and_checked() {
        let a = ObjectArgs { object_bucket: None, ..args("host:9000") };
        let err = a.validate().unwrap_err();
        assert_eq!(err.to_string(), "--object-bucket: required when --object-endpoint is set");
        for name in ["ab", "Recordings", "-rec", "rec-", "rec..x", "rec_x"] {
            let a = ObjectArgs { object_bucket: Some(name.into()), ..args("host:9000") };
            assert_eq!(flag_of(&a), "--object-bucket", "{name}");
        }
    }

    #[test]
    fn keys_come_in_pairs() {
        let a = ObjectArgs { object_access_key: None, ..args("host:9000") };
        let err = a.validate().unwrap_err();
        assert_eq!(err.to_string(), "--object-access-key: required when --object-secret-key is set");
        let a = ObjectArgs { object_secret_key: None, ..args("host:9000") };
        assert_eq!(flag_of(&a), "--object-secret-key");
        let anonymous = ObjectArgs { object_access_key: None, object_secret_key: None, ..args("host:9000") };
        assert!(anonymous.validate().unwrap().unwrap().credentials.is_none());
    }

    #[test]
    fn prefix_is_normalised_or_rejected() {
        let with = |p: &str| ObjectArgs { object_prefix: p.into(), ..args("host:9000") }.validate();
        assert_eq!(with("tenant1").unwrap().unwrap().prefix, "tenant1/");
        assert_eq!(with("/tenant1/vod/").unwrap().unwrap().prefix, "tenant1/vod/");
        assert_eq!(with("").unwrap().unwrap().prefix, "");
        for bad in ["a//b", "a/../b", "./a", "a\nb"] {
            assert_eq!(with(bad).unwrap_err().flag, "--object-prefix", "{bad:?}");
        }
    }

    #[test]
    fn other_values_are_checked() {
        let a = ObjectArgs { object_lifecycle_days: Some(0), ..args("host:9000") };
        assert_eq!(flag_of(&a), "--object-lifecycle-days");
        let a = ObjectArgs { object_spool_max_bytes: 0, ..args("host:9000") };
        assert_eq!(flag_of(&a), "--object-spool-max-bytes");
        let a = ObjectArgs { object_public_endpoint: Some("cdn.example.com".into()), ..args("host:9000") };
        assert_eq!(flag_of(&a), "--object-public-endpoint");
        let a = ObjectArgs { object_region: "us east".into(), ..args("host:9000") };
        assert_eq!(flag_of(&a), "--object-region");
    }

    #[test]
    fn public_url_joins_prefix_and_key() {
        let a = ObjectArgs {
            object_prefix: "tenant1/".into(),
            object_public_endpoint: Some("https://cdn.example.com/vod/".into()),
            ..args("host:9000")
        };
        let config = a.validate().unwrap().unwrap();
        assert_eq!(
            config.public_url("rec 1/720p/seg_1.m4s").as_deref(),
            Some("https://cdn.example.com/vod/tenant1/rec%201/720p/seg_1.m4s")
        );
        assert_eq!(config.public_url("../escape"), None);
        let without = args("host:9000").validate().unwrap().unwrap();
        assert_eq!(without.public_url("rec1/index.m3u8"), None);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let a = args("host:9000");
        assert!(!format!("{a:?}").contains("s3cr3t-value"));
        let config = a.validate().unwrap().unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn clap_parses_flags() {
        let cli = Cli::try_parse_from([
            "bitriver",
            "--object-endpoint",
            "127.0.0.1:9000",
            "--object-bucket",
            "recordings",
            "--object-use-ssl",
            "--object-lifecycle-days",
            "30",
            "--object-spool-max-bytes",
            "1048576",
        ])
        .unwrap();
        assert!(cli.objects.object_use_ssl);
        let config = cli.objects.validate().unwrap().unwrap();
        assert_eq!(config.endpoint.as_str(), "https://127.0.0.1:9000/");
        assert_eq!(config.lifecycle_days, Some(30));
        assert_eq!(config.spool_max_bytes, 1_048_576);

        let cli = Cli::try_parse_from(["bitriver", "--object-use-ssl=false"]).unwrap();
        assert!(!cli.objects.object_use_ssl);
        let cli = Cli::try_parse_from(["bitriver"]).unwrap();
        assert_eq!(cli.objects.object_region, "us-east-1");
        assert_eq!(cli.objects.object_spool_max_bytes, DEFAULT_SPOOL_MAX_BYTES);
        assert!(Cli::try_parse_from(["bitriver", "--object-lifecycle-days", "-1"]).is_err());
    }
}
