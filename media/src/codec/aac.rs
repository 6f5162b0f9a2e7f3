//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), ADTS frame headers (as MPEG-TS
//! carries AAC) and the RFC 6381 codec string.

use bytes::Bytes;

use super::{BitReader, CodecError};

/// Samples in one AAC frame (every object type we package).
pub const FRAME_SAMPLES: u32 = 1024;

/// Sampling frequencies by index, shared by the AudioSpecificConfig and ADTS headers.
const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Parsed AAC AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The AudioSpecificConfig as received (for an MP4 `esds` box).
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = HE-AAC, 29 = HE-AACv2).
    pub object_type: u8,
    /// Sampling rate of the core (AAC) layer.
    pub sample_rate: u32,
    /// Channel count; 0 when the configuration is in a program config element.
    pub channels: u8,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig, including explicit SBR/PS signalling.
    pub fn parse(asc: &Bytes) -> Result<Self, CodecError> {
        let err = CodecError::InvalidAudioSpecificConfig;
        let mut r = BitReader::new(asc);
        let truncated = || err("truncated");
        let object_type = |r: &mut BitReader<'_>| -> Option<u32> {
            let t = r.bits(5)?;
            if t == 31 {
                Some(32 + r.bits(6)?)
            } else {
                Some(t)
            }
        };
        let sample_rate = |r: &mut BitReader<'_>| -> Result<u32, CodecError> {
            match r.bits(4).ok_or_else(truncated)? {
                15 => r.bits(24).ok_or_else(truncated),
                i => SAMPLE_RATES.get(i as usize).copied().ok_or(err("reserved sampling frequency index")),
            }
        };
        let aot = object_type(&mut r).ok_or_else(truncated)?;
        if aot == 0 {
            return Err(err("audio object type 0"));
        }
        let rate = sample_rate(&mut r)?;
        if rate == 0 {
            return Err(err("sampling frequency 0"));
        }
        let channels = match r.bits(4).ok_or_else(truncated)? {
            c @ 0..=6 => c as u8,
            7 | 12 | 14 => 8,
            11 => 7,
            13 => 24,
            _ => return Err(err("reserved channel configuration")),
        };
        if aot == 5 || aot == 29 {
            // Explicit SBR/PS: extension sampling frequency and the underlying object type follow.
            sample_rate(&mut r)?;
            object_type(&mut r).ok_or_else(truncated)?;
        }
        // At most 32 + 63.
        Ok(AacConfig { asc: asc.clone(), object_type: aot as u8, sample_rate: rate, channels })
    }

    /// RFC 6381 codec string, `mp4a.40.{object type}`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// RFC 6381 codec string of an AAC track: `mp4a.40.{audio object type}` from the first five bits
/// of the AudioSpecificConfig (`mp4a.40.2` for AAC-LC). Escaped object types (31) are read too.
pub fn codec_string(asc: &[u8]) -> Option<String> {
    let first = *asc.first()?;
    let mut aot = first >> 3;
    if aot == 31 {
        let second = *asc.get(1)?;
        aot = 32 + (((first & 0x07) << 3) | (second >> 5));
    }
    Some(format!("mp4a.40.{aot}"))
}

/// A parsed ADTS frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// 7, or 9 with a CRC.
    pub header_len: usize,
    /// Header included.
    pub frame_len: usize,
    /// Raw data blocks in the frame minus one.
    pub raw_blocks: u8,
    pub sample_rate: u32,
    /// The equivalent 2-byte AudioSpecificConfig.
    pub asc: [u8; 2],
}

/// Why an ADTS header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdtsError {
    #[error("the ADTS frame continues past the data")]
    Incomplete,
    #[error("not an ADTS header")]
    NoSync,
}

/// Parses the ADTS header at the start of `data` and checks the whole frame is there.
pub fn parse_adts_header(data: &[u8]) -> Result<AdtsHeader, AdtsError> {
    let Some(h) = data.get(..7) else { return Err(AdtsError::Incomplete) };
    if h[0] != 0xFF || h[1] & 0xF6 != 0xF0 {
        return Err(AdtsError::NoSync);
    }
    let protection_absent = h[1] & 0x01 != 0;
    let profile = h[2] >> 6;
    let freq_index = (h[2] >> 2) & 0x0f;
    let channels = ((h[2] & 0x01) << 2) | (h[3] >> 6);
    let frame_len = (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
    let raw_blocks = h[6] & 0x03;
    let header_len = if protection_absent { 7 } else { 9 };
    let sample_rate = *SAMPLE_RATES.get(usize::from(freq_index)).ok_or(AdtsError::NoSync)?;
    if frame_len <= header_len {
        return Err(AdtsError::NoSync);
    }
    if frame_len > data.len() {
        return Err(AdtsError::Incomplete);
    }
    let object_type = profile + 1;
    let asc = [(object_type << 3) | (freq_index >> 1), ((freq_index & 1) << 7) | (channels << 3)];
    Ok(AdtsHeader { header_len, frame_len, raw_blocks, sample_rate, asc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_strings() {
        assert_eq!(codec_string(&[0x12, 0x10]).as_deref(), Some("mp4a.40.2"));
        assert_eq!(codec_string(&[0x2b, 0x92]).as_deref(), Some("mp4a.40.5"));
        assert_eq!(codec_string(&[0xf8, 0x20]).as_deref(), Some("mp4a.40.33"));
        assert_eq!(codec_string(&[]), None);
    }

    #[test]
    fn audio_specific_configs() {
        // AAC-LC, 44.1 kHz, stereo.
        let c = AacConfig::parse(&Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels, c.codec_string().as_str()), (2, 44100, 2, "mp4a.40.2"));
        // HE-AAC with explicit SBR: 24 kHz core, extension 48 kHz, underlying AAC-LC.
        let c = AacConfig::parse(&Bytes::from_static(&[0x2b, 0x11, 0x88])).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels, c.codec_string().as_str()), (5, 24000, 2, "mp4a.40.5"));
        assert!(AacConfig::parse(&Bytes::from_static(&[0x17, 0x90])).is_err()); // reserved rate index 14
        assert!(AacConfig::parse(&Bytes::new()).is_err());
    }

    #[test]
    fn adts_header_gives_the_audio_specific_config() {
        // AAC-LC, 48 kHz (index 3), stereo, 7-byte header, frame of 20 bytes.
        let len = 20usize;
        let mut f = vec![0xFF, 0xF1, 0x4C, 0x80, (len >> 3) as u8, ((len & 7) << 5) as u8 | 0x1F, 0xFC];
        f.resize(len, 0);
        let h = parse_adts_header(&f).unwrap();
        assert_eq!(h.asc, [0x11, 0x90]);
        assert_eq!(h.sample_rate, 48000);
        assert_eq!(h.frame_len, 20);
        assert_eq!(parse_adts_header(&f[..10]), Err(AdtsError::Incomplete));
        assert_eq!(parse_adts_header(&[0x47; 10]), Err(AdtsError::NoSync));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = AacConfig::parse(&Bytes::from(bytes.clone()));
            let _ = parse_adts_header(&bytes);
            let _ = codec_string(&bytes);
        }
    }
}
