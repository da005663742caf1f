//! The committed key material in `integration/fixtures/` (see its README): private keys as PEM
//! for signing, public JWKs for the JWKS served to / configured in the filter.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// One fixture key. `kid()` is its key id in every JWKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixtureKey {
    /// RSA 2048, RS256: the "current" key.
    Rsa1,
    /// RSA 2048, RS256: the "next" key, added to the JWKS during rotation tests.
    Rsa2,
    /// RSA 2048, RS256: a key that no JWKS contains (unknown kid / attacker's key).
    Rsa3,
    /// EC P-256, ES256.
    Ec1,
    /// Ed25519, EdDSA.
    Ed1,
    /// HS256 shared secret (`oct` JWK).
    Hs1,
}

impl FixtureKey {
    pub const ALL: [FixtureKey; 6] = [
        FixtureKey::Rsa1,
        FixtureKey::Rsa2,
        FixtureKey::Rsa3,
        FixtureKey::Ec1,
        FixtureKey::Ed1,
        FixtureKey::Hs1,
    ];

    pub fn kid(self) -> &'static str {
        match self {
            FixtureKey::Rsa1 => "rsa-1",
            FixtureKey::Rsa2 => "rsa-2",
            FixtureKey::Rsa3 => "rsa-3",
            FixtureKey::Ec1 => "ec-1",
            FixtureKey::Ed1 => "ed-1",
            FixtureKey::Hs1 => "hs-1",
        }
    }

    /// The algorithm this key is for (also the `alg` of its JWK).
    pub fn alg(self) -> Algorithm {
        match self {
            FixtureKey::Rsa1 | FixtureKey::Rsa2 | FixtureKey::Rsa3 => Algorithm::RS256,
            FixtureKey::Ec1 => Algorithm::ES256,
            FixtureKey::Ed1 => Algorithm::EdDSA,
            FixtureKey::Hs1 => Algorithm::HS256,
        }
    }

    /// Private key, PKCS#8 PEM (`None` for the HMAC secret).
    pub fn private_pem(self) -> Option<&'static str> {
        match self {
            FixtureKey::Rsa1 => Some(include_str!("../fixtures/rsa-1.pem")),
            FixtureKey::Rsa2 => Some(include_str!("../fixtures/rsa-2.pem")),
            FixtureKey::Rsa3 => Some(include_str!("../fixtures/rsa-3.pem")),
            FixtureKey::Ec1 => Some(include_str!("../fixtures/ec-1.pem")),
            FixtureKey::Ed1 => Some(include_str!("../fixtures/ed-1.pem")),
            FixtureKey::Hs1 => None,
        }
    }

    /// Public key, SubjectPublicKeyInfo PEM (`None` for the HMAC secret).
    pub fn public_pem(self) -> Option<&'static str> {
        match self {
            FixtureKey::Rsa1 => Some(include_str!("../fixtures/rsa-1.pub.pem")),
            FixtureKey::Rsa2 => Some(include_str!("../fixtures/rsa-2.pub.pem")),
            FixtureKey::Rsa3 => Some(include_str!("../fixtures/rsa-3.pub.pem")),
            FixtureKey::Ec1 => Some(include_str!("../fixtures/ec-1.pub.pem")),
            FixtureKey::Ed1 => Some(include_str!("../fixtures/ed-1.pub.pem")),
            FixtureKey::Hs1 => None,
        }
    }

    /// The HMAC secret (only for `Hs1`).
    pub fn secret(self) -> Option<&'static [u8]> {
        match self {
            FixtureKey::Hs1 => Some(include_bytes!("../fixtures/hs-1.secret")),
            _ => None,
        }
    }

    /// The public JWK (for `Hs1`: the `oct` key with `k`).
    pub fn public_jwk(self) -> Value {
        let text = match self {
            FixtureKey::Rsa1 => include_str!("../fixtures/jwk/rsa-1.json"),
            FixtureKey::Rsa2 => include_str!("../fixtures/jwk/rsa-2.json"),
            FixtureKey::Rsa3 => include_str!("../fixtures/jwk/rsa-3.json"),
            FixtureKey::Ec1 => include_str!("../fixtures/jwk/ec-1.json"),
            FixtureKey::Ed1 => include_str!("../fixtures/jwk/ed-1.json"),
            FixtureKey::Hs1 => include_str!("../fixtures/jwk/hs-1.json"),
        };
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("fixture jwk/{}.json: {e}", self.kid()))
    }

    /// The key `jsonwebtoken` signs with.
    pub fn encoding_key(self) -> EncodingKey {
        let result = match self {
            FixtureKey::Rsa1 | FixtureKey::Rsa2 | FixtureKey::Rsa3 => {
                EncodingKey::from_rsa_pem(self.pem_bytes())
            }
            FixtureKey::Ec1 => EncodingKey::from_ec_pem(self.pem_bytes()),
            FixtureKey::Ed1 => EncodingKey::from_ed_pem(self.pem_bytes()),
            FixtureKey::Hs1 => Ok(EncodingKey::from_secret(self.secret().unwrap_or_default())),
        };
        result.unwrap_or_else(|e| panic!("fixture {}: {e}", self.kid()))
    }

    fn pem_bytes(self) -> &'static [u8] {
        self.private_pem().unwrap_or_default().as_bytes()
    }
}

/// `{"keys": [<public JWK of each key>]}`.
pub fn jwks(keys: &[FixtureKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()})
}
