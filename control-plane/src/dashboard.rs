//! The dashboard page served at `GET /` on the status port: plain HTML, one script and
//! one stylesheet, compiled into the binary (`include_str!`), no build step. The page
//! is a client of the public status API only (`/v1/status`, `/v1/nodes`,
//! `/v1/services`, `/v1/map`, `/v1/changes`), which it polls every two seconds; what it
//! shows needs no private endpoint. Panels are a list in `app.js` (`PANELS`): a new
//! panel is one entry with the API paths it reads and a render function.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// `/`, `/dashboard/app.js`, `/dashboard/style.css`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(async || asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/dashboard/app.js",
            get(async || asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/dashboard/style.css",
            get(async || asset("text/css; charset=utf-8", STYLE)),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Assets change with the binary; a reload after an upgrade must not mix
            // an old script with a new API.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_and_style_from_this_router() {
        assert!(INDEX.contains(r#"src="/dashboard/app.js""#));
        assert!(INDEX.contains(r#"href="/dashboard/style.css""#));
        // Only the public API: every path the script fetches is under /v1/.
        let paths: Vec<&str> = SCRIPT
            .match_indices("'/")
            .filter_map(|(i, _)| SCRIPT[i + 1..].split('\'').next())
            .collect();
        assert!(paths.contains(&"/v1/map"), "{paths:?}");
        for path in paths {
            assert!(path.starts_with("/v1/"), "{path}");
        }
    }
}
