//! The core as it runs inside Envoy: compiled to wasm32 (run by wasm-bindgen-test under Node,
//! `make test-wasm`) and natively (`cargo test`). Proves parsing, crypto and claim checks work
//! in Wasm, with tokens signed by the `jsonwebtoken` crate (see `fixtures`).

mod fixtures;

use authgate::core::config::Config;
use authgate::core::engine::{decide, Context, Effects, State, Step};
use authgate::core::metrics::{Metric, Recorded};
use authgate::core::policy::backoff::MemoryStore;
use authgate::core::request::{borrow_pairs, Request};
use serde_json::{json, Value};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// 2030-01-01, in milliseconds: after every fixture's `iat`, before their `exp`.
const NOW_MS: u64 = 1_893_456_000_000;

fn config(extra_provider: Value) -> Config {
    let mut provider = json!({"issuer": fixtures::ISSUER, "audiences": ["gateway"],
        "local_jwks": fixtures::JWKS,
        "claim_to_headers": [{"claim": "tenant.id", "header": "x-tenant"}],
        "subject_claims": {"roles": "realm_access.roles"}});
    if let (Some(p), Some(extra)) = (provider.as_object_mut(), extra_provider.as_object()) {
        p.extend(extra.clone());
    }
    let json = json!({
        "jwt_providers": {"corp": provider},
        "rules": [{"match": {"path": "/open"}, "public": true},
                  {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}],
        "health_path": "/health"
    });
    Config::parse(json.to_string().as_bytes()).unwrap()
}

fn request(path: &str, token: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api.example.com".to_string()),
        ("x-auth-subject".to_string(), "spoofed".to_string()),
        ("x-tenant".to_string(), "spoofed".to_string()),
    ];
    if let Some(token) = token {
        headers.push(("authorization".to_string(), format!("Bearer {token}")));
    }
    headers
}

fn run(config: &Config, state: &mut State, headers: &[(String, String)]) -> (Step, Recorded) {
    run_at(config, state, headers, &mut MemoryStore::default(), NOW_MS)
}

fn run_at(
    config: &Config,
    state: &mut State,
    headers: &[(String, String)],
    shared: &mut MemoryStore,
    now_ms: u64,
) -> (Step, Recorded) {
    let mut metrics = Recorded::default();
    let ctx = Context {
        now_ms,
        may_wait: true,
        log: true,
    };
    let headers = borrow_pairs(headers);
    let request = Request::new(&headers).with_source_address(Some("192.0.2.10:40000"));
    let effects = Effects {
        metrics: &mut metrics,
        shared,
        random: &mut authgate::core::random::OsRandom,
    };
    let decision = decide(config, state, &request, ctx, effects);
    (decision.step, metrics)
}

fn status_and_body(step: &Step) -> (u16, Value) {
    match step {
        Step::Respond(reply) => (reply.status, serde_json::from_str(&reply.body).unwrap()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn reply_header<'a>(reply: &'a authgate::core::replies::Reply, name: &str) -> &'a str {
    let found = reply.headers.iter().find(|(n, _)| n == name);
    found
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn added(step: &Step, name: &str) -> Option<String> {
    match step {
        Step::Continue { add, .. } => add.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
        other => panic!("expected continue, got {other:?}"),
    }
}

#[test]
fn every_algorithm_verifies_in_this_target() {
    let config = config(json!({}));
    for token in [
        fixtures::TOKEN_RS256,
        fixtures::TOKEN_ES256,
        fixtures::TOKEN_EDDSA,
        fixtures::TOKEN_HS256,
        fixtures::TOKEN_ES256_NO_KID,
    ] {
        let mut state = State::new(&config);
        let (step, metrics) = run(&config, &mut state, &request("/v1/x", Some(token)));
        assert_eq!(
            added(&step, "x-auth-subject").as_deref(),
            Some("alice"),
            "{token}"
        );
        assert_eq!(metrics.count(Metric::Allowed), 1);
    }
}

#[test]
fn identity_headers_replace_spoofed_ones_and_token_is_removed() {
    let config = config(json!({}));
    let mut state = State::new(&config);
    let (step, _) = run(
        &config,
        &mut state,
        &request("/v1/x", Some(fixtures::TOKEN_RS256)),
    );
    let Step::Continue { remove, add, .. } = &step else {
        panic!("{step:?}")
    };
    for name in ["x-auth-subject", "x-tenant", "authorization"] {
        assert!(
            remove.iter().any(|r| r == name),
            "{name} must be removed: {remove:?}"
        );
    }
    let get = |name: &str| add.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(get("x-auth-email"), Some("alice@example.com"));
    assert_eq!(get("x-auth-roles"), Some("user,admin"));
    assert_eq!(get("x-auth-scopes"), Some("llm:invoke,read"));
    assert_eq!(get("x-tenant"), Some("acme"));
    assert_eq!(get("x-auth-credential"), Some("jwt"));
}

#[test]
fn forward_true_keeps_the_token() {
    let config = config(json!({"forward": true}));
    let mut state = State::new(&config);
    let (step, _) = run(
        &config,
        &mut state,
        &request("/v1/x", Some(fixtures::TOKEN_RS256)),
    );
    let Step::Continue { remove, .. } = &step else {
        panic!("{step:?}")
    };
    assert!(!remove.iter().any(|r| r == "authorization"));
}

#[test]
fn second_request_with_same_token_is_a_cache_hit() {
    let config = config(json!({}));
    let mut state = State::new(&config);
    let headers = request("/v1/x", Some(fixtures::TOKEN_ES256));
    let (_, first) = run(&config, &mut state, &headers);
    let (step, second) = run(&config, &mut state, &headers);
    assert_eq!(first.count(Metric::JwtCacheMiss), 1);
    assert_eq!(second.count(Metric::JwtCacheHit), 1);
    assert_eq!(second.count(Metric::JwtCacheMiss), 0);
    assert_eq!(added(&step, "x-auth-subject").as_deref(), Some("alice"));
}

#[test]
fn expired_token_is_a_session_expired_reply() {
    let config = config(json!({}));
    let mut state = State::new(&config);
    let (step, metrics) = run(
        &config,
        &mut state,
        &request("/v1/x", Some(fixtures::TOKEN_EXPIRED)),
    );
    let (status, body) = status_and_body(&step);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("session_expired"))
    );
    assert_eq!(metrics.count(Metric::SessionExpired), 1);
}

#[test]
fn bad_tokens_are_401_invalid_token_without_echoing_them() {
    let config = config(json!({}));
    let tampered = {
        let mut parts: Vec<String> = fixtures::TOKEN_RS256
            .split('.')
            .map(str::to_string)
            .collect();
        parts[2] = fixtures::TOKEN_EXPIRED
            .split('.')
            .nth(2)
            .unwrap()
            .to_string();
        parts.join(".")
    };
    for token in [
        fixtures::TOKEN_WRONG_AUD,
        fixtures::TOKEN_UNKNOWN_KID,
        "abc.def",
        "a.b.c.d",
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lkcC50ZXN0In0.",
        &tampered,
    ] {
        let mut state = State::new(&config);
        let (step, _) = run(&config, &mut state, &request("/v1/x", Some(token)));
        let (status, body) = status_and_body(&step);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{token}"
        );
        let Step::Respond(reply) = &step else {
            unreachable!()
        };
        assert!(!reply.body.contains(token));
        let challenge = reply_header(reply, "www-authenticate");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}

#[test]
fn missing_credential_public_and_health() {
    let config = config(json!({}));
    let mut state = State::new(&config);
    let (step, _) = run(&config, &mut state, &request("/v1/x", None));
    assert_eq!(
        status_and_body(&step),
        (
            401,
            json!({"error": "unauthenticated",
        "message": "this route requires a credential"})
        )
    );
    let (step, _) = run(&config, &mut state, &request("/open", None));
    assert!(matches!(step, Step::Continue { .. }));
    let (step, _) = run(&config, &mut state, &request("/health", None));
    assert_eq!(status_and_body(&step), (200, json!({"status": "ok"})));
}

#[test]
fn config_errors_name_the_field_path() {
    let cases = [
        (json!({"jwt_provider": {}}), "jwt_provider"),
        (
            json!({"jwt_providers": {"corp": {"local_jwks": fixtures::JWKS}}}),
            "jwt_providers.corp.issuer",
        ),
        (
            json!({"jwt_providers": {"corp": {"issuer": "x", "local_jwks": fixtures::JWKS, "clock_skew_s": "60"}}}),
            "jwt_providers.corp.clock_skew_s",
        ),
        (
            json!({"jwt_providers": {"corp": {"issuer": "x", "local_jwks": fixtures::JWKS}},
                "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:Corp"]}]}),
            "rules[0].requires_any[0]",
        ),
    ];
    for (json, path) in cases {
        let err = Config::parse(json.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.path, path, "{err}");
    }
}

fn policy_config() -> Config {
    let json = json!({
        "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "local_jwks": fixtures::JWKS,
                                   "subject_claims": {"roles": "realm_access.roles"}}},
        "rules": [
            {"match": {"prefix": "/write"}, "requires_any": ["jwt:corp"],
             "require_scopes": ["llm:invoke", "write"]},
            {"match": {"prefix": "/ops"}, "requires_any": ["jwt:corp"], "require_roles": ["ops"]},
            {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"],
             "require_scopes": ["llm:invoke"], "require_roles": ["admin"]}
        ]
    });
    Config::parse(json.to_string().as_bytes()).unwrap()
}

#[test]
fn scopes_and_roles_are_required_per_rule_also_on_cache_hits() {
    let config = policy_config();
    let mut state = State::new(&config);
    for _ in 0..2 {
        let (step, metrics) = run(
            &config,
            &mut state,
            &request("/v1/x", Some(fixtures::TOKEN_RS256)),
        );
        assert_eq!(added(&step, "x-auth-roles").as_deref(), Some("user,admin"));
        assert_eq!(metrics.count(Metric::Allowed), 1);

        let (step, metrics) = run(
            &config,
            &mut state,
            &request("/write", Some(fixtures::TOKEN_RS256)),
        );
        assert_eq!(status_and_body(&step).0, 403);
        assert_eq!(status_and_body(&step).1["error"], "insufficient_scope");
        let Step::Respond(reply) = &step else {
            unreachable!()
        };
        let challenge = reply_header(reply, "www-authenticate");
        assert!(
            challenge.contains("error=\"insufficient_scope\", scope=\"write\""),
            "{challenge}"
        );
        assert_eq!(metrics.count(Metric::Allowed), 0);
        assert_eq!(metrics.count(Metric::DeniedInsufficientScope), 1);

        let (step, _) = run(
            &config,
            &mut state,
            &request("/ops", Some(fixtures::TOKEN_RS256)),
        );
        let (status, body) = status_and_body(&step);
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
        assert_eq!(body["message"], "missing role(s): ops");
    }
}

#[test]
fn policy_config_errors() {
    let bad = json!({"jwt_providers": {"corp": {"issuer": "x", "local_jwks": fixtures::JWKS}},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "require_scopes": ["a b"]}]});
    let err = Config::parse(bad.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.path, "rules[0].require_scopes[0]");
    let typo = json!({"jwt_providers": {"corp": {"issuer": "x", "local_jwks": fixtures::JWKS}},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "require_scope": ["a"]}]});
    let err = Config::parse(typo.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.path, "rules[0].require_scope");
}

/// SHA-256 of `ek_live_7Qm2p9XvT4` and of `sk-agent-retired` (computed outside the code under test).
const LIVE_KEY_SHA256: &str = "15d405cd2e528a2d986096417171ca8cbea364837caaae84cef232236a2ed0c0";
const RETIRED_KEY_SHA256: &str = "2df802a4707f0e0fd134ef7bd6d1a47097ebee4b28ea4d0a88d238cb023e3cf0";

fn api_key_config() -> Config {
    let json = json!({
        "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "audiences": ["gateway"],
                                   "local_jwks": fixtures::JWKS}},
        "api_keys": {"headers": ["x-api-key", "authorization"], "keys": [
            {"id": "ci", "sha256": LIVE_KEY_SHA256, "principal": "svc:ci", "scopes": ["deploy"]},
            {"id": "old", "sha256": RETIRED_KEY_SHA256, "principal": "svc:old", "active": false}]},
        "rules": [{"match": {"prefix": "/deploy"}, "requires_any": ["jwt:corp", "api_key"],
                   "require_scopes": ["deploy"]},
                  {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}],
        "failed_auth_backoff": {"after_failures": 2, "base_s": 2, "max_s": 8}
    });
    Config::parse(json.to_string().as_bytes()).unwrap()
}

fn with_header(
    mut headers: Vec<(String, String)>,
    name: &str,
    value: &str,
) -> Vec<(String, String)> {
    headers.push((name.to_string(), value.to_string()));
    headers
}

#[test]
fn api_keys_are_checked_by_digest_in_this_target() {
    let config = api_key_config();
    let mut state = State::new(&config);
    let mut shared = MemoryStore::default();
    let key = with_header(request("/deploy", None), "x-api-key", "ek_live_7Qm2p9XvT4");
    let (step, metrics) = run_at(&config, &mut state, &key, &mut shared, NOW_MS);
    assert_eq!(added(&step, "x-auth-subject").as_deref(), Some("svc:ci"));
    assert_eq!(
        added(&step, "x-auth-credential").as_deref(),
        Some("api_key")
    );
    assert_eq!(metrics.count(Metric::AllowedApiKey), 1);
    let Step::Continue { remove, .. } = &step else {
        unreachable!()
    };
    assert!(remove.contains(&"x-api-key".to_string()), "{remove:?}");

    // The same key as a bearer (how the OpenAI SDK sends it).
    let bearer = with_header(
        request("/deploy", None),
        "authorization",
        "Bearer ek_live_7Qm2p9XvT4",
    );
    let (step, _) = run_at(&config, &mut state, &bearer, &mut shared, NOW_MS);
    assert_eq!(added(&step, "x-auth-key-id").as_deref(), Some("ci"));

    // A JWT or a key: the valid JWT passes the rule's JWT branch but lacks the scope.
    let jwt = request("/deploy", Some(fixtures::TOKEN_RS256));
    let (step, _) = run_at(&config, &mut state, &jwt, &mut shared, NOW_MS);
    assert_eq!(status_and_body(&step).1["error"], "insufficient_scope");

    let retired = with_header(request("/deploy", None), "x-api-key", "sk-agent-retired");
    let (step, metrics) = run_at(&config, &mut state, &retired, &mut shared, NOW_MS);
    let (status, body) = status_and_body(&step);
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("API key is not active"))
    );
    assert_eq!(metrics.count(Metric::DeniedApiKey), 1);
    assert!(!step_text(&step).contains("sk-agent-retired"));

    // A non-JWT bearer on a JWT-only route is an opaque token, refused.
    let opaque = with_header(
        request("/other", None),
        "authorization",
        "Bearer sk-agent-retired",
    );
    let (step, metrics) = run_at(&config, &mut state, &opaque, &mut shared, NOW_MS);
    assert_eq!(status_and_body(&step).0, 401);
    assert_eq!(metrics.count(Metric::DeniedOpaqueToken), 1);
}

fn step_text(step: &Step) -> String {
    format!("{step:?}")
}

#[test]
fn failed_keys_back_off_and_a_success_lowers_nothing() {
    let config = api_key_config();
    let mut state = State::new(&config);
    let mut shared = MemoryStore::default();
    let wrong = with_header(request("/deploy", None), "x-api-key", "ek_live_guess");
    let right = with_header(request("/deploy", None), "x-api-key", "ek_live_7Qm2p9XvT4");
    let mut now = NOW_MS;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status_and_body(&run_at(&config, &mut state, &wrong, &mut shared, now).0).0);
    }
    // Two failures start a 2 s block: the third attempt, even with the right key, is refused.
    assert_eq!(statuses, [401, 401, 429]);
    let (step, metrics) = run_at(&config, &mut state, &right, &mut shared, now);
    let Step::Respond(reply) = &step else {
        panic!("expected 429, got {step:?}")
    };
    assert_eq!(
        (reply.status, reply_header(reply, "retry-after")),
        (429, "2")
    );
    assert_eq!(metrics.count(Metric::RateLimited), 1);

    now += 2_000;
    assert_eq!(
        status_and_body(&run_at(&config, &mut state, &wrong, &mut shared, now).0).0,
        401
    );
    let (step, _) = run_at(&config, &mut state, &right, &mut shared, now);
    assert_eq!(
        status_and_body(&step).1["retry_after_s"],
        4,
        "the block doubled"
    );

    now += 4_000;
    let (step, _) = run_at(&config, &mut state, &right, &mut shared, now);
    assert!(matches!(step, Step::Continue { .. }), "{step:?}");
    // A success lowers nothing: one more failure blocks again, doubled.
    assert_eq!(
        status_and_body(&run_at(&config, &mut state, &wrong, &mut shared, now).0).0,
        401
    );
    let (step, _) = run_at(&config, &mut state, &right, &mut shared, now);
    assert_eq!(status_and_body(&step).1["retry_after_s"], 8, "{step:?}");
}

fn enterprise_config(failure_mode: &str) -> Config {
    let json = json!({
        "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "audiences": ["gateway"],
                                   "local_jwks": fixtures::JWKS}},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal",
                       "failure_mode": failure_mode,
                       "upstream_headers": ["x-tenant"],
                       "cache": {"allow_ttl_s": 30, "deny_ttl_s": 5}}
    });
    Config::parse(json.to_string().as_bytes()).unwrap()
}

fn authz_call(step: Step) -> Box<authgate::core::engine::AuthzCall> {
    match step {
        Step::CallAuthz(call) => call,
        other => panic!("expected an authorization call, got {other:?}"),
    }
}

#[test]
fn enterprise_decisions_are_asked_once_and_cached() {
    use authgate::core::engine::{complete_authz, resolve};
    let config = enterprise_config("deny");
    let mut state = State::new(&config);
    let headers = request("/v1/chat", Some(fixtures::TOKEN_RS256));
    let (step, metrics) = run(&config, &mut state, &headers);
    assert_eq!(metrics.count(Metric::AuthzCacheMiss), 1);
    let call = authz_call(step);
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["subject"]["kind"], "jwt");
    assert_eq!(
        body["subject"]["token_sha256"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(body["request"]["path"], "/v1/chat");
    assert_eq!(body["client_ip"], "192.0.2.10");
    assert!(!String::from_utf8_lossy(&call.body).contains(fixtures::TOKEN_RS256));

    let mut metrics = Recorded::default();
    let answer = br#"{"authorized": true, "headers": {"x-tenant": "acme"}}"#;
    let resolution = complete_authz(
        &config,
        &mut state,
        &call.key,
        &call.pending,
        (200, Some(&answer[..])),
        NOW_MS,
        &mut metrics,
    );
    let effects = Effects {
        metrics: &mut metrics,
        shared: &mut MemoryStore::default(),
        random: &mut authgate::core::random::OsRandom,
    };
    let decision = resolve(&config, &call.pending, &resolution, NOW_MS, effects);
    assert_eq!(added(&decision.step, "x-tenant").as_deref(), Some("acme"));
    let Step::Continue { remove, .. } = &decision.step else {
        unreachable!()
    };
    assert!(
        remove.contains(&"x-tenant".to_string()),
        "spoofed x-tenant removed: {remove:?}"
    );

    let (step, metrics) = run(&config, &mut state, &headers);
    assert_eq!(metrics.count(Metric::AuthzCacheHit), 1);
    assert_eq!(added(&step, "x-tenant").as_deref(), Some("acme"));
}

#[test]
fn enterprise_failures_follow_failure_mode_and_are_not_cached() {
    use authgate::core::engine::{complete_authz, resolve};
    for (mode, status) in [("deny", Some(503)), ("allow", None)] {
        let config = enterprise_config(mode);
        let mut state = State::new(&config);
        let headers = request("/v1/chat", Some(fixtures::TOKEN_RS256));
        let call = authz_call(run(&config, &mut state, &headers).0);
        let mut metrics = Recorded::default();
        let resolution = complete_authz(
            &config,
            &mut state,
            &call.key,
            &call.pending,
            (200, Some(&b"not json{"[..])),
            NOW_MS,
            &mut metrics,
        );
        let effects = Effects {
            metrics: &mut metrics,
            shared: &mut MemoryStore::default(),
            random: &mut authgate::core::random::OsRandom,
        };
        let decision = resolve(&config, &call.pending, &resolution, NOW_MS, effects);
        match status {
            Some(status) => {
                let (got, body) = status_and_body(&decision.step);
                assert_eq!(
                    (got, body["error"].as_str()),
                    (status, Some("authorization_unavailable"))
                );
            }
            None => {
                assert_eq!(
                    added(&decision.step, "x-auth-authz").as_deref(),
                    Some("failure-mode-allow")
                );
                assert_eq!(metrics.count(Metric::FailureModeAllowed), 1);
            }
        }
        // Not cached: the next request asks again.
        authz_call(run(&config, &mut state, &headers).0);
    }
}

#[test]
fn a_configured_key_in_the_wrong_header_is_never_asked_about_as_an_agent_token() {
    let json = json!({
        "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "local_jwks": fixtures::JWKS}},
        "api_keys": {"keys": [
            {"id": "ci", "sha256": LIVE_KEY_SHA256, "principal": "svc:ci"},
            {"id": "old", "sha256": RETIRED_KEY_SHA256, "principal": "svc:old", "active": false}]},
        "opaque_tokens": "enterprise",
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["api_key", "opaque_token"],
                   "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal"}
    });
    let config = Config::parse(json.to_string().as_bytes()).unwrap();
    let mut state = State::new(&config);
    for (header, value) in [
        ("authorization", "Bearer ek_live_7Qm2p9XvT4"),
        ("x-api-key", "sk-agent-retired"),
    ] {
        let headers = with_header(request("/v1/x", None), header, value);
        let (step, _) = run(&config, &mut state, &headers);
        assert!(
            !matches!(step, Step::CallAuthz(_)),
            "{header}: a configured key went to the authorization service: {step:?}"
        );
    }
    // A value that is no configured key is an agent token for the service to judge.
    let agent = with_header(
        request("/v1/x", None),
        "authorization",
        "Bearer agt_0123456789",
    );
    assert!(matches!(
        run(&config, &mut state, &agent).0,
        Step::CallAuthz(_)
    ));
}

/// The RSA inner loop: under wasm32 `mul_add_rows` takes the SIMD path, natively the portable
/// one; both must agree with the portable reference for every number of columns (the SIMD path
/// works four columns at a time and finishes the rest one by one), with limbs to spare or
/// running out, for one row and for blocks of rows, and on the largest inputs.
#[test]
fn rsa_inner_loop_matches_the_portable_reference() {
    fn check<const R: usize>(next: &mut impl FnMut() -> u64) {
        use authgate::core::jwt::montgomery::{mul_add_rows, mul_add_rows_portable};
        for len in 0..23 {
            for (round, limbs_len) in [len + R + 6, len + R - 1, len, len / 2]
                .into_iter()
                .enumerate()
            {
                let largest = round == 1;
                let limbs: Vec<u32> = (0..limbs_len)
                    .map(|_| {
                        if largest {
                            (1 << 26) - 1
                        } else {
                            next() as u32 >> 6
                        }
                    })
                    .collect();
                let ms: [u64; R] =
                    std::array::from_fn(|_| if largest { (1 << 27) - 2 } else { next() >> 37 });
                let start: Vec<u64> = (0..len).map(|_| next() >> 8).collect();
                let (mut fast, mut reference) = (start.clone(), start.clone());
                mul_add_rows(&mut fast, &ms, &limbs);
                mul_add_rows_portable(&mut reference, &ms, &limbs);
                assert_eq!(fast, reference, "rows {R} columns {len} limbs {limbs_len}");
                if len > 0 && round == 0 {
                    assert_ne!(fast, start, "rows {R} columns {len}: nothing added");
                }
            }
        }
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    check::<1>(&mut next);
    check::<2>(&mut next);
    check::<4>(&mut next);
}
