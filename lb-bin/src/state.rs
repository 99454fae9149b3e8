//! The allocations a standalone node keeps in `--state-dir/allocations.json`, so that a restart
//! changes no address.
//!
//! The disk may fail in every way and the node still runs: a file that is empty, truncated or
//! not ours (what a power loss or a stray edit leaves) is moved aside as
//! `allocations.json.corrupt-<unix time>` and the node starts from the config and the others'
//! ledgers; a write that fails is retried by the caller on its next turn and shown, while the
//! node keeps announcing what it agreed. Writes are durable: the new file is written and
//! fsynced, renamed over the old one, and the directory fsynced, so a power loss leaves the old
//! file or the new one, never an empty one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lb_core::alloc::Allocation;
use lb_core::objects::ServiceKey;
use tracing::warn;

/// service (`namespace/name`) → its addresses, as the file holds them.
pub type Saved = BTreeMap<String, Vec<IpAddr>>;

/// The state file and what is known of it.
#[derive(Debug, Default)]
pub struct State {
    path: Option<PathBuf>,
    /// What the file holds now (the last successful write, or what was read at start).
    pub saved: Saved,
    /// Why the last write failed; `None` once a write succeeds.
    pub error: Option<String>,
    /// Writes that failed since start.
    pub failures: u64,
    /// Where an unreadable file found at start was moved.
    pub moved_aside: Option<PathBuf>,
}

impl State {
    /// Opens the state in `dir` (none: nothing is kept). Never fails: a directory that cannot
    /// be created or a file that cannot be read leaves the node running from its config, with
    /// the reason in `error` (and the next write tries again).
    pub fn open(dir: Option<&Path>) -> State {
        let Some(dir) = dir else {
            return State::default();
        };
        let path = dir.join("allocations.json");
        let mut st = State {
            path: Some(path.clone()),
            ..State::default()
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            st.fail(format!("creating {}: {e}", dir.display()));
            return st;
        }
        match std::fs::read(&path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(saved) => st.saved = saved,
                Err(why) => {
                    let aside = aside_name(&path, now_secs());
                    match std::fs::rename(&path, &aside) {
                        Ok(()) => {
                            warn!(
                                "{} {why}: moved aside to {}; starting from the config",
                                path.display(),
                                aside.display()
                            );
                            st.moved_aside = Some(aside);
                        }
                        Err(e) => st.fail(format!(
                            "{} {why}, and moving it aside failed: {e}",
                            path.display()
                        )),
                    }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => st.fail(format!("reading {}: {e}", path.display())),
        }
        st
    }

    /// Counts a failure; logs it when the reason is new (retries every 250 ms would flood).
    fn fail(&mut self, why: String) {
        if self.error.as_ref() != Some(&why) {
            warn!("state: {why} (retried until it succeeds)");
        }
        self.failures += 1;
        self.error = Some(why);
    }

    /// Writes the allocations if they differ from what the file holds. A failed write keeps
    /// `saved` as the file is, so the next call writes again; the caller goes on announcing.
    pub fn save(&mut self, allocated: &BTreeMap<ServiceKey, Allocation>) -> Result<(), StateError> {
        let now: Saved = allocated
            .iter()
            .map(|(k, a)| (k.to_string(), a.ips.clone()))
            .collect();
        let Some(path) = self.path.clone() else {
            self.saved = now;
            return Ok(());
        };
        if now == self.saved && self.error.is_none() {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&now).map_err(StateError::Encode)?;
        match write_durably(&path, &bytes) {
            Ok(()) => {
                if let Some(e) = self.error.take() {
                    tracing::info!("state: {} written (after: {e})", path.display());
                }
                self.saved = now;
                Ok(())
            }
            Err(source) => {
                let e = StateError::Write { path, source };
                self.fail(e.to_string());
                Err(e)
            }
        }
    }

    /// Whether a write is owed (the last one failed): the caller tries again on its next turn.
    pub fn owes_write(&self) -> bool {
        self.error.is_some() && self.path.is_some()
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file holds nothing (what a power loss can leave).
    #[error("is empty")]
    Empty,
    /// The file is not ours, or truncated.
    #[error("is not an allocation file ({0})")]
    NotOurs(#[source] serde_json::Error),
    /// Writing it failed (a read-only or full disk).
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The allocations could not be encoded.
    #[error("encoding the allocations: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The file's allocations, or why it is not an allocation file.
pub fn parse(bytes: &[u8]) -> Result<Saved, StateError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StateError::Empty);
    }
    serde_json::from_slice(bytes).map_err(StateError::NotOurs)
}

/// `allocations.json.corrupt-<secs>`, beside the file.
fn aside_name(path: &Path, secs: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    path.with_file_name(name)
}

/// Write a temporary file, fsync it, rename it over `path`, fsync the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn one(ip: &str) -> BTreeMap<ServiceKey, Allocation> {
        let mut m = BTreeMap::new();
        m.insert(
            ServiceKey::new("default", "web"),
            Allocation {
                pool: "p".into(),
                ips: vec![ip.parse().unwrap()],
            },
        );
        m
    }

    #[test]
    fn an_empty_a_truncated_or_a_foreign_file_is_moved_aside_and_the_node_starts() {
        for (tag, text) in [
            ("empty", ""),
            ("truncated", "{\"default/web\": [\"192.0.2.1"),
            ("garbage", "\u{1}\u{2}not json"),
            ("foreign", "{\"kind\": \"Deployment\"}"),
        ] {
            let d = temp_dir(tag);
            std::fs::write(d.join("allocations.json"), text).unwrap();
            let mut st = State::open(Some(&d));
            assert!(st.saved.is_empty(), "{tag}");
            assert_eq!(st.error, None, "{tag}");
            let aside = st.moved_aside.clone().expect(tag);
            assert_eq!(std::fs::read_to_string(&aside).unwrap(), text, "{tag}");
            assert!(
                aside
                    .to_string_lossy()
                    .contains("allocations.json.corrupt-"),
                "{aside:?}"
            );
            st.save(&one("192.0.2.1")).unwrap();
            let back = parse(&std::fs::read(d.join("allocations.json")).unwrap()).unwrap();
            assert_eq!(
                back["default/web"],
                ["192.0.2.1".parse::<IpAddr>().unwrap()]
            );
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_failed_write_is_shown_kept_owed_and_retried_until_it_succeeds() {
        let d = temp_dir("retry");
        let mut st = State::open(Some(&d));
        st.save(&one("192.0.2.1")).unwrap();
        // The directory goes away (a disk unmounted, a full disk): the write fails.
        std::fs::remove_dir_all(&d).unwrap();
        let e = st.save(&one("192.0.2.2")).unwrap_err();
        assert!(matches!(e, StateError::Write { .. }), "{e}");
        assert!(e.to_string().contains("allocations.json"), "{e}");
        assert!(st.owes_write());
        assert_eq!(st.failures, 1);
        // What the file holds is still the old set: a restart would claim it, and the retry
        // writes the new one.
        assert_eq!(
            st.saved["default/web"],
            ["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        std::fs::create_dir_all(&d).unwrap();
        st.save(&one("192.0.2.2")).unwrap();
        assert!(!st.owes_write());
        let back = parse(&std::fs::read(d.join("allocations.json")).unwrap()).unwrap();
        assert_eq!(
            back["default/web"],
            ["192.0.2.2".parse::<IpAddr>().unwrap()]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_error_shown_not_a_stop() {
        let d = temp_dir("blocked");
        let file = d.join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let st = State::open(Some(&file.join("state")));
        assert!(st.error.as_deref().unwrap().contains("creating"), "{st:?}");
        assert!(st.owes_write());
        let _ = std::fs::remove_dir_all(&d);
    }
}
