//! The session cookie: who signed in, sealed. It holds only what the identity headers and rules
//! need (the claims the provider's `subject_claims` and `claim_to_headers` read), never a token,
//! and stays under 4 KiB.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::core::identity::Identity;
use crate::core::jwt::provider::Provider;
use crate::core::login::config::{Login, SameSite};
use crate::core::login::id_token::SignedIn;
use crate::core::login::seal::Purpose;

/// The largest session cookie value written; a sign-in whose claims would not fit is refused.
pub const MAX_COOKIE_BYTES: usize = 3800;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub sub: String,
    pub iss: String,
    pub exp: i64,
    /// A random id: the session's `token_sha256` at the authorization service.
    pub sid: String,
    /// The claims the identity is built from, by the paths the provider reads them at.
    pub claims: Map<String, Value>,
}

impl Session {
    /// The session for someone who just signed in: `sid_random` from the OS random source.
    pub fn new(
        provider: &Provider,
        signed_in: &SignedIn,
        login: &Login,
        now_s: i64,
        sid_random: &[u8; 16],
    ) -> Session {
        let names = &provider.subject_claims;
        let mut claims = Map::new();
        let paths = [&names.subject, &names.email, &names.roles, &names.scopes]
            .into_iter()
            .chain(provider.claim_to_headers.iter().map(|(claim, _)| claim));
        for path in paths {
            if let Some(value) = crate::core::jwt::claims_lookup(&signed_in.claims, path) {
                claims.insert(path.clone(), value.clone());
            }
        }
        Session {
            sub: signed_in.subject.clone(),
            iss: provider.issuer.clone(),
            exp: now_s.saturating_add(i64::try_from(login.session_lifetime_s).unwrap_or(0)),
            sid: hex::encode(sid_random),
            claims,
        }
    }

    /// The identity a JWT with these claims would give, marked as a session.
    pub fn identity(&self, prefix: &str, provider: &Provider) -> Identity {
        let mut identity = Identity::from_jwt(prefix, provider, &self.claims);
        let credential = format!("{prefix}credential");
        let mut headers = (*identity.headers).clone();
        for (name, value) in headers.iter_mut() {
            if *name == credential {
                *value = "session".to_string();
            }
        }
        identity.headers = Rc::new(headers);
        identity.expires_at_s = Some(self.exp);
        identity.credential_sha256 = Some(Sha256::digest(self.sid.as_bytes()).into());
        identity
    }

    pub fn seal(&self, login: &Login, nonce: [u8; 12]) -> Option<String> {
        let plaintext = serde_json::to_vec(self).ok()?;
        let sealed = login.keys.seal(Purpose::Session, &plaintext, nonce)?;
        (sealed.len() <= MAX_COOKIE_BYTES).then_some(sealed)
    }

    /// The session in a cookie value, if it opens and has not expired.
    pub fn open(login: &Login, value: &str, now_s: i64) -> Option<Session> {
        let plaintext = login.keys.open(Purpose::Session, value)?;
        let session: Session = serde_json::from_slice(&plaintext).ok()?;
        (session.exp > now_s).then_some(session)
    }
}

/// A `Set-Cookie` value. `value` None clears the cookie.
pub fn set_cookie(login: &Login, name: &str, value: Option<&str>, max_age_s: u64) -> String {
    let mut out = match value {
        Some(value) => format!("{name}={value}; Max-Age={max_age_s}"),
        None => format!("{name}=; Max-Age=0"),
    };
    out.push_str("; Path=/; HttpOnly");
    if login.secure {
        out.push_str("; Secure");
    }
    // Attempt cookies are always Lax: the IdP's redirect back is a cross-site navigation.
    let same_site = if name == login.cookie_name {
        login.same_site
    } else {
        SameSite::Lax
    };
    out.push_str(match same_site {
        SameSite::Strict => "; SameSite=Strict",
        _ => "; SameSite=Lax",
    });
    if let (Some(domain), true) = (&login.cookie_domain, name == login.cookie_name) {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out
}
