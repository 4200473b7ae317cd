//! `routemaster shadow [ROUTE]` and `routemaster promote ROUTE`: shadow routes' fleet-wide
//! evidence, and flipping one to `mode: active` through the normal write path once the
//! evidence is good enough.

use std::fmt::Write as _;

use routemaster_common::model::RouteMode;
use routemaster_common::spec::RouteSpec;
use routemaster_proto::v1;
use routemaster_proto::v1::admin_client::AdminClient;
use serde::Serialize;

use super::args::ShadowFormat;
use super::commands::{CONNECT_TIMEOUT, Io, Outcome, REQUEST_TIMEOUT, channel};
use super::error::CliError;
use super::output::table;
use crate::shadow::ShadowRouteStatus;

/// What `shadow -o json|yaml` prints: the status API's `GET /v1/shadow` envelope.
#[derive(Debug, Serialize)]
struct ShadowDoc {
    version: u64,
    routes: Vec<ShadowRouteStatus>,
}

fn server_error(url: &str, status: tonic::Status) -> CliError {
    CliError::from_status(url, status, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
}

async fn fetch(url: &str, route: Option<&str>) -> Result<ShadowDoc, CliError> {
    let mut client = AdminClient::new(channel(url).await?);
    let resp = client
        .shadow(v1::ShadowRequest {
            route: route.map(str::to_owned),
        })
        .await
        .map_err(|s| server_error(url, s))?
        .into_inner();
    Ok(ShadowDoc {
        version: resp.version,
        routes: resp
            .routes
            .iter()
            .map(ShadowRouteStatus::from_message)
            .collect(),
    })
}

/// `shadow`: every shadow route; `shadow ROUTE`: one, with its recent mismatches.
pub async fn shadow(
    url: &str,
    route: Option<&str>,
    format: ShadowFormat,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let doc = fetch(url, route).await?;
    let text = match format {
        ShadowFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).map_err(|e| CliError::Other(e.to_string()))?
        ),
        ShadowFormat::Yaml => {
            serde_saphyr::to_string(&doc).map_err(|e| CliError::Other(e.to_string()))?
        }
        ShadowFormat::Table => match route {
            Some(_) if !doc.routes.is_empty() => doc
                .routes
                .iter()
                .map(render_one)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => render_list(&doc.routes),
        },
    };
    io.out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

fn percent(s: &ShadowRouteStatus) -> String {
    s.hit_rate
        .map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// The verdicts beside hit and miss: `unknown N` for rules; noise, error and dropped
/// for mirrors.
fn others(s: &ShadowRouteStatus) -> String {
    if s.kind == "mirror" {
        format!(
            "noise {}, error {}, dropped {}",
            s.noise, s.error, s.dropped
        )
    } else {
        format!("unknown {}", s.unknown)
    }
}

/// One row per shadow route (and comparing mirror), with its last miss.
pub fn render_list(routes: &[ShadowRouteStatus]) -> String {
    if routes.is_empty() {
        return "No shadow routes.\n".to_owned();
    }
    let rows = routes
        .iter()
        .map(|s| {
            let last = s.recent.last().map_or_else(
                || "-".to_owned(),
                |m| {
                    format!(
                        "{} {}: want {}, got {}",
                        m.method, m.path, m.expected, m.actual
                    )
                },
            );
            vec![
                s.route.clone(),
                s.kind.to_owned(),
                s.outcome.clone(),
                s.requests.to_string(),
                s.hit.to_string(),
                s.miss.to_string(),
                others(s),
                percent(s),
                last,
            ]
        })
        .collect();
    table(
        &[
            "ROUTE",
            "KIND",
            "WOULD",
            "REQUESTS",
            "HIT",
            "MISS",
            "OTHER",
            "HIT RATE",
            "LAST MISS",
        ],
        rows,
        None,
    )
}

/// One route: its totals, then its recent mismatches (newest last).
pub fn render_one(s: &ShadowRouteStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Route:     {} ({})", s.route, s.kind);
    let _ = writeln!(out, "Would:     {}", s.outcome);
    let _ = writeln!(
        out,
        "Requests:  {} (hit {}, miss {}, {}) from {} proxies",
        s.requests,
        s.hit,
        s.miss,
        others(s),
        s.nodes_reporting
    );
    let _ = writeln!(out, "Hit rate:  {}", percent(s));
    if !s.noise_paths.is_empty() {
        let _ = writeln!(out, "Noise:     {}", s.noise_paths.join(", "));
    }
    if s.recent.is_empty() {
        out.push_str("No recent mismatches.\n");
        return out;
    }
    out.push_str("\nRecent mismatches (newest last):\n");
    let rows = s
        .recent
        .iter()
        .map(|m| {
            vec![
                m.at.clone(),
                m.node.clone(),
                m.request_id.clone(),
                m.method.clone(),
                m.path.clone(),
                m.expected.clone(),
                m.actual.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TIME",
            "PROXY",
            "REQUEST ID",
            "METHOD",
            "PATH",
            "EXPECTED",
            "ACTUAL",
        ],
        rows,
        None,
    ));
    out
}

/// `promote ROUTE`: refuses unless the route's evidence shows a 100% hit rate over at
/// least `min_requests` compared requests (or `force`); then applies the route with
/// `mode: active` (everything else as stored) and prints the evidence.
pub async fn promote(
    url: &str,
    route: &str,
    min_requests: u64,
    force: bool,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let doc = fetch(url, Some(route)).await?;
    let Some(evidence) = doc.routes.into_iter().find(|r| r.kind == "rule") else {
        return Err(CliError::Other(format!(
            "route {route:?} is not a shadow route (mode: shadow): only shadow rules are promoted"
        )));
    };
    let verdict = evidence.promotable(min_requests);
    let summary = format!(
        "{}: {} requests, hit {}, miss {}, unknown {}, hit rate {}",
        evidence.route,
        evidence.requests,
        evidence.hit,
        evidence.miss,
        evidence.unknown,
        percent(&evidence)
    );
    if let Err(reason) = &verdict
        && !force
    {
        let mut msg = format!("refusing to promote route {route:?}: {reason}\nevidence: {summary}");
        if let Some(m) = evidence.recent.last() {
            let _ = write!(
                msg,
                "\nlast miss: {} {}: expected {}, got {}",
                m.method, m.path, m.expected, m.actual
            );
        }
        msg.push_str("\n(--force promotes anyway)");
        return Err(CliError::Other(msg));
    }

    let mut client = AdminClient::new(channel(url).await?);
    let list = client
        .list(v1::ListRequest {})
        .await
        .map_err(|s| server_error(url, s))?
        .into_inner();
    let Some(message) = list.routes.into_iter().find(|r| r.id == route) else {
        return Err(CliError::NotFound {
            kind: "route",
            name: route.to_owned(),
        });
    };
    let mut spec = RouteSpec::try_from(message).map_err(|e| CliError::Other(e.to_string()))?;
    // The evidence is for one declaration: if the route changed since, it does not count.
    let current = routemaster_common::Route::try_from(spec.clone())
        .map_err(|e| CliError::Other(e.to_string()))?;
    if routemaster_common::shadow::declaration_fingerprint(&current) != evidence.fingerprint {
        return Err(CliError::Other(format!(
            "route {route:?} changed while its evidence was read; run promote again"
        )));
    }
    spec.mode = Some(RouteMode::Active);
    let routes = vec![v1::Route::try_from(&spec).map_err(|e| CliError::Other(e.to_string()))?];
    let resp = client
        .apply(v1::ApplyRequest {
            routes,
            ..Default::default()
        })
        .await
        .map_err(|s| server_error(url, s))?
        .into_inner();
    let forced = if verdict.is_err() { " (forced)" } else { "" };
    writeln!(
        io.out,
        "route/{route} promoted to active{forced} at version {}\nevidence: {summary}",
        resp.version
    )?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::shadow::MissView;

    fn status(hit: u64, miss: u64, unknown: u64) -> ShadowRouteStatus {
        let judged = hit + miss;
        ShadowRouteStatus {
            route: "old".into(),
            kind: "rule",
            noise: 0,
            error: 0,
            dropped: 0,
            noise_paths: Vec::new(),
            fingerprint: 7,
            outcome: "redirect 301 /new".into(),
            hit,
            miss,
            unknown,
            requests: hit + miss + unknown,
            hit_rate: (judged > 0).then(|| hit as f64 / judged as f64),
            nodes_reporting: 2,
            recent: if miss > 0 {
                vec![MissView {
                    at: "2026-11-30T01:00:00.000Z".into(),
                    at_unix_ms: 0,
                    node: "p1".into(),
                    request_id: "abc".into(),
                    method: "GET".into(),
                    path: "/old/3".into(),
                    expected: "301 http://a/new/3".into(),
                    actual: "301 http://a/elsewhere".into(),
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn promotion_needs_every_compared_request_to_hit() {
        // (hit, miss, min, ok)
        let cases = [
            (1000, 0, 1000, true),
            (999, 0, 1000, false),
            (5000, 1, 1000, false),
            (0, 0, 0, true),
            (10, 0, 1, true),
        ];
        for (hit, miss, min, ok) in cases {
            assert_eq!(
                status(hit, miss, 3).promotable(min).is_ok(),
                ok,
                "{hit} {miss} {min}"
            );
        }
        let err = status(47, 3, 0).promotable(10).unwrap_err();
        assert_eq!(err, "3 of 50 compared requests missed (hit rate 94.00%)");
    }

    #[test]
    fn tables() {
        let list = render_list(&[status(47, 3, 1)]);
        assert_eq!(
            list,
            "ROUTE   KIND   WOULD               REQUESTS   HIT   MISS   OTHER       HIT RATE   LAST MISS\n\
             old     rule   redirect 301 /new   51         47    3      unknown 1   94.00%     GET /old/3: want 301 http://a/new/3, got 301 http://a/elsewhere\n"
        );
        let one = render_one(&status(47, 3, 1));
        assert!(one.contains("Hit rate:  94.00%"), "{one}");
        assert!(
            one.contains("Requests:  51 (hit 47, miss 3, unknown 1) from 2 proxies"),
            "{one}"
        );
        assert!(
            one.lines().any(|l| l
                .starts_with("2026-11-30T01:00:00.000Z   p1      abc          GET      /old/3")),
            "{one}"
        );
        assert_eq!(render_list(&[]), "No shadow routes.\n");
    }
}
