//! Pure rendering for the CLI: tables, JSON/YAML documents, and the one-line summaries
//! of apply, delete and status. Nothing here does I/O or reads the clock; callers pass
//! the terminal width and the current time so every function is unit-testable.

use std::fmt;

use comfy_table::{ContentArrangement, Table, presets};
use routemaster_common::model::LoadBalancing;
use routemaster_common::spec::{ForwardSpec, PathSpec, RedirectSpec, RouteSpec, ServiceSpec};
use routemaster_proto::v1;
use serde::Serialize;

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

/// `get routes -o yaml|json`: shaped like a route file so the output can be edited and
/// fed back to `apply -f`.
#[derive(Debug, Serialize)]
pub struct RoutesDoc<'a> {
    pub routes: &'a [RouteSpec],
}

/// `get services -o yaml|json`, shaped like a route file.
#[derive(Debug, Serialize)]
pub struct ServicesDoc<'a> {
    pub services: &'a [ServiceSpec],
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

/// `get routes` (and `get route ID -o table`).
pub fn routes_table(routes: &[RouteSpec], width: Option<u16>) -> String {
    if routes.is_empty() {
        return "no routes\n".into();
    }
    let rows = routes
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.group.clone().unwrap_or_else(|| "default".into()),
                join_or(r.hosts.as_deref(), ", ", "*"),
                path_summary(r.path.as_ref()),
                join_or(r.methods.as_deref(), ",", "*"),
                action_summary(r),
                r.priority.unwrap_or(0).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "GROUP", "HOSTS", "PATH", "METHODS", "ACTION", "PRIORITY",
        ],
        rows,
        width,
    )
}

/// `get services` (and `get service NAME -o table`).
pub fn services_table(services: &[ServiceSpec], width: Option<u16>) -> String {
    if services.is_empty() {
        return "no services\n".into();
    }
    let rows = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.instances.len().to_string(),
                addresses_summary(s),
                lb_name(s.load_balancing.unwrap_or_default()).into(),
            ]
        })
        .collect();
    table(&["NAME", "INSTANCES", "ADDRESSES", "LB"], rows, width)
}

/// `get nodes`: `version` is the control plane's current version (what converged
/// means), `now_ms` the current Unix time in milliseconds (for LAST SEEN).
pub fn nodes_table(
    nodes: &[v1::NodeStatus],
    version: u64,
    now_ms: u64,
    width: Option<u16>,
) -> String {
    if nodes.is_empty() {
        return "no nodes\n".into();
    }
    let rows = nodes
        .iter()
        .map(|n| {
            let mut labels: Vec<String> =
                n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            vec![
                n.id.clone(),
                n.group.clone(),
                n.applied_version.to_string(),
                node_state(n, version).to_string(),
                ago(now_ms, n.last_seen_unix_ms),
                if labels.is_empty() {
                    NONE.into()
                } else {
                    labels.join(",")
                },
            ]
        })
        .collect();
    table(
        &["ID", "GROUP", "VERSION", "STATUS", "LAST SEEN", "LABELS"],
        rows,
        width,
    )
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

// ---- nodes and convergence ----

/// The STATUS column of `get nodes`, most urgent first: a node that is not healthy is
/// reported as such whatever its version, then a rejected snapshot, then lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Unhealthy,
    Nack,
    Behind,
    Converged,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Unhealthy => "unhealthy",
            NodeState::Nack => "NACK",
            NodeState::Behind => "behind",
            NodeState::Converged => "converged",
        })
    }
}

/// Whether the node's last NACK still stands: it rejected a version newer than the one
/// it serves. A NACK of an older version was superseded by a later successful apply.
pub fn nack_is_current(n: &v1::NodeStatus) -> bool {
    !n.last_nack.is_empty() && n.last_nack_version > n.applied_version
}

pub fn node_state(n: &v1::NodeStatus, version: u64) -> NodeState {
    if !n.healthy {
        NodeState::Unhealthy
    } else if nack_is_current(n) {
        NodeState::Nack
    } else if n.applied_version < version {
        NodeState::Behind
    } else {
        NodeState::Converged
    }
}

/// The fleet as `status` summarises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convergence {
    pub converged: usize,
    pub total: usize,
    /// `(id, applied_version)` of nodes serving an older version.
    pub behind: Vec<(String, u64)>,
    /// `(id, rejected version, error)`.
    pub nacks: Vec<(String, u64, String)>,
    pub unhealthy: Vec<String>,
}

pub fn convergence(nodes: &[v1::NodeStatus], version: u64) -> Convergence {
    let mut c = Convergence {
        converged: 0,
        total: nodes.len(),
        behind: Vec::new(),
        nacks: Vec::new(),
        unhealthy: Vec::new(),
    };
    for n in nodes {
        if node_state(n, version) == NodeState::Converged {
            c.converged += 1;
        }
        // The lists are independent of the single STATUS column: a node can be both
        // behind and NACKing (the NACK is usually why it is behind).
        if n.applied_version < version {
            c.behind.push((n.id.clone(), n.applied_version));
        }
        if nack_is_current(n) {
            c.nacks
                .push((n.id.clone(), n.last_nack_version, n.last_nack.clone()));
        }
        if !n.healthy {
            c.unhealthy.push(n.id.clone());
        }
    }
    c
}

/// `status`.
pub fn render_status(s: &v1::StatusResponse) -> String {
    let c = convergence(&s.nodes, s.version);
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{name:<16}{value}\n"));
    };
    field("version", s.version.to_string());
    field("routes", s.routes.to_string());
    field("services", s.services.to_string());
    field(
        "etcd connected",
        if s.etcd_connected { "yes" } else { "no" }.into(),
    );
    field(
        "fleet",
        format!("{}/{} nodes converged", c.converged, c.total),
    );
    let id_width = s.nodes.iter().map(|n| n.id.len()).max().unwrap_or(0);
    if !c.behind.is_empty() {
        out.push_str("behind:\n");
        for (id, applied) in &c.behind {
            out.push_str(&format!("  {id:<id_width$}  applied version {applied}\n"));
        }
    }
    if !c.nacks.is_empty() {
        out.push_str("NACKs:\n");
        for (id, version, error) in &c.nacks {
            out.push_str(&format!("  {id:<id_width$}  version {version}: {error}\n"));
        }
    }
    if !c.unhealthy.is_empty() {
        out.push_str("unhealthy:\n");
        for id in &c.unhealthy {
            out.push_str(&format!("  {id}\n"));
        }
    }
    out
}

// ---- apply and delete ----

fn kind_name(kind: i32) -> &'static str {
    match v1::Kind::try_from(kind) {
        Ok(v1::Kind::Service) => "service",
        Ok(v1::Kind::Route) => "route",
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
