//! The route file(s) as a snapshot source: load, validate, and watch for changes.
//!
//! `--config` names a file or a directory. A directory's route files are every `*.yaml`
//! and `*.yml` directly in it (not hidden ones, not subdirectories), read in name order
//! and merged into one configuration — one file per team — with
//! [`routemaster_common::spec::Sources`], the same merge `routemaster apply -f DIR` uses;
//! an object declared twice, or invalid, is reported with its file and line. A file may
//! hold several YAML documents (`---`).
//!
//! Watching polls metadata (size, mtime, inode of each route file, and the set of files)
//! a few times a second rather than relying on inotify: polling sees in-place edits,
//! rename-over, files added or removed, and symlink swaps (Kubernetes ConfigMaps) alike,
//! for one `stat` per file per tick. A directory is reloaded as a whole. Files that fail to
//! load are re-read on every tick until they load, so an edit racing the reader is never
//! missed; errors are logged once per distinct content.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use routemaster_common::Config;
use routemaster_common::snapshot::{Snapshot, Source};
use routemaster_common::spec::{SourceErrors, Sources};

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
    #[error("{path}: not a text file (it is not valid UTF-8)")]
    NotText { path: PathBuf },
    #[error("{path} has no route files (*.yaml or *.yml)")]
    NoFiles { path: PathBuf },
    /// Syntax errors, duplicates and invalid objects, each with its file (and line); on
    /// one line, for logs.
    #[error("{}", one_line(.0))]
    Invalid(SourceErrors),
}

fn one_line(errors: &SourceErrors) -> String {
    errors
        .0
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One route file as read from disk.
#[derive(Debug, Clone)]
pub struct RouteFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Whether `name` is a route file in a directory: `*.yaml` or `*.yml`, not hidden (editors'
/// swap files, Kubernetes' `..data`).
pub fn is_route_file_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The route files of `path`, in name order: the file itself, or a directory's `*.yaml` /
/// `*.yml` files (symlinks followed; subdirectories ignored).
pub fn route_file_paths(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_err = |error| LoadError::Read {
        path: path.to_owned(),
        error,
    };
    if !std::fs::metadata(path).map_err(read_err)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let file = entry.path();
        if is_route_file_name(name) && std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every route file of `path` ([`route_file_paths`]); a directory without any is
/// an error.
pub fn read_route_files(path: &Path) -> Result<Vec<RouteFile>, LoadError> {
    let paths = route_file_paths(path)?;
    if paths.is_empty() {
        return Err(LoadError::NoFiles {
            path: path.to_owned(),
        });
    }
    paths
        .into_iter()
        .map(|p| match std::fs::read(&p) {
            Ok(bytes) => Ok(RouteFile { path: p, bytes }),
            Err(error) => Err(LoadError::Read { path: p, error }),
        })
        .collect()
}

/// Parses route files into one set of objects (not validated yet).
pub fn parse_route_files(files: &[RouteFile]) -> Result<Sources, LoadError> {
    let mut all = Sources::default();
    for f in files {
        let text = std::str::from_utf8(&f.bytes).map_err(|_| LoadError::NotText {
            path: f.path.clone(),
        })?;
        let name = f.path.display().to_string();
        all.extend(Sources::parse(&name, text).map_err(|e| LoadError::Invalid(e.into()))?);
    }
    Ok(all)
}

/// Parses and validates route files as one configuration.
pub fn config_of(files: &[RouteFile]) -> Result<Config, LoadError> {
    parse_route_files(files)?
        .into_config()
        .map_err(LoadError::Invalid)
}

/// Parses and validates one route file's text.
pub fn parse(path: &Path, text: &str) -> Result<Config, LoadError> {
    config_of(&[RouteFile {
        path: path.to_owned(),
        bytes: text.as_bytes().to_vec(),
    }])
}

/// Route files read at start: their configuration and the hash of the bytes it came
/// from (handed to [`watch`]).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub hash: u64,
}

/// Loads `--config`: a route file or a directory of them.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let files = read_route_files(path)?;
    let config = config_of(&files)?;
    Ok(Loaded {
        config,
        hash: content_hash(&files),
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

fn content_hash(files: &[RouteFile]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for f in files {
        f.path.hash(&mut h);
        f.bytes.hash(&mut h);
    }
    h.finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temp dir, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str, files: &[(&str, &[u8])]) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "routemaster-file-source-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            for (name, bytes) in files {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SVC: &[u8] = b"services:\n  - { name: app, instances: [{ address: \"127.0.0.1:9\" }] }\n";

    #[test]
    fn a_directory_is_every_route_file_in_it_merged() {
        let dir = Dir::new(
            "merge",
            &[
                ("10-services.yaml", SVC),
                (
                    "20-team-a.yml",
                    b"routes:\n  - { id: a, forward: { service: app } }\n---\nroutes:\n  - { id: a2, forward: { service: app } }\n",
                ),
                ("README.md", b"not yaml at all: [\n"),
                (".hidden.yaml", b"garbage: ["),
                ("notes.yaml.bak", b"garbage: ["),
            ],
        );
        std::fs::write(dir.0.join("sub/ignored.yaml"), "garbage: [").unwrap();
        let loaded = load(&dir.0).unwrap();
        assert_eq!(loaded.config.services().len(), 1);
        assert_eq!(loaded.config.routes().len(), 2);
        let names: Vec<String> = route_file_paths(&dir.0)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-services.yaml", "20-team-a.yml"]);
    }

    #[test]
    fn errors_name_the_file() {
        type Files<'a> = Vec<(&'a str, &'a [u8])>;
        let dup = b"routes:\n  - { id: a, forward: { service: app } }\n";
        let cases: Vec<(&str, Files, Vec<String>)> = vec![
            (
                "duplicate across files",
                vec![("a.yaml", SVC), ("b.yaml", dup), ("c.yaml", dup)],
                vec![
                    "route \"a\" is declared twice: at ".into(),
                    "b.yaml:2 and at ".into(),
                    "c.yaml:2".into(),
                ],
            ),
            (
                "invalid object",
                vec![
                    ("a.yaml", SVC),
                    ("b.yaml", b"# b\nroutes:\n  - { id: b, path: { prefix: x }, forward: { service: app } }\n"),
                ],
                vec!["b.yaml:3: route \"b\": path.prefix".into()],
            ),
            (
                "not YAML",
                vec![("a.yaml", SVC), ("b.yaml", b"hello there\n")],
                vec!["b.yaml:1:1: not a YAML mapping".into()],
            ),
            (
                "not text",
                vec![("a.yaml", b"routes: [\xff]\n")],
                vec!["a.yaml: not a text file".into()],
            ),
            (
                "no route files",
                vec![("notes.txt", b"x")],
                vec!["has no route files (*.yaml or *.yml)".into()],
            ),
        ];
        for (name, files, needles) in cases {
            let dir = Dir::new(&name.replace(' ', "-"), &files);
            let err = load(&dir.0).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(&needle), "{name}: {err:?} lacks {needle:?}");
            }
            assert_eq!(err.lines().count(), 1, "{name}: one line for logs: {err}");
        }
    }
}
