//! Route files on disk: a file, or a directory whose `*.yaml` and `*.yml` files (directly
//! in it, not hidden, in name order) are one configuration — one file per team — merged
//! with [`Sources`], so `routemaster-proxy --config DIR` and `routemaster apply -f DIR`
//! read exactly the same files the same way. A file may hold several YAML documents
//! (`---`); every object is remembered with its file and line, so errors name both.
//!
//! This is the I/O half of route files; parsing, merging and validation are `common`'s.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use routemaster_common::Config;
use routemaster_common::spec::{SourceErrors, Sources};

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

/// One route file as read from disk (or standard input, for the CLI).
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

/// Route files read and validated: their configuration and the hash of the bytes it came
/// from ([`content_hash`]), so a watcher can tell a real change from a touch.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub hash: u64,
}

/// Loads a route file or a directory of them.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let files = read_route_files(path)?;
    let config = config_of(&files)?;
    Ok(Loaded {
        config,
        hash: content_hash(&files),
    })
}

/// A hash of the files' names and contents (within one process only).
pub fn content_hash(files: &[RouteFile]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for f in files {
        f.path.hash(&mut h);
        f.bytes.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temp dir, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str, files: &[(&str, &[u8])]) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "routemaster-route-files-{tag}-{}",
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
        let files = read_route_files(&dir.0).unwrap();
        assert_eq!(loaded.hash, content_hash(&files), "same bytes, same hash");
        let single = load(&dir.0.join("10-services.yaml")).unwrap();
        assert_ne!(single.hash, loaded.hash);
    }

    #[test]
    fn route_file_names() {
        let cases = [
            ("routes.yaml", true),
            ("team-a.yml", true),
            (".routes.yaml", false),
            ("..data", false),
            ("routes.yaml.swp", false),
            ("routes.json", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_route_file_name(name), want, "{name}");
        }
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
