//! authgate: authentication and authorization for Envoy, as a proxy-wasm HTTP filter.
//! `core` decides; `filter` is the thin shell that talks to the host.

pub mod core;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub mod filter;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Set by build.rs from `git rev-parse`; "unknown" outside a checkout.
pub const GIT_HASH: &str = env!("AUTHGATE_GIT_HASH");
