//! Fixed configurations and key material the targets share, built once per process.

use std::sync::OnceLock;

use authgate::core::authz::Enterprise;
use authgate::core::config::Config;
use authgate::core::jwt::jwks::KeySet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::fixtures;

/// Fixture tokens genuinely signed by a key of `fixtures::JWKS` (whatever their claims say).
/// No other token may ever pass signature verification against that key set.
pub const SIGNED_BY_JWKS: [&str; 7] = [
    fixtures::TOKEN_RS256,
    fixtures::TOKEN_ES256,
    fixtures::TOKEN_EDDSA,
    fixtures::TOKEN_HS256,
    fixtures::TOKEN_EXPIRED,
    fixtures::TOKEN_WRONG_AUD,
    fixtures::TOKEN_ES256_NO_KID,
];

/// The tokens that verify at `crate::NOW_S` for a provider with audience "gateway".
pub const VALID_TOKENS: [&str; 5] = [
    fixtures::TOKEN_RS256,
    fixtures::TOKEN_ES256,
    fixtures::TOKEN_EDDSA,
    fixtures::TOKEN_HS256,
    fixtures::TOKEN_ES256_NO_KID,
];

pub fn all_fixture_tokens() -> [&'static str; 9] {
    [
        fixtures::TOKEN_RS256,
        fixtures::TOKEN_ES256,
        fixtures::TOKEN_EDDSA,
        fixtures::TOKEN_HS256,
        fixtures::TOKEN_EXPIRED,
        fixtures::TOKEN_WRONG_AUD,
        fixtures::TOKEN_UNKNOWN_KID,
        fixtures::TOKEN_ES256_NO_KID,
        // Also exercise the no-kid path for every key type.
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC50ZXN0In0.AAAA",
    ]
}

/// The provider of `jwt_verify` / `jwks_parse`: the fixture issuer and audience, all four keys.
pub fn jwt_config() -> (&'static Config, &'static KeySet) {
    thread_local! {
        static CELL: (&'static Config, &'static KeySet) = {
        let json = json!({
            "jwt_providers": {"corp": {"issuer": fixtures::ISSUER, "audiences": ["gateway"],
                                       "local_jwks": fixtures::JWKS}},
            "rules": [{"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}]
        });
        let config = Config::parse(json.to_string().as_bytes()).expect("jwt config");
        let keys = KeySet::parse(fixtures::JWKS.as_bytes()).expect("fixture JWKS");
        (leak(config), leak(keys))
        };
    }
    CELL.with(|cell| *cell)
}

/// The core's types hold `Rc`s, so per-process fixtures live in a thread-local, leaked once.
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// An `Enterprise` per dialect, from `Config::parse` as the doctor's probe does.
pub fn enterprises() -> (&'static Enterprise, &'static Enterprise) {
    thread_local! {
        static CELL: (&'static Enterprise, &'static Enterprise) = {
        let authgate = Config::parse(br#"{"enterprise": {"cluster": "authz", "authority": "authz",
                             "upstream_headers": ["x-tenant", "x-plan", "x-auth-email"]}}"#)
            .expect("authgate dialect")
            .enterprise
            .expect("enterprise");
        let openfga = Config::parse(
            br#"{"enterprise": {"cluster": "fga", "authority": "fga", "dialect": "openfga",
                 "openfga": {"store_id": "01HSTORE", "user": "user:{subject.id}",
                             "relation": "can_call", "object": "route:{request.method}:{request.path}"}}}"#,
        )
        .expect("openfga dialect")
        .enterprise
        .expect("enterprise");
        (leak(authgate), leak(openfga))
        };
    }
    CELL.with(|cell| *cell)
}

/// The fixture JWKS without its `oct` (HMAC) key: public keys only, which no input can sign for.
pub fn public_jwks() -> &'static Value {
    static CELL: OnceLock<Value> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut jwks: Value = serde_json::from_str(fixtures::JWKS).expect("fixture JWKS");
        if let Some(keys) = jwks.get_mut("keys").and_then(Value::as_array_mut) {
            keys.retain(|k| k.get("kty").and_then(Value::as_str) != Some("oct"));
        }
        jwks
    })
}

/// The secret of the fixture's `hs-1` key (its JWK `k`, decoded).
pub fn hs1_secret() -> &'static [u8] {
    static CELL: OnceLock<Vec<u8>> = OnceLock::new();
    CELL.get_or_init(|| {
        let jwks: Value = serde_json::from_str(fixtures::JWKS).expect("fixture JWKS");
        let k = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == "hs-1"))
            .and_then(|k| k["k"].as_str())
            .expect("hs-1");
        URL_SAFE_NO_PAD.decode(k).expect("base64url k")
    })
}

/// Public key material an attacker knows, used as HMAC secrets for algorithm-confusion tokens:
/// rsa-1's `n` (bytes and text), ec-1's `x`, ed-1's `x`, and the whole public JWKS text.
pub fn public_key_secrets() -> &'static [Vec<u8>] {
    static CELL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CELL.get_or_init(|| {
        let jwks = public_jwks();
        let mut out = Vec::new();
        for key in jwks["keys"].as_array().into_iter().flatten() {
            for field in ["n", "x"] {
                if let Some(text) = key.get(field).and_then(Value::as_str) {
                    out.push(text.as_bytes().to_vec());
                    if let Ok(bytes) = URL_SAFE_NO_PAD.decode(text) {
                        out.push(bytes);
                    }
                }
            }
            out.push(key.to_string().into_bytes());
        }
        out.push(jwks.to_string().into_bytes());
        out
    })
}
