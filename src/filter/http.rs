//! One request: decide at the request headers, then continue, answer, or wait for keys.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::engine::Step;
use crate::core::replies;
use crate::filter::host;
use crate::filter::vm::{apply_headers, Vm};

pub struct AuthHttp {
    /// None when the configuration failed to load: every request is refused.
    pub vm: Option<Rc<Vm>>,
    pub context_id: u32,
    pub waiting: bool,
}

impl Context for AuthHttp {}

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
        match decision.step {
            Step::Continue { remove, add } => {
                apply_headers(&remove, &add);
                Action::Continue
            }
            Step::Respond(reply) => {
                host::send_reply(&reply);
                Action::Pause
            }
            Step::WaitForKeys { provider } => {
                self.waiting = true;
                vm.add_waiter(self.context_id, provider, headers);
                Action::Pause
            }
        }
    }
}

impl Drop for AuthHttp {
    // A client that hangs up while waiting must not be resumed later.
    fn drop(&mut self) {
        if let (true, Some(vm)) = (self.waiting, &self.vm) {
            vm.remove_waiter(self.context_id);
        }
    }
}
