//! Failing dependencies in real Envoy (issue 7, "fault tests"): the JWKS server and the
//! authorization service refusing connections, resetting them, answering too slowly, answering
//! 500, HTML, an empty key set (`{}` for the service) or a 10 MB body; and Envoy itself restarted
//! mid-run.
//!
//! For every fault: each request is answered within a bound derived from the configured timeouts
//! (a correctness bound, not a performance goal), the outcome follows the documented policy, no
//! request without a valid credential ever gets a 200 (invalid credentials are sent during every
//! fault), and once the dependency is back, valid requests pass again without restarting Envoy
//! (bounded polling, never a fixed sleep).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate_integration::expect::{self, error_reply, Check, Checks};
use authgate_integration::plugin::{api_key_entry, corp_claims, local_provider, AUDIENCE};
use authgate_integration::tokens::{alg_none, corrupt_signature};
use authgate_integration::{
    jwks, now, wait_until, AuthzMode, AuthzStub, Envoy, EnvoyConfig, FixtureKey, JwksMode,
    JwksStub, Reply, Req, TokenBuilder, Upstream,
};
use serde_json::{json, Value};

/// `remote_jwks.timeout_ms` and `enterprise.timeout_ms` in every configuration here.
const TIMEOUT_MS: u64 = 1000;
/// How late the "slow" dependencies answer: well beyond the timeout.
const SLOW: Duration = Duration::from_millis(TIMEOUT_MS + 1500);
/// The "10 MB body".
const TEN_MB: usize = 10 << 20;
/// Slack on top of every documented wait: this 2-core machine runs two Envoys, stubs and
/// client threads at once.
const SLACK: Duration = Duration::from_secs(2);
const API_KEY: &str = "ek_live_faults_valid_key_0001";
const WRONG_API_KEY: &str = "ek_live_faults_wrong_key_0000";

/// The longest any request may take when keys are involved: a request may wait for keys for the
/// fetch timeout plus 1 s (README, "Remote JWKS"), then the slack.
fn jwks_bound() -> Duration {
    Duration::from_millis(TIMEOUT_MS + 1000) + SLACK
}

/// The longest a request to an `enterprise` route may take: the callout's timeout, then the slack.
fn authz_bound() -> Duration {
    Duration::from_millis(TIMEOUT_MS) + SLACK
}

/// Sends `req` and returns its reply, or why there was none within `bound` (a transport error, or
/// an answer that came too late: both fail the case).
fn send_within(req: &Req, bound: Duration) -> Result<Reply, String> {
    let started = Instant::now();
    let outcome = req
        .clone()
        .timeout(bound + Duration::from_secs(5))
        .try_send();
    let elapsed = started.elapsed();
    match outcome {
        Err(e) => Err(format!("no reply ({e}) after {elapsed:?}")),
        Ok(reply) if elapsed > bound => Err(format!(
            "answered after {elapsed:?}, beyond its bound of {bound:?}: {reply}"
        )),
        Ok(reply) => Ok(reply),
    }
}

/// Labelled outcomes from a client thread, recorded into [`Checks`] on the test thread.
type Outcomes = Vec<(String, Check)>;

fn record(checks: &mut Checks, outcomes: Outcomes) {
    for (label, outcome) in outcomes {
        checks.check(&label, outcome);
    }
}

/// Sends `req` within `bound` and checks the reply with `check`.
fn case(
    outcomes: &mut Outcomes,
    label: String,
    req: &Req,
    bound: Duration,
    check: impl FnOnce(&Reply) -> Check,
) {
    let outcome = send_within(req, bound).and_then(|reply| {
        // Whatever else is expected: a request without a valid credential never gets through.
        check(&reply)
    });
    outcomes.push((label, outcome));
}

/// A labelled request and its check, for [`concurrently`].
type Concurrent = (String, Req, Box<dyn Fn(&Reply) -> Check + Send + Sync>);

/// Sends every request at once (a thread each), each within `bound`.
fn concurrently(cases: Vec<Concurrent>, bound: Duration) -> Outcomes {
    std::thread::scope(|scope| {
        let threads: Vec<_> = cases
            .into_iter()
            .map(|(label, req, check)| {
                scope.spawn(move || {
                    let mut out = Outcomes::new();
                    case(&mut out, label, &req, bound, |r| check(r));
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| {
                t.join()
                    .unwrap_or_else(|_| vec![("client thread".into(), Err("panicked".into()))])
            })
            .collect()
    })
}

/// Not let through: no 200, and nothing from the upstream.
fn not_admitted(reply: &Reply) -> Check {
    if reply.status == 200 || reply.is_from_upstream() {
        return Err(format!(
            "a request without a valid credential was let through; got {reply}"
        ));
    }
    Ok(())
}

/// 503 `jwks_unavailable`.
fn jwks_unavailable(reply: &Reply) -> Check {
    error_reply(reply, 503, "jwks_unavailable").map(|_| ())
}

/// While no keys are loaded, a bad credential may be refused as such (401) or, when refusing it
/// needs keys, get 503 `jwks_unavailable`; never anything else.
fn refused_or_keys_unavailable(reply: &Reply) -> Check {
    not_admitted(reply)?;
    match reply.status {
        401 => Ok(()),
        _ => jwks_unavailable(reply),
    }
}

/// 401 `session_expired` (the `api` session reply).
fn session_expired(reply: &Reply) -> Check {
    expect::session_expired_api(reply)
}

/// The faults each dependency is put through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Nothing listens: connections are refused.
    Refused,
    /// Connections are accepted, then reset without a reply.
    Reset,
    /// The answer comes `SLOW`, beyond the timeout.
    Slow,
    Status500,
    /// 200 with an HTML page.
    Html,
    /// JWKS `{"keys": []}`; for the service `{}` (no `authorized`: the wrong shape).
    Empty,
    /// 200 with a 10 MB body (a valid JWKS / decision, padded).
    TenMegabytes,
}

const FAULTS: [Fault; 7] = [
    Fault::Refused,
    Fault::Reset,
    Fault::Slow,
    Fault::Status500,
    Fault::Html,
    Fault::Empty,
    Fault::TenMegabytes,
];

impl Fault {
    /// Also the provider name and route prefix of this fault's IdP.
    fn name(self) -> &'static str {
        match self {
            Fault::Refused => "refused",
            Fault::Reset => "reset",
            Fault::Slow => "slow",
            Fault::Status500 => "status500",
            Fault::Html => "html",
            Fault::Empty => "empty",
            Fault::TenMegabytes => "tenmb",
        }
    }

    fn break_jwks(self, idp: &JwksStub) {
        match self {
            Fault::Refused => idp.go_down(),
            Fault::Reset => idp.set_mode(JwksMode::Reset),
            Fault::Slow => idp.set_mode(JwksMode::Delay(SLOW)),
            Fault::Status500 => idp.set_mode(JwksMode::Status(500)),
            Fault::Html => idp.set_mode(JwksMode::Garbage),
            Fault::Empty => idp.set_mode(JwksMode::EmptyKeys),
            Fault::TenMegabytes => idp.set_mode(JwksMode::Oversized(TEN_MB)),
        }
    }

    fn break_authz(self, authz: &AuthzStub) {
        match self {
            Fault::Refused => authz.go_down(),
            Fault::Reset => authz.set_mode(AuthzMode::Reset),
            Fault::Slow => authz.set_mode(AuthzMode::delayed(SLOW, AuthzMode::allow())),
            Fault::Status500 => authz.set_mode(AuthzMode::Status(500)),
            Fault::Html => authz.set_mode(AuthzMode::Html),
            Fault::Empty => authz.set_mode(AuthzMode::Json(json!({}))),
            Fault::TenMegabytes => authz.set_mode(AuthzMode::Oversized(TEN_MB)),
        }
    }
}

fn heal_jwks(idp: &JwksStub) {
    idp.set_mode(JwksMode::Ok);
    idp.come_up();
}

fn heal_authz(authz: &AuthzStub) {
    authz.set_mode(AuthzMode::allow());
    authz.come_up();
}

// ---------------------------------------------------------------------------------------------
// JWKS faults: one Envoy, one provider (with its own IdP stub and cluster) per fault, so every
// fault runs at once and each provider's keys are independent.

fn issuer(fault: Fault) -> String {
    format!("https://{}.idp.test", fault.name())
}

fn remote_provider(fault: Fault, cache_duration_s: u64) -> Value {
    let name = fault.name();
    json!({
        "issuer": issuer(fault),
        "audiences": [AUDIENCE],
        "remote_jwks": {"cluster": format!("idp-{name}"), "uri": format!("http://idp-{name}/jwks"),
                        "timeout_ms": TIMEOUT_MS, "cache_duration_s": cache_duration_s},
        "subject_claims": {"email": "email", "roles": "realm_access.roles", "scopes": "scope"}
    })
}

/// `/<fault>/…` requires a JWT from that fault's provider.
fn jwks_plugin(cache_duration_s: u64) -> Value {
    let providers: serde_json::Map<String, Value> = FAULTS
        .iter()
        .map(|f| (f.name().to_string(), remote_provider(*f, cache_duration_s)))
        .collect();
    let rules: Vec<Value> = FAULTS
        .iter()
        .map(|f| {
            json!({"match": {"prefix": format!("/{}/", f.name())},
                        "requires_any": [format!("jwt:{}", f.name())]})
        })
        .collect();
    json!({"jwt_providers": providers, "rules": rules})
}

/// A token from `fault`'s issuer signed with `key` (its own kid), valid for an hour.
fn idp_token(fault: Fault, key: FixtureKey, subject: &str) -> String {
    TokenBuilder::new(key)
        .claims(corp_claims(subject))
        .claim("iss", issuer(fault))
        .sign()
}

/// Upstream, one IdP stub per fault (made by `idp`), and Envoy with a cluster for each.
struct JwksRig {
    envoy: Envoy,
    idps: Vec<(Fault, JwksStub)>,
    _upstream: Upstream,
}

impl JwksRig {
    fn start(cache_duration_s: u64, idp: impl Fn(Fault) -> JwksStub) -> JwksRig {
        let upstream = Upstream::start();
        let idps: Vec<(Fault, JwksStub)> = FAULTS.iter().map(|f| (*f, idp(*f))).collect();
        let mut config = EnvoyConfig::new(&jwks_plugin(cache_duration_s), upstream.port());
        for (fault, stub) in &idps {
            config = config.cluster(&format!("idp-{}", fault.name()), stub.port());
        }
        let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"));
        JwksRig {
            envoy,
            idps,
            _upstream: upstream,
        }
    }

    fn url(&self, fault: Fault) -> String {
        self.envoy.url(&format!("/{}/items", fault.name()))
    }

    /// Runs `each(fault, stub, url)` for every fault on its own thread; collects the outcomes.
    fn per_fault(&self, each: impl Fn(Fault, &JwksStub, &str) -> Outcomes + Sync) -> Outcomes {
        std::thread::scope(|scope| {
            let each = &each;
            let threads: Vec<_> = self
                .idps
                .iter()
                .map(|(fault, stub)| {
                    let url = self.url(*fault);
                    scope.spawn(move || each(*fault, stub, &url))
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| {
                    t.join()
                        .unwrap_or_else(|_| vec![("client thread".into(), Err("panicked".into()))])
                })
                .collect()
        })
    }

    /// Waits until Envoy's log, past byte `from`, has a line with `needle` for every fault's
    /// provider (`{}` in `needle` stands for the name); returns one such line per provider.
    fn wait_log_per_provider(
        &self,
        from: usize,
        needle: &str,
        within: Duration,
    ) -> Result<Vec<String>, String> {
        let found = |log: &str, fault: Fault| {
            let needle = needle.replace("{}", fault.name());
            log.lines()
                .find(|line| line.contains(&needle))
                .map(str::to_string)
        };
        wait_until(within, Duration::from_millis(50), || {
            let log = self.envoy.log();
            let recent = log.get(from..).unwrap_or("");
            FAULTS
                .iter()
                .map(|f| found(recent, *f))
                .collect::<Option<Vec<String>>>()
        })
        .ok_or_else(|| {
            let log = self.envoy.log();
            let recent = log.get(from..).unwrap_or("");
            let missing: Vec<&str> = FAULTS
                .iter()
                .filter(|f| found(recent, **f).is_none())
                .map(|f| f.name())
                .collect();
            format!("no \"{needle}\" log line within {within:?} for {missing:?}")
        })
    }
}

/// The bad credentials sent to `fault`'s route during every phase, each with what it must get
/// once keys are loaded.
/// A labelled request and the check its reply must pass.
type BadCase = (&'static str, Req, fn(&Reply) -> Check);

fn bad_credentials(fault: Fault, url: &str) -> Vec<BadCase> {
    let fresh = idp_token(fault, FixtureKey::Rsa1, "mallory");
    let mut expired_claims = corp_claims("expired");
    expired_claims["iss"] = json!(issuer(fault));
    expired_claims["exp"] = json!(now() - 3600);
    expired_claims["iat"] = json!(now() - 7200);
    let expired = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(expired_claims)
        .sign();
    let mut claims = corp_claims("mallory");
    claims["iss"] = json!(issuer(fault));
    let other_issuer = idp_token(
        if fault == Fault::Refused {
            Fault::Reset
        } else {
            Fault::Refused
        },
        FixtureKey::Rsa1,
        "mallory",
    );
    vec![
        ("no credential", Req::get(url), |r| {
            error_reply(r, 401, "unauthenticated").map(|_| ())
        }),
        (
            "corrupted signature",
            Req::get(url).bearer(&corrupt_signature(&fresh)),
            expect::invalid_token,
        ),
        (
            "alg none",
            Req::get(url).bearer(&alg_none("rsa-1", &claims)),
            expect::invalid_token,
        ),
        (
            "kid the IdP never published",
            Req::get(url).bearer(&idp_token(fault, FixtureKey::Rsa3, "mallory")),
            expect::invalid_token,
        ),
        (
            "another provider's issuer",
            Req::get(url).bearer(&other_issuer),
            expect::invalid_token,
        ),
        (
            "expired an hour ago",
            Req::get(url).bearer(&expired),
            session_expired,
        ),
    ]
}

#[test]
fn jwks_faults_with_keys_loaded_keep_the_old_keys_and_recover() {
    // cache_duration_s 1: every provider refreshes each second, so each fault is hit at once,
    // and retries after a failure are 1 s apart (the backoff is capped at the cache duration).
    let rig = JwksRig::start(1, |_| JwksStub::start(jwks(&[FixtureKey::Rsa1])));
    let mut checks = Checks::new();

    // Healthy: each provider's keys arrive; one token per provider is verified and cached.
    let cached: Vec<String> = FAULTS
        .iter()
        .map(|f| idp_token(*f, FixtureKey::Rsa1, "alice"))
        .collect();
    let outcomes = rig.per_fault(|fault, _, url| {
        let token = idp_token(fault, FixtureKey::Rsa1, "alice");
        let passed = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            send_within(&Req::get(url).bearer(&token), jwks_bound())
                .ok()
                .filter(|r| r.status == 200)
        });
        vec![(
            format!("{}: healthy, a valid token passes", fault.name()),
            passed.map_or(Err("no 200 within 10 s".into()), |r| expect::allowed(&r)),
        )]
    });
    record(&mut checks, outcomes);

    // The faults, all at once. Then wait until every provider has had a refresh fail.
    let from = rig.envoy.log().len();
    let failed_before = rig.envoy.stat("authgate.jwks_fetch_failed");
    for (fault, idp) in &rig.idps {
        fault.break_jwks(idp);
    }
    match rig.wait_log_per_provider(
        from,
        "JWKS fetch for provider {} failed",
        Duration::from_secs(15),
    ) {
        Ok(lines) => {
            for line in lines {
                eprintln!(
                    "fault seen: {}",
                    line.split("authgate: ").last().unwrap_or(&line)
                );
            }
        }
        Err(e) => checks.check("every provider's refresh failed", Err(e)),
    }
    checks.check(
        "failed fetches counted",
        (rig.envoy.stat("authgate.jwks_fetch_failed") >= failed_before + 7)
            .then_some(())
            .ok_or(format!("stats: {:?}", rig.envoy.stats())),
    );

    // During the faults: the old keys stay. Cached and never-seen valid tokens pass; every bad
    // credential is refused as such.
    let outcomes = rig.per_fault(|fault, idp, url| {
        let name = fault.name();
        let mut out = Outcomes::new();
        let index = FAULTS.iter().position(|f| *f == fault).unwrap_or(0);
        case(
            &mut out,
            format!("{name}: during the fault, a cached valid token passes"),
            &Req::get(url).bearer(&cached[index]),
            jwks_bound(),
            expect::allowed,
        );
        for round in 0..2 {
            let fresh = idp_token(fault, FixtureKey::Rsa1, &format!("bob-{round}"));
            case(
                &mut out,
                format!("{name}: during the fault, a never-seen valid token passes ({round})"),
                &Req::get(url).bearer(&fresh),
                jwks_bound(),
                |r| {
                    expect::allowed(r).and_then(|()| {
                        expect::upstream_header(r, "x-auth-subject", Some(&format!("bob-{round}")))
                    })
                },
            );
        }
        for (what, req, check) in bad_credentials(fault, url) {
            case(
                &mut out,
                format!("{name}: during the fault, {what}"),
                &req,
                jwks_bound(),
                |r| not_admitted(r).and_then(|()| check(r)),
            );
        }
        let exercised = match fault {
            Fault::Refused => !idp.is_up(),
            Fault::Reset => idp.reset_connections() > 0,
            _ => idp.requests() > 1,
        };
        out.push((
            format!("{name}: the fault was exercised"),
            exercised
                .then_some(())
                .ok_or(format!("stub saw {} requests", idp.requests())),
        ));
        out
    });
    record(&mut checks, outcomes);

    // Recovery, without restarting Envoy: the IdPs come back having rotated to rsa-2; tokens
    // signed with it pass once the provider has fetched again (bounded polling).
    let from = rig.envoy.log().len();
    for (_, idp) in &rig.idps {
        idp.set_jwks(jwks(&[FixtureKey::Rsa1, FixtureKey::Rsa2]));
        heal_jwks(idp);
    }
    let outcomes = rig.per_fault(|fault, _, url| {
        let name = fault.name();
        let started = Instant::now();
        let rotated = idp_token(fault, FixtureKey::Rsa2, "carol");
        let mut statuses = Vec::new();
        let passed =
            wait_until(
                Duration::from_secs(15),
                Duration::from_millis(100),
                || match send_within(&Req::get(url).bearer(&rotated), jwks_bound()) {
                    Ok(reply) => {
                        statuses.push(reply.status);
                        (reply.status == 200 || reply.is_from_upstream()).then_some(Ok(reply))
                    }
                    Err(e) => Some(Err(e)),
                },
            );
        let mut out = vec![(
            format!("{name}: recovered, a token of the rotated key passes"),
            match passed {
                Some(Ok(reply)) => expect::allowed(&reply),
                Some(Err(e)) => Err(e),
                None => Err(format!("no 200 within 15 s; statuses {statuses:?}")),
            },
        )];
        out.push((
            format!("{name}: while recovering, only 401 before the 200"),
            statuses
                .iter()
                .all(|s| *s == 200 || *s == 401)
                .then_some(())
                .ok_or(format!("statuses {statuses:?}")),
        ));
        eprintln!("{name}: recovered in {:?}", started.elapsed());
        case(
            &mut out,
            format!("{name}: after recovery, a new rsa-1 token passes"),
            &Req::get(url).bearer(&idp_token(fault, FixtureKey::Rsa1, "dave")),
            jwks_bound(),
            expect::allowed,
        );
        for (what, req, check) in bad_credentials(fault, url) {
            case(
                &mut out,
                format!("{name}: after recovery, {what}"),
                &req,
                jwks_bound(),
                |r| not_admitted(r).and_then(|()| check(r)),
            );
        }
        out
    });
    record(&mut checks, outcomes);
    checks.check(
        "every provider fetched its keys again",
        rig.wait_log_per_provider(
            from,
            "fetched 2 keys for provider {}",
            Duration::from_secs(5),
        )
        .map(|_| ()),
    );
    checks.finish();
}

#[test]
fn jwks_faults_before_any_keys_answer_503_then_recover() {
    // A realistic cache duration: the retries after failed first fetches back off 1 s, 2 s, 4 s…
    let rig = JwksRig::start(600, |fault| {
        let idp = if fault == Fault::Refused {
            JwksStub::start_down(jwks(&[FixtureKey::Rsa1]))
        } else {
            JwksStub::start(jwks(&[FixtureKey::Rsa1]))
        };
        fault.break_jwks(&idp);
        idp
    });
    let mut checks = Checks::new();

    let outcomes = rig.per_fault(|fault, _, url| {
        let name = fault.name();
        let mut out = Outcomes::new();
        let valid = idp_token(fault, FixtureKey::Rsa1, "alice");
        // All at once, so they wait for the same fetches and the outage stays short (the retry
        // backoff, and so the recovery below, grows with its length).
        let mut cases: Vec<Concurrent> = (0..2)
            .map(|round| {
                let id = format!("{name}-{round}");
                let req = Req::get(url).bearer(&valid).header("x-request-id", &id);
                let token = valid.clone();
                let check: Box<dyn Fn(&Reply) -> Check + Send + Sync> = Box::new(move |r| {
                    jwks_unavailable(r)
                        .and_then(|()| expect::request_id(r, &id))
                        .and_then(|()| expect::no_token_leak(r, &token))
                });
                (
                    format!(
                        "{name}: no keys yet, a valid token gets 503 jwks_unavailable ({round})"
                    ),
                    req,
                    check,
                )
            })
            .collect();
        for (what, req, _) in bad_credentials(fault, url) {
            cases.push((
                format!("{name}: no keys yet, {what}: 401 or 503, never 200"),
                req,
                Box::new(refused_or_keys_unavailable),
            ));
        }
        out.extend(concurrently(cases, jwks_bound()));
        out
    });
    record(&mut checks, outcomes);
    checks.check(
        "failed first fetches counted",
        (rig.envoy.stat("authgate.jwks_fetch_failed") >= 7)
            .then_some(())
            .ok_or(format!("stats: {:?}", rig.envoy.stats())),
    );

    // The IdPs come back: valid tokens pass within the retry backoff reached so far, without
    // restarting Envoy.
    for (_, idp) in &rig.idps {
        heal_jwks(idp);
    }
    let outcomes = rig.per_fault(|fault, _, url| {
        let name = fault.name();
        let started = Instant::now();
        let valid = idp_token(fault, FixtureKey::Rsa1, "alice");
        let mut statuses = Vec::new();
        let passed =
            wait_until(
                Duration::from_secs(30),
                Duration::from_millis(200),
                || match send_within(&Req::get(url).bearer(&valid), jwks_bound()) {
                    Ok(reply) => {
                        statuses.push(reply.status);
                        (reply.status == 200 || reply.is_from_upstream()).then_some(Ok(reply))
                    }
                    Err(e) => Some(Err(e)),
                },
            );
        let mut out = vec![(
            format!("{name}: recovered, a valid token passes"),
            match passed {
                Some(Ok(reply)) => expect::allowed(&reply),
                Some(Err(e)) => Err(e),
                None => Err(format!("no 200 within 30 s; statuses {statuses:?}")),
            },
        )];
        out.push((
            format!("{name}: while recovering, only 503 before the 200"),
            statuses
                .iter()
                .all(|s| *s == 200 || *s == 503)
                .then_some(())
                .ok_or(format!("statuses {statuses:?}")),
        ));
        eprintln!(
            "{name}: keys loaded {:?} after the IdP came back",
            started.elapsed()
        );
        for (what, req, check) in bad_credentials(fault, url) {
            case(
                &mut out,
                format!("{name}: after recovery, {what}"),
                &req,
                jwks_bound(),
                |r| not_admitted(r).and_then(|()| check(r)),
            );
        }
        out
    });
    record(&mut checks, outcomes);
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// Authorization service faults: one stub, two Envoys calling it (failure_mode deny and allow).

fn authz_plugin(failure_mode: &str) -> Value {
    json!({
        "jwt_providers": {"corp": local_provider(&[FixtureKey::Rsa1])},
        "api_keys": {"keys": [api_key_entry("ci", API_KEY, "svc:ci", &["read"])]},
        "rules": [{"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp", "api_key"],
                   "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal",
                       "timeout_ms": TIMEOUT_MS, "failure_mode": failure_mode,
                       "status_on_error": 503,
                       "cache": {"allow_ttl_s": 60, "deny_ttl_s": 1}}
    })
}

fn corp_token(subject: &str) -> String {
    TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims(subject))
        .sign()
}

/// What a valid credential gets while the service fails, per `failure_mode`.
fn per_failure_mode<'a>(mode: &str, subject: &'a str) -> impl Fn(&Reply) -> Check + 'a {
    let allow = mode == "allow";
    move |reply: &Reply| {
        if allow {
            expect::allowed(reply)
                .and_then(|()| {
                    expect::upstream_header(reply, "x-auth-authz", Some("failure-mode-allow"))
                })
                .and_then(|()| expect::upstream_header(reply, "x-auth-subject", Some(subject)))
        } else {
            error_reply(reply, 503, "authorization_unavailable").map(|_| ())
        }
    }
}

/// Bad credentials on the enterprise route: refused before the service is ever asked.
fn authz_bad_credentials(url: &str) -> Vec<BadCase> {
    let mut expired = corp_claims("expired");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    vec![
        ("no credential", Req::get(url), |r| {
            error_reply(r, 401, "unauthenticated").map(|_| ())
        }),
        (
            "corrupted JWT",
            Req::get(url).bearer(&corrupt_signature(&corp_token("mallory"))),
            expect::invalid_token,
        ),
        (
            "alg none",
            Req::get(url).bearer(&alg_none("rsa-1", &corp_claims("mallory"))),
            expect::invalid_token,
        ),
        (
            "unknown API key",
            Req::get(url).header("x-api-key", WRONG_API_KEY),
            expect::invalid_token,
        ),
        (
            "expired JWT",
            Req::get(url).bearer(&TokenBuilder::new(FixtureKey::Rsa1).claims(expired).sign()),
            session_expired,
        ),
    ]
}

#[test]
fn authz_faults_follow_failure_mode_and_recover() {
    let authz = AuthzStub::start(AuthzMode::allow());
    let upstream = Upstream::start();
    let start = |mode: &str| {
        let config =
            EnvoyConfig::new(&authz_plugin(mode), upstream.port()).cluster("authz", authz.port());
        Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy ({mode}): {e}"))
    };
    let gateways = [("deny", start("deny")), ("allow", start("allow"))];
    let mut checks = Checks::new();

    for (mode, envoy) in &gateways {
        let url = envoy.url("/v1/models");
        let reply = send_within(&Req::get(&url).bearer(&corp_token("warm")), authz_bound());
        checks.check(
            &format!("{mode}: healthy service, allowed without a failure marker"),
            reply.and_then(|r| {
                expect::allowed(&r).and_then(|()| expect::upstream_header(&r, "x-auth-authz", None))
            }),
        );
    }

    for fault in FAULTS {
        let name = fault.name();
        let calls_before = authz.request_count();
        let resets_before = authz.reset_connections();
        fault.break_authz(&authz);
        let outcomes: Outcomes = std::thread::scope(|scope| {
            let threads: Vec<_> = gateways
                .iter()
                .map(|(mode, envoy)| {
                    scope.spawn(move || {
                        let url = envoy.url(&format!("/v1/{name}"));
                        let mut out = Outcomes::new();
                        // Fresh subjects: no cached decision can answer for them.
                        let subject = format!("{name}-{mode}");
                        case(
                            &mut out,
                            format!("{name}, failure_mode {mode}: valid JWT"),
                            &Req::get(&url).bearer(&corp_token(&subject)),
                            authz_bound(),
                            per_failure_mode(mode, &subject),
                        );
                        case(
                            &mut out,
                            format!("{name}, failure_mode {mode}: valid API key"),
                            &Req::get(&url).header("x-api-key", API_KEY),
                            authz_bound(),
                            per_failure_mode(mode, "svc:ci"),
                        );
                        for (what, req, check) in authz_bad_credentials(&url) {
                            case(
                                &mut out,
                                format!("{name}, failure_mode {mode}: {what}"),
                                &req,
                                authz_bound(),
                                |r| not_admitted(r).and_then(|()| check(r)),
                            );
                        }
                        out
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| {
                    t.join()
                        .unwrap_or_else(|_| vec![("client thread".into(), Err("panicked".into()))])
                })
                .collect()
        });
        record(&mut checks, outcomes);
        let exercised = match fault {
            Fault::Refused => authz.request_count() == calls_before,
            Fault::Reset => authz.reset_connections() >= resets_before + 4,
            _ => authz.request_count() >= calls_before + 4,
        };
        checks.check(
            &format!("{name}: the service was called and failed as set"),
            exercised.then_some(()).ok_or(format!(
                "calls {} -> {}, resets {resets_before} -> {}",
                calls_before,
                authz.request_count(),
                authz.reset_connections()
            )),
        );

        // Back to healthy: a valid credential passes again, without restarting Envoy.
        heal_authz(&authz);
        for (mode, envoy) in &gateways {
            let url = envoy.url(&format!("/v1/{name}/after"));
            let subject = format!("{name}-{mode}-after");
            let token = corp_token(&subject);
            let mut last = None;
            let recovered = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                let reply = send_within(&Req::get(&url).bearer(&token), authz_bound());
                let done = matches!(&reply, Ok(r) if r.status == 200
                    && r.upstream_header("x-auth-authz").is_none());
                last = Some(reply);
                done.then_some(())
            });
            checks.check(
                &format!("{name}, failure_mode {mode}: recovered, allowed by the service"),
                match (recovered, last) {
                    (Some(()), Some(Ok(reply))) => expect::allowed(&reply).and_then(|()| {
                        expect::upstream_header(&reply, "x-auth-subject", Some(&subject))
                    }),
                    (_, last) => Err(format!("not recovered within 10 s; last: {last:?}")),
                },
            );
        }
    }
    for (mode, envoy) in &gateways {
        let stats = envoy.stats();
        let stat = |n: &str| stats.get(n).copied().unwrap_or(0);
        eprintln!(
            "failure_mode {mode}: authz_call {} authz_error {} authz_timeout {} \
             failure_mode_allowed {} denied.authorization_unavailable {}",
            stat("authgate.authz_call"),
            stat("authgate.authz_error"),
            stat("authgate.authz_timeout"),
            stat("authgate.failure_mode_allowed"),
            stat("authgate.denied.authorization_unavailable")
        );
        let expected_errors = 2 * FAULTS.len() as u64;
        checks.check(
            &format!("{mode}: every failed call counted as authz_error"),
            (stat("authgate.authz_error") == expected_errors)
                .then_some(())
                .ok_or(format!("expected {expected_errors}; stats {stats:?}")),
        );
        let (allowed, unavailable) = if *mode == "allow" {
            (expected_errors, 0)
        } else {
            (0, expected_errors)
        };
        checks.check(
            &format!("{mode}: failure_mode outcomes counted"),
            (stat("authgate.failure_mode_allowed") == allowed
                && stat("authgate.denied.authorization_unavailable") == unavailable)
                .then_some(())
                .ok_or(format!("stats {stats:?}")),
        );
    }
    checks.finish();
}

/// `failure_mode: allow` waves valid credentials through while the service is down, but an
/// opaque agent token is only ever verified by the service: with the service down, a made-up
/// one is no valid credential and must not get a 200.
#[test]
fn failure_mode_allow_does_not_admit_an_unverifiable_agent_token() {
    let authz = AuthzStub::start(AuthzMode::allow());
    authz.go_down();
    let upstream = Upstream::start();
    let mut plugin = authz_plugin("allow");
    plugin["opaque_tokens"] = json!("enterprise");
    plugin["rules"] = json!([{"match": {"prefix": "/agent/"}, "requires_any": ["opaque_token"]},
                             {"match": {"prefix": "/v1/"},
                              "requires_any": ["jwt:corp", "opaque_token"], "enterprise": true}]);
    let config = EnvoyConfig::new(&plugin, upstream.port()).cluster("authz", authz.port());
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"));
    let mut checks = Checks::new();
    for path in ["/agent/run", "/v1/chat/completions"] {
        for (i, made_up) in ["agt_made_up_by_an_attacker_0001", "sk-anything-at-all"]
            .iter()
            .enumerate()
        {
            let reply = send_within(&Req::get(envoy.url(path)).bearer(made_up), authz_bound());
            checks.check(
                &format!("{path}: service down, made-up agent token {i} is not let through"),
                reply.and_then(|r| not_admitted(&r)),
            );
        }
    }
    // The same gateway does wave a verified JWT through (the documented allow behaviour).
    let reply = send_within(
        &Req::get(envoy.url("/v1/chat/completions")).bearer(&corp_token("erin")),
        authz_bound(),
    );
    checks.check(
        "service down, a valid JWT passes marked failure-mode-allow",
        reply.and_then(|r| per_failure_mode("allow", "erin")(&r)),
    );
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// Envoy restarted mid-run.

#[test]
fn envoy_restarted_mid_run_serves_again_with_the_same_dependencies() {
    let idp = JwksStub::start(jwks(&[FixtureKey::Rsa1]));
    let authz = AuthzStub::start(AuthzMode::allow());
    let upstream = Upstream::start();
    let plugin = json!({
        "jwt_providers": {"corp": {
            "issuer": authgate_integration::plugin::ISSUER, "audiences": [AUDIENCE],
            "remote_jwks": {"cluster": "idp", "uri": "http://idp/jwks",
                            "timeout_ms": TIMEOUT_MS, "cache_duration_s": 600},
            "subject_claims": {"email": "email"}}},
        "rules": [{"match": {"prefix": "/api/"}, "requires_any": ["jwt:corp"]},
                  {"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp"], "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": TIMEOUT_MS}
    });
    let config = EnvoyConfig::new(&plugin, upstream.port())
        .idp(idp.port())
        .cluster("authz", authz.port())
        .concurrency(2);
    let first = Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"));

    // Traffic from two client threads to whichever Envoy is current (generation, base URL).
    let current = Arc::new(Mutex::new((0u32, first.url(""))));
    let stop = Arc::new(AtomicBool::new(false));
    let valid = corp_token("alice");
    let bad = corrupt_signature(&valid);
    type Sent = (u32, &'static str, bool, Result<Reply, String>);
    let traffic: Vec<_> = (0..2)
        .map(|t| {
            let (current, stop, valid, bad) = (
                Arc::clone(&current),
                Arc::clone(&stop),
                valid.clone(),
                bad.clone(),
            );
            std::thread::spawn(move || {
                let mut sent: Vec<Sent> = Vec::new();
                let mut n = t;
                while !stop.load(Ordering::SeqCst) {
                    let (generation, base) = current
                        .lock()
                        .map(|c| c.clone())
                        .unwrap_or((u32::MAX, String::new()));
                    let route = if n % 2 == 0 { "/api/items" } else { "/v1/chat" };
                    let good = n % 3 != 0;
                    let token = if good { &valid } else { &bad };
                    let req = Req::get(format!("{base}{route}")).bearer(token);
                    let outcome = send_within(&req, jwks_bound());
                    if outcome.is_err() {
                        // The Envoy went away: do not spin on refused connections.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    sent.push((generation, route, good, outcome));
                    n += 1;
                }
                sent
            })
        })
        .collect();

    let served_200 = |generation: u32| {
        wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            let (g, base) = current.lock().map(|c| c.clone()).ok()?;
            (g == generation).then_some(())?;
            let api = Req::get(format!("{base}/api/items"))
                .bearer(&valid)
                .try_send();
            let v1 = Req::get(format!("{base}/v1/chat"))
                .bearer(&valid)
                .try_send();
            matches!((api, v1), (Ok(a), Ok(b)) if a.status == 200 && b.status == 200).then_some(())
        })
    };
    let mut checks = Checks::new();
    checks.check(
        "first Envoy serves both routes",
        served_200(0).ok_or("no 200 within 15 s".to_string()),
    );
    // Let the traffic run on the first Envoy a while (it is mid-run when it goes).
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        (first.stat("authgate.allowed") >= 20).then_some(())
    });
    let stopped_at = Instant::now();
    let (second, first_log) = first
        .restart()
        .unwrap_or_else(|e| panic!("restarting envoy: {e}"));
    eprintln!(
        "restarted in {:?} (old listener gone, new one on :{})",
        stopped_at.elapsed(),
        second.port()
    );
    if let Ok(mut c) = current.lock() {
        *c = (1, second.url(""));
    }
    checks.check(
        "the restarted Envoy serves both routes (same JWKS server and authorization service)",
        served_200(1).ok_or("no 200 within 15 s".to_string()),
    );
    // Some more traffic on the new one, then stop.
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        (second.stat("authgate.allowed") >= 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<Sent> = traffic
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();

    let mut transport_errors_old = 0;
    let mut by_outcome = std::collections::BTreeMap::<String, usize>::new();
    let mut first_200_on_new = std::collections::BTreeMap::<&str, usize>::new();
    for (i, (generation, route, good, outcome)) in sent.iter().enumerate() {
        let label = format!(
            "gen {generation} {route} {}",
            if *good { "valid" } else { "bad" }
        );
        match outcome {
            Err(e) if *generation == 0 && e.starts_with("no reply") => {
                // A request to the killed Envoy: cut or refused (it is gone), never a wrong answer.
                transport_errors_old += 1;
            }
            Err(e) => checks.check(&format!("{label} (request {i})"), Err(e.clone())),
            Ok(reply) => {
                *by_outcome
                    .entry(format!("{label} -> {}", reply.status))
                    .or_default() += 1;
                let check = if !*good {
                    not_admitted(reply).and_then(|()| expect::invalid_token(reply))
                } else if *generation == 0 {
                    expect::allowed(reply)
                } else if reply.status == 200 {
                    first_200_on_new.entry(route).or_insert(i);
                    expect::allowed(reply)
                } else if first_200_on_new.contains_key(route) {
                    Err(format!("after the first 200 on the new Envoy: {reply}"))
                } else {
                    // The new Envoy's first requests may find no keys yet.
                    jwks_unavailable(reply)
                };
                checks.check(&format!("{label} (request {i})"), check);
            }
        }
    }
    eprintln!(
        "restart traffic: {} requests, {transport_errors_old} cut or refused by the killed Envoy, \
         outcomes {by_outcome:?}",
        sent.len()
    );
    checks.check(
        "traffic reached the new Envoy",
        sent.iter()
            .any(|(g, _, good, o)| *g == 1 && *good && matches!(o, Ok(r) if r.status == 200))
            .then_some(())
            .ok_or("no 200 from the new Envoy in the traffic".to_string()),
    );
    for (which, log) in [("first", first_log), ("restarted", second.log())] {
        checks.check(
            &format!("the {which} Envoy fetched the keys from the same JWKS server"),
            log.contains("fetched 1 keys for provider corp")
                .then_some(())
                .ok_or("no \"fetched 1 keys\" log line".to_string()),
        );
    }
    checks.finish();
}
