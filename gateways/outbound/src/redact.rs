//! Keeping credentials out of error text and `Debug` output.
//!
//! WeChat takes its app secrets and access tokens as query parameters, and
//! `reqwest`'s errors print the full URL of the request they belong to. So an
//! error of a transport is turned into text here, never with `to_string()`:
//! [`transport_text`] drops the URL and keeps the cause chain (which is what
//! explains a failure: "connection refused", "connection reset"), and
//! [`strip_url_queries`] removes the query of any URL still left in it.

use std::error::Error as StdError;

/// What stands in for a secret in `Debug` output and error text.
pub const REDACTED: &str = "[redacted]";

/// Links of a cause chain kept in a transport error's text.
const CAUSE_CHAIN_LINKS_MAX: usize = 8;

/// A transport failure as text: the error without its URL, then its causes,
/// with the query of any URL left in them removed.
pub fn transport_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    let mut links = 0;
    while let Some(cause) = source {
        if links == CAUSE_CHAIN_LINKS_MAX {
            break;
        }
        let cause_text = cause.to_string();
        // hyper and reqwest sometimes repeat their cause's text in their own.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
        links += 1;
    }
    strip_url_queries(&text)
}

/// Replaces the query (and fragment) of every `http://` or `https://` URL in
/// `text` with [`REDACTED`]: a query may hold an app secret or a token.
pub fn strip_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url.find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>')).unwrap_or(url.len());
        match url[..end].find(['?', '#']) {
            Some(q) => {
                out.push_str(&url[..=q]);
                out.push_str(REDACTED);
            }
            None => out.push_str(&url[..end]),
        }
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_queries_are_removed_wherever_they_are() {
        let text = "error sending request for url (http://127.0.0.1:9/cgi-bin/token?appid=wx1&secret=S3CR3T): x";
        let stripped = strip_url_queries(text);
        assert!(!stripped.contains("S3CR3T"), "{stripped}");
        assert_eq!(stripped, "error sending request for url (http://127.0.0.1:9/cgi-bin/token?[redacted]): x");
        assert_eq!(
            strip_url_queries("a https://h/p?access_token=T b http://h/q#frag=T"),
            "a https://h/p?[redacted] b http://h/q#[redacted]"
        );
        assert_eq!(strip_url_queries("no url here"), "no url here");
        assert_eq!(strip_url_queries("http://h/p"), "http://h/p");
        assert_eq!(strip_url_queries("ends with https://"), "ends with https://");
    }

    #[tokio::test]
    async fn transport_text_keeps_the_cause_and_drops_the_url() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/cgi-bin/token?secret=SECRET-CANARY-T");
        let e = reqwest::Client::new().get(&url).send().await.unwrap_err();
        assert!(format!("{e}").contains("SECRET-CANARY-T"), "reqwest's own text carries the url: {e}");
        let text = transport_text(e);
        assert!(!text.contains("SECRET-CANARY-T") && !text.contains("/cgi-bin/token"), "{text}");
        assert!(text.to_lowercase().contains("connect"), "the cause is kept: {text}");
    }
}
