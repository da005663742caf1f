//! The bug the `decide` target found (fuzz/README.md, "Found"), as plain tests of the expected
//! behaviour; the fuzzer's own inputs are in regressions/decide/ (replayed by tests/replay.rs).
//!
//! A configured API key that is inactive or expired must be refused (401), never handed to the
//! enterprise authorization service as an agent token (src/core/engine.rs says so: "A configured
//! key that is inactive or expired is that key, refused: never an agent token to ask the
//! authorization service about"). But the opaque-token candidate is checked first whenever it
//! comes first: when the rule lists `opaque_token` before `api_key`, or when the key arrives in
//! `authorization` while `x-api-key` holds something else (ApiKeys::find reads one header only).
//! The revoked key's SHA-256 then goes to the service as an agent token, and the service, not
//! the key's `active: false` / `expires_at`, decides whether the request passes (its allow, or
//! `allow_stale` with a cached allow, lets it through); the key's failures do not count toward
//! the backoff as a bad key.

use authgate::core::config::Config;
use authgate::core::engine::{decide, Context, Effects, State, Step};
use authgate::core::metrics::Recorded;
use authgate::core::policy::backoff::MemoryStore;
use authgate::core::request::Request;

const NOW_MS: u64 = 1_893_456_000_000;
const RETIRED_KEY_SHA256: &str = "2df802a4707f0e0fd134ef7bd6d1a47097ebee4b28ea4d0a88d238cb023e3cf0";

fn config(requires_any: &str) -> Config {
    let json = format!(
        r#"{{"api_keys": {{"headers": ["x-api-key", "authorization"], "keys": [
              {{"id": "retired", "sha256": "{RETIRED_KEY_SHA256}", "principal": "svc:old", "active": false}}]}},
            "opaque_tokens": "enterprise",
            "rules": [{{"match": {{"prefix": "/"}}, "requires_any": {requires_any}}}],
            "enterprise": {{"cluster": "authz", "authority": "authz"}}}}"#
    );
    Config::parse(json.as_bytes()).expect("config")
}

/// What `decide` does with this request: a status, or "call_authz" when it asks the service.
fn outcome(config: &Config, headers: &[(&str, &str)]) -> String {
    let request = Request::new(headers);
    let mut state = State::new(config);
    let mut shared = MemoryStore::default();
    let mut metrics = Recorded::default();
    let ctx = Context {
        now_ms: NOW_MS,
        may_wait: true,
        log: true,
    };
    let effects = Effects {
        metrics: &mut metrics,
        shared: &mut shared,
        random: &mut authgate::core::random::OsRandom,
    };
    match decide(config, &mut state, &request, ctx, effects).step {
        Step::Continue { .. } => "continue".to_string(),
        Step::Respond(reply) => reply.status.to_string(),
        Step::CallAuthz(call) => format!("call_authz ({:?})", call.pending.kind),
        other => format!("{other:?}"),
    }
}

#[test]
fn an_inactive_key_is_refused_when_opaque_tokens_are_listed_first() {
    let config = config(r#"["opaque_token", "api_key"]"#);
    let got = outcome(
        &config,
        &[
            (":method", "POST"),
            (":path", "/v1/messages"),
            ("x-api-key", "sk-agent-retired"),
        ],
    );
    assert_eq!(got, "401");
}

#[test]
fn an_inactive_key_in_authorization_is_refused_when_x_api_key_holds_another_value() {
    let config = config(r#"["api_key", "opaque_token"]"#);
    let got = outcome(
        &config,
        &[
            (":method", "POST"),
            (":path", "/v1/messages"),
            ("x-api-key", "not-a-key"),
            ("authorization", "Bearer sk-agent-retired"),
        ],
    );
    assert_eq!(got, "401");
}

/// The order that always worked.
#[test]
fn an_inactive_key_is_refused_when_api_keys_are_listed_first() {
    let config = config(r#"["api_key", "opaque_token"]"#);
    let got = outcome(
        &config,
        &[
            (":method", "POST"),
            (":path", "/v1/messages"),
            ("x-api-key", "sk-agent-retired"),
        ],
    );
    assert_eq!(got, "401");
}
