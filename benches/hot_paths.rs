//! Native micro-benchmarks of the core's hot paths, so a change can be judged without Envoy:
//! `cargo bench --bench hot_paths` (or `make bench-core`). Prints mean time per operation.
//! Inside Envoy the same code runs 1.5–3.5× slower (V8); compare runs of this file with each
//! other, not with the load benchmark.

// A measuring tool, not the filter: failing loudly on a broken fixture is what it should do.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../wasm-tests/tests/fixtures/mod.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::{Duration, Instant};

use authgate::core::config::Config;
use authgate::core::engine::{decide, Context, Effects, State, Step};
use authgate::core::header_pairs;
use authgate::core::jwt;
use authgate::core::jwt::jwks::KeySet;
use authgate::core::jwt::montgomery::Modulus;
use authgate::core::jwt::token_cache::TokenCache;
use authgate::core::metrics::Recorded;
use authgate::core::policy::backoff::MemoryStore;
use authgate::core::request::Request;
use serde_json::json;

/// 2030-01-01 in ms: inside every fixture token's validity.
const NOW_MS: u64 = 1_893_456_000_000;

/// `cargo bench --bench hot_paths -- WORD` measures only the operations whose name has WORD.
fn selected(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .is_none_or(|word| name.contains(&word))
}

fn measure(name: &str, mut op: impl FnMut()) {
    if !selected(name) {
        return;
    }
    // Warm up, then run for about half a second.
    for _ in 0..10 {
        op();
    }
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        op();
        runs += 1;
    }
    let per_op = started.elapsed().as_nanos() as f64 / runs as f64;
    println!("{name:<40} {:>10.2} µs/op  ({runs} runs)", per_op / 1000.0);
}

fn config() -> Config {
    let json = json!({
        "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "audiences": ["gateway"],
                                   "local_jwks": fixtures::JWKS,
                                   "claim_to_headers": [{"claim": "tenant.id", "header": "x-tenant"}]}},
        "rules": [{"match": {"path": "/health-ish"}, "public": true},
                  {"match": {"prefix": "/admin"}, "requires_any": ["jwt:corp"], "require_roles": ["admin"]},
                  {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}]
    });
    Config::parse(json.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn enterprise_config() -> Config {
    let json = json!({
        "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "audiences": ["gateway"],
                                   "local_jwks": fixtures::JWKS}},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"], "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal"}
    });
    Config::parse(json.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

/// The request headers as the host serializes them (the filter decodes them per request).
fn headers(path: &str, token: &str) -> Vec<u8> {
    header_pairs::encode(&[
        (":method", "POST"),
        (":path", path),
        (":authority", "api.example.com"),
        (":scheme", "https"),
        ("content-type", "application/json"),
        ("user-agent", "agent/1.0"),
        ("x-request-id", "8d6f1c2e-1111-2222-3333-444455556666"),
        ("authorization", &format!("Bearer {token}")),
    ])
}

fn run(config: &Config, state: &mut State, header_block: &[u8]) -> Step {
    let pairs = header_pairs::decode(header_block).unwrap();
    let headers = header_pairs::as_strs(&pairs);
    let mut metrics = Recorded::default();
    let mut shared = MemoryStore::default();
    let ctx = Context {
        now_ms: NOW_MS,
        may_wait: true,
        log: false,
    };
    let effects = Effects {
        metrics: &mut metrics,
        shared: &mut shared,
        random: &mut authgate::core::random::OsRandom,
    };
    decide(config, state, &Request::new(&headers), ctx, effects).step
}

fn main() {
    let config = config();
    let mut state = State::new(&config);
    let cached = headers("/v1/chat/completions", fixtures::TOKEN_RS256);
    assert!(matches!(
        run(&config, &mut state, &cached),
        Step::Continue { .. }
    ));
    measure("decide: cached RS256 token (hit)", || {
        black_box(run(&config, &mut state, &cached));
    });
    measure("decide: RS256 token, cache miss", || {
        state.tokens = TokenCache::new(16, 0);
        black_box(run(&config, &mut state, &cached));
    });
    let enterprise = enterprise_config();
    let mut state = State::new(&enterprise);
    let Step::CallAuthz(call) = run(&enterprise, &mut state, &cached) else {
        panic!("expected an authorization call")
    };
    let answer = br#"{"authorized": true, "headers": {"x-tenant": "acme"}}"#;
    authgate::core::engine::complete_authz(
        &enterprise,
        &mut state,
        &call.key,
        &call.pending,
        (200, Some(&answer[..])),
        NOW_MS,
        &mut Recorded::default(),
    );
    assert!(matches!(
        run(&enterprise, &mut state, &cached),
        Step::Continue { .. }
    ));
    measure("decide: enterprise, warm decision cache", || {
        black_box(run(&enterprise, &mut state, &cached));
    });
    let mut state = State::new(&config);
    run(&config, &mut state, &cached);

    let token = fixtures::TOKEN_RS256.as_bytes();
    measure(
        &format!("sha256 of the token ({} bytes)", token.len()),
        || {
            use sha2::Digest;
            black_box(sha2::Sha256::digest(black_box(token)));
        },
    );
    let public = headers("/health-ish", "");
    measure("decide: public route (rule match)", || {
        black_box(run(&config, &mut state, &public));
    });

    let keys = KeySet::parse(fixtures::JWKS.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let provider = &config.providers[0];
    for (name, token) in [
        ("RS256", fixtures::TOKEN_RS256),
        ("ES256", fixtures::TOKEN_ES256),
        ("EdDSA", fixtures::TOKEN_EDDSA),
        ("HS256", fixtures::TOKEN_HS256),
    ] {
        measure(&format!("verify {name} (uncached)"), || {
            let inspected = jwt::inspect(token).unwrap_or_else(|e| panic!("{e}"));
            let verified = jwt::verify(inspected, provider, &keys, (NOW_MS / 1000) as i64);
            black_box(verified.is_ok());
        });
    }
    measure("inspect RS256 token (parse only)", || {
        black_box(jwt::inspect(black_box(fixtures::TOKEN_RS256)).is_ok());
    });
    let (modulus, signature) = rsa_fixture();
    measure(&format!("RSA-{} s^65537 mod n", modulus.bits()), || {
        black_box(modulus.pow_be(black_box(&signature)));
    });
}

/// The RS256 fixture's modulus and signature, for the modular exponentiation alone.
fn rsa_fixture() -> (Modulus, Vec<u8>) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let jwks: serde_json::Value = serde_json::from_str(fixtures::JWKS).unwrap();
    let rsa_key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap();
    let n = URL_SAFE_NO_PAD
        .decode(rsa_key["n"].as_str().unwrap())
        .unwrap();
    let signature = URL_SAFE_NO_PAD
        .decode(fixtures::TOKEN_RS256.rsplit('.').next().unwrap())
        .unwrap();
    (Modulus::from_be_bytes(&n, 65537).unwrap(), signature)
}
