//! RS256/384/512 and PS256/384/512 verification on [`Modulus`], as a jwt-compact algorithm.
//!
//! PKCS#1 v1.5 is checked by building the whole expected encoding and comparing it with s^e mod n
//! (no parsing of attacker-controlled ASN.1). PSS follows RFC 8017 §9.1.2 with MGF1 over the same
//! hash and, as RFC 7518 §3.5 requires for JWS, a salt as long as the hash.

use std::borrow::Cow;

use jwt_compact::{Algorithm, AlgorithmSignature};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::core::jwt::alg::{Alg, NoSigningKey};
use crate::core::jwt::montgomery::Modulus;

/// A public RSA key ready for fast verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaVerifyingKey {
    /// n, prepared for the key's exponent.
    modulus: Modulus,
}

/// The largest public exponent accepted, as the `rsa` crate (and OpenSSL's default) limits it:
/// a huge exponent only makes verification slow.
const MAX_EXPONENT: u64 = (1 << 33) - 1;

impl RsaVerifyingKey {
    /// From the JWK's big-endian `n` and `e`; why not when they are no RSA public key.
    pub fn new(n: &[u8], e: &[u8]) -> Result<RsaVerifyingKey, String> {
        let e: Vec<u8> = e.iter().copied().skip_while(|b| *b == 0).collect();
        if e.len() > 8 {
            return Err("invalid RSA key: public exponent too large".to_string());
        }
        let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if exponent < 3 || exponent & 1 == 0 || exponent > MAX_EXPONENT {
            return Err(format!("invalid RSA key: public exponent {exponent}"));
        }
        let modulus = Modulus::from_be_bytes(n, exponent)
            .ok_or_else(|| "invalid RSA key: the modulus must be odd".to_string())?;
        Ok(RsaVerifyingKey { modulus })
    }

    /// Length of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.modulus.bits()
    }
}

/// An RSA signature as the token carries it; its length is checked against the modulus when
/// verifying (jwt-compact's own type needs the `rsa` crate, which nothing else here does).
pub struct RsaSignature(Vec<u8>);

impl AlgorithmSignature for RsaSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(RsaSignature(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FastRsa(pub Alg);

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(message).to_vec(),
            Hash::Sha384 => Sha384::digest(message).to_vec(),
            Hash::Sha512 => Sha512::digest(message).to_vec(),
        }
    }

    /// The DER `DigestInfo` prefix of EMSA-PKCS1-v1_5 (RFC 8017 §9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

impl FastRsa {
    fn scheme(self) -> Option<(Hash, bool)> {
        match self.0 {
            Alg::Rs256 => Some((Hash::Sha256, false)),
            Alg::Rs384 => Some((Hash::Sha384, false)),
            Alg::Rs512 => Some((Hash::Sha512, false)),
            Alg::Ps256 => Some((Hash::Sha256, true)),
            Alg::Ps384 => Some((Hash::Sha384, true)),
            Alg::Ps512 => Some((Hash::Sha512, true)),
            _ => None,
        }
    }
}

impl Algorithm for FastRsa {
    type SigningKey = NoSigningKey;
    type VerifyingKey = RsaVerifyingKey;
    type Signature = RsaSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.0.name())
    }

    fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> RsaSignature {
        match *signing_key {}
    }

    fn verify_signature(
        &self,
        signature: &RsaSignature,
        key: &RsaVerifyingKey,
        message: &[u8],
    ) -> bool {
        let Some((hash, pss)) = self.scheme() else {
            return false;
        };
        let Some(encoded) = key.modulus.pow_be(&signature.as_bytes()) else {
            return false;
        };
        let digest = hash.digest(message);
        if pss {
            pss_matches(hash, &encoded, &digest, key.modulus.bits())
        } else {
            pkcs1_v15_matches(hash, &encoded, &digest)
        }
    }
}

/// EM = 0x00 0x01 FF…FF 0x00 DigestInfo(hash), compared whole.
fn pkcs1_v15_matches(hash: Hash, encoded: &[u8], digest: &[u8]) -> bool {
    let prefix = hash.digest_info_prefix();
    let tail_len = prefix.len() + digest.len();
    let Some(padding_len) = encoded.len().checked_sub(tail_len + 3) else {
        return false;
    };
    if padding_len < 8 {
        return false;
    }
    let mut expected = Vec::with_capacity(encoded.len());
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(2 + padding_len, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(prefix);
    expected.extend_from_slice(digest);
    expected == encoded
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with MGF1(hash) and salt length = hash length.
fn pss_matches(hash: Hash, encoded: &[u8], digest: &[u8], mod_bits: usize) -> bool {
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let h_len = digest.len();
    let s_len = h_len;
    // The integer is below n, so when emBits is a multiple of 8 its top byte is zero.
    let em = match encoded.len() - em_len {
        0 => encoded,
        1 if encoded[0] == 0 => &encoded[1..],
        _ => return false,
    };
    if em_len < h_len + s_len + 2 || em.last() != Some(&0xbc) {
        return false;
    }
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let h = &rest[..h_len];
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8.checked_shl(8 - unused_bits as u32).unwrap_or(0);
    if masked_db.first().is_some_and(|b| b & top_mask != 0) {
        return false;
    }
    let mut db = mgf1(hash, h, masked_db.len());
    for (d, m) in db.iter_mut().zip(masked_db) {
        *d ^= m;
    }
    if let Some(first) = db.first_mut() {
        *first &= !top_mask;
    }
    let ps_len = em_len - h_len - s_len - 2;
    if db[..ps_len].iter().any(|b| *b != 0) || db[ps_len] != 0x01 {
        return false;
    }
    let salt = &db[ps_len + 1..];
    let mut m_prime = vec![0u8; 8];
    m_prime.extend_from_slice(digest);
    m_prime.extend_from_slice(salt);
    hash.digest(&m_prime) == h
}

fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut counter = 0u32;
    while out.len() < len {
        let mut block = seed.to_vec();
        block.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&hash.digest(&block));
        counter += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    //! Differential tests against the `rsa` crate: its keys and signatures, our verification.
    use super::*;
    use jwt_compact::AlgorithmSignature;
    use rsa::pkcs1v15::SigningKey as Pkcs1SigningKey;
    use rsa::pss::BlindedSigningKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    use rsa::RsaPrivateKey;

    fn key_of(private: &RsaPrivateKey) -> RsaVerifyingKey {
        let public = private.to_public_key();
        RsaVerifyingKey::new(&public.n().to_bytes_be(), &public.e().to_bytes_be()).unwrap()
    }

    fn verify(alg: Alg, key: &RsaVerifyingKey, signature: &[u8], message: &[u8]) -> bool {
        let signature = RsaSignature::try_from_slice(signature).unwrap();
        FastRsa(alg).verify_signature(&signature, key, message)
    }

    fn sign(alg: Alg, private: &RsaPrivateKey, message: &[u8]) -> Vec<u8> {
        let mut rng = rand::thread_rng();
        let key = private.clone();
        match alg {
            Alg::Rs256 => Pkcs1SigningKey::<Sha256>::new(key).sign(message).to_vec(),
            Alg::Rs384 => Pkcs1SigningKey::<Sha384>::new(key).sign(message).to_vec(),
            Alg::Rs512 => Pkcs1SigningKey::<Sha512>::new(key).sign(message).to_vec(),
            Alg::Ps256 => BlindedSigningKey::<Sha256>::new(key)
                .sign_with_rng(&mut rng, message)
                .to_vec(),
            Alg::Ps384 => BlindedSigningKey::<Sha384>::new(key)
                .sign_with_rng(&mut rng, message)
                .to_vec(),
            Alg::Ps512 => BlindedSigningKey::<Sha512>::new(key)
                .sign_with_rng(&mut rng, message)
                .to_vec(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn agrees_with_the_rsa_crate_on_random_keys_and_signatures() {
        let mut rng = rand::thread_rng();
        // Odd-sized moduli too: PSS has an edge when the bit length is 1 mod 8. (PS512 needs at
        // least 1048 bits: two 64-byte hashes and two bytes.)
        for bits in [1048usize, 1536, 1537, 1544, 2048, 2049, 3072] {
            let private = RsaPrivateKey::new(&mut rng, bits).unwrap();
            let key = key_of(&private);
            for (i, alg) in Alg::RSA_FAMILY.iter().copied().enumerate() {
                let message = format!("header.payload-{bits}-{i}");
                let signature = sign(alg, &private, message.as_bytes());
                assert!(
                    verify(alg, &key, &signature, message.as_bytes()),
                    "{alg:?} {bits}"
                );
                assert!(!verify(alg, &key, &signature, b"header.payload-other"));
                let mut flipped = signature.clone();
                let last = flipped.len() - 1;
                flipped[last] ^= 1;
                assert!(!verify(alg, &key, &flipped, message.as_bytes()));
                // The same signature is no good under another algorithm of the family.
                let other = Alg::RSA_FAMILY[(i + 1) % 6];
                assert!(!verify(other, &key, &signature, message.as_bytes()));
            }
        }
    }

    #[test]
    fn agrees_on_many_signatures() {
        let mut rng = rand::thread_rng();
        for bits in [1100usize, 1304, 1600, 2048] {
            let private = RsaPrivateKey::new(&mut rng, bits).unwrap();
            let key = key_of(&private);
            for round in 0..25 {
                let alg = Alg::RSA_FAMILY[round % 6];
                let message: Vec<u8> = (0..round * 7).map(|i| (i * 31 + bits) as u8).collect();
                let signature = sign(alg, &private, &message);
                assert!(
                    verify(alg, &key, &signature, &message),
                    "{alg:?} {bits} {round}"
                );
                let mut tampered = message.clone();
                tampered.push(b'.');
                assert!(!verify(alg, &key, &signature, &tampered));
            }
        }
    }

    #[test]
    fn rejects_malformed_signatures() {
        let mut rng = rand::thread_rng();
        let private = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let key = key_of(&private);
        let good = sign(Alg::Rs256, &private, b"m");
        assert!(!verify(Alg::Rs256, &key, &good[1..], b"m"));
        assert!(!verify(Alg::Rs256, &key, &[], b"m"));
        assert!(!verify(Alg::Rs256, &key, &vec![0xff; good.len()], b"m"));
        assert!(!verify(Alg::Rs256, &key, &vec![0; good.len()], b"m"));
        let mut one = vec![0; good.len()];
        one[good.len() - 1] = 1;
        assert!(!verify(Alg::Rs256, &key, &one, b"m"));
        assert!(!verify(Alg::Es256, &key, &good, b"m"));
    }

    #[test]
    fn unusual_exponents_are_left_to_the_general_code() {
        assert!(RsaVerifyingKey::new(&[0xc1, 0x01], &[]).is_err());
        assert!(RsaVerifyingKey::new(&[0xc1, 0, 0, 0, 0, 0, 0, 1], &[1, 0, 0]).is_err());
        assert!(RsaVerifyingKey::new(&[0xc1, 0, 0, 0, 0, 0, 0, 1], &[1; 9]).is_err());
        assert!(RsaVerifyingKey::new(&[0xc1, 0, 0, 0, 0, 0, 0, 1], &[2, 0, 0, 0, 1]).is_err());
        assert!(RsaVerifyingKey::new(&[0xc1, 0, 0, 0, 0, 0, 0, 2], &[1, 0, 1]).is_err());
        assert!(RsaVerifyingKey::new(&[0xc1, 0, 0, 0, 0, 0, 0, 1], &[1, 0, 1]).is_ok());
        assert!(
            RsaVerifyingKey::new(&[0xc1, 0, 0, 0, 0, 0, 0, 1], &[1, 0xff, 0xff, 0xff, 0xff])
                .is_ok()
        );
    }
}
