//! A read-only view of the request headers the shell read once from the host.

use std::cell::OnceCell;

pub struct Request<'a> {
    headers: &'a [(&'a str, &'a str)],
    source: Source<'a>,
    /// The path the rules judge, once normalised (`core::policy::paths`); the raw one until then.
    normalised_path: OnceCell<String>,
    /// The `:path` the request must go upstream with, when it differs from the client's.
    upstream_path: OnceCell<String>,
    /// The headers ended the stream: the request has no body (unknown: assume one may follow).
    ends_at_headers: bool,
    /// The whole body, when the shell read it (for `match.mcp` rules).
    body: Option<&'a [u8]>,
}

/// The downstream address: given, or looked up from the host the first time it is needed (most
/// requests never need it: asking costs a host call).
enum Source<'a> {
    Unknown,
    Given(&'a str),
    Lookup(&'a dyn Fn() -> Option<String>, OnceCell<Option<String>>),
}

impl<'a> Request<'a> {
    pub fn new(headers: &'a [(&'a str, &'a str)]) -> Self {
        Request {
            headers,
            source: Source::Unknown,
            normalised_path: OnceCell::new(),
            upstream_path: OnceCell::new(),
            ends_at_headers: false,
            body: None,
        }
    }

    /// The request's whole body, read by the shell because the engine asked (`Step::ReadBody`).
    pub fn with_body(mut self, body: Option<&'a [u8]>) -> Self {
        self.body = body;
        self
    }

    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }

    /// Whether the headers ended the stream (Envoy's `end_of_stream`).
    pub fn with_end_of_stream(mut self, end_of_stream: bool) -> Self {
        self.ends_at_headers = end_of_stream;
        self
    }

    /// True only when the host said the headers ended the stream.
    pub fn has_no_body(&self) -> bool {
        self.ends_at_headers
    }

    /// The downstream connection's address (`ip:port`); the shell reads it only when the
    /// configuration needs the client's address.
    pub fn with_source_address(mut self, address: Option<&'a str>) -> Self {
        self.source = address.map_or(Source::Unknown, Source::Given);
        self
    }

    /// The address comes from `lookup`, called at most once, and only if needed.
    pub fn with_source_lookup(mut self, lookup: &'a dyn Fn() -> Option<String>) -> Self {
        self.source = Source::Lookup(lookup, OnceCell::new());
        self
    }

    pub fn source_address(&self) -> Option<&str> {
        match &self.source {
            Source::Unknown => None,
            Source::Given(address) => Some(address),
            Source::Lookup(lookup, cell) => cell.get_or_init(lookup).as_deref(),
        }
    }

    /// First value of a header; `name` must be lowercase (Envoy lowercases header names).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.headers.iter().copied()
    }

    pub fn method(&self) -> &'a str {
        self.header(":method").unwrap_or("")
    }

    pub fn authority(&self) -> &'a str {
        self.header(":authority")
            .or_else(|| self.header("host"))
            .unwrap_or("")
    }

    /// The path without its query string: normalised once `set_normalised_path` was called.
    pub fn path(&self) -> &str {
        match self.normalised_path.get() {
            Some(path) => path,
            None => self.raw_path().unwrap_or("/"),
        }
    }

    /// `:path` as the client sent it, without its query string; None when there is no `:path`.
    pub fn raw_path(&self) -> Option<&'a str> {
        let full = self.header(":path")?;
        Some(full.split_once('?').map_or(full, |(path, _)| path))
    }

    /// The query string of `:path` (after `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.header(":path")?
            .split_once('?')
            .map(|(_, query)| query)
    }

    /// The path the rules judge from now on (set once per request).
    pub fn set_normalised_path(&self, path: String) {
        let _ = self.normalised_path.set(path);
    }

    /// The `:path` (query included) the request must be sent upstream with, if the core decided
    /// it must differ from the client's.
    pub fn upstream_path(&self) -> Option<&str> {
        self.upstream_path.get().map(String::as_str)
    }

    pub fn set_upstream_path(&self, path: String) {
        let _ = self.upstream_path.set(path);
    }

    /// The host the request is for: `:authority` without its port, in lower case, without
    /// trailing dots (`API.Example.com.:443` is `api.example.com`).
    pub fn host(&self) -> String {
        crate::core::syntax::host_of(self.authority())
    }

    pub fn request_id(&self) -> Option<&'a str> {
        self.header("x-request-id")
    }

    /// One cookie's value from the `cookie` header(s).
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .filter(|(n, _)| *n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.trim_matches('"'))
    }
}

impl<'a> Request<'a> {
    /// The `Cookie` header without any cookie called `name` (several `cookie` headers joined):
    /// empty when no other cookie is left.
    pub fn cookies_without(&self, name: &str) -> String {
        self.cookies_without_any(&|n: &str| n == name)
    }

    /// The `Cookie` header without the cookies whose name `drop` picks.
    pub fn cookies_without_any(&self, drop: &dyn Fn(&str) -> bool) -> String {
        self.cookie_pairs()
            .filter(|pair| !drop(cookie_name(pair)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether any cookie's name is one `pick` picks.
    pub fn has_cookie(&self, pick: &dyn Fn(&str) -> bool) -> bool {
        self.cookie_pairs().any(|pair| pick(cookie_name(pair)))
    }

    fn cookie_pairs(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(|(n, _)| *n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
    }
}

fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name).trim()
}

/// Owned header pairs as the slices [`Request::new`] takes (for tools and tests).
pub fn borrow_pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_drops_query_and_cookie_parsing() {
        let h = [(":path", "/a/b?x=1"), ("cookie", "a=1; session=tok; b=2")];
        let r = Request::new(&h);
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.cookie("session"), Some("tok"));
        assert_eq!(r.cookie("sess"), None);
    }

    #[test]
    fn a_cookie_is_removed_from_every_cookie_header_and_the_rest_kept() {
        let h = [
            ("cookie", "a=1; session=tok; b=2"),
            ("cookie", "session=again;c=3"),
        ];
        let r = Request::new(&h);
        assert_eq!(r.cookies_without("session"), "a=1; b=2; c=3");
        assert_eq!(
            r.cookies_without("a"),
            "session=tok; b=2; session=again; c=3"
        );
        let only = [("cookie", " session=tok ")];
        assert_eq!(Request::new(&only).cookies_without("session"), "");
    }
}
