//! Playlist text: the live LL-HLS media playlist and the VOD playlist of a replay
//! ([RFC 8216bis](https://datatracker.ietf.org/doc/html/draft-pantos-hls-rfc8216bis) §4.4).
//!
//! `#EXT-X-VERSION:6`: the lowest version with every feature used. `EXT-X-MAP` in a playlist
//! without `EXT-X-I-FRAMES-ONLY` needs 6 (§8, "Protocol Version Compatibility"); fractional
//! `EXTINF` needs 3; the LL-HLS tags (`EXT-X-PART`, `EXT-X-PRELOAD-HINT`,
//! `EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF`) need no particular version.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ArchivedSegment, LiveStream, init_name, part_name, segment_name};

/// `EXT-X-VERSION` of every playlist written here (see the module documentation).
const VERSION: u32 = 6;

impl LiveStream {
    /// The media playlist, one for LL-HLS and classic players; `None` until the first segment
    /// is complete (the shell answers 404 until then; a blocking request waits).
    ///
    /// Parts are listed for the segments that start within three target durations of the
    /// playlist's end (RFC 8216bis §4.4.4.9 lets older ones go) and for the segment in
    /// progress; `EXT-X-PRELOAD-HINT` names the next part until the stream ends.
    pub fn playlist(&self) -> Option<String> {
        let target = self.target_duration?;
        let prefix = &self.config.uri_prefix;
        let mut out = String::with_capacity(256 + 160 * self.segments.len() * 6);
        // Writing to a String cannot fail: the results are ignored below.
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},HOLD-BACK={}",
            decimal_seconds(self.config.part_target * 3),
            decimal_seconds(Duration::from_secs(3 * target)),
        );
        let _ = writeln!(
            out,
            "#EXT-X-PART-INF:PART-TARGET={}",
            decimal_seconds(self.config.part_target)
        );
        let first = self.segments.front();
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA-SEQUENCE:{}",
            first.map_or(self.next_msn, |s| s.msn)
        );
        if let Some(sequence) = first.map(|s| s.discontinuity_sequence).filter(|&n| n > 0) {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{sequence}");
        }
        if self.all_independent {
            let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
        }

        // Which complete segments list their parts: those starting within 3 target durations
        // of the end.
        let parts_horizon = Duration::from_secs(3 * target);
        let open_parts = self.open.as_ref().map_or(&[][..], |o| &o.parts[..]);
        let mut from_end: Duration = open_parts.iter().map(|p| p.duration).sum();
        let mut show_parts = vec![false; self.segments.len()];
        for (index, segment) in self.segments.iter().enumerate().rev() {
            from_end += segment.duration;
            show_parts[index] = from_end <= parts_horizon;
        }

        let mut current_map = None;
        let mut map = |out: &mut String, init_id: u64| {
            if current_map != Some(init_id) {
                current_map = Some(init_id);
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{prefix}{}\"", init_name(init_id));
            }
        };
        for (index, segment) in self.segments.iter().enumerate() {
            // Before the first segment, the discontinuity is in EXT-X-DISCONTINUITY-SEQUENCE.
            if segment.discontinuity && index > 0 {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            map(&mut out, segment.init_id);
            write_date(&mut out, segment.program_date_time);
            if show_parts[index] {
                for (part_index, part) in segment.parts.iter().enumerate() {
                    write_part(&mut out, prefix, segment.msn, part_index, part);
                }
            }
            let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration.as_secs_f64());
            let _ = writeln!(out, "{prefix}{}", segment_name(segment.msn));
        }
        if let Some(open) = self.open.as_ref().filter(|o| !o.parts.is_empty()) {
            if open.discontinuity && !self.segments.is_empty() {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            map(&mut out, open.init_id);
            write_date(&mut out, open.program_date_time);
            for (part_index, part) in open.parts.iter().enumerate() {
                write_part(&mut out, prefix, open.msn, part_index, part);
            }
        }
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        } else if let Some((msn, part)) = self.preload_hint() {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}{}\"",
                part_name(msn, part)
            );
        }
        Some(out)
    }
}

fn write_part(out: &mut String, prefix: &str, msn: u64, index: usize, part: &super::Part) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{prefix}{}\"",
        part_duration(part.duration),
        part_name(msn, index as u64)
    );
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

fn write_date(out: &mut String, time: SystemTime) {
    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(time));
}

/// A VOD playlist (`#EXT-X-PLAYLIST-TYPE:VOD`, `#EXT-X-ENDLIST`) of archived segments, with
/// their names as URIs (relative to the playlist). The target duration is the largest rounded
/// `EXTINF`.
pub fn vod_playlist(segments: &[ArchivedSegment]) -> String {
    let seconds = |s: &ArchivedSegment| {
        if s.duration.is_finite() && s.duration > 0.0 {
            s.duration
        } else {
            0.0
        }
    };
    let target = segments
        .iter()
        .map(|s| seconds(s).round() as u64)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = String::with_capacity(128 + 120 * segments.len());
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:VOD");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:0");
    let mut current_map: Option<&str> = None;
    for (index, segment) in segments.iter().enumerate() {
        if segment.discontinuity && index > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if current_map != Some(segment.init.as_str()) {
            current_map = Some(&segment.init);
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", segment.init);
        }
        write_date(&mut out, segment.program_date_time);
        let _ = writeln!(out, "#EXTINF:{:.3},", seconds(segment));
        let _ = writeln!(out, "{}", segment.uri);
    }
    let _ = writeln!(out, "#EXT-X-ENDLIST");
    out
}

/// Seconds with every significant digit of `duration` and at least three decimals ("0.200",
/// "0.0125"), so a configured value is declared exactly.
fn decimal_seconds(duration: Duration) -> String {
    let mut text = format!("{}.{:09}", duration.as_secs(), duration.subsec_nanos());
    while text.len() > text.find('.').map_or(0, |dot| dot + 4) && text.ends_with('0') {
        text.pop();
    }
    text
}

/// A part's duration with five decimals, truncated so it never reads above `PART-TARGET`.
fn part_duration(duration: Duration) -> String {
    format!(
        "{}.{:05}",
        duration.as_secs(),
        duration.subsec_nanos() / 10_000
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339 / ISO 8601 in UTC, millisecond precision); times
/// before 1970 read as the epoch.
pub(crate) fn iso8601(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601_utc_with_milliseconds() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(iso8601(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000) + Duration::from_micros(999_999);
        assert_eq!(iso8601(t), "2026-11-18T11:06:40.999Z");
        assert_eq!(
            iso8601(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn seconds_are_written_exactly() {
        assert_eq!(decimal_seconds(Duration::from_millis(200)), "0.200");
        assert_eq!(decimal_seconds(Duration::from_micros(12_500)), "0.0125");
        assert_eq!(decimal_seconds(Duration::from_secs(6)), "6.000");
        assert_eq!(part_duration(Duration::from_nanos(166_666_666)), "0.16666");
        assert_eq!(part_duration(Duration::from_millis(200)), "0.20000");
    }

    #[test]
    fn vod_playlist_lists_every_segment_with_maps_and_discontinuities() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let segment =
            |uri: &str, init: &str, duration: f64, start: u64, discontinuity| ArchivedSegment {
                uri: uri.into(),
                init: init.into(),
                duration,
                program_date_time: at(start),
                discontinuity,
            };
        let text = vod_playlist(&[
            segment("seg-0.m4s", "init-0.mp4", 2.0, 0, false),
            segment("seg-1.m4s", "init-0.mp4", 2.6, 2, false),
            segment("seg-2.m4s", "init-1.mp4", 1.0, 10, true),
        ]);
        let expected = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:3\n\
            #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n\
            #EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:00.000Z\n\
            #EXTINF:2.000,\nseg-0.m4s\n\
            #EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:02.000Z\n#EXTINF:2.600,\nseg-1.m4s\n\
            #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:10.000Z\n#EXTINF:1.000,\nseg-2.m4s\n\
            #EXT-X-ENDLIST\n";
        assert_eq!(text, expected);
        let empty = vod_playlist(&[]);
        assert!(empty.contains("#EXT-X-TARGETDURATION:1\n") && empty.ends_with("#EXT-X-ENDLIST\n"));
    }
}
