//! The route map: host → path → route → service → instances, and which proxies serve
//! each route. One pure builder ([`RouteMap::build`]) from the configuration (route
//! file objects with defaults written out) and the node list, used by the status API's
//! `GET /v1/map` (and so the dashboard) and by `routemaster map`, which builds it from
//! the same data read over the admin API: the same input gives the same JSON. The
//! terminal tree ([`render_tree`]) is pure too.
//!
//! A route with several hosts appears under each; a route without hosts under `*` (any
//! host). Proxies serve a route when their `--group` is the route's group; nodes that
//! left are not listed, lost ones are (with their state). The map holds no timestamps,
//! so two reads of an unchanged system are equal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use routemaster_common::spec::{ConfigSpec, PathSpec, RouteSpec, ServiceSpec};
use serde::Serialize;

use crate::nodes::{Node, NodeState};

/// What `GET /v1/map` and `routemaster map -o json` return.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteMap {
    /// The configuration version the map (and the nodes' states) are against.
    pub version: u64,
    /// Sorted by host name, `*` (routes for any host) last.
    pub hosts: Vec<HostEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEntry {
    /// A host name, a `*.suffix` wildcard, or `*` for routes without hosts.
    pub host: String,
    /// By the highest priority among their routes, then as the proxy ranks paths:
    /// exact, prefixes (longer first), regexes.
    pub paths: Vec<PathEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathEntry {
    /// `prefix`, `exact` or `regex`.
    pub kind: &'static str,
    pub path: String,
    pub routes: Vec<RouteEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteEntry {
    pub id: String,
    pub group: String,
    pub priority: i32,
    /// Empty: any method.
    pub methods: Vec<String>,
    /// Header and query conditions, one line each (`header x-env = canary`).
    pub conditions: Vec<String>,
    /// `forward` or `redirect`.
    pub action: &'static str,
    /// Where a redirect route sends clients (`https://{host}…`), if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// The services a forward route splits traffic over (one, or weighted backends).
    pub services: Vec<ServiceEntry>,
    /// The proxies of the route's group.
    pub proxies: Vec<ProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntry {
    pub name: String,
    /// Share of the route's traffic, in percent (100 for a single service).
    pub share_percent: f64,
    pub protocol: String,
    pub instances: Vec<InstanceEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceEntry {
    pub address: String,
    pub weight: u32,
    /// `static` (the route file's `instances`) or `registered` (service discovery).
    pub source: &'static str,
    /// A registered instance's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl InstanceEntry {
    /// A registered instance (`source: registered`).
    pub fn registered(id: &str, address: &str, weight: u32) -> Self {
        InstanceEntry {
            address: address.to_owned(),
            weight,
            source: "registered",
            id: Some(id.to_owned()),
        }
    }
}

/// Registered instances by service (each list in id order), as the catalog holds them
/// (`Catalog::registered`) or the admin CLI lists them (`Registry.ListInstances`).
pub type Registered = BTreeMap<String, Vec<InstanceEntry>>;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyEntry {
    pub id: String,
    /// `connected | behind | nacked | lost`.
    pub state: NodeState,
    pub applied_version: u64,
}

/// The registered instances in `catalog`, by service.
pub fn registered_in(catalog: &crate::catalog::Catalog) -> Registered {
    let Some(config) = catalog.config.as_ref() else {
        return Registered::new();
    };
    config
        .services()
        .iter()
        .filter_map(|s| {
            let regs = catalog.registered(s.name().as_str());
            (!regs.is_empty()).then(|| {
                let entries = regs
                    .iter()
                    .map(|(r, _)| {
                        let i = r.instance();
                        InstanceEntry::registered(r.id(), i.address().as_ref(), i.weight())
                    })
                    .collect();
                (s.name().as_str().to_owned(), entries)
            })
        })
        .collect()
}

/// The host key of routes without `hosts`.
pub const ANY_HOST: &str = "*";

impl RouteMap {
    /// `config` as `/v1/routes` + `/v1/services` show it (defaults written out; missing
    /// defaults are filled in here too); `nodes` as `/v1/nodes`.
    pub fn build(version: u64, config: &ConfigSpec, nodes: &[Node]) -> Self {
        let services: BTreeMap<&str, &ServiceSpec> = config
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut by_host: BTreeMap<String, BTreeMap<(String, &'static str), Vec<RouteEntry>>> =
            BTreeMap::new();
        for route in &config.routes {
            let route = route.clone().with_defaults();
            let entry = route_entry(&route, &services, nodes, version);
            let (kind, path) = path_of(route.path.as_ref());
            // Host names are case-insensitive: `A.example.com` and `a.example.com` are
            // one entry.
            let hosts: BTreeSet<String> = match &route.hosts {
                Some(h) if !h.is_empty() => h.iter().map(|h| h.to_ascii_lowercase()).collect(),
                _ => BTreeSet::from([ANY_HOST.to_owned()]),
            };
            for host in hosts {
                by_host
                    .entry(host)
                    .or_default()
                    .entry((path.clone(), kind))
                    .or_default()
                    .push(entry.clone());
            }
        }
        let mut hosts: Vec<HostEntry> = by_host
            .into_iter()
            .map(|(host, paths)| {
                let mut paths: Vec<PathEntry> = paths
                    .into_iter()
                    .map(|((path, kind), mut routes)| {
                        // The proxy's rank among routes of one path: priority, a method
                        // condition, more conditions, then the id.
                        routes.sort_by(|a, b| {
                            b.priority
                                .cmp(&a.priority)
                                .then(a.methods.is_empty().cmp(&b.methods.is_empty()))
                                .then(b.conditions.len().cmp(&a.conditions.len()))
                                .then(a.id.cmp(&b.id))
                        });
                        PathEntry { kind, path, routes }
                    })
                    .collect();
                paths.sort_by(|a, b| {
                    let top = |p: &PathEntry| p.routes.first().map_or(0, |r| r.priority);
                    top(b)
                        .cmp(&top(a))
                        .then(kind_rank(a.kind).cmp(&kind_rank(b.kind)))
                        .then(b.path.len().cmp(&a.path.len()))
                        .then(a.path.cmp(&b.path))
                });
                HostEntry { host, paths }
            })
            .collect();
        // `*` sorts before letters; it is the fallback, so it goes last.
        hosts.sort_by_key(|h| (h.host == ANY_HOST, h.host.clone()));
        RouteMap { version, hosts }
    }

    /// Adds each service's registered instances after its static ones.
    pub fn with_registered(mut self, registered: &Registered) -> Self {
        if registered.is_empty() {
            return self;
        }
        let services = self
            .hosts
            .iter_mut()
            .flat_map(|h| h.paths.iter_mut())
            .flat_map(|p| p.routes.iter_mut())
            .flat_map(|r| r.services.iter_mut());
        for service in services {
            if let Some(more) = registered.get(&service.name) {
                service.instances.extend(more.iter().cloned());
            }
        }
        self
    }

    /// The map as a request for `host` sees it: that host's entries, the wildcards that
    /// match it, and the routes for any host. `host` is read as the proxy reads a Host
    /// header (a port and a trailing dot dropped, case ignored).
    pub fn for_host(mut self, host: &str) -> Self {
        let host = routemaster_common::host::normalize_host(host);
        self.hosts.retain(|h| host_matches(&h.host, &host));
        self
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == ANY_HOST || pattern == host {
        return true;
    }
    pattern.strip_prefix("*.").is_some_and(|suffix| {
        host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
    })
}

/// The proxy's order within a host (common::table): exact, then prefixes (longer
/// first), then regexes.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        "exact" => 0,
        "prefix" => 1,
        _ => 2,
    }
}

fn path_of(path: Option<&PathSpec>) -> (&'static str, String) {
    match path {
        Some(PathSpec { exact: Some(p), .. }) => ("exact", p.clone()),
        Some(PathSpec { regex: Some(p), .. }) => ("regex", p.clone()),
        Some(PathSpec {
            prefix: Some(p), ..
        }) => ("prefix", p.clone()),
        _ => ("prefix", "/".to_owned()),
    }
}

fn route_entry(
    route: &RouteSpec,
    services: &BTreeMap<&str, &ServiceSpec>,
    nodes: &[Node],
    version: u64,
) -> RouteEntry {
    let group = route.group.clone().unwrap_or_default();
    let mut conditions = Vec::new();
    for h in route.headers.iter().flatten() {
        conditions.push(condition("header", &h.name, &h.exact, &h.regex, h.present));
    }
    for q in route.query.iter().flatten() {
        conditions.push(condition("query", &q.name, &q.exact, &q.regex, q.present));
    }
    let (action, redirect, backends) = match (&route.forward, &route.redirect) {
        (Some(f), _) => {
            let backends: Vec<(String, u32)> = match (&f.service, &f.backends) {
                (Some(s), _) => vec![(s.clone(), 1)],
                (None, Some(b)) => b
                    .iter()
                    .map(|b| (b.service.clone(), b.weight.unwrap_or(1)))
                    .collect(),
                (None, None) => Vec::new(),
            };
            ("forward", None, backends)
        }
        (None, Some(r)) => {
            let mut to = String::new();
            let _ = write!(
                to,
                "{}://{}",
                r.scheme.as_deref().unwrap_or("{scheme}"),
                r.host.as_deref().unwrap_or("{host}")
            );
            if let Some(port) = r.port {
                let _ = write!(to, ":{port}");
            }
            match (&r.path, &r.prefix) {
                (Some(p), _) => to.push_str(p),
                (None, Some(p)) => {
                    let _ = write!(to, "{p}…");
                }
                (None, None) => to.push_str("{path}"),
            }
            if let Some(code) = r.code {
                let _ = write!(to, " ({code})");
            }
            ("redirect", Some(to), Vec::new())
        }
        (None, None) => ("forward", None, Vec::new()),
    };
    let total: u64 = backends.iter().map(|(_, w)| u64::from(*w)).sum();
    let services = backends
        .into_iter()
        .map(|(name, weight)| {
            let spec = services.get(name.as_str());
            ServiceEntry {
                share_percent: if total == 0 {
                    0.0
                } else {
                    (f64::from(weight) * 1000.0 / total as f64).round() / 10.0
                },
                protocol: spec
                    .and_then(|s| s.protocol)
                    .map_or("http1", |p| p.as_str())
                    .to_owned(),
                instances: spec
                    .map(|s| {
                        s.instances
                            .iter()
                            .map(|i| InstanceEntry {
                                address: i.address.clone(),
                                weight: i.weight.unwrap_or(1),
                                source: "static",
                                id: None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                name,
            }
        })
        .collect();
    let proxies = nodes
        .iter()
        .filter(|n| n.record.group == group)
        .map(|n| (n, n.state(version)))
        .filter(|(_, state)| *state != NodeState::Left)
        .map(|(n, state)| ProxyEntry {
            id: n.record.id.clone(),
            state,
            applied_version: n.record.applied_version,
        })
        .collect();
    RouteEntry {
        id: route.id.clone(),
        group,
        priority: route.priority.unwrap_or(0),
        methods: route.methods.clone().unwrap_or_default(),
        conditions,
        action,
        redirect,
        services,
        proxies,
    }
}

fn condition(
    what: &str,
    name: &str,
    exact: &Option<String>,
    regex: &Option<String>,
    present: Option<bool>,
) -> String {
    match (exact, regex, present) {
        (Some(v), _, _) => format!("{what} {name} = {v}"),
        (None, Some(r), _) => format!("{what} {name} ~ {r}"),
        (None, None, Some(false)) => format!("{what} {name} absent"),
        _ => format!("{what} {name} present"),
    }
}

/// The map as a tree for the terminal:
///
/// ```text
/// example.com
/// └── /api (prefix)
///     └── route api  [group default]
///         ├── service api-svc  100%
///         │   └── 127.0.0.1:8080
///         └── proxies: p1 (connected v42)
/// ```
pub fn render_tree(map: &RouteMap) -> String {
    let mut out = format!("version {}\n", map.version);
    if map.hosts.is_empty() {
        out.push_str("(no routes)\n");
        return out;
    }
    for host in &map.hosts {
        let label = if host.host == ANY_HOST {
            "* (any host)"
        } else {
            host.host.as_str()
        };
        let _ = writeln!(out, "{label}");
        for (i, path) in host.paths.iter().enumerate() {
            let last_path = i + 1 == host.paths.len();
            line(
                &mut out,
                &[last_path],
                &format!("{} ({})", path.path, path.kind),
            );
            for (j, route) in path.routes.iter().enumerate() {
                let last_route = j + 1 == path.routes.len();
                let mut head = format!("route {}  [group {}", route.id, route.group);
                if route.priority != 0 {
                    let _ = write!(head, ", priority {}", route.priority);
                }
                head.push(']');
                if !route.methods.is_empty() {
                    let _ = write!(head, " {}", route.methods.join(" "));
                }
                for c in &route.conditions {
                    let _ = write!(head, " if {c}");
                }
                line(&mut out, &[last_path, last_route], &head);
                let mut children: Vec<(String, Vec<String>)> = Vec::new();
                if let Some(to) = &route.redirect {
                    children.push((format!("redirect → {to}"), Vec::new()));
                }
                for s in &route.services {
                    let mut head = format!("service {}  {}%", s.name, s.share_percent);
                    if s.protocol != "http1" {
                        let _ = write!(head, " ({})", s.protocol);
                    }
                    let instances = if s.instances.is_empty() {
                        vec!["(no instances)".to_owned()]
                    } else {
                        s.instances
                            .iter()
                            .map(|i| {
                                let mut leaf = i.address.clone();
                                if i.weight != 1 {
                                    let _ = write!(leaf, "  weight {}", i.weight);
                                }
                                if let Some(id) = &i.id {
                                    let _ = write!(leaf, "  (registered: {id})");
                                }
                                leaf
                            })
                            .collect()
                    };
                    children.push((head, instances));
                }
                let proxies = if route.proxies.is_empty() {
                    "proxies: none in this group".to_owned()
                } else {
                    let list: Vec<String> = route
                        .proxies
                        .iter()
                        .map(|p| format!("{} ({} v{})", p.id, p.state.as_str(), p.applied_version))
                        .collect();
                    format!("proxies: {}", list.join(", "))
                };
                children.push((proxies, Vec::new()));
                for (k, (head, leaves)) in children.iter().enumerate() {
                    let last_child = k + 1 == children.len();
                    line(&mut out, &[last_path, last_route, last_child], head);
                    for (l, leaf) in leaves.iter().enumerate() {
                        let last_leaf = l + 1 == leaves.len();
                        line(
                            &mut out,
                            &[last_path, last_route, last_child, last_leaf],
                            leaf,
                        );
                    }
                }
            }
        }
    }
    out
}

/// One tree line: a column per level, `last[i]` whether the node at level i is the last
/// of its siblings.
fn line(out: &mut String, last: &[bool], text: &str) {
    let Some((&me, above)) = last.split_last() else {
        return;
    };
    for &l in above {
        out.push_str(if l { "    " } else { "│   " });
    }
    out.push_str(if me { "└── " } else { "├── " });
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::NodeRecord;

    fn node(id: &str, group: &str, applied: u64, liveness: NodeState) -> Node {
        Node {
            record: NodeRecord {
                id: id.into(),
                group: group.into(),
                applied_version: applied,
                ..NodeRecord::default()
            },
            liveness,
        }
    }

    fn config() -> ConfigSpec {
        ConfigSpec::from_yaml(
            r#"
services:
  - { name: api, instances: [{ address: "10.0.0.1:80" }, { address: "10.0.0.2:80", weight: 3 }] }
  - { name: api-v2, protocol: h2c, instances: [{ address: "10.0.0.3:80" }] }
  - { name: web, instances: [] }
routes:
  - id: api
    hosts: [example.com, Api.Example.com]
    path: { prefix: /api }
    methods: [GET]
    headers: [{ name: x-env, exact: canary }]
    forward: { backends: [{ service: api, weight: 3 }, { service: api-v2, weight: 1 }] }
  - { id: api-exact, hosts: [example.com], path: { exact: /api/health }, forward: { service: api } }
  - { id: api-any, hosts: [example.com], path: { prefix: /api }, forward: { service: api-v2 } }
  - { id: versions, hosts: [example.com], path: { regex: "^/v[0-9]+/" }, forward: { service: api-v2 } }
  - { id: web, group: edge, forward: { service: web } }
  - { id: old, hosts: ["*.example.com"], path: { prefix: /old }, redirect: { scheme: https, prefix: /new, code: 301 } }
"#,
        )
        .unwrap()
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("p1", "default", 7, NodeState::Connected),
            node("p2", "default", 6, NodeState::Connected),
            node("e1", "edge", 7, NodeState::Lost),
            node("gone", "edge", 7, NodeState::Left),
        ]
    }

    #[test]
    fn the_map_goes_host_path_route_service_instance_proxy() {
        let map = RouteMap::build(7, &config(), &nodes());
        let hosts: Vec<&str> = map.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(
            hosts,
            ["*.example.com", "api.example.com", "example.com", "*"]
        );
        let example = &map.hosts[2];
        // The exact path is tried before the prefix.
        let paths: Vec<(&str, &str)> = example
            .paths
            .iter()
            .map(|p| (p.kind, p.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("exact", "/api/health"),
                ("prefix", "/api"),
                ("regex", "^/v[0-9]+/")
            ]
        );
        // On one path, a route with a method condition before one without.
        let ids: Vec<&str> = example.paths[1]
            .routes
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["api", "api-any"]);
        let api = &example.paths[1].routes[0];
        assert_eq!(api.id, "api");
        assert_eq!(api.methods, ["GET"]);
        assert_eq!(api.conditions, ["header x-env = canary"]);
        let shares: Vec<(&str, f64, &str)> = api
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.share_percent, s.protocol.as_str()))
            .collect();
        assert_eq!(shares, [("api", 75.0, "http1"), ("api-v2", 25.0, "h2c")]);
        assert_eq!(
            api.services[0].instances,
            [
                InstanceEntry {
                    address: "10.0.0.1:80".into(),
                    weight: 1,
                    source: "static",
                    id: None,
                },
                InstanceEntry {
                    address: "10.0.0.2:80".into(),
                    weight: 3,
                    source: "static",
                    id: None,
                }
            ]
        );
        let proxies: Vec<(&str, NodeState)> = api
            .proxies
            .iter()
            .map(|p| (p.id.as_str(), p.state))
            .collect();
        assert_eq!(
            proxies,
            [("p1", NodeState::Connected), ("p2", NodeState::Behind)]
        );
        // The edge route: any host, its lost proxy listed, the one that left not.
        let web = &map.hosts[3].paths[0].routes[0];
        assert_eq!((web.id.as_str(), web.group.as_str()), ("web", "edge"));
        assert_eq!(web.proxies.len(), 1);
        assert_eq!(web.proxies[0].state, NodeState::Lost);
        let old = &map.hosts[0].paths[0].routes[0];
        assert_eq!(
            (old.action, old.redirect.as_deref()),
            ("redirect", Some("https://{host}/new… (301)"))
        );
    }

    use proptest::prelude::*;

    /// A route: hosts (from a small set, mixed case, wildcards), a path kind, a group,
    /// one service or two weighted backends.
    fn route_yaml() -> impl Strategy<Value = (Vec<String>, u8, String, Vec<(String, u32)>)> {
        let host = prop::sample::select(vec![
            "a.example.com",
            "A.Example.com",
            "b.example.com",
            "*.example.com",
            "other.org",
        ])
        .prop_map(str::to_owned);
        let hosts = prop::collection::vec(host, 0..3);
        let group = prop::sample::select(vec!["default", "edge"]).prop_map(str::to_owned);
        let backend = (
            prop::sample::select(vec!["s0", "s1", "s2"]).prop_map(str::to_owned),
            1u32..5,
        );
        let backends = prop::collection::vec(backend, 1..3);
        (hosts, 0u8..3, group, backends)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_route_appears_once_under_each_of_its_hosts(
            routes in prop::collection::vec(route_yaml(), 0..8),
            host in prop::sample::select(vec!["a.example.com", "x.b.example.com", "other.org", "none"]),
        ) {
            let mut yaml = String::from("services:\n");
            for s in ["s0", "s1", "s2"] {
                yaml.push_str(&format!("  - {{ name: {s}, instances: [{{ address: \"10.0.0.1:80\" }}] }}\n"));
            }
            yaml.push_str(if routes.is_empty() { "routes: []\n" } else { "routes:\n" });
            let mut want = BTreeMap::new();
            for (i, (hosts, kind, group, backends)) in routes.iter().enumerate() {
                let path = ["prefix: /p", "exact: /e", "regex: \"^/r\""][usize::from(*kind)];
                let backends: Vec<String> = backends
                    .iter()
                    .map(|(s, w)| format!("{{ service: {s}, weight: {w} }}"))
                    .collect();
                yaml.push_str(&format!(
                    "  - {{ id: r{i}, hosts: [{}], path: {{ {path} }}, group: {group}, forward: {{ backends: [{}] }} }}\n",
                    hosts.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", "),
                    backends.join(", ")
                ));
                let mut keys: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
                keys.sort();
                keys.dedup();
                if keys.is_empty() {
                    keys.push(ANY_HOST.to_owned());
                }
                want.insert(format!("r{i}"), keys);
            }
            let config = ConfigSpec::from_yaml(&yaml).unwrap();
            let map = RouteMap::build(7, &config, &nodes());
            let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for h in &map.hosts {
                for p in &h.paths {
                    for r in &p.routes {
                        got.entry(r.id.clone()).or_default().push(h.host.clone());
                        let share: f64 = r.services.iter().map(|s| s.share_percent).sum();
                        prop_assert!((share - 100.0).abs() < 0.2, "{} shares {share}", r.id);
                        let group_nodes = nodes()
                            .iter()
                            .filter(|n| n.record.group == r.group && n.liveness != NodeState::Left)
                            .count();
                        prop_assert_eq!(r.proxies.len(), group_nodes);
                    }
                }
            }
            for hosts in got.values_mut() {
                hosts.sort();
            }
            prop_assert_eq!(&got, &want);
            // The tree has a line per host, path, route, service, instance and proxy list.
            let tree = render_tree(&map);
            let lines: usize = map.hosts.iter().map(|h| {
                1 + h.paths.iter().map(|p| {
                    1 + p.routes.iter().map(|r| 2 + r.services.iter().map(|s| 1 + s.instances.len()).sum::<usize>()).sum::<usize>()
                }).sum::<usize>()
            }).sum();
            prop_assert_eq!(tree.lines().count(), 1 + lines.max(1));
            // A host filter keeps only entries that can match the host, and `*`.
            let filtered = map.clone().for_host(host);
            for h in &filtered.hosts {
                prop_assert!(host_matches(&h.host, host), "{} kept for {host}", h.host);
            }
            prop_assert!(map.hosts.iter().filter(|h| host_matches(&h.host, host)).count() == filtered.hosts.len());
        }
    }

    #[test]
    fn registered_instances_follow_the_static_ones() {
        let registered = Registered::from([
            (
                "web".to_owned(),
                vec![InstanceEntry::registered("w-1", "10.0.1.1:80", 2)],
            ),
            (
                "ghost".to_owned(),
                vec![InstanceEntry::registered("g", "10.9.9.9:1", 1)],
            ),
        ]);
        let map = RouteMap::build(7, &config(), &nodes())
            .with_registered(&registered)
            .for_host("nowhere.test");
        let web = &map.hosts[0].paths[0].routes[0].services[0];
        assert_eq!(web.instances, registered["web"]);
        assert!(render_tree(&map).contains("│   └── 10.0.1.1:80  weight 2  (registered: w-1)\n"));
        let json = serde_json::to_value(&map).unwrap();
        assert_eq!(
            json["hosts"][0]["paths"][0]["routes"][0]["services"][0]["instances"][0],
            serde_json::json!({"address": "10.0.1.1:80", "weight": 2, "source": "registered", "id": "w-1"})
        );
    }

    #[test]
    fn host_filter_keeps_the_host_its_wildcards_and_any_host() {
        let cases = [
            ("example.com", vec!["example.com", "*"]),
            (
                "API.example.com",
                vec!["*.example.com", "api.example.com", "*"],
            ),
            ("other.org", vec!["*"]),
            ("Example.COM.:8080", vec!["example.com", "*"]),
        ];
        for (host, want) in cases {
            let map = RouteMap::build(7, &config(), &nodes()).for_host(host);
            let got: Vec<&str> = map.hosts.iter().map(|h| h.host.as_str()).collect();
            assert_eq!(got, want, "{host}");
        }
    }

    #[test]
    fn the_tree() {
        let map = RouteMap::build(7, &config(), &nodes()).for_host("example.com");
        let want = "\
version 7
example.com
├── /api/health (exact)
│   └── route api-exact  [group default]
│       ├── service api  100%
│       │   ├── 10.0.0.1:80
│       │   └── 10.0.0.2:80  weight 3
│       └── proxies: p1 (connected v7), p2 (behind v6)
├── /api (prefix)
│   ├── route api  [group default] GET if header x-env = canary
│   │   ├── service api  75%
│   │   │   ├── 10.0.0.1:80
│   │   │   └── 10.0.0.2:80  weight 3
│   │   ├── service api-v2  25% (h2c)
│   │   │   └── 10.0.0.3:80
│   │   └── proxies: p1 (connected v7), p2 (behind v6)
│   └── route api-any  [group default]
│       ├── service api-v2  100% (h2c)
│       │   └── 10.0.0.3:80
│       └── proxies: p1 (connected v7), p2 (behind v6)
└── ^/v[0-9]+/ (regex)
    └── route versions  [group default]
        ├── service api-v2  100% (h2c)
        │   └── 10.0.0.3:80
        └── proxies: p1 (connected v7), p2 (behind v6)
* (any host)
└── / (prefix)
    └── route web  [group edge]
        ├── service web  100%
        │   └── (no instances)
        └── proxies: e1 (lost v7)
";
        assert_eq!(render_tree(&map), want);
        let empty = RouteMap::build(1, &ConfigSpec::default(), &[]);
        assert_eq!(render_tree(&empty), "version 1\n(no routes)\n");
    }
}
