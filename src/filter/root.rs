//! The root context: loads the configuration, drives JWKS fetches on ticks, and creates one
//! HTTP context per request.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::core::config::Plugin;
use crate::filter::hold::{self, HoldHttp};
use crate::filter::host;
use crate::filter::http::AuthHttp;
use crate::filter::jwks_fetch::Fetcher;
use crate::filter::vm::Vm;

/// Ticks hand the VM's counts to Envoy, notice key sets fetched by other VMs and answer waiting
/// requests promptly.
const TICK: Duration = Duration::from_millis(100);
const TICK_MS: u64 = 100;

#[derive(Default)]
pub struct Root {
    vm: Option<Rc<Vm>>,
    fetcher: Fetcher,
    /// This instance is the `body_hold` companion, not the gate.
    hold: bool,
    /// When the last full tick ran (prompt ticks in between do less).
    last_tick_ms: u64,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(vm) = &self.vm else {
            return;
        };
        match vm.finish_authz(token, body_size) {
            Some(deliveries) => vm.deliver(deliveries, None),
            None => self.fetcher.on_response(vm, token, body_size),
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        host::log(
            LogLevel::Info,
            &format!("authgate {} ({}) starting", crate::VERSION, crate::GIT_HASH),
        );
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = host::plugin_configuration(plugin_configuration_size).unwrap_or_default();
        let config = match Plugin::parse(&bytes) {
            Ok(Plugin::Gate(config)) => *config,
            Ok(Plugin::BodyHold) => {
                self.hold = true;
                hold::register_companion();
                return true;
            }
            Err(error) => {
                host::log(
                    LogLevel::Error,
                    &format!("authgate: invalid configuration: {error}"),
                );
                return false;
            }
        };
        self.fetcher = Fetcher::new(&config);
        self.vm = Some(Rc::new(Vm::new(config)));
        host::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(vm) = &self.vm else {
            return;
        };
        // Prompt ticks (while a release waits) do only that; the rest keeps its pace.
        vm.release_due();
        let now_ms = host::now_ms();
        if vm.settle_prompt_tick(TICK) && now_ms.saturating_sub(self.last_tick_ms) < TICK_MS {
            return;
        }
        self.last_tick_ms = now_ms;
        vm.flush_counters();
        vm.apply_published_evictions();
        vm.report_cache_stats();
        self.fetcher.tick(vm);
        if vm.has_authz_calls() {
            vm.deliver(vm.sweep_authz(), None);
        }
        vm.sweep_reads();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.hold {
            return Some(Box::new(HoldHttp::new(context_id)));
        }
        Some(Box::new(AuthHttp {
            vm: self.vm.clone(),
            context_id,
            paused: false,
            reading: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
