//! The per-request decision: health, CORS preflight, rule match, credential checks. Returns a
//! `Step` for the shell to carry out; never calls the host.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::core::config::{Config, Provider, Requirement, Rule};
use crate::core::extract::{self, Found};
use crate::core::identity::Identity;
use crate::core::jwt::{self, JwtError};
use crate::core::keystate::ProviderKeys;
use crate::core::metrics::{Metric, MetricSink};
use crate::core::policy::{self, PolicyDenial};
use crate::core::replies::{self, Reply};
use crate::core::request::Request;
use crate::core::token_cache::{CachedToken, TokenCache, TokenHash, DEFAULT_CAPACITY};

/// What the shell does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Pass upstream after removing and adding these headers.
    Continue {
        remove: Vec<String>,
        add: Rc<Vec<(String, String)>>,
    },
    /// Answer the request with this reply.
    Respond(Reply),
    /// Pause until this provider's keys change (first fetch, or refetch for an unknown `kid`).
    WaitForKeys { provider: usize },
}

/// A step plus a one-line account of it for the debug log (never a credential: fingerprints only).
#[derive(Debug)]
pub struct Decision {
    pub step: Step,
    pub log: String,
}

/// Mutable per-VM state the decision reads and updates.
pub struct State {
    pub keys: Vec<ProviderKeys>,
    pub tokens: TokenCache,
}

impl State {
    pub fn new(config: &Config) -> Self {
        State {
            keys: config
                .providers
                .iter()
                .map(ProviderKeys::for_provider)
                .collect(),
            tokens: TokenCache::new(DEFAULT_CAPACITY),
        }
    }
}

/// Time and whether the request may still pause for keys (false once it has waited).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now_ms: u64,
    pub may_wait: bool,
}

impl Context {
    fn now_s(self) -> i64 {
        i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX)
    }
}

/// A 12-hex SHA-256 prefix: enough to correlate log lines, useless to an attacker.
pub fn fingerprint(hash: &TokenHash) -> String {
    hex::encode(&hash[..6])
}

pub fn decide(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    metrics: &mut dyn MetricSink,
) -> Decision {
    let path = request.path();
    let request_id = request.request_id();
    if config.health_path.as_deref() == Some(path) {
        return respond(replies::health(), "health check".to_string());
    }
    if config.cors_bypass_preflight && is_preflight(request) {
        return pass(
            config,
            request,
            None,
            Rc::default(),
            "cors preflight passed".to_string(),
        );
    }
    let Some(rule) = config.rules.iter().find(|rule| rule_matches(rule, request)) else {
        metrics.increment(Metric::Denied);
        metrics.increment(Metric::DeniedNoRule);
        return respond(
            replies::forbidden("no rule allows this request", request_id),
            format!("deny no_rule {} {}", request.method(), path),
        );
    };
    if rule.public {
        return pass(
            config,
            request,
            None,
            Rc::default(),
            format!("public {path}"),
        );
    }
    let candidates = find_jwts(config, rule, request);
    let Some(first) = candidates.first() else {
        metrics.increment(Metric::Denied);
        metrics.increment(Metric::DeniedMissingCredential);
        return respond(
            replies::unauthenticated(request.authority(), request_id),
            format!("deny missing_credential {path}"),
        );
    };
    let mut first_failure = None;
    for (provider, found) in &candidates {
        match check_jwt(config, state, *provider, found, ctx, metrics) {
            Ok(JwtPass::Allowed {
                forward_token,
                identity,
                log,
            }) => {
                if let Err(denial) = policy::check(rule, &identity) {
                    return deny_policy(request, denial, &log, metrics);
                }
                metrics.increment(Metric::Allowed);
                let token_header = if forward_token { None } else { found.header };
                return pass(
                    config,
                    request,
                    token_header,
                    Rc::clone(&identity.headers),
                    log,
                );
            }
            Ok(JwtPass::Wait(decision)) => return decision,
            Err(failure) if first_failure.is_none() => first_failure = Some(failure),
            Err(_) => {}
        }
    }
    let failure = first_failure.unwrap_or(JwtFailure::Invalid(JwtError::WrongIssuer));
    let hash = token_hash(first.1.token);
    deny_jwt(config, rule, request, failure, &hash, metrics)
}

/// The credential is valid but the rule asks for scopes or roles it lacks: 403.
fn deny_policy(
    request: &Request<'_>,
    denial: PolicyDenial,
    allow_log: &str,
    metrics: &mut dyn MetricSink,
) -> Decision {
    metrics.increment(Metric::Denied);
    let request_id = request.request_id();
    let (reply, reason) = match &denial {
        PolicyDenial::MissingScopes(missing) => {
            metrics.increment(Metric::DeniedInsufficientScope);
            (
                replies::insufficient_scope(request.authority(), missing, request_id),
                "insufficient_scope",
            )
        }
        PolicyDenial::MissingRoles(missing) => {
            metrics.increment(Metric::DeniedForbidden);
            let message = format!("missing role(s): {}", missing.join(" "));
            (replies::forbidden(&message, request_id), "missing_roles")
        }
    };
    let credential = allow_log.strip_prefix("allow ").unwrap_or(allow_log);
    respond(reply, format!("deny {reason} {credential}"))
}

fn respond(reply: Reply, log: String) -> Decision {
    Decision {
        step: Step::Respond(reply),
        log,
    }
}

/// Continue upstream: strip spoofed identity headers, claim headers, and (unless forwarded)
/// the header the token came in; then add the identity.
fn pass(
    config: &Config,
    request: &Request<'_>,
    token_header: Option<&str>,
    add: Rc<Vec<(String, String)>>,
    log: String,
) -> Decision {
    let mut remove: Vec<String> = request
        .headers()
        .map(|(name, _)| name)
        .filter(|name| {
            name.starts_with(config.identity_prefix.as_str())
                || config.claim_header_names.iter().any(|h| h == name)
                || Some(*name) == token_header
        })
        .map(str::to_string)
        .collect();
    remove.dedup();
    Decision {
        step: Step::Continue { remove, add },
        log,
    }
}

fn is_preflight(request: &Request<'_>) -> bool {
    request.method() == "OPTIONS"
        && request.header("origin").is_some()
        && request.header("access-control-request-method").is_some()
}

fn rule_matches(rule: &Rule, request: &Request<'_>) -> bool {
    let path = request.path();
    if rule.path.as_deref().is_some_and(|p| p != path) {
        return false;
    }
    if rule.prefix.as_deref().is_some_and(|p| !path.starts_with(p)) {
        return false;
    }
    if !rule.methods.is_empty() && !rule.methods.iter().any(|m| m == request.method()) {
        return false;
    }
    rule.hosts.is_empty() || rule.hosts.iter().any(|h| h.matches(request.authority()))
}

/// Each accepted provider with the token found where it looks, in the rule's order.
fn find_jwts<'a>(
    config: &'a Config,
    rule: &Rule,
    request: &Request<'a>,
) -> Vec<(usize, Found<'a>)> {
    let mut found: Vec<(usize, Found<'a>)> = Vec::new();
    for requirement in &rule.requires {
        let Requirement::Jwt(index) = *requirement;
        let Some(provider) = config.providers.get(index) else {
            continue;
        };
        if let Some(token) = extract::find_token(provider, request) {
            found.push((index, token));
        }
    }
    found
}

enum JwtPass {
    Allowed {
        forward_token: bool,
        identity: Rc<Identity>,
        log: String,
    },
    Wait(Decision),
}

enum JwtFailure {
    Invalid(JwtError),
    KeysUnavailable,
}

fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

fn check_jwt(
    config: &Config,
    state: &mut State,
    provider_index: usize,
    found: &Found<'_>,
    ctx: Context,
    metrics: &mut dyn MetricSink,
) -> Result<JwtPass, JwtFailure> {
    let hash = token_hash(found.token);
    let fp = fingerprint(&hash);
    let provider = config
        .providers
        .get(provider_index)
        .ok_or(JwtFailure::KeysUnavailable)?;
    if let Some(cached) = state
        .tokens
        .get(&hash)
        .filter(|c| c.provider == provider_index)
    {
        metrics.increment(Metric::JwtCacheHit);
        if cached.expires_after.is_some_and(|t| t < ctx.now_s()) {
            return Err(JwtFailure::Invalid(JwtError::Expired));
        }
        return Ok(allowed(provider, Rc::clone(&cached.identity), &fp));
    }
    let outcome = verify_uncached(
        config,
        state,
        provider_index,
        provider,
        found,
        hash,
        &fp,
        ctx,
    );
    // A request that pauses for keys is counted once, when it is finally decided.
    if !matches!(outcome, Ok(JwtPass::Wait(_))) {
        metrics.increment(Metric::JwtCacheMiss);
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn verify_uncached(
    config: &Config,
    state: &mut State,
    provider_index: usize,
    provider: &Provider,
    found: &Found<'_>,
    hash: TokenHash,
    fp: &str,
    ctx: Context,
) -> Result<JwtPass, JwtFailure> {
    let inspected = jwt::inspect(found.token).map_err(JwtFailure::Invalid)?;
    if inspected.claimed_issuer.as_deref() != Some(provider.issuer.as_str()) {
        return Err(JwtFailure::Invalid(JwtError::WrongIssuer));
    }
    let keys = &mut state.keys[provider_index];
    let Some(key_set) = keys.keys.clone() else {
        if ctx.may_wait {
            return Ok(JwtPass::Wait(wait(
                provider_index,
                fp,
                "keys not loaded yet",
            )));
        }
        return Err(JwtFailure::KeysUnavailable);
    };
    let kid_unknown = inspected.kid().is_some_and(|kid| !key_set.has_kid(kid));
    if kid_unknown && ctx.may_wait && keys.refetch_possible(ctx.now_ms) {
        keys.want_refetch();
        return Ok(JwtPass::Wait(wait(
            provider_index,
            fp,
            "unknown kid, refetching keys",
        )));
    }
    let verified =
        jwt::verify(&inspected, provider, &key_set, ctx.now_s()).map_err(JwtFailure::Invalid)?;
    let leeway = i64::try_from(provider.clock_skew_s).unwrap_or(i64::MAX);
    let identity = Rc::new(Identity::from_jwt(config, provider, &verified.claims));
    state.tokens.insert(
        hash,
        CachedToken {
            provider: provider_index,
            expires_after: verified.expires_at.map(|exp| exp.saturating_add(leeway)),
            kid: verified.kid,
            identity: Rc::clone(&identity),
        },
    );
    Ok(allowed(provider, identity, fp))
}

fn allowed(provider: &Provider, identity: Rc<Identity>, fp: &str) -> JwtPass {
    JwtPass::Allowed {
        forward_token: provider.forward,
        identity,
        log: format!("allow jwt provider={} token={fp}", provider.name),
    }
}

fn wait(provider: usize, fp: &str, why: &str) -> Decision {
    Decision {
        step: Step::WaitForKeys { provider },
        log: format!("wait token={fp} {why}"),
    }
}

fn deny_jwt(
    config: &Config,
    rule: &Rule,
    request: &Request<'_>,
    failure: JwtFailure,
    hash: &TokenHash,
    metrics: &mut dyn MetricSink,
) -> Decision {
    let fp = fingerprint(hash);
    let request_id = request.request_id();
    match failure {
        JwtFailure::KeysUnavailable => {
            metrics.increment(Metric::JwksUnavailable);
            respond(
                replies::jwks_unavailable(request_id),
                format!("jwks_unavailable token={fp}"),
            )
        }
        JwtFailure::Invalid(JwtError::Expired) => {
            metrics.increment(Metric::Denied);
            metrics.increment(Metric::SessionExpired);
            let reply = replies::session_expired(
                rule.session_reply,
                &config.session,
                None,
                request.authority(),
                request_id,
            );
            respond(reply, format!("deny session_expired token={fp}"))
        }
        JwtFailure::Invalid(error) => {
            metrics.increment(Metric::Denied);
            metrics.increment(Metric::DeniedInvalidToken);
            let description = error.to_string();
            respond(
                replies::invalid_token(request.authority(), &description, request_id),
                format!("deny invalid_token ({description}) token={fp}"),
            )
        }
    }
}
