//! `match.mcp` in real Envoy: MCP requests are judged on their JSON-RPC body (read through the
//! body_hold companion), never on their headers alone; a tool can need another scope or an
//! enterprise decision; what the upstream gets is the request as sent (body, path) with the
//! identity and without the token.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use authgate_integration::authz_stub::{AuthzMode, AuthzStub};
use authgate_integration::expect::Checks;
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{FixtureKey, Gateway, JwksStub, Reply, Req, TokenBuilder};
use serde_json::{json, Value};

const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
const MAX_BODY: usize = 64 * 1024;

fn plugin() -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "rules": [
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["deploy_*"]}},
             "requires_any": ["jwt:corp"], "require_scopes": ["mcp:deploy"]},
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["audit_*"]}},
             "requires_any": ["jwt:corp"], "require_scopes": ["mcp:tools"], "enterprise": true},
            {"match": {"prefix": "/mcp"}, "requires_any": ["jwt:corp"], "require_scopes": ["mcp:tools"]}
        ],
        "protected_resources": [{
            "resource": "https://mcp.example.com/mcp", "match": {"prefix": "/mcp"},
            "authorization_servers": ["https://idp.example.com/realms/corp"],
            "scopes_supported": ["mcp:tools", "mcp:deploy"]
        }],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "path": "/check",
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"]},
        "session": {"hold_companion": true},
        "mcp": {"max_body_bytes": MAX_BODY}
    })
}

fn gateway(stub: &AuthzStub) -> Gateway {
    let port = stub.port();
    Gateway::start_with(
        &plugin(),
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.cluster("authz", port).hold_companion(),
    )
}

fn token(scope: &str) -> String {
    let mut claims = corp_claims("alice");
    claims["scope"] = json!(scope);
    TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign()
}

fn call(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": name, "arguments": {}}})
}

fn post(gw: &Gateway, token: &str, body: &Value) -> Reply {
    Req::post(gw.url("/mcp"))
        .bearer(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
}

/// What the echo upstream received, when the reply came from it.
fn upstream_saw(reply: &Reply) -> Option<Value> {
    reply.is_from_upstream().then(|| reply.json()).flatten()
}

fn through(reply: &Reply, body: &Value) -> Result<(), String> {
    let seen = upstream_saw(reply).ok_or(format!("not through: {reply}"))?;
    let headers = &seen["headers"];
    let sent_body: Value = seen["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    if seen["path"] != "/mcp" || sent_body != *body {
        return Err(format!("the upstream got another request: {seen}"));
    }
    if headers.get("authorization").is_some() || headers.get("x-authgate-hold").is_some() {
        return Err(format!(
            "the token or the hold mark reached the upstream: {seen}"
        ));
    }
    if headers["x-auth-subject"] != "alice" {
        return Err(format!("no identity upstream: {seen}"));
    }
    Ok(())
}

fn refused(reply: &Reply, status: u16, what: &str) -> Result<(), String> {
    if reply.status != status || reply.is_from_upstream() || !reply.body.contains(what) {
        return Err(format!("expected {status} with {what:?}: {reply}"));
    }
    Ok(())
}

#[test]
fn tools_are_judged_on_the_body_and_the_upstream_gets_the_request_as_sent() {
    let stub = AuthzStub::start(AuthzMode::allow());
    let gw = gateway(&stub);
    let tools = token("mcp:tools");
    let deployer = token("mcp:tools mcp:deploy");
    let mut checks = Checks::new();

    let read = call("read_docs");
    checks.check(
        "tools/call read_docs with mcp:tools: the upstream gets the path and body as sent, the \
         identity, no token, no mark",
        through(&post(&gw, &tools, &read), &read),
    );
    // A body of many chunks (~300 KiB of arguments) arrives whole.
    let mut big = call("read_docs");
    big["params"]["arguments"]["context"] = json!("x".repeat(MAX_BODY / 2));
    let mut large = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                           "params": {"name": "read_docs", "arguments": {}}});
    large["params"]["arguments"]["context"] = json!("y".repeat(MAX_BODY - 200));
    checks.check(
        "a body of several chunks arrives whole",
        through(&post(&gw, &tools, &large), &large),
    );

    let before = gw.upstream.requests();
    let deploy = call("deploy_prod");
    let reply = post(&gw, &tools, &deploy);
    checks.check(
        "deploy_prod without mcp:deploy: 403 insufficient_scope naming the scope and the metadata",
        (reply.status == 403
            && reply.header("www-authenticate")
                == Some(&*format!(
                    "Bearer error=\"insufficient_scope\", resource_metadata=\"{METADATA}\", scope=\"mcp:deploy\""
                )))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    checks.check(
        "deploy_prod with mcp:deploy: through",
        through(&post(&gw, &deployer, &deploy), &deploy),
    );

    // The headers say read_docs, the body deploy_prod: refused, whoever asks.
    let lying = Req::post(gw.url("/mcp"))
        .bearer(&tools)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "read_docs")
        .body(deploy.to_string())
        .send();
    checks.check(
        "Mcp-Name disagreeing with the body: JSON-RPC 400",
        refused(&lying, 400, "-32600"),
    );
    let wrapped = Req::post(gw.url("/mcp"))
        .bearer(&deployer)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "=?base64?ZGVwbG95X3Byb2Q=?=")
        .body(deploy.to_string())
        .send();
    checks.check(
        "a base64-wrapped Mcp-Name that agrees: through",
        through(&wrapped, &deploy),
    );
    let batch = json!([call("read_docs"), call("deploy_prod")]);
    checks.check(
        "a batch with one call the token may not make: 403",
        refused(&post(&gw, &tools, &batch), 403, "insufficient_scope"),
    );
    checks.check(
        "the same batch with mcp:deploy: through",
        through(&post(&gw, &deployer, &batch), &batch),
    );
    let twice = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "read_docs", "name": "deploy_prod"}}"#;
    checks.check(
        "a body naming the tool twice: 400",
        refused(
            &Req::post(gw.url("/mcp")).bearer(&tools).body(twice).send(),
            400,
            "-32600",
        ),
    );
    checks.check(
        "none of the refused requests reached the upstream",
        (gw.upstream.requests() == before + 3)
            .then_some(())
            .ok_or(format!(
                "{} upstream requests since",
                gw.upstream.requests() - before
            )),
    );

    // 2025-era clients send no Mcp-* headers: judged on the body, they keep working.
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "legacy", "version": "1"}}});
    checks.check(
        "a legacy initialize: through",
        through(&post(&gw, &tools, &initialize), &initialize),
    );
    // A client's own hold mark changes nothing.
    let marked = Req::post(gw.url("/mcp"))
        .bearer(&tools)
        .header("x-authgate-hold", "0000000000000001")
        .body(read.to_string())
        .send();
    checks.check(
        "a client-sent hold mark: through, stripped",
        through(&marked, &read),
    );
    let reply = Req::post(gw.url("/mcp")).body(read.to_string()).send();
    checks.check(
        "no token: 401 with the challenge for the rule the call meets",
        (reply.status == 401
            && reply
                .header("www-authenticate")
                .is_some_and(|c| c.contains("scope=\"mcp:tools\"")))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    checks.finish();
}

#[test]
fn the_authorization_service_is_asked_about_each_tool() {
    let stub = AuthzStub::start(AuthzMode::allow());
    let gw = gateway(&stub);
    let tools = token("mcp:tools");
    let mut checks = Checks::new();
    let audit = call("audit_log");
    checks.check(
        "audit_log: through",
        through(&post(&gw, &tools, &audit), &audit),
    );
    let asked = stub.requests();
    checks.check(
        "the service was asked with the MCP method and tool",
        (asked.len() == 1
            && asked[0]
                .json()
                .is_some_and(|b| b["mcp"] == json!({"method": "tools/call", "name": "audit_log"})))
        .then_some(())
        .ok_or(format!(
            "{:?}",
            asked.iter().map(|r| &r.body).collect::<Vec<_>>()
        )),
    );
    checks.check(
        "audit_log again: through",
        through(&post(&gw, &tools, &audit), &audit),
    );
    let other = call("audit_export");
    checks.check(
        "audit_export: through",
        through(&post(&gw, &tools, &other), &other),
    );
    checks.check(
        "the same tool came from the cache, another tool was asked about",
        (stub.request_count() == 2)
            .then_some(())
            .ok_or(format!("{} calls", stub.request_count())),
    );
    stub.set_mode(AuthzMode::deny("not on this tool"));
    let denied = call("audit_purge");
    let reply = post(&gw, &tools, &denied);
    checks.check(
        "a tool the service denies: 403, not forwarded",
        (reply.status == 403 && !reply.is_from_upstream())
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    let batch = json!([call("audit_a"), call("audit_b")]);
    checks.check(
        "a batch needing two decisions: 400, send them one by one",
        refused(&post(&gw, &tools, &batch), 400, "one per request"),
    );
    checks.finish();
}

/// An HTTP/1.1 request with a chunked body, written in `pieces` with pauses between them; the
/// status and body of the answer.
fn chunked(port: u16, token: &str, pieces: &[&[u8]]) -> (u16, String) {
    chunked_to(port, "gw.test", token, pieces)
}

/// [`chunked`] to this `host`.
fn chunked_to(port: u16, host: &str, token: &str, pieces: &[&[u8]]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    for piece in pieces {
        let _ = stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes());
        let _ = stream.write_all(piece);
        let _ = stream.write_all(b"\r\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    let _ = reader.read_line(&mut status_line);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    (status, String::from_utf8_lossy(&rest).into_owned())
}

#[test]
fn bodies_arrive_in_pieces_and_past_the_limit_are_refused_without_a_hang() {
    let stub = AuthzStub::start(AuthzMode::allow());
    let gw = gateway(&stub);
    let tools = token("mcp:tools");
    let port = gw.envoy.port();
    let mut checks = Checks::new();
    let body = call("deploy_prod").to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let (status, text) = chunked(port, &tools, &[first.as_bytes(), second.as_bytes()]);
    checks.check(
        "a chunked body sent in two pieces is judged whole (deploy_prod: 403)",
        (status == 403 && text.contains("insufficient_scope"))
            .then_some(())
            .ok_or(format!("{status} {text}")),
    );
    let read = call("read_docs").to_string();
    let (status, text) = chunked(port, &tools, &[read.as_bytes()]);
    checks.check(
        "read_docs chunked: through",
        (status == 200 && text.contains("\"x-auth-subject\""))
            .then_some(())
            .ok_or(format!("{status} {text}")),
    );
    let filler = vec![b' '; 16 * 1024];
    let mut pieces: Vec<&[u8]> = vec![b"{\"jsonrpc\": \"2.0\", \"pad\": \""];
    pieces.extend(std::iter::repeat_n(
        &filler[..],
        MAX_BODY / filler.len() + 2,
    ));
    let started = std::time::Instant::now();
    let (status, text) = chunked(port, &tools, &pieces);
    checks.check(
        "a chunked body past mcp.max_body_bytes: 413 JSON-RPC, at once",
        (status == 413 && text.contains("-32600") && started.elapsed() < Duration::from_secs(10))
            .then_some(())
            .ok_or(format!("{status} after {:?}: {text}", started.elapsed())),
    );
    let declared = Req::post(gw.url("/mcp"))
        .bearer(&tools)
        .body("x".repeat(MAX_BODY + 1))
        .send();
    checks.check(
        "a declared length past the limit: 413 before reading",
        refused(&declared, 413, "-32600"),
    );
    checks.finish();
}

#[test]
fn without_the_companion_after_authgate_nothing_reaches_the_upstream() {
    let stub = AuthzStub::start(AuthzMode::allow());
    let tools = token("mcp:tools");
    let read = call("read_docs");
    let mut checks = Checks::new();
    let port = stub.port();
    let missing = Gateway::start_with(
        &plugin(),
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.cluster("authz", port),
    );
    let reply = post(&missing, &tools, &read);
    checks.check(
        "no companion: 503 JSON-RPC, never forwarded",
        (reply.status == 503 && !reply.is_from_upstream() && missing.upstream.requests() == 0)
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    drop(missing);
    let misplaced = Gateway::start_with(
        &plugin(),
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.cluster("authz", port).companion_first(),
    );
    let reply = post(&misplaced, &tools, &call("deploy_prod"));
    checks.check(
        "a companion before authgate: refused, never forwarded",
        (reply.status >= 400 && !reply.is_from_upstream() && misplaced.upstream.requests() == 0)
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    drop(misplaced);
    // The MCP server's host has a virtual host of its own, without the held route: a held
    // request still lands on the catch-all's (its host is a reserved one meanwhile).
    let own_host = Gateway::start_with(
        &plugin(),
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| {
            c.cluster("authz", port)
                .companion_first()
                .virtual_host_to_upstream(&["mcp.corp.test"])
        },
    );
    // In pieces: the router has time to start an upstream request, were it routed to one.
    let body = call("deploy_prod").to_string();
    let (first, rest) = body.as_bytes().split_at(10);
    let (status, answer) = chunked_to(
        own_host.envoy.port(),
        "mcp.corp.test",
        &tools,
        &[first, rest],
    );
    // Requests the router began upstream (headers sent), whether or not they completed.
    let begun: u64 = own_host
        .envoy
        .admin_get("/stats?filter=%5Ecluster%5C.upstream%5C.upstream_rq_total%24")
        .body
        .lines()
        .find_map(|line| {
            line.split_once(": ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .unwrap_or(0);
    checks.check(
        "a companion before authgate, the host with its own virtual host: never forwarded",
        (status >= 400 && own_host.upstream.requests() == 0 && begun == 0)
            .then_some(())
            .ok_or(format!(
                "{status} {answer}; upstream requests begun: {begun}"
            )),
    );
    checks.finish();
}

/// `integration/sdk/h2_trailers.py`: one h2c POST to /mcp with its body in these DATA frames
/// (then trailers, if asked); the reply as the client saw it.
fn h2_post(port: u16, token: &str, frames: &[&str], extra: &[&str], trailers: bool) -> Value {
    let frames = serde_json::to_string(frames).unwrap_or_default();
    let mut args = extra.to_vec();
    args.extend(["--frames", &frames]);
    authgate_integration::client::h2_post(port, "/mcp", token, &args, trailers)
}

/// HTTP/2 ends a body on its last DATA frame, which may carry data: the whole body must still
/// reach the upstream, however it is framed, and a refused call none of it.
#[test]
fn over_http2_the_upstream_gets_the_whole_body_however_it_is_framed() {
    let stub = AuthzStub::start(AuthzMode::allow());
    let gw = gateway(&stub);
    let tools = token("mcp:tools");
    let port = gw.envoy.port();
    let body = call("read_docs").to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let length = format!("content-length={}", body.len());
    let mut checks = Checks::new();
    let cases: [(&str, Vec<&str>, Vec<&str>, bool); 6] = [
        ("one frame ending the stream", vec![&body], vec![], false),
        (
            "two frames, the second ending it",
            vec![first, second],
            vec![],
            false,
        ),
        (
            "the body, then an empty frame ending it",
            vec![&body, ""],
            vec![],
            false,
        ),
        ("the body, then trailers", vec![&body], vec![], true),
        (
            "one frame, with content-length",
            vec![&body],
            vec![&length],
            false,
        ),
        (
            "two frames, with content-length",
            vec![first, second],
            vec![&length],
            false,
        ),
    ];
    for (label, frames, extra, trailers) in cases {
        let reply = h2_post(port, &tools, &frames, &extra, trailers);
        let seen: Value = reply["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        checks.check(
            &format!("{label}: the upstream got the whole body"),
            (reply["status"] == 200 && seen["body"].as_str() == Some(body.as_str()))
                .then_some(())
                .ok_or(format!("{reply}")),
        );
    }
    let audit = call("audit_log").to_string();
    let (first, second) = audit.split_at(audit.len() / 2);
    let reply = h2_post(port, &tools, &[first, second], &[], false);
    let seen: Value = reply["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    checks.check(
        "a call the service decides: the whole body too",
        (reply["status"] == 200 && seen["body"].as_str() == Some(audit.as_str()))
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    let before = gw.upstream.requests();
    let deploy = call("deploy_prod").to_string();
    let reply = h2_post(port, &tools, &[&deploy], &[], false);
    checks.check(
        "deploy_prod in one frame without the scope: 403, nothing upstream",
        (reply["status"] == 403 && gw.upstream.requests() == before)
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    checks.finish();
}

/// Opens `n` HTTP/1.1 POSTs to /mcp whose chunked bodies never end (dropped = closed).
fn unfinished_bodies(port: u16, n: usize, token: Option<&str>) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
            let head = format!(
                "POST /mcp HTTP/1.1\r\nhost: gw.test\r\ncontent-type: application/json\r\n{auth}\
                 transfer-encoding: chunked\r\n\r\n1\r\n{{\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            stream
        })
        .collect()
}

/// The status line's code of what a held connection was answered, if anything came.
fn answered(stream: &mut std::net::TcpStream) -> Option<u16> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reading bodies has its own budget, and nobody without a credential is held for one.
#[test]
fn unfinished_bodies_cannot_crowd_out_other_requests() {
    let stub = AuthzStub::start(AuthzMode::allow());
    let mut plugin = plugin();
    plugin["limits"] = json!({"max_paused_requests": 3});
    if let Some(rules) = plugin["rules"].as_array_mut() {
        rules.push(
            json!({"match": {"prefix": "/api"}, "requires_any": ["jwt:corp"],
                          "enterprise": true}),
        );
    }
    let port = stub.port();
    let gw = Gateway::start_with(
        &plugin,
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.cluster("authz", port).hold_companion(),
    );
    let tools = token("mcp:tools");
    let envoy_port = gw.envoy.port();
    let mut checks = Checks::new();
    let mut anonymous = unfinished_bodies(envoy_port, 3, None);
    checks.check(
        "no credential: answered 401 at once, never held for a body",
        anonymous
            .iter_mut()
            .all(|s| answered(s) == Some(401))
            .then_some(())
            .ok_or("an anonymous request was held".to_string()),
    );
    let held = unfinished_bodies(envoy_port, 3, Some(&tools));
    std::thread::sleep(Duration::from_millis(300));
    let reply = post(&gw, &tools, &call("read_docs"));
    checks.check(
        "with every read slot taken, one more MCP request: 503 JSON-RPC",
        refused(&reply, 503, "overloaded"),
    );
    let audit = call("audit_log");
    let reply = Req::get(gw.url("/api/x")).bearer(&tools).send();
    checks.check(
        "a request that pauses for the authorization service still gets a slot",
        (reply.status == 200 && reply.is_from_upstream())
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    checks.check(
        "once they are gone, MCP requests are read again",
        through(&post(&gw, &tools, &audit), &audit),
    );
    checks.finish();
}

/// A body-less MCP request (an SSE GET, a session DELETE) that waits for keys is decided again
/// as body-less: never asked for a body it does not have.
#[test]
fn a_bodiless_request_that_waited_for_keys_is_judged_without_a_body() {
    use authgate_integration::plugin::remote_provider;
    let stub = AuthzStub::start(AuthzMode::allow());
    let mut plugin = plugin();
    plugin["jwt_providers"] = json!({"corp": remote_provider(600)});
    let port = stub.port();
    let gw = Gateway::start_with(
        &plugin,
        JwksStub::start(authgate_integration::jwks(&[FixtureKey::Rsa1])),
        |c| c.cluster("authz", port).hold_companion(),
    );
    gw.wait_jwks_fetched();
    gw.idp.set_jwks(authgate_integration::jwks(&[
        FixtureKey::Rsa1,
        FixtureKey::Rsa2,
    ]));
    let mut claims = corp_claims("alice");
    claims["scope"] = json!("mcp:tools");
    let rotated = TokenBuilder::new(FixtureKey::Rsa2).claims(claims).sign();
    let reply = Req::get(gw.url("/mcp")).bearer(&rotated).send();
    let mut checks = Checks::new();
    checks.check(
        "GET /mcp with a token under a new key: through once the keys are in",
        (reply.status == 200 && reply.is_from_upstream())
            .then_some(())
            .ok_or(format!("{reply}")),
    );
    checks.finish();
}
