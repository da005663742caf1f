//! Everything authgate answers itself: status replies (401/403/429/503, health) in `status`, and
//! for an expired session the reply shaped for the route's clients (`session`), including the
//! LLM-shaped ones (`llm`, reading the request body as it arrives with `body_scan`).

pub mod body_scan;
pub mod llm;
pub mod session;
mod status;

pub(crate) use status::sanitize;
pub use status::{
    authorization_unavailable, bad_request, forbidden, health, insufficient_scope, invalid_token,
    jwks_unavailable, not_configured, overloaded, page, rate_limited, session_expired,
    session_message, unauthenticated, Reply,
};
