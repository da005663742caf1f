//! The `authgate-doctor` CLI (built with `--features doctor`): validate, explain, probe-authz,
//! hash-key — exit codes, messages that name the failing check, and no secret in its output.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use authgate_integration::authz_service::AuthzService;
use authgate_integration::authz_stub::{AuthzMode, AuthzStub};
use authgate_integration::expect::Checks;
use authgate_integration::plugin::{corp_claims, corp_config, local_provider, remote_provider};
use authgate_integration::{jwks, now, repo_root, FixtureKey, TokenBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `$AUTHGATE_DOCTOR`, else `<repo>/target/debug/authgate-doctor` (`make test` builds it).
fn doctor_bin() -> PathBuf {
    std::env::var_os("AUTHGATE_DOCTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/authgate-doctor"))
}

struct Run {
    code: i32,
    stdout: String,
}

fn doctor(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(doctor_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): build it with `cargo build -p authgate --features doctor`",
                doctor_bin().display()
            )
        });
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for the doctor: {e}"));
    let stdout = String::from_utf8_lossy(&stdout).to_string() + &String::from_utf8_lossy(&stderr);
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
    }
}

fn write(dir: &tempfile::TempDir, name: &str, value: &Value) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, value.to_string()).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    path.display().to_string()
}

fn expect(run: &Run, code: i32, needles: &[&str]) -> Result<(), String> {
    let missing: Vec<&&str> = needles
        .iter()
        .filter(|n| !run.stdout.contains(**n))
        .collect();
    if run.code != code || !missing.is_empty() {
        return Err(format!(
            "exit {} (wanted {code}), missing {missing:?} in:\n{}",
            run.code, run.stdout
        ));
    }
    Ok(())
}

#[test]
fn validate_and_hash_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut checks = Checks::new();
    let good = write(
        &dir,
        "good.json",
        &corp_config(local_provider(&[FixtureKey::Rsa1])),
    );
    checks.check(
        "valid config",
        expect(
            &doctor(&["validate", &good], None),
            0,
            &["valid: 1 JWT provider(s), 2 rule(s)"],
        ),
    );
    let mut typo = corp_config(local_provider(&[FixtureKey::Rsa1]));
    typo["rules"][1]["requires_any"] = json!(["jwt:Corp"]);
    let typo = write(&dir, "typo.json", &typo);
    checks.check(
        "invalid config names the field",
        expect(
            &doctor(&["validate", &typo], None),
            1,
            &["rules[1].requires_any[0]", "did you mean \"corp\""],
        ),
    );
    checks.check(
        "usage error",
        expect(&doctor(&["validate"], None), 2, &["usage:"]),
    );

    let key = "ek_live_doctor_key_0001";
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    for (label, run) in [
        ("argument", doctor(&["hash-key", key], None)),
        (
            "stdin",
            doctor(&["hash-key", "-"], Some(&format!("{key}\n"))),
        ),
    ] {
        checks.check(
            &format!("hash-key from the {label}: the digest, never the key"),
            expect(&run, 0, &[&digest]).and_then(|()| {
                (!run.stdout.contains(key))
                    .then_some(())
                    .ok_or(run.stdout.clone())
            }),
        );
    }
    checks.finish();
}

#[test]
fn explain_says_which_check_fails() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write(
        &dir,
        "config.json",
        &corp_config(local_provider(&[FixtureKey::Rsa1])),
    );
    let mut checks = Checks::new();
    let token = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign();
    let run = doctor(
        &["explain", &token, "--config", &config, "--path", "/api/x"],
        None,
    );
    checks.check(
        "a valid token: every check passes, the identity is shown",
        expect(
            &run,
            0,
            &[
                "✓ iss matches provider \"corp\"",
                "✓ kid \"rsa-1\" is in the key set",
                "✓ signature",
                "✓ allowed",
                "x-auth-subject: alice",
                "rules[1] matches",
            ],
        ),
    );
    let signature = token.rsplit('.').next().unwrap_or_default();
    checks.check(
        "the token never appears in the output",
        (!run.stdout.contains(&token) && !run.stdout.contains(signature))
            .then_some(())
            .ok_or(run.stdout.clone()),
    );

    let mut claims = corp_claims("bob");
    claims["exp"] = json!(now() - 3600);
    let expired = TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign();
    checks.check(
        "expired: the clock difference and the session reply",
        expect(
            &doctor(&["explain", &expired, "--config", &config], None),
            1,
            &["s ago)", "✗ session expired", "answered 401"],
        ),
    );
    let mut claims = corp_claims("carol");
    claims["aud"] = json!("someone-else");
    let wrong_aud = TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign();
    checks.check(
        "wrong audience",
        expect(
            &doctor(&["explain", &wrong_aud, "--config", &config], None),
            1,
            &["✗ audience not accepted"],
        ),
    );
    let rotated = TokenBuilder::new(FixtureKey::Rsa2)
        .claims(corp_claims("dave"))
        .sign();
    checks.check(
        "a key the JWKS does not have",
        expect(
            &doctor(&["explain", &rotated, "--config", &config], None),
            1,
            &["is not in the key set"],
        ),
    );

    // A remote provider: the keys come from --jwks.
    let remote = write(&dir, "remote.json", &corp_config(remote_provider(600)));
    let keys = write(&dir, "jwks.json", &jwks(&[FixtureKey::Rsa1]));
    checks.check(
        "remote provider with --jwks FILE",
        expect(
            &doctor(
                &["explain", &token, "--config", &remote, "--jwks", &keys],
                None,
            ),
            0,
            &["✓ allowed"],
        ),
    );
    checks.check(
        "not a JWT",
        expect(
            &doctor(&["explain", "sk-not-a-jwt", "--config", &config], None),
            1,
            &["not a usable JWT"],
        ),
    );
    checks.finish();
}

#[test]
fn probe_authz_checks_the_answer_and_its_shape() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let service = AuthzService::start(&dir.path().join("authz.sqlite"));
    let mut checks = Checks::new();
    checks.check(
        "the reference service answers in shape",
        expect(
            &doctor(&["probe-authz", &service.url("/api/authorize")], None),
            0,
            &["✓ HTTP 200 in", "allow"],
        ),
    );
    let stub = AuthzStub::start(AuthzMode::Garbage);
    checks.check(
        "garbage",
        expect(
            &doctor(&["probe-authz", &stub.url("/api/authorize")], None),
            1,
            &["answer is not JSON"],
        ),
    );
    stub.set_mode(AuthzMode::Status(500));
    checks.check(
        "a 500",
        expect(
            &doctor(&["probe-authz", &stub.url("/api/authorize")], None),
            1,
            &["answered HTTP 500"],
        ),
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    checks.check(
        "nothing listening",
        expect(
            &doctor(
                &[
                    "probe-authz",
                    &format!("http://127.0.0.1:{closed}/api/authorize"),
                ],
                None,
            ),
            1,
            &["✗ no answer"],
        ),
    );
    checks.finish();
}

#[test]
fn info_reads_a_running_gateways_stats() {
    use authgate_integration::{Gateway, JwksStub, Req};
    let stub = AuthzStub::start(AuthzMode::Json(
        json!({"authorized": true, "cache_ttl_s": 60}),
    ));
    let mut config = corp_config(remote_provider(600));
    config["rules"] = json!([{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"],
                              "enterprise": true}]);
    config["enterprise"] = json!({"cluster": "authz", "authority": "authz.internal"});
    let gw = Gateway::start_with(&config, JwksStub::start(jwks(&[FixtureKey::Rsa1])), |c| {
        c.cluster("authz", stub.port())
    });
    let token = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign();
    let mut checks = Checks::new();
    for _ in 0..3 {
        let reply = Req::get(gw.url("/x")).bearer(&token).send();
        checks.check(
            "allowed",
            (reply.status == 200)
                .then_some(())
                .ok_or(format!("{reply}")),
        );
    }
    for _ in 0..2 {
        let reply = Req::get(gw.url("/x")).send();
        checks.check(
            "refused",
            (reply.status == 401)
                .then_some(())
                .ok_or(format!("{reply}")),
        );
    }
    // Histograms reach the admin API on Envoy's stats flush (1 s in the harness).
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let admin = gw.envoy.admin_url();
    let run = doctor(&["info", "--admin", &admin, "--interval", "0.2"], None);
    let out = &run.stdout;
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or("")
            .to_string()
    };
    let words = |l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    checks.check("exit 0", (run.code == 0).then_some(()).ok_or(out.clone()));
    checks.check(
        "totals",
        (line("requests:") == "requests: 3 allowed, 2 denied in all")
            .then_some(())
            .ok_or(out.clone()),
    );
    checks.check(
        "token cache: one verification, two hits",
        line("token cache:")
            .starts_with("token cache: 66.7% of 3 lookups hit; 1 tokens held")
            .then_some(())
            .ok_or(out.clone()),
    );
    checks.check(
        "decision cache: one call, two hits",
        line("decision cache:")
            .starts_with("decision cache: 66.7% of 3 lookups hit; 1 decisions held")
            .then_some(())
            .ok_or(out.clone()),
    );
    checks.check(
        "missing credentials are expected denials, counted with their rate now",
        (words(line("denied.missing_credential")) == ["denied.missing_credential", "2", "0.0/s"])
            .then_some(())
            .ok_or(out.clone()),
    );
    checks.check(
        "no faults",
        (words(line("denied.authorization_unavailable"))
            == ["denied.authorization_unavailable", "0", "0.0/s"])
        .then_some(())
        .ok_or(out.clone()),
    );
    let age: Option<u64> = line("keys: provider corp: fetched")
        .split_whitespace()
        .nth(4)
        .and_then(|s| s.parse().ok());
    checks.check(
        "the key fetch's age",
        age.is_some_and(|a| a < 30).then_some(()).ok_or(out.clone()),
    );
    checks.check(
        "authorization latency percentiles",
        line("authorization service latency:")
            .contains("p50 ")
            .then_some(())
            .ok_or(out.clone()),
    );
    let run = doctor(&["info", "--admin", "http://127.0.0.1:1"], None);
    checks.check(
        "an unreachable admin address: exit 1 with the reason",
        (run.code == 1 && run.stdout.contains("cannot read"))
            .then_some(())
            .ok_or(run.stdout.clone()),
    );
    checks.finish();
}

#[test]
fn login_check_tries_the_sign_in_setup_against_the_identity_provider() {
    use authgate_integration::idp::Idp;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gateway = "http://127.0.0.1:18099";
    let idp = Idp::start(dir.path(), gateway);
    let issuer = &idp.issuer;
    let config = |public_url: &str, secret: &str| {
        let path = dir
            .path()
            .join(format!("config-{}.json", secret.len() + public_url.len()));
        let config = json!({
            "jwt_providers": {"idp": {"issuer": issuer,
                "remote_jwks": {"cluster": "idp", "uri": format!("{issuer}/jwks")}}},
            "rules": [{"match": {"prefix": "/"}, "requires_any": ["session"], "login": true}],
            "login": {"provider": "idp", "authorization_endpoint": format!("{issuer}/auth"),
                      "token_endpoint": format!("{issuer}/token"),
                      "client_id": "authgate", "client_secret": secret,
                      "public_url": public_url,
                      "cookie_keys": ["ZGVtby1jb29raWUta2V5LW5vdC1mb3ItcHJvZC11c2U"]}
        });
        std::fs::write(&path, config.to_string()).unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    };
    let mut checks = Checks::new();
    let good = doctor(&["login-check", &config(gateway, "authgate-secret")], None);
    checks.check(
        "a good set-up: every check passes",
        (good.code == 0 && !good.stdout.contains('✗') && good.stdout.contains("PKCE S256"))
            .then_some(())
            .ok_or(good.stdout.clone()),
    );
    let secret = doctor(&["login-check", &config(gateway, "wrong-secret")], None);
    checks.check(
        "a wrong client secret is named",
        (secret.code == 1
            && secret
                .stdout
                .contains("✗ the IdP refused the client's credentials"))
        .then_some(())
        .ok_or(secret.stdout.clone()),
    );
    let redirect = doctor(
        &[
            "login-check",
            &config("http://127.0.0.1:18098", "authgate-secret"),
        ],
        None,
    );
    checks.check(
        "an unregistered redirect URI is named",
        (redirect.code == 1
            && redirect
                .stdout
                .contains("✗ the IdP refused the authorization request"))
        .then_some(())
        .ok_or(redirect.stdout.clone()),
    );
    checks.finish();
}

#[test]
fn explain_shows_a_protected_resources_challenge() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut plugin = corp_config(local_provider(&[FixtureKey::Rsa1]));
    plugin["rules"] = json!([
        {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["deploy_*"]}},
         "requires_any": ["jwt:corp"], "require_scopes": ["mcp:deploy"]},
        {"match": {"prefix": "/mcp"}, "requires_any": ["jwt:corp"], "require_scopes": ["mcp:tools"]}]);
    plugin["session"] = json!({"hold_companion": true});
    plugin["protected_resources"] = json!([{
        "resource": "https://mcp.example.com/mcp", "match": {"prefix": "/mcp"},
        "authorization_servers": ["https://idp.example.com/realms/corp"]}]);
    let config = write(&dir, "config.json", &plugin);
    let token = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign();
    let mut checks = Checks::new();
    checks.check(
        "a missing scope on an MCP route: the challenge a client would read",
        expect(
            &doctor(&["explain", &token, "--config", &config, "--path", "/mcp"], None),
            1,
            &["WWW-Authenticate: Bearer error=\"insufficient_scope\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\""],
        ),
    );
    let deploy =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy_prod"}}"#;
    let args = [
        "explain", &token, "--config", &config, "--method", "POST", "--path", "/mcp", "--body",
        deploy,
    ];
    checks.check(
        "a deploy_* call: the per-tool rule's challenge",
        expect(&doctor(&args, None), 1, &["scope=\"mcp:deploy\""]),
    );
    checks.finish();
}
