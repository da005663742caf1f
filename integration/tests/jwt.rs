//! JWT authentication in real Envoy (DESIGN.md: "Decisions and what the client gets",
//! "Security invariants"). Each test starts its own small Envoy; cases sharing a configuration
//! share one Envoy and report every mismatch at once (`Checks`).

use authgate_integration::expect::{self, Checks};
use authgate_integration::plugin::{
    corp_claims, corp_config, local_provider, remote_provider, stat, AUDIENCE, ISSUER,
};
use authgate_integration::tokens::{
    alg_none, b64, corrupt_signature, now, swap_payload, TokenBuilder,
};
use authgate_integration::{jwks, wait_until, FixtureKey, Gateway, Reply, Req};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

fn token(key: FixtureKey, claims: Value) -> String {
    TokenBuilder::new(key).claims(claims).sign()
}

/// A GET with a bearer token and a request id.
fn get_with(gw: &Gateway, path: &str, token: &str, request_id: &str) -> Reply {
    Req::get(gw.url(path))
        .bearer(token)
        .header("x-request-id", request_id)
        .send()
}

/// A gateway whose keys come from the JWKS stub (`rsa-1`, `ec-1`, `ed-1`), already fetched.
fn remote_gateway(plugin: &Value) -> Gateway {
    let gw = Gateway::start(
        plugin,
        jwks(&[FixtureKey::Rsa1, FixtureKey::Ec1, FixtureKey::Ed1]),
    );
    gw.wait_jwks_fetched();
    gw
}

/// A gateway whose keys are inline (`local_jwks`); the JWKS stub is there but unused.
fn local_gateway(plugin: &Value) -> Gateway {
    Gateway::start(plugin, jwks(&[]))
}

#[test]
fn valid_token_reaches_upstream_with_identity_headers() {
    let gw = remote_gateway(&corp_config(remote_provider(600)));
    let mut checks = Checks::new();

    let alice = token(FixtureKey::Rsa1, corp_claims("alice"));
    let reply = Req::get(gw.url("/api/items?limit=1"))
        .bearer(&alice)
        .header("x-auth-subject", "mallory")
        .header("x-auth-email", "mallory@evil.example")
        .header("x-auth-roles", "superuser")
        .header("x-auth-scopes", "everything")
        .header("x-auth-credential", "api_key")
        .header("x-auth-provider", "evil")
        .header("x-auth-anything", "spoofed")
        .header("x-tenant", "evil-corp")
        .send();
    checks.check("allowed", expect::allowed(&reply));
    for (name, value) in [
        ("x-auth-subject", Some("alice")),
        ("x-auth-email", Some("alice@example.com")),
        ("x-auth-roles", Some("user,admin")),
        ("x-auth-scopes", Some("llm:invoke,read")),
        ("x-auth-credential", Some("jwt")),
        ("x-auth-provider", Some("corp")),
        ("x-tenant", Some("acme")),
        ("x-auth-anything", None),
        ("authorization", None),
    ] {
        checks.check(
            &format!("upstream {name}"),
            expect::upstream_header(&reply, name, value),
        );
    }
    let path = reply
        .json()
        .and_then(|j| j["path"].as_str().map(str::to_string));
    checks.check(
        "path and query untouched",
        if path.as_deref() == Some("/api/items?limit=1") {
            Ok(())
        } else {
            Err(format!("{path:?}"))
        },
    );

    // A token without email / tenant / roles: the spoofed headers must be gone, not kept.
    let bare = token(
        FixtureKey::Ec1,
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "exp": now() + 600}),
    );
    let reply = Req::get(gw.url("/api/items"))
        .bearer(&bare)
        .header("x-auth-email", "mallory@evil.example")
        .header("x-auth-roles", "superuser")
        .header("x-tenant", "evil-corp")
        .send();
    checks.check("ES256 allowed", expect::allowed(&reply));
    checks.check(
        "bob subject",
        expect::upstream_header(&reply, "x-auth-subject", Some("bob")),
    );
    for name in ["x-auth-email", "x-auth-roles", "x-tenant", "authorization"] {
        checks.check(
            &format!("spoofed {name} removed"),
            expect::upstream_header(&reply, name, None),
        );
    }

    // EdDSA, and an audience list that contains the gateway.
    let mut claims = corp_claims("carol");
    claims["aud"] = json!(["other", AUDIENCE]);
    let reply = Req::get(gw.url("/api/x"))
        .bearer(&token(FixtureKey::Ed1, claims))
        .send();
    checks.check("EdDSA with aud array allowed", expect::allowed(&reply));
    checks.check(
        "carol",
        expect::upstream_header(&reply, "x-auth-subject", Some("carol")),
    );

    // Public route: no credential needed, and spoofed identity headers still never pass.
    let reply = Req::get(gw.url("/public"))
        .header("x-auth-subject", "mallory")
        .header("x-tenant", "evil-corp")
        .send();
    checks.check("public route allowed", expect::allowed(&reply));
    checks.check(
        "public: spoofed x-auth-subject removed",
        expect::upstream_header(&reply, "x-auth-subject", None),
    );
    checks.check(
        "public: spoofed x-tenant removed",
        expect::upstream_header(&reply, "x-tenant", None),
    );
    checks.finish();
}

#[test]
fn bad_tokens_get_401_invalid_token() {
    let gw = remote_gateway(&corp_config(remote_provider(600)));
    let good = corp_claims("alice");
    let with = |name: &str, value: Value| {
        let mut c = good.clone();
        c[name] = value;
        c
    };
    let without = |name: &str| {
        let mut c = good.clone();
        c.as_object_mut().map(|o| o.remove(name));
        c
    };
    let rsa1 = |claims: Value| token(FixtureKey::Rsa1, claims);
    let valid = rsa1(good.clone());
    let rsa1_pub_pem = FixtureKey::Rsa1.public_pem().unwrap_or_default().as_bytes();
    let mut big = good.clone();
    big["padding"] = json!("x".repeat(17 * 1024));

    let cases: Vec<(&str, String)> = vec![
        ("corrupted signature", corrupt_signature(&valid)),
        (
            "payload swapped under a valid signature",
            swap_payload(&valid, &with("sub", json!("root"))),
        ),
        (
            "signed by another key under kid rsa-1",
            TokenBuilder::new(FixtureKey::Rsa3)
                .kid(Some("rsa-1"))
                .claims(good.clone())
                .sign(),
        ),
        (
            "wrong issuer",
            rsa1(with("iss", json!("https://evil.test"))),
        ),
        (
            "issuer with a trailing slash",
            rsa1(with("iss", json!("https://idp.test/"))),
        ),
        ("wrong audience", rsa1(with("aud", json!("other")))),
        ("no audience", rsa1(without("aud"))),
        (
            "nbf 120 s in the future",
            rsa1(with("nbf", json!(now() + 120))),
        ),
        (
            "no exp (require_expiration defaults to true)",
            rsa1(without("exp")),
        ),
        (
            "malformed: three garbage segments",
            "abc.def.ghi".to_string(),
        ),
        (
            "malformed: two segments",
            valid
                .rsplit_once('.')
                .map(|(head, _)| head)
                .unwrap_or("")
                .to_string(),
        ),
        (
            "malformed: header is not JSON",
            format!("{}.{}.{}", b64("nope"), b64(&good.to_string()), "c2ln"),
        ),
        (
            "opaque (non-JWT) bearer with opaque_tokens=reject",
            "not-a-jwt-at-all".to_string(),
        ),
        (
            "unknown kid",
            TokenBuilder::new(FixtureKey::Rsa3)
                .claims(good.clone())
                .sign(),
        ),
        ("alg none", alg_none("rsa-1", &good)),
        (
            "HS256 signed with the RSA key's public PEM (kid rsa-1)",
            TokenBuilder::new(FixtureKey::Rsa1)
                .claims(good.clone())
                .hmac_secret(rsa1_pub_pem)
                .sign(),
        ),
        (
            "HS256 signed with the RSA key's public PEM (no kid)",
            TokenBuilder::new(FixtureKey::Rsa1)
                .kid(None)
                .claims(good.clone())
                .hmac_secret(rsa1_pub_pem)
                .sign(),
        ),
        (
            "RS384 with an RS256 key",
            TokenBuilder::new(FixtureKey::Rsa1)
                .alg(Algorithm::RS384)
                .claims(good.clone())
                .sign(),
        ),
        (
            "ES256 token under an RSA kid",
            TokenBuilder::new(FixtureKey::Ec1)
                .kid(Some("rsa-1"))
                .claims(good.clone())
                .sign(),
        ),
        (
            "embedded jwk of the signer's own key",
            TokenBuilder::new(FixtureKey::Rsa3)
                .header(|h| h.jwk = serde_json::from_value(FixtureKey::Rsa3.public_jwk()).ok())
                .claims(good.clone())
                .sign(),
        ),
        (
            "jku pointing to the attacker's JWKS",
            TokenBuilder::new(FixtureKey::Rsa3)
                .header(|h| h.jku = Some("http://127.0.0.1:9/jwks".into()))
                .claims(good.clone())
                .sign(),
        ),
        (
            "oversized token (> 16 KiB) with a valid signature",
            rsa1(big),
        ),
    ];

    let mut checks = Checks::new();
    // Verify (and so cache) the valid token first: a cached verification must never make a
    // token with the same payload but another signature pass.
    checks.check(
        "valid token allowed",
        expect::allowed(&get_with(&gw, "/api/items", &valid, "first")),
    );
    let upstream_before = gw.upstream.requests();
    for (i, (name, bad)) in cases.iter().enumerate() {
        let request_id = format!("bad-token-{i}");
        let reply = get_with(&gw, "/api/items", bad, &request_id);
        checks.check(name, expect::invalid_token(&reply));
        checks.check(
            &format!("{name}: request_id"),
            expect::request_id(&reply, &request_id),
        );
        checks.check(
            &format!("{name}: no token in reply"),
            expect::no_token_leak(&reply, bad),
        );
    }
    let upstream_hits = gw.upstream.requests() - upstream_before;
    checks.check(
        "no bad token reached the upstream",
        if upstream_hits == 0 {
            Ok(())
        } else {
            Err(format!("upstream saw {upstream_hits} requests"))
        },
    );
    // The same gateway still lets a good token through (nothing got stuck).
    checks.check(
        "valid token still allowed",
        expect::allowed(&get_with(&gw, "/api/items", &valid, "ok")),
    );
    checks.finish();
}

/// An rsa-1 token for alice with one numeric claim (`exp`, `nbf`, `iat`) set to `value`.
fn rsa_token_with(name: &str, value: i64) -> String {
    let mut claims = corp_claims("alice");
    claims[name] = json!(value);
    token(FixtureKey::Rsa1, claims)
}

#[test]
fn expiry_uses_clock_skew_and_gives_session_expired() {
    let mut plugin = corp_config(local_provider(&[FixtureKey::Rsa1]));
    plugin["session"] = json!({"reauth_url": "https://sso.test/reauth"});
    let gw = local_gateway(&plugin);
    let mut checks = Checks::new();

    let reply = get_with(&gw, "/api/a", &rsa_token_with("exp", now() - 30), "exp-30");
    checks.check(
        "exp 30 s ago is within the 60 s leeway",
        expect::allowed(&reply),
    );

    let expired = rsa_token_with("exp", now() - 120);
    let reply = get_with(&gw, "/api/a", &expired, "exp-120");
    checks.check(
        "exp 120 s ago: session expired",
        expect::session_expired_api(&reply),
    );
    checks.check(
        "session expired: request_id",
        expect::request_id(&reply, "exp-120"),
    );
    checks.check(
        "session expired: no token",
        expect::no_token_leak(&reply, &expired),
    );
    checks.check(
        "session expired: x-auth-reauth-url header",
        match reply.header("x-auth-reauth-url") {
            Some("https://sso.test/reauth") => Ok(()),
            other => Err(format!("x-auth-reauth-url is {other:?}; got {reply}")),
        },
    );
    checks.check(
        "session expired: reauth_url in body",
        match reply.json_str("reauth_url").as_deref() {
            Some("https://sso.test/reauth") => Ok(()),
            other => Err(format!("reauth_url is {other:?}; got {reply}")),
        },
    );
    checks.check(
        "session_expired counted",
        match gw.envoy.stat(stat::SESSION_EXPIRED) {
            1 => Ok(()),
            n => Err(format!("{} = {n}, expected 1", stat::SESSION_EXPIRED)),
        },
    );

    let reply = get_with(&gw, "/api/a", &rsa_token_with("nbf", now() + 30), "nbf+30");
    checks.check(
        "nbf 30 s ahead is within the leeway",
        expect::allowed(&reply),
    );
    let reply = get_with(
        &gw,
        "/api/a",
        &rsa_token_with("nbf", now() + 120),
        "nbf+120",
    );
    checks.check(
        "nbf 120 s ahead: invalid_token",
        expect::invalid_token(&reply),
    );
    checks.finish();
}

#[test]
fn non_default_provider_options() {
    // clock_skew_s 5, require_expiration false, forward true, CORS preflight bypass off.
    let mut provider = local_provider(&[FixtureKey::Rsa1]);
    provider["clock_skew_s"] = json!(5);
    provider["require_expiration"] = json!(false);
    provider["forward"] = json!(true);
    let mut plugin = corp_config(provider);
    plugin["cors"] = json!({"bypass_preflight": false});
    let gw = local_gateway(&plugin);
    let mut checks = Checks::new();

    let reply = get_with(&gw, "/api/a", &rsa_token_with("exp", now() - 30), "skew");
    checks.check(
        "exp 30 s ago with clock_skew_s 5: session expired",
        expect::session_expired_api(&reply),
    );
    let reply = get_with(
        &gw,
        "/api/a",
        &rsa_token_with("nbf", now() + 30),
        "skew-nbf",
    );
    checks.check(
        "nbf 30 s ahead with clock_skew_s 5: invalid_token",
        expect::invalid_token(&reply),
    );

    let mut no_exp = corp_claims("alice");
    no_exp.as_object_mut().map(|o| o.remove("exp"));
    let no_exp = token(FixtureKey::Rsa1, no_exp);
    let reply = get_with(&gw, "/api/a", &no_exp, "no-exp");
    checks.check(
        "no exp with require_expiration false: allowed",
        expect::allowed(&reply),
    );
    let forwarded = format!("Bearer {no_exp}");
    checks.check(
        "forward true: authorization reaches the upstream",
        expect::upstream_header(&reply, "authorization", Some(&forwarded)),
    );
    checks.check(
        "forward true: identity headers too",
        expect::upstream_header(&reply, "x-auth-subject", Some("alice")),
    );

    // A verification cached while valid must end at exp + leeway: exp = now - 3 is valid for
    // about 2 more seconds with clock_skew_s 5.
    let soon = rsa_token_with("exp", now() - 3);
    let first = get_with(&gw, "/api/a", &soon, "soon");
    checks.check(
        "token about to expire: allowed (and cached)",
        expect::allowed(&first),
    );
    let expired = wait_until(Duration::from_secs(8), Duration::from_millis(250), || {
        let reply = get_with(&gw, "/api/a", &soon, "soon");
        (reply.status != 200).then_some(reply)
    });
    checks.check(
        "the cached token expires: session expired",
        match expired {
            Some(reply) => expect::session_expired_api(&reply),
            None => Err("still allowed 8 s after exp + leeway".into()),
        },
    );

    let reply = Req::options(gw.url("/api/a"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send();
    checks.check(
        "preflight with bypass_preflight false needs a credential",
        expect::unauthenticated(&reply, &gw.envoy.authority()),
    );
    checks.finish();
}

#[test]
fn requests_without_a_credential() {
    let mut plugin = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [
            {"match": {"path": "/public"}, "public": true},
            {"match": {"prefix": "/api/"}, "requires_any": ["jwt:corp"]}
        ],
        "health_path": "/health"
    });
    plugin["cors"] = json!({"bypass_preflight": true});
    let gw = local_gateway(&plugin);
    let authority = gw.envoy.authority();
    let mut checks = Checks::new();

    let reply = Req::get(gw.url("/api/items"))
        .header("x-request-id", "no-cred")
        .send();
    checks.check(
        "no credential: 401 unauthenticated",
        expect::unauthenticated(&reply, &authority),
    );
    checks.check(
        "no credential: request_id",
        expect::request_id(&reply, "no-cred"),
    );

    let reply = Req::get(gw.url("/api/items"))
        .header("authorization", "Basic dXNlcjpwYXNzd29yZA==")
        .header("x-request-id", "basic")
        .send();
    checks.check(
        "Basic credentials are not a bearer token: 401",
        if reply.status == 401 {
            Ok(())
        } else {
            Err(format!("got {reply}"))
        },
    );
    checks.check(
        "Basic credentials not echoed",
        expect::no_leak(&reply, "dXNlcjpwYXNzd29yZA=="),
    );

    let before = gw.upstream.requests();
    let reply = Req::get(gw.url("/health")).send();
    let ok = reply.status == 200 && reply.json_str("status").as_deref() == Some("ok");
    checks.check(
        "health path answered by the filter",
        if ok {
            Ok(())
        } else {
            Err(format!("got {reply}"))
        },
    );
    checks.check(
        "health path never reaches the upstream",
        if gw.upstream.requests() == before {
            Ok(())
        } else {
            Err("upstream saw /health".into())
        },
    );

    let reply = Req::options(gw.url("/api/items"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send();
    checks.check(
        "CORS preflight passes unauthenticated",
        expect::allowed(&reply),
    );
    let method = reply
        .json()
        .and_then(|j| j["method"].as_str().map(str::to_string));
    checks.check(
        "preflight reached the upstream as OPTIONS",
        if method.as_deref() == Some("OPTIONS") {
            Ok(())
        } else {
            Err(format!("{method:?}"))
        },
    );
    let valid = token(FixtureKey::Rsa1, corp_claims("alice"));
    let reply = Req::options(gw.url("/api/items"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .bearer(&valid)
        .header("cookie", "sid=secret")
        .send();
    checks.check(
        "a preflight passes, without the credentials it should not carry",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "authorization", None))
            .and_then(|()| expect::upstream_header(&reply, "cookie", None))
            .and_then(|()| expect::upstream_header(&reply, "x-auth-subject", None)),
    );
    for (label, origin, method) in [
        ("an empty Origin", "", "POST"),
        (
            "an empty Access-Control-Request-Method",
            "https://app.example.com",
            " ",
        ),
    ] {
        let reply = Req::options(gw.url("/api/items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .send();
        checks.check(
            &format!("OPTIONS with {label} is no preflight"),
            expect::unauthenticated(&reply, &authority),
        );
    }
    let reply = Req::options(gw.url("/api/items"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body("smuggled")
        .send();
    checks.check(
        "OPTIONS with a body is no preflight",
        expect::unauthenticated(&reply, &authority),
    );
    let reply = Req::options(gw.url("/api/items"))
        .header("origin", "https://app.example.com")
        .send();
    checks.check(
        "OPTIONS without Access-Control-Request-Method is no preflight",
        expect::unauthenticated(&reply, &authority),
    );
    let reply = Req::options(gw.url("/api/items"))
        .header("access-control-request-method", "POST")
        .send();
    checks.check(
        "OPTIONS without Origin is no preflight",
        expect::unauthenticated(&reply, &authority),
    );

    let reply = Req::get(gw.url("/public")).send();
    checks.check("public path", expect::allowed(&reply));
    let reply = Req::get(gw.url("/public?x=1")).send();
    checks.check(
        "a path rule ignores the query string",
        expect::allowed(&reply),
    );
    let reply = Req::get(gw.url("/PUBLIC")).send();
    checks.check("path rules are case-sensitive", expect::forbidden(&reply));

    let odd_id = r#"id-"quoted"-\back-<tag>"#;
    let reply = Req::get(gw.url("/api/items"))
        .header("x-request-id", odd_id)
        .send();
    // The body must stay valid JSON; the filter may escape or sanitize such an id.
    let id = reply.json_str("request_id").unwrap_or_default();
    checks.check(
        "a request id with quotes and backslashes keeps the body valid JSON",
        if id.starts_with("id-") && id.contains("back") {
            Ok(())
        } else {
            Err(format!("got {reply}"))
        },
    );

    let reply = Req::get(gw.url("/elsewhere"))
        .header("x-request-id", "no-rule")
        .send();
    checks.check("no rule matches: 403 forbidden", expect::forbidden(&reply));
    checks.check(
        "no rule matches: request_id",
        expect::request_id(&reply, "no-rule"),
    );
    let valid = token(FixtureKey::Rsa1, corp_claims("alice"));
    let reply = get_with(&gw, "/elsewhere", &valid, "no-rule-token");
    checks.check(
        "no rule matches, even with a valid token: 403",
        expect::forbidden(&reply),
    );
    checks.check(
        "no rule matches: no token",
        expect::no_token_leak(&reply, &valid),
    );
    checks.finish();
}

#[test]
fn token_from_cookie_or_custom_header() {
    let mut provider = local_provider(&[FixtureKey::Rsa1]);
    provider["from_cookies"] = json!(["session"]);
    provider["from_headers"] = json!([{"name": "x-token", "value_prefix": ""}]);
    let gw = local_gateway(&corp_config(provider));
    let mut checks = Checks::new();
    let valid = token(FixtureKey::Rsa1, corp_claims("alice"));

    let reply = Req::get(gw.url("/api/a"))
        .header("cookie", &format!("theme=dark; session={valid}; lang=en"))
        .send();
    checks.check("token from the session cookie", expect::allowed(&reply));
    checks.check(
        "cookie: subject",
        expect::upstream_header(&reply, "x-auth-subject", Some("alice")),
    );
    checks.check(
        "forward false: only the token's cookie is taken out",
        expect::upstream_header(&reply, "cookie", Some("theme=dark; lang=en")),
    );
    let reply = Req::get(gw.url("/api/a"))
        .header("cookie", &format!("session={valid}"))
        .send();
    checks.check(
        "forward false: a Cookie header left empty is removed",
        expect::allowed(&reply).and_then(|()| expect::upstream_header(&reply, "cookie", None)),
    );

    let reply = Req::get(gw.url("/api/a")).header("x-token", &valid).send();
    checks.check("token from x-token", expect::allowed(&reply));
    checks.check(
        "x-token: subject",
        expect::upstream_header(&reply, "x-auth-subject", Some("alice")),
    );
    checks.check(
        "x-token removed (forward false)",
        expect::upstream_header(&reply, "x-token", None),
    );

    let reply = Req::get(gw.url("/api/a"))
        .header("x-token", &corrupt_signature(&valid))
        .send();
    checks.check(
        "bad token in x-token: invalid_token",
        expect::invalid_token(&reply),
    );
    let reply = Req::get(gw.url("/api/a"))
        .header("cookie", &format!("session={}", corrupt_signature(&valid)))
        .send();
    checks.check(
        "bad token in the cookie: invalid_token",
        expect::invalid_token(&reply),
    );
    let reply = Req::get(gw.url("/api/a"))
        .header("cookie", "sessionx=abc; theme=dark")
        .send();
    checks.check(
        "another cookie is no credential",
        expect::unauthenticated(&reply, &gw.envoy.authority()),
    );

    // from_headers replaces the default (authorization: Bearer), as in Envoy's jwt_authn.
    let reply = Req::get(gw.url("/api/a")).bearer(&valid).send();
    checks.check(
        "authorization is not a source when from_headers is set",
        expect::unauthenticated(&reply, &gw.envoy.authority()),
    );
    checks.finish();
}

#[test]
fn local_jwks_object_accepts_every_algorithm() {
    let keys = [
        FixtureKey::Rsa1,
        FixtureKey::Ec1,
        FixtureKey::Ed1,
        FixtureKey::Hs1,
    ];
    let gw = local_gateway(&corp_config(local_provider(&keys)));
    let mut checks = Checks::new();
    for key in keys {
        let t = token(key, corp_claims(key.kid()));
        let reply = get_with(&gw, "/api/a", &t, key.kid());
        checks.check(&format!("{:?} allowed", key.alg()), expect::allowed(&reply));
        checks.check(
            &format!("{:?} subject", key.alg()),
            expect::upstream_header(&reply, "x-auth-subject", Some(key.kid())),
        );
        let reply = get_with(&gw, "/api/a", &corrupt_signature(&t), key.kid());
        checks.check(
            &format!("{:?} corrupted signature", key.alg()),
            expect::invalid_token(&reply),
        );
    }
    let wrong_secret = TokenBuilder::new(FixtureKey::Hs1)
        .claims(corp_claims("x"))
        .hmac_secret(b"not the configured secret")
        .sign();
    checks.check(
        "HS256 with another secret",
        expect::invalid_token(&get_with(&gw, "/api/a", &wrong_secret, "hs")),
    );
    let stranger = token(FixtureKey::Rsa2, corp_claims("x"));
    checks.check(
        "key not in local_jwks",
        expect::invalid_token(&get_with(&gw, "/api/a", &stranger, "rsa-2")),
    );
    checks.finish();
}

#[test]
fn local_jwks_as_a_json_string() {
    let mut provider = local_provider(&[]);
    provider["local_jwks"] = json!(jwks(&[FixtureKey::Rsa1, FixtureKey::Ec1]).to_string());
    let gw = local_gateway(&corp_config(provider));
    let mut checks = Checks::new();
    for key in [FixtureKey::Rsa1, FixtureKey::Ec1] {
        let reply = get_with(&gw, "/api/a", &token(key, corp_claims("alice")), "s");
        checks.check(&format!("{} allowed", key.kid()), expect::allowed(&reply));
    }
    let reply = get_with(
        &gw,
        "/api/a",
        &token(FixtureKey::Rsa2, corp_claims("alice")),
        "s",
    );
    checks.check(
        "rsa-2 not in the string JWKS",
        expect::invalid_token(&reply),
    );
    checks.finish();
}

#[test]
fn claim_headers_and_subject_claims() {
    let mut provider = local_provider(&[FixtureKey::Rsa1]);
    provider["claim_to_headers"] = json!([
        {"claim": "tenant.id", "header": "x-tenant"},
        {"claim": "groups", "header": "x-groups"},
        {"claim": "org.level", "header": "x-level"},
        {"claim": "email_verified", "header": "x-verified"}
    ]);
    let gw = local_gateway(&corp_config(provider));
    let mut checks = Checks::new();

    let mut claims = corp_claims("alice");
    claims["groups"] = json!(["eng", "ops"]);
    claims["org"] = json!({"level": 3});
    claims["email_verified"] = json!(true);
    claims["scope"] = json!(["llm:invoke", "read"]);
    let reply = get_with(&gw, "/api/a", &token(FixtureKey::Rsa1, claims), "claims");
    checks.check("allowed", expect::allowed(&reply));
    for (name, value) in [
        ("x-tenant", "acme"),
        ("x-groups", "eng,ops"),
        ("x-level", "3"),
        ("x-verified", "true"),
        ("x-auth-scopes", "llm:invoke,read"),
        ("x-auth-roles", "user,admin"),
    ] {
        checks.check(
            &format!("upstream {name}"),
            expect::upstream_header(&reply, name, Some(value)),
        );
    }

    // Claim values are data, never header syntax: CR/LF must not smuggle a header upstream.
    let mut claims = corp_claims("alice");
    claims["sub"] = json!("alice\r\nx-evil: injected");
    claims["tenant"] = json!({"id": "acme\nx-evil2: injected"});
    let reply = get_with(&gw, "/api/a", &token(FixtureKey::Rsa1, claims), "crlf");
    checks.check(
        "CR/LF in claims: no 5xx",
        if reply.status < 500 {
            Ok(())
        } else {
            Err(format!("got {reply}"))
        },
    );
    if reply.is_from_upstream() {
        checks.check(
            "no smuggled header",
            expect::upstream_header(&reply, "x-evil", None),
        );
        checks.check(
            "no smuggled header (2)",
            expect::upstream_header(&reply, "x-evil2", None),
        );
        for name in ["x-auth-subject", "x-tenant"] {
            let value = reply.upstream_header(name).unwrap_or_default();
            checks.check(
                &format!("{name} has no CR/LF"),
                if value.contains('\r') || value.contains('\n') {
                    Err(format!("{value:?}"))
                } else {
                    Ok(())
                },
            );
        }
    }
    checks.finish();
}

#[test]
fn every_key_under_a_duplicate_kid_is_tried() {
    let mut provider = local_provider(&[]);
    let shared_kid = |key: FixtureKey| {
        let mut jwk = key.public_jwk();
        jwk["kid"] = json!("shared");
        jwk
    };
    provider["local_jwks"] =
        json!({"keys": [shared_kid(FixtureKey::Rsa1), shared_kid(FixtureKey::Rsa2)]});
    let gw = local_gateway(&corp_config(provider));
    let mut checks = Checks::new();
    let signed = |key: FixtureKey| {
        TokenBuilder::new(key)
            .kid(Some("shared"))
            .claims(corp_claims("alice"))
            .sign()
    };
    for (key, label) in [(FixtureKey::Rsa1, "first"), (FixtureKey::Rsa2, "second")] {
        let reply = Req::get(gw.url("/api/a")).bearer(&signed(key)).send();
        checks.check(
            &format!("a token signed by the {label} key under the kid passes"),
            expect::allowed(&reply),
        );
    }
    let reply = Req::get(gw.url("/api/a"))
        .bearer(&signed(FixtureKey::Rsa3))
        .send();
    checks.check(
        "a key not published under the kid does not",
        expect::invalid_token(&reply),
    );
    checks.finish();
}
