//! The `-f` arguments of `apply` and `diff`: route files, directories of them (every
//! `*.yaml` / `*.yml`, in name order — the same files `routemaster-proxy --config DIR`
//! serves) and `-` for standard input. Each file may hold several YAML documents; all of
//! them together are one set of objects, each remembered with its file and line.

use std::io::Read;
use std::path::{Path, PathBuf};

use routemaster_common::spec::Sources;
use routemaster_runtime::route_files::{self, LoadError, RouteFile};

use super::error::CliError;

/// How standard input is named in messages.
pub const STDIN: &str = "stdin";

/// Reads and parses every input. Nothing is validated yet (see
/// [`Sources::validate_objects`]), but an input set with no object at all is an error.
pub fn read_sources(inputs: &[PathBuf], stdin: &mut dyn Read) -> Result<Sources, CliError> {
    let mut all = Sources::default();
    let mut names = Vec::with_capacity(inputs.len());
    let mut stdin_read = false;
    for input in inputs {
        let files = if input.as_os_str() == "-" {
            if stdin_read {
                return Err(CliError::Usage(
                    "`-f -` (standard input) can be given once".into(),
                ));
            }
            stdin_read = true;
            names.push(STDIN.to_owned());
            let mut bytes = Vec::new();
            stdin
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::ReadFile {
                    path: STDIN.into(),
                    reason: without_os_code(&e.to_string()).to_owned(),
                })?;
            vec![RouteFile {
                path: PathBuf::from(STDIN),
                bytes,
            }]
        } else {
            names.push(input.display().to_string());
            read_path(input)?
        };
        all.extend(route_files::parse_route_files(&files).map_err(|e| match e {
            LoadError::NotText { path } => CliError::NotText {
                path: path.display().to_string(),
            },
            LoadError::Invalid(errors) => CliError::Invalid(errors),
            other => CliError::Other(other.to_string()),
        })?);
    }
    if all.is_empty() {
        return Err(CliError::NoObjects {
            inputs: names.join(", "),
        });
    }
    Ok(all)
}

/// A file, or a directory's route files (none: nothing, and the caller says "no
/// objects").
fn read_path(path: &Path) -> Result<Vec<RouteFile>, CliError> {
    match route_files::read_route_files(path) {
        Ok(files) => Ok(files),
        Err(LoadError::NoFiles { .. }) => Ok(Vec::new()),
        Err(LoadError::Read { path, error }) => Err(CliError::ReadFile {
            path: path.display().to_string(),
            reason: without_os_code(&error.to_string()).to_owned(),
        }),
        Err(other) => Err(CliError::Other(other.to_string())),
    }
}

/// "No such file or directory (os error 2)" → "No such file or directory".
pub fn without_os_code(message: &str) -> &str {
    match message.rfind(" (os error ") {
        Some(i) if message.ends_with(')') => &message[..i],
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "routemaster-cli-input-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
        fn write(&self, name: &str, text: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read(inputs: &[PathBuf], stdin: &str) -> Result<Sources, String> {
        read_sources(inputs, &mut stdin.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn inputs() {
        let dir = Dir::new("inputs");
        let svc = dir.write("a.yaml", b"services: [{ name: lms }]\n");
        let multi = dir.write(
            "b.yml",
            b"routes: [{ id: r1, forward: { service: lms } }]\n---\nroutes: [{ id: r2, forward: { service: lms } }]\n",
        );
        let empty = dir.write("empty.txt", b"");
        let comments = dir.write("comments.txt", b"# nothing\n---\n");
        let binary = dir.write("bin.txt", b"\xff\xfe");
        let count = |s: Result<Sources, String>| s.map(|s| s.object_count());
        assert_eq!(count(read(std::slice::from_ref(&svc), "")), Ok(1));
        assert_eq!(count(read(std::slice::from_ref(&multi), "")), Ok(2));
        assert_eq!(
            count(read(std::slice::from_ref(&dir.0), "")),
            Ok(3),
            "the directory's yaml files"
        );
        assert_eq!(
            count(read(&["-".into()], "services: [{ name: x }]\n")),
            Ok(1)
        );
        assert_eq!(count(read(&[svc.clone(), "-".into()], "routes: []")), Ok(1));
        let e = read(std::slice::from_ref(&empty), "").unwrap_err();
        assert_eq!(e, format!("no objects in {}", empty.display()));
        let e = read(&[comments, "-".into()], "").unwrap_err();
        assert!(
            e.starts_with("no objects in ") && e.ends_with("comments.txt, stdin"),
            "{e}"
        );
        let e = read(std::slice::from_ref(&binary), "").unwrap_err();
        assert_eq!(
            e,
            format!(
                "{}: not a text file (it is not valid UTF-8)",
                binary.display()
            )
        );
        let e = read(&[dir.0.join("missing.yaml")], "").unwrap_err();
        assert!(
            e.starts_with("cannot read ") && e.ends_with("missing.yaml: No such file or directory"),
            "{e}"
        );
        let e = read(&["-".into(), "-".into()], "").unwrap_err();
        assert!(e.contains("can be given once"), "{e}");
        let e = read(&["-".into()], "hello world\n").unwrap_err();
        assert_eq!(
            e,
            "stdin:1:1: not a YAML mapping: a route file is a mapping with `services:` and/or `routes:` lists"
        );
        let empty_dir = Dir::new("empty-dir");
        let e = read(std::slice::from_ref(&empty_dir.0), "").unwrap_err();
        assert_eq!(e, format!("no objects in {}", empty_dir.0.display()));
    }

    #[test]
    fn file_errors_are_one_readable_line() {
        assert_eq!(
            without_os_code("No such file or directory (os error 2)"),
            "No such file or directory"
        );
        assert_eq!(without_os_code("plain"), "plain");
    }
}
