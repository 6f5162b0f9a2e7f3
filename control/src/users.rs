//! Accounts and sign-in: `/api/auth/*` (signup, login, session, logout) and `/api/users`.
//!
//! Passwords are hashed with argon2id on the blocking pool, a few at a time (each hash takes
//! ~19 MiB and tens of milliseconds, so an unbounded number in flight would be a denial of
//! service). Signups may hold only some of those slots, so a signup flood leaves logins room, and
//! no request waits for a slot longer than [`HASH_WAIT`] (then 503 `busy` with `Retry-After`).
//! A password change ends the user's other sessions. A login creates an [`AuthSession`] in the catalog holding only the SHA-256 of a fresh
//! token; the token itself goes to the client once, in the body and in the `bitriver_session`
//! cookie. User JSON is always a [`UserView`]: the password hash never leaves the catalog.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use raft::{now_millis, AuthSession, Command, Response as Applied, User, UserPatch};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{
    clear_session_cookie, hash_password, new_token, session_cookie, token_hash, verify_password, Caller, SESSION_TTL_MS,
};
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::ApiState;

/// Roles an account may hold.
pub const ROLES: [&str; 4] = ["admin", "creator", "moderator", "viewer"];
/// Role of self-service signups.
pub const DEFAULT_ROLE: &str = "viewer";
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Beyond this a "password" is an attempt to make hashing expensive.
pub const MAX_PASSWORD_CHARS: usize = 1024;
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
const MAX_EMAIL_CHARS: usize = 254;

/// argon2 hashes in flight at once, across all requests.
static HASHING: Semaphore = Semaphore::const_new(4);
/// Of those, how many signups may hold at once.
static SIGNUP_HASHING: Semaphore = Semaphore::const_new(2);
/// Longest a request waits for a hashing slot.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(current_session, logout))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub display_name: String,
    pub email: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            roles: u.roles.clone(),
            created_at: u.created_at,
        }
    }
}

/// Answer to signup and login.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionGranted {
    user: UserView,
    token: String,
    expires_at: i64,
}

/// Answer to `GET /api/auth/session`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    user: UserView,
    expires_at: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignupBody {
    display_name: String,
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateUserBody {
    display_name: String,
    email: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchUserBody {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    password: Option<String>,
    /// Required when users change their own password (not when an admin resets someone's).
    #[serde(default)]
    current_password: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Trimmed display name of 1..=64 characters without control characters.
pub fn validate_display_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(ApiError::invalid("displayName", format!("must be 1 to {MAX_DISPLAY_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid("displayName", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Lower-cased address of the form `local@domain.tld`.
pub fn validate_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let well_formed = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        }
        None => false,
    };
    if !well_formed || email.len() > MAX_EMAIL_CHARS || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid("email", "expected an address like name@example.com"));
    }
    Ok(email)
}

/// A new password: 8 to 1024 characters.
pub fn validate_password(password: &str) -> ApiResult<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid("password", format!("must be at least {MIN_PASSWORD_CHARS} characters")));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid("password", format!("must be at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// Known roles, lower-cased and without duplicates (order kept).
pub fn validate_roles(roles: &[String]) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for (i, role) in roles.iter().enumerate() {
        let role = role.trim().to_lowercase();
        if !ROLES.contains(&role.as_str()) {
            return Err(ApiError::invalid(
                &format!("roles[{i}]"),
                format!("unknown role; use one of {}", ROLES.join(", ")),
            ));
        }
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(out)
}

fn same_roles(a: &[String], b: &[String]) -> bool {
    a.iter().all(|r| b.contains(r)) && b.iter().all(|r| a.contains(r))
}

// ---------------------------------------------------------------------------------------------
// Password hashing off the async workers
// ---------------------------------------------------------------------------------------------

/// A slot of `slots`, waiting at most `wait` (then 503 `busy`).
async fn hashing_slot(slots: &'static Semaphore, wait: Duration) -> ApiResult<SemaphorePermit<'static>> {
    match tokio::time::timeout(wait, slots.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(ApiError::internal("password hashing is shut down")),
        Err(_) => {
            let mut e = ApiError::unavailable("the server is busy checking passwords; try again in a few seconds");
            e.code = "busy";
            e.retry_after = Some(2);
            Err(e)
        }
    }
}

async fn on_hashing_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    let _permit = hashing_slot(&HASHING, HASH_WAIT).await?;
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

async fn hash(password: String) -> ApiResult<String> {
    on_hashing_pool(move || hash_password(&password)).await?
}

async fn verify(hash: String, password: String) -> ApiResult<bool> {
    on_hashing_pool(move || verify_password(&hash, &password)).await
}

/// A real argon2 hash of a random password, so unknown emails cost as much as wrong passwords.
async fn dummy_hash() -> ApiResult<String> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h.clone());
    }
    let h = hash(new_token()).await?;
    Ok(DUMMY.get_or_init(|| h).clone())
}

fn invalid_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "incorrect email or password")
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

fn new_user_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

async fn propose_user(state: &ApiState, command: Command) -> ApiResult<User> {
    match state.catalog.propose(command).await? {
        Applied::User(user) => Ok(user),
        other => Err(ApiError::internal(format!("unexpected catalog answer {other:?}"))),
    }
}

/// Log `user` in: a new session in the catalog, the token in the body and the cookie.
async fn grant_session(state: &ApiState, user: &User, status: StatusCode) -> ApiResult<Response> {
    let token = new_token();
    let now = now_millis();
    let session = AuthSession {
        token_hash: token_hash(&token),
        user_id: user.id.clone(),
        created_at: now,
        expires_at: now + SESSION_TTL_MS,
    };
    let expires_at = session.expires_at;
    state.catalog.propose(Command::CreateAuthSession(session)).await?;
    let cookie = HeaderValue::from_str(&session_cookie(&token, state.mode))
        .map_err(|e| ApiError::internal(format!("session cookie: {e}")))?;
    let body = SessionGranted { user: user.into(), token, expires_at };
    Ok((status, [(header::SET_COOKIE, cookie)], ApiJson(body)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "auth",
    security(()),
    request_body = SignupBody,
    responses(
        (status = 201, description = "Signed up and signed in (also sets the `bitriver_session` cookie)", body = SessionGranted),
        (status = 409, description = "The email is already registered", body = crate::error::Body),
    )
)]
async fn signup(State(state): State<ApiState>, ApiJson(body): ApiJson<SignupBody>) -> ApiResult<Response> {
    let display_name = validate_display_name(&body.display_name)?;
    let email = validate_email(&body.email)?;
    validate_password(&body.password)?;
    if state.catalog.read(|s| s.user_by_email(&email).is_some()) {
        return Err(email_taken(&email));
    }
    let password_hash = {
        let _signup_share = hashing_slot(&SIGNUP_HASHING, HASH_WAIT).await?;
        hash(body.password).await?
    };
    let user = User {
        id: new_user_id(),
        display_name,
        email,
        roles: vec![DEFAULT_ROLE.to_owned()],
        password_hash: Some(password_hash),
        created_at: now_millis(),
    };
    let user = propose_user(&state, Command::CreateUser(user)).await?;
    tracing::info!(user = %user.id, "signed up");
    grant_session(&state, &user, StatusCode::CREATED).await
}

fn email_taken(email: &str) -> ApiError {
    ApiError::conflict("email_taken", format!("email {email} is already registered")).with_field("email")
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    security(()),
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in (also sets the `bitriver_session` cookie)", body = SessionGranted),
        (status = 401, description = "Incorrect email or password"),
    )
)]
async fn login(State(state): State<ApiState>, ApiJson(body): ApiJson<LoginBody>) -> ApiResult<Response> {
    let email = body.email.trim().to_lowercase();
    let lookup = |s: &raft::state::CatalogState| s.user_by_email(&email).cloned();
    // Always linearizable, not "local, then the leader if missing": that would make unknown
    // emails slower by a round trip to the leader and so tell which ones are registered. It also
    // finds a signup made a moment ago on another node. Logins are rare enough to afford it.
    let user = match state.catalog.read_linearizable(lookup).await {
        Ok(user) => user,
        // No leader right now: answer from this replica (the session write will wait for one).
        Err(_) => state.catalog.read(lookup),
    };
    let password_ok = match user.as_ref().and_then(|u| u.password_hash.clone()) {
        Some(stored) if body.password.chars().count() <= MAX_PASSWORD_CHARS => verify(stored, body.password).await?,
        _ => {
            // Same work as a real check, so timing doesn't tell which emails are registered.
            let _ = verify(dummy_hash().await?, body.password.chars().take(MAX_PASSWORD_CHARS).collect()).await?;
            false
        }
    };
    match user {
        Some(user) if password_ok => grant_session(&state, &user, StatusCode::OK).await,
        _ => Err(invalid_credentials()),
    }
}

#[utoipa::path(
    get,
    path = "/api/auth/session",
    tag = "auth",
    responses(
        (status = 200, description = "The signed-in user and when the session expires", body = SessionInfo),
        (status = 401, description = "No valid session"),
    )
)]
async fn current_session(State(state): State<ApiState>, caller: Caller) -> ApiResult<ApiJson<SessionInfo>> {
    let Caller::User { user, token_hash } = caller else {
        return Err(ApiError::unauthorized("no session: sign in first"));
    };
    let expires_at = state
        .catalog
        .read(|s| s.auth_session(&token_hash).map(|session| session.expires_at))
        .ok_or_else(|| ApiError::unauthorized("invalid or expired session"))?;
    Ok(ApiJson(SessionInfo { user: (&user).into(), expires_at }))
}

#[utoipa::path(
    delete,
    path = "/api/auth/session",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out; the session cookie is cleared"),
        (status = 401, description = "No valid session"),
    )
)]
async fn logout(State(state): State<ApiState>, caller: Caller) -> ApiResult<Response> {
    let Caller::User { token_hash, .. } = caller else {
        return Err(ApiError::unauthorized("no session: sign in first"));
    };
    match state.catalog.propose(Command::DeleteAuthSession { token_hash }).await {
        // Two logouts racing: the session is gone either way.
        Ok(_) | Err(raft::ProposeError::Rejected(raft::CatalogError::NotFound { .. })) => {}
        Err(e) => return Err(e.into()),
    }
    let cookie = HeaderValue::from_str(&clear_session_cookie(state.mode))
        .map_err(|e| ApiError::internal(format!("session cookie: {e}")))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    responses(
        (status = 200, description = "Every user, oldest first (admins)", body = Vec<UserView>),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
    )
)]
async fn list_users(State(state): State<ApiState>, caller: Caller) -> ApiResult<ApiJson<Vec<UserView>>> {
    caller.require_admin()?;
    let mut users: Vec<UserView> = state.catalog.read(|s| s.users().map(UserView::from).collect());
    users.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(ApiJson(users))
}

#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    request_body = CreateUserBody,
    responses(
        (status = 201, description = "The new user (admins)", body = UserView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
        (status = 409, description = "The email is already registered", body = crate::error::Body),
    )
)]
async fn create_user(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> ApiResult<(StatusCode, ApiJson<UserView>)> {
    caller.require_admin()?;
    let display_name = validate_display_name(&body.display_name)?;
    let email = validate_email(&body.email)?;
    let roles = match body.roles {
        Some(roles) => validate_roles(&roles)?,
        None => vec![DEFAULT_ROLE.to_owned()],
    };
    if let Some(password) = &body.password {
        validate_password(password)?;
    }
    if state.catalog.read(|s| s.user_by_email(&email).is_some()) {
        return Err(email_taken(&email));
    }
    let password_hash = match body.password {
        Some(p) => Some(hash(p).await?),
        None => None,
    };
    let user = User { id: new_user_id(), display_name, email, roles, password_hash, created_at: now_millis() };
    let user = propose_user(&state, Command::CreateUser(user)).await?;
    Ok((StatusCode::CREATED, ApiJson((&user).into())))
}

fn find_user(state: &ApiState, id: &str) -> ApiResult<User> {
    state.catalog.read(|s| s.user(id).cloned()).ok_or_else(|| ApiError::not_found("user", id))
}

#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user (themself or admins)", body = UserView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Someone else's account"),
        (status = 404, description = "No such user"),
    )
)]
async fn get_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<UserView>> {
    caller.require_self_or_admin(&id)?;
    Ok(ApiJson((&find_user(&state, &id)?).into()))
}

#[utoipa::path(
    patch,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = PatchUserBody,
    responses(
        (status = 200, description = "The updated user", body = UserView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Someone else's account, a role change by a non-admin, or a wrong current password"),
        (status = 404, description = "No such user"),
        (status = 409, description = "The email is already registered", body = crate::error::Body),
    )
)]
async fn update_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchUserBody>,
) -> ApiResult<ApiJson<UserView>> {
    caller.require_self_or_admin(&id)?;
    let current = find_user(&state, &id)?;
    let mut patch = UserPatch { id: id.clone(), ..Default::default() };
    if let Some(name) = &body.display_name {
        patch.display_name = Some(validate_display_name(name)?);
    }
    if let Some(email) = &body.email {
        patch.email = Some(validate_email(email)?);
    }
    if let Some(roles) = &body.roles {
        let roles = validate_roles(roles)?;
        if !same_roles(&roles, &current.roles) && !caller.is_admin() {
            return Err(ApiError::forbidden("only admins can change roles").with_field("roles"));
        }
        patch.roles = Some(roles);
    }
    if let Some(password) = body.password {
        validate_password(&password)?;
        // Someone holding a stolen session must not be able to take the account over for good.
        if !caller.is_admin() {
            if let Some(stored) = current.password_hash.clone() {
                let Some(given) = body.current_password else {
                    return Err(ApiError::invalid("currentPassword", "required to change your password"));
                };
                if !verify(stored, given).await? {
                    return Err(ApiError::forbidden("current password is incorrect").with_field("currentPassword"));
                }
            }
        }
        patch.password_hash = Some(hash(password).await?);
    }
    if patch == (UserPatch { id: id.clone(), ..Default::default() }) {
        return Ok(ApiJson((&current).into()));
    }
    let password_changed = patch.password_hash.is_some();
    let user = propose_user(&state, Command::UpdateUser(patch)).await?;
    if password_changed {
        // Whoever held the old password (or a stolen session) is signed out everywhere; the
        // session that made the change stays, if it is the user's own.
        let keep = match &caller {
            Caller::User { user, token_hash } if user.id == id => Some(token_hash.clone()),
            _ => None,
        };
        let revoke = Command::RevokeUserAuthSessions { user_id: id.clone(), keep };
        if let Applied::Removed(n) = state.catalog.propose(revoke).await? {
            tracing::info!(user = %id, sessions = n, "password changed; other sessions ended");
        }
    }
    Ok(ApiJson((&user).into()))
}

#[utoipa::path(
    delete,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Someone else's account"),
        (status = 404, description = "No such user"),
    )
)]
async fn delete_user(State(state): State<ApiState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    caller.require_self_or_admin(&id)?;
    state.catalog.propose(Command::DeleteUser { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(validate_email(" River@Example.COM ").unwrap(), "river@example.com");
        for bad in [
            "",
            "river",
            "@example.com",
            "river@",
            "river@example",
            "ri ver@example.com",
            "a@b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            let e = validate_email(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("email"), "{bad}");
        }
    }

    #[test]
    fn display_names_and_passwords() {
        assert_eq!(validate_display_name("  River ").unwrap(), "River");
        assert!(validate_display_name("   ").is_err());
        assert!(validate_display_name(&"é".repeat(64)).is_ok());
        assert!(validate_display_name(&"é".repeat(65)).is_err());
        assert!(validate_display_name("a\u{7}b").is_err());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"x".repeat(1025)).is_err());
    }

    #[tokio::test]
    async fn the_wait_for_a_hashing_slot_is_bounded() {
        static SLOTS: Semaphore = Semaphore::const_new(1);
        let held = hashing_slot(&SLOTS, HASH_WAIT).await.unwrap();
        let e = hashing_slot(&SLOTS, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!((e.status, e.code, e.retry_after), (StatusCode::SERVICE_UNAVAILABLE, "busy", Some(2)));
        drop(held);
        assert!(hashing_slot(&SLOTS, Duration::from_millis(50)).await.is_ok());
        assert!(SIGNUP_HASHING.available_permits() < HASHING.available_permits(), "logins keep room during signups");
    }

    #[test]
    fn roles() {
        assert_eq!(
            validate_roles(&["Creator".into(), "creator".into(), "viewer".into()]).unwrap(),
            ["creator", "viewer"]
        );
        let e = validate_roles(&["viewer".into(), "root".into()]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("roles[1]"));
        assert!(same_roles(&["a".into(), "b".into()], &["b".into(), "a".into()]));
        assert!(!same_roles(&["a".into()], &["a".into(), "b".into()]));
    }
}
