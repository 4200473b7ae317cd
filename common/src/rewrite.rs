//! Prefix replacement (`forward.rewrite_prefix`, `redirect.prefix`) and redirect
//! `Location` construction.

use std::fmt::Write;

use crate::model::{Redirect, RedirectPath, Scheme};

/// Replaces the first `matched_len` bytes of `path` (the matched prefix, which ends on
/// a segment boundary) with `replacement`. `/old-api/v1` with `/old-api` → `/new-api`
/// gives `/new-api/v1`; with `/` it gives `/v1`; `/old-api` alone gives `/new-api`
/// (or `/`).
pub fn replace_prefix(path: &str, matched_len: usize, replacement: &str) -> String {
    let rest = path.get(matched_len..).unwrap_or("");
    let replacement = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
    out.push_str(replacement);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    } else if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// What the redirect needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    pub scheme: Scheme,
    /// Normalised host (no port).
    pub host: &'a str,
    pub port: Option<u16>,
    /// Normalised path.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Builds the `Location` for `rule`: the request's scheme, host, port, path and query,
/// except what the rule overrides; a rule that sets `scheme` without `port` uses the
/// scheme's default port. `matched_len` is the replaceable part of the path (see
/// [`crate::model::PathMatch::replaceable_len`]). Default ports are omitted.
pub fn redirect_location(rule: &Redirect, req: &RequestTarget<'_>, matched_len: usize) -> String {
    let scheme = rule.scheme().unwrap_or(req.scheme);
    let host = rule.host().unwrap_or(req.host);
    // A rule that changes the scheme but names no port means that scheme's default
    // port (Gateway API), not the port the request came in on.
    let port = rule.port().or(if rule.scheme().is_some() {
        None
    } else {
        req.port
    });
    let mut out = String::with_capacity(64);
    out.push_str(scheme.as_str());
    out.push_str("://");
    out.push_str(host);
    if let Some(port) = port.filter(|p| *p != scheme.default_port()) {
        let _ = write!(out, ":{port}");
    }
    match rule.path() {
        Some(RedirectPath::Full(p)) => out.push_str(p),
        Some(RedirectPath::Prefix(p)) => out.push_str(&replace_prefix(req.path, matched_len, p)),
        None => out.push_str(req.path),
    }
    if let Some(q) = req.query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ConfigSpec;
    use crate::{Config, model::Action};

    #[test]
    fn prefix_replacement() {
        // (path, matched prefix as stored, replacement, want)
        let cases = [
            ("/old-api/v1", "/old-api", "/new-api", "/new-api/v1"),
            ("/old-api/v1", "/old-api", "/", "/v1"),
            ("/old-api", "/old-api", "/new-api", "/new-api"),
            ("/old-api", "/old-api", "/", "/"),
            ("/old-api/", "/old-api", "/new-api", "/new-api/"),
            ("/old-api/", "/old-api", "/", "/"),
            ("/x/y", "", "/base", "/base/x/y"),
            ("/x/y", "", "/", "/x/y"),
            ("/old-api/v1", "/old-api", "/new-api/", "/new-api/v1"),
        ];
        for (path, prefix, repl, want) in cases {
            assert_eq!(
                replace_prefix(path, prefix.len(), repl),
                want,
                "{path} {prefix} {repl}"
            );
        }
    }

    fn redirect_rule(yaml: &str) -> Redirect {
        let text = format!("routes:\n  - id: r\n    redirect: {yaml}\n");
        let config = Config::try_from(ConfigSpec::from_yaml(&text).unwrap()).unwrap();
        match config.routes()[0].action() {
            Action::Redirect(r) => r.clone(),
            Action::Forward(_) => unreachable!(),
        }
    }

    #[test]
    fn locations() {
        let req = RequestTarget {
            scheme: Scheme::Http,
            host: "www.example.com",
            port: Some(8080),
            path: "/old-courses/101",
            query: Some("a=1&b=2"),
        };
        let matched = "/old-courses".len();
        let cases = [
            (
                "{ prefix: /courses }",
                "http://www.example.com:8080/courses/101?a=1&b=2",
            ),
            ("{ path: /x }", "http://www.example.com:8080/x?a=1&b=2"),
            (
                "{ scheme: https }",
                "https://www.example.com/old-courses/101?a=1&b=2",
            ),
            (
                "{ scheme: https, port: 8443 }",
                "https://www.example.com:8443/old-courses/101?a=1&b=2",
            ),
            (
                "{ scheme: http }",
                "http://www.example.com/old-courses/101?a=1&b=2",
            ),
            (
                "{ scheme: https, port: 443 }",
                "https://www.example.com/old-courses/101?a=1&b=2",
            ),
            (
                "{ host: new.example.com, port: 9000 }",
                "http://new.example.com:9000/old-courses/101?a=1&b=2",
            ),
        ];
        for (rule, want) in cases {
            assert_eq!(
                redirect_location(&redirect_rule(rule), &req, matched),
                want,
                "{rule}"
            );
        }
        let no_port = RequestTarget {
            port: None,
            query: None,
            ..req
        };
        assert_eq!(
            redirect_location(&redirect_rule("{ prefix: / }"), &no_port, matched),
            "http://www.example.com/101"
        );
    }
}
