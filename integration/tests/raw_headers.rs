//! Header bytes that are not UTF-8 (HTTP allows obs-text, bytes 0x80–0xFF, in field values and
//! Envoy passes them on). The proxy-wasm SDK's header-map reader panics on them, and a panic
//! kills the filter's VM: every later request on that worker would fail. authgate reads the map
//! itself; a credential that is not UTF-8 is an invalid credential, any other such header is
//! passed through untouched.

use authgate_integration::client::raw_request;
use authgate_integration::expect;
use authgate_integration::plugin::{corp_claims, corp_config, local_provider};
use authgate_integration::{jwks, FixtureKey, Gateway, Req, TokenBuilder};

/// `GET path` written byte for byte.
fn raw_get(port: u16, path: &str, extra_headers: &[u8]) -> (u16, String) {
    raw_request(port, &format!("GET {path}"), extra_headers)
}

#[test]
fn header_values_that_are_not_utf8_are_judged_not_fatal() {
    let gw = Gateway::start(&corp_config(local_provider(&[FixtureKey::Rsa1])), jwks(&[]));
    let port = gw.envoy.port();
    let token = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign();
    let bearer = format!("authorization: Bearer {token}\r\n");

    // A valid token next to a Latin-1 header: allowed, the odd header reaches the upstream.
    let mut headers = bearer.clone().into_bytes();
    headers.extend_from_slice(b"x-note: caf\xe9\r\n");
    let (status, body) = raw_get(port, "/api/items", &headers);
    assert_eq!(status, 200, "valid token beside a Latin-1 header: {body}");

    // A credential that is not UTF-8: an invalid credential (401), not a crash.
    let (status, body) = raw_get(
        port,
        "/api/items",
        b"authorization: Bearer \xff\xfe.a.b\r\n",
    );
    assert_eq!(status, 401, "non-UTF-8 bearer: {body}");
    assert!(body.contains("invalid_token"), "{body}");

    // No credential, odd bytes elsewhere: the usual 401 for a missing credential.
    let (status, body) = raw_get(port, "/api/items", b"x-note: \x80\x81\r\n");
    assert_eq!(status, 401, "Latin-1 header, no credential: {body}");

    // A spoofed identity header with odd bytes is still removed before the upstream.
    let mut headers = bearer.into_bytes();
    headers.extend_from_slice(b"x-auth-roles: \xffadmin\r\n");
    let (status, body) = raw_get(port, "/api/items", &headers);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"x-auth-roles\":\"user,admin\""),
        "spoofed x-auth-roles replaced: {body}"
    );

    // The worker's VM is alive: a normal request still passes.
    let reply = Req::get(gw.url("/api/items")).bearer(&token).send();
    expect::allowed(&reply).unwrap_or_else(|e| panic!("after odd headers: {e}"));
}
