//! State shared by the root context and the HTTP contexts of one VM (one Envoy thread):
//! the compiled configuration, keys and caches, counters, and requests waiting for keys.

use std::cell::RefCell;

use proxy_wasm::types::LogLevel;

use crate::core::backoff::SharedStore;
use crate::core::config::Config;
use crate::core::engine::{self, Context, Decision, Effects, State, Step};
use crate::core::metrics::{Metric, MetricSink};
use crate::core::replies;
use crate::core::request::Request;
use crate::filter::host;

/// Slack beyond the JWKS fetch timeout before a waiting request is answered regardless:
/// covers a fetch started by another VM and the tick that notices it.
const WAIT_SLACK_MS: u64 = 1_000;

pub struct Vm {
    pub config: Config,
    pub state: RefCell<State>,
    waiters: RefCell<Vec<Waiter>>,
    counters: Counters,
}

/// A request paused until its provider's keys change, or its deadline.
struct Waiter {
    context_id: u32,
    provider: usize,
    generation: u64,
    deadline_ms: u64,
    headers: Vec<(String, String)>,
}

/// Envoy counter ids, indexed like `Metric::ALL`.
pub struct Counters(Vec<Option<u32>>);

impl Counters {
    fn define() -> Self {
        Counters(
            Metric::ALL
                .iter()
                .map(|m| host::define_counter(m.name()))
                .collect(),
        )
    }
}

impl MetricSink for &Counters {
    fn increment(&mut self, metric: Metric) {
        if let Some(Some(id)) = self.0.get(metric.index()) {
            host::increment(*id);
        }
    }
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
        let state = State::new(&config);
        Vm {
            config,
            state: RefCell::new(state),
            waiters: RefCell::default(),
            counters: Counters::define(),
        }
    }

    pub fn count(&self, metric: Metric) {
        (&self.counters).increment(metric);
    }

    /// Decides for a request. Never holds a borrow across a host call that acts on a stream.
    pub fn decide(&self, headers: &[(String, String)], may_wait: bool) -> Option<Decision> {
        let mut state = self.state.try_borrow_mut().ok()?;
        let ctx = Context {
            now_ms: host::now_ms(),
            may_wait,
        };
        let source_address = if self.config.needs_client_ip() {
            host::source_address()
        } else {
            None
        };
        let request = Request::new(headers).with_source_address(source_address.as_deref());
        let effects = Effects {
            metrics: &mut &self.counters,
            shared: &mut HostShared,
        };
        let decision = engine::decide(&self.config, &mut state, &request, ctx, effects);
        if host::debug_enabled() {
            host::log(LogLevel::Debug, &decision.log);
        }
        Some(decision)
    }

    pub fn add_waiter(&self, context_id: u32, provider: usize, headers: Vec<(String, String)>) {
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
                crate::core::config::JwksSource::Remote(remote) => remote.timeout_ms,
                crate::core::config::JwksSource::Local(_) => 0,
            });
        let deadline_ms = host::now_ms() + timeout_ms + WAIT_SLACK_MS;
        if let Ok(mut waiters) = self.waiters.try_borrow_mut() {
            waiters.push(Waiter {
                context_id,
                provider,
                generation,
                deadline_ms,
                headers,
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
            let Some(decision) = self.decide(&waiter.headers, false) else {
                continue;
            };
            if host::set_effective_context(waiter.context_id) {
                execute_resumed(&decision.step, &waiter.headers);
            }
        }
    }
}

/// Carries out a step for a request that is paused (resumed from the root context).
fn execute_resumed(step: &Step, headers: &[(String, String)]) {
    match step {
        Step::Continue { remove, add } => {
            apply_headers(remove, add);
            host::resume_request();
        }
        Step::Respond(reply) => host::send_reply(reply),
        // A request that waited once is answered, never paused again.
        Step::WaitForKeys { .. } => {
            let request_id = Request::new(headers).request_id();
            host::send_reply(&replies::jwks_unavailable(request_id));
        }
    }
}

pub fn apply_headers(remove: &[String], add: &[(String, String)]) {
    for name in remove {
        host::remove_request_header(name);
    }
    for (name, value) in add {
        host::set_request_header(name, value);
    }
}
