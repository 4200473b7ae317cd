//! Validation: [`ConfigSpec`] → [`Config`], collecting every problem with the object
//! and field it concerns. (The reverse, model → spec, lives in [`crate::spec`].)

use std::collections::HashSet;
use std::fmt;

use http::{HeaderName, HeaderValue, Method};

use crate::duration;
use crate::model::*;
use crate::name::Name;
use crate::path::normalize_path;
use crate::spec::*;

/// The object a validation error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRef {
    Route(String),
    Service(String),
    /// A `tls.certificates[]` entry, by name.
    Certificate(String),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Route(id) => write!(f, "route {id:?}"),
            ObjectRef::Service(name) => write!(f, "service {name:?}"),
            ObjectRef::Certificate(name) => write!(f, "certificate {name:?}"),
        }
    }
}

/// One problem: which object, which field (dotted path as written in the file), why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct ValidationError {
    pub object: ObjectRef,
    pub field: String,
    pub reason: String,
}

/// Every problem found in one validation pass (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects errors for one object.
struct Problems<'a> {
    object: ObjectRef,
    out: &'a mut Vec<ValidationError>,
}

impl Problems<'_> {
    fn add(&mut self, field: impl Into<String>, reason: impl fmt::Display) {
        self.out.push(ValidationError {
            object: self.object.clone(),
            field: field.into(),
            reason: reason.to_string(),
        });
    }
}

impl TryFrom<ConfigSpec> for Config {
    type Error = ValidationErrors;

    fn try_from(spec: ConfigSpec) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        let services: Vec<Service> = spec
            .services
            .iter()
            .filter_map(|s| service(s, &mut errors))
            .collect();
        let routes: Vec<Route> = spec
            .routes
            .iter()
            .filter_map(|r| route(r, &mut errors))
            .collect();
        let now = std::time::SystemTime::now();
        let certificates: Vec<crate::tls::Certificate> = spec
            .tls
            .iter()
            .flat_map(|t| &t.certificates)
            .filter_map(|c| crate::tls::certificate(c, now, &mut errors))
            .collect();
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        Config::new(services, routes)?.with_certificates(certificates)
    }
}

impl TryFrom<ServiceSpec> for Service {
    type Error = ValidationErrors;
    fn try_from(spec: ServiceSpec) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        service(&spec, &mut errors).ok_or(ValidationErrors(errors))
    }
}

impl TryFrom<RouteSpec> for Route {
    type Error = ValidationErrors;
    fn try_from(spec: RouteSpec) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        route(&spec, &mut errors).ok_or(ValidationErrors(errors))
    }
}

impl Config {
    /// Cross-object checks over individually valid objects: unique names and ids,
    /// and every forward naming a declared service.
    pub fn new(services: Vec<Service>, routes: Vec<Route>) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        for s in &services {
            if !names.insert(s.name.as_str()) {
                errors.push(ValidationError {
                    object: ObjectRef::Service(s.name.to_string()),
                    field: "name".into(),
                    reason: "is declared more than once".into(),
                });
            }
        }
        let mut ids = HashSet::new();
        for r in &routes {
            let mut p = Problems {
                object: ObjectRef::Route(r.id.to_string()),
                out: &mut errors,
            };
            if !ids.insert(r.id.as_str()) {
                p.add("id", "is declared more than once");
            }
            if let Action::Forward(f) = &r.action {
                let field = if f.single_service {
                    "forward.service"
                } else {
                    "forward.backends"
                };
                for b in &f.backends {
                    if !names.contains(b.service.as_str()) {
                        p.add(
                            field,
                            format_args!("unknown service {:?}", b.service.as_str()),
                        );
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Self {
                services,
                routes,
                certificates: Vec::new(),
            })
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

fn name(p: &mut Problems<'_>, field: &str, value: &str) -> Option<Name> {
    Name::new(value)
        .map_err(|e| p.add(field, format_args!("{value:?} {e}")))
        .ok()
}

fn service(spec: &ServiceSpec, errors: &mut Vec<ValidationError>) -> Option<Service> {
    let before = errors.len();
    let mut p = Problems {
        object: ObjectRef::Service(spec.name.clone()),
        out: errors,
    };
    let name = name(&mut p, "name", &spec.name);
    let mut instances = Vec::with_capacity(spec.instances.len());
    let mut seen = HashSet::new();
    for (i, inst) in spec.instances.iter().enumerate() {
        let field = format!("instances[{i}].address");
        match parse_address(&inst.address) {
            Ok(address) => {
                if !seen.insert(address.clone()) {
                    p.add(field, format_args!("{:?} is listed twice", inst.address));
                }
                instances.push(Instance {
                    address,
                    weight: inst.weight.unwrap_or(1),
                });
            }
            Err(reason) => p.add(field, reason),
        }
        if inst.weight.is_some_and(|w| w > MAX_WEIGHT) {
            p.add(
                format!("instances[{i}].weight"),
                format_args!("must be at most {MAX_WEIGHT}"),
            );
        }
    }
    if !instances.is_empty() && instances.iter().all(|i| i.weight == 0) {
        p.add(
            "instances",
            "all weights are 0; at least one must be positive",
        );
    }
    let protocol = match spec.protocol {
        None | Some(ProtocolSpec::Http1) => Protocol::Http1,
        Some(ProtocolSpec::H2c) => Protocol::H2c,
        Some(tls @ (ProtocolSpec::H2 | ProtocolSpec::Https)) => {
            p.add(
                "protocol",
                format_args!(
                    "{:?} is not supported yet: TLS to upstreams is not supported (use http1 or h2c)",
                    tls.as_str()
                ),
            );
            Protocol::Http1
        }
    };
    if errors.len() > before {
        return None;
    }
    Some(Service {
        name: name?,
        instances,
        load_balancing: spec.load_balancing.unwrap_or_default(),
        protocol,
    })
}

/// Weights above this gain nothing and would only make round-robin schedules long.
pub const MAX_WEIGHT: u32 = 10_000;

fn parse_address(s: &str) -> Result<http::uri::Authority, String> {
    let a: http::uri::Authority = s.parse().map_err(|_| format!("{s:?} is not host:port"))?;
    if a.port_u16().is_none() {
        return Err(format!("{s:?} has no port; expected host:port"));
    }
    if a.host().is_empty() || s.contains('@') {
        return Err(format!("{s:?} is not host:port"));
    }
    Ok(a)
}

fn route(spec: &RouteSpec, errors: &mut Vec<ValidationError>) -> Option<Route> {
    let before = errors.len();
    let mut p = Problems {
        object: ObjectRef::Route(spec.id.clone()),
        out: errors,
    };
    let id = name(&mut p, "id", &spec.id);
    let group = name(&mut p, "group", spec.group.as_deref().unwrap_or("default"));

    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().flatten().enumerate() {
        match host_match(h) {
            Ok(m) => hosts.push(m),
            Err(reason) => p.add(format!("hosts[{i}]"), reason),
        }
    }

    let path = path_match(&mut p, spec.path.as_ref());

    let mut methods = Vec::new();
    for (i, m) in spec.methods.iter().flatten().enumerate() {
        let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
        match Method::from_bytes(m.as_bytes()) {
            Ok(method) if ok => methods.push(method),
            _ => p.add(
                format!("methods[{i}]"),
                format_args!("{m:?} is not an HTTP method (expected e.g. GET, POST)"),
            ),
        }
    }

    let mut headers = Vec::new();
    for (i, h) in spec.headers.iter().flatten().enumerate() {
        if let Some(m) = header_match(&mut p, i, h) {
            headers.push(m);
        }
    }

    let mut query = Vec::new();
    for (i, q) in spec.query.iter().flatten().enumerate() {
        if let Some(m) = query_match(&mut p, i, q) {
            query.push(m);
        }
    }

    let filters = spec.filters.as_ref().and_then(|f| {
        if spec.forward.is_none() {
            p.add(
                "filters",
                "apply to forwarded requests; a redirect route cannot have them",
            );
            return None;
        }
        filters(&mut p, f)
    });

    let action = match (&spec.forward, &spec.redirect) {
        (Some(f), None) => forward(&mut p, f, path.as_ref()).map(Action::Forward),
        (None, Some(r)) => redirect(&mut p, r, path.as_ref()).map(Action::Redirect),
        (Some(_), Some(_)) => {
            p.add(
                "forward",
                "set both forward and redirect; exactly one is allowed",
            );
            None
        }
        (None, None) => {
            p.add(
                "forward",
                "missing; a route needs exactly one of forward or redirect",
            );
            None
        }
    };

    if errors.len() > before {
        return None;
    }
    Some(Route {
        id: id?,
        hosts,
        path: path?,
        methods,
        headers,
        query,
        priority: spec.priority.unwrap_or(0),
        group: group?,
        action: action?,
        filters: filters.filter(|f| **f != Filters::default()),
    })
}

/// Fields a filter may not touch: framing and connection management belong to the
/// proxy (a filter must not make a message two parsers read differently), and `host`
/// has `forward.host_rewrite`.
const UNFILTERABLE: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn filters(p: &mut Problems<'_>, spec: &FiltersSpec) -> Option<std::sync::Arc<Filters>> {
    let before = p.out.len();
    let request_headers = spec
        .request_headers
        .as_ref()
        .map(|h| header_filter(p, "filters.request_headers", h))
        .unwrap_or_default();
    let response_headers = spec
        .response_headers
        .as_ref()
        .map(|h| header_filter(p, "filters.response_headers", h))
        .unwrap_or_default();
    (p.out.len() == before).then(|| {
        std::sync::Arc::new(Filters {
            request_headers,
            response_headers,
        })
    })
}

fn header_filter(p: &mut Problems<'_>, at: &str, spec: &HeaderFilterSpec) -> HeaderFilter {
    let mut out = HeaderFilter::default();
    let mut seen: Vec<HeaderName> = Vec::new();
    let mut check_name = |p: &mut Problems<'_>, field: String, raw: &str| -> Option<HeaderName> {
        let name = match HeaderName::from_bytes(raw.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                p.add(field, format_args!("{raw:?} is not a header name"));
                return None;
            }
        };
        if UNFILTERABLE.contains(&name.as_str()) {
            p.add(
                field,
                format_args!("{raw:?} is managed by the proxy and cannot be filtered"),
            );
            return None;
        }
        if seen.contains(&name) {
            p.add(
                field,
                format_args!("{raw:?} appears twice; each name may be in one of set, add, remove"),
            );
            return None;
        }
        seen.push(name.clone());
        Some(name)
    };
    for (list, into) in [("set", &spec.set), ("add", &spec.add)] {
        for (raw, value) in into.iter().flatten() {
            let field = format!("{at}.{list}.{raw}");
            let Some(name) = check_name(p, field.clone(), raw) else {
                continue;
            };
            match HeaderValue::from_str(value) {
                Ok(v) => {
                    let lines = if list == "set" {
                        &mut out.set
                    } else {
                        &mut out.add
                    };
                    lines.push((name, v));
                }
                Err(_) => p.add(field, format_args!("{value:?} is not a header value")),
            }
        }
    }
    for (i, raw) in spec.remove.iter().flatten().enumerate() {
        if let Some(name) = check_name(p, format!("{at}.remove[{i}]"), raw) {
            out.remove.push(name);
        }
    }
    out
}

fn host_match(h: &str) -> Result<HostMatch, String> {
    let lower = h.to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "{h:?} is not a host name (expected e.g. www.example.com or *.example.com, no port)"
        ));
    }
    Ok(if wild {
        HostMatch::Wildcard(format!(".{name}").into())
    } else {
        HostMatch::Exact(name.into())
    })
}

fn normalised_path(p: &mut Problems<'_>, field: &str, value: &str) -> Option<String> {
    if !value.starts_with('/') {
        p.add(field, format_args!("{value:?} must start with '/'"));
        return None;
    }
    if value.contains(['?', '#']) {
        p.add(field, format_args!("{value:?} must not contain '?' or '#'"));
        return None;
    }
    match normalize_path(value) {
        Ok(n) if n == value => Some(n.into_owned()),
        Ok(n) => {
            p.add(
                field,
                format_args!("{value:?} is not a normalised path (requests are matched as {n:?})"),
            );
            None
        }
        Err(e) => {
            p.add(field, format_args!("{value:?}: {e}"));
            None
        }
    }
}

fn path_match(p: &mut Problems<'_>, spec: Option<&PathSpec>) -> Option<PathMatch> {
    let Some(spec) = spec else {
        return Some(PathMatch::Prefix("".into()));
    };
    match (&spec.prefix, &spec.exact, &spec.regex) {
        (Some(prefix), None, None) => {
            let n = normalised_path(p, "path.prefix", prefix)?;
            Some(PathMatch::Prefix(n.trim_end_matches('/').into()))
        }
        (None, Some(exact), None) => {
            normalised_path(p, "path.exact", exact).map(|n| PathMatch::Exact(n.into()))
        }
        (None, None, Some(regex)) => match Pattern::new(regex) {
            Ok(pat) => Some(PathMatch::Regex(pat)),
            Err(e) => {
                p.add(
                    "path.regex",
                    format_args!("invalid regex {regex:?}: {}", regex_reason(&e)),
                );
                None
            }
        },
        _ => {
            p.add("path", "set exactly one of prefix, exact or regex");
            None
        }
    }
}

/// The regex crate explains syntax errors over several lines with a caret diagram;
/// errors here are one line, so keep only the explanation.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.trim_start_matches("error: ").to_owned())
        .unwrap_or(text)
}

fn header_match(p: &mut Problems<'_>, i: usize, spec: &HeaderSpec) -> Option<HeaderMatch> {
    let name = match HeaderName::from_bytes(spec.name.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            p.add(
                format!("headers[{i}].name"),
                format_args!("{:?} is not a header name", spec.name),
            );
            None
        }
    };
    let value = match (&spec.exact, &spec.regex, spec.present) {
        (Some(v), None, None) => Some(HeaderValueMatch::Exact(v.as_bytes().into())),
        (None, Some(r), None) => match Pattern::new(r) {
            Ok(pat) => Some(HeaderValueMatch::Regex(pat)),
            Err(e) => {
                p.add(
                    format!("headers[{i}].regex"),
                    format_args!("invalid regex {r:?}: {}", regex_reason(&e)),
                );
                None
            }
        },
        (None, None, Some(true)) => Some(HeaderValueMatch::Present),
        (None, None, Some(false)) => {
            p.add(
                format!("headers[{i}].present"),
                "must be true (a route cannot require a header to be absent)",
            );
            None
        }
        _ => {
            p.add(
                format!("headers[{i}]"),
                "set exactly one of exact, regex or present: true",
            );
            None
        }
    };
    Some(HeaderMatch {
        name: name?,
        value: value?,
    })
}

fn query_match(p: &mut Problems<'_>, i: usize, spec: &QuerySpec) -> Option<QueryMatch> {
    if spec.name.is_empty() {
        p.add(format!("query[{i}].name"), "must not be empty");
        return None;
    }
    let value = match (&spec.exact, &spec.regex, spec.present) {
        (Some(v), None, None) => QueryValueMatch::Exact(v.as_str().into()),
        (None, Some(r), None) => match Pattern::new(r) {
            Ok(pat) => QueryValueMatch::Regex(pat),
            Err(e) => {
                p.add(
                    format!("query[{i}].regex"),
                    format_args!("invalid regex {r:?}: {}", regex_reason(&e)),
                );
                return None;
            }
        },
        (None, None, Some(true)) => QueryValueMatch::Present,
        (None, None, Some(false)) => {
            p.add(
                format!("query[{i}].present"),
                "must be true (a route cannot require a parameter to be absent)",
            );
            return None;
        }
        _ => {
            p.add(
                format!("query[{i}]"),
                "set exactly one of exact, regex or present: true",
            );
            return None;
        }
    };
    Some(QueryMatch {
        name: spec.name.as_str().into(),
        value,
    })
}

fn replacement(
    p: &mut Problems<'_>,
    field: &str,
    value: &str,
    path: Option<&PathMatch>,
) -> Option<Box<str>> {
    if matches!(path, Some(PathMatch::Regex(_))) {
        p.add(field, "needs a prefix or exact path match, not a regex");
        return None;
    }
    normalised_path(p, field, value).map(Into::into)
}

fn forward(p: &mut Problems<'_>, spec: &ForwardSpec, path: Option<&PathMatch>) -> Option<Forward> {
    let before = p.out.len();
    let mut backends = Vec::new();
    let single_service = spec.service.is_some();
    match (&spec.service, &spec.backends) {
        (Some(s), None) => {
            if let Some(service) = name(p, "forward.service", s) {
                backends.push(Backend { service, weight: 1 });
            }
        }
        (None, Some(list)) => {
            if list.is_empty() {
                p.add("forward.backends", "is empty; list at least one service");
            }
            for (i, b) in list.iter().enumerate() {
                let weight = b.weight.unwrap_or(1);
                if weight > MAX_WEIGHT {
                    p.add(
                        format!("forward.backends[{i}].weight"),
                        format_args!("must be at most {MAX_WEIGHT}"),
                    );
                }
                if let Some(service) =
                    name(p, &format!("forward.backends[{i}].service"), &b.service)
                {
                    backends.push(Backend { service, weight });
                }
            }
            if !list.is_empty() && backends.iter().all(|b| b.weight == 0) {
                p.add(
                    "forward.backends",
                    "all weights are 0; at least one must be positive",
                );
            }
        }
        _ => p.add("forward", "set exactly one of service or backends"),
    }
    let rewrite = match (&spec.rewrite_prefix, &spec.rewrite_path) {
        (Some(r), None) => replacement(p, "forward.rewrite_prefix", r, path).map(Rewrite::Prefix),
        (None, Some(r)) => {
            normalised_path(p, "forward.rewrite_path", r).map(|n| Rewrite::Path(n.into()))
        }
        (Some(_), Some(_)) => {
            p.add(
                "forward.rewrite_path",
                "set at most one of rewrite_prefix or rewrite_path",
            );
            None
        }
        (None, None) => None,
    };
    let host_rewrite = spec.host_rewrite.as_deref().and_then(|h| {
        match (h.parse::<http::uri::Authority>(), HeaderValue::from_str(h)) {
            (Ok(a), Ok(v)) if !a.host().is_empty() && !h.contains('@') => Some(v),
            _ => {
                p.add(
                    "forward.host_rewrite",
                    format_args!("{h:?} is not host[:port]"),
                );
                None
            }
        }
    });
    let timeout = spec
        .timeout
        .as_deref()
        .and_then(|t| match duration::parse(t) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                p.add("forward.timeout", "must be greater than 0");
                None
            }
            Err(e) => {
                p.add("forward.timeout", e);
                None
            }
        });
    (p.out.len() == before).then_some(Forward {
        backends,
        rewrite,
        host_rewrite,
        timeout,
        single_service,
    })
}

fn redirect(
    p: &mut Problems<'_>,
    spec: &RedirectSpec,
    path: Option<&PathMatch>,
) -> Option<Redirect> {
    let before = p.out.len();
    let scheme = spec.scheme.as_deref().and_then(|s| match s {
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => {
            p.add(
                "redirect.scheme",
                format_args!("{s:?} must be http or https"),
            );
            None
        }
    });
    let host = spec.host.as_deref().and_then(|h| match host_match(h) {
        Ok(HostMatch::Exact(h)) => Some(h),
        _ => {
            p.add("redirect.host", format_args!("{h:?} is not a host name"));
            None
        }
    });
    if spec.port == Some(0) {
        p.add("redirect.port", "must be 1-65535");
    }
    let rpath = match (&spec.path, &spec.prefix) {
        (Some(full), None) => {
            normalised_path(p, "redirect.path", full).map(|n| RedirectPath::Full(n.into()))
        }
        (None, Some(prefix)) => {
            replacement(p, "redirect.prefix", prefix, path).map(RedirectPath::Prefix)
        }
        (None, None) => None,
        (Some(_), Some(_)) => {
            p.add("redirect.path", "set at most one of path or prefix");
            None
        }
    };
    let code = match spec.code {
        None => RedirectCode::default(),
        Some(c) => RedirectCode::new(c).unwrap_or_else(|| {
            p.add(
                "redirect.code",
                format_args!("{c} is not one of 301, 302, 303, 307, 308"),
            );
            RedirectCode::default()
        }),
    };
    (p.out.len() == before).then_some(Redirect {
        scheme,
        host,
        port: spec.port,
        path: rpath,
        code,
    })
}
