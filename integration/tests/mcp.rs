//! OAuth protected resources (RFC 9728) in real Envoy, as MCP clients discover how to
//! authenticate: each `protected_resources` entry's metadata document (CORS-open, cacheable, the
//! root form for a single entry) and the challenges on the requests it covers.

use authgate_integration::expect::Checks;
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{FixtureKey, Gateway, Reply, Req, TokenBuilder};
use serde_json::{json, Value};

const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

fn gateway() -> Gateway {
    let plugin = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [
            {"match": {"prefix": "/mcp"}, "requires_any": ["jwt:corp"], "require_scopes": ["mcp:tools"]},
            {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}
        ],
        "protected_resources": [{
            "resource": "https://mcp.example.com/mcp", "match": {"prefix": "/mcp"},
            "authorization_servers": ["https://idp.example.com/realms/corp"],
            "scopes_supported": ["mcp:tools"], "resource_name": "Corp MCP"
        }]
    });
    Gateway::start(&plugin, authgate_integration::jwks(&[]))
}

fn challenge(reply: &Reply) -> String {
    reply.header("www-authenticate").unwrap_or("").to_string()
}

#[test]
fn metadata_documents_and_challenges_point_clients_at_the_authorization_server() {
    let gw = gateway();
    let mut checks = Checks::new();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let reply = Req::get(gw.url(path)).send();
        let body: Value = reply.json().unwrap_or_default();
        checks.check(
            &format!("GET {path}: the RFC 9728 document, CORS-open, cacheable"),
            (reply.status == 200
                && body["resource"] == "https://mcp.example.com/mcp"
                && body["authorization_servers"] == json!(["https://idp.example.com/realms/corp"])
                && body["scopes_supported"] == json!(["mcp:tools"])
                && body["bearer_methods_supported"] == json!(["header"])
                && body["resource_name"] == "Corp MCP"
                && reply.header("access-control-allow-origin") == Some("*")
                && reply
                    .header("cache-control")
                    .is_some_and(|c| c.contains("max-age")))
            .then_some(())
            .ok_or(format!("{reply}")),
        );
    }
    let preflight = Req::options(gw.url("/.well-known/oauth-protected-resource/mcp"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send();
    checks.check(
        "a browser's preflight for the document: 204",
        (preflight.status == 204)
            .then_some(())
            .ok_or(format!("{preflight}")),
    );
    checks.check(
        "the document is answered by the filter, never the upstream",
        (gw.upstream.requests() == 0)
            .then_some(())
            .ok_or("upstream saw it".to_string()),
    );

    let reply = Req::post(gw.url("/mcp")).body("{}").send();
    checks.check(
        "no token: 401 naming the metadata and the scopes the rule needs",
        (reply.status == 401
            && challenge(&reply)
                == format!("Bearer resource_metadata=\"{METADATA}\", scope=\"mcp:tools\"")
            && reply.header("access-control-expose-headers") == Some("WWW-Authenticate"))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    let reply = Req::post(gw.url("/mcp"))
        .bearer("not.a.token")
        .body("{}")
        .send();
    checks.check(
        "a bad token: 401 invalid_token with the metadata",
        (reply.status == 401
            && challenge(&reply).starts_with("Bearer error=\"invalid_token\", resource_metadata=")
            && challenge(&reply).contains(METADATA))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    let mut claims = corp_claims("alice");
    claims["scope"] = json!("read");
    let token = TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign();
    let reply = Req::post(gw.url("/mcp")).bearer(&token).body("{}").send();
    checks.check(
        "a missing scope: 403 insufficient_scope with the scopes and the metadata",
        (reply.status == 403
            && challenge(&reply)
                == format!(
                    "Bearer error=\"insufficient_scope\", resource_metadata=\"{METADATA}\", scope=\"mcp:tools\""
                ))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    let mut claims = corp_claims("alice");
    claims["scope"] = json!("mcp:tools");
    let token = TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign();
    checks.check(
        "the right scope: through",
        authgate_integration::expect::allowed(
            &Req::post(gw.url("/mcp")).bearer(&token).body("{}").send(),
        ),
    );
    let reply = Req::get(gw.url("/elsewhere")).send();
    checks.check(
        "a request no entry covers keeps the plain challenge",
        (reply.status == 401 && !challenge(&reply).contains("resource_metadata"))
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    checks.finish();
}

#[test]
fn require_audience_accepts_only_tokens_issued_for_the_resource() {
    let plugin = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}],
        "protected_resources": [{
            "resource": "https://mcp.example.com/mcp", "match": {"prefix": "/mcp"},
            "authorization_servers": ["https://idp.example.com/realms/corp"],
            "require_audience": true
        }]
    });
    let gw = Gateway::start(&plugin, authgate_integration::jwks(&[]));
    let token_for = |aud: Value| {
        let mut claims = corp_claims("alice");
        claims["aud"] = aud;
        TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign()
    };
    let for_resource = token_for(json!(["https://MCP.example.com:443/mcp"]));
    let for_gateway = token_for(json!("gateway"));
    let mut checks = Checks::new();
    // Twice each: the second time the token comes from the cache and is judged the same.
    for round in 1..=2 {
        checks.check(
            &format!("round {round}: a token for the resource is accepted there"),
            authgate_integration::expect::allowed(
                &Req::post(gw.url("/mcp"))
                    .bearer(&for_resource)
                    .body("{}")
                    .send(),
            ),
        );
        let reply = Req::post(gw.url("/mcp"))
            .bearer(&for_gateway)
            .body("{}")
            .send();
        checks.check(
            &format!("round {round}: a token for another audience is 401 invalid_token there"),
            (reply.status == 401 && challenge(&reply).contains("error=\"invalid_token\""))
                .then_some(())
                .ok_or(format!("{reply}")),
        );
        checks.check(
            &format!("round {round}: elsewhere the provider's audiences still apply"),
            (authgate_integration::expect::allowed(
                &Req::get(gw.url("/api")).bearer(&for_gateway).send(),
            )
            .is_ok()
                && Req::get(gw.url("/api")).bearer(&for_resource).send().status == 401)
                .then_some(())
                .ok_or("audiences mixed up".to_string()),
        );
    }
    checks.finish();
}

/// Two MCP servers behind one gateway, each on its own host at `/mcp` (`match.hosts`): each host
/// serves its own document (root form included) and challenge, and a token minted for one server
/// is refused by the other.
#[test]
fn two_mcp_servers_on_one_gateway_each_on_its_own_host() {
    let entry = |host: &str| {
        json!({"resource": format!("https://{host}/mcp"),
               "match": {"prefix": "/mcp", "hosts": [host]},
               "authorization_servers": ["https://idp.example.com/realms/corp"],
               "require_audience": true})
    };
    let plugin = json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}],
        "protected_resources": [entry("a.example.com"), entry("b.example.com")]
    });
    let gw = Gateway::start(&plugin, authgate_integration::jwks(&[]));
    let token_for = |host: &str| {
        let mut claims = corp_claims("alice");
        claims["aud"] = json!(format!("https://{host}/mcp"));
        TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign()
    };
    let call = |host: &str, token: Option<&str>| {
        let request = Req::post(gw.url("/mcp")).header("host", host).body("{}");
        match token {
            Some(token) => request.bearer(token).send(),
            None => request.send(),
        }
    };
    let mut checks = Checks::new();
    for host in ["a.example.com", "B.example.com:443"] {
        let name = host
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let metadata = format!("https://{name}/.well-known/oauth-protected-resource/mcp");
        for path in [
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource",
        ] {
            let reply = Req::get(gw.url(path)).header("host", host).send();
            let body: Value = reply.json().unwrap_or_default();
            checks.check(
                &format!("{host} {path}: its own document"),
                (reply.status == 200 && body["resource"] == format!("https://{name}/mcp"))
                    .then_some(())
                    .ok_or(format!("{reply}")),
            );
        }
        let reply = call(host, None);
        checks.check(
            &format!("{host}: a 401 points at its own document"),
            (reply.status == 401
                && challenge(&reply) == format!("Bearer resource_metadata=\"{metadata}\""))
            .then_some(())
            .ok_or(format!("{reply}")),
        );
        checks.check(
            &format!("{host}: a token for it is accepted"),
            authgate_integration::expect::allowed(&call(host, Some(&token_for(&name)))),
        );
    }
    let reply = call("b.example.com", Some(&token_for("a.example.com")));
    checks.check(
        "a token for a.example.com is 401 invalid_token on b.example.com, pointing at b's document",
        (reply.status == 401
            && challenge(&reply).contains("error=\"invalid_token\"")
            && challenge(&reply).contains("https://b.example.com/.well-known/"))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    let reply = Req::get(gw.url("/.well-known/oauth-protected-resource/mcp"))
        .header("host", "c.example.com")
        .send();
    checks.check(
        "another host gets no document (the request meets the rules: 401)",
        (reply.status == 401)
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    checks.finish();
}

/// The official MCP Python SDK on both sides: its server behind Envoy + authgate, its client
/// with the OAuth client provider against a real authorization server (oidc-provider with
/// dynamic client registration, resource indicators and JWT access tokens). The SDK's default
/// (modern) client steps up from `mcp:tools` to `mcp:deploy` when a tool needs it; its legacy
/// mode (no `Mcp-*` headers) is judged on the body and keeps working.
#[test]
fn an_mcp_client_discovers_registers_signs_in_and_calls_tools_through_the_gateway() {
    use authgate_integration::envoy::free_port;
    use authgate_integration::idp::{Idp, IDP_HOST};
    use authgate_integration::{repo_root, Envoy, EnvoyConfig};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let idp = Idp::start_for_mcp(
        dir.path(),
        std::slice::from_ref(&resource),
        &["mcp:tools", "mcp:deploy"],
    );
    let python = repo_root().join(".venv/bin/python");
    let mcp_port = free_port();
    let mut server = Command::new(&python)
        .arg(repo_root().join("integration/sdk/mcp_server.py"))
        .args(["--port", &mcp_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the MCP server (make setup installs mcp): {e}"));
    let issuer = &idp.issuer;
    let plugin = json!({
        "jwt_providers": {"idp": {"issuer": issuer,
            "remote_jwks": {"cluster": "idp", "uri": format!("{issuer}/jwks")}}},
        "rules": [
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["deploy_*"]}},
             "requires_any": ["jwt:idp"], "require_scopes": ["mcp:deploy"]},
            {"match": {"prefix": "/mcp"}, "requires_any": ["jwt:idp"],
             "require_scopes": ["mcp:tools"]}
        ],
        "protected_resources": [{"resource": resource, "match": {"prefix": "/mcp"},
                                 "authorization_servers": [issuer],
                                 "scopes_supported": ["mcp:tools", "mcp:deploy"],
                                 "require_audience": true}],
        "session": {"hold_companion": true}
    });
    let config = EnvoyConfig::new(&plugin, mcp_port)
        .cluster_at("idp", IDP_HOST, idp.port)
        .listener_port(port)
        .hold_companion();
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"));
    // The MCP server takes a moment to listen.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let client = |mode: &str, tool: &str| {
        let output = Command::new(&python)
            .arg(repo_root().join("integration/sdk/mcp_client.py"))
            .args(["--url", &resource, "--login", "alice@example.com"])
            .args(["--password", "alice-pw", "--mode", mode, "--tool", tool])
            .output()
            .unwrap_or_else(|e| panic!("running the MCP client: {e}"));
        let shown: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let stderr: String = String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .join("\n");
        (shown, stderr)
    };
    let mut checks = Checks::new();

    let (shown, stderr) = client("auto", "deploy_prod");
    let exchanges = shown["exchanges"].as_array().cloned().unwrap_or_default();
    let sent = |method: &str, name: Option<&str>| {
        exchanges
            .iter()
            .any(|e| e["mcp_method"] == method && name.is_none_or(|n| e["mcp_name"] == n))
    };
    let stepped_up = exchanges.iter().any(|e| {
        e["status"] == 403
            && e["challenge"].as_str().is_some_and(|c| {
                c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"mcp:deploy\"")
            })
    });
    checks.check(
        "the SDK client (modern mode) found its way (401 → metadata → registration → sign-in → \
         token for the resource), listed tools, got 403 insufficient_scope on deploy_prod, stepped \
         up to mcp:deploy and deployed",
        (shown["tools"] == json!(["deploy_prod", "read_docs"])
            && shown["text"]
                .as_str()
                .is_some_and(|t| t.contains("deployed 1.2.3"))
            && stepped_up
            && sent("server/discover", None)
            && sent("tools/call", Some("deploy_prod")))
        .then_some(())
        .ok_or(format!("{shown}\n{stderr}\nOP log:\n{}", idp.log_tail(30))),
    );

    // mcp 2.3.0 fetches the document the challenge's resource_metadata names (the path form)
    // and stops there; the root form is its fallback (served too, tested above).
    let discovery: Vec<(String, u64)> = shown["discovery"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["url"].as_str().unwrap_or_default().to_string(),
                d["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let path_form = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
    checks.check(
        "the SDK read the metadata from the URL the challenge named, and it was there",
        (discovery == [(path_form, 200)])
            .then_some(())
            .ok_or(format!("discovery: {discovery:?}")),
    );

    let (shown, stderr) = client("legacy", "read_docs");
    let exchanges = shown["exchanges"].as_array().cloned().unwrap_or_default();
    checks.check(
        "the SDK's legacy mode (initialize, no Mcp-* headers) is judged on the body and works",
        (shown["text"]
            .as_str()
            .is_some_and(|t| t.contains("docs about x"))
            && !exchanges.is_empty()
            && exchanges.iter().all(|e| e["mcp_method"].is_null()))
        .then_some(())
        .ok_or(format!("{shown}\n{stderr}")),
    );
    let _ = server.kill();
    let _ = server.wait();
    drop(envoy);
    checks.finish();
}
