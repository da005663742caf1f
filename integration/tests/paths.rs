//! Paths, methods and hosts as the rules see them (issue 15, items 3 and 4): every trick that
//! moved a request to a weaker rule on the raw `:path` is judged on the normalised path, which is
//! also what the upstream receives. The harness's Envoy normalises nothing (`normalize_path` and
//! `merge_slashes` off, as in Istio's default for slashes), so only authgate stands in the way.

use authgate_integration::client::raw_request;
use authgate_integration::plugin::{corp_claims, local_provider, ISSUER};
use authgate_integration::{FixtureKey, Gateway, JwksStub, TokenBuilder};
use serde_json::{json, Value};

/// A strict rule for /v1/admin and GET /v1/reports and the admin host, then a public catch-all
/// (the shape of the shipped Istio manifest): a request that slips past a strict rule is admitted.
fn gateway(paths: Value) -> Gateway {
    let superuser_only = |m: Value| json!({"match": m, "requires_any": ["jwt:corp"], "require_roles": ["superuser"]});
    let plugin = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "paths": paths,
        "rules": [
            superuser_only(json!({"prefix": "/", "hosts": ["admin.corp.test"]})),
            superuser_only(json!({"prefix": "/v1/admin"})),
            superuser_only(json!({"prefix": "/v1/reports", "methods": ["GET"]})),
            {"match": {"prefix": "/"}, "public": true}
        ]
    });
    Gateway::start(&plugin, authgate_integration::jwks(&[]))
}

fn alice() -> String {
    let mut claims = corp_claims("alice");
    claims["iss"] = json!(ISSUER);
    TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign()
}

/// `method target` with alice's token (no superuser role) and these extra header lines.
fn send(gw: &Gateway, method_and_target: &str, extra: &str) -> (u16, String) {
    let headers = format!("authorization: Bearer {}\r\n{extra}", alice());
    raw_request(gw.envoy.port(), method_and_target, headers.as_bytes())
}

fn upstream_path(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|j| j["path"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<not from upstream: {body}>"))
}

#[test]
fn path_tricks_do_not_reach_a_weaker_rule() {
    let gw = gateway(json!({}));
    let mut failures = Vec::new();
    for target in [
        "//v1/admin",
        "/v1//admin",
        "/v1/./admin",
        "/v1/x/../admin",
        "/v1/x/%2e%2e/admin",
        "/v1/%61dmin",
        "/v1/%61%64%6D%69%6E/users",
        "/v1/admin/",
        "/v1\\admin",
        "/./v1/admin?x=1",
        "/../v1/admin",
    ] {
        let (status, body) = send(&gw, &format!("GET {target}"), "");
        if status != 403 {
            failures.push(format!("GET {target}: {status} {body}"));
        }
    }
    // Parameters and encoded separators are refused, not guessed at.
    for target in [
        "/v1/admin;x=1",
        "/v1;/admin",
        "/v1%2Fadmin",
        "/v1/x%2F..%2Fadmin",
        "/v1%5Cadmin",
        "/v1/%zz",
    ] {
        let (status, body) = send(&gw, &format!("GET {target}"), "");
        if status != 400 || !body.contains("\"bad_request\"") {
            failures.push(format!(
                "GET {target}: want 400 bad_request, got {status} {body}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(gw.envoy.stat("authgate.denied.bad_request"), 6);
    assert_eq!(
        gw.upstream.requests(),
        0,
        "nothing refused reached the upstream"
    );
}

#[test]
fn the_upstream_receives_the_path_that_was_judged() {
    let gw = gateway(json!({}));
    for (target, seen) in [
        ("/docs/./a/../b?q=1&r=%2F", "/docs/b?q=1&r=%2F"),
        ("//docs///b", "/docs/b"),
        ("/docs/%7euser/%c3%a9", "/docs/~user/%C3%A9"),
        ("/docs/plain?x=/../y", "/docs/plain?x=/../y"),
    ] {
        let (status, body) = send(&gw, &format!("GET {target}"), "");
        assert_eq!(status, 200, "GET {target}: {body}");
        assert_eq!(upstream_path(&body), seen, "GET {target}");
    }
}

#[test]
fn head_is_judged_as_get_and_hosts_as_names() {
    let gw = gateway(json!({}));
    let (status, body) = send(&gw, "HEAD /v1/reports", "");
    assert_eq!(status, 403, "HEAD falls under a GET rule: {body}");
    let (status, _) = send(&gw, "POST /v1/reports", "content-length: 0\r\n");
    assert_eq!(status, 200, "POST is not GET: the public rule");
    for host in [
        "admin.corp.test.",
        "admin.corp.test:8443",
        "ADMIN.Corp.Test.:80",
        "admin.corp.test..",
    ] {
        let (status, body) = send(&gw, "GET /anything", &format!("host: {host}\r\n"));
        assert_eq!(status, 403, "host {host}: {body}");
    }
    let (status, _) = send(&gw, "GET /anything", "host: other.corp.test\r\n");
    assert_eq!(status, 200, "another host: the public rule");
}

/// A public rule for one host, then a strict catch-all, behind an Envoy with a virtual host for
/// that public host and a catch-all one routing to the upstream. Envoy (by default) routes
/// `public.corp.test.` and `public.corp.test:8080` to the catch-all, while the rules ignore the
/// dot and the port: authgate sends such a request on with the host it judged, so Envoy routes it
/// to the public host's virtual host and never to the upstream.
#[test]
fn a_request_judged_by_its_host_is_routed_by_that_host() {
    let plugin = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [
            {"match": {"prefix": "/", "hosts": ["public.corp.test"]}, "public": true},
            {"match": {"prefix": "/", "hosts": ["api.corp.test"]}, "requires_any": ["jwt:corp"]},
            {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "require_roles": ["superuser"]}
        ]
    });
    let gw = Gateway::start_with(
        &plugin,
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.virtual_host(&["public.corp.test"], "the public site\n"),
    );
    for host in [
        "public.corp.test",
        "public.corp.test.",
        "public.corp.test:8080",
        "PUBLIC.corp.test.:80",
        "public.corp.test..",
    ] {
        let (status, body) = raw_request(
            gw.envoy.port(),
            "GET /private",
            format!("host: {host}\r\n").as_bytes(),
        );
        assert_eq!(
            (status, body.as_str()),
            (200, "the public site\n"),
            "host {host}: the public rule judged it, so the public virtual host must answer"
        );
    }
    assert_eq!(
        gw.upstream.requests(),
        0,
        "nothing unauthenticated reached the upstream"
    );

    // The upstream gets the host that was judged, not the client's spelling.
    let (status, body) = send(&gw, "GET /x", "host: API.corp.test.:8443\r\n");
    let seen: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        (status, seen["headers"]["host"].as_str()),
        (200, Some("API.corp.test")),
        "{body}"
    );
}

#[test]
fn refuse_mode_answers_400_instead_of_rewriting() {
    let gw = gateway(json!({"unnormalised": "refuse"}));
    let (status, body) = send(&gw, "GET /docs/./a", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not in normalised form"), "{body}");
    let (status, body) = send(&gw, "GET /docs/a?x=/./", "");
    assert_eq!(
        status, 200,
        "a normalised path (query untouched) passes: {body}"
    );
    assert_eq!(upstream_path(&body), "/docs/a?x=/./");
    assert_eq!(gw.upstream.requests(), 1);
}

#[test]
fn allowed_params_are_judged_without_them_and_forwarded_with_them() {
    let gw = gateway(json!({"allow_params": true, "allow_encoded_slash": true}));
    let (status, body) = send(&gw, "GET /v1/admin;x=1", "");
    assert_eq!(status, 403, "params do not hide /v1/admin: {body}");
    let (status, body) = send(&gw, "GET /v1/a%2f..%2fadmin", "");
    assert_eq!(
        status, 200,
        "an encoded slash never separates segments: {body}"
    );
    assert_eq!(upstream_path(&body), "/v1/a%2F..%2Fadmin");
    let (status, body) = send(&gw, "GET /docs;v=2/./a", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream_path(&body), "/docs;v=2/a");
}
