//! The operator console at `/console/`: plain HTML, CSS and ES modules from `api/console/`,
//! compiled into the binary so the service needs no asset directory, no Node build and no other
//! host. The page is a client of the public API like any other: it sends the bearer token the
//! operator signs in with, and the API decides what it may do.
//!
//! Every asset is answered with its content type, `Cache-Control: no-cache` and a strong `ETag`
//! (revalidated on each load, `304` when unchanged, so a new binary's console is never mixed with
//! an old one's cached modules), and a Content-Security-Policy that allows nothing but this
//! origin: no inline script or style, no other host for anything.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

use super::error::ApiError;

/// Only this origin, for everything; no inline code; the page can't be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        ($path, $mime, include_bytes!(concat!("../../console/", $path)).as_slice())
    };
}

/// `(path under /console/, content type, bytes)`.
const FILES: &[(&str, &str, &[u8])] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", "text/javascript; charset=utf-8"),
    asset!("js/api.js", "text/javascript; charset=utf-8"),
    asset!("js/auth.js", "text/javascript; charset=utf-8"),
    asset!("js/ui.js", "text/javascript; charset=utf-8"),
    asset!("js/jobs.js", "text/javascript; charset=utf-8"),
    asset!("js/tenants.js", "text/javascript; charset=utf-8"),
    asset!("js/tenant.js", "text/javascript; charset=utf-8"),
    asset!("js/actions.js", "text/javascript; charset=utf-8"),
    asset!("js/service.js", "text/javascript; charset=utf-8"),
];

struct Asset {
    path: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
    etag: HeaderValue,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(path, mime, bytes)| {
            let digest = Sha256::digest(bytes);
            let tag = format!("\"{}\"", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
            Asset { path, mime, bytes, etag: HeaderValue::from_str(&tag).expect("hex is a valid header value") }
        })
        .collect()
});

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        // Relative module and style paths resolve against `/console/`.
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::route_not_found().into_response();
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag.to_str().unwrap_or_default()));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime))], asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_tagged() {
        assert_eq!(ASSETS.len(), FILES.len());
        for asset in ASSETS.iter() {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.path);
            assert!(asset.etag.to_str().is_ok_and(|t| t.len() == 26));
        }
    }

    #[test]
    fn unknown_paths_are_404_and_a_matching_etag_is_304() {
        assert_eq!(serve("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        let first = serve("js/app.js", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, first.headers()[header::ETAG].clone());
        assert_eq!(serve("js/app.js", &request).status(), StatusCode::NOT_MODIFIED);
    }
}
