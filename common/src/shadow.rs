//! Shadow mode's pure core: what a shadow route would have done, and the verdict once
//! the real answer is known.
//!
//! A route declared `mode: shadow` is matched like any other, but never serves: the
//! request goes to the next matching active route ([`crate::table::RouteTable::lookup_shadowed`]).
//! The shadow route's would-be outcome is computed at routing time ([`expect`]) and
//! judged against the real response ([`judge`]):
//!
//! - a shadow **redirect** is a hit when the upstream answered the same status and the
//!   same `Location`, both normalised ([`normalize_location`]: resolved against the
//!   request's scheme and authority, scheme and host lowercased, default ports dropped,
//!   path and query kept as they are);
//! - a shadow **forward** names the response header (`shadow.expect_header`) in which
//!   the upstream reports the path and query it computed; a hit when that equals the
//!   route's rewritten path and query. Without `expect_header` there is nothing to
//!   compare: `unknown`.
//!
//! An upstream 5xx (or no response at all) is `unknown`: the upstream failed, so it
//! said nothing about what the right answer was.
//!
//! Counts are kept per route *declaration* ([`declaration_fingerprint`]): when a rule
//! is fixed, it is judged on fresh evidence.

use http::HeaderName;

use crate::model::{Action, Rewrite, Route};
use crate::rewrite::{RequestTarget, redirect_location, replace_prefix};
use crate::spec::RouteSpec;

/// What a shadow route would have answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A redirect: its status and normalised absolute `Location`.
    Redirect { code: u16, location: String },
    /// A forward: the path and query it would send upstream, and the response header
    /// the upstream reports its own in.
    Forward {
        path_and_query: String,
        header: HeaderName,
    },
}

impl Expected {
    /// One line for reports: `301 https://www.example.com/new` or `/new?x=1`.
    pub fn describe(&self) -> String {
        match self {
            Expected::Redirect { code, location } => format!("{code} {location}"),
            Expected::Forward { path_and_query, .. } => path_and_query.clone(),
        }
    }
}

/// The result of one comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Hit,
    Miss { expected: String, actual: String },
    Unknown,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Hit => "hit",
            Verdict::Miss { .. } => "miss",
            Verdict::Unknown => "unknown",
        }
    }
}

/// What the shadow `route` would have done with the request `target`. `matched_len`
/// is the replaceable part of the path ([`crate::model::PathMatch::replaceable_len`]).
/// `None`: nothing to compare (a forward route without `shadow.expect_header`).
pub fn expect(route: &Route, target: &RequestTarget<'_>, matched_len: usize) -> Option<Expected> {
    match route.action() {
        Action::Redirect(rule) => {
            let location = redirect_location(rule, target, matched_len);
            Some(Expected::Redirect {
                code: rule.code().get(),
                location: normalize_location(&location, target)?,
            })
        }
        Action::Forward(forward) => {
            let header = route.shadow_expect_header()?.clone();
            let mut path_and_query = match forward.rewrite() {
                Some(Rewrite::Prefix(p)) => replace_prefix(target.path, matched_len, p),
                Some(Rewrite::Path(p)) => p.to_string(),
                None => target.path.to_owned(),
            };
            if let Some(q) = target.query {
                path_and_query.push('?');
                path_and_query.push_str(q);
            }
            Some(Expected::Forward {
                path_and_query,
                header,
            })
        }
    }
}

/// Compares `expected` with the response the client actually got: its `status` and
/// `header(name)` for the response's header values (first line of a name).
pub fn judge<'h>(
    expected: &Expected,
    status: u16,
    header: impl Fn(&str) -> Option<&'h [u8]>,
    target: &RequestTarget<'_>,
) -> Verdict {
    if status >= 500 {
        return Verdict::Unknown;
    }
    match expected {
        Expected::Redirect { code, location } => {
            let actual_location = header("location").map(String::from_utf8_lossy);
            let actual = match &actual_location {
                Some(l) if (300..400).contains(&status) => {
                    match normalize_location(l.trim(), target) {
                        Some(norm) if status == *code && norm == *location => return Verdict::Hit,
                        Some(norm) => format!("{status} {norm}"),
                        None => format!("{status} {l}"),
                    }
                }
                _ => status.to_string(),
            };
            Verdict::Miss {
                expected: expected.describe(),
                actual,
            }
        }
        Expected::Forward {
            path_and_query,
            header: name,
        } => {
            let Some(value) = header(name.as_str()) else {
                return Verdict::Miss {
                    expected: expected.describe(),
                    actual: format!("{status}, no {name} header"),
                };
            };
            let value = String::from_utf8_lossy(value);
            let value = value.trim();
            // The upstream may report an absolute URL; only its path and query count.
            let actual = match split_absolute(value) {
                Some((_, _, rest)) => rest,
                None => value,
            };
            if actual == path_and_query {
                Verdict::Hit
            } else {
                Verdict::Miss {
                    expected: expected.describe(),
                    actual: actual.to_owned(),
                }
            }
        }
    }
}

/// A `Location` as an absolute URL comparable with another: relative references are
/// resolved against the request's scheme, host and port; scheme and host are
/// lowercased; the scheme's default port is dropped; the path (empty → `/`) and query
/// are kept as they are; a fragment is dropped. `None` for a scheme other than http(s).
pub fn normalize_location(location: &str, target: &RequestTarget<'_>) -> Option<String> {
    let location = location.split('#').next().unwrap_or("");
    let (scheme, authority, rest): (String, String, String) =
        if let Some((scheme, authority, rest)) = split_absolute(location) {
            (
                scheme.to_ascii_lowercase(),
                authority.to_owned(),
                rest.to_owned(),
            )
        } else if let Some(after) = location.strip_prefix("//") {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (
                target.scheme.as_str().to_owned(),
                after[..end].to_owned(),
                after[end..].to_owned(),
            )
        } else {
            let authority = match target.port {
                Some(p) => format!("{}:{p}", target.host),
                None => target.host.to_owned(),
            };
            let rest = if location.starts_with('/') {
                location.to_owned()
            } else if location.is_empty() {
                // An empty reference is the request itself.
                match target.query {
                    Some(q) => format!("{}?{q}", target.path),
                    None => target.path.to_owned(),
                }
            } else if location.starts_with('?') {
                format!("{}{location}", target.path)
            } else {
                // Relative to the request path's directory (RFC 3986 §5.2.3).
                let dir = &target.path[..target.path.rfind('/').map_or(0, |i| i + 1)];
                format!("{dir}{location}")
            };
            (target.scheme.as_str().to_owned(), authority, rest)
        };
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = authority.to_ascii_lowercase();
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p == default_port && !h.is_empty() => h,
        Some((h, "")) => h,
        _ => authority.as_str(),
    };
    let rest = if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest
    };
    Some(format!("{scheme}://{host}{rest}"))
}

/// `scheme://authority/rest` → (scheme, authority, rest) when `s` is absolute.
fn split_absolute(s: &str) -> Option<(&str, &str, &str)> {
    let (scheme, after) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    Some((scheme, &after[..end], &after[end..]))
}

/// A stable 64-bit fingerprint of what a route declares, apart from its `mode`: equal
/// on every proxy and the control plane for the same declaration, different when any
/// matching or action field changes. (FNV-1a over the route written in the file
/// format; stable across processes and versions, unlike the std hasher.)
pub fn declaration_fingerprint(route: &Route) -> u64 {
    let mut spec = RouteSpec::from(route);
    spec.mode = None;
    crate::mirror::fnv1a(
        serde_saphyr::to_string(&spec)
            .unwrap_or_default()
            .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::Scheme;
    use crate::spec::ConfigSpec;
    use crate::{Config, Route};

    fn route(yaml: &str) -> Route {
        let spec = ConfigSpec::from_yaml(&format!(
            "services: [{{name: lms, instances: [{{address: '127.0.0.1:1'}}]}}]\nroutes:\n- {yaml}"
        ))
        .unwrap();
        Config::try_from(spec).unwrap().routes()[0].clone()
    }

    fn target<'a>(path: &'a str, query: Option<&'a str>) -> RequestTarget<'a> {
        RequestTarget {
            scheme: Scheme::Https,
            host: "www.example.com",
            port: None,
            path,
            query,
        }
    }

    #[test]
    fn locations_normalise() {
        let t = RequestTarget {
            scheme: Scheme::Http,
            host: "shop.example",
            port: Some(8080),
            path: "/a/b",
            query: Some("q=1"),
        };
        // (location, normalised)
        let cases = [
            ("/x", "http://shop.example:8080/x"),
            ("/x?y=2", "http://shop.example:8080/x?y=2"),
            ("c", "http://shop.example:8080/a/c"),
            ("?z", "http://shop.example:8080/a/b?z"),
            ("", "http://shop.example:8080/a/b?q=1"),
            ("//Other.Example/p", "http://other.example/p"),
            ("HTTPS://WWW.Example.com:443/P", "https://www.example.com/P"),
            ("http://www.example.com:80", "http://www.example.com/"),
            (
                "http://www.example.com:8443/x",
                "http://www.example.com:8443/x",
            ),
            ("https://www.example.com?x", "https://www.example.com/?x"),
            ("/x#frag", "http://shop.example:8080/x"),
        ];
        for (loc, want) in cases {
            assert_eq!(normalize_location(loc, &t).as_deref(), Some(want), "{loc}");
        }
        assert_eq!(normalize_location("ftp://x/y", &t), None);
    }

    #[test]
    fn redirect_verdicts() {
        let r = route(
            "{id: old, path: {exact: /old}, mode: shadow, redirect: {path: /new, code: 301}}",
        );
        let t = target("/old", Some("a=1"));
        let exp = expect(&r, &t, 0).unwrap();
        assert_eq!(
            exp,
            Expected::Redirect {
                code: 301,
                location: "https://www.example.com/new?a=1".into()
            }
        );
        // (status, location header, verdict label, actual when a miss)
        let cases: [(u16, Option<&str>, &str, &str); 7] = [
            (301, Some("/new?a=1"), "hit", ""),
            (301, Some("https://WWW.example.com:443/new?a=1"), "hit", ""),
            (
                302,
                Some("/new?a=1"),
                "miss",
                "302 https://www.example.com/new?a=1",
            ),
            (301, Some("/new"), "miss", "301 https://www.example.com/new"),
            (200, None, "miss", "200"),
            (503, None, "unknown", ""),
            (301, None, "miss", "301"),
        ];
        for (status, loc, label, actual) in cases {
            let v = judge(
                &exp,
                status,
                |n| {
                    (n == "location")
                        .then_some(loc)
                        .flatten()
                        .map(str::as_bytes)
                },
                &t,
            );
            assert_eq!(v.label(), label, "{status} {loc:?}");
            if let Verdict::Miss {
                expected,
                actual: a,
            } = v
            {
                assert_eq!(expected, "301 https://www.example.com/new?a=1");
                assert_eq!(a, actual);
            }
        }
    }

    #[test]
    fn forward_verdicts() {
        let r = route(
            "{id: c, path: {prefix: /courses}, mode: shadow, shadow: {expect_header: x-shortcut-result}, forward: {service: lms, rewrite_prefix: /lms/courses}}",
        );
        let t = target("/courses/42", Some("v=2"));
        let exp = expect(&r, &t, "/courses".len()).unwrap();
        assert_eq!(exp.describe(), "/lms/courses/42?v=2");
        let cases: [(u16, Option<&str>, &str); 5] = [
            (200, Some("/lms/courses/42?v=2"), "hit"),
            (200, Some(" https://internal/lms/courses/42?v=2 "), "hit"),
            (200, Some("/lms/courses/42"), "miss"),
            (200, None, "miss"),
            (502, None, "unknown"),
        ];
        for (status, value, label) in cases {
            let v = judge(
                &exp,
                status,
                |n| {
                    (n == "x-shortcut-result")
                        .then_some(value)
                        .flatten()
                        .map(str::as_bytes)
                },
                &t,
            );
            assert_eq!(v.label(), label, "{value:?}");
        }
        // Without expect_header there is nothing to compare.
        let plain = route("{id: p, mode: shadow, forward: {service: lms}}");
        assert_eq!(expect(&plain, &t, 0), None);
    }

    #[test]
    fn fingerprints_follow_the_declaration_not_the_mode() {
        let shadow = route("{id: a, path: {exact: /x}, mode: shadow, redirect: {path: /y}}");
        let active = route("{id: a, path: {exact: /x}, redirect: {path: /y}}");
        let fixed = route("{id: a, path: {exact: /x}, mode: shadow, redirect: {path: /z}}");
        assert_eq!(
            declaration_fingerprint(&shadow),
            declaration_fingerprint(&active)
        );
        assert_ne!(
            declaration_fingerprint(&shadow),
            declaration_fingerprint(&fixed)
        );
    }
}
