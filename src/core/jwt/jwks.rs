//! JSON Web Key Sets: parsed once into verifying keys, each knowing the algorithms it allows.
//! The key, never the token's header, decides the algorithm.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::core::jwt::alg::Alg;
use crate::core::jwt::rsa::RsaVerifyingKey;

/// More keys than any real IdP publishes; bounds work per token without a `kid`.
const MAX_KEYS: usize = 64;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwksError {}

/// A verifying key and the algorithms it may verify.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub material: KeyMaterial,
    pub algs: &'static [Alg],
}

#[derive(Clone)]
pub enum KeyMaterial {
    Rsa(Box<RsaVerifyingKey>),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

impl fmt::Debug for KeyMaterial {
    // Never print key bytes: an `oct` key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyMaterial::Rsa(_) => "Rsa",
            KeyMaterial::P256(_) => "P256",
            KeyMaterial::Ed25519(_) => "Ed25519",
            KeyMaterial::Hmac(_) => "Hmac",
        })
    }
}

impl Key {
    pub fn allows(&self, alg: Alg) -> bool {
        self.algs.contains(&alg)
    }
}

/// The usable keys of one JWKS, plus why any others were skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

impl KeySet {
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|_| JwksError("is not JSON".to_string()))?;
        KeySet::from_value(value)
    }

    /// Keys that cannot be used (encryption keys, unsupported curves, weak RSA) are skipped,
    /// not fatal: IdPs such as Keycloak publish those beside their signing keys.
    pub fn from_value(value: Value) -> Result<KeySet, JwksError> {
        let raw: RawJwks = serde_json::from_value(value)
            .map_err(|_| JwksError("is not a JWKS: expected {\"keys\": [...]}".to_string()))?;
        let mut set = KeySet::default();
        for (index, jwk) in raw.keys.into_iter().take(MAX_KEYS).enumerate() {
            match parse_key(jwk) {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(format!("keys[{index}]: {reason}")),
            }
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key published under `kid` (usually one).
    pub fn with_kid<'s>(&'s self, kid: &'s str) -> impl Iterator<Item = &'s Key> + 's {
        self.keys
            .iter()
            .filter(move |k| k.kid.as_deref() == Some(kid))
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.with_kid(kid).next().is_some()
    }
}

fn parse_key(value: Value) -> Result<Key, String> {
    let jwk: RawJwk = serde_json::from_value(value).map_err(|_| "not a JWK object".to_string())?;
    if let Some(use_) = &jwk.use_ {
        if use_ != "sig" {
            return Err(format!("use {use_:?} is not for signatures"));
        }
    }
    let (material, family): (KeyMaterial, &'static [Alg]) = match jwk.kty.as_str() {
        "RSA" => (rsa_key(&jwk)?, Alg::RSA_FAMILY),
        "EC" => match jwk.crv.as_deref() {
            Some("P-256") => (p256_key(&jwk)?, &[Alg::Es256]),
            other => return Err(format!("EC curve {other:?} is not supported")),
        },
        "OKP" => match jwk.crv.as_deref() {
            Some("Ed25519") => (ed25519_key(&jwk)?, &[Alg::EdDsa]),
            other => return Err(format!("OKP curve {other:?} is not supported")),
        },
        "oct" => {
            let secret = decode(jwk.k.as_deref(), "k")?;
            if secret.len() < 32 {
                return Err("oct key shorter than 256 bits".to_string());
            }
            (KeyMaterial::Hmac(secret), Alg::HMAC_FAMILY)
        }
        other => return Err(format!("kty {other:?} is not supported")),
    };
    // A JWK that names its algorithm allows exactly that one, and it must suit the key type.
    let algs = match jwk.alg.as_deref() {
        None => family,
        Some(name) => match Alg::from_name(name) {
            Some(alg) if family.contains(&alg) => alg.as_slice(),
            _ => return Err(format!("alg {name:?} does not suit kty {:?}", jwk.kty)),
        },
    };
    Ok(Key {
        kid: jwk.kid,
        material,
        algs,
    })
}

fn rsa_key(jwk: &RawJwk) -> Result<KeyMaterial, String> {
    let n = decode(jwk.n.as_deref(), "n")?;
    let e = decode(jwk.e.as_deref(), "e")?;
    let key = RsaVerifyingKey::new(&n, &e)?;
    let bits = key.bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}"
        ));
    }
    Ok(KeyMaterial::Rsa(Box::new(key)))
}

fn p256_key(jwk: &RawJwk) -> Result<KeyMaterial, String> {
    let x = decode(jwk.x.as_deref(), "x")?;
    let y = decode(jwk.y.as_deref(), "y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err("P-256 coordinates must be 32 bytes".to_string());
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map(KeyMaterial::P256)
        .map_err(|_| "P-256 point is not on the curve".to_string())
}

fn ed25519_key(jwk: &RawJwk) -> Result<KeyMaterial, String> {
    let x = decode(jwk.x.as_deref(), "x")?;
    let bytes: [u8; 32] = x
        .try_into()
        .map_err(|_| "Ed25519 key must be 32 bytes".to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map(KeyMaterial::Ed25519)
        .map_err(|_| "Ed25519 key is not a valid curve point".to_string())
}

fn decode(field: Option<&str>, name: &str) -> Result<Vec<u8>, String> {
    let text = field.ok_or_else(|| format!("missing {name:?}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name:?} is not base64url"))
}
