//! HLS Content Steering (RFC 8216bis §7.2, `EXT-X-CONTENT-STEERING`): the steered multivariant
//! playlist and the steering manifest.
//!
//! Each edge is a *pathway* (`PATHWAY-ID` = `edge-{nodeId}`); the multivariant playlist lists every
//! variant once per pathway, with absolute URIs on that edge, and names the steering server
//! (`/steering/{channelId}.json`, resolved against the playlist's own URL: the control node that
//! served it). The player asks the steering server again every `TTL` seconds and plays from the
//! first pathway of `PATHWAY-PRIORITY` it can load; when an edge drains or dies, the next answer
//! leaves it out and players move without reloading the page.
//!
//! The control plane knows a session's renditions by name only (the catalog does not carry codec
//! strings), so `BANDWIDTH` and `RESOLUTION` are estimated from the name (the default ladder's
//! rates; 16:9) and `CODECS` is left out: players then read the codecs from the init segment.
//! The edges' own `master.m3u8` (from the origin) stays the exact description.
//!
//! Sans-IO: text in, text out.

use std::fmt::Write as _;

use serde::Serialize;

/// How long a player keeps a steering answer: short, so a dead edge's viewers move within
/// seconds; long enough that a million players do not poll more than a few hundred thousand
/// times a second.
pub const STEERING_TTL_SECS: u64 = 5;

/// The steering manifest (RFC 8216bis §7.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SteeringManifest {
    #[serde(rename = "VERSION")]
    pub version: u32,
    #[serde(rename = "TTL")]
    pub ttl: u64,
    /// Pathway ids, best first.
    #[serde(rename = "PATHWAY-PRIORITY")]
    pub pathway_priority: Vec<String>,
}

impl SteeringManifest {
    pub fn new(pathways: Vec<String>) -> Self {
        SteeringManifest { version: 1, ttl: STEERING_TTL_SECS, pathway_priority: pathways }
    }
}

/// The pathway id of an edge.
pub fn pathway_id(node_id: u64) -> String {
    format!("edge-{node_id}")
}

/// One pathway of the steered playlist: its id and the edge's `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pathway {
    pub id: String,
    pub base_url: String,
}

/// Estimated peak bit rate and resolution of a rendition by name: `720p` or `1080p60` by height,
/// at the default ladder's rates (1080p 6 Mbit/s, 720p 3.5, 480p 2, 360p 1.2, scaled by pixel
/// count elsewhere); `source` (unknown size) above the ladder.
pub fn estimate(rendition: &str) -> (u64, Option<(u32, u32)>) {
    let height = rendition
        .split_once('p')
        .and_then(|(h, rest)| (rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit())).then_some(h))
        .and_then(|h| h.parse::<u32>().ok())
        .filter(|h| (1..=4320).contains(h));
    let Some(height) = height else { return (8_000_000, None) };
    let bandwidth = match height {
        1080 => 6_000_000,
        720 => 3_500_000,
        480 => 2_000_000,
        360 => 1_200_000,
        h => (6_000_000.0 * (f64::from(h) / 1080.0).powi(2)).max(200_000.0) as u64,
    };
    // 16:9, width rounded to even as encoders do.
    let width = (u64::from(height) * 16 / 9).div_ceil(2) * 2;
    (bandwidth, Some((width as u32, height)))
}

/// Whether a rendition name may go into a URI unescaped (what the API accepts: `source`, `720p`).
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The steered multivariant playlist of `channel`: every rendition once per pathway, pathways in
/// the order given (the first is the default `PATHWAY-ID`). `None` without a pathway or a
/// rendition to list.
pub fn steered_playlist(channel: &str, renditions: &[String], pathways: &[Pathway]) -> Option<String> {
    let renditions: Vec<&String> = renditions.iter().filter(|r| safe_name(r)).collect();
    let first = pathways.first()?;
    if renditions.is_empty() {
        return None;
    }
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ =
        writeln!(out, "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steering/{channel}.json\",PATHWAY-ID=\"{}\"", first.id);
    for pathway in pathways {
        for rendition in &renditions {
            let (bandwidth, resolution) = estimate(rendition);
            let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth}");
            if let Some((w, h)) = resolution {
                let _ = write!(out, ",RESOLUTION={w}x{h}");
            }
            let _ = writeln!(out, ",PATHWAY-ID=\"{}\"", pathway.id);
            let _ = writeln!(out, "{}/hls/{channel}/{rendition}/index.m3u8", pathway.base_url);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_listed_once_per_pathway_with_absolute_uris() {
        let pathways = [
            Pathway { id: pathway_id(3), base_url: "http://10.0.0.3:8081".into() },
            Pathway { id: pathway_id(5), base_url: "http://[2001:db8::5]:8081".into() },
        ];
        let renditions = vec!["source".to_owned(), "720p".to_owned(), "bad name".to_owned()];
        let text = steered_playlist("ch1", &renditions, &pathways).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        assert_eq!(lines[3], "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steering/ch1.json\",PATHWAY-ID=\"edge-3\"");
        let variants: Vec<(&str, &str)> = lines
            .iter()
            .zip(lines.iter().skip(1))
            .filter(|(l, _)| l.starts_with("#EXT-X-STREAM-INF"))
            .map(|(a, b)| (*a, *b))
            .collect();
        assert_eq!(variants.len(), 4, "two renditions (the bad name left out) times two pathways:\n{text}");
        assert_eq!(variants[0].0, "#EXT-X-STREAM-INF:BANDWIDTH=8000000,PATHWAY-ID=\"edge-3\"");
        assert_eq!(variants[0].1, "http://10.0.0.3:8081/hls/ch1/source/index.m3u8");
        assert_eq!(variants[1].0, "#EXT-X-STREAM-INF:BANDWIDTH=3500000,RESOLUTION=1280x720,PATHWAY-ID=\"edge-3\"");
        assert_eq!(variants[3].1, "http://[2001:db8::5]:8081/hls/ch1/720p/index.m3u8");
        assert!(steered_playlist("ch1", &renditions, &[]).is_none());
        assert!(steered_playlist("ch1", &["../x".to_owned()], &pathways).is_none());
    }

    #[test]
    fn estimates_follow_the_ladder() {
        assert_eq!(estimate("1080p"), (6_000_000, Some((1920, 1080))));
        assert_eq!(estimate("1080p60"), (6_000_000, Some((1920, 1080))));
        assert_eq!(estimate("360p"), (1_200_000, Some((640, 360))));
        assert_eq!(estimate("240p").1, Some((426, 240)));
        assert_eq!(estimate("source").1, None);
        assert_eq!(estimate("99999p").1, None);
        assert_eq!(estimate("p").1, None);
    }

    #[test]
    fn the_manifest_has_the_specs_keys() {
        let json = serde_json::to_value(SteeringManifest::new(vec!["edge-2".into(), "edge-1".into()])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"VERSION": 1, "TTL": STEERING_TTL_SECS, "PATHWAY-PRIORITY": ["edge-2", "edge-1"]})
        );
    }
}
