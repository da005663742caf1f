//! Sign-in at the gateway (OpenID Connect authorization code flow with PKCE) and agent
//! re-authentication: sealing cookies and tickets (`seal`), one attempt's state, nonce, verifier
//! and return target (`flow`), and the ID token checks (`id_token`).

pub mod config;
pub mod endpoints;
pub mod flow;
pub mod id_token;
pub mod reauth;
pub mod seal;
pub mod session;

#[cfg(test)]
mod tests;
