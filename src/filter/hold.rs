//! The `body_hold` companion: placed right after authgate, it holds every request authgate
//! marked with `x-authgate-hold: <nonce>` and lets all others through untouched. A proxy-wasm
//! filter paused at the headers never sees the body (the host stops all iteration), so authgate
//! hands such a request on to this filter and reads the body itself. A session reply is answered
//! there and never gets past here; an MCP request authgate allowed is released: authgate sets its
//! headers and resumes this filter's context, found under the nonce.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

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

thread_local! {
    /// Held requests by their mark's nonce: the companion's context id, and whether authgate
    /// released it. An entry lives as long as that context.
    static HELD: RefCell<HashMap<String, (u32, bool)>> = RefCell::default();
}

/// authgate lets the request marked `nonce` go: its companion context id, to resume. None when
/// no companion holds it (it is not after authgate in this VM's chain).
pub fn release(nonce: &str) -> Option<u32> {
    HELD.with(|held| {
        let mut held = held.try_borrow_mut().ok()?;
        let entry = held.get_mut(nonce)?;
        entry.1 = true;
        Some(entry.0)
    })
}

fn is_released(nonce: &str) -> bool {
    HELD.with(|held| {
        held.try_borrow()
            .is_ok_and(|h| h.get(nonce).is_some_and(|(_, released)| *released))
    })
}

/// Holds a marked request: its headers, every body chunk and its trailers stop here, so nothing
/// of it goes on unless authgate releases it.
pub struct HoldHttp {
    context_id: u32,
    /// The mark's nonce, when the request is marked.
    nonce: Option<String>,
}

impl HoldHttp {
    pub fn new(context_id: u32) -> Self {
        HoldHttp {
            context_id,
            nonce: None,
        }
    }
}

impl Context for HoldHttp {}

impl HttpContext for HoldHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if host::has_request_header(HOLD_HEADER) {
            // A mark that is not valid text still holds; it just cannot be released.
            let nonce = host::request_header(HOLD_HEADER).unwrap_or_default();
            let id = self.context_id;
            HELD.with(|held| {
                if let Ok(mut held) = held.try_borrow_mut() {
                    held.insert(nonce.clone(), (id, false));
                }
            });
            self.nonce = Some(nonce);
        }
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
        match &self.nonce {
            Some(nonce) if !is_released(nonce) => Action::Pause,
            _ => Action::Continue,
        }
    }
}

impl Drop for HoldHttp {
    fn drop(&mut self) {
        if let Some(nonce) = &self.nonce {
            let id = self.context_id;
            HELD.with(|held| {
                if let Ok(mut held) = held.try_borrow_mut() {
                    if held.get(nonce).is_some_and(|(owner, _)| *owner == id) {
                        held.remove(nonce);
                    }
                }
            });
        }
    }
}
