//! Secrets audit (issue 7, DESIGN.md "Security invariants": secrets never reach logs, the authz
//! service or responses). A mixed workload runs in real Envoy with `wasm:debug` logging against
//! a gateway that takes RS256 and HS256 JWTs, API keys and opaque agent tokens decided by the
//! reference authorization service, with backoff and session-expired replies: valid, invalid,
//! expired and tampered credentials of every kind. Then no token, key, agent token, HS secret
//! (raw, base64url, base64, hex) or JWT payload/signature segment may appear in Envoy's whole log,
//! in any body the authorization service received, or in any reply (status, headers, body) the
//! clients got, including the echo upstream's account of what it received.
//!
//! Not vacuous: the log must hold the 12-hex fingerprints of credentials it decided, and the
//! service must have received `token_sha256` values.

use authgate_integration::authz_service::{sha256_hex, AuthzService};
use authgate_integration::expect::{self, error_reply, Check, Checks};
use authgate_integration::plugin::{api_key_entry, corp_claims, local_provider};
use authgate_integration::tokens::{alg_none, corrupt_signature, now, swap_payload};
use authgate_integration::{jwks, FixtureKey, Gateway, JwksStub, Reply, Req, TokenBuilder};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

const CI_KEY: &str = "ek_live_audit_5fA9qL2mX7rT0wZ3yB8c";
const RETIRED_KEY: &str = "ek_live_audit_retired_7d6c5b4a3f2e";
const LAPSED_KEY: &str = "ek_live_audit_lapsed_0a1b2c3d4e5f";
/// One character off `CI_KEY`.
const NEAR_MISS_KEY: &str = "ek_live_audit_5fA9qL2mX7rT0wZ3yB8d";
const UNKNOWN_AGENT_TOKEN: &str = "agt_0000000000000000000000000000000000000000";
const FALLBACK_URL: &str = "https://sso.example.com/reauth";

fn plugin() -> Value {
    let mut retired = api_key_entry("retired", RETIRED_KEY, "svc:old", &["read"]);
    retired["active"] = json!(false);
    let mut lapsed = api_key_entry("lapsed", LAPSED_KEY, "svc:lapsed", &["read"]);
    lapsed["expires_at"] = json!("2020-01-01T00:00:00Z");
    let rule = |prefix: &str, reply: &str| {
        json!({"match": {"prefix": prefix},
               "requires_any": ["jwt:corp", "api_key", "opaque_token"],
               "enterprise": true, "session_reply": reply})
    };
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1, FixtureKey::Hs1])},
        "api_keys": {"keys": [api_key_entry("ci", CI_KEY, "svc:ci", &["read"]), retired, lapsed]},
        "opaque_tokens": "enterprise",
        "rules": [{"match": {"path": "/public"}, "public": true},
                  {"match": {"prefix": "/keys/"}, "requires_any": ["api_key"]},
                  rule("/v1/", "openai"), rule("/api/", "api")],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000,
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"],
                       "cache": {"allow_ttl_s": 1, "deny_ttl_s": 1}},
        "failed_auth_backoff": {"after_failures": 3, "base_s": 5, "max_s": 10},
        "client_ip": {"from": "x-forwarded-for"},
        "session": {"reauth_url": FALLBACK_URL, "hold_companion": true}
    })
}

/// Every credential the workload used, and every form of the HS secret.
#[derive(Default)]
struct Secrets {
    /// (label, value): the value must appear nowhere.
    items: Vec<(String, String)>,
}

impl Secrets {
    fn add(&mut self, label: &str, value: &str) {
        if !value.is_empty() {
            self.items.push((label.to_string(), value.to_string()));
        }
    }

    /// A JWT, and its payload and signature segments of 16+ characters.
    fn jwt(&mut self, label: &str, token: &str) {
        self.add(label, token);
        for (i, part) in token.split('.').enumerate().skip(1) {
            if part.len() >= 16 {
                let what = if i == 1 { "payload" } else { "signature" };
                self.add(&format!("{label} ({what} segment)"), part);
            }
        }
    }
}

/// The workload's requests, each with the reply it got.
struct Workload<'a> {
    gw: &'a Gateway,
    replies: Vec<(String, Reply)>,
    checks: Checks,
}

/// How a request carries its credential.
enum Cred<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
    None,
}

impl Workload<'_> {
    /// Sends; `client` is the `x-forwarded-for` address (the backoff's client).
    fn send(&mut self, label: &str, req: Req, cred: Cred<'_>, client: &str) -> Reply {
        let req = req
            .header("x-forwarded-for", client)
            .header("x-request-id", label);
        let req = match cred {
            Cred::Bearer(token) => req.bearer(token),
            Cred::ApiKey(key) => req.header("x-api-key", key),
            Cred::None => req,
        };
        let reply = req.send();
        self.checks.check(
            &format!("{label}: no 5xx"),
            if reply.status >= 500 {
                Err(format!("{reply}"))
            } else {
                Ok(())
            },
        );
        self.replies.push((label.to_string(), reply.clone()));
        reply
    }

    fn get(&mut self, label: &str, path: &str, cred: Cred<'_>, client: &str) -> Reply {
        let req = Req::get(self.gw.url(path));
        self.send(label, req, cred, client)
    }

    /// An OpenAI-style chat completion call (the `openai` session reply shape).
    fn chat(&mut self, label: &str, cred: Cred<'_>, client: &str) -> Reply {
        let req = Req::post(self.gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-audit", "messages": [{"role": "user", "content": "hi"}]}));
        self.send(label, req, cred, client)
    }

    fn expect(&mut self, label: &str, outcome: Check) {
        self.checks.check(label, outcome);
    }
}

/// 4xx, not 5xx, and not from the upstream.
fn refused(reply: &Reply) -> Check {
    if (400..500).contains(&reply.status) && !reply.is_from_upstream() {
        Ok(())
    } else {
        Err(format!("expected a 4xx refusal; got {reply}"))
    }
}

/// 401 `invalid_token` whose message is `reason`.
fn invalid_token_because(reply: &Reply, reason: &str) -> Check {
    expect::invalid_token(reply)?;
    match reply.json_str("message") {
        Some(m) if m == reason => Ok(()),
        other => Err(format!("expected message {reason:?}, got {other:?}")),
    }
}

/// The `openai` session-expired reply: a 200 `chat.completion` made by the gateway.
fn openai_session_expired(reply: &Reply) -> Check {
    let body = reply.json().unwrap_or_default();
    if reply.status == 200 && !reply.is_from_upstream() && body["object"] == "chat.completion" {
        Ok(())
    } else {
        Err(format!(
            "expected a chat.completion session reply; got {reply}"
        ))
    }
}

/// Where a secret was found: the line (or a window) around it, with the secret masked.
fn context(text: &str, secret: &str) -> String {
    let at = text.find(secret).unwrap_or(0);
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = &text[start..end];
    let line: String = line.chars().take(400).collect();
    line.replace(secret, "<SECRET>")
}

fn audit(checks: &mut Checks, place: &str, text: &str, secrets: &Secrets) {
    for (label, value) in &secrets.items {
        checks.check(
            &format!("{place}: no {label}"),
            if text.contains(value.as_str()) {
                Err(format!("found in {place}: {}", context(text, value)))
            } else {
                Ok(())
            },
        );
    }
}

/// Everything a client saw of a reply: status, every header, the whole body.
fn reply_text(reply: &Reply) -> String {
    let headers: Vec<String> = reply
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    format!(
        "HTTP {}\n{}\n{}",
        reply.status,
        headers.join("\n"),
        reply.body
    )
}

fn fingerprint(secret: &str) -> String {
    sha256_hex(secret)[..12].to_string()
}

fn signing_input(jwt: &str) -> &str {
    jwt.rsplit_once('.').map_or(jwt, |(input, _)| input)
}

#[test]
fn no_secret_reaches_the_log_the_authz_service_or_any_reply() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let service = AuthzService::start(&dir.path().join("authz.sqlite"));
    let port = service.port();
    let gw = Gateway::start_with(&plugin(), JwksStub::start(jwks(&[])), |c| {
        c.cluster("authz", port).hold_companion()
    });
    let mut secrets = Secrets::default();
    let hs_secret = FixtureKey::Hs1.secret().unwrap_or_default();
    secrets.add("HS secret (raw)", &String::from_utf8_lossy(hs_secret));
    secrets.add("HS secret (base64url)", &URL_SAFE_NO_PAD.encode(hs_secret));
    secrets.add("HS secret (base64)", &STANDARD.encode(hs_secret));
    secrets.add("HS secret (hex)", &hex::encode(hs_secret));

    // Credentials.
    let rs = |sub: &str| {
        TokenBuilder::new(FixtureKey::Rsa1)
            .claims(corp_claims(sub))
            .sign()
    };
    let hs = |sub: &str| {
        TokenBuilder::new(FixtureKey::Hs1)
            .claims(corp_claims(sub))
            .sign()
    };
    let expired = |key: FixtureKey, sub: &str| {
        let mut claims = corp_claims(sub);
        claims["exp"] = json!(now() - 600);
        TokenBuilder::new(key).claims(claims).sign()
    };
    let rs_valid = rs("alice");
    let hs_valid = hs("hs-user");
    let rs_expired = expired(FixtureKey::Rsa1, "bob");
    let hs_expired = expired(FixtureKey::Hs1, "hs-bob");
    let bad_jwts: Vec<(&str, String)> = vec![
        ("RS256 corrupted signature", corrupt_signature(&rs_valid)),
        ("HS256 corrupted signature", corrupt_signature(&hs_valid)),
        (
            "RS256 tampered payload",
            swap_payload(&rs_valid, &corp_claims("root")),
        ),
        (
            "HS256 tampered payload",
            swap_payload(&hs_valid, &corp_claims("root")),
        ),
        (
            "HS256 with another secret",
            TokenBuilder::new(FixtureKey::Hs1)
                .claims(corp_claims("mallory"))
                .hmac_secret(b"a guessed secret, not the configured one")
                .sign(),
        ),
        (
            "HS256 signed with the RSA public PEM",
            TokenBuilder::new(FixtureKey::Rsa1)
                .claims(corp_claims("mallory"))
                .hmac_secret(FixtureKey::Rsa1.public_pem().unwrap_or_default().as_bytes())
                .sign(),
        ),
        (
            "RS256 by an unknown key",
            TokenBuilder::new(FixtureKey::Rsa3)
                .claims(corp_claims("mallory"))
                .sign(),
        ),
        ("alg none", alg_none("rsa-1", &corp_claims("eve"))),
    ];
    let (agent, agent_sha) = service.create_token("alice@example.com", 3600);
    let (agent_lapsed, agent_lapsed_sha) = service.create_token("carol@example.com", 3600);
    service.expire(&agent_lapsed_sha);
    let (agent_revoked, agent_revoked_sha) = service.create_token("dave@example.com", 3600);
    service.revoke(&agent_revoked_sha);
    let agent_tampered = {
        let mut chars: Vec<char> = agent.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == '0' { '1' } else { '0' };
        chars.into_iter().collect::<String>()
    };

    secrets.jwt("valid RS256 JWT", &rs_valid);
    secrets.jwt("valid HS256 JWT", &hs_valid);
    secrets.jwt("expired RS256 JWT", &rs_expired);
    secrets.jwt("expired HS256 JWT", &hs_expired);
    for (label, token) in &bad_jwts {
        secrets.jwt(label, token);
    }
    for (label, key) in [
        ("API key", CI_KEY),
        ("retired API key", RETIRED_KEY),
        ("lapsed API key", LAPSED_KEY),
        ("near-miss API key", NEAR_MISS_KEY),
    ] {
        secrets.add(label, key);
    }
    for (label, token) in [
        ("agent token", agent.as_str()),
        ("lapsed agent token", agent_lapsed.as_str()),
        ("revoked agent token", agent_revoked.as_str()),
        ("tampered agent token", agent_tampered.as_str()),
        ("unknown agent token", UNKNOWN_AGENT_TOKEN),
    ] {
        secrets.add(label, token);
    }

    let mut w = Workload {
        gw: &gw,
        replies: Vec::new(),
        checks: Checks::new(),
    };
    let good_client = "203.0.113.10";

    // Valid credentials of every kind, twice (the second time from the caches).
    for round in 1..=2 {
        let r = w.get(
            &format!("rs-valid-{round}"),
            "/api/a",
            Cred::Bearer(&rs_valid),
            good_client,
        );
        w.expect(&format!("valid RS256 JWT ({round})"), expect::allowed(&r));
        let r = w.chat(
            &format!("rs-valid-chat-{round}"),
            Cred::Bearer(&rs_valid),
            good_client,
        );
        w.expect(
            &format!("valid RS256 JWT, chat ({round})"),
            expect::allowed(&r),
        );
        let r = w.get(
            &format!("hs-valid-{round}"),
            "/api/a",
            Cred::Bearer(&hs_valid),
            good_client,
        );
        w.expect(&format!("valid HS256 JWT ({round})"), expect::allowed(&r));
        let r = w.get(
            &format!("key-valid-{round}"),
            "/api/a",
            Cred::ApiKey(CI_KEY),
            good_client,
        );
        w.expect(&format!("valid API key ({round})"), expect::allowed(&r));
        let r = w.get(
            &format!("agent-bearer-{round}"),
            "/api/a",
            Cred::Bearer(&agent),
            good_client,
        );
        w.expect(
            &format!("agent token as bearer ({round})"),
            expect::allowed(&r),
        );
        let r = w.chat(
            &format!("agent-x-api-key-{round}"),
            Cred::ApiKey(&agent),
            good_client,
        );
        w.expect(
            &format!("agent token in x-api-key ({round})"),
            expect::allowed(&r),
        );
    }

    // Invalid and tampered credentials, each from its own address (no backoff block yet).
    for (i, (label, token)) in bad_jwts.iter().enumerate() {
        let client = format!("198.51.100.{}", 10 + i);
        let r = w.get(
            &format!("bad-jwt-{i}"),
            "/api/a",
            Cred::Bearer(token),
            &client,
        );
        w.expect(label, expect::invalid_token(&r));
        let r = w.chat(&format!("bad-jwt-chat-{i}"), Cred::Bearer(token), &client);
        w.expect(&format!("{label} (chat)"), expect::invalid_token(&r));
    }
    // On a route that takes API keys only, and on the mixed routes, where README says a value
    // that is no configured key is tried as an agent token (so an inactive or expired
    // *configured* key still gets 401 invalid_token with its own reason).
    for (i, (label, key, reason)) in [
        ("retired API key", RETIRED_KEY, "API key is not active"),
        ("lapsed API key", LAPSED_KEY, "API key expired"),
        ("near-miss API key", NEAR_MISS_KEY, "unknown API key"),
    ]
    .into_iter()
    .enumerate()
    {
        let client = format!("198.51.100.{}", 40 + i);
        let r = w.get(
            &format!("bad-key-{i}"),
            "/keys/a",
            Cred::ApiKey(key),
            &client,
        );
        w.expect(
            &format!("{label} on an api_key-only route"),
            invalid_token_because(&r, reason),
        );
        let r = w.get(
            &format!("bad-key-mixed-{i}"),
            "/api/a",
            Cred::ApiKey(key),
            &client,
        );
        if key == NEAR_MISS_KEY {
            // Not a configured key: tried as an agent token, which the service does not know.
            w.expect(
                &format!("{label} on a mixed route: the service refuses it as an agent token"),
                error_reply(&r, 403, "forbidden").map(|_| ()),
            );
        } else {
            w.expect(
                &format!(
                    "{label} on a mixed route (README: a configured key is not tried as an \
                     agent token; an inactive/expired key gets 401 invalid_token)"
                ),
                invalid_token_because(&r, reason),
            );
        }
    }
    let r = w.get(
        "key-only-valid",
        "/keys/a",
        Cred::ApiKey(CI_KEY),
        good_client,
    );
    w.expect(
        "valid API key on an api_key-only route",
        expect::allowed(&r),
    );
    for (i, (label, token)) in [
        ("unknown agent token", UNKNOWN_AGENT_TOKEN),
        ("tampered agent token", agent_tampered.as_str()),
        ("revoked agent token", agent_revoked.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        let client = format!("198.51.100.{}", 60 + i);
        let r = w.get(
            &format!("bad-agent-{i}"),
            "/api/a",
            Cred::Bearer(token),
            &client,
        );
        w.expect(label, error_reply(&r, 403, "forbidden").map(|_| ()));
        let r = w.chat(&format!("bad-agent-chat-{i}"), Cred::ApiKey(token), &client);
        w.expect(&format!("{label} (chat, x-api-key)"), refused(&r));
    }

    // Expired sessions: JWTs past exp, and an agent token whose session the service ended.
    for (label, token) in [
        ("expired RS256 JWT", &rs_expired),
        ("expired HS256 JWT", &hs_expired),
    ] {
        let r = w.get(
            &format!("{label} api"),
            "/api/a",
            Cred::Bearer(token),
            good_client,
        );
        w.expect(
            &format!("{label}: api reply"),
            expect::session_expired_api(&r),
        );
        let r = w.chat(&format!("{label} chat"), Cred::Bearer(token), good_client);
        w.expect(
            &format!("{label}: openai reply"),
            openai_session_expired(&r),
        );
    }
    let r = w.get(
        "agent-lapsed-api",
        "/api/a",
        Cred::Bearer(&agent_lapsed),
        good_client,
    );
    w.expect(
        "lapsed agent session: api reply",
        expect::session_expired_api(&r),
    );
    let r = w.chat(
        "agent-lapsed-chat",
        Cred::ApiKey(&agent_lapsed),
        good_client,
    );
    w.expect(
        "lapsed agent session: openai reply",
        openai_session_expired(&r),
    );

    // A guesser from one address: refusals, then 429 even for a valid key.
    let guesser = "192.0.2.99";
    let mut blocked = None;
    let guesses = [
        Cred::ApiKey(RETIRED_KEY),
        Cred::Bearer(&bad_jwts[0].1),
        Cred::ApiKey(LAPSED_KEY),
        Cred::Bearer(&bad_jwts[4].1),
        Cred::ApiKey(RETIRED_KEY),
        Cred::Bearer(&bad_jwts[5].1),
    ];
    for (i, cred) in guesses.into_iter().enumerate() {
        let r = w.get(&format!("guess-{i}"), "/api/a", cred, guesser);
        if r.status == 429 {
            blocked = Some(r);
            break;
        }
    }
    w.expect(
        "the guesser is blocked",
        match &blocked {
            Some(r) => error_reply(r, 429, "rate_limited").map(|_| ()),
            None => Err("no 429 after six failed guesses".into()),
        },
    );
    let r = w.get("guesser-valid-key", "/api/a", Cred::ApiKey(CI_KEY), guesser);
    w.expect(
        "blocked: even a valid key gets 429",
        error_reply(&r, 429, "rate_limited").map(|_| ()),
    );
    let r = w.chat("guesser-agent", Cred::Bearer(&agent), guesser);
    w.expect(
        "blocked: an agent token too",
        error_reply(&r, 429, "rate_limited").map(|_| ()),
    );

    // No credential, a public route, and the valid ones once more after everything else.
    let r = w.get("no-credential", "/api/a", Cred::None, good_client);
    w.expect(
        "no credential",
        error_reply(&r, 401, "unauthenticated").map(|_| ()),
    );
    let r = w.get("public", "/public", Cred::None, good_client);
    w.expect("public route", expect::allowed(&r));
    let r = w.get(
        "rs-valid-last",
        "/api/a",
        Cred::Bearer(&rs_valid),
        good_client,
    );
    w.expect("valid RS256 JWT at the end", expect::allowed(&r));
    // From a fresh address: failures of the good client above count until max_s (a success
    // lowers nothing).
    let r = w.get(
        "agent-last",
        "/api/a",
        Cred::Bearer(&agent),
        "198.51.100.99",
    );
    w.expect("agent token at the end", expect::allowed(&r));

    let Workload {
        replies,
        mut checks,
        ..
    } = w;

    // The audit.
    let log = gw.envoy.log();
    let debug_lines = log
        .lines()
        .filter(|l| l.contains("wasm log authgate") && l.contains("][debug]["))
        .count();
    checks.check(
        "the log holds the filter's debug decision lines",
        if debug_lines >= replies.len() / 2 {
            Ok(())
        } else {
            Err(format!(
                "{debug_lines} debug lines for {} requests",
                replies.len()
            ))
        },
    );
    audit(&mut checks, "envoy log", &log, &secrets);
    let requests = service.requests();
    let service_text: String = requests
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    audit(
        &mut checks,
        "authz service requests",
        &service_text,
        &secrets,
    );
    for (label, reply) in &replies {
        audit(
            &mut checks,
            &format!("reply to {label}"),
            &reply_text(reply),
            &secrets,
        );
    }

    // Not vacuous: fingerprints in the log, hashes at the service.
    for (label, secret) in [
        ("valid RS256 JWT", rs_valid.as_str()),
        ("valid HS256 JWT", hs_valid.as_str()),
        ("RS256 corrupted signature", bad_jwts[0].1.as_str()),
        ("expired RS256 JWT", rs_expired.as_str()),
        ("API key", CI_KEY),
        ("retired API key", RETIRED_KEY),
        ("agent token", agent.as_str()),
        ("lapsed agent token", agent_lapsed.as_str()),
    ] {
        let fp = fingerprint(secret);
        checks.check(
            &format!("the log names the {label} by its fingerprint {fp}"),
            if log.contains(&fp) {
                Ok(())
            } else {
                Err(format!("no {fp} in the log"))
            },
        );
    }
    let hashes: Vec<String> = requests
        .iter()
        .filter_map(|r| r["subject"]["token_sha256"].as_str().map(str::to_string))
        .collect();
    for (label, sha) in [
        ("agent token", agent_sha.clone()),
        ("lapsed agent token", agent_lapsed_sha.clone()),
        ("revoked agent token", agent_revoked_sha.clone()),
        // A JWT is known to the service by its signing input (`header.payload`).
        ("valid RS256 JWT", sha256_hex(signing_input(&rs_valid))),
        ("valid HS256 JWT", sha256_hex(signing_input(&hs_valid))),
        ("API key", sha256_hex(CI_KEY)),
    ] {
        checks.check(
            &format!("the service received the {label}'s token_sha256"),
            if hashes.contains(&sha) {
                Ok(())
            } else {
                Err(format!("{sha} not among {} hashes received", hashes.len()))
            },
        );
    }
    eprintln!(
        "secrets audit: {} requests, {} secrets, {} log lines ({debug_lines} filter debug), \
         {} authz requests, {} distinct token_sha256",
        replies.len(),
        secrets.items.len(),
        log.lines().count(),
        requests.len(),
        {
            let mut distinct = hashes.clone();
            distinct.sort();
            distinct.dedup();
            distinct.len()
        }
    );
    checks.finish();
}
