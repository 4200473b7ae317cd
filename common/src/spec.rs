//! The declarative format teams write: the route file of `routemaster-proxy --config`
//! and of `routemaster apply -f`. Plain serde types, unvalidated; unknown fields are
//! rejected at parse time. [`crate::Config::try_from`] turns a [`ConfigSpec`] into the
//! validated model, and [`ConfigSpec::from`] turns the model back (for `get -o yaml`,
//! the status API and round trips).

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::model::{
    Action, Config, HeaderValueMatch, LoadBalancing, PathMatch, RedirectPath, Route, Service,
};

/// A whole route file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
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
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectSpec>,
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

impl ConfigSpec {
    /// Parses YAML (JSON is YAML too). Unknown fields and wrong types are errors that
    /// carry the line and column.
    pub fn from_yaml(text: &str) -> Result<Self, ParseError> {
        // The parser's default budget (250k nodes) is sized for small config files; a
        // route file of 100k routes has ~2M nodes. Route files come from operators, not
        // from clients, so the budget only needs to stop runaway documents.
        let mut budget = serde_saphyr::Budget::default();
        budget.max_nodes = 50_000_000;
        budget.max_events = 100_000_000;
        let mut options = serde_saphyr::Options::default();
        options.budget = Some(budget);
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ParseError(e.to_string()))
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
                let fwd = ForwardSpec {
                    service,
                    backends,
                    rewrite_prefix: f.rewrite_prefix.as_deref().map(str::to_owned),
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
            priority: (r.priority != 0).then_some(r.priority),
            group: (r.group.as_str() != "default").then(|| r.group.to_string()),
            forward,
            redirect,
        }
    }
}

impl From<&Config> for ConfigSpec {
    fn from(c: &Config) -> Self {
        ConfigSpec {
            services: c.services.iter().map(ServiceSpec::from).collect(),
            routes: c.routes.iter().map(RouteSpec::from).collect(),
        }
    }
}
