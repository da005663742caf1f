//! Adversarial JWTs in real Envoy (issue 7, README "Algorithms", DESIGN.md "Security
//! invariants"): one gateway takes a barrage of hostile tokens, and every one must be denied with
//! the documented status (401 `invalid_token`, or the session-expired reply for an `exp` in the
//! past), never a 5xx, never reaching the upstream, never echoing the token. Afterwards Envoy's
//! stats must show no allow and every denial, and a valid token must still pass.
//!
//! Every token that carries a real signature is signed by `jsonwebtoken` (`TokenBuilder`, or
//! `jsonwebtoken::crypto::sign` over hand-written header/payload text when no serializer would
//! write that JSON: duplicate members, `crit`, a numeric `kid`, deep nesting). Only structurally
//! broken tokens are assembled by hand, and signature bytes are written by hand only where the
//! attack *is* those bytes (r = s = 0, s = n, s + n, a non-canonical Ed25519 S, DER framing).
//!
//! A few odd-but-valid tokens have a documented outcome other than a denial, checked after the
//! barrage: a fractional `exp` (RFC 7519 NumericDate may be non-integer; jwt-compact truncates
//! it), an `exp` in year 9999, and NUL characters in claims (control characters are dropped from
//! identity headers, README "Identity headers" / `claims::header_value`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use authgate_integration::expect::{self, Check, Checks};
use authgate_integration::plugin::{corp_claims, corp_config, local_provider, AUDIENCE, ISSUER};
use authgate_integration::tokens::{
    b64, b64_bytes, corrupt_signature, now, sign_raw, sign_raw_with, signature_bytes, swap_payload,
    with_signature_bytes, TokenBuilder,
};
use authgate_integration::{jwks, FixtureKey, Gateway, Reply, Req};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// Headers of tokens signed with [`sign_raw`] by the fixture keys.
const RS_HEADER: &str = r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#;
const ES_HEADER: &str = r#"{"alg":"ES256","typ":"JWT","kid":"ec-1"}"#;

/// The P-256 group order n (big-endian).
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// The Ed25519 group order L = 2^252 + 27742317777372353535851937790883648493 (little-endian,
/// as S is encoded in a signature).
const ED25519_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// What the contract says a case gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// 401 `invalid_token` with `WWW-Authenticate: Bearer …, error="invalid_token"`.
    InvalidToken,
    /// A signed token whose `exp` passed beyond the leeway: the `api` session-expired reply (401
    /// `session_expired`, README "Decisions").
    SessionExpired,
}

struct Case {
    name: String,
    token: String,
    want: Want,
    /// A raw value (e.g. a hostile `kid`) that must not be echoed either.
    probe: Option<String>,
}

#[derive(Default)]
struct Table {
    cases: Vec<Case>,
}

impl Table {
    fn deny(&mut self, name: impl Into<String>, token: String) {
        self.push(name, token, Want::InvalidToken, None);
    }

    fn expired(&mut self, name: impl Into<String>, token: String) {
        self.push(name, token, Want::SessionExpired, None);
    }

    fn deny_probe(&mut self, name: impl Into<String>, token: String, probe: &str) {
        self.push(name, token, Want::InvalidToken, Some(probe.to_string()));
    }

    fn push(&mut self, name: impl Into<String>, token: String, want: Want, probe: Option<String>) {
        self.cases.push(Case {
            name: name.into(),
            token,
            want,
            probe,
        });
    }
}

/// Claims the gateway accepts (iss, aud, sub, exp in 1 h, email, roles, scopes, tenant).
fn good() -> Value {
    corp_claims("alice")
}

fn good_with(name: &str, value: Value) -> Value {
    let mut claims = good();
    claims[name] = value;
    claims
}

/// The good claims as JSON text with `members` (raw JSON text) written first, and any member
/// they name removed from the rest: lets a case write members no serializer would.
fn claims_text_with(members: &str, drop: &[&str]) -> String {
    let mut claims = good();
    if let Some(map) = claims.as_object_mut() {
        for name in drop {
            map.remove(*name);
        }
    }
    let rest = claims.to_string();
    format!("{{{members},{}", &rest[1..])
}

fn signed(key: FixtureKey, claims: Value) -> String {
    TokenBuilder::new(key).claims(claims).sign()
}

/// `sign_raw` over bytes that need not be UTF-8 (the payload of one case).
fn sign_raw_payload_bytes(key: FixtureKey, header: &str, payload: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64_bytes(payload));
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.encoding_key(), key.alg())
            .unwrap_or_else(|e| panic!("signing: {e}"));
    format!("{signing_input}.{signature}")
}

/// `[[[…]]]`, `depth` levels.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// `{"a":{"a":…{}…}}`, `depth` levels.
fn nested_objects(depth: usize) -> String {
    format!("{}{{}}{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// Big-endian `a + b` of equal lengths; `None` when the sum needs another byte.
fn add_be(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; a.len()];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    (carry == 0).then_some(out)
}

/// Little-endian `a + b` of equal lengths (wrapping; never wraps for S + L).
fn add_le(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut carry = 0u16;
    for i in 0..a.len() {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    out
}

/// Big-endian `a - 1` (for a > 0).
fn minus_one_be(a: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte > 0 {
            *byte -= 1;
            break;
        }
        *byte = 0xff;
    }
    out
}

/// A DER INTEGER of an unsigned big-endian value.
fn der_integer(value: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    let mut out = vec![0x02, bytes.len() as u8];
    out.extend(bytes);
    out
}

/// A raw JWS ECDSA signature (r || s, 32 bytes each) re-framed as the DER `SEQUENCE { r, s }`
/// that X.509 / OpenSSL use.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let body: Vec<u8> = [der_integer(r), der_integer(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// The rsa-1 modulus n (big-endian, 256 bytes) from its JWK.
fn rsa1_modulus() -> Vec<u8> {
    let jwk = FixtureKey::Rsa1.public_jwk();
    URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("rsa-1 n: {e}"))
}

/// Keeps `len` characters of a token's signature, rounded down to a whole base64 quantum.
fn truncate_signature(token: &str, keep: usize) -> String {
    let (signing_input, signature) = token.rsplit_once('.').unwrap_or((token, ""));
    let keep = keep.min(signature.len()) / 4 * 4;
    format!("{signing_input}.{}", &signature[..keep])
}

fn segments(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

/// `alg: none` with this spelling, built by hand (no library signs `none`).
fn unsigned(alg: &str) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"});
    format!("{}.{}", b64(&header.to_string()), b64(&good().to_string()))
}

fn build_table() -> Table {
    let mut t = Table::default();
    let valid_rs = signed(FixtureKey::Rsa1, good());
    let valid_es = signed(FixtureKey::Ec1, good());
    let valid_ed = signed(FixtureKey::Ed1, good());

    // --- alg none, any case, with and without the trailing dot, with an empty or garbage
    // signature; and other names that are not algorithms.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let base = unsigned(alg);
        t.deny(format!("alg {alg}, trailing dot"), format!("{base}."));
        t.deny(format!("alg {alg}, no trailing dot"), base.clone());
        t.deny(
            format!("alg {alg}, garbage signature"),
            format!("{base}.{}", b64("garbage-signature-bytes")),
        );
    }
    t.deny(
        "alg none with a real RS256 signature over the same input",
        sign_raw(
            FixtureKey::Rsa1,
            r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#,
            &good().to_string(),
        ),
    );
    for (what, header) in [
        ("no alg", r#"{"typ":"JWT","kid":"rsa-1"}"#),
        ("alg empty", r#"{"alg":"","typ":"JWT","kid":"rsa-1"}"#),
        (
            "alg rs256 (lower case)",
            r#"{"alg":"rs256","typ":"JWT","kid":"rsa-1"}"#,
        ),
        (
            "alg \"RS256 \"",
            r#"{"alg":"RS256 ","typ":"JWT","kid":"rsa-1"}"#,
        ),
        (
            "alg as an array",
            r#"{"alg":["RS256"],"typ":"JWT","kid":"rsa-1"}"#,
        ),
        ("alg as null", r#"{"alg":null,"typ":"JWT","kid":"rsa-1"}"#),
    ] {
        t.deny(
            format!("{what}, signed RS256 by rsa-1"),
            sign_raw(FixtureKey::Rsa1, header, &good().to_string()),
        );
    }
    t.deny(
        "PS256 by rsa-1 (its JWK allows RS256 only)",
        TokenBuilder::new(FixtureKey::Rsa1)
            .alg(Algorithm::PS256)
            .claims(good())
            .sign(),
    );
    t.deny(
        "RS512 by rsa-1 (its JWK allows RS256 only)",
        TokenBuilder::new(FixtureKey::Rsa1)
            .alg(Algorithm::RS512)
            .claims(good())
            .sign(),
    );
    t.deny(
        "ES256 token under kid ed-1",
        TokenBuilder::new(FixtureKey::Ec1)
            .kid(Some("ed-1"))
            .claims(good())
            .sign(),
    );
    t.deny(
        "EdDSA token under kid rsa-1",
        TokenBuilder::new(FixtureKey::Ed1)
            .kid(Some("rsa-1"))
            .claims(good())
            .sign(),
    );

    // --- HS256 signed with a public key as the HMAC secret (key confusion).
    let rsa_pem = FixtureKey::Rsa1.public_pem().unwrap_or_default();
    let rsa_jwk = FixtureKey::Rsa1.public_jwk();
    let rsa_n = rsa_jwk["n"].as_str().unwrap_or_default().to_string();
    let hs = |kid: Option<&str>, secret: &[u8]| {
        TokenBuilder::new(FixtureKey::Rsa1)
            .kid(kid)
            .claims(good())
            .hmac_secret(secret)
            .sign()
    };
    let confusion: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("RSA public PEM", Some("rsa-1"), rsa_pem.as_bytes().to_vec()),
        (
            "RSA public PEM without the final newline",
            Some("rsa-1"),
            rsa_pem.trim_end().as_bytes().to_vec(),
        ),
        ("RSA public PEM, no kid", None, rsa_pem.as_bytes().to_vec()),
        (
            "RSA public JWK (JSON text)",
            Some("rsa-1"),
            rsa_jwk.to_string().into_bytes(),
        ),
        (
            "RSA JWK n (base64url text)",
            Some("rsa-1"),
            rsa_n.as_bytes().to_vec(),
        ),
        ("RSA JWK n (decoded bytes)", Some("rsa-1"), rsa1_modulus()),
        (
            "EC public PEM",
            Some("ec-1"),
            FixtureKey::Ec1
                .public_pem()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        ),
        (
            "Ed25519 public PEM",
            Some("ed-1"),
            FixtureKey::Ed1
                .public_pem()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        ),
    ];
    for (what, kid, secret) in confusion {
        t.deny(
            format!("HS256 with the {what} as secret (kid {kid:?})"),
            hs(kid, &secret),
        );
    }
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign_raw_with(
            alg,
            &EncodingKey::from_secret(rsa_pem.as_bytes()),
            &format!(r#"{{"alg":"{alg:?}","typ":"JWT","kid":"rsa-1"}}"#),
            &good().to_string(),
        );
        t.deny(format!("{alg:?} with the RSA public PEM as secret"), token);
    }

    // --- Embedded keys and key URLs, validly signed by the attacker's key (rsa-3), and even by
    // the real key: their presence alone is refused.
    let attacker_jwk = serde_json::from_value(FixtureKey::Rsa3.public_jwk()).ok();
    let real_jwk = serde_json::from_value(FixtureKey::Rsa1.public_jwk()).ok();
    let fake_cert = STANDARD.encode(b"0\x82\x01\x0anot really a certificate");
    let attacker = |kid: Option<&str>| TokenBuilder::new(FixtureKey::Rsa3).kid(kid).claims(good());
    t.deny(
        "embedded jwk (attacker key, kid rsa-3)",
        attacker(Some("rsa-3"))
            .header(|h| h.jwk = attacker_jwk.clone())
            .sign(),
    );
    t.deny(
        "embedded jwk (attacker key, kid rsa-1)",
        attacker(Some("rsa-1"))
            .header(|h| h.jwk = attacker_jwk.clone())
            .sign(),
    );
    t.deny(
        "embedded jwk (attacker key, no kid)",
        attacker(None)
            .header(|h| h.jwk = attacker_jwk.clone())
            .sign(),
    );
    t.deny(
        "embedded jwk of the real key, signed by the real key",
        TokenBuilder::new(FixtureKey::Rsa1)
            .claims(good())
            .header(|h| h.jwk = real_jwk.clone())
            .sign(),
    );
    t.deny(
        "jku to the attacker's JWKS (kid rsa-3)",
        attacker(Some("rsa-3"))
            .header(|h| h.jku = Some("http://127.0.0.1:9/jwks.json".into()))
            .sign(),
    );
    t.deny(
        "jku, signed by the real key",
        TokenBuilder::new(FixtureKey::Rsa1)
            .claims(good())
            .header(|h| h.jku = Some("http://127.0.0.1:9/jwks.json".into()))
            .sign(),
    );
    t.deny(
        "x5u to the attacker's certificate (kid rsa-3)",
        attacker(Some("rsa-3"))
            .header(|h| h.x5u = Some("http://127.0.0.1:9/cert.pem".into()))
            .sign(),
    );
    t.deny(
        "x5u, signed by the real key",
        TokenBuilder::new(FixtureKey::Rsa1)
            .claims(good())
            .header(|h| h.x5u = Some("http://127.0.0.1:9/cert.pem".into()))
            .sign(),
    );
    t.deny(
        "x5c with the attacker's chain (no kid)",
        attacker(None)
            .header(|h| h.x5c = Some(vec![fake_cert.clone()]))
            .sign(),
    );
    t.deny(
        "x5c, signed by the real key",
        TokenBuilder::new(FixtureKey::Rsa1)
            .claims(good())
            .header(|h| h.x5c = Some(vec![fake_cert.clone()]))
            .sign(),
    );

    // --- kid: unknown, hostile strings, wrong types. Signed by the real key, so only the kid
    // decides.
    let rsa1_with_kid = |kid: &str| {
        TokenBuilder::new(FixtureKey::Rsa1)
            .kid(Some(kid))
            .claims(good())
            .sign()
    };
    t.deny(
        "unknown kid (attacker's own key)",
        signed(FixtureKey::Rsa3, good()),
    );
    let long_kid = "k".repeat(10 * 1024);
    for (what, kid) in [
        ("unknown kid", "no-such-key"),
        ("kid with path traversal", "../../etc/passwd"),
        (
            "kid with deeper path traversal",
            "../../../../../../../dev/null",
        ),
        ("kid with SQL", "' OR 1=1 --"),
        ("kid with SQL after a real kid", "rsa-1' OR '1'='1"),
        ("kid in another case", "RSA-1"),
        ("kid with a trailing space", "rsa-1 "),
        ("kid with a NUL suffix", "rsa-1\u{0}"),
        ("kid with CR/LF", "rsa-1\r\nx-evil: 1"),
        ("10 KB kid", long_kid.as_str()),
    ] {
        t.deny_probe(what, rsa1_with_kid(kid), kid);
    }
    for (what, kid) in [
        ("a number", "1"),
        ("an array", r#"["rsa-1"]"#),
        ("an object", r#"{"kid":"rsa-1"}"#),
        ("a boolean", "true"),
    ] {
        t.deny(
            format!("kid as {what}, signed by rsa-1"),
            sign_raw(
                FixtureKey::Rsa1,
                &format!(r#"{{"alg":"RS256","typ":"JWT","kid":{kid}}}"#),
                &good().to_string(),
            ),
        );
    }

    // --- Signature bytes: stripped, truncated, extended, swapped, corrupted, zero; for each
    // algorithm family the gateway accepts.
    for (family, valid, key) in [
        ("RS256", &valid_rs, FixtureKey::Rsa1),
        ("ES256", &valid_es, FixtureKey::Ec1),
        ("EdDSA", &valid_ed, FixtureKey::Ed1),
    ] {
        let sig = signature_bytes(valid);
        let (signing_input, _) = valid.rsplit_once('.').unwrap_or((valid, ""));
        t.deny(
            format!("{family}: signature stripped"),
            format!("{signing_input}."),
        );
        let signature_chars = valid.len() - signing_input.len() - 1;
        t.deny(
            format!("{family}: signature cut in half"),
            truncate_signature(valid, signature_chars / 2),
        );
        t.deny(
            format!("{family}: last signature byte dropped"),
            with_signature_bytes(valid, &sig[..sig.len() - 1]),
        );
        t.deny(
            format!("{family}: first signature byte dropped"),
            with_signature_bytes(valid, &sig[1..]),
        );
        t.deny(
            format!("{family}: a zero byte appended to the signature"),
            with_signature_bytes(valid, &[sig.as_slice(), &[0]].concat()),
        );
        t.deny(
            format!("{family}: a zero byte prepended to the signature"),
            with_signature_bytes(valid, &[&[0], sig.as_slice()].concat()),
        );
        t.deny(
            format!("{family}: all-zero signature of the right length"),
            with_signature_bytes(valid, &vec![0; sig.len()]),
        );
        t.deny(
            format!("{family}: corrupted signature"),
            corrupt_signature(valid),
        );
        let other = signed(key, good_with("sub", json!("mallory")));
        let other_sig = other.rsplit('.').next().unwrap_or("");
        t.deny(
            format!("{family}: signature of another valid token (swapped)"),
            format!("{signing_input}.{other_sig}"),
        );
        t.deny(
            format!("{family}: payload tampered (sub root), original signature"),
            swap_payload(valid, &good_with("sub", json!("root"))),
        );
        t.deny(
            format!("{family}: payload tampered (exp + 1 year), original signature"),
            swap_payload(valid, &good_with("exp", json!(now() + 365 * 24 * 3600))),
        );
        let pretty = serde_json::to_string_pretty(&good()).unwrap_or_default();
        let parts = segments(valid);
        t.deny(
            format!("{family}: same claims re-encoded (whitespace), original signature"),
            format!("{}.{}.{}", parts[0], b64(&pretty), parts[2]),
        );
        t.deny(
            format!("{family}: header re-encoded (typ changed), original signature"),
            format!(
                "{}.{}.{}",
                b64(&format!(
                    r#"{{"alg":"{:?}","typ":"at+jwt","kid":"{}"}}"#,
                    key.alg(),
                    key.kid()
                )),
                parts[1],
                parts[2]
            ),
        );
    }

    // RSA signature representatives out of range or degenerate (RFC 8017 8.2.2: the signature
    // must be exactly k bytes and s < n).
    let n = rsa1_modulus();
    let one = {
        let mut v = vec![0u8; n.len()];
        v[n.len() - 1] = 1;
        v
    };
    for (what, sig) in [
        ("s = 1", one),
        ("s = n", n.clone()),
        ("s = n - 1", minus_one_be(&n)),
        ("s = 2^2048 - 1 (> n)", vec![0xff; n.len()]),
    ] {
        t.deny(
            format!("RS256: {what}"),
            with_signature_bytes(&valid_rs, &sig),
        );
    }
    // s + n is congruent to a valid s: only the range check refuses it. RS256 is deterministic,
    // so look for a token whose s + n still fits in 256 bytes.
    let s_plus_n = (0..256).find_map(|jti| {
        let token = signed(
            FixtureKey::Rsa1,
            good_with("jti", json!(format!("s+n-{jti}"))),
        );
        add_be(&signature_bytes(&token), &n).map(|sig| with_signature_bytes(&token, &sig))
    });
    match s_plus_n {
        Some(token) => t.deny("RS256: s + n (valid s, not reduced mod n)", token),
        None => panic!("no RS256 token with s + n < 2^2048 in 256 tries"),
    }

    // ECDSA: the "psychic signature" (CVE-2022-21449) r = s = 0, r = s = n, DER framing.
    let es_sig = signature_bytes(&valid_es);
    t.deny(
        "ES256: r = s = 0 (psychic signature, 64 zero bytes)",
        with_signature_bytes(&valid_es, &[0u8; 64]),
    );
    t.deny(
        "ES256: r = s = 0 on a token with a fresh payload (sub root)",
        with_signature_bytes(
            &sign_raw(
                FixtureKey::Ec1,
                ES_HEADER,
                &good_with("sub", json!("root")).to_string(),
            ),
            &[0u8; 64],
        ),
    );
    t.deny(
        "ES256: r = s = n",
        with_signature_bytes(&valid_es, &[P256_ORDER, P256_ORDER].concat()),
    );
    t.deny(
        "ES256: r = 0, s valid",
        with_signature_bytes(&valid_es, &[&[0u8; 32], &es_sig[32..]].concat()),
    );
    t.deny(
        "ES256: DER-encoded signature instead of raw r || s",
        with_signature_bytes(&valid_es, &ecdsa_der(&es_sig)),
    );
    t.deny(
        "ES256: r and s swapped",
        with_signature_bytes(&valid_es, &[&es_sig[32..], &es_sig[..32]].concat()),
    );
    // Ed25519: S must be canonical (S < L, RFC 8032 5.1.7).
    let ed_sig = signature_bytes(&valid_ed);
    let s_plus_l = add_le(&ed_sig[32..], &ED25519_ORDER_LE);
    t.deny(
        "EdDSA: S + L (non-canonical S of a valid signature)",
        with_signature_bytes(&valid_ed, &[&ed_sig[..32], s_plus_l.as_slice()].concat()),
    );

    // --- Encoding and structure.
    let parts = segments(&valid_rs);
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let mid = s.len() / 2;
    t.deny(
        "'+' in the signature (base64, not base64url)",
        format!("{h}.{p}.{}+{}", &s[..mid], &s[mid + 1..]),
    );
    t.deny(
        "'/' in the payload",
        format!("{h}.{}/{}.{s}", &p[..p.len() / 2], &p[p.len() / 2 + 1..]),
    );
    t.deny(
        "'*' in the header",
        format!("{}*{}.{p}.{s}", &h[..4], &h[5..]),
    );
    t.deny(
        "whole token in standard base64 with padding",
        format!(
            "{}.{}.{}",
            STANDARD.encode(URL_SAFE_NO_PAD.decode(h).unwrap_or_default()),
            STANDARD.encode(URL_SAFE_NO_PAD.decode(p).unwrap_or_default()),
            STANDARD.encode(signature_bytes(&valid_rs))
        ),
    );
    t.deny("'=' padding after the signature", format!("{valid_rs}=="));
    t.deny("'=' padding after the payload", format!("{h}.{p}=.{s}"));
    t.deny("'=' padding after the header", format!("{h}=.{p}.{s}"));
    t.deny(
        "a space inside the signature",
        format!("{h}.{p}.{} {}", &s[..mid], &s[mid..]),
    );
    t.deny("one segment (base64url JSON)", h.to_string());
    t.deny("2 segments (header.payload)", format!("{h}.{p}"));
    t.deny("4 segments (extra signature)", format!("{valid_rs}.{s}"));
    t.deny(
        "5 segments (JWE-shaped)",
        format!(
            "{}.{}.{}.{}.{}",
            b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}"#),
            b64("encrypted-key-bytes"),
            b64("iv-bytes-123"),
            p,
            b64("tag-bytes")
        ),
    );
    t.deny("empty segments: ..", "..".to_string());
    t.deny("empty segments: ...", "...".to_string());
    t.deny("empty header", format!(".{p}.{s}"));
    t.deny("empty payload", format!("{h}..{s}"));
    t.deny("empty header and payload", format!("..{s}"));

    // Header or payload not a JSON object. Payloads are signed by rsa-1 so only the parsing
    // decides; headers that do not parse cannot name a key, so they are hand-built.
    for (what, header) in [
        ("not JSON", "nope"),
        ("truncated JSON", r#"{"alg":"RS256","kid":"rsa-1""#),
        ("a JSON array", r#"["RS256","rsa-1"]"#),
        ("a JSON string", r#""RS256""#),
        ("JSON null", "null"),
        ("a JSON number", "42"),
        (
            "JSON with a BOM",
            "\u{feff}{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}",
        ),
        (
            "JSON with trailing garbage",
            r#"{"alg":"RS256","kid":"rsa-1"}xyz"#,
        ),
    ] {
        t.deny(
            format!("header is {what}"),
            format!("{}.{p}.{s}", b64(header)),
        );
    }
    for (what, payload) in [
        ("not JSON", "nope".to_string()),
        ("truncated JSON", {
            let text = good().to_string();
            text[..text.len() - 1].to_string()
        }),
        ("a JSON array", format!("[{}]", good())),
        ("a JSON string", r#""alice""#.to_string()),
        ("JSON null", "null".to_string()),
        ("a JSON number", "42".to_string()),
        ("JSON with trailing garbage", format!("{} xyz", good())),
        ("two JSON objects", format!("{}{}", good(), good())),
    ] {
        t.deny(
            format!("payload is {what} (signed by rsa-1)"),
            sign_raw(FixtureKey::Rsa1, RS_HEADER, &payload),
        );
    }
    t.deny(
        "payload is not UTF-8 (signed by rsa-1)",
        sign_raw_payload_bytes(
            FixtureKey::Rsa1,
            RS_HEADER,
            &[
                b"{\"sub\":\"\xff\xfe\",".as_slice(),
                &good().to_string().as_bytes()[1..],
            ]
            .concat(),
        ),
    );
    t.deny(
        "cty JWT (nested token) header, signed by rsa-1",
        sign_raw(
            FixtureKey::Rsa1,
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","cty":"JWT"}"#,
            &good().to_string(),
        ),
    );

    // --- Time claims of the wrong type or out of range (signed by rsa-1).
    let in_an_hour = now() + 3600;
    for (what, name, value) in [
        (
            "exp as a numeric string",
            "exp",
            json!(in_an_hour.to_string()),
        ),
        ("exp as a string (year 2286)", "exp", json!("9999999999")),
        ("exp as an ISO date", "exp", json!("2099-01-01T00:00:00Z")),
        ("exp as null", "exp", Value::Null),
        ("exp as true", "exp", json!(true)),
        ("exp as an object", "exp", json!({"$date": in_an_hour})),
        ("exp as an array", "exp", json!([in_an_hour])),
        ("exp = i64::MAX", "exp", json!(i64::MAX)),
        ("exp = u64::MAX", "exp", json!(u64::MAX)),
        ("exp = i64::MIN", "exp", json!(i64::MIN)),
        ("exp = 1e300", "exp", json!(1e300)),
        ("nbf as a string", "nbf", json!((now() - 60).to_string())),
        (
            "nbf as a float 600.5 s ahead",
            "nbf",
            json!(now() as f64 + 600.5),
        ),
        ("nbf = i64::MAX", "nbf", json!(i64::MAX)),
        ("iat as a string", "iat", json!(now().to_string())),
        ("iat a year ahead", "iat", json!(now() + 365 * 24 * 3600)),
        ("iss with a NUL", "iss", json!(format!("{ISSUER}\u{0}"))),
        ("aud with a NUL", "aud", json!(format!("{AUDIENCE}\u{0}"))),
        ("iss as an array", "iss", json!([ISSUER])),
    ] {
        t.deny(
            format!("{what} (signed by rsa-1)"),
            signed(FixtureKey::Rsa1, good_with(name, value)),
        );
    }
    t.expired(
        "exp as a float 600.5 s ago (signed): session expired",
        signed(
            FixtureKey::Rsa1,
            good_with("exp", json!(now() as f64 - 600.5)),
        ),
    );
    t.expired(
        "exp = -1 (1969, signed): session expired",
        signed(FixtureKey::Rsa1, good_with("exp", json!(-1))),
    );

    // --- Duplicate members (RFC 7519 4: reject, or take the last; RFC 8725 recommends
    // rejecting), signed over the exact bytes by rsa-1.
    t.deny(
        r#"duplicate claim {"sub":"a","sub":"b"}"#,
        sign_raw(
            FixtureKey::Rsa1,
            RS_HEADER,
            &claims_text_with(r#""sub":"a","sub":"b""#, &["sub"]),
        ),
    );
    t.deny(
        "duplicate iss (evil first, good last)",
        sign_raw(
            FixtureKey::Rsa1,
            RS_HEADER,
            &claims_text_with(
                &format!(r#""iss":"https://evil.test","iss":"{ISSUER}""#),
                &["iss"],
            ),
        ),
    );
    t.deny(
        "duplicate iss (good first, evil last)",
        sign_raw(
            FixtureKey::Rsa1,
            RS_HEADER,
            &claims_text_with(
                &format!(r#""iss":"{ISSUER}","iss":"https://evil.test""#),
                &["iss"],
            ),
        ),
    );
    t.deny(
        "duplicate exp (past, then future)",
        sign_raw(
            FixtureKey::Rsa1,
            RS_HEADER,
            &claims_text_with(
                &format!(r#""exp":{},"exp":{}"#, now() - 7200, now() + 3600),
                &["exp"],
            ),
        ),
    );
    t.deny(
        "duplicate aud (other, then gateway)",
        sign_raw(
            FixtureKey::Rsa1,
            RS_HEADER,
            &claims_text_with(&format!(r#""aud":"other","aud":"{AUDIENCE}""#), &["aud"]),
        ),
    );
    t.deny(
        r#"duplicate header alg {"alg":"none","alg":"RS256"}"#,
        sign_raw(
            FixtureKey::Rsa1,
            r#"{"alg":"none","alg":"RS256","typ":"JWT","kid":"rsa-1"}"#,
            &good().to_string(),
        ),
    );
    t.deny(
        r#"duplicate header kid {"kid":"rsa-3","kid":"rsa-1"}"#,
        sign_raw(
            FixtureKey::Rsa1,
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-3","kid":"rsa-1"}"#,
            &good().to_string(),
        ),
    );

    // --- crit (RFC 7515 4.1.11: an unknown critical parameter must be rejected).
    for (what, header) in [
        (
            "unknown crit extension",
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","crit":["urn:example:x"],"urn:example:x":1}"#,
        ),
        (
            "crit b64:false (unencoded payload)",
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","crit":["b64"],"b64":false}"#,
        ),
        (
            "crit naming a claim",
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","crit":["exp"]}"#,
        ),
        (
            "crit empty array",
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","crit":[]}"#,
        ),
        (
            "crit as a string",
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","crit":"urn:example:x"}"#,
        ),
    ] {
        t.deny(
            format!("{what} (signed by rsa-1)"),
            sign_raw(FixtureKey::Rsa1, header, &good().to_string()),
        );
    }

    // --- Very deep JSON, validly signed. 10,000 nested arrays exceed 16 KiB once encoded (the
    // size limit refuses them unparsed), so shallower nestings that fit reach the JSON parser.
    for depth in [10_000, 5_000] {
        t.deny(
            format!("{depth} nested arrays in a claim (signed by rsa-1)"),
            sign_raw(
                FixtureKey::Rsa1,
                RS_HEADER,
                &claims_text_with(&format!(r#""deep":{}"#, nested_arrays(depth)), &[]),
            ),
        );
    }
    t.deny(
        "1,500 nested objects in a claim (signed by rsa-1)",
        sign_raw(
            FixtureKey::Rsa1,
            RS_HEADER,
            &claims_text_with(&format!(r#""deep":{}"#, nested_objects(1_500)), &[]),
        ),
    );
    t.deny(
        "3,000 nested arrays in the header (signed by rsa-1)",
        sign_raw(
            FixtureKey::Rsa1,
            &format!(
                r#"{{"alg":"RS256","typ":"JWT","kid":"rsa-1","x":{}}}"#,
                nested_arrays(3_000)
            ),
            &good().to_string(),
        ),
    );

    // --- Size: a 60 KB token with a valid signature (and the claims it needs).
    let mut padded = good();
    padded["padding"] = json!("x".repeat(44_500));
    let big = signed(FixtureKey::Rsa1, padded);
    assert!(
        (59_000..61_000).contains(&big.len()),
        "the big token is {} bytes",
        big.len()
    );
    t.deny(format!("{} byte token (signed by rsa-1)", big.len()), big);
    t
}

/// One request; `Err` on a transport failure or a reply slower than 10 s (a hang).
fn send(gw: &Gateway, token: &str, request_id: &str) -> Result<(Reply, Duration), String> {
    let started = Instant::now();
    let reply = Req::get(gw.url("/api/items"))
        .bearer(token)
        .header("x-request-id", request_id)
        .timeout(Duration::from_secs(10))
        .try_send()
        .map_err(|e| format!("no reply within 10 s ({e})"))?;
    Ok((reply, started.elapsed()))
}

/// Neither the token nor any of its segments of 16+ characters nor `probe` is in the reply.
fn nothing_echoed(reply: &Reply, token: &str, probe: Option<&str>) -> Check {
    expect::no_leak(reply, token)?;
    for part in token.split('.').filter(|p| p.len() >= 16) {
        expect::no_leak(reply, part)?;
    }
    match probe {
        Some(raw) if raw.trim().len() >= 4 => expect::no_leak(reply, raw),
        _ => Ok(()),
    }
}

fn stat_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    let get = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(0);
    get(after).saturating_sub(get(before))
}

fn equal(what: &str, got: u64, want: u64) -> Check {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got}, expected {want}"))
    }
}

/// No control character (NUL, CR, LF, …) in an identity header the upstream received.
fn clean_upstream_header(reply: &Reply, name: &str) -> Check {
    match reply.upstream_header(name) {
        Some(value) if value.chars().any(char::is_control) => Err(format!(
            "upstream {name} holds a control character: {value:?}"
        )),
        Some(_) => Ok(()),
        None => Err(format!("upstream did not get {name}; got {reply}")),
    }
}

#[test]
fn adversarial_tokens_are_denied_and_envoy_keeps_serving() {
    let mut plugin = corp_config(local_provider(&[
        FixtureKey::Rsa1,
        FixtureKey::Ec1,
        FixtureKey::Ed1,
    ]));
    plugin["session"] = json!({"reauth_url": "https://sso.test/reauth"});
    let mut gw = Gateway::start(&plugin, jwks(&[]));
    let table = build_table();
    let mut checks = Checks::new();

    // Verify (and so cache) the genuine tokens first: a cached verification must never let a
    // token with the same payload but other signature bytes through.
    for key in [FixtureKey::Rsa1, FixtureKey::Ec1, FixtureKey::Ed1] {
        let reply = send(&gw, &signed(key, good()), "prime");
        checks.check(
            &format!("{}: a genuine token passes before the barrage", key.kid()),
            reply.and_then(|(r, _)| expect::allowed(&r)),
        );
    }

    let before = gw.envoy.stats();
    let upstream_before = gw.upstream.requests();
    let started = Instant::now();
    let mut slowest = (Duration::ZERO, String::new());
    let mut outcomes: Vec<String> = Vec::new();
    for (i, case) in table.cases.iter().enumerate() {
        let request_id = format!("adv-{i}");
        let (reply, elapsed) = match send(&gw, &case.token, &request_id) {
            Ok(r) => r,
            Err(e) => {
                checks.check(&case.name, Err(e));
                continue;
            }
        };
        if elapsed > slowest.0 {
            slowest = (elapsed, case.name.clone());
        }
        outcomes.push(format!(
            "{:>4} {:<70} {}",
            reply.status,
            case.name,
            reply.json_str("message").unwrap_or_default()
        ));
        checks.check(
            &format!("{}: no 5xx", case.name),
            if reply.status >= 500 {
                Err(format!("server error; got {reply}"))
            } else {
                Ok(())
            },
        );
        let outcome = match case.want {
            Want::InvalidToken => expect::invalid_token(&reply),
            Want::SessionExpired => expect::session_expired_api(&reply),
        };
        checks.check(&format!("{}: {:?}", case.name, case.want), outcome);
        if !reply.is_from_upstream() {
            checks.check(
                &format!("{}: request_id", case.name),
                expect::request_id(&reply, &request_id),
            );
        }
        checks.check(
            &format!("{}: nothing echoed", case.name),
            nothing_echoed(&reply, &case.token, case.probe.as_deref()),
        );
    }
    let barrage_time = started.elapsed();
    eprintln!(
        "{} adversarial requests in {barrage_time:?}; slowest {:?} ({})\n{}",
        table.cases.len(),
        slowest.0,
        slowest.1,
        outcomes.join("\n")
    );

    let upstream_hits = gw.upstream.requests() - upstream_before;
    checks.check(
        "no adversarial token reached the upstream",
        equal(
            "upstream requests during the barrage",
            upstream_hits as u64,
            0,
        ),
    );
    let after = gw.envoy.stats();
    let total = table.cases.len() as u64;
    let expired = table
        .cases
        .iter()
        .filter(|c| c.want == Want::SessionExpired)
        .count() as u64;
    let d = |name: &str| stat_delta(&before, &after, name);
    checks.check(
        "stats: nothing allowed during the barrage",
        equal("authgate.allowed", d("authgate.allowed"), 0),
    );
    checks.check(
        "stats: every adversarial request denied",
        equal("authgate.denied", d("authgate.denied"), total),
    );
    checks.check(
        "stats: denials split by credential kind add up",
        equal(
            "authgate.denied.jwt + .opaque_token",
            d("authgate.denied.jwt") + d("authgate.denied.opaque_token"),
            total,
        ),
    );
    checks.check(
        "stats: invalid_token denials",
        equal(
            "authgate.denied.invalid_token",
            d("authgate.denied.invalid_token"),
            total - expired,
        ),
    );
    checks.check(
        "stats: session_expired replies",
        equal(
            "authgate.session_expired",
            d("authgate.session_expired"),
            expired,
        ),
    );

    // Odd but valid tokens, with their documented outcome.
    let before = gw.envoy.stats();
    let float_exp = signed(
        FixtureKey::Rsa1,
        good_with("exp", json!(now() as f64 + 3600.75)),
    );
    checks.check(
        "exp as a float 1 h ahead: accepted (NumericDate may be fractional; truncated)",
        send(&gw, &float_exp, "float-exp").and_then(|(r, _)| {
            expect::allowed(&r)
                .and_then(|()| expect::upstream_header(&r, "x-auth-subject", Some("alice")))
        }),
    );
    let year_9999 = signed(
        FixtureKey::Rsa1,
        good_with("exp", json!(253_402_300_799_i64)),
    );
    checks.check(
        "exp in year 9999 (signed): accepted, nothing bounds a token's lifetime",
        send(&gw, &year_9999, "exp-9999").and_then(|(r, _)| expect::allowed(&r)),
    );
    let mut nul_claims = good();
    nul_claims["sub"] = json!("a\u{0}b");
    nul_claims["email"] = json!("a\u{0}b@example.com");
    nul_claims["tenant"] = json!({"id": "ac\u{0}me"});
    nul_claims["realm_access"] = json!({"roles": ["user", "admin\u{0}"]});
    nul_claims["scope"] = json!("llm:invoke read\u{0}x");
    let nul = signed(FixtureKey::Rsa1, nul_claims);
    match send(&gw, &nul, "nul") {
        Ok((reply, _)) => {
            eprintln!(
                "NUL in claims: HTTP {}; upstream x-auth-subject {:?}, x-auth-email {:?}, \
                 x-tenant {:?}",
                reply.status,
                reply.upstream_header("x-auth-subject"),
                reply.upstream_header("x-auth-email"),
                reply.upstream_header("x-tenant")
            );
            checks.check("NUL in claims (signed): accepted", expect::allowed(&reply));
            checks.check(
                "NUL in a role or scope: only that entry is dropped",
                expect::upstream_header(&reply, "x-auth-roles", Some("user")).and_then(|()| {
                    expect::upstream_header(&reply, "x-auth-scopes", Some("llm:invoke"))
                }),
            );
            for name in ["x-auth-subject", "x-auth-email", "x-tenant", "x-auth-roles"] {
                checks.check(
                    &format!("NUL in claims: upstream {name} has no NUL"),
                    clean_upstream_header(&reply, name),
                );
            }
            checks.check(
                "NUL in claims: no token upstream",
                expect::upstream_header(&reply, "authorization", None),
            );
        }
        Err(e) => checks.check("NUL in claims (signed): a reply", Err(e)),
    }

    // After the whole barrage: Envoy still runs and still serves a valid token.
    checks.check(
        "envoy is still running",
        if gw.envoy.is_running() {
            Ok(())
        } else {
            Err("envoy exited".into())
        },
    );
    let fresh = signed(FixtureKey::Rsa1, good_with("sub", json!("after-barrage")));
    checks.check(
        "a fresh valid token gets 200 after the barrage",
        send(&gw, &fresh, "after").and_then(|(r, _)| {
            expect::allowed(&r)
                .and_then(|()| expect::upstream_header(&r, "x-auth-subject", Some("after-barrage")))
        }),
    );
    let after = gw.envoy.stats();
    checks.check(
        "stats: the four valid tokens after the barrage were allowed",
        equal(
            "authgate.allowed",
            stat_delta(&before, &after, "authgate.allowed"),
            4,
        ),
    );
    checks.finish();
}
