//! The pure core: it never imports the proxy-wasm SDK. Time comes in as arguments; results are steps the
//! shell in `crate::filter` carries out. One folder per concern; `engine` and `config` assemble them.

pub mod authz;
pub mod config;
pub mod config_error;
pub mod credentials;
pub mod engine;
pub mod header_pairs;
pub mod identity;
mod json_strict;
pub mod jwt;
pub mod login;
pub mod metrics;
pub mod policy;
pub mod random;
pub mod replies;
pub mod request;
mod syntax;
