//! Bearer JWTs: parsing the untrusted token (`token`), JSON Web Key Sets and the signature
//! algorithms (RSA on our own Montgomery code), each provider's configuration, keys and refresh
//! schedule, and the per-VM cache of verified tokens. `check` is the entry point: one token for
//! one provider, cached or verified.

mod alg;
pub mod check;
mod claims;
pub mod discovery;
pub mod jwks;
pub mod keystate;
pub mod montgomery;
pub mod provider;
mod rsa;
mod token;
pub mod token_cache;

pub use claims::lookup as claims_lookup;
pub use token::{
    inspect, names_audience, verify, verify_any_audience, verify_id_token, Inspected, JwtError,
    Verified, MAX_TOKEN_BYTES,
};
