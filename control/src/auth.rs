//! Who is calling: passwords, session tokens, and the [`Caller`] extractor every handler uses.
//!
//! Tokens are 256 random bits, given to the client once and stored only as SHA-256 hashes in the
//! catalog. A request authenticates with `Authorization: Bearer TOKEN` or the `bitriver_session`
//! cookie; tokens in the query string are refused. In development mode, a request from loopback
//! to a loopback host (`localhost`, `127.0.0.1`, `[::1]`) without any token acts as an admin (so
//! the README's curl walkthrough works as written).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use raft::{now_millis, User};

use crate::error::{ApiError, ApiResult};
use crate::same_origin::loopback_request;
use crate::{ApiState, Mode};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "bitriver_session";
/// How long a login lasts.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// Hash a password with argon2id (PHC string with its own salt and parameters).
pub fn hash_password(password: &str) -> ApiResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("hashing password: {e}")))
}

/// Check a password against a stored PHC hash (constant time inside argon2).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A fresh bearer token: 256 random bits, URL-safe.
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the catalog stores for a token or stream key: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// `Set-Cookie` value for a new session.
pub fn session_cookie(token: &str, mode: Mode) -> String {
    let secure = if mode == Mode::Production { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", SESSION_TTL_MS / 1000)
}

/// `Set-Cookie` value that clears the session cookie.
pub fn clear_session_cookie(mode: Mode) -> String {
    let secure = if mode == Mode::Production { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
}

/// The presented token, from the Authorization header or the session cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned()).filter(|t| !t.is_empty());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A logged-in user, and the hash of the token they used.
    User { user: User, token_hash: String },
    /// Development mode, loopback peer and loopback `Host`, no token: acts as an admin without a
    /// user record.
    DevAdmin,
}

impl Caller {
    pub fn user(&self) -> Option<&User> {
        match self {
            Caller::User { user, .. } => Some(user),
            _ => None,
        }
    }
    pub fn user_id(&self) -> Option<&str> {
        self.user().map(|u| u.id.as_str())
    }
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::DevAdmin => true,
            Caller::User { user, .. } => user.roles.iter().any(|r| r == "admin"),
            Caller::Anonymous => false,
        }
    }
    pub fn has_role(&self, role: &str) -> bool {
        self.is_admin() || self.user().is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
    /// 401 unless someone is authenticated (a user, or the development admin).
    pub fn require_authenticated(&self) -> ApiResult<()> {
        match self {
            Caller::Anonymous => {
                Err(ApiError::unauthorized("sign in first (Authorization: Bearer or the session cookie)"))
            }
            _ => Ok(()),
        }
    }
    /// The logged-in user (401 otherwise; the development admin has no user record).
    pub fn require_user(&self) -> ApiResult<&User> {
        self.user().ok_or_else(|| ApiError::unauthorized("sign in as a user first"))
    }
    pub fn require_admin(&self) -> ApiResult<()> {
        self.require_authenticated()?;
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("admins only"))
        }
    }
    /// The caller is `user_id` themself, or an admin.
    pub fn require_self_or_admin(&self, user_id: &str) -> ApiResult<()> {
        self.require_authenticated()?;
        if self.is_admin() || self.user_id() == Some(user_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden("you can only change your own account"))
        }
    }
    /// For logging and audit events.
    pub fn audit_name(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::User { user, .. } => user.id.clone(),
            Caller::DevAdmin => "dev-admin".into(),
        }
    }
}

fn query_has_token(parts: &Parts) -> bool {
    parts.uri.query().is_some_and(|q| {
        q.split('&').filter_map(|kv| kv.split('=').next()).any(|k| matches!(k, "token" | "access_token" | "session"))
    })
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        if query_has_token(parts) {
            return Err(ApiError::bad_request(
                "token_in_query",
                "tokens in the query string are not accepted; use Authorization: Bearer or the session cookie",
            ));
        }
        let Some(token) = presented_token(&parts.headers) else {
            let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            // Loopback peer *and* loopback Host: a rebound DNS name pointing at 127.0.0.1 is not local.
            if state.mode == Mode::Development && loopback_request(peer, &parts.headers, &parts.uri) {
                if !state.dev_admin_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!("development mode: unauthenticated requests from loopback act as an admin");
                }
                return Ok(Caller::DevAdmin);
            }
            return Ok(Caller::Anonymous);
        };
        let hash = token_hash(&token);
        let now = now_millis();
        let lookup = |s: &raft::state::CatalogState| {
            s.auth_session(&hash)
                .filter(|session| session.expires_at > now)
                .and_then(|session| s.user(&session.user_id).cloned())
        };
        // A session created a moment ago on another node may not have reached this replica yet.
        let user = match state.catalog.read(lookup) {
            Some(user) => Some(user),
            None => state.catalog.read_linearizable(lookup).await.ok().flatten(),
        };
        match user {
            Some(user) => Ok(Caller::User { user, token_hash: hash }),
            None => Err(ApiError::unauthorized("invalid or expired session")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn tokens_are_long_and_hashed() {
        let t = new_token();
        assert!(t.len() >= 43, "256 bits in base64");
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
    }

    #[test]
    fn token_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; bitriver_session=tok123; c=d".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("tok123"));
        h.insert(header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("hdr"));
    }
}
