//! Polling a URL until it answers what a test waits for.

use std::time::{Duration, Instant};

/// How often the waits below ask again.
const POLL: Duration = Duration::from_millis(50);

/// GET `url`: (status, body), or `None` when the request failed.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// GETs `url` until it answers 200 with `needle` in the body, for up to `limit`; the body, or
/// `Err` with the last answer (the caller adds the logs that explain it).
pub async fn wait_body(url: &str, needle: &str, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match get(url).await {
            Some((200, body)) if body.contains(needle) => return Ok(body),
            Some((status, body)) => format!("{status}: {}", body.chars().take(500).collect::<String>()),
            None => "no answer".to_owned(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{url} has no {needle:?} after {limit:?} (last answer {last})"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `url` (a `/healthz`) until it answers 2xx, for up to `limit`. `alive` says whether the
/// process behind it still runs (`Err` with why not ends the wait at once).
pub async fn wait_healthy(
    url: &str,
    limit: Duration,
    alive: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        alive()?;
        if matches!(get(url).await, Some((200..=299, _))) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{url} not healthy within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
