//! The admin listener: liveness, readiness and what is loaded. Read-only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::ProxyBody;
use crate::responses::{json, read_only, text};
use crate::server::Handler;
use crate::state::ProxyState;
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

/// `GET /config`.
#[derive(Debug, Serialize)]
pub struct ConfigView {
    pub version: Option<u64>,
    pub source: Option<String>,
    pub routes: usize,
    pub services: usize,
    /// Seconds since the Unix epoch.
    pub applied_at: Option<u64>,
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
}

impl Admin {
    pub fn config_view(&self) -> ConfigView {
        let snapshot = self.state.current_snapshot();
        ConfigView {
            version: snapshot.as_ref().map(|s| s.version()),
            source: snapshot.as_ref().map(|s| s.source().to_string()),
            routes: snapshot.as_ref().map_or(0, |s| s.config().routes().len()),
            services: snapshot.as_ref().map_or(0, |s| s.config().services().len()),
            applied_at: self
                .state
                .applied_at()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
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
            "/config" => json(&self.config_view()),
            "/stats" => json(&self.stats_view()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz, /config, /stats\n",
            ),
        }
    }
}
