//! The declarative format teams write: the route file of `routemaster-proxy --config`
//! and of `routemaster apply -f`. Plain serde types, unvalidated; unknown fields are
//! rejected at parse time. [`crate::Config::try_from`] turns a [`ConfigSpec`] into the
//! validated model, and [`ConfigSpec::from`] turns the model back (for `get -o yaml`,
//! the status API and round trips).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::model::{
    Action, Config, Filters, HeaderFilter, HeaderValueMatch, LoadBalancing, PathMatch, Protocol,
    QueryValueMatch, RedirectPath, Rewrite, Route, Service,
};
use crate::validate::{ObjectRef, ValidationError};

/// A whole route file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// Certificates the proxy terminates TLS with (`--tls-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// The top-level `tls:` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    #[serde(default)]
    pub certificates: Vec<CertificateSpec>,
}

/// One `tls.certificates[]` entry: exactly one of `cert_pem`/`cert_file` and one of
/// `key_pem`/`key_file`. Files are read by the proxy, relative to its working directory.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub name: String,
    /// SNI names it serves: DNS names or one-label wildcards (`*.example.org`).
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The certificate for SNI names no certificate lists (and for no SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
}

impl fmt::Debug for CertificateSpec {
    /// Never prints `key_pem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSpec")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("cert_pem", &self.cert_pem.as_ref().map(|p| p.len()))
            .field("cert_file", &self.cert_file)
            .field(
                "key_pem",
                &self.key_pem.as_ref().map(|_| crate::tls::REDACTED),
            )
            .field("key_file", &self.key_file)
            .field("default", &self.default)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
    /// `http1` (default) or `h2c`; `h2` and `https` (TLS to upstreams) are read so
    /// that validation can refuse them by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolSpec>,
}

/// `services[].protocol` as written in a route file: every value the format names,
/// including those validation refuses for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolSpec {
    Http1,
    H2c,
    /// HTTP/2 over TLS (ALPN h2): not supported yet.
    H2,
    /// HTTP/1.1 over TLS: not supported yet.
    Https,
}

impl ProtocolSpec {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolSpec::Http1 => "http1",
            ProtocolSpec::H2c => "h2c",
            ProtocolSpec::H2 => "h2",
            ProtocolSpec::Https => "https",
        }
    }
}

impl From<Protocol> for ProtocolSpec {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Http1 => ProtocolSpec::Http1,
            Protocol::H2c => ProtocolSpec::H2c,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Vec<QuerySpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FiltersSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectSpec>,
}

/// A query-parameter condition: `name` plus exactly one of `exact`, `regex`,
/// `present: true` (on decoded values; the first occurrence counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// `filters:` on a forward route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderFilterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderFilterSpec>,
}

/// `{ set: {name: value}, add: {name: value}, remove: [name] }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

/// Exactly one of the three must be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `name` plus exactly one of `exact`, `regex`, `present: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Exactly one of `service` or `backends`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<BackendSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_prefix: Option<String>,
    /// Replaces the whole path (the query is kept); exclusive with `rewrite_prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// A duration such as `30s` or `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// A route file that could not be read as YAML of the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// Parser options for route files. The parser's default budget (250k nodes) is sized for
/// small config files; a route file of 100k routes has ~2M nodes. Route files come from
/// operators, not from clients, so the budget only needs to stop runaway documents.
fn parser_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

impl ConfigSpec {
    /// Parses one YAML document (JSON is YAML too). Unknown fields and wrong types are
    /// errors that carry the line and column. Route files on disk go through
    /// [`Sources::parse`], which also takes several documents and names the file.
    pub fn from_yaml(text: &str) -> Result<Self, ParseError> {
        serde_saphyr::from_str_with_options(text, parser_options())
            .map_err(|e| ParseError(e.to_string()))
    }

    pub fn to_yaml(&self) -> String {
        // Serialising plain structs of strings, numbers and lists into a String cannot
        // fail; fall back to an empty document rather than panic if it ever did.
        serde_saphyr::to_string(self).unwrap_or_default()
    }
}

// ---- model → spec: the validated model written back in the file format (normalised:
// defaults left out), for `get -o yaml`, the status API and etcd. ----

impl From<&Service> for ServiceSpec {
    fn from(s: &Service) -> Self {
        ServiceSpec {
            name: s.name.to_string(),
            instances: s
                .instances
                .iter()
                .map(|i| InstanceSpec {
                    address: i.address.to_string(),
                    weight: (i.weight != 1).then_some(i.weight),
                })
                .collect(),
            load_balancing: (s.load_balancing != LoadBalancing::default())
                .then_some(s.load_balancing),
            protocol: (s.protocol != Protocol::default()).then(|| s.protocol.into()),
        }
    }
}

impl From<&Route> for RouteSpec {
    fn from(r: &Route) -> Self {
        let path = match &r.path {
            PathMatch::Prefix(p) if p.is_empty() => None,
            PathMatch::Prefix(p) => Some(PathSpec {
                prefix: Some(p.to_string()),
                ..Default::default()
            }),
            PathMatch::Exact(p) => Some(PathSpec {
                exact: Some(p.to_string()),
                ..Default::default()
            }),
            PathMatch::Regex(p) => Some(PathSpec {
                regex: Some(p.as_str().to_owned()),
                ..Default::default()
            }),
        };
        let (forward, redirect) = match &r.action {
            Action::Forward(f) => {
                let (service, backends) = if f.single_service {
                    (Some(f.backends[0].service.to_string()), None)
                } else {
                    let list = f
                        .backends
                        .iter()
                        .map(|b| BackendSpec {
                            service: b.service.to_string(),
                            weight: Some(b.weight),
                        })
                        .collect();
                    (None, Some(list))
                };
                let (rewrite_prefix, rewrite_path) = match &f.rewrite {
                    Some(Rewrite::Prefix(p)) => (Some(p.to_string()), None),
                    Some(Rewrite::Path(p)) => (None, Some(p.to_string())),
                    None => (None, None),
                };
                let fwd = ForwardSpec {
                    service,
                    backends,
                    rewrite_prefix,
                    rewrite_path,
                    host_rewrite: f
                        .host_rewrite
                        .as_ref()
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned),
                    timeout: f.timeout.map(duration::format),
                };
                (Some(fwd), None)
            }
            Action::Redirect(rd) => {
                let (path, prefix) = match &rd.path {
                    Some(RedirectPath::Full(p)) => (Some(p.to_string()), None),
                    Some(RedirectPath::Prefix(p)) => (None, Some(p.to_string())),
                    None => (None, None),
                };
                let spec = RedirectSpec {
                    prefix,
                    path,
                    scheme: rd.scheme.map(|s| s.as_str().to_owned()),
                    host: rd.host.as_deref().map(str::to_owned),
                    port: rd.port,
                    code: Some(rd.code.get()),
                };
                (None, Some(spec))
            }
        };
        RouteSpec {
            id: r.id.to_string(),
            hosts: (!r.hosts.is_empty()).then(|| r.hosts.iter().map(|h| h.to_string()).collect()),
            path,
            methods: (!r.methods.is_empty())
                .then(|| r.methods.iter().map(|m| m.as_str().to_owned()).collect()),
            headers: (!r.headers.is_empty()).then(|| {
                r.headers
                    .iter()
                    .map(|h| {
                        let mut spec = HeaderSpec {
                            name: h.name.as_str().to_owned(),
                            exact: None,
                            regex: None,
                            present: None,
                        };
                        match &h.value {
                            HeaderValueMatch::Exact(v) => {
                                spec.exact = Some(String::from_utf8_lossy(v).into_owned())
                            }
                            HeaderValueMatch::Regex(p) => spec.regex = Some(p.as_str().to_owned()),
                            HeaderValueMatch::Present => spec.present = Some(true),
                        }
                        spec
                    })
                    .collect()
            }),
            query: (!r.query.is_empty()).then(|| {
                r.query
                    .iter()
                    .map(|q| {
                        let mut spec = QuerySpec {
                            name: q.name.to_string(),
                            exact: None,
                            regex: None,
                            present: None,
                        };
                        match &q.value {
                            QueryValueMatch::Exact(v) => spec.exact = Some(v.to_string()),
                            QueryValueMatch::Regex(p) => spec.regex = Some(p.as_str().to_owned()),
                            QueryValueMatch::Present => spec.present = Some(true),
                        }
                        spec
                    })
                    .collect()
            }),
            priority: (r.priority != 0).then_some(r.priority),
            group: (r.group.as_str() != "default").then(|| r.group.to_string()),
            filters: r.filters.as_deref().map(FiltersSpec::from),
            forward,
            redirect,
        }
    }
}

impl From<&Filters> for FiltersSpec {
    fn from(f: &Filters) -> Self {
        let one = |h: &HeaderFilter| {
            let map = |lines: &[(http::HeaderName, http::HeaderValue)]| {
                (!lines.is_empty()).then(|| {
                    lines
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect()
                })
            };
            (!h.is_empty()).then(|| HeaderFilterSpec {
                set: map(&h.set),
                add: map(&h.add),
                remove: (!h.remove.is_empty())
                    .then(|| h.remove.iter().map(|n| n.as_str().to_owned()).collect()),
            })
        };
        FiltersSpec {
            request_headers: one(&f.request_headers),
            response_headers: one(&f.response_headers),
        }
    }
}

impl From<&Config> for ConfigSpec {
    fn from(c: &Config) -> Self {
        ConfigSpec {
            services: c.services.iter().map(ServiceSpec::from).collect(),
            routes: c.routes.iter().map(RouteSpec::from).collect(),
            tls: (!c.certificates.is_empty()).then(|| TlsSpec {
                certificates: c.certificates.iter().map(CertificateSpec::from).collect(),
            }),
        }
    }
}

// ---- defaults written out: what `routemaster get -o yaml` and the status API show ----

/// The redirect code a route gets when it names none.
pub const DEFAULT_REDIRECT_CODE: u16 = 301;
/// The group a route is in when it names none.
pub const DEFAULT_GROUP: &str = "default";

impl ServiceSpec {
    /// The same service with every default written out (`weight: 1`,
    /// `load_balancing: round_robin`, `protocol: http1`), so a reader sees what is in
    /// force. Applying it back changes nothing.
    pub fn with_defaults(mut self) -> Self {
        for i in &mut self.instances {
            i.weight.get_or_insert(1);
        }
        self.load_balancing.get_or_insert(LoadBalancing::default());
        self.protocol.get_or_insert(Protocol::default().into());
        self
    }
}

impl RouteSpec {
    /// The same route with every default that has a spelling written out: `path: {
    /// prefix: / }`, `priority: 0`, `group: default`, backend `weight: 1`, redirect `code:
    /// 301`. (`hosts`, `methods` and `headers` left out mean "any"; there is nothing to
    /// write for them.)
    pub fn with_defaults(mut self) -> Self {
        self.path.get_or_insert_with(|| PathSpec {
            prefix: Some("/".into()),
            ..PathSpec::default()
        });
        self.priority.get_or_insert(0);
        self.group.get_or_insert_with(|| DEFAULT_GROUP.into());
        if let Some(f) = &mut self.forward {
            for b in f.backends.iter_mut().flatten() {
                b.weight.get_or_insert(1);
            }
        }
        if let Some(r) = &mut self.redirect {
            r.code.get_or_insert(DEFAULT_REDIRECT_CODE);
        }
        self
    }
}

impl ConfigSpec {
    /// Every object with its defaults written out ([`ServiceSpec::with_defaults`],
    /// [`RouteSpec::with_defaults`]).
    pub fn with_defaults(self) -> Self {
        ConfigSpec {
            services: self
                .services
                .into_iter()
                .map(ServiceSpec::with_defaults)
                .collect(),
            routes: self
                .routes
                .into_iter()
                .map(RouteSpec::with_defaults)
                .collect(),
            tls: self.tls,
        }
    }

    /// The same configuration with every `key_pem` replaced by
    /// [`crate::tls::REDACTED`]: what is shown to people.
    pub fn redacted(mut self) -> Self {
        if let Some(tls) = &mut self.tls {
            for c in &mut tls.certificates {
                *c = c.clone().redacted();
            }
        }
        self
    }
}

// ---- route files as teams keep them: several documents, several files ----

/// Where an object is declared: the file as the user named it, and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    /// 0 when unknown.
    pub line: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.file),
            line => write!(f, "{}:{line}", self.file),
        }
    }
}

/// A problem with route files, named by file (and line where there is one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The text is not a route file: not YAML, a document that is not a mapping, an
    /// unknown field, a value of the wrong type.
    #[error("{}: {reason}", position(file, *line, *column))]
    Syntax {
        file: Arc<str>,
        line: u64,
        column: u64,
        reason: String,
    },
    /// The same service name or route id declared twice (in one file or two).
    #[error("{kind} {name:?} is declared twice: at {first} and at {second}")]
    Duplicate {
        kind: &'static str,
        name: String,
        first: Origin,
        second: Origin,
    },
    /// An object that does not validate, with where it is declared.
    #[error("{}{error}", origin.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
    Invalid {
        origin: Option<Origin>,
        error: ValidationError,
    },
}

fn position(file: &str, line: u64, column: u64) -> String {
    match (line, column) {
        (0, _) => file.to_owned(),
        (l, 0) => format!("{file}:{l}"),
        (l, c) => format!("{file}:{l}:{c}"),
    }
}

/// Every problem found (never empty); displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceErrors(pub Vec<SourceError>);

impl fmt::Display for SourceErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceErrors {}

impl From<SourceError> for SourceErrors {
    fn from(e: SourceError) -> Self {
        SourceErrors(vec![e])
    }
}

/// One YAML document of a route file, with the position of each object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    services: Vec<serde_saphyr::Spanned<ServiceSpec>>,
    #[serde(default)]
    routes: Vec<serde_saphyr::Spanned<RouteSpec>>,
    #[serde(default)]
    tls: Option<DocumentTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentTls {
    #[serde(default)]
    certificates: Vec<serde_saphyr::Spanned<CertificateSpec>>,
}

/// The objects of one or more route files (each may hold several YAML documents,
/// separated by `---`), in the order they are declared, with where each one is.
///
/// This is what the proxy's `--config FILE|DIR` and the CLI's `apply -f` / `diff -f`
/// read: [`Sources::parse`] each file, [`Sources::extend`] them together, then
/// [`Sources::into_config`] (the whole route-file validation) or
/// [`Sources::validate_objects`] (each object on its own, for `apply`, whose references
/// are checked against what the control plane stores). Both report duplicates with both
/// places, and every validation error with the file and line of its object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    pub spec: ConfigSpec,
    /// Parallel to `spec.services` / `spec.routes`.
    service_origins: Vec<Origin>,
    route_origins: Vec<Origin>,
    /// Parallel to `spec.tls.certificates`.
    certificate_origins: Vec<Origin>,
}

impl Sources {
    /// Parses one file's text; `file` is how errors and origins name it.
    pub fn parse(file: &str, text: &str) -> Result<Self, SourceError> {
        let file: Arc<str> = file.into();
        let mut options = parser_options();
        options.with_snippet = false;
        let documents: Vec<Document> = serde_saphyr::from_multiple_with_options(text, options)
            .map_err(|e| syntax_error(&file, &e))?;
        let mut out = Sources::default();
        for doc in documents {
            for s in doc.services {
                out.service_origins.push(Origin {
                    file: Arc::clone(&file),
                    line: s.referenced.line(),
                });
                out.spec.services.push(s.value);
            }
            for r in doc.routes {
                out.route_origins.push(Origin {
                    file: Arc::clone(&file),
                    line: r.referenced.line(),
                });
                out.spec.routes.push(r.value);
            }
            for c in doc.tls.into_iter().flat_map(|t| t.certificates) {
                out.certificate_origins.push(Origin {
                    file: Arc::clone(&file),
                    line: c.referenced.line(),
                });
                out.spec
                    .tls
                    .get_or_insert_with(TlsSpec::default)
                    .certificates
                    .push(c.value);
            }
        }
        Ok(out)
    }

    /// Objects of a spec that came from no file (a test, the wire): origins unknown.
    pub fn from_spec(file: &str, spec: ConfigSpec) -> Self {
        let file: Arc<str> = file.into();
        let origin = || Origin {
            file: Arc::clone(&file),
            line: 0,
        };
        Sources {
            service_origins: spec.services.iter().map(|_| origin()).collect(),
            route_origins: spec.routes.iter().map(|_| origin()).collect(),
            certificate_origins: spec
                .tls
                .iter()
                .flat_map(|t| &t.certificates)
                .map(|_| origin())
                .collect(),
            spec,
        }
    }

    /// Appends another file's objects.
    pub fn extend(&mut self, other: Sources) {
        self.spec.services.extend(other.spec.services);
        self.spec.routes.extend(other.spec.routes);
        if let Some(tls) = other.spec.tls {
            self.spec
                .tls
                .get_or_insert_with(TlsSpec::default)
                .certificates
                .extend(tls.certificates);
        }
        self.service_origins.extend(other.service_origins);
        self.route_origins.extend(other.route_origins);
        self.certificate_origins.extend(other.certificate_origins);
    }

    pub fn object_count(&self) -> usize {
        self.spec.services.len() + self.spec.routes.len() + self.certificates().len()
    }

    pub fn is_empty(&self) -> bool {
        self.object_count() == 0
    }

    /// `tls.certificates`, empty when there is no `tls:` section.
    pub fn certificates(&self) -> &[CertificateSpec] {
        self.spec.tls.as_ref().map_or(&[], |t| &t.certificates)
    }

    /// Where `object` is (first) declared.
    pub fn origin(&self, object: &ObjectRef) -> Option<&Origin> {
        match object {
            ObjectRef::Service(name) => self
                .spec
                .services
                .iter()
                .position(|s| &s.name == name)
                .and_then(|i| self.service_origins.get(i)),
            ObjectRef::Route(id) => self
                .spec
                .routes
                .iter()
                .position(|r| &r.id == id)
                .and_then(|i| self.route_origins.get(i)),
            ObjectRef::Certificate(name) => self
                .certificates()
                .iter()
                .position(|c| &c.name == name)
                .and_then(|i| self.certificate_origins.get(i)),
        }
    }

    /// Every name declared more than once, with its first place and each later one.
    pub fn duplicates(&self) -> Vec<SourceError> {
        let mut out = Vec::new();
        let names = self.spec.services.iter().map(|s| s.name.as_str());
        find_duplicates("service", names, &self.service_origins, &mut out);
        let ids = self.spec.routes.iter().map(|r| r.id.as_str());
        find_duplicates("route", ids, &self.route_origins, &mut out);
        let certs = self.certificates().iter().map(|c| c.name.as_str());
        find_duplicates("certificate", certs, &self.certificate_origins, &mut out);
        out
    }

    /// The route-file validation over everything: duplicates (with both places), then
    /// each object and the references between them (with each object's place).
    pub fn into_config(self) -> Result<Config, SourceErrors> {
        let duplicates = self.duplicates();
        if !duplicates.is_empty() {
            return Err(SourceErrors(duplicates));
        }
        let Sources {
            spec,
            service_origins,
            route_origins,
            certificate_origins,
        } = self;
        let at = OriginIndex::new(&spec, service_origins, route_origins, certificate_origins);
        Config::try_from(spec).map_err(|errors| at.locate(errors.0))
    }

    /// Each object validated on its own (no cross-object checks but duplicates): what
    /// `apply` checks before anything is sent, since a route may use a service the
    /// control plane already stores.
    pub fn validate_objects(&self) -> Result<(Vec<Service>, Vec<Route>), SourceErrors> {
        let duplicates = self.duplicates();
        if !duplicates.is_empty() {
            return Err(SourceErrors(duplicates));
        }
        let mut errors = Vec::new();
        let mut services = Vec::with_capacity(self.spec.services.len());
        for (s, origin) in self.spec.services.iter().zip(&self.service_origins) {
            match Service::try_from(s.clone()) {
                Ok(m) => services.push(m),
                Err(e) => errors.extend(e.0.into_iter().map(|error| SourceError::Invalid {
                    origin: Some(origin.clone()),
                    error,
                })),
            }
        }
        let mut routes = Vec::with_capacity(self.spec.routes.len());
        for (r, origin) in self.spec.routes.iter().zip(&self.route_origins) {
            match Route::try_from(r.clone()) {
                Ok(m) => routes.push(m),
                Err(e) => errors.extend(e.0.into_iter().map(|error| SourceError::Invalid {
                    origin: Some(origin.clone()),
                    error,
                })),
            }
        }
        if errors.is_empty() {
            Ok((services, routes))
        } else {
            Err(SourceErrors(errors))
        }
    }

    /// Attaches the place of each error's object (validation done elsewhere, e.g. by
    /// the control plane against what it stores).
    pub fn locate(&self, errors: Vec<ValidationError>) -> SourceErrors {
        SourceErrors(
            errors
                .into_iter()
                .map(|error| SourceError::Invalid {
                    origin: self.origin(&error.object).cloned(),
                    error,
                })
                .collect(),
        )
    }
}

fn find_duplicates<'a>(
    kind: &'static str,
    names: impl Iterator<Item = &'a str>,
    origins: &[Origin],
    out: &mut Vec<SourceError>,
) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        match first.get(name) {
            Some(&j) => out.push(SourceError::Duplicate {
                kind,
                name: name.to_owned(),
                first: origins[j].clone(),
                second: origins[i].clone(),
            }),
            None => {
                first.insert(name, i);
            }
        }
    }
}

/// Object → origin, for attaching places to validation errors after the spec was
/// consumed.
struct OriginIndex {
    services: HashMap<String, Origin>,
    routes: HashMap<String, Origin>,
    certificates: HashMap<String, Origin>,
}

impl OriginIndex {
    fn new(
        spec: &ConfigSpec,
        services: Vec<Origin>,
        routes: Vec<Origin>,
        certificates: Vec<Origin>,
    ) -> Self {
        OriginIndex {
            services: spec
                .services
                .iter()
                .map(|s| s.name.clone())
                .zip(services)
                .collect(),
            routes: spec
                .routes
                .iter()
                .map(|r| r.id.clone())
                .zip(routes)
                .collect(),
            certificates: spec
                .tls
                .iter()
                .flat_map(|t| &t.certificates)
                .map(|c| c.name.clone())
                .zip(certificates)
                .collect(),
        }
    }

    fn locate(&self, errors: Vec<ValidationError>) -> SourceErrors {
        SourceErrors(
            errors
                .into_iter()
                .map(|error| SourceError::Invalid {
                    origin: match &error.object {
                        ObjectRef::Service(name) => self.services.get(name).cloned(),
                        ObjectRef::Route(id) => self.routes.get(id).cloned(),
                        ObjectRef::Certificate(name) => self.certificates.get(name).cloned(),
                    },
                    error,
                })
                .collect(),
        )
    }
}

/// The parser's error in the user's terms: the file, line and column, and a message
/// without the parser's own location suffix or API advice.
fn syntax_error(file: &Arc<str>, e: &serde_saphyr::Error) -> SourceError {
    use serde_saphyr::MessageFormatter;
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    let message: String = raw
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    SourceError::Syntax {
        file: Arc::clone(file),
        line,
        column,
        reason: plain_reason(&message, column <= 1),
    }
}

/// `top_level`: the error is at the start of a line, where a document's root node is.
fn plain_reason(message: &str, top_level: bool) -> String {
    if message.starts_with("expected mapping start") || message.contains("expected struct") {
        return if top_level {
            "not a YAML mapping: a route file is a mapping with `services:` and/or `routes:` lists"
                .to_owned()
        } else {
            "expected a mapping (`field: value` lines) here".to_owned()
        };
    }
    if message.starts_with("expected sequence start") {
        return "expected a list (`- ...` items or `[...]`) here".to_owned();
    }
    let top_level = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once("`, expected "))
        .filter(|(_, expected)| *expected == "one of services, routes, tls");
    match top_level {
        Some((field, _)) => format!(
            "unknown field `{field}` at the top level; a route file has only `services:`, `routes:` and `tls:` (a single route or service goes in one of those lists)"
        ),
        None => message.to_owned(),
    }
}
