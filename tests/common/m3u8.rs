//! An HLS media playlist parser and checker for the rules of RFC 8216bis
//! (<https://datatracker.ietf.org/doc/html/draft-pantos-hls-rfc8216bis>), written for the
//! tests independently of the server's playlist writer.

use std::collections::HashMap;

/// One media segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub msn: u64,
    pub uri: String,
    pub duration: f64,
    pub program_date_time: Option<String>,
    pub discontinuity: bool,
    pub map: Option<String>,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

/// A parsed media playlist.
#[derive(Debug, Clone, Default)]
pub struct Playlist {
    pub version: Option<u64>,
    pub target_duration: Option<u64>,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub part_target: Option<f64>,
    pub server_control: HashMap<String, String>,
    pub playlist_type: Option<String>,
    pub independent_segments: bool,
    pub segments: Vec<Segment>,
    /// Parts of the segment in progress (after the last complete segment).
    pub trailing_parts: Vec<Part>,
    pub preload_hint: Option<String>,
    pub ended: bool,
}

fn attributes(list: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (
                quoted[..end].to_string(),
                quoted.get(end + 1..).unwrap_or(""),
            )
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(key.trim().to_string(), value);
        rest = after.trim_start_matches(',');
    }
    out
}

/// Parse, failing on anything a player could not make sense of.
pub fn parse(text: &str) -> Result<Playlist, String> {
    let mut lines = text.lines();
    if lines.next() != Some("#EXTM3U") {
        return Err("the first line must be #EXTM3U".into());
    }
    let mut playlist = Playlist::default();
    let mut pending_duration = None;
    let mut pending_pdt = None;
    let mut pending_discontinuity = false;
    let mut current_map = None;
    let mut pending_parts = Vec::new();
    let mut msn = None;
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        match tag {
            "#EXT-X-VERSION" => playlist.version = Some(value.parse().map_err(|_| line)?),
            "#EXT-X-TARGETDURATION" => {
                playlist.target_duration = Some(
                    value
                        .parse()
                        .map_err(|_| format!("TARGETDURATION must be an integer: {line}"))?,
                )
            }
            "#EXT-X-MEDIA-SEQUENCE" => playlist.media_sequence = value.parse().map_err(|_| line)?,
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                playlist.discontinuity_sequence = value.parse().map_err(|_| line)?
            }
            "#EXT-X-PART-INF" => {
                playlist.part_target = attributes(value)
                    .get("PART-TARGET")
                    .and_then(|v| v.parse().ok())
            }
            "#EXT-X-SERVER-CONTROL" => playlist.server_control = attributes(value),
            "#EXT-X-PLAYLIST-TYPE" => playlist.playlist_type = Some(value.to_string()),
            "#EXT-X-INDEPENDENT-SEGMENTS" => playlist.independent_segments = true,
            "#EXT-X-MAP" => current_map = attributes(value).get("URI").cloned(),
            "#EXT-X-PROGRAM-DATE-TIME" => pending_pdt = Some(value.to_string()),
            "#EXT-X-DISCONTINUITY" => pending_discontinuity = true,
            "#EXTINF" => {
                let duration = value.split(',').next().unwrap_or("");
                pending_duration = Some(
                    duration
                        .parse::<f64>()
                        .map_err(|_| format!("bad EXTINF: {line}"))?,
                );
            }
            "#EXT-X-PART" => {
                let attrs = attributes(value);
                pending_parts.push(Part {
                    uri: attrs
                        .get("URI")
                        .cloned()
                        .ok_or(format!("PART without URI: {line}"))?,
                    duration: attrs
                        .get("DURATION")
                        .and_then(|d| d.parse().ok())
                        .ok_or(format!("PART without DURATION: {line}"))?,
                    independent: attrs.get("INDEPENDENT").is_some_and(|v| v == "YES"),
                });
            }
            "#EXT-X-PRELOAD-HINT" => playlist.preload_hint = attributes(value).get("URI").cloned(),
            "#EXT-X-ENDLIST" => playlist.ended = true,
            _ if line.starts_with('#') => {}
            uri => {
                let duration = pending_duration
                    .take()
                    .ok_or(format!("segment {uri} without #EXTINF"))?;
                let number = msn.map_or(playlist.media_sequence, |n: u64| n + 1);
                msn = Some(number);
                playlist.segments.push(Segment {
                    msn: number,
                    uri: uri.to_string(),
                    duration,
                    program_date_time: pending_pdt.take(),
                    discontinuity: std::mem::take(&mut pending_discontinuity),
                    map: current_map.clone(),
                    parts: std::mem::take(&mut pending_parts),
                });
            }
        }
    }
    playlist.trailing_parts = pending_parts;
    Ok(playlist)
}

/// Seconds since the epoch of an ISO 8601 `YYYY-MM-DDTHH:MM:SS.sssZ` date.
pub fn parse_date(text: &str) -> Result<f64, String> {
    let bad = || format!("PROGRAM-DATE-TIME {text:?} is not YYYY-MM-DDTHH:MM:SS(.sss)Z");
    let text = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let fraction: f64 = format!("0.{fraction}").parse().map_err(|_| bad())?;
    Ok((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + fraction)
}

/// Check the rules of RFC 8216bis a single playlist must satisfy; `low_latency` for a live
/// LL-HLS playlist.
pub fn check(playlist: &Playlist, low_latency: bool) -> Result<(), String> {
    let version = playlist.version.ok_or("no #EXT-X-VERSION")?;
    let target = playlist.target_duration.ok_or("no #EXT-X-TARGETDURATION")?;
    if playlist.segments.iter().any(|s| s.map.is_some()) && version < 6 {
        return Err(format!("EXT-X-MAP (fMP4) needs VERSION ≥ 6, got {version}"));
    }
    if playlist.segments.is_empty() && playlist.trailing_parts.is_empty() {
        return Err("no segments".into());
    }
    for segment in &playlist.segments {
        if segment.duration.round() as u64 > target {
            return Err(format!(
                "segment {} lasts {:.3} s: rounded above TARGETDURATION {target}",
                segment.msn, segment.duration
            ));
        }
        let pdt = segment
            .program_date_time
            .as_deref()
            .ok_or(format!("segment {} has no PROGRAM-DATE-TIME", segment.msn))?;
        parse_date(pdt)?;
        if segment.map.is_none() {
            return Err(format!(
                "segment {} comes before any EXT-X-MAP",
                segment.msn
            ));
        }
    }
    // Program date times advance with the media (within a discontinuity-free run).
    for pair in playlist.segments.windows(2) {
        if pair[1].discontinuity {
            continue;
        }
        let (a, b) = (
            parse_date(pair[0].program_date_time.as_deref().unwrap())?,
            parse_date(pair[1].program_date_time.as_deref().unwrap())?,
        );
        let expected = a + pair[0].duration;
        if (b - expected).abs() > 0.25 {
            return Err(format!(
                "PROGRAM-DATE-TIME of segment {} is {:.3} s off its predecessor's end",
                pair[1].msn,
                b - expected
            ));
        }
    }
    if playlist.ended {
        if playlist.preload_hint.is_some() {
            return Err("an ended playlist has no PRELOAD-HINT".into());
        }
        if !playlist.trailing_parts.is_empty() {
            return Err("an ended playlist has no parts after its last segment".into());
        }
    }
    if low_latency {
        let part_target = playlist.part_target.ok_or("LL-HLS needs #EXT-X-PART-INF")?;
        let control = &playlist.server_control;
        if control.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES") {
            return Err(format!(
                "SERVER-CONTROL lacks CAN-BLOCK-RELOAD=YES: {control:?}"
            ));
        }
        let part_hold_back: f64 = control
            .get("PART-HOLD-BACK")
            .and_then(|v| v.parse().ok())
            .ok_or("SERVER-CONTROL lacks PART-HOLD-BACK")?;
        if part_hold_back < 2.0 * part_target {
            return Err(format!(
                "PART-HOLD-BACK {part_hold_back} must be at least twice PART-TARGET {part_target}"
            ));
        }
        if let Some(hold_back) = control.get("HOLD-BACK").and_then(|v| v.parse::<f64>().ok())
            && hold_back < 3.0 * target as f64
        {
            return Err(format!("HOLD-BACK {hold_back} is below 3 × TARGETDURATION"));
        }
        let parts = playlist
            .segments
            .iter()
            .flat_map(|s| &s.parts)
            .chain(&playlist.trailing_parts);
        for part in parts {
            // The RFC allows no slack: a part may not exceed PART-TARGET.
            if part.duration > part_target + 1e-6 {
                return Err(format!(
                    "part {} lasts {} s, above PART-TARGET {part_target}",
                    part.uri, part.duration
                ));
            }
        }
        for segment in playlist.segments.iter().filter(|s| !s.parts.is_empty()) {
            let sum: f64 = segment.parts.iter().map(|p| p.duration).sum();
            if (sum - segment.duration).abs() > 0.05 {
                return Err(format!(
                    "segment {}: its parts add up to {sum:.3} s, EXTINF says {:.3}",
                    segment.msn, segment.duration
                ));
            }
        }
    }
    Ok(())
}

/// Rules across two reloads of the same live playlist (`earlier` fetched first).
pub fn check_reload(earlier: &Playlist, later: &Playlist) -> Result<(), String> {
    if earlier.target_duration != later.target_duration {
        return Err(format!(
            "TARGETDURATION changed from {:?} to {:?}",
            earlier.target_duration, later.target_duration
        ));
    }
    if later.media_sequence < earlier.media_sequence {
        return Err(format!(
            "MEDIA-SEQUENCE went back from {} to {}",
            earlier.media_sequence, later.media_sequence
        ));
    }
    if later.discontinuity_sequence < earlier.discontinuity_sequence {
        return Err("DISCONTINUITY-SEQUENCE went back".into());
    }
    for segment in &earlier.segments {
        if let Some(same) = later.segments.iter().find(|s| s.msn == segment.msn)
            && (same.uri != segment.uri || (same.duration - segment.duration).abs() > 1e-9)
        {
            return Err(format!(
                "segment {} changed between reloads: {segment:?} then {same:?}",
                segment.msn
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_catches_broken_playlists() {
        let good = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,HOLD-BACK=6\n\
            #EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-MAP:URI=\"i/init-0.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-11-22T08:00:00.000Z\n\
            #EXT-X-PART:DURATION=0.2,URI=\"p3-0\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.2,URI=\"p3-1\"\n\
            #EXTINF:0.400,\ns3\n#EXT-X-PART:DURATION=0.2,URI=\"p4-0\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p4-1\"\n";
        let playlist = parse(good).unwrap();
        check(&playlist, true).unwrap();
        assert_eq!(playlist.segments[0].msn, 3);
        for (from, to) in [
            ("PART-TARGET=0.2", "PART-TARGET=0.1"),
            ("#EXTINF:0.400", "#EXTINF:2.600"),
            ("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"),
            ("#EXT-X-PROGRAM-DATE-TIME:2026-11-22T08:00:00.000Z\n", ""),
            ("#EXT-X-VERSION:6", "#EXT-X-VERSION:3"),
        ] {
            let broken = parse(&good.replace(from, to)).unwrap();
            assert!(check(&broken, true).is_err(), "{from} → {to} passed");
        }
        assert!(parse(&good.replace("#EXTM3U", "")).is_err());
        assert_eq!(parse_date("1970-01-02T00:00:01.500Z").unwrap(), 86_401.5);
    }
}
