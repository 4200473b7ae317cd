//! The route file(s) as a snapshot source: load, validate, and watch for changes.
//!
//! `--config` names a file or a directory. Reading it — a directory's route files are
//! every `*.yaml` and `*.yml` directly in it (not hidden ones, not subdirectories), read
//! in name order and merged into one configuration, the same merge `routemaster apply -f
//! DIR` uses — is [`routemaster_runtime::route_files`] (re-exported here); an object
//! declared twice, or invalid, is reported with its file and line. This module turns
//! what it reads into snapshots and watches for changes.
//!
//! Watching polls metadata (size, mtime, inode of each route file, and the set of files)
//! a few times a second rather than relying on inotify: polling sees in-place edits,
//! rename-over, files added or removed, and symlink swaps (Kubernetes ConfigMaps) alike,
//! for one `stat` per file per tick. A directory is reloaded as a whole. Files that fail to
//! load are re-read on every tick until they load, so an edit racing the reader is never
//! missed; errors are logged once per distinct content.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use routemaster_common::Config;
use routemaster_common::snapshot::{Snapshot, Source};
// Reading route files is shared with the CLI (`routemaster apply -f DIR`) and lives in
// `routemaster-runtime`; loading is re-exported so the proxy has one module for its
// route file.
pub use routemaster_runtime::route_files::{LoadError, Loaded, load, parse};
use routemaster_runtime::route_files::{
    config_of, content_hash, read_route_files, route_file_paths,
};

use crate::state::ProxyState;

/// The snapshot of a configuration read from `path`. A route-file proxy has no labels:
/// `select` and `locality` apply as for a proxy without any, and a service that needs a
/// `${node.NAME}` label gets no instances (503), with an error logged.
pub fn snapshot(path: &Path, version: u64, config: Config) -> Arc<Snapshot> {
    let config = if routemaster_common::locality::needs_labels(&config) {
        let no_labels = std::collections::HashMap::new();
        let (config, errors) = routemaster_common::locality::localize_partial(&config, &no_labels);
        for e in errors {
            tracing::error!(path = %path.display(), error = %e, "route file: no instances for this service (a route-file proxy has no labels)");
        }
        config
    } else {
        config
    };
    Arc::new(Snapshot::new(
        version,
        Source::File(path.display().to_string()),
        config,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i64,
    ino: u64,
    dev: u64,
}

/// The metadata of every route file of `--config`, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Stamp)>);

impl Fingerprint {
    fn is_recent(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.0
            .iter()
            .any(|(_, s)| now.saturating_sub(s.mtime_ns) < RECENT.as_nanos() as i64)
    }

    fn has_empty_file(&self) -> bool {
        self.0.iter().any(|(_, s)| s.len == 0)
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

/// `None` while the route file is missing (mid-rename, deleted) or a directory has none.
fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let paths = route_file_paths(path).ok()?;
    if paths.is_empty() {
        return None;
    }
    let mut stamps = Vec::with_capacity(paths.len());
    for p in paths {
        let s = stamp(&p)?;
        stamps.push((p, s));
    }
    Some(Fingerprint(stamps))
}

/// How long a changed file must stay unchanged before it is read: a writer that
/// truncates and then writes (an in-place edit) is usually done well within this.
const SETTLE: Duration = Duration::from_millis(20);
/// Files modified this recently are re-read every tick even if their metadata looks
/// unchanged: on filesystems with coarse timestamps a same-size edit within one mtime
/// tick is otherwise invisible.
const RECENT: Duration = Duration::from_secs(2);

/// Watches `path` (a route file or a directory of them) and applies every new valid
/// version until `shutdown` resolves.
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
        // Missing (mid-rename, deleted) or a directory with no route files left: keep
        // serving.
        let Some(now) = fingerprint(&path) else {
            continue;
        };
        if Some(&now) == seen.as_ref() && !pending && !now.is_recent() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            () = &mut shutdown => return,
        }
        if fingerprint(&path).as_ref() != Some(&now) {
            pending = true; // still being written; look again next tick
            continue;
        }
        if now.has_empty_file() {
            // What a reader sees between an in-place edit's truncate and its write; never
            // a configuration (an intentionally empty table is `routes: []`).
            seen = Some(now);
            pending = true;
            continue;
        }
        seen = Some(now);
        let p = path.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || read_route_files(&p)).await else {
            continue;
        };
        let files = match read {
            Ok(files) => files,
            Err(e) => {
                if !pending {
                    tracing::warn!(path = %path.display(), error = %e, "route file unreadable; keeping the current table");
                }
                pending = true;
                continue;
            }
        };
        if files.iter().any(|f| f.bytes.is_empty()) {
            pending = true;
            continue;
        }
        let hash = content_hash(&files);
        if hash == applied_hash {
            pending = false;
            continue;
        }
        let parsed = tokio::task::spawn_blocking(move || config_of(&files)).await;
        match parsed {
            Ok(Ok(config)) => {
                // Certificate files are read and checked before anything is applied.
                let snap = snapshot(&path, version + 1, config);
                let st = Arc::clone(&state);
                let done = tokio::task::spawn_blocking(move || crate::tls::apply(&st, snap)).await;
                let applied = match done {
                    Ok(Ok(applied)) => applied,
                    Err(_) => {
                        pending = true;
                        continue;
                    }
                    Ok(Err(e)) => {
                        pending = true;
                        if rejected_hash != Some(hash) {
                            rejected_hash = Some(hash);
                            tracing::error!(error = %e, "route file rejected; keeping the last good table");
                        }
                        continue;
                    }
                };
                pending = false;
                applied_hash = hash;
                version += 1;
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
