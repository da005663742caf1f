//! The ID token a sign-in ends with (OpenID Connect Core §3.1.3.7): signed by the provider's
//! keys, its issuer, `aud` containing our client id, `azp` (when present) our client id, unexpired
//! (with the provider's leeway), the attempt's `nonce`, a verified email when required (an absent
//! `email_verified` is false), and, where a fresh sign-in was asked for (`prompt=login`), an
//! `auth_time` no earlier than the attempt.

use serde_json::{Map, Value};

use crate::core::jwt::jwks::KeySet;
use crate::core::jwt::provider::Provider;
use crate::core::jwt::{self, JwtError};

/// Who signed in, as the session and the renewal call need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Every claim but the registered times (for roles, scopes and claim headers).
    pub claims: Map<String, Value>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    Jwt(JwtError),
    WrongNonce,
    WrongAuthorizedParty,
    NoSubject,
    /// `require_email_verified` and the email is absent or not verified.
    EmailNotVerified,
    /// A fresh sign-in was required and the IdP reused an older one.
    NotFresh,
}

impl IdTokenError {
    pub fn describe(&self) -> String {
        match self {
            IdTokenError::Jwt(error) => format!("the ID token is not valid: {error}"),
            IdTokenError::WrongNonce => "the ID token is not for this sign-in (nonce)".into(),
            IdTokenError::WrongAuthorizedParty => {
                "the ID token was issued to another client (azp)".into()
            }
            IdTokenError::NoSubject => "the ID token names no subject".into(),
            IdTokenError::EmailNotVerified => {
                "the identity provider has not verified this email address".into()
            }
            IdTokenError::NotFresh => {
                "the identity provider did not ask you to sign in again".into()
            }
        }
    }
}

pub struct Expect<'a> {
    pub provider: &'a Provider,
    pub keys: &'a KeySet,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub email_claim: &'a str,
    pub require_email_verified: bool,
    /// `auth_time` must be at least this (minus the leeway); None when not required.
    pub fresh_since_s: Option<i64>,
    pub now_s: i64,
}

pub fn check(token: &str, expect: &Expect<'_>) -> Result<SignedIn, IdTokenError> {
    let inspected = jwt::inspect(token).map_err(IdTokenError::Jwt)?;
    let verified = jwt::verify_id_token(
        inspected,
        expect.provider,
        expect.keys,
        expect.now_s,
        expect.client_id,
    )
    .map_err(IdTokenError::Jwt)?;
    let claims = verified.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("nonce") != Some(expect.nonce) {
        return Err(IdTokenError::WrongNonce);
    }
    if claims.get("azp").is_some() && text("azp") != Some(expect.client_id) {
        return Err(IdTokenError::WrongAuthorizedParty);
    }
    let subject = text("sub")
        .filter(|s| !s.is_empty())
        .ok_or(IdTokenError::NoSubject)?
        .to_string();
    let email = text(expect.email_claim).map(str::to_string);
    let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
    if expect.require_email_verified && (email.is_none() || !email_verified) {
        return Err(IdTokenError::EmailNotVerified);
    }
    if let Some(since) = expect.fresh_since_s {
        let leeway = i64::try_from(expect.provider.clock_skew_s).unwrap_or(0);
        let auth_time = claims.get("auth_time").and_then(Value::as_i64);
        if auth_time.is_none_or(|t| t.saturating_add(leeway) < since) {
            return Err(IdTokenError::NotFresh);
        }
    }
    Ok(SignedIn {
        subject,
        email,
        email_verified,
        expires_at: verified.expires_at.unwrap_or(expect.now_s),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use crate::core::jwt::provider::JwksSource;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jwt_compact::alg::{Hs256, Hs256Key};
    use jwt_compact::{Algorithm, AlgorithmSignature};
    use serde_json::json;

    const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";
    const NOW: i64 = 1_900_000_000;

    fn config() -> Config {
        let k = URL_SAFE_NO_PAD.encode(SECRET);
        Config::parse(
            json!({"jwt_providers": {"idp": {"issuer": "https://idp.test",
                    "local_jwks": {"keys": [{"kty": "oct", "kid": "k", "k": k}]}}}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn sign(claims: Value) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!(
            "{}.{}",
            part(&json!({"alg": "HS256", "kid": "k"})),
            part(&claims)
        );
        let signature = Hs256.sign(&Hs256Key::new(SECRET), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
    }

    fn good() -> Value {
        json!({"iss": "https://idp.test", "aud": ["authgate", "other"], "azp": "authgate",
               "sub": "u1", "email": "a@example.com", "email_verified": true, "nonce": "n1",
               "iat": NOW - 5, "exp": NOW + 300, "auth_time": NOW - 5})
    }

    fn checked(claims: Value, fresh_since_s: Option<i64>) -> Result<SignedIn, IdTokenError> {
        let config = config();
        let provider = &config.providers[0];
        let JwksSource::Local(keys) = &provider.jwks else {
            panic!("local keys")
        };
        check(
            &sign(claims),
            &Expect {
                provider,
                keys,
                client_id: "authgate",
                nonce: "n1",
                email_claim: "email",
                require_email_verified: true,
                fresh_since_s,
                now_s: NOW,
            },
        )
    }

    fn with(name: &str, value: Value) -> Value {
        let mut claims = good();
        claims[name] = value;
        claims
    }

    fn without(name: &str) -> Value {
        let mut claims = good();
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    #[test]
    fn a_good_id_token_names_who_signed_in() {
        let signed_in = checked(good(), Some(NOW - 10)).unwrap();
        assert_eq!(signed_in.subject, "u1");
        assert_eq!(signed_in.email.as_deref(), Some("a@example.com"));
        assert!(signed_in.email_verified);
        assert_eq!(signed_in.expires_at, NOW + 300);
        assert!(checked(without("azp"), None).is_ok(), "azp is optional");
    }

    #[test]
    fn every_id_token_check_refuses() {
        use IdTokenError::*;
        let cases = [
            (with("nonce", json!("other")), WrongNonce),
            (without("nonce"), WrongNonce),
            (with("azp", json!("someone-else")), WrongAuthorizedParty),
            (with("email_verified", json!(false)), EmailNotVerified),
            (with("email_verified", json!("true")), EmailNotVerified),
            (without("email_verified"), EmailNotVerified),
            (without("email"), EmailNotVerified),
            (with("sub", json!("")), NoSubject),
            (
                with("aud", json!("someone-else")),
                Jwt(JwtError::WrongAudience),
            ),
            (
                with("iss", json!("https://evil.test")),
                Jwt(JwtError::WrongIssuer),
            ),
            (with("exp", json!(NOW - 3600)), Jwt(JwtError::Expired)),
            (without("exp"), Jwt(JwtError::MissingExpiration)),
        ];
        for (claims, want) in cases {
            assert_eq!(checked(claims.clone(), None), Err(want), "{claims}");
        }
        assert_eq!(
            checked(with("auth_time", json!(NOW - 3600)), Some(NOW - 10)),
            Err(NotFresh)
        );
        assert_eq!(checked(without("auth_time"), Some(NOW - 10)), Err(NotFresh));
        let mut tampered = sign(good());
        tampered.push('x');
        let config = config();
        let JwksSource::Local(keys) = &config.providers[0].jwks else {
            panic!()
        };
        assert!(matches!(
            check(
                &tampered,
                &Expect {
                    provider: &config.providers[0],
                    keys,
                    client_id: "authgate",
                    nonce: "n1",
                    email_claim: "email",
                    require_email_verified: true,
                    fresh_since_s: None,
                    now_s: NOW
                }
            ),
            Err(Jwt(_))
        ));
    }
}
