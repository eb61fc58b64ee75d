//! AAC-LC → Opus, for RTMP ingest into WebRTC rooms.
//!
//! OBS (and every RTMP encoder) sends AAC; browsers receiving WebRTC only promise Opus, so the
//! RTMP edge transcodes audio. Video is forwarded untouched; audio goes through:
//!
//! ```text
//! FLV AACPacketType 0 ──► AudioSpecificConfig::parse ──► AacToOpus::new
//! FLV AACPacketType 1 ──► AacToOpus::push(raw frame, FLV timestamp)
//!      AAC-LC decode (symphonia, 1024 samples/frame, f32 interleaved)
//!   ─► resample to 48 kHz when the input is not 48 kHz (rubato FFT resampler, fixed ratio,
//!      state kept across frames; its start-up delay is dropped so the output lines up)
//!   ─► 48 kHz FIFO, cut into 20 ms frames (960 samples per channel)
//!   ─► Opus encode (mousiki, pure Rust: application "audio", 64 kbit/s mono, 96 kbit/s stereo)
//!   ─► OpusPacket { data, rtp_timestamp, samples: 960 }
//! ```
//!
//! # Timestamp rule
//! Opus over RTP always uses a 48 kHz clock, whatever the audio bandwidth ([RFC 7587] §4.1).
//! The first packet after an anchor gets `rtp_timestamp = pts_ms × 48` (wrapping in `u32`), where
//! `pts_ms` is the FLV timestamp of the frame that set the anchor; every following packet advances
//! by exactly 960. Video packetised from the same FLV clock (90 kHz = `pts_ms × 90`) therefore stays
//! in sync with audio without any wall clock.
//!
//! The anchor is set by the first frame and again whenever the input clock disagrees with the
//! audio we have counted: a frame whose `pts_ms` is earlier than the previous frame's, or further
//! than [`RESYNC_THRESHOLD_MS`] from where the decoded sample count says it should be (the encoder
//! restarted, the publisher reconnected, frames were lost upstream). A resynchronisation drops
//! buffered audio (< 20 ms plus the resampler's window), resets the decoder and resampler, and is
//! counted in [`AacToOpusStats::resyncs`]. Timestamps may therefore jump, or go backwards, exactly
//! where the input did; the SFU's per-consumer timestamp rewriting smooths that for subscribers.
//!
//! # Invariants
//! - Every emitted packet holds exactly 960 samples per channel (20 ms at 48 kHz), with the
//!   input's channel count (mono or stereo); `rtp_timestamp` of consecutive packets within one
//!   anchor differs by exactly 960.
//! - A frame that fails to decode returns [`AudioError::Decode`] and is replaced by one frame of
//!   silence, so the sample count (and the A/V sync derived from it) is unaffected; the next frame
//!   decodes normally. Only [`AudioError::Encode`] means something is wrong inside this process.
//! - Nothing here reads a clock or does I/O; `push` never panics on any input bytes
//!   (fuzzed by `fuzz/fuzz_targets/aac_config.rs`).
//! - Latency added (not compensated in timestamps, all far below lip-sync tolerance): the Opus
//!   encoder look-ahead (6.5 ms), the resampler's 10 ms input blocks, and up to 20 ms waiting for a
//!   full Opus frame.
//!
//! # Specifications
//! - ISO/IEC 14496-3:2009 §1.6.2.1 `AudioSpecificConfig`, §1.6.3 (explicit/implicit SBR
//!   signalling), §4.4.1 `GASpecificConfig`; Table 1.16 (sampling frequency index).
//! - [RFC 6716] Opus codec; [RFC 7587] RTP payload format for Opus (48 kHz RTP clock).
//!
//! [RFC 6716]: https://www.rfc-editor.org/rfc/rfc6716
//! [RFC 7587]: https://www.rfc-editor.org/rfc/rfc7587

use std::fmt;

use mousiki::{Application, Bitrate, Channels, Encoder, FrameDuration, Signal};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

/// RTP clock rate of Opus, whatever the coded bandwidth (RFC 7587 §4.1).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Samples per channel in one emitted Opus packet: 20 ms at 48 kHz.
pub const OPUS_FRAME_SAMPLES: u32 = 960;
/// How far (ms) the FLV timestamp may stray from the counted audio before we re-anchor.
/// FLV timestamps are whole milliseconds and encoders jitter by a few; 100 ms is well above that
/// and well below what a viewer notices as lip-sync error.
pub const RESYNC_THRESHOLD_MS: i64 = 100;

/// AAC-LC frame length (samples per channel), `frameLengthFlag == 0`.
const AAC_FRAME_SAMPLES: usize = 1024;
/// Largest Opus packet for one frame (RFC 6716 §3.2.1).
const MAX_OPUS_PACKET: usize = 1275;

/// Audio object types of ISO/IEC 14496-3 Table 1.1 that matter here.
const AOT_AAC_LC: u16 = 2;
const AOT_SBR: u16 = 5;
const AOT_PS: u16 = 29;
/// `syncExtensionType` values of §1.6.2.1 (backward-compatible explicit signalling).
const SYNC_EXTENSION_SBR: u32 = 0x2b7;

/// Table 1.16: `samplingFrequencyIndex` → Hz (13, 14 reserved, 15 = explicit 24-bit value).
const SAMPLING_FREQUENCIES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Why an AAC stream cannot be set up or one frame could not be transcoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioError {
    /// The AudioSpecificConfig ended before a field it announces.
    Truncated,
    /// HE-AAC v1 (SBR) or v2 (PS), signalled by object type 5/29 or by the SBR sync extension.
    HeAacUnsupported,
    /// Any object type other than AAC-LC (2): Main, SSR, LTP, ER, USAC, …
    UnsupportedObjectType(u16),
    /// Channel configuration 0 (layout in a program config element) or more than two channels.
    UnsupportedChannels(u8),
    /// `samplingFrequencyIndex` 13 or 14 (reserved).
    ReservedFrequencyIndex(u8),
    /// An explicit sample rate that is not one of Table 1.16's.
    UnsupportedSampleRate(u32),
    /// `frameLengthFlag == 1` (960-sample frames) or `dependsOnCoreCoder`.
    UnsupportedFrameLength,
    /// A component refused to start (should not happen for a config `parse` accepted).
    Setup(String),
    /// One frame could not be decoded; it was replaced by silence and the transcoder goes on.
    Decode(String),
    /// The Opus encoder or resampler failed; a bug rather than bad input.
    Encode(String),
}

impl AudioError {
    /// True for errors that concern one frame only: keep feeding the transcoder.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, AudioError::Decode(_))
    }
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioError::Truncated => f.write_str("AAC AudioSpecificConfig is truncated"),
            AudioError::HeAacUnsupported => f.write_str(
                "HE-AAC (SBR/PS) is not supported: set the encoder to AAC-LC \
                 (OBS: Settings → Output → Audio encoder \"FFmpeg AAC\" or \"CoreAudio AAC\" \
                 are LC; avoid HE-AAC presets such as \"libfdk_aac\" with the HE profile)",
            ),
            AudioError::UnsupportedObjectType(aot) => write!(
                f,
                "AAC audio object type {aot} is not supported: only AAC-LC (object type 2) is; \
                 set the encoder to AAC-LC"
            ),
            AudioError::UnsupportedChannels(0) => f.write_str(
                "AAC channel layout given by a program config element is not supported: \
                 send mono or stereo",
            ),
            AudioError::UnsupportedChannels(c) => write!(
                f,
                "AAC channel configuration {c} is not supported: send mono or stereo \
                 (OBS: Settings → Audio → Channels \"Mono\" or \"Stereo\")"
            ),
            AudioError::ReservedFrequencyIndex(i) => {
                write!(f, "AAC sampling frequency index {i} is reserved")
            }
            AudioError::UnsupportedSampleRate(hz) => write!(
                f,
                "AAC sample rate {hz} Hz is not supported: use 48000 or 44100 Hz \
                 (OBS: Settings → Audio → Sample Rate)"
            ),
            AudioError::UnsupportedFrameLength => f.write_str(
                "AAC with 960-sample frames or a core coder is not supported: send AAC-LC",
            ),
            AudioError::Setup(e) => write!(f, "audio transcoder setup failed: {e}"),
            AudioError::Decode(e) => write!(f, "AAC frame could not be decoded: {e}"),
            AudioError::Encode(e) => write!(f, "Opus encoding failed: {e}"),
        }
    }
}

impl std::error::Error for AudioError {}

/// The decoder configuration an FLV `AACPacketType 0` tag carries (ISO/IEC 14496-3 §1.6.2.1),
/// accepted only for what [`AacToOpus`] can transcode: AAC-LC, 1024-sample frames, mono or
/// stereo, a Table 1.16 sample rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type after the escape (31 → 32 + 6 bits); always 2 (AAC-LC) once parsed.
    pub object_type: u16,
    /// Sample rate in Hz, from the index or the explicit 24-bit field.
    pub sample_rate: u32,
    /// `channelConfiguration`: 1 = mono, 2 = stereo (the only values accepted).
    pub channels: u8,
    /// The bytes as received, handed to the decoder.
    raw: Box<[u8]>,
}

impl AudioSpecificConfig {
    /// Parses and validates an AudioSpecificConfig. Trailing bytes after what the config
    /// announces are ignored, as decoders do.
    pub fn parse(bytes: &[u8]) -> Result<AudioSpecificConfig, AudioError> {
        let mut r = BitReader::new(bytes);
        let object_type = read_object_type(&mut r)?;
        let sample_rate = read_sample_rate(&mut r)?;
        let channels = r.bits(4)? as u8;

        // Hierarchical (explicit, non-backward-compatible) SBR/PS signalling: refuse before
        // looking at anything else, so the operator gets the actionable message.
        if object_type == AOT_SBR || object_type == AOT_PS {
            return Err(AudioError::HeAacUnsupported);
        }
        if object_type != AOT_AAC_LC {
            return Err(AudioError::UnsupportedObjectType(object_type));
        }

        // GASpecificConfig (§4.4.1) for object type 2.
        let frame_length_flag = r.bits(1)?;
        let depends_on_core_coder = r.bits(1)?;
        if frame_length_flag != 0 || depends_on_core_coder != 0 {
            return Err(AudioError::UnsupportedFrameLength);
        }
        if channels == 0 || channels > 2 {
            return Err(AudioError::UnsupportedChannels(channels));
        }
        let extension_flag = r.bits(1)?;
        if extension_flag == 1 {
            let _extension_flag3 = r.bits(1)?;
        }

        // Backward-compatible explicit SBR signalling (§1.6.2.1, bitsToDecode ≥ 16): an LC config
        // followed by sync extension 0x2b7, object type 5 and sbrPresentFlag. A truncated or
        // unrecognised extension is ignored, as decoders do.
        if r.remaining() >= 16 && r.bits(11)? == SYNC_EXTENSION_SBR {
            let ext_object_type = read_object_type(&mut r);
            if ext_object_type == Ok(AOT_SBR) && r.bits(1) == Ok(1) {
                return Err(AudioError::HeAacUnsupported);
            }
        }

        Ok(AudioSpecificConfig {
            object_type,
            sample_rate,
            channels,
            raw: bytes.into(),
        })
    }

    /// The bytes this config was parsed from.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u16, AudioError> {
    let aot = r.bits(5)? as u16;
    if aot == 31 {
        Ok(32 + r.bits(6)? as u16)
    } else {
        Ok(aot)
    }
}

fn read_sample_rate(r: &mut BitReader<'_>) -> Result<u32, AudioError> {
    let index = r.bits(4)? as u8;
    match index {
        15 => {
            let hz = r.bits(24)?;
            // An explicit rate is only accepted when it is a standard one: the decoder derives
            // its band tables from the rate.
            if SAMPLING_FREQUENCIES.contains(&hz) {
                Ok(hz)
            } else {
                Err(AudioError::UnsupportedSampleRate(hz))
            }
        }
        13 | 14 => Err(AudioError::ReservedFrequencyIndex(index)),
        // Index is 0..=12 here, so the lookup is in bounds.
        _ => Ok(SAMPLING_FREQUENCIES[usize::from(index)]),
    }
}

/// MSB-first bit reader over a byte slice; reads past the end are `AudioError::Truncated`.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() * 8 - self.pos
    }

    /// Reads `n ≤ 32` bits.
    fn bits(&mut self, n: usize) -> Result<u32, AudioError> {
        if n > self.remaining() {
            return Err(AudioError::Truncated);
        }
        let mut v = 0u32;
        for _ in 0..n {
            let bit = (self.bytes[self.pos / 8] >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }
}

/// One 20 ms Opus packet, ready for RTP (RFC 7587).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// The Opus packet (one frame, code 0, RFC 6716 §3.2.2). A fresh `Vec` per packet — 50 small
    /// allocations a second per stream, so the caller can move it into an `Arc` without a copy.
    pub data: Vec<u8>,
    /// RTP timestamp on the 48 kHz clock: `anchor pts_ms × 48 + 960 × n`, wrapping.
    pub rtp_timestamp: u32,
    /// Samples per channel in this packet: always [`OPUS_FRAME_SAMPLES`].
    pub samples: u32,
}

/// Counters of one transcoder, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AacToOpusStats {
    /// AAC frames given to `push`.
    pub frames_in: u64,
    /// Frames that failed to decode (each replaced by silence).
    pub decode_errors: u64,
    /// Opus packets emitted.
    pub packets_out: u64,
    /// Times the timestamp anchor was reset after the first (input jumped or went backwards).
    pub resyncs: u64,
}

/// Where the output clock stands relative to the input clock.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// FLV timestamp of the frame that set the anchor.
    pts_ms: i64,
    /// Input samples (per channel) decoded or concealed since the anchor.
    input_samples: u64,
    /// Opus packets emitted since the anchor.
    packets: u64,
    /// FLV timestamp of the previous frame, to notice a clock going backwards.
    last_pts_ms: i64,
}

/// Streaming AAC-LC → Opus transcoder for one audio track. Sans-IO: frames and their FLV
/// timestamps in, Opus packets out. See the [module docs](self) for the pipeline and rules.
pub struct AacToOpus {
    decoder: AacDecoder,
    /// `None` when the input is already 48 kHz.
    resampler: Option<Fft<f32>>,
    encoder: Encoder,
    channels: usize,
    input_rate: u32,
    anchor: Option<Anchor>,
    stats: AacToOpusStats,
    /// Interleaved input-rate samples waiting for a full resampler chunk.
    resample_in: Vec<f32>,
    /// Scratch for one resampler output chunk.
    resample_out: Vec<f32>,
    /// Resampler output frames still to drop (its start-up delay), so output lines up with input.
    resample_skip: usize,
    /// Interleaved 48 kHz samples waiting for a full 20 ms frame.
    pcm48: Vec<f32>,
    /// Scratch for one decoded AAC frame.
    decoded: Vec<f32>,
    /// Scratch for one encoded packet.
    packet: [u8; MAX_OPUS_PACKET],
}

impl fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AacToOpus")
            .field("channels", &self.channels)
            .field("input_rate", &self.input_rate)
            .field("anchor", &self.anchor)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AacToOpus {
    /// Sets up decoder, resampler (when the input is not 48 kHz) and Opus encoder for `asc`.
    pub fn new(asc: &AudioSpecificConfig) -> Result<Self, AudioError> {
        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AAC);
        params.extra_data = Some(asc.as_bytes().into());
        let decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| AudioError::Setup(format!("AAC decoder: {e}")))?;

        let channels = usize::from(asc.channels);
        let (opus_channels, bitrate) = if channels == 1 {
            (Channels::Mono, 64_000)
        } else {
            (Channels::Stereo, 96_000)
        };
        let encoder = Encoder::builder(OPUS_CLOCK_RATE, opus_channels, Application::Audio)
            .bitrate(Bitrate::Bits(bitrate))
            .frame_duration(FrameDuration::Ms20)
            .signal(Signal::Music)
            .build()
            .map_err(|e| AudioError::Setup(format!("Opus encoder: {e:?}")))?;

        let (resampler, resample_out, resample_skip) = if asc.sample_rate == OPUS_CLOCK_RATE {
            (None, Vec::new(), 0)
        } else {
            let r = Fft::<f32>::new(
                asc.sample_rate as usize,
                OPUS_CLOCK_RATE as usize,
                // 10 ms chunks: an exact ratio for 44.1 kHz (441 → 480) and little buffering.
                asc.sample_rate as usize / 100,
                channels,
                FixedSync::Input,
            )
            .map_err(|e| AudioError::Setup(format!("resampler: {e}")))?;
            let out = vec![0.0; r.output_frames_max() * channels];
            let skip = r.output_delay();
            (Some(r), out, skip)
        };

        Ok(AacToOpus {
            decoder,
            resampler,
            encoder,
            channels,
            input_rate: asc.sample_rate,
            anchor: None,
            stats: AacToOpusStats::default(),
            resample_in: Vec::with_capacity(2 * AAC_FRAME_SAMPLES * channels),
            resample_out,
            resample_skip,
            pcm48: Vec::with_capacity(2 * OPUS_FRAME_SAMPLES as usize * channels),
            decoded: Vec::with_capacity(AAC_FRAME_SAMPLES * channels),
            packet: [0; MAX_OPUS_PACKET],
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> AacToOpusStats {
        self.stats
    }

    /// Transcodes one raw AAC frame (an FLV `AACPacketType 1` payload, no ADTS header) whose
    /// FLV timestamp is `pts_ms`, appending zero or more complete Opus packets to `out`.
    ///
    /// On [`AudioError::Decode`] the frame is counted as one frame of silence (so timing holds) and
    /// packets completed by that silence are still appended; keep pushing.
    pub fn push(
        &mut self,
        raw_aac_frame: &[u8],
        pts_ms: i64,
        out: &mut Vec<OpusPacket>,
    ) -> Result<(), AudioError> {
        self.stats.frames_in += 1;
        self.check_clock(pts_ms);

        let decode_error = self.decode(raw_aac_frame).err();
        if decode_error.is_some() {
            self.stats.decode_errors += 1;
            self.decoded.clear();
            self.decoded.resize(AAC_FRAME_SAMPLES * self.channels, 0.0);
        }

        let frames = self.decoded.len() / self.channels;
        if let Some(anchor) = &mut self.anchor {
            anchor.input_samples += frames as u64;
        }
        self.feed_resampler()?;
        self.encode_ready(out)?;

        match decode_error {
            Some(e) => Err(AudioError::Decode(e)),
            None => Ok(()),
        }
    }

    /// Decodes one frame into `decoded`: exactly 1024 samples per channel, or an error.
    fn decode(&mut self, raw_aac_frame: &[u8]) -> Result<(), String> {
        // symphonia reads an empty buffer as an all-zero bit string and "decodes" it.
        if raw_aac_frame.is_empty() {
            return Err("empty frame".into());
        }
        let packet = PacketRef::new(0, Timestamp::new(0), Duration::ZERO, raw_aac_frame);
        let buf = self
            .decoder
            .decode_ref(&packet)
            .map_err(|e| e.to_string())?;
        if buf.frames() != AAC_FRAME_SAMPLES || buf.spec().channels().count() != self.channels {
            return Err(format!(
                "decoder returned {} samples × {} channels",
                buf.frames(),
                buf.spec().channels().count()
            ));
        }
        buf.copy_to_vec_interleaved(&mut self.decoded);
        Ok(())
    }

    /// Sets the anchor on the first frame and re-anchors when `pts_ms` disagrees with the
    /// sample count (see the module docs).
    fn check_clock(&mut self, pts_ms: i64) {
        if let Some(anchor) = &mut self.anchor {
            let counted_ms = (anchor.input_samples * 1000 / u64::from(self.input_rate)) as i64;
            let expected = anchor.pts_ms.saturating_add(counted_ms);
            let drift = pts_ms.saturating_sub(expected);
            if pts_ms >= anchor.last_pts_ms && drift.unsigned_abs() <= RESYNC_THRESHOLD_MS as u64 {
                anchor.last_pts_ms = pts_ms;
                return;
            }
            self.stats.resyncs += 1;
            self.decoder.reset();
            if let Some(r) = &mut self.resampler {
                r.reset();
                self.resample_skip = r.output_delay();
            }
            self.resample_in.clear();
            self.pcm48.clear();
        }
        self.anchor = Some(Anchor {
            pts_ms,
            input_samples: 0,
            packets: 0,
            last_pts_ms: pts_ms,
        });
    }

    /// Moves `decoded` into the 48 kHz FIFO, through the resampler when there is one.
    fn feed_resampler(&mut self) -> Result<(), AudioError> {
        let Some(resampler) = &mut self.resampler else {
            self.pcm48.extend_from_slice(&self.decoded);
            return Ok(());
        };
        let ch = self.channels;
        self.resample_in.extend_from_slice(&self.decoded);
        let mut consumed_total = 0;
        loop {
            let need = resampler.input_frames_next();
            let available = self.resample_in.len() / ch - consumed_total;
            if available < need {
                break;
            }
            let start = consumed_total * ch;
            let input = InterleavedSlice::new(&self.resample_in[start..], ch, available)
                .map_err(|e| AudioError::Encode(format!("resampler input: {e}")))?;
            let out_frames = self.resample_out.len() / ch;
            let mut output = InterleavedSlice::new_mut(&mut self.resample_out, ch, out_frames)
                .map_err(|e| AudioError::Encode(format!("resampler output: {e}")))?;
            let (used, produced) = resampler
                .process_into_buffer(&input, &mut output, None)
                .map_err(|e| AudioError::Encode(format!("resampler: {e}")))?;
            consumed_total += used;
            let skip = self.resample_skip.min(produced);
            self.resample_skip -= skip;
            self.pcm48
                .extend_from_slice(&self.resample_out[skip * ch..produced * ch]);
        }
        self.resample_in.drain(..consumed_total * ch);
        Ok(())
    }

    /// Encodes every complete 20 ms frame waiting in the 48 kHz FIFO.
    fn encode_ready(&mut self, out: &mut Vec<OpusPacket>) -> Result<(), AudioError> {
        let frame_len = OPUS_FRAME_SAMPLES as usize * self.channels;
        let mut offset = 0;
        while self.pcm48.len() - offset >= frame_len {
            let pcm = &self.pcm48[offset..offset + frame_len];
            offset += frame_len;
            let len = self
                .encoder
                .encode_float(pcm, &mut self.packet)
                .map_err(|e| AudioError::Encode(format!("{e:?}")))?;
            // Set by check_clock before any audio reaches the FIFO.
            let anchor = self
                .anchor
                .as_mut()
                .expect("anchor is set before samples are queued");
            // RFC 7587 clock: pts_ms × 48 + 960 per packet, modulo 2^32 (truncation intended).
            let rtp_timestamp = (anchor.pts_ms.wrapping_mul(48) as u32)
                .wrapping_add((anchor.packets as u32).wrapping_mul(OPUS_FRAME_SAMPLES));
            anchor.packets += 1;
            self.stats.packets_out += 1;
            out.push(OpusPacket {
                data: self.packet[..len].to_vec(),
                rtp_timestamp,
                samples: OPUS_FRAME_SAMPLES,
            });
        }
        self.pcm48.drain(..offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONO_44K: &[u8] = include_bytes!("../tests/fixtures/mono_44100_1000hz.aac");
    const STEREO_48K: &[u8] = include_bytes!("../tests/fixtures/stereo_48000_1000hz_2500hz.aac");

    /// Splits an ADTS stream (no CRC) into raw frames and rebuilds the 2-byte ASC.
    fn adts(stream: &[u8]) -> (AudioSpecificConfig, Vec<&[u8]>) {
        let mut frames = Vec::new();
        let mut asc = None;
        let mut rest = stream;
        while !rest.is_empty() {
            assert!(rest.len() >= 7 && rest[0] == 0xff && rest[1] & 0xf0 == 0xf0);
            assert_eq!(rest[1] & 1, 1, "fixtures have no CRC");
            let profile = u16::from(rest[2] >> 6);
            let freq_index = (rest[2] >> 2) & 0x0f;
            let channels = ((rest[2] & 1) << 2) | (rest[3] >> 6);
            let len = (usize::from(rest[3] & 3) << 11)
                | (usize::from(rest[4]) << 3)
                | usize::from(rest[5] >> 5);
            let aot = (profile + 1) as u8;
            asc.get_or_insert_with(|| {
                let bytes = [
                    (aot << 3) | (freq_index >> 1),
                    ((freq_index & 1) << 7) | (channels << 3),
                ];
                AudioSpecificConfig::parse(&bytes).expect("fixture ASC")
            });
            frames.push(&rest[7..len]);
            rest = &rest[len..];
        }
        (asc.expect("at least one frame"), frames)
    }

    /// FLV-style whole-millisecond timestamp of frame `i`.
    fn pts(base: i64, i: usize, rate: u32) -> i64 {
        base + (i as i64 * 1024 * 1000) / i64::from(rate)
    }

    fn transcode(
        stream: &[u8],
        base_pts: i64,
    ) -> (AudioSpecificConfig, Vec<OpusPacket>, AacToOpus) {
        let (asc, frames) = adts(stream);
        let mut t = AacToOpus::new(&asc).unwrap();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            t.push(f, pts(base_pts, i, asc.sample_rate), &mut out)
                .unwrap();
        }
        (asc, out, t)
    }

    /// Decodes packets with the same Opus library into per-channel f32 signals.
    fn decode_opus(packets: &[OpusPacket], channels: usize) -> Vec<Vec<f32>> {
        let ch = if channels == 1 {
            Channels::Mono
        } else {
            Channels::Stereo
        };
        let mut dec = mousiki::Decoder::new(OPUS_CLOCK_RATE, ch).unwrap();
        let mut pcm = vec![0.0f32; 960 * channels];
        let mut out = vec![Vec::new(); channels];
        for p in packets {
            let n = dec.decode_float(&p.data, &mut pcm, false).unwrap();
            assert_eq!(n, 960);
            for frame in pcm.chunks_exact(channels) {
                for (c, s) in frame.iter().enumerate() {
                    out[c].push(*s);
                }
            }
        }
        out
    }

    /// Power of `signal` at `freq` (Goertzel), normalised by length.
    fn goertzel(signal: &[f32], freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(OPUS_CLOCK_RATE);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in signal {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (signal.len() as f64).powi(2)
    }

    fn rms(signal: &[f32]) -> f64 {
        (signal.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / signal.len() as f64).sqrt()
    }

    /// Asserts `freq` dominates its neighbours and the level is that of a 1/8-amplitude sine.
    fn assert_tone(signal: &[f32], freq: f64, others: &[f64]) {
        let mid = assert_dominant(signal, freq, others, 100.0);
        let level = rms(mid);
        let expected = 0.125 / 2f64.sqrt();
        assert!(
            (0.6 * expected..1.4 * expected).contains(&level),
            "rms {level}, expected ≈ {expected}"
        );
    }

    /// Asserts the power at `freq` is `ratio` times that at each of `others`; returns the middle
    /// of the signal (first and last 100 ms skipped: codec start-up and the encoder's tail).
    fn assert_dominant<'a>(signal: &'a [f32], freq: f64, others: &[f64], ratio: f64) -> &'a [f32] {
        let mid = &signal[4800..signal.len() - 4800];
        let p = goertzel(mid, freq);
        for &o in others {
            let q = goertzel(mid, o);
            assert!(p > ratio * q, "{freq} Hz power {p} vs {o} Hz {q}");
        }
        mid
    }

    fn assert_timestamps(packets: &[OpusPacket], base_pts: i64) {
        let first = (base_pts * 48) as u32;
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.samples, 960);
            assert_eq!(
                p.rtp_timestamp,
                first.wrapping_add(960 * i as u32),
                "packet {i}"
            );
        }
    }

    #[test]
    fn asc_lc_stereo_48k() {
        let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(
            (asc.object_type, asc.sample_rate, asc.channels),
            (2, 48_000, 2)
        );
        assert_eq!(asc.as_bytes(), &[0x11, 0x90]);
    }

    #[test]
    fn asc_lc_mono_44k_with_sync_extension_without_sbr() {
        // 00010 0100 0001 000, then sync extension 0x2b7, object type 5, sbrPresentFlag 0.
        let asc = AudioSpecificConfig::parse(&[0x12, 0x08, 0x56, 0xe5, 0x00]).unwrap();
        assert_eq!(
            (asc.object_type, asc.sample_rate, asc.channels),
            (2, 44_100, 1)
        );
    }

    #[test]
    fn asc_explicit_frequency() {
        // AOT 2, index 15, 24-bit 48000 (0x00bb80), channels 2, GA flags 000.
        let bits = (2u64 << 35) | (15 << 31) | (48_000 << 7) | (2 << 3);
        let bytes = &bits.to_be_bytes()[3..];
        let asc = AudioSpecificConfig::parse(bytes).unwrap();
        assert_eq!((asc.sample_rate, asc.channels), (48_000, 2));

        let bits = (2u64 << 35) | (15 << 31) | (47_000 << 7) | (2 << 3);
        assert_eq!(
            AudioSpecificConfig::parse(&bits.to_be_bytes()[3..]),
            Err(AudioError::UnsupportedSampleRate(47_000))
        );
    }

    #[test]
    fn asc_escape_object_type() {
        // 11111 + 000010 (32 + 2 = 34, MPEG-1/2 Layer-3), index 3, channels 2.
        let bits: u32 = (31 << 27) | (2 << 21) | (3 << 17) | (2 << 13);
        assert_eq!(
            AudioSpecificConfig::parse(&bits.to_be_bytes()),
            Err(AudioError::UnsupportedObjectType(34))
        );
        // AAC Main (1) is not LC either.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x09, 0x90]),
            Err(AudioError::UnsupportedObjectType(1))
        );
    }

    #[test]
    fn asc_he_aac_refused_with_operator_message() {
        // Hierarchical signalling: AOT 5 (SBR), index 6 (24 kHz core), stereo, ext index 3, AOT 2.
        let sbr = [0x2b, 0x11, 0x88, 0x00];
        // AOT 29 (PS) escape-free, index 6, mono, ext index 3, AOT 2.
        let ps: u32 = (29 << 27) | (6 << 23) | (1 << 19) | (3 << 15) | (2 << 10);
        // Backward-compatible: LC 24 kHz stereo, then 0x2b7, AOT 5, sbrPresent 1, ext index 3.
        let explicit: u64 =
            (2 << 59) | (6 << 55) | (2 << 51) | (0x2b7 << 37) | (5 << 32) | (1 << 31) | (3 << 27);
        for bytes in [
            &sbr[..],
            &ps.to_be_bytes()[..],
            &explicit.to_be_bytes()[..5],
        ] {
            let err = AudioSpecificConfig::parse(bytes).unwrap_err();
            assert_eq!(err, AudioError::HeAacUnsupported, "{bytes:02x?}");
            let msg = err.to_string();
            assert!(msg.contains("HE-AAC") && msg.contains("AAC-LC") && msg.contains("OBS"));
        }
        // The same extension with sbrPresentFlag 0 is plain LC.
        let no_sbr = explicit & !(1 << 31);
        let asc = AudioSpecificConfig::parse(&no_sbr.to_be_bytes()[..5]).unwrap();
        assert_eq!((asc.sample_rate, asc.channels), (24_000, 2));
    }

    #[test]
    fn asc_rejects_bad_layouts_and_truncation() {
        assert_eq!(AudioSpecificConfig::parse(&[]), Err(AudioError::Truncated));
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11]),
            Err(AudioError::Truncated)
        );
        // 5.1 (channel configuration 6).
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11, 0xb0]),
            Err(AudioError::UnsupportedChannels(6))
        );
        // Program config element (channel configuration 0).
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11, 0x80]),
            Err(AudioError::UnsupportedChannels(0))
        );
        // Reserved index 13.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AudioError::ReservedFrequencyIndex(13))
        );
        // frameLengthFlag = 1 (960-sample frames).
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11, 0x94]),
            Err(AudioError::UnsupportedFrameLength)
        );
    }

    #[test]
    fn mono_44k_transcodes_to_a_1khz_tone() {
        let base = 12_345;
        let (asc, packets, t) = transcode(MONO_44K, base);
        assert_eq!((asc.sample_rate, asc.channels), (44_100, 1));
        let frames = adts(MONO_44K).1.len();
        // Samples still inside the resampler (its delay) come out only with later input.
        let delay = t.resampler.as_ref().map_or(0, |r| r.output_delay());
        let expected = ((frames * 1024) as f64 * 48_000.0 / 44_100.0 - delay as f64) / 960.0;
        assert!(
            (packets.len() as f64 - expected).abs() <= 1.0,
            "{} packets for {expected:.1} expected",
            packets.len()
        );
        assert_timestamps(&packets, base);
        let stats = t.stats();
        assert_eq!((stats.decode_errors, stats.resyncs), (0, 0));
        assert_eq!(stats.packets_out, packets.len() as u64);

        let pcm = decode_opus(&packets, 1);
        assert_tone(&pcm[0], 1000.0, &[700.0, 1300.0, 2000.0]);
    }

    #[test]
    fn stereo_48k_keeps_each_channel_frequency() {
        let (asc, packets, _) = transcode(STEREO_48K, 0);
        assert_eq!((asc.sample_rate, asc.channels), (48_000, 2));
        let frames = adts(STEREO_48K).1.len();
        let expected = (frames * 1024) as f64 / 960.0;
        assert!((packets.len() as f64 - expected).abs() <= 1.0);
        assert_timestamps(&packets, 0);

        let pcm = decode_opus(&packets, 2);
        assert_tone(&pcm[0], 1000.0, &[700.0, 1300.0, 2500.0]);
        // mousiki 0.2.1's *decoder* loses most of the side signal of stereo packets (the same
        // packets decode to the exact input level with reference libopus, and so do libopus's own
        // packets through mousiki's decoder: see docs/decisions/0006-aac-to-opus.md). So the right
        // channel is checked for its frequency, not its level, and with a looser margin.
        assert_dominant(&pcm[1], 2500.0, &[2200.0, 2800.0], 10.0);
        assert_dominant(&pcm[1], 2500.0, &[1000.0], 100.0);
        assert_dominant(&pcm[0], 1000.0, &[2500.0], 1000.0);
    }

    #[test]
    fn rtp_timestamp_wraps() {
        // pts × 48 past 2^32: 100_000_000 ms ≈ 27.8 h.
        let base = 100_000_000;
        let (_, packets, _) = transcode(STEREO_48K, base);
        assert_eq!(
            packets[0].rtp_timestamp,
            (base as u64 * 48 % (1 << 32)) as u32
        );
        assert_timestamps(&packets, base);
    }

    #[test]
    fn garbage_frame_is_an_error_and_the_stream_goes_on() {
        let (asc, frames) = adts(STEREO_48K);
        let mut t = AacToOpus::new(&asc).unwrap();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let p = pts(0, i, 48_000);
            if i == 10 {
                // Pseudo-random bytes (all-0xff would be a valid, empty `ID_END` frame).
                let mut x = 7u32;
                let garbage: Vec<u8> = (0..200)
                    .map(|_| {
                        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (x >> 24) as u8
                    })
                    .collect();
                let err = t.push(&garbage, p, &mut out).unwrap_err();
                assert!(err.is_recoverable(), "{err}");
                assert!(matches!(err, AudioError::Decode(_)));
            } else {
                t.push(f, p, &mut out).unwrap();
            }
        }
        let stats = t.stats();
        assert_eq!((stats.decode_errors, stats.resyncs), (1, 0));
        // The lost frame was concealed as silence: same packet count, unbroken timestamps.
        let expected = (frames.len() * 1024) as f64 / 960.0;
        assert!((out.len() as f64 - expected).abs() <= 1.0);
        assert_timestamps(&out, 0);
        // The audio after the bad frame is the tone again.
        let pcm = decode_opus(&out, 2);
        let after = &pcm[0][(12 * 1024)..];
        assert_tone(after, 1000.0, &[700.0, 1300.0, 2500.0]);
    }

    #[test]
    fn empty_frame_is_an_error_too() {
        let (asc, _) = adts(MONO_44K);
        let mut t = AacToOpus::new(&asc).unwrap();
        let mut out = Vec::new();
        assert!(t.push(&[], 0, &mut out).unwrap_err().is_recoverable());
    }

    #[test]
    fn pts_jump_forward_and_backward_resynchronises() {
        let (asc, frames) = adts(STEREO_48K);
        let mut t = AacToOpus::new(&asc).unwrap();
        let mut before = Vec::new();
        for (i, f) in frames[..20].iter().enumerate() {
            t.push(f, pts(1000, i, 48_000), &mut before).unwrap();
        }
        assert_eq!(t.stats().resyncs, 0);
        assert_timestamps(&before, 1000);

        // Encoder restart 5 s later: the next packets count from the new pts.
        let mut after = Vec::new();
        for (i, f) in frames[20..].iter().enumerate() {
            t.push(f, pts(6000, i, 48_000), &mut after).unwrap();
        }
        assert_eq!(t.stats().resyncs, 1);
        assert!(!after.is_empty());
        assert_timestamps(&after, 6000);

        // Clock going backwards (publisher reconnected, FLV clock from 0).
        let mut again = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            t.push(f, pts(0, i, 48_000), &mut again).unwrap();
        }
        assert_eq!(t.stats().resyncs, 2);
        assert_timestamps(&again, 0);
    }

    #[test]
    fn small_jitter_does_not_resynchronise() {
        let (asc, frames) = adts(MONO_44K);
        let mut t = AacToOpus::new(&asc).unwrap();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            // 15 ms of jitter in every other timestamp, never going backwards.
            let jitter = if i % 2 == 0 { 0 } else { 15 };
            t.push(f, pts(0, i, 44_100) + jitter, &mut out).unwrap();
        }
        assert_eq!(t.stats().resyncs, 0);
        assert_timestamps(&out, 0);
    }
}
