//! Checking one JWT for one provider: the token cache first, then full verification against the
//! provider's keys, pausing when keys are missing or the `kid` is new (rotation).

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::core::config::Config;
use crate::core::engine::{Context, State};
use crate::core::identity::Identity;
use crate::core::jwt::{self, JwtError};
use crate::core::token_cache::CachedToken;

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
    state: &mut State,
    provider: usize,
    token: &str,
    now_s: i64,
) -> Option<Result<Rc<Identity>, JwtFailure>> {
    let cached = state.tokens.get(token).filter(|c| c.provider == provider)?;
    if cached.expires_after.is_some_and(|t| t < now_s) {
        return Some(Err(JwtFailure::Invalid(JwtError::Expired)));
    }
    Some(Ok(Rc::clone(&cached.identity)))
}

/// Verifies a token not in the cache and caches it when valid.
pub fn verify(
    config: &Config,
    state: &mut State,
    provider_index: usize,
    token: &str,
    ctx: Context,
) -> Result<Verdict, JwtFailure> {
    let provider = config
        .providers
        .get(provider_index)
        .ok_or(JwtFailure::KeysUnavailable)?;
    let inspected = jwt::inspect(token).map_err(JwtFailure::Invalid)?;
    if inspected.claimed_issuer() != Some(provider.issuer.as_str()) {
        return Err(JwtFailure::Invalid(JwtError::WrongIssuer));
    }
    let keys = state
        .keys
        .get_mut(provider_index)
        .ok_or(JwtFailure::KeysUnavailable)?;
    let Some(key_set) = keys.keys.clone() else {
        if ctx.may_wait {
            return Ok(Verdict::WaitForKeys("keys not loaded yet"));
        }
        return Err(JwtFailure::KeysUnavailable);
    };
    let kid_unknown = inspected.kid().is_some_and(|kid| !key_set.has_kid(kid));
    if kid_unknown && ctx.may_wait && keys.refetch_possible(ctx.now_ms) {
        keys.want_refetch();
        return Ok(Verdict::WaitForKeys("unknown kid, refetching keys"));
    }
    let verified =
        jwt::verify(inspected, provider, &key_set, ctx.now_s()).map_err(JwtFailure::Invalid)?;
    let leeway = i64::try_from(provider.clock_skew_s).unwrap_or(i64::MAX);
    let expires_after = verified.expires_at.map(|exp| exp.saturating_add(leeway));
    let mut identity = Identity::from_jwt(config, provider, &verified.claims);
    identity.expires_at_s = expires_after;
    if config.enterprise.is_some() {
        identity.credential_sha256 = Some(Sha256::digest(token.as_bytes()).into());
    }
    let identity = Rc::new(identity);
    state.tokens.insert(
        token,
        CachedToken {
            provider: provider_index,
            expires_after,
            kid: verified.kid,
            identity: Rc::clone(&identity),
        },
    );
    Ok(Verdict::Valid(identity))
}
