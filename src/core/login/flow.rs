//! The pieces of one sign-in attempt (authorization code flow with PKCE, RFC 7636): its random
//! state, nonce and code verifier, the attempt cookie that carries them to the callback, the
//! authorization URL, and the return target.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The random values of one attempt, from 96 bytes of the OS random source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub state: String,
    pub nonce: String,
    /// PKCE code verifier (43 characters of base64url).
    pub verifier: String,
    /// Where to go after sign-in (a checked same-origin path).
    pub rd: String,
    /// When the attempt started (Unix seconds): an ID token authenticated before it is refused
    /// where a fresh sign-in is required.
    pub started_s: i64,
    /// Set for an agent re-authentication: the sealed ticket it continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

impl Attempt {
    pub fn new(random: &[u8; 96], rd: String, started_s: i64, ticket: Option<String>) -> Attempt {
        Attempt {
            state: URL_SAFE_NO_PAD.encode(&random[..32]),
            nonce: URL_SAFE_NO_PAD.encode(&random[32..64]),
            verifier: URL_SAFE_NO_PAD.encode(&random[64..]),
            rd,
            started_s,
            ticket,
        }
    }

    /// The S256 code challenge for the verifier.
    pub fn challenge(&self) -> String {
        pkce_challenge(&self.verifier)
    }
}

pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The attempt cookie's name: one per attempt (several tabs may sign in at once), found again
/// from the callback's `state`. `secure`: the `__Host-` prefix (Secure, Path=/, no Domain).
pub fn attempt_cookie_name(state: &str, secure: bool) -> String {
    let tag = hex::encode(&Sha256::digest(state.as_bytes())[..4]);
    if secure {
        format!("__Host-authgate_a_{tag}")
    } else {
        format!("authgate_a_{tag}")
    }
}

/// The return target: percent-decoded once, kept only if it is a same-origin path (starts with
/// one `/`, no `\`, no control byte); anything else is `/`.
pub fn safe_return_path(rd: Option<&str>) -> String {
    let Some(decoded) = rd.and_then(percent_decode) else {
        return "/".to_string();
    };
    let bytes = decoded.as_bytes();
    let acceptable = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !bytes.iter().any(|b| *b == b'\\' || *b < 0x20 || *b == 0x7f);
    if acceptable {
        decoded
    } else {
        "/".to_string()
    }
}

/// `%XX` decoded once; None for a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(if byte == b'+' { b' ' } else { byte });
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One query parameter's value (decoded), from a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let mut random = [0u8; 96];
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let attempt = Attempt::new(&random, "/".into(), 0, None);
        assert_eq!(attempt.verifier.len(), 43);
        assert_ne!(attempt.state, attempt.nonce);
    }

    #[test]
    fn only_same_origin_paths_are_return_targets() {
        for good in ["/", "/app?x=1", "/a/b#frag", "%2Fapp%2Fhome"] {
            assert!(safe_return_path(Some(good)).starts_with('/'), "{good}");
            assert_ne!(safe_return_path(Some(good)), "/x", "{good}");
        }
        assert_eq!(safe_return_path(Some("%2Fapp%2Fhome")), "/app/home");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "%2F%2Fevil.example",
            "/%5Cevil",
            "/a\\b",
            "/a%0d%0aSet-Cookie:x",
            "evil",
            "",
            "%zz",
            "%2F%252F",
        ] {
            let got = safe_return_path(Some(bad));
            assert!(got == "/" || got == "/%2F", "{bad} -> {got}");
        }
        assert_eq!(safe_return_path(None), "/");
    }

    #[test]
    fn attempt_cookies_are_named_per_state() {
        let a = attempt_cookie_name("state-a", true);
        assert!(a.starts_with("__Host-authgate_a_") && a.len() == "__Host-authgate_a_".len() + 8);
        assert_ne!(a, attempt_cookie_name("state-b", true));
        assert!(attempt_cookie_name("state-a", false).starts_with("authgate_a_"));
        assert_eq!(
            query_param("a=1&state=x%2By&b", "state").as_deref(),
            Some("x+y")
        );
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
