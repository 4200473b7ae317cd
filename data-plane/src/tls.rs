//! TLS termination for `--tls-listen`: the certificates of the current snapshot, the
//! SNI certificate resolver, the per-connection session facts the request path needs
//! (the 421 rule, `x-forwarded-proto: https`, redirect scheme), and the watch on
//! `cert_file`/`key_file`.
//!
//! Everything is built when a snapshot is applied ([`apply`]) or a certificate file
//! changes ([`watch`]): the files are read and checked (`common::tls::check_pair`),
//! keys loaded into the workspace's one crypto provider, the exact and wildcard name
//! maps filled, and one `rustls::ServerConfig` made; installing it is one `Arc` swap.
//! A handshake then costs one map lookup and an `Arc` clone beyond rustls's own work.
//! Connections keep the configuration they shook hands with, so a rotation affects new
//! handshakes only and never drops an established connection.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use routemaster_common::snapshot::Snapshot;
use routemaster_common::tls::{Certificate, PemSource, check_pair};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::ProxyError;
use crate::state::{Applied, ProxyState};

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate that cannot be used, naming it and the field (and file) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {certificate:?}: {field}{}: {reason}", file.as_ref().map(|f| format!(" {f:?}")).unwrap_or_default())]
pub struct TlsError {
    pub certificate: String,
    /// `cert_file`, `key_file`, `cert_pem`, `key_pem` or `hosts`.
    pub field: &'static str,
    pub file: Option<String>,
    pub reason: String,
}

/// The SNI rule, precomputed: exact names, then one-label wildcards (keyed by the
/// parent domain), then the fallback (the `default: true` certificate, else the first
/// by name).
#[derive(Debug)]
pub struct Resolver {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<Box<str>, usize>,
    wildcard: HashMap<Box<str>, usize>,
    fallback: usize,
}

impl Resolver {
    /// The certificate whose `hosts` list `name` (lowercase, no port), if any.
    pub fn listed(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }

    /// The certificate a handshake with this SNI gets.
    fn pick(&self, sni: Option<&str>) -> usize {
        let listed = sni.and_then(|n| {
            if n.bytes().any(|b| b.is_ascii_uppercase()) {
                self.listed(&n.to_ascii_lowercase())
            } else {
                self.listed(n)
            }
        });
        listed.unwrap_or(self.fallback)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.pick(hello.server_name())).cloned()
    }
}

/// What one TLS connection negotiated, for its requests: the resolver it shook hands
/// under and the certificate it got.
#[derive(Debug, Clone)]
pub struct Session {
    resolver: Arc<Resolver>,
    cert: usize,
}

impl Session {
    /// The session of a completed handshake with this SNI.
    pub fn new(resolver: Arc<Resolver>, sni: Option<&str>) -> Self {
        let cert = resolver.pick(sni);
        Self { resolver, cert }
    }

    /// RFC 9110 §15.5.20: a request for a host that another certificate lists must go
    /// on a connection made for that host (421); a host no certificate lists is fine.
    /// `host` is normalised (lowercase, no port).
    pub fn check_host(&self, host: &str) -> Result<(), ProxyError> {
        match self.resolver.listed(host) {
            Some(i) if i != self.cert => Err(ProxyError::Misdirected),
            _ => Ok(()),
        }
    }
}

/// The installed certificates: the server configuration new handshakes use.
#[derive(Debug)]
pub struct Installed {
    config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
    /// The model they came from and the state of their files when read, for [`watch`].
    certificates: Vec<Certificate>,
    files: Vec<(String, Option<Stamp>)>,
}

impl Installed {
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }
}

/// The current certificates (none until a snapshot with `tls.certificates` is applied).
#[derive(Debug, Default)]
pub struct Terminator {
    current: ArcSwapOption<Installed>,
}

impl Terminator {
    pub fn current(&self) -> Option<Arc<Installed>> {
        self.current.load_full()
    }

    pub(crate) fn install(&self, installed: Option<Installed>) {
        self.current.store(installed.map(Arc::new));
    }
}

/// Applies `snapshot` with its certificates: the certificate files are read and every
/// certificate checked first; any failure refuses the whole snapshot (the table and
/// certificates in use stay), naming the certificate and file.
pub fn apply(state: &ProxyState, snapshot: Arc<Snapshot>) -> Result<Applied, TlsError> {
    let installed = prepare(snapshot.config().certificates())?;
    let applied = state.apply(snapshot);
    state.tls.install(installed);
    Ok(applied)
}

/// Reads and checks `certificates` and builds the server configuration; `None` when
/// there are none.
pub fn prepare(certificates: &[Certificate]) -> Result<Option<Installed>, TlsError> {
    if certificates.is_empty() {
        return Ok(None);
    }
    let provider = routemaster_runtime::tls::provider();
    let mut keys = Vec::with_capacity(certificates.len());
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut files = Vec::new();
    let mut fallback = 0;
    for (i, c) in certificates.iter().enumerate() {
        let fail = |field: &'static str, file: Option<&str>, reason: String| TlsError {
            certificate: c.name().to_owned(),
            field,
            file: file.map(str::to_owned),
            reason,
        };
        let cert_pem =
            read(c.cert(), &mut files).map_err(|(f, e)| fail("cert_file", Some(f), e))?;
        let key_pem = read(c.key(), &mut files).map_err(|(f, e)| fail("key_file", Some(f), e))?;
        let pair = check_pair(&cert_pem, &key_pem, c.hosts(), SystemTime::now()).map_err(|e| {
            // Name the file the problem is in when it came from one.
            let (field, file) = match (e.field, c.cert().file(), c.key().file()) {
                ("cert_pem", Some(f), _) => ("cert_file", Some(f)),
                ("key_pem", _, Some(f)) => ("key_file", Some(f)),
                ("hosts", Some(f), _) => ("cert_file", Some(f)),
                (field, ..) => (field, None),
            };
            fail(field, file, e.reason)
        })?;
        let key = provider
            .key_provider
            .load_private_key(pair.key)
            .map_err(|e| fail(key_field(c), c.key().file(), format!("unusable key: {e}")))?;
        keys.push(Arc::new(CertifiedKey::new(pair.chain, key)));
        for h in c.hosts() {
            match h.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.into(), i),
                None => exact.insert(h.as_str().into(), i),
            };
        }
        if c.is_default() {
            fallback = i;
        }
    }
    let resolver = Arc::new(Resolver {
        keys,
        exact,
        wildcard,
        fallback,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(routemaster_runtime::tls::PROTOCOL_VERSIONS)
        .map_err(|e| TlsError {
            certificate: String::new(),
            field: "tls",
            file: None,
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Some(Installed {
        config: Arc::new(config),
        resolver,
        certificates: certificates.to_vec(),
        files,
    }))
}

fn key_field(c: &Certificate) -> &'static str {
    if c.key().file().is_some() {
        "key_file"
    } else {
        "key_pem"
    }
}

/// The PEM text of `source`, noting a file's stamp as read.
fn read<'a>(
    source: &'a PemSource,
    files: &mut Vec<(String, Option<Stamp>)>,
) -> Result<String, (&'a str, String)> {
    match source {
        PemSource::Inline(text) => Ok(text.to_string()),
        PemSource::File(path) => {
            let before = stamp(Path::new(path));
            let text = std::fs::read_to_string(path)
                .map_err(|e| (path.as_str(), format!("cannot read it: {e}")))?;
            files.push((path.clone(), before));
            Ok(text)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i64,
    ino: u64,
    dev: u64,
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

/// How long a changed certificate file must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(20);

/// Watches the installed certificates' files (polling their metadata every `interval`,
/// like the route file) and re-reads them all when one changes: a valid set replaces
/// the installed one for new handshakes; an invalid one is logged (once per change)
/// and the last good certificates keep serving.
pub async fn watch(
    state: Arc<ProxyState>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejected: Option<Vec<Option<Stamp>>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut shutdown => return,
        }
        let Some(current) = state.tls.current() else {
            continue;
        };
        if current.files.is_empty() {
            continue;
        }
        let now: Vec<Option<Stamp>> = current
            .files
            .iter()
            .map(|(p, _)| stamp(Path::new(p)))
            .collect();
        if current
            .files
            .iter()
            .map(|(_, s)| *s)
            .eq(now.iter().copied())
            || rejected.as_ref() == Some(&now)
            || now.iter().any(|s| s.is_none_or(|s| s.len == 0))
        {
            // Unchanged, already refused, or mid-write (missing or truncated).
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            () = &mut shutdown => return,
        }
        let certificates = current.certificates.clone();
        let Ok(prepared) = tokio::task::spawn_blocking(move || prepare(&certificates)).await else {
            continue;
        };
        // Only if no snapshot replaced the certificates meanwhile.
        let still = state
            .tls
            .current()
            .is_some_and(|c| Arc::ptr_eq(&c, &current));
        match prepared {
            Ok(installed) if still => {
                rejected = None;
                state.tls.install(installed);
                tracing::info!("certificate files reloaded");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "certificate files rejected; keeping the last good certificates");
                rejected = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(hosts: &[&[&str]], fallback: usize) -> Resolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, hs) in hosts.iter().enumerate() {
            for h in *hs {
                match h.strip_prefix("*.") {
                    Some(p) => wildcard.insert(p.into(), i),
                    None => exact.insert((*h).into(), i),
                };
            }
        }
        Resolver {
            keys: Vec::new(),
            exact,
            wildcard,
            fallback,
        }
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_the_fallback() {
        let r = resolver(
            &[
                &["*.example.org"],
                &["www.example.org", "a.example.com"],
                &["x.test"],
            ],
            2,
        );
        let cases = [
            (Some("www.example.org"), 1),
            (Some("WWW.Example.ORG"), 1),
            (Some("b.example.org"), 0),
            (Some("a.b.example.org"), 2),
            (Some("example.org"), 2),
            (Some("a.example.com"), 1),
            (Some("unknown.test"), 2),
            (None, 2),
        ];
        for (sni, want) in cases {
            assert_eq!(r.pick(sni), want, "{sni:?}");
        }
    }

    #[test]
    fn a_host_another_certificate_lists_is_misdirected() {
        let r = Arc::new(resolver(&[&["a.test"], &["b.test", "*.c.test"]], 0));
        let on_a = Session::new(Arc::clone(&r), Some("a.test"));
        let no_sni = Session::new(Arc::clone(&r), None);
        let on_b = Session::new(r, Some("b.test"));
        let cases: [(&Session, &str, bool); 8] = [
            (&on_a, "a.test", true),
            (&on_a, "b.test", false),
            (&on_a, "x.c.test", false),
            (&on_a, "unlisted.test", true),
            (&on_b, "x.c.test", true),
            (&on_b, "a.test", false),
            (&no_sni, "a.test", true),
            (&no_sni, "b.test", false),
        ];
        for (session, host, ok) in cases {
            assert_eq!(session.check_host(host).is_ok(), ok, "{session:?} {host}");
        }
    }
}
