//! Nothing here: the tests in `tests/` exercise the `authgate` core, built for wasm32.
