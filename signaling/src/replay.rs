//! Replays: every HLS broadcast archived on disk, served as a finished (VOD) playlist.
//!
//! Layout, one directory per broadcast under the replay directory (`--replay-dir`):
//!
//! ```text
//! <replay-dir>/<broadcast id>/replay.json     what the directory API lists (rewritten at the end)
//! <replay-dir>/<broadcast id>/segments.jsonl  one line per archived segment, appended as it completes
//! <replay-dir>/<broadcast id>/init-N.mp4, seg-N.m4s   the media, exactly as served live
//! <replay-dir>/<broadcast id>/index.m3u8      the VOD playlist, written when the broadcast ends
//! ```
//!
//! Invariants:
//! - A segment is on disk before its line is in `segments.jsonl`, so the journal never names
//!   a missing file; a crash loses at most the segment being written.
//! - A broadcast whose `replay.json` has no `ended_at` was cut short (crash, kill): the next
//!   start finishes it from its journal, so restarts never lose a replay.
//! - Retention (`--replay-retention-hours`) is checked at start and every minute; an expired
//!   replay's directory is deleted whole.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use roomcast_media::hls::{ArchivedSegment, vod_playlist};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What `replay.json` holds, and what the directory API lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayInfo {
    pub id: String,
    pub room: String,
    pub host: String,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// `None` while live (or after a crash, until the next start finishes it).
    pub ended_at_ms: Option<u64>,
    pub duration_s: f64,
}

/// One line of `segments.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SegmentLine {
    uri: String,
    init: String,
    duration: f64,
    program_date_time_ms: u64,
    discontinuity: bool,
}

impl From<&ArchivedSegment> for SegmentLine {
    fn from(segment: &ArchivedSegment) -> Self {
        SegmentLine {
            uri: segment.uri.clone(),
            init: segment.init.clone(),
            duration: segment.duration,
            program_date_time_ms: unix_ms(segment.program_date_time),
            discontinuity: segment.discontinuity,
        }
    }
}

impl From<SegmentLine> for ArchivedSegment {
    fn from(line: SegmentLine) -> Self {
        ArchivedSegment {
            uri: line.uri,
            init: line.init,
            duration: line.duration,
            program_date_time: UNIX_EPOCH + Duration::from_millis(line.program_date_time_ms),
            discontinuity: line.discontinuity,
        }
    }
}

/// The finished replays on disk, by id.
pub struct ReplayStore {
    dir: PathBuf,
    retention: Duration,
    replays: RwLock<BTreeMap<String, ReplayInfo>>,
}

impl ReplayStore {
    /// Open (and create) the replay directory, finish broadcasts a crash cut short, and apply
    /// retention.
    pub fn open(dir: PathBuf, retention: Duration) -> io::Result<ReplayStore> {
        std::fs::create_dir_all(&dir).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "cannot create the replay directory {}: {error} (set --replay-dir, or \
                     --replay-retention-hours 0 to keep no replays)",
                    dir.display()
                ),
            )
        })?;
        let store = ReplayStore {
            dir,
            retention,
            replays: RwLock::new(BTreeMap::new()),
        };
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&store.dir)? {
            let path = entry?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !valid_id(&id) {
                continue;
            }
            match store.load(&id) {
                Ok(Some(replay)) => {
                    found.insert(id, replay);
                }
                Ok(None) => {}
                Err(error) => warn!(replay = %id, "skipping an unreadable replay: {error}"),
            }
        }
        info!(
            dir = %store.dir.display(),
            replays = found.len(),
            "replays loaded"
        );
        *store.replays.write().expect("replay index lock") = found;
        store.expire(SystemTime::now());
        Ok(store)
    }

    /// Read one replay directory, finishing it if a crash cut it short.
    fn load(&self, id: &str) -> io::Result<Option<ReplayInfo>> {
        let dir = self.dir.join(id);
        let text = match std::fs::read_to_string(dir.join("replay.json")) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut replay: ReplayInfo = serde_json::from_str(&text).map_err(io::Error::other)?;
        if replay.ended_at_ms.is_none() {
            let segments = read_journal(&dir)?;
            if segments.is_empty() {
                std::fs::remove_dir_all(&dir)?;
                return Ok(None);
            }
            replay.duration_s = segments.iter().map(|s| s.duration).sum();
            replay.ended_at_ms = Some(
                unix_ms(segments[segments.len() - 1].program_date_time)
                    + (segments[segments.len() - 1].duration * 1000.0) as u64,
            );
            std::fs::write(dir.join("index.m3u8"), vod_playlist(&segments))?;
            write_json(&dir.join("replay.json"), &replay)?;
            warn!(replay = %id, room = %replay.room, "finished a replay cut short by a restart");
        }
        Ok(Some(replay))
    }

    /// Finished replays, newest first.
    pub fn list(&self) -> Vec<ReplayInfo> {
        let replays = self.replays.read().expect("replay index lock");
        let mut list: Vec<ReplayInfo> = replays.values().cloned().collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.started_at_ms));
        list
    }

    pub fn get(&self, id: &str) -> Option<ReplayInfo> {
        self.replays
            .read()
            .expect("replay index lock")
            .get(id)
            .cloned()
    }

    /// A file of replay `id`, if the name is one a playlist can list.
    pub fn file_path(&self, id: &str, file: &str) -> Option<PathBuf> {
        (valid_id(id) && valid_file_name(file)).then(|| self.dir.join(id).join(file))
    }

    /// Start archiving a broadcast.
    pub async fn begin(&self, info: &ReplayInfo) -> io::Result<()> {
        let dir = self.dir.join(&info.id);
        tokio::fs::create_dir_all(&dir).await?;
        write_json_async(&dir.join("replay.json"), info).await
    }

    /// Archive one file of a live broadcast (an init segment or a media segment).
    pub async fn write_file(&self, id: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
        let Some(path) = self.file_path(id, name) else {
            return Err(io::Error::other(format!(
                "not a replay file name: {name:?}"
            )));
        };
        tokio::fs::write(path, bytes).await
    }

    /// Record a completed segment (its file already written) in the journal.
    pub async fn append_segment(&self, id: &str, segment: &ArchivedSegment) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut line =
            serde_json::to_string(&SegmentLine::from(segment)).map_err(io::Error::other)?;
        line.push('\n');
        let mut journal = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(id).join("segments.jsonl"))
            .await?;
        journal.write_all(line.as_bytes()).await
    }

    /// The broadcast ended: write its VOD playlist and list it.
    pub async fn finish(
        &self,
        mut info: ReplayInfo,
        segments: &[ArchivedSegment],
    ) -> io::Result<()> {
        let dir = self.dir.join(&info.id);
        if segments.is_empty() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Ok(());
        }
        info.duration_s = segments.iter().map(|s| s.duration).sum();
        tokio::fs::write(dir.join("index.m3u8"), vod_playlist(segments)).await?;
        write_json_async(&dir.join("replay.json"), &info).await?;
        info!(replay = %info.id, room = %info.room, duration_s = info.duration_s, "replay saved");
        self.replays
            .write()
            .expect("replay index lock")
            .insert(info.id.clone(), info);
        Ok(())
    }

    /// Delete replays older than the retention. Returns how many went.
    pub fn expire(&self, now: SystemTime) -> usize {
        let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = unix_ms(now).saturating_sub(retention_ms);
        let expired: Vec<String> = self
            .replays
            .read()
            .expect("replay index lock")
            .values()
            .filter(|r| r.ended_at_ms.is_some_and(|ended| ended < cutoff))
            .map(|r| r.id.clone())
            .collect();
        for id in &expired {
            if let Err(error) = std::fs::remove_dir_all(self.dir.join(id))
                && error.kind() != io::ErrorKind::NotFound
            {
                warn!(replay = %id, "cannot delete an expired replay: {error}");
                continue;
            }
            self.replays.write().expect("replay index lock").remove(id);
            info!(replay = %id, "replay expired and deleted");
        }
        expired.len()
    }
}

fn read_journal(dir: &Path) -> io::Result<Vec<ArchivedSegment>> {
    let text = match std::fs::read_to_string(dir.join("segments.jsonl")) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    // A torn last line (crash mid-append) is skipped; every complete line names a written file.
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<SegmentLine>(line).ok())
        .filter(|line| dir.join(&line.uri).exists() && dir.join(&line.init).exists())
        .map(ArchivedSegment::from)
        .collect())
}

fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    std::fs::write(
        &temporary,
        serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
    )?;
    std::fs::rename(temporary, path)
}

async fn write_json_async(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(temporary, path).await
}

/// Broadcast ids are generated by [`crate::hls`]: digits, lowercase hex and `-`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// Names a playlist lists: `index.m3u8`, `init-N.mp4`, `seg-N.m4s`, `part-N-M.m4s`.
pub fn valid_file_name(name: &str) -> bool {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    plain
        && !name.starts_with('.')
        && !name.contains("..")
        && (name == "index.m3u8" || name.ends_with(".mp4") || name.ends_with(".m4s"))
        && name.len() <= 64
}

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(uri: &str, discontinuity: bool) -> ArchivedSegment {
        ArchivedSegment {
            uri: uri.into(),
            init: "init-0.mp4".into(),
            duration: 2.0,
            program_date_time: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            discontinuity,
        }
    }

    fn info(id: &str) -> ReplayInfo {
        ReplayInfo {
            id: id.into(),
            room: "demo".into(),
            host: "obs".into(),
            started_at_ms: 1_800_000_000_000,
            ended_at_ms: None,
            duration_s: 0.0,
        }
    }

    #[test]
    fn file_names_cannot_escape_the_replay_directory() {
        assert!(valid_file_name("seg-12.m4s"));
        assert!(valid_file_name("init-0.mp4"));
        assert!(valid_file_name("index.m3u8"));
        for bad in [
            "../x.m4s",
            "..m4s",
            ".m4s",
            "a/b.m4s",
            "x.json",
            "segments.jsonl",
            "",
        ] {
            assert!(!valid_file_name(bad), "{bad:?} accepted");
        }
        assert!(valid_id("1800000000000-0a1b2c3d"));
        assert!(!valid_id("../etc"));
        assert!(!valid_id(""));
    }

    #[tokio::test]
    async fn a_replay_cut_short_is_finished_at_the_next_start_and_expires() {
        let dir = std::env::temp_dir().join(format!("roomcast-replay-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ReplayStore::open(dir.clone(), Duration::from_secs(3600)).unwrap();
        let id = "1800000000000-00ff";
        store.begin(&info(id)).await.unwrap();
        store.write_file(id, "init-0.mp4", b"init").await.unwrap();
        for (i, name) in ["seg-0.m4s", "seg-1.m4s"].into_iter().enumerate() {
            store.write_file(id, name, b"media").await.unwrap();
            store
                .append_segment(id, &segment(name, i == 1))
                .await
                .unwrap();
        }
        // A journal line whose file never made it to disk, and a torn line.
        store
            .append_segment(id, &segment("seg-2.m4s", false))
            .await
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(id).join("segments.jsonl"))
            .and_then(|mut f| io::Write::write_all(&mut f, b"{\"uri\":\"seg-3"))
            .unwrap();
        assert!(
            store.list().is_empty(),
            "a live broadcast is not a replay yet"
        );
        drop(store);

        let store = ReplayStore::open(dir.clone(), Duration::from_secs(3600)).unwrap();
        let replays = store.list();
        assert_eq!(replays.len(), 1);
        assert_eq!(replays[0].duration_s, 4.0);
        assert!(replays[0].ended_at_ms.is_some());
        let playlist = std::fs::read_to_string(dir.join(id).join("index.m3u8")).unwrap();
        assert!(playlist.contains("seg-1.m4s") && !playlist.contains("seg-2.m4s"));
        assert!(playlist.contains("#EXT-X-ENDLIST"));
        assert!(playlist.contains("#EXT-X-DISCONTINUITY"));

        // Retention: an hour after it ended it is deleted, files and all; a retention too
        // long to count in milliseconds keeps it.
        let later = UNIX_EPOCH
            + Duration::from_millis(replays[0].ended_at_ms.unwrap())
            + Duration::from_secs(3601);
        // (2^64 / 1000 + 1 s: its milliseconds wrap to 384 in a u64.)
        let forever =
            ReplayStore::open(dir.clone(), Duration::from_secs(18_446_744_073_709_552)).unwrap();
        assert_eq!(forever.expire(later), 0);
        drop(forever);
        assert_eq!(store.expire(later), 1);
        assert!(store.list().is_empty());
        assert!(!dir.join(id).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
