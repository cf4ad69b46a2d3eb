//! The web faces of wxcm, served by `wxcm serve` from the same origin as the
//! admin API: the admin console at `/console/` and the staff console at
//! `/staff/`. The pages are static files compiled into the binary (`web/`):
//! plain ES modules and CSS, no build step and nothing fetched from elsewhere
//! at run time, so they work offline. Every number they show comes from the
//! admin API, whose session and role checks apply as to any client.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Where the assets are served (`/console/assets/<name>`).
pub const ASSETS_PREFIX: &str = "/console/assets/";

/// No script, style or connection but our own origin; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; connect-src 'self'; media-src 'self' blob:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One file of `web/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $name)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

static ASSETS: &[Asset] = assets![
    "admin/index.html" => HTML,
    "admin/app.js" => JS,
    "admin/dashboard.js" => JS,
    "admin/members.js" => JS,
    "admin/settings.js" => JS,
    "admin/distribution.js" => JS,
    "staff/index.html" => HTML,
    "staff/app.js" => JS,
    "shared/api.js" => JS,
    "shared/money.js" => JS,
    "shared/dom.js" => JS,
    "shared/session.js" => JS,
    "shared/style.css" => CSS,
    "vendor/chart.umd.min.js" => JS,
];

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// A strong ETag per asset, computed once: pages revalidate (`no-cache`) and
/// get a 304 until the binary changes.
fn etag(asset: &Asset) -> &'static str {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..32])).collect()
    });
    ASSETS.iter().position(|a| a.name == asset.name).and_then(|i| etags.get(i)).map_or("", String::as_str)
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|candidate| candidate.trim() == etag || candidate.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.bytes.into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n").into_response()
}

fn page(name: &'static str, request: &HeaderMap) -> Response {
    find(name).map_or_else(not_found, |asset| serve(asset, request))
}

async fn admin_page(request: HeaderMap) -> Response {
    page("admin/index.html", &request)
}

async fn staff_page(request: HeaderMap) -> Response {
    page("staff/index.html", &request)
}

async fn asset(Path(name): Path<String>, request: HeaderMap) -> Response {
    // Pages are not assets: each has its one address.
    match find(&name) {
        Some(asset) if asset.content_type != HTML => serve(asset, &request),
        _ => not_found(),
    }
}

/// The consoles' routes, to merge into the HTTP application.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(admin_page))
        .route("/staff", get(|| async { Redirect::permanent("/staff/") }))
        .route("/staff/", get(staff_page))
        .route("/console/assets/{*name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_matching_its_extension() {
        for asset in ASSETS {
            let expected = match asset.name.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                Some("html") => HTML,
                other => panic!("unexpected extension {other:?} of {}", asset.name),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.name);
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.name);
        }
    }

    #[test]
    fn pages_reference_only_compiled_in_assets() {
        for asset in ASSETS.iter().filter(|a| a.content_type != CSS) {
            let text = std::str::from_utf8(asset.bytes).unwrap_or_default();
            if asset.name.starts_with("vendor/") {
                continue;
            }
            for (at, _) in text.match_indices(ASSETS_PREFIX) {
                let rest = &text[at + ASSETS_PREFIX.len()..];
                let name: String = rest.chars().take_while(|c| !matches!(c, '"' | '\'' | '`' | ' ' | ')')).collect();
                assert!(find(&name).is_some(), "{} references {name}, which is not compiled in", asset.name);
            }
            // Nothing from another origin: the pages work offline.
            assert!(!text.contains("https://") && !text.contains("http://"), "{} names another origin", asset.name);
        }
    }

    #[test]
    fn etags_differ_per_asset_and_revalidate() {
        let app = find("admin/app.js").unwrap();
        let tag = etag(app);
        assert!(tag.starts_with('"') && tag.len() == 34);
        assert_ne!(tag, etag(find("staff/app.js").unwrap()));
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        assert_eq!(serve(app, &request).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve(app, &HeaderMap::new()).status(), StatusCode::OK);
    }
}
