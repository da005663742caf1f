//! MCP requests through `engine::decide`: the body is asked for, each call goes to the rule that
//! selects it, headers must agree with the body, batches, and what the service is asked.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::core::config::Config;
use crate::core::engine::{decide, Context, Decision, Effects, State, Step};
use crate::core::metrics::{Metric, Recorded};
use crate::core::policy::backoff::MemoryStore;
use crate::core::request::{borrow_pairs, Request};

const NOW_S: u64 = 1_900_000_000;
const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn config_with(rules: Value, hold_companion: bool) -> Result<Config, String> {
    let json = json!({
        "jwt_providers": {"kc": {"issuer": "https://kc.test", "audiences": ["mcp"],
            "local_jwks": {"keys": [{"kty": "oct", "kid": "k", "k": URL_SAFE_NO_PAD.encode(SECRET)}]},
            "subject_claims": {"roles": "realm_access.roles"}}},
        "api_keys": {"keys": [{"id": "ci", "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"ci-key")),
                               "principal": "svc:ci"}]},
        "enterprise": {"cluster": "authz", "authority": "authz", "path": "/check",
                       "upstream_headers": ["x-auth-authz-subject"]},
        "session": {"hold_companion": hold_companion},
        "rules": rules
    });
    Config::parse(json.to_string().as_bytes()).map_err(|e| e.path)
}

fn config() -> Config {
    config_with(
        json!([
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["deploy_*"]}},
             "requires_any": ["jwt:kc"], "require_scopes": ["mcp:deploy"]},
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["audit_*"]}},
             "requires_any": ["jwt:kc"], "enterprise": true},
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["ci_*"]}},
             "requires_any": ["api_key"]},
            {"match": {"prefix": "/mcp"}, "requires_any": ["jwt:kc"], "require_scopes": ["mcp:tools"]}
        ]),
        true,
    )
    .unwrap()
}

fn token(scope: &str) -> String {
    use jwt_compact::alg::{Hs256, Hs256Key};
    use jwt_compact::{Algorithm, AlgorithmSignature};
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "k"}).to_string());
    let claims = json!({"iss": "https://kc.test", "aud": "mcp", "sub": "alice",
                        "exp": NOW_S + 600, "scope": scope,
                        "realm_access": {"roles": ["dev"]}});
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = Hs256.sign(&Hs256Key::new(SECRET), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
}

struct Sent<'a> {
    headers: Vec<(&'a str, String)>,
    body: Option<Value>,
}

fn post(bearer: &str, body: Option<Value>) -> Sent<'static> {
    Sent {
        headers: vec![
            (":method", "POST".to_string()),
            (":path", "/mcp".to_string()),
            (":authority", "gw.test".to_string()),
            ("authorization", format!("Bearer {bearer}")),
        ],
        body,
    }
}

fn run(config: &Config, state: &mut State, sent: &Sent<'_>, metrics: &mut Recorded) -> Decision {
    let owned: Vec<(String, String)> = sent
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let pairs = borrow_pairs(&owned);
    let body = sent.body.as_ref().map(|b| b.to_string().into_bytes());
    let request = Request::new(&pairs).with_body(body.as_deref());
    decide(
        config,
        state,
        &request,
        Context {
            now_ms: NOW_S * 1000,
            may_wait: false,
            log: true,
        },
        Effects {
            metrics,
            shared: &mut MemoryStore::default(),
            random: &mut crate::core::random::OsRandom,
        },
    )
}

fn decide_once(config: &Config, sent: &Sent<'_>) -> Decision {
    run(
        config,
        &mut State::new(config),
        sent,
        &mut Recorded::default(),
    )
}

fn call(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": name, "arguments": {}}})
}

fn status(decision: &Decision) -> u16 {
    match &decision.step {
        Step::Respond(reply) => reply.status,
        Step::Continue { .. } => 200,
        Step::CallAuthz(_) => 0,
        other => panic!("unexpected step {other:?}"),
    }
}

#[test]
fn an_mcp_rule_asks_for_the_body_and_judges_each_tool() {
    let config = config();
    let tools = token("mcp:tools");
    // Headers alone never decide: the body is asked for, whatever Mcp-Method says.
    let mut sent = post(&tools, None);
    sent.headers.push(("mcp-method", "tools/list".to_string()));
    assert_eq!(decide_once(&config, &sent).step, Step::ReadBody);
    // A body-less request cannot be a call: the next rule judges it (a GET stream, a DELETE).
    let owned = [
        (":method", "GET"),
        (":path", "/mcp"),
        (":authority", "gw.test"),
    ];
    let request = Request::new(&owned).with_end_of_stream(true);
    let mut state = State::new(&config);
    let decision = decide(
        &config,
        &mut state,
        &request,
        Context {
            now_ms: NOW_S * 1000,
            may_wait: false,
            log: true,
        },
        Effects {
            metrics: &mut Recorded::default(),
            shared: &mut MemoryStore::default(),
            random: &mut crate::core::random::OsRandom,
        },
    );
    assert_eq!(status(&decision), 401);

    assert_eq!(
        status(&decide_once(
            &config,
            &post(&tools, Some(call("read_docs")))
        )),
        200
    );
    let denied = decide_once(&config, &post(&tools, Some(call("deploy_prod"))));
    let Step::Respond(reply) = &denied.step else {
        panic!("{denied:?}")
    };
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("insufficient_scope"), "{}", reply.body);
    let deployer = token("mcp:tools mcp:deploy");
    assert_eq!(
        status(&decide_once(
            &config,
            &post(&deployer, Some(call("deploy_prod")))
        )),
        200
    );
    // The API-key rule takes its tools; a JWT is not what it accepts.
    assert_eq!(
        status(&decide_once(
            &config,
            &post(&deployer, Some(call("ci_run")))
        )),
        401
    );
}

#[test]
fn headers_that_disagree_with_the_body_are_refused() {
    let config = config();
    let deployer = token("mcp:tools mcp:deploy");
    let mut sent = post(&deployer, Some(call("deploy_prod")));
    sent.headers.push(("mcp-method", "tools/call".to_string()));
    sent.headers.push(("mcp-name", "read_docs".to_string()));
    let decision = decide_once(&config, &sent);
    let Step::Respond(reply) = &decision.step else {
        panic!("{decision:?}")
    };
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], -32600);
    // The same name, base64-wrapped, agrees.
    sent.headers.pop();
    let wrapped = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("deploy_prod")
    );
    sent.headers.push(("mcp-name", wrapped));
    assert_eq!(status(&decide_once(&config, &sent)), 200);
    // Said twice, a header is refused whatever its copies say.
    let mut twice = post(&deployer, Some(call("deploy_prod")));
    twice.headers.push(("mcp-name", "deploy_prod".to_string()));
    twice.headers.push(("mcp-name", "read_docs".to_string()));
    assert_eq!(status(&decide_once(&config, &twice)), 400);
    // Not JSON-RPC at all: 400, never the weaker rule.
    let mut garbage = post(&deployer, None);
    garbage.body = Some(json!("just a string"));
    assert_eq!(status(&decide_once(&config, &garbage)), 400);
}

#[test]
fn every_call_in_a_batch_must_be_allowed() {
    let config = config();
    let tools = token("mcp:tools");
    let mut metrics = Recorded::default();
    let mut state = State::new(&config);
    let fine = post(&tools, Some(json!([call("read_docs"), call("search")])));
    assert_eq!(status(&run(&config, &mut state, &fine, &mut metrics)), 200);
    assert_eq!(
        metrics.0.iter().filter(|m| **m == Metric::Allowed).count(),
        1
    );
    // One call the token may not make refuses the batch.
    let mixed = post(
        &tools,
        Some(json!([call("read_docs"), call("deploy_prod")])),
    );
    assert_eq!(status(&decide_once(&config, &mixed)), 403);
    let deployer = token("mcp:tools mcp:deploy");
    let mixed = post(
        &deployer,
        Some(json!([call("read_docs"), call("deploy_prod")])),
    );
    assert_eq!(status(&decide_once(&config, &mixed)), 200);
    // Calls judged by rules taking other credentials, or needing two service decisions, go one
    // per request.
    let split = post(&deployer, Some(json!([call("read_docs"), call("ci_run")])));
    assert_eq!(status(&decide_once(&config, &split)), 400);
    let two = post(&deployer, Some(json!([call("audit_a"), call("audit_b")])));
    assert_eq!(status(&decide_once(&config, &two)), 400);
    // A response posted back is no call: the plain rule judges it.
    let answer = post(
        &tools,
        Some(json!({"jsonrpc": "2.0", "id": 9, "result": {}})),
    );
    assert_eq!(status(&decide_once(&config, &answer)), 200);
}

#[test]
fn the_service_is_asked_about_the_call_and_each_call_is_its_own_decision() {
    let config = config();
    let tools = token("mcp:tools");
    let a = decide_once(&config, &post(&tools, Some(call("audit_a"))));
    let b = decide_once(&config, &post(&tools, Some(call("audit_b"))));
    let (Step::CallAuthz(a), Step::CallAuthz(b)) = (&a.step, &b.step) else {
        panic!("{a:?} {b:?}")
    };
    assert_ne!(a.key, b.key);
    let body: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        body["mcp"],
        json!({"method": "tools/call", "name": "audit_a"})
    );
}

#[test]
fn mcp_rules_need_the_companion_and_valid_names() {
    let rule =
        |mcp: Value| json!([{"match": {"prefix": "/mcp", "mcp": mcp}, "requires_any": ["jwt:kc"]}]);
    assert_eq!(
        config_with(rule(json!({"methods": ["tools/call"]})), false)
            .err()
            .as_deref(),
        Some("rules[0].match.mcp")
    );
    assert_eq!(
        config_with(rule(json!({"methods": ["tools call"]})), true)
            .err()
            .as_deref(),
        Some("rules[0].match.mcp.methods[0]")
    );
    assert_eq!(
        config_with(rule(json!({"names": [""]})), true)
            .err()
            .as_deref(),
        Some("rules[0].match.mcp.names[0]")
    );
}

#[test]
fn a_request_without_any_credential_is_answered_before_its_body_is_read() {
    let config = config();
    let mut anonymous = post("unused", None);
    anonymous
        .headers
        .retain(|(name, _)| *name != "authorization");
    let decision = decide_once(&config, &anonymous);
    assert_eq!(status(&decision), 401, "{decision:?}");
}

#[test]
fn a_declared_body_past_the_limit_is_refused_before_it_is_read() {
    let config = config();
    let mut sent = post(&token("mcp:tools"), None);
    sent.headers
        .push(("content-length", (2u64 << 20).to_string()));
    assert_eq!(status(&decide_once(&config, &sent)), 413);
}
