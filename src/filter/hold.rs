//! The `body_hold` companion: placed right after authgate, it holds every request authgate
//! marked with `x-authgate-hold` and lets all others through untouched. A proxy-wasm filter
//! paused at the headers never sees the body (the host stops all iteration), so authgate hands
//! such a request on to this filter and reads the body itself before answering; the request
//! never gets past here.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::config::HOLD_HEADER;
use crate::filter::host;

pub struct HoldHttp;

impl Context for HoldHttp {}

impl HttpContext for HoldHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if host::has_request_header(HOLD_HEADER) {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}
