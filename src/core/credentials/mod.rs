//! Finding the caller's credentials on a request: tokens in headers and cookies (`extract`),
//! configured API keys (SHA-256 digests), and opaque agent tokens. `find` lists those a rule's
//! `requires_any` accepts, in its order.

pub mod api_keys;
mod candidates;
mod extract;

pub use candidates::{find, is_jwt_shaped, Candidate, Kind, OpaqueTokens, Requirement};
pub use extract::Found;
