//! Cross-site requests and DNS rebinding.
//!
//! A web page open in a browser on any machine can send simple requests (a form `POST`, a
//! WebSocket) to this node, and the browser attaches the session cookie, or, in development mode
//! on the node's own machine, the request comes from loopback and so acts as the admin. Two
//! checks stop that:
//!
//! - [`guard`]: a state-changing request (anything but `GET`, `HEAD`, `OPTIONS`) or a WebSocket
//!   upgrade whose `Origin` header is present must come from the node's own origin (the scheme
//!   this node serves, with the host and port of the request's `Host`) or from one listed in
//!   `--allowed-origins`; otherwise 403 `cross_origin`. Requests without `Origin` (curl, the CLI,
//!   other servers) are not browsers' cross-site requests and pass.
//! - [`loopback_request`]: a request counts as local (the development admin) only when its peer
//!   is a loopback address *and* its `Host` names loopback (`localhost`, `127.0.0.0/8`, `::1`). A
//!   page whose DNS name was rebound to 127.0.0.1 still sends its own name as `Host`, so it is
//!   anonymous.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Environment twin of `--allowed-origins`.
pub const ENV_ALLOWED_ORIGINS: &str = "BITRIVER_LIVE_ALLOWED_ORIGINS";

/// An origin as browsers send it, normalised: lower-case scheme and host, explicit port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: String,
    /// Host name or address; IPv6 addresses keep their brackets (`[::1]`).
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `scheme://host[:port]` with `http` or `https`, nothing after the authority but an
    /// optional `/`. `null` and anything else is `None`.
    pub fn parse(text: &str) -> Option<Origin> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(authority, default_port)?;
        Some(Origin { scheme, host, port })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// `host[:port]` (or `[v6]:port`) into a lower-case host and a port (`default` when absent).
fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let authority: axum::http::uri::Authority = authority.parse().ok()?;
    let host = authority.host();
    if host.is_empty() || authority.as_str().contains('@') {
        return None;
    }
    // What follows the host is nothing, or `:` and a port number (not just any text).
    let port = match authority.as_str().strip_prefix(host)? {
        "" => default,
        rest => rest.strip_prefix(':')?.parse().ok()?,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Which origins may send state-changing requests to this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// The node serves HTTPS: its own origin's scheme is `https`.
    pub https: bool,
    /// Origins accepted besides the node's own (`--allowed-origins`).
    pub allowed: Vec<Origin>,
}

/// An `--allowed-origins` entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin; expected scheme://host[:port] with http or https, e.g. https://live.example.com")]
pub struct BadOrigin(pub String);

impl OriginPolicy {
    /// A policy for a node serving `https` (or plain HTTP) that also accepts `allowed`.
    pub fn new(https: bool, allowed: &[String]) -> Result<Self, BadOrigin> {
        let allowed = parse_list(allowed.iter().map(String::as_str))?;
        Ok(OriginPolicy { https, allowed })
    }

    /// Whether a request with these headers may change state (see the module docs).
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let text = origin.to_str().unwrap_or("(not text)");
        let Some(origin) = Origin::parse(text) else { return Err(cross_origin(text)) };
        if self.allowed.contains(&origin) || self.own_origin(headers, uri).is_some_and(|own| own == origin) {
            return Ok(());
        }
        Err(cross_origin(text))
    }

    /// The node's origin as this request addressed it: its scheme, the `Host` it was sent to.
    fn own_origin(&self, headers: &HeaderMap, uri: &Uri) -> Option<Origin> {
        let scheme = match uri.scheme_str() {
            Some(s) => s.to_ascii_lowercase(),
            None if self.https => "https".to_owned(),
            None => "http".to_owned(),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = split_host_port(request_host(headers, uri)?, default_port)?;
        Some(Origin { scheme, host, port })
    }
}

/// Origins from a list (`--allowed-origins`, already split on commas); blank entries are skipped.
pub fn parse_list<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Vec<Origin>, BadOrigin> {
    entries
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| Origin::parse(e).ok_or_else(|| BadOrigin(e.to_owned())))
        .collect()
}

fn cross_origin(origin: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!(
            "requests from origin {origin} may not change anything here; use the node's own pages, or list the \
             origin in --allowed-origins"
        ),
    )
}

/// The authority the request was sent to: the `Host` header (HTTP/1) or the URI's (HTTP/2).
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    match headers.get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => uri.authority().map(|a| a.as_str()),
    }
}

/// Whether the request names this machine's loopback as its host: `localhost` (or a name under
/// `.localhost`, which browsers resolve to loopback themselves), `127.0.0.0/8` or `[::1]`.
pub fn host_is_loopback(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some((host, _)) = request_host(headers, uri).and_then(|h| split_host_port(h, 0)) else { return false };
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A request from this machine to this machine: a loopback peer that also addressed a loopback
/// host. Only such requests may act as the development admin.
pub fn loopback_request(peer: Option<SocketAddr>, headers: &HeaderMap, uri: &Uri) -> bool {
    peer.is_some_and(|p| p.ip().is_loopback()) && host_is_loopback(headers, uri)
}

fn needs_check(method: &Method, headers: &HeaderMap) -> bool {
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")));
    websocket || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: refuse cross-origin writes and WebSocket upgrades (403 `cross_origin`).
pub async fn guard(State(policy): State<Arc<OriginPolicy>>, request: Request, next: Next) -> Response {
    if needs_check(request.method(), request.headers()) {
        if let Err(e) = policy.check(request.headers(), request.uri()) {
            tracing::warn!(
                origin = ?request.headers().get(header::ORIGIN),
                host = ?request.headers().get(header::HOST),
                method = %request.method(),
                path = %request.uri().path(),
                "cross-origin request refused"
            );
            return e.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_parse_and_normalise() {
        let o = Origin::parse("HTTP://Example.COM").unwrap();
        assert_eq!((o.scheme.as_str(), o.host.as_str(), o.port), ("http", "example.com", 80));
        assert_eq!(Origin::parse("https://example.com:443/"), Origin::parse("https://example.com"));
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host, "[::1]");
        for bad in ["null", "", "example.com", "ftp://example.com", "http://", "http://a/b", "http://u@a", "http://a:x"]
        {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_list(["https://a.example", " ", "http://b.example:8080"]).unwrap().len(), 2);
        assert_eq!(parse_list(["https://a.example/path"]).unwrap_err().0, "https://a.example/path");
    }

    #[test]
    fn own_and_listed_origins_pass_others_do_not() {
        let uri = Uri::from_static("/api/channels");
        let policy = OriginPolicy::new(false, &["https://studio.example".into()]).unwrap();
        let ok = |pairs: &[(&'static str, &str)]| policy.check(&headers(pairs), &uri).is_ok();
        assert!(ok(&[("host", "127.0.0.1:8080")]), "no Origin: not a browser's cross-site request");
        assert!(ok(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]));
        assert!(ok(&[("host", "live.example"), ("origin", "http://live.example:80")]));
        assert!(ok(&[("host", "Live.Example"), ("origin", "http://live.example")]));
        assert!(ok(&[("host", "live.example"), ("origin", "https://studio.example")]));
        assert!(!ok(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]));
        assert!(!ok(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8081")]), "another port");
        assert!(!ok(&[("host", "live.example"), ("origin", "https://live.example")]), "another scheme");
        assert!(!ok(&[("host", "live.example"), ("origin", "null")]));
        assert!(!ok(&[("origin", "http://live.example")]), "no Host to compare with");
        let https = OriginPolicy { https: true, allowed: vec![] };
        assert!(https.check(&headers(&[("host", "live.example"), ("origin", "https://live.example")]), &uri).is_ok());
        let e = policy.check(&headers(&[("host", "a"), ("origin", "http://evil.example")]), &uri).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "cross_origin"));
    }

    #[test]
    fn only_writes_and_websockets_are_checked() {
        let plain = HeaderMap::new();
        assert!(!needs_check(&Method::GET, &plain));
        assert!(!needs_check(&Method::HEAD, &plain));
        assert!(!needs_check(&Method::OPTIONS, &plain));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(needs_check(&m, &plain), "{m}");
        }
        assert!(needs_check(&Method::GET, &headers(&[("upgrade", "WebSocket")])));
    }

    #[test]
    fn loopback_hosts() {
        let uri = Uri::from_static("/");
        let local = |host: &str| host_is_loopback(&headers(&[("host", host)]), &uri);
        for host in
            ["localhost", "LOCALHOST:8080", "localhost.", "app.localhost", "127.0.0.1", "127.1.2.3:80", "[::1]:8080"]
        {
            assert!(local(host), "{host}");
        }
        for host in ["evil.example", "localhost.evil.example", "10.0.0.1", "[::2]", "0.0.0.0:8080", "127.0.0.1.nip.io"]
        {
            assert!(!local(host), "{host}");
        }
        assert!(!host_is_loopback(&HeaderMap::new(), &uri), "no host at all");
        assert!(host_is_loopback(&HeaderMap::new(), &Uri::from_static("http://127.0.0.1:8080/")), "HTTP/2 authority");
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let h = headers(&[("host", "127.0.0.1:8080")]);
        assert!(loopback_request(Some(peer), &h, &uri));
        assert!(!loopback_request(Some(remote), &h, &uri));
        assert!(!loopback_request(Some(peer), &headers(&[("host", "evil.example:8080")]), &uri));
        assert!(!loopback_request(None, &h, &uri));
    }
}
