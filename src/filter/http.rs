//! One request: decide at the request headers, then continue, answer, or pause (for keys, or for
//! the authorization service's answer).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::engine::Step;
use crate::core::replies;
use crate::filter::authz_call::Owner;
use crate::filter::host;
use crate::filter::vm::{apply_headers, deliver, Vm};

pub struct AuthHttp {
    /// None when the configuration failed to load: every request is refused.
    pub vm: Option<Rc<Vm>>,
    pub context_id: u32,
    /// Set once the request paused; cleared in the VM's tables when it is resumed or answered.
    pub paused: bool,
}

impl Context for AuthHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(vm) = &self.vm else {
            return;
        };
        if let Some(deliveries) = vm.finish_authz(token, body_size) {
            deliver(deliveries, Some(self.context_id));
        }
    }
}

impl HttpContext for AuthHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(vm) = &self.vm else {
            host::send_reply(&replies::not_configured());
            return Action::Pause;
        };
        let headers = host::request_headers();
        let Some(decision) = vm.decide(&headers, true) else {
            // State busy means re-entrancy we did not expect: fail closed, visibly.
            host::send_reply(&replies::jwks_unavailable(None));
            return Action::Pause;
        };
        let step = match decision.step {
            Step::WaitForKeys { provider } => {
                self.paused = true;
                vm.add_waiter(self.context_id, provider, headers);
                return Action::Pause;
            }
            Step::CallAuthz(call) => {
                match vm.start_authz(self.context_id, *call, Owner::Http(self.context_id)) {
                    Some(decision) => decision.step,
                    None => {
                        self.paused = true;
                        return Action::Pause;
                    }
                }
            }
            other => other,
        };
        match step {
            Step::Continue { remove, add } => {
                apply_headers(&remove, &add);
                Action::Continue
            }
            Step::Respond(reply) => {
                host::send_reply(&reply);
                Action::Pause
            }
            Step::WaitForKeys { .. } | Step::CallAuthz(_) => {
                host::send_reply(&replies::jwks_unavailable(None));
                Action::Pause
            }
        }
    }

    /// While the request is paused its body must wait too. Envoy 1.40 already holds the body of
    /// a stream whose headers are paused (measured: the slow-service test passes without this),
    /// but that is the host's choice, not the ABI's; never let a body chunk resume the request.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        match &self.vm {
            Some(vm) if self.paused && vm.is_paused(self.context_id) => Action::Pause,
            _ => Action::Continue,
        }
    }
}

impl Drop for AuthHttp {
    // A client that hangs up while paused must not be resumed later.
    fn drop(&mut self) {
        if let (true, Some(vm)) = (self.paused, &self.vm) {
            vm.forget(self.context_id);
        }
    }
}
