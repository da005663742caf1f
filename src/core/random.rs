//! Randomness for the core (sign-in state, nonces, tickets, sealing): passed in, so the core
//! stays pure and testable. The shell passes the OS source (WASI `random_get` in Envoy).

pub trait Random {
    /// Fills `buf`; false when no randomness is available (the caller refuses, never guesses).
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// The operating system's source, through `getrandom`: the shell's and tools' choice.
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}
