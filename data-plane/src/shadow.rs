//! Shadow routes on the proxy: a tally per shadow route (hit / miss / unknown) with a
//! bounded ring of recent misses, and the probe that carries one request's expectation
//! from routing to the response. The rules themselves (what a shadow route would do,
//! how a response is judged) are `routemaster_common::shadow`.
//!
//! Tallies are keyed by route id and kept per *declaration*: [`ShadowBook::sync`] (at
//! snapshot apply, before the table swap) keeps a route's tally when its declaration
//! fingerprint is unchanged and starts a fresh one when it changed, so a fixed rule is
//! judged on fresh evidence. The request path reads the book through arc-swap (no lock);
//! only a miss takes the route's ring lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use routemaster_common::Config;
use routemaster_common::model::Action;

use crate::mirror::{MirrorCounts, MirrorTally};
use routemaster_common::model::Scheme;
use routemaster_common::rewrite::RequestTarget;
use routemaster_common::shadow::{self, Expected, Verdict};
use serde::Serialize;

/// Recent misses kept per route.
pub const RECENT_MISSES: usize = 20;
/// Longest expected/actual/path text kept in a miss sample.
const SAMPLE_TEXT: usize = 512;

/// Every shadow route's tally and every comparing mirror's, swapped whole at apply.
#[derive(Debug, Default)]
pub struct ShadowBook {
    tallies: ArcSwap<HashMap<Box<str>, Arc<ShadowTally>>>,
    mirrors: ArcSwap<HashMap<Box<str>, Arc<MirrorTally>>>,
}

/// One shadow route declaration's evidence on this proxy.
#[derive(Debug)]
pub struct ShadowTally {
    route: Box<str>,
    fingerprint: u64,
    hit: AtomicU64,
    miss: AtomicU64,
    unknown: AtomicU64,
    recent: Mutex<VecDeque<MissSample>>,
}

/// One mismatch, as reported to the control plane.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MissSample {
    pub at: SystemTime,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub expected: String,
    pub actual: String,
}

/// A tally's numbers at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShadowCounts {
    pub route: String,
    pub fingerprint: u64,
    pub hit: u64,
    pub miss: u64,
    pub unknown: u64,
    pub recent: Vec<MissSample>,
}

impl ShadowBook {
    /// Makes the book match `config`'s shadow routes (call before the new table is
    /// served): unchanged declarations keep their tally, changed or new ones start at
    /// zero, routes no longer shadowed are forgotten.
    pub fn sync(&self, config: &Config) {
        let old = self.tallies.load();
        let mut next = HashMap::new();
        for route in config.routes().iter().filter(|r| r.is_shadow()) {
            let fingerprint = shadow::declaration_fingerprint(route);
            let id = route.id().as_str();
            let tally = match old.get(id) {
                Some(t) if t.fingerprint == fingerprint => Arc::clone(t),
                _ => Arc::new(ShadowTally::new(id, fingerprint)),
            };
            next.insert(Box::from(id), tally);
        }
        self.tallies.store(Arc::new(next));

        let old = self.mirrors.load();
        let mut next = HashMap::new();
        for route in config.routes() {
            let Action::Forward(f) = route.action() else {
                continue;
            };
            if f.mirror().and_then(|m| m.compare()).is_none() {
                continue;
            }
            let fingerprint = shadow::declaration_fingerprint(route);
            let id = route.id().as_str();
            let tally = match old.get(id) {
                Some(t) if t.fingerprint() == fingerprint => Arc::clone(t),
                _ => Arc::new(MirrorTally::new(id, fingerprint)),
            };
            next.insert(Box::from(id), tally);
        }
        self.mirrors.store(Arc::new(next));
    }

    /// The comparing mirror's tally for route `id`.
    pub fn mirror_tally(&self, id: &str) -> Option<Arc<MirrorTally>> {
        self.mirrors.load().get(id).cloned()
    }

    /// Every comparing mirror's counts, by route id.
    pub fn mirror_counts(&self) -> Vec<MirrorCounts> {
        let mut all: Vec<MirrorCounts> = self.mirrors.load().values().map(|t| t.counts()).collect();
        all.sort_by(|a, b| a.route.cmp(&b.route));
        all
    }

    /// The tally for shadow route `id`, if it is one.
    pub fn tally(&self, id: &str) -> Option<Arc<ShadowTally>> {
        self.tallies.load().get(id).cloned()
    }

    /// Every shadow route's counts, by route id.
    pub fn counts(&self) -> Vec<ShadowCounts> {
        let mut all: Vec<ShadowCounts> = self.tallies.load().values().map(|t| t.counts()).collect();
        all.sort_by(|a, b| a.route.cmp(&b.route));
        all
    }
}

impl ShadowTally {
    fn new(route: &str, fingerprint: u64) -> Self {
        Self {
            route: route.into(),
            fingerprint,
            hit: AtomicU64::new(0),
            miss: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_MISSES)),
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn record(&self, verdict: Verdict, sample: impl FnOnce(String, String) -> MissSample) {
        match verdict {
            Verdict::Hit => {
                self.hit.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Unknown => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Miss { expected, actual } => {
                self.miss.fetch_add(1, Ordering::Relaxed);
                let s = sample(expected, actual);
                let mut ring = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                if ring.len() == RECENT_MISSES {
                    ring.pop_front();
                }
                ring.push_back(s);
            }
        }
    }

    pub fn counts(&self) -> ShadowCounts {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        ShadowCounts {
            route: self.route.to_string(),
            fingerprint: self.fingerprint,
            hit: self.hit.load(Ordering::Relaxed),
            miss: self.miss.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            recent,
        }
    }
}

/// One request's shadow expectation, from routing to the response. Judged once with
/// the response the client gets ([`ShadowProbe::judge`]); a probe dropped unjudged (the
/// request failed before any response, the client went away) counts as `unknown`.
#[derive(Debug)]
pub struct ShadowProbe {
    tally: Arc<ShadowTally>,
    expected: Option<Expected>,
    request: OwnedTarget,
    method: String,
    request_id: String,
    judged: bool,
}

#[derive(Debug)]
struct OwnedTarget {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
    path: String,
    query: Option<String>,
}

impl OwnedTarget {
    fn borrow(&self) -> RequestTarget<'_> {
        RequestTarget {
            scheme: self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            query: self.query.as_deref(),
        }
    }
}

impl ShadowProbe {
    /// The probe for shadow route `route` matched by a request for `target`;
    /// `matched_len` is the route's replaceable path length.
    pub fn new(
        tally: Arc<ShadowTally>,
        route: &routemaster_common::Route,
        target: &RequestTarget<'_>,
        matched_len: usize,
        method: &http::Method,
        request_id: &[u8],
    ) -> Self {
        Self {
            expected: shadow::expect(route, target, matched_len),
            tally,
            request: OwnedTarget {
                scheme: target.scheme,
                host: target.host.to_owned(),
                port: target.port,
                path: target.path.to_owned(),
                query: target.query.map(str::to_owned),
            },
            method: method.as_str().to_owned(),
            request_id: String::from_utf8_lossy(request_id).into_owned(),
            judged: false,
        }
    }

    /// Judges the response the client gets: its status and its header values (first
    /// line of a name, as the upstream sent it).
    pub fn judge<'h>(mut self, status: u16, header: impl Fn(&str) -> Option<&'h [u8]>) {
        self.judged = true;
        let verdict = match &self.expected {
            Some(e) => shadow::judge(e, status, header, &self.request.borrow()),
            None => Verdict::Unknown,
        };
        self.record(verdict);
    }

    /// Judges with an `http::HeaderMap` (the HTTP/2 path and the proxy's own answers).
    pub fn judge_map(self, status: u16, headers: &http::HeaderMap) {
        self.judge(status, |name| {
            headers.get(name).map(http::HeaderValue::as_bytes)
        });
    }

    fn record(&mut self, verdict: Verdict) {
        let Self {
            tally,
            request,
            method,
            request_id,
            ..
        } = self;
        tally.record(verdict, |expected, actual| {
            let path = match &request.query {
                Some(q) => format!("{}?{q}", request.path),
                None => request.path.clone(),
            };
            MissSample {
                at: SystemTime::now(),
                request_id: std::mem::take(request_id),
                method: std::mem::take(method),
                path: truncate(path),
                expected: truncate(expected),
                actual: truncate(actual),
            }
        });
    }
}

impl Drop for ShadowProbe {
    fn drop(&mut self) {
        if !self.judged {
            self.judged = true;
            self.record(Verdict::Unknown);
        }
    }
}

/// A probe carried through the HTTP/1.1 engine's exchange (which may try several
/// upstream connections) and judged once, on the final response head's raw bytes.
#[derive(Debug)]
pub struct ShadowSlot(Mutex<Option<Box<ShadowProbe>>>);

impl ShadowSlot {
    pub fn new(probe: Box<ShadowProbe>) -> Self {
        Self(Mutex::new(Some(probe)))
    }

    /// Judges the probe against an upstream response head (status line and fields,
    /// already validated by the engine's parser); later calls do nothing.
    pub fn judge_head(&self, head: &[u8]) {
        let Some(probe) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut fields);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(_)) => {
                let status = resp.code.unwrap_or(0);
                probe.judge(status, |name| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                });
            }
            // Dropped unjudged: unknown.
            _ => drop(probe),
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > SAMPLE_TEXT {
        let mut end = SAMPLE_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use routemaster_common::spec::ConfigSpec;

    fn config(routes: &str) -> Config {
        let yaml = format!(
            "services: [{{name: lms, instances: [{{address: '127.0.0.1:1'}}]}}]\nroutes:\n{routes}"
        );
        Config::try_from(ConfigSpec::from_yaml(&yaml).unwrap()).unwrap()
    }

    fn target(path: &str) -> RequestTarget<'_> {
        RequestTarget {
            scheme: Scheme::Http,
            host: "www.example.com",
            port: None,
            path,
            query: None,
        }
    }

    #[test]
    fn probes_count_and_sample_misses() {
        let c = config(
            "- {id: old, path: {exact: /old}, mode: shadow, redirect: {path: /new}}\n- {id: all, forward: {service: lms}}",
        );
        let book = ShadowBook::default();
        book.sync(&c);
        assert!(book.tally("all").is_none());
        let tally = book.tally("old").unwrap();
        let route = &c.routes()[0];
        let probe = |id: &[u8]| {
            ShadowProbe::new(
                Arc::clone(&tally),
                route,
                &target("/old"),
                0,
                &http::Method::GET,
                id,
            )
        };
        probe(b"r1").judge(301, |n| (n == "location").then_some(b"/new".as_slice()));
        probe(b"r2").judge(301, |n| {
            (n == "location").then_some(b"/elsewhere".as_slice())
        });
        probe(b"r3").judge(502, |_| None);
        drop(probe(b"r4"));
        let counts = &book.counts()[0];
        assert_eq!((counts.hit, counts.miss, counts.unknown), (1, 1, 2));
        let miss = &counts.recent[0];
        assert_eq!(miss.request_id, "r2");
        assert_eq!(miss.path, "/old");
        assert_eq!(miss.expected, "301 http://www.example.com/new");
        assert_eq!(miss.actual, "301 http://www.example.com/elsewhere");
    }

    #[test]
    fn tallies_survive_an_unchanged_declaration_and_restart_on_a_change() {
        let book = ShadowBook::default();
        let first =
            config("- {id: old, path: {exact: /old}, mode: shadow, redirect: {path: /new}}");
        book.sync(&first);
        let t = book.tally("old").unwrap();
        ShadowProbe::new(
            Arc::clone(&t),
            &first.routes()[0],
            &target("/old"),
            0,
            &http::Method::GET,
            b"x",
        )
        .judge(200, |_| None);
        // The same declaration plus another route: kept.
        book.sync(&config("- {id: old, path: {exact: /old}, mode: shadow, redirect: {path: /new}}\n- {id: b, mode: shadow, redirect: {path: /b}}"));
        assert_eq!(book.counts()[1].miss, 1);
        assert_eq!(book.counts().len(), 2);
        // Fixed rule: fresh evidence.
        book.sync(&config(
            "- {id: old, path: {exact: /old}, mode: shadow, redirect: {path: /newer}}",
        ));
        assert_eq!(book.counts()[0].miss, 0);
        // Promoted (active): no longer tallied.
        book.sync(&config(
            "- {id: old, path: {exact: /old}, redirect: {path: /newer}}",
        ));
        assert!(book.counts().is_empty());
    }

    #[test]
    fn the_ring_keeps_the_latest_misses() {
        let c = config("- {id: old, path: {exact: /old}, mode: shadow, redirect: {path: /new}}");
        let book = ShadowBook::default();
        book.sync(&c);
        let t = book.tally("old").unwrap();
        for i in 0..(RECENT_MISSES + 5) {
            ShadowProbe::new(
                Arc::clone(&t),
                &c.routes()[0],
                &target("/old"),
                0,
                &http::Method::GET,
                i.to_string().as_bytes(),
            )
            .judge(200, |_| None);
        }
        let counts = book.counts();
        assert_eq!(counts[0].recent.len(), RECENT_MISSES);
        assert_eq!(counts[0].recent[0].request_id, "5");
        assert_eq!(counts[0].miss, (RECENT_MISSES + 5) as u64);
    }
}
