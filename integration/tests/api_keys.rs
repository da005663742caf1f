//! API keys, refused opaque bearer tokens and mixed `requires_any` routes in real Envoy (DESIGN.md
//! `api_keys`, `opaque_tokens`, rules): keys configured only as SHA-256 digests, identity headers,
//! spoofed headers stripped, clear 401/403 reasons that never echo a secret.

use authgate_integration::expect::{self, error_reply, Check, Checks};
use authgate_integration::plugin::{api_key_entry, corp_claims, local_provider};
use authgate_integration::{FixtureKey, Gateway, Reply, Req, TokenBuilder};
use serde_json::{json, Value};

/// A key in a common vendor format: opaque bytes to authgate.
const CI_KEY: &str = "ek_live_51HxQ2eZvKYlo2C8xT4mN7pR";
const RETIRED_KEY: &str = "ek_live_retired_9f8e7d6c";
const LAPSED_KEY: &str = "ek_live_lapsed_0a1b2c3d";
const FUTURE_KEY: &str = "sk-future-expiry-4455";
const AGENT_TOKEN: &str = "agt_0123456789abcdef0123456789abcdef";

fn plugin(opaque_tokens: &str) -> Value {
    let mut retired = api_key_entry("retired", RETIRED_KEY, "svc:old", &["deploy"]);
    retired["active"] = json!(false);
    let mut lapsed = api_key_entry("lapsed", LAPSED_KEY, "svc:lapsed", &["deploy"]);
    lapsed["expires_at"] = json!("2020-01-01T00:00:00Z");
    let mut future = api_key_entry("future", FUTURE_KEY, "svc:future", &["deploy", "read"]);
    future["expires_at"] = json!("2099-12-31T23:59:59+02:00");
    let mut rules = vec![
        json!({"match": {"prefix": "/deploy", "methods": ["POST"]},
               "requires_any": ["api_key"], "require_scopes": ["deploy"]}),
        json!({"match": {"prefix": "/tenant", "hosts": ["*.example.com"]},
               "requires_any": ["jwt:corp", "api_key"]}),
        json!({"match": {"prefix": "/mixed"}, "requires_any": ["jwt:corp", "api_key"]}),
    ];
    rules.push(json!({"match": {"prefix": "/jwt-only"}, "requires_any": ["jwt:corp"]}));
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "api_keys": {"headers": ["x-api-key", "authorization"], "keys": [
            api_key_entry("ci", CI_KEY, "svc:ci", &["deploy", "read"]),
            retired, lapsed, future
        ]},
        "opaque_tokens": opaque_tokens,
        "rules": rules
    })
}

fn gateway(opaque_tokens: &str) -> Gateway {
    Gateway::start(&plugin(opaque_tokens), authgate_integration::jwks(&[]))
}

fn jwt() -> String {
    TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign()
}

fn deploy(gw: &Gateway, key: &str) -> Reply {
    Req::post(gw.url("/deploy/app"))
        .header("x-api-key", key)
        .body("{}")
        .send()
}

/// 401 invalid_token whose message is `message`, without the key in the reply.
fn refused(reply: &Reply, message: &str, key: &str) -> Check {
    expect::invalid_token(reply)?;
    expect::no_leak(reply, key)?;
    let body = reply.json().unwrap_or_default();
    if body["message"] != message {
        return Err(format!("expected message {message:?}; got {reply}"));
    }
    Ok(())
}

#[test]
fn api_keys_by_digest_with_identity_and_clear_refusals() {
    let gw = gateway("reject");
    let mut checks = Checks::new();

    let reply = Req::post(gw.url("/deploy/app"))
        .header("x-api-key", CI_KEY)
        .header("x-auth-subject", "root")
        .header("x-auth-credential", "jwt")
        .header("x-auth-email", "spoofed@example.com")
        .header("x-tenant", "spoofed")
        .body("{}")
        .send();
    checks.check("valid key passes", expect::allowed(&reply));
    for (name, expected) in [
        ("x-auth-subject", Some("svc:ci")),
        ("x-auth-credential", Some("api_key")),
        ("x-auth-key-id", Some("ci")),
        ("x-auth-scopes", Some("deploy,read")),
        // Spoofed identity and claim headers are gone, and so is the key itself.
        ("x-auth-email", None),
        ("x-tenant", None),
        ("x-api-key", None),
    ] {
        checks.check(
            &format!("upstream header {name}"),
            expect::upstream_header(&reply, name, expected),
        );
    }

    let reply = Req::post(gw.url("/deploy/app"))
        .bearer(CI_KEY)
        .body("{}")
        .send();
    checks.check(
        "the same key as `Authorization: Bearer` (OpenAI-style clients)",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "x-auth-key-id", Some("ci")))
            .and_then(|()| expect::upstream_header(&reply, "authorization", None)),
    );

    let wrong = "ek_live_51HxQ2eZvKYlo2C8xT4mN7pS";
    checks.check(
        "wrong key",
        refused(&deploy(&gw, wrong), "unknown API key", wrong),
    );
    checks.check(
        "inactive key",
        refused(
            &deploy(&gw, RETIRED_KEY),
            "API key is not active",
            RETIRED_KEY,
        ),
    );
    checks.check(
        "expired key",
        refused(&deploy(&gw, LAPSED_KEY), "API key expired", LAPSED_KEY),
    );
    checks.check(
        "key expiring in 2099 (with an offset) passes",
        expect::allowed(&deploy(&gw, FUTURE_KEY)),
    );

    let reply = Req::post(gw.url("/deploy/app")).body("{}").send();
    checks.check(
        "no key: 401 unauthenticated",
        expect::unauthenticated(&reply, &gw.envoy.authority()),
    );
    let reply = Req::get(gw.url("/deploy/app"))
        .header("x-api-key", CI_KEY)
        .send();
    checks.check(
        "method not in the rule: no rule matches, 403",
        error_reply(&reply, 403, "forbidden").map(|_| ()),
    );

    let mut narrow = plugin("reject");
    narrow["api_keys"]["keys"][0]["scopes"] = json!(["read"]);
    drop(gw);
    let gw = Gateway::start(&narrow, authgate_integration::jwks(&[]));
    let reply = deploy(&gw, CI_KEY);
    checks.check(
        "key without the rule's scope: 403 insufficient_scope",
        error_reply(&reply, 403, "insufficient_scope").and_then(|_| {
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            challenge
                .contains("error=\"insufficient_scope\", scope=\"deploy\"")
                .then_some(())
                .ok_or(format!("challenge: {challenge}"))
        }),
    );
    checks.finish();
}

#[test]
fn stats_count_each_kind_and_secrets_stay_out_of_the_log() {
    let gw = gateway("reject");
    deploy(&gw, CI_KEY);
    deploy(&gw, CI_KEY);
    deploy(&gw, "ek_live_not_a_real_key_123456");
    Req::get(gw.url("/jwt-only")).bearer(&jwt()).send();
    Req::get(gw.url("/jwt-only")).bearer(AGENT_TOKEN).send();
    let stats = gw.envoy.stats();
    let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
    assert_eq!(
        [
            stat("authgate.allowed.api_key"),
            stat("authgate.allowed.jwt"),
            stat("authgate.denied.api_key"),
            stat("authgate.denied.opaque_token"),
            stat("authgate.denied.invalid_token"),
            stat("authgate.allowed"),
            stat("authgate.denied"),
        ],
        [2, 1, 1, 1, 2, 3, 2],
        "{stats:?}"
    );
    let log = gw.envoy.log();
    for secret in [CI_KEY, "ek_live_not_a_real_key_123456", AGENT_TOKEN] {
        assert!(!log.contains(secret), "the log contains a credential");
    }
    assert!(
        log.contains("deny invalid_token (unknown API key) api_key="),
        "the denial is logged (at debug) with a fingerprint"
    );
}

#[test]
fn host_globs_and_mixed_credentials() {
    let gw = gateway("reject");
    let mut checks = Checks::new();
    let token = jwt();
    let host = |h: &str| {
        Req::get(gw.url("/tenant/x"))
            .header("host", h)
            .header("x-api-key", CI_KEY)
            .send()
    };
    checks.check(
        "*.example.com matches api.example.com",
        expect::allowed(&host("api.example.com")),
    );
    checks.check(
        "case-insensitive, port ignored",
        expect::allowed(&host("API.Example.COM:8443")),
    );
    checks.check(
        "the bare domain does not match *.example.com",
        error_reply(&host("example.com"), 403, "forbidden").map(|_| ()),
    );
    checks.check(
        "a suffix lookalike does not match",
        error_reply(&host("api.example.com.evil.net"), 403, "forbidden").map(|_| ()),
    );

    let mixed =
        |build: fn(Req, &str) -> Req, value: &str| build(Req::get(gw.url("/mixed")), value).send();
    let reply = mixed(Req::bearer, &token);
    checks.check(
        "mixed route: a JWT alone",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "x-auth-credential", Some("jwt"))),
    );
    let reply = mixed(|r, k| r.header("x-api-key", k), CI_KEY);
    checks.check(
        "mixed route: a key alone",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "x-auth-credential", Some("api_key"))),
    );
    let reply = Req::get(gw.url("/mixed"))
        .bearer(&authgate_integration::tokens::corrupt_signature(&token))
        .header("x-api-key", CI_KEY)
        .send();
    checks.check(
        "mixed route: a bad JWT and a good key pass on the key",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "x-auth-subject", Some("svc:ci"))),
    );
    let reply = Req::get(gw.url("/mixed"))
        .bearer(&authgate_integration::tokens::corrupt_signature(&token))
        .header("x-api-key", "nope")
        .send();
    checks.check(
        "mixed route: both bad gives the first failure (the JWT's)",
        expect::invalid_token(&reply).and_then(|()| {
            (reply.json_str("message").as_deref() == Some("signature verification failed"))
                .then_some(())
                .ok_or(format!("{reply}"))
        }),
    );
    checks.check(
        "mixed route: nothing",
        expect::unauthenticated(&mixed(|r, _| r, ""), &gw.envoy.authority()),
    );
    checks.finish();
}

#[test]
fn opaque_bearer_tokens_are_rejected_by_default() {
    let gw = gateway("reject");
    let reply = Req::get(gw.url("/jwt-only")).bearer(AGENT_TOKEN).send();
    let mut checks = Checks::new();
    checks.check(
        "opaque_tokens reject: 401 invalid_token",
        refused(
            &reply,
            "opaque tokens are not accepted on this route",
            AGENT_TOKEN,
        ),
    );
    checks.finish();
}
