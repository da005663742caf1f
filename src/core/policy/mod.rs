//! What a request must satisfy: the rules (which one matches a request, what it demands), the
//! scopes and roles it requires, host globs, the client's address, and the failed-auth backoff
//! per client.

pub mod backoff;
pub mod client_ip;
mod glob;
pub mod mcp;
pub mod paths;
pub mod resources;
pub mod roles;
pub mod rules;
mod scopes;

pub use glob::{HostGlob, NameGlob};
pub use scopes::{check, PolicyDenial};
