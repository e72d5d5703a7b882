//! The web console: three static files compiled into the binary, so that
//! installing the broker needs no build step and no network, served
//! without credentials (the page asks for them, and sends them with each
//! API request it makes).

use hyper::StatusCode;
use hyper::header::{CONTENT_SECURITY_POLICY, HeaderValue, LOCATION, X_CONTENT_TYPE_OPTIONS};

use super::Answer;
use super::api::answer;

/// A request carrying this header comes from the console's own script: a
/// 401 to it carries no `WWW-Authenticate`, which would make the browser
/// open its own login dialog over the page's form.
pub const CONSOLE_HEADER: &str = "x-sluice-console";

/// Scripts, styles and requests only from this origin, so that nothing
/// inline runs (a queue name can never become code), and no other site
/// may frame the page to trick a click on its buttons.
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; frame-ancestors 'none'";

/// Each file: its path, content type and text.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/console/",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
];

/// The answer to a `GET` of `path` if it is one of the console's: a file,
/// or (`/`) the way to the console.
pub fn file(path: &str) -> Option<Answer> {
    if path == "/" {
        return Some(to_console());
    }
    let &(_, content_type, text) = FILES.iter().find(|&&(file, _, _)| file == path)?;
    let mut file = answer(StatusCode::OK, content_type, text);
    let headers = file.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    // A browser must not guess another type than the one given: a
    // script is run only if served as one.
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(file)
}

/// 302 to the console. The location is relative, so that it holds behind
/// a proxy that serves the listener under a path of its own.
fn to_console() -> Answer {
    let mut found = answer(StatusCode::FOUND, "text/plain; charset=utf-8", "console/");
    found
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("console/"));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::CONTENT_TYPE;

    fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
        answer
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn each_file_has_its_type_and_the_security_headers() {
        let types = [
            ("/console/", "text/html"),
            ("/console/console.js", "text/javascript"),
            ("/console/console.css", "text/css"),
        ];
        for (path, content_type) in types {
            let file = file(path).unwrap();
            assert_eq!(file.status(), StatusCode::OK, "{path}");
            assert!(
                header(&file, CONTENT_TYPE.as_str()).starts_with(content_type),
                "{path}"
            );
            assert_eq!(
                header(&file, "content-security-policy"),
                "default-src 'self'; frame-ancestors 'none'",
                "{path}"
            );
            assert_eq!(header(&file, "x-content-type-options"), "nosniff");
        }
        assert!(file("/console/other.js").is_none());
        assert!(file("/console").is_none());
    }

    #[test]
    fn the_root_leads_to_the_console() {
        let found = file("/").unwrap();
        assert_eq!(found.status(), StatusCode::FOUND);
        assert_eq!(header(&found, "location"), "console/");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_nothing_inline() {
        let page = FILES[0].2;
        assert!(page.contains(r#"<script src="console.js""#));
        assert!(page.contains(r#"<link rel="stylesheet" href="console.css""#));
        for forbidden in ["http:", "https:", "//", "<style", "style="] {
            assert!(!page.contains(forbidden), "index.html holds {forbidden:?}");
        }
        assert_eq!(page.matches("<script").count(), 1);
        let script = FILES[1].2;
        assert!(!script.contains("innerHTML"), "console.js uses innerHTML");
    }
}
