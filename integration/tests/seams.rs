//! The trust seams around the core (issue 15): headers the upstream trusts that a client could
//! write (items 1, 2), and a refused request that must never reach the upstream, whatever the
//! companion's placement, with trailers, over HTTP/2 (item 5). Each test tries the attack.

use authgate_integration::authz_stub::{AuthzMode, AuthzStub};
use authgate_integration::client::raw_request;
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{EnvoyConfig, FixtureKey, Gateway, JwksStub, Req, TokenBuilder};
use serde_json::{json, Value};

fn token() -> String {
    TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign()
}

fn plugin(failure_mode: &str) -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [
            {"match": {"prefix": "/public/"}, "public": true},
            {"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp"], "enterprise": true,
             "session_reply": "openai"}
        ],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 1000,
                       "failure_mode": failure_mode,
                       "upstream_headers": ["x-authz-subject", "x-user-email"],
                       "cache": {"allow_ttl_s": 60, "deny_ttl_s": 1}},
        "session": {"reauth_url": "https://sso.example.com/reauth", "hold_companion": true}
    })
}

fn gateway(
    plugin: &Value,
    stub: &AuthzStub,
    edit: impl FnOnce(EnvoyConfig) -> EnvoyConfig,
) -> Gateway {
    let idp = JwksStub::start(authgate_integration::jwks(&[]));
    Gateway::start_with(plugin, idp, |c| edit(c.cluster("authz", stub.port())))
}

/// Every spelling of the service's and authgate's names a client might send.
const SPOOFED: &[u8] = b"x-authz-subject: admin\r\n\
x_authz_subject: admin\r\n\
X-User-Email: ceo@corp.example\r\n\
x_user_email: ceo@corp.example\r\n\
x_auth_email: ceo@corp.example\r\n\
X_Auth_Roles: admin\r\n\
x-auth-subject: admin\r\n\
x_tenant: evil\r\n\
x-authgate-hold: 1\r\n\
x_authgate_hold: 1\r\n";

/// The headers the echo upstream received, or a panic naming what came back instead.
fn upstream_headers(status: u16, body: &str) -> serde_json::Map<String, Value> {
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["headers"].as_object().cloned().unwrap_or_default()
}

/// No header the client wrote under a reserved name, in any spelling, reached the upstream (no
/// underscore spelling at all, no spoofed value); `expected` are values authgate or the service set.
fn assert_only_set_by_us(headers: &serde_json::Map<String, Value>, expected: &[(&str, &str)]) {
    const SPOOFED_VALUES: [&str; 4] = ["admin", "ceo@corp.example", "evil", "1"];
    for (name, value) in headers {
        let folded = name.replace('_', "-");
        let reserved = folded.starts_with("x-auth-")
            || [
                "x-authz-subject",
                "x-user-email",
                "x-tenant",
                "x-authgate-hold",
            ]
            .contains(&folded.as_str());
        if !reserved {
            continue;
        }
        assert!(!name.contains('_'), "the upstream got {name}: {value}");
        assert!(
            !SPOOFED_VALUES.iter().any(|v| value == v),
            "the upstream got the client's {name}: {value}"
        );
    }
    for (name, value) in expected {
        assert_eq!(
            headers.get(*name).and_then(Value::as_str),
            Some(*value),
            "{name}"
        );
    }
}

#[test]
fn the_service_sets_only_listed_headers_and_a_client_sets_none() {
    let stub = AuthzStub::start(AuthzMode::Json(json!({
        "authorized": true,
        "headers": {"x-authz-subject": "alice", "x-unlisted": "from-service",
                    "x-forwarded-for": "6.6.6.6"}
    })));
    let gw = gateway(&plugin("deny"), &stub, |c| c);
    let bearer = format!("authorization: Bearer {}\r\n", token());
    for round in ["call", "cached"] {
        let mut headers = bearer.clone().into_bytes();
        headers.extend_from_slice(SPOOFED);
        let (status, body) = raw_request(gw.envoy.port(), "GET /v1/models", &headers);
        let seen = upstream_headers(status, &body);
        assert_only_set_by_us(
            &seen,
            &[("x-authz-subject", "alice"), ("x-auth-subject", "alice")],
        );
        assert!(!seen.contains_key("x-unlisted"), "{round}: {seen:?}");
        assert_ne!(
            seen.get("x-forwarded-for").and_then(Value::as_str),
            Some("6.6.6.6"),
            "{round}"
        );
    }
    assert_eq!(stub.request_count(), 1);
    assert_eq!(gw.envoy.stat("authgate.authz_header_dropped"), 2);
}

#[test]
fn reserved_names_are_stripped_on_public_and_failure_mode_allow_paths() {
    let stub = AuthzStub::start(AuthzMode::Status(503));
    let gw = gateway(&plugin("allow"), &stub, |c| c);
    let (status, body) = raw_request(gw.envoy.port(), "GET /public/page", SPOOFED);
    assert_only_set_by_us(&upstream_headers(status, &body), &[]);

    let mut headers = format!("authorization: Bearer {}\r\n", token()).into_bytes();
    headers.extend_from_slice(SPOOFED);
    let (status, body) = raw_request(gw.envoy.port(), "GET /v1/models", &headers);
    let seen = upstream_headers(status, &body);
    assert_only_set_by_us(
        &seen,
        &[
            ("x-auth-subject", "alice"),
            ("x-auth-authz", "failure-mode-allow"),
        ],
    );
    assert_eq!(gw.envoy.stat("authgate.failure_mode_allowed"), 1);
}

fn expired() -> AuthzMode {
    AuthzMode::Json(json!({"authorized": false,
        "session": {"status": "expired", "reauth_url": "https://sso.example.com/reauth?c=1"}}))
}

const CHAT: &str = r#"{"model": "gpt-5", "stream": false, "messages": []}"#;

/// A session-expired reply, whatever shape: it names the re-auth URL.
fn is_session_reply(status: u16, body: &str) -> bool {
    (200..500).contains(&status) && body.contains("https://sso.example.com/reauth?c=1")
}

#[test]
fn without_a_registered_companion_the_reply_goes_at_the_headers() {
    let stub = AuthzStub::start(expired());
    // `hold_companion: true`, but no companion in the chain.
    let gw = gateway(&plugin("deny"), &stub, |c| c);
    let reply = Req::post(gw.url("/v1/chat/completions"))
        .bearer(&token())
        .body(CHAT)
        .send();
    assert!(is_session_reply(reply.status, &reply.body), "{reply}");
    assert_eq!(
        gw.upstream.requests(),
        0,
        "the refused request reached the upstream"
    );
}

#[test]
fn a_companion_placed_first_lets_nothing_through() {
    let stub = AuthzStub::start(expired());
    let gw = gateway(&plugin("deny"), &stub, EnvoyConfig::companion_first);
    let reply = Req::post(gw.url("/v1/chat/completions"))
        .bearer(&token())
        .body(CHAT)
        .send();
    assert_ne!(reply.status, 200, "{reply}");
    assert!(!reply.is_from_upstream(), "{reply}");
    assert_eq!(
        gw.upstream.requests(),
        0,
        "the refused request reached the upstream"
    );
}

/// A POST of the chat body over h2c, with request trailers unless `trailers` is false.
fn h2_post(port: u16, path: &str, token: &str, trailers: bool) -> Value {
    authgate_integration::client::h2_post(port, path, token, &["--body", CHAT], trailers)
}

#[test]
fn request_trailers_end_a_held_request_over_h2c() {
    for companion in [true, false] {
        let stub = AuthzStub::start(expired());
        let gw = gateway(&plugin("deny"), &stub, |c| {
            if companion {
                c.hold_companion()
            } else {
                c
            }
        });
        for trailers in [true, false] {
            let reply = h2_post(gw.envoy.port(), "/v1/chat/completions", &token(), trailers);
            let what = format!("companion {companion}, trailers {trailers}: {reply}");
            assert_eq!(reply["timed_out"], false, "{what}");
            let status = u16::try_from(reply["status"].as_u64().unwrap_or(0)).unwrap_or(0);
            assert!(
                is_session_reply(status, reply["body"].as_str().unwrap_or("")),
                "{what}"
            );
            if companion {
                // The body was read: the reply names the model the client asked for.
                assert!(
                    reply["body"].as_str().unwrap_or("").contains("gpt-5"),
                    "{what}"
                );
            }
        }
        assert_eq!(
            gw.upstream.requests(),
            0,
            "companion {companion}: reached the upstream"
        );
    }
}
