//! The whole agent-token flow in real Envoy with the reference authorization service (SQLite):
//! an opaque agent token is decided by the service; when its session lapses the agent gets the
//! session-expired reply with the gateway's configured re-auth URL (the service gives none);
//! once a gateway that signed the owner in renews the session (`POST /api/sessions/renew`) the
//! same token works again when the cached answer expires. Revocation and subject denial too.
//! (The sign-in itself, in a browser against a real IdP, is in `sign_in.rs`.)
//!
//! Then the service's own seams, without Envoy: an expired answer carries no re-auth link and
//! there is no sign-in-free `/reauth` page; the admin API needs its token always (generated at
//! the first start when none is given), takes only JSON, and answers only its own host names;
//! `/api/authorize` refuses browsers; and the headers it sets upstream are `x-auth-` names, which
//! a client cannot send itself.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use authgate_integration::authz_service::{sha256_hex, AdminTokenSource, AuthzService};
use authgate_integration::expect::{self, error_reply, Checks};
use authgate_integration::plugin::{corp_claims, local_provider};
use authgate_integration::{
    AuthzOptions, AuthzStore, FixtureKey, Gateway, JwksStub, Reply, Req, TokenBuilder,
};
use serde_json::{json, Value};

/// Cached answers live 1 s, so each state change shows up after a short, bounded wait.
const TTL: Duration = Duration::from_millis(1_100);
/// The gateway's re-auth URL, used when the service gives none (it never does any more).
const FALLBACK_URL: &str = "https://sso.example.com/fallback";
/// The key a gateway presents to `POST /api/sessions/renew`.
const GATEWAY_KEY: &str = "gateway-key-for-tests-0123";

fn plugin() -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "opaque_tokens": "enterprise",
        "rules": [{"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp", "opaque_token"],
                   "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000,
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"],
                       "expose_reason": true,
                       "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1}},
        "session": {"reauth_url": FALLBACK_URL}
    })
}

fn start() -> (tempfile::TempDir, AuthzService, Gateway) {
    start_with(plugin())
}

fn start_with(plugin: Value) -> (tempfile::TempDir, AuthzService, Gateway) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let service = AuthzService::start_with(&dir.path().join("authz.sqlite"), with_gateway_key());
    let port = service.port();
    let idp = JwksStub::start(authgate_integration::jwks(&[]));
    let gw = Gateway::start_with(&plugin, idp, |c| c.cluster("authz", port));
    (dir, service, gw)
}

fn with_gateway_key() -> AuthzOptions {
    AuthzOptions {
        gateway_key: Some(GATEWAY_KEY.to_string()),
        ..AuthzOptions::default()
    }
}

fn renewed(reply: &Reply) -> expect::Check {
    (reply.status == 200 && reply.json().is_some_and(|b| b["renewed"] == true))
        .then_some(())
        .ok_or(format!("{reply}"))
}

fn call(gw: &Gateway, token: &str) -> Reply {
    Req::post(gw.url("/v1/chat/completions"))
        .bearer(token)
        .json(&json!({"model": "m", "messages": []}))
        .send()
}

#[test]
fn agent_token_session_lapses_and_a_signed_in_renewal_restores_the_same_token() {
    let (_dir, service, gw) = start();
    let (token, sha) = service.create_token("alice@example.com", 3600);
    let mut checks = Checks::new();

    let reply = call(&gw, &token);
    checks.check(
        "an active agent token passes with the service's headers",
        expect::allowed(&reply)
            .and_then(|()| {
                expect::upstream_header(&reply, "x-auth-email", Some("alice@example.com"))
            })
            .and_then(|()| {
                expect::upstream_header(&reply, "x-auth-credential", Some("opaque_token"))
            })
            .and_then(|()| expect::upstream_header(&reply, "authorization", None)),
    );

    service.expire(&sha);
    std::thread::sleep(TTL);
    let reply = call(&gw, &token);
    checks.check(
        "after the lapse: session_expired with the gateway's re-auth URL (the service gives none)",
        expect::session_expired_api(&reply).and_then(|()| {
            (reply.json_str("reauth_url").as_deref() == Some(FALLBACK_URL)
                && reply.header("x-auth-reauth-url") == Some(FALLBACK_URL))
            .then_some(())
            .ok_or(format!("{reply}"))
        }),
    );
    let answer = authorize_agent(&service, &sha);
    checks.check(
        "the service's expired answer carries no re-auth link",
        (answer
            == json!({"authorized": false, "reason": "session expired",
                      "session": {"status": "expired"}}))
        .then_some(())
        .ok_or(format!("{answer}")),
    );

    checks.check(
        "the gateway renews the session after the owner signed in",
        renewed(&service.renew_as_gateway(GATEWAY_KEY, &sha, "ticket-1")),
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
        expect::allowed(&reply).and_then(|()| {
            expect::upstream_header(&reply, "x-auth-authz-subject", Some("mallory"))
        }),
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

#[test]
fn clients_cannot_pose_as_the_services_headers() {
    let (_dir, service, gw) = start();
    let (agent, _) = service.create_token("alice@example.com", 3600);
    let jwt = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("mallory"))
        .sign();
    let spoofed = |token: &str| {
        Req::post(gw.url("/v1/chat/completions"))
            .bearer(token)
            .header("x-auth-email", "ceo@corp.example")
            .header("x-auth-authz-subject", "admin")
            .json(&json!({"model": "m", "messages": []}))
            .send()
    };
    let mut checks = Checks::new();
    let reply = spoofed(&agent);
    checks.check(
        "agent token: the upstream gets the service's x-auth-email, not the client's",
        expect::allowed(&reply)
            .and_then(|()| {
                expect::upstream_header(&reply, "x-auth-email", Some("alice@example.com"))
            })
            .and_then(|()| expect::upstream_header(&reply, "x-auth-authz-subject", None)),
    );
    let reply = spoofed(&jwt);
    checks.check(
        "JWT: the upstream gets the service's subject, not the client's",
        expect::allowed(&reply).and_then(|()| {
            expect::upstream_header(&reply, "x-auth-authz-subject", Some("mallory"))
        }),
    );
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// The service's own seams (no Envoy)

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = dir.path().join("authz.sqlite");
    (dir, db)
}

/// An `/api/authorize` body as the filter sends it.
fn authorize_body(kind: &str, id: Option<&str>, token_sha256: &str) -> Value {
    json!({
        "user_email": null, "client_ip": "203.0.113.7",
        "subject": {"kind": kind, "id": id, "issuer": null, "token_sha256": token_sha256,
                    "roles": [], "scopes": []},
        "request": {"method": "POST", "host": "api.example.com", "path": "/v1/chat/completions"}
    })
}

/// The service's decision on an agent token, asked as the gateway asks (`Host` = its authority).
fn authorize_agent(service: &AuthzService, token_sha256: &str) -> Value {
    let reply = Req::post(service.url("/api/authorize"))
        .header("host", "authz.internal")
        .json(&authorize_body("opaque_token", None, token_sha256))
        .send();
    assert_eq!(reply.status, 200, "{reply}");
    reply.json().unwrap_or_else(|| panic!("not JSON: {reply}"))
}

fn generated_admin_token(service: &AuthzService) -> String {
    match service.admin_token_source() {
        AdminTokenSource::Generated(token) => token.clone(),
        other => panic!("expected a generated admin token, got {other:?}"),
    }
}

/// An admin call with the token and a JSON body.
fn admin_call(
    service: &AuthzService,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Reply {
    Req::new(method, service.url(path))
        .bearer(token)
        .json(body)
        .send()
}

#[test]
fn an_expired_answer_carries_no_reauth_url_and_there_is_no_reauth_page() {
    let (_dir, db) = temp_db();
    let service = AuthzService::start_with(
        &db,
        AuthzOptions {
            public_url: Some("https://authz.example.com".into()),
            ..with_gateway_key()
        },
    );
    let (_, sha) = service.create_token("alice@example.com", 3600);
    service.expire(&sha);
    let expired = json!({"authorized": false, "reason": "session expired",
                         "session": {"status": "expired"}});
    let mut checks = Checks::new();
    for round in 0..3 {
        let answer = authorize_agent(&service, &sha);
        checks.check(
            &format!("expired answer {round}: no reauth_url"),
            (answer == expired).then_some(()).ok_or(format!("{answer}")),
        );
    }

    // Whatever code, at whichever of the service's names: no such page.
    let port = service.port();
    for host in [format!("127.0.0.1:{port}"), "authz.example.com".to_string()] {
        for path in [
            "/reauth?code=anything",
            "/reauth?code=00112233445566778899aabbccddeeff",
        ] {
            let reply = Req::get(service.url(path)).header("host", &host).send();
            checks.check(
                &format!("GET {path} at {host}"),
                error_reply(&reply, 404, "not_found").map(|_| ()),
            );
        }
        let form = Req::post(service.url("/reauth"))
            .header("host", &host)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("code=anything")
            .send();
        checks.check(
            &format!("POST /reauth (a form) at {host}"),
            error_reply(&form, 404, "not_found").map(|_| ()),
        );
        let json = Req::post(service.url("/reauth"))
            .header("host", &host)
            .json(&json!({"code": "anything"}))
            .send();
        checks.check(
            &format!("POST /reauth (JSON) at {host}"),
            error_reply(&json, 404, "not_found").map(|_| ()),
        );
    }
    let answer = authorize_agent(&service, &sha);
    checks.check(
        "still expired",
        (answer == expired).then_some(()).ok_or(format!("{answer}")),
    );
    service.restore(&sha);
    let answer = authorize_agent(&service, &sha);
    checks.check(
        "undoing a revocation renews nothing",
        (answer == expired).then_some(()).ok_or(format!("{answer}")),
    );
    checks.check(
        "only a gateway's renewal, after the owner signed in, does",
        renewed(&service.renew_as_gateway(GATEWAY_KEY, &sha, "ticket-1")).and_then(|()| {
            let answer = authorize_agent(&service, &sha);
            (answer["authorized"] == true && answer["session"]["status"] == "active")
                .then_some(())
                .ok_or(format!("{answer}"))
        }),
    );
    checks.finish();
}

#[test]
fn the_admin_api_needs_its_token_always_and_never_from_a_cookie() {
    let (_dir, db) = temp_db();
    let service = AuthzService::start(&db);
    let token = generated_admin_token(&service);
    let count = service.url("/admin/requests/count");

    let mut checks = Checks::new();
    let cases = [
        ("no token, from loopback", Req::get(&count)),
        ("a wrong token", Req::get(&count).bearer("adm_guess")),
        (
            "the token's digest",
            Req::get(&count).bearer(&sha256_hex(&token)),
        ),
        (
            "the token in a cookie",
            Req::get(&count).header(
                "cookie",
                &format!("authorization=Bearer {token}; admin_token={token}"),
            ),
        ),
        (
            "the token as Basic credentials",
            Req::get(&count).header("authorization", &format!("Basic {token}")),
        ),
    ];
    for (label, request) in cases {
        checks.check(
            label,
            error_reply(&request.send(), 401, "unauthorized").map(|_| ()),
        );
    }
    let create = Req::post(service.url("/admin/tokens")).json(&json!({"email": "x@example.com"}));
    checks.check(
        "creating a token without the admin token",
        error_reply(&create.send(), 401, "unauthorized").map(|_| ()),
    );
    let ok = Req::get(&count).bearer(&token).send();
    checks.check(
        "with the generated token",
        (ok.json() == Some(json!({"count": 0})))
            .then_some(())
            .ok_or(format!("{ok}")),
    );
    checks.finish();
}

#[test]
fn the_admin_api_takes_only_json() {
    let (_dir, db) = temp_db();
    let service = AuthzService::start(&db);
    let token = generated_admin_token(&service);
    let (_, sha) = service.create_token("erin@example.com", 3600);
    let create = json!({"email": "erin@example.com"}).to_string();
    let mut checks = Checks::new();
    for content_type in [
        None,
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        let mut request = Req::post(service.url("/admin/tokens")).bearer(&token);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        checks.check(
            &format!("POST /admin/tokens with content-type {content_type:?}"),
            error_reply(
                &request.body(create.as_str()).send(),
                415,
                "unsupported_media_type",
            )
            .map(|_| ()),
        );
    }
    let expire = Req::post(service.url(&format!("/admin/tokens/{sha}/expire")))
        .bearer(&token)
        .header("content-type", "text/plain")
        .body("");
    checks.check(
        "an action without a JSON content type",
        error_reply(&expire.send(), 415, "unsupported_media_type").map(|_| ()),
    );
    let active = authorize_agent(&service, &sha);
    checks.check(
        "and it did nothing",
        (active["authorized"] == true)
            .then_some(())
            .ok_or(format!("{active}")),
    );
    for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
        let reply = Req::post(service.url("/admin/tokens"))
            .bearer(&token)
            .header("content-type", content_type)
            .body(create.as_str())
            .send();
        checks.check(
            &format!("POST /admin/tokens with {content_type}"),
            (reply.status == 200 && reply.json_str("token").is_some())
                .then_some(())
                .ok_or(format!("{reply}")),
        );
    }
    let expired = admin_call(
        &service,
        &token,
        "POST",
        &format!("/admin/tokens/{sha}/expire"),
        &json!({}),
    );
    checks.check(
        "an action with a JSON content type",
        (expired.status == 200)
            .then_some(())
            .ok_or(format!("{expired}")),
    );
    checks.finish();
}

#[test]
fn the_admin_api_answers_only_its_own_host_names() {
    let (_dir, db) = temp_db();
    let service = AuthzService::start_with(
        &db,
        AuthzOptions {
            public_url: Some("https://authz.example.com".into()),
            ..AuthzOptions::default()
        },
    );
    let token = generated_admin_token(&service);
    let port = service.port();
    let count = |host: &str| {
        Req::get(service.url("/admin/requests/count"))
            .bearer(&token)
            .header("host", host)
            .send()
    };
    let mut checks = Checks::new();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        "authz.example.com".to_string(),
        "authz.example.com:443".to_string(),
    ] {
        let reply = count(&host);
        checks.check(
            &format!("admin with Host {host}"),
            (reply.status == 200)
                .then_some(())
                .ok_or(format!("{reply}")),
        );
    }
    for host in [
        format!("rebind.attacker.example:{port}"),
        "rebind.attacker.example".to_string(),
        format!("127.0.0.1.nip.io:{port}"),
        "localhost".to_string(),
        format!("localhost:{}", port.wrapping_add(1)),
        "authz.example.com:8443".to_string(),
        "authz.internal".to_string(),
        String::new(),
    ] {
        checks.check(
            &format!("admin with Host {host:?}"),
            error_reply(&count(&host), 403, "forbidden").map(|_| ()),
        );
    }

    let (_, sha) = service.create_token("ivy@example.com", 3600);

    // The gateway's callout carries enterprise.authority, whatever it is.
    for host in ["authz.internal", "authz.authgate.local", "anything.example"] {
        let reply = Req::post(service.url("/api/authorize"))
            .header("host", host)
            .json(&authorize_body("opaque_token", None, &sha))
            .send();
        checks.check(
            &format!("/api/authorize with Host {host}"),
            (reply.status == 200 && reply.json().is_some_and(|b| b["authorized"] == true))
                .then_some(())
                .ok_or(format!("{reply}")),
        );
    }
    checks.finish();
}

#[test]
fn authorize_answers_the_gateway_not_browsers() {
    let (_dir, db) = temp_db();
    let service = AuthzService::start(&db);
    let (_, sha) = service.create_token("jo@example.com", 3600);
    service.expire(&sha);
    let body = authorize_body("opaque_token", None, &sha).to_string();
    let post = || Req::post(service.url("/api/authorize")).header("host", "authz.internal");
    let mut checks = Checks::new();
    let browser = [
        (
            "a form post",
            post()
                .header("origin", "http://evil.example")
                .header("content-type", "application/x-www-form-urlencoded"),
        ),
        (
            "a fetch after DNS rebinding",
            post()
                .header("origin", "http://rebind.example:8083")
                .header("content-type", "application/json"),
        ),
        (
            "a same-origin fetch",
            post()
                .header("sec-fetch-site", "same-origin")
                .header("content-type", "application/json"),
        ),
        (
            "Sec-Fetch-Mode alone",
            post()
                .header("Sec-Fetch-Mode", "cors")
                .header("content-type", "application/json"),
        ),
    ];
    for (label, request) in browser {
        checks.check(
            label,
            error_reply(&request.body(body.as_str()).send(), 403, "forbidden").map(|_| ()),
        );
    }
    for content_type in [None, Some("text/plain")] {
        let mut request = post();
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        checks.check(
            &format!("content-type {content_type:?}"),
            error_reply(
                &request.body(body.as_str()).send(),
                415,
                "unsupported_media_type",
            )
            .map(|_| ()),
        );
    }
    checks.check(
        "none of them was read (nothing logged)",
        (service.request_count() == 0)
            .then_some(())
            .ok_or(format!("{} logged", service.request_count())),
    );
    let answer = authorize_agent(&service, &sha);
    checks.check(
        "the gateway's request",
        (answer["session"]["status"] == "expired")
            .then_some(())
            .ok_or(format!("{answer}")),
    );
    checks.finish();
}

#[test]
fn allowed_answers_set_only_x_auth_headers() {
    let (_dir, db) = temp_db();
    let service = AuthzService::start(&db);
    let (_, sha) = service.create_token("kim@example.com", 3600);
    let agent = authorize_agent(&service, &sha);
    let mut jwt = authorize_body("jwt", Some("user-1"), &sha256_hex("eyJ.x.y"));
    jwt["user_email"] = json!("u1@example.com");
    let jwt = Req::post(service.url("/api/authorize"))
        .json(&jwt)
        .send()
        .json()
        .unwrap_or_default();
    assert_eq!(
        agent["headers"],
        json!({"x-auth-email": "kim@example.com"}),
        "{agent}"
    );
    assert_eq!(
        jwt["headers"],
        json!({"x-auth-email": "u1@example.com", "x-auth-authz-subject": "user-1"}),
        "{jwt}"
    );
}

// ---------------------------------------------------------------------------------------------
// The `authgate-authz` binary: its admin token, and the CLI on the database file

/// A child process killed (and reaped) when dropped, with its stdout lines on a channel.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Served {
    fn start(db: &Path, extra: &[&str], env: Option<(&str, &str)>) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authgate-authz"));
        command
            .args(["serve", "--port", "0", "--db"])
            .arg(db)
            .args(extra)
            .env_remove("AUTHGATE_AUTHZ_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting authgate-authz: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Served { child, lines }
    }

    /// The lines printed at start: the "serving" line and the admin token line(s).
    fn startup(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(Duration::from_secs(if lines.is_empty() { 30 } else { 1 }))
        {
            lines.push(line);
        }
        assert!(!lines.is_empty(), "authgate-authz printed nothing");
        lines
    }

    fn port(lines: &[String]) -> u16 {
        lines[0]
            .split(" on 127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {:?}", lines[0]))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_authgate-authz"))
        .args(args)
        .env_remove("AUTHGATE_AUTHZ_ADMIN_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("authgate-authz {args:?}: {e}"));
    assert!(
        output.status.success(),
        "authgate-authz {args:?}: {output:?}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn admin_count(port: u16, token: &str) -> u16 {
    Req::get(format!("http://127.0.0.1:{port}/admin/requests/count"))
        .bearer(token)
        .send()
        .status
}

#[test]
fn the_binary_generates_its_admin_token_once_and_the_cli_needs_none() {
    let (_dir, db) = temp_db();
    let db_arg = db.to_str().unwrap_or_else(|| panic!("path"));

    let first = Served::start(&db, &[], None);
    let lines = first.startup();
    let port = Served::port(&lines);
    let printed: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == '\''))
        .filter(|w| w.starts_with("adm_") && w.len() == 68)
        .collect();
    assert!(
        !printed.is_empty(),
        "the generated token is printed: {lines:?}"
    );
    let token = printed[0].to_string();
    assert!(printed.iter().all(|t| *t == token), "{lines:?}");
    assert_eq!(admin_count(port, &token), 200);
    assert_eq!(admin_count(port, "adm_wrong"), 401);
    drop(first);

    // A restart keeps it, and does not print it again.
    let second = Served::start(&db, &[], None);
    let lines = second.startup();
    let port = Served::port(&lines);
    assert!(!lines.iter().any(|l| l.contains(&token)), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("admin-token")),
        "how to get a new one: {lines:?}"
    );
    assert_eq!(admin_count(port, &token), 200);

    // The CLI works on the file without any token, while the server runs.
    let created: Value = serde_json::from_str(&cli(&[
        "create-token",
        "--db",
        db_arg,
        "--email",
        "cli@example.com",
    ]))
    .unwrap_or_else(|e| panic!("create-token output: {e}"));
    let sha = created["token_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    cli(&["expire", "--db", db_arg, "--sha256", &sha]);
    // A new admin token from the CLI replaces the old one at once.
    let rotated: Value = serde_json::from_str(&cli(&["admin-token", "--db", db_arg]))
        .unwrap_or_else(|e| panic!("admin-token output: {e}"));
    let new_token = rotated["admin_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        new_token.starts_with("adm_") && new_token != token,
        "{rotated}"
    );
    assert_eq!(admin_count(port, &new_token), 200);
    assert_eq!(admin_count(port, &token), 401);
    drop(second);

    // A given token is the only one accepted.
    let given = Served::start(
        &db,
        &[],
        Some(("AUTHGATE_AUTHZ_ADMIN_TOKEN", "given-admin-token-123")),
    );
    let lines = given.startup();
    let port = Served::port(&lines);
    assert!(
        !lines.iter().any(|l| l.contains("given-admin-token-123")),
        "{lines:?}"
    );
    assert_eq!(admin_count(port, "given-admin-token-123"), 200);
    assert_eq!(admin_count(port, &new_token), 401);
    let store = AuthzStore::open(&db).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.revoke(&sha).unwrap_or(false),
        "the CLI's token is in the file"
    );
}
