//! The rollback latch on disk. Written atomically (a temp file in the same folder, fsync,
//! rename, fsync of the folder) so a crash leaves the old file or the new one, never half.
//! A file that cannot be read is an error that names it: the canary is never silently
//! re-enabled.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One rollback, as kept and shown (`last_rollback`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    pub trigger: String,
    pub reason: String,
    /// RFC 3339.
    pub at: String,
    pub canary_version: String,
    pub figures: serde_json::Value,
    /// The replica that decided, in a fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatchState {
    /// The format, so a later release can read an older file.
    pub format: u32,
    pub canary_version: String,
    pub rolled_back: bool,
    pub last_rollback: Option<RollbackRecord>,
    /// How many resumes this canary version has seen: the fleet's latch orders states by
    /// (generation, rolled_back), so a resume outranks the rollback it clears. Files written
    /// before fleets had none: 0.
    #[serde(default)]
    pub generation: u64,
    /// Where the rollout stands for this canary version (with `[rollout]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRecord>,
    /// The last events, oldest first (`GET /canary/events` after a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::notify::Event>,
}

/// A rollout's position on disk: a restart continues the step (its bake counts from `since`;
/// the promotion sums start again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRecord {
    pub step: usize,
    pub percent: f64,
    /// RFC 3339, for people; `since_ms` is what is read back.
    pub since: String,
    pub since_ms: u64,
    pub bake_from_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    #[serde(default)]
    pub held: bool,
    #[serde(default)]
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: cannot read it ({source}); fix or move it away to start fresh")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: not a canary-proxy state file ({detail}); fix or move it away to start fresh")]
    Corrupt { path: PathBuf, detail: String },
    #[error("state file {path}: cannot write it ({source})")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub const FORMAT: u32 = 1;

/// Reads the latch; `None` when there is no file yet.
pub fn load(path: &Path) -> Result<Option<LatchState>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let state: LatchState = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
        path: path.into(),
        detail: e.to_string(),
    })?;
    if state.format != FORMAT {
        return Err(StateError::Corrupt {
            path: path.into(),
            detail: format!("format {} is not {FORMAT}", state.format),
        });
    }
    Ok(Some(state))
}

/// Checks that the state file's folder can take the file: writes, syncs and removes a probe file
/// there. Start-up and `check` call it, so a latch can never silently live in memory only (a
/// read-only mount, a folder owned by another user). `create`: make the folder first (start-up);
/// without it (`check`) a folder not there yet is judged by its nearest existing parent, where
/// start-up would create it, so `check` leaves no folder behind (systemd's StateDirectory, a
/// volume not mounted yet).
pub fn probe(path: &Path, create: bool) -> Result<(), std::io::Error> {
    let mut dir = folder(path);
    if create {
        fs::create_dir_all(&dir)?;
    } else {
        while !dir.exists() {
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
                _ => {
                    dir = PathBuf::from(".");
                    break;
                }
            }
        }
        if !dir.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
    }
    let probe = dir.join(format!(".canary-proxy-probe.{}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| {
        f.write_all(b"probe")?;
        f.sync_all()
    });
    let removed = fs::remove_file(&probe);
    written.and(removed)
}

fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes the latch atomically.
pub fn save(path: &Path, state: &LatchState) -> Result<(), StateError> {
    let body = serde_json::to_vec_pretty(state).expect("the latch serialises");
    write_atomic(path, &body).map_err(|source| StateError::Write {
        path: path.into(),
        source,
    })
}

/// Writes `body` (and a newline) to `path` so that a crash leaves the old file or the new one:
/// a temp file in the same folder, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = folder(path);
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rolled_back: bool) -> LatchState {
        LatchState {
            format: FORMAT,
            canary_version: "v2".into(),
            rolled_back,
            last_rollback: Some(RollbackRecord {
                trigger: "manual".into(),
                reason: "bad deploy".into(),
                at: "2026-11-26T10:00:00Z".into(),
                canary_version: "v2".into(),
                figures: serde_json::json!({"canary": {"requests": 10}}),
                replica: None,
            }),
            generation: 3,
            rollout: None,
            events: Vec::new(),
        }
    }

    #[test]
    fn round_trip_and_overwrite_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &state(true)).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state(true)));
        save(&path, &state(false)).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state(false)));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{\"rolled_back\": tru").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("state.json") && e.contains("not a canary-proxy state file"),
            "{e}"
        );
    }
}
