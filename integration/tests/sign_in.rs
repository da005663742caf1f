//! Sign-in at the gateway in real Envoy, against a real OpenID Provider (npm `oidc-provider`,
//! integration/oidc) driven by a real headless browser (Debian Chromium + selenium,
//! integration/browser): browser sign-in to a `login` route with the identity upstream, several
//! tabs at once, logout; and agent re-authentication, where the official `openai` SDK gets the
//! gateway's re-auth link, the owner signs in and confirms, and the same token works at once,
//! while someone else signing in renews nothing.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use authgate_integration::envoy::free_port;
use authgate_integration::expect::{self, Checks};
use authgate_integration::idp::{Idp, IDP_HOST};
use authgate_integration::{
    repo_root, AuthzOptions, AuthzService, Envoy, EnvoyConfig, Req, Upstream,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

const GATEWAY_KEY: &str = "gateway-key-for-tests-0123";

struct Stack {
    envoy: Option<Envoy>,
    gateway: String,
    port: u16,
    plugin: Value,
    service: AuthzService,
    upstream: Upstream,
    idp: Idp,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn envoy(&self) -> &Envoy {
        self.envoy
            .as_ref()
            .unwrap_or_else(|| panic!("envoy is not running"))
    }

    /// Envoy again, with these cookie keys (the first seals): a key rotation.
    fn restart_with_cookie_keys(&mut self, keys: &[[u8; 32]]) {
        self.plugin["login"]["cookie_keys"] = json!(keys
            .iter()
            .map(|k| URL_SAFE_NO_PAD.encode(k))
            .collect::<Vec<_>>());
        drop(self.envoy.take());
        self.envoy = Some(start_envoy(
            &self.plugin,
            &self.upstream,
            &self.idp,
            &self.service,
            self.port,
        ));
    }
}

fn start_envoy(
    plugin: &Value,
    upstream: &Upstream,
    idp: &Idp,
    service: &AuthzService,
    port: u16,
) -> Envoy {
    let config = EnvoyConfig::new(plugin, upstream.port())
        .cluster_at("idp", IDP_HOST, idp.port)
        .cluster("authz", service.port())
        .hold_companion()
        .listener_port(port);
    Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"))
}

fn start() -> Stack {
    start_with(false)
}

/// `discovery`: the provider is configured by its issuer alone (keys and endpoints come from
/// its discovery document).
fn start_with(discovery: bool) -> Stack {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(dir.path(), &gateway);
    let service = AuthzService::start_with(
        &dir.path().join("authz.sqlite"),
        AuthzOptions {
            gateway_key: Some(GATEWAY_KEY.to_string()),
            ..AuthzOptions::default()
        },
    );
    let issuer = &idp.issuer;
    let mut plugin = json!({
        "jwt_providers": {"idp": {"issuer": issuer,
            "remote_jwks": {"cluster": "idp", "uri": format!("{issuer}/jwks")}}},
        "opaque_tokens": "enterprise",
        "rules": [
            {"match": {"prefix": "/app"}, "requires_any": ["session"], "login": true},
            {"match": {"prefix": "/v1/"}, "requires_any": ["opaque_token"], "enterprise": true,
             "session_reply": "openai"}
        ],
        "enterprise": {"cluster": "authz", "authority": "authz.internal",
                       "gateway_key": GATEWAY_KEY,
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"],
                       "cache": {"allow_ttl_s": 30, "deny_ttl_s": 30}},
        "login": {"provider": "idp",
                  "authorization_endpoint": format!("{issuer}/auth"),
                  "token_endpoint": format!("{issuer}/token"),
                  "end_session_endpoint": format!("{issuer}/session/end"),
                  "client_id": "authgate", "client_secret": "authgate-secret",
                  "public_url": gateway,
                  "cookie_keys": [URL_SAFE_NO_PAD.encode([7u8; 32])]},
        "session": {"hold_companion": true}
    });
    if discovery {
        plugin["jwt_providers"]["idp"] =
            json!({"issuer": issuer, "discovery": true, "remote_jwks": {"cluster": "idp"}});
        for endpoint in [
            "authorization_endpoint",
            "token_endpoint",
            "end_session_endpoint",
        ] {
            plugin["login"].as_object_mut().map(|l| l.remove(endpoint));
        }
    }
    let upstream = Upstream::start();
    let envoy = start_envoy(&plugin, &upstream, &idp, &service, port);
    Stack {
        envoy: Some(envoy),
        gateway,
        port,
        plugin,
        service,
        upstream,
        idp,
        _dir: dir,
    }
}

/// Runs integration/browser/browser.py with `args`; its JSON report.
fn browser(login: Option<&str>, args: &[&str]) -> Value {
    let python: PathBuf = repo_root().join(".tools/browser/bin/python");
    let mut command = Command::new(&python);
    command.arg(repo_root().join("integration/browser/browser.py"));
    if let Some(user) = login {
        command.args([
            "--login",
            user,
            "--password",
            &format!("{}-pw", user.split('@').next().unwrap_or(user)),
        ]);
    }
    let output = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running the browser (make browser): {e}"));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "browser output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The session cookie's value at the end of a browser run.
fn session_cookie(report: &Value) -> String {
    report["final"]["cookies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "__Host-authgate_session")
        .and_then(|c| c["value"].as_str())
        .unwrap_or("")
        .to_string()
}

fn text(snapshot: &Value) -> String {
    snapshot["text"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_browser_signs_in_and_the_upstream_gets_the_identity_not_the_cookie() {
    let stack = start();
    let mut checks = Checks::new();
    let report = browser(
        Some("alice@example.com"),
        &["open", &format!("{}/app/home?x=1", stack.gateway)],
    );
    let last = &report["final"];
    let upstream: Value = serde_json::from_str(&text(last)).unwrap_or_default();
    checks.check(
        "back at the page asked for, signed in once",
        (report["ok"] == true
            && last["url"] == format!("{}/app/home?x=1", stack.gateway)
            && last["logins"] == 1)
            .then_some(())
            .ok_or(format!("{report}")),
    );
    checks.check(
        "the upstream gets the identity headers of a session",
        (upstream["headers"]["x-auth-subject"] == "alice"
            && upstream["headers"]["x-auth-email"] == "alice@example.com"
            && upstream["headers"]["x-auth-credential"] == "session")
            .then_some(())
            .ok_or(format!("{upstream}")),
    );
    checks.check(
        "and never the session cookie",
        (!upstream["headers"]["cookie"]
            .as_str()
            .unwrap_or("")
            .contains("authgate"))
        .then_some(())
        .ok_or(format!("{upstream}")),
    );
    let cookie = last["cookies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "__Host-authgate_session")
        .cloned()
        .unwrap_or_default();
    checks.check(
        "the session cookie is HttpOnly, Secure, SameSite=Lax",
        (cookie["httpOnly"] == true && cookie["secure"] == true && cookie["sameSite"] == "Lax")
            .then_some(())
            .ok_or(format!("{cookie}")),
    );
    let api = Req::get(format!("{}/app/data", stack.gateway))
        .header("accept", "application/json")
        .send();
    checks.check(
        "an API call without a session: 401 with where to sign in",
        expect::unauthenticated(&api, &stack.envoy().authority()).and_then(|()| {
            (api.json_str("login_url").as_deref()
                == Some(format!("{}/auth/login?rd=%2Fapp%2Fdata", stack.gateway).as_str()))
            .then_some(())
            .ok_or(format!("{api}"))
        }),
    );

    // The callback the browser went through, replayed: refused before any call to the IdP.
    let callback = report["final"]["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            report["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["hops"].as_array().into_iter().flatten()),
        )
        .filter_map(|hop| hop["url"].as_str())
        .find(|url| url.contains("/auth/callback?"))
        .unwrap_or_default()
        .to_string();
    let replayed = Req::get(&callback).header("accept", "text/html").send();
    checks.check(
        "a replayed callback: 400 page",
        (!callback.is_empty() && replayed.status == 400)
            .then_some(())
            .ok_or(format!("{callback}: {replayed}")),
    );

    // Logout: a same-origin POST clears the session and goes on to the IdP's end-session page.
    let session = cookie["value"].as_str().unwrap_or("");
    let jar = format!("__Host-authgate_session={session}");
    let logout = |origin: &str| {
        Req::post(format!("{}/auth/logout", stack.gateway))
            .header("origin", origin)
            .header("cookie", &jar)
            .send()
    };
    let refused = logout("https://evil.example");
    checks.check(
        "logout from another site: 403",
        (refused.status == 403)
            .then_some(())
            .ok_or(format!("{refused}")),
    );
    let out = logout(&stack.gateway);
    checks.check(
        "logout: the cookie cleared, on to the IdP's end-session endpoint",
        (out.status == 302
            && out
                .header("location")
                .is_some_and(|l| l.contains("/session/end?client_id=authgate"))
            && out.header("set-cookie").is_some_and(|c| {
                c.starts_with("__Host-authgate_session=;") && c.contains("Max-Age=0")
            }))
        .then_some(())
        .ok_or(format!("{out}")),
    );

    // An open redirect through the return target lands on the gateway's own root.
    let report = browser(
        Some("alice@example.com"),
        &[
            "open",
            &format!("{}/auth/login?rd=%2F%2Fevil.example%2Fx", stack.gateway),
        ],
    );
    checks.check(
        "rd=//evil.example: back to the gateway's root, never elsewhere",
        (report["final"]["url"] == format!("{}/", stack.gateway))
            .then_some(())
            .ok_or(format!("{report}")),
    );

    // Several tabs sign in at once: each attempt has its own cookie.
    let tabs: Vec<String> = ["/app/a", "/app/b", "/app/c"]
        .iter()
        .map(|p| format!("{}{p}", stack.gateway))
        .collect();
    let mut args = vec!["tabs"];
    args.extend(tabs.iter().map(String::as_str));
    args.push("--");
    let report = browser(Some("alice@example.com"), &args);
    let landed: Vec<String> = report["final"]["tabs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["url"].as_str().unwrap_or("").to_string())
        .collect();
    checks.check(
        "three tabs signing in at once each land where they were going",
        (landed == tabs).then_some(()).ok_or(format!("{report}")),
    );
    checks.finish();
}

#[test]
fn an_agent_session_is_restored_only_by_its_owner_signing_in_and_confirming() {
    let stack = start();
    let (token, sha) = stack.service.create_token("alice@example.com", 3600);
    stack.service.expire(&sha);
    let mut checks = Checks::new();
    let chat = || {
        Req::post(format!("{}/v1/chat/completions", stack.gateway))
            .bearer(&token)
            .json(&json!({"model": "gpt-agent", "messages": []}))
            .send()
    };
    // The agent, on the official openai SDK, shows its user the gateway's link.
    let output = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("integration/sdk/agent.py"))
        .args([
            "openai",
            "--base-url",
            &format!("{}/v1", stack.gateway),
            "--api-key",
            &token,
        ])
        .output()
        .unwrap_or_else(|e| panic!("running the openai SDK (make setup): {e}"));
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let chat_text = shown["chat"]["text"].as_str().unwrap_or("").to_string();
    let url = chat_text
        .split_whitespace()
        .find(|word| word.starts_with(&format!("{}/auth/reauth?ticket=", stack.gateway)))
        .unwrap_or("")
        .to_string();
    checks.check(
        "the openai SDK shows the gateway's re-auth link with a ticket",
        (!url.is_empty()).then_some(()).ok_or(format!(
            "{shown}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )),
    );

    // Someone else signs in with the link: nothing is restored.
    let report = browser(Some("carol@example.com"), &["open", &url, "click", "renew"]);
    checks.check(
        "another user's confirmation is refused, saying why",
        (report["final"]["status"] == 403
            && text(&report["final"]).contains("not this agent token's owner"))
        .then_some(())
        .ok_or(format!("{report}")),
    );
    std::thread::sleep(Duration::from_millis(300));
    checks.check(
        "the token is still expired",
        (chat().header("x-auth-reauth-url").is_some())
            .then_some(())
            .ok_or("the token works".to_string()),
    );

    // Merely opening the link (a preview, a phished click) restores nothing either.
    let report = browser(Some("alice@example.com"), &["open", &url]);
    checks.check(
        "the owner sees a page naming the token, and nothing is restored yet",
        (text(&report["final"]).contains(&sha[..12])
            && chat().header("x-auth-reauth-url").is_some())
        .then_some(())
        .ok_or(format!("{report}")),
    );

    // The owner signs in again and confirms: the same token works at once.
    let fresh = chat().header("x-auth-reauth-url").unwrap_or("").to_string();
    let report = browser(
        Some("alice@example.com"),
        &["open", &fresh, "click", "renew"],
    );
    checks.check(
        "the owner's confirmation restores the session",
        (report["final"]["status"] == 200 && text(&report["final"]).contains("restored"))
            .then_some(())
            .ok_or(format!("{report}")),
    );
    std::thread::sleep(Duration::from_millis(300));
    let reply = chat();
    checks.check(
        "the same token reaches the upstream at once (no waiting for the cached answer)",
        expect::allowed(&reply),
    );

    let tampered = format!("{url}x");
    let report = browser(Some("alice@example.com"), &["open", &tampered]);
    checks.check(
        "a tampered ticket: 400, no sign-in",
        (report["final"]["status"] == 400 && report["final"]["logins"] == 0)
            .then_some(())
            .ok_or(format!("{report}")),
    );
    checks.finish();
}

#[test]
fn identity_provider_failures_unverified_emails_and_cookie_key_rotation() {
    let mut stack = start();
    let mut checks = Checks::new();
    let app = format!("{}/app/x", stack.gateway);
    let report = browser(Some("bob@example.com"), &["open", &app]);
    checks.check(
        "an unverified email: 403 page, no session",
        (report["final"]["status"] == 403
            && text(&report["final"]).contains("not verified")
            && !report["final"]["cookies"]
                .to_string()
                .contains("authgate_session"))
        .then_some(())
        .ok_or(format!("{report}")),
    );
    let fault =
        |mode: &str| Req::post(format!("{}/__admin/fault?token={mode}", stack.idp.issuer)).send();
    fault("500");
    let report = browser(Some("alice@example.com"), &["open", &app]);
    checks.check(
        "a token endpoint answering 500: a clear 502 page",
        (report["final"]["status"] == 502)
            .then_some(())
            .ok_or(format!("{report}")),
    );
    fault("hang");
    let started = std::time::Instant::now();
    let report = browser(Some("alice@example.com"), &["open", &app]);
    checks.check(
        "a token endpoint that never answers: 503 after the sign-in timeout, nothing hangs",
        (report["final"]["status"] == 503 && started.elapsed() < Duration::from_secs(30))
            .then_some(())
            .ok_or(format!("{report}")),
    );
    fault("none");

    // A session sealed with key A still opens once B is added in front, and not once A is gone.
    let report = browser(Some("alice@example.com"), &["open", &app]);
    let session = session_cookie(&report);
    let with_cookie = |stack: &Stack| {
        Req::get(format!("{}/app/x", stack.gateway))
            .header("accept", "application/json")
            .header("cookie", &format!("__Host-authgate_session={session}"))
            .send()
    };
    checks.check("signed in", expect::allowed(&with_cookie(&stack)));
    stack.restart_with_cookie_keys(&[[8; 32], [7; 32]]);
    checks.check(
        "after rotation (new key first, old still listed) the session still works",
        expect::allowed(&with_cookie(&stack)),
    );
    stack.restart_with_cookie_keys(&[[8; 32]]);
    let reply = with_cookie(&stack);
    checks.check(
        "once the old key is gone the cookie counts as absent, and is cleared",
        (reply.status == 401
            && reply
                .header("set-cookie")
                .is_some_and(|c| c.contains("Max-Age=0")))
        .then_some(())
        .ok_or(format!("{reply}")),
    );
    checks.finish();
}

#[test]
fn with_discovery_the_issuer_alone_is_enough() {
    let stack = start_with(true);
    let mut checks = Checks::new();
    let report = browser(
        Some("alice@example.com"),
        &["open", &format!("{}/app/home", stack.gateway)],
    );
    let upstream: Value = serde_json::from_str(&text(&report["final"])).unwrap_or_default();
    checks.check(
        "keys and endpoints from the discovery document: signed in",
        (upstream["headers"]["x-auth-subject"] == "alice")
            .then_some(())
            .ok_or(format!("{report}")),
    );
    let session = session_cookie(&report);
    let out = Req::post(format!("{}/auth/logout", stack.gateway))
        .header("origin", &stack.gateway)
        .header("cookie", &format!("__Host-authgate_session={session}"))
        .send();
    checks.check(
        "logout goes on to the discovered end-session endpoint",
        (out.status == 302
            && out
                .header("location")
                .is_some_and(|l| l.starts_with(&format!("{}/session/end?", stack.idp.issuer))))
        .then_some(())
        .ok_or(format!("{out}")),
    );
    checks.finish();
}
