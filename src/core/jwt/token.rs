//! JWT checks: parse the untrusted token, pick the key, verify the signature, then the claims.
//! Untrusted (`Inspected`) and verified (`Verified`) tokens are different types.

use std::fmt;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::core::json_strict;
use crate::core::jwt::alg::{self, Alg};
use crate::core::jwt::jwks::KeySet;
use crate::core::jwt::provider::Provider;

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

/// The JOSE header members authgate reads, and those it must refuse (only their presence
/// matters).
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    cty: Option<String>,
    crit: Option<IgnoredAny>,
    jwk: Option<IgnoredAny>,
    jku: Option<IgnoredAny>,
    x5c: Option<IgnoredAny>,
    x5u: Option<IgnoredAny>,
}

/// A syntactically valid token whose signature has not been checked yet. Each part is decoded
/// and parsed once: the signature is checked over the raw text, the claims are kept parsed.
pub struct Inspected<'a> {
    signed_data: &'a [u8],
    signature: Vec<u8>,
    alg: Alg,
    kid: Option<String>,
    claims: Map<String, Value>,
}

impl Inspected<'_> {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `iss` claim as the token states it; chooses the provider, proves nothing.
    pub fn claimed_issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// A token whose signature and claims passed for one provider.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Every claim but the registered times, which are `expires_at` and checked.
    pub claims: Map<String, Value>,
    pub expires_at: Option<i64>,
    pub kid: Option<String>,
}

/// Parses a compact JWS without trusting it, rejecting unsafe shapes early. Hand-split rather
/// than through jwt-compact's `UntrustedToken`, which decodes with constant-time base64 and
/// parses the claims again for every use: 5 of the 8 µs this took in Wasm.
pub fn inspect(token: &str) -> Result<Inspected<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
    };
    let not_base64 = |_| JwtError::Malformed("token is not valid base64url JSON");
    let header = URL_SAFE_NO_PAD.decode(header).map_err(not_base64)?;
    let claims = URL_SAFE_NO_PAD.decode(claims).map_err(not_base64)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(not_base64)?;
    let repeated = JwtError::Malformed("token header or claims repeat a member name");
    let header = json_strict::parse_object(&header).ok_or(repeated.clone())?;
    let header = JoseHeader::deserialize(Value::Object(header))
        .map_err(|_| JwtError::Malformed("token header is not valid"))?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = Alg::from_name(&header.alg).ok_or(JwtError::UnsupportedAlg)?;
    // RFC 7515 4.1.11: a recipient must reject a `crit` it does not understand; we know none.
    if header.crit.is_some() {
        return Err(JwtError::UnsupportedCrit);
    }
    if header.jwk.is_some() {
        return Err(JwtError::EmbeddedKey(
            "embedded keys (jwk) are not accepted",
        ));
    }
    if header.jku.is_some() {
        return Err(JwtError::EmbeddedKey("key URLs (jku) are not accepted"));
    }
    if header.x5u.is_some() || header.x5c.is_some() {
        return Err(JwtError::EmbeddedKey(
            "embedded certificates (x5u, x5c) are not accepted",
        ));
    }
    // The claims are JSON; a nested JWT (`cty: JWT`) or another payload type is not a token
    // this gateway can read.
    if header
        .cty
        .is_some_and(|cty| !cty.eq_ignore_ascii_case("json"))
    {
        return Err(JwtError::Malformed("token content type is not JSON"));
    }
    let claims = json_strict::parse_object(&claims).ok_or(repeated)?;
    let signed_data = token
        .rsplit_once('.')
        .map_or(&[][..], |(signed, _)| signed.as_bytes());
    Ok(Inspected {
        signed_data,
        signature,
        alg,
        kid: header.kid,
        claims,
    })
}

/// Verifies the signature with the provider's keys, then the registered claims at `now_s`.
pub fn verify(
    inspected: Inspected<'_>,
    provider: &Provider,
    keys: &KeySet,
    now_s: i64,
) -> Result<Verified, JwtError> {
    verify_for(inspected, provider, keys, now_s, &provider.audiences)
}

/// Verifies like [`verify`] but leaves `aud` to the caller: which audience a token must name
/// depends on the request (a protected resource's `require_audience`, else the provider's
/// `audiences`), and a verified token is cached for every request that carries it.
pub fn verify_any_audience(
    inspected: Inspected<'_>,
    provider: &Provider,
    keys: &KeySet,
    now_s: i64,
) -> Result<Verified, JwtError> {
    verify_for(inspected, provider, keys, now_s, &[])
}

/// Whether a token's `aud` claim (a string or an array) names one of `audiences`.
pub fn names_audience(aud: &[String], audiences: &[String]) -> bool {
    aud.iter().any(|a| audiences.contains(a))
}

/// An OpenID Connect ID token from `provider`: verified like an access token, except that its
/// `aud` must contain `client_id` (the provider's `audiences` are for access tokens) and it
/// must expire.
pub fn verify_id_token(
    inspected: Inspected<'_>,
    provider: &Provider,
    keys: &KeySet,
    now_s: i64,
    client_id: &str,
) -> Result<Verified, JwtError> {
    let verified = verify_for(inspected, provider, keys, now_s, &[client_id.to_string()])?;
    if verified.expires_at.is_none() {
        return Err(JwtError::MissingExpiration);
    }
    Ok(verified)
}

fn verify_for(
    inspected: Inspected<'_>,
    provider: &Provider,
    keys: &KeySet,
    now_s: i64,
    audiences: &[String],
) -> Result<Verified, JwtError> {
    verify_signature(&inspected, keys)?;
    let Inspected {
        mut claims, kid, ..
    } = inspected;
    let times = RegisteredTimes::take_from(&mut claims)?;
    check_claims(&claims, &times, provider, now_s, audiences)?;
    Ok(Verified {
        expires_at: times.expiration,
        claims,
        kid,
    })
}

fn verify_signature(inspected: &Inspected<'_>, keys: &KeySet) -> Result<(), JwtError> {
    let alg = inspected.alg;
    let verifies = |key| alg::verify(alg, key, inspected.signed_data, &inspected.signature);
    if let Some(kid) = inspected.kid() {
        // A JWKS may list several keys under one `kid` (during a rotation, or one per
        // algorithm): each is tried, as RFC 7517 §4.5 leaves `kid` unique only by convention.
        let mut with_kid = keys.with_kid(kid).peekable();
        if with_kid.peek().is_none() {
            return Err(JwtError::UnknownKid);
        }
        let mut usable = with_kid.filter(|key| key.allows(alg)).peekable();
        if usable.peek().is_none() {
            return Err(JwtError::AlgNotAllowedForKey);
        }
        return usable
            .any(verifies)
            .then_some(())
            .ok_or(JwtError::BadSignature);
    }
    let mut tried = 0;
    for key in keys
        .keys
        .iter()
        .filter(|k| k.allows(alg))
        .take(MAX_KEYS_WITHOUT_KID)
    {
        tried += 1;
        if verifies(key) {
            return Ok(());
        }
    }
    Err(if tried == 0 {
        JwtError::AlgNotAllowedForKey
    } else {
        JwtError::NoMatchingKey
    })
}

/// The largest NumericDate accepted, either side of 1970: a JavaScript `Date`'s range (about
/// 274,000 years), close to chrono's which jwt-compact enforced. Beyond it an IdP's clock or
/// encoder is broken, and such a token is refused rather than treated as eternal.
const MAX_NUMERIC_DATE_S: i64 = 8_640_000_000_000;

/// `exp`, `nbf` and `iat` (RFC 7519 §4.1), in seconds: a NumericDate may have a fraction,
/// which is dropped.
struct RegisteredTimes {
    expiration: Option<i64>,
    not_before: Option<i64>,
    issued_at: Option<i64>,
}

impl RegisteredTimes {
    fn take_from(claims: &mut Map<String, Value>) -> Result<RegisteredTimes, JwtError> {
        let mut take = |name: &str| match claims.remove(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.abs() <= MAX_NUMERIC_DATE_S as f64)
                        .map(|f| f as i64)
                })
                .filter(|t| t.unsigned_abs() <= MAX_NUMERIC_DATE_S.unsigned_abs())
                .map(Some)
                .ok_or(JwtError::Malformed("token claims are not valid")),
            Some(_) => Err(JwtError::Malformed("token claims are not valid")),
        };
        Ok(RegisteredTimes {
            expiration: take("exp")?,
            not_before: take("nbf")?,
            issued_at: take("iat")?,
        })
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    times: &RegisteredTimes,
    provider: &Provider,
    now_s: i64,
    audiences: &[String],
) -> Result<(), JwtError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == provider.issuer => {}
        _ => return Err(JwtError::WrongIssuer),
    }
    if !audiences.is_empty() && !audience_matches(claims.get("aud"), audiences) {
        return Err(JwtError::WrongAudience);
    }
    let leeway = i64::try_from(provider.clock_skew_s).unwrap_or(i64::MAX);
    if times
        .not_before
        .is_some_and(|nbf| nbf > now_s.saturating_add(leeway))
    {
        return Err(JwtError::NotYetValid);
    }
    if times
        .issued_at
        .is_some_and(|iat| iat > now_s.saturating_add(leeway))
    {
        return Err(JwtError::IssuedInFuture);
    }
    match times.expiration {
        None if provider.require_expiration => Err(JwtError::MissingExpiration),
        Some(exp) if exp.saturating_add(leeway) < now_s => Err(JwtError::Expired),
        _ => Ok(()),
    }
}

fn audience_matches(aud: Option<&Value>, audiences: &[String]) -> bool {
    let accepted = |value: &Value| {
        value
            .as_str()
            .is_some_and(|a| audiences.iter().any(|want| want == a))
    };
    match aud {
        Some(Value::Array(list)) => list.iter().any(accepted),
        Some(value) => accepted(value),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn times(claims: Value) -> (Result<RegisteredTimes, JwtError>, Map<String, Value>) {
        let Value::Object(mut claims) = claims else {
            panic!("claims must be an object")
        };
        (RegisteredTimes::take_from(&mut claims), claims)
    }

    #[test]
    fn registered_times_are_numeric_dates_taken_out_of_the_claims() {
        let (taken, rest) = times(json!({"sub": "u", "exp": 2000, "nbf": 1000.75, "iat": 999}));
        let taken = taken.unwrap();
        assert_eq!(
            (taken.expiration, taken.not_before, taken.issued_at),
            (Some(2000), Some(1000), Some(999))
        );
        assert_eq!(Value::Object(rest), json!({"sub": "u"}));
        let (taken, _) = times(json!({"sub": "u"}));
        assert_eq!(taken.unwrap().expiration, None);
        let (taken, _) = times(json!({"exp": -1, "nbf": MAX_NUMERIC_DATE_S}));
        assert_eq!(taken.unwrap().expiration, Some(-1));
        for bad in [
            json!("2000"),
            json!(null),
            json!([2000]),
            json!({"t": 1}),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e300),
            json!(MAX_NUMERIC_DATE_S + 1),
        ] {
            let (taken, _) = times(json!({"exp": bad}));
            assert!(matches!(taken, Err(JwtError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn a_token_has_three_base64url_json_parts() {
        let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let header = part(r#"{"alg":"RS256","kid":"k"}"#);
        let claims = part(r#"{"iss":"https://idp","sub":"u"}"#);
        let token = format!("{header}.{claims}.c2ln");
        let inspected = inspect(&token).unwrap();
        assert_eq!(inspected.kid(), Some("k"));
        assert_eq!(inspected.claimed_issuer(), Some("https://idp"));
        assert_eq!(inspected.signature, b"sig");
        assert_eq!(
            inspected.signed_data,
            format!("{header}.{claims}").as_bytes()
        );
        for bad in [
            format!("{header}.{claims}"),
            format!("{header}.{claims}.c2ln.c2ln"),
            format!("{header}.{claims}.c2ln="),
            format!("{header}.{}.c2ln", part("[1]")),
            format!("{}.{claims}.c2ln", part(r#"{"alg":"RS256","cty":"JWT"}"#)),
            format!("{}.{claims}.c2ln", part(r#"{"alg":"RS256","kid":7}"#)),
        ] {
            assert!(
                matches!(inspect(&bad), Err(JwtError::Malformed(_))),
                "{bad}"
            );
        }
        let json_cty = format!("{}.{claims}.c2ln", part(r#"{"alg":"RS256","cty":"json"}"#));
        assert!(inspect(&json_cty).is_ok());
    }

    #[test]
    fn every_key_under_a_duplicate_kid_is_tried() {
        use jwt_compact::alg::{Hs256, Hs256Key};
        use jwt_compact::{Algorithm, AlgorithmSignature};
        let secret = |s: &str| URL_SAFE_NO_PAD.encode(s.repeat(4));
        let keys = KeySet::parse(
            format!(
                r#"{{"keys":[{{"kty":"oct","kid":"k","k":"{}"}},{{"kty":"oct","kid":"k","k":"{}"}}]}}"#,
                secret("first-secret"),
                secret("second-secret")
            )
            .as_bytes(),
        )
        .unwrap();
        let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let signed = |kid: &str, key: &str| {
            let signed = format!(
                "{}.{}",
                part(&format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#)),
                part(r#"{"iss":"https://idp"}"#)
            );
            let signature = Hs256.sign(&Hs256Key::new(key.repeat(4)), signed.as_bytes());
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
        };
        let check = |token: &str| verify_signature(&inspect(token).unwrap(), &keys);
        assert_eq!(check(&signed("k", "second-secret")), Ok(()));
        assert_eq!(check(&signed("k", "first-secret")), Ok(()));
        assert_eq!(
            check(&signed("k", "other-secret")),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            check(&signed("x", "first-secret")),
            Err(JwtError::UnknownKid)
        );
    }
}
