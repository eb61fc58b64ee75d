//! Fragmented MP4 for HLS: init segments (`ftyp` + `moov`) and fragments (`moof` + `mdat`).
//!
//! The layout follows ISO/IEC 14496-12 (ISO base media file format) §8.8 "movie fragments" and
//! the fragment structure of ISO/IEC 23000-19 (CMAF): an init segment with no samples (empty
//! sample tables, an `mvex` with one `trex` per track) and media as `moof` + `mdat` pairs whose
//! `tfhd` sets `default-base-is-moof` and whose `trun` data offsets count from the `moof`.
//! One fragment carries both tracks (two `traf`s) so audio and video are muxed, which is what
//! HLS wants from a single-rendition playlist; strictly, a CMAF *track file* holds one track,
//! so the `cmfc` brand is not claimed.
//!
//! Every box goes through [`mp4_atom`]: this module only chooses the values.
//!
//! Invariants:
//! - Video is `avc1` + `avcC` (SPS/PPS out of band, from the caller's
//!   AVCDecoderConfigurationRecord) at [`VIDEO_TIMESCALE`]; AAC is `mp4a` + `esds` carrying the
//!   AudioSpecificConfig at its sample rate; Opus is `Opus` + `dOps` at 48 kHz.
//! - Track ids are fixed: [`VIDEO_TRACK_ID`] and [`AUDIO_TRACK_ID`], whichever tracks exist.
//! - `trun` is version 1 (signed composition offsets), with per-sample duration, size, flags
//!   and composition offset; sync samples are flagged `sample_depends_on = 2`, others
//!   `sample_depends_on = 1` + `sample_is_non_sync_sample` (ISO/IEC 14496-12 §8.8.3.1).
//! - Nothing here panics on caller input: bad parameters are an [`Fmp4Error`].

use std::fmt;

use bytes::Bytes;
use mp4_atom::{
    Atom, Audio, Avc1, Avcc, Codec, Dinf, Dops, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Mdat, Mdhd,
    Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd,
    Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd, esds,
};

use crate::h264::{AvcConfig, H264Error};

/// Timescale of the video track: the 90 kHz RTP clock of H.264.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Timescale of an Opus track: Opus always runs at 48 kHz (RFC 7845 §5.1).
pub const OPUS_TIMESCALE: u32 = 48_000;
/// `track_ID` of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// `track_ID` of the audio track (also when there is no video).
pub const AUDIO_TRACK_ID: u32 = 2;

/// Sample flags (ISO/IEC 14496-12 §8.8.3.1) of a sync sample: depends on no other sample.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: depends on others, `sample_is_non_sync_sample` set.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// An H.264 video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1.2) as RTMP sends it. The
    /// samples' NAL unit length prefixes must have the record's `lengthSizeMinusOne` + 1 bytes
    /// (4 for every encoder in practice).
    pub avc_config: Vec<u8>,
    /// Coded picture size in pixels, for `tkhd` and the `avc1` sample entry.
    pub width: u16,
    pub height: u16,
}

/// An audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTrack {
    /// AAC: `config` is the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1); the track's
    /// timescale is `sample_rate`.
    Aac {
        config: Vec<u8>,
        sample_rate: u32,
        channels: u16,
    },
    /// Opus (mono or stereo, channel mapping family 0); timescale 48 kHz.
    Opus { channels: u16 },
}

impl AudioTrack {
    /// The track's timescale: the AAC sample rate, or 48 kHz for Opus.
    pub fn timescale(&self) -> u32 {
        match self {
            AudioTrack::Aac { sample_rate, .. } => *sample_rate,
            AudioTrack::Opus { .. } => OPUS_TIMESCALE,
        }
    }

    /// The duration of one frame in the track's timescale, for the last sample of a stream
    /// (whose duration no following sample tells): 1024 samples for AAC-LC, 20 ms for Opus.
    pub fn typical_frame_duration(&self) -> u32 {
        match self {
            AudioTrack::Aac { .. } => 1024,
            AudioTrack::Opus { .. } => OPUS_TIMESCALE / 50,
        }
    }
}

/// The tracks of one init segment: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tracks {
    pub video: Option<VideoTrack>,
    pub audio: Option<AudioTrack>,
}

/// Why an init segment or fragment could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fmp4Error {
    /// Neither video nor audio.
    NoTracks,
    /// The AVC configuration record does not parse.
    AvcConfig(H264Error),
    /// Width or height is zero.
    NoDimensions,
    /// An AudioSpecificConfig shorter than its two mandatory bytes.
    AacConfigTruncated,
    /// A zero AAC sample rate or channel count.
    AacParameters { sample_rate: u32, channels: u16 },
    /// Opus with other than one or two channels (would need a channel mapping table).
    OpusChannels(u16),
    /// A fragment with no samples at all.
    EmptyFragment,
    /// mp4-atom refused to encode a box (its message).
    Encode(String),
}

impl fmt::Display for Fmp4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fmp4Error::NoTracks => f.write_str("no video and no audio track"),
            Fmp4Error::AvcConfig(error) => write!(f, "invalid H.264 configuration: {error}"),
            Fmp4Error::NoDimensions => f.write_str("video width or height is zero"),
            Fmp4Error::AacConfigTruncated => {
                f.write_str("AAC AudioSpecificConfig is shorter than 2 bytes")
            }
            Fmp4Error::AacParameters {
                sample_rate,
                channels,
            } => write!(
                f,
                "AAC with {sample_rate} Hz and {channels} channels cannot be packaged"
            ),
            Fmp4Error::OpusChannels(channels) => write!(
                f,
                "Opus with {channels} channels is not supported (mono or stereo only)"
            ),
            Fmp4Error::EmptyFragment => f.write_str("a fragment needs at least one sample"),
            Fmp4Error::Encode(error) => write!(f, "MP4 box encoding failed: {error}"),
        }
    }
}

impl std::error::Error for Fmp4Error {}

impl From<mp4_atom::Error> for Fmp4Error {
    fn from(error: mp4_atom::Error) -> Self {
        Fmp4Error::Encode(error.to_string())
    }
}

/// Checks the tracks can be packaged, without building anything.
pub fn validate(tracks: &Tracks) -> Result<(), Fmp4Error> {
    if tracks.video.is_none() && tracks.audio.is_none() {
        return Err(Fmp4Error::NoTracks);
    }
    if let Some(video) = &tracks.video {
        avcc(video)?;
    }
    if let Some(audio) = &tracks.audio {
        audio_sample_entry(audio)?;
    }
    Ok(())
}

/// The init segment of `tracks`: `ftyp` + `moov` (with `mvex`), no samples.
pub fn init_segment(tracks: &Tracks) -> Result<Bytes, Fmp4Error> {
    validate(tracks)?;
    let mut traks = Vec::new();
    let mut trex = Vec::new();
    if let Some(video) = &tracks.video {
        traks.push(video_trak(video)?);
        trex.push(trex_for(VIDEO_TRACK_ID));
    }
    if let Some(audio) = &tracks.audio {
        traks.push(audio_trak(audio)?);
        trex.push(trex_for(AUDIO_TRACK_ID));
    }
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"isom"),
            FourCC::new(b"mp41"),
        ],
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK_ID + 1,
            ..Mvhd::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: traks,
        ..Moov::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}

fn trex_for(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Trex::default()
    }
}

/// The `avcC` box of a video track, from the caller's record. mp4-atom's own parser keeps
/// the High-profile extension (chroma format, bit depths); the crate's stricter
/// [`AvcConfig::parse`] vets the record first.
fn avcc(video: &VideoTrack) -> Result<Avcc, Fmp4Error> {
    let config = AvcConfig::parse(&video.avc_config).map_err(Fmp4Error::AvcConfig)?;
    if video.width == 0 || video.height == 0 {
        return Err(Fmp4Error::NoDimensions);
    }
    let mut body = video.avc_config.as_slice();
    match Avcc::decode_body(&mut body) {
        Ok(avcc) => Ok(avcc),
        // A malformed extension after the PPS: keep what decoders need.
        Err(_) => Ok(Avcc {
            configuration_version: 1,
            avc_profile_indication: config.profile_idc(),
            profile_compatibility: config.profile_compatibility(),
            avc_level_indication: config.level_idc(),
            // `nal_length_size` is 1, 2 or 4: it fits.
            length_size: config.nal_length_size().bytes() as u8,
            sequence_parameter_sets: config.sps().to_vec(),
            picture_parameter_sets: config.pps().to_vec(),
            ext: None,
        }),
    }
}

fn dinf() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn empty_stbl(codec: Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stco: Some(Stco::default()),
        ..Stbl::default()
    }
}

fn video_trak(video: &VideoTrack) -> Result<Trak, Fmp4Error> {
    let avc1 = Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width: video.width,
            height: video.height,
            ..Visual::default()
        },
        avcc: avcc(video)?,
        btrt: None,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
        spatial: None,
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK_ID,
            enabled: true,
            in_movie: true,
            width: video.width.into(),
            height: video.height.into(),
            ..Tkhd::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: VIDEO_TIMESCALE,
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(b"vide"),
                name: "roomcast video".into(),
            },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: dinf(),
                stbl: empty_stbl(avc1.into()),
                ..Minf::default()
            },
        },
        ..Trak::default()
    })
}

fn audio_sample_entry(audio: &AudioTrack) -> Result<Codec, Fmp4Error> {
    match audio {
        AudioTrack::Aac {
            config,
            sample_rate,
            channels,
        } => {
            if config.len() < 2 {
                return Err(Fmp4Error::AacConfigTruncated);
            }
            if *sample_rate == 0 || *channels == 0 {
                return Err(Fmp4Error::AacParameters {
                    sample_rate: *sample_rate,
                    channels: *channels,
                });
            }
            let esds = Esds {
                es_desc: esds::EsDescriptor {
                    es_id: AUDIO_TRACK_ID as u16,
                    depends_on_es_id: None,
                    url: None,
                    ocr_es_id: None,
                    stream_priority: 0,
                    dec_config: esds::DecoderConfig {
                        // ISO/IEC 14496-1 objectTypeIndication 0x40: MPEG-4 Audio.
                        object_type_indication: 0x40,
                        // streamType 5: AudioStream.
                        stream_type: 5,
                        up_stream: 0,
                        buffer_size_db: Default::default(),
                        max_bitrate: 0,
                        avg_bitrate: 0,
                        dec_specific: Some(esds::DecoderSpecific {
                            // A view of the config's first bits; `raw` is what is written.
                            profile: config[0] >> 3,
                            freq_index: ((config[0] & 0x07) << 1) | (config[1] >> 7),
                            chan_conf: (config[1] >> 3) & 0x0f,
                            raw: config.clone(),
                        }),
                    },
                    sl_config: esds::SLConfig::default(),
                },
            };
            Ok(Mp4a {
                audio: audio_fields(*channels, *sample_rate),
                esds,
                btrt: None,
                taic: None,
            }
            .into())
        }
        AudioTrack::Opus { channels } => {
            if !(1..=2).contains(channels) {
                return Err(Fmp4Error::OpusChannels(*channels));
            }
            Ok(Opus {
                audio: audio_fields(*channels, OPUS_TIMESCALE),
                dops: Dops {
                    output_channel_count: *channels as u8,
                    pre_skip: 0,
                    input_sample_rate: OPUS_TIMESCALE,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            }
            .into())
        }
    }
}

/// The AudioSampleEntry fields. `samplerate` is 16.16 fixed point; rates above 65535 Hz do not
/// fit and are written as 0 (decoders take the rate from the decoder configuration).
fn audio_fields(channels: u16, sample_rate: u32) -> Audio {
    Audio {
        data_reference_index: 1,
        channel_count: channels,
        sample_size: 16,
        sample_rate: u16::try_from(sample_rate).unwrap_or(0).into(),
    }
}

fn audio_trak(audio: &AudioTrack) -> Result<Trak, Fmp4Error> {
    Ok(Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK_ID,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Tkhd::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: audio.timescale(),
                language: "und".into(),
                ..Mdhd::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(b"soun"),
                name: "roomcast audio".into(),
            },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: dinf(),
                stbl: empty_stbl(audio_sample_entry(audio)?),
                ..Minf::default()
            },
        },
        ..Trak::default()
    })
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSample {
    /// In the track's timescale.
    pub duration: u32,
    /// Presentation time minus decode time, in the track's timescale.
    pub cts_offset: i32,
    /// A sync sample (video IDR; every audio frame).
    pub keyframe: bool,
    pub data: Bytes,
}

/// The samples of one track in a fragment, consecutive in decode order.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// The decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_media_decode_time: u64,
    pub samples: &'a [FragmentSample],
}

/// One fragment: a `moof` with a `traf` per non-empty run, then one `mdat` holding the runs'
/// sample data in the same order.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, Fmp4Error> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    if runs.is_empty() {
        return Err(Fmp4Error::EmptyFragment);
    }
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: runs
            .iter()
            .map(|run| Traf {
                tfhd: Tfhd {
                    track_id: run.track_id,
                    default_base_is_moof: true,
                    ..Tfhd::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: run.base_media_decode_time,
                }),
                trun: vec![Trun {
                    // Set below, once the size of the `moof` is known.
                    data_offset: Some(0),
                    samples: run
                        .samples
                        .iter()
                        .map(|sample| TrunEntry {
                            duration: Some(sample.duration),
                            // Sizes were checked to fit when the mdat was sized below.
                            size: Some(u32::try_from(sample.data.len()).unwrap_or(u32::MAX)),
                            flags: Some(if sample.keyframe {
                                SYNC_SAMPLE_FLAGS
                            } else {
                                NON_SYNC_SAMPLE_FLAGS
                            }),
                            cts: Some(i64::from(sample.cts_offset)),
                        })
                        .collect::<Vec<_>>()
                        .into(),
                }],
                ..Traf::default()
            })
            .collect(),
    };
    let data_len: usize = runs
        .iter()
        .flat_map(|r| r.samples)
        .map(|s| s.data.len())
        .sum();
    // A 32-bit box size: the mdat header is 8 bytes only below 4 GiB (parts are far smaller).
    if u32::try_from(data_len + 8).is_err() {
        return Err(Fmp4Error::Encode("fragment larger than 4 GiB".into()));
    }

    // The data offsets do not change the size of the `moof` (each is a fixed 32-bit field),
    // so one sizing pass is exact.
    let mut sizing = Vec::new();
    moof.encode(&mut sizing)?;
    let mut offset = sizing.len() + 8; // + the mdat header
    for (traf, run) in moof.traf.iter_mut().zip(&runs) {
        traf.trun[0].data_offset = Some(
            i32::try_from(offset).map_err(|_| Fmp4Error::Encode("data offset overflow".into()))?,
        );
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }

    let mut data = Vec::with_capacity(data_len);
    for sample in runs.iter().flat_map(|r| r.samples) {
        data.extend_from_slice(&sample.data);
    }
    let mut out = Vec::with_capacity(sizing.len() + 8 + data_len);
    moof.encode(&mut out)?;
    if out.len() != sizing.len() {
        return Err(Fmp4Error::Encode("moof size changed between passes".into()));
    }
    Mdat { data }.encode(&mut out)?;
    Ok(Bytes::from(out))
}

/// The AVC sequence header of `ffmpeg -f lavfi -i testsrc2=size=160x120:rate=10 -c:v libx264
/// -f flv` (the record `h264.rs` tests parse): High profile with its extension.
#[cfg(test)]
pub(crate) const TEST_AVC_RECORD: &[u8] = &[
    0x01, 0x64, 0x00, 0x0a, 0xff, 0xe1, 0x00, 0x19, // header, 1 SPS of 25 bytes
    0x67, 0x64, 0x00, 0x0a, 0xac, 0xd9, 0x42, 0x84, 0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
    0x40, 0x00, 0x00, 0x05, 0x03, 0xc4, 0x89, 0x65, 0x80, // SPS
    0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, // 1 PPS of 6 bytes
    0xfd, 0xf8, 0xf8, 0x00, // High-profile extension
];

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode, TrunSamples};

    fn tracks() -> Tracks {
        Tracks {
            video: Some(VideoTrack {
                avc_config: TEST_AVC_RECORD.to_vec(),
                width: 160,
                height: 120,
            }),
            audio: Some(AudioTrack::Aac {
                config: vec![0x11, 0x90],
                sample_rate: 48_000,
                channels: 2,
            }),
        }
    }

    #[test]
    fn init_segment_decodes_back_with_both_tracks() {
        let init = init_segment(&tracks()).unwrap();
        let mut buf = init.as_ref();
        let ftyp = Ftyp::decode(&mut buf).unwrap();
        assert_eq!(ftyp.major_brand, FourCC::new(b"iso6"));
        let moov = Moov::decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.mvex.as_ref().unwrap().trex.len(), 2);
        let video = &moov.trak[0];
        assert_eq!(video.tkhd.track_id, VIDEO_TRACK_ID);
        assert_eq!(video.mdia.mdhd.timescale, 90_000);
        let Codec::Avc1(avc1) = &video.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("video sample entry is not avc1");
        };
        assert_eq!((avc1.visual.width, avc1.visual.height), (160, 120));
        assert_eq!(avc1.avcc.avc_profile_indication, 100);
        assert_eq!(avc1.avcc.length_size, 4);
        let audio = &moov.trak[1];
        assert_eq!(audio.mdia.mdhd.timescale, 48_000);
        let Codec::Mp4a(mp4a) = &audio.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("audio sample entry is not mp4a");
        };
        let specific = mp4a.esds.es_desc.dec_config.dec_specific.as_ref().unwrap();
        assert_eq!(specific.raw, vec![0x11, 0x90]);
    }

    #[test]
    fn opus_init_segment_has_dops_at_48_khz() {
        let init = init_segment(&Tracks {
            video: None,
            audio: Some(AudioTrack::Opus { channels: 2 }),
        })
        .unwrap();
        let mut buf = init.as_ref();
        Ftyp::decode(&mut buf).unwrap();
        let moov = Moov::decode(&mut buf).unwrap();
        assert_eq!(moov.trak.len(), 1);
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, 48_000);
        let Codec::Opus(opus) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not Opus");
        };
        assert_eq!(opus.dops.output_channel_count, 2);
    }

    #[test]
    fn bad_tracks_are_errors() {
        assert_eq!(init_segment(&Tracks::default()), Err(Fmp4Error::NoTracks));
        let mut bad = tracks();
        bad.video.as_mut().unwrap().avc_config = vec![1, 2, 3];
        assert!(matches!(init_segment(&bad), Err(Fmp4Error::AvcConfig(_))));
        let mut bad = tracks();
        bad.video.as_mut().unwrap().width = 0;
        assert_eq!(init_segment(&bad), Err(Fmp4Error::NoDimensions));
        let opus6 = Tracks {
            video: None,
            audio: Some(AudioTrack::Opus { channels: 6 }),
        };
        assert_eq!(init_segment(&opus6), Err(Fmp4Error::OpusChannels(6)));
        let mut bad = tracks();
        bad.audio = Some(AudioTrack::Aac {
            config: vec![0x11],
            sample_rate: 48_000,
            channels: 2,
        });
        assert_eq!(init_segment(&bad), Err(Fmp4Error::AacConfigTruncated));
    }

    #[test]
    fn fragment_offsets_point_at_each_tracks_data() {
        let video = [
            FragmentSample {
                duration: 3000,
                cts_offset: 6000,
                keyframe: true,
                data: Bytes::from_static(b"VIDEO-1"),
            },
            FragmentSample {
                duration: 3000,
                cts_offset: -3000,
                keyframe: false,
                data: Bytes::from_static(b"V2"),
            },
        ];
        let audio = [FragmentSample {
            duration: 1024,
            cts_offset: 0,
            keyframe: true,
            data: Bytes::from_static(b"AUDIO"),
        }];
        let bytes = fragment(
            7,
            &[
                TrackRun {
                    track_id: VIDEO_TRACK_ID,
                    base_media_decode_time: 90_000,
                    samples: &video,
                },
                TrackRun {
                    track_id: AUDIO_TRACK_ID,
                    base_media_decode_time: 48_000,
                    samples: &audio,
                },
            ],
        )
        .unwrap();
        let mut buf = bytes.as_ref();
        let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
            panic!("first box is not moof");
        };
        let Any::Mdat(_) = Any::decode(&mut buf).unwrap() else {
            panic!("second box is not mdat");
        };
        assert_eq!(moof.mfhd.sequence_number, 7);
        let v = &moof.traf[0];
        assert_eq!(v.tfdt.as_ref().unwrap().base_media_decode_time, 90_000);
        let offset = v.trun[0].data_offset.unwrap() as usize;
        assert_eq!(&bytes[offset..offset + 9], b"VIDEO-1V2");
        let TrunSamples::Explicit(entries) = &v.trun[0].samples else {
            panic!("no explicit samples");
        };
        assert_eq!(entries[0].flags, Some(SYNC_SAMPLE_FLAGS));
        assert_eq!(entries[1].flags, Some(NON_SYNC_SAMPLE_FLAGS));
        assert_eq!(entries[1].cts, Some(-3000));
        assert_eq!(entries[1].duration, Some(3000));
        let a = &moof.traf[1];
        let offset = a.trun[0].data_offset.unwrap() as usize;
        assert_eq!(&bytes[offset..offset + 5], b"AUDIO");
        assert_eq!(fragment(1, &[]), Err(Fmp4Error::EmptyFragment));
    }
}
