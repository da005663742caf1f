//! The whole agent-token flow in real Envoy with the reference authorization service (SQLite):
//! an opaque agent token is decided by the service; when its session lapses the agent gets the
//! session-expired reply with a one-time re-auth URL; completing re-auth there makes the same
//! token work again once the cached answer expires. Revocation and subject denial too.

use std::time::Duration;

use authgate_integration::authz_service::{sha256_hex, AuthzService};
use authgate_integration::expect::{self, error_reply, Checks};
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{FixtureKey, Gateway, JwksStub, Reply, Req, TokenBuilder};
use serde_json::{json, Value};

/// Cached answers live 1 s, so each state change shows up after a short, bounded wait.
const TTL: Duration = Duration::from_millis(1_100);

fn plugin() -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "opaque_tokens": "enterprise",
        "rules": [{"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp", "opaque_token"],
                   "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000,
                       "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1}},
        "session": {"reauth_url": "https://sso.example.com/fallback"}
    })
}

fn start() -> (tempfile::TempDir, AuthzService, Gateway) {
    start_with(plugin())
}

fn start_with(plugin: Value) -> (tempfile::TempDir, AuthzService, Gateway) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let service = AuthzService::start(&dir.path().join("authz.sqlite"));
    let port = service.port();
    let idp = JwksStub::start(authgate_integration::jwks(&[]));
    let gw = Gateway::start_with(&plugin, idp, |c| c.cluster("authz", port));
    (dir, service, gw)
}

fn call(gw: &Gateway, token: &str) -> Reply {
    Req::post(gw.url("/v1/chat/completions"))
        .bearer(token)
        .json(&json!({"model": "m", "messages": []}))
        .send()
}

#[test]
fn agent_token_session_lapses_and_reauth_restores_the_same_token() {
    let (_dir, service, gw) = start();
    let (token, sha) = service.create_token("alice@example.com", 3600);
    let mut checks = Checks::new();

    let reply = call(&gw, &token);
    checks.check(
        "an active agent token passes with the service's headers",
        expect::allowed(&reply)
            .and_then(|()| {
                expect::upstream_header(&reply, "x-user-email", Some("alice@example.com"))
            })
            .and_then(|()| {
                expect::upstream_header(&reply, "x-auth-credential", Some("opaque_token"))
            })
            .and_then(|()| expect::upstream_header(&reply, "authorization", None)),
    );

    service.expire(&sha);
    std::thread::sleep(TTL);
    let reply = call(&gw, &token);
    let reauth_url = reply.json_str("reauth_url").unwrap_or_default();
    checks.check(
        "after the lapse: session_expired with a one-time re-auth URL from the service",
        expect::session_expired_api(&reply).and_then(|()| {
            (reauth_url.starts_with(&service.url("/reauth?code="))
                && reply.header("x-auth-reauth-url") == Some(reauth_url.as_str()))
            .then_some(())
            .ok_or(format!("{reply}"))
        }),
    );

    let login = Req::get(&reauth_url).send();
    checks.check(
        "completing re-auth at the URL",
        (login.status == 200)
            .then_some(())
            .ok_or(format!("{login}")),
    );
    let again = Req::get(&reauth_url).send();
    checks.check(
        "the code is single-use",
        (again.status == 400)
            .then_some(())
            .ok_or(format!("{again}")),
    );
    std::thread::sleep(TTL);
    checks.check(
        "the same agent token works again once the cached answer expired",
        expect::allowed(&call(&gw, &token)),
    );

    service.revoke(&sha);
    std::thread::sleep(TTL);
    checks.check(
        "a revoked token is refused with the service's reason",
        error_reply(&call(&gw, &token), 403, "forbidden").and_then(|body| {
            (body["message"] == "agent token revoked")
                .then_some(())
                .ok_or(format!("{body}"))
        }),
    );
    checks.check(
        "an unknown agent token is refused",
        error_reply(
            &call(&gw, "agt_not_issued_by_anyone_000000"),
            403,
            "forbidden",
        )
        .map(|_| ()),
    );

    let requests = service.requests();
    checks.check(
        "the service saw hashes only, never the token",
        (requests.iter().all(|r| !r.to_string().contains(&token))
            && requests.iter().any(|r| {
                r["subject"]["token_sha256"] == sha.as_str()
                    && r["subject"]["kind"] == "opaque_token"
            }))
        .then_some(())
        .ok_or(format!("{requests:?}")),
    );
    checks.check(
        "the stored hash is the token's SHA-256",
        (sha == sha256_hex(&token)).then_some(()).ok_or(sha.clone()),
    );
    checks.finish();
}

#[test]
fn jwt_subjects_are_decided_by_the_service_too() {
    let (_dir, service, gw) = start();
    let token = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("mallory"))
        .sign();
    let mut checks = Checks::new();
    let reply = call(&gw, &token);
    checks.check(
        "an authenticated subject passes",
        expect::allowed(&reply)
            .and_then(|()| expect::upstream_header(&reply, "x-authz-subject", Some("mallory"))),
    );
    service.deny_subject("mallory", "account suspended");
    std::thread::sleep(TTL);
    checks.check(
        "a subject the service denies gets its reason",
        error_reply(&call(&gw, &token), 403, "forbidden").and_then(|body| {
            (body["message"] == "account suspended")
                .then_some(())
                .ok_or(format!("{body}"))
        }),
    );
    checks.finish();
}

#[test]
fn guessing_agent_tokens_backs_off_like_guessing_keys() {
    let mut plugin = plugin();
    plugin["failed_auth_backoff"] = json!({"after_failures": 2, "base_s": 30});
    let (_dir, service, gw) = start_with(plugin);
    let (token, _) = service.create_token("alice@example.com", 3600);
    let mut checks = Checks::new();
    for guess in ["agt_guess_0000000000000001", "agt_guess_0000000000000002"] {
        checks.check(
            &format!("{guess}: unknown to the service, 403"),
            error_reply(&call(&gw, guess), 403, "forbidden").map(|_| ()),
        );
    }
    let calls_before = service.request_count();
    let reply = call(&gw, "agt_guess_0000000000000003");
    checks.check(
        "the third guess is refused at the gateway, 429",
        error_reply(&reply, 429, "rate_limited").map(|_| ()),
    );
    checks.check(
        "and never reaches the service",
        (service.request_count() == calls_before)
            .then_some(())
            .ok_or(format!("{} calls", service.request_count())),
    );
    checks.check(
        "even a real token waits out the block from that address",
        error_reply(&call(&gw, &token), 429, "rate_limited").map(|_| ()),
    );
    checks.finish();
}
