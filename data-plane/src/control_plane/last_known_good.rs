//! The last-known-good snapshot on disk (`--state-dir`): one file,
//! `last-known-good.snapshot`, replaced atomically after every applied snapshot and
//! read back at start.
//!
//! Format: one ASCII header line, then the body.
//!
//! ```text
//! routemaster-last-known-good 1 len=BYTES crc32=HEX8\n
//! {"version":…,"group":…,"control_plane":…,"saved_at":…,"config":{services, routes}}
//! ```
//!
//! The body is JSON with the route file's field names (the spec the control plane
//! sent, as received), the representation etcd stores too, so an operator can read
//! it with `tail -n +2 | jq`. Reading it back goes through `Config::try_from`, the
//! validation every route file and every streamed snapshot goes through; the
//! declared length catches truncation and CRC-32 (IEEE, as in gzip and zip) any
//! corruption of the body: it detects every 1–2 bit error and every burst up to 32
//! bits, and anything else with probability 1 − 2⁻³². It is a check against torn
//! writes and bad disks, not against someone who can write the state directory (they
//! could write a valid file). std-only and a few lines: the proxy needs no hashing
//! crate for it.
//!
//! Writing: a temporary file in the same directory, fsync, rename over the old file,
//! fsync the directory. A crash at any point leaves the old file or the new one,
//! never a mix. One state directory per proxy.
//!
//! A snapshot may carry TLS private keys (inline `key_pem`): the file is created
//! with mode 0600 (owner only), as a key file would be.

use std::io::Write;
use std::path::{Path, PathBuf};

use routemaster_common::Config;
use routemaster_common::snapshot::{Snapshot, Source};
use routemaster_common::spec::ConfigSpec;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "last-known-good.snapshot";
const TMP_NAME: &str = "last-known-good.snapshot.tmp";
const MAGIC: &str = "routemaster-last-known-good";
const FORMAT: u32 = 1;
/// A header is ~70 bytes; anything without a newline this early is not ours.
const MAX_HEADER: usize = 256;

/// The file's place in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// What is saved: the snapshot as received, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u64,
    pub group: String,
    pub control_plane: String,
    /// RFC 3339.
    pub saved_at: String,
    pub config: ConfigSpec,
}

/// A saved snapshot that passed every check, ready for `apply_last_known_good`.
#[derive(Debug)]
pub struct Saved {
    /// Its source is the file (`Source::File(path)`).
    pub snapshot: Snapshot,
    pub control_plane: String,
    pub saved_at: String,
}

/// Why a file on disk is not a usable snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Corrupt {
    #[error("the file is empty")]
    Empty,
    #[error("bad header (not a {MAGIC} file of format {FORMAT})")]
    Header,
    #[error("truncated: {actual} of {declared} bytes")]
    Truncated { declared: usize, actual: usize },
    #[error("{extra} bytes beyond the declared length")]
    Trailing { extra: usize },
    #[error("checksum mismatch: the header says {stored:08x}, the body is {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("unreadable body: {0}")]
    Body(serde_json::Error),
    #[error("saved for group {saved:?}, this proxy serves group {ours:?}")]
    Group { saved: String, ours: String },
    #[error("invalid configuration: {0}")]
    Invalid(routemaster_common::ValidationErrors),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Corrupt { path: PathBuf, error: Corrupt },
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("cannot encode the snapshot: {0}")]
    Encode(serde_json::Error),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The file's bytes for `record`.
pub fn encode(record: &Record) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(record)?;
    let mut out = format!(
        "{MAGIC} {FORMAT} len={} crc32={:08x}\n",
        body.len(),
        crc32(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks and parses a file's bytes (not the configuration's validity: [`load`]).
pub fn decode(bytes: &[u8]) -> Result<Record, Corrupt> {
    if bytes.is_empty() {
        return Err(Corrupt::Empty);
    }
    let newline = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or(Corrupt::Header)?;
    let (header, rest) = bytes.split_at(newline);
    let body = rest.get(1..).unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| Corrupt::Header)?;
    let (declared, stored) = parse_header(header).ok_or(Corrupt::Header)?;
    match body.len() {
        actual if actual < declared => {
            return Err(Corrupt::Truncated { declared, actual });
        }
        actual if actual > declared => {
            return Err(Corrupt::Trailing {
                extra: actual - declared,
            });
        }
        _ => {}
    }
    let computed = crc32(body);
    if computed != stored {
        return Err(Corrupt::Checksum { stored, computed });
    }
    serde_json::from_slice(body).map_err(Corrupt::Body)
}

/// `MAGIC FORMAT len=N crc32=HEX8` → (N, checksum).
fn parse_header(header: &str) -> Option<(usize, u32)> {
    let mut words = header.split(' ');
    if words.next()? != MAGIC || words.next()? != FORMAT.to_string() {
        return None;
    }
    let len = words.next()?.strip_prefix("len=")?;
    let crc = words.next()?.strip_prefix("crc32=")?;
    if words.next().is_some()
        || crc.len() != 8
        || !len.bytes().all(|b| b.is_ascii_digit())
        || !crc.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some((len.parse().ok()?, u32::from_str_radix(crc, 16).ok()?))
}

/// Reads, checks and validates the file at `path` for a proxy of `group`.
/// `Ok(None)`: there is none (nothing saved yet).
pub fn load(path: &Path, group: &str) -> Result<Option<Saved>, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(LoadError::Read {
                path: path.to_owned(),
                error,
            });
        }
    };
    let corrupt = |error| LoadError::Corrupt {
        path: path.to_owned(),
        error,
    };
    let record = decode(&bytes).map_err(corrupt)?;
    if record.group != group {
        return Err(corrupt(Corrupt::Group {
            saved: record.group,
            ours: group.to_owned(),
        }));
    }
    let config = Config::try_from(record.config).map_err(|e| corrupt(Corrupt::Invalid(e)))?;
    Ok(Some(Saved {
        snapshot: Snapshot::new(
            record.version,
            Source::File(path.display().to_string()),
            config,
        ),
        control_plane: record.control_plane,
        saved_at: record.saved_at,
    }))
}

/// Replaces the file in `dir` with `record`, atomically and durably; returns its
/// path.
pub fn save(dir: &Path, record: &Record) -> Result<PathBuf, SaveError> {
    let bytes = encode(record).map_err(SaveError::Encode)?;
    let path = path(dir);
    let tmp = dir.join(TMP_NAME);
    let write = |at: &Path, error| SaveError::Write {
        path: at.to_owned(),
        error,
    };
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| write(&tmp, e))?
    };
    // `mode` applies only when the file is created: a leftover temporary file (or
    // one from a version that wrote 0644) is narrowed before the keys are written.
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| write(&tmp, e))?;
    }
    file.write_all(&bytes).map_err(|e| write(&tmp, e))?;
    file.sync_all().map_err(|e| write(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| write(&path, e))?;
    // The rename itself is only durable once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write(dir, e))?;
    Ok(path)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32/ISO-HDLC (the zlib/gzip/PNG one).
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            version: 42,
            group: "edge".into(),
            control_plane: "http://cp:7000".into(),
            saved_at: "2026-11-30T22:01:39.718Z".into(),
            config: ConfigSpec::from_yaml(
                "services: [{ name: lms, instances: [{ address: 127.0.0.1:9 }] }]\n\
                 routes: [{ id: home, group: edge, forward: { service: lms } }]\n",
            )
            .unwrap(),
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn encode_decode_round_trip() {
        let bytes = encode(&record()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("routemaster-last-known-good 1 len="),
            "{text}"
        );
        assert_eq!(decode(&bytes).unwrap(), record());
    }

    /// Every damaged file is refused, each for its own reason.
    #[test]
    fn damaged_files_are_refused() {
        let good = encode(&record()).unwrap();
        let body_at = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        let flip = |at: usize| {
            let mut b = good.clone();
            b[at] ^= 0x01;
            b
        };
        let with_header = |header: &str| {
            let mut b = header.as_bytes().to_vec();
            b.extend_from_slice(&good[body_at..]);
            b
        };
        let body = &good[body_at..];
        let len = body.len();
        let crc = crc32(body);
        type Check = fn(&Corrupt) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", vec![], |e| matches!(e, Corrupt::Empty)),
            ("flipped byte in the body", flip(body_at + 10), |e| {
                matches!(e, Corrupt::Checksum { .. })
            }),
            ("flipped last byte", flip(good.len() - 1), |e| {
                matches!(e, Corrupt::Checksum { .. })
            }),
            ("flipped byte in the magic", flip(0), |e| {
                matches!(e, Corrupt::Header)
            }),
            ("truncated body", good[..good.len() - 7].to_vec(), |e| {
                matches!(e, Corrupt::Truncated { .. })
            }),
            ("truncated header", good[..20].to_vec(), |e| {
                matches!(e, Corrupt::Header)
            }),
            ("header only", good[..body_at].to_vec(), |e| {
                matches!(e, Corrupt::Truncated { actual: 0, .. })
            }),
            (
                "trailing garbage",
                [good.clone(), b"xx".to_vec()].concat(),
                |e| matches!(e, Corrupt::Trailing { extra: 2 }),
            ),
            (
                "wrong checksum",
                with_header(&format!(
                    "routemaster-last-known-good 1 len={len} crc32={:08x}\n",
                    crc ^ 1
                )),
                |e| matches!(e, Corrupt::Checksum { .. }),
            ),
            (
                "other format version",
                with_header(&format!(
                    "routemaster-last-known-good 2 len={len} crc32={crc:08x}\n"
                )),
                |e| matches!(e, Corrupt::Header),
            ),
            (
                "no checksum",
                with_header(&format!("routemaster-last-known-good 1 len={len}\n")),
                |e| matches!(e, Corrupt::Header),
            ),
            (
                "signed length",
                with_header(&format!(
                    "routemaster-last-known-good 1 len=+{len} crc32={crc:08x}\n"
                )),
                |e| matches!(e, Corrupt::Header),
            ),
            (
                "checksum right, body not JSON",
                {
                    let body = b"not json";
                    let mut b = format!(
                        "routemaster-last-known-good 1 len={} crc32={:08x}\n",
                        body.len(),
                        crc32(body)
                    )
                    .into_bytes();
                    b.extend_from_slice(body);
                    b
                },
                |e| matches!(e, Corrupt::Body(_)),
            ),
            ("no newline at all", vec![b'a'; 1000], |e| {
                matches!(e, Corrupt::Header)
            }),
            ("binary garbage", vec![0xff; 64], |e| {
                matches!(e, Corrupt::Header)
            }),
        ];
        for (name, bytes, check) in cases {
            match decode(&bytes) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => assert!(check(&e), "{name}: wrong reason: {e}"),
            }
        }
    }

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("rm-lkg-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let written = save(&dir, &record()).unwrap();
        assert_eq!(written, path(&dir));
        // Saving again replaces the file and leaves no temporary behind.
        let mut newer = record();
        newer.version = 43;
        save(&dir, &newer).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        let saved = load(&written, "edge").unwrap().unwrap();
        assert_eq!(saved.snapshot.version(), 43);
        assert_eq!(saved.control_plane, "http://cp:7000");
        assert_eq!(
            saved.snapshot.source(),
            &Source::File(written.display().to_string())
        );
        assert_eq!(saved.snapshot.config().routes().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The file may hold TLS keys: owner-only, even over a leftover 0644 temporary.
    #[test]
    fn the_saved_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rm-lkg-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(TMP_NAME);
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let written = save(&dir, &record()).unwrap();
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What `load` refuses on top of [`decode`]: nothing there is not an error, an
    /// unreadable, damaged, foreign or invalid file is.
    #[test]
    fn load_outcomes() {
        let dir = std::env::temp_dir().join(format!("rm-lkg-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let good = encode(&record()).unwrap();
        let mut invalid = record();
        invalid.config.routes[0].forward.as_mut().unwrap().service = Some("nope".into());
        let invalid = encode(&invalid).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        enum Want {
            Loaded,
            Nothing,
            Error(&'static str),
        }
        let cases: Vec<(&str, Option<Vec<u8>>, &str, Want)> = vec![
            ("good", Some(good.clone()), "edge", Want::Loaded),
            ("missing", None, "edge", Want::Nothing),
            ("empty", Some(vec![]), "edge", Want::Error("empty")),
            ("flipped", Some(flipped), "edge", Want::Error("checksum")),
            (
                "truncated",
                Some(good[..good.len() / 2].to_vec()),
                "edge",
                Want::Error("truncated"),
            ),
            (
                "other group",
                Some(good.clone()),
                "default",
                Want::Error("group"),
            ),
            ("invalid", Some(invalid), "edge", Want::Error("nope")),
        ];
        for (name, contents, group, want) in cases {
            let file = dir.join(name);
            if let Some(bytes) = &contents {
                std::fs::write(&file, bytes).unwrap();
            }
            match (load(&file, group), want) {
                (Ok(Some(s)), Want::Loaded) => assert_eq!(s.snapshot.version(), 42),
                (Ok(None), Want::Nothing) => {}
                (Err(e), Want::Error(text)) => {
                    let e = e.to_string();
                    assert!(e.contains(text) && e.contains(name), "{name}: {e}");
                }
                (other, _) => panic!("{name}: {:?}", other.map(|s| s.is_some())),
            }
        }
        // A directory where the file should be: unreadable.
        let err = load(&dir, "edge").unwrap_err();
        assert!(matches!(err, LoadError::Read { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
