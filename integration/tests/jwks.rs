//! Remote JWKS behaviour in real Envoy: fetch at start, verification cache stats, key rotation
//! without restart, an IdP that is down at start, failed refreshes that must keep the old keys,
//! and two worker threads.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use std::time::{Duration, Instant};

use authgate_integration::expect::{self, Check, Checks};
use authgate_integration::plugin::{corp_claims, corp_config, remote_provider, stat, PROVIDER};
use authgate_integration::tokens::corrupt_signature;
use authgate_integration::{jwks, wait_until, FixtureKey, Gateway, JwksMode, JwksStub, Req};

fn token(key: FixtureKey, subject: &str) -> String {
    authgate_integration::TokenBuilder::new(key)
        .claims(corp_claims(subject))
        .sign()
}

fn stat_is(gw: &Gateway, name: &str, expected: u64) -> Result<(), String> {
    match gw.envoy.stat(name) {
        n if n == expected => Ok(()),
        n => Err(format!(
            "{name} = {n}, expected {expected}; all stats: {:?}",
            gw.envoy.stats()
        )),
    }
}

/// `stat(name)` grew by exactly `expected` since `before`.
fn grew_by(gw: &Gateway, before: &BTreeMap<String, u64>, name: &str, expected: u64) -> Check {
    let was = before.get(name).copied().unwrap_or(0);
    match gw.envoy.stat(name) - was {
        n if n == expected => Ok(()),
        n => Err(format!(
            "{name} grew by {n}, expected {expected}; before: {before:?}, now: {:?}",
            gw.envoy.stats()
        )),
    }
}

#[test]
fn keys_fetched_at_start_and_verifications_cached() {
    let gw = Gateway::start(
        &corp_config(remote_provider(600)),
        jwks(&[FixtureKey::Rsa1]),
    );
    gw.wait_jwks_fetched();
    let mut checks = Checks::new();
    // Warm up: the worker VM may take the keys from shared data a moment after the main VM
    // fetched them (a request meanwhile waits); after this request it certainly has them.
    let reply = Req::get(gw.url("/api/a"))
        .bearer(&token(FixtureKey::Rsa1, "warm-up"))
        .send();
    checks.check("warm-up allowed", expect::allowed(&reply));

    let before = gw.envoy.stats();
    let alice = token(FixtureKey::Rsa1, "alice");
    for i in 0..5 {
        let reply = Req::get(gw.url("/api/a")).bearer(&alice).send();
        checks.check(&format!("request {i} allowed"), expect::allowed(&reply));
    }
    checks.check(
        "one token five times: one miss",
        grew_by(&gw, &before, stat::JWT_CACHE_MISS, 1),
    );
    checks.check(
        "... and four hits",
        grew_by(&gw, &before, stat::JWT_CACHE_HIT, 4),
    );
    checks.check("five allowed", grew_by(&gw, &before, stat::ALLOWED, 5));
    checks.check("none denied", grew_by(&gw, &before, stat::DENIED, 0));

    let reply = Req::get(gw.url("/api/a"))
        .bearer(&token(FixtureKey::Rsa1, "bob"))
        .send();
    checks.check("another token allowed", expect::allowed(&reply));
    checks.check(
        "another token is another miss",
        grew_by(&gw, &before, stat::JWT_CACHE_MISS, 2),
    );

    let reply = Req::get(gw.url("/api/a")).send();
    checks.check(
        "no credential",
        expect::unauthenticated(&reply, &gw.envoy.authority()),
    );
    let reply = Req::get(gw.url("/api/a"))
        .bearer(&corrupt_signature(&alice))
        .send();
    checks.check("corrupted", expect::invalid_token(&reply));
    checks.check("two denied", grew_by(&gw, &before, stat::DENIED, 2));
    checks.check("six allowed", grew_by(&gw, &before, stat::ALLOWED, 6));
    checks.check("no failed fetch", stat_is(&gw, stat::JWKS_FETCH_FAILED, 0));
    let fetches = gw.idp.requests();
    checks.check(
        "JWKS fetched at most once per VM (main + 1 worker) with a 600 s cache",
        if (1..=2).contains(&fetches) {
            Ok(())
        } else {
            Err(format!("{fetches} /jwks requests"))
        },
    );
    checks.finish();
}

#[test]
fn a_request_waiting_for_the_first_fetch_is_counted_once() {
    // The IdP answers the first fetch slowly (1.5 s, timeout 4 s), so the first request arrives
    // while no VM has keys yet: it may wait for them (then 200) or get 503 jwks_unavailable.
    // Either way every verified request is one cache lookup, and one token is one miss.
    let idp = JwksStub::start(jwks(&[FixtureKey::Rsa1]));
    idp.set_mode(JwksMode::Delay(Duration::from_millis(1500)));
    let mut provider = remote_provider(600);
    provider["remote_jwks"]["timeout_ms"] = serde_json::json!(4000);
    let gw = Gateway::start_with(&corp_config(provider), idp, |c| c);
    let mut checks = Checks::new();
    let alice = token(FixtureKey::Rsa1, "alice");
    let first = Req::get(gw.url("/api/a")).bearer(&alice).send();
    let first_allowed = first.status == 200;
    if !first_allowed {
        checks.check(
            "first request: 200 after waiting, or 503 jwks_unavailable",
            expect::error_reply(&first, 503, "jwks_unavailable").map(|_| ()),
        );
        gw.wait_jwks_fetched();
    }
    let mut allowed = u64::from(first_allowed);
    while allowed < 5 {
        let reply = Req::get(gw.url("/api/a")).bearer(&alice).send();
        checks.check(
            &format!("request {allowed} allowed"),
            expect::allowed(&reply),
        );
        if reply.status != 200 {
            break;
        }
        allowed += 1;
    }
    checks.check("one token: one miss", stat_is(&gw, stat::JWT_CACHE_MISS, 1));
    checks.check(
        "the other verified requests: hits",
        stat_is(&gw, stat::JWT_CACHE_HIT, allowed - 1),
    );
    checks.finish();
}

#[test]
fn a_new_kid_is_accepted_without_restart() {
    let gw = Gateway::start(
        &corp_config(remote_provider(600)),
        jwks(&[FixtureKey::Rsa1]),
    );
    gw.wait_jwks_fetched();
    let mut checks = Checks::new();

    let old = token(FixtureKey::Rsa1, "old-key-user");
    checks.check(
        "old key",
        expect::allowed(&Req::get(gw.url("/api/a")).bearer(&old).send()),
    );

    gw.idp.set_jwks(jwks(&[FixtureKey::Rsa1, FixtureKey::Rsa2]));
    let before = gw.idp.requests();
    let new = token(FixtureKey::Rsa2, "new-key-user");
    let reply = Req::get(gw.url("/api/a")).bearer(&new).send();
    checks.check(
        "token signed with the new kid accepted at once",
        expect::allowed(&reply),
    );
    checks.check(
        "new kid: subject",
        expect::upstream_header(&reply, "x-auth-subject", Some("new-key-user")),
    );
    let refetches = gw.idp.requests() - before;
    checks.check(
        "the unknown kid triggered exactly one refetch",
        if refetches == 1 {
            Ok(())
        } else {
            Err(format!("{refetches} refetches"))
        },
    );
    for i in 0..3 {
        let reply = Req::get(gw.url("/api/a")).bearer(&new).send();
        checks.check(&format!("new kid again ({i})"), expect::allowed(&reply));
    }
    checks.check(
        "old key still accepted",
        expect::allowed(&Req::get(gw.url("/api/a")).bearer(&old).send()),
    );
    let after = gw.idp.requests() - before;
    checks.check(
        "no refetch once the kid is known",
        if after == 1 {
            Ok(())
        } else {
            Err(format!("{after} refetches in all"))
        },
    );

    let unknown = token(FixtureKey::Rsa3, "stranger");
    let reply = Req::get(gw.url("/api/a")).bearer(&unknown).send();
    checks.check(
        "a kid the IdP does not have: invalid_token",
        expect::invalid_token(&reply),
    );

    // A flood of made-up kids must not turn into a flood of JWKS fetches.
    let before = gw.idp.requests();
    for i in 0..10 {
        let made_up = authgate_integration::TokenBuilder::new(FixtureKey::Rsa3)
            .kid(Some(&format!("made-up-{i}")))
            .claims(corp_claims("flood"))
            .sign();
        let reply = Req::get(gw.url("/api/a")).bearer(&made_up).send();
        checks.check(&format!("made-up kid {i}"), expect::invalid_token(&reply));
    }
    let fetches = gw.idp.requests() - before;
    checks.check(
        "10 unknown kids cause at most 2 JWKS fetches",
        if fetches <= 2 {
            Ok(())
        } else {
            Err(format!("{fetches} fetches"))
        },
    );
    checks.finish();
}

#[test]
fn idp_down_at_start_gives_503_then_recovers() {
    let idp = JwksStub::start_down(jwks(&[FixtureKey::Rsa1]));
    let gw = Gateway::start_with(&corp_config(remote_provider(600)), idp, |c| c);
    let mut checks = Checks::new();
    let valid = token(FixtureKey::Rsa1, "alice");

    for i in 0..3 {
        let id = format!("down-{i}");
        let reply = Req::get(gw.url("/api/a"))
            .bearer(&valid)
            .header("x-request-id", &id)
            .send();
        let check = expect::error_reply(&reply, 503, "jwks_unavailable")
            .and_then(|_| expect::request_id(&reply, &id))
            .and_then(|()| expect::no_token_leak(&reply, &valid));
        checks.check(
            &format!("keys unavailable: 503 jwks_unavailable ({i})"),
            check,
        );
    }
    let reply = Req::get(gw.url("/api/a")).send();
    checks.check(
        "no credential while the IdP is down is still 401 (no keys needed)",
        expect::unauthenticated(&reply, &gw.envoy.authority()),
    );
    checks.check(
        "failed fetches counted",
        gw.envoy
            .wait_stat(stat::JWKS_FETCH_FAILED, 1, Duration::from_secs(5))
            .map(|_| ()),
    );

    gw.idp.come_up();
    let started = Instant::now();
    let mut statuses = Vec::new();
    let recovered = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let reply = Req::get(gw.url("/api/a")).bearer(&valid).send();
        statuses.push(reply.status);
        (reply.status == 200).then_some(reply)
    });
    match recovered {
        Some(reply) => {
            checks.check("after recovery: allowed", expect::allowed(&reply));
            eprintln!("recovered {:?} after the IdP came up", started.elapsed());
        }
        None => checks.check(
            "valid token passes within 15 s of the IdP coming up",
            Err(format!(
                "statuses seen: {statuses:?}; stub saw {} /jwks requests",
                gw.idp.requests()
            )),
        ),
    }
    let unexpected: Vec<u16> = statuses
        .iter()
        .copied()
        .filter(|s| *s != 200 && *s != 503)
        .collect();
    checks.check(
        "while recovering only 503 or 200",
        if unexpected.is_empty() {
            Ok(())
        } else {
            Err(format!("statuses: {statuses:?}"))
        },
    );
    checks.check(
        "successful fetch counted",
        gw.envoy
            .wait_stat(stat::JWKS_FETCH_SUCCESS, 1, Duration::from_secs(2))
            .map(|_| ()),
    );
    checks.finish();
}

#[test]
fn failed_refreshes_keep_the_old_keys() {
    // cache_duration_s 1: the filter refreshes every second, so every failure mode is hit.
    let gw = Gateway::start(&corp_config(remote_provider(1)), jwks(&[FixtureKey::Rsa1]));
    gw.wait_jwks_fetched();
    let mut checks = Checks::new();
    let valid = token(FixtureKey::Rsa1, "alice");
    checks.check(
        "before",
        expect::allowed(&Req::get(gw.url("/api/a")).bearer(&valid).send()),
    );

    let modes = [
        (JwksMode::Status(500), true),
        (JwksMode::Garbage, true),
        (JwksMode::EmptyKeys, false),
        (JwksMode::Delay(Duration::from_millis(2500)), true), // timeout_ms is 1000
    ];
    for (mode, counts_as_failure) in modes {
        let failed_before = gw.envoy.stat(stat::JWKS_FETCH_FAILED);
        let requests_before = gw.idp.requests();
        gw.idp.set_mode(mode.clone());
        // Wait until the filter has certainly processed at least one bad answer: a failure was
        // counted, or the stub saw two more requests (the second one starts after the first
        // answer was handled).
        let refreshed = wait_until(Duration::from_secs(12), Duration::from_millis(50), || {
            let failed = gw.envoy.stat(stat::JWKS_FETCH_FAILED) > failed_before;
            let twice = gw.idp.requests() >= requests_before + 2;
            (failed || twice).then_some(failed)
        });
        match refreshed {
            None => checks.check(
                &format!("{mode:?}: a refresh happened within 12 s"),
                Err(format!("stub saw {} requests in all", gw.idp.requests())),
            ),
            Some(failed_counted) => {
                if counts_as_failure {
                    let outcome = if failed_counted {
                        Ok(())
                    } else {
                        Err(format!("{} did not grow", stat::JWKS_FETCH_FAILED))
                    };
                    checks.check(&format!("{mode:?}: counted as a failed fetch"), outcome);
                }
                for i in 0..3 {
                    let reply = Req::get(gw.url("/api/a")).bearer(&valid).send();
                    checks.check(
                        &format!("{mode:?}: previously good token still allowed ({i})"),
                        expect::allowed(&reply),
                    );
                }
            }
        }
    }

    gw.idp.set_mode(JwksMode::Ok);
    let success_before = gw.envoy.stat(stat::JWKS_FETCH_SUCCESS);
    checks.check(
        "refreshes succeed again",
        gw.envoy
            .wait_stat(
                stat::JWKS_FETCH_SUCCESS,
                success_before + 1,
                Duration::from_secs(12),
            )
            .map(|_| ()),
    );
    checks.check(
        "after",
        expect::allowed(&Req::get(gw.url("/api/a")).bearer(&valid).send()),
    );
    checks.finish();
}

#[test]
fn a_key_removed_from_the_jwks_stops_working() {
    let gw = Gateway::start(
        &corp_config(remote_provider(1)),
        jwks(&[FixtureKey::Rsa1, FixtureKey::Rsa2]),
    );
    gw.wait_jwks_fetched();
    let mut checks = Checks::new();
    let reply = Req::get(gw.url("/api/a"))
        .bearer(&token(FixtureKey::Rsa2, "before"))
        .send();
    checks.check("rsa-2 accepted while published", expect::allowed(&reply));

    gw.idp.set_jwks(jwks(&[FixtureKey::Rsa1]));
    let fetched = gw.envoy.stat(stat::JWKS_FETCH_SUCCESS);
    checks.check(
        "a refresh happened",
        gw.envoy
            .wait_stat(
                stat::JWKS_FETCH_SUCCESS,
                fetched + 1,
                Duration::from_secs(10),
            )
            .map(|_| ()),
    );
    // Workers pick the new key set up from shared data shortly after the fetch: poll, each
    // time with a token never seen before (so in no verification cache), signed with the
    // removed key.
    let mut attempt = 0;
    let rejected = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        attempt += 1;
        let fresh = token(FixtureKey::Rsa2, &format!("after-{attempt}"));
        let reply = Req::get(gw.url("/api/a")).bearer(&fresh).send();
        (reply.status != 200).then_some(reply)
    });
    checks.check(
        "rsa-2 rejected once unpublished (within 5 s of the refresh)",
        match rejected {
            Some(reply) => expect::invalid_token(&reply),
            None => Err(format!("still accepted after {attempt} fresh tokens")),
        },
    );
    let reply = Req::get(gw.url("/api/a"))
        .bearer(&token(FixtureKey::Rsa1, "after"))
        .send();
    checks.check("rsa-1 still accepted", expect::allowed(&reply));
    checks.finish();
}

#[test]
fn two_workers() {
    let idp = JwksStub::start(jwks(&[FixtureKey::Rsa1]));
    let gw = Gateway::start_with(&corp_config(remote_provider(600)), idp, |c| {
        c.concurrency(2)
    });
    gw.wait_jwks_fetched();
    let mut checks = Checks::new();

    let tokens = [
        token(FixtureKey::Rsa1, "alice"),
        token(FixtureKey::Rsa1, "bob"),
    ];
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let tok = &tokens[t % 2];
                let url = gw.url("/api/a");
                scope.spawn(move || {
                    (0..10)
                        .map(|_| Req::get(&url).bearer(tok).send().status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    checks.check(
        "40 concurrent requests over 2 workers allowed",
        if ok == 40 {
            Ok(())
        } else {
            Err(format!("statuses: {statuses:?}"))
        },
    );
    for i in 0..5 {
        let reply = Req::get(gw.url("/api/a"))
            .bearer(&corrupt_signature(&tokens[0]))
            .send();
        checks.check(&format!("corrupted ({i})"), expect::invalid_token(&reply));
    }
    checks.check(
        "allowed counted across workers",
        stat_is(&gw, stat::ALLOWED, 40),
    );
    checks.check(
        "denied counted across workers",
        stat_is(&gw, stat::DENIED, 5),
    );

    // Rotation must reach every worker.
    gw.idp.set_jwks(jwks(&[FixtureKey::Rsa1, FixtureKey::Rsa2]));
    let new = token(FixtureKey::Rsa2, "carol");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let url = gw.url("/api/a");
                let new = &new;
                scope.spawn(move || {
                    (0..5)
                        .map(|_| Req::get(&url).bearer(new).send().status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    checks.check(
        "new kid accepted on every worker",
        if statuses.iter().all(|s| *s == 200) {
            Ok(())
        } else {
            Err(format!("statuses: {statuses:?}"))
        },
    );
    checks.finish();
}

/// One worker refetches the discovery document (an unknown kid); the other must take up the
/// endpoints it names too, not keep the first document it saw: the fetch lease means only one
/// worker ever fetches.
#[test]
fn a_changed_discovery_document_reaches_every_worker() {
    let idp = JwksStub::start(jwks(&[FixtureKey::Rsa1]));
    idp.set_discovery_extra(json!({"authorization_endpoint": "https://idp.test/auth-v1",
                                   "token_endpoint": "https://idp.test/token"}));
    let mut provider = remote_provider(600);
    provider["discovery"] = json!(true);
    provider["remote_jwks"]
        .as_object_mut()
        .map(|r| r.remove("uri"));
    let mut plugin = corp_config(provider);
    plugin["login"] = json!({"provider": PROVIDER, "client_id": "authgate",
        "client_secret": "authgate-secret", "public_url": "http://gw.test",
        "cookie_keys": [URL_SAFE_NO_PAD.encode([7u8; 32])]});
    let gw = Gateway::start_with(&plugin, idp, |c| c.concurrency(2));
    gw.wait_jwks_fetched();
    // Each request on its own connection, so both workers answer some.
    let sign_in_targets = || -> Vec<String> {
        (0..24)
            .map(|_| {
                let reply = Req::get(gw.url("/auth/login?rd=/app")).send();
                let location = reply.header("location").unwrap_or("").to_string();
                location.split('?').next().unwrap_or("").to_string()
            })
            .collect()
    };
    let mut checks = Checks::new();
    let first = sign_in_targets();
    checks.check(
        "sign-in goes to the discovered authorization endpoint",
        first
            .iter()
            .all(|t| t == "https://idp.test/auth-v1")
            .then_some(())
            .ok_or(format!("{first:?}")),
    );

    gw.idp
        .set_discovery_extra(json!({"authorization_endpoint": "https://idp.test/auth-v2",
                                    "token_endpoint": "https://idp.test/token"}));
    gw.idp.set_jwks(jwks(&[FixtureKey::Rsa1, FixtureKey::Rsa2]));
    let fetched = gw.idp.discovery_requests();
    let reply = Req::get(gw.url("/api/a"))
        .bearer(&token(FixtureKey::Rsa2, "new-key-user"))
        .send();
    checks.check("the new kid made a worker refetch", expect::allowed(&reply));
    checks.check(
        "one discovery refetch",
        (gw.idp.discovery_requests() == fetched + 1)
            .then_some(())
            .ok_or(format!(
                "{} refetches",
                gw.idp.discovery_requests() - fetched
            )),
    );
    // Workers adopt what another published on their next tick (100 ms).
    std::thread::sleep(Duration::from_millis(500));
    let after = sign_in_targets();
    checks.check(
        "every worker now sends sign-in to the new endpoint",
        after
            .iter()
            .all(|t| t == "https://idp.test/auth-v2")
            .then_some(())
            .ok_or(format!("{after:?}")),
    );
    checks.finish();
}
