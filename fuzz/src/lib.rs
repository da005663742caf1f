//! The checks behind authgate's fuzz targets. Each `fuzz_targets/*.rs` is a one-line wrapper
//! around a function here, so the same checks replay the committed corpus and regressions under
//! plain `cargo test` (tests/replay.rs) without libFuzzer or nightly.
//!
//! A check panics when it finds a bug: either the code under test panicked, or a property that
//! must hold for every input did not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../wasm-tests/tests/fixtures/mod.rs"]
pub mod fixtures;

pub mod decide;
pub mod support;

// The names the filter never lets the service set: its own list.
use authgate::core::authz::{Answer, AuthzError};
use authgate::core::config::{Config, Plugin};
use authgate::core::jwt;
use authgate::core::jwt::jwks::KeySet;
use authgate::core::replies::llm::{LlmReply, Shape};
use authgate::core::replies::Reply;
use serde_json::Value;

use crate::support::{enterprises, jwt_config, SIGNED_BY_JWKS, VALID_TOKENS};

/// 2030-01-01 in seconds: inside every fixture token's validity.
pub const NOW_S: i64 = 1_893_456_000;

/// Target `jwt_inspect`: the untrusted-token parser on arbitrary text.
pub fn check_jwt_inspect(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    match jwt::inspect(token) {
        Ok(inspected) => {
            assert!(
                token.len() <= jwt::MAX_TOKEN_BYTES,
                "oversized token inspected"
            );
            assert_eq!(
                token.bytes().filter(|b| *b == b'.').count(),
                2,
                "a token without exactly two dots was inspected"
            );
            let _ = inspected.kid();
            let _ = inspected.claimed_issuer();
        }
        Err(error) => {
            // Display is what clients see (in WWW-Authenticate too): text, one line.
            let text = error.to_string();
            assert!(
                !text.is_empty() && !text.chars().any(char::is_control),
                "{text:?}"
            );
        }
    }
}

/// Target `jwt_verify`: inspect, then verify against the fixture JWKS (RS256, ES256, EdDSA and
/// HS256 keys) at three instants. Only tokens the fixture really signed may ever verify.
pub fn check_jwt_verify(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if jwt::inspect(token).is_err() {
        return;
    }
    let (config, keys) = jwt_config();
    let provider = &config.providers[0];
    // Before the fixtures' iat, inside their validity, after their exp.
    for now_s in [946_684_800, NOW_S, 4_102_444_800 + 86_400] {
        let result =
            jwt::inspect(token).and_then(|inspected| jwt::verify(inspected, provider, keys, now_s));
        if now_s == NOW_S && VALID_TOKENS.contains(&token) {
            assert!(
                result.is_ok(),
                "a valid fixture token was refused: {result:?}"
            );
        }
        if let Ok(verified) = result {
            assert!(
                SIGNED_BY_JWKS.contains(&token),
                "a token that is none of the fixtures' valid tokens verified (now {now_s}): {token:?}"
            );
            assert_eq!(
                verified.claims.get("iss").and_then(Value::as_str),
                Some(provider.issuer.as_str())
            );
        }
    }
}

/// Target `config_parse`: `Config::parse` and `Plugin::parse` on arbitrary bytes. They must agree,
/// and a configuration that parses must be usable: a few fixed requests are decided with it.
pub fn check_config_parse(data: &[u8]) {
    let config = Config::parse(data);
    let plugin = Plugin::parse(data);
    match (&config, &plugin) {
        (Ok(_), Ok(Plugin::Gate(_))) | (Err(_), Ok(Plugin::BodyHold)) | (Err(_), Err(_)) => {}
        (Ok(_), _) => panic!("Config::parse accepted what Plugin::parse did not: {plugin:?}"),
        (Err(e), Ok(Plugin::Gate(_))) => {
            panic!("Plugin::parse accepted a gate Config::parse refused: {e}")
        }
    }
    match config {
        Ok(config) => decide::smoke_config(&config),
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// Target `jwks_parse`: `KeySet::parse` on arbitrary bytes; a key set that parses is then used to
/// verify every fixture token (odd RSA moduli and exponents reach the Montgomery fast path).
pub fn check_jwks_parse(data: &[u8]) {
    let Ok(keys) = KeySet::parse(data) else {
        return;
    };
    assert_eq!(keys.is_empty(), keys.keys.is_empty());
    for key in &keys.keys {
        assert!(!key.algs.is_empty(), "a key that allows no algorithm");
        if let Some(kid) = &key.kid {
            assert!(keys.has_kid(kid));
            assert!(keys.has_kid(kid));
        }
    }
    let (config, _) = jwt_config();
    let provider = &config.providers[0];
    for token in support::all_fixture_tokens() {
        if let Ok(inspected) = jwt::inspect(token) {
            let _ = jwt::verify(inspected, provider, &keys, NOW_S);
        }
    }
}

/// Target `authz_answer`: `Enterprise::read_answer` in both dialects. The first two bytes pick the
/// status, the rest is the body (and once, no body: "too large").
pub fn check_authz_answer(data: &[u8]) {
    let (status, body) = match data {
        [a, b, rest @ ..] => {
            let status = match a % 8 {
                0..=4 => 200,
                5 => 504,
                6 => 403,
                _ => u16::from_le_bytes([*b, a >> 3]),
            };
            (status, rest)
        }
        _ => (200, data),
    };
    let (authgate, openfga) = enterprises();
    let a = authgate.read_answer(status, Some(body));
    let f = openfga.read_answer(status, Some(body));
    if status != 200 {
        let expected = if status == 504 && body == b"upstream request timeout" {
            AuthzError::Timeout
        } else if matches!(status, 0 | 408 | 429 | 500..=599) {
            AuthzError::Status(status)
        } else {
            AuthzError::Refused(status)
        };
        assert_eq!(a, Err(expected));
        assert_eq!(f, Err(expected));
    } else if serde_json::from_slice::<Value>(body).is_err() {
        assert_eq!(a, Err(AuthzError::BadJson));
        assert_eq!(f, Err(AuthzError::BadJson));
    }
    if let Ok(answer) = &a {
        check_answer(answer, &authgate.upstream_headers);
    }
    if let Ok(answer) = &f {
        check_answer(answer, &[]);
        if let Answer::Allow { headers, ttl_s, .. } = answer {
            assert!(
                headers.is_empty() && ttl_s.is_none(),
                "openfga cannot set headers or a TTL"
            );
        }
    }
    assert_eq!(
        authgate.read_answer(status, None),
        Err(AuthzError::TooLarge)
    );
    assert_eq!(openfga.read_answer(status, None), Err(AuthzError::TooLarge));
}

/// What an answer may carry to the upstream request and to clients.
fn check_answer(answer: &Answer, allowed: &[String]) {
    match answer {
        Answer::Allow { headers, .. } => {
            assert!(headers.len() <= 32, "more than 32 headers from the service");
            for (name, value) in headers {
                assert!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
                    "bad header name {name:?}"
                );
                assert!(
                    allowed.contains(name),
                    "header {name:?} not in upstream_headers passed"
                );
                assert!(value.len() <= 4096);
                assert!(
                    !value.chars().any(char::is_control),
                    "control character in {name}: {value:?}"
                );
            }
        }
        Answer::Deny { reason } => {
            assert!(!reason.is_empty());
            assert!(reason.chars().count() <= 256);
            assert!(
                !reason.chars().any(char::is_control),
                "control character in reason {reason:?}"
            );
        }
        Answer::SessionExpired { reauth_url } => {
            if let Some(url) = reauth_url {
                assert!(url.starts_with("https://") || url.starts_with("http://"));
                assert!(
                    !url.chars().any(|c| c.is_control() || c == ' ' || c == '"'),
                    "{url:?}"
                );
            }
        }
    }
}

/// Text with everything that could break out of a JSON string or an SSE line.
pub const HOSTILE_TEXT: &str =
    "Session expired \"quoted\" \\ back\nslash\r\n\ndata: [DONE]\n\nevent: x\u{2028}\u{0}é 🔑 {reauth_url}";

/// Target `llm_reply`: the incremental body scan, and `LlmReply::build` for every shape. The
/// first byte picks a chunk size, reauth URL and request id; the rest is the request body. The
/// scan gives the same answer whatever the chunking, and serde_json's wherever serde_json reads
/// the body (and no wanted key repeats: the scan keeps the first, serde the last). The reply
/// must be well formed: a JSON body, or SSE whose every `data:` line (except `[DONE]`) is JSON.
pub fn check_llm_reply(data: &[u8]) {
    use authgate::core::replies::body_scan::{scan, BodyFacts, BodyScan};
    let (flags, body) = match data {
        [flags, rest @ ..] => (*flags, rest),
        [] => (0, data),
    };
    let facts = scan(body);
    let mut chunked = BodyScan::new();
    for chunk in body.chunks(usize::from(flags >> 3) + 1) {
        chunked.feed(chunk);
    }
    assert_eq!(chunked.finish(), facts, "the chunking changed the answer");
    let repeats = |key: &[u8]| body.windows(key.len()).filter(|w| *w == key).count() > 1;
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        if !repeats(b"\"model\"") && !repeats(b"\"stream") && !body.contains(&b'\\') {
            let by_serde = BodyFacts::Json {
                model: map.get("model").and_then(Value::as_str).map(str::to_string),
                stream: map.get("stream").and_then(Value::as_bool),
                include_usage: map
                    .get("stream_options")
                    .and_then(|v| v.get("include_usage"))
                    .and_then(Value::as_bool)
                    == Some(true),
            };
            // A model name past the scan's bound reads as none.
            if !matches!(&by_serde, BodyFacts::Json { model: Some(m), .. } if m.len() > 1000) {
                assert_eq!(facts, by_serde, "{:?}", String::from_utf8_lossy(body));
            }
        }
    }
    for shape in [
        Shape::OpenAiChat,
        Shape::OpenAiCompletions,
        Shape::OpenAiResponses,
        Shape::AnthropicMessages,
    ] {
        let reply = LlmReply {
            shape,
            status: 200,
            text: HOSTILE_TEXT.to_string(),
            reauth_url: (flags & 2 != 0).then(|| "https://sso.example.com/re?c=1".to_string()),
            request_id: (flags & 4 != 0).then(|| "rid-\"1\"".to_string()),
            now_s: NOW_S,
            remove: Vec::new(),
        };
        check_llm_output(shape, &reply.build(&facts), &reply.text);
        if flags & 1 != 0 {
            check_llm_output(shape, &reply.build(&BodyFacts::Unread), &reply.text);
        }
    }
}

/// The well-formedness property of an LLM-shaped reply (also used by the `decide` target).
pub fn check_llm_output(shape: Shape, out: &Reply, text: &str) {
    let content_type = out
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_str());
    match content_type {
        Some("application/json") => {
            let value: Value = serde_json::from_str(&out.body)
                .unwrap_or_else(|e| panic!("{shape:?}: body is not JSON ({e}): {:?}", out.body));
            assert!(value.is_object(), "{shape:?}: body is not a JSON object");
            let encoded = serde_json::to_string(text).unwrap();
            assert!(
                out.body.contains(encoded.trim_matches('"')),
                "{shape:?}: the message is missing"
            );
        }
        Some("text/event-stream") => {
            assert!(
                out.body.ends_with("\n\n"),
                "{shape:?}: stream does not end an event"
            );
            let mut data_lines = 0;
            let mut done = false;
            for event in out.body.trim_end_matches('\n').split("\n\n") {
                assert!(!done, "{shape:?}: events after data: [DONE]");
                let mut has_data = false;
                for line in event.split('\n') {
                    if let Some(kind) = line.strip_prefix("event: ") {
                        assert!(
                            !has_data && !kind.is_empty(),
                            "{shape:?}: bad event line {line:?}"
                        );
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        assert!(!has_data, "{shape:?}: two data lines in one event");
                        has_data = true;
                        if data == "[DONE]" {
                            done = true;
                            continue;
                        }
                        let value: Value = serde_json::from_str(data).unwrap_or_else(|e| {
                            panic!("{shape:?}: data line is not JSON ({e}): {data:?}")
                        });
                        assert!(value.is_object(), "{shape:?}: data is not a JSON object");
                        data_lines += 1;
                    } else {
                        panic!("{shape:?}: stray line in the stream: {line:?}");
                    }
                }
                assert!(has_data, "{shape:?}: an event without data: {event:?}");
            }
            assert!(data_lines > 0);
            let openai = matches!(shape, Shape::OpenAiChat | Shape::OpenAiCompletions);
            assert_eq!(done, openai, "{shape:?}: [DONE] terminator");
        }
        other => panic!("{shape:?}: unexpected content-type {other:?}"),
    }
    for (name, value) in &out.headers {
        assert!(
            !value.contains(['\r', '\n', '\0']),
            "reply header {name} breaks the header block"
        );
    }
}

/// Target `rsa_modpow` (beyond the brief's list): the hand-written Montgomery exponentiation
/// behind every RS*/PS* verification, against `rsa`'s `BigUint::modpow`. Input: 8 bytes of
/// exponent (little-endian), one byte of modulus length (mod 65), the modulus, then the base.
pub fn check_rsa_modpow(data: &[u8]) {
    use authgate::core::jwt::montgomery::Modulus;
    use rsa::BigUint;
    let [e0, e1, e2, e3, e4, e5, e6, e7, len, rest @ ..] = data else {
        return;
    };
    let exponent = u64::from_le_bytes([*e0, *e1, *e2, *e3, *e4, *e5, *e6, *e7]);
    // Moduli up to 64 bytes: the carry logic is the same at any size, and small is fast.
    let len = usize::from(*len % 65).min(rest.len());
    let (n_bytes, base) = rest.split_at(len);
    let Some(modulus) = Modulus::from_be_bytes(n_bytes, exponent) else {
        // Refused only for e = 0, an even modulus, or one of 32 bits or less (64 bytes is never
        // too long).
        let n = BigUint::from_bytes_be(n_bytes);
        assert!(
            exponent == 0 || n.bits() <= 32 || n_bytes.last().is_some_and(|low| low & 1 == 0),
            "a usable modulus was refused: n={n:x} e={exponent}"
        );
        return;
    };
    let n = BigUint::from_bytes_be(n_bytes);
    assert_eq!(modulus.byte_len(), n.to_bytes_be().len());
    assert_eq!(modulus.bits(), n.bits());
    // The base, padded or cut to the modulus length; also reduced, so most inputs are below n.
    let mut base = base.to_vec();
    base.resize(modulus.byte_len(), 0);
    let b = BigUint::from_bytes_be(&base);
    for (b, base) in [(b.clone(), base.clone()), {
        let reduced = &b % &n;
        let mut bytes = reduced.to_bytes_be();
        while bytes.len() < modulus.byte_len() {
            bytes.insert(0, 0);
        }
        (reduced, bytes)
    }] {
        let got = modulus.pow_be(&base);
        if b >= n {
            assert_eq!(got, None, "pow_be accepted a base >= n");
            continue;
        }
        let got = got.expect("a base below n");
        assert_eq!(got.len(), modulus.byte_len());
        let want = b.modpow(&BigUint::from(exponent), &n);
        assert_eq!(
            BigUint::from_bytes_be(&got),
            want,
            "n={n:x} base={b:x} e={exponent}"
        );
    }
}

/// Target `header_pairs`: the host's serialized header map, as `core::header_pairs` decodes it,
/// from arbitrary bytes. Never panics; what decodes re-encodes to the same block when every name
/// and value was UTF-8 (lossy decoding only replaces, never drops or reorders).
pub fn check_header_pairs(data: &[u8]) {
    use authgate::core::header_pairs;
    let Some(pairs) = header_pairs::decode(data) else {
        return;
    };
    let strs = header_pairs::as_strs(&pairs);
    let again = header_pairs::encode(&strs);
    let all_borrowed = pairs.iter().all(|(n, v)| {
        matches!(
            (n, v),
            (std::borrow::Cow::Borrowed(_), std::borrow::Cow::Borrowed(_))
        )
    });
    if all_borrowed && !data.is_empty() {
        assert_eq!(again, data, "a UTF-8 block must re-encode to itself");
    }
    let decoded_again = header_pairs::decode(&again).expect("an encoded block decodes");
    assert_eq!(header_pairs::as_strs(&decoded_again), strs);
}

/// Target `path_normalise`: `core::policy::paths` under every option. A path it accepts
/// normalises to a fixed point (normalising the forwarded path again changes nothing, so the
/// upstream sees what the rules judged), with no empty, `.` or `..` segment left and no
/// separator a rule could be fooled by.
pub fn check_path_normalise(data: &[u8]) {
    use authgate::core::policy::paths::{normalise, Paths};
    let path = String::from_utf8_lossy(data);
    for (allow_params, allow_encoded_slash) in
        [(false, false), (true, false), (false, true), (true, true)]
    {
        let options = Paths {
            allow_params,
            allow_encoded_slash,
            ..Paths::default()
        };
        let Ok(normalised) = normalise(&path, options) else {
            continue;
        };
        let again = normalise(&normalised.forwarded, options);
        assert_eq!(
            again.as_ref(),
            Ok(&normalised),
            "not a fixed point: {path:?}"
        );
        for form in [&normalised.matched, &normalised.forwarded] {
            assert!(form.starts_with('/') && !form.contains('\\'), "{form:?}");
            let inner = form.trim_start_matches('/').trim_end_matches('/');
            assert!(
                inner.is_empty()
                    || inner
                        .split('/')
                        .all(|s| !s.is_empty() && s != "." && s != ".."),
                "{path:?} -> {form:?}"
            );
        }
        if !allow_params {
            assert!(!normalised.matched.contains(';'), "{path:?}");
        }
        if !allow_encoded_slash {
            let upper = normalised.forwarded.to_ascii_uppercase();
            assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{path:?}");
        }
    }
}
