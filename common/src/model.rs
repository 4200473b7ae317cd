//! The validated route model. Values of these types can only be built by
//! [`crate::Config::try_from`] / [`Route::try_from`] / [`Service::try_from`], so a
//! `Route` in hand always has a legal id, a compiled regex, a known path kind and so on.
//! There are no setters: a change is a new value.

use std::time::Duration;

use http::{HeaderName, Method};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::headers::{RequestHeaders, value_str};
use crate::name::Name;

/// A validated set of services and routes that refer to each other consistently.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) services: Vec<Service>,
    pub(crate) routes: Vec<Route>,
    /// `tls.certificates`, sorted by name.
    pub(crate) certificates: Vec<crate::tls::Certificate>,
}

impl Config {
    pub fn empty() -> Self {
        Self {
            services: Vec::new(),
            routes: Vec::new(),
            certificates: Vec::new(),
        }
    }
    /// The certificates the proxy terminates TLS with, sorted by name.
    pub fn certificates(&self) -> &[crate::tls::Certificate] {
        &self.certificates
    }
    /// The same configuration with these certificates (checked as a set: unique names,
    /// at most one `default`, no host listed twice).
    pub fn with_certificates(
        mut self,
        mut certificates: Vec<crate::tls::Certificate>,
    ) -> Result<Self, crate::ValidationErrors> {
        let mut errors = Vec::new();
        crate::tls::check_set(&mut certificates, &mut errors);
        if !errors.is_empty() {
            return Err(crate::ValidationErrors(errors));
        }
        self.certificates = certificates;
        Ok(self)
    }
    pub fn services(&self) -> &[Service] {
        &self.services
    }
    /// Routes in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

/// Whether a route serves (`active`) or is only evaluated and compared with what
/// actually answers (`shadow`, see [`crate::shadow`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    #[default]
    Active,
    Shadow,
}

impl RouteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::Active => "active",
            RouteMode::Shadow => "shadow",
        }
    }
}

/// How the proxy speaks to a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 over plain TCP.
    #[default]
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (what gRPC servers speak without TLS).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Https,
}

impl Protocol {
    /// Spoken over TLS (`h2`, `https`).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::H2 | Protocol::Https)
    }
    /// Spoken as HTTP/2 (`h2c`, `h2`).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }
}

/// `services[].tls`: how the proxy checks a TLS upstream (`h2`, `https`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub(crate) server_name: Option<Box<str>>,
    pub(crate) ca_pem: Option<Box<str>>,
}

impl UpstreamTls {
    /// The name sent as SNI and checked against the certificate; `None`: each
    /// instance's own host.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }
    /// PEM certificates that replace the system roots; `None`: the system roots.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub(crate) name: Name,
    pub(crate) instances: Vec<Instance>,
    pub(crate) load_balancing: LoadBalancing,
    pub(crate) protocol: Protocol,
    /// TLS settings for `h2`/`https` services; `None`: defaults (system roots, SNI = the
    /// instance's host) for those, and always for plain-text protocols.
    pub(crate) tls: Option<UpstreamTls>,
    /// Active HTTP health checks; `None`: none (every instance counts as healthy).
    pub(crate) health_check: Option<HealthCheck>,
    /// Passive outlier detection; `None`: no ejection.
    pub(crate) outlier: Option<Outlier>,
    /// Concurrency caps per proxy; `None`: unlimited.
    pub(crate) limits: Option<Limits>,
    /// `select`: label → the value an instance must have (per proxy, see
    /// [`crate::locality`]); empty: every instance.
    pub(crate) select: crate::locality::Select,
    /// `locality`: which instances a proxy prefers; `None`: all alike.
    pub(crate) locality: Option<crate::locality::Locality>,
}

impl Service {
    pub fn name(&self) -> &Name {
        &self.name
    }
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }
    pub fn select(&self) -> &crate::locality::Select {
        &self.select
    }
    pub fn locality(&self) -> Option<&crate::locality::Locality> {
        self.locality.as_ref()
    }
    pub fn load_balancing(&self) -> LoadBalancing {
        self.load_balancing
    }
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.tls.as_ref()
    }
    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.health_check.as_ref()
    }
    pub fn outlier(&self) -> Option<&Outlier> {
        self.outlier.as_ref()
    }
    pub fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref()
    }
}

/// An inclusive range of HTTP status codes (`200-399`, or one code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub(crate) lo: u16,
    pub(crate) hi: u16,
}

impl StatusRange {
    pub fn lo(&self) -> u16 {
        self.lo
    }
    pub fn hi(&self) -> u16 {
        self.hi
    }
    pub fn contains(&self, code: u16) -> bool {
        (self.lo..=self.hi).contains(&code)
    }
}

/// `services[].health_check`: the proxy sends `GET path` to every instance each
/// `interval` (jittered); `unhealthy` consecutive failures (no answer within `timeout`, or
/// a status outside `expect`) mark it down, `healthy` consecutive successes up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub(crate) path: Box<str>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) healthy: u32,
    pub(crate) unhealthy: u32,
    pub(crate) expect: Vec<StatusRange>,
}

impl HealthCheck {
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn interval(&self) -> Duration {
        self.interval
    }
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    pub fn healthy(&self) -> u32 {
        self.healthy
    }
    pub fn unhealthy(&self) -> u32 {
        self.unhealthy
    }
    pub fn expect(&self) -> &[StatusRange] {
        &self.expect
    }
    /// Whether an answer with this status counts as healthy.
    pub fn expects(&self, code: u16) -> bool {
        self.expect.iter().any(|r| r.contains(code))
    }
}

/// `services[].outlier`: `consecutive_failures` 5xx answers or connection failures in a
/// row eject an instance for `base_ejection` × the times it was ejected, while at most
/// `max_ejected_percent` of the instances are ejected at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ejection: Duration,
    pub(crate) max_ejected_percent: u32,
}

impl Outlier {
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
    pub fn base_ejection(&self) -> Duration {
        self.base_ejection
    }
    pub fn max_ejected_percent(&self) -> u32 {
        self.max_ejected_percent
    }
}

/// `services[].limits`, per proxy: requests in flight to the service
/// (`max_connections`: each holds one upstream connection) and requests waiting for a new
/// upstream connection to open (`max_pending`). Over either → 503 at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub(crate) max_connections: u32,
    pub(crate) max_pending: u32,
}

impl Limits {
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }
    pub fn max_pending(&self) -> u32 {
        self.max_pending
    }
}

/// One `forward.retry.on` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// The upstream connection could not be opened.
    ConnectFailure,
    /// The connection was reset or closed before any response byte.
    Reset,
    /// No response head within `per_try_timeout`.
    PerTryTimeout,
    /// The upstream answered with this status.
    Status(u16),
}

impl RetryOn {
    pub const CONNECT_FAILURE: &'static str = "connect-failure";
    pub const RESET: &'static str = "reset";
    pub const PER_TRY_TIMEOUT: &'static str = "per-try-timeout";
}

/// `forward.retry`: up to `attempts` more tries after the first, each after `backoff`
/// (jittered) and on another endpoint where one exists, for the conditions in `on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub(crate) attempts: u32,
    pub(crate) on: Vec<RetryOn>,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) backoff: Duration,
    pub(crate) non_idempotent: bool,
}

impl Retry {
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    pub fn on(&self) -> &[RetryOn] {
        &self.on
    }
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
    pub fn non_idempotent(&self) -> bool {
        self.non_idempotent
    }
    pub fn on_connect_failure(&self) -> bool {
        self.on.contains(&RetryOn::ConnectFailure)
    }
    pub fn on_reset(&self) -> bool {
        self.on.contains(&RetryOn::Reset)
    }
    pub fn on_per_try_timeout(&self) -> bool {
        self.on.contains(&RetryOn::PerTryTimeout)
    }
    pub fn on_status(&self, code: u16) -> bool {
        self.on.contains(&RetryOn::Status(code))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `host:port`; the host may be an IP literal or a DNS name resolved at connect time.
    pub(crate) address: http::uri::Authority,
    pub(crate) weight: u32,
    /// `labels` (validated keys and values; empty when none).
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// An address with `${node.NAME}` placeholders, filled in per proxy
    /// ([`crate::locality::localize`]); `address` then holds a sample rendering that
    /// only proves the shape, and is never connected to.
    pub(crate) template: Option<crate::locality::Template>,
    /// Its `locality` level for this proxy (0: shares every preferred label), set by
    /// [`crate::locality::localize`]; 0 without `locality`.
    pub(crate) level: u8,
    /// `discovery`: the address as written (static) or every A/AAAA record of its host.
    pub(crate) discovery: Discovery,
}

/// How an instance's address becomes endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discovery {
    /// One endpoint, the address as written (a host name is resolved at connect time).
    #[default]
    Static,
    /// One endpoint per A/AAAA record of the host (same port, weight and labels),
    /// looked up again every `refresh` by the proxy.
    Dns { refresh: std::time::Duration },
}

/// `dns_refresh` when left out.
pub const DEFAULT_DNS_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

impl Instance {
    pub fn address(&self) -> &http::uri::Authority {
        &self.address
    }
    pub fn weight(&self) -> u32 {
        self.weight
    }
    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.labels
    }
    /// The address as written, when it has `${node.NAME}` placeholders.
    pub fn template(&self) -> Option<&crate::locality::Template> {
        self.template.as_ref()
    }
    /// Its `locality` level for this proxy: the proxy uses the lowest level that has a
    /// usable instance (see [`crate::locality::localize`]).
    pub fn locality_level(&self) -> u8 {
        self.level
    }
    /// `discovery` (static unless `dns`).
    pub fn discovery(&self) -> Discovery {
        self.discovery
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub(crate) id: Name,
    pub(crate) hosts: Vec<HostMatch>,
    pub(crate) path: PathMatch,
    pub(crate) methods: Vec<Method>,
    pub(crate) headers: Vec<HeaderMatch>,
    pub(crate) query: Vec<QueryMatch>,
    pub(crate) priority: i32,
    pub(crate) group: Name,
    pub(crate) action: Action,
    /// Header edits, compiled once; `None` for the common route without any.
    pub(crate) filters: Option<std::sync::Arc<Filters>>,
    pub(crate) mode: RouteMode,
    /// `shadow.expect_header`: where the upstream reports the path it computed.
    pub(crate) shadow: Option<HeaderName>,
}

impl Route {
    pub fn id(&self) -> &Name {
        &self.id
    }
    /// Empty means any host.
    pub fn hosts(&self) -> &[HostMatch] {
        &self.hosts
    }
    pub fn path(&self) -> &PathMatch {
        &self.path
    }
    /// Empty means any method.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
    pub fn headers(&self) -> &[HeaderMatch] {
        &self.headers
    }
    pub fn query(&self) -> &[QueryMatch] {
        &self.query
    }
    pub fn priority(&self) -> i32 {
        self.priority
    }
    pub fn group(&self) -> &Name {
        &self.group
    }
    pub fn action(&self) -> &Action {
        &self.action
    }
    pub fn filters(&self) -> Option<&std::sync::Arc<Filters>> {
        self.filters.as_ref()
    }
    pub fn mode(&self) -> RouteMode {
        self.mode
    }
    pub fn is_shadow(&self) -> bool {
        self.mode == RouteMode::Shadow
    }
    /// The response header a shadow forward route is compared against.
    pub fn shadow_expect_header(&self) -> Option<&HeaderName> {
        self.shadow.as_ref()
    }

    /// The services this route can send traffic to.
    pub fn services(&self) -> impl Iterator<Item = &Name> {
        let (backends, mirror): (&[Backend], _) = match &self.action {
            Action::Forward(f) => (&f.backends, f.mirror.as_deref()),
            Action::Redirect(_) => (&[], None),
        };
        let mirrored = mirror.into_iter().flat_map(|m| {
            std::iter::once(&m.service).chain(m.compare.as_ref().and_then(|c| c.baseline.as_ref()))
        });
        backends.iter().map(|b| &b.service).chain(mirrored)
    }

    /// Method, header and query conditions; the host and path are matched by the table.
    pub fn matches_conditions(
        &self,
        method: &Method,
        headers: &dyn RequestHeaders,
        query: Option<&str>,
    ) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|h| h.matches(headers))
            && self.query.iter().all(|q| q.matches(query))
    }
}

/// A host condition, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(Box<str>),
    /// `*.example.org`, stored as the suffix `.example.org`.
    Wildcard(Box<str>),
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(Box<str>),
    /// Stored without its trailing `/`, so `/` is the empty string: the matched
    /// region of a request path is then always `path[..prefix.len()]`.
    Prefix(Box<str>),
    Regex(Pattern),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == &**p,
            PathMatch::Prefix(p) => prefix_matches(p, path),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// The part of a matching request path that `rewrite_prefix`/redirect `prefix`
    /// replaces: the prefix for prefix routes, the whole path for exact ones.
    pub fn replaceable_len(&self) -> Option<usize> {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => Some(p.len()),
            PathMatch::Regex(_) => None,
        }
    }
}

/// Whole-segment prefix match; `prefix` has no trailing `/`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// A regex that must match the whole subject. Keeps the source for display.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Box<str>,
    anchored: Regex,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let anchored = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()?;
        Ok(Self {
            source: source.into(),
            anchored,
        })
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
    pub fn is_match(&self, s: &str) -> bool {
        self.anchored.is_match(s)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    pub(crate) name: HeaderName,
    pub(crate) value: HeaderValueMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValueMatch {
    Exact(Box<[u8]>),
    Regex(Pattern),
    Present,
}

impl HeaderMatch {
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
    pub fn value(&self) -> &HeaderValueMatch {
        &self.value
    }
    /// True when any value of the header satisfies the condition.
    pub fn matches(&self, headers: &dyn RequestHeaders) -> bool {
        match &self.value {
            HeaderValueMatch::Present => headers.any_value(&self.name, &mut |_| true),
            HeaderValueMatch::Exact(want) => headers.any_value(&self.name, &mut |v| v == &**want),
            HeaderValueMatch::Regex(p) => headers.any_value(&self.name, &mut |v| {
                value_str(v).is_some_and(|s| p.is_match(s))
            }),
        }
    }
}

/// A query-parameter condition, on the percent-decoded name and value (`+` is a
/// space, as in form encoding), case-sensitive; when a parameter repeats, its first
/// occurrence counts.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMatch {
    pub(crate) name: Box<str>,
    pub(crate) value: QueryValueMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryValueMatch {
    Exact(Box<str>),
    Regex(Pattern),
    Present,
}

impl QueryMatch {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn value(&self) -> &QueryValueMatch {
        &self.value
    }
    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(value) = query.and_then(|q| first_param(q, &self.name)) else {
            return false;
        };
        match &self.value {
            QueryValueMatch::Present => true,
            QueryValueMatch::Exact(want) => *value == **want,
            QueryValueMatch::Regex(p) => p.is_match(&value),
        }
    }
}

/// The decoded value of the first `name` parameter in `query`.
fn first_param<'q>(query: &'q str, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k) == name).then(|| form_decode(v))
        })
}

/// `%XX` and `+` decoded; invalid escapes and non-UTF-8 results are kept as written
/// (they then match only a condition written the same way).
pub fn form_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_or(std::borrow::Cow::Borrowed(s), std::borrow::Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[derive(Debug, Clone)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
}

/// A route's header filters: edits applied last to the upstream request (after the
/// proxy's own `x-forwarded-*`, `host` and `x-request-id`) and last to the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub(crate) request_headers: HeaderFilter,
    pub(crate) response_headers: HeaderFilter,
}

impl Filters {
    pub fn request_headers(&self) -> &HeaderFilter {
        &self.request_headers
    }
    pub fn response_headers(&self) -> &HeaderFilter {
        &self.response_headers
    }
}

/// `set` replaces every line of a name with one, `add` appends one more line, `remove`
/// drops every line of a name. Names are lowercase; no name is in two lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFilter {
    pub(crate) set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub(crate) add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub(crate) remove: Vec<http::HeaderName>,
}

impl HeaderFilter {
    pub fn set(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.set
    }
    pub fn add(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.add
    }
    pub fn remove(&self) -> &[http::HeaderName] {
        &self.remove
    }
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
    /// True when lines of `name` from elsewhere (the client, the upstream, the proxy
    /// itself) must not pass: `set` replaces them, `remove` drops them.
    pub fn overrides(&self, name: &str) -> bool {
        self.set
            .iter()
            .map(|(n, _)| n)
            .chain(&self.remove)
            .any(|n| n.as_str().eq_ignore_ascii_case(name))
    }
    /// The lines this filter writes: `set`, then `add`.
    pub fn lines(&self) -> impl Iterator<Item = &(http::HeaderName, http::HeaderValue)> {
        self.set.iter().chain(&self.add)
    }
}

/// How the upstream path is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Replaces the matched prefix (`rewrite_prefix`).
    Prefix(Box<str>),
    /// Replaces the whole path; the query is kept (`rewrite_path`).
    Path(Box<str>),
}

#[derive(Debug, Clone)]
pub struct Forward {
    pub(crate) backends: Vec<Backend>,
    pub(crate) rewrite: Option<Rewrite>,
    pub(crate) host_rewrite: Option<http::HeaderValue>,
    pub(crate) timeout: Option<Duration>,
    /// True when the route was written `service: x` rather than `backends: [...]`.
    pub(crate) single_service: bool,
    /// `None`: no retries (beyond resending on a stale pooled connection).
    pub(crate) retry: Option<Retry>,
    /// `forward.mirror`: boxed, as most routes have none.
    pub(crate) mirror: Option<Box<crate::mirror::Mirror>>,
}

impl Forward {
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }
    pub fn mirror(&self) -> Option<&crate::mirror::Mirror> {
        self.mirror.as_deref()
    }
    pub fn rewrite(&self) -> Option<&Rewrite> {
        self.rewrite.as_ref()
    }
    pub fn host_rewrite(&self) -> Option<&http::HeaderValue> {
        self.host_rewrite.as_ref()
    }
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    pub fn retry(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub(crate) service: Name,
    pub(crate) weight: u32,
}

impl Backend {
    pub fn service(&self) -> &Name {
        &self.service
    }
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub(crate) scheme: Option<Scheme>,
    pub(crate) host: Option<Box<str>>,
    pub(crate) port: Option<u16>,
    pub(crate) path: Option<RedirectPath>,
    pub(crate) code: RedirectCode,
}

impl Redirect {
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    pub fn path(&self) -> Option<&RedirectPath> {
        self.path.as_ref()
    }
    pub fn code(&self) -> RedirectCode {
        self.code
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPath {
    /// Replaces the whole path.
    Full(Box<str>),
    /// Replaces the matched prefix, like `rewrite_prefix`.
    Prefix(Box<str>),
}

/// One of 301, 302, 303, 307, 308.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectCode(u16);

impl RedirectCode {
    pub const ALLOWED: [u16; 5] = [301, 302, 303, 307, 308];

    pub fn new(code: u16) -> Option<Self> {
        Self::ALLOWED.contains(&code).then_some(Self(code))
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for RedirectCode {
    fn default() -> Self {
        Self(301)
    }
}
