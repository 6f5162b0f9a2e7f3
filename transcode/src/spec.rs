//! The ladder as configured (`1080p:6000,720p:3500`) and as planned for one source size.

use std::fmt;

/// The plan's default ladder: 1080p at 6 Mbit/s, 720p at 3.5, 480p at 2, 360p at 1.2.
pub const DEFAULT_LADDER: &str = "1080p:6000,720p:3500,480p:2000,360p:1200";

/// Bounds a rung must stay within.
const MIN_HEIGHT: u32 = 64;
const MAX_HEIGHT: u32 = 4320;
const MIN_KBPS: u32 = 50;
const MAX_KBPS: u32 = 100_000;
const MAX_RUNGS: usize = 8;

/// One configured rung: output height and video bit rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub height: u32,
    pub kbps: u32,
}

/// A parsed `--transcode-ladder`: rungs, tallest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderSpec {
    rungs: Vec<Rung>,
}

/// Why a ladder string was refused; says which entry and what shape was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("empty ladder (expected e.g. {DEFAULT_LADDER}, or \"off\")")]
    Empty,
    #[error("rung {entry:?}: expected <height>p:<kbps>, e.g. 720p:3500")]
    Malformed { entry: String },
    #[error("rung {entry:?}: height must be even and between {MIN_HEIGHT} and {MAX_HEIGHT}")]
    BadHeight { entry: String },
    #[error("rung {entry:?}: bit rate must be between {MIN_KBPS} and {MAX_KBPS} kbit/s")]
    BadBitrate { entry: String },
    #[error("height {height}p listed twice")]
    Duplicate { height: u32 },
    #[error("at most {MAX_RUNGS} rungs")]
    TooMany,
}

impl LadderSpec {
    /// Parses `height p : kbps` entries separated by commas (spaces allowed around them).
    pub fn parse(text: &str) -> Result<Self, LadderError> {
        let mut rungs: Vec<Rung> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let malformed = || LadderError::Malformed { entry: entry.to_owned() };
            let (height, kbps) = entry.split_once(':').ok_or_else(malformed)?;
            let height = height.trim().strip_suffix(['p', 'P']).ok_or_else(malformed)?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let kbps = kbps.trim();
            if !digits(height) || !digits(kbps) {
                return Err(malformed());
            }
            let height: u32 = height.parse().map_err(|_| LadderError::BadHeight { entry: entry.to_owned() })?;
            let kbps: u32 = kbps.parse().map_err(|_| LadderError::BadBitrate { entry: entry.to_owned() })?;
            if !(MIN_HEIGHT..=MAX_HEIGHT).contains(&height) || !height.is_multiple_of(2) {
                return Err(LadderError::BadHeight { entry: entry.to_owned() });
            }
            if !(MIN_KBPS..=MAX_KBPS).contains(&kbps) {
                return Err(LadderError::BadBitrate { entry: entry.to_owned() });
            }
            if rungs.iter().any(|r| r.height == height) {
                return Err(LadderError::Duplicate { height });
            }
            rungs.push(Rung { height, kbps });
        }
        if rungs.is_empty() {
            return Err(LadderError::Empty);
        }
        if rungs.len() > MAX_RUNGS {
            return Err(LadderError::TooMany);
        }
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        Ok(LadderSpec { rungs })
    }

    /// The plan's four rungs ([`DEFAULT_LADDER`]).
    pub fn default_ladder() -> Self {
        // A constant that the tests parse: cannot fail.
        LadderSpec::parse(DEFAULT_LADDER).expect("the default ladder parses")
    }

    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    /// The renditions to encode for a `width`x`height` source, tallest first. Never upscales: a
    /// rung taller than the source is left out; a rung of the source's own height is encoded
    /// (at the rung's bit rate, usually far below the source's), so a ladder written for 360p
    /// viewers still has its 360p rung when the broadcaster sends 360p. Widths keep the source
    /// aspect ratio, rounded to even.
    pub fn plan(&self, width: u32, height: u32) -> Vec<PlannedRung> {
        if width == 0 || height == 0 {
            return Vec::new();
        }
        self.rungs
            .iter()
            .filter(|r| r.height <= height)
            .map(|r| {
                let scaled = (u64::from(width) * u64::from(r.height) + u64::from(height) / 2) / u64::from(height);
                let even = (u32::try_from(scaled).unwrap_or(u32::MAX) / 2 * 2).max(2);
                PlannedRung { name: format!("{}p", r.height), width: even, height: r.height, kbps: r.kbps }
            })
            .collect()
    }
}

impl fmt::Display for LadderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rungs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}p:{}", r.height, r.kbps)?;
        }
        Ok(())
    }
}

/// One rung as encoded for a given source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRung {
    /// Rendition name, `{height}p`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_format_tallest_first() {
        let spec = LadderSpec::parse("480p:2500, 1080p:6000,720p:4000").unwrap();
        assert_eq!(
            spec.rungs(),
            [Rung { height: 1080, kbps: 6000 }, Rung { height: 720, kbps: 4000 }, Rung { height: 480, kbps: 2500 }]
        );
        assert_eq!(spec.to_string(), "1080p:6000,720p:4000,480p:2500");
        assert_eq!(LadderSpec::default_ladder().to_string(), DEFAULT_LADDER);
    }

    #[test]
    fn refuses_bad_strings_naming_the_entry() {
        let cases = [
            ("", LadderError::Empty),
            (" , ", LadderError::Empty),
            ("720:3500", LadderError::Malformed { entry: "720:3500".into() }),
            ("720p", LadderError::Malformed { entry: "720p".into() }),
            ("720p:fast", LadderError::Malformed { entry: "720p:fast".into() }),
            ("-720p:100", LadderError::Malformed { entry: "-720p:100".into() }),
            ("721p:3500", LadderError::BadHeight { entry: "721p:3500".into() }),
            ("99999999999p:3500", LadderError::BadHeight { entry: "99999999999p:3500".into() }),
            ("720p:1", LadderError::BadBitrate { entry: "720p:1".into() }),
            ("720p:3500,720p:2000", LadderError::Duplicate { height: 720 }),
        ];
        for (text, want) in cases {
            assert_eq!(LadderSpec::parse(text), Err(want), "{text:?}");
        }
        assert_eq!(
            LadderSpec::parse("100p:100,102p:100,104p:100,106p:100,108p:100,110p:100,112p:100,114p:100,116p:100"),
            Err(LadderError::TooMany)
        );
    }

    #[test]
    fn never_upscales_and_keeps_the_aspect_even() {
        let spec = LadderSpec::parse("720p:2000,360p:800,180p:300").unwrap();
        let plan = spec.plan(640, 360);
        let sizes: Vec<_> = plan.iter().map(|r| (r.name.as_str(), r.width, r.height)).collect();
        assert_eq!(sizes, [("360p", 640, 360), ("180p", 320, 180)]);
        // 4:3 source, odd scaled width rounds down to even.
        let plan = LadderSpec::parse("240p:500").unwrap().plan(1440, 1080);
        assert_eq!((plan[0].width, plan[0].height), (320, 240));
        let plan = LadderSpec::parse("226p:500").unwrap().plan(1920, 1080);
        assert_eq!(plan[0].width % 2, 0);
        assert!(LadderSpec::default_ladder().plan(320, 180).is_empty());
        assert!(LadderSpec::default_ladder().plan(0, 0).is_empty());
    }
}
