//! The dashboard: HTML, CSS and JavaScript modules from `gateway/assets/`, embedded in the binary at build
//! time (no Node, no build step, nothing fetched at run time), served at `/` and `/assets/{*path}`.
//!
//! The page signs in with `/api/v1/auth/login` and reads the API like any client, so these routes need no
//! credentials. Each response carries an `ETag` (a hash of the file, computed at compile time) and
//! `Cache-Control: no-cache`: browsers keep the files but ask again, and get a `304` until a new build
//! changes them. The assets are CSP-clean (no inline scripts, no style attributes), so these responses carry
//! a stricter `Content-Security-Policy` than the gateway's default ([`CSP`]: no `'unsafe-inline'`).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's policy: its own scripts, styles and API only; set here, so the gateway's general header (which
/// leaves `'unsafe-inline'` for its API docs page) does not apply.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'self'";

/// One embedded file.
struct Asset {
    /// Path under `gateway/assets/`.
    path: &'static str,
    body: &'static [u8],
    /// FNV-1a of `body`, the `ETag`.
    hash: u64,
}

/// FNV-1a, 64 bits: enough to tell two builds' files apart, and computable in a `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$({
            const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path));
            Asset { path: $path, body: BODY, hash: fnv1a(BODY) }
        }),*]
    };
}

/// Every file of `gateway/assets/` (a test fails when one is missing here).
const ASSETS: &[Asset] = assets![
    "index.html",
    "style.css",
    "favicon.svg",
    "app.js",
    "api.js",
    "chart.js",
    "dom.js",
    "live.js",
    "pages/agents.js",
    "pages/backtests.js",
    "pages/events.js",
    "pages/llm.js",
    "pages/login.js",
    "pages/overview.js",
    "pages/sentiment.js",
];

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let csp = (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache, csp]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(asset.path)),
            ),
            (header::ETAG, etag),
            cache,
            csp,
        ],
        asset.body,
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve(
        find("index.html").expect("index.html is embedded"),
        &headers,
    )
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path) {
        Some(asset) => serve(asset, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard asset {path:?}"),
        )
            .into_response(),
    }
}

/// `GET /` (the page) and `GET /assets/{*path}` (its files), for any router state: the gateway merges it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets");

    async fn get(uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn files(dir: &std::path::Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files(&entry.path(), &format!("{name}/"), out);
            } else {
                out.insert(name);
            }
        }
    }

    #[test]
    fn every_file_of_the_assets_directory_is_embedded() {
        let mut on_disk = BTreeSet::new();
        files(std::path::Path::new(DIR), "", &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        assert_eq!(
            on_disk, embedded,
            "gateway/assets and the ASSETS list of dashboard.rs differ"
        );
    }

    #[test]
    fn every_module_import_resolves_to_an_embedded_file() {
        let import = regex::Regex::new(r#"(?m)^\s*import\s[^'"]*['"]([^'"]+)['"]"#).unwrap();
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            let base = asset.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            for cap in import.captures_iter(text) {
                let spec = &cap[1];
                let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    find(&target).is_some(),
                    "{} imports {spec:?}, which is not an embedded asset ({target})",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_so_a_strict_csp_holds() {
        let script = regex::Regex::new(r"<script(?P<attrs>[^>]*)>").unwrap();
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".html")) {
            let html = std::str::from_utf8(asset.body).unwrap();
            for cap in script.captures_iter(html) {
                assert!(
                    cap["attrs"].contains("src="),
                    "{}: inline <script>",
                    asset.path
                );
            }
            assert!(!html.contains("<style"), "{}: inline <style>", asset.path);
            assert!(!html.contains("style="), "{}: style attribute", asset.path);
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "{}: loads something from elsewhere",
                asset.path
            );
        }
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let js = std::str::from_utf8(asset.body).unwrap();
            assert!(
                !js.contains("innerHTML") && !js.contains("eval("),
                "{}: builds markup from strings",
                asset.path
            );
        }
    }

    #[tokio::test]
    async fn serves_the_page_and_its_files_with_types_and_etags() {
        let page = get("/", &[]).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self';") && !csp.contains("unsafe"),
            "{csp}"
        );
        let body = to_bytes(page.into_body(), usize::MAX).await.unwrap();
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("/assets/app.js"));

        for (path, ty) in [
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            (
                "/assets/pages/overview.js",
                "text/javascript; charset=utf-8",
            ),
            ("/assets/style.css", "text/css; charset=utf-8"),
            ("/assets/favicon.svg", "image/svg+xml"),
        ] {
            let response = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], ty, "{path}");
            let etag = response.headers()[header::ETAG]
                .to_str()
                .unwrap()
                .to_string();
            let again = get(path, &[("if-none-match", &etag)]).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert!(to_bytes(again.into_body(), usize::MAX)
                .await
                .unwrap()
                .is_empty());
            let stale = get(path, &[("if-none-match", "\"0000\"")]).await;
            assert_eq!(stale.status(), StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn unknown_or_escaping_paths_are_404() {
        for path in [
            "/assets/nope.js",
            "/assets/../Cargo.toml",
            "/assets/%2e%2e/Cargo.toml",
            "/assets/pages/",
        ] {
            assert_eq!(
                get(path, &[]).await.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
