//! The A/B benchmark of authgate against Envoy's native filters (`make bench`, `make
//! bench-smoke`). `authgate-bench` runs every variant in interleaved rounds and writes the
//! report; `authgate-load` is its load generator. See `bench/README.md`.

pub mod cpu;
pub mod envoy_proc;
pub mod http1;
pub mod load;
pub mod procs;
pub mod report;
pub mod tokens;
pub mod variants;
