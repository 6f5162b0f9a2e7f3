//! Still pictures from CMAF: the first video frame of a segment (segments start on keyframes)
//! decoded with FFmpeg in-process, scaled down and encoded as a JPEG. Live posters and
//! recordings' pictures are made this way, a few times a minute per channel.
//!
//! The header and segment are handed to libavformat as one fragmented MP4 (a temporary file:
//! its demuxer reads `moov` and `moof` boxes for us, untrusted bytes included, bounded by the
//! segment's size); nothing here parses boxes itself.

use std::io::Write as _;
use std::path::PathBuf;

use ffmpeg_next::codec::{self, encoder};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::media::Type;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{frame, Dictionary, Rational};

/// A JPEG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Why no picture came out.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("the media is not readable as fragmented MP4: {0}")]
    Container(String),
    #[error("the media has no video track")]
    NoVideo,
    #[error("no frame could be decoded: {0}")]
    Decode(String),
    #[error("encoding the JPEG failed: {0}")]
    Encode(String),
    #[error("writing the temporary file: {0}")]
    Io(#[from] std::io::Error),
}

/// JPEG quality as FFmpeg's `qscale` (2 best .. 31 worst): a 320-wide picture is a few tens of KB.
const QSCALE: i32 = 4;
/// FFmpeg's `FF_QP2LAMBDA`: `global_quality` is a qscale in lambda units.
const QP2LAMBDA: i32 = 118;

/// A JPEG of the first frame of `media` (CMAF fragments whose header is `init`), at most
/// `max_width` pixels wide (aspect kept, even sizes, never upscaled).
pub fn jpeg_from_cmaf(init: &[u8], media: &[u8], max_width: u32) -> Result<Thumbnail, ThumbnailError> {
    crate::init();
    let file = TempFile::write(&[init, media])?;
    let mut input = ffmpeg_next::format::input(&file.0).map_err(|e| ThumbnailError::Container(e.to_string()))?;
    let stream = input.streams().best(Type::Video).ok_or(ThumbnailError::NoVideo)?;
    let index = stream.index();
    let context = codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| ThumbnailError::Decode(e.to_string()))?;
    let mut decoder = context.decoder().video().map_err(|e| ThumbnailError::Decode(e.to_string()))?;
    let mut picture = frame::Video::empty();
    let mut decoded = false;
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        if decoder.send_packet(&packet).is_err() {
            continue;
        }
        if decoder.receive_frame(&mut picture).is_ok() {
            decoded = true;
            break;
        }
    }
    if !decoded {
        let _ = decoder.send_eof();
        decoded = decoder.receive_frame(&mut picture).is_ok();
    }
    if !decoded || picture.width() == 0 || picture.height() == 0 {
        return Err(ThumbnailError::Decode("the segment holds no decodable frame".into()));
    }
    let (width, height) = fit(picture.width(), picture.height(), max_width);
    encode(&picture, width, height)
}

/// `max_width` wide at most, aspect kept, both even (4:2:0), at least 2.
fn fit(width: u32, height: u32, max_width: u32) -> (u32, u32) {
    let w = width.min(max_width.max(2));
    let h = (u64::from(height) * u64::from(w) / u64::from(width.max(1))) as u32;
    ((w & !1).max(2), (h & !1).max(2))
}

fn encode(picture: &frame::Video, width: u32, height: u32) -> Result<Thumbnail, ThumbnailError> {
    let fail = |e: ffmpeg_next::Error| ThumbnailError::Encode(e.to_string());
    let mut scaler = scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        Pixel::YUVJ420P,
        width,
        height,
        scaling::Flags::BILINEAR,
    )
    .map_err(fail)?;
    let mut scaled = frame::Video::empty();
    scaler.run(picture, &mut scaled).map_err(fail)?;
    scaled.set_pts(Some(0));

    let codec = encoder::find(codec::Id::MJPEG).ok_or_else(|| ThumbnailError::Encode("no MJPEG encoder".into()))?;
    let mut jpeg = codec::context::Context::new_with_codec(codec).encoder().video().map_err(fail)?;
    jpeg.set_width(width);
    jpeg.set_height(height);
    jpeg.set_format(Pixel::YUVJ420P);
    jpeg.set_time_base(Rational::new(1, 25));
    let mut options = Dictionary::new();
    options.set("flags", "+qscale");
    options.set("global_quality", &(QSCALE * QP2LAMBDA).to_string());
    let mut jpeg = jpeg.open_as_with(codec, options).map_err(fail)?;
    jpeg.send_frame(&scaled).map_err(fail)?;
    jpeg.send_eof().map_err(fail)?;
    let mut packet = ffmpeg_next::Packet::empty();
    jpeg.receive_packet(&mut packet).map_err(fail)?;
    let bytes = packet.data().ok_or_else(|| ThumbnailError::Encode("an empty picture".into()))?.to_vec();
    Ok(Thumbnail { jpeg: bytes, width, height })
}

/// A file under the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn write(parts: &[&[u8]]) -> std::io::Result<TempFile> {
        let name = format!("bitriver-still-{}-{:016x}.mp4", std::process::id(), rand_u64());
        let file = TempFile(std::env::temp_dir().join(name));
        let mut out = std::fs::File::create(&file.0)?;
        for part in parts {
            out.write_all(part)?;
        }
        Ok(file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A unique-enough number for a file name (no `rand` dependency for this).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_keep_the_aspect_and_stay_even() {
        assert_eq!(fit(640, 360, 320), (320, 180));
        assert_eq!(fit(1920, 1080, 320), (320, 180));
        assert_eq!(fit(200, 100, 320), (200, 100), "never upscaled");
        assert_eq!(fit(333, 201, 320), (320, 192));
        assert_eq!(fit(1, 1, 320), (2, 2));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(jpeg_from_cmaf(b"", b"", 320).is_err());
        assert!(jpeg_from_cmaf(b"\x00\x00\x00\x08ftyp", b"\xff\xff\xff\xffmoof", 320).is_err());
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert!(jpeg_from_cmaf(&noise[..100], &noise, 320).is_err());
    }
}
