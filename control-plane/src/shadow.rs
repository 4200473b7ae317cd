//! Shadow routes' evidence summed over the fleet: what `routemaster shadow`, `promote`,
//! `GET /v1/shadow` and the dashboard show.
//!
//! Each proxy reports, in its health reports, a tally per shadow route *declaration*
//! (hit / miss / unknown and its most recent misses, keyed by
//! `routemaster_common::shadow::declaration_fingerprint`); the control plane keeps them in
//! the node records (etcd, so every replica sees the whole fleet) and sums, per shadow
//! route of the current configuration, only the tallies for its current declaration: a
//! fixed rule is judged on fresh evidence. Lost nodes' last reports still count; a node
//! that left (drained) takes its evidence with it.

use routemaster_common::model::{Action, RouteMode};
use routemaster_common::shadow::declaration_fingerprint;
use routemaster_common::{Config, Route};
use routemaster_proto::v1;
use serde::{Deserialize, Serialize};

use crate::nodes::Node;

/// Misses kept per route in the fleet view.
pub const FLEET_RECENT_MISSES: usize = 50;

/// One proxy's tally for one shadow route declaration, as stored in its node record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeShadow {
    pub route: String,
    pub fingerprint: u64,
    pub hit: u64,
    pub miss: u64,
    pub unknown: u64,
    #[serde(default)]
    pub recent: Vec<MissRecord>,
    /// `rule` (empty in records written before mirrors existed) or `mirror`.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub noise: u64,
    #[serde(default)]
    pub error: u64,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub noise_paths: Vec<String>,
}

/// One sampled mismatch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MissRecord {
    pub at_unix_ms: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub expected: String,
    pub actual: String,
    /// The proxy that saw it (filled in when the fleet view is built).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl From<v1::ShadowCounts> for NodeShadow {
    fn from(c: v1::ShadowCounts) -> Self {
        NodeShadow {
            route: c.route,
            fingerprint: c.fingerprint,
            hit: c.hit,
            miss: c.miss,
            unknown: c.unknown,
            recent: c.recent.into_iter().map(MissRecord::from).collect(),
            kind: c.kind,
            noise: c.noise,
            error: c.error,
            dropped: c.dropped,
            noise_paths: c.noise_paths,
        }
    }
}

impl From<v1::ShadowMiss> for MissRecord {
    fn from(m: v1::ShadowMiss) -> Self {
        MissRecord {
            at_unix_ms: m.at_unix_ms,
            request_id: m.request_id,
            method: m.method,
            path: m.path,
            expected: m.expected,
            actual: m.actual,
            node: m.node,
        }
    }
}

impl From<&MissRecord> for v1::ShadowMiss {
    fn from(m: &MissRecord) -> Self {
        v1::ShadowMiss {
            at_unix_ms: m.at_unix_ms,
            request_id: m.request_id.clone(),
            method: m.method.clone(),
            path: m.path.clone(),
            expected: m.expected.clone(),
            actual: m.actual.clone(),
            node: m.node.clone(),
        }
    }
}

/// A shadow route's (or a comparing mirror's) fleet-wide evidence for its current
/// declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowRouteStatus {
    pub route: String,
    /// `rule` (`mode: shadow`: hit / miss / unknown) or `mirror` (`forward.mirror` with
    /// `compare`: `hit` counts matches; also noise / error / dropped).
    pub kind: &'static str,
    pub fingerprint: u64,
    /// What the route would do: `redirect 301 /new`, `forward lms`.
    pub outcome: String,
    pub hit: u64,
    pub miss: u64,
    pub unknown: u64,
    /// Mirrors: differences only where the baseline differs too.
    pub noise: u64,
    /// Mirrors: the candidate failed or was too slow.
    pub error: u64,
    /// Mirrors: copies not sent (queue full, a request body) or not comparable.
    pub dropped: u64,
    /// Mirrors: what the baseline taught (JSON paths, headers).
    pub noise_paths: Vec<String>,
    /// Every request counted: hits, misses and unknowns (rules); every verdict (mirrors).
    pub requests: u64,
    /// hit / (hit + miss) (mirrors: (match + noise) / (match + noise + miss)), `None`
    /// before anything could be compared.
    pub hit_rate: Option<f64>,
    pub nodes_reporting: u32,
    /// Newest last.
    pub recent: Vec<MissView>,
}

/// A sampled mismatch as the status API and the CLI's JSON show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MissView {
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(skip)]
    pub at_unix_ms: u64,
    pub node: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub expected: String,
    pub actual: String,
}

impl From<&MissRecord> for MissView {
    fn from(m: &MissRecord) -> Self {
        MissView {
            at: routemaster_common::time::rfc3339_ms(m.at_unix_ms),
            at_unix_ms: m.at_unix_ms,
            node: m.node.clone(),
            request_id: m.request_id.clone(),
            method: m.method.clone(),
            path: m.path.clone(),
            expected: m.expected.clone(),
            actual: m.actual.clone(),
        }
    }
}

impl ShadowRouteStatus {
    /// Built from the admin API's message (the CLI's side).
    pub fn from_message(s: &v1::ShadowRoute) -> Self {
        let agreed = s.hit + s.noise;
        let judged = agreed + s.miss;
        ShadowRouteStatus {
            route: s.route.clone(),
            kind: if s.kind == "mirror" { "mirror" } else { "rule" },
            fingerprint: s.fingerprint,
            outcome: s.outcome.clone(),
            hit: s.hit,
            miss: s.miss,
            unknown: s.unknown,
            noise: s.noise,
            error: s.error,
            dropped: s.dropped,
            noise_paths: s.noise_paths.clone(),
            requests: s.hit + s.miss + s.unknown + s.noise + s.error + s.dropped,
            hit_rate: (judged > 0).then(|| agreed as f64 / judged as f64),
            nodes_reporting: s.nodes_reporting,
            recent: s
                .recent
                .iter()
                .map(|m| MissView::from(&MissRecord::from(m.clone())))
                .collect(),
        }
    }

    /// Whether the evidence allows promotion: at least `min_requests` compared
    /// (hits + misses) and not one miss.
    pub fn promotable(&self, min_requests: u64) -> Result<(), String> {
        let judged = self.hit + self.miss;
        if self.miss > 0 {
            return Err(format!(
                "{} of {judged} compared requests missed (hit rate {:.2}%)",
                self.miss,
                self.hit_rate.unwrap_or(0.0) * 100.0
            ));
        }
        if judged < min_requests {
            return Err(format!(
                "only {judged} compared requests (hits + misses), fewer than --min-requests {min_requests}"
            ));
        }
        Ok(())
    }
}

/// The envelope `GET /v1/shadow` answers.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowView {
    pub version: u64,
    pub routes: Vec<ShadowRouteStatus>,
}

/// Sums the nodes' tallies for every shadow route in `config` (or just `only`).
pub fn fleet(config: &Config, nodes: &[Node], only: Option<&str>) -> Vec<ShadowRouteStatus> {
    let mut out = Vec::new();
    for r in config
        .routes()
        .iter()
        .filter(|r| only.is_none_or(|id| r.id().as_str() == id))
    {
        if r.mode() == RouteMode::Shadow {
            out.push(route_status(r, nodes, "rule"));
        }
        if let Action::Forward(f) = r.action()
            && f.mirror().and_then(|m| m.compare()).is_some()
        {
            out.push(route_status(r, nodes, "mirror"));
        }
    }
    out
}

fn route_status(route: &Route, nodes: &[Node], kind: &'static str) -> ShadowRouteStatus {
    let fingerprint = declaration_fingerprint(route);
    let id = route.id().as_str();
    let (mut hit, mut miss, mut unknown, mut reporting) = (0, 0, 0, 0);
    let (mut noise, mut error, mut dropped) = (0, 0, 0);
    let mut noise_paths = std::collections::BTreeSet::new();
    let mut recent = Vec::new();
    for node in nodes {
        for t in &node.record.shadow {
            let t_kind = if t.kind.is_empty() {
                "rule"
            } else {
                t.kind.as_str()
            };
            if t.route != id || t.fingerprint != fingerprint || t_kind != kind {
                continue;
            }
            hit += t.hit;
            miss += t.miss;
            unknown += t.unknown;
            noise += t.noise;
            error += t.error;
            dropped += t.dropped;
            noise_paths.extend(t.noise_paths.iter().cloned());
            reporting += 1;
            recent.extend(t.recent.iter().map(|m| MissRecord {
                node: node.record.id.clone(),
                ..m.clone()
            }));
        }
    }
    recent.sort_by_key(|m| m.at_unix_ms);
    if recent.len() > FLEET_RECENT_MISSES {
        recent.drain(..recent.len() - FLEET_RECENT_MISSES);
    }
    let recent: Vec<MissView> = recent.iter().map(MissView::from).collect();
    let agreed = hit + noise;
    let judged = agreed + miss;
    ShadowRouteStatus {
        route: id.to_owned(),
        kind,
        fingerprint,
        outcome: if kind == "mirror" {
            mirror_outcome(route)
        } else {
            outcome(route)
        },
        hit,
        miss,
        unknown,
        noise,
        error,
        dropped,
        noise_paths: noise_paths.into_iter().collect(),
        requests: hit + miss + unknown + noise + error + dropped,
        hit_rate: (judged > 0).then(|| agreed as f64 / judged as f64),
        nodes_reporting: reporting,
        recent,
    }
}

fn mirror_outcome(route: &Route) -> String {
    let Action::Forward(f) = route.action() else {
        return String::new();
    };
    let Some(m) = f.mirror() else {
        return String::new();
    };
    let primary: Vec<&str> = f.backends().iter().map(|b| b.service().as_str()).collect();
    let mut s = format!(
        "mirror {} → {} ({}%)",
        primary.join(","),
        m.service().as_str(),
        m.percent()
    );
    if let Some(b) = m.compare().and_then(|c| c.baseline()) {
        s.push_str(&format!(", baseline {}", b.as_str()));
    }
    s
}

fn outcome(route: &Route) -> String {
    match route.action() {
        Action::Redirect(r) => {
            let mut s = format!("redirect {}", r.code().get());
            if let Some(scheme) = r.scheme() {
                s.push_str(&format!(" {}://", scheme.as_str()));
            }
            if let Some(h) = r.host() {
                s.push_str(&format!(" host {h}"));
            }
            match r.path() {
                Some(routemaster_common::model::RedirectPath::Full(p)) => {
                    s.push_str(&format!(" {p}"))
                }
                Some(routemaster_common::model::RedirectPath::Prefix(p)) => {
                    s.push_str(&format!(" prefix {p}"))
                }
                None => {}
            }
            s
        }
        Action::Forward(f) => {
            let services: Vec<&str> = f.backends().iter().map(|b| b.service().as_str()).collect();
            let mut s = format!("forward {}", services.join(","));
            match f.rewrite() {
                Some(routemaster_common::model::Rewrite::Prefix(p)) => {
                    s.push_str(&format!(" rewrite_prefix {p}"))
                }
                Some(routemaster_common::model::Rewrite::Path(p)) => {
                    s.push_str(&format!(" rewrite_path {p}"))
                }
                None => {}
            }
            s
        }
    }
}

impl From<&ShadowRouteStatus> for v1::ShadowRoute {
    fn from(s: &ShadowRouteStatus) -> Self {
        v1::ShadowRoute {
            kind: s.kind.to_owned(),
            noise: s.noise,
            error: s.error,
            dropped: s.dropped,
            noise_paths: s.noise_paths.clone(),
            route: s.route.clone(),
            fingerprint: s.fingerprint,
            outcome: s.outcome.clone(),
            hit: s.hit,
            miss: s.miss,
            unknown: s.unknown,
            nodes_reporting: s.nodes_reporting,
            recent: s
                .recent
                .iter()
                .map(|m| v1::ShadowMiss {
                    at_unix_ms: m.at_unix_ms,
                    request_id: m.request_id.clone(),
                    method: m.method.clone(),
                    path: m.path.clone(),
                    expected: m.expected.clone(),
                    actual: m.actual.clone(),
                    node: m.node.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::nodes::{NodeRecord, NodeState};
    use routemaster_common::spec::ConfigSpec;

    fn config(routes: &str) -> Config {
        let yaml = format!(
            "services: [{{name: lms, instances: [{{address: '127.0.0.1:1'}}]}}]\nroutes:\n{routes}"
        );
        Config::try_from(ConfigSpec::from_yaml(&yaml).unwrap()).unwrap()
    }

    fn node(id: &str, shadow: Vec<NodeShadow>) -> Node {
        Node {
            record: NodeRecord {
                id: id.into(),
                shadow,
                ..Default::default()
            },
            liveness: NodeState::Connected,
        }
    }

    #[test]
    fn sums_the_current_declaration_only() {
        let c = config(
            "- {id: old, path: {exact: /old}, mode: shadow, redirect: {path: /new}}\n- {id: all, forward: {service: lms}}",
        );
        let fp = declaration_fingerprint(&c.routes()[0]);
        let tally = |fingerprint, hit, miss, at| NodeShadow {
            route: "old".into(),
            fingerprint,
            hit,
            miss,
            unknown: 1,
            recent: vec![MissRecord {
                at_unix_ms: at,
                request_id: format!("r{at}"),
                ..Default::default()
            }],
            ..Default::default()
        };
        let nodes = [
            node("a", vec![tally(fp, 10, 1, 5)]),
            node("b", vec![tally(fp, 7, 2, 3)]),
            // Evidence for an older declaration of the same route: ignored.
            node("c", vec![tally(fp ^ 1, 100, 50, 9)]),
        ];
        let all = fleet(&c, &nodes, None);
        assert_eq!(all.len(), 1);
        let s = &all[0];
        assert_eq!((s.hit, s.miss, s.unknown, s.requests), (17, 3, 2, 22));
        assert_eq!(s.nodes_reporting, 2);
        assert_eq!(s.hit_rate, Some(17.0 / 20.0));
        assert_eq!(s.outcome, "redirect 301 /new");
        let ids: Vec<(&str, &str)> = s
            .recent
            .iter()
            .map(|m| (m.request_id.as_str(), m.node.as_str()))
            .collect();
        assert_eq!(ids, [("r3", "b"), ("r5", "a")]);
        assert!(fleet(&c, &nodes, Some("all")).is_empty());
        assert_eq!(fleet(&c, &[], Some("old"))[0].hit_rate, None);
    }
}
