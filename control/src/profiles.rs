//! Streamer profiles: bio, avatar and banner, a featured channel, a MySpace-style top eight, and
//! crypto donation addresses that viewers pay directly (the platform never holds funds).
//!
//! `PUT /api/profiles/{userId}` validates everything it can here, naming the field
//! (`donationAddresses[1].address`), then proposes `UpsertProfile`; the state machine re-checks
//! what depends on other records (friends exist, the featured channel is the user's own) so a
//! race with a deletion cannot store a dangling profile.

use axum::extract::{Path, State};
use axum::Json;
use raft::state::CatalogState;
use raft::{now_millis, Command, DonationAddress, Profile, Response, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::channels::ChannelView;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::ApiState;

/// Longest bio, in characters.
pub const MAX_BIO_CHARS: usize = 2000;
/// Longest avatar/banner URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Most top friends (the "top eight").
pub const MAX_TOP_FRIENDS: usize = raft::community::MAX_TOP_FRIENDS;
/// Most donation addresses on a profile.
pub const MAX_DONATION_ADDRESSES: usize = 16;
/// Longest donation note, in characters.
pub const MAX_NOTE_CHARS: usize = 200;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(get_profile, put_profile))
}

/// A top friend as shown on a profile.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FriendView {
    pub id: String,
    pub display_name: String,
}

/// A profile as the API shows it: the stored profile with friends resolved and the user's channels.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    pub user_id: String,
    pub display_name: String,
    pub bio: String,
    pub avatar_url: Option<String>,
    pub banner_url: Option<String>,
    pub featured_channel_id: Option<String>,
    pub top_friends: Vec<FriendView>,
    pub donation_addresses: Vec<DonationAddress>,
    pub channels: Vec<ChannelView>,
    /// Whether any of the user's channels is live right now.
    pub live: bool,
    /// `None` until the user first saves a profile.
    #[schema(value_type = Option<i64>)]
    pub updated_at: Option<UnixMillis>,
}

impl ProfileView {
    /// The view of `user_id`'s profile (an empty one if they never saved it); `None` without user.
    pub fn read(state: &CatalogState, user_id: &str, stored: Option<&Profile>) -> Option<ProfileView> {
        let user = state.user(user_id)?;
        let empty = Profile { user_id: user_id.to_owned(), ..Profile::default() };
        let saved = stored.or_else(|| state.profile(user_id));
        let profile = saved.unwrap_or(&empty);
        let mut channels: Vec<ChannelView> =
            state.channels().filter(|c| c.owner_id == user_id).map(|c| ChannelView::read(state, c)).collect();
        // Live channels first (stable: otherwise catalog order).
        channels.sort_by_key(|c| c.live_state != raft::LiveState::Live);
        Some(ProfileView {
            user_id: user.id.clone(),
            display_name: user.display_name.clone(),
            bio: profile.bio.clone(),
            avatar_url: profile.avatar_url.clone(),
            banner_url: profile.banner_url.clone(),
            // A featured channel deleted since is no longer shown.
            featured_channel_id: profile.featured_channel_id.clone().filter(|id| state.channel(id).is_some()),
            // Friends whose accounts were deleted since drop out.
            top_friends: profile
                .top_friends
                .iter()
                .filter_map(|id| state.user(id))
                .map(|u| FriendView { id: u.id.clone(), display_name: u.display_name.clone() })
                .collect(),
            donation_addresses: profile.donation_addresses.clone(),
            live: channels.iter().any(|c| c.live_state == raft::LiveState::Live),
            channels,
            updated_at: saved.map(|p| p.updated_at),
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/profiles/{user_id}",
    tag = "profiles",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("user_id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The profile (an empty one if never saved)", body = ProfileView),
        (status = 404, description = "No such user"),
    )
)]
async fn get_profile(State(state): State<ApiState>, Path(user_id): Path<String>) -> ApiResult<Json<ProfileView>> {
    state
        .catalog
        .read(|s| ProfileView::read(s, &user_id, None))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("user", &user_id))
}

/// The body of `PUT /api/profiles/{userId}`: the whole profile (missing fields are cleared).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileBody {
    #[serde(default)]
    pub bio: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub banner_url: Option<String>,
    #[serde(default)]
    pub featured_channel_id: Option<String>,
    #[serde(default)]
    pub top_friends: Vec<String>,
    #[serde(default)]
    pub donation_addresses: Vec<DonationAddressBody>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DonationAddressBody {
    pub currency: String,
    pub address: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/profiles/{user_id}",
    tag = "profiles",
    params(("user_id" = String, Path, description = "User id")),
    request_body = ProfileBody,
    responses(
        (status = 200, description = "The saved profile", body = ProfileView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Someone else's profile"),
        (status = 404, description = "No such user"),
    )
)]
async fn put_profile(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<ProfileBody>,
) -> ApiResult<Json<ProfileView>> {
    caller.require_self_or_admin(&user_id)?;
    if state.catalog.read(|s| s.user(&user_id).is_none())
        && state.catalog.read_linearizable(|s| s.user(&user_id).is_none()).await?
    {
        return Err(ApiError::not_found("user", &user_id));
    }
    // Friends and the featured channel may have been created a moment ago through another node.
    let now = now_millis();
    let profile = crate::read_or_catch_up(&state, |s| validate_profile(s, &user_id, body.clone(), now)).await?;
    let saved = match state.catalog.propose(Command::UpsertProfile(profile)).await? {
        Response::Profile(p) => p,
        other => return Err(ApiError::internal(format!("unexpected catalog answer: {other:?}"))),
    };
    state
        .catalog
        .read(|s| ProfileView::read(s, &user_id, Some(&saved)))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("user", &user_id))
}

/// Check a profile body against the catalog and build the record to store.
pub fn validate_profile(state: &CatalogState, user_id: &str, body: ProfileBody, now: UnixMillis) -> ApiResult<Profile> {
    let bio = body.bio.unwrap_or_default();
    if bio.chars().count() > MAX_BIO_CHARS {
        return Err(ApiError::invalid("bio", format!("at most {MAX_BIO_CHARS} characters")));
    }
    let avatar_url = validate_url("avatarUrl", body.avatar_url)?;
    let banner_url = validate_url("bannerUrl", body.banner_url)?;

    let featured_channel_id = body.featured_channel_id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty());
    if let Some(id) = &featured_channel_id {
        match state.channel(id) {
            None => return Err(ApiError::invalid("featuredChannelId", format!("no channel {id}"))),
            Some(c) if c.owner_id != user_id => {
                return Err(ApiError::invalid("featuredChannelId", "must be one of your own channels"))
            }
            Some(_) => {}
        }
    }

    if body.top_friends.len() > MAX_TOP_FRIENDS {
        return Err(ApiError::invalid("topFriends", format!("at most {MAX_TOP_FRIENDS} top friends")));
    }
    let mut top_friends: Vec<String> = Vec::with_capacity(body.top_friends.len());
    for (i, friend) in body.top_friends.iter().enumerate() {
        let friend = friend.trim();
        if friend == user_id {
            return Err(ApiError::invalid("topFriends", format!("topFriends[{i}]: you cannot be your own top friend")));
        }
        if top_friends.iter().any(|f| f == friend) {
            return Err(ApiError::invalid("topFriends", format!("topFriends[{i}]: {friend} is listed twice")));
        }
        if state.user(friend).is_none() {
            return Err(ApiError::invalid("topFriends", format!("topFriends[{i}]: no user {friend}")));
        }
        top_friends.push(friend.to_owned());
    }

    if body.donation_addresses.len() > MAX_DONATION_ADDRESSES {
        return Err(ApiError::invalid(
            "donationAddresses",
            format!("at most {MAX_DONATION_ADDRESSES} donation addresses"),
        ));
    }
    let mut donation_addresses: Vec<DonationAddress> = Vec::with_capacity(body.donation_addresses.len());
    for (i, entry) in body.donation_addresses.into_iter().enumerate() {
        let address = validate_donation_address(i, entry)?;
        if donation_addresses.iter().any(|d| d.currency == address.currency && d.address == address.address) {
            return Err(ApiError::invalid(
                &format!("donationAddresses[{i}].address"),
                "this address is already listed for this currency",
            ));
        }
        donation_addresses.push(address);
    }

    Ok(Profile {
        user_id: user_id.to_owned(),
        bio,
        avatar_url,
        banner_url,
        featured_channel_id,
        top_friends,
        donation_addresses,
        updated_at: now,
    })
}

/// An absolute http(s) URL with a host, no spaces, at most 2048 bytes; blank means none.
fn validate_url(field: &str, url: Option<String>) -> ApiResult<Option<String>> {
    let Some(url) = url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) else { return Ok(None) };
    if url.len() > MAX_URL_LEN {
        return Err(ApiError::invalid(field, format!("at most {MAX_URL_LEN} characters")));
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    let host_ok = host.is_some_and(|h| {
        let h = h.rsplit_once('@').map_or(h, |(_, h)| h);
        !h.is_empty() && !h.starts_with(':')
    });
    if !host_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(field, "expected an http:// or https:// URL with a host"));
    }
    Ok(Some(url))
}

/// Currencies whose addresses are Ethereum-style (`0x` + 40 hex digits).
const EVM_CURRENCIES: &[&str] =
    &["ETH", "ETC", "BNB", "BSC", "MATIC", "POL", "AVAX", "ARB", "OP", "BASE", "FTM", "CELO", "GNO", "XDAI", "DAI"];

const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn all_in(s: &str, alphabet: &[u8]) -> bool {
    s.bytes().all(|b| alphabet.contains(&b))
}

fn char_len_in(s: &str, lo: usize, hi: usize) -> bool {
    (lo..=hi).contains(&s.len())
}

/// A bech32 address with human-readable part `hrp` (lower case only).
fn is_bech32(address: &str, hrp: &str, lo: usize, hi: usize) -> bool {
    address.strip_prefix(hrp).is_some_and(|data| all_in(data, BECH32)) && char_len_in(address, lo, hi)
}

/// A base58 address starting with one of `leads`.
fn is_base58(address: &str, leads: &[char], lo: usize, hi: usize) -> bool {
    address.starts_with(leads) && all_in(address, BASE58) && char_len_in(address, lo, hi)
}

/// Whether `address` has the basic shape of an address of `currency` (upper case). A shape check,
/// not a checksum check: it catches pasting the wrong thing into the wrong box.
pub fn address_shape_ok(currency: &str, address: &str) -> Result<(), &'static str> {
    let ok = match currency {
        "BTC" => is_bech32(address, "bc1", 14, 74) || is_base58(address, &['1', '3'], 26, 35),
        "LTC" => is_bech32(address, "ltc1", 14, 74) || is_base58(address, &['L', 'M'], 26, 35),
        "DOGE" => is_base58(address, &['D'], 26, 35),
        "XMR" => address.len() == 95 && is_base58(address, &['4', '8'], 95, 95),
        c if EVM_CURRENCIES.contains(&c) => {
            address.len() == 42 && address.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        _ => char_len_in(address, 16, 128) && address.bytes().all(|b| b.is_ascii_graphic()),
    };
    if ok {
        return Ok(());
    }
    Err(match currency {
        "BTC" => "expected a Bitcoin address: bc1... (lower case, 14 to 74 characters) or base58 starting with 1 or 3",
        "LTC" => "expected a Litecoin address: ltc1... (lower case) or base58 starting with L or M",
        "DOGE" => "expected a Dogecoin address: base58 starting with D",
        "XMR" => "expected a Monero address: 95 base58 characters starting with 4 or 8",
        c if EVM_CURRENCIES.contains(&c) => "expected 0x followed by 40 hex digits",
        _ => "expected 16 to 128 printable characters without spaces",
    })
}

fn validate_donation_address(i: usize, entry: DonationAddressBody) -> ApiResult<DonationAddress> {
    let field = |name: &str| format!("donationAddresses[{i}].{name}");
    let currency = entry.currency.trim().to_ascii_uppercase();
    if !(3..=10).contains(&currency.len()) || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::invalid(&field("currency"), "expected a symbol of 3 to 10 letters, like BTC or ETH"));
    }
    let address = entry.address.trim().to_owned();
    address_shape_ok(&currency, &address).map_err(|reason| ApiError::invalid(&field("address"), reason))?;
    let note = entry.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if let Some(n) = &note {
        if n.chars().count() > MAX_NOTE_CHARS || n.chars().any(char::is_control) {
            return Err(ApiError::invalid(&field("note"), format!("at most {MAX_NOTE_CHARS} printable characters")));
        }
    }
    Ok(DonationAddress { currency, address, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XMR: &str = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A";

    #[test]
    fn address_shapes() {
        assert!(address_shape_ok("BTC", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq").is_ok());
        assert!(address_shape_ok("BTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2").is_ok());
        assert!(address_shape_ok("BTC", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy").is_ok());
        assert!(address_shape_ok("BTC", "bc1xyz").is_err(), "too short");
        assert!(address_shape_ok("BTC", "BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ").is_err(), "upper case");
        assert!(address_shape_ok("BTC", "0x32Be343B94f860124dC4fEe278FDCBD38C102D88").is_err());
        assert!(address_shape_ok("ETH", "0x32Be343B94f860124dC4fEe278FDCBD38C102D88").is_ok());
        assert!(address_shape_ok("MATIC", "0x32be343b94f860124dc4fee278fdcbd38c102d88").is_ok());
        assert!(address_shape_ok("ETH", "0x123").is_err());
        assert!(address_shape_ok("ETH", "0x32Be343B94f860124dC4fEe278FDCBD38C102D8g").is_err());
        assert!(address_shape_ok("LTC", "ltc1qg82lpdwtrnurfx5kpzrq2cjmc7lmsrk5ztnx2a").is_ok());
        assert!(address_shape_ok("LTC", "LVg2kJoFNg45Nbpy53h7Fe1wKyeXVRhMH9").is_ok());
        assert!(address_shape_ok("LTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2").is_err());
        assert!(address_shape_ok("DOGE", "DH5yaieqoZN36fDVciNyRueRGvGLR3mr7L").is_ok());
        assert!(address_shape_ok("DOGE", "DH5yaieqoZN36fDVciNyRueRGvGLR3mr70").is_err(), "0 is not base58");
        assert!(address_shape_ok("XMR", XMR).is_ok());
        assert!(address_shape_ok("XMR", &XMR[..94]).is_err());
        assert!(address_shape_ok("SOL", "7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV").is_ok());
        assert!(address_shape_ok("SOL", "short").is_err());
        assert!(address_shape_ok("SOL", "has a space in it somewhere").is_err());
    }

    #[test]
    fn donation_entries_are_normalized_and_name_their_field() {
        let entry = DonationAddressBody {
            currency: " eth ".into(),
            address: "0x32Be343B94f860124dC4fEe278FDCBD38C102D88".into(),
            note: Some(" main ".into()),
        };
        let d = validate_donation_address(0, entry).unwrap();
        assert_eq!((d.currency.as_str(), d.note.as_deref()), ("ETH", Some("main")));
        let e = validate_donation_address(
            2,
            DonationAddressBody { currency: "b7c".into(), address: "x".repeat(20), note: None },
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("donationAddresses[2].currency"));
        let e = validate_donation_address(
            1,
            DonationAddressBody { currency: "btc".into(), address: "bc1xyz".into(), note: None },
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("donationAddresses[1].address"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            validate_url("avatarUrl", Some("https://cdn.example.com/a.png".into())).unwrap().as_deref(),
            Some("https://cdn.example.com/a.png")
        );
        assert_eq!(validate_url("avatarUrl", Some("  ".into())).unwrap(), None);
        for bad in
            ["ftp://x.y/a", "javascript:alert(1)", "https://", "https:///path", "http://a b.com", "cdn.example.com"]
        {
            let e = validate_url("bannerUrl", Some(bad.into())).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("bannerUrl"), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(validate_url("avatarUrl", Some(long)).is_err());
    }
}
