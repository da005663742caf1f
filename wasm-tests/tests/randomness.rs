//! getrandom (what `rsa` and later one-time codes rely on) yields real randomness in this target.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[test]
fn getrandom_fills_distinct_buffers() {
    let mut first = [0u8; 32];
    let mut second = [0u8; 32];
    getrandom::getrandom(&mut first).unwrap();
    getrandom::getrandom(&mut second).unwrap();
    assert_ne!(first, [0u8; 32]);
    assert_ne!(first, second);
}
