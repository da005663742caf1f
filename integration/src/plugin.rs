//! Plugin configurations (DESIGN.md's JSON) used by the tests, and the names of the filter's
//! stats (read with [`crate::Envoy::stat`]).

use serde_json::{json, Value};

use crate::fixtures::{jwks, FixtureKey};

/// The test IdP's issuer (`iss`).
pub const ISSUER: &str = "https://idp.test";
/// The audience the gateway accepts.
pub const AUDIENCE: &str = "gateway";
/// The provider name used by [`corp_config`].
pub const PROVIDER: &str = "corp";

/// The "corp" provider fetching its keys from the `idp` cluster (`http://idp/jwks`), with a tenant
/// claim header and the standard subject claims.
pub fn remote_provider(cache_duration_s: u64) -> Value {
    json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "remote_jwks": {"cluster": "idp", "uri": "http://idp/jwks", "timeout_ms": 1000,
                        "cache_duration_s": cache_duration_s},
        "claim_to_headers": [{"claim": "tenant.id", "header": "x-tenant"}],
        "subject_claims": {"email": "email", "roles": "realm_access.roles", "scopes": "scope"}
    })
}

/// The same provider with an inline JWKS (`local_jwks` as a JSON object).
pub fn local_provider(keys: &[FixtureKey]) -> Value {
    json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": jwks(keys),
        "claim_to_headers": [{"claim": "tenant.id", "header": "x-tenant"}],
        "subject_claims": {"email": "email", "roles": "realm_access.roles", "scopes": "scope"}
    })
}

/// `/public` is public, everything else requires a `corp` JWT.
pub fn standard_rules() -> Value {
    json!([
        {"match": {"path": "/public"}, "public": true},
        {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}
    ])
}

/// `{"jwt_providers": {"corp": provider}, "rules": standard_rules()}`.
pub fn corp_config(provider: Value) -> Value {
    json!({"jwt_providers": {PROVIDER: provider}, "rules": standard_rules()})
}

/// A full set of claims the corp provider accepts, for `sub`: email, roles, scopes, tenant.
pub fn corp_claims(subject: &str) -> Value {
    let now = crate::tokens::now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600,
        "email": format!("{subject}@example.com"),
        "scope": "llm:invoke read",
        "realm_access": {"roles": ["user", "admin"]},
        "tenant": {"id": "acme"}
    })
}

/// Counter names (admin `/stats` shows them as `wasmcustom.<name>`).
pub mod stat {
    pub const ALLOWED: &str = "authgate.allowed";
    pub const DENIED: &str = "authgate.denied";
    pub const SESSION_EXPIRED: &str = "authgate.session_expired";
    pub const JWT_CACHE_HIT: &str = "authgate.jwt_cache_hit";
    pub const JWT_CACHE_MISS: &str = "authgate.jwt_cache_miss";
    pub const JWKS_FETCH_SUCCESS: &str = "authgate.jwks_fetch_success";
    pub const JWKS_FETCH_FAILED: &str = "authgate.jwks_fetch_failed";
}

/// An `api_keys.keys` entry for `key`: only its SHA-256 goes into the configuration.
pub fn api_key_entry(id: &str, key: &str, principal: &str, scopes: &[&str]) -> Value {
    use sha2::{Digest, Sha256};
    json!({"id": id, "sha256": hex::encode(Sha256::digest(key.as_bytes())),
           "principal": principal, "scopes": scopes})
}
