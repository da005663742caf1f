//! JWT checks: parse the untrusted token, pick the key, verify the signature, then the claims.
//! Untrusted (`Inspected`) and verified (`Verified`) tokens are different types.

use std::fmt;

use jwt_compact::{Claims, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::core::alg::{self, Alg};
use crate::core::config::Provider;
use crate::core::json_strict;
use crate::core::jwks::KeySet;

/// Tokens above this size are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Keys tried for a token without `kid`: bounds the work an attacker can cause.
const MAX_KEYS_WITHOUT_KID: usize = 4;

/// Why a token was refused. `Display` is safe to show clients: it never echoes token content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    TooLarge,
    Malformed(&'static str),
    AlgNone,
    UnsupportedAlg,
    UnsupportedCrit,
    EmbeddedKey(&'static str),
    UnknownKid,
    NoMatchingKey,
    AlgNotAllowedForKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    MissingExpiration,
    NotYetValid,
    IssuedInFuture,
    /// `exp` passed beyond the leeway: the session expired.
    Expired,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            JwtError::TooLarge => "token too large",
            JwtError::Malformed(what) => what,
            JwtError::AlgNone => "unsigned tokens (alg none) are not accepted",
            JwtError::UnsupportedAlg => "unsupported signing algorithm",
            JwtError::UnsupportedCrit => {
                "token has critical header parameters this gateway does not understand"
            }
            JwtError::EmbeddedKey(field) => field,
            JwtError::UnknownKid => "signing key not found in the issuer's key set",
            JwtError::NoMatchingKey => "no key of the issuer verifies this token",
            JwtError::AlgNotAllowedForKey => "signing algorithm does not match the key",
            JwtError::BadSignature => "signature verification failed",
            JwtError::WrongIssuer => "issuer not accepted",
            JwtError::WrongAudience => "audience not accepted",
            JwtError::MissingExpiration => "token has no expiration",
            JwtError::NotYetValid => "token not yet valid",
            JwtError::IssuedInFuture => "token issued in the future",
            JwtError::Expired => "session expired",
        };
        f.write_str(text)
    }
}

impl std::error::Error for JwtError {}

/// Header fields outside jwt-compact's `Header` that change how a token must be treated.
#[derive(Debug, Clone, Deserialize, Default)]
struct ExtraHeader {
    crit: Option<Value>,
    jwk: Option<Value>,
    x5c: Option<Value>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<Value>,
}

/// A syntactically valid token whose signature has not been checked yet.
pub struct Inspected<'a> {
    token: UntrustedToken<'a, ExtraHeader>,
    alg: Alg,
    /// The `iss` claim as the token states it; chooses the provider, proves nothing.
    pub claimed_issuer: Option<String>,
}

impl Inspected<'_> {
    pub fn kid(&self) -> Option<&str> {
        self.token.header().key_id.as_deref()
    }
}

/// A token whose signature and claims passed for one provider.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub expires_at: Option<i64>,
    pub kid: Option<String>,
}

/// Parses a compact JWS without trusting it, rejecting unsafe shapes early.
pub fn inspect(token: &str) -> Result<Inspected<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
    }
    let parsed: UntrustedToken<'_, ExtraHeader> = UntrustedToken::try_from(token)
        .map_err(|_| JwtError::Malformed("token is not valid base64url JSON"))?;
    let unique = token.split('.').take(2).all(|segment| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .is_ok_and(|json| json_strict::has_unique_members(&json))
    });
    if !unique {
        return Err(JwtError::Malformed(
            "token header or claims repeat a member name",
        ));
    }
    let alg_name = parsed.algorithm();
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = Alg::from_name(alg_name).ok_or(JwtError::UnsupportedAlg)?;
    let header = parsed.header();
    // RFC 7515 4.1.11: a recipient must reject a `crit` it does not understand; we know none.
    if header.other_fields.crit.is_some() {
        return Err(JwtError::UnsupportedCrit);
    }
    if header.other_fields.jwk.is_some() {
        return Err(JwtError::EmbeddedKey(
            "embedded keys (jwk) are not accepted",
        ));
    }
    if header.key_set_url.is_some() {
        return Err(JwtError::EmbeddedKey("key URLs (jku) are not accepted"));
    }
    if header.certificate_url.is_some() || header.other_fields.x5c.is_some() {
        return Err(JwtError::EmbeddedKey(
            "embedded certificates (x5u, x5c) are not accepted",
        ));
    }
    let claimed_issuer = parsed
        .deserialize_claims_unchecked::<IssuerOnly>()
        .map_err(|_| JwtError::Malformed("token claims are not a JSON object"))?
        .custom
        .iss
        .and_then(|iss| iss.as_str().map(str::to_string));
    Ok(Inspected {
        token: parsed,
        alg,
        claimed_issuer,
    })
}

/// Verifies the signature with the provider's keys, then the registered claims at `now_s`.
pub fn verify(
    inspected: &Inspected<'_>,
    provider: &Provider,
    keys: &KeySet,
    now_s: i64,
) -> Result<Verified, JwtError> {
    let claims = verify_signature(inspected, keys)?;
    check_claims(&claims, provider, now_s)?;
    Ok(Verified {
        expires_at: claims.expiration.map(|t| t.timestamp()),
        claims: claims.custom,
        kid: inspected.kid().map(str::to_string),
    })
}

fn verify_signature(
    inspected: &Inspected<'_>,
    keys: &KeySet,
) -> Result<Claims<Map<String, Value>>, JwtError> {
    let alg = inspected.alg;
    if let Some(kid) = inspected.kid() {
        let key = keys.by_kid(kid).ok_or(JwtError::UnknownKid)?;
        if !key.allows(alg) {
            return Err(JwtError::AlgNotAllowedForKey);
        }
        return alg::verify(alg, key, &inspected.token).map_err(signature_error);
    }
    let mut tried = 0;
    for key in keys
        .keys
        .iter()
        .filter(|k| k.allows(alg))
        .take(MAX_KEYS_WITHOUT_KID)
    {
        tried += 1;
        match alg::verify(alg, key, &inspected.token) {
            Ok(claims) => return Ok(claims),
            Err(jwt_compact::ValidationError::MalformedClaims(_)) => {
                return Err(JwtError::Malformed("token claims are not valid"))
            }
            Err(_) => continue,
        }
    }
    Err(if tried == 0 {
        JwtError::AlgNotAllowedForKey
    } else {
        JwtError::NoMatchingKey
    })
}

fn signature_error(err: jwt_compact::ValidationError) -> JwtError {
    match err {
        jwt_compact::ValidationError::MalformedClaims(_) => {
            JwtError::Malformed("token claims are not valid")
        }
        _ => JwtError::BadSignature,
    }
}

fn check_claims(
    claims: &Claims<Map<String, Value>>,
    provider: &Provider,
    now_s: i64,
) -> Result<(), JwtError> {
    match claims.custom.get("iss") {
        Some(Value::String(iss)) if *iss == provider.issuer => {}
        _ => return Err(JwtError::WrongIssuer),
    }
    if !provider.audiences.is_empty() && !audience_matches(claims.custom.get("aud"), provider) {
        return Err(JwtError::WrongAudience);
    }
    let leeway = i64::try_from(provider.clock_skew_s).unwrap_or(i64::MAX);
    if let Some(nbf) = claims.not_before {
        if nbf.timestamp() > now_s.saturating_add(leeway) {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = claims.issued_at {
        if iat.timestamp() > now_s.saturating_add(leeway) {
            return Err(JwtError::IssuedInFuture);
        }
    }
    match claims.expiration {
        None if provider.require_expiration => Err(JwtError::MissingExpiration),
        Some(exp) if exp.timestamp().saturating_add(leeway) < now_s => Err(JwtError::Expired),
        _ => Ok(()),
    }
}

fn audience_matches(aud: Option<&Value>, provider: &Provider) -> bool {
    let accepted = |value: &Value| {
        value
            .as_str()
            .is_some_and(|a| provider.audiences.iter().any(|want| want == a))
    };
    match aud {
        Some(Value::Array(list)) => list.iter().any(accepted),
        Some(value) => accepted(value),
        None => false,
    }
}
