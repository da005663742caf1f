//! State shared by the root context and the HTTP contexts of one VM (one Envoy thread):
//! the compiled configuration, keys and caches, counters, and requests waiting for keys.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::types::LogLevel;

use crate::core::authz::decision_cache::DecisionKey;
use crate::core::authz::AuthzError;
use crate::core::config::{Config, HELD_AUTHORITY, HELD_PATH, HOLD_HEADER};
use crate::core::engine::{
    self, AuthzCall, Context, Decision, Effects, Pending, Resolution, Rewrite, State, Step,
};
use crate::core::header_pairs;
use crate::core::jwt::token_cache::TokenHash;
use crate::core::login::endpoints as sign_in;
use crate::core::login::reauth::{self, Renewal};
use crate::core::metrics::{Metric, MetricSink};
use crate::core::policy::backoff::SharedStore;
use crate::core::policy::mcp;
use crate::core::random::OsRandom;
use crate::core::replies;
use crate::core::replies::body_scan::BodyFacts;
use crate::core::replies::llm::LlmReply;
use crate::core::request::Request;
use crate::filter::authz_call::{AuthzCalls, Inflight, Owner};
use crate::filter::body_read::{BodyReads, Chunk, Read};
use crate::filter::body_wait::{BodyWait, Consume};
use crate::filter::counters::{CacheFigures, CacheStats, Counters};
use crate::filter::upstream_watch::UpstreamWatch;
use crate::filter::{hold, host};

/// Slack beyond the JWKS fetch timeout before a waiting request is answered regardless:
/// covers a fetch started by another VM and the tick that notices it.
const WAIT_SLACK_MS: u64 = 1_000;

const DEBUG_LEVEL_REFRESH_MS: u64 = 1_000;

/// Slack beyond an authorization call's timeout before its waiters are answered regardless
/// (Envoy answers a timed-out call itself; this only covers a call that vanished).
const AUTHZ_SLACK_MS: u64 = 1_000;

/// Header bytes one VM keeps for requests waiting for keys: Envoy allows header blocks up to
/// 8 MiB, so a count alone would not bound the memory.
const MAX_WAITING_HEADER_BYTES: usize = 16 << 20;

/// How long an MCP request's body may take to arrive (408 after).
const MCP_READ_TIMEOUT_MS: u64 = 30_000;

/// The root's tick period while a release waits for its request's last chunk.
const PROMPT_TICK: Duration = Duration::from_millis(1);

/// How long the token endpoint may take to answer a sign-in.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Vm {
    pub config: Config,
    pub state: RefCell<State>,
    waiters: RefCell<Vec<Waiter>>,
    authz: RefCell<AuthzCalls>,
    bodies: RefCell<BodyWait>,
    /// MCP requests whose body is being read before they are decided.
    reads: RefCell<BodyReads>,
    /// The request whose body-ending chunk (with data) is in the callback running now.
    final_chunk: Cell<Option<u32>>,
    /// Releases due once that chunk reached the companion (the next, prompt, tick).
    due: RefCell<Vec<(u32, Step)>>,
    /// The root ticks promptly for `due`.
    prompt_tick: Cell<bool>,
    /// Debug logging on, and when that was last asked.
    debug: Cell<(bool, u64)>,
    counters: Counters,
    authz_latency_ms: Option<u32>,
    upstream: UpstreamWatch,
    cache_stats: CacheStats,
    /// Sign-in calls in flight (token exchanges, renewals): call token → (request, what the
    /// answer needs).
    sign_ins: RefCell<HashMap<u32, (u32, SignInCall)>>,
}

/// A sign-in request waiting for a call.
enum SignInCall {
    Exchange(sign_in::Pending),
    Renew(Box<Renewal>),
}

/// What a body callback came to for a paused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProgress {
    /// The session reply went.
    Replied,
    /// The chunk was scanned and emptied: it may move on (empty) to the companion, which holds
    /// the request. Buffering it here instead would keep growing Envoy's buffer for this filter.
    Consumed,
    /// Nothing was done with the body (no reply is due: the request may still go upstream).
    Kept,
}

/// Decisions for paused requests, by context id, for the caller to deliver.
pub type Deliveries = Vec<(u32, Decision)>;

/// A request paused until its provider's keys change, or its deadline.
struct Waiter {
    context_id: u32,
    provider: usize,
    generation: u64,
    deadline_ms: u64,
    /// The request headers as the host serialized them.
    header_block: Vec<u8>,
    /// The client's address, read while the request's context was current.
    source: Option<String>,
    /// The headers ended the request (decided again as such: a body-less MCP request is no call).
    end_of_stream: bool,
}

/// Envoy shared data, for counts every worker must see.
struct HostShared;

impl SharedStore for HostShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        host::shared_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        host::shared_set(key, value, cas)
    }
}

impl Vm {
    pub fn new(config: Config) -> Self {
        let mut state = State::with_seed(&config, host::random_u64());
        // Without randomness the candidate stays zero: slots are then as predictable as before
        // the secret existed, never wrong.
        if let Some(secret) = host::random_bytes() {
            state.backoff_secret_candidate = secret;
        }
        let remote: Vec<Option<&str>> = config
            .providers
            .iter()
            .map(|p| match p.jwks {
                crate::core::jwt::provider::JwksSource::Remote(_) => Some(p.name.as_str()),
                crate::core::jwt::provider::JwksSource::Local(_) => None,
            })
            .collect();
        let cache_stats = CacheStats::define(&remote);
        Vm {
            cache_stats,
            config,
            state: RefCell::new(state),
            waiters: RefCell::default(),
            authz: RefCell::default(),
            bodies: RefCell::default(),
            reads: RefCell::default(),
            final_chunk: Cell::new(None),
            due: RefCell::default(),
            prompt_tick: Cell::new(false),
            debug: Cell::new((false, 0)),
            counters: Counters::define(),
            authz_latency_ms: host::define_histogram("authgate.authz_latency_ms"),
            upstream: UpstreamWatch::default(),
            sign_ins: RefCell::default(),
        }
    }

    pub fn evicts_on_upstream(&self) -> bool {
        self.config
            .enterprise
            .as_ref()
            .is_some_and(|e| !e.evict_on_upstream.is_empty())
    }

    /// Lets a request through (the caller continues or resumes it): its headers and path as
    /// decided, and, when an enterprise decision let it through, watched until the upstream
    /// answers.
    pub fn let_through(
        &self,
        context_id: u32,
        remove: &[String],
        add: &[(String, String)],
        rewrite: &Rewrite,
        watch: Option<TokenHash>,
    ) {
        if let Some(credential) = watch {
            self.upstream.watch(context_id, credential);
        }
        apply_headers(remove, add, rewrite);
    }

    /// The upstream's response headers (only with `evict_on_upstream`): an evicting status
    /// drops every cached decision of the request's credential, here and in the other workers.
    pub fn upstream_answered(&self, context_id: u32) {
        let Some(credential) = self.upstream.take(context_id) else {
            return;
        };
        let evicting = self.config.enterprise.as_ref().is_some_and(|e| {
            host::response_status().is_some_and(|status| e.evict_on_upstream.contains(&status))
        });
        if evicting {
            self.count(Metric::AuthzEvictedUpstream);
            self.evict_credential(&credential);
            self.upstream.publish(credential, host::now_ms());
        }
    }

    /// The request is gone: nothing to watch any more.
    pub fn unwatch(&self, context_id: u32) {
        if self.evicts_on_upstream() {
            self.upstream.take(context_id);
        }
    }

    fn evict_credential(&self, credential: &TokenHash) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.decisions.evict_credential(credential);
        }
    }

    /// On the tick: cache sizes, evictions and key fetch times for Envoy's stats.
    pub fn report_cache_stats(&self) {
        let Ok(state) = self.state.try_borrow() else {
            return;
        };
        let figures = CacheFigures {
            token_size: state.tokens.len() as u64,
            decision_size: state.decisions.len() as u64,
            token_evictions: state.tokens.evictions(),
            decision_evictions: state.decisions.evictions(),
            fetched_at_ms: state
                .keys
                .iter()
                .map(|k| k.refresh.as_ref().and_then(|r| r.fetched_at_ms))
                .collect(),
        };
        drop(state);
        self.cache_stats.report(&figures);
    }

    /// On the tick: credentials other workers saw refused.
    pub fn apply_published_evictions(&self) {
        // Upstream refusals and sign-in renewals both drop a credential's decisions.
        if !self.evicts_on_upstream() && self.config.login.is_none() {
            return;
        }
        for credential in self.upstream.published() {
            self.evict_credential(&credential);
        }
    }

    pub fn count(&self, metric: Metric) {
        (&self.counters).increment(metric);
    }

    /// Hands the counts of this VM to Envoy (from the root context's tick).
    pub fn flush_counters(&self) {
        self.counters.flush();
    }

    /// Decides for a request, given its serialized headers. Never holds a borrow across a host
    /// call that acts on a stream.
    /// `end_of_stream`: the headers ended the request (no body follows). `source`: the client's
    /// address when it was read before (a waiter decided again from the root context, where the
    /// host knows no downstream); else it is looked up if needed.
    pub fn decide(
        &self,
        header_block: &[u8],
        may_wait: bool,
        end_of_stream: bool,
        source: Option<&str>,
        body: Option<&[u8]>,
    ) -> Option<Decision> {
        // A block the host garbled reads as no headers: with no `:path` the core refuses it (400).
        let pairs = header_pairs::decode(header_block).unwrap_or_default();
        let headers = header_pairs::as_strs(&pairs);
        let headers = headers.as_slice();
        let mut state = self.state.try_borrow_mut().ok()?;
        let now_ms = host::now_ms();
        let log = self.debug_enabled(now_ms);
        let ctx = Context {
            now_ms,
            may_wait,
            log,
        };
        let lookup = host::source_address;
        let request = Request::new(headers)
            .with_end_of_stream(end_of_stream)
            .with_body(body);
        let request = match source {
            Some(address) => request.with_source_address(Some(address)),
            None if self.config.needs_client_ip() => request.with_source_lookup(&lookup),
            None => request,
        };
        let effects = Effects {
            metrics: &mut &self.counters,
            shared: &mut HostShared,
            random: &mut OsRandom,
        };
        let decision = engine::decide(&self.config, &mut state, &request, ctx, effects);
        if log {
            host::log(LogLevel::Debug, &decision.log);
        }
        Some(decision)
    }

    /// Whether debug logging is on, asked of the host at most once a second (the level rarely
    /// changes; asking costs a host call per request).
    fn debug_enabled(&self, now_ms: u64) -> bool {
        let (enabled, checked_ms) = self.debug.get();
        if now_ms.saturating_sub(checked_ms) < DEBUG_LEVEL_REFRESH_MS && checked_ms != 0 {
            return enabled;
        }
        let enabled = host::debug_enabled();
        self.debug.set((enabled, now_ms));
        enabled
    }

    /// Whether one more request (with this many header bytes kept) may pause in this VM.
    /// Beyond `limits.max_paused_requests`, or the header bytes bound, it is refused (503).
    pub fn room_to_pause(&self, header_bytes: usize) -> bool {
        let (waiting, bytes) = match self.waiters.try_borrow() {
            Ok(waiters) => (
                waiters.len(),
                waiters.iter().map(|w| w.header_block.len()).sum::<usize>(),
            ),
            Err(_) => return false,
        };
        let in_calls = self.authz.try_borrow().map_or(usize::MAX, |c| c.waiting());
        let room = waiting.saturating_add(in_calls) < self.config.max_paused_requests
            && bytes.saturating_add(header_bytes) <= MAX_WAITING_HEADER_BYTES;
        if !room {
            self.count(Metric::Overloaded);
        }
        room
    }

    pub fn add_waiter(
        &self,
        context_id: u32,
        provider: usize,
        header_block: Vec<u8>,
        end_of_stream: bool,
    ) {
        let source = self
            .config
            .needs_client_ip()
            .then(host::source_address)
            .flatten();
        let generation = self
            .state
            .try_borrow()
            .ok()
            .and_then(|s| s.keys.get(provider).map(|k| k.generation))
            .unwrap_or(0);
        let timeout_ms = self
            .config
            .providers
            .get(provider)
            .map_or(0, |p| match &p.jwks {
                crate::core::jwt::provider::JwksSource::Remote(remote) => remote.timeout_ms,
                crate::core::jwt::provider::JwksSource::Local(_) => 0,
            });
        let deadline_ms = host::now_ms() + timeout_ms + WAIT_SLACK_MS;
        if let Ok(mut waiters) = self.waiters.try_borrow_mut() {
            waiters.push(Waiter {
                context_id,
                provider,
                generation,
                deadline_ms,
                header_block,
                source,
                end_of_stream,
            });
        }
    }

    pub fn remove_waiter(&self, context_id: u32) {
        if let Ok(mut waiters) = self.waiters.try_borrow_mut() {
            waiters.retain(|w| w.context_id != context_id);
        }
    }

    pub fn has_waiters(&self) -> bool {
        self.waiters.try_borrow().is_ok_and(|w| !w.is_empty())
    }

    /// Decides again for waiting requests whose keys changed or whose deadline passed, and
    /// resumes or answers each of them from the root context.
    pub fn wake_waiters(&self) {
        let now_ms = host::now_ms();
        let generations: Vec<u64> = match self.state.try_borrow() {
            Ok(state) => state.keys.iter().map(|k| k.generation).collect(),
            Err(_) => return,
        };
        let ready: Vec<Waiter> = match self.waiters.try_borrow_mut() {
            Ok(mut waiters) => {
                let (ready, still): (Vec<Waiter>, Vec<Waiter>) = waiters.drain(..).partition(|w| {
                    now_ms >= w.deadline_ms || generations.get(w.provider) != Some(&w.generation)
                });
                *waiters = still;
                ready
            }
            Err(_) => return,
        };
        for waiter in ready {
            // An MCP request waits for keys after its body was read: decided with that body.
            let body = self
                .reads
                .try_borrow()
                .ok()
                .and_then(|r| r.get(waiter.context_id).map(|read| read.body.clone()));
            let Some(decision) = self.decide(
                &waiter.header_block,
                false,
                waiter.end_of_stream,
                waiter.source.as_deref(),
                body.as_deref(),
            ) else {
                continue;
            };
            // An authorization call is made from the root context, which outlives the request.
            let decision = match decision.step {
                Step::CallAuthz(call) => {
                    match self.start_authz(waiter.context_id, *call, Owner::Root) {
                        Some(decision) => decision,
                        None => continue,
                    }
                }
                _ => decision,
            };
            if host::set_effective_context(waiter.context_id) {
                let pairs = header_pairs::decode(&waiter.header_block).unwrap_or_default();
                let headers = header_pairs::as_strs(&pairs);
                let request_id = Request::new(&headers).request_id();
                self.execute_paused(waiter.context_id, decision.step, request_id);
            }
        }
    }

    /// Joins the call in flight for the key, or makes it. None: the request is paused until the
    /// answer; Some: answer it now (the call could not be made).
    pub fn start_authz(&self, context_id: u32, call: AuthzCall, owner: Owner) -> Option<Decision> {
        let AuthzCall { key, body, pending } = call;
        if !self.room_to_pause(0) {
            return Some(Decision {
                step: Step::Respond(replies::overloaded(pending.hints.request_id.as_deref())),
                log: format!(
                    "overloaded: too many paused requests {}",
                    pending.credential
                ),
            });
        }
        let joined = match self.authz.try_borrow_mut() {
            Ok(mut calls) => calls.join(&key, context_id, pending.clone()),
            Err(_) => false,
        };
        if joined {
            return None;
        }
        let now_ms = host::now_ms();
        let timeout_ms = self.config.enterprise.as_ref().map_or(0, |e| e.timeout_ms);
        let token = self.dispatch_authz(&body, pending.hints.request_id.as_deref());
        let Some(token) = token else {
            let resolution = self.fail_authz(&key, AuthzError::DispatchFailed);
            return Some(self.resolve(&pending, &resolution));
        };
        let inflight = Inflight {
            token: Some(token),
            owner,
            started_ms: now_ms,
            deadline_ms: now_ms + timeout_ms + AUTHZ_SLACK_MS,
            body,
            request_id: pending.hints.request_id.clone(),
            leader: pending.clone(),
            waiters: vec![(context_id, pending)],
        };
        if let Ok(mut calls) = self.authz.try_borrow_mut() {
            calls.insert(key, inflight);
        }
        None
    }

    fn dispatch_authz(&self, body: &[u8], request_id: Option<&str>) -> Option<u32> {
        let enterprise = self.config.enterprise.as_ref()?;
        let token = host::dispatch_post(
            &enterprise.cluster,
            &enterprise.authority,
            &enterprise.path,
            body,
            request_id,
            Duration::from_millis(enterprise.timeout_ms),
        );
        match token {
            Some(_) => self.count(Metric::AuthzCall),
            None => host::log(
                LogLevel::Error,
                &format!(
                    "authgate: could not call the authorization service (cluster {:?})",
                    enterprise.cluster
                ),
            ),
        }
        token
    }

    fn resolve(&self, pending: &Pending, resolution: &Resolution) -> Decision {
        let effects = Effects {
            metrics: &mut &self.counters,
            shared: &mut HostShared,
            random: &mut OsRandom,
        };
        engine::resolve(&self.config, pending, resolution, host::now_ms(), effects)
    }

    fn fail_authz(&self, key: &DecisionKey, error: AuthzError) -> Resolution {
        let now_ms = host::now_ms();
        match self.state.try_borrow_mut() {
            Ok(mut state) => engine::fail_authz(
                &self.config,
                &mut state,
                key,
                error,
                now_ms,
                &mut &self.counters,
            ),
            Err(_) => Resolution::Failed { error, stale: None },
        }
    }

    /// The answer to call `token`: the decision for every request that waited for it. None when
    /// the token is not an authorization call.
    pub fn finish_authz(&self, token: u32, body_size: usize) -> Option<Deliveries> {
        let (key, call) = self.authz.try_borrow_mut().ok()?.take_by_token(token)?;
        let max_body = self
            .config
            .enterprise
            .as_ref()
            .map_or(0, |e| e.max_response_bytes);
        let (status, body) = host::callout_response(body_size, max_body);
        let now_ms = host::now_ms();
        if let Some(id) = self.authz_latency_ms {
            host::record(id, now_ms.saturating_sub(call.started_ms));
        }
        let resolution = match self.state.try_borrow_mut() {
            Ok(mut state) => engine::complete_authz(
                &self.config,
                &mut state,
                &key,
                &call.leader,
                (status, body.as_deref()),
                now_ms,
                &mut &self.counters,
            ),
            Err(_) => Resolution::Failed {
                error: AuthzError::DispatchFailed,
                stale: None,
            },
        };
        if let Resolution::Failed { error, .. } = &resolution {
            host::log(
                LogLevel::Warn,
                &format!("authgate: authorization service {}", error.describe()),
            );
        }
        Some(self.deliveries(&call, &resolution))
    }

    fn deliveries(&self, call: &Inflight, resolution: &Resolution) -> Deliveries {
        let debug = host::debug_enabled();
        call.waiters
            .iter()
            .map(|(context_id, pending)| {
                let decision = self.resolve(pending, resolution);
                if debug {
                    host::log(LogLevel::Debug, &decision.log);
                }
                (*context_id, decision)
            })
            .collect()
    }

    /// On the root tick: answer the waiters of calls past their deadline, and call again for
    /// calls whose owner went away.
    pub fn sweep_authz(&self) -> Deliveries {
        let now_ms = host::now_ms();
        let Ok(mut calls) = self.authz.try_borrow_mut() else {
            return Vec::new();
        };
        if calls.is_empty() {
            return Vec::new();
        }
        let (overdue, orphaned) = calls.sweep(now_ms);
        let redo: Vec<(DecisionKey, Vec<u8>, Option<String>)> = orphaned
            .iter()
            .filter_map(|key| calls.body_of(key).map(|(body, id)| (*key, body, id)))
            .collect();
        drop(calls);
        for (key, body, request_id) in redo {
            if let Some(token) = self.dispatch_authz(&body, request_id.as_deref()) {
                if let Ok(mut calls) = self.authz.try_borrow_mut() {
                    calls.redispatched(&key, token);
                }
            }
        }
        let mut out = Vec::new();
        for (key, call) in overdue {
            let resolution = self.fail_authz(&key, AuthzError::Timeout);
            out.extend(self.deliveries(&call, &resolution));
        }
        out
    }

    pub fn has_authz_calls(&self) -> bool {
        self.authz.try_borrow().is_ok_and(|c| !c.is_empty())
    }

    /// Whether the request is paused (for keys, an authorization answer, or its body).
    pub fn is_paused(&self, context_id: u32) -> bool {
        self.waiters
            .try_borrow()
            .is_ok_and(|w| w.iter().any(|w| w.context_id == context_id))
            || self
                .authz
                .try_borrow()
                .is_ok_and(|c| c.is_waiting(context_id))
            || self
                .bodies
                .try_borrow()
                .is_ok_and(|b| b.is_waiting(context_id))
    }

    /// A sign-in callback: exchanges the code at the token endpoint. False when the call could
    /// not be made (the request is answered here, then).
    pub fn start_sign_in(&self, context_id: u32, exchange: sign_in::Exchange) -> bool {
        let sign_in::Exchange {
            cluster,
            headers,
            body,
            pending,
        } = exchange;
        let refusal = replies::page(
            503,
            "idp_unavailable",
            "the identity provider cannot be reached; retry",
            pending.html,
            pending.request_id.as_deref(),
        );
        let call = SignInCall::Exchange(pending);
        self.dispatch_sign_in(
            context_id,
            &cluster,
            &headers,
            &body,
            SIGN_IN_TIMEOUT,
            call,
            refusal,
        )
    }

    /// An owner confirmed a renewal: posts it to the authorization service. False when the
    /// call could not be made (the request is answered here, then).
    pub fn start_renewal(&self, context_id: u32, renewal: Renewal) -> bool {
        let Some(enterprise) = self.config.enterprise.as_ref() else {
            return false;
        };
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), enterprise.renew_path.clone()),
            (":authority".to_string(), enterprise.authority.clone()),
            ("content-type".to_string(), "application/json".to_string()),
            (
                "x-authgate-gateway-key".to_string(),
                enterprise.gateway_key.clone().unwrap_or_default(),
            ),
        ];
        let refusal = replies::page(
            503,
            "unavailable",
            "the authorization service cannot be reached; retry",
            renewal.html,
            renewal.request_id.as_deref(),
        );
        let body = renewal.body.clone();
        let timeout = Duration::from_millis(enterprise.timeout_ms);
        let call = SignInCall::Renew(Box::new(renewal));
        self.dispatch_sign_in(
            context_id,
            &enterprise.cluster,
            &headers,
            &body,
            timeout,
            call,
            refusal,
        )
    }

    /// Makes a sign-in call and remembers what its answer needs; answers `refusal` when the
    /// host refuses the call.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_sign_in(
        &self,
        context_id: u32,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
        call: SignInCall,
        refusal: replies::Reply,
    ) -> bool {
        match host::dispatch(cluster, headers, body, timeout) {
            Some(token) => {
                if let Ok(mut waiting) = self.sign_ins.try_borrow_mut() {
                    waiting.insert(token, (context_id, call));
                }
                true
            }
            None => {
                host::log(
                    LogLevel::Error,
                    &format!("authgate: could not call cluster {cluster:?} for a sign-in"),
                );
                host::send_reply(&refusal);
                false
            }
        }
    }

    /// The answer to sign-in call `token` (a code exchange or a renewal): the reply for its
    /// request (the effective context is that request). None when `token` is no such call.
    pub fn finish_sign_in(&self, token: u32, body_size: usize) -> Option<replies::Reply> {
        let (_, call) = self.sign_ins.try_borrow_mut().ok()?.remove(&token)?;
        let login = self.config.login.as_ref()?;
        let pending = match call {
            SignInCall::Exchange(pending) => pending,
            SignInCall::Renew(renewal) => {
                let (status, body) = host::callout_response(body_size, 64 * 1024);
                let (reply, renewed) = reauth::renewed(login, &renewal, status, body.as_deref());
                if renewed {
                    // The token's cached "expired" answer goes now, here and on every worker.
                    self.evict_credential(&renewal.token_sha256);
                    self.upstream.publish(renewal.token_sha256, host::now_ms());
                }
                return Some(reply);
            }
        };
        let provider = self.config.providers.get(login.provider)?;
        let response = host::callout_response(body_size, sign_in::MAX_TOKEN_RESPONSE_BYTES);
        let keys = self
            .state
            .try_borrow()
            .ok()
            .and_then(|s| s.keys.get(login.provider).and_then(|k| k.keys.clone()));
        let now_s = i64::try_from(host::now_ms() / 1000).unwrap_or(i64::MAX);
        Some(sign_in::complete(
            login,
            provider,
            keys.as_deref(),
            &pending,
            (response.0, response.1.as_deref()),
            now_s,
            &mut OsRandom,
        ))
    }

    /// A request went away: forget it wherever it waits.
    pub fn forget(&self, context_id: u32) {
        if let Ok(mut waiting) = self.sign_ins.try_borrow_mut() {
            waiting.retain(|_, (id, _)| *id != context_id);
        }
        self.remove_waiter(context_id);
        if let Ok(mut calls) = self.authz.try_borrow_mut() {
            calls.forget(context_id);
        }
        if let Ok(mut bodies) = self.bodies.try_borrow_mut() {
            bodies.forget(context_id);
        }
        if let Ok(mut reads) = self.reads.try_borrow_mut() {
            reads.remove(context_id);
        }
        if let Ok(mut due) = self.due.try_borrow_mut() {
            due.retain(|(id, _)| *id != context_id);
        }
    }

    /// Body progress of a paused request (its own callback): sends a reply that waited for it,
    /// and says whether it did.
    pub fn body_progress(&self, context_id: u32, size: usize, complete: bool) -> BodyProgress {
        if let Ok(mut bodies) = self.bodies.try_borrow_mut() {
            bodies.arrived(context_id, size, complete);
        }
        self.send_if_ready(context_id)
    }

    /// The request's trailers came while it was paused: its body is complete.
    pub fn body_finished(&self, context_id: u32) -> BodyProgress {
        if let Ok(mut bodies) = self.bodies.try_borrow_mut() {
            bodies.finished(context_id);
        }
        self.send_if_ready(context_id)
    }

    /// For a request whose session reply is due: scans what its body buffered and drops it,
    /// then sends the reply if the body has ended. Says whether it sent it.
    fn send_if_ready(&self, context_id: u32) -> BodyProgress {
        let consume = match self.bodies.try_borrow() {
            Ok(bodies) => bodies.consume(context_id),
            Err(_) => return BodyProgress::Kept,
        };
        let scanned = match consume {
            Consume::Keep => None,
            Consume::ScanAndDrop(size) => Some(host::request_body(size).unwrap_or_default()),
            Consume::Drop(_) => Some(Vec::new()),
        };
        if let Consume::ScanAndDrop(size) | Consume::Drop(size) = consume {
            host::clear_request_body(size);
        }
        let ready = match self.bodies.try_borrow_mut() {
            Ok(mut bodies) => {
                if consume != Consume::Keep {
                    bodies.consumed(context_id, scanned.as_deref());
                }
                bodies.take_ready(context_id)
            }
            Err(_) => None,
        };
        match (ready, consume) {
            (Some((reply, facts)), _) => {
                host::send_reply(&reply.build(&facts));
                BodyProgress::Replied
            }
            (None, Consume::Keep) => BodyProgress::Kept,
            (None, _) => BodyProgress::Consumed,
        }
    }

    /// A session reply that reads the body: sent now if the body is in. Else, with a companion,
    /// the request is marked and handed on to it (`resume`: the request is paused here) and the
    /// reply goes when the body has ended; without one, it goes now, built without the body.
    /// Returns whether the request was handed on.
    pub fn reply_after_body(&self, context_id: u32, reply: LlmReply, resume: bool) -> bool {
        let remove = reply.remove.clone();
        match self.bodies.try_borrow_mut() {
            Ok(mut bodies) => bodies.offer(context_id, reply),
            Err(_) => return false,
        }
        if self.send_if_ready(context_id) == BodyProgress::Replied {
            return false;
        }
        // Only a companion that registered in this VM can hold the request; even so, the marked
        // request goes on stripped and with a path no route serves, should the companion be
        // placed before authgate (or in another chain).
        if self.config.session.hold_companion && hold::companion_registered() {
            // Never released, so its mark need not be unguessable.
            self.mark(&remove, "reply");
            if resume {
                host::resume_request();
            }
            return true;
        }
        let due = self
            .bodies
            .try_borrow_mut()
            .ok()
            .and_then(|mut bodies| bodies.take(context_id));
        if let Some(reply) = due {
            host::send_reply(&reply.build(&BodyFacts::Unread));
        }
        false
    }

    /// Marks the request for the companion: no credential, the held path (no route serves it,
    /// should the companion be misplaced), and the mark carrying `nonce`.
    fn mark(&self, remove: &[String], nonce: &str) {
        let mut remove = remove.to_vec();
        remove.extend(self.config.credential_header_names.iter().cloned());
        let mark = [(HOLD_HEADER.to_string(), nonce.to_string())];
        let held = Rewrite {
            path: Some(HELD_PATH.to_string()),
            authority: Some(HELD_AUTHORITY.to_string()),
            ..Rewrite::default()
        };
        apply_headers(&remove, &mark, &held);
    }

    /// An MCP rule needs the body: hands the request on to the companion (which holds it) and
    /// reads the body as it passes. Err: the reply to send instead.
    pub fn start_read(&self, context_id: u32, header_block: Vec<u8>) -> Result<(), replies::Reply> {
        if !(self.config.session.hold_companion && hold::companion_registered()) {
            host::log(
                LogLevel::Error,
                "authgate: an MCP rule needs the body_hold companion after authgate in this chain",
            );
            return Err(mcp::unreadable(
                "the gateway cannot read MCP request bodies (body_hold companion missing)",
            ));
        }
        // Reads have their own budget: they never crowd out requests waiting for keys or for
        // the authorization service.
        let reading = self.reads.try_borrow().map_or(usize::MAX, |r| r.len());
        if reading >= self.config.max_paused_requests {
            self.count(Metric::Overloaded);
            return Err(mcp::unreadable("the gateway is overloaded; retry"));
        }
        // A guessable mark could let one request's release resume another's companion.
        let Some(nonce) = host::random_bytes().map(|b| hex::encode(&b[..16])) else {
            return Err(mcp::unreadable("the gateway has no random source; retry"));
        };
        let pairs = header_pairs::decode(&header_block).unwrap_or_default();
        let is_credential = |name: &str| {
            self.config
                .credential_header_names
                .iter()
                .any(|c| c == name)
        };
        let credentials: Vec<(String, String)> = pairs
            .iter()
            .filter(|(name, _)| is_credential(name))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        // Held, the request carries nothing a client wrote in authgate's names either.
        let reserved: Vec<String> = pairs
            .iter()
            .filter(|(name, _)| self.config.is_reserved_header(name))
            .map(|(name, _)| name.to_string())
            .collect();
        let pseudo = |wanted: &str| {
            pairs
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.to_string())
                .unwrap_or_default()
        };
        let (path, authority) = (pseudo(":path"), pseudo(":authority"));
        let source = self
            .config
            .needs_client_ip()
            .then(host::source_address)
            .flatten();
        self.mark(&reserved, &nonce);
        let read = Read {
            header_block,
            source,
            nonce,
            credentials,
            path,
            authority,
            body: Vec::new(),
            complete: false,
            decided: false,
            started_ms: host::now_ms(),
        };
        self.reads
            .try_borrow_mut()
            .map_err(|_| mcp::unreadable("the gateway is busy; retry"))?
            .start(context_id, read);
        Ok(())
    }

    pub fn is_read(&self, context_id: u32) -> bool {
        self.reads
            .try_borrow()
            .is_ok_and(|r| r.contains(context_id))
    }

    /// A body chunk of a request being read (`size` bytes buffered, `complete`: the stream ended;
    /// trailers end it too). Decides once the body is in. Returns whether the chunk must stay
    /// here: a reply was sent, or the request was released (it went on without this callback's
    /// empty chunk).
    pub fn read_chunk(&self, context_id: u32, size: usize, complete: bool) -> bool {
        let chunk = match size {
            0 => Some(Vec::new()),
            _ => host::request_body(size),
        };
        let max = self.config.mcp_max_body_bytes;
        let outcome = match (&chunk, self.reads.try_borrow_mut()) {
            // Bytes the host would not show are bytes that must not go on unjudged.
            (None, _) => Chunk::Unreadable,
            (Some(chunk), Ok(mut reads)) => reads.append(context_id, chunk, complete, max),
            (Some(_), Err(_)) => Chunk::Overloaded,
        };
        let reply = match outcome {
            Chunk::More | Chunk::Unknown => return false,
            Chunk::TooLarge => mcp::too_large(max),
            Chunk::Overloaded => {
                self.count(Metric::Overloaded);
                mcp::unreadable("the gateway is overloaded; retry")
            }
            Chunk::Unreadable => mcp::unreadable("the gateway could not read the request body"),
            Chunk::Complete => {
                // A chunk with data that ends the body is still here until this callback
                // returns: released now, the companion would send the request on without it
                // (HTTP/2 ends a body on its last DATA frame). Such a release waits a tick.
                self.final_chunk.set((size > 0).then_some(context_id));
                let stays = self.decide_read(context_id);
                self.final_chunk.set(None);
                return stays;
            }
        };
        self.forget(context_id);
        host::send_reply(&reply);
        true
    }

    /// The body is in: the decision, made again with it, is carried out. Returns whether the
    /// current chunk must stay here (answered, or released now).
    fn decide_read(&self, context_id: u32) -> bool {
        let Some((header_block, source, body)) = self.reads.try_borrow().ok().and_then(|r| {
            r.get(context_id).map(|read| {
                (
                    read.header_block.clone(),
                    read.source.clone(),
                    read.body.clone(),
                )
            })
        }) else {
            return false;
        };
        let Some(decision) =
            self.decide(&header_block, true, false, source.as_deref(), Some(&body))
        else {
            host::send_reply(&replies::jwks_unavailable(None));
            return true;
        };
        let step = match decision.step {
            Step::WaitForKeys { provider } => {
                self.add_waiter(context_id, provider, header_block, false);
                return false;
            }
            Step::CallAuthz(call) => {
                match self.start_authz(context_id, *call, Owner::Http(context_id)) {
                    Some(decision) => decision.step,
                    None => return false,
                }
            }
            other => other,
        };
        let request_id = decision_request_id(&Decision {
            step: step.clone(),
            log: String::new(),
        });
        let deferred =
            matches!(step, Step::Continue { .. }) && self.final_chunk.get() == Some(context_id);
        self.execute_paused(context_id, step, request_id.as_deref());
        !deferred
    }

    /// Releases that waited for the chunk that ended their body to reach the companion: due now
    /// (on the root's tick).
    pub fn release_due(&self) {
        let due = match self.due.try_borrow_mut() {
            Ok(mut due) => std::mem::take(&mut *due),
            Err(_) => return,
        };
        for (context_id, step) in due {
            if host::set_effective_context(context_id) {
                self.execute_paused(context_id, step, None);
            }
        }
    }

    /// Whether this tick came early for a release; the normal pace is back once none waits.
    pub fn settle_prompt_tick(&self, normal: Duration) -> bool {
        if !self.prompt_tick.get() {
            return false;
        }
        if self.due.try_borrow().is_ok_and(|d| d.is_empty()) {
            host::set_tick_period(normal);
            self.prompt_tick.set(false);
        }
        true
    }

    /// Bodies that did not arrive within `MCP_READ_TIMEOUT_MS`: 408, and forgotten.
    pub fn sweep_reads(&self) {
        let now_ms = host::now_ms();
        let late = match self.reads.try_borrow() {
            Ok(reads) => reads.unfinished_since(now_ms.saturating_sub(MCP_READ_TIMEOUT_MS)),
            Err(_) => return,
        };
        for context_id in late {
            self.forget(context_id);
            if host::set_effective_context(context_id) {
                host::send_reply(&mcp::too_slow());
            }
        }
    }

    /// Lets a request whose body was read go on: the mark off, its path and credentials back,
    /// the decision's headers on, and the companion resumed. The effective context is the
    /// request's (authgate's side); it is again when this returns.
    fn release(
        &self,
        context_id: u32,
        remove: &[String],
        add: &[(String, String)],
        rewrite: &Rewrite,
        watch: Option<TokenHash>,
    ) {
        let Some(read) = self
            .reads
            .try_borrow_mut()
            .ok()
            .and_then(|mut r| r.remove(context_id))
        else {
            host::send_reply(&replies::jwks_unavailable(None));
            return;
        };
        let Some(companion) = hold::release(&read.nonce) else {
            // Nothing holds it here: it never goes on from authgate's side.
            host::send_reply(&mcp::unreadable(
                "the gateway lost the request it was holding; retry",
            ));
            return;
        };
        // authgate let the headers go on (Envoy no longer lends it the header map): they are
        // changed, and the request resumed, as the companion, which holds them.
        if !host::set_effective_context(companion) {
            host::send_reply(&mcp::unreadable(
                "the gateway lost the request it was holding; retry",
            ));
            return;
        }
        host::remove_request_header(HOLD_HEADER);
        host::set_request_header(":path", &read.path);
        match read.authority.as_str() {
            "" => host::remove_request_header(":authority"),
            authority => host::set_request_header(":authority", authority),
        }
        for (name, value) in &read.credentials {
            host::add_request_header(name, value);
        }
        self.let_through(context_id, remove, add, rewrite, watch);
        host::resume_request();
        host::set_effective_context(context_id);
    }

    /// Carries out decisions for paused requests: `current` is the context whose callback this
    /// is; the others are switched to first.
    pub fn deliver(&self, deliveries: Deliveries, current: Option<u32>) {
        for (context_id, decision) in deliveries {
            if Some(context_id) == current || host::set_effective_context(context_id) {
                let request_id = decision_request_id(&decision);
                self.execute_paused(context_id, decision.step, request_id.as_deref());
            }
        }
        if let Some(id) = current {
            host::set_effective_context(id);
        }
    }

    /// Carries out a step for a paused request; the effective context is already that request.
    fn execute_paused(&self, context_id: u32, step: Step, request_id: Option<&str>) {
        match step {
            // The chunk that ended the body is still in the callback running now: the release
            // waits until it has reached the companion.
            step @ Step::Continue { .. } if self.final_chunk.get() == Some(context_id) => {
                if let Ok(mut due) = self.due.try_borrow_mut() {
                    due.push((context_id, step));
                }
                host::set_tick_period(PROMPT_TICK);
                self.prompt_tick.set(true);
            }
            Step::Continue {
                remove,
                add,
                rewrite,
                watch,
            } if self.is_read(context_id) => {
                self.release(context_id, &remove, &add, &rewrite, watch);
            }
            Step::Continue {
                remove,
                add,
                rewrite,
                watch,
            } => {
                self.let_through(context_id, &remove, &add, &rewrite, watch);
                host::resume_request();
            }
            Step::Respond(reply) => host::send_reply(&reply),
            Step::SessionReply(reply) if self.is_read(context_id) => {
                // The body was read for the MCP rule, not for the reply's shape.
                host::send_reply(&reply.build(&BodyFacts::NotJson));
            }
            Step::SessionReply(reply) => {
                self.reply_after_body(context_id, *reply, true);
            }
            // A request that waited once is answered, never paused again; an authorization call
            // is started before a resumed request gets here; sign-in paths never wait; an MCP
            // request waits for keys only with its body read.
            Step::WaitForKeys { .. }
            | Step::CallAuthz(_)
            | Step::SignIn(_)
            | Step::Renew(_)
            | Step::ReadBody => {
                host::send_reply(&replies::jwks_unavailable(request_id));
            }
        }
    }
}

/// The request id a decision carries, for the rare reply built here.
fn decision_request_id(decision: &Decision) -> Option<String> {
    match &decision.step {
        Step::CallAuthz(call) => call.pending.hints.request_id.clone(),
        Step::SessionReply(reply) => reply.request_id.clone(),
        _ => None,
    }
}

pub fn apply_headers(remove: &[String], add: &[(String, String)], rewrite: &Rewrite) {
    for name in remove {
        host::remove_request_header(name);
    }
    for (name, value) in add {
        host::set_request_header(name, value);
    }
    if let Some(path) = &rewrite.path {
        host::set_request_header(":path", path);
    }
    if let Some(authority) = &rewrite.authority {
        host::set_request_header(":authority", authority);
    }
    match rewrite.cookie.as_deref() {
        Some("") => host::remove_request_header("cookie"),
        Some(cookie) => host::set_request_header("cookie", cookie),
        None => {}
    }
}
