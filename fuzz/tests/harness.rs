//! The `decide` harness itself: hand-built inputs reach the outcomes the oracle reasons about,
//! and the oracle accepts the legitimate ways through (a broken oracle would make the fuzzer
//! report nonsense, or stay silent on a real bug).

use authgate_fuzz::decide::{
    check_decide, tally, AlgChoice, AudChoice, AuthzReply, DecideInput, Forged, FuzzRequest,
    HeaderExtra, HeaderName, HeaderValue, IssChoice, KeyChoice, KidChoice, McpCall, McpMethod,
    McpName, Method, PathChoice, SignatureChoice, Source, TimeChoice, Token,
};

fn request(path: PathChoice, headers: Vec<(HeaderName, HeaderValue)>) -> FuzzRequest {
    FuzzRequest {
        advance_ms: 10,
        method: Method::Post,
        path,
        query: None,
        source: Some(Source::V4([192, 0, 2, 7], 40000)),
        headers,
        authz: AuthzReply::Allow {
            headers: vec![("x-tenant".to_string(), "acme".to_string())],
            ttl_s: Some(30),
        },
        body: Some(br#"{"model": "gpt-5", "stream": true}"#.to_vec()),
        mcp: None,
    }
}

fn run(known: bool, requests: Vec<FuzzRequest>) -> Vec<(String, usize)> {
    let before = tally();
    check_decide(&DecideInput {
        known,
        start: 1_000_000_000,
        requests,
    });
    tally()
        .into_iter()
        .filter_map(|(k, n)| {
            let grown = n - before.get(&k).copied().unwrap_or(0);
            (grown > 0).then_some((k, grown))
        })
        .collect()
}

fn has(outcomes: &[(String, usize)], kind: &str) -> bool {
    outcomes.iter().any(|(k, _)| k == kind)
}

#[test]
fn known_mode_lets_valid_fixture_tokens_and_the_live_key_through() {
    let out = run(
        true,
        vec![
            request(
                PathChoice::Root,
                vec![(
                    HeaderName::Authorization,
                    HeaderValue::Bearer(Token::Fixture(0)),
                )],
            ),
            request(
                PathChoice::ChatCompletions,
                vec![(HeaderName::XApiKey, HeaderValue::ApiKey(KeyChoice::Live))],
            ),
        ],
    );
    assert!(has(&out, "known decide continue"), "{out:?}");
    assert!(
        has(&out, "known resolve continue"),
        "the live key on /v1/: {out:?}"
    );
}

#[test]
fn agent_tokens_go_to_the_service_and_its_allow_is_cached() {
    let agent = || {
        request(
            PathChoice::AnthropicMessages,
            vec![(
                HeaderName::Authorization,
                HeaderValue::Bearer(Token::Raw("agent-token-1".into())),
            )],
        )
    };
    let out = run(false, vec![agent(), agent()]);
    assert!(has(&out, "strict decide call_authz"), "{out:?}");
    assert!(has(&out, "strict resolve continue"), "{out:?}");
    assert!(
        has(&out, "strict decide continue"),
        "the cached allow: {out:?}"
    );
}

#[test]
fn a_remote_provider_waits_for_keys_once() {
    let forged = Forged {
        alg: AlgChoice::Rs256,
        kid: KidChoice::Rsa1,
        header_extra: HeaderExtra::Nothing,
        iss: IssChoice::Remote,
        aud: AudChoice::Gateway,
        exp: TimeChoice::FarFuture,
        nbf: TimeChoice::Absent,
        iat: TimeChoice::Past,
        sub: Some("mallory".into()),
        roles_and_scope: true,
        signature: SignatureChoice::FromFixture(0),
    };
    let out = run(
        false,
        vec![request(
            PathChoice::Remote,
            vec![(
                HeaderName::Authorization,
                HeaderValue::Bearer(Token::Forged(forged)),
            )],
        )],
    );
    assert!(has(&out, "strict decide wait_for_keys"), "{out:?}");
    assert!(has(&out, "strict decide respond 401"), "{out:?}");
}

#[test]
fn repeated_bad_keys_from_one_address_are_rate_limited() {
    let guess = || {
        request(
            PathChoice::ChatCompletions,
            vec![(HeaderName::XApiKey, HeaderValue::ApiKey(KeyChoice::Retired))],
        )
    };
    let out = run(false, vec![guess(), guess(), guess(), guess()]);
    assert!(has(&out, "strict decide respond 429"), "{out:?}");
}

#[test]
fn hs1_signed_tokens_are_valid_in_known_mode_only() {
    let forged = || Forged {
        alg: AlgChoice::Hs256,
        kid: KidChoice::Hs1,
        header_extra: HeaderExtra::Nothing,
        iss: IssChoice::Fixture,
        aud: AudChoice::Array,
        exp: TimeChoice::FarFuture,
        nbf: TimeChoice::Absent,
        iat: TimeChoice::Past,
        sub: Some("mallory".into()),
        roles_and_scope: true,
        signature: SignatureChoice::HmacWithHs1,
    };
    let req = |f| {
        request(
            PathChoice::Admin,
            vec![(
                HeaderName::Authorization,
                HeaderValue::Bearer(Token::Forged(f)),
            )],
        )
    };
    let out = run(true, vec![req(forged())]);
    assert!(has(&out, "known decide continue"), "{out:?}");
    let out = run(false, vec![req(forged())]);
    assert!(has(&out, "strict decide respond 401"), "{out:?}");
}

/// Every path up to 5 characters over the characters that make paths tricky (separators, dots,
/// escapes, parameters) holds the `path_normalise` oracle: an exhaustive sweep on stable Rust.
#[test]
fn path_normalise_holds_for_every_short_tricky_path() {
    const ALPHABET: &[u8] = b"/\\.%2eEfF5c;a";
    let mut checked = 0;
    for len in 0..=5u32 {
        for mut n in 0..(ALPHABET.len() as u64).pow(len) {
            let mut path = vec![b'/'];
            for _ in 0..len {
                path.push(ALPHABET[(n % ALPHABET.len() as u64) as usize]);
                n /= ALPHABET.len() as u64;
            }
            authgate_fuzz::check_path_normalise(&path);
            checked += 1;
        }
    }
    assert!(checked > 400_000, "{checked}");
}

#[test]
fn mcp_requests_are_read_then_judged_call_by_call() {
    let call = |name: Option<McpName>| McpCall {
        method: McpMethod::ToolsCall,
        name,
        response: false,
    };
    let mcp = |calls: Vec<McpCall>| FuzzRequest {
        mcp: Some(calls),
        ..request(
            PathChoice::Mcp,
            vec![(
                HeaderName::Authorization,
                HeaderValue::Bearer(Token::Fixture(0)),
            )],
        )
    };
    let read = run(true, vec![mcp(vec![call(Some(McpName::Read))])]);
    assert!(has(&read, "known decide read_body"), "{read:?}");
    assert!(has(&read, "known decide continue"), "{read:?}");
    let deploy = run(
        true,
        vec![mcp(vec![
            call(Some(McpName::Read)),
            call(Some(McpName::Deploy("prod".into()))),
        ])],
    );
    assert!(has(&deploy, "known decide respond 403"), "{deploy:?}");
    assert!(!has(&deploy, "known decide continue"), "{deploy:?}");
    let repeated = run(
        true,
        vec![mcp(vec![call(Some(McpName::Repeated("prod".into())))])],
    );
    assert!(has(&repeated, "known decide respond other"), "{repeated:?}");
}
