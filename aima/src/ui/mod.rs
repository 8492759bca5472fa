//! The dashboard: its files embedded in the binary (no CDN, no build step) served at
//! `/` and `/ui/`. The page is a client of the public API like any other: it reads
//! `/api/v1/*` and the event stream, and sends the API token when the daemon has one.
//! The files themselves hold no data, so the access guard serves them without a token.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const STYLE: &str = include_str!("assets/style.css");
/// The page's scripts, in the order it loads them (classic scripts sharing one scope:
/// each later one uses what the earlier ones define).
const SCRIPTS: [(&str, &str); 5] = [
    ("/ui/core.js", include_str!("assets/core.js")),
    ("/ui/charts.js", include_str!("assets/charts.js")),
    ("/ui/models.js", include_str!("assets/models.js")),
    ("/ui/service.js", include_str!("assets/service.js")),
    ("/ui/app.js", include_str!("assets/app.js")),
];

/// Only this origin's files and API; no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The paths the dashboard's files are served at.
pub fn is_asset_path(path: &str) -> bool {
    matches!(path, "/" | "/ui" | "/ui/" | "/ui/style.css")
        || SCRIPTS.iter().any(|(served, _)| *served == path)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub fn router() -> Router {
    let index = || async { asset("text/html; charset=utf-8", INDEX) };
    let mut router = Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        );
    for (path, script) in SCRIPTS {
        router = router.route(
            path,
            get(move || async move { asset("text/javascript; charset=utf-8", script) }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_this_module_serves() {
        let scripts = SCRIPTS.iter().map(|(path, _)| *path);
        for reference in std::iter::once("/ui/style.css").chain(scripts) {
            assert!(INDEX.contains(reference), "{reference}");
            assert!(is_asset_path(reference));
        }
        // In order: each script uses what the ones before it define.
        let at: Vec<usize> = SCRIPTS
            .iter()
            .map(|(path, _)| INDEX.find(path).expect("referenced"))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        // No inline script or style: the content security policy forbids both.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style=\""));
        assert!(
            !INDEX.contains("http://") && !INDEX.contains("https://"),
            "nothing from elsewhere"
        );
    }
}
