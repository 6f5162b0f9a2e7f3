//! Still pictures from CMAF: the first keyframe of a segment decoded with FFmpeg in-process,
//! scaled down and encoded as a JPEG. Live posters and recordings' pictures are made this way, a
//! few times a minute per channel, so it works from the bytes in memory with no temporary file
//! and no demuxer probing.
//!
//! Data flow: the header's video track gives its `avcC` (SPS and PPS) and its sample defaults
//! (`trex`); the fragments' `moof` boxes (`tfhd` and `trun`) say where the first sync sample of
//! that track lies in `mdat`. That one access unit goes to FFmpeg's H.264 decoder with the `avcC`
//! as extradata, the picture through swscale to full-range 4:2:0 at the thumbnail size, and into
//! the MJPEG encoder.
//!
//! The box reading is our own and small: only the dozen boxes on the way to one sample, every
//! length checked against the bytes that are there, so garbage, truncated or hostile input ends in
//! a [`ThumbnailError`] and never a panic or an unbounded loop. FFmpeg only ever sees one access
//! unit of the right codec, not a container it would have to guess.

use std::ops::Range;

use ffmpeg_next::codec::{self, decoder, encoder, packet};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{frame, Dictionary, Packet, Rational};

use crate::ffi;

/// A JPEG and its size in pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// A baseline JPEG, full-range 4:2:0, from SOI to EOI.
    pub jpeg: Vec<u8>,
    /// The JPEG's size (square pixels).
    pub width: u32,
    pub height: u32,
}

/// Why no picture came out. Header and media are untrusted bytes; every way they can be wrong
/// ends here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbnailError {
    #[error("the CMAF header is malformed: {0}")]
    MalformedInit(String),
    #[error("the CMAF header has no video track")]
    NoVideoTrack,
    #[error("video track {track_id} is `{sample_entry}`, not H.264 (avc1/avc3)")]
    UnsupportedCodec { track_id: u32, sample_entry: String },
    #[error("the media is malformed at byte {offset}: {reason}")]
    MalformedMedia { offset: usize, reason: String },
    #[error("the media holds no keyframe of video track {track_id}")]
    NoKeyframe { track_id: u32 },
    #[error("the keyframe of video track {track_id} is cut off: bytes {start}..{end} of a media of {len} bytes")]
    KeyframeTruncated { track_id: u32, start: u64, end: u64, len: usize },
    #[error("decoding the keyframe failed: {0}")]
    Decode(String),
    #[error("encoding the JPEG failed: {0}")]
    Encode(String),
}

/// JPEG quality as FFmpeg's `qscale` (2 best .. 31 worst): a 320-wide picture is a few tens of KB.
const QSCALE: u32 = 4;

/// A JPEG of the first keyframe (video) found in `media` (one or more CMAF fragments), decoded
/// with the header `init`, scaled to at most `max_width` pixels wide (keeping the display aspect
/// ratio, even dimensions, at least 2x2, never upscaled).
///
/// Blocking and CPU-bound (a few milliseconds for 1080p, one thread): call it from a blocking
/// thread, not an async task.
pub fn jpeg_from_cmaf(init: &[u8], media: &[u8], max_width: u32) -> Result<Thumbnail, ThumbnailError> {
    let track = video_track(init)?;
    let keyframe = first_keyframe(media, &track)?;
    crate::init();
    // In bounds: first_keyframe checked the range against `media`.
    let picture = decode(track.avcc, &media[keyframe])?;
    let (width, height) = fit(&picture, max_width);
    encode(&picture, width, height)
}

// ---------------------------------------------------------------------------------------------
// Boxes

/// One ISO-BMFF box: its type, where it starts in the bytes it was read from, and its body.
#[derive(Debug, Clone, Copy)]
struct Mp4Box<'a> {
    kind: [u8; 4],
    start: usize,
    body: &'a [u8],
}

/// The boxes laid end to end in `data`. A box that claims more bytes than are left is an error
/// (and ends the iteration), except an `mdat` at the top level of media when `cut_mdat` is set:
/// the keyframe may still be whole in what is there, and its own bounds are checked later.
struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    cut_mdat: bool,
}

fn boxes(data: &[u8]) -> Boxes<'_> {
    Boxes { data, pos: 0, cut_mdat: false }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Mp4Box<'a>, (usize, &'static str)>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let rest = self.data.get(start..).filter(|rest| !rest.is_empty())?;
        let parsed = parse_box(rest, self.cut_mdat);
        self.pos = match parsed {
            Ok((_, _, end)) => start + end,
            Err(_) => self.data.len(),
        };
        Some(parsed.map(|(kind, body, _)| Mp4Box { kind, start, body }).map_err(|reason| (start, reason)))
    }
}

/// The box at the start of `data`: (type, body, where the next box starts).
fn parse_box(data: &[u8], cut_mdat: bool) -> Result<([u8; 4], &[u8], usize), &'static str> {
    let mut header = Fields::new(data);
    let (Some(size), Some(kind)) = (header.u32(), header.fourcc()) else {
        return Err("a box header is cut off");
    };
    let size = match size {
        // The box runs to the end of the enclosing data.
        0 => data.len(),
        1 => {
            let large = header.u64().ok_or("a 64-bit box size is cut off")?;
            usize::try_from(large).unwrap_or(usize::MAX)
        }
        size => usize::try_from(size).unwrap_or(usize::MAX),
    };
    let header_len = header.pos;
    if size < header_len {
        return Err("a box is shorter than its own header");
    }
    let end = if size <= data.len() {
        size
    } else if cut_mdat && kind == *b"mdat" {
        data.len()
    } else {
        return Err("a box runs past the end of the data");
    };
    Ok((kind, &data[header_len..end], end))
}

/// The body of the first child box of type `kind` in `data`, if there is one.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, &'static str> {
    for found in boxes(data) {
        let found = found.map_err(|(_, reason)| reason)?;
        if found.kind == *kind {
            return Ok(Some(found.body));
        }
    }
    Ok(None)
}

/// Big-endian fields read from the front of a box body; `None` once the body runs out.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.data.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        bytes.try_into().ok()
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len())?;
        self.pos = end;
        Some(())
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }

    fn fourcc(&mut self) -> Option<[u8; 4]> {
        self.take()
    }

    /// A full box's version and 24-bit flags.
    fn version_flags(&mut self) -> Option<(u8, u32)> {
        let word = self.u32()?;
        Some(((word >> 24) as u8, word & 0x00FF_FFFF))
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// The header

/// Per-sample defaults of a track (`trex`, overridden per fragment by `tfhd`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SampleDefaults {
    size: u32,
    flags: u32,
}

/// What the header says about the video track.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VideoTrack<'a> {
    track_id: u32,
    /// The `avcC` body: an AVCDecoderConfigurationRecord, the H.264 decoder's extradata.
    avcc: &'a [u8],
    defaults: SampleDefaults,
}

/// The first video track of the header `init` (`ftyp` + `moov`).
fn video_track(init: &[u8]) -> Result<VideoTrack<'_>, ThumbnailError> {
    let malformed = |reason: &str| ThumbnailError::MalformedInit(reason.to_owned());
    let moov = child(init, b"moov").map_err(malformed)?.ok_or_else(|| malformed("no moov box"))?;
    let mut video = None;
    for trak in boxes(moov) {
        let trak = trak.map_err(|(_, reason)| malformed(reason))?;
        if trak.kind != *b"trak" {
            continue;
        }
        if let Some(found) = video_trak(trak.body).map_err(malformed)? {
            video = Some(found);
            break;
        }
    }
    let (track_id, sample_entry) = video.ok_or(ThumbnailError::NoVideoTrack)?;
    let avcc = match &sample_entry.kind {
        b"avc1" | b"avc3" => avcc_of(sample_entry.body).map_err(malformed)?,
        other => {
            return Err(ThumbnailError::UnsupportedCodec {
                track_id,
                sample_entry: String::from_utf8_lossy(other).into_owned(),
            })
        }
    };
    let defaults = match child(moov, b"mvex").map_err(malformed)? {
        Some(mvex) => trex_defaults(mvex, track_id).map_err(malformed)?,
        None => SampleDefaults::default(),
    };
    Ok(VideoTrack { track_id, avcc, defaults })
}

/// The track id and first sample entry of `trak` if it is a video track (`hdlr` type `vide`).
fn video_trak(trak: &[u8]) -> Result<Option<(u32, Mp4Box<'_>)>, &'static str> {
    let mdia = child(trak, b"mdia")?.ok_or("a trak without mdia")?;
    let hdlr = child(mdia, b"hdlr")?.ok_or("an mdia without hdlr")?;
    let mut fields = Fields::new(hdlr);
    fields.skip(8).ok_or("hdlr is cut off")?; // version, flags, pre_defined
    if fields.fourcc().ok_or("hdlr is cut off")? != *b"vide" {
        return Ok(None);
    }
    let tkhd = child(trak, b"tkhd")?.ok_or("a trak without tkhd")?;
    let mut fields = Fields::new(tkhd);
    let (version, _) = fields.version_flags().ok_or("tkhd is cut off")?;
    // Creation and modification times: 32 bits each in version 0, 64 in version 1.
    fields.skip(if version == 1 { 16 } else { 8 }).ok_or("tkhd is cut off")?;
    let track_id = fields.u32().ok_or("tkhd is cut off")?;

    let minf = child(mdia, b"minf")?.ok_or("a video mdia without minf")?;
    let stbl = child(minf, b"stbl")?.ok_or("a video minf without stbl")?;
    let stsd = child(stbl, b"stsd")?.ok_or("a video stbl without stsd")?;
    let mut fields = Fields::new(stsd);
    fields.skip(8).ok_or("stsd is cut off")?; // version, flags, entry_count
    let entry = boxes(fields.rest()).next().ok_or("stsd has no sample entry")?.map_err(|(_, reason)| reason)?;
    Ok(Some((track_id, entry)))
}

/// The `avcC` body inside an `avc1`/`avc3` sample entry.
fn avcc_of(entry: &[u8]) -> Result<&[u8], &'static str> {
    // VisualSampleEntry fields before its child boxes: 6 reserved, data_reference_index,
    // 16 pre_defined/reserved, width, height, resolutions, reserved, frame_count, compressorname,
    // depth, pre_defined.
    const VISUAL_SAMPLE_ENTRY_FIELDS: usize = 78;
    let children = entry.get(VISUAL_SAMPLE_ENTRY_FIELDS..).ok_or("the avc1 sample entry is cut off")?;
    let avcc = child(children, b"avcC")?.ok_or("the avc1 sample entry has no avcC")?;
    // configurationVersion 1, then profile, compatibility, level, length size, SPS count. FFmpeg
    // would read anything else as Annex B, so insist on it here.
    if avcc.len() < 6 || avcc[0] != 1 {
        return Err("avcC is not an AVC decoder configuration record");
    }
    Ok(avcc)
}

/// The `trex` defaults of `track_id` in `mvex`.
fn trex_defaults(mvex: &[u8], track_id: u32) -> Result<SampleDefaults, &'static str> {
    for trex in boxes(mvex) {
        let trex = trex.map_err(|(_, reason)| reason)?;
        if trex.kind != *b"trex" {
            continue;
        }
        let mut fields = Fields::new(trex.body);
        let cut = "trex is cut off";
        fields.version_flags().ok_or(cut)?;
        if fields.u32().ok_or(cut)? != track_id {
            continue;
        }
        fields.skip(8).ok_or(cut)?; // default_sample_description_index, default_sample_duration
        let size = fields.u32().ok_or(cut)?;
        let flags = fields.u32().ok_or(cut)?;
        return Ok(SampleDefaults { size, flags });
    }
    Ok(SampleDefaults::default())
}

// ---------------------------------------------------------------------------------------------
// The fragments

/// `tfhd` flags.
const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x00_0002;
const TFHD_DEFAULT_DURATION: u32 = 0x00_0008;
const TFHD_DEFAULT_SIZE: u32 = 0x00_0010;
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags.
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x00_0004;
const TRUN_DURATION: u32 = 0x00_0100;
const TRUN_SIZE: u32 = 0x00_0200;
const TRUN_FLAGS: u32 = 0x00_0400;
const TRUN_COMPOSITION_OFFSET: u32 = 0x00_0800;
/// Sample flags bit `sample_is_non_sync_sample`; clear on keyframes.
const NON_SYNC_SAMPLE: u32 = 0x0001_0000;

/// Where in `media` the first sync sample of `track` lies.
///
/// Every `traf` is walked, not only the video one, because a `traf` without an explicit base
/// (neither base-data-offset nor default-base-is-moof) starts where the previous one's data ended.
fn first_keyframe(media: &[u8], track: &VideoTrack<'_>) -> Result<Range<usize>, ThumbnailError> {
    let mut top = boxes(media);
    top.cut_mdat = true;
    for moof in top {
        let moof = moof.map_err(|(offset, reason)| malformed_media(offset, reason))?;
        if moof.kind != *b"moof" {
            continue;
        }
        let at = |reason: &str| malformed_media(moof.start, &format!("moof: {reason}"));
        // The first traf's implicit base is the moof's first byte; later ones continue.
        let mut implicit_base = moof.start as u64;
        for traf in boxes(moof.body) {
            let traf = traf.map_err(|(_, reason)| at(reason))?;
            if traf.kind != *b"traf" {
                continue;
            }
            let header = track_fragment_header(traf.body, moof.start as u64, implicit_base, track).map_err(at)?;
            let video = header.track_id == track.track_id;
            let mut data = header.base;
            for trun in boxes(traf.body) {
                let trun = trun.map_err(|(_, reason)| at(reason))?;
                if trun.kind != *b"trun" {
                    continue;
                }
                let run = track_run(trun.body, &header, data).map_err(at)?;
                if video {
                    if let Some(sample) = run.keyframe {
                        return sample_range(media, track.track_id, sample);
                    }
                }
                data = run.end;
            }
            implicit_base = data;
        }
    }
    Err(ThumbnailError::NoKeyframe { track_id: track.track_id })
}

fn malformed_media(offset: usize, reason: &str) -> ThumbnailError {
    ThumbnailError::MalformedMedia { offset, reason: reason.to_owned() }
}

/// What a `tfhd` says: whose fragment it is, where its data is counted from, sample defaults.
#[derive(Debug, Clone, Copy)]
struct FragmentHeader {
    track_id: u32,
    /// Offset in the media that `trun` data offsets count from.
    base: u64,
    defaults: SampleDefaults,
}

fn track_fragment_header(
    traf: &[u8],
    moof_start: u64,
    implicit_base: u64,
    video: &VideoTrack<'_>,
) -> Result<FragmentHeader, &'static str> {
    let tfhd = child(traf, b"tfhd")?.ok_or("a traf without tfhd")?;
    let cut = "tfhd is cut off";
    let mut fields = Fields::new(tfhd);
    let (_, flags) = fields.version_flags().ok_or(cut)?;
    let track_id = fields.u32().ok_or(cut)?;
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        // An offset into a file we do not have (CMAF forbids it: default-base-is-moof instead).
        return Err("tfhd has an explicit base data offset, which CMAF does not allow");
    }
    if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        fields.skip(4).ok_or(cut)?;
    }
    if flags & TFHD_DEFAULT_DURATION != 0 {
        fields.skip(4).ok_or(cut)?;
    }
    // Other tracks' trex defaults are not kept: they would only place a later traf that has
    // neither base flag, which CMAF (ours and FFmpeg's writers included) does not produce.
    let mut defaults = if track_id == video.track_id { video.defaults } else { SampleDefaults::default() };
    if flags & TFHD_DEFAULT_SIZE != 0 {
        defaults.size = fields.u32().ok_or(cut)?;
    }
    if flags & TFHD_DEFAULT_FLAGS != 0 {
        defaults.flags = fields.u32().ok_or(cut)?;
    }
    let base = if flags & TFHD_DEFAULT_BASE_IS_MOOF != 0 { moof_start } else { implicit_base };
    Ok(FragmentHeader { track_id, base, defaults })
}

/// A `trun` read: its first sync sample (offset, size), and where its data ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrackRun {
    keyframe: Option<(u64, u32)>,
    end: u64,
}

/// Reads a `trun` whose data starts at `data` unless it carries its own offset from the base.
fn track_run(trun: &[u8], header: &FragmentHeader, data: u64) -> Result<TrackRun, &'static str> {
    let cut = "trun is cut off";
    let mut fields = Fields::new(trun);
    let (_, flags) = fields.version_flags().ok_or(cut)?;
    let count = fields.u32().ok_or(cut)?;
    let mut pos = data;
    if flags & TRUN_DATA_OFFSET != 0 {
        let offset = fields.u32().ok_or(cut)? as i32;
        pos = header.base.checked_add_signed(i64::from(offset)).ok_or("a trun data offset points before the media")?;
    }
    let first_flags = match flags & TRUN_FIRST_SAMPLE_FLAGS {
        0 => None,
        _ => Some(fields.u32().ok_or(cut)?),
    };
    let per_sample = |bit: u32| flags & bit != 0;
    let entry_len = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_COMPOSITION_OFFSET]
        .into_iter()
        .filter(|&bit| per_sample(bit))
        .count()
        * 4;
    let entries = fields.rest();
    if entry_len == 0 {
        // Every sample has the default size, and all but the first the default flags: no need to
        // walk a count that may say four billion.
        let first = first_flags.unwrap_or(header.defaults.flags);
        let keyframe = match count {
            0 => None,
            _ if is_sync(first) => Some(pos),
            1 => None,
            _ if is_sync(header.defaults.flags) => pos.checked_add(u64::from(header.defaults.size)),
            _ => None,
        };
        let len = u64::from(count).checked_mul(u64::from(header.defaults.size));
        let end = len.and_then(|len| pos.checked_add(len)).ok_or("a trun's data size overflows")?;
        return Ok(TrackRun { keyframe: keyframe.map(|at| (at, header.defaults.size)), end });
    }
    // Each sample takes at least four bytes here, so the loop is bounded by the box's size.
    if (entries.len() / entry_len) < count as usize {
        return Err("trun is shorter than its sample count says");
    }
    let mut keyframe = None;
    let mut samples = Fields::new(entries);
    for index in 0..count {
        if per_sample(TRUN_DURATION) {
            samples.skip(4).ok_or(cut)?;
        }
        let size = if per_sample(TRUN_SIZE) { samples.u32().ok_or(cut)? } else { header.defaults.size };
        let mut sample_flags = if per_sample(TRUN_FLAGS) { samples.u32().ok_or(cut)? } else { header.defaults.flags };
        if index == 0 {
            sample_flags = first_flags.unwrap_or(sample_flags);
        }
        if per_sample(TRUN_COMPOSITION_OFFSET) {
            samples.skip(4).ok_or(cut)?;
        }
        if keyframe.is_none() && is_sync(sample_flags) {
            keyframe = Some((pos, size));
        }
        pos = pos.checked_add(u64::from(size)).ok_or("a trun's data size overflows")?;
    }
    Ok(TrackRun { keyframe, end: pos })
}

fn is_sync(sample_flags: u32) -> bool {
    sample_flags & NON_SYNC_SAMPLE == 0
}

/// The bytes of sample (`start`, `size`) if they are all in `media`.
fn sample_range(media: &[u8], track_id: u32, (start, size): (u64, u32)) -> Result<Range<usize>, ThumbnailError> {
    let end = start.saturating_add(u64::from(size));
    let range = usize::try_from(start).ok().zip(usize::try_from(end).ok()).map(|(start, end)| start..end);
    match range {
        Some(range) if range.end <= media.len() => Ok(range),
        _ => Err(ThumbnailError::KeyframeTruncated { track_id, start, end, len: media.len() }),
    }
}

// ---------------------------------------------------------------------------------------------
// Pictures

/// The picture of one H.264 access unit (AVCC) whose parameter sets are in `avcc`.
fn decode(avcc: &[u8], access_unit: &[u8]) -> Result<frame::Video, ThumbnailError> {
    let fail = |what: &str, e: ffmpeg_next::Error| ThumbnailError::Decode(format!("{what}: {e}"));
    if access_unit.is_empty() {
        return Err(ThumbnailError::Decode("the keyframe sample is empty".into()));
    }
    let codec =
        decoder::find(codec::Id::H264).ok_or_else(|| ThumbnailError::Decode("FFmpeg has no H.264 decoder".into()))?;
    let mut context = codec::Context::new_with_codec(codec);
    if !ffi::set_extradata(&mut context, avcc) {
        return Err(ThumbnailError::Decode("could not hand the decoder its parameter sets".into()));
    }
    // One thread (FFmpeg's default): a single frame gains little from more, and thumbnails must
    // not compete with the ladder's encoders for cores.
    let mut decoder = context.decoder().video().map_err(|e| fail("opening the H.264 decoder", e))?;
    let mut packet = Packet::copy(access_unit);
    packet.set_flags(packet::Flags::KEY);
    decoder.send_packet(&packet).map_err(|e| fail("the keyframe", e))?;
    // End of stream: the decoder hands out the frame now instead of waiting for reorder delay.
    decoder.send_eof().map_err(|e| fail("flushing the decoder", e))?;
    let mut picture = frame::Video::empty();
    decoder.receive_frame(&mut picture).map_err(|e| fail("the keyframe decoded to no picture", e))?;
    if picture.width() == 0 || picture.height() == 0 {
        return Err(ThumbnailError::Decode("the decoded picture is empty".into()));
    }
    if picture.is_corrupt() || picture.has_decode_errors() {
        // A concealed (smeared) picture makes a worse poster than none; the next segment will do.
        return Err(ThumbnailError::Decode("the keyframe decoded with errors".into()));
    }
    Ok(picture)
}

/// The thumbnail size of `picture`: its display width (sample aspect ratio applied) capped at
/// `max_width`, height in proportion; both even (4:2:0 chroma) and at least 2.
fn fit(picture: &frame::Video, max_width: u32) -> (u32, u32) {
    let sar = picture.aspect_ratio();
    fit_size(picture.width(), picture.height(), (sar.numerator(), sar.denominator()), max_width)
}

fn fit_size(width: u32, height: u32, (sar_num, sar_den): (i32, i32), max_width: u32) -> (u32, u32) {
    // u128: no product of two u32-sized values can overflow, whatever the SPS claims.
    let (width, height) = (u128::from(width.max(1)), u128::from(height.max(1)));
    // An unset (0/1) or absurd sample aspect ratio means square pixels.
    let display_width = match (u128::try_from(sar_num), u128::try_from(sar_den)) {
        (Ok(num @ 1..), Ok(den @ 1..)) if num <= 4 * den && den <= 4 * num => (width * num + den / 2) / den,
        _ => width,
    }
    .max(1);
    let out_width = (display_width.min(u128::from(max_width)) & !1).max(2);
    // Nearest even height, never taller than the source.
    let out_height = ((height * out_width + display_width) / (2 * display_width) * 2).min(height & !1).max(2);
    // Both are at most max_width or the source height (or 2), so they fit in u32.
    (u32::try_from(out_width).unwrap_or(u32::MAX), u32::try_from(out_height).unwrap_or(u32::MAX))
}

/// `picture` scaled to `width`x`height` full-range 4:2:0 and encoded as a baseline JPEG.
fn encode(picture: &frame::Video, width: u32, height: u32) -> Result<Thumbnail, ThumbnailError> {
    let fail = |what: &str, e: ffmpeg_next::Error| ThumbnailError::Encode(format!("{what}: {e}"));
    // Bicubic: FFmpeg's own default for downscaling, sharp enough for a 320-wide tile.
    let mut scaler = scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        Pixel::YUVJ420P,
        width,
        height,
        scaling::Flags::BICUBIC,
    )
    .map_err(|e| fail("setting up the scaler", e))?;
    let mut scaled = frame::Video::empty();
    scaler.run(picture, &mut scaled).map_err(|e| fail("scaling", e))?;
    scaled.set_pts(Some(0));

    let codec =
        encoder::find(codec::Id::MJPEG).ok_or_else(|| ThumbnailError::Encode("FFmpeg has no MJPEG encoder".into()))?;
    let mut jpeg = codec::Context::new_with_codec(codec).encoder().video().map_err(|e| fail("the MJPEG encoder", e))?;
    jpeg.set_width(width);
    jpeg.set_height(height);
    jpeg.set_format(Pixel::YUVJ420P);
    jpeg.set_time_base(Rational::new(1, 1));
    // A fixed quantiser: with qmin = qmax rate control has no choice, which is what `-q:v` does
    // without needing the frame's quality field (no safe accessor).
    let mut options = Dictionary::new();
    options.set("qmin", &QSCALE.to_string());
    options.set("qmax", &QSCALE.to_string());
    let mut jpeg = jpeg.open_as_with(codec, options).map_err(|e| fail("opening the MJPEG encoder", e))?;
    jpeg.send_frame(&scaled).map_err(|e| fail("the picture", e))?;
    jpeg.send_eof().map_err(|e| fail("flushing the encoder", e))?;
    let mut packet = Packet::empty();
    jpeg.receive_packet(&mut packet).map_err(|e| fail("no JPEG came out", e))?;
    let bytes = packet.data().filter(|data| !data.is_empty());
    let jpeg = bytes.ok_or_else(|| ThumbnailError::Encode("the JPEG is empty".into()))?.to_vec();
    Ok(Thumbnail { jpeg, width, height })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use media::cmaf::{self, AudioConfig, Sample, TrackRun as Run, VideoCodec, VideoConfig};

    use super::*;

    #[test]
    fn sizes_keep_the_display_aspect_stay_even_and_never_grow() {
        let square = (1, 1);
        assert_eq!(fit_size(640, 360, square, 320), (320, 180));
        assert_eq!(fit_size(1920, 1080, square, 320), (320, 180));
        assert_eq!(fit_size(200, 100, square, 320), (200, 100), "never upscaled");
        assert_eq!(fit_size(333, 201, square, 320), (320, 194));
        assert_eq!(fit_size(333, 201, square, 321), (320, 194), "an odd limit rounds down");
        assert_eq!(fit_size(101, 101, square, 320), (100, 100), "odd sizes round down to even");
        assert_eq!(fit_size(1, 1, square, 320), (2, 2));
        assert_eq!(fit_size(640, 360, square, 0), (2, 2));
        assert_eq!(fit_size(360, 640, square, 320), (320, 568), "portrait");
        // Anamorphic 1440x1080 with 4:3 pixels displays as 1920x1080.
        assert_eq!(fit_size(1440, 1080, (4, 3), 320), (320, 180));
        assert_eq!(fit_size(1440, 1080, (0, 1), 320), (320, 240), "unknown ratio: square pixels");
        assert_eq!(fit_size(1440, 1080, (1000, 1), 320), (320, 240), "absurd ratio: square pixels");
        assert_eq!(fit_size(u32::MAX, u32::MAX, (1, 1), u32::MAX), (u32::MAX - 1, u32::MAX - 1));
        assert_eq!(fit_size(u32::MAX, u32::MAX, (4, 1), u32::MAX), (u32::MAX - 1, 1 << 30));
    }

    fn video_config() -> VideoConfig {
        VideoConfig {
            codec: VideoCodec::Avc1,
            sps: vec![vec![0x67, 0x64, 0x00, 0x1f, 0xac]],
            pps: vec![vec![0x68, 0xee, 0x3c, 0x80]],
            width: 640,
            height: 360,
            codec_string: "avc1.64001f".into(),
        }
    }

    fn audio_config() -> AudioConfig {
        AudioConfig { asc: vec![0x11, 0x90], sample_rate: 48_000, channels: 2, codec_string: "mp4a.40.2".into() }
    }

    fn sample(keyframe: bool, data: &'static [u8]) -> Sample {
        Sample { dts: 0, pts_offset: 0, duration: 3000, keyframe, data: Bytes::from_static(data) }
    }

    /// Our own packager's header and fragments are what this reads most: its keyframe is found
    /// behind audio and a non-sync sample, in the second fragment.
    #[test]
    fn finds_the_first_keyframe_in_what_our_packager_writes() {
        let init = cmaf::init_segment(Some(&video_config()), Some(&audio_config())).unwrap();
        let track = video_track(&init).unwrap();
        assert_eq!(track.track_id, cmaf::VIDEO_TRACK_ID);
        assert_eq!(track.avcc[0], 1);

        let audio = [sample(true, b"aac-1"), sample(true, b"aac-2")];
        let delta = [sample(false, b"delta")];
        let first = cmaf::fragment(
            1,
            &[
                Run { track_id: cmaf::AUDIO_TRACK_ID, base_media_decode_time: 0, samples: &audio },
                Run { track_id: cmaf::VIDEO_TRACK_ID, base_media_decode_time: 0, samples: &delta },
            ],
        )
        .unwrap();
        let video = [sample(false, b"delta-2"), sample(true, b"THE-KEYFRAME"), sample(true, b"later")];
        let second =
            cmaf::fragment(2, &[Run { track_id: cmaf::VIDEO_TRACK_ID, base_media_decode_time: 3000, samples: &video }])
                .unwrap();
        let media = [first.as_ref(), second.as_ref()].concat();
        let range = first_keyframe(&media, &track).unwrap();
        assert_eq!(&media[range], b"THE-KEYFRAME");

        // Cut inside that keyframe: said so, not a panic or a short slice.
        let cut = &media[..media.len() - 8];
        assert!(matches!(first_keyframe(cut, &track), Err(ThumbnailError::KeyframeTruncated { .. })));
        // Only delta frames: no keyframe.
        assert_eq!(first_keyframe(&first, &track), Err(ThumbnailError::NoKeyframe { track_id: 1 }));
    }

    #[test]
    fn an_audio_only_header_has_no_video_track() {
        let init = cmaf::init_segment(None, Some(&audio_config())).unwrap();
        assert_eq!(video_track(&init), Err(ThumbnailError::NoVideoTrack));
    }

    /// A box header of `kind` with a body.
    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len() + 8).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn box_sizes_are_checked() {
        assert!(boxes(b"").next().is_none());
        assert!(boxes(b"\0\0\0").next().unwrap().is_err(), "a cut header");
        assert!(boxes(b"\0\0\0\x04moov").next().unwrap().is_err(), "smaller than its header");
        assert!(boxes(b"\0\0\0\x10moov").next().unwrap().is_err(), "past the end");
        assert!(boxes(b"\0\0\0\x01moov\0\0\0").next().unwrap().is_err(), "a cut 64-bit size");
        let large = boxes(b"\0\0\0\x01free\0\0\0\0\0\0\0\x12ab").next().unwrap().unwrap();
        assert_eq!(large.body, b"ab");
        let open_ended = boxes(b"\0\0\0\0mdatxyz").next().unwrap().unwrap();
        assert_eq!(open_ended.body, b"xyz");
        let mut cut = boxes(b"\0\0\0\x40mdatxyz");
        cut.cut_mdat = true;
        assert_eq!(cut.next().unwrap().unwrap().body, b"xyz", "media may end inside mdat");
    }

    /// A run that claims four billion samples with no per-sample fields is not walked.
    #[test]
    fn a_huge_sample_count_without_entries_is_not_walked() {
        let header =
            FragmentHeader { track_id: 1, base: 0, defaults: SampleDefaults { size: 10, flags: NON_SYNC_SAMPLE } };
        let mut trun = vec![0, 0, 0, 0];
        trun.extend_from_slice(&u32::MAX.to_be_bytes());
        let run = track_run(&trun, &header, 100).unwrap();
        assert_eq!(run, TrackRun { keyframe: None, end: 100 + u64::from(u32::MAX) * 10 });

        // The same count with per-sample sizes needs the bytes to back it.
        trun[3] = TRUN_SIZE as u8;
        trun[2] = (TRUN_SIZE >> 8) as u8;
        assert!(track_run(&trun, &header, 0).is_err());
    }

    #[test]
    fn hostile_headers_and_fragments_are_errors() {
        let init = cmaf::init_segment(Some(&video_config()), None).unwrap();
        let track = video_track(&init).unwrap();
        // A data offset pointing before the media.
        let mut trun = (0x0100_0000 | TRUN_DATA_OFFSET).to_be_bytes().to_vec();
        trun.extend_from_slice(&1u32.to_be_bytes());
        trun.extend_from_slice(&(-1000i32).to_be_bytes());
        let tfhd = [&TFHD_DEFAULT_BASE_IS_MOOF.to_be_bytes()[..], &1u32.to_be_bytes()].concat();
        let traf = [mp4_box(b"tfhd", &tfhd), mp4_box(b"trun", &trun)].concat();
        let moof = mp4_box(b"moof", &mp4_box(b"traf", &traf));
        assert!(matches!(first_keyframe(&moof, &track), Err(ThumbnailError::MalformedMedia { .. })));
        // An explicit base data offset.
        let tfhd = [&TFHD_BASE_DATA_OFFSET.to_be_bytes()[..], &1u32.to_be_bytes(), &[0; 8]].concat();
        let moof = mp4_box(b"moof", &mp4_box(b"traf", &mp4_box(b"tfhd", &tfhd)));
        assert!(matches!(first_keyframe(&moof, &track), Err(ThumbnailError::MalformedMedia { .. })));
        // Every prefix of a real header is an error, never a panic.
        for len in 0..init.len() {
            assert!(video_track(&init[..len]).is_err(), "prefix of {len} bytes");
        }
    }
}
