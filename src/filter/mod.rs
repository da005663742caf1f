//! The thin host shell: the root context (configuration, ticks, JWKS fetches), the HTTP context
//! (one request), and `host`, the only file that calls the host.

mod authz_call;
mod body_read;
mod body_wait;
mod counters;
mod hold;
mod host;
mod http;
mod jwks_fetch;
mod root;
mod upstream_watch;
mod vm;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}
