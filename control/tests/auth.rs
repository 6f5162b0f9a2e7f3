//! Accounts and sessions over real HTTP: signup, login, the session cookie, logout, `/api/users`
//! permissions, and the error shapes of bad bodies.

mod common;

use common::TestApi;
use control::Mode;
use serde_json::{json, Value};

/// Sign up a viewer; returns (user id, token).
async fn signup(api: &TestApi, name: &str, email: &str, password: &str) -> (String, String) {
    let (status, body) =
        api.post("/api/auth/signup", None, json!({"displayName": name, "email": email, "password": password})).await;
    assert_eq!(status, 201, "{body}");
    (body["user"]["id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
}

async fn login(api: &TestApi, email: &str, password: &str) -> (u16, Value) {
    api.post("/api/auth/login", None, json!({"email": email, "password": password})).await
}

/// Create a user with roles through the development admin (no token from loopback), then log in.
async fn user_with_roles(api: &TestApi, name: &str, roles: &[&str]) -> (String, String) {
    let email = format!("{}@example.com", name.to_lowercase());
    let (status, body) = api
        .post(
            "/api/users",
            None,
            json!({"displayName": name, "email": email, "roles": roles, "password": "password-123"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, session) = login(api, &email, "password-123").await;
    assert_eq!(status, 200, "{session}");
    (body["id"].as_str().unwrap().to_owned(), session["token"].as_str().unwrap().to_owned())
}

fn assert_no_hash(body: &impl ToString) {
    let text = body.to_string();
    assert!(!text.contains("argon2") && !text.contains("passwordHash") && !text.contains("password_hash"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_sets_an_http_only_cookie_that_authenticates_alone() {
    let api = TestApi::start().await;
    let resp = api
        .client
        .post(api.url("/api/auth/signup"))
        .json(&json!({"displayName": "River", "email": "River@Example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let cookie = resp.headers().get("set-cookie").expect("a session cookie").to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_no_hash(&body);
    let token = body["token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("bitriver_session={token}")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "no Secure over plain http in development: {cookie}");
    assert_eq!(body["user"]["email"], "river@example.com");
    assert_eq!(body["user"]["roles"], json!(["viewer"]));
    assert!(body["expiresAt"].as_i64().unwrap() > raft::now_millis());

    // The cookie alone (no Authorization header) is a session.
    let resp = api
        .client
        .get(api.url("/api/auth/session"))
        .header("cookie", format!("bitriver_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["user"]["id"], body["user"]["id"]);
    assert_eq!(session["expiresAt"], body["expiresAt"]);
    assert_no_hash(&session);

    // No token at all, even from loopback in development: no session.
    let (status, err) = api.get("/api/auth/session", None).await;
    assert_eq!(status, 401, "{err}");
    // A token in the query string is refused outright.
    let (status, err) = api.get(&format!("/api/auth/session?token={token}"), None).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "token_in_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_logout_and_wrong_credentials() {
    let api = TestApi::start().await;
    let (id, _) = signup(&api, "Brook", "brook@example.com", "password-one").await;

    let (status, wrong_password) = login(&api, "brook@example.com", "password-two").await;
    assert_eq!(status, 401);
    let (status, unknown_email) = login(&api, "nobody@example.com", "password-one").await;
    assert_eq!(status, 401);
    assert_eq!(wrong_password["error"]["code"], "invalid_credentials");
    assert_eq!(wrong_password, unknown_email, "the answer must not tell which emails exist");

    let (status, session) = login(&api, "  BROOK@example.com", "password-one").await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["id"], id.as_str());
    assert_no_hash(&session);
    let token = session["token"].as_str().unwrap();
    assert_eq!(api.get("/api/auth/session", Some(token)).await.0, 200);

    let resp = api.client.delete(api.url("/api/auth/session")).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let cleared = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.starts_with("bitriver_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _) = api.get("/api/auth/session", Some(token)).await;
    assert_eq!(status, 401, "the token is dead after logout");
    let hash = control::auth::token_hash(token);
    assert!(api.catalog.read(|s| s.auth_session(&hash).is_none()), "the session left the catalog");
    assert_eq!(api.call("DELETE", "/api/auth/session", Some(token), None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_list_users_and_change_roles() {
    let api = TestApi::start().await;
    let (creator_id, creator) = user_with_roles(&api, "Creator", &["creator"]).await;
    let (other_id, other) = signup(&api, "Other", "other@example.com", "password-456").await;
    let (_, admin) = user_with_roles(&api, "Admin", &["admin"]).await;

    // Listing: admins only.
    let (status, err) = api.get("/api/users", Some(&creator)).await;
    assert_eq!(status, 403, "{err}");
    let (status, list) = api.get("/api/users", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_no_hash(&list);
    // So is creating.
    let (status, _) = api
        .post("/api/users", Some(&creator), json!({"displayName": "X", "email": "x@example.com", "roles": ["viewer"]}))
        .await;
    assert_eq!(status, 403);

    // A creator may not touch someone else ...
    let (status, _) = api
        .call("PATCH", &format!("/api/users/{other_id}"), Some(&creator), Some(json!({"displayName": "Mine"})))
        .await;
    assert_eq!(status, 403);
    assert_eq!(api.get(&format!("/api/users/{other_id}"), Some(&creator)).await.0, 403);
    assert_eq!(api.call("DELETE", &format!("/api/users/{other_id}"), Some(&creator), None).await.0, 403);
    // ... nor promote themself, but may rename themself (sending the same roles back is fine).
    let me = format!("/api/users/{creator_id}");
    let (status, err) = api.call("PATCH", &me, Some(&creator), Some(json!({"roles": ["creator", "admin"]}))).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["field"], "roles");
    let (status, updated) =
        api.call("PATCH", &me, Some(&creator), Some(json!({"displayName": "Renamed", "roles": ["creator"]}))).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["displayName"], "Renamed");
    assert_eq!(updated["roles"], json!(["creator"]));
    assert_no_hash(&updated);

    // An admin may change anyone's roles; unknown roles are refused naming the entry.
    let other_path = format!("/api/users/{other_id}");
    let (status, err) = api.call("PATCH", &other_path, Some(&admin), Some(json!({"roles": ["viewer", "root"]}))).await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["field"], "roles[1]");
    let (status, promoted) = api.call("PATCH", &other_path, Some(&admin), Some(json!({"roles": ["moderator"]}))).await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["roles"], json!(["moderator"]));
    let (status, seen) = api.get(&other_path, Some(&other)).await;
    assert_eq!((status, &seen["roles"]), (200, &json!(["moderator"])));

    // Deleting oneself works and ends one's sessions.
    assert_eq!(api.call("DELETE", &other_path, Some(&other), None).await.0, 204);
    assert_eq!(api.get("/api/auth/session", Some(&other)).await.0, 401);
    assert_eq!(api.get(&other_path, Some(&admin)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_need_the_current_password() {
    let api = TestApi::start().await;
    let (id, token) = signup(&api, "Delta", "delta@example.com", "first-password").await;
    let path = format!("/api/users/{id}");
    let (status, err) = api.call("PATCH", &path, Some(&token), Some(json!({"password": "second-password"}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("currentPassword")));
    let (status, err) = api
        .call(
            "PATCH",
            &path,
            Some(&token),
            Some(json!({"password": "second-password", "currentPassword": "nope-nope"})),
        )
        .await;
    assert_eq!((status, err["error"]["field"].as_str()), (403, Some("currentPassword")));
    let (status, err) = api
        .call("PATCH", &path, Some(&token), Some(json!({"password": "short", "currentPassword": "first-password"})))
        .await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("password")));
    let (status, body) = api
        .call(
            "PATCH",
            &path,
            Some(&token),
            Some(json!({"password": "second-password", "currentPassword": "first-password"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_no_hash(&body);
    assert_eq!(login(&api, "delta@example.com", "first-password").await.0, 401);
    assert_eq!(login(&api, "delta@example.com", "second-password").await.0, 200);
    // An admin resets without it.
    let (status, _) = api.call("PATCH", &path, None, Some(json!({"password": "third-password"}))).await;
    assert_eq!(status, 200);
    assert_eq!(login(&api, "delta@example.com", "third-password").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_users_other_sessions() {
    let api = TestApi::start().await;
    let (id, phone) = signup(&api, "Kilo", "kilo@example.com", "first-password").await;
    let (_, other) = signup(&api, "Lima", "lima@example.com", "lima-password").await;
    let (status, laptop) = login(&api, "kilo@example.com", "first-password").await;
    assert_eq!(status, 200, "{laptop}");
    let laptop = laptop["token"].as_str().unwrap().to_owned();
    let session_ok = |token: String| {
        let api = &api;
        async move { api.get("/api/auth/session", Some(&token)).await.0 == 200 }
    };
    assert!(session_ok(phone.clone()).await && session_ok(laptop.clone()).await);

    // Changed from the phone: the phone stays signed in, the laptop (say, a stolen session) is out.
    let path = format!("/api/users/{id}");
    let change = json!({"password": "second-password", "currentPassword": "first-password"});
    let (status, body) = api.call("PATCH", &path, Some(&phone), Some(change)).await;
    assert_eq!(status, 200, "{body}");
    assert!(session_ok(phone.clone()).await, "the session that changed the password stays");
    let (status, body) = api.get("/api/auth/session", Some(&laptop)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(session_ok(other.clone()).await, "other users' sessions are untouched");
    // A rename is not a password change: sessions stay.
    let (status, tablet) = login(&api, "kilo@example.com", "second-password").await;
    assert_eq!(status, 200);
    let tablet = tablet["token"].as_str().unwrap().to_owned();
    assert_eq!(api.call("PATCH", &path, Some(&phone), Some(json!({"displayName": "Kilo 2"}))).await.0, 200);
    assert!(session_ok(tablet.clone()).await);

    // An admin's reset (the development admin here) signs the user out everywhere.
    assert_eq!(api.call("PATCH", &path, None, Some(json!({"password": "third-password"}))).await.0, 200);
    assert!(!session_ok(phone).await && !session_ok(tablet).await);
    assert!(session_ok(other).await);
    assert_eq!(login(&api, "kilo@example.com", "third-password").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let api = TestApi::start().await;
    signup(&api, "Echo", "echo@example.com", "password-789").await;

    // Duplicate email (case-insensitive), through signup and through admin create.
    let (status, err) = api
        .post(
            "/api/auth/signup",
            None,
            json!({"displayName": "Echo 2", "email": "ECHO@example.com", "password": "password-789"}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["field"], "email");
    let (status, err) =
        api.post("/api/users", None, json!({"displayName": "Echo 3", "email": "echo@example.com", "roles": []})).await;
    assert_eq!((status, err["error"]["field"].as_str()), (409, Some("email")));

    let cases = [
        (json!({"displayName": "A", "email": "a@example.com", "password": "short"}), "password"),
        (json!({"displayName": "A", "email": "not-an-email", "password": "long enough"}), "email"),
        (json!({"displayName": "   ", "email": "a@example.com", "password": "long enough"}), "displayName"),
        (json!({"displayName": "x".repeat(65), "email": "a@example.com", "password": "long enough"}), "displayName"),
        (json!({"displayName": 5, "email": "a@example.com", "password": "long enough"}), "displayName"),
        (json!({"email": "a@example.com", "password": "long enough"}), "displayName"),
        (json!({"displayName": "A", "email": "a@example.com", "password": "long enough", "role": "admin"}), "role"),
    ];
    for (body, field) in cases {
        let (status, err) = api.post("/api/auth/signup", None, body.clone()).await;
        assert_eq!(status, 422, "{body} -> {err}");
        assert_eq!(err["error"]["field"], field, "{body} -> {err}");
    }

    // Malformed JSON: 400 in the JSON error shape.
    let resp = api
        .client
        .post(api.url("/api/auth/signup"))
        .header("content-type", "application/json")
        .body("{\"displayName\": \"A\",")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "malformed_json");
    // Not JSON at all: 415, same shape.
    let resp = api.client.post(api.url("/api/auth/login")).body("email=a").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unsupported_media_type");
    // An unknown method on a known route: 405, same shape.
    let (status, err) = api.call("PUT", "/api/users", None, Some(json!({}))).await;
    assert_eq!(status, 405);
    assert_eq!(err["error"]["code"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_requires_a_token_for_writes_and_secure_cookies() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let body =
        json!({"displayName": "Fox", "email": "fox@example.com", "roles": ["admin"], "password": "password-000"});
    let (status, err) = api.post("/api/users", None, body.clone()).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(api.get("/api/users", None).await.0, 401);

    // Self-service signup stays open, yields a viewer, and the cookie is Secure.
    let resp = api
        .client
        .post(api.url("/api/auth/signup"))
        .json(&json!({"displayName": "Gale", "email": "gale@example.com", "password": "password-111"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session: Value = resp.json().await.unwrap();
    let viewer = session["token"].as_str().unwrap();
    assert_eq!(api.post("/api/users", Some(viewer), body.clone()).await.0, 403);

    // An admin put in the catalog directly (as `bitriver user create` does) can create users.
    let admin_id = "admin0000001".to_owned();
    api.catalog
        .propose(raft::Command::CreateUser(raft::User {
            id: admin_id.clone(),
            display_name: "Root".into(),
            email: "root@example.com".into(),
            roles: vec!["admin".into()],
            password_hash: Some(control::auth::hash_password("root-password").unwrap()),
            created_at: raft::now_millis(),
        }))
        .await
        .unwrap();
    let (status, session) = login(&api, "root@example.com", "root-password").await;
    assert_eq!(status, 200, "{session}");
    let admin = session["token"].as_str().unwrap();
    let (status, created) = api.post("/api/users", Some(admin), body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["roles"], json!(["admin"]));
    assert_no_hash(&created);
    let (_, list) = api.get("/api/users", Some(admin)).await;
    assert_no_hash(&list);
    let (_, one) = api.get(&format!("/api/users/{admin_id}"), Some(admin)).await;
    assert_no_hash(&one);
    assert_eq!(one["id"], admin_id.as_str());
}
