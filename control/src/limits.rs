//! Abuse limits in front of the API: an optional global request rate, login attempts per client
//! address, signups per client address and across the node, and a cap on request bodies.
//!
//! [`Limits`] is read from the environment once ([`Limits::from_env`]) and kept in
//! [`ApiState`]; [`crate::router`] turns it into middleware with [`apply`]. Every refusal is in the
//! API's JSON error shape: 429 with `Retry-After` for the rate limits, 413 for bodies.
//!
//! The login limiter counts every `POST /api/auth/login` (failed and successful) in a sliding
//! window per client address (IPv6 clients per /64, since one host usually owns the whole
//! prefix). It keys on the TCP peer: behind a reverse proxy that is the proxy, so run the proxy's
//! own limiter there too.
//!
//! Signups (`POST /api/auth/signup`) are counted the same way per client address, and then
//! against one node-wide rate (a GCRA limiter), since each signup costs an argon2 hash and a
//! catalog commit. The per-address check comes first, so one address's flood is refused before
//! it spends the node-wide budget others need. (The hashing itself is bounded in
//! [`crate::users`]: signups get fewer of the hashing slots than logins, and waits are bounded.)

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;
use crate::json::body_too_large;
use crate::ApiState;

pub const ENV_GLOBAL_RPS: &str = "BITRIVER_LIVE_RATE_GLOBAL_RPS";
pub const ENV_GLOBAL_BURST: &str = "BITRIVER_LIVE_RATE_GLOBAL_BURST";
pub const ENV_LOGIN_LIMIT: &str = "BITRIVER_LIVE_RATE_LOGIN_LIMIT";
pub const ENV_LOGIN_WINDOW: &str = "BITRIVER_LIVE_RATE_LOGIN_WINDOW";
pub const ENV_MAX_BODY_BYTES: &str = "BITRIVER_LIVE_MAX_BODY_BYTES";
pub const ENV_SIGNUP_LIMIT: &str = "BITRIVER_LIVE_RATE_SIGNUP_LIMIT";
pub const ENV_SIGNUP_WINDOW: &str = "BITRIVER_LIVE_RATE_SIGNUP_WINDOW";
pub const ENV_SIGNUP_GLOBAL_PER_MINUTE: &str = "BITRIVER_LIVE_RATE_SIGNUP_GLOBAL_PER_MINUTE";

pub const DEFAULT_LOGIN_LIMIT: u32 = 10;
pub const DEFAULT_LOGIN_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_SIGNUP_LIMIT: u32 = 10;
pub const DEFAULT_SIGNUP_WINDOW: Duration = Duration::from_secs(600);
pub const DEFAULT_SIGNUP_GLOBAL_PER_MINUTE: u32 = 60;

/// Client addresses the login limiter remembers at once; past this, unknown addresses are refused
/// until old entries expire (memory stays bounded when someone sprays addresses).
const MAX_TRACKED_CLIENTS: usize = 100_000;

const LOGIN_PATH: &str = "/api/auth/login";
const SIGNUP_PATH: &str = "/api/auth/signup";

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second across the whole API; `None` = no global limit.
    pub global_rps: Option<NonZeroU32>,
    /// Burst for the global limiter (default: the rate itself).
    pub global_burst: Option<NonZeroU32>,
    /// Attempts per client (logins, signups) address per window; 0 turns the limiter off.
    pub login_limit: u32,
    pub login_window: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Signups per client address per window; 0 turns the limit off.
    pub signup_limit: u32,
    pub signup_window: Duration,
    /// Signups per minute across the node (bursts of up to half as many); `None` = no limit.
    pub signup_global_per_minute: Option<NonZeroU32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global_rps: None,
            global_burst: None,
            login_limit: DEFAULT_LOGIN_LIMIT,
            login_window: DEFAULT_LOGIN_WINDOW,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            signup_limit: DEFAULT_SIGNUP_LIMIT,
            signup_window: DEFAULT_SIGNUP_WINDOW,
            signup_global_per_minute: NonZeroU32::new(DEFAULT_SIGNUP_GLOBAL_PER_MINUTE),
        }
    }
}

/// A limit variable that doesn't parse, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct LimitsError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl Limits {
    /// From the process environment; a variable that doesn't parse is logged and its default used
    /// (call [`Limits::try_from_env`] at startup to refuse it instead).
    pub fn from_env() -> Self {
        Self::try_from_env().unwrap_or_else(|e| {
            tracing::error!(error = %e, "ignoring invalid rate limit settings; using the defaults");
            Limits::default()
        })
    }

    pub fn try_from_env() -> Result<Self, LimitsError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LimitsError> {
        let get = |var: &'static str| lookup(var).map(|v| (var, v.trim().to_owned())).filter(|(_, v)| !v.is_empty());
        let mut limits = Limits::default();
        if let Some((var, v)) = get(ENV_GLOBAL_RPS) {
            limits.global_rps = Some(parse_nonzero(var, &v)?);
        }
        if let Some((var, v)) = get(ENV_GLOBAL_BURST) {
            limits.global_burst = Some(parse_nonzero(var, &v)?);
        }
        if let Some((var, v)) = get(ENV_LOGIN_LIMIT) {
            limits.login_limit = v.parse().map_err(|_| err(var, &v, "expected a whole number (0 = off)"))?;
        }
        if let Some((var, v)) = get(ENV_LOGIN_WINDOW) {
            limits.login_window = parse_duration(&v).map_err(|reason| err(var, &v, reason))?;
        }
        if let Some((var, v)) = get(ENV_SIGNUP_LIMIT) {
            limits.signup_limit = v.parse().map_err(|_| err(var, &v, "expected a whole number (0 = off)"))?;
        }
        if let Some((var, v)) = get(ENV_SIGNUP_WINDOW) {
            limits.signup_window = parse_duration(&v).map_err(|reason| err(var, &v, reason))?;
        }
        if let Some((var, v)) = get(ENV_SIGNUP_GLOBAL_PER_MINUTE) {
            let n: u32 = v.parse().map_err(|_| err(var, &v, "expected a whole number (0 = off)"))?;
            limits.signup_global_per_minute = NonZeroU32::new(n);
        }
        if let Some((var, v)) = get(ENV_MAX_BODY_BYTES) {
            limits.max_body_bytes = match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(err(var, &v, "expected a number of bytes > 0")),
            };
        }
        Ok(limits)
    }

    /// No rate limits at all (tests, benchmarks); the body cap stays.
    pub fn unlimited() -> Self {
        Limits { login_limit: 0, signup_limit: 0, signup_global_per_minute: None, ..Limits::default() }
    }
}

fn err(var: &'static str, value: &str, reason: impl Into<String>) -> LimitsError {
    LimitsError { var, value: value.to_owned(), reason: reason.into() }
}

fn parse_nonzero(var: &'static str, v: &str) -> Result<NonZeroU32, LimitsError> {
    v.parse::<NonZeroU32>().map_err(|_| err(var, v, "expected a whole number > 0"))
}

/// `500ms`, `30s`, `2m`, `1h`, `1d`, or a bare number of seconds; must be > 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| "expected a duration like 30s, 2m or 1h".to_owned())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?}; use ms, s, m, h or d")),
    };
    match n.checked_mul(unit_ms) {
        Some(0) => Err("must be longer than 0".to_owned()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err("too long".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Login attempts per client
// ---------------------------------------------------------------------------------------------

/// Sliding-window attempt counter per client address.
#[derive(Debug)]
pub struct AttemptLimiter {
    limit: u32,
    window: Duration,
    attempts: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AttemptLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        AttemptLimiter { limit, window, attempts: Mutex::new(HashMap::new()) }
    }

    /// Record an attempt from `ip` at `now`, or say how long until the next one is allowed.
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let key = client_key(ip);
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if attempts.len() >= MAX_TRACKED_CLIENTS && !attempts.contains_key(&key) {
            attempts.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
            if attempts.len() >= MAX_TRACKED_CLIENTS {
                return Err(self.window);
            }
        }
        let times = attempts.entry(key).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.limit as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

/// IPv4 addresses as they are; IPv6 by /64 (IPv4-mapped ones as IPv4).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn retry_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

// ---------------------------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------------------------

/// Limiter state shared by every route of one router.
#[derive(Clone)]
struct Guards {
    global: Option<Arc<DefaultDirectRateLimiter>>,
    login: Arc<AttemptLimiter>,
    signup: Arc<AttemptLimiter>,
    signup_global: Option<Arc<DefaultDirectRateLimiter>>,
    max_body_bytes: usize,
}

/// Wrap `routes` in the limits of `limits` (outermost first: global rate, login and signup
/// attempts, body size).
pub(crate) fn apply(routes: Router<ApiState>, limits: &Limits) -> Router<ApiState> {
    let global = limits.global_rps.map(|rps| {
        let burst = limits.global_burst.unwrap_or(rps);
        Arc::new(RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)))
    });
    let signup_global = limits.signup_global_per_minute.map(|per_minute| {
        let burst = NonZeroU32::new(per_minute.get().div_ceil(2)).unwrap_or(per_minute);
        Arc::new(RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst)))
    });
    let guards = Guards {
        global,
        login: Arc::new(AttemptLimiter::new(limits.login_limit, limits.login_window)),
        signup: Arc::new(AttemptLimiter::new(limits.signup_limit, limits.signup_window)),
        signup_global,
        max_body_bytes: limits.max_body_bytes,
    };
    routes
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(guards.clone(), body_size))
        .layer(middleware::from_fn_with_state(guards.clone(), login_attempts))
        .layer(middleware::from_fn_with_state(guards, global_rate))
}

async fn global_rate(State(guards): State<Guards>, request: Request, next: Next) -> Response {
    if let Some(limiter) = &guards.global {
        if let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return ApiError::too_many("too many requests; slow down", retry_secs(wait)).into_response();
        }
    }
    next.run(request).await
}

async fn login_attempts(State(guards): State<Guards>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let refusal = match request.uri().path() {
        LOGIN_PATH => peer.and_then(|ip| guards.login.attempt(ip, Instant::now()).err()).map(|wait| {
            tracing::warn!(remote_ip = ?peer, "login attempts rate limited");
            ApiError::too_many("too many login attempts; try again later", retry_secs(wait))
        }),
        SIGNUP_PATH => signup_refusal(&guards, peer),
        _ => None,
    };
    match refusal {
        Some(e) => e.into_response(),
        None => next.run(request).await,
    }
}

/// Why a signup from `peer` is refused now, if it is: its address's share first, then the node's.
fn signup_refusal(guards: &Guards, peer: Option<IpAddr>) -> Option<ApiError> {
    if let Some(ip) = peer {
        if let Err(wait) = guards.signup.attempt(ip, Instant::now()) {
            tracing::warn!(remote_ip = %ip, "signups rate limited for one address");
            return Some(ApiError::too_many("too many signups from your address; try again later", retry_secs(wait)));
        }
    }
    let limiter = guards.signup_global.as_ref()?;
    let not_until = limiter.check().err()?;
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    tracing::warn!("signups rate limited node-wide");
    Some(ApiError::too_many("too many signups on this server right now; try again shortly", retry_secs(wait)))
}

/// Refuse a declared `Content-Length` over the cap before reading anything; bodies without one
/// are cut by [`DefaultBodyLimit`] when a handler reads them.
async fn body_size(State(guards): State<Guards>, request: Request, next: Next) -> Response {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > guards.max_body_bytes as u64) {
        return body_too_large().into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    #[test]
    fn env_parsing_names_the_variable() {
        let env = |pairs: &[(&str, &str)]| {
            let m: Map<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Limits::from_lookup(move |k| m.get(k).cloned())
        };
        assert_eq!(env(&[]).unwrap(), Limits::default());
        let l = env(&[
            (ENV_GLOBAL_RPS, "50"),
            (ENV_GLOBAL_BURST, "100"),
            (ENV_LOGIN_LIMIT, "5"),
            (ENV_LOGIN_WINDOW, "2m"),
            (ENV_MAX_BODY_BYTES, "4096"),
        ])
        .unwrap();
        assert_eq!(l.global_rps, NonZeroU32::new(50));
        assert_eq!(l.global_burst, NonZeroU32::new(100));
        assert_eq!((l.login_limit, l.login_window, l.max_body_bytes), (5, Duration::from_secs(120), 4096));
        assert_eq!(env(&[(ENV_GLOBAL_RPS, "0")]).unwrap_err().var, ENV_GLOBAL_RPS);
        assert_eq!(env(&[(ENV_LOGIN_WINDOW, "2 fortnights")]).unwrap_err().var, ENV_LOGIN_WINDOW);
        assert_eq!(env(&[(ENV_MAX_BODY_BYTES, "-1")]).unwrap_err().var, ENV_MAX_BODY_BYTES);
        let l =
            env(&[(ENV_SIGNUP_LIMIT, "3"), (ENV_SIGNUP_WINDOW, "1h"), (ENV_SIGNUP_GLOBAL_PER_MINUTE, "0")]).unwrap();
        assert_eq!((l.signup_limit, l.signup_window, l.signup_global_per_minute), (3, Duration::from_secs(3600), None));
        assert_eq!(env(&[(ENV_SIGNUP_LIMIT, "many")]).unwrap_err().var, ENV_SIGNUP_LIMIT);
        assert_eq!(env(&[(ENV_SIGNUP_GLOBAL_PER_MINUTE, "-5")]).unwrap_err().var, ENV_SIGNUP_GLOBAL_PER_MINUTE);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn login_window_slides() {
        let limiter = AttemptLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.attempt(ip, t0).is_ok());
        assert!(limiter.attempt(ip, t0 + Duration::from_secs(10)).is_ok());
        let wait = limiter.attempt(ip, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        // Another client is unaffected; the first gets one attempt back when the oldest expires.
        assert!(limiter.attempt("192.0.2.2".parse().unwrap(), t0).is_ok());
        assert!(limiter.attempt(ip, t0 + Duration::from_secs(60)).is_ok());
        assert!(limiter.attempt(ip, t0 + Duration::from_secs(61)).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let limiter = AttemptLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(limiter.attempt("2001:db8:1:2::1".parse().unwrap(), t0).is_ok());
        assert!(limiter.attempt("2001:db8:1:2::ffff".parse().unwrap(), t0).is_err());
        assert!(limiter.attempt("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
        assert!(limiter.attempt("::ffff:192.0.2.9".parse().unwrap(), t0).is_ok());
        assert!(limiter.attempt("192.0.2.9".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn zero_turns_the_login_limiter_off() {
        let limiter = AttemptLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(limiter.attempt("192.0.2.1".parse().unwrap(), Instant::now()).is_ok());
        }
    }
}
