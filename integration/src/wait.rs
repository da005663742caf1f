//! Bounded polling: wait for a condition instead of sleeping a fixed time.

use std::time::{Duration, Instant};

/// Polls `check` every `interval` until it returns `Some`, or `timeout` has passed (then `None`).
/// `check` runs at least once.
pub fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}
