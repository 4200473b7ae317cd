//! The compiled route table: which route a request matches.
//!
//! Rules (Gateway-API-like):
//! - Hosts are bucketed by specificity: the exact host, then matching wildcards from the
//!   longest suffix to the shortest, then routes without hosts. The first bucket holding
//!   a matching route wins; a request falls through buckets that have none.
//! - Within a bucket, candidates are ordered by a global rank: higher `priority`, then
//!   exact before prefix before regex, longer prefixes first, a method condition, more
//!   header conditions (the Gateway API ranks the method above the header count), more
//!   query conditions, and finally the route id. Deterministic.
//!
//! Lookup cost does not grow with the number of routes: one hash probe for the host
//! (plus one per label for wildcards), one for the exact path, one per path segment for
//! prefixes, then a walk of the (rank-sorted) candidates with early exit. Only regex
//! routes in the buckets consulted are tried one by one.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::headers::RequestHeaders;

use crate::model::{PathMatch, Route};
use crate::snapshot::Snapshot;

type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// The parts of a request that routing looks at. `host` and `path` must already be
/// normalised ([`crate::host::normalize_host`], [`crate::path::normalize_path`]).
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a dyn RequestHeaders,
    /// The raw query string (without `?`), for query conditions.
    pub query: Option<&'a str>,
}

impl std::fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("host", &self.host)
            .field("path", &self.path)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// A route table over one snapshot, with a payload `T` per route (the proxy attaches
/// its compiled upstream state there).
#[derive(Debug)]
pub struct RouteTable<T> {
    snapshot: Arc<Snapshot>,
    payloads: Vec<T>,
    /// rank → index into the snapshot's routes.
    by_rank: Vec<u32>,
    exact_hosts: Map<Bucket>,
    /// Keyed by suffix with its leading dot: `*.example.org` → `.example.org`.
    wildcard_hosts: Map<Bucket>,
    any_host: Bucket,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Lists hold ranks in ascending order (best first).
    exact: Map<Vec<u32>>,
    prefix: Map<Vec<u32>>,
    longest_prefix: usize,
    /// Regex routes indexed by the literal path prefix every match must start with
    /// (see [`regex_anchor`]), so thousands of regex routes cost a hash probe per path
    /// segment rather than one regex evaluation each.
    regex_by_prefix: Map<Vec<u32>>,
    /// Regex routes without a usable literal prefix; tried one by one.
    regex: Vec<u32>,
}

/// What [`RouteTable::lookup_shadowed`] found.
#[derive(Debug)]
pub struct Lookup<'a, T> {
    pub active: Option<Matched<'a, T>>,
    pub shadow: Option<Matched<'a, T>>,
}

/// The route a request matched, and its payload.
#[derive(Debug)]
pub struct Matched<'a, T> {
    pub route: &'a Route,
    pub payload: &'a T,
}

impl<T> RouteTable<T> {
    /// Compiles the snapshot's routes. `payload` is called once per route, in
    /// declaration order.
    pub fn build(snapshot: Arc<Snapshot>, payload: impl FnMut(&Route) -> T) -> Self {
        let routes = snapshot.config().routes();
        let payloads: Vec<T> = routes.iter().map(payload).collect();
        let mut by_rank: Vec<u32> = (0..routes.len() as u32).collect();
        by_rank.sort_by(|&a, &b| rank_key(&routes[a as usize]).cmp(&rank_key(&routes[b as usize])));

        let mut exact_hosts = Map::default();
        let mut wildcard_hosts = Map::default();
        let mut any_host = Bucket::default();
        for (rank, &idx) in by_rank.iter().enumerate() {
            let route = &routes[idx as usize];
            let rank = rank as u32;
            if route.hosts().is_empty() {
                any_host.insert(route, rank);
            }
            for host in route.hosts() {
                let (map, key): (&mut Map<Bucket>, &str) = match host {
                    crate::model::HostMatch::Exact(h) => (&mut exact_hosts, h),
                    crate::model::HostMatch::Wildcard(s) => (&mut wildcard_hosts, s),
                };
                let bucket = match map.get_mut(key) {
                    Some(b) => b,
                    None => map.entry(key.into()).or_default(),
                };
                bucket.insert(route, rank);
            }
        }
        Self {
            snapshot,
            payloads,
            by_rank,
            exact_hosts,
            wildcard_hosts,
            any_host,
        }
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// The active route that serves `req` (shadow routes never serve).
    pub fn lookup(&self, req: &RequestHead<'_>) -> Option<Matched<'_, T>> {
        self.lookup_shadowed(req).active
    }

    /// The active route that serves `req`, and the shadow route that would have served
    /// it had it been active (one that outranks the active route), if any.
    pub fn lookup_shadowed(&self, req: &RequestHead<'_>) -> Lookup<'_, T> {
        let (active, shadow) = self.find_rank(req);
        Lookup {
            active: active.map(|rank| self.matched(rank)),
            shadow: shadow.map(|rank| self.matched(rank)),
        }
    }

    fn matched(&self, rank: u32) -> Matched<'_, T> {
        let idx = self.by_rank[rank as usize] as usize;
        Matched {
            route: &self.snapshot.config().routes()[idx],
            payload: &self.payloads[idx],
        }
    }

    /// (active, shadow): buckets are searched most specific first; the first bucket
    /// with a matching active route serves, and a shadow route counts only if it
    /// would have won — in an earlier bucket, or ranked above the active one in its.
    fn find_rank(&self, req: &RequestHead<'_>) -> (Option<u32>, Option<u32>) {
        let mut shadow = None;
        let mut visit = |bucket: Option<&Bucket>| {
            let (active, s) = bucket.map_or((None, None), |b| self.search(b, req));
            if shadow.is_none() {
                shadow = s;
            }
            active
        };
        if let Some(rank) = visit(self.exact_hosts.get(req.host)) {
            return (Some(rank), shadow);
        }
        if !self.wildcard_hosts.is_empty() {
            // Leftmost dot first = longest suffix first; a dot at 0 would leave an
            // empty first label, which no wildcard covers.
            for (i, _) in req.host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(rank) = visit(self.wildcard_hosts.get(&req.host[i..])) {
                    return (Some(rank), shadow);
                }
            }
        }
        let active = visit(Some(&self.any_host));
        (active, shadow)
    }

    fn route(&self, rank: u32) -> &Route {
        &self.snapshot.config().routes()[self.by_rank[rank as usize] as usize]
    }

    /// The best-ranked active route in `bucket` that matches, if any, and the best
    /// matching shadow route ranked above it.
    fn search(&self, bucket: &Bucket, req: &RequestHead<'_>) -> (Option<u32>, Option<u32>) {
        let mut best = u32::MAX;
        let mut best_shadow = u32::MAX;
        let mut consider = |list: &[u32], check_path: bool| {
            for &rank in list {
                if rank >= best {
                    break;
                }
                let route = self.route(rank);
                if (!check_path || route.path().matches(req.path))
                    && route.matches_conditions(req.method, req.headers, req.query)
                {
                    if route.is_shadow() {
                        best_shadow = best_shadow.min(rank);
                        continue;
                    }
                    best = rank;
                    break;
                }
            }
        };
        if let Some(list) = bucket.exact.get(req.path) {
            consider(list, false);
        }
        if !bucket.prefix.is_empty() || !bucket.regex_by_prefix.is_empty() {
            let path = req.path;
            let mut probe = |key: &str| {
                if key.len() <= bucket.longest_prefix
                    && let Some(list) = bucket.prefix.get(key)
                {
                    consider(list, false);
                }
                if let Some(list) = bucket.regex_by_prefix.get(key) {
                    consider(list, true);
                }
            };
            probe("");
            for (i, _) in path.match_indices('/').skip(1) {
                probe(&path[..i]);
            }
            if !path.ends_with('/') {
                probe(path);
            }
        }
        consider(&bucket.regex, true);
        (
            (best != u32::MAX).then_some(best),
            (best_shadow < best).then_some(best_shadow),
        )
    }
}

impl Bucket {
    fn insert(&mut self, route: &Route, rank: u32) {
        match route.path() {
            PathMatch::Exact(p) => push(&mut self.exact, p, rank),
            PathMatch::Prefix(p) => {
                self.longest_prefix = self.longest_prefix.max(p.len());
                push(&mut self.prefix, p, rank)
            }
            PathMatch::Regex(p) => match regex_anchor(p.as_str()) {
                Some(anchor) => push(&mut self.regex_by_prefix, anchor, rank),
                None => self.regex.push(rank),
            },
        }
    }
}

/// The longest path prefix, ending just before a `/`, that every path matching the
/// (whole-path) regex must start with: `/course/[0-9]+` → `/course`. `None` when the
/// regex has no such literal start (`.*`, `(?i)/a`, `/[ab]`…). Conservative: stops at
/// the first metacharacter and drops a literal a quantifier may make optional.
fn regex_anchor(regex: &str) -> Option<&str> {
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
    ];
    if regex.contains('|') {
        // An alternation anywhere may start a path that skips the first literal.
        return None;
    }
    let end = regex.find(META).unwrap_or(regex.len());
    let mut literal = &regex[..end];
    if matches!(regex[end..].chars().next(), Some('?' | '*' | '{')) {
        // The char before a quantifier is optional (or repeated zero times).
        let mut chars = literal.chars();
        chars.next_back();
        literal = chars.as_str();
    }
    let cut = literal.rfind('/')?;
    (cut > 0).then(|| &literal[..cut])
}

fn push(map: &mut Map<Vec<u32>>, key: &str, rank: u32) {
    match map.get_mut(key) {
        Some(list) => list.push(rank),
        None => {
            map.insert(key.into(), vec![rank]);
        }
    }
}

/// Priority (higher first), path kind, prefix length (longer first), no method
/// condition, header conditions (more first), query conditions (more first), id.
type RankKey<'r> = (
    std::cmp::Reverse<i32>,
    u8,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    &'r str,
);

/// Smaller is better. See the module docs for the order.
fn rank_key(r: &Route) -> RankKey<'_> {
    let (kind, prefix_len) = match r.path() {
        PathMatch::Exact(_) => (0, 0),
        PathMatch::Prefix(p) => (1, p.len()),
        PathMatch::Regex(_) => (2, 0),
    };
    (
        std::cmp::Reverse(r.priority()),
        kind,
        std::cmp::Reverse(prefix_len),
        r.methods().is_empty(),
        std::cmp::Reverse(r.headers().len()),
        std::cmp::Reverse(r.query().len()),
        r.id().as_str(),
    )
}

#[cfg(test)]
mod tests;
