//! The OpenAPI document against the code: every documented operation is routed by the real
//! router, and the router serves nothing the document lacks (routes are only registered through
//! utoipa-axum's `routes!`, which documents them); the schemas have the fields real answers have;
//! and the document is what `GET /api/openapi.json` serves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use common::TestApi;
use control::openapi::document;
use control::Mode;
use serde_json::{json, Map, Value};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn doc_json() -> Value {
    serde_json::to_value(document()).unwrap()
}

/// The (METHOD, path) pairs of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap().iter().filter(|(k, _)| METHODS.contains(&k.as_str())) {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// A response, with a `$ref` to `#/components/responses/NAME` resolved.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/responses/")) {
        Some(name) => &doc["components"]["responses"][name],
        None => response,
    }
}

#[test]
fn the_document_is_openapi_3_1_with_every_api_area() {
    let doc = doc_json();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = documented(&doc);
    // One operation of each module, so a module left out of `api_routes` shows up here.
    for (method, path) in [
        ("POST", "/api/auth/signup"),
        ("GET", "/api/auth/whoami"),
        ("GET", "/api/users/{id}"),
        ("PATCH", "/api/channels/{id}"),
        ("GET", "/api/channels/{id}/chat/ws"),
        ("DELETE", "/api/channels/{id}/chat/bans/{user_id}"),
        ("GET", "/api/directory"),
        ("PUT", "/api/profiles/{user_id}"),
        ("GET", "/api/analytics/overview"),
        ("GET", "/api/export"),
        ("GET", "/api/openapi.json"),
    ] {
        assert!(documented.contains(&(method.to_owned(), path.to_owned())), "{method} {path} not documented");
    }
    assert!(documented.len() >= 39, "{} operations: {documented:?}", documented.len());
}

#[test]
fn every_operation_is_fully_described() {
    let doc = doc_json();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bitriver_session"]["type"], "apiKey");
    assert_eq!(schemes["bitriver_session"]["in"], "cookie");
    assert_eq!(schemes["bitriver_session"]["name"], "bitriver_session");
    let error_ref = "#/components/schemas/ApiError";
    assert!(doc["components"]["schemas"]["ApiError"]["properties"]["error"].is_object());

    let mut operation_ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let what = format!("{method} {path}");
        assert!(operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()), "{what}: duplicate operationId");
        // Every `{param}` of the path is a declared, required path parameter, and nothing else is.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        let in_path: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        assert_eq!(declared, in_path, "{what}: path parameters");
        for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
            assert_eq!(p["required"], true, "{what}: path parameter {p}");
        }
        let responses = op["responses"].as_object().unwrap();
        // A redirect is the success of `/play/{id}`.
        let success = |s: &String| s.starts_with('2') || s == "101" || s == "302";
        assert!(responses.keys().any(success), "{what}: no success response");
        for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
            assert_eq!(
                resolve(&doc, response)["content"]["application/json"]["schema"]["$ref"],
                error_ref,
                "{what}: {status} must carry the ApiError body"
            );
            assert!(response["description"].is_string(), "{what}: {status} says when it happens");
        }
        // 401, 403 and 404 are the shared definitions.
        for (status, name) in [("401", "Unauthorized"), ("403", "Forbidden"), ("404", "NotFound")] {
            if let Some(response) = responses.get(status) {
                assert_eq!(response["$ref"], format!("#/components/responses/{name}"), "{what}: {status}");
            }
        }
        assert!(responses.contains_key("400") && responses.contains_key("429"), "{what}: common errors");
        if op["requestBody"].is_object() {
            assert!(op["requestBody"]["content"]["application/json"]["schema"].is_object(), "{what}: body schema");
            for status in ["413", "415", "422"] {
                assert!(responses.contains_key(status), "{what}: takes a body but lacks {status}");
            }
        }
    }
    // Writes with a JSON body name their schema.
    for (method, path, schema) in [
        ("POST", "/api/auth/signup", "SignupBody"),
        ("POST", "/api/auth/login", "LoginBody"),
        ("POST", "/api/users", "CreateUserBody"),
        ("PATCH", "/api/users/{id}", "PatchUserBody"),
        ("POST", "/api/channels", "CreateChannelBody"),
        ("PATCH", "/api/channels/{id}", "UpdateChannelBody"),
        ("POST", "/api/channels/{id}/chat", "PostBody"),
        ("POST", "/api/channels/{id}/chat/bans", "BanBody"),
        ("PUT", "/api/channels/{id}/chat/settings", "SettingsBody"),
        ("PUT", "/api/profiles/{user_id}", "ProfileBody"),
    ] {
        let body = &doc["paths"][path][method.to_lowercase()]["requestBody"];
        assert_eq!(body["content"]["application/json"]["schema"]["$ref"], format!("#/components/schemas/{schema}"));
        assert_eq!(body["required"], true, "{method} {path}");
    }
    // Optional bodies are documented as optional.
    let start = &doc["paths"]["/api/channels/{id}/stream/start"]["post"]["requestBody"];
    assert_ne!(start["required"], true);
    // Public reads may be called without credentials; the rest need them (global requirement).
    let directory = &doc["paths"]["/api/directory"]["get"]["security"];
    assert!(directory.as_array().unwrap().contains(&json!({})));
    assert!(doc["paths"]["/api/users"]["get"]["security"].is_null());
    let global = doc["security"].as_array().unwrap();
    assert!(global.contains(&json!({"bearer": []})) && global.contains(&json!({"bitriver_session": []})));
}

/// `(file, line)` of every call under `dir` that would route a handler past `routes!`, and so
/// past the document: axum's `.route(`, `.route_service(`, `.nest(`, `.nest_service(`,
/// `.fallback(` and utoipa-axum's undocumented `.route(`.
fn undocumented_registrations(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            undocumented_registrations(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if [".route(", ".route_service(", ".nest(", ".nest_service(", ".fallback("].iter().any(|c| code.contains(c))
            {
                out.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
}

#[test]
fn routes_are_only_registered_with_their_operations() {
    let mut found = Vec::new();
    undocumented_registrations(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
    assert!(found.is_empty(), "routes registered without `routes!` (so missing from the document): {found:#?}");
}

/// How many requests the router counted for the route template `route` and `method`.
fn served_count(registry: &prometheus::Registry, route: &str, method: &str) -> u64 {
    let families = registry.gather();
    let Some(family) = families.iter().find(|f| f.name() == "bitriver_http_requests_total") else { return 0 };
    family
        .get_metric()
        .iter()
        .filter(|m| {
            let label = |name: &str| m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_owned());
            label("route").as_deref() == Some(route) && label("method").as_deref() == Some(method)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Production mode, so every call carries a real token: each documented operation, with ids of
/// records that exist, answers something other than 404/405 (and no 5xx), and the router
/// matched exactly that route template. The other methods of each documented path answer 405:
/// the router serves no method the document lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_nothing_else() {
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(control::metrics::ApiMetrics::register(&registry).unwrap());
    let api = TestApi::start_with(Mode::Production, |mut state| {
        state.metrics = metrics;
        state
    })
    .await;
    let (admin, token) = api.user("Admin", &["admin", "creator"]).await;
    let reports = api.report_as_ingest_node().await; // for GET /api/channels/{id}/ingest
    let hash = control::auth::hash_password("viewer-password").unwrap();
    let (viewer, _) = api.user_with("viewer-1", "Viewer", &["viewer"], Some(&hash)).await;
    let t = Some(token.as_str());
    let (status, channel) = api.post("/api/channels", t, json!({"title": "Fixture"})).await;
    assert_eq!(status, 201, "{channel}");
    let channel = channel["id"].as_str().unwrap().to_owned();
    let (status, message) = api.post(&format!("/api/channels/{channel}/chat"), t, json!({"text": "hello"})).await;
    assert_eq!(status, 201, "{message}");
    let message = message["id"].as_str().unwrap().to_owned();
    // Two messages of the viewer (a new account) held by automod: one to approve, one to reject.
    let (_, viewer_token) = api
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "viewer-1@example.com", "password": "viewer-password"})),
        )
        .await;
    let viewer_token = viewer_token["token"].as_str().map(str::to_owned);
    let settings = json!({"newAccountHoldMinutes": 10});
    let (status, answer) = api.call("PUT", &format!("/api/channels/{channel}/chat/settings"), t, Some(settings)).await;
    assert_eq!(status, 200, "{answer}");
    let mut held = Vec::new();
    for text in ["first", "second"] {
        let path = format!("/api/channels/{channel}/chat");
        let (status, answer) = api.post(&path, viewer_token.as_deref(), json!({"text": text})).await;
        assert_eq!(status, 202, "{answer}");
        held.push(answer["message"]["id"].as_str().unwrap().to_owned());
    }

    let body = |method: &str, path: &str| -> Option<Value> {
        Some(match (method, path) {
            ("POST", "/api/auth/signup") => {
                json!({"displayName": "New", "email": "new@example.com", "password": "new-password"})
            }
            ("POST", "/api/auth/login") => json!({"email": "viewer-1@example.com", "password": "viewer-password"}),
            ("POST", "/api/users") => json!({"displayName": "Made", "email": "made@example.com"}),
            ("PATCH", "/api/users/{id}") => json!({"displayName": "Viewer Two"}),
            ("POST", "/api/channels") => json!({"title": "Second"}),
            ("PATCH", "/api/channels/{id}") => json!({"title": "Renamed"}),
            ("POST", "/api/channels/{id}/chat") => json!({"text": "again"}),
            ("POST", "/api/channels/{id}/chat/bans") => json!({"userId": viewer}),
            ("PUT", "/api/channels/{id}/chat/settings") => json!({"slowModeSecs": 0}),
            ("PUT", "/api/profiles/{user_id}") => json!({"bio": "hi"}),
            ("POST", "/api/reports") => json!({"targetType": "user", "targetId": viewer, "reason": "spam"}),
            ("POST", "/api/reports/{id}/resolve") => json!({"action": "dismiss"}),
            ("POST", "/api/appeals") => json!({"channelId": channel, "text": "please"}),
            ("POST", "/api/appeals/{id}/decide") => json!({"lift": false}),
            ("PUT", "/api/pages/{name}") => json!({"text": "Be kind."}),
            ("POST", "/api/takedowns") => {
                json!({"channelId": channel, "claimantName": "R", "claimantEmail": "r@example.com",
                "work": "W", "infringingUrl": "https://example.com", "statement": "S"})
            }
            ("POST", "/api/recordings/{id}/clips") => json!({"startSeconds": 0, "endSeconds": 5, "title": "Best"}),
            ("POST", "/api/takedowns/{id}/counter") => json!({"text": "it is mine"}),
            ("POST", "/api/takedowns/{id}/decide") => json!({"restore": true}),
            _ => return None,
        })
    };
    // A report to decide, and an appeal of the viewer's ban in the channel.
    let (status, report) =
        api.post("/api/reports", t, json!({"targetType": "user", "targetId": viewer, "reason": "spam"})).await;
    assert_eq!(status, 201, "{report}");
    let report = report["id"].as_str().unwrap().to_owned();
    let (status, answer) = api.post(&format!("/api/channels/{channel}/chat/bans"), t, json!({"userId": viewer})).await;
    assert_eq!(status, 201, "{answer}");
    let (status, appeal) =
        api.post("/api/appeals", viewer_token.as_deref(), json!({"channelId": channel, "text": "sorry"})).await;
    assert_eq!(status, 201, "{appeal}");
    let appeal = appeal["id"].as_str().unwrap().to_owned();
    let notice = json!({"channelId": channel, "claimantName": "Rights", "claimantEmail": "legal@example.com",
        "work": "Song", "infringingUrl": "https://example.com/c", "statement": "good faith"});
    let (status, notice) = api.post("/api/takedowns", t, notice).await;
    assert_eq!(status, 201, "{notice}");
    let notice = notice["id"].as_str().unwrap().to_owned();
    // In a channel of its own: deleting the fixture channel deletes its recordings.
    let admin_id = api.catalog.read(|s| s.users().find(|u| u.roles.iter().any(|r| r == "admin")).unwrap().id.clone());
    api.channel("recorded", &admin_id, &[]).await;
    let recording = api.recording("rec-fixture", "recorded", 20).await;
    let concrete = |path: &str| {
        let id = match path {
            p if p.starts_with("/api/users/") => &viewer,
            p if p.starts_with("/api/recordings/") => &recording,
            p if p.starts_with("/api/reports/") => &report,
            p if p.starts_with("/api/appeals/") => &appeal,
            p if p.starts_with("/api/takedowns/") => &notice,
            _ => &channel,
        };
        let message = match path {
            p if p.ends_with("/approve") => &held[0],
            p if p.ends_with("/reject") => &held[1],
            _ => &message,
        };
        path.replace("{id}", id)
            .replace("{user_id}", &viewer)
            .replace("{name}", "terms")
            .replace("{message_id}", message)
            // The catalog's own node is in region `local`; the steering manifest is `{id}.json`.
            .replace("{region}", "local")
            .replace("{file}", &format!("{channel}.json"))
    };
    // Everything but deletes first; then deletes, innermost records first, signing out last.
    let documented = documented(&doc_json());
    // Methods a documented path does not list: the router must refuse them (405), before any
    // of the calls below deletes the records.
    let paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    for path in paths {
        for method in METHODS.map(str::to_uppercase) {
            if documented.contains(&(method.clone(), path.to_owned())) {
                continue;
            }
            let (status, answer) = api.call(&method, &concrete(path), t, None).await;
            assert_eq!(status, 405, "{method} {path} is routed but not documented: {answer}");
        }
    }
    let mut calls: Vec<(&str, &str)> = documented.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect();
    calls.sort_by_key(|(method, path)| {
        let delete = *method == "DELETE";
        let last = *path == "/api/auth/session" && delete;
        (delete, last, std::cmp::Reverse(if delete { path.matches('/').count() } else { 0 }))
    });
    for (method, path) in calls {
        let before = served_count(&registry, path, method);
        let (status, answer) = api.call(method, &concrete(path), t, body(method, path)).await;
        assert!(
            status != 404 && status != 405 && status < 500,
            "{method} {path} answered {status}: {answer} (admin {admin})"
        );
        assert_eq!(served_count(&registry, path, method), before + 1, "{method} {path} not routed to its template");
    }
    reports.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_generated_one() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let resp = api.client.get(api.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, doc_json());
}

/// The component a property refers to, directly, as array items or as map values.
fn referred(property: &Value) -> Option<&str> {
    [&property["$ref"], &property["items"]["$ref"], &property["additionalProperties"]["$ref"]]
        .into_iter()
        .find_map(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

/// Check `value` against the object schema `name`: its keys are documented properties, every
/// required property is present, names are camelCase; nested objects and arrays of objects that
/// refer to other schemas are checked the same way. Returns the names of the schemas checked.
fn check_object(doc: &Value, name: &str, value: &Value, seen: &mut BTreeSet<String>) {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    seen.insert(name.to_owned());
    let object: &Map<String, Value> = value.as_object().unwrap_or_else(|| panic!("{name}: not an object: {value}"));
    let properties = schema["properties"].as_object().unwrap_or_else(|| panic!("{name} has no properties"));
    for key in properties.keys() {
        assert!(!key.contains('_') && key.chars().next().is_some_and(|c| c.is_ascii_lowercase()), "{name}.{key}");
    }
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let documented: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
    let undocumented: Vec<_> = keys.difference(&documented).collect();
    assert!(undocumented.is_empty(), "{name}: the API returns undocumented fields {undocumented:?} in {value}");
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(keys.contains(required), "{name}: required field {required} missing from {value}");
    }
    for (key, v) in object {
        let Some(target) = referred(&properties[key]) else { continue };
        if doc["components"]["schemas"][target]["type"] != "object" {
            continue; // enums like LiveState
        }
        let nested: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) if properties[key]["additionalProperties"].is_object() => v
                .as_object()
                .unwrap()
                .values()
                .flat_map(|x| x.as_array().map_or(vec![x], |a| a.iter().collect()))
                .collect(),
            Value::Object(_) => vec![v],
            _ => vec![],
        };
        for item in nested {
            check_object(doc, target, item, seen);
        }
    }
}

/// Real answers, in development mode (loopback without a token acts as an admin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_have_the_fields_real_answers_have() {
    let api = TestApi::start().await;
    let doc = doc_json();
    let mut seen = BTreeSet::new();
    let mut check = |name: &str, value: &Value| check_object(&doc, name, value, &mut seen);

    let (status, signup) = api
        .post(
            "/api/auth/signup",
            None,
            json!({"displayName": "River", "email": "river@example.com", "password": "river-pass"}),
        )
        .await;
    assert_eq!(status, 201, "{signup}");
    check("SessionGranted", &signup);
    let river = signup["user"]["id"].as_str().unwrap().to_owned();
    let river_token = signup["token"].as_str().unwrap().to_owned();
    let (status, session) = api.get("/api/auth/session", Some(&river_token)).await;
    assert_eq!(status, 200);
    check("SessionInfo", &session);

    let (status, creator) = api
        .post("/api/users", None, json!({"displayName": "Lake", "email": "lake@example.com", "roles": ["creator"]}))
        .await;
    assert_eq!(status, 201, "{creator}");
    check("UserView", &creator);
    let lake = creator["id"].as_str().unwrap().to_owned();
    let (_, users) = api.get("/api/users", None).await;
    check("UserView", &users[0]);

    let (status, created) = api
        .post(
            "/api/channels",
            None,
            json!({"ownerId": lake, "title": "Rafting", "tags": ["outdoors"], "category": "IRL"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["streamKey"].is_string());
    check("ChannelView", &created);
    let channel = created["id"].as_str().unwrap().to_owned();
    let (_, fetched) = api.get(&format!("/api/channels/{channel}"), None).await;
    check("ChannelView", &fetched);

    let (status, session) = api.call("POST", &format!("/api/channels/{channel}/stream/start"), None, None).await;
    assert_eq!(status, 201, "{session}");
    check("StreamSession", &session);

    let recording = api.recording("rec-fixture", &channel, 20).await;
    let (status, published) = api.call("POST", &format!("/api/recordings/{recording}/publish"), None, None).await;
    assert_eq!(status, 200, "{published}");
    check("RecordingView", &published);
    let (_, listed) = api.get(&format!("/api/recordings?channelId={channel}"), None).await;
    check("RecordingList", &listed);
    let (status, clip) = api
        .post(&format!("/api/recordings/{recording}/clips"), None, json!({"startSeconds": 1, "endSeconds": 6}))
        .await;
    assert_eq!(status, 202, "{clip}");
    check("RecordingView", &clip);

    let (status, message) =
        api.post(&format!("/api/channels/{channel}/chat"), None, json!({"text": "hello", "userId": river})).await;
    assert_eq!(status, 201, "{message}");
    check("MessageView", &message);
    let (_, history) = api.get(&format!("/api/channels/{channel}/chat"), None).await;
    check("HistoryPage", &history);
    let (status, ban) = api
        .post(&format!("/api/channels/{channel}/chat/bans"), None, json!({"userId": river, "durationSeconds": 60}))
        .await;
    assert_eq!(status, 201, "{ban}");
    check("ChatBan", &ban);
    let (_, bans) = api.get(&format!("/api/channels/{channel}/chat/bans"), None).await;
    check("BanList", &bans);
    let (_, settings) = api.get(&format!("/api/channels/{channel}/chat/settings"), None).await;
    check("SettingsView", &settings);

    let (status, followed) = api.post(&format!("/api/channels/{channel}/follow"), Some(&river_token), json!({})).await;
    assert_eq!(status, 200, "{followed}");
    check("FollowState", &followed);
    let (status, subscribed) =
        api.post(&format!("/api/channels/{channel}/subscribe"), Some(&river_token), json!({})).await;
    assert_eq!(status, 200, "{subscribed}");
    check("SubscriptionState", &subscribed);

    let profile = json!({
        "bio": "Rivers and rapids",
        "avatarUrl": "https://example.com/a.png",
        "featuredChannelId": channel,
        "topFriends": [river],
        "donationAddresses": [{"currency": "ETH", "address": "0x32Be343B94f860124dC4fEe278FDCBD38C102D88", "note": "thanks"}],
    });
    let (status, saved) = api.call("PUT", &format!("/api/profiles/{lake}"), None, Some(profile)).await;
    assert_eq!(status, 200, "{saved}");
    check("ProfileView", &saved);
    let (_, fetched) = api.get(&format!("/api/profiles/{lake}"), None).await;
    check("ProfileView", &fetched);

    let (_, directory) = api.get("/api/directory?limit=1", None).await;
    check("DirectoryPage", &directory);

    let (status, overview) = api.get("/api/analytics/overview", None).await;
    assert_eq!(status, 200, "{overview}");
    assert!(!overview["perChannel"].as_array().unwrap().is_empty());
    check("Overview", &overview);

    let (status, export) = api.get("/api/export", None).await;
    assert_eq!(status, 200);
    check("Export", &export);

    let (status, error) = api.get("/api/users/nobody", None).await;
    assert_eq!(status, 404);
    check("ApiError", &error);
    let (status, error) = api.post("/api/users", None, json!({"displayName": "", "email": "x@example.com"})).await;
    assert_eq!(status, 422);
    check("ApiError", &error);

    // Nested schemas were reached through the answers above, so they were checked too.
    let nested: BTreeMap<&str, bool> = [
        "Summary",
        "ChannelFigures",
        "FriendView",
        "DonationAddress",
        "DirectoryItem",
        "ApiErrorDetail",
        "UserExport",
        "FollowCounts",
    ]
    .into_iter()
    .map(|n| (n, seen.contains(n)))
    .collect();
    assert!(nested.values().all(|v| *v), "not reached: {nested:?}");
}
