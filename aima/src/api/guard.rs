//! Who may use the API: the bearer token when one is configured, a Host check that keeps
//! DNS-rebinding pages off a loopback daemon, and an Origin check that refuses
//! cross-site writes from browsers. Runs before routing, so no handler sees a refused
//! request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::ApiToken;

/// Liveness probes (systemd, load balancers) carry no token and learn nothing secret.
const OPEN_PATHS: &[&str] = &["/api/v1/health"];

/// What the daemon accepts, from its settings.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    token: Option<ApiToken>,
}

impl AccessPolicy {
    pub fn new(token: Option<ApiToken>) -> Self {
        Self { token }
    }

    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        if OPEN_PATHS.contains(&path) {
            return Ok(());
        }
        match &self.token {
            // The dashboard's files hold no data: a browser loads them without a token,
            // then the page sends the token with every API request.
            Some(_) if crate::ui::is_asset_path(path) && *method == Method::GET => {}
            Some(token) => check_token(token, headers)?,
            // Without a token the daemon is loopback-only; a page whose name resolves to
            // 127.0.0.1 (DNS rebinding) still sends its own name as Host.
            None => check_loopback_host(headers)?,
        }
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            check_same_origin(headers)?;
        }
        Ok(())
    }
}

pub async fn guard(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    match policy.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            let challenge = refused.status == StatusCode::UNAUTHORIZED;
            let mut response = refused.into_response();
            if challenge {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"aima\""),
                );
            }
            response
        }
    }
}

fn check_token(token: &ApiToken, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this daemon requires an API token; send 'Authorization: Bearer <token>' (the aima CLI sends AIMA_API_TOKEN or the contents of $AIMA_HOME/token)",
        ));
    };
    // Constant time, so the answer's timing does not reveal how much of a guess matched.
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the API token is wrong; set AIMA_API_TOKEN (or $AIMA_HOME/token) to the daemon's token",
        ))
    }
}

fn check_loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    // HTTP/1.0 clients may omit Host; browsers never do.
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("");
    if is_loopback_authority(host) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "request addressed to host '{}' refused: without an API token this daemon answers only requests addressed to localhost or a loopback address; set AIMA_API_TOKEN to serve other names",
            host.escape_debug()
        ),
    ))
}

fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site");
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let foreign_origin = origin.is_some_and(|origin| {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(authority), Some(host)) => !authority.eq_ignore_ascii_case(host),
            // "null" (sandboxed pages, file://) or an origin without a Host to compare.
            _ => true,
        }
    });
    if cross_site || foreign_origin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request from '{}' refused: AIMA changes state only for its own pages and for non-browser clients",
                origin.unwrap_or("another site").escape_debug()
            ),
        ));
    }
    Ok(())
}

/// `localhost`, `*.localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn loopback_names_pass_and_others_are_refused_without_a_token() {
        let open = AccessPolicy::new(None);
        for host in [
            "127.0.0.1:9090",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9090",
            "a.localhost:9",
        ] {
            assert!(
                open.check(&Method::GET, "/api/v1/models", &headers(&[("host", host)]))
                    .is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example:9090",
            "10.0.0.1:9090",
            "127.0.0.1.evil.example",
        ] {
            let err = open
                .check(&Method::GET, "/api/v1/models", &headers(&[("host", host)]))
                .expect_err(host);
            assert_eq!(err.status, StatusCode::FORBIDDEN, "{host}");
        }
        // The health probe is open to all.
        assert!(
            open.check(
                &Method::GET,
                "/api/v1/health",
                &headers(&[("host", "evil.example")])
            )
            .is_ok()
        );
    }

    #[test]
    fn the_token_is_required_and_compared_exactly() {
        let policy = AccessPolicy::new(Some(
            crate::config::Settings::resolve_with(
                &crate::config::Flags {
                    home: Some("/nonexistent-aima-home".into()),
                    addr: None,
                },
                |k| (k == "AIMA_API_TOKEN").then(|| "0123456789abcdef".to_owned()),
                Vec::new(),
            )
            .expect("settings")
            .api_token
            .expect("token"),
        ));
        let host = ("host", "gpu-host.lab:9090");
        for (auth, ok) in [
            (None, false),
            (Some("Bearer 0123456789abcdef"), true),
            (Some("Bearer 0123456789abcdeF"), false),
            (Some("Bearer 0123456789abcde"), false),
            (Some("Basic 0123456789abcdef"), false),
        ] {
            let mut pairs = vec![host];
            if let Some(auth) = auth {
                pairs.push(("authorization", auth));
            }
            let result = policy.check(&Method::GET, "/api/v1/services", &headers(&pairs));
            assert_eq!(result.is_ok(), ok, "{auth:?}");
            if let Err(e) = result {
                assert_eq!(e.status, StatusCode::UNAUTHORIZED);
                assert!(e.message.contains("AIMA_API_TOKEN"), "{}", e.message);
            }
        }
    }

    #[test]
    fn cross_origin_writes_are_refused_and_same_origin_ones_pass() {
        let open = AccessPolicy::new(None);
        let post = |pairs: &[(&'static str, &str)]| {
            open.check(&Method::POST, "/api/v1/models", &headers(pairs))
        };
        assert!(
            post(&[("host", "127.0.0.1:9090")]).is_ok(),
            "no Origin: a CLI"
        );
        assert!(
            post(&[
                ("host", "127.0.0.1:9090"),
                ("origin", "http://127.0.0.1:9090")
            ])
            .is_ok(),
            "the daemon's own page"
        );
        for pairs in [
            vec![
                ("host", "127.0.0.1:9090"),
                ("origin", "https://evil.example"),
            ],
            vec![("host", "127.0.0.1:9090"), ("origin", "null")],
            vec![("host", "127.0.0.1:9090"), ("sec-fetch-site", "cross-site")],
        ] {
            let err = post(&pairs).expect_err("cross-origin");
            assert_eq!(err.status, StatusCode::FORBIDDEN, "{pairs:?}");
        }
        // Reading is fine: without CORS headers the browser keeps the answer from the page.
        assert!(
            open.check(
                &Method::GET,
                "/api/v1/models",
                &headers(&[
                    ("host", "127.0.0.1:9090"),
                    ("origin", "https://evil.example")
                ])
            )
            .is_ok()
        );
    }
}
