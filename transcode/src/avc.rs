//! H.264 byte formats between FFmpeg and the packager: encoders speak Annex B (start codes), CMAF
//! wants AVCC (4-byte length prefixes) and an `avcC` record.

use media::cmaf::{avc_codec_string, VideoCodec, VideoConfig};

/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B byte stream, without their start codes.
pub(crate) fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, begin)) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&(code, _)| code);
        // A 4-byte start code's leading zero belongs to no NAL unit.
        while end > begin && data[end - 1] == 0 && starts.get(k + 1).is_some() {
            end -= 1;
        }
        if end > begin {
            nals.push(&data[begin..end]);
        }
    }
    nals
}

/// Rewrites an Annex B access unit as AVCC (each NAL unit behind its 4-byte big-endian length).
pub(crate) fn annexb_to_avcc(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in annexb_nals(data) {
        let len = u32::try_from(nal.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// An `AVCDecoderConfigurationRecord` with 4-byte lengths, from the parameter sets of `config`
/// (what FFmpeg's H.264 decoder takes as extradata for AVCC samples).
pub(crate) fn avcc_record(config: &VideoConfig) -> Vec<u8> {
    let sps0 = config.sps.first().map(Vec::as_slice).unwrap_or_default();
    let byte = |i: usize| sps0.get(i).copied().unwrap_or(0);
    let mut out = vec![1, byte(1), byte(2), byte(3), 0xff, 0xe0 | (config.sps.len().min(31) as u8)];
    for sps in config.sps.iter().take(31) {
        out.extend_from_slice(&u16::try_from(sps.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(sps);
    }
    out.push(config.pps.len().min(255) as u8);
    for pps in config.pps.iter().take(255) {
        out.extend_from_slice(&u16::try_from(pps.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(pps);
    }
    out
}

/// The packager's view of an encoder's output track, from the encoder's global header (Annex B
/// SPS and PPS, as libx264 and the hardware encoders write it).
pub(crate) fn video_config(extradata: &[u8], width: u32, height: u32) -> Option<VideoConfig> {
    let nals = annexb_nals(extradata);
    let of_type = |t: u8| -> Vec<Vec<u8>> {
        nals.iter().filter(|n| n.first().is_some_and(|h| h & 0x1f == t)).map(|n| n.to_vec()).collect()
    };
    let (sps, pps) = (of_type(NAL_SPS), of_type(NAL_PPS));
    let codec_string = avc_codec_string(sps.first()?)?;
    if pps.is_empty() {
        return None;
    }
    Some(VideoConfig {
        codec: VideoCodec::Avc1,
        sps,
        pps,
        width: u16::try_from(width).ok()?,
        height: u16::try_from(height).ok()?,
        codec_string,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let stream = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0, 0, 1, 0x68, 0xee, 0, 0, 0, 1, 0x65, 0x88, 0x80];
        let nals = annexb_nals(&stream);
        assert_eq!(nals, [&[0x67, 0x64, 0x00, 0x1f][..], &[0x68, 0xee][..], &[0x65, 0x88, 0x80][..]]);
        assert_eq!(annexb_to_avcc(&stream[8..13]), [0, 0, 0, 2, 0x68, 0xee]);
        let config = video_config(&stream[..13], 640, 360).unwrap();
        assert_eq!(config.codec_string, "avc1.64001f");
        assert_eq!((config.sps.len(), config.pps.len()), (1, 1));
        assert_eq!(
            avcc_record(&config),
            [1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0x00, 0x1f, 1, 0, 2, 0x68, 0xee]
        );
        assert!(video_config(&stream[13..], 640, 360).is_none());
    }
}
