//! The per-request decision: health, CORS preflight, rule match, failed-auth backoff, credential
//! checks, route policy. Returns a `Step` for the shell to carry out; never calls the host.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::core::authz::decision_cache::{self, Decided, DecisionCache, DecisionKey, Lookup};
use crate::core::authz::{Answer, AuthzError, CallInput, FailureMode};
use crate::core::config::Config;
use crate::core::credentials::api_keys::ApiKeyError;
use crate::core::credentials::{self, Candidate, Kind};
use crate::core::identity::Identity;
use crate::core::jwt::check::{self as jwt_check, JwtFailure, Verdict};
use crate::core::jwt::keystate::ProviderKeys;
use crate::core::jwt::token_cache::{TokenCache, TokenHash, DEFAULT_CAPACITY};
use crate::core::jwt::JwtError;
use crate::core::login::endpoints::{self as sign_in, Exchange};
use crate::core::login::reauth::{Renewal, Ticket};
use crate::core::login::session::{set_cookie, Session};
use crate::core::metrics::{Metric, MetricSink};
use crate::core::policy::backoff::{
    deployment_secret, ClientSlot, SharedStore, Standing, UNKNOWN_CLIENT,
};
use crate::core::policy::client_ip;
use crate::core::policy::mcp;
use crate::core::policy::paths::{self, Unnormalised};
use crate::core::policy::rules::{rule_matches, rule_matches_call, Rule};
use crate::core::policy::{self, PolicyDenial};
use crate::core::random::Random;
use crate::core::replies::llm::LlmReply;
use crate::core::replies::session::SessionReply;
use crate::core::replies::session::{self, Expired, Hints};
use crate::core::replies::{self, Reply};
use crate::core::request::Request;

/// The token cache's provider index for opened session cookies (no provider has it).
const SESSION_PROVIDER: usize = usize::MAX;

/// An "expired session" answer is cached at most this long (DESIGN: sign-in, across workers).
const MAX_EXPIRED_TTL_S: u64 = 2;

/// What the shell does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Pass upstream after removing and adding these headers.
    Continue {
        remove: Vec<String>,
        add: Rc<Vec<(String, String)>>,
        rewrite: Rewrite,
        /// The credential whose enterprise decision let the request through, when the upstream's
        /// answer may evict it (`enterprise.cache.evict_on_upstream`).
        watch: Option<TokenHash>,
    },
    /// Answer the request with this reply.
    Respond(Reply),
    /// Pause until this provider's keys change (first fetch, or refetch for an unknown `kid`).
    WaitForKeys { provider: usize },
    /// Pause and ask the enterprise authorization service (or join a call already asking).
    CallAuthz(Box<AuthzCall>),
    /// Answer with an LLM-shaped session-expired reply once the request body is in.
    SessionReply(Box<LlmReply>),
    /// A sign-in callback: exchange the code at the token endpoint, then answer with
    /// `login::endpoints::complete`.
    SignIn(Box<Exchange>),
    /// A signed-in owner confirmed an agent's renewal: post it to `enterprise.renew_path`, then
    /// answer with `login::reauth::renewed` (and drop the token's cached decisions everywhere).
    Renew(Box<Renewal>),
    /// An MCP rule may decide: hold the request, read its whole body (at most
    /// `mcp.max_body_bytes`) and decide again with it (`Request::with_body`).
    ReadBody,
}

/// What this request, and no other sharing its decision, changes on its way upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The `:path` to send upstream, when it is not the client's (normalised).
    pub path: Option<String>,
    /// The `Cookie` header to send upstream (empty: none), when a credential cookie that must
    /// not be forwarded is taken out of it.
    pub cookie: Option<String>,
    /// The `:authority` to send upstream, when a host-limited rule or resource judged the
    /// request by its host without a port or trailing dot: Envoy, by default, routes
    /// `public.example.com.` or `public.example.com:8080` to another virtual host (`*`) than
    /// `public.example.com`, which would let a request judged by one host's rule reach
    /// another's upstream. Envoy routes again on the header authgate sets.
    pub authority: Option<String>,
}

/// A call to the authorization service, and what the paused request needs once it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzCall {
    pub key: DecisionKey,
    pub body: Vec<u8>,
    pub pending: Pending,
}

/// One paused request's side of an authorization call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub kind: Kind,
    pub identity_headers: Rc<Vec<(String, String)>>,
    /// Incoming headers to remove when the request goes upstream.
    pub remove: Vec<String>,
    pub session_reply: SessionReply,
    pub credential_expires_at_s: Option<i64>,
    /// Method, path, host, request id and `Accept`: for the reply shapes.
    pub hints: Hints,
    /// The credential's fingerprint, for the log.
    pub credential: String,
    /// For an agent token: the client's backoff record. Only the service knows whether the
    /// token is real, so its deny counts as a failed attempt (guessing agent tokens must back
    /// off like guessing keys).
    pub backoff_client: Option<ClientSlot>,
    pub rewrite: Rewrite,
    /// The credential's SHA-256 (signing input for a JWT): cached decisions are filed under it.
    pub credential_hash: TokenHash,
    /// The client's address and User-Agent, named on a re-auth confirmation page.
    pub client: Option<String>,
    pub user_agent: Option<String>,
}

/// What the service's answer (or its absence) came to, shared by every request that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Decided(Decided),
    Failed {
        error: AuthzError,
        stale: Option<Decided>,
    },
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
    pub decisions: DecisionCache,
    /// Offered as the deployment's backoff secret if no VM has stored one yet (the shell fills
    /// it from the OS random source).
    pub backoff_secret_candidate: [u8; 32],
}

impl State {
    /// With a fixed seed for the token cache's bucket hash: for tests and tools.
    pub fn new(config: &Config) -> Self {
        State::with_seed(config, 0)
    }

    /// `seed` keys the token cache's bucket hash; the shell passes a random one per VM.
    pub fn with_seed(config: &Config, seed: u64) -> Self {
        State {
            keys: config
                .providers
                .iter()
                .map(ProviderKeys::for_provider)
                .collect(),
            tokens: TokenCache::new(DEFAULT_CAPACITY, seed),
            decisions: DecisionCache::new(config.enterprise.as_ref().map_or(1, |e| e.max_entries)),
            backoff_secret_candidate: [0; 32],
        }
    }
}

/// Time, whether the request may still pause for keys (false once it has waited), and whether
/// the decision's log line will be written (it is not built otherwise: the hot path allocates
/// no text nobody reads).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now_ms: u64,
    pub may_wait: bool,
    pub log: bool,
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
    /// For sign-in state, tickets and sealing.
    pub random: &'a mut dyn Random,
}

pub fn decide(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    effects: Effects<'_>,
) -> Decision {
    decide_request(config, state, request, ctx, effects)
}

/// On a request a protected resource covers, a 401 or an `insufficient_scope` 403 tells the
/// client where the resource's metadata is and which scopes the rule needs (RFC 9728 §5.1).
fn with_resource_challenge(
    config: &Config,
    request: &Request<'_>,
    rule: &Rule,
    decision: Decision,
) -> Decision {
    let Step::Respond(reply) = &decision.step else {
        return decision;
    };
    let insufficient = reply.status == 403 && reply.body.contains("\"insufficient_scope\"");
    let Some(resource) = config
        .resources
        .covering(request.authority(), request.path())
        .filter(|_| reply.status == 401 || insufficient)
    else {
        return decision;
    };
    let Decision { step, log } = decision;
    let Step::Respond(reply) = step else {
        return Decision { step, log };
    };
    Decision {
        step: Step::Respond(resource.challenge(reply, &rule.require_scopes)),
        log,
    }
}

fn decide_request(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    effects: Effects<'_>,
) -> Decision {
    let request_id = request.request_id();
    if let Err(reply) = normalise_path(config, request) {
        effects.metrics.increment(Metric::Denied);
        effects.metrics.increment(Metric::DeniedBadRequest);
        return respond(
            reply,
            format!("deny bad_request {:?}", request.raw_path().unwrap_or("")),
        );
    }
    let path = request.path();
    if config.health_path.as_deref() == Some(path) {
        return respond(replies::health(), "health check".to_string());
    }
    if let Some(reply) = config
        .resources
        .metadata(request.method(), request.authority(), path)
    {
        return respond(reply, format!("protected resource metadata {path}"));
    }
    if let Some(login) = &config.login {
        let discovered = state
            .keys
            .get(login.provider)
            .and_then(|k| k.discovered.as_ref());
        if let Some(answer) = sign_in::handle(
            login,
            discovered,
            request,
            path,
            ctx.now_s(),
            effects.random,
        ) {
            return match answer {
                sign_in::Answer::Reply(reply) => respond(reply, format!("sign-in {path}")),
                sign_in::Answer::Exchange(exchange) => Decision {
                    step: Step::SignIn(exchange),
                    log: "sign-in: exchanging the code".to_string(),
                },
                sign_in::Answer::Renew(renewal) if config.enterprise.is_some() => Decision {
                    log: format!(
                        "reauth: renewing token={}",
                        fingerprint(&renewal.token_sha256)
                    ),
                    step: Step::Renew(renewal),
                },
                sign_in::Answer::Renew(_) => respond(
                    replies::page(
                        404,
                        "not_found",
                        "no authorization service renews sessions here",
                        true,
                        request_id,
                    ),
                    "reauth: no enterprise section".to_string(),
                ),
            };
        }
    }
    if config.cors_bypass_preflight && is_preflight(request) {
        // Browsers send no credentials with a preflight: any that came is not forwarded.
        let mut decision = pass(
            config,
            request,
            None,
            Rc::default(),
            "cors preflight passed".to_string(),
        );
        if let Step::Continue { remove, .. } = &mut decision.step {
            remove.extend(config.credential_header_names.iter().cloned());
            remove.push("cookie".to_string());
            remove.sort();
            remove.dedup();
        }
        return decision;
    }
    let Some(first) = config.rules.iter().find(|rule| rule_matches(rule, request)) else {
        return no_rule(request, effects.metrics);
    };
    if first.mcp.is_none() {
        return decide_rule(config, state, request, ctx, effects, first, None);
    }
    decide_mcp(config, state, request, ctx, effects)
}

fn no_rule(request: &Request<'_>, metrics: &mut dyn MetricSink) -> Decision {
    metrics.increment(Metric::Denied);
    metrics.increment(Metric::DeniedNoRule);
    respond(
        replies::forbidden("no rule allows this request", request.request_id()),
        format!("deny no_rule {} {}", request.method(), request.path()),
    )
}

/// A request an MCP rule may decide: judged on the JSON-RPC call(s) in its body, never on its
/// headers alone. Each call goes to the first rule that selects it; every one must allow.
fn decide_mcp(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    effects: Effects<'_>,
) -> Decision {
    let refuse = |error: mcp::McpError, metrics: &mut dyn MetricSink| {
        metrics.increment(Metric::Denied);
        metrics.increment(Metric::DeniedBadRequest);
        let reply = error.reply();
        let log = format!("deny mcp_bad_request {}", reply.body);
        respond(reply, log)
    };
    let calls = match request.body() {
        None if !request.has_no_body() => {
            let max = config.mcp_max_body_bytes;
            if request
                .header("content-length")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > max as u64)
            {
                effects.metrics.increment(Metric::Denied);
                effects.metrics.increment(Metric::DeniedBadRequest);
                return respond(mcp::too_large(max), "deny mcp_body_too_large".to_string());
            }
            // Nobody is held for a body without a credential a rule here could accept: such a
            // request is answered now, as the path's plain rule answers it.
            let matching: Vec<&Rule> = config
                .rules
                .iter()
                .filter(|rule| rule_matches(rule, request))
                .collect();
            let anonymous = matching.iter().all(|rule| {
                !rule.public
                    && credentials::find(
                        &config.providers,
                        config.api_keys.as_ref(),
                        config.login.as_ref().map(|l| l.cookie_name.as_str()),
                        &rule.requires,
                        request,
                    )
                    .is_empty()
            });
            let plain = matching.iter().find(|rule| rule.mcp.is_none());
            if let (true, Some(rule)) = (anonymous, plain.or(matching.first())) {
                return decide_rule(config, state, request, ctx, effects, rule, None);
            }
            return Decision {
                step: Step::ReadBody,
                log: format!(
                    "mcp: reading the body of {} {}",
                    request.method(),
                    request.path()
                ),
            };
        }
        None => Vec::new(),
        Some(body) => match mcp::calls(body) {
            Ok(calls) => calls,
            Err(error) => return refuse(error, effects.metrics),
        },
    };
    // Said twice, a header means what each reader picks: refused like a repeated JSON member.
    let repeated = ["mcp-method", "mcp-name"]
        .iter()
        .any(|name| request.headers().filter(|(n, _)| n == name).count() > 1);
    if repeated {
        return refuse(
            mcp::McpError::Mismatch("Mcp-Method and Mcp-Name may appear once each"),
            effects.metrics,
        );
    }
    if let Err(error) = mcp::check_headers(
        &calls,
        request.header("mcp-method"),
        request.header("mcp-name"),
    ) {
        return refuse(error, effects.metrics);
    }
    // What decides: (rule, the call when that rule selects calls). A rule without `match.mcp`
    // judges every call it takes alike.
    let mut units: Vec<(usize, Option<&mcp::Call>)> = Vec::new();
    let picks: Vec<Option<&mcp::Call>> = if calls.is_empty() {
        vec![None]
    } else {
        calls.iter().map(Some).collect()
    };
    for call in picks {
        let Some(index) = config
            .rules
            .iter()
            .position(|rule| rule_matches_call(rule, request, call))
        else {
            return no_rule(request, effects.metrics);
        };
        let unit = (index, call.filter(|_| config.rules[index].mcp.is_some()));
        if !units.contains(&unit) {
            units.push(unit);
        }
    }
    if let [(index, call)] = units[..] {
        return decide_rule(
            config,
            state,
            request,
            ctx,
            effects,
            &config.rules[index],
            call,
        );
    }
    decide_batch(config, state, request, ctx, effects, &units)
}

/// A batch whose calls different rules (or one MCP rule, call by call) decide. One credential
/// must speak for every call, so the non-public rules must accept the same credentials, and at
/// most one call may need the authorization service (its answer is the batch's).
fn decide_batch(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    effects: Effects<'_>,
    units: &[(usize, Option<&mcp::Call>)],
) -> Decision {
    let rules: Vec<&Rule> = units.iter().map(|(i, _)| &config.rules[*i]).collect();
    let guarded: Vec<&&Rule> = rules.iter().filter(|r| !r.public).collect();
    let same_credentials = guarded.windows(2).all(|w| w[0].requires == w[1].requires);
    let asks_service = |rule: &Rule| {
        rule.enterprise
            || rule
                .requires
                .contains(&credentials::Requirement::OpaqueToken)
    };
    let service_calls = rules.iter().filter(|r| asks_service(r)).count();
    if !same_credentials || service_calls > 1 {
        effects.metrics.increment(Metric::Denied);
        effects.metrics.increment(Metric::DeniedBadRequest);
        return respond(
            mcp::McpError::Mismatch(
                "this batch's calls are judged by rules that need different credentials or \
                 separate decisions: send them one per request",
            )
            .reply(),
            "deny mcp_batch_split".to_string(),
        );
    }
    let Effects {
        metrics,
        shared,
        random,
    } = effects;
    // Counted once, for the batch: each call's own "allowed" is held back.
    let mut held = HeldAllowed {
        inner: metrics,
        allowed: Vec::new(),
    };
    let mut chosen: Option<(usize, Decision)> = None;
    for (at, (index, call)) in units.iter().enumerate() {
        held.allowed.clear();
        let rule = &config.rules[*index];
        // Every call is judged with the same credentials: their failures count once.
        let decision = if at == 0 {
            let effects = Effects {
                metrics: &mut held,
                shared: &mut *shared,
                random: &mut *random,
            };
            decide_rule(config, state, request, ctx, effects, rule, *call)
        } else {
            let effects = Effects {
                metrics: &mut held,
                shared: &mut Unwritten(&*shared),
                random: &mut *random,
            };
            decide_rule(config, state, request, ctx, effects, rule, *call)
        };
        if !matches!(decision.step, Step::Continue { .. } | Step::CallAuthz(_)) {
            return decision;
        }
        // The service's decision, else a guarded rule's (it carries the identity), stands.
        let rank = if asks_service(rule) {
            2
        } else {
            usize::from(!rule.public)
        };
        if chosen.as_ref().is_none_or(|(best, _)| rank > *best) {
            chosen = Some((rank, decision));
        }
        if at + 1 == units.len() {
            if let Some((
                _,
                Decision {
                    step: Step::Continue { .. },
                    ..
                },
            )) = &chosen
            {
                for metric in std::mem::take(&mut held.allowed) {
                    held.inner.increment(metric);
                }
            }
        }
    }
    match chosen {
        Some((_, decision)) => decision,
        None => no_rule(request, held.inner),
    }
}

/// Shared data read but never written: a batch's later calls record no second failure.
struct Unwritten<'s>(&'s dyn SharedStore);

impl SharedStore for Unwritten<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.0.get(key)
    }

    fn set(&mut self, _key: &str, _value: &[u8], _cas: Option<u32>) -> bool {
        true
    }
}

/// A metric sink that holds back "allowed" counts (a batch is allowed once, not per call).
struct HeldAllowed<'m> {
    inner: &'m mut dyn MetricSink,
    allowed: Vec<Metric>,
}

impl MetricSink for HeldAllowed<'_> {
    fn increment(&mut self, metric: Metric) {
        if metric.is_allowed() {
            self.allowed.push(metric);
        } else {
            self.inner.increment(metric);
        }
    }
}

/// One rule decides the request (for an MCP rule, the one call it selected).
fn decide_rule(
    config: &Config,
    state: &mut State,
    request: &Request<'_>,
    ctx: Context,
    effects: Effects<'_>,
    rule: &Rule,
    mcp: Option<&mcp::Call>,
) -> Decision {
    let path = request.path();
    let metrics = effects.metrics;
    if rule.public {
        return pass(
            config,
            request,
            None,
            Rc::default(),
            format!("public {path}"),
        );
    }
    let candidates = credentials::find(
        &config.providers,
        config.api_keys.as_ref(),
        config.login.as_ref().map(|l| l.cookie_name.as_str()),
        &rule.requires,
        request,
    );
    let decision = if candidates.is_empty() {
        metrics.increment(Metric::Denied);
        metrics.increment(Metric::DeniedMissingCredential);
        respond(
            unauthenticated(config, rule, request, false),
            format!("deny missing_credential {path}"),
        )
    } else {
        let mut run = Run {
            config,
            state,
            request,
            ctx,
            metrics,
            shared: effects.shared,
            random: effects.random,
            gate: Gate::default(),
            mcp,
        };
        run.decide(rule, &candidates)
    };
    if config.resources.is_empty() {
        return decision;
    }
    with_resource_challenge(config, request, rule, decision)
}

/// Normalises the request's path for the rules (and, when it changes, for the upstream), or
/// says why the request is refused: no `:path`, a path that cannot be judged, or one not in
/// normalised form under `paths.unnormalised: "refuse"`.
fn normalise_path(config: &Config, request: &Request<'_>) -> Result<(), Reply> {
    let request_id = request.request_id();
    let Some(raw) = request.raw_path() else {
        return Err(replies::bad_request("the request has no path", request_id));
    };
    let normalised = paths::normalise(raw, config.paths)
        .map_err(|error| replies::bad_request(error.describe(), request_id))?;
    if normalised.forwarded != raw {
        if config.paths.unnormalised == Unnormalised::Refuse {
            return Err(replies::bad_request(
                "the request path is not in normalised form",
                request_id,
            ));
        }
        let upstream = match request.query() {
            Some(query) => format!("{}?{query}", normalised.forwarded),
            None => normalised.forwarded,
        };
        request.set_upstream_path(upstream);
    }
    request.set_normalised_path(normalised.matched);
    Ok(())
}

/// One request's checks, with what they need at hand.
struct Run<'r, 'q> {
    config: &'r Config,
    state: &'r mut State,
    request: &'r Request<'q>,
    ctx: Context,
    metrics: &'r mut dyn MetricSink,
    shared: &'r mut dyn SharedStore,
    random: &'r mut dyn Random,
    gate: Gate,
    /// The MCP call an MCP rule selected: part of the enterprise question and its cache key.
    mcp: Option<&'r mcp::Call>,
}

/// The failed-auth backoff as one request sees it: looked up once, and only when a credential
/// needs a real check (a token this VM already verified passes without it).
#[derive(Default)]
struct Gate {
    consulted: bool,
    client: Option<(ClientSlot, String)>,
    /// For the log: the block a failure on this request started.
    block_note: String,
}

/// What checking one credential came to.
enum Outcome {
    Valid {
        identity: Rc<Identity>,
        strip: Option<Strip>,
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
    /// A session cookie that does not open (expired, another key, tampered): as if absent.
    SessionInvalid,
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
            Failure::OpaqueUndecidable | Failure::SessionInvalid => false,
        }
    }
}

impl Run<'_, '_> {
    fn decide(&mut self, rule: &Rule, candidates: &[Candidate<'_>]) -> Decision {
        let mut first_failure: Option<(Failure, Kind, &str)> = None;
        // A configured key that is inactive or expired is that key, refused: never an agent
        // token to ask the authorization service about (that would send a key's hash as one).
        let mut refused_keys: Vec<&str> = Vec::new();
        for candidate in candidates {
            let secret = candidate.secret();
            if matches!(candidate, Candidate::OpaqueToken(_))
                && (refused_keys.contains(&secret)
                    || self
                        .config
                        .api_keys
                        .as_ref()
                        .is_some_and(|keys| keys.is_configured(secret)))
            {
                continue;
            }
            match self.check(candidate) {
                Outcome::Valid {
                    identity,
                    strip,
                    log,
                } => {
                    let valid = Valid {
                        kind: candidate.kind(),
                        identity,
                        strip,
                        log,
                        secret,
                    };
                    return self.allow(rule, valid);
                }
                Outcome::Wait(decision) => return decision,
                Outcome::Blocked { retry_after_s } => return self.rate_limited(retry_after_s),
                Outcome::Invalid(failure) => {
                    // Each failed credential counts, even if another on the request passes: a
                    // valid token must not carry guesses at keys along with it.
                    self.record_failure(&failure);
                    if let Failure::ApiKey(
                        ApiKeyError::Inactive { .. } | ApiKeyError::Expired { .. },
                    ) = &failure
                    {
                        refused_keys.push(secret);
                    }
                    if first_failure.is_none() {
                        first_failure = Some((failure, candidate.kind(), secret));
                    }
                }
            }
        }
        match first_failure {
            Some((failure, kind, secret)) => self.deny(rule, failure, kind, secret),
            None => respond(
                replies::invalid_token(self.request.authority(), "no valid credential", None),
                "deny no_candidate".to_string(),
            ),
        }
    }

    /// The log line, built only when it will be written.
    fn note(&self, line: impl FnOnce() -> String) -> String {
        if self.ctx.log {
            line()
        } else {
            String::new()
        }
    }

    fn check(&mut self, candidate: &Candidate<'_>) -> Outcome {
        if let Candidate::Session(found) = candidate {
            return self.open_session(found);
        }
        let fp = self.note(|| fingerprint(&token_hash(candidate.secret())));
        if let Candidate::Jwt { provider, found } = candidate {
            let now_s = self.ctx.now_s();
            if let Some(cached) =
                jwt_check::cached(&mut self.state.tokens, *provider, found.token, now_s)
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
                let verdict = self.verify_jwt(*provider, found.token);
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
                        strip: (!keys.forward).then(|| Strip::Header(presented.header.to_string())),
                        log: self.note(|| format!("allow api_key id={} key={fp}", key.id)),
                    },
                    Err(error) => Outcome::Invalid(Failure::ApiKey(error)),
                }
            }
            Candidate::OpaqueToken(found) if self.config.enterprise.is_some() => Outcome::Valid {
                identity: Rc::new(Identity::opaque(&self.config.identity_prefix)),
                strip: Strip::of(found),
                log: self.note(|| format!("agent token={fp}")),
            },
            Candidate::OpaqueToken(_) => Outcome::Invalid(Failure::OpaqueUndecidable),
            Candidate::RefusedOpaque(_) => Outcome::Invalid(Failure::RefusedOpaque),
            Candidate::Session(found) => self.open_session(found),
        }
    }

    /// A session cookie: opened once per worker, then served from the token cache until the
    /// session ends. A cookie that does not open is as if absent, and never counts as guessing.
    fn open_session(&mut self, found: &credentials::Found<'_>) -> Outcome {
        let (Some(login), Some(name)) = (&self.config.login, found.cookie) else {
            return Outcome::Invalid(Failure::SessionInvalid);
        };
        let now_s = self.ctx.now_s();
        let strip = Some(Strip::Cookie(name.to_string()));
        let fp = self.note(|| fingerprint(&token_hash(found.token)));
        if let Some(cached) =
            jwt_check::cached(&mut self.state.tokens, SESSION_PROVIDER, found.token, now_s)
        {
            self.metrics.increment(Metric::JwtCacheHit);
            return match cached {
                Ok(identity) => Outcome::Valid {
                    identity,
                    strip,
                    log: self.note(|| format!("allow session (cached) cookie={fp}")),
                },
                Err(_) => Outcome::Invalid(Failure::SessionInvalid),
            };
        }
        let (Some(session), Some(provider)) = (
            Session::open(login, found.token, now_s),
            self.config.providers.get(login.provider),
        ) else {
            return Outcome::Invalid(Failure::SessionInvalid);
        };
        self.metrics.increment(Metric::JwtCacheMiss);
        let identity = Rc::new(session.identity(&self.config.identity_prefix, provider));
        self.state.tokens.insert(
            found.token,
            crate::core::jwt::token_cache::CachedToken {
                provider: SESSION_PROVIDER,
                expires_after: Some(session.exp),
                kid: None,
                identity: Rc::clone(&identity),
            },
        );
        Outcome::Valid {
            identity,
            strip,
            log: self.note(|| format!("allow session sub={} cookie={fp}", session.sub)),
        }
    }

    fn verify_jwt(&mut self, provider_index: usize, token: &str) -> Result<Verdict, JwtFailure> {
        let (Some(provider), Some(keys)) = (
            self.config.providers.get(provider_index),
            self.state.keys.get_mut(provider_index),
        ) else {
            return Err(JwtFailure::KeysUnavailable);
        };
        let check = jwt_check::Verify {
            provider,
            provider_index,
            identity_prefix: &self.config.identity_prefix,
            hash_credential: self.config.enterprise.is_some(),
            now_ms: self.ctx.now_ms,
            may_wait: self.ctx.may_wait,
        };
        jwt_check::verify(&check, keys, &mut self.state.tokens, token)
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
                // The audience this request needs: a covered resource's (RFC 8707), else the
                // provider's (checked here, not when verifying: the token cache serves both).
                let resource = self
                    .config
                    .resources
                    .covering(self.request.authority(), self.request.path())
                    .filter(|r| r.require_audience);
                let audience_ok = match resource {
                    Some(resource) => resource.audience_matches(&identity.audiences),
                    None => {
                        provider.audiences.is_empty()
                            || crate::core::jwt::names_audience(
                                &identity.audiences,
                                &provider.audiences,
                            )
                    }
                };
                if !audience_ok {
                    return Outcome::Invalid(Failure::Jwt(JwtFailure::Invalid(
                        JwtError::WrongAudience,
                    )));
                }
                let strip = match candidate {
                    Candidate::Jwt { found, .. } if !provider.forward => Strip::of(found),
                    _ => None,
                };
                Outcome::Valid {
                    identity,
                    strip,
                    log: self.note(|| format!("allow jwt provider={} token={fp}", provider.name)),
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
        // An address that cannot be read shares one bucket: never a way around the backoff.
        let key = self
            .config
            .client_ip
            .client_ip(self.request)
            .map_or_else(|| UNKNOWN_CLIENT.to_string(), client_ip::backoff_key);
        let secret = deployment_secret(self.shared, &self.state.backoff_secret_candidate);
        let slot = backoff.locate(&secret, &key);
        self.gate.client = Some((slot, key));
        match backoff.standing(&*self.shared, slot, self.ctx.now_ms) {
            Standing::Blocked { retry_after_s } => Some(retry_after_s),
            Standing::Clear { .. } => None,
        }
    }

    fn allow(&mut self, rule: &Rule, valid: Valid<'_>) -> Decision {
        // A cookie rides along on cross-site requests: a state-changing one must come from the
        // gateway's own pages.
        if valid.kind == Kind::Session && !session_request_is_same_origin(self.config, self.request)
        {
            self.count_denial(valid.kind);
            self.metrics.increment(Metric::DeniedForbidden);
            return respond(
                replies::page(
                    403,
                    "csrf",
                    "a signed-in session cannot be used for a cross-site request",
                    false,
                    self.request.request_id(),
                ),
                format!("deny csrf {}", valid.log),
            );
        }
        // An agent token has no scopes or roles here: the service judges it entirely.
        if valid.kind != Kind::OpaqueToken {
            if let Err(denial) = policy::check(rule, &valid.identity) {
                return self.deny_policy(denial, valid.kind, &valid.log);
            }
        }
        if rule.enterprise || valid.kind == Kind::OpaqueToken {
            return self.authorize(rule, valid);
        }
        count_allowed(self.metrics, valid.kind);
        pass(
            self.config,
            self.request,
            valid.strip.as_ref(),
            Rc::clone(&valid.identity.headers),
            valid.log,
        )
    }

    /// The local checks passed; the service decides, from the cache or by a call.
    fn authorize(&mut self, rule: &Rule, valid: Valid<'_>) -> Decision {
        let request = self.request;
        let Some(enterprise) = &self.config.enterprise else {
            return self.deny(rule, Failure::OpaqueUndecidable, valid.kind, valid.secret);
        };
        // The credential's SHA-256: the decision key, and all the service ever sees of it.
        let hash = valid
            .identity
            .credential_sha256
            .unwrap_or_else(|| token_hash(valid.secret));
        let client_ip = self.config.client_ip.client_ip(request);
        let key = decision_cache::key(
            &hash,
            request.method(),
            request.authority(),
            request.path(),
            client_ip.filter(|_| enterprise.sends_client_ip()),
            self.mcp,
        );
        let remove = removals(self.config, request, valid.strip.as_ref());
        let lookup = self.state.decisions.get(&key, self.ctx.now_ms);
        // The warm path: a cached allow needs nothing else built.
        if let Lookup::Fresh(Decided::Allow { add, names }) = &lookup {
            self.metrics.increment(Metric::AuthzCacheHit);
            count_allowed(self.metrics, valid.kind);
            // The service's headers replace what the client sent under those names;
            // names the request does not carry need no removal (a host call each).
            let mut remove = remove;
            for name in names.iter() {
                if !remove.contains(name) && request.header(name).is_some() {
                    remove.push(name.clone());
                }
            }
            let log = self.note(|| format!("allow authz (cached) {}", valid.log));
            return Decision {
                step: Step::Continue {
                    remove,
                    add: Rc::clone(add),
                    rewrite: rewrite(self.config, request, valid.strip.as_ref()),
                    watch: (!enterprise.evict_on_upstream.is_empty()).then_some(hash),
                },
                log,
            };
        }
        let pending = Pending {
            kind: valid.kind,
            identity_headers: Rc::clone(&valid.identity.headers),
            remove,
            session_reply: rule.session_reply,
            credential_expires_at_s: valid.identity.expires_at_s,
            hints: Hints::from_request(request),
            credential: valid
                .log
                .strip_prefix("allow ")
                .unwrap_or(&valid.log)
                .to_string(),
            backoff_client: match valid.kind {
                Kind::OpaqueToken => self.gate.client.as_ref().map(|(slot, _)| *slot),
                _ => None,
            },
            rewrite: rewrite(self.config, request, valid.strip.as_ref()),
            credential_hash: hash,
            client: client_ip.map(|ip| ip.to_string()),
            user_agent: request.header("user-agent").map(str::to_string),
        };
        if let Lookup::Fresh(decided) = lookup {
            self.metrics.increment(Metric::AuthzCacheHit);
            let effects = Effects {
                metrics: self.metrics,
                shared: self.shared,
                random: self.random,
            };
            let resolution = Resolution::Decided(decided);
            return resolve(self.config, &pending, &resolution, self.ctx.now_ms, effects);
        }
        self.metrics.increment(Metric::AuthzCacheMiss);
        let body = enterprise.request_body(&CallInput {
            kind: valid.kind,
            identity: Some(&valid.identity),
            credential_sha256: &hash,
            client_ip,
            method: request.method(),
            host: forwarded_authority(self.config, request).unwrap_or(request.authority()),
            path: request.path(),
            mcp: self.mcp,
        });
        let log = format!("authz call {}", pending.credential);
        Decision {
            step: Step::CallAuthz(Box::new(AuthzCall { key, body, pending })),
            log,
        }
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
        count_denied(self.metrics, kind);
    }

    /// Counts a failed credential toward the client's backoff (if it looks like guessing).
    fn record_failure(&mut self, failure: &Failure) {
        if !failure.counts_as_failed_auth() || self.config.backoff.is_none() {
            return;
        }
        // A credential judged from the token cache did not look the client up yet (a client
        // already blocked is counted again: the block only grows).
        let _ = self.blocked_for();
        if let (Some(backoff), Some((slot, key))) = (&self.config.backoff, &self.gate.client) {
            if let Some(block_s) = backoff.record_failure(self.shared, *slot, self.ctx.now_ms) {
                self.gate.block_note = format!(" client={key} blocked_for={block_s}s");
            }
        }
    }

    fn deny(&mut self, rule: &Rule, failure: Failure, kind: Kind, secret: &str) -> Decision {
        let block_note = std::mem::take(&mut self.gate.block_note);
        let fp = self.note(|| fingerprint(&token_hash(secret)));
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
                let step = expired_step(
                    self.config,
                    rule.session_reply,
                    &Hints::from_request(self.request),
                    None,
                    &removals(self.config, self.request, None),
                    self.ctx.now_s(),
                    self.metrics,
                );
                Decision {
                    step,
                    log: format!("deny session_expired {credential}"),
                }
            }
            Failure::SessionInvalid => {
                self.metrics.increment(Metric::Denied);
                self.metrics.increment(Metric::DeniedMissingCredential);
                respond(
                    unauthenticated(self.config, rule, self.request, true),
                    format!("deny session_invalid {credential}"),
                )
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

/// Where a credential that must not go upstream came in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Strip {
    Header(String),
    Cookie(String),
}

impl Strip {
    fn of(found: &credentials::Found<'_>) -> Option<Strip> {
        match (found.header, found.cookie) {
            (Some(header), _) => Some(Strip::Header(header.to_string())),
            (None, Some(cookie)) => Some(Strip::Cookie(cookie.to_string())),
            (None, None) => None,
        }
    }
}

/// A credential that passed its local check.
struct Valid<'s> {
    kind: Kind,
    identity: Rc<Identity>,
    strip: Option<Strip>,
    log: String,
    /// The credential as presented (hashed only where a hash is needed).
    secret: &'s str,
}

fn count_allowed(metrics: &mut dyn MetricSink, kind: Kind) {
    metrics.increment(Metric::Allowed);
    metrics.increment(match kind {
        Kind::Jwt => Metric::AllowedJwt,
        Kind::ApiKey => Metric::AllowedApiKey,
        Kind::OpaqueToken => Metric::AllowedOpaqueToken,
        Kind::Session => Metric::AllowedSession,
    });
}

fn count_denied(metrics: &mut dyn MetricSink, kind: Kind) {
    metrics.increment(Metric::Denied);
    metrics.increment(match kind {
        Kind::Jwt => Metric::DeniedJwt,
        Kind::ApiKey => Metric::DeniedApiKey,
        Kind::OpaqueToken => Metric::DeniedOpaqueToken,
        Kind::Session => Metric::DeniedSession,
    });
}

/// Reads the service's answer for `key`, caches it, and says what it came to. `leader` is the
/// request that made the call: its credential's expiry bounds how long an allow is cached.
pub fn complete_authz(
    config: &Config,
    state: &mut State,
    key: &DecisionKey,
    leader: &Pending,
    (status, body): (u16, Option<&[u8]>),
    now_ms: u64,
    metrics: &mut dyn MetricSink,
) -> Resolution {
    let Some(enterprise) = &config.enterprise else {
        return Resolution::Failed {
            error: AuthzError::DispatchFailed,
            stale: None,
        };
    };
    let answer = match enterprise.read_answer(status, body) {
        Ok(answer) => answer,
        Err(error) => return fail_authz(config, state, key, error, now_ms, metrics),
    };
    metrics.increment(Metric::AuthzOk);
    let (decided, ttl_s) = match answer {
        Answer::Allow {
            headers,
            ttl_s,
            dropped_headers,
        } => {
            for _ in 0..dropped_headers {
                metrics.increment(Metric::AuthzHeaderDropped);
            }
            let names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
            let mut add: Vec<(String, String)> = leader
                .identity_headers
                .iter()
                .filter(|(n, _)| !names.contains(n))
                .cloned()
                .collect();
            add.extend(headers);
            let until_expiry = leader.credential_expires_at_s.map(|exp| {
                let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
                u64::try_from(exp.saturating_sub(now_s)).unwrap_or(0)
            });
            let ttl = [ttl_s, Some(enterprise.allow_ttl_s), until_expiry]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(0);
            let decided = Decided::Allow {
                add: Rc::new(add),
                names: Rc::new(names),
            };
            (decided, ttl)
        }
        Answer::Deny { reason } => {
            metrics.increment(Metric::AuthzDenied);
            let decided = Decided::Deny {
                reason: Rc::from(reason),
            };
            (decided, enterprise.deny_ttl_s)
        }
        Answer::SessionExpired { reauth_url } => {
            metrics.increment(Metric::AuthzDenied);
            let decided = Decided::Expired {
                reauth_url: reauth_url.map(Rc::from),
            };
            // Briefly: a renewal on another replica cannot reach this cache.
            (decided, enterprise.deny_ttl_s.min(MAX_EXPIRED_TTL_S))
        }
    };
    if ttl_s > 0 {
        state.decisions.insert(
            *key,
            leader.credential_hash,
            decided.clone(),
            ttl_s.saturating_mul(1000),
            now_ms,
        );
    }
    Resolution::Decided(decided)
}

/// The call failed (no answer, or none readable; also a call that could not be made or passed
/// its deadline): never cached; `allow_stale` looks for an expired allow to fall back on.
pub fn fail_authz(
    config: &Config,
    state: &mut State,
    key: &DecisionKey,
    error: AuthzError,
    now_ms: u64,
    metrics: &mut dyn MetricSink,
) -> Resolution {
    metrics.increment(Metric::AuthzError);
    if error == AuthzError::Timeout {
        metrics.increment(Metric::AuthzTimeout);
    }
    // An allow may stand in for the service only while it is down, and only `max_stale_s` past
    // its expiry; a service that refused to decide this request is not down.
    let max_stale_ms = match &config.enterprise {
        Some(e)
            if e.failure_mode == FailureMode::AllowStale
                && !matches!(error, AuthzError::Refused(_)) =>
        {
            e.max_stale_s.saturating_mul(1000)
        }
        _ => return Resolution::Failed { error, stale: None },
    };
    let stale = match state.decisions.get(key, now_ms) {
        Lookup::Fresh(decided @ Decided::Allow { .. }) => Some(decided),
        Lookup::Stale {
            decided: decided @ Decided::Allow { .. },
            stale_ms,
        } if stale_ms <= max_stale_ms => Some(decided),
        _ => None,
    };
    Resolution::Failed { error, stale }
}

/// What a client is told of a deny unless `enterprise.expose_reason` (a service's reason may
/// name policy or people).
const GENERIC_DENY: &str = "denied by the authorization service";

/// What one waiting request gets from a resolution.
pub fn resolve(
    config: &Config,
    pending: &Pending,
    resolution: &Resolution,
    now_ms: u64,
    effects: Effects<'_>,
) -> Decision {
    let metrics = effects.metrics;
    let request_id = pending.hints.request_id.as_deref();
    let credential = &pending.credential;
    let continue_with = |add: Rc<Vec<(String, String)>>, names: &[String]| {
        let mut remove = pending.remove.clone();
        for name in names {
            if !remove.contains(name) {
                remove.push(name.clone());
            }
        }
        let watched = config
            .enterprise
            .as_ref()
            .is_some_and(|e| !e.evict_on_upstream.is_empty());
        Step::Continue {
            remove,
            add,
            rewrite: pending.rewrite.clone(),
            watch: watched.then_some(pending.credential_hash),
        }
    };
    let marked = |base: &[(String, String)], names: &[String], mark: &str| {
        let mut add = base.to_vec();
        add.push((format!("{}authz", config.identity_prefix), mark.to_string()));
        continue_with(Rc::new(add), names)
    };
    match resolution {
        Resolution::Decided(Decided::Allow { add, names }) => {
            count_allowed(metrics, pending.kind);
            Decision {
                step: continue_with(Rc::clone(add), names),
                log: format!("allow authz {credential}"),
            }
        }
        Resolution::Decided(Decided::Deny { reason }) => {
            if let (Some(backoff), Some(client)) = (&config.backoff, pending.backoff_client) {
                backoff.record_failure(effects.shared, client, now_ms);
            }
            count_denied(metrics, pending.kind);
            metrics.increment(Metric::DeniedForbidden);
            let exposed = config.enterprise.as_ref().is_some_and(|e| e.expose_reason);
            let reason = if exposed { reason } else { GENERIC_DENY };
            respond(
                replies::forbidden(reason, request_id),
                format!("deny authz_denied {credential}"),
            )
        }
        Resolution::Decided(Decided::Expired { reauth_url }) => {
            count_denied(metrics, pending.kind);
            let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
            // With sign-in at the gateway, the link is the gateway's own: a sealed ticket that
            // renews only after the token's owner signs in.
            let ticket_url = config.login.as_ref().and_then(|login| {
                Ticket::issue(
                    &pending.credential_hash,
                    pending.client.as_deref(),
                    pending.user_agent.as_deref(),
                    now_s,
                    &mut *effects.random,
                )?
                .url(login, &mut *effects.random)
            });
            let step = expired_step(
                config,
                pending.session_reply,
                &pending.hints,
                ticket_url.as_deref().or(reauth_url.as_deref()),
                &pending.remove,
                now_s,
                metrics,
            );
            Decision {
                step,
                log: format!("deny session_expired (authz) {credential}"),
            }
        }
        Resolution::Failed { error, stale } => {
            let mode = config
                .enterprise
                .as_ref()
                .map_or(FailureMode::Deny, |e| e.failure_mode);
            let why = error.describe();
            if let AuthzError::Refused(_) = error {
                count_denied(metrics, pending.kind);
                metrics.increment(Metric::DeniedForbidden);
                return respond(
                    replies::forbidden(GENERIC_DENY, request_id),
                    format!("deny authz_refused (authz {why}) {credential}"),
                );
            }
            match (mode, stale) {
                // Only the service can tell a real agent token from a made-up string: while it
                // cannot answer, `allow` would let any string in. Agent tokens are denied.
                (FailureMode::Allow, _)
                    if pending.kind != Kind::OpaqueToken && error.is_outage() =>
                {
                    metrics.increment(Metric::FailureModeAllowed);
                    count_allowed(metrics, pending.kind);
                    Decision {
                        step: marked(&pending.identity_headers, &[], "failure-mode-allow"),
                        log: format!("allow failure_mode (authz {why}) {credential}"),
                    }
                }
                (FailureMode::AllowStale, Some(Decided::Allow { add, names })) => {
                    metrics.increment(Metric::FailureModeAllowed);
                    count_allowed(metrics, pending.kind);
                    Decision {
                        step: marked(add, names, "stale"),
                        log: format!("allow stale (authz {why}) {credential}"),
                    }
                }
                _ => {
                    count_denied(metrics, pending.kind);
                    metrics.increment(Metric::DeniedAuthzUnavailable);
                    let status = config
                        .enterprise
                        .as_ref()
                        .map_or(503, |e| e.status_on_error);
                    respond(
                        replies::authorization_unavailable(status, request_id),
                        format!("deny authorization_unavailable (authz {why}) {credential}"),
                    )
                }
            }
        }
    }
}

/// The step for an expired session: answered now, or once the body is in (LLM shapes); a request
/// that waits for its body loses `remove` and every header a credential may arrive in.
fn expired_step(
    config: &Config,
    kind: SessionReply,
    hints: &Hints,
    reauth_url: Option<&str>,
    remove: &[String],
    now_s: i64,
    metrics: &mut dyn MetricSink,
) -> Step {
    // An expired JWT has no ticket: with sign-in at the gateway, signing in again is the way.
    let login_url = config
        .login
        .as_ref()
        .filter(|_| reauth_url.is_none() && config.session.reauth_url.is_none())
        .map(|login| format!("{}{}", login.public_url, login.login_path));
    let reauth_url = reauth_url.or(login_url.as_deref());
    match session::expired_reply(&config.session, kind, hints, reauth_url, now_s, metrics) {
        Expired::Now(reply) => Step::Respond(reply),
        Expired::AfterBody(mut reply) => {
            reply.remove = remove
                .iter()
                .chain(&config.credential_header_names)
                .cloned()
                .collect();
            Step::SessionReply(reply)
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
    strip: Option<&Strip>,
    add: Rc<Vec<(String, String)>>,
    log: String,
) -> Decision {
    Decision {
        step: Step::Continue {
            remove: removals(config, request, strip),
            add,
            rewrite: rewrite(config, request, strip),
            watch: None,
        },
        log,
    }
}

/// The normalised path, and the `Cookie` header without a credential cookie not forwarded and
/// without the gateway's own sign-in cookies (never forwarded).
fn rewrite(config: &Config, request: &Request<'_>, strip: Option<&Strip>) -> Rewrite {
    let stripped = match strip {
        Some(Strip::Cookie(name)) => Some(name.as_str()),
        _ => None,
    };
    let drop = |name: &str| {
        Some(name) == stripped
            || config.login.as_ref().is_some_and(|login| {
                name == login.cookie_name
                    || name.starts_with("authgate_a_")
                    || name.starts_with("__Host-authgate_a_")
            })
    };
    let cookie = (stripped.is_some() || (config.login.is_some() && request.has_cookie(&drop)))
        .then(|| request.cookies_without_any(&drop));
    Rewrite {
        path: request.upstream_path().map(str::to_string),
        cookie,
        authority: forwarded_authority(config, request).map(str::to_string),
    }
}

/// The `:authority` a request goes upstream with when it is not the client's: see
/// [`Rewrite::authority`].
fn forwarded_authority<'a>(config: &Config, request: &Request<'a>) -> Option<&'a str> {
    let authority = request.authority();
    let bare = crate::core::syntax::bare_authority(authority);
    (config.host_sensitive && bare != authority && !bare.is_empty()).then_some(bare)
}

/// The reply to a request without a usable credential: on a `login` rule a browser navigating is
/// sent to sign in, and an API call's 401 says where to; `clear`: a session cookie that did not
/// open is cleared.
fn unauthenticated(config: &Config, rule: &Rule, request: &Request<'_>, clear: bool) -> Reply {
    let mut reply = replies::unauthenticated(request.authority(), request.request_id());
    let Some(login) = config.login.as_ref() else {
        return reply;
    };
    if rule.login {
        let target = request.header(":path").unwrap_or("/");
        let url = format!(
            "{}?rd={}",
            login.login_path,
            crate::core::login::flow::percent_encode(target)
        );
        if is_navigation(request) {
            reply = Reply {
                status: 302,
                headers: vec![
                    ("location".to_string(), url),
                    ("cache-control".to_string(), "no-store".to_string()),
                ],
                body: String::new(),
            };
        } else if let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&reply.body) {
            body["login_url"] = serde_json::Value::String(format!("{}{url}", login.public_url));
            reply.body = body.to_string();
        }
    }
    if clear {
        reply.headers.push((
            "set-cookie".to_string(),
            set_cookie(login, &login.cookie_name, None, 0),
        ));
    }
    reply
}

/// A browser navigating (not a script): GET or HEAD, HTML accepted, no `X-Requested-With`,
/// `Sec-Fetch-Mode` absent or `navigate`.
fn is_navigation(request: &Request<'_>) -> bool {
    matches!(request.method(), "GET" | "HEAD")
        && sign_in::wants_html(request)
        && request.header("x-requested-with").is_none()
        && request
            .header("sec-fetch-mode")
            .is_none_or(|mode| mode == "navigate")
}

/// A session may change state (any method but GET, HEAD, OPTIONS) only from the gateway's own
/// origin: `Sec-Fetch-Site: same-origin`, or without it an absent or matching `Origin`.
fn session_request_is_same_origin(config: &Config, request: &Request<'_>) -> bool {
    if matches!(request.method(), "GET" | "HEAD" | "OPTIONS") {
        return true;
    }
    match request.header("sec-fetch-site") {
        Some(site) => site == "same-origin",
        None => match (request.header("origin"), config.login.as_ref()) {
            (None, _) => true,
            (Some(origin), Some(login)) => origin == login.public_url,
            (Some(_), None) => false,
        },
    }
}

/// Every name authgate or the service may set upstream, in any spelling the client used, and
/// (unless forwarded) the credential's header.
fn removals(config: &Config, request: &Request<'_>, strip: Option<&Strip>) -> Vec<String> {
    let credential_header = match strip {
        Some(Strip::Header(name)) => Some(name.as_str()),
        _ => None,
    };
    let mut remove: Vec<String> = request
        .headers()
        .map(|(name, _)| name)
        .filter(|name| Some(*name) == credential_header || config.is_reserved_header(name))
        .map(str::to_string)
        .collect();
    remove.sort();
    remove.dedup();
    remove
}

/// A CORS preflight as browsers send it (Fetch standard §4.8): `OPTIONS` with a non-empty
/// `Origin` and `Access-Control-Request-Method`, and no body.
fn is_preflight(request: &Request<'_>) -> bool {
    let present = |name| request.header(name).is_some_and(|v| !v.trim().is_empty());
    request.method() == "OPTIONS"
        && request.has_no_body()
        && present("origin")
        && present("access-control-request-method")
}

#[cfg(test)]
#[path = "engine_mcp_tests.rs"]
mod mcp_tests;

#[cfg(test)]
#[path = "engine_host_tests.rs"]
mod host_tests;
