//! The admin listener: liveness, readiness and what is loaded. Read-only.
//!
//! Readiness: `/readyz` is 200 whenever a table is served and the proxy is not
//! draining, whatever the control plane's state. A proxy that lost its control plane
//! keeps serving its last good table, so it stays in the load balancer: pulling
//! every proxy when the control plane restarts would turn a control-plane blip into an
//! outage. It is 503 only before the first table and once draining (SIGTERM).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use routemaster_common::snapshot::Source;
use routemaster_common::spec::ConfigSpec;
use serde::Serialize;

use crate::body::ProxyBody;
use crate::responses::{json, read_only, text};
use crate::server::Handler;
use crate::state::{Connection, ProxyState, SourceKind};
use crate::stats::Stats;

#[derive(Debug)]
pub struct Admin {
    state: Arc<ProxyState>,
}

impl Admin {
    pub fn new(state: Arc<ProxyState>) -> Self {
        Self { state }
    }
}

/// `GET /config` (and `GET /config?full=1`, with `config`).
#[derive(Debug, Serialize)]
pub struct ConfigView {
    pub version: Option<u64>,
    /// `KIND:WHERE`: `file:PATH`, `control-plane:URL` or `last-known-good:PATH`.
    pub source: Option<String>,
    /// Where the serving table came from: `control-plane`, `file` or `last-known-good`.
    pub source_kind: Option<SourceKind>,
    pub routes: usize,
    pub services: usize,
    /// When the serving table was swapped in (RFC 3339, UTC).
    pub applied_at: Option<String>,
    /// Connected mode only (`null` with a route file).
    pub control_plane: Option<ControlPlaneView>,
    /// Each service's endpoints with their health as this proxy sees it, and whether
    /// the service is in panic mode ([`crate::health`]).
    pub upstreams: Vec<crate::health::UpstreamView>,
    /// The whole serving configuration in the route file's field names (`?full=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,
}

/// `/config`'s `control_plane`.
#[derive(Debug, Serialize)]
pub struct ControlPlaneView {
    /// `connected`, `connecting` or `disconnected`.
    pub state: Connection,
    /// The control plane in use: connected to, being tried, or last tried.
    pub url: Option<String>,
    /// When the last snapshot arrived from a control plane (RFC 3339, UTC).
    pub last_snapshot_at: Option<String>,
    /// Why the last session ended or the last attempt failed.
    pub last_error: Option<String>,
}

/// `GET /stats`.
#[derive(Debug, Serialize)]
pub struct StatsView {
    pub uptime_seconds: u64,
    pub requests_total: u64,
    pub in_flight: u64,
    pub downstream_errors: u64,
    pub upstream_errors: u64,
    pub internal_errors: u64,
    pub open_connections: usize,
    /// Client connections turned away by `--max-connections`.
    pub refused_connections: u64,
    /// Per service: panic-mode picks, `limits` refusals, retries, ejections.
    pub upstreams: Vec<crate::health::UpstreamStats>,
}

impl Admin {
    /// `full`: include the whole configuration (`?full=1`).
    pub fn config_view(&self, full: bool) -> ConfigView {
        let (snapshot, meta) = self.state.current_with_meta();
        let source = snapshot.as_ref().map(|s| {
            let place = match s.source() {
                Source::File(p) | Source::ControlPlane(p) => p.as_str(),
            };
            let kind = meta.kind.map_or("unknown", SourceKind::as_str);
            format!("{kind}:{place}")
        });
        ConfigView {
            version: snapshot.as_ref().map(|s| s.version()),
            source,
            source_kind: meta.kind,
            routes: snapshot.as_ref().map_or(0, |s| s.config().routes().len()),
            services: snapshot.as_ref().map_or(0, |s| s.config().services().len()),
            applied_at: meta.at.map(rfc3339),
            control_plane: self.state.control_plane().map(|c| ControlPlaneView {
                state: c.state,
                url: c.url,
                last_snapshot_at: c.last_snapshot_at.map(rfc3339),
                last_error: c.last_error,
            }),
            upstreams: self
                .state
                .load()
                .map(|c| crate::health::upstream_views(&c))
                .unwrap_or_default(),
            // Everything in the model is routing data today. Secrets (TLS keys, upstream
            // credentials) must never be dumped here: when the model gains any, redact
            // them in this view (Envoy's config_dump shows them as `[redacted]`).
            config: full
                .then(|| {
                    snapshot
                        .as_ref()
                        .map(|s| ConfigSpec::from(s.config()).redacted())
                })
                .flatten(),
        }
    }

    /// `GET /metrics`: Prometheus text format 0.0.4. A scraper that asks for
    /// OpenMetrics (`Accept: application/openmetrics-text`) gets this format too, as
    /// the `content-type` says; every Prometheus reads it.
    fn metrics(&self) -> Response<ProxyBody> {
        match crate::observe::metrics::render(&self.state) {
            Ok(body) => {
                let mut resp = text(StatusCode::OK, body);
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(prometheus::TEXT_FORMAT),
                );
                resp
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the metrics: {e}\n"),
            ),
        }
    }

    pub fn stats_view(&self) -> StatsView {
        let s = &self.state.stats;
        StatsView {
            uptime_seconds: self.state.started.elapsed().as_secs(),
            requests_total: Stats::get(&s.requests_total),
            in_flight: Stats::get(&s.in_flight),
            downstream_errors: Stats::get(&s.downstream_errors),
            upstream_errors: Stats::get(&s.upstream_errors),
            internal_errors: Stats::get(&s.internal_errors),
            open_connections: self.state.connections.open(),
            refused_connections: self.state.connections.refused(),
            upstreams: self
                .state
                .load()
                .map(|c| crate::health::upstream_stats(&c))
                .unwrap_or_default(),
        }
    }
}

impl Handler for Admin {
    async fn handle(&self, req: Request<Incoming>, _client: SocketAddr) -> Response<ProxyBody> {
        if let Some(refused) = read_only(req.method()) {
            return refused;
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.state.load() {
                _ if self.state.is_draining() => {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                }
                Some(_) => text(StatusCode::OK, "ready\n"),
                None => text(StatusCode::SERVICE_UNAVAILABLE, "no configuration loaded\n"),
            },
            "/config" => json(&self.config_view(wants_full(req.uri().query()))),
            "/stats" => json(&self.stats_view()),
            "/metrics" => self.metrics(),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz, /config, /stats, /metrics\n",
            ),
        }
    }
}

/// `?full=1` (or `full=true`, or a bare `full`) among the query parameters.
fn wants_full(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|param| matches!(param, "full" | "full=1" | "full=true"))
}

pub use routemaster_common::time::rfc3339;

#[cfg(test)]
mod tests {

    use routemaster_common::Config;
    use routemaster_common::snapshot::Snapshot;

    use super::*;

    #[test]
    fn full_query_parameter() {
        let cases = [
            (None, false),
            (Some(""), false),
            (Some("full=1"), true),
            (Some("full=true"), true),
            (Some("full"), true),
            (Some("x=2&full=1"), true),
            (Some("full=0"), false),
            (Some("fully=1"), false),
        ];
        for (query, want) in cases {
            assert_eq!(wants_full(query), want, "{query:?}");
        }
    }

    #[test]
    fn config_view_says_where_the_table_came_from() {
        let config = Config::try_from(
            ConfigSpec::from_yaml(
                "services: [{ name: a, instances: [{ address: 127.0.0.1:1 }] }]\n\
                 routes: [{ id: r, forward: { service: a } }]\n",
            )
            .unwrap(),
        )
        .unwrap();
        let state = Arc::new(ProxyState::new());
        let admin = Admin::new(Arc::clone(&state));
        let empty = admin.config_view(true);
        assert_eq!(empty.version, None);
        assert!(empty.config.is_none());
        assert!(empty.control_plane.is_none());

        let snapshot = |source| Arc::new(Snapshot::new(4, source, config.clone()));
        state.apply_last_known_good(snapshot(Source::File("/s/lkg".into())));
        state.update_control_plane(|c| c.state = Connection::Disconnected);
        let view = admin.config_view(false);
        assert_eq!(view.source.as_deref(), Some("last-known-good:/s/lkg"));
        assert_eq!(view.source_kind, Some(SourceKind::LastKnownGood));
        assert!(view.config.is_none());
        let cp = view.control_plane.unwrap();
        assert_eq!(cp.state, Connection::Disconnected);
        assert_eq!(cp.last_snapshot_at, None);

        state.apply(snapshot(Source::ControlPlane("http://cp:7000".into())));
        let view = admin.config_view(true);
        assert_eq!(view.source.as_deref(), Some("control-plane:http://cp:7000"));
        assert_eq!(view.source_kind, Some(SourceKind::ControlPlane));
        let full = view.config.unwrap();
        assert_eq!(full, ConfigSpec::from(&config));
        assert_eq!(full.routes[0].id, "r");
        let json = serde_json::to_value(admin.config_view(true)).unwrap();
        assert_eq!(json["source_kind"], "control-plane");
        assert_eq!(json["control_plane"]["state"], "disconnected");
        assert_eq!(json["config"]["services"][0]["name"], "a");
        assert!(json["config"]["routes"][0]["forward"].is_object(), "{json}");
        let json = serde_json::to_value(admin.config_view(false)).unwrap();
        assert!(json.get("config").is_none(), "{json}");
    }
}
