//! The per-request decision: health, CORS preflight, rule match, failed-auth backoff, credential
//! checks, route policy. Returns a `Step` for the shell to carry out; never calls the host.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::core::api_keys::ApiKeyError;
use crate::core::backoff::{ClientSlot, SharedStore, Standing};
use crate::core::client_ip;
use crate::core::config::{Config, Rule};
use crate::core::credentials::{self, Candidate, Kind};
use crate::core::identity::Identity;
use crate::core::jwt::JwtError;
use crate::core::jwt_check::{self, JwtFailure, Verdict};
use crate::core::keystate::ProviderKeys;
use crate::core::metrics::{Metric, MetricSink};
use crate::core::policy::{self, PolicyDenial};
use crate::core::replies::{self, Reply};
use crate::core::request::Request;
use crate::core::token_cache::{TokenCache, TokenHash, DEFAULT_CAPACITY};

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
    pub fn now_s(self) -> i64 {
        i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX)
    }
}

/// A 12-hex SHA-256 prefix: enough to correlate log lines, useless to an attacker.
pub fn fingerprint(hash: &TokenHash) -> String {
    hex::encode(&hash[..6])
}

/// Where the core reports stats and keeps cross-worker counts; the shell backs both with Envoy.
pub struct Effects<'a> {
    pub metrics: &'a mut dyn MetricSink,
    pub shared: &'a mut dyn SharedStore,
}

pub fn decide(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    effects: Effects<'_>,
) -> Decision {
    let path = request.path();
    let request_id = request.request_id();
    let metrics = effects.metrics;
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
    let candidates = credentials::find(config, rule, request);
    if candidates.is_empty() {
        metrics.increment(Metric::Denied);
        metrics.increment(Metric::DeniedMissingCredential);
        return respond(
            replies::unauthenticated(request.authority(), request_id),
            format!("deny missing_credential {path}"),
        );
    }
    let mut run = Run {
        config,
        state,
        request,
        ctx,
        metrics,
        shared: effects.shared,
        gate: Gate::default(),
    };
    run.decide(rule, &candidates)
}

/// One request's checks, with what they need at hand.
struct Run<'r, 'q> {
    config: &'r Config,
    state: &'r mut State,
    request: &'r Request<'q>,
    ctx: Context,
    metrics: &'r mut dyn MetricSink,
    shared: &'r mut dyn SharedStore,
    gate: Gate,
}

/// The failed-auth backoff as one request sees it: looked up once, and only when a credential
/// needs a real check (a token this VM already verified passes without it).
#[derive(Default)]
struct Gate {
    consulted: bool,
    client: Option<(ClientSlot, String)>,
    failures: u32,
}

/// What checking one credential came to.
enum Outcome {
    Valid {
        identity: Rc<Identity>,
        strip_header: Option<String>,
        log: String,
    },
    Invalid(Failure),
    Wait(Decision),
    Blocked {
        retry_after_s: u64,
    },
}

enum Failure {
    Jwt(JwtFailure),
    ApiKey(ApiKeyError),
    /// A non-JWT bearer on a route that takes no opaque tokens.
    RefusedOpaque,
    /// An agent token: only the enterprise authorization service can decide it.
    OpaqueUndecidable,
}

impl Failure {
    /// Failures that look like guessing count toward the backoff; an expired session, keys
    /// that could not be loaded, or a token nobody here can judge do not.
    fn counts_as_failed_auth(&self) -> bool {
        match self {
            Failure::Jwt(JwtFailure::Invalid(JwtError::Expired)) => false,
            Failure::Jwt(JwtFailure::Invalid(_)) => true,
            Failure::Jwt(JwtFailure::KeysUnavailable) => false,
            Failure::ApiKey(_) | Failure::RefusedOpaque => true,
            Failure::OpaqueUndecidable => false,
        }
    }
}

impl Run<'_, '_> {
    fn decide(&mut self, rule: &Rule, candidates: &[Candidate<'_>]) -> Decision {
        let mut first_failure: Option<(Failure, Kind, TokenHash)> = None;
        for candidate in candidates {
            let hash = token_hash(candidate.secret());
            match self.check(candidate, hash) {
                Outcome::Valid {
                    identity,
                    strip_header,
                    log,
                } => return self.allow(rule, candidate.kind(), &identity, strip_header, log),
                Outcome::Wait(decision) => return decision,
                Outcome::Blocked { retry_after_s } => return self.rate_limited(retry_after_s),
                Outcome::Invalid(failure) => {
                    if first_failure.is_none() {
                        first_failure = Some((failure, candidate.kind(), hash));
                    }
                }
            }
        }
        match first_failure {
            Some((failure, kind, hash)) => self.deny(rule, failure, kind, &hash),
            None => respond(
                replies::invalid_token(self.request.authority(), "no valid credential", None),
                "deny no_candidate".to_string(),
            ),
        }
    }

    fn check(&mut self, candidate: &Candidate<'_>, hash: TokenHash) -> Outcome {
        let fp = fingerprint(&hash);
        if let Candidate::Jwt { provider, .. } = candidate {
            if let Some(cached) = jwt_check::cached(self.state, *provider, &hash, self.ctx.now_s())
            {
                self.metrics.increment(Metric::JwtCacheHit);
                return self.jwt_outcome(*provider, candidate, cached.map(Verdict::Valid), &fp);
            }
        }
        if let Some(retry_after_s) = self.blocked_for() {
            return Outcome::Blocked { retry_after_s };
        }
        match candidate {
            Candidate::Jwt { provider, found } => {
                let verdict = jwt_check::verify(
                    self.config,
                    self.state,
                    *provider,
                    found.token,
                    hash,
                    self.ctx,
                );
                // A request that pauses for keys is counted once, when it is finally decided.
                if !matches!(verdict, Ok(Verdict::WaitForKeys(_))) {
                    self.metrics.increment(Metric::JwtCacheMiss);
                }
                self.jwt_outcome(*provider, candidate, verdict, &fp)
            }
            Candidate::ApiKey(presented) => {
                let Some(keys) = &self.config.api_keys else {
                    return Outcome::Invalid(Failure::ApiKey(ApiKeyError::Unknown));
                };
                match keys.check(presented.value, self.ctx.now_s()) {
                    Ok(key) => Outcome::Valid {
                        identity: Rc::clone(&key.identity),
                        strip_header: (!keys.forward).then(|| presented.header.to_string()),
                        log: format!("allow api_key id={} key={fp}", key.id),
                    },
                    Err(error) => Outcome::Invalid(Failure::ApiKey(error)),
                }
            }
            Candidate::OpaqueToken(_) => Outcome::Invalid(Failure::OpaqueUndecidable),
            Candidate::RefusedOpaque(_) => Outcome::Invalid(Failure::RefusedOpaque),
        }
    }

    fn jwt_outcome(
        &self,
        provider_index: usize,
        candidate: &Candidate<'_>,
        verdict: Result<Verdict, JwtFailure>,
        fp: &str,
    ) -> Outcome {
        let Some(provider) = self.config.providers.get(provider_index) else {
            return Outcome::Invalid(Failure::Jwt(JwtFailure::KeysUnavailable));
        };
        match verdict {
            Ok(Verdict::Valid(identity)) => {
                let strip_header = match candidate {
                    Candidate::Jwt { found, .. } if !provider.forward => {
                        found.header.map(str::to_string)
                    }
                    _ => None,
                };
                Outcome::Valid {
                    identity,
                    strip_header,
                    log: format!("allow jwt provider={} token={fp}", provider.name),
                }
            }
            Ok(Verdict::WaitForKeys(why)) => Outcome::Wait(Decision {
                step: Step::WaitForKeys {
                    provider: provider_index,
                },
                log: format!("wait token={fp} {why}"),
            }),
            Err(failure) => Outcome::Invalid(Failure::Jwt(failure)),
        }
    }

    /// Seconds the client must still wait, if its backoff is in force. Looked up once.
    fn blocked_for(&mut self) -> Option<u64> {
        let backoff = self.config.backoff.as_ref()?;
        if self.gate.consulted {
            return None;
        }
        self.gate.consulted = true;
        let ip = self.config.client_ip.client_ip(self.request)?;
        let key = client_ip::backoff_key(ip);
        let slot = backoff.locate(&key);
        self.gate.client = Some((slot, key));
        match backoff.standing(&*self.shared, slot, self.ctx.now_ms) {
            Standing::Blocked { retry_after_s } => Some(retry_after_s),
            Standing::Clear { failures } => {
                self.gate.failures = failures;
                None
            }
        }
    }

    fn allow(
        &mut self,
        rule: &Rule,
        kind: Kind,
        identity: &Identity,
        strip_header: Option<String>,
        log: String,
    ) -> Decision {
        if self.gate.failures > 0 {
            if let (Some(backoff), Some((slot, _))) = (&self.config.backoff, &self.gate.client) {
                backoff.record_success(self.shared, *slot);
            }
        }
        if let Err(denial) = policy::check(rule, identity) {
            return self.deny_policy(denial, kind, &log);
        }
        self.metrics.increment(Metric::Allowed);
        self.metrics.increment(match kind {
            Kind::Jwt => Metric::AllowedJwt,
            Kind::ApiKey => Metric::AllowedApiKey,
            Kind::OpaqueToken => Metric::AllowedOpaqueToken,
        });
        pass(
            self.config,
            self.request,
            strip_header.as_deref(),
            Rc::clone(&identity.headers),
            log,
        )
    }

    fn rate_limited(&mut self, retry_after_s: u64) -> Decision {
        self.metrics.increment(Metric::RateLimited);
        let client = self
            .gate
            .client
            .as_ref()
            .map_or("", |(_, key)| key.as_str());
        respond(
            replies::rate_limited(retry_after_s, self.request.request_id()),
            format!("rate_limited client={client} retry_after={retry_after_s}s"),
        )
    }

    /// The credential is valid but the rule asks for scopes or roles it lacks: 403.
    fn deny_policy(&mut self, denial: PolicyDenial, kind: Kind, allow_log: &str) -> Decision {
        self.count_denial(kind);
        let request_id = self.request.request_id();
        let (reply, reason) = match &denial {
            PolicyDenial::MissingScopes(missing) => {
                self.metrics.increment(Metric::DeniedInsufficientScope);
                (
                    replies::insufficient_scope(self.request.authority(), missing, request_id),
                    "insufficient_scope",
                )
            }
            PolicyDenial::MissingRoles(missing) => {
                self.metrics.increment(Metric::DeniedForbidden);
                let message = format!("missing role(s): {}", missing.join(" "));
                (replies::forbidden(&message, request_id), "missing_roles")
            }
        };
        let credential = allow_log.strip_prefix("allow ").unwrap_or(allow_log);
        respond(reply, format!("deny {reason} {credential}"))
    }

    fn count_denial(&mut self, kind: Kind) {
        self.metrics.increment(Metric::Denied);
        self.metrics.increment(match kind {
            Kind::Jwt => Metric::DeniedJwt,
            Kind::ApiKey => Metric::DeniedApiKey,
            Kind::OpaqueToken => Metric::DeniedOpaqueToken,
        });
    }

    fn deny(&mut self, rule: &Rule, failure: Failure, kind: Kind, hash: &TokenHash) -> Decision {
        let mut block_note = String::new();
        if failure.counts_as_failed_auth() {
            if let (Some(backoff), Some((slot, key))) = (&self.config.backoff, &self.gate.client) {
                if let Some(block_s) = backoff.record_failure(self.shared, *slot, self.ctx.now_ms) {
                    block_note = format!(" client={key} blocked_for={block_s}s");
                }
            }
        }
        let fp = fingerprint(hash);
        let credential = format!("{}={fp}", kind.name());
        let request_id = self.request.request_id();
        let host = self.request.authority();
        let decision = match failure {
            Failure::Jwt(JwtFailure::KeysUnavailable) => {
                self.metrics.increment(Metric::JwksUnavailable);
                return respond(
                    replies::jwks_unavailable(request_id),
                    format!("jwks_unavailable {credential}"),
                );
            }
            Failure::Jwt(JwtFailure::Invalid(JwtError::Expired)) => {
                self.count_denial(kind);
                self.metrics.increment(Metric::SessionExpired);
                let reply = replies::session_expired(
                    rule.session_reply,
                    &self.config.session,
                    None,
                    host,
                    request_id,
                );
                respond(reply, format!("deny session_expired {credential}"))
            }
            Failure::OpaqueUndecidable => {
                self.count_denial(kind);
                self.metrics.increment(Metric::DeniedForbidden);
                respond(
                    replies::forbidden(
                        "opaque agent tokens are decided by the enterprise authorization service, \
                         which this gateway does not call yet",
                        request_id,
                    ),
                    format!("deny opaque_undecidable {credential}"),
                )
            }
            other => {
                self.count_denial(kind);
                self.metrics.increment(Metric::DeniedInvalidToken);
                let (description, key_id) = match &other {
                    Failure::Jwt(JwtFailure::Invalid(error)) => (error.to_string(), None),
                    Failure::ApiKey(error) => (error.description().to_string(), error.key_id()),
                    _ => (
                        "opaque tokens are not accepted on this route".to_string(),
                        None,
                    ),
                };
                let key_id = key_id.map(|id| format!(" id={id}")).unwrap_or_default();
                respond(
                    replies::invalid_token(host, &description, request_id),
                    format!("deny invalid_token ({description}){key_id} {credential}"),
                )
            }
        };
        Decision {
            log: decision.log + &block_note,
            ..decision
        }
    }
}

fn token_hash(secret: &str) -> TokenHash {
    Sha256::digest(secret.as_bytes()).into()
}

fn respond(reply: Reply, log: String) -> Decision {
    Decision {
        step: Step::Respond(reply),
        log,
    }
}

/// Continue upstream: strip spoofed identity headers, claim headers, and (unless forwarded)
/// the header the credential came in; then add the identity.
fn pass(
    config: &Config,
    request: &Request<'_>,
    credential_header: Option<&str>,
    add: Rc<Vec<(String, String)>>,
    log: String,
) -> Decision {
    let mut remove: Vec<String> = request
        .headers()
        .map(|(name, _)| name)
        .filter(|name| {
            name.starts_with(config.identity_prefix.as_str())
                || config.claim_header_names.iter().any(|h| h == name)
                || Some(*name) == credential_header
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
