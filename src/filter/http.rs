//! One request: decide at the request headers, then continue, answer, or pause (for keys, or for
//! the authorization service's answer).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::engine::Step;
use crate::core::replies;
use crate::core::replies::body_scan::BodyFacts;
use crate::filter::authz_call::Owner;
use crate::filter::host;
use crate::filter::vm::{BodyProgress, Vm};

pub struct AuthHttp {
    /// None when the configuration failed to load: every request is refused.
    pub vm: Option<Rc<Vm>>,
    pub context_id: u32,
    /// Set once the request paused; cleared in the VM's tables when it is resumed or answered.
    pub paused: bool,
    /// Handed on to the companion while an MCP rule reads its body.
    pub reading: bool,
}

impl Context for AuthHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(vm) = &self.vm else {
            return;
        };
        if let Some(deliveries) = vm.finish_authz(token, body_size) {
            vm.deliver(deliveries, Some(self.context_id));
        } else if let Some(reply) = vm.finish_sign_in(token, body_size) {
            host::send_reply(&reply);
        }
    }
}

impl HttpContext for AuthHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(vm) = self.vm.clone() else {
            host::send_reply(&replies::not_configured());
            return Action::Pause;
        };
        let vm = vm.as_ref();
        let headers = host::request_header_block();
        let Some(decision) = vm.decide(&headers, true, end_of_stream, None, None) else {
            // State busy means re-entrancy we did not expect: fail closed, visibly.
            host::send_reply(&replies::jwks_unavailable(None));
            return Action::Pause;
        };
        let step = match decision.step {
            Step::WaitForKeys { provider } => {
                if !vm.room_to_pause(headers.len()) {
                    host::send_reply(&replies::overloaded(None));
                    return Action::Pause;
                }
                vm.add_waiter(self.context_id, provider, headers, end_of_stream);
                return self.pause(vm, end_of_stream);
            }
            Step::CallAuthz(call) => {
                match vm.start_authz(self.context_id, *call, Owner::Http(self.context_id)) {
                    Some(decision) => decision.step,
                    None => return self.pause(vm, end_of_stream),
                }
            }
            Step::SignIn(exchange) => {
                if vm.start_sign_in(self.context_id, *exchange) {
                    self.paused = true;
                }
                return Action::Pause;
            }
            Step::Renew(renewal) => {
                if vm.start_renewal(self.context_id, *renewal) {
                    self.paused = true;
                }
                return Action::Pause;
            }
            Step::SessionReply(reply) if end_of_stream => {
                host::send_reply(&reply.build(&BodyFacts::NotJson));
                return Action::Pause;
            }
            Step::ReadBody => {
                return match vm.start_read(self.context_id, headers) {
                    // Handed on to the companion (which holds it), the body comes here next.
                    Ok(()) => {
                        self.reading = true;
                        Action::Continue
                    }
                    Err(reply) => {
                        host::send_reply(&reply);
                        Action::Pause
                    }
                };
            }
            Step::SessionReply(reply) => {
                // Handed on to the companion (which holds it), the body comes here next.
                self.paused = true;
                return if vm.reply_after_body(self.context_id, *reply, false) {
                    Action::Continue
                } else {
                    Action::Pause
                };
            }
            other => other,
        };
        match step {
            Step::Continue {
                remove,
                add,
                rewrite,
                watch,
            } => {
                vm.let_through(self.context_id, &remove, &add, &rewrite, watch);
                Action::Continue
            }
            Step::Respond(reply) => {
                host::send_reply(&reply);
                Action::Pause
            }
            Step::WaitForKeys { .. }
            | Step::CallAuthz(_)
            | Step::SessionReply(_)
            | Step::SignIn(_)
            | Step::Renew(_)
            | Step::ReadBody => {
                host::send_reply(&replies::jwks_unavailable(None));
                Action::Pause
            }
        }
    }

    /// While the request is paused its body is held (and buffered: a session reply may need it).
    /// Envoy 1.40 already holds the body of a stream whose headers are paused (measured: the
    /// slow-service test passes without this), but that is the host's choice, not the ABI's;
    /// never let a body chunk resume the request.
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = self.read(body_size, end_of_stream) {
            return action;
        }
        let Some(vm) = self.vm.as_ref().filter(|_| self.paused) else {
            return Action::Continue;
        };
        let progress = vm.body_progress(self.context_id, body_size, end_of_stream);
        self.after_body(vm, progress)
    }

    /// Exported for `enterprise.cache.evict_on_upstream` only (exports are fixed per binary):
    /// without it, one comparison and back.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(vm) = self.vm.as_ref().filter(|vm| vm.evicts_on_upstream()) {
            vm.upstream_answered(self.context_id);
        }
        Action::Continue
    }

    /// Trailers end the body (an h2 request with trailers has no end-of-stream body chunk): a
    /// paused request's reply goes now, and the trailers never resume it.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(action) = self.read(0, true) {
            return action;
        }
        let Some(vm) = self.vm.as_ref().filter(|_| self.paused) else {
            return Action::Continue;
        };
        let progress = vm.body_finished(self.context_id);
        self.after_body(vm, progress)
    }
}

impl AuthHttp {
    /// A body chunk (or the trailers) of a request whose body an MCP rule reads. Copied, the
    /// chunk moves on to the companion's hold (Envoy buffers it there with flow control;
    /// buffering it here would meet the 413 limit instead). None: not such a request.
    fn read(&self, size: usize, complete: bool) -> Option<Action> {
        let vm = self.vm.as_ref().filter(|_| self.reading)?;
        Some(if vm.read_chunk(self.context_id, size, complete) {
            Action::Pause
        } else {
            Action::Continue
        })
    }

    /// A paused request's body never moves on while it waits, except an emptied chunk of a
    /// request whose session reply is due (the companion holds it).
    fn after_body(&self, vm: &Vm, progress: BodyProgress) -> Action {
        match progress {
            BodyProgress::Replied => Action::Pause,
            BodyProgress::Consumed => Action::Continue,
            BodyProgress::Kept if vm.is_paused(self.context_id) => Action::Pause,
            BodyProgress::Kept => Action::Continue,
        }
    }

    /// Pauses the request; a request without a body has all of it already.
    fn pause(&mut self, vm: &Vm, end_of_stream: bool) -> Action {
        self.paused = true;
        if end_of_stream {
            vm.body_progress(self.context_id, 0, true);
        }
        Action::Pause
    }
}

impl Drop for AuthHttp {
    // A client that hangs up while paused must not be resumed later.
    fn drop(&mut self) {
        if let Some(vm) = &self.vm {
            if self.paused || self.reading {
                vm.forget(self.context_id);
            }
            vm.unwatch(self.context_id);
        }
    }
}
