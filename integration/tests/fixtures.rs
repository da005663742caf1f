//! The committed key material is consistent: every public JWK verifies a token signed with its
//! private PEM (through `jsonwebtoken`, independently of authgate). No Envoy needed.

use authgate_integration::tokens::{alg_none, corrupt_signature, decode_payload, standard_claims};
use authgate_integration::{jwks, FixtureKey, TokenBuilder};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{decode, DecodingKey, Validation};
use serde_json::Value;

fn verify(key: FixtureKey, token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let jwk: Jwk = serde_json::from_value(key.public_jwk()).expect("JWK parses");
    let mut validation = Validation::new(key.alg());
    validation.set_audience(&["gateway"]);
    validation.set_issuer(&["https://idp.test"]);
    decode::<Value>(
        token,
        &DecodingKey::from_jwk(&jwk).expect("decoding key"),
        &validation,
    )
    .map(|data| data.claims)
}

#[test]
fn every_jwk_matches_its_private_key() {
    for key in FixtureKey::ALL {
        let claims = standard_claims("https://idp.test", "gateway", "alice");
        let token = TokenBuilder::new(key).claims(claims).sign();
        let verified = verify(key, &token).unwrap_or_else(|e| panic!("{}: {e}", key.kid()));
        assert_eq!(verified["sub"], "alice", "{}", key.kid());
        assert!(
            verify(key, &corrupt_signature(&token)).is_err(),
            "{}: corrupted verifies",
            key.kid()
        );
    }
}

#[test]
fn jwks_have_the_expected_members() {
    let set = jwks(&FixtureKey::ALL);
    let keys = set["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 6);
    for (key, jwk) in FixtureKey::ALL.iter().zip(keys) {
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["use"], "sig");
        let members: &[&str] = match jwk["kty"].as_str() {
            Some("RSA") => &["n", "e"],
            Some("EC") => &["crv", "x", "y"],
            Some("OKP") => &["crv", "x"],
            Some("oct") => &["k"],
            other => panic!("unexpected kty {other:?}"),
        };
        for m in members {
            assert!(jwk[*m].is_string(), "{} lacks {m}", key.kid());
        }
    }
}

#[test]
fn distinct_rsa_keys() {
    let n = |k: FixtureKey| k.public_jwk()["n"].clone();
    assert_ne!(n(FixtureKey::Rsa1), n(FixtureKey::Rsa2));
    assert_ne!(n(FixtureKey::Rsa2), n(FixtureKey::Rsa3));
}

#[test]
fn crafted_tokens_have_the_intended_shape() {
    let claims = standard_claims("https://idp.test", "gateway", "alice");
    let none = alg_none("rsa-1", &claims);
    assert!(none.ends_with('.'));
    assert_eq!(decode_payload(&none).expect("payload")["sub"], "alice");
    let hs = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(claims)
        .hmac_secret(FixtureKey::Rsa1.public_pem().expect("pem").as_bytes())
        .sign();
    let header = jsonwebtoken::decode_header(&hs).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some("rsa-1"));
}
