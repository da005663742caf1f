//! A proxy-wasm HTTP filter that does nothing: every callback keeps its default (continue). Built
//! with the same release profile as authgate, it measures what any Rust Wasm filter costs in
//! Envoy before it does any work (the "Wasm tax"), so `bench/` can tell authgate's own cost apart.
//!
//! With the configuration `host_calls` it makes, per request, the host calls authgate makes on
//! its cached path and nothing else: read the request headers, read the time, remove the
//! credential header and add seven identity headers (what authgate adds for the benchmark's
//! token). That is the floor set by the proxy-wasm ABI itself for a filter that must see every
//! header (to drop spoofed identity headers) and pass an identity upstream.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

/// The headers authgate adds upstream for the benchmark's token (same names, similar values).
const IDENTITY: [(&str, &str); 7] = [
    ("x-auth-credential", "jwt"),
    ("x-auth-provider", "corp"),
    ("x-auth-subject", "bench-user-0000000000"),
    ("x-auth-email", "bench-user-0000000000@example.com"),
    ("x-auth-roles", "user,admin"),
    ("x-auth-scopes", "llm:invoke,read"),
    ("x-tenant", "acme"),
];

#[derive(Default)]
struct NoopRoot {
    host_calls: Rc<bool>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.host_calls = Rc::new(config.trim_ascii() == b"host_calls");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if *self.host_calls {
            Some(Box::new(HostCallsRequest))
        } else {
            Some(Box::new(NoopRequest))
        }
    }
}

struct NoopRequest;

impl Context for NoopRequest {}

impl HttpContext for NoopRequest {}

struct HostCallsRequest;

impl Context for HostCallsRequest {}

impl HttpContext for HostCallsRequest {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        let _ = hostcalls::get_current_time();
        if headers.iter().any(|(name, _)| name == "authorization") {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization");
        }
        for (name, value) in IDENTITY {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        }
        Action::Continue
    }
}
