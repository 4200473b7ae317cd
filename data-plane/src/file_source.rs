//! The route file as a snapshot source: load, validate, and watch for changes.
//!
//! Watching polls the file's metadata (size, mtime, inode) a few times a second rather
//! than relying on inotify: polling sees in-place edits, rename-over and symlink swaps
//! (Kubernetes ConfigMaps) alike, and costs one `stat` per tick. A file that fails to
//! load is re-read on every tick until it loads, so an edit racing the reader is never
//! missed; errors are logged once per distinct content.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use routemaster_common::snapshot::{Snapshot, Source};
use routemaster_common::spec::{ConfigSpec, ParseError};
use routemaster_common::{Config, ValidationErrors};

use crate::state::ProxyState;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The underlying errors are part of the message (not `#[source]`), so they are
    // printed once whether the caller shows the chain or not.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse { path: PathBuf, error: ParseError },
    #[error("{path}: invalid: {error}")]
    Invalid {
        path: PathBuf,
        error: ValidationErrors,
    },
}

/// Parses and validates route-file text.
pub fn parse(path: &Path, text: &str) -> Result<Config, LoadError> {
    let spec = ConfigSpec::from_yaml(text).map_err(|error| LoadError::Parse {
        path: path.to_owned(),
        error,
    })?;
    Config::try_from(spec).map_err(|error| LoadError::Invalid {
        path: path.to_owned(),
        error,
    })
}

/// A route file read at start: its configuration and the hash of the bytes it came
/// from (handed to [`watch`]).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub hash: u64,
}

pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    let config = parse(path, &String::from_utf8_lossy(&bytes))?;
    Ok(Loaded {
        config,
        hash: content_hash(&bytes),
    })
}

pub fn snapshot(path: &Path, version: u64, config: Config) -> Arc<Snapshot> {
    Arc::new(Snapshot::new(
        version,
        Source::File(path.display().to_string()),
        config,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    mtime_ns: i64,
    ino: u64,
    dev: u64,
}

impl Fingerprint {
    fn is_recent(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        now.saturating_sub(self.mtime_ns) < RECENT.as_nanos() as i64
    }
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// How long a changed file must stay unchanged before it is read: a writer that
/// truncates and then writes (an in-place edit) is usually done well within this.
const SETTLE: Duration = Duration::from_millis(20);
/// Files modified this recently are re-read every tick even if their metadata looks
/// unchanged: on filesystems with coarse timestamps a same-size edit within one mtime
/// tick is otherwise invisible.
const RECENT: Duration = Duration::from_secs(2);

/// Watches `path` and applies every new valid version until `shutdown` resolves.
/// `version` and `applied_hash` describe what was loaded at start ([`load`]); the first
/// tick re-reads the file, so an edit made between that load and this task starting is
/// not lost.
pub async fn watch(
    path: PathBuf,
    state: Arc<ProxyState>,
    mut version: u64,
    applied_hash: u64,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut seen: Option<Fingerprint> = None;
    let mut applied_hash = applied_hash;
    let mut rejected_hash: Option<u64> = None;
    // Re-read every tick until the file loads (an edit may be half-written).
    let mut pending = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut shutdown => return,
        }
        // Missing: mid-rename, or deleted. Either way keep serving.
        let Some(now) = fingerprint(&path) else {
            continue;
        };
        if Some(now) == seen && !pending && !now.is_recent() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            () = &mut shutdown => return,
        }
        if fingerprint(&path) != Some(now) {
            pending = true; // still being written; look again next tick
            continue;
        }
        seen = Some(now);
        let p = path.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || std::fs::read(&p)).await else {
            continue;
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                if !pending {
                    tracing::warn!(path = %path.display(), error = %e, "route file unreadable; keeping the current table");
                }
                pending = true;
                continue;
            }
        };
        if bytes.is_empty() {
            // What a reader sees between an in-place edit's truncate and its write; never
            // a configuration (an intentionally empty table is `routes: []`).
            pending = true;
            continue;
        }
        let hash = content_hash(&bytes);
        if hash == applied_hash {
            pending = false;
            continue;
        }
        let p = path.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let text = String::from_utf8_lossy(&bytes);
            parse(&p, &text)
        })
        .await;
        match parsed {
            Ok(Ok(config)) => {
                pending = false;
                applied_hash = hash;
                version += 1;
                let applied = state.apply(snapshot(&path, version, config));
                tracing::info!(
                    version = applied.version,
                    routes = applied.routes,
                    services = applied.services,
                    compile_ms = applied.compile_time.as_secs_f64() * 1e3,
                    "route file reloaded"
                );
            }
            Ok(Err(e)) => {
                pending = true;
                if rejected_hash != Some(hash) {
                    rejected_hash = Some(hash);
                    tracing::error!(error = %e, "route file rejected; keeping the last good table");
                }
            }
            Err(_) => pending = true,
        }
    }
}
