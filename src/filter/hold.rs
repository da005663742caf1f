//! The `body_hold` companion: placed right after authgate, it holds every request authgate
//! marked with `x-authgate-hold` and lets all others through untouched. A proxy-wasm filter
//! paused at the headers never sees the body (the host stops all iteration), so authgate hands
//! such a request on to this filter and reads the body itself before answering; the request
//! never gets past here.

use std::cell::Cell;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::config::HOLD_HEADER;
use crate::filter::host;

thread_local! {
    /// A companion's root context configured in this VM (one VM per worker and module).
    static COMPANION: Cell<bool> = const { Cell::new(false) };
}

/// Called when a `body_hold` root context is configured: authgate may hand requests on.
pub fn register_companion() {
    COMPANION.with(|c| c.set(true));
}

/// Whether a companion registered in this VM. Without one authgate answers at the headers.
pub fn companion_registered() -> bool {
    COMPANION.with(Cell::get)
}

/// Holds a marked request: its headers, every body chunk and its trailers stop here, so nothing
/// of it goes on even if authgate's reply were late.
#[derive(Default)]
pub struct HoldHttp {
    held: bool,
}

impl Context for HoldHttp {}

impl HttpContext for HoldHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.held = host::has_request_header(HOLD_HEADER);
        self.action()
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.action()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.action()
    }
}

impl HoldHttp {
    fn action(&self) -> Action {
        if self.held {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}
