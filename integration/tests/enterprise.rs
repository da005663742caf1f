//! The enterprise authorization callout in real Envoy (DESIGN.md "Enterprise authorization
//! protocol"): one call per credential and route, cached allows and denies, single-flight,
//! failure modes, timeouts, the openfga dialect. Against a fault-injecting stub; the reference
//! service's own flow is in `reference_service.rs`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use authgate_integration::authz_stub::{AuthzMode, AuthzStub};
use authgate_integration::expect::{self, error_reply, Checks};
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{FixtureKey, Gateway, JwksStub, Reply, Req, TokenBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn plugin(enterprise: Value) -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [{"match": {"prefix": "/local"}, "requires_any": ["jwt:corp"]},
                  {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "enterprise": true}],
        "enterprise": enterprise
    })
}

fn enterprise(extra: Value) -> Value {
    let mut base = json!({"cluster": "authz", "authority": "authz.internal",
                          "path": "/api/authorize", "timeout_ms": 1000,
                          "upstream_headers": ["x-tenant", "x-plan"],
                          "cache": {"allow_ttl_s": 60, "deny_ttl_s": 1}});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    base
}

fn gateway(plugin: &Value, authz_port: u16) -> Gateway {
    Gateway::start_with(
        plugin,
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.cluster("authz", authz_port),
    )
}

fn token(subject: &str) -> String {
    TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims(subject))
        .sign()
}

fn get(gw: &Gateway, path: &str, token: &str) -> Reply {
    Req::get(gw.url(path)).bearer(token).send()
}

fn allow_with_tenant() -> AuthzMode {
    AuthzMode::Json(json!({"authorized": true, "cache_ttl_s": 60,
                           "headers": {"x-tenant": "acme-from-authz", "x-plan": "gold"}}))
}

fn unavailable(reply: &Reply, status: u16) -> expect::Check {
    error_reply(reply, status, "authorization_unavailable").map(|_| ())
}

#[test]
fn one_call_per_credential_and_route_with_the_documented_body() {
    let stub = AuthzStub::start(allow_with_tenant());
    let gw = gateway(&plugin(enterprise(json!({}))), stub.port());
    let mut checks = Checks::new();
    let alice = token("alice");
    for i in 0..5 {
        let reply = Req::get(gw.url("/v1/chat?x=1"))
            .bearer(&alice)
            .header("x-tenant", "spoofed")
            .header("x-plan", "spoofed")
            .header("x-request-id", &format!("req-{i}"))
            .send();
        checks.check(
            &format!("request {i} allowed with the service's headers"),
            expect::allowed(&reply)
                .and_then(|()| expect::upstream_header(&reply, "x-tenant", Some("acme-from-authz")))
                .and_then(|()| expect::upstream_header(&reply, "x-plan", Some("gold")))
                .and_then(|()| expect::upstream_header(&reply, "x-auth-subject", Some("alice"))),
        );
    }
    checks.check(
        "five requests, one call",
        (stub.request_count() == 1)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );
    get(&gw, "/v1/models", &alice);
    get(&gw, "/local/x", &alice);
    checks.check(
        "another path is another decision; a rule without enterprise asks nobody",
        (stub.request_count() == 2)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );

    let requests = stub.requests();
    let first = &requests[0];
    let body: Value = serde_json::from_str(&first.body).unwrap_or_default();
    // A JWT is known to the service by its signing input (`header.payload`).
    let signing_input = alice.rsplit_once('.').map_or("", |(input, _)| input);
    let sha = hex::encode(Sha256::digest(signing_input.as_bytes()));
    checks.check(
        "POST /api/authorize with the configured authority and the request id",
        (first.method == "POST"
            && first.path == "/api/authorize"
            && first.header("host").or(first.header(":authority")) == Some("authz.internal")
            && first.header("x-request-id") == Some("req-0")
            && first.header("content-type") == Some("application/json"))
        .then_some(())
        .ok_or(format!("{first:?}")),
    );
    let expected = json!({
        "user_email": "alice@example.com",
        "client_ip": "127.0.0.1",
        "subject": {"kind": "jwt", "id": "alice", "issuer": "https://idp.test",
                    "token_sha256": sha, "roles": ["user", "admin"], "scopes": ["llm:invoke", "read"]},
        "request": {"method": "GET", "host": gw.envoy.authority(), "path": "/v1/chat"}
    });
    checks.check(
        "the body is the authgate dialect",
        (body == expected)
            .then_some(())
            .ok_or(format!("got {body}\nwanted {expected}")),
    );
    checks.check(
        "no raw credential reaches the service",
        requests
            .iter()
            .all(|r| {
                !r.body.contains(&alice) && !r.body.contains(alice.split('.').nth(2).unwrap_or("-"))
            })
            .then_some(())
            .ok_or("a request body holds the token".to_string()),
    );
    let stats = gw.envoy.stats();
    let stat = |n: &str| stats.get(n).copied().unwrap_or(0);
    checks.check(
        "stats",
        ([
            stat("authgate.authz_call"),
            stat("authgate.authz_ok"),
            stat("authgate.authz_cache_miss"),
            stat("authgate.authz_cache_hit"),
        ] == [2, 2, 2, 4])
        .then_some(())
        .ok_or(format!("{stats:?}")),
    );
    checks.finish();
}

/// The other valid encoding of an ES256 signature: `s` replaced by `n - s` (P-256's order).
fn high_s_twin(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    const ORDER: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63,
        0x25, 0x51,
    ];
    let (input, signature) = token.rsplit_once('.').unwrap_or_default();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    assert_eq!(signature.len(), 64, "an ES256 signature is r || s");
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let difference = i16::from(ORDER[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(difference < 0);
        signature[32 + i] = (difference + 256 * borrow) as u8;
    }
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn both_encodings_of_an_ecdsa_signature_are_one_credential_to_the_service() {
    let stub = AuthzStub::start(allow_with_tenant());
    let config = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Ec1])},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "enterprise": true}],
        "enterprise": enterprise(json!({}))
    });
    let gw = gateway(&config, stub.port());
    let low = TokenBuilder::new(FixtureKey::Ec1)
        .claims(corp_claims("alice"))
        .sign();
    let twin = high_s_twin(&low);
    let mut checks = Checks::new();
    checks.check(
        "the token is allowed",
        expect::allowed(&get(&gw, "/v1/x", &low)),
    );
    checks.check(
        "its high-S twin verifies too (both are valid ECDSA)",
        expect::allowed(&get(&gw, "/v1/x", &twin)),
    );
    let shas: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
            body["subject"]["token_sha256"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let signing_input = low.rsplit_once('.').map_or("", |(input, _)| input);
    checks.check(
        "one call, naming the token by the SHA-256 of its signing input",
        (shas == [hex::encode(Sha256::digest(signing_input.as_bytes()))])
            .then_some(())
            .ok_or(format!("token_sha256 values sent: {shas:?}")),
    );
    checks.finish();
}

#[test]
fn concurrent_identical_misses_make_one_call() {
    let stub = AuthzStub::start(AuthzMode::Delay(
        Duration::from_millis(400),
        Box::new(allow_with_tenant()),
    ));
    let gw = gateway(&plugin(enterprise(json!({}))), stub.port());
    let bob = token("bob");
    let url = gw.url("/v1/chat");
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, bob, start) = (url.clone(), bob.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                Req::get(url).bearer(&bob).send()
            })
        })
        .collect();
    let replies: Vec<Reply> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|_| panic!("client thread failed")))
        .collect();
    let mut checks = Checks::new();
    for (i, reply) in replies.iter().enumerate() {
        checks.check(
            &format!("waiter {i} got the shared answer"),
            expect::allowed(reply)
                .and_then(|()| expect::upstream_header(reply, "x-tenant", Some("acme-from-authz"))),
        );
    }
    checks.check(
        "8 concurrent misses, one call",
        (stub.request_count() == 1)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );
    checks.finish();
}

#[test]
fn denies_are_cached_for_deny_ttl_then_asked_again() {
    let stub = AuthzStub::start(AuthzMode::Json(
        json!({"authorized": false, "reason": "no seat left for this team"}),
    ));
    let gw = gateway(
        &plugin(enterprise(json!({"expose_reason": true}))),
        stub.port(),
    );
    let carol = token("carol");
    let mut checks = Checks::new();
    for round in 0..3 {
        let reply = get(&gw, "/v1/chat", &carol);
        checks.check(
            &format!("deny {round}: 403 with the service's reason"),
            error_reply(&reply, 403, "forbidden").and_then(|body| {
                (body["message"] == "no seat left for this team")
                    .then_some(())
                    .ok_or(format!("{body}"))
            }),
        );
    }
    checks.check(
        "within deny_ttl the deny is cached",
        (stub.request_count() == 1)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );
    // Access granted at the service: it takes effect once the cached deny (1 s) lapses.
    stub.set_mode(allow_with_tenant());
    std::thread::sleep(Duration::from_millis(1_100));
    checks.check(
        "after deny_ttl the service is asked again",
        expect::allowed(&get(&gw, "/v1/chat", &carol)),
    );
    checks.check(
        "two calls in all",
        (stub.request_count() == 2)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );
    assert_eq!(gw.envoy.stat("authgate.authz_denied"), 1);
    checks.finish();
}

#[test]
fn a_deny_reason_reaches_the_client_only_when_exposed() {
    let stub = AuthzStub::start(AuthzMode::Json(
        json!({"authorized": false, "reason": "member of group ma-layoffs-2026"}),
    ));
    let gw = gateway(&plugin(enterprise(json!({}))), stub.port());
    let reply = get(&gw, "/v1/chat", &token("carol"));
    let body = error_reply(&reply, 403, "forbidden").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        body["message"], "denied by the authorization service",
        "{body}"
    );
    assert!(!reply.body.contains("layoffs"), "{reply}");
}

/// `failure_mode: allow` admits on no answer, timeout and 5xx only (issue 15 item 6): an answer
/// about this request (a 4xx) is a deny, and 429 is pushback, never a reason to admit.
#[test]
fn failure_mode_allow_admits_only_outages() {
    let stub = AuthzStub::start(AuthzMode::Status(500));
    let gw = gateway(
        &plugin(enterprise(json!({"failure_mode": "allow"}))),
        stub.port(),
    );
    let mut checks = Checks::new();
    for (i, (status, outcome)) in [
        (500, "allow"),
        (503, "allow"),
        (408, "allow"),
        (400, "forbidden"),
        (401, "forbidden"),
        (404, "forbidden"),
        (413, "forbidden"),
        (302, "forbidden"),
        (429, "unavailable"),
    ]
    .into_iter()
    .enumerate()
    {
        stub.set_mode(AuthzMode::Status(status));
        let reply = get(&gw, "/v1/chat", &token(&format!("user{i}")));
        let check = match outcome {
            "allow" => expect::allowed(&reply).and_then(|()| {
                expect::upstream_header(&reply, "x-auth-authz", Some("failure-mode-allow"))
            }),
            "forbidden" => error_reply(&reply, 403, "forbidden").map(|_| ()),
            _ => unavailable(&reply, 503),
        };
        checks.check(&format!("service answers {status}: {outcome}"), check);
    }
    // A refusal is not cached: the next request asks again.
    stub.set_mode(AuthzMode::Status(400));
    let before = stub.request_count();
    get(&gw, "/v1/chat", &token("user3"));
    checks.check(
        "a refusal is asked again",
        (stub.request_count() == before + 1)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count() - before)),
    );
    assert_eq!(gw.envoy.stat("authgate.failure_mode_allowed"), 3);
    checks.finish();
}

/// `allow_stale` serves an expired allow only `max_stale_s` past its expiry (issue 15 item 7).
#[test]
fn allow_stale_is_bounded_by_max_stale_s() {
    let stub = AuthzStub::start(allow_with_tenant());
    let stale = plugin(enterprise(json!({"failure_mode": "allow_stale",
        "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1, "max_stale_s": 1}})));
    let gw = gateway(&stale, stub.port());
    let frank = token("frank");
    expect::allowed(&get(&gw, "/v1/chat", &frank)).unwrap_or_else(|e| panic!("{e}"));
    stub.set_mode(AuthzMode::Status(503));
    std::thread::sleep(Duration::from_millis(1_200));
    let reply = get(&gw, "/v1/chat", &frank);
    expect::allowed(&reply)
        .and_then(|()| expect::upstream_header(&reply, "x-auth-authz", Some("stale")))
        .unwrap_or_else(|e| panic!("within max_stale_s: {e}"));
    std::thread::sleep(Duration::from_millis(1_000));
    let reply = get(&gw, "/v1/chat", &frank);
    unavailable(&reply, 503).unwrap_or_else(|e| panic!("past max_stale_s: {e}"));
}

#[test]
fn revocation_takes_effect_after_the_allow_ttl() {
    let stub = AuthzStub::start(allow_with_tenant());
    let plugin = plugin(enterprise(
        json!({"cache": {"allow_ttl_s": 1, "deny_ttl_s": 10}}),
    ));
    let gw = gateway(&plugin, stub.port());
    let dave = token("dave");
    let mut checks = Checks::new();
    checks.check("allowed", expect::allowed(&get(&gw, "/v1/chat", &dave)));
    stub.set_mode(AuthzMode::Json(
        json!({"authorized": false, "reason": "revoked"}),
    ));
    checks.check(
        "still allowed from the cache",
        expect::allowed(&get(&gw, "/v1/chat", &dave)),
    );
    std::thread::sleep(Duration::from_millis(1_100));
    checks.check(
        "revoked after the allow TTL",
        error_reply(&get(&gw, "/v1/chat", &dave), 403, "forbidden").map(|_| ()),
    );
    checks.finish();
}

#[test]
fn failure_modes_for_every_kind_of_failure() {
    let stub = AuthzStub::start(AuthzMode::Status(500));
    let mut checks = Checks::new();

    let deny = plugin(enterprise(json!({"status_on_error": 503})));
    let gw = gateway(&deny, stub.port());
    let modes = [
        ("500", AuthzMode::Status(500)),
        ("garbage JSON", AuthzMode::Garbage),
        ("wrong shape", AuthzMode::WrongShape),
        ("oversized body", AuthzMode::Oversized(200_000)),
    ];
    for (i, (name, mode)) in modes.into_iter().enumerate() {
        stub.set_mode(mode);
        // A fresh subject each time: failures are never cached, but keep the cases apart.
        let reply = get(&gw, "/v1/chat", &token(&format!("user{i}")));
        checks.check(&format!("deny mode, {name}: 503"), unavailable(&reply, 503));
    }
    let reply = get(&gw, "/v1/chat", &token("user0"));
    checks.check(
        "a failure is not cached: asked again",
        unavailable(&reply, 503),
    );
    checks.check(
        "five calls for five requests",
        (stub.request_count() == 5)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );
    drop(gw);

    // The service is down (nothing listens on its port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let gw = gateway(&plugin(enterprise(json!({"status_on_error": 502}))), closed);
    checks.check(
        "service down, deny: status_on_error",
        unavailable(&get(&gw, "/v1/chat", &token("erin")), 502),
    );
    drop(gw);
    let gw = gateway(
        &plugin(enterprise(json!({"failure_mode": "allow"}))),
        closed,
    );
    let reply = get(&gw, "/v1/chat", &token("erin"));
    checks.check(
        "service down, allow: passes, marked",
        expect::allowed(&reply)
            .and_then(|()| {
                expect::upstream_header(&reply, "x-auth-authz", Some("failure-mode-allow"))
            })
            .and_then(|()| expect::upstream_header(&reply, "x-auth-subject", Some("erin"))),
    );
    checks.check(
        "failure_mode_allowed counted",
        (gw.envoy.stat("authgate.failure_mode_allowed") == 1)
            .then_some(())
            .ok_or("no failure_mode_allowed".to_string()),
    );
    drop(gw);

    stub.set_mode(allow_with_tenant());
    let stale = plugin(enterprise(json!({"failure_mode": "allow_stale",
                                         "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1}})));
    let gw = gateway(&stale, stub.port());
    let frank = token("frank");
    checks.check(
        "allow_stale: first allowed",
        expect::allowed(&get(&gw, "/v1/chat", &frank)),
    );
    stub.set_mode(AuthzMode::Status(503));
    std::thread::sleep(Duration::from_millis(1_100));
    let reply = get(&gw, "/v1/chat", &frank);
    checks.check(
        "allow_stale: the expired allow is served, marked stale",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "x-auth-authz", Some("stale")))
            .and_then(|()| expect::upstream_header(&reply, "x-tenant", Some("acme-from-authz"))),
    );
    checks.check(
        "allow_stale: no earlier allow, denied",
        unavailable(&get(&gw, "/v1/chat", &token("grace")), 503),
    );
    checks.finish();
}

#[test]
fn a_slow_service_is_cut_off_at_timeout_and_the_body_never_goes_upstream() {
    let stub = AuthzStub::start(AuthzMode::Delay(
        Duration::from_secs(3),
        Box::new(allow_with_tenant()),
    ));
    let gw = gateway(&plugin(enterprise(json!({"timeout_ms": 500}))), stub.port());
    let started = Instant::now();
    let reply = Req::post(gw.url("/v1/chat/completions"))
        .bearer(&token("heidi"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    let elapsed = started.elapsed();
    let mut checks = Checks::new();
    checks.check("timeout: 503", unavailable(&reply, 503));
    checks.check(
        "answered at the timeout, not after the service's 3 s",
        (elapsed < Duration::from_millis(1_500))
            .then_some(())
            .ok_or(format!("took {elapsed:?}")),
    );
    checks.check(
        "the request (and its body) never reached the upstream",
        (gw.upstream.requests() == 0)
            .then_some(())
            .ok_or(format!("{} upstream requests", gw.upstream.requests())),
    );
    checks.check(
        "authz_timeout counted",
        (gw.envoy.stat("authgate.authz_timeout") == 1)
            .then_some(())
            .ok_or("no authz_timeout".to_string()),
    );
    checks.finish();
}

#[test]
fn openfga_dialect_against_its_check_api() {
    let stub = AuthzStub::start(AuthzMode::Json(json!({"allowed": true})));
    let fga = json!({"cluster": "authz", "authority": "fga.internal", "dialect": "openfga",
                     "openfga": {"store_id": "01HSTORE", "authorization_model_id": "01HMODEL",
                                 "user": "user:{subject.id}", "relation": "can_invoke",
                                 "object": "route:{request.path}"}});
    let gw = gateway(&plugin(fga), stub.port());
    let ivan = token("ivan");
    let mut checks = Checks::new();
    checks.check(
        "allowed: true",
        expect::allowed(&get(&gw, "/v1/chat", &ivan)),
    );
    let requests = stub.requests();
    let body: Value = serde_json::from_str(&requests[0].body).unwrap_or_default();
    checks.check(
        "POST /stores/{id}/check with the tuple",
        (requests[0].path == "/stores/01HSTORE/check"
            && body
                == json!({"tuple_key": {"user": "user:ivan", "relation": "can_invoke",
                                        "object": "route:/v1/chat"},
                          "authorization_model_id": "01HMODEL"}))
        .then_some(())
        .ok_or(format!("{:?}", requests[0])),
    );
    stub.set_mode(AuthzMode::Json(json!({"allowed": false})));
    checks.check(
        "allowed: false",
        error_reply(&get(&gw, "/v1/other", &ivan), 403, "forbidden").map(|_| ()),
    );
    checks.finish();
}

#[test]
fn paused_requests_are_bounded_per_worker() {
    let stub = AuthzStub::start(AuthzMode::Delay(
        Duration::from_millis(1_500),
        Box::new(allow_with_tenant()),
    ));
    let mut config = plugin(enterprise(json!({"timeout_ms": 5000})));
    config["limits"] = json!({"max_paused_requests": 2});
    let gw = gateway(&config, stub.port());
    let url = gw.url("/v1/x");
    let waiting: Vec<_> = ["amy", "bob"]
        .into_iter()
        .map(|subject| {
            let (url, bearer) = (url.clone(), token(subject));
            std::thread::spawn(move || Req::get(url).bearer(&bearer).send())
        })
        .collect();
    // Both are paused on their calls before the third arrives.
    let started = Instant::now();
    while stub.request_count() < 2 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = get(&gw, "/v1/x", &token("cat"));
    let mut checks = Checks::new();
    checks.check(
        "beyond the bound: 503 overloaded at once, with Retry-After",
        error_reply(&third, 503, "overloaded").and_then(|_| {
            (third.header("retry-after") == Some("1"))
                .then_some(())
                .ok_or(format!("{third}"))
        }),
    );
    for (i, handle) in waiting.into_iter().enumerate() {
        let reply = handle
            .join()
            .unwrap_or_else(|_| panic!("client thread failed"));
        checks.check(
            &format!("paused request {i} is answered normally"),
            expect::allowed(&reply),
        );
    }
    checks.check(
        "once they are answered there is room again",
        expect::allowed(&get(&gw, "/v1/x", &token("cat"))),
    );
    checks.check(
        "authgate.overloaded counted once",
        (gw.envoy.stat("authgate.overloaded") == 1)
            .then_some(())
            .ok_or(format!("{}", gw.envoy.stat("authgate.overloaded"))),
    );
    checks.finish();
}

#[test]
fn the_service_learns_the_effective_roles_of_a_hierarchy() {
    let stub = AuthzStub::start(allow_with_tenant());
    let mut config = plugin(enterprise(json!({})));
    config["role_hierarchy"] = json!({"admin": ["developer"], "developer": ["viewer"]});
    let gw = gateway(&config, stub.port());
    let mut checks = Checks::new();
    checks.check(
        "allowed",
        expect::allowed(&get(&gw, "/v1/x", &token("alice"))),
    );
    let body: Value = stub
        .requests()
        .first()
        .and_then(|r| serde_json::from_str(&r.body).ok())
        .unwrap_or_default();
    checks.check(
        "subject.roles as the token has them, subject.effective_roles with what they include",
        (body["subject"]["roles"] == json!(["user", "admin"])
            && body["subject"]["effective_roles"]
                == json!(["user", "admin", "developer", "viewer"]))
        .then_some(())
        .ok_or(format!("{body}")),
    );
    checks.finish();
}

#[test]
fn an_upstream_refusal_evicts_the_credentials_cached_decisions_on_every_worker() {
    let stub = AuthzStub::start(allow_with_tenant());
    let config = plugin(enterprise(json!({
        "cache": {"allow_ttl_s": 60, "deny_ttl_s": 1, "evict_on_upstream": [401, 403]}
    })));
    let gw = Gateway::start_with(
        &config,
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.cluster("authz", stub.port()).concurrency(2),
    );
    let (alice, bob) = (token("alice"), token("bob"));
    let mut checks = Checks::new();
    // Each request on a new connection: both workers see both tokens and cache their allows.
    let warm = |who: &str| {
        (0..24)
            .map(|_| get(&gw, "/v1/x", who).status)
            .filter(|status| *status == 200)
            .count()
    };
    checks.check(
        "warm-up allowed",
        (warm(&alice) == 24 && warm(&bob) == 24)
            .then_some(())
            .ok_or("a warm-up request failed".to_string()),
    );
    let calls = stub.request_count();
    checks.check(
        "each worker asked once per token",
        (calls == 4).then_some(()).ok_or(format!("{calls} calls")),
    );
    let refused = get(&gw, "/v1/x?upstream_status=401", &alice);
    checks.check(
        "the upstream's 401 reaches the client",
        (refused.status == 401)
            .then_some(())
            .ok_or(format!("{refused}")),
    );
    // Other workers apply the eviction on their next tick.
    std::thread::sleep(Duration::from_millis(400));
    warm(&alice);
    warm(&bob);
    let after = stub.request_count();
    checks.check(
        "alice is asked about again on both workers; bob still rides the cache",
        (after == calls + 2)
            .then_some(())
            .ok_or(format!("{calls} calls before, {after} after")),
    );
    checks.check(
        "counted",
        (gw.envoy.stat("authgate.authz_evicted_upstream") == 1)
            .then_some(())
            .ok_or(format!(
                "{}",
                gw.envoy.stat("authgate.authz_evicted_upstream")
            )),
    );
    checks.finish();
}
