//! A mirrored exchange after it is sent: a copy's own exchange with a candidate or
//! baseline ([`send`]), and, when the route compares, the wait for the primary's
//! response and the verdict, counted in the route's tally with a sample of each miss
//! ([`run`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use routemaster_common::mirror::{MirrorVerdict, Observed, differences, verdict};

use super::thread::{CopyAnswer, Job, MAX_HEAD, Senders};
use super::{BodyCapture, Captured, Primary, lock, shadow_host};
use crate::body::FromUpstream;
use crate::compile::Cluster;
use crate::h1::client::{Outgoing, Target};
use crate::shadow::{MissSample, RECENT_MISSES};
use crate::upstream::RequestBody;
use routemaster_common::model::Protocol;

/// Longest wait for the primary's body to finish streaming to the client.
const PRIMARY_WAIT: Duration = Duration::from_secs(60);
/// Differences kept in a miss sample.
const SAMPLE_DIFFERENCES: usize = 5;

/// One mirrored exchange: the copies' answers (`baseline` only when comparing with
/// one), then (when comparing) the verdict.
pub(super) async fn run(job: Job, candidate: CopyAnswer, baseline: Option<CopyAnswer>) {
    let Job {
        target,
        tally,
        copy,
        primary,
        _permit,
    } = job;
    let candidate = candidate.get();
    let (Some(compare), Some(tally), Some(primary)) = (target.mirror.compare(), tally, primary)
    else {
        // Fire-and-forget: read and discard.
        let _ = candidate.await;
        return;
    };
    let baseline = async {
        match baseline {
            Some(b) => Some(b.get().await),
            None => None,
        }
    };
    let (candidate, baseline) = tokio::join!(candidate, baseline);
    let primary = match tokio::time::timeout(PRIMARY_WAIT, primary).await {
        Ok(Ok(Primary { head, body })) => {
            let (status, headers) = head.read(compare);
            Captured {
                status,
                headers,
                body,
            }
        }
        // The client's response did not complete: nothing to compare against.
        _ => {
            tally.dropped();
            return;
        }
    };
    let observe = |status: u16, headers: &HeaderMap, body: &Result<Vec<u8>, (u64, u64)>| {
        Observed::new(
            compare,
            status,
            |name| joined(headers, name),
            body.as_ref().map(Vec::as_slice).map_err(|e| *e),
        )
    };
    let primary_seen = observe(primary.status, &primary.headers, &primary.body);
    let result = match candidate {
        Err(reason) => MirrorVerdict::Error(reason),
        Ok(c) => {
            let candidate_seen = observe(c.status, &c.headers, &c.body);
            let diffs = differences(compare, &primary_seen, &candidate_seen);
            let mut noise = lock(&tally.noise);
            if let Some(Ok(b)) = &baseline {
                let baseline_seen = observe(b.status, &b.headers, &b.body);
                noise.learn(&differences(compare, &primary_seen, &baseline_seen));
            }
            verdict(diffs, &noise)
        }
    };
    tally.count(&result);
    let sample = match &result {
        MirrorVerdict::Miss(diffs) => Some((
            join(diffs, |d| format!("{}={}", d.path, d.primary)),
            join(diffs, |d| format!("{}={}", d.path, d.candidate)),
        )),
        MirrorVerdict::Error(reason) => {
            Some((primary.status.to_string(), format!("error: {reason}")))
        }
        _ => None,
    };
    if let Some((expected, actual)) = sample {
        let mut ring = lock(&tally.recent);
        if ring.len() == RECENT_MISSES {
            ring.pop_front();
        }
        ring.push_back(MissSample {
            at: SystemTime::now(),
            request_id: copy
                .headers
                .get(crate::forwarding::X_REQUEST_ID.clone())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            method: copy.method.as_str().to_owned(),
            path: copy
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            expected,
            actual,
        });
    }
}

fn join(
    diffs: &[routemaster_common::mirror::Difference],
    f: impl Fn(&routemaster_common::mirror::Difference) -> String,
) -> String {
    let mut parts: Vec<String> = diffs.iter().take(SAMPLE_DIFFERENCES).map(f).collect();
    if diffs.len() > SAMPLE_DIFFERENCES {
        parts.push(format!("… {} more", diffs.len() - SAMPLE_DIFFERENCES));
    }
    parts.join("; ")
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The `host` a copy needs added: a copy of an HTTP/2 upstream request has its host only
/// as the `:authority` (given the `-shadow` suffix, as the header is).
pub(super) fn copy_host(copy: &http::request::Parts) -> Option<HeaderValue> {
    if copy.headers.contains_key(http::header::HOST) {
        return None;
    }
    copy.uri
        .authority()
        .and_then(|a| HeaderValue::from_str(&shadow_host(a.as_str())).ok())
}

/// Sends one copy to an endpoint of `cluster` and reads its response (bounded by
/// `timeout` overall, the body kept up to `max_body`).
pub(super) fn send(
    senders: &Senders,
    cluster: &Arc<Cluster>,
    copy: &http::request::Parts,
    timeout: Duration,
    max_body: usize,
) -> impl std::future::Future<Output = Result<Captured, String>> + use<> {
    let clients = Arc::clone(&senders.clients);
    let pool = senders.pool.clone();
    let cluster = Arc::clone(cluster);
    let mut req = Request::new(RequestBody::full(Bytes::new()));
    *req.method_mut() = copy.method.clone();
    *req.headers_mut() = copy.headers.clone();
    let path = copy.uri.path_and_query().cloned();
    let host = copy_host(copy);
    async move {
        let endpoint = cluster
            .pick(0)
            .map_err(|_| format!("no instance of {} to send to", cluster.name()))?;
        let protocol = cluster.protocol();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if protocol.is_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        uri.authority = Some(endpoint.authority().clone());
        uri.path_and_query = path;
        *req.uri_mut() = Uri::from_parts(uri).map_err(|e| e.to_string())?;
        *req.version_mut() = if protocol.is_http2() {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let exchange = async {
            let failed = |e: &dyn std::fmt::Display| {
                format!("{} {}: {e}", cluster.name(), endpoint.authority())
            };
            let resp = match pool {
                Some(pool) if protocol == Protocol::Http1 => {
                    let (mut head, _) = req.into_parts();
                    if let Some(host) = host {
                        head.headers.insert(http::header::HOST, host);
                    }
                    let to = Target {
                        authority: endpoint.authority(),
                        service: None,
                        limited: None,
                        max_head: MAX_HEAD,
                    };
                    let (body, mut buf) = (Bytes::new(), Vec::new());
                    let out = Outgoing::encode(&head, &body, &mut buf);
                    crate::h1::client::send(&pool, to, out)
                        .await
                        .map_err(|e| failed(&e))?
                        .map(|body| FromUpstream::H1 { body })
                }
                _ => clients
                    .request(protocol, cluster.tls(), endpoint.authority(), req)
                    .await
                    .map_err(|e| failed(&e))?
                    .map(|body| FromUpstream::Hyper { body }),
            };
            let (parts, mut body) = resp.into_parts();
            let mut captured = BodyCapture::new(max_body);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("body: {e}"))?;
                if let Some(d) = frame.data_ref() {
                    captured.push(d);
                }
            }
            Ok(Captured {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: captured.finish(),
            })
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("slower than the mirror timeout ({timeout:?})")));
        endpoint.record(result.is_ok());
        result
    }
}
