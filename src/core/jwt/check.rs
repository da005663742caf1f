//! Checking one JWT for one provider: the token cache first, then full verification against the
//! provider's keys, pausing when keys are missing or the `kid` is new (rotation).

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::core::identity::Identity;
use crate::core::jwt::keystate::ProviderKeys;
use crate::core::jwt::provider::Provider;
use crate::core::jwt::token_cache::{CachedToken, TokenCache};
use crate::core::jwt::{self, JwtError};

#[derive(Debug)]
pub enum JwtFailure {
    Invalid(JwtError),
    KeysUnavailable,
}

#[derive(Debug)]
pub enum Verdict {
    Valid(Rc<Identity>),
    /// Pause until the provider's keys change; the reason is for the log.
    WaitForKeys(&'static str),
}

/// A token this VM verified before: its identity, or why it no longer counts. None = not cached.
pub fn cached(
    tokens: &mut TokenCache,
    provider: usize,
    token: &str,
    now_s: i64,
) -> Option<Result<Rc<Identity>, JwtFailure>> {
    let cached = tokens.get(token).filter(|c| c.provider == provider)?;
    if cached.expires_after.is_some_and(|t| t < now_s) {
        return Some(Err(JwtFailure::Invalid(JwtError::Expired)));
    }
    Some(Ok(Rc::clone(&cached.identity)))
}

/// What verifying one token needs besides the token: its provider, that provider's keys, the
/// identity header prefix, and the time.
pub struct Verify<'a> {
    pub provider: &'a Provider,
    pub provider_index: usize,
    pub identity_prefix: &'a str,
    /// Keep the token's SHA-256 with its identity (an authorization service will be told it).
    pub hash_credential: bool,
    pub now_ms: u64,
    /// Whether the request may still pause for keys (false once it has waited).
    pub may_wait: bool,
}

/// Verifies a token not in the cache and caches it when valid.
pub fn verify(
    check: &Verify<'_>,
    keys: &mut ProviderKeys,
    tokens: &mut TokenCache,
    token: &str,
) -> Result<Verdict, JwtFailure> {
    let provider = check.provider;
    let inspected = jwt::inspect(token).map_err(JwtFailure::Invalid)?;
    if inspected.claimed_issuer() != Some(provider.issuer.as_str()) {
        return Err(JwtFailure::Invalid(JwtError::WrongIssuer));
    }
    let Some(key_set) = keys.keys.clone() else {
        if check.may_wait {
            return Ok(Verdict::WaitForKeys("keys not loaded yet"));
        }
        return Err(JwtFailure::KeysUnavailable);
    };
    let kid_unknown = inspected.kid().is_some_and(|kid| !key_set.has_kid(kid));
    if kid_unknown && check.may_wait && keys.refetch_possible(check.now_ms) {
        keys.want_refetch();
        return Ok(Verdict::WaitForKeys("unknown kid, refetching keys"));
    }
    // The audience depends on the request, not the token: checked on every request (engine).
    let verified = jwt::verify_any_audience(inspected, provider, &key_set, now_s(check.now_ms))
        .map_err(JwtFailure::Invalid)?;
    let leeway = i64::try_from(provider.clock_skew_s).unwrap_or(i64::MAX);
    let expires_after = verified.expires_at.map(|exp| exp.saturating_add(leeway));
    let mut identity = Identity::from_jwt(check.identity_prefix, provider, &verified.claims);
    identity.expires_at_s = expires_after;
    if check.hash_credential {
        // The signing input, not the whole token: an ECDSA signature has two valid encodings
        // (high and low S), and one token must have one identity at the service.
        let signing_input = token.rsplit_once('.').map_or(token, |(input, _)| input);
        identity.credential_sha256 = Some(Sha256::digest(signing_input.as_bytes()).into());
    }
    let identity = Rc::new(identity);
    tokens.insert(
        token,
        CachedToken {
            provider: check.provider_index,
            expires_after,
            kid: verified.kid,
            identity: Rc::clone(&identity),
        },
    );
    Ok(Verdict::Valid(identity))
}

fn now_s(now_ms: u64) -> i64 {
    i64::try_from(now_ms / 1000).unwrap_or(i64::MAX)
}
