//! Sealed values (sign-in cookies, attempt cookies, re-auth tickets): AES-256-GCM with the key's
//! id in the value, so `cookie_keys` can rotate (the first key seals, every key opens). Each kind
//! of value is bound to its purpose as associated data: a ticket never opens as a session.
//!
//! Format: `<key id: 8 hex>.<base64url(nonce[12] || ciphertext+tag)>`, the key id being the first
//! 4 bytes of SHA-256(key). Nonces are random (96 bits, from the OS random source via the shell).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What a sealed value is for: the associated data that binds it to that use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Session,
    Attempt,
    Ticket,
    /// A signed-in owner's pending confirmation of a renewal.
    Renewal,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"authgate.session.v1",
            Purpose::Attempt => b"authgate.attempt.v1",
            Purpose::Ticket => b"authgate.ticket.v1",
            Purpose::Renewal => b"authgate.renewal.v1",
        }
    }
}

/// The largest sealed value opened (a cookie is at most 4 KiB anyway).
pub const MAX_SEALED_BYTES: usize = 4096;

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The configured keys; the first seals.
pub struct Keys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keys").field("ids", &ids).finish()
    }
}

impl Keys {
    /// From raw 32-byte keys; None when there are none.
    pub fn new(raw: &[[u8; 32]]) -> Option<Keys> {
        if raw.is_empty() {
            return None;
        }
        let keys = raw
            .iter()
            .map(|key| Key {
                id: hex::encode(&Sha256::digest(key)[..4]),
                cipher: Aes256Gcm::new(key.into()),
            })
            .collect();
        Some(Keys { keys })
    }

    /// Seals `plaintext` with the first key and this (random, never reused) nonce.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8], nonce: [u8; 12]) -> Option<String> {
        let key = self.keys.first()?;
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.aad(),
                },
            )
            .ok()?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Some(format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Opens a value sealed for `purpose` by any configured key; None if it was not (tampered,
    /// another purpose, an unknown key, malformed or too large).
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > MAX_SEALED_BYTES {
            return None;
        }
        let (id, body) = sealed.split_once('.')?;
        let key = self.keys.iter().find(|k| k.id == id)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.aad(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_for_their_purpose_and_keys_rotate() {
        let old = Keys::new(&[[1; 32]]).unwrap();
        let rotated = Keys::new(&[[2; 32], [1; 32]]).unwrap();
        let sealed = old.seal(Purpose::Session, b"alice", [7; 12]).unwrap();
        assert_eq!(
            old.open(Purpose::Session, &sealed).as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(
            rotated.open(Purpose::Session, &sealed).as_deref(),
            Some(&b"alice"[..]),
            "a value sealed by a retired key still opens while the key is listed"
        );
        assert_eq!(
            old.open(Purpose::Ticket, &sealed),
            None,
            "bound to its purpose"
        );
        let new = rotated.seal(Purpose::Session, b"bob", [8; 12]).unwrap();
        assert_eq!(old.open(Purpose::Session, &new), None, "an unknown key");
        assert!(new.starts_with(&hex::encode(&Sha256::digest([2; 32])[..4])));
        // Any flipped character fails.
        for i in 0..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != sealed {
                assert_eq!(old.open(Purpose::Session, &tampered), None, "{i}");
            }
        }
        assert_eq!(old.open(Purpose::Session, ""), None);
        assert_eq!(old.open(Purpose::Session, &"a".repeat(5000)), None);
        assert!(Keys::new(&[]).is_none());
    }
}
