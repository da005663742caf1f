//! Failed-auth backoff in real Envoy (DESIGN.md `failed_auth_backoff`, `client_ip`): the count
//! is shared by every worker, a block answers 429 with Retry-After and doubles, a success lowers nothing,
//! `x-forwarded-for` is read past trusted hops only, and a flood of distinct addresses leaves
//! Envoy's memory flat.

use std::time::{Duration, Instant};

use authgate_integration::expect::{self, error_reply, Checks};
use authgate_integration::plugin::{api_key_entry, local_provider};
use authgate_integration::{FixtureKey, Gateway, JwksStub, Reply, Req};
use serde_json::{json, Value};

const KEY: &str = "ek_live_backoff_right_key_1234";
const WRONG: &str = "ek_live_backoff_wrong_key_0000";

fn plugin(backoff: Value, client_ip: Value) -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "api_keys": {"keys": [api_key_entry("ci", KEY, "svc:ci", &[])]},
        "rules": [{"match": {"path": "/public"}, "public": true},
                  {"match": {"prefix": "/"}, "requires_any": ["jwt:corp", "api_key"]}],
        "failed_auth_backoff": backoff,
        "client_ip": client_ip
    })
}

fn send(gw: &Gateway, key: &str, forwarded_for: Option<&str>) -> Reply {
    let mut req = Req::get(gw.url("/api")).header("x-api-key", key);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send()
}

/// 429 `rate_limited` with `Retry-After: <retry_after>`.
fn limited(reply: &Reply, retry_after: &str) -> expect::Check {
    let body = error_reply(reply, 429, "rate_limited")?;
    if reply.header("retry-after") != Some(retry_after) {
        return Err(format!("expected retry-after: {retry_after}; got {reply}"));
    }
    if body["retry_after_s"]
        .as_u64()
        .map(|s| s.to_string())
        .as_deref()
        != Some(retry_after)
    {
        return Err(format!("expected retry_after_s {retry_after}; got {reply}"));
    }
    Ok(())
}

/// Polls (bounded) until the block is over: the next request is not a 429.
fn wait_out_block(gw: &Gateway, key: &str, xff: Option<&str>, within: Duration) -> Reply {
    let started = Instant::now();
    let mut last = send(gw, key, xff);
    while last.status == 429 && started.elapsed() < within {
        std::thread::sleep(Duration::from_millis(100));
        last = send(gw, key, xff);
    }
    last
}

#[test]
fn blocks_double_across_two_workers_and_a_success_lowers_nothing() {
    let plugin = plugin(
        json!({"after_failures": 3, "base_s": 1, "max_s": 4}),
        json!({"from": "source"}),
    );
    let gw = Gateway::start_with(
        &plugin,
        JwksStub::start(authgate_integration::jwks(&[])),
        |c| c.concurrency(2),
    );
    let mut checks = Checks::new();
    // Each request is a new connection; the kernel spreads them over both workers, so a
    // per-worker count could not pass.
    for attempt in 1..=3 {
        checks.check(
            &format!("failure {attempt} is a 401"),
            expect::invalid_token(&send(&gw, WRONG, None)),
        );
    }
    checks.check(
        "after 3 failures, 429 for 1 s",
        limited(&send(&gw, WRONG, None), "1"),
    );
    checks.check(
        "even the right key waits out the block",
        limited(&send(&gw, KEY, None), "1"),
    );
    checks.check(
        "public routes stay open",
        expect::allowed(&Req::get(gw.url("/public")).send()),
    );
    let reply = wait_out_block(&gw, WRONG, None, Duration::from_secs(3));
    checks.check(
        "after the block, a failure is a 401 again",
        expect::invalid_token(&reply),
    );
    checks.check(
        "and the next block is twice as long",
        limited(&send(&gw, KEY, None), "2"),
    );
    let reply = wait_out_block(&gw, KEY, None, Duration::from_secs(4));
    checks.check(
        "the right key after the block passes",
        expect::allowed(&reply),
    );
    // A success forgets nothing (an attacker holding one key cannot reset guesses at others):
    // the very next failure blocks again, for longer.
    checks.check(
        "a failure after the success is still a 401",
        expect::invalid_token(&send(&gw, WRONG, None)),
    );
    checks.check(
        "and blocks at once, doubled to the cap",
        limited(&send(&gw, KEY, None), "4"),
    );

    let workers = gw.envoy.connections_per_worker();
    checks.check(
        "both workers served requests",
        (workers.len() == 2 && workers.iter().all(|&n| n >= 3))
            .then_some(())
            .ok_or(format!("connections per worker: {workers:?}")),
    );
    assert!(gw.envoy.stat("authgate.rate_limited") >= 4);
    checks.finish();
}

/// A wrong API key counts even when the request also carries a valid JWT that lets it through:
/// a valid credential must not carry guesses along without cost.
#[test]
fn a_failed_credential_counts_even_when_another_passes() {
    let mut plugin = plugin(
        json!({"after_failures": 3, "base_s": 5, "max_s": 10}),
        json!({"from": "source"}),
    );
    plugin["rules"][1]["requires_any"] = json!(["api_key", "jwt:corp"]);
    let gw = Gateway::start(&plugin, authgate_integration::jwks(&[]));
    let token = authgate_integration::TokenBuilder::new(FixtureKey::Rsa1)
        .claims(authgate_integration::plugin::corp_claims("alice"))
        .sign();
    for i in 1..=3 {
        let reply = Req::get(gw.url("/api"))
            .header("x-api-key", &format!("{WRONG}{i}"))
            .bearer(&token)
            .send();
        expect::allowed(&reply).unwrap_or_else(|e| panic!("guess {i} rides the JWT: {e}"));
    }
    let reply = send(&gw, WRONG, None);
    limited(&reply, "5").unwrap_or_else(|e| panic!("the three guesses counted: {e}"));
}

#[test]
fn forwarded_for_is_read_past_trusted_hops_only() {
    let plugin = plugin(
        json!({"after_failures": 2, "base_s": 30}),
        json!({"from": "x-forwarded-for", "trusted_hops": 1}),
    );
    let gw = Gateway::start(&plugin, authgate_integration::jwks(&[]));
    let mut checks = Checks::new();
    // The client may put anything on the left; the edge proxy appended the real address, and
    // our trusted proxy (one hop) appended its own.
    for spoof in ["1.1.1.1", "9.9.9.9"] {
        let xff = format!("{spoof}, 198.51.100.7, 10.0.0.2");
        checks.check(
            &format!("failure with spoofed {spoof}"),
            expect::invalid_token(&send(&gw, WRONG, Some(&xff))),
        );
    }
    checks.check(
        "198.51.100.7 is blocked whatever it puts on the left",
        limited(
            &send(&gw, KEY, Some("7.7.7.7, 198.51.100.7, 10.0.0.2")),
            "30",
        ),
    );
    checks.check(
        "a neighbour is not",
        expect::allowed(&send(&gw, KEY, Some("198.51.100.8, 10.0.0.2"))),
    );
    checks.finish();
}

/// Sends one failed attempt from each address, on a few client threads.
fn flood(gw: &Gateway, addresses: std::ops::Range<u32>) {
    let url = gw.url("/api");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            let range = addresses.clone();
            std::thread::spawn(move || {
                for n in range.skip(t).step_by(4) {
                    let xff = format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
                    let reply = Req::get(&url)
                        .header("x-api-key", WRONG)
                        .header("x-forwarded-for", &xff)
                        .send();
                    assert_eq!(reply.status, 401, "{reply}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .unwrap_or_else(|_| panic!("a flood thread failed"));
    }
}

#[test]
fn a_flood_of_distinct_addresses_keeps_memory_flat_and_blocks_in_force() {
    let plugin = plugin(
        json!({"after_failures": 3, "base_s": 120, "slots": 1024}),
        json!({"from": "x-forwarded-for"}),
    );
    let gw = Gateway::start(&plugin, authgate_integration::jwks(&[]));
    let attacker = Some("203.0.113.66");
    for _ in 0..3 {
        send(&gw, WRONG, attacker);
    }
    let mut checks = Checks::new();
    checks.check(
        "the attacker is blocked",
        limited(&send(&gw, WRONG, attacker), "120"),
    );

    // Fill the table (and Envoy's pools) first, then measure what a much larger flood adds.
    flood(&gw, 0..3_000);
    let before = gw
        .envoy
        .rss_bytes()
        .unwrap_or_else(|| panic!("no RSS for envoy"));
    flood(&gw, 3_000..63_000);
    let after = gw
        .envoy
        .rss_bytes()
        .unwrap_or_else(|| panic!("no RSS for envoy"));
    let grown_mib = after.saturating_sub(before) as f64 / f64::from(1 << 20);
    eprintln!("envoy RSS {before} -> {after} bytes (+{grown_mib:.1} MiB) over 60,000 addresses");
    checks.check(
        // One record per address (no fixed table) measured +8 MiB here.
        "60,000 more distinct addresses add under 2 MiB",
        (grown_mib < 2.0)
            .then_some(())
            .ok_or(format!("RSS grew {grown_mib:.1} MiB")),
    );
    checks.check(
        "the flood did not free the attacker",
        error_reply(&send(&gw, KEY, attacker), 429, "rate_limited").map(|_| ()),
    );
    checks.check(
        "a fresh client with the right key passes",
        expect::allowed(&send(&gw, KEY, Some("192.0.2.200"))),
    );
    checks.finish();
}
