//! Mirrored comparison's pure core (shadow mode, part 2): the validated `forward.mirror`
//! of a route, and the comparison of a candidate's response with the primary's.
//!
//! - [`Mirror`] / [`Compare`]: what a route mirrors, to whom, how much, and what counts.
//! - [`Observed`]: one response as the comparison sees it (status, the named headers, the
//!   body as JSON, as bytes, or as a length + hash when above `max_body`).
//! - [`differences`]: every difference between two observed responses, each with a path
//!   (`status`, `header:content-type`, `$.items[2].etag`), minus the `ignore`d paths.
//! - [`NoiseSet`]: paths where the primary and a second call to the primary's own service
//!   (the baseline) differed recently; a candidate difference only there is `noise`.
//! - [`MirrorVerdict`]: `match | miss | noise | error | dropped`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::name::Name;

/// The default share of requests mirrored.
pub const DEFAULT_PERCENT: u8 = 100;
/// The default wait for the candidate (and baseline).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bodies above this are compared by length and hash only.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Longest value text kept in a difference.
const VALUE_TEXT: usize = 120;

/// `forward.mirror`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub(crate) service: Name,
    pub(crate) percent: u8,
    pub(crate) compare: Option<Compare>,
    pub(crate) methods: Vec<Method>,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
}

impl Mirror {
    /// The candidate service.
    pub fn service(&self) -> &Name {
        &self.service
    }
    /// 1–100: the share of (eligible) requests mirrored, picked by request id.
    pub fn percent(&self) -> u8 {
        self.percent
    }
    /// `None`: fire-and-forget (the Gateway API's RequestMirror).
    pub fn compare(&self) -> Option<&Compare> {
        self.compare.as_ref()
    }
    /// Methods mirrored (default GET and HEAD).
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    pub fn max_body(&self) -> usize {
        self.max_body
    }
    /// Whether a request with this method and id is mirrored: the method is listed and
    /// the id falls in the sampled share (deterministic: the same id, the same answer).
    pub fn samples(&self, method: &Method, request_id: &[u8]) -> bool {
        self.methods.contains(method)
            && (self.percent >= 100 || (fnv1a(request_id) % 100) < u64::from(self.percent))
    }
}

/// `forward.mirror.compare`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    pub(crate) baseline: Option<Name>,
    pub(crate) status: bool,
    pub(crate) headers: Vec<HeaderName>,
    pub(crate) body: BodyCompare,
    pub(crate) ignore: Vec<JsonPath>,
}

impl Compare {
    /// A second call to this service (the primary's) learns the noise.
    pub fn baseline(&self) -> Option<&Name> {
        self.baseline.as_ref()
    }
    pub fn status(&self) -> bool {
        self.status
    }
    pub fn headers(&self) -> &[HeaderName] {
        &self.headers
    }
    pub fn body(&self) -> BodyCompare {
        self.body
    }
    pub fn ignore(&self) -> &[JsonPath] {
        &self.ignore
    }
}

/// How bodies are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyCompare {
    /// Structurally, when both parse as JSON (else as bytes).
    #[default]
    Json,
    Bytes,
    None,
}

impl BodyCompare {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyCompare::Json => "json",
            BodyCompare::Bytes => "bytes",
            BodyCompare::None => "none",
        }
    }
}

/// A JSON path of the subset `ignore` takes: `$`, then `.name`, `['name']`, `[N]` or `[*]`
/// steps. It covers the value at that path and everything under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    source: Box<str>,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(Box<str>),
    Index(usize),
    AnyIndex,
}

impl JsonPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix('$')
            .ok_or_else(|| format!("{s:?} must start with $"))?;
        let mut steps = Vec::new();
        let mut rest = rest;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let key = &after[..end];
                if key.is_empty()
                    || !key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!(
                        "{s:?}: {key:?} is not a plain key (use ['...'] for others)"
                    ));
                }
                steps.push(Step::Key(key.into()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix("['") {
                let end = after
                    .find("']")
                    .ok_or_else(|| format!("{s:?}: unclosed ['"))?;
                steps.push(Step::Key(after[..end].into()));
                rest = &after[end + 2..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after
                    .find(']')
                    .ok_or_else(|| format!("{s:?}: unclosed ["))?;
                let inner = &after[..end];
                steps.push(if inner == "*" {
                    Step::AnyIndex
                } else {
                    Step::Index(
                        inner
                            .parse()
                            .map_err(|_| format!("{s:?}: [{inner}] is not an index or *"))?,
                    )
                });
                rest = &after[end + 1..];
            } else {
                return Err(format!(
                    "{s:?}: expected .key, ['key'], [N] or [*] at {rest:?}"
                ));
            }
        }
        Ok(Self {
            source: s.into(),
            steps,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when `path` (concrete steps) is this path or below it.
    fn covers(&self, path: &[Step]) -> bool {
        self.steps.len() <= path.len()
            && self.steps.iter().zip(path).all(|(p, c)| match (p, c) {
                (Step::AnyIndex, Step::Index(_)) => true,
                (a, b) => a == b,
            })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A response body as compared.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservedBody {
    /// Not compared (`body: none`), or not read.
    Skipped,
    Json(serde_json::Value),
    Bytes(Vec<u8>),
    /// Above `max_body`: its length and a hash of all of it.
    Digest {
        len: u64,
        hash: u64,
    },
}

/// One response as the comparison sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub status: u16,
    /// The compared headers' values (all lines of a name joined with `, `), in the
    /// order of [`Compare::headers`]; `None` when absent.
    pub headers: Vec<Option<String>>,
    pub body: ObservedBody,
}

impl Observed {
    /// Builds the observation of a response: `header(name)` gives a name's values;
    /// `body` is the whole body when it is at most `max_body` long, else `(len, hash)`.
    pub fn new(
        compare: &Compare,
        status: u16,
        header: impl Fn(&HeaderName) -> Option<String>,
        body: Result<&[u8], (u64, u64)>,
    ) -> Self {
        let body = match (compare.body, body) {
            (BodyCompare::None, _) => ObservedBody::Skipped,
            (_, Err((len, hash))) => ObservedBody::Digest { len, hash },
            (BodyCompare::Json, Ok(bytes)) => match serde_json::from_slice(bytes) {
                Ok(v) => ObservedBody::Json(v),
                Err(_) => ObservedBody::Bytes(bytes.to_vec()),
            },
            (BodyCompare::Bytes, Ok(bytes)) => ObservedBody::Bytes(bytes.to_vec()),
        };
        Self {
            status,
            headers: compare.headers.iter().map(header).collect(),
            body,
        }
    }
}

/// One difference between two responses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// `status`, `header:NAME`, `body` or a JSON path into the body (`$.a[2].b`).
    pub path: String,
    /// The path with array indices generalised (`$.a[*].b`): the unit noise is kept in.
    #[serde(skip)]
    pub pattern: String,
    pub primary: String,
    pub candidate: String,
}

/// Every difference between `primary` and `candidate` that `compare` counts (the
/// `ignore`d JSON paths left out), in a stable order.
pub fn differences(compare: &Compare, primary: &Observed, candidate: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    if compare.status && primary.status != candidate.status {
        out.push(diff("status".into(), &primary.status, &candidate.status));
    }
    for (i, name) in compare.headers.iter().enumerate() {
        let (a, b) = (
            primary.headers.get(i).cloned().flatten(),
            candidate.headers.get(i).cloned().flatten(),
        );
        if a != b {
            out.push(Difference {
                path: format!("header:{name}"),
                pattern: format!("header:{name}"),
                primary: text(a.as_deref().unwrap_or("(absent)")),
                candidate: text(b.as_deref().unwrap_or("(absent)")),
            });
        }
    }
    match (&primary.body, &candidate.body) {
        (ObservedBody::Skipped, _) | (_, ObservedBody::Skipped) => {}
        (ObservedBody::Json(a), ObservedBody::Json(b)) => {
            let mut path = Vec::new();
            json_diff(a, b, &mut path, &compare.ignore, &mut out);
        }
        (a, b) if a != b => out.push(Difference {
            path: "body".into(),
            pattern: "body".into(),
            primary: describe_body(a),
            candidate: describe_body(b),
        }),
        _ => {}
    }
    out
}

fn diff(path: String, a: &impl fmt::Display, b: &impl fmt::Display) -> Difference {
    Difference {
        pattern: path.clone(),
        path,
        primary: text(&a.to_string()),
        candidate: text(&b.to_string()),
    }
}

fn describe_body(b: &ObservedBody) -> String {
    match b {
        ObservedBody::Skipped => "(not compared)".into(),
        ObservedBody::Json(v) => text(&v.to_string()),
        ObservedBody::Bytes(bytes) => format!("{} bytes, hash {:016x}", bytes.len(), fnv1a(bytes)),
        ObservedBody::Digest { len, hash } => format!("{len} bytes, hash {hash:016x}"),
    }
}

fn json_diff(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &mut Vec<Step>,
    ignore: &[JsonPath],
    out: &mut Vec<Difference>,
) {
    use serde_json::Value;
    if ignore.iter().any(|p| p.covers(path)) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                path.push(Step::Key(k.as_str().into()));
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => json_diff(va, vb, path, ignore, out),
                    (va, vb) => {
                        if !ignore.iter().any(|p| p.covers(path)) {
                            out.push(json_difference(path, va, vb));
                        }
                    }
                }
                path.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                path.push(Step::Index(i));
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => json_diff(va, vb, path, ignore, out),
                    (va, vb) => {
                        if !ignore.iter().any(|p| p.covers(path)) {
                            out.push(json_difference(path, va, vb));
                        }
                    }
                }
                path.pop();
            }
        }
        (x, y) if x != y => out.push(json_difference(path, Some(x), Some(y))),
        _ => {}
    }
}

fn json_difference(
    path: &[Step],
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
) -> Difference {
    let show = |v: Option<&serde_json::Value>| {
        v.map_or_else(|| "(absent)".to_owned(), |v| text(&v.to_string()))
    };
    Difference {
        path: render_path(path, false),
        pattern: render_path(path, true),
        primary: show(a),
        candidate: show(b),
    }
}

fn render_path(path: &[Step], generalise: bool) -> String {
    let mut s = String::from("$");
    for step in path {
        match step {
            Step::Key(k)
                if !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                s.push('.');
                s.push_str(k);
            }
            Step::Key(k) => {
                s.push_str("['");
                s.push_str(k);
                s.push_str("']");
            }
            Step::Index(_) if generalise => s.push_str("[*]"),
            Step::Index(i) => s.push_str(&format!("[{i}]")),
            Step::AnyIndex => s.push_str("[*]"),
        }
    }
    s
}

fn text(s: &str) -> String {
    if s.len() <= VALUE_TEXT {
        return s.to_owned();
    }
    let mut end = VALUE_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Where the primary differed from its own baseline recently: a decaying set of path
/// patterns (array indices generalised). A pattern stays noise for `window` baseline
/// comparisons after it was last seen differing.
#[derive(Debug, Clone, Default)]
pub struct NoiseSet {
    /// pattern → the comparison number it last differed at.
    seen: HashMap<String, u64>,
    comparisons: u64,
}

impl NoiseSet {
    /// How many baseline comparisons a noisy pattern is remembered for.
    pub const WINDOW: u64 = 1000;

    /// Learns from one primary-vs-baseline comparison.
    pub fn learn(&mut self, baseline_differences: &[Difference]) {
        self.comparisons += 1;
        for d in baseline_differences {
            self.seen.insert(d.pattern.clone(), self.comparisons);
        }
        if self.comparisons.is_multiple_of(Self::WINDOW) {
            let now = self.comparisons;
            self.seen.retain(|_, at| now - *at < Self::WINDOW);
        }
    }

    pub fn is_noise(&self, d: &Difference) -> bool {
        self.seen
            .get(&d.pattern)
            .is_some_and(|at| self.comparisons - at < Self::WINDOW)
    }

    /// The noisy patterns, sorted (for reports).
    pub fn patterns(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, at)| self.comparisons - **at < Self::WINDOW)
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }
}

/// The result of one mirrored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorVerdict {
    Match,
    /// Differences that are not noise (the noisy ones are left out).
    Miss(Vec<Difference>),
    /// Every difference is a known noise path.
    Noise,
    /// The candidate failed, or was slower than the mirror's timeout.
    Error(String),
    /// Not sent: the mirror queue was full, or the request had a body to mirror.
    Dropped,
}

impl MirrorVerdict {
    pub fn label(&self) -> &'static str {
        match self {
            MirrorVerdict::Match => "match",
            MirrorVerdict::Miss(_) => "miss",
            MirrorVerdict::Noise => "noise",
            MirrorVerdict::Error(_) => "error",
            MirrorVerdict::Dropped => "dropped",
        }
    }
}

/// The verdict for a candidate's `differences` against the primary, given what the
/// baseline taught (`noise`).
pub fn verdict(differences: Vec<Difference>, noise: &NoiseSet) -> MirrorVerdict {
    if differences.is_empty() {
        return MirrorVerdict::Match;
    }
    let real: Vec<Difference> = differences
        .into_iter()
        .filter(|d| !noise.is_noise(d))
        .collect();
    if real.is_empty() {
        MirrorVerdict::Noise
    } else {
        MirrorVerdict::Miss(real)
    }
}

/// `1MiB`, `512KiB`, `1000` (bytes); also `B`, `KB`/`MB` (decimal) and `K`/`M` (binary).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1MiB, 512KiB, 65536)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1024,
        "MiB" | "M" => 1024 * 1024,
        "KB" => 1000,
        "MB" => 1_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KiB, MiB, KB, MB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The canonical spelling of a size: `1MiB`, `512KiB`, or bytes.
pub fn format_size(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n > 0 && n.is_multiple_of(MIB) {
        format!("{}MiB", n / MIB)
    } else if n > 0 && n.is_multiple_of(1024) {
        format!("{}KiB", n / 1024)
    } else {
        n.to_string()
    }
}

/// FNV-1a, 64 bits: stable across processes and versions, unlike the std hasher
/// (sampling by request id, body hashes, declaration fingerprints).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_update(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a hash `h` over `bytes` (a body hashed as it streams).
pub fn fnv1a_update(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn compare(ignore: &[&str], headers: &[&str], body: BodyCompare) -> Compare {
        Compare {
            baseline: None,
            status: true,
            headers: headers
                .iter()
                .map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap())
                .collect(),
            body,
            ignore: ignore.iter().map(|p| JsonPath::parse(p).unwrap()).collect(),
        }
    }

    fn observed(c: &Compare, status: u16, headers: &[(&str, &str)], body: &str) -> Observed {
        Observed::new(
            c,
            status,
            |n| {
                headers
                    .iter()
                    .find(|(k, _)| *k == n.as_str())
                    .map(|(_, v)| (*v).to_owned())
            },
            Ok(body.as_bytes()),
        )
    }

    #[test]
    fn json_paths_parse_or_say_why() {
        for ok in [
            "$",
            "$.a",
            "$.items[*].etag",
            "$['odd key'][3]",
            "$.a-b_c[0]",
        ] {
            assert_eq!(JsonPath::parse(ok).unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("a.b", "must start with $"),
            ("$.", "is not a plain key"),
            ("$.a[x]", "is not an index or *"),
            ("$['a", "unclosed ['"),
            ("$a", "expected .key"),
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn differences_name_their_paths() {
        let c = compare(
            &["$.generated_at", "$.items[*].etag"],
            &["content-type"],
            BodyCompare::Json,
        );
        let a = observed(
            &c,
            200,
            &[("content-type", "application/json")],
            r#"{"generated_at": 1, "items": [{"id": 1, "etag": "a"}, {"id": 2, "etag": "b"}], "n": 2}"#,
        );
        let b = observed(
            &c,
            200,
            &[("content-type", "application/json; charset=utf-8")],
            r#"{"generated_at": 2, "items": [{"id": 1, "etag": "x"}, {"id": 3, "etag": "y"}, {"id": 4}], "extra": true, "n": 2}"#,
        );
        let d = differences(&c, &a, &b);
        let paths: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|d| (d.path.as_str(), d.primary.as_str(), d.candidate.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                (
                    "header:content-type",
                    "application/json",
                    "application/json; charset=utf-8"
                ),
                ("$.extra", "(absent)", "true"),
                ("$.items[1].id", "2", "3"),
                ("$.items[2]", "(absent)", r#"{"id":4}"#),
            ]
        );
        assert_eq!(d[2].pattern, "$.items[*].id");
        // Identical apart from ignored paths: no differences.
        let same = observed(
            &c,
            200,
            &[("content-type", "application/json")],
            r#"{"generated_at": 9, "items": [{"id": 1, "etag": "z"}, {"id": 2}], "n": 2}"#,
        );
        assert!(
            differences(&c, &a, &same).is_empty(),
            "ignored paths differ only"
        );
    }

    #[test]
    fn bodies_that_are_not_json_compare_as_bytes_and_big_ones_by_digest() {
        let c = compare(&[], &[], BodyCompare::Json);
        let a = observed(&c, 200, &[], "plain text");
        let b = observed(&c, 200, &[], "plain text!");
        assert_eq!(differences(&c, &a, &b)[0].path, "body");
        assert!(differences(&c, &a, &a.clone()).is_empty());
        let big = |hash| Observed::new(&c, 200, |_| None, Err((5_000_000, hash)));
        assert!(differences(&c, &big(1), &big(1)).is_empty());
        assert_eq!(
            differences(&c, &big(1), &big(2))[0].primary,
            "5000000 bytes, hash 0000000000000001"
        );
        let none = compare(&[], &[], BodyCompare::None);
        assert!(
            differences(
                &none,
                &observed(&none, 200, &[], "a"),
                &observed(&none, 200, &[], "b")
            )
            .is_empty()
        );
        let status = differences(
            &none,
            &observed(&none, 200, &[], ""),
            &observed(&none, 500, &[], ""),
        );
        assert_eq!(
            (status[0].path.as_str(), status[0].candidate.as_str()),
            ("status", "500")
        );
    }

    #[test]
    fn noise_is_what_the_baseline_also_differs_on() {
        let c = compare(&[], &[], BodyCompare::Json);
        let primary = observed(&c, 200, &[], r#"{"generated_at": 1, "items": [{"v": 1}]}"#);
        let baseline = observed(&c, 200, &[], r#"{"generated_at": 2, "items": [{"v": 1}]}"#);
        let timestamp_only = observed(&c, 200, &[], r#"{"generated_at": 3, "items": [{"v": 1}]}"#);
        let real = observed(&c, 200, &[], r#"{"generated_at": 3, "items": [{"v": 2}]}"#);
        let mut noise = NoiseSet::default();
        // Without a baseline, a timestamp difference is a miss.
        assert_eq!(
            verdict(differences(&c, &primary, &timestamp_only), &noise).label(),
            "miss"
        );
        noise.learn(&differences(&c, &primary, &baseline));
        assert_eq!(noise.patterns(), ["$.generated_at"]);
        assert_eq!(
            verdict(differences(&c, &primary, &timestamp_only), &noise),
            MirrorVerdict::Noise
        );
        let MirrorVerdict::Miss(d) = verdict(differences(&c, &primary, &real), &noise) else {
            panic!("a real difference is a miss");
        };
        assert_eq!(d.len(), 1, "the noise is left out of the miss: {d:?}");
        assert_eq!(d[0].path, "$.items[0].v");
        assert_eq!(verdict(Vec::new(), &noise), MirrorVerdict::Match);
    }

    #[test]
    fn sampling_is_deterministic_by_request_id() {
        let m = Mirror {
            service: Name::new("lms-v2").unwrap(),
            percent: 10,
            compare: None,
            methods: vec![Method::GET, Method::HEAD],
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        };
        let picked = (0..10_000)
            .filter(|i| m.samples(&Method::GET, format!("req-{i}").as_bytes()))
            .count();
        assert!((800..1200).contains(&picked), "{picked}");
        assert_eq!(
            m.samples(&Method::GET, b"abc"),
            m.samples(&Method::GET, b"abc")
        );
        assert!(!m.samples(&Method::POST, b"abc"));
    }

    #[test]
    fn bad_mirrors_name_the_route_and_field() {
        use crate::Config;
        use crate::spec::ConfigSpec;
        let check = |mirror: &str, want: &str| {
            let yaml = format!(
                "services: [{{name: lms}}, {{name: lms-v2}}]\nroutes:\n- {{id: r, forward: {{service: lms, mirror: {mirror}}}}}"
            );
            let err = ConfigSpec::from_yaml(&yaml)
                .map_err(|e| e.to_string())
                .and_then(|s| Config::try_from(s).map(|_| ()).map_err(|e| e.to_string()))
                .expect_err(mirror);
            assert!(err.contains(want), "{mirror}: {err}");
        };
        check(
            "{service: lms-v2, percent: 0}",
            r#"route "r": forward.mirror.percent: 0 must be 1 to 100"#,
        );
        check(
            "{service: lms-v2, methods: [get]}",
            r#"forward.mirror.methods[0]: "get" is not an HTTP method"#,
        );
        check(
            "{service: lms-v2, timeout: 0s}",
            "forward.mirror.timeout: must be greater than 0",
        );
        check(
            "{service: lms-v2, max_body: 1GiB}",
            r#"forward.mirror.max_body: "1GiB": unknown unit"#,
        );
        check(
            "{service: lms-v2, compare: {ignore: [items]}}",
            "forward.mirror.compare.ignore[0]",
        );
        check(
            "{service: lms-v2, compare: {headers: ['bad header']}}",
            "forward.mirror.compare.headers[0]",
        );
        check("{service: nope}", "nope");
        check("{service: lms-v2, compare: {baseline: ghost}}", "ghost");
        check("{service: lms-v2, extra: 1}", "extra");
        // And a good one reads as written.
        let yaml = "services: [{name: lms}, {name: lms-v2}]\nroutes:\n- {id: r, forward: {service: lms, mirror: {service: lms-v2, percent: 10, compare: {baseline: lms, headers: [content-type], body: json, ignore: [$.generated_at]}}}}";
        let config = Config::try_from(ConfigSpec::from_yaml(yaml).unwrap()).unwrap();
        let crate::model::Action::Forward(f) = config.routes()[0].action() else {
            panic!()
        };
        let m = f.mirror().unwrap();
        assert_eq!(
            (m.service().as_str(), m.percent(), m.timeout(), m.max_body()),
            ("lms-v2", 10, DEFAULT_TIMEOUT, DEFAULT_MAX_BODY)
        );
        assert_eq!(m.compare().unwrap().baseline().unwrap().as_str(), "lms");
        let services: Vec<&str> = config.routes()[0].services().map(|n| n.as_str()).collect();
        assert_eq!(services, ["lms", "lms-v2", "lms"]);
    }

    #[test]
    fn sizes() {
        for (s, n) in [
            ("1MiB", 1 << 20),
            ("512KiB", 512 << 10),
            ("1000", 1000),
            ("2M", 2 << 20),
            ("1KB", 1000),
        ] {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
        for bad in ["", "MiB", "1 GiB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(3 << 10), "3KiB");
        assert_eq!(format_size(1000), "1000");
    }
}
