//! HTTP syntax checks that several configuration sections share.

/// RFC 7230 token characters, lowercase only (Envoy lowercases header names).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
}

/// Headers neither a claim mapping nor the authorization service may set upstream: routing,
/// framing and credentials belong to Envoy and the client.
pub(crate) const PROTECTED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "keep-alive",
    "proxy-connection",
    "authorization",
    "cookie",
    "expect",
];

/// Whether a header name may be set upstream by a claim mapping or the service.
pub(crate) fn is_protected_header(name: &str) -> bool {
    name.starts_with(':') || PROTECTED_HEADERS.contains(&name)
}

/// A header name as an upstream may read it: CGI, WSGI and Rack map `x_auth_email` and
/// `x-auth-email` to the same variable, so reserved names are compared in this form.
pub(crate) fn folded_header_name(name: &str) -> String {
    name.bytes().map(|b| char::from(fold_byte(b))).collect()
}

/// Whether `name`, folded, starts with `folded_prefix` (already folded); allocates nothing, as
/// it runs for every request header.
pub(crate) fn folded_starts_with(name: &str, folded_prefix: &str) -> bool {
    name.len() >= folded_prefix.len()
        && name
            .bytes()
            .zip(folded_prefix.bytes())
            .all(|(a, b)| fold_byte(a) == b)
}

fn fold_byte(byte: u8) -> u8 {
    if byte == b'_' {
        b'-'
    } else {
        byte.to_ascii_lowercase()
    }
}

/// Splits `https://host[:port]/path?q` into (`host[:port]`, `/path?q`).
pub(crate) fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

/// The host of a `:authority` value: without its port, in lower case, without trailing dots
/// (a fully qualified `admin.example.com.` is the same host as `admin.example.com`).
pub(crate) fn host_of(authority: &str) -> String {
    strip_port(authority)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// A `:authority` as host rules judge it, case kept: without its port and trailing dots
/// (`api.example.com.:8443` is `api.example.com`).
pub(crate) fn bare_authority(authority: &str) -> &str {
    strip_port(authority).trim_end_matches('.')
}

fn strip_port(authority: &str) -> &str {
    if let Some(end) = authority.strip_prefix('[').and_then(|a| a.find(']')) {
        return &authority[..end + 2];
    }
    match authority.rfind(':') {
        Some(colon) if authority[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &authority[..colon]
        }
        _ => authority,
    }
}
