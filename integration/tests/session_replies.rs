//! Session-expired replies that agents, browsers and API clients understand (DESIGN.md
//! "Session-expired replies"), in real Envoy: the official `openai` and `anthropic` Python SDKs
//! play the agent (non-streaming and streaming) against the reference authorization service, and
//! the whole lapse → renewal → same token works again flow runs end to end (the renewal as the
//! gateway asks for it once the owner signed in; the sign-in itself is in `sign_in.rs`).

use std::process::Command;
use std::time::Duration;

use authgate_integration::authz_service::{AuthzOptions, AuthzService};
use authgate_integration::expect::{self, Checks};
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{
    now, repo_root, FixtureKey, Gateway, JwksStub, Reply, Req, TokenBuilder,
};
use serde_json::{json, Value};

const FALLBACK_URL: &str = "https://sso.example.com/reauth";
/// The key a gateway presents to `POST /api/sessions/renew`.
const GATEWAY_KEY: &str = "gateway-key-for-tests-0123";
/// Expired-session answers are cached for deny_ttl_s (1 s).
const TTL: Duration = Duration::from_millis(1_100);

fn plugin() -> Value {
    let rule = |prefix: &str, reply: &str| {
        json!({"match": {"prefix": prefix}, "requires_any": ["jwt:corp", "opaque_token"],
               "enterprise": true, "session_reply": reply})
    };
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "opaque_tokens": "enterprise",
        "rules": [rule("/anthropic/", "anthropic"), rule("/v1/", "openai"),
                  rule("/api/", "api"), rule("/app/", "browser")],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000,
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"],
                       "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1}},
        "session": {"reauth_url": FALLBACK_URL, "hold_companion": true,
                    "message": "Your session has expired. Open {reauth_url} to sign in again, then retry."}
    })
}

fn start() -> (tempfile::TempDir, AuthzService, Gateway) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let service = AuthzService::start_with(
        &dir.path().join("authz.sqlite"),
        AuthzOptions {
            gateway_key: Some(GATEWAY_KEY.to_string()),
            ..AuthzOptions::default()
        },
    );
    let port = service.port();
    let idp = JwksStub::start(authgate_integration::jwks(&[]));
    let gw = Gateway::start_with(&plugin(), idp, |c| {
        c.cluster("authz", port).hold_companion()
    });
    (dir, service, gw)
}

/// Runs `integration/sdk/agent.py` with the pinned SDK; its JSON output, or a panic with its
/// traceback (an SDK that cannot parse a reply raises).
fn agent(sdk: &str, base_url: &str, api_key: &str) -> Value {
    let python = repo_root().join(".venv/bin/python");
    let script = repo_root().join("integration/sdk/agent.py");
    let output = Command::new(&python)
        .arg(&script)
        .args([sdk, "--base-url", base_url, "--api-key", api_key])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (install the SDKs with `make setup`): {e}",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "the {sdk} SDK failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "agent output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every call's text shows the user the gateway's re-auth URL (the service gives none).
fn every_text_has_a_reauth_url(results: &Value) -> expect::Check {
    let calls = results.as_object().ok_or("no results")?;
    for (call, result) in calls {
        if call.ends_with("_events") {
            continue;
        }
        let text = result["text"].as_str().unwrap_or("");
        if !text.contains(FALLBACK_URL) || !text.starts_with("Your session has expired.") {
            return Err(format!("{call}: the user would see {text:?}"));
        }
    }
    Ok(())
}

fn expired_jwt() -> String {
    let mut claims = corp_claims("alice");
    claims["exp"] = json!(now() - 600);
    TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign()
}

#[test]
fn agents_see_the_reauth_url_and_a_renewed_session_works_with_the_same_token() {
    let (_dir, service, gw) = start();
    let (token, sha) = service.create_token("alice@example.com", 3600);
    service.expire(&sha);
    let mut checks = Checks::new();

    let openai = agent("openai", &gw.url("/v1"), &token);
    checks.check(
        "openai SDK: chat, completions, responses, streaming or not",
        every_text_has_a_reauth_url(&openai),
    );
    checks.check(
        "openai SDK: the model is echoed, usage zeros",
        (openai["chat"]["model"] == "gpt-agent"
            && openai["completions"]["model"] == "gpt-agent-instruct"
            && openai["responses"]["model"] == "gpt-agent"
            && openai["chat_stream"]["usage"] == 0)
            .then_some(())
            .ok_or(format!("{openai}")),
    );

    let anthropic = agent("anthropic", &gw.url("/anthropic"), &token);
    checks.check(
        "anthropic SDK: messages, streaming or not",
        every_text_has_a_reauth_url(&anthropic),
    );
    checks.check(
        "anthropic SDK: model echoed, end_turn, the documented event sequence",
        (anthropic["messages"]["model"] == "claude-agent"
            && anthropic["messages"]["stop_reason"] == "end_turn"
            && anthropic["messages_stream"]["stop_reason"] == "end_turn"
            && anthropic["messages_stream_events"]["events"]
                == json!([
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]))
        .then_some(())
        .ok_or(format!("{anthropic}")),
    );

    // The owner signs in again (here: the gateway's renewal call that follows a sign-in).
    let renewal = service.renew_as_gateway(GATEWAY_KEY, &sha, "ticket-1");
    checks.check(
        "the session is renewed for its owner",
        (renewal.status == 200 && renewal.json().is_some_and(|b| b["renewed"] == true))
            .then_some(())
            .ok_or(format!("{renewal}")),
    );
    std::thread::sleep(TTL);
    let reply = Req::post(gw.url("/v1/chat/completions"))
        .bearer(&token)
        .json(&json!({"model": "gpt-agent", "messages": []}))
        .send();
    checks.check(
        "the same agent token works again (reaches the upstream)",
        expect::allowed(&reply).and_then(|()| {
            expect::upstream_header(&reply, "x-auth-email", Some("alice@example.com"))
        }),
    );
    let stats = gw.envoy.stats();
    checks.check(
        "session_expired counted by reply kind",
        (stats
            .get("authgate.session_expired.openai")
            .copied()
            .unwrap_or(0)
            >= 6
            && stats
                .get("authgate.session_expired.anthropic")
                .copied()
                .unwrap_or(0)
                >= 3)
            .then_some(())
            .ok_or(format!("{stats:?}")),
    );
    checks.finish();
}

/// The status of error-shaped session replies (README "Session-expired replies").
const ERROR_STATUS: u16 = 401;

/// OpenAI's error object, carrying the re-auth URL, at a status no client retries.
fn openai_error(reply: &Reply) -> expect::Check {
    let body = reply.json().unwrap_or_default();
    (reply.status == ERROR_STATUS
        && body["error"]["code"] == "session_expired"
        && body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(FALLBACK_URL))
        && reply.header("x-should-retry") == Some("false")
        && reply.header("content-type") == Some("application/json"))
    .then_some(())
    .ok_or(format!("{reply}"))
}

fn sse_events(reply: &Reply) -> Vec<Value> {
    reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

#[test]
fn expired_jwts_get_the_shape_of_each_route() {
    let (_dir, _service, gw) = start();
    let token = expired_jwt();
    let mut checks = Checks::new();

    let reply = Req::post(gw.url("/v1/chat/completions"))
        .bearer(&token)
        .json(&json!({"model": "gpt-5-codex", "stream": true, "messages": []}))
        .send();
    let text: String = sse_events(&reply)
        .iter()
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    checks.check(
        "openai route, stream: chunks ending in [DONE], with the configured URL",
        (reply.status == 200
            && reply.header("content-type") == Some("text/event-stream")
            && reply.body.ends_with("data: [DONE]\n\n")
            && text.contains(FALLBACK_URL)
            && reply.header("x-auth-reauth-url") == Some(FALLBACK_URL)
            && sse_events(&reply)[0]["model"] == "gpt-5-codex")
            .then_some(())
            .ok_or(format!("{reply}")),
    );

    let reply = Req::post(gw.url("/anthropic/v1/messages"))
        .bearer(&token)
        .json(&json!({"model": "claude-x", "max_tokens": 10, "messages": []}))
        .send();
    let body = reply.json().unwrap_or_default();
    checks.check(
        "anthropic route: a message",
        (reply.status == 200
            && body["type"] == "message"
            && body["model"] == "claude-x"
            && body["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains(FALLBACK_URL)))
        .then_some(())
        .ok_or(format!("{reply}")),
    );

    let reply = Req::get(gw.url("/api/things")).bearer(&token).send();
    checks.check(
        "api route: 401 session_expired",
        expect::session_expired_api(&reply).and_then(|()| {
            (reply.json_str("reauth_url").as_deref() == Some(FALLBACK_URL))
                .then_some(())
                .ok_or(format!("{reply}"))
        }),
    );
    let reply = Req::get(gw.url("/app/home")).bearer(&token).send();
    checks.check(
        "browser route: 302 to the URL",
        (reply.status == 302 && reply.header("location") == Some(FALLBACK_URL))
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    let reply = Req::get(gw.url("/v1/models")).bearer(&token).send();
    checks.check(
        "openai route, not a completion endpoint: the api reply",
        expect::session_expired_api(&reply),
    );

    let reply = Req::post(gw.url("/v1/chat/completions"))
        .bearer(&token)
        .header("content-type", "application/json")
        .body("{\"model\": \"gpt\", \"stream\": tru")
        .send();
    checks.check(
        "malformed body: OpenAI's error object with the URL, not to be retried",
        openai_error(&reply),
    );

    // A long agent session's body, `stream` last, far past Envoy's default buffer limits.
    let prompt = "x\"}]{[ ".repeat(8 << 17);
    let big = json!({"model": "gpt-big", "messages": [{"role": "user", "content": prompt}],
                     "stream": true});
    for accept in [None, Some("text/event-stream")] {
        let mut request = Req::post(gw.url("/v1/chat/completions")).bearer(&token);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let reply = request.json(&big).send();
        checks.check(
            &format!("an 8 MiB body (Accept {accept:?}) is read: the stream it asked for"),
            (reply.status == 200
                && reply.header("content-type") == Some("text/event-stream")
                && sse_events(&reply)
                    .first()
                    .is_some_and(|e| e["model"] == "gpt-big"))
            .then_some(())
            .ok_or(format!(
                "{} {}",
                reply.status,
                &reply.body[..reply.body.len().min(300)]
            )),
        );
    }
    let anthropic_big = json!({"model": "claude-big", "max_tokens": 10,
                               "messages": [{"role": "user", "content": "y".repeat(3 << 20)}],
                               "stream": true});
    let reply = Req::post(gw.url("/anthropic/v1/messages"))
        .bearer(&token)
        .json(&anthropic_big)
        .send();
    checks.check(
        "a 3 MiB Anthropic body: the message_start names its model",
        (reply.status == 200
            && reply.body.starts_with("event: message_start")
            && sse_events(&reply)
                .first()
                .is_some_and(|e| e["message"]["model"] == "claude-big"))
        .then_some(())
        .ok_or(format!("{}", reply.status)),
    );
    checks.check(
        "nothing reached the upstream",
        (gw.upstream.requests() == 0)
            .then_some(())
            .ok_or(format!("{} upstream requests", gw.upstream.requests())),
    );
    checks.finish();
}

#[test]
fn without_the_companion_replies_are_built_at_the_headers() {
    let mut plugin = plugin();
    plugin["session"]["hold_companion"] = json!(false);
    let idp = JwksStub::start(authgate_integration::jwks(&[]));
    let gw = Gateway::start_with(&plugin, idp, |c| c);
    let token = expired_jwt();
    let body = json!({"model": "gpt-5", "stream": true, "messages": []});
    let mut checks = Checks::new();
    for accept in [None, Some("text/event-stream")] {
        let mut request = Req::post(gw.url("/v1/chat/completions")).bearer(&token);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let reply = request.json(&body).send();
        checks.check(
            &format!("the body is not read (Accept {accept:?}): OpenAI's error object"),
            openai_error(&reply),
        );
    }
    let reply = Req::post(gw.url("/anthropic/v1/messages"))
        .bearer(&token)
        .json(&json!({"model": "claude-x", "max_tokens": 10, "stream": true, "messages": []}))
        .send();
    let body = reply.json().unwrap_or_default();
    checks.check(
        "anthropic route: Anthropic's error object with the URL, not to be retried",
        (reply.status == ERROR_STATUS
            && body["type"] == "error"
            && body["error"]["type"] == "authentication_error"
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(FALLBACK_URL))
            && reply.header("x-should-retry") == Some("false"))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    checks.check(
        "nothing reached the upstream",
        (gw.upstream.requests() == 0)
            .then_some(())
            .ok_or(format!("{} upstream requests", gw.upstream.requests())),
    );
    checks.finish();
}
