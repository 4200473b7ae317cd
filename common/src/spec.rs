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
    Action, Config, DEFAULT_DNS_REFRESH, Discovery, Filters, HeaderFilter, HeaderValueMatch,
    LoadBalancing, PathMatch, Protocol, QueryValueMatch, RedirectPath, Retry, RetryOn, Rewrite,
    Route, RouteMode, Service, StatusRange,
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
    /// `http1` (default), `h2c`, `h2` (TLS, ALPN h2) or `https` (TLS, ALPN http/1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolSpec>,
    /// For `h2`/`https`: the name to verify and the roots to verify it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSpec>,
    /// Active HTTP health checks (none when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Passive outlier detection (none when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierSpec>,
    /// Concurrency caps per proxy (none when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// `select: { label: value | "${node.NAME}" }`: each proxy uses only the instances
    /// whose labels match (see [`crate::locality`]); left out: every instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<std::collections::BTreeMap<String, String>>,
    /// `locality: { prefer: [labels…], fallback: any | none }`; left out: all alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalitySpec>,
}

/// `services[].locality`: the proxy's label keys to prefer instances by, in order, and
/// what to do when no instance shares them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalitySpec {
    pub prefer: Vec<String>,
    /// `any` (default) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<crate::locality::Fallback>,
}

/// An item of `expect: [200-399]` or `retry.on: [reset, 503]`: a status code, or a word
/// (a range `lo-hi`, a condition name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CodeOrWord {
    Code(u16),
    Word(String),
}

impl fmt::Display for CodeOrWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeOrWord::Code(c) => write!(f, "{c}"),
            CodeOrWord::Word(w) => write!(f, "{w:?}"),
        }
    }
}

/// `services[].health_check`; every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Vec<CodeOrWord>>,
}

/// `services[].outlier`; every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u32>,
}

/// `services[].limits`; every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
}

/// `routes[].forward.retry`; every field but `per_try_timeout` has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<CodeOrWord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_idempotent: Option<bool>,
}

/// `services[].tls`: `server_name` (SNI and the name the certificate must carry;
/// default: the instance's host) and `ca_pem` (PEM certificates that replace the system
/// roots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// `services[].protocol` as written in a route file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolSpec {
    Http1,
    H2c,
    /// HTTP/2 over TLS (ALPN h2).
    H2,
    /// HTTP/1.1 over TLS (ALPN http/1.1).
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
            Protocol::H2 => ProtocolSpec::H2,
            Protocol::Https => ProtocolSpec::Https,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `labels: {region: eu-west-1}`: what locality and `select` match proxies' labels
    /// against (empty: none).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `static` (default: the address as written) or `dns`: every A/AAAA record of the
    /// host becomes an endpoint, looked up again every `dns_refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoverySpec>,
    /// How often a `discovery: dns` name is looked up again (default 30s, at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoverySpec {
    Static,
    Dns,
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
    /// `active` (default) or `shadow`: a shadow route is evaluated and compared with
    /// what actually answers, but never serves ([`crate::shadow`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RouteMode>,
    /// How a shadow forward route learns what the upstream decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FiltersSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectSpec>,
}

/// `routes[].shadow`: `expect_header` names the response header in which the upstream
/// reports the path and query it computed, compared with a shadow forward route's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_header: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// A copy of each (sampled) request to a candidate service, compared or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
}

/// `forward.mirror` (see [`crate::mirror`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    pub service: String,
    /// 1–100 (default 100), sampled by request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Without it the mirror is fire-and-forget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSpec>,
    /// Default `[GET, HEAD]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Default `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Default `1MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<String>,
}

/// `forward.mirror.compare`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// `json` (default) | `bytes` | `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<crate::mirror::BodyCompare>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

impl From<&crate::mirror::Mirror> for MirrorSpec {
    fn from(m: &crate::mirror::Mirror) -> Self {
        use crate::mirror::{DEFAULT_MAX_BODY, DEFAULT_PERCENT, DEFAULT_TIMEOUT, format_size};
        let default_methods = [http::Method::GET, http::Method::HEAD];
        MirrorSpec {
            service: m.service.to_string(),
            percent: (m.percent != DEFAULT_PERCENT).then_some(u32::from(m.percent)),
            compare: m.compare.as_ref().map(|c| CompareSpec {
                baseline: c.baseline.as_ref().map(ToString::to_string),
                status: (!c.status).then_some(false),
                headers: (!c.headers.is_empty())
                    .then(|| c.headers.iter().map(|h| h.as_str().to_owned()).collect()),
                body: (c.body != crate::mirror::BodyCompare::default()).then_some(c.body),
                ignore: (!c.ignore.is_empty())
                    .then(|| c.ignore.iter().map(|p| p.as_str().to_owned()).collect()),
            }),
            methods: (m.methods != default_methods)
                .then(|| m.methods.iter().map(|x| x.as_str().to_owned()).collect()),
            timeout: (m.timeout != DEFAULT_TIMEOUT).then(|| duration::format(m.timeout)),
            max_body: (m.max_body != DEFAULT_MAX_BODY).then(|| format_size(m.max_body)),
        }
    }
}

impl MirrorSpec {
    /// Every default written out.
    pub fn with_defaults(mut self) -> Self {
        use crate::mirror::{DEFAULT_MAX_BODY, DEFAULT_PERCENT, DEFAULT_TIMEOUT, format_size};
        self.percent.get_or_insert(u32::from(DEFAULT_PERCENT));
        self.methods
            .get_or_insert_with(|| vec!["GET".into(), "HEAD".into()]);
        self.timeout
            .get_or_insert_with(|| duration::format(DEFAULT_TIMEOUT));
        self.max_body
            .get_or_insert_with(|| format_size(DEFAULT_MAX_BODY));
        if let Some(c) = &mut self.compare {
            c.status.get_or_insert(true);
            c.body.get_or_insert(crate::mirror::BodyCompare::default());
        }
        self
    }
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
                    address: i
                        .template
                        .as_ref()
                        .map_or_else(|| i.address.to_string(), |t| t.as_str().to_owned()),
                    weight: (i.weight != 1).then_some(i.weight),
                    labels: i.labels.clone(),
                    discovery: match i.discovery {
                        Discovery::Static => None,
                        Discovery::Dns { .. } => Some(DiscoverySpec::Dns),
                    },
                    dns_refresh: match i.discovery {
                        Discovery::Dns { refresh } if refresh != DEFAULT_DNS_REFRESH => {
                            Some(crate::duration::format(refresh))
                        }
                        _ => None,
                    },
                })
                .collect(),
            load_balancing: (s.load_balancing != LoadBalancing::default())
                .then_some(s.load_balancing),
            protocol: (s.protocol != Protocol::default()).then(|| s.protocol.into()),
            tls: s.tls.as_ref().map(|t| UpstreamTlsSpec {
                server_name: t.server_name.as_deref().map(str::to_owned),
                ca_pem: t.ca_pem.as_deref().map(str::to_owned),
            }),
            health_check: s.health_check.as_ref().map(|h| HealthCheckSpec {
                path: Some(h.path.to_string()),
                interval: Some(duration::format(h.interval)),
                timeout: Some(duration::format(h.timeout)),
                healthy: Some(h.healthy),
                unhealthy: Some(h.unhealthy),
                expect: Some(h.expect.iter().map(status_range_spec).collect()),
            }),
            outlier: s.outlier.as_ref().map(|o| OutlierSpec {
                consecutive_failures: Some(o.consecutive_failures),
                base_ejection: Some(duration::format(o.base_ejection)),
                max_ejected_percent: Some(o.max_ejected_percent),
            }),
            limits: s.limits.as_ref().map(|l| LimitsSpec {
                max_connections: Some(l.max_connections),
                max_pending: Some(l.max_pending),
            }),
            select: (!s.select.is_empty()).then(|| {
                s.select
                    .iter()
                    .map(|(k, t)| (k.clone(), t.as_str().to_owned()))
                    .collect()
            }),
            locality: s.locality.as_ref().map(|l| LocalitySpec {
                prefer: l.prefer.clone(),
                fallback: Some(l.fallback),
            }),
        }
    }
}

fn status_range_spec(r: &StatusRange) -> CodeOrWord {
    if r.lo == r.hi {
        CodeOrWord::Code(r.lo)
    } else {
        CodeOrWord::Word(format!("{}-{}", r.lo, r.hi))
    }
}

fn retry_on_spec(on: &RetryOn) -> CodeOrWord {
    match on {
        RetryOn::ConnectFailure => CodeOrWord::Word(RetryOn::CONNECT_FAILURE.into()),
        RetryOn::Reset => CodeOrWord::Word(RetryOn::RESET.into()),
        RetryOn::PerTryTimeout => CodeOrWord::Word(RetryOn::PER_TRY_TIMEOUT.into()),
        RetryOn::Status(c) => CodeOrWord::Code(*c),
    }
}

impl From<&Retry> for RetrySpec {
    fn from(r: &Retry) -> Self {
        RetrySpec {
            attempts: Some(r.attempts),
            on: Some(r.on.iter().map(retry_on_spec).collect()),
            per_try_timeout: r.per_try_timeout.map(duration::format),
            backoff: Some(duration::format(r.backoff)),
            non_idempotent: Some(r.non_idempotent),
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
                    retry: f.retry.as_ref().map(RetrySpec::from),
                    mirror: f.mirror.as_deref().map(MirrorSpec::from),
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
            mode: (r.mode != RouteMode::default()).then_some(r.mode),
            shadow: r.shadow.as_ref().map(|h| ShadowSpec {
                expect_header: Some(h.as_str().to_owned()),
            }),
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

/// `health_check` defaults.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
pub const DEFAULT_HEALTH_INTERVAL: &str = "5s";
pub const DEFAULT_HEALTH_TIMEOUT: &str = "1s";
pub const DEFAULT_HEALTHY: u32 = 2;
pub const DEFAULT_UNHEALTHY: u32 = 3;
pub const DEFAULT_EXPECT: &str = "200-399";
/// `outlier` defaults.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub const DEFAULT_BASE_EJECTION: &str = "30s";
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
/// `limits` defaults.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_MAX_PENDING: u32 = 256;
/// `retry` defaults (`per_try_timeout` has none: the route's `timeout` bounds every try).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_RETRY_BACKOFF: &str = "25ms";
/// `retry.on` when left out.
pub fn default_retry_on() -> Vec<CodeOrWord> {
    vec![
        CodeOrWord::Word(RetryOn::CONNECT_FAILURE.into()),
        CodeOrWord::Word(RetryOn::RESET.into()),
        CodeOrWord::Code(503),
    ]
}

impl ServiceSpec {
    /// The same service with every default written out (`weight: 1`,
    /// `load_balancing: round_robin`, `protocol: http1`), so a reader sees what is in
    /// force. Applying it back changes nothing.
    pub fn with_defaults(mut self) -> Self {
        for i in &mut self.instances {
            i.weight.get_or_insert(1);
            // `discovery: static` stays implicit (the common case); a DNS instance shows
            // its refresh.
            if i.discovery == Some(DiscoverySpec::Dns) {
                i.dns_refresh.get_or_insert_with(|| {
                    crate::duration::format(crate::model::DEFAULT_DNS_REFRESH)
                });
            }
        }
        self.load_balancing.get_or_insert(LoadBalancing::default());
        self.protocol.get_or_insert(Protocol::default().into());
        if let Some(h) = &mut self.health_check {
            h.path.get_or_insert_with(|| DEFAULT_HEALTH_PATH.into());
            h.interval
                .get_or_insert_with(|| DEFAULT_HEALTH_INTERVAL.into());
            h.timeout
                .get_or_insert_with(|| DEFAULT_HEALTH_TIMEOUT.into());
            h.healthy.get_or_insert(DEFAULT_HEALTHY);
            h.unhealthy.get_or_insert(DEFAULT_UNHEALTHY);
            h.expect
                .get_or_insert_with(|| vec![CodeOrWord::Word(DEFAULT_EXPECT.into())]);
        }
        if let Some(o) = &mut self.outlier {
            o.consecutive_failures
                .get_or_insert(DEFAULT_CONSECUTIVE_FAILURES);
            o.base_ejection
                .get_or_insert_with(|| DEFAULT_BASE_EJECTION.into());
            o.max_ejected_percent
                .get_or_insert(DEFAULT_MAX_EJECTED_PERCENT);
        }
        if let Some(l) = &mut self.limits {
            l.max_connections.get_or_insert(DEFAULT_MAX_CONNECTIONS);
            l.max_pending.get_or_insert(DEFAULT_MAX_PENDING);
        }
        if let Some(l) = &mut self.locality {
            l.fallback
                .get_or_insert(crate::locality::Fallback::default());
        }
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
        self.mode.get_or_insert(RouteMode::default());
        if let Some(f) = &mut self.forward {
            for b in f.backends.iter_mut().flatten() {
                b.weight.get_or_insert(1);
            }
            if let Some(r) = &mut f.retry {
                r.attempts.get_or_insert(DEFAULT_RETRY_ATTEMPTS);
                r.on.get_or_insert_with(default_retry_on);
                r.backoff
                    .get_or_insert_with(|| DEFAULT_RETRY_BACKOFF.into());
                r.non_idempotent.get_or_insert(false);
            }
            if let Some(m) = f.mirror.take() {
                f.mirror = Some(m.with_defaults());
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
    /// control plane already stores. Certificates are checked too (their errors are
    /// reported; valid ones are not returned).
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
        // Certificates: each checked on its own (inline PEM fully), errors only; the
        // caller decides what to do with valid ones.
        let now = std::time::SystemTime::now();
        for (c, origin) in self.certificates().iter().zip(&self.certificate_origins) {
            let mut found = Vec::new();
            if crate::tls::certificate(c, now, &mut found).is_none() {
                errors.extend(found.into_iter().map(|error| SourceError::Invalid {
                    origin: Some(origin.clone()),
                    error,
                }));
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
