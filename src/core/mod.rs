//! The pure core: it never imports the proxy-wasm SDK. Time comes in as arguments; results are steps the
//! shell in `crate::filter` carries out.

pub mod alg;
pub mod api_keys;
pub mod authz;
pub mod backoff;
pub mod claims;
pub mod client_ip;
pub mod config;
pub mod credentials;
pub mod decision_cache;
pub mod engine;
pub mod extract;
pub mod glob;
pub mod header_pairs;
pub mod identity;
pub mod json_strict;
pub mod jwks;
pub mod jwt;
pub mod jwt_check;
pub mod keystate;
pub mod llm_replies;
pub mod metrics;
pub mod montgomery;
pub mod policy;
pub mod replies;
pub mod request;
pub mod rsa_verify;
pub mod session;
pub mod token_cache;
