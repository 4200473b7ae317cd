//! Pure rendering for the CLI: tables, JSON/YAML documents, and the one-line summaries
//! of apply, delete and status. Nothing here does I/O or reads the clock; callers pass
//! the terminal width and the current time so every function is unit-testable.

use comfy_table::{ContentArrangement, Table, presets};
use routemaster_common::model::LoadBalancing;
use routemaster_common::spec::{ForwardSpec, PathSpec, RedirectSpec, RouteSpec, ServiceSpec};
use routemaster_proto::v1;
use serde::Serialize;

use crate::nodes::{Convergence, Node, NodeState, NodeView, convergence, rfc3339};
use crate::status_api::{EtcdView, StatusView};

/// Shown in a cell that has nothing to show, so columns never look shifted.
const NONE: &str = "-";

// ---- generic documents ----

/// Pretty JSON followed by a newline.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| e.to_string())
}

/// YAML in the route file's style.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// `get routes -o yaml|json` (one route too): a route file, defaults written out, that
/// `apply -f` accepts as it is.
#[derive(Debug, Serialize)]
pub struct RoutesDoc<'a> {
    pub routes: &'a [RouteSpec],
}

/// `get services -o yaml|json`, shaped like a route file.
#[derive(Debug, Serialize)]
pub struct ServicesDoc<'a> {
    pub services: &'a [ServiceSpec],
}

/// `get certificates -o yaml|json`, shaped like a route file's `tls:` section (keys
/// read `<redacted>`: the control plane never lists them; applying this keeps them).
#[derive(Debug, Serialize)]
pub struct CertificatesDoc<'a> {
    pub tls: CertificatesList<'a>,
}

#[derive(Debug, Serialize)]
pub struct CertificatesList<'a> {
    pub certificates: &'a [routemaster_common::spec::CertificateSpec],
}

/// `get certificates`: name, hosts, default, the leaf's not-after (inline PEM; `-` for
/// `cert_file`, which only the proxy reads) and where the PEM comes from.
pub fn certificates_table(
    certs: &[routemaster_common::spec::CertificateSpec],
    width: Option<u16>,
) -> String {
    if certs.is_empty() {
        return "no certificates\n".into();
    }
    let rows = certs
        .iter()
        .map(|c| {
            let not_after = c
                .cert_pem
                .as_deref()
                .and_then(routemaster_common::tls::not_after)
                .map_or_else(
                    || "-".to_owned(),
                    |t| {
                        routemaster_common::time::rfc3339(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
                        )
                    },
                );
            let source = match (&c.cert_file, &c.key_file) {
                (None, None) => "inline".to_owned(),
                (Some(f), _) | (None, Some(f)) => format!("file {f}"),
            };
            vec![
                c.name.clone(),
                c.hosts.join(", "),
                if c.default == Some(true) { "yes" } else { "no" }.to_owned(),
                not_after,
                source,
            ]
        })
        .collect();
    table(
        &["NAME", "HOSTS", "DEFAULT", "NOT AFTER", "SOURCE"],
        rows,
        width,
    )
}

/// `get -o name`: `kind/name`, one per line (for `xargs`, like kubectl).
pub fn names(kind: &str, names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    names
        .into_iter()
        .map(|n| format!("{kind}/{}\n", n.as_ref()))
        .collect()
}

/// Nodes in JSON/YAML (`get nodes -o yaml|json`) use the status API's envelope and shape
/// (`GET /v1/nodes`), so dashboards and scripts see one format.
pub use crate::nodes::NodesView as NodesDoc;

// ---- tables ----

/// A borderless, left-aligned table (like `kubectl get`), easy to read and to `grep`/
/// `awk`. With a `width` (a terminal) long cells wrap to fit; without one (a pipe, a
/// test) rows are never wrapped.
pub fn table(header: &[&str], rows: Vec<Vec<String>>, width: Option<u16>) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    match width {
        Some(w) => {
            t.set_width(w);
            t.set_content_arrangement(ContentArrangement::Dynamic);
        }
        None => {
            // Without this comfy-table would query the terminal itself, and tests
            // would render differently in a terminal than in CI.
            t.force_no_tty();
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t.set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 3));
    }
    let mut s = t.trim_fmt();
    s.push('\n');
    s
}

/// `get routes` (`wide`: also headers, rewrites and timeout).
pub fn routes_table(routes: &[RouteSpec], width: Option<u16>, wide: bool) -> String {
    if routes.is_empty() {
        return "no routes\n".into();
    }
    let rows = routes
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.clone(),
                r.group.clone().unwrap_or_else(|| "default".into()),
                join_or(r.hosts.as_deref(), ", ", "*"),
                path_summary(r.path.as_ref()),
                join_or(r.methods.as_deref(), ",", "*"),
                action_summary(r),
                r.priority.unwrap_or(0).to_string(),
            ];
            if wide {
                let f = r.forward.as_ref();
                row.extend([
                    headers_summary(r),
                    or_none(f.and_then(|f| {
                        f.rewrite_prefix
                            .as_ref()
                            .map(|p| format!("prefix {p}"))
                            .or_else(|| f.rewrite_path.as_ref().map(|p| format!("path {p}")))
                    })),
                    or_none(f.and_then(|f| f.host_rewrite.clone())),
                    or_none(f.and_then(|f| f.timeout.clone())),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec![
        "ID", "GROUP", "HOSTS", "PATH", "METHODS", "ACTION", "PRIORITY",
    ];
    if wide {
        header.extend(["HEADERS", "REWRITE", "HOST REWRITE", "TIMEOUT"]);
    }
    table(&header, rows, width)
}

/// `get services` (`wide`: also the routes that use each one, from `routes`).
pub fn services_table(
    services: &[ServiceSpec],
    routes: &[RouteSpec],
    width: Option<u16>,
    wide: bool,
) -> String {
    if services.is_empty() {
        return "no services\n".into();
    }
    let rows = services
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                s.instances.len().to_string(),
                addresses_summary(s),
                lb_name(s.load_balancing.unwrap_or_default()).into(),
            ];
            if wide {
                let users: Vec<&str> = routes
                    .iter()
                    .filter(|r| uses(r, &s.name))
                    .map(|r| r.id.as_str())
                    .collect();
                row.push(if users.is_empty() {
                    NONE.into()
                } else {
                    users.join(",")
                });
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "INSTANCES", "ADDRESSES", "LB"];
    if wide {
        header.push("ROUTES");
    }
    table(&header, rows, width)
}

fn uses(route: &RouteSpec, service: &str) -> bool {
    route.forward.as_ref().is_some_and(|f| {
        f.service.as_deref() == Some(service)
            || f.backends.iter().flatten().any(|b| b.service == service)
    })
}

fn or_none(value: Option<String>) -> String {
    value.unwrap_or_else(|| NONE.into())
}

/// The HEADERS column: `x-env=beta`, `x-t~^a+$`, `x-p` (present).
fn headers_summary(r: &RouteSpec) -> String {
    let parts: Vec<String> = r
        .headers
        .iter()
        .flatten()
        .map(|h| match (&h.exact, &h.regex) {
            (Some(v), _) => format!("{}={v}", h.name),
            (_, Some(p)) => format!("{}~{p}", h.name),
            _ => h.name.clone(),
        })
        .collect();
    if parts.is_empty() {
        NONE.into()
    } else {
        parts.join(",")
    }
}

/// `get nodes`: STATE is the node's state against `version` (connected, behind, nacked,
/// lost, left); LAST SEEN is relative to `now_ms`. `wide` adds the replica it talks to,
/// its version, uptime, traffic and last NACK.
pub fn nodes_table(
    nodes: &[Node],
    version: u64,
    now_ms: u64,
    width: Option<u16>,
    wide: bool,
) -> String {
    if nodes.is_empty() {
        return "no nodes\n".into();
    }
    let rows = nodes
        .iter()
        .map(|n| {
            let r = &n.record;
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![
                r.id.clone(),
                r.group.clone(),
                r.applied_version.to_string(),
                n.state(version).as_str().to_owned(),
                ago(now_ms, r.last_seen),
                if labels.is_empty() {
                    NONE.into()
                } else {
                    labels.join(",")
                },
            ];
            if wide {
                row.extend([
                    or_none((!r.control_plane.is_empty()).then(|| r.control_plane.clone())),
                    or_none((!r.binary_version.is_empty()).then(|| r.binary_version.clone())),
                    format!("{}s", r.uptime_seconds),
                    r.in_flight.to_string(),
                    r.requests_total.to_string(),
                    r.errors_total.to_string(),
                    match (&r.last_nack, r.last_nack_version) {
                        (Some(e), Some(v)) => format!("version {v}: {e}"),
                        (Some(e), None) => e.clone(),
                        _ => NONE.into(),
                    },
                ]);
            }
            row
        })
        .collect();
    let mut header = vec!["ID", "GROUP", "VERSION", "STATE", "LAST SEEN", "LABELS"];
    if wide {
        header.extend([
            "CONTROL PLANE",
            "BINARY",
            "UPTIME",
            "IN FLIGHT",
            "REQUESTS",
            "ERRORS",
            "LAST NACK",
        ]);
    }
    table(&header, rows, width)
}

/// `get node ID -o json|yaml`: the status API's `/v1/nodes/{id}` shape.
pub fn node_view(node: &Node, version: u64) -> NodeView {
    NodeView::new(node, version)
}

fn join_or(items: Option<&[String]>, sep: &str, empty: &str) -> String {
    match items {
        Some(items) if !items.is_empty() => items.join(sep),
        _ => empty.into(),
    }
}

/// The PATH column: the match kind spelled out, since `/a` alone would not say whether
/// `/a/b` matches.
pub fn path_summary(path: Option<&PathSpec>) -> String {
    match path {
        None => "prefix /".into(),
        Some(PathSpec {
            prefix: Some(p), ..
        }) => format!("prefix {p}"),
        Some(PathSpec { exact: Some(p), .. }) => format!("exact {p}"),
        Some(PathSpec { regex: Some(p), .. }) => format!("regex {p}"),
        Some(_) => NONE.into(),
    }
}

/// The ACTION column: `→ lms`, `→ a 90%, b 10%`, `redirect 301 → /courses`.
pub fn action_summary(route: &RouteSpec) -> String {
    match (&route.forward, &route.redirect) {
        (Some(f), _) => forward_summary(f),
        (None, Some(r)) => redirect_summary(r),
        (None, None) => NONE.into(),
    }
}

fn forward_summary(f: &ForwardSpec) -> String {
    match (&f.service, &f.backends) {
        (Some(service), _) => format!("→ {service}"),
        (None, Some(backends)) => {
            // Shares rather than raw weights: "90%/10%" is what an operator reasons in,
            // whatever scale the weights were written in.
            let weight = |w: Option<u32>| u64::from(w.unwrap_or(1));
            let total: u64 = backends.iter().map(|b| weight(b.weight)).sum();
            let parts: Vec<String> = backends
                .iter()
                .map(|b| match total {
                    0 => b.service.clone(),
                    _ => format!("{} {}%", b.service, percent(weight(b.weight), total)),
                })
                .collect();
            format!("→ {}", parts.join(", "))
        }
        (None, None) => format!("→ {NONE}"),
    }
}

/// `part / total` as a whole percentage, rounded half up.
fn percent(part: u64, total: u64) -> u64 {
    (part * 200 + total) / (2 * total)
}

fn redirect_summary(r: &RedirectSpec) -> String {
    // 301 is what the proxy sends when the route leaves the code out.
    let code = r.code.unwrap_or(301);
    let mut target = String::new();
    if r.scheme.is_some() || r.host.is_some() || r.port.is_some() {
        match &r.scheme {
            Some(scheme) => {
                target.push_str(scheme);
                target.push_str("://");
            }
            None => target.push_str("//"),
        }
        // `*`: the request's own host is kept.
        target.push_str(r.host.as_deref().unwrap_or("*"));
        if let Some(port) = r.port {
            target.push_str(&format!(":{port}"));
        }
    }
    if let Some(path) = r.path.as_ref().or(r.prefix.as_ref()) {
        target.push_str(path);
    }
    if target.is_empty() {
        target.push_str("(same URL)");
    }
    format!("redirect {code} → {target}")
}

/// The ADDRESSES column; weights are shown only where they differ from the default 1.
pub fn addresses_summary(s: &ServiceSpec) -> String {
    if s.instances.is_empty() {
        return NONE.into();
    }
    s.instances
        .iter()
        .map(|i| match i.weight {
            None | Some(1) => i.address.clone(),
            Some(0) => format!("{} (drained)", i.address),
            Some(w) => format!("{} (weight {w})", i.address),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name used in route files (`load_balancing:`).
pub fn lb_name(lb: LoadBalancing) -> &'static str {
    match lb {
        LoadBalancing::RoundRobin => "round_robin",
        LoadBalancing::LeastRequest => "least_request",
        LoadBalancing::Random => "random",
    }
}

/// LAST SEEN: how long ago, coarsened to the largest whole unit.
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    // A node clock slightly ahead of ours would otherwise underflow.
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

// ---- status ----

/// What `status` reports, computed once for every output format: the status API's
/// `/v1/status` fields plus which nodes keep the fleet from converging.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// `version`, `routes`, `services`, `etcd.connected`, `nodes.{total,converged,lost}`:
    /// the same fields, with the same meaning, as `GET /v1/status`.
    #[serde(flatten)]
    pub status: StatusView,
    /// Every node that counts (all but those that left) is connected at `version`.
    pub converged: bool,
    /// Connected nodes serving an older version (a NACKing one usually is).
    pub behind: Vec<BehindNode>,
    /// Nodes whose last NACK still stands.
    pub nacked: Vec<NackedNode>,
    /// Nodes not heard from for the node TTL, with when they were last seen.
    pub lost: Vec<LostNode>,
    /// Why the answer may miss recent writes (etcd unreachable); absent when current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BehindNode {
    pub id: String,
    pub applied_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NackedNode {
    pub id: String,
    /// The version it rejected.
    pub version: u64,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostNode {
    pub id: String,
    /// RFC 3339 (UTC).
    pub last_seen: String,
    /// Unix milliseconds (for "40s ago"; not serialised).
    #[serde(skip)]
    pub last_seen_ms: u64,
}

impl StatusDoc {
    /// From the Admin API's answer, with the shared node logic (`nodes::Node::state`,
    /// `nodes::convergence`).
    pub fn new(s: &v1::StatusResponse) -> Self {
        let mut nodes: Vec<Node> = s.nodes.iter().map(Node::from).collect();
        nodes.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        let c: Convergence = convergence(&nodes, s.version);
        let mut doc = StatusDoc {
            status: StatusView {
                version: s.version,
                routes: s.routes as usize,
                services: s.services as usize,
                etcd: EtcdView {
                    connected: s.etcd_connected,
                },
                nodes: c,
            },
            converged: c.converged == c.total,
            behind: Vec::new(),
            nacked: Vec::new(),
            lost: Vec::new(),
            stale_reason: (!s.stale_reason.is_empty()).then(|| s.stale_reason.clone()),
        };
        for n in &nodes {
            let r = &n.record;
            match n.state(s.version) {
                NodeState::Lost => doc.lost.push(LostNode {
                    id: r.id.clone(),
                    last_seen: rfc3339(r.last_seen),
                    last_seen_ms: r.last_seen,
                }),
                NodeState::Left => {}
                state => {
                    // The lists are independent: a node can be both behind and NACKing
                    // (the NACK is usually why it is behind).
                    if r.applied_version < s.version {
                        doc.behind.push(BehindNode {
                            id: r.id.clone(),
                            applied_version: r.applied_version,
                        });
                    }
                    if state == NodeState::Nacked {
                        doc.nacked.push(NackedNode {
                            id: r.id.clone(),
                            version: r.last_nack_version.unwrap_or_default(),
                            error: r.last_nack.clone().unwrap_or_default(),
                        });
                    }
                }
            }
        }
        doc
    }

    /// etcd connected and the fleet converged: what `status` exits 0 on.
    pub fn healthy(&self) -> bool {
        self.status.etcd.connected && self.converged
    }

    /// Why not [`StatusDoc::healthy`], in one line (`None` when healthy).
    pub fn problem(&self, now_ms: u64) -> Option<String> {
        if !self.status.etcd.connected {
            return Some(
                "etcd is unreachable: the control plane serves its last snapshot and refuses writes"
                    .into(),
            );
        }
        (!self.converged).then(|| {
            format!(
                "the fleet has not converged: {}",
                fleet_line(&self.status.nodes, &self.lost, now_ms)
            )
        })
    }
}

/// `1/2 nodes converged; lost: p2 (last seen 40s ago)`.
fn fleet_line(c: &Convergence, lost: &[LostNode], now_ms: u64) -> String {
    let mut line = format!("{}/{} nodes converged", c.converged, c.total);
    if !lost.is_empty() {
        let each: Vec<String> = lost
            .iter()
            .map(|l| format!("{} (last seen {})", l.id, ago(now_ms, l.last_seen_ms)))
            .collect();
        line.push_str(&format!("; lost: {}", each.join(", ")));
    }
    line
}

/// `status` as text; `now_ms` is the current Unix time in milliseconds.
pub fn render_status(doc: &StatusDoc, now_ms: u64) -> String {
    let s = &doc.status;
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{name:<16}{value}\n"));
    };
    field("version", s.version.to_string());
    field("routes", s.routes.to_string());
    field("services", s.services.to_string());
    field(
        "etcd connected",
        if s.etcd.connected { "yes" } else { "no" }.into(),
    );
    field("fleet", fleet_line(&s.nodes, &doc.lost, now_ms));
    let id_width = doc
        .behind
        .iter()
        .map(|n| n.id.len())
        .chain(doc.nacked.iter().map(|n| n.id.len()))
        .max()
        .unwrap_or(0);
    if !doc.behind.is_empty() {
        out.push_str("behind:\n");
        for n in &doc.behind {
            out.push_str(&format!(
                "  {:<id_width$}  applied version {}\n",
                n.id, n.applied_version
            ));
        }
    }
    if !doc.nacked.is_empty() {
        out.push_str("NACKs:\n");
        for n in &doc.nacked {
            out.push_str(&format!(
                "  {:<id_width$}  version {}: {}\n",
                n.id, n.version, n.error
            ));
        }
    }
    out
}

// ---- apply and delete ----

fn kind_name(kind: i32) -> &'static str {
    match v1::Kind::try_from(kind) {
        Ok(v1::Kind::Service) => "service",
        Ok(v1::Kind::Route) => "route",
        Ok(v1::Kind::Certificate) => "certificate",
        _ => "object",
    }
}

fn change_text(change: i32, dry_run: bool) -> &'static str {
    match (v1::Change::try_from(change), dry_run) {
        (Ok(v1::Change::Created), false) => "created",
        (Ok(v1::Change::Created), true) => "would be created",
        (Ok(v1::Change::Updated), false) => "updated",
        (Ok(v1::Change::Updated), true) => "would be updated",
        (Ok(v1::Change::Deleted), false) => "deleted",
        (Ok(v1::Change::Deleted), true) => "would be deleted",
        (Ok(v1::Change::Unchanged), _) => "unchanged",
        _ => "changed",
    }
}

/// `apply`: one line per object, then the version. `dry_run` is what was asked for;
/// the response's own flag counts too, so a server that forced a dry run says so.
pub fn render_apply(resp: &v1::ApplyResponse, dry_run: bool) -> String {
    let dry_run = dry_run || resp.dry_run;
    let mut out = String::new();
    if dry_run {
        out.push_str("(dry run)\n");
    }
    for c in &resp.changes {
        out.push_str(&format!(
            "{}/{} {}\n",
            kind_name(c.kind),
            c.name,
            change_text(c.change, dry_run)
        ));
    }
    out.push_str(&format!("version {}\n", resp.version));
    out
}

/// `delete`.
pub fn render_delete(kind: v1::Kind, name: &str, version: u64) -> String {
    format!(
        "{}/{name} deleted\nversion {version}\n",
        kind_name(kind as i32)
    )
}

#[cfg(test)]
mod tests;
