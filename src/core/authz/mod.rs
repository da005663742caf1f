//! The enterprise authorization service: its configuration, the request authgate sends (dialects
//! "authgate" and "openfga", whose tuples come from `template`s), how its answer is read, and the
//! per-VM cache of its decisions, and the credentials the upstream refused (`evictions`).

pub mod decision_cache;
pub mod evictions;
mod service;
mod template;

pub use service::{raw, Answer, AuthzError, CallInput, Dialect, Enterprise, FailureMode, OpenFga};
pub use template::Template;
