//! Sign-in through `engine::decide`: the endpoints, the session credential, `login` rules, and
//! the configuration errors that name their field.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::core::config::Config;
use crate::core::engine::{decide, Context, Decision, Effects, State, Step};
use crate::core::login::endpoints::complete;
use crate::core::login::flow::query_param;
use crate::core::login::session::Session;
use crate::core::metrics::Recorded;
use crate::core::policy::backoff::MemoryStore;
use crate::core::replies::Reply;
use crate::core::request::{borrow_pairs, Request};

const NOW_S: i64 = 1_900_000_000;
const COOKIE_KEY: [u8; 32] = [5; 32];

fn login_section() -> Value {
    json!({"provider": "idp", "authorization_endpoint": "https://idp.test/authorize",
           "token_endpoint": "https://idp.test/token", "token_cluster": "idp",
           "end_session_endpoint": "https://idp.test/logout",
           "client_id": "authgate", "client_secret": "s3cret",
           "public_url": "https://gw.test",
           "cookie_keys": [URL_SAFE_NO_PAD.encode(COOKIE_KEY)]})
}

fn config_with(login: Value, rules: Value) -> Result<Config, String> {
    let k = URL_SAFE_NO_PAD.encode("an-hmac-secret-of-at-least-32-bytes!");
    let json = json!({
        "jwt_providers": {"idp": {"issuer": "https://idp.test", "audiences": ["api"],
            "local_jwks": {"keys": [{"kty": "oct", "kid": "k", "k": k}]},
            "subject_claims": {"roles": "groups"}}},
        "rules": rules,
        "login": login
    });
    Config::parse(json.to_string().as_bytes()).map_err(|e| e.path)
}

fn config() -> Config {
    config_with(
        login_section(),
        json!([{"match": {"prefix": "/app"}, "requires_any": ["session", "jwt:idp"],
                "login": true},
               {"match": {"prefix": "/api"}, "requires_any": ["session"]}]),
    )
    .unwrap()
}

fn run(config: &Config, state: &mut State, headers: &[(&str, &str)]) -> Decision {
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let pairs = borrow_pairs(&owned);
    let request = Request::new(&pairs).with_end_of_stream(true);
    decide(
        config,
        state,
        &request,
        Context {
            now_ms: u64::try_from(NOW_S).unwrap() * 1000,
            may_wait: false,
            log: true,
        },
        Effects {
            metrics: &mut Recorded::default(),
            shared: &mut MemoryStore::default(),
            random: &mut crate::core::random::OsRandom,
        },
    )
}

fn reply(step: &Step) -> &Reply {
    match step {
        Step::Respond(reply) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn session_cookie(config: &Config, exp: i64) -> String {
    let login = config.login.as_ref().unwrap();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), json!("alice"));
    claims.insert("email".into(), json!("alice@example.com"));
    claims.insert("groups".into(), json!(["dev"]));
    Session {
        sub: "alice".into(),
        iss: "https://idp.test".into(),
        exp,
        sid: "00".repeat(16),
        claims,
    }
    .seal(login, [1; 12])
    .unwrap()
}

#[test]
fn login_path_redirects_to_the_idp_with_pkce_and_a_sealed_attempt_per_tab() {
    let config = config();
    let mut state = State::new(&config);
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", "/auth/login?rd=%2Fapp%2Fhome"),
            (":authority", "gw.test"),
        ],
    )
    .step;
    let first = reply(&step);
    assert_eq!(first.status, 302);
    let location = header(first, "location")[0];
    let (base, query) = location.split_once('?').unwrap();
    assert_eq!(base, "https://idp.test/authorize");
    for (name, want) in [
        ("response_type", "code"),
        ("client_id", "authgate"),
        ("redirect_uri", "https://gw.test/auth/callback"),
        ("scope", "openid email profile"),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(query_param(query, name).as_deref(), Some(want), "{name}");
    }
    let cookie = header(first, "set-cookie")[0];
    assert!(cookie.starts_with("__Host-authgate_a_"), "{cookie}");
    for attribute in [
        "Max-Age=600",
        "Path=/",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let second = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", "/auth/login"),
            (":authority", "gw.test"),
        ],
    )
    .step;
    let second_cookie = header(reply(&second), "set-cookie")[0];
    assert_ne!(
        cookie.split('=').next(),
        second_cookie.split('=').next(),
        "another tab gets its own attempt cookie"
    );

    // The callback with that cookie asks for the token exchange; without it, or with another
    // state, it is refused before any call.
    let state_value = query_param(query, "state").unwrap();
    let cookie_pair = cookie.split(';').next().unwrap();
    let path = format!("/auth/callback?code=c0de&state={state_value}");
    let exchange = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", &path),
            (":authority", "gw.test"),
            ("cookie", cookie_pair),
        ],
    )
    .step;
    let Step::SignIn(exchange) = exchange else {
        panic!("expected the code exchange, got {exchange:?}")
    };
    let form = String::from_utf8(exchange.body.clone()).unwrap();
    assert!(
        form.contains("grant_type=authorization_code&code=c0de"),
        "{form}"
    );
    assert!(form.contains(&format!(
        "code_verifier={}",
        exchange.pending.attempt.verifier
    )));
    assert!(exchange
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Basic ")));
    assert_eq!(exchange.pending.attempt.rd, "/app/home");
    for (label, headers) in [
        (
            "no cookie",
            vec![
                (":method", "GET"),
                (":path", path.as_str()),
                (":authority", "gw.test"),
            ],
        ),
        (
            "another state",
            vec![
                (":method", "GET"),
                (":path", "/auth/callback?code=c0de&state=forged"),
                (":authority", "gw.test"),
                ("cookie", cookie_pair),
            ],
        ),
    ] {
        let step = run(&config, &mut state, &headers).step;
        assert_eq!(reply(&step).status, 400, "{label}");
    }

    // An IdP that is down, refuses the code, or answers garbage: a clear status, the attempt
    // cookie cleared, no session.
    let login = config.login.as_ref().unwrap();
    let provider = &config.providers[0];
    for ((status, body), want) in [
        ((0, None), 503),
        ((400, Some(&br#"{"error":"invalid_grant"}"#[..])), 400),
        ((500, Some(&b"oops"[..])), 502),
        ((200, Some(&b"not json"[..])), 502),
        ((200, Some(&br#"{"access_token":"x"}"#[..])), 502),
    ] {
        let out = complete(
            login,
            provider,
            None,
            &exchange.pending,
            (status, body),
            NOW_S,
            &mut crate::core::random::OsRandom,
        );
        assert_eq!(out.status, want, "{status}");
        let cookies = header(&out, "set-cookie");
        assert!(
            cookies.len() == 1 && cookies[0].contains("Max-Age=0"),
            "{cookies:?}"
        );
    }

    // A good answer: the session cookie, and back to where the user was going.
    let crate::core::jwt::provider::JwksSource::Local(keys) = &provider.jwks else {
        panic!("local keys")
    };
    let claims = json!({"iss": "https://idp.test", "aud": "authgate", "sub": "alice",
                        "email": "alice@example.com", "email_verified": true,
                        "groups": ["dev"], "nonce": exchange.pending.attempt.nonce,
                        "iat": NOW_S, "exp": NOW_S + 300});
    let body = json!({"id_token": hs256(&claims), "access_token": "unused"}).to_string();
    let out = complete(
        login,
        provider,
        Some(keys),
        &exchange.pending,
        (200, Some(body.as_bytes())),
        NOW_S,
        &mut crate::core::random::OsRandom,
    );
    assert_eq!(
        (out.status, header(&out, "location")),
        (302, vec!["/app/home"])
    );
    let cookies = header(&out, "set-cookie");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-authgate_session="))
        .unwrap();
    assert!(session.contains("Max-Age=28800") && session.contains("HttpOnly"));
    let jar = session.split(';').next().unwrap();
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", "/api/x"),
            (":authority", "gw.test"),
            ("cookie", jar),
        ],
    )
    .step;
    assert!(matches!(step, Step::Continue { .. }), "{step:?}");
    // The wrong nonce (another attempt's token) makes no session.
    let mut other = claims.clone();
    other["nonce"] = json!("another");
    let body = json!({"id_token": hs256(&other)}).to_string();
    let out = complete(
        login,
        provider,
        Some(keys),
        &exchange.pending,
        (200, Some(body.as_bytes())),
        NOW_S,
        &mut crate::core::random::OsRandom,
    );
    assert_eq!(out.status, 502);
    assert!(!header(&out, "set-cookie")
        .iter()
        .any(|c| c.starts_with("__Host-authgate_session=")));
}

fn hs256(claims: &Value) -> String {
    use jwt_compact::alg::{Hs256, Hs256Key};
    use jwt_compact::{Algorithm, AlgorithmSignature};
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        part(&json!({"alg": "HS256", "kid": "k"})),
        part(claims)
    );
    let key = Hs256Key::new("an-hmac-secret-of-at-least-32-bytes!");
    let signature = Hs256.sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
}

#[test]
fn a_session_cookie_is_a_credential_that_never_goes_upstream() {
    let config = config();
    let mut state = State::new(&config);
    let cookie = format!(
        "theme=dark; __Host-authgate_session={}; __Host-authgate_a_0011aabb=x",
        session_cookie(&config, NOW_S + 3600)
    );
    for round in 0..2 {
        let step = run(
            &config,
            &mut state,
            &[
                (":method", "GET"),
                (":path", "/api/x"),
                (":authority", "gw.test"),
                ("cookie", &cookie),
            ],
        )
        .step;
        let Step::Continue { add, rewrite, .. } = &step else {
            panic!("round {round}: {step:?}")
        };
        let has = |name: &str, value: &str| add.iter().any(|(n, v)| n == name && v == value);
        assert!(has("x-auth-credential", "session") && has("x-auth-subject", "alice"));
        assert!(has("x-auth-roles", "dev"), "{add:?}");
        assert_eq!(rewrite.cookie.as_deref(), Some("theme=dark"));
    }
    // A state-changing request from another site carries the cookie too: refused.
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "POST"),
            (":path", "/api/x"),
            (":authority", "gw.test"),
            ("cookie", &cookie),
            ("origin", "https://evil.test"),
        ],
    )
    .step;
    assert_eq!(reply(&step).status, 403);
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "POST"),
            (":path", "/api/x"),
            (":authority", "gw.test"),
            ("cookie", &cookie),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .step;
    assert!(matches!(step, Step::Continue { .. }), "{step:?}");
}

#[test]
fn without_a_usable_session_browsers_are_sent_to_sign_in_and_apis_told_where() {
    let config = config();
    let mut state = State::new(&config);
    let page = [
        (":method", "GET"),
        (":path", "/app/home?x=1"),
        (":authority", "gw.test"),
        ("accept", "text/html,application/xhtml+xml"),
    ];
    let step = run(&config, &mut state, &page).step;
    let out = reply(&step);
    assert_eq!(out.status, 302);
    assert_eq!(
        header(out, "location"),
        ["/auth/login?rd=%2Fapp%2Fhome%3Fx%3D1"]
    );

    let api = [
        (":method", "GET"),
        (":path", "/app/data"),
        (":authority", "gw.test"),
        ("accept", "application/json"),
    ];
    let step = run(&config, &mut state, &api).step;
    let out = reply(&step);
    let body: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(out.status, 401);
    assert_eq!(
        body["login_url"],
        "https://gw.test/auth/login?rd=%2Fapp%2Fdata"
    );

    // An expired or tampered session counts as none, and is cleared.
    for cookie in [
        session_cookie(&config, NOW_S - 1),
        format!("{}x", session_cookie(&config, NOW_S + 3600)),
    ] {
        let jar = format!("__Host-authgate_session={cookie}");
        let mut headers = page.to_vec();
        headers.push(("cookie", &jar));
        let step = run(&config, &mut state, &headers).step;
        let out = reply(&step);
        assert_eq!(out.status, 302);
        assert!(header(out, "set-cookie")[0].contains("Max-Age=0"));
    }
}

#[test]
fn logout_is_a_same_origin_post() {
    let config = config();
    let mut state = State::new(&config);
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "POST"),
            (":path", "/auth/logout"),
            (":authority", "gw.test"),
            ("origin", "https://gw.test"),
        ],
    )
    .step;
    let out = reply(&step);
    assert_eq!(out.status, 302);
    assert!(header(out, "location")[0].starts_with("https://idp.test/logout?client_id=authgate"));
    assert!(header(out, "set-cookie")[0].starts_with("__Host-authgate_session=; Max-Age=0"));
    for headers in [
        vec![
            (":method", "POST"),
            (":path", "/auth/logout"),
            (":authority", "gw.test"),
            ("origin", "https://evil.test"),
        ],
        vec![
            (":method", "POST"),
            (":path", "/auth/logout"),
            (":authority", "gw.test"),
        ],
        vec![
            (":method", "GET"),
            (":path", "/auth/logout"),
            (":authority", "gw.test"),
            ("origin", "https://gw.test"),
        ],
    ] {
        let step = run(&config, &mut state, &headers).step;
        assert!(reply(&step).status >= 400, "{headers:?}");
    }
}

#[test]
fn login_configuration_errors_name_the_field() {
    let rules = json!([{"match": {"prefix": "/"}, "requires_any": ["session"], "login": true}]);
    let with = |field: &str, value: Value| {
        let mut login = login_section();
        login[field] = value;
        config_with(login, rules.clone()).err()
    };
    assert_eq!(config_with(login_section(), rules.clone()).err(), None);
    assert_eq!(
        with("provider", json!("nope")).as_deref(),
        Some("login.provider")
    );
    assert_eq!(
        with("public_url", json!("https://gw.test/app")).as_deref(),
        Some("login.public_url")
    );
    assert_eq!(
        with("cookie_keys", json!(["c2hvcnQ"])).as_deref(),
        Some("login.cookie_keys[0]")
    );
    assert_eq!(
        with("cookie_keys", json!([])).as_deref(),
        Some("login.cookie_keys")
    );
    assert_eq!(
        with("cookie", json!({"same_site": "none"})).as_deref(),
        Some("login.cookie.same_site")
    );
    assert_eq!(
        with("scopes", json!(["email"])).as_deref(),
        Some("login.scopes")
    );
    assert_eq!(
        with("login_path", json!("/auth/callback")).as_deref(),
        Some("login.callback_path")
    );
    assert_eq!(
        config_with(
            login_section(),
            json!([{"match": {"prefix": "/"}, "requires_any": ["jwt:idp"], "login": true}])
        )
        .err()
        .as_deref(),
        Some("rules[0].login")
    );
    let on_host = |hosts: Value, cookie: Value| {
        let mut login = login_section();
        login["cookie"] = cookie;
        config_with(
            login,
            json!([{"match": {"prefix": "/", "hosts": hosts}, "requires_any": ["session"], "login": true}]),
        )
        .err()
    };
    assert_eq!(on_host(json!(["gw.test"]), json!({})), None);
    assert_eq!(
        on_host(json!(["app.other.test"]), json!({})).as_deref(),
        Some("rules[0].match.hosts[0]"),
        "the host-only session cookie never reaches another host"
    );
    assert_eq!(
        on_host(json!(["*.corp.test"]), json!({"domain": "corp.test"})),
        None,
        "a cookie domain that covers them"
    );
    let no_login = json!({"jwt_providers": {}, "rules": [{"match": {"prefix": "/"}, "requires_any": ["session"]}]});
    assert_eq!(
        Config::parse(no_login.to_string().as_bytes())
            .err()
            .map(|e| e.path)
            .as_deref(),
        Some("rules[0].requires_any[0]")
    );
}

fn reauth_config() -> Config {
    let k = URL_SAFE_NO_PAD.encode("an-hmac-secret-of-at-least-32-bytes!");
    let json = json!({
        "jwt_providers": {"idp": {"issuer": "https://idp.test",
            "local_jwks": {"keys": [{"kty": "oct", "kid": "k", "k": k}]}}},
        "opaque_tokens": "enterprise",
        "client_ip": {"from": "x-forwarded-for", "trusted_hops": 0},
        "rules": [{"match": {"prefix": "/v1/"}, "requires_any": ["opaque_token"],
                   "enterprise": true, "session_reply": "openai"}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal",
                       "gateway_key": "gateway-key-0123456789"},
        "login": login_section()
    });
    Config::parse(json.to_string().as_bytes()).unwrap()
}

#[test]
fn an_expired_agent_session_is_renewed_only_after_its_owner_signs_in_and_confirms() {
    use crate::core::engine::{complete_authz, resolve};
    let config = reauth_config();
    let mut state = State::new(&config);
    let agent = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw.test"),
        ("authorization", "Bearer agent-token-1"),
        ("user-agent", "claude-cli/2.1"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    let Step::CallAuthz(call) = run(&config, &mut state, &agent).step else {
        panic!("expected an authorization call")
    };
    let answer = br#"{"authorized": false, "session": {"status": "expired",
                      "reauth_url": "http://service.test/reauth?code=opens-without-sign-in"}}"#;
    let now_ms = u64::try_from(NOW_S).unwrap() * 1000;
    let resolution = complete_authz(
        &config,
        &mut state,
        &call.key,
        &call.pending,
        (200, Some(&answer[..])),
        now_ms,
        &mut Recorded::default(),
    );
    let decision = resolve(
        &config,
        &call.pending,
        &resolution,
        now_ms,
        Effects {
            metrics: &mut Recorded::default(),
            shared: &mut MemoryStore::default(),
            random: &mut crate::core::random::OsRandom,
        },
    );
    let Step::SessionReply(llm) = decision.step else {
        panic!("{:?}", decision.step)
    };
    let url = llm.reauth_url.clone().unwrap();
    assert!(
        url.starts_with("https://gw.test/auth/reauth?ticket="),
        "{url}"
    );
    assert!(
        llm.text.contains(&url),
        "the agent shows the gateway's link, not the service's"
    );

    // Opening the link signs in afresh; a tampered ticket does not even start.
    let link = url.trim_start_matches("https://gw.test");
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", link),
            (":authority", "gw.test"),
        ],
    )
    .step;
    let out = reply(&step);
    assert_eq!(out.status, 302, "{}", out.body);
    assert!(header(out, "location")[0].ends_with("&prompt=login"));
    let tampered = format!("{link}x");
    let step = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", &tampered),
            (":authority", "gw.test"),
        ],
    )
    .step;
    assert_eq!(reply(&step).status, 400);

    let location = header(out, "location")[0];
    let state_value = query_param(location.split_once('?').unwrap().1, "state").unwrap();
    let attempt_cookie = header(out, "set-cookie")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let callback = format!("/auth/callback?code=c&state={state_value}");
    let Step::SignIn(exchange) = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", &callback),
            (":authority", "gw.test"),
            ("cookie", &attempt_cookie),
        ],
    )
    .step
    else {
        panic!("expected the code exchange")
    };
    let login = config.login.as_ref().unwrap();
    let provider = &config.providers[0];
    let crate::core::jwt::provider::JwksSource::Local(keys) = &provider.jwks else {
        panic!()
    };
    let id_token = |auth_time: i64| {
        json!({"id_token": hs256(&json!({"iss": "https://idp.test", "aud": "authgate",
            "sub": "alice", "email": "alice@example.com", "email_verified": true,
            "nonce": exchange.pending.attempt.nonce, "iat": NOW_S, "exp": NOW_S + 300,
            "auth_time": auth_time}))})
        .to_string()
    };
    // A sign-in the IdP did not make fresh (an old auth_time) is refused.
    let stale = id_token(NOW_S - 3600);
    let out = complete(
        login,
        provider,
        Some(keys),
        &exchange.pending,
        (200, Some(stale.as_bytes())),
        NOW_S,
        &mut crate::core::random::OsRandom,
    );
    assert_eq!(out.status, 502);
    let fresh = id_token(NOW_S);
    let page = complete(
        login,
        provider,
        Some(keys),
        &exchange.pending,
        (200, Some(fresh.as_bytes())),
        NOW_S,
        &mut crate::core::random::OsRandom,
    );
    assert_eq!(page.status, 200);
    assert!(
        !header(&page, "set-cookie")
            .iter()
            .any(|c| c.starts_with("__Host-authgate_session=")),
        "a re-authentication makes no browser session"
    );
    let token_sha = hex::encode(call.pending.credential_hash);
    for shown in [
        &token_sha[..12],
        "203.0.113.9",
        "claude-cli/2.1",
        "alice@example.com",
    ] {
        assert!(
            page.body.contains(shown),
            "the page names {shown}: {}",
            page.body
        );
    }
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let confirmation = header(&page, "set-cookie")
        .into_iter()
        .find(|c| c.starts_with("__Host-authgate_r_"))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // Only the page's own POST, with its cookie and CSRF value, asks for the renewal.
    let post = |origin: &str, path: &str, cookie: &str| {
        run(
            &config,
            &mut State::new(&config),
            &[
                (":method", "POST"),
                (":path", path),
                (":authority", "gw.test"),
                ("origin", origin),
                ("cookie", cookie),
            ],
        )
        .step
    };
    assert_eq!(
        reply(&post("https://evil.test", &action, &confirmation)).status,
        403
    );
    assert_eq!(
        reply(&post("https://gw.test", &action, "other=1")).status,
        400
    );
    let forged = action.replace("csrf=", "csrf=0");
    assert_eq!(
        reply(&post("https://gw.test", &forged, &confirmation)).status,
        400
    );
    let Step::Renew(renewal) = post("https://gw.test", &action, &confirmation) else {
        panic!("expected the renewal call")
    };
    let body: Value = serde_json::from_slice(&renewal.body).unwrap();
    assert_eq!(body["token_sha256"], token_sha);
    assert_eq!(body["user_email"], "alice@example.com");
    assert_eq!(
        body["subject"],
        json!({"id": "alice", "issuer": "https://idp.test"})
    );
    assert_eq!(body["ticket_id"].as_str().map(str::len), Some(32));

    use crate::core::login::reauth::renewed;
    let (done, ok) = renewed(login, &renewal, 200, Some(br#"{"renewed": true}"#));
    assert!(ok && done.status == 200);
    let (refused, ok) = renewed(
        login,
        &renewal,
        200,
        Some(br#"{"renewed": false, "reason": "you are not this token's owner"}"#),
    );
    assert!(!ok && refused.status == 403 && refused.body.contains("not this token"));
    let (down, ok) = renewed(login, &renewal, 0, None);
    assert!(!ok && down.status == 503);
}

#[test]
fn with_same_site_strict_a_page_of_our_own_navigates_on() {
    let mut login = login_section();
    login["cookie"] = json!({"same_site": "strict"});
    let config = config_with(
        login,
        json!([{"match": {"prefix": "/app"}, "requires_any": ["session"], "login": true}]),
    )
    .unwrap();
    let mut state = State::new(&config);
    let start = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", "/auth/login?rd=%2Fapp"),
            (":authority", "gw.test"),
        ],
    )
    .step;
    let out = reply(&start);
    let location = header(out, "location")[0];
    let state_value = query_param(location.split_once('?').unwrap().1, "state").unwrap();
    let jar = header(out, "set-cookie")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let path = format!("/auth/callback?code=c&state={state_value}");
    let Step::SignIn(exchange) = run(
        &config,
        &mut state,
        &[
            (":method", "GET"),
            (":path", &path),
            (":authority", "gw.test"),
            ("cookie", &jar),
        ],
    )
    .step
    else {
        panic!("expected the exchange")
    };
    let provider = &config.providers[0];
    let crate::core::jwt::provider::JwksSource::Local(keys) = &provider.jwks else {
        panic!()
    };
    let body = json!({"id_token": hs256(&json!({"iss": "https://idp.test", "aud": "authgate",
        "sub": "alice", "email": "alice@example.com", "email_verified": true,
        "nonce": exchange.pending.attempt.nonce, "iat": NOW_S, "exp": NOW_S + 300}))})
    .to_string();
    let out = complete(
        config.login.as_ref().unwrap(),
        provider,
        Some(keys),
        &exchange.pending,
        (200, Some(body.as_bytes())),
        NOW_S,
        &mut crate::core::random::OsRandom,
    );
    assert_eq!(out.status, 200);
    assert!(out.body.contains("url=/app"), "{}", out.body);
    assert!(header(&out, "set-cookie")
        .iter()
        .any(|c| c.starts_with("__Host-authgate_session=") && c.contains("SameSite=Strict")));
}
