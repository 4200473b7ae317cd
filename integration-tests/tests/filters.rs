//! Per-route header filters and full-path rewrite, the same over HTTP/1.1 and h2c: the
//! request filter runs last on the upstream request (after the proxy's own fields), the
//! response filter last on the response; `set` replaces every line, `add` appends one,
//! `remove` drops them all; `rewrite_path` replaces the path and keeps the query; query
//! conditions match decoded parameters, the first occurrence counting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use support::*;

fn routes(app: std::net::SocketAddr) -> String {
    format!(
        r#"services:
{}routes:
  - id: users
    path: {{ prefix: /users }}
    filters:
      request_headers:
        set: {{ x-team: users, x-forwarded-proto: https }}
        add: {{ x-via: routemaster }}
        remove: [x-internal, x-request-id]
      response_headers:
        set: {{ strict-transport-security: "max-age=63072000" }}
        add: {{ x-served-by: routemaster }}
        remove: [x-backend]
    forward: {{ service: app, rewrite_path: /v2/x }}
  - id: debug
    query: [{{ name: debug, exact: "1" }}]
    forward: {{ service: app, rewrite_path: /debug }}
  - id: plain
    forward: {{ service: app }}
"#,
        svc("app", &[app])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_rewrite_path_act_the_same_on_h1_and_h2() {
    let app = EchoBackend::start("app").await;
    let p = start("filters", &routes(app.addr), &[]).await;
    let sent = [
        ("x-team", "evil"),
        ("x-via", "client"),
        ("x-internal", "secret"),
        ("x-request-id", "client-id"),
        ("x-keep", "yes"),
    ];
    for (protocol, client) in [("h1", HttpClient::new()), ("h2c", HttpClient::h2c())] {
        let reply = client
            .get(&p.proxy.url("/users/42?page=2"), &sent)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{protocol}: {}", reply.body);
        let echo = reply.json();
        // rewrite_path: the whole path replaced, the query kept.
        assert_eq!(echo["uri"], "/v2/x?page=2", "{protocol}");
        // Request filter, run last.
        assert_eq!(seen(&echo, "x-team"), ["users"], "{protocol}");
        assert_eq!(
            seen(&echo, "x-via"),
            ["client", "routemaster"],
            "{protocol}"
        );
        assert_eq!(
            seen(&echo, "x-internal"),
            Vec::<String>::new(),
            "{protocol}"
        );
        assert_eq!(
            seen(&echo, "x-request-id"),
            Vec::<String>::new(),
            "{protocol}"
        );
        assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"], "{protocol}");
        assert_eq!(seen(&echo, "x-keep"), ["yes"], "{protocol}");
        assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"], "{protocol}");
        // Response filter, run last.
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=63072000"),
            "{protocol}"
        );
        assert_eq!(
            reply.header("x-served-by"),
            Some("routemaster"),
            "{protocol}"
        );
        assert_eq!(reply.header("x-backend"), None, "{protocol}");
        assert!(reply.header("x-request-id").is_some(), "{protocol}");
        assert_eq!(
            reply.header("server"),
            None,
            "{protocol}: no Server of our own"
        );

        // Query conditions: decoded, first occurrence counts.
        for (path, uri) in [
            ("/x?debug=1", "/debug?debug=1"),
            ("/x?%64ebug=%31&debug=0", "/debug?%64ebug=%31&debug=0"),
            ("/x?debug=0&debug=1", "/x?debug=0&debug=1"),
        ] {
            let echo = client.get(&p.proxy.url(path), &[]).await.unwrap().json();
            assert_eq!(echo["uri"], uri, "{protocol} {path}");
        }

        // A route without filters is untouched.
        let reply = client.get(&p.proxy.url("/other?q=1"), &sent).await.unwrap();
        let echo = reply.json();
        assert_eq!(echo["uri"], "/other?q=1", "{protocol}");
        assert_eq!(seen(&echo, "x-team"), ["evil"], "{protocol}");
        assert_eq!(seen(&echo, "x-internal"), ["secret"], "{protocol}");
        assert_eq!(seen(&echo, "x-request-id"), ["client-id"], "{protocol}");
        assert_eq!(reply.header("x-backend"), Some("app"), "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_file_with_a_bad_filter_is_refused_naming_route_and_field() {
    let app = EchoBackend::start("app").await;
    let dir = routemaster_integration_tests::TempDir::new("filters-bad");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n{}routes:\n  - {{ id: bad, forward: {{ service: app }}, filters: {{ request_headers: {{ set: {{ content-length: \"0\" }} }} }} }}\n",
            svc("app", &[app.addr])
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(routemaster_integration_tests::process::binary(
        "routemaster-proxy",
    ))
    .arg("--config")
    .arg(&file)
    .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // (stderr is a JSON log line when it is not a terminal: quotes are escaped)
    assert!(
        err.contains("filters.request_headers.set.content-length")
            && err.contains("route \\\"bad\\\""),
        "{err}"
    );
}
