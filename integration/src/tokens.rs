//! JWTs for the tests. Every signature is made by the `jsonwebtoken` crate with a fixture key;
//! the only tokens built by hand are deliberately broken ones that carry no real signature
//! (`alg: none`, a swapped payload, a corrupted signature, malformed strings).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::fixtures::FixtureKey;

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `iss`, `aud`, `sub`, `iat` = now, `exp` = now + 1 h.
pub fn standard_claims(issuer: &str, audience: &str, subject: &str) -> Value {
    let now = now();
    json!({"iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + 3600})
}

/// Builds and signs a JWT with a fixture key.
///
/// Defaults: the key's own algorithm, `kid` = the key's kid, `typ: JWT`, no claims.
#[derive(Clone)]
pub struct TokenBuilder {
    header: Header,
    claims: Map<String, Value>,
    key: EncodingKey,
}

impl TokenBuilder {
    pub fn new(key: FixtureKey) -> TokenBuilder {
        let mut header = Header::new(key.alg());
        header.kid = Some(key.kid().to_string());
        TokenBuilder {
            header,
            claims: Map::new(),
            key: key.encoding_key(),
        }
    }

    /// Merges the members of a JSON object into the claims (later values win).
    pub fn claims(mut self, claims: Value) -> TokenBuilder {
        if let Value::Object(map) = claims {
            self.claims.extend(map);
        }
        self
    }

    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> TokenBuilder {
        self.claims.insert(name.to_string(), value.into());
        self
    }

    pub fn without_claim(mut self, name: &str) -> TokenBuilder {
        self.claims.remove(name);
        self
    }

    /// Overrides the `kid` header (`None` removes it).
    pub fn kid(mut self, kid: Option<&str>) -> TokenBuilder {
        self.header.kid = kid.map(str::to_string);
        self
    }

    /// Overrides the `alg` header: the key must be able to sign with it (same key family).
    pub fn alg(mut self, alg: Algorithm) -> TokenBuilder {
        self.header.alg = alg;
        self
    }

    /// Any other header change (`jku`, `jwk`, `x5u`, `typ`, …).
    pub fn header(mut self, edit: impl FnOnce(&mut Header)) -> TokenBuilder {
        edit(&mut self.header);
        self
    }

    /// Signs with HS256 and these bytes as the HMAC secret instead of the fixture key (the
    /// key-confusion attack uses an RSA public key's PEM here). The `kid` stays as set.
    pub fn hmac_secret(mut self, secret: &[u8]) -> TokenBuilder {
        self.header.alg = Algorithm::HS256;
        self.key = EncodingKey::from_secret(secret);
        self
    }

    /// The compact JWT.
    pub fn sign(&self) -> String {
        jsonwebtoken::encode(&self.header, &Value::Object(self.claims.clone()), &self.key)
            .unwrap_or_else(|e| panic!("signing a test token: {e}"))
    }
}

/// An unsigned token: header `{"alg":"none","typ":"JWT","kid":kid}`, these claims, and an empty
/// signature (built by hand on purpose: no library signs `none`).
pub fn alg_none(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!("{}.{}.", b64(&header.to_string()), b64(&claims.to_string()))
}

/// Same header and signature, another payload: the signature no longer matches.
pub fn swap_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims.to_string()),
        parts.get(2).unwrap_or(&"")
    )
}

/// Corrupts one character in the middle of the signature (a middle base64url character carries
/// six full bits, so the decoded signature really changes).
pub fn corrupt_signature(token: &str) -> String {
    let (signing_input, signature) = token.rsplit_once('.').unwrap_or((token, ""));
    let mut chars: Vec<char> = signature.chars().collect();
    if chars.is_empty() {
        return format!("{signing_input}.AAAA");
    }
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    format!("{signing_input}.{}", chars.into_iter().collect::<String>())
}

/// The payload of a compact JWT, decoded (no verification); for assertions in tests.
pub fn decode_payload(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// base64url without padding of a string.
pub fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text.as_bytes())
}

/// base64url without padding of bytes.
pub fn b64_bytes(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWS over exactly this header and payload *text* (`b64(header).b64(payload).signature`),
/// signed by `jsonwebtoken::crypto::sign` with `key` under `alg`. For tokens no serializer would
/// write: duplicate members, `crit`, a `kid` that is a number, NUL escapes, very deep nesting.
pub fn sign_raw_with(alg: Algorithm, key: &EncodingKey, header: &str, payload: &str) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg)
        .unwrap_or_else(|e| panic!("signing raw test token: {e}"));
    format!("{signing_input}.{signature}")
}

/// [`sign_raw_with`] with a fixture key and its own algorithm.
pub fn sign_raw(key: FixtureKey, header: &str, payload: &str) -> String {
    sign_raw_with(key.alg(), &key.encoding_key(), header, payload)
}

/// The signature of a compact JWS, base64url-decoded (empty when it is not valid base64url).
pub fn signature_bytes(token: &str) -> Vec<u8> {
    let signature = token.rsplit('.').next().unwrap_or("");
    URL_SAFE_NO_PAD.decode(signature).unwrap_or_default()
}

/// The same header and payload with these signature bytes (base64url-encoded).
pub fn with_signature_bytes(token: &str, signature: &[u8]) -> String {
    let (signing_input, _) = token.rsplit_once('.').unwrap_or((token, ""));
    format!("{signing_input}.{}", b64_bytes(signature))
}
