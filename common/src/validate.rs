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
                if let Some(m) = &f.mirror {
                    let baseline = m.compare.as_ref().and_then(|c| c.baseline.as_ref());
                    for (field, service) in [
                        ("forward.mirror.service", Some(&m.service)),
                        ("forward.mirror.compare.baseline", baseline),
                    ] {
                        if let Some(s) = service.filter(|s| !names.contains(s.as_str())) {
                            p.add(field, format_args!("unknown service {:?}", s.as_str()));
                        }
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
        // `${node.NAME}` placeholders are filled in per proxy; here the shape is
        // checked with every placeholder read as `1`.
        let template = match crate::locality::Template::parse(&inst.address) {
            Ok(t) => t.is_templated().then_some(t),
            Err(reason) => {
                p.add(field.clone(), reason);
                continue;
            }
        };
        let written = template
            .as_ref()
            .map_or_else(|| inst.address.clone(), |t| t.render_with("1"));
        match parse_address(&written) {
            Ok(address) => {
                let key = template
                    .as_ref()
                    .map_or_else(|| address.to_string(), |t| t.as_str().to_owned());
                if !seen.insert(key.to_ascii_lowercase()) {
                    p.add(field, format_args!("{:?} is listed twice", inst.address));
                }
                let discovery = discovery(&mut p, i, inst, &address);
                instances.push(Instance {
                    address,
                    weight: inst.weight.unwrap_or(1),
                    labels: inst.labels.clone(),
                    template,
                    level: 0,
                    discovery,
                });
            }
            Err(reason) if template.is_some() => p.add(
                field,
                format_args!("{:?} (placeholders read as 1): {reason}", inst.address),
            ),
            Err(reason) => p.add(field, reason),
        }
        for (key, value) in &inst.labels {
            if let Err(reason) = check_label(key, value) {
                p.add(format!("instances[{i}].labels"), reason);
            }
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
        Some(ProtocolSpec::H2) => Protocol::H2,
        Some(ProtocolSpec::Https) => Protocol::Https,
    };
    let tls = spec
        .tls
        .as_ref()
        .and_then(|t| upstream_tls(&mut p, protocol, t));
    // A resolved endpoint is an IP address: without `tls.server_name` the certificate
    // would be checked against that address, never the name.
    if protocol.is_tls() && spec.tls.as_ref().is_none_or(|t| t.server_name.is_none()) {
        for (i, inst) in spec.instances.iter().enumerate() {
            if inst.discovery == Some(DiscoverySpec::Dns) {
                p.add(
                    format!("instances[{i}].discovery"),
                    "dns on an h2/https service needs tls.server_name (the name certificates are checked against)",
                );
            }
        }
    }
    let health_check = spec
        .health_check
        .as_ref()
        .and_then(|h| health_check(&mut p, h));
    let outlier = spec.outlier.as_ref().and_then(|o| outlier(&mut p, o));
    let limits = spec.limits.as_ref().and_then(|l| limits(&mut p, l));
    let mut select = crate::locality::Select::new();
    for (key, value) in spec.select.iter().flatten() {
        let field = format!("select.{key}");
        if let Err(reason) = check_label(key, "") {
            p.add(field, reason);
            continue;
        }
        match crate::locality::Template::parse(value) {
            Ok(t) if !t.is_templated() => match check_label(key, value) {
                Ok(()) => {
                    select.insert(key.clone(), t);
                }
                Err(reason) => p.add(field, reason),
            },
            Ok(t) => {
                select.insert(key.clone(), t);
            }
            Err(reason) => p.add(field, reason),
        }
    }
    let locality = spec.locality.as_ref().and_then(|l| {
        if l.prefer.is_empty() {
            p.add(
                "locality.prefer",
                "is empty; name the labels to prefer, e.g. [region, zone]",
            );
            return None;
        }
        let mut ok = true;
        for (i, key) in l.prefer.iter().enumerate() {
            if let Err(reason) = check_label(key, "") {
                p.add(format!("locality.prefer[{i}]"), reason);
                ok = false;
            } else if l.prefer[..i].contains(key) {
                p.add(
                    format!("locality.prefer[{i}]"),
                    format_args!("{key:?} is listed twice"),
                );
                ok = false;
            }
        }
        ok.then(|| crate::locality::Locality {
            prefer: l.prefer.clone(),
            fallback: l.fallback.unwrap_or_default(),
        })
    });
    if errors.len() > before {
        return None;
    }
    Some(Service {
        name: name?,
        instances,
        load_balancing: spec.load_balancing.unwrap_or_default(),
        protocol,
        tls,
        health_check,
        outlier,
        limits,
        select,
        locality,
    })
}

/// `services[].tls`: only for TLS protocols; `server_name` a DNS name or an IP address;
/// `ca_pem` one or more PEM certificates that parse as X.509.
fn upstream_tls(
    p: &mut Problems<'_>,
    protocol: Protocol,
    spec: &UpstreamTlsSpec,
) -> Option<UpstreamTls> {
    let mut ok = true;
    if !protocol.is_tls() {
        p.add(
            "tls",
            format_args!(
                "only for protocol h2 or https (this service's protocol is {:?})",
                crate::spec::ProtocolSpec::from(protocol).as_str()
            ),
        );
        ok = false;
    }
    if let Some(name) = &spec.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        p.add(
            "tls.server_name",
            format_args!("{name:?} is not a DNS name or an IP address"),
        );
        ok = false;
    }
    if let Some(pem) = &spec.ca_pem
        && let Err(reason) = check_ca_pem(pem)
    {
        p.add("tls.ca_pem", reason);
        ok = false;
    }
    ok.then(|| UpstreamTls {
        server_name: spec.server_name.as_deref().map(Into::into),
        ca_pem: spec.ca_pem.as_deref().map(Into::into),
    })
}

/// At least one `CERTIFICATE` block, each an X.509 certificate.
fn check_ca_pem(pem: &str) -> Result<(), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut count = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {}: not valid PEM: {e}", i + 1))?;
        x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| format!("certificate {}: not an X.509 certificate: {e}", i + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(())
}

/// An instance's `discovery` and `dns_refresh`: `dns` needs a host name (an IP literal
/// has nothing to look up) and a refresh of at least a second; `dns_refresh` without
/// `discovery: dns` is an error, not ignored.
fn discovery(
    p: &mut Problems<'_>,
    i: usize,
    inst: &InstanceSpec,
    address: &http::uri::Authority,
) -> Discovery {
    match inst.discovery {
        None | Some(DiscoverySpec::Static) => {
            if inst.dns_refresh.is_some() {
                p.add(
                    format!("instances[{i}].dns_refresh"),
                    "only applies with discovery: dns",
                );
            }
            Discovery::Static
        }
        Some(DiscoverySpec::Dns) => {
            let host = address.host();
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if literal.parse::<std::net::IpAddr>().is_ok() {
                p.add(
                    format!("instances[{i}].discovery"),
                    format_args!(
                        "dns needs a host name, but {:?} is an IP address",
                        inst.address
                    ),
                );
            }
            let field = format!("instances[{i}].dns_refresh");
            let refresh = match inst.dns_refresh.as_deref().map(duration::parse) {
                None => DEFAULT_DNS_REFRESH,
                Some(Ok(d)) if d >= std::time::Duration::from_secs(1) => d,
                Some(Ok(_)) => {
                    p.add(field, "must be at least 1s");
                    DEFAULT_DNS_REFRESH
                }
                Some(Err(e)) => {
                    p.add(field, e);
                    DEFAULT_DNS_REFRESH
                }
            };
            Discovery::Dns { refresh }
        }
    }
}

/// A positive duration, or the default when left out.
fn positive_duration(
    p: &mut Problems<'_>,
    field: &str,
    value: Option<&str>,
    default: &str,
) -> Option<std::time::Duration> {
    match duration::parse(value.unwrap_or(default)) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            p.add(field, "must be greater than 0");
            None
        }
        Err(e) => {
            p.add(field, e);
            None
        }
    }
}

/// A count in `lo..=hi`, or the default when left out.
fn count(
    p: &mut Problems<'_>,
    field: &str,
    value: Option<u32>,
    default: u32,
    lo: u32,
    hi: u32,
) -> u32 {
    let v = value.unwrap_or(default);
    if !(lo..=hi).contains(&v) {
        p.add(field, format_args!("{v} must be {lo}-{hi}"));
    }
    v
}

fn status_range(item: &CodeOrWord) -> Option<StatusRange> {
    let ok = |c: u16| (100..=599).contains(&c);
    let (lo, hi) = match item {
        CodeOrWord::Code(c) => (*c, *c),
        CodeOrWord::Word(w) => match w.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let c = w.trim().parse().ok()?;
                (c, c)
            }
        },
    };
    (ok(lo) && ok(hi) && lo <= hi).then_some(StatusRange { lo, hi })
}

fn health_check(p: &mut Problems<'_>, spec: &HealthCheckSpec) -> Option<HealthCheck> {
    let before = p.out.len();
    let path = spec.path.as_deref().unwrap_or(DEFAULT_HEALTH_PATH);
    let path = normalised_path(p, "health_check.path", path);
    let interval = positive_duration(
        p,
        "health_check.interval",
        spec.interval.as_deref(),
        DEFAULT_HEALTH_INTERVAL,
    );
    let timeout = positive_duration(
        p,
        "health_check.timeout",
        spec.timeout.as_deref(),
        DEFAULT_HEALTH_TIMEOUT,
    );
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        p.add(
            "health_check.timeout",
            format_args!(
                "{} is longer than the interval ({})",
                duration::format(t),
                duration::format(i)
            ),
        );
    }
    let healthy = count(
        p,
        "health_check.healthy",
        spec.healthy,
        DEFAULT_HEALTHY,
        1,
        100,
    );
    let unhealthy = count(
        p,
        "health_check.unhealthy",
        spec.unhealthy,
        DEFAULT_UNHEALTHY,
        1,
        100,
    );
    let mut expect = Vec::new();
    match &spec.expect {
        None => expect.push(StatusRange { lo: 200, hi: 399 }),
        Some(list) if list.is_empty() => p.add(
            "health_check.expect",
            "is empty; list at least one status or range",
        ),
        Some(list) => {
            for (i, item) in list.iter().enumerate() {
                match status_range(item) {
                    Some(r) => expect.push(r),
                    None => p.add(
                        format!("health_check.expect[{i}]"),
                        format_args!(
                            "{item} is not a status code or range of them (e.g. 200 or 200-399, within 100-599)"
                        ),
                    ),
                }
            }
        }
    }
    (p.out.len() == before).then(|| HealthCheck {
        path: path.unwrap_or_default().into(),
        interval: interval.unwrap_or_default(),
        timeout: timeout.unwrap_or_default(),
        healthy,
        unhealthy,
        expect,
    })
}

fn outlier(p: &mut Problems<'_>, spec: &OutlierSpec) -> Option<Outlier> {
    let before = p.out.len();
    let consecutive_failures = count(
        p,
        "outlier.consecutive_failures",
        spec.consecutive_failures,
        DEFAULT_CONSECUTIVE_FAILURES,
        1,
        1000,
    );
    let base_ejection = positive_duration(
        p,
        "outlier.base_ejection",
        spec.base_ejection.as_deref(),
        DEFAULT_BASE_EJECTION,
    );
    let max_ejected_percent = count(
        p,
        "outlier.max_ejected_percent",
        spec.max_ejected_percent,
        DEFAULT_MAX_EJECTED_PERCENT,
        0,
        100,
    );
    (p.out.len() == before).then(|| Outlier {
        consecutive_failures,
        base_ejection: base_ejection.unwrap_or_default(),
        max_ejected_percent,
    })
}

fn limits(p: &mut Problems<'_>, spec: &LimitsSpec) -> Option<Limits> {
    let before = p.out.len();
    let max_connections = count(
        p,
        "limits.max_connections",
        spec.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        1,
        1_000_000,
    );
    let max_pending = count(
        p,
        "limits.max_pending",
        spec.max_pending,
        DEFAULT_MAX_PENDING,
        1,
        1_000_000,
    );
    (p.out.len() == before).then_some(Limits {
        max_connections,
        max_pending,
    })
}

/// Most retries a route may ask for.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

fn retry(p: &mut Problems<'_>, spec: &RetrySpec) -> Option<Retry> {
    let before = p.out.len();
    let attempts = count(
        p,
        "forward.retry.attempts",
        spec.attempts,
        DEFAULT_RETRY_ATTEMPTS,
        1,
        MAX_RETRY_ATTEMPTS,
    );
    let mut on = Vec::new();
    let items = spec.on.clone().unwrap_or_else(default_retry_on);
    if items.is_empty() {
        p.add("forward.retry.on", "is empty; list at least one condition");
    }
    for (i, item) in items.iter().enumerate() {
        let field = format!("forward.retry.on[{i}]");
        let cond = match item {
            CodeOrWord::Code(c) if (400..=599).contains(c) => Some(RetryOn::Status(*c)),
            CodeOrWord::Word(w) if w == RetryOn::CONNECT_FAILURE => Some(RetryOn::ConnectFailure),
            CodeOrWord::Word(w) if w == RetryOn::RESET => Some(RetryOn::Reset),
            CodeOrWord::Word(w) if w == RetryOn::PER_TRY_TIMEOUT => Some(RetryOn::PerTryTimeout),
            other => {
                p.add(
                    field.clone(),
                    format_args!(
                        "{other} is not a retry condition (expected connect-failure, reset, per-try-timeout or a status 400-599)"
                    ),
                );
                None
            }
        };
        if let Some(c) = cond {
            if on.contains(&c) {
                p.add(field, format_args!("{item} is listed twice"));
            } else {
                on.push(c);
            }
        }
    }
    let per_try_timeout = spec.per_try_timeout.as_deref().and_then(|t| {
        positive_duration(
            p,
            "forward.retry.per_try_timeout",
            Some(t),
            DEFAULT_RETRY_BACKOFF,
        )
    });
    if on.contains(&RetryOn::PerTryTimeout) && spec.per_try_timeout.is_none() {
        p.add(
            "forward.retry.on",
            "per-try-timeout needs forward.retry.per_try_timeout",
        );
    }
    let backoff = match duration::parse(spec.backoff.as_deref().unwrap_or(DEFAULT_RETRY_BACKOFF)) {
        Ok(d) if d <= std::time::Duration::from_secs(10) => Some(d),
        Ok(_) => {
            p.add("forward.retry.backoff", "must be at most 10s");
            None
        }
        Err(e) => {
            p.add("forward.retry.backoff", e);
            None
        }
    };
    (p.out.len() == before).then(|| Retry {
        attempts,
        on,
        per_try_timeout,
        backoff: backoff.unwrap_or_default(),
        non_idempotent: spec.non_idempotent.unwrap_or(false),
    })
}

/// The longest label key or value.
pub const MAX_LABEL_LEN: usize = 63;

/// A label as instances carry it (`labels: {region: eu-west-1}`): the key is 1-63 of
/// `A-Z a-z 0-9 . _ - /`, starting with a letter or digit; the value is 0-63 of
/// `A-Z a-z 0-9 . _ -` (what proxies' `--label` values are matched against).
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let key_ok = key.len() <= MAX_LABEL_LEN
        && key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !key_ok {
        return Err(format!(
            "key {key:?} must be 1-{MAX_LABEL_LEN} of A-Z a-z 0-9 . _ - /, starting with a letter or digit"
        ));
    }
    let value_ok = value.len() <= MAX_LABEL_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !value_ok {
        return Err(format!(
            "value {value:?} of {key:?} must be at most {MAX_LABEL_LEN} of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Weights above this gain nothing and would only make round-robin schedules long.
pub const MAX_WEIGHT: u32 = 10_000;

pub(crate) fn parse_address(s: &str) -> Result<http::uri::Authority, String> {
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

    let shadow = spec.shadow.as_ref().and_then(|sh| {
        let Some(name) = &sh.expect_header else {
            p.add(
                "shadow",
                "is set but empty; name expect_header (the response header holding the upstream's path)",
            );
            return None;
        };
        if spec.forward.is_none() {
            p.add(
                "shadow.expect_header",
                "applies to forward routes; a shadow redirect is compared with the upstream's redirect",
            );
            return None;
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if h.as_str() == name.to_ascii_lowercase() => Some(h),
            _ => {
                p.add(
                    "shadow.expect_header",
                    format_args!("{name:?} is not a header name"),
                );
                None
            }
        }
    });

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
        mode: spec.mode.unwrap_or_default(),
        shadow,
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
    let retry = spec.retry.as_ref().and_then(|r| retry(p, r));
    let mirror = spec
        .mirror
        .as_ref()
        .and_then(|m| mirror(p, m))
        .map(Box::new);
    (p.out.len() == before).then_some(Forward {
        backends,
        rewrite,
        host_rewrite,
        timeout,
        single_service,
        retry,
        mirror,
    })
}

fn mirror(p: &mut Problems<'_>, spec: &MirrorSpec) -> Option<crate::mirror::Mirror> {
    use crate::mirror::{
        Compare, DEFAULT_MAX_BODY, DEFAULT_PERCENT, DEFAULT_TIMEOUT, JsonPath, Mirror, parse_size,
    };
    let before = p.out.len();
    let service = name(p, "forward.mirror.service", &spec.service);
    let percent = match spec.percent {
        None => DEFAULT_PERCENT,
        Some(n @ 1..=100) => n as u8,
        Some(n) => {
            p.add(
                "forward.mirror.percent",
                format_args!("{n} must be 1 to 100"),
            );
            DEFAULT_PERCENT
        }
    };
    let mut methods = Vec::new();
    match &spec.methods {
        None => methods.extend([Method::GET, Method::HEAD]),
        Some(list) if list.is_empty() => {
            p.add(
                "forward.mirror.methods",
                "is empty; omit it for GET and HEAD",
            );
        }
        Some(list) => {
            for (i, m) in list.iter().enumerate() {
                let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                match Method::from_bytes(m.as_bytes()) {
                    Ok(method) if ok && !methods.contains(&method) => methods.push(method),
                    Ok(_) if ok => p.add(
                        format!("forward.mirror.methods[{i}]"),
                        format_args!("{m} is listed twice"),
                    ),
                    _ => p.add(
                        format!("forward.mirror.methods[{i}]"),
                        format_args!("{m:?} is not an HTTP method (expected e.g. GET, POST)"),
                    ),
                }
            }
        }
    }
    let timeout = match spec.timeout.as_deref().map(duration::parse) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            p.add("forward.mirror.timeout", "must be greater than 0");
            DEFAULT_TIMEOUT
        }
        Some(Err(e)) => {
            p.add("forward.mirror.timeout", e);
            DEFAULT_TIMEOUT
        }
    };
    let max_body = match spec.max_body.as_deref().map(parse_size) {
        None => DEFAULT_MAX_BODY,
        Some(Ok(n)) if n > 0 && n <= 64 * 1024 * 1024 => n,
        Some(Ok(_)) => {
            p.add("forward.mirror.max_body", "must be 1 byte to 64MiB");
            DEFAULT_MAX_BODY
        }
        Some(Err(e)) => {
            p.add("forward.mirror.max_body", e);
            DEFAULT_MAX_BODY
        }
    };
    let compare = spec.compare.as_ref().map(|c| {
        let baseline = c
            .baseline
            .as_deref()
            .and_then(|b| name(p, "forward.mirror.compare.baseline", b));
        let mut headers = Vec::new();
        for (i, h) in c.headers.iter().flatten().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if n.as_str() == h.to_ascii_lowercase() && !headers.contains(&n) => {
                    headers.push(n)
                }
                Ok(_) if !h.is_empty() && HeaderName::from_bytes(h.as_bytes()).is_ok() => p.add(
                    format!("forward.mirror.compare.headers[{i}]"),
                    format_args!("{h} is listed twice"),
                ),
                _ => p.add(
                    format!("forward.mirror.compare.headers[{i}]"),
                    format_args!("{h:?} is not a header name"),
                ),
            }
        }
        let mut ignore = Vec::new();
        for (i, path) in c.ignore.iter().flatten().enumerate() {
            match JsonPath::parse(path) {
                Ok(j) => ignore.push(j),
                Err(e) => p.add(format!("forward.mirror.compare.ignore[{i}]"), e),
            }
        }
        Compare {
            baseline,
            status: c.status.unwrap_or(true),
            headers,
            body: c.body.unwrap_or_default(),
            ignore,
        }
    });
    if p.out.len() > before {
        return None;
    }
    Some(Mirror {
        service: service?,
        percent,
        compare,
        methods,
        timeout,
        max_body,
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
