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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error("{path}: invalid: {source}")]
    Invalid {
        path: PathBuf,
        source: ValidationErrors,
    },
}

/// Parses and validates route-file text.
pub fn parse(path: &Path, text: &str) -> Result<Config, LoadError> {
    let spec = ConfigSpec::from_yaml(text).map_err(|source| LoadError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Config::try_from(spec).map_err(|source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    })
}

pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
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

/// Watches `path` and applies every new valid version until `shutdown` resolves.
/// `version` is the version of the snapshot already applied at start.
pub async fn watch(
    path: PathBuf,
    state: Arc<ProxyState>,
    mut version: u64,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut seen = fingerprint(&path);
    let mut last_hash = std::fs::read(&path).ok().map(|b| content_hash(&b));
    let mut failing = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut shutdown => return,
        }
        let now = fingerprint(&path);
        if now.is_none() || (now == seen && !failing) {
            // Missing (mid-rename, or deleted: keep serving) or unchanged.
            continue;
        }
        seen = now;
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&p).map_err(|source| LoadError::Read {
                path: p.clone(),
                source,
            })?;
            let hash = content_hash(&bytes);
            Ok::<_, LoadError>((hash, bytes, p))
        })
        .await;
        let (hash, bytes, p) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "route file unreadable; keeping the current table");
                failing = true;
                continue;
            }
            Err(_) => continue,
        };
        if Some(hash) == last_hash {
            continue;
        }
        last_hash = Some(hash);
        let parsed = tokio::task::spawn_blocking(move || {
            let text = String::from_utf8_lossy(&bytes);
            parse(&p, &text)
        })
        .await;
        match parsed {
            Ok(Ok(config)) => {
                failing = false;
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
                failing = true;
                tracing::error!(error = %e, "route file rejected; keeping the last good table");
            }
            Err(_) => failing = true,
        }
    }
}
