//! `make soak`: a long run of mixed traffic through the built filter in a real Envoy (two
//! workers), reporting requests, outcomes, unexpected statuses, transport errors and Envoy's RSS
//! about every 30 s, and exiting non-zero when any request got an unexpected status or no answer,
//! when Envoy died, or when its RSS grew beyond a stated bound after warm-up.
//!
//! Everything runs on 127.0.0.1 and is started and stopped here: the echo upstream, a JWKS server
//! (rotated a few times during the run), the reference authorization service (SQLite in a temp
//! directory) for the enterprise routes, and Envoy.
//!
//! Environment: `SOAK_SECONDS` (default 600), `SOAK_THREADS` (client threads, default 6),
//! `SOAK_REPORT_SECONDS` (default 30); `ENVOY_BIN` and `AUTHGATE_WASM` as for the tests.
//!
//! Traffic (each request's expected status is exact):
//! - `/api/…` (JWT or API key): a valid JWT (200), a forged JWT (401 `invalid_token`), an expired
//!   JWT (401 `session_expired`), no credential (401 `unauthenticated`), a valid API key (200), an
//!   unknown API key (401 `invalid_token`);
//! - `/v1/…` (enterprise, decided by the reference service): a valid JWT (200), an active agent
//!   token (200), a revoked agent token (403 `forbidden`);
//! - `/public` (200) and the health path (200).
//!
//! Every request that fails a credential check comes from an address of its own, so the
//! failed-auth backoff (configured, and filling its table over the run) never blocks one: a 429
//! is unexpected. Valid requests come from a few fixed addresses that never fail.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use authgate_integration::plugin::{api_key_entry, corp_claims, ISSUER};
use authgate_integration::tokens::{now, swap_payload};
use authgate_integration::{
    jwks, AuthzService, Envoy, EnvoyConfig, FixtureKey, JwksStub, Reply, Req, TokenBuilder,
    Upstream,
};
use serde_json::{json, Value};

const API_KEY: &str = "ek_live_soak_valid_key_000001";
/// The keys the IdP rotates through (rsa-3 stays the "attacker's" key, in no JWKS).
const ROTATION: [FixtureKey; 4] = [
    FixtureKey::Rsa1,
    FixtureKey::Rsa2,
    FixtureKey::Ec1,
    FixtureKey::Ed1,
];
/// Valid JWTs per signing key (the token caches hold them all: steady state after warm-up).
const VALID_TOKENS: usize = 200;
/// RSS may grow by this much after warm-up. After warm-up every structure that grows with
/// traffic is at or near its fixed size: the token caches hold the few hundred tokens in use
/// (< 1 MiB; capacity 10,000 per worker), the decision caches the few hundred (credential, path)
/// pairs in use, and the backoff table (16,384 slots) fills with the failing addresses, each used
/// once: at most 16,384 × (28-byte record + ~30-byte key + the shared-data map's node) < 4 MiB.
/// The rest is allowance for allocator fragmentation, Wasm memory grown in 64 KiB pages (never
/// returned), and V8 and Envoy's own buffers: 12 MiB. A leak of even 200 bytes per request
/// exceeds it within a 10-minute run (several hundred thousand requests).
const RSS_GROWTH_BOUND: u64 = 16 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={text} is not a number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ValidJwt,
    ForgedJwt,
    ExpiredJwt,
    NoCredential,
    ValidApiKey,
    UnknownApiKey,
    EnterpriseJwt,
    AgentToken,
    RevokedAgentToken,
    Public,
    Health,
}

/// The mix, in a fixed order that every client thread walks (from its own offset).
const MIX: [Kind; 16] = [
    Kind::ValidJwt,
    Kind::ForgedJwt,
    Kind::ValidJwt,
    Kind::EnterpriseJwt,
    Kind::ValidApiKey,
    Kind::NoCredential,
    Kind::AgentToken,
    Kind::ExpiredJwt,
    Kind::ValidJwt,
    Kind::UnknownApiKey,
    Kind::EnterpriseJwt,
    Kind::ForgedJwt,
    Kind::RevokedAgentToken,
    Kind::Public,
    Kind::ValidJwt,
    Kind::Health,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ValidJwt => "valid_jwt",
            Kind::ForgedJwt => "forged_jwt",
            Kind::ExpiredJwt => "expired_jwt",
            Kind::NoCredential => "no_credential",
            Kind::ValidApiKey => "api_key",
            Kind::UnknownApiKey => "unknown_api_key",
            Kind::EnterpriseJwt => "enterprise_jwt",
            Kind::AgentToken => "agent_token",
            Kind::RevokedAgentToken => "revoked_agent",
            Kind::Public => "public",
            Kind::Health => "health",
        }
    }

    /// The status and JSON `error` it must get (`None`: a 200 from the upstream or the filter).
    fn expected(self) -> (u16, Option<&'static str>) {
        match self {
            Kind::ValidJwt
            | Kind::ValidApiKey
            | Kind::EnterpriseJwt
            | Kind::AgentToken
            | Kind::Public
            | Kind::Health => (200, None),
            Kind::ForgedJwt | Kind::UnknownApiKey => (401, Some("invalid_token")),
            Kind::ExpiredJwt => (401, Some("session_expired")),
            Kind::NoCredential => (401, Some("unauthenticated")),
            Kind::RevokedAgentToken => (403, Some("forbidden")),
        }
    }

    /// Whether it fails a credential check (then it comes from an address of its own).
    fn fails_a_check(self) -> bool {
        matches!(
            self,
            Kind::ForgedJwt | Kind::UnknownApiKey | Kind::RevokedAgentToken
        )
    }
}

/// Tokens signed with the current key.
struct Pool {
    kid: &'static str,
    valid: Vec<String>,
    expired: Vec<String>,
}

impl Pool {
    fn sign(key: FixtureKey) -> Pool {
        let valid = (0..VALID_TOKENS)
            .map(|i| {
                TokenBuilder::new(key)
                    .claims(corp_claims(&format!("user-{i}")))
                    .claim("iss", ISSUER)
                    .sign()
            })
            .collect();
        let expired = (0..10)
            .map(|i| {
                let mut claims = corp_claims(&format!("lapsed-{i}"));
                claims["exp"] = json!(now() - 3600);
                claims["iat"] = json!(now() - 7200);
                TokenBuilder::new(key).claims(claims).sign()
            })
            .collect();
        Pool {
            kid: key.kid(),
            valid,
            expired,
        }
    }
}

struct Shared {
    pool: RwLock<Arc<Pool>>,
    agent: String,
    revoked_agent: String,
    base: String,
    /// Failing requests each take the next address.
    next_address: AtomicU64,
    stop: AtomicBool,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    per_kind: BTreeMap<Kind, u64>,
    unexpected: u64,
    errors: u64,
    /// The first few unexpected replies or errors, for the report.
    examples: Vec<String>,
}

impl Tally {
    fn note(&mut self, example: String) {
        if self.examples.len() < 10 {
            self.examples.push(example);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn current_pool(shared: &Shared) -> Arc<Pool> {
    Arc::clone(&shared.pool.read().unwrap_or_else(|p| p.into_inner()))
}

/// The request for `kind`, the n-th of its thread.
fn request(shared: &Shared, kind: Kind, n: u64, thread: usize) -> Req {
    let pool = current_pool(shared);
    let pick = |list: &Vec<String>| list[(n as usize) % list.len()].clone();
    let address = if kind.fails_a_check() {
        let a = shared.next_address.fetch_add(1, Ordering::SeqCst) + 1;
        format!("10.{}.{}.{}", (a >> 16) & 255, (a >> 8) & 255, a & 255)
    } else {
        format!("192.0.2.{}", thread + 1)
    };
    let url = |path: &str| format!("{}{path}", shared.base);
    let req = match kind {
        Kind::ValidJwt => Req::get(url("/api/items")).bearer(&pick(&pool.valid)),
        Kind::ForgedJwt => {
            let mut claims = corp_claims(&format!("forged-{thread}-{n}"));
            claims["iss"] = json!(ISSUER);
            Req::get(url("/api/items")).bearer(&swap_payload(&pick(&pool.valid), &claims))
        }
        Kind::ExpiredJwt => Req::get(url("/api/items")).bearer(&pick(&pool.expired)),
        Kind::NoCredential => Req::get(url("/api/items")),
        Kind::ValidApiKey => Req::get(url("/api/deploy")).header("x-api-key", API_KEY),
        Kind::UnknownApiKey => {
            Req::get(url("/api/deploy")).header("x-api-key", &format!("ek_live_guess_{thread}_{n}"))
        }
        Kind::EnterpriseJwt => {
            Req::post(url(&format!("/v1/chat/{}", n % 5))).bearer(&pick(&pool.valid))
        }
        Kind::AgentToken => Req::post(url("/v1/chat/completions")).bearer(&shared.agent),
        Kind::RevokedAgentToken => {
            Req::post(url("/v1/chat/completions")).bearer(&shared.revoked_agent)
        }
        Kind::Public => Req::get(url("/public")),
        Kind::Health => Req::get(url("/health")),
    };
    req.header("x-forwarded-for", &address)
        .timeout(Duration::from_secs(10))
}

/// Whether `reply` is what `kind` must get.
fn as_expected(kind: Kind, reply: &Reply) -> bool {
    let (status, error) = kind.expected();
    if reply.status != status {
        return false;
    }
    match error {
        Some(error) => reply.json_str("error").as_deref() == Some(error),
        None if matches!(kind, Kind::Public | Kind::Health) => true,
        // Reached the upstream (the echo's JSON shape).
        None => reply.is_from_upstream(),
    }
}

fn client(shared: Arc<Shared>, thread: usize) {
    let mut n: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let kind = MIX[(n as usize + thread * 5) % MIX.len()];
        let req = request(&shared, kind, n, thread);
        let outcome = req.try_send();
        let mut tally = lock(&shared.tally);
        tally.requests += 1;
        *tally.per_kind.entry(kind).or_default() += 1;
        match outcome {
            Ok(reply) if as_expected(kind, &reply) => {}
            Ok(reply) => {
                tally.unexpected += 1;
                let body: String = reply.body.chars().take(200).collect();
                tally.note(format!(
                    "{}: expected {:?}, got {} {body}",
                    kind.name(),
                    kind.expected(),
                    reply.status
                ));
            }
            Err(e) => {
                tally.errors += 1;
                tally.note(format!("{}: no reply: {e}", kind.name()));
            }
        }
        drop(tally);
        n += 1;
    }
}

fn plugin() -> Value {
    json!({
        "jwt_providers": {"corp": {
            "issuer": ISSUER, "audiences": ["gateway"],
            "remote_jwks": {"cluster": "idp", "uri": "http://idp/jwks", "timeout_ms": 1000,
                            "cache_duration_s": 5},
            "subject_claims": {"email": "email", "roles": "realm_access.roles", "scopes": "scope"}
        }},
        "api_keys": {"keys": [api_key_entry("ci", API_KEY, "svc:ci", &["deploy"])]},
        "opaque_tokens": "enterprise",
        "rules": [
            {"match": {"path": "/public"}, "public": true},
            {"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp", "opaque_token"],
             "enterprise": true},
            {"match": {"prefix": "/api/"}, "requires_any": ["jwt:corp", "api_key"]}
        ],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000,
                       "upstream_headers": ["x-auth-email", "x-auth-authz-subject"],
                       "cache": {"allow_ttl_s": 30, "deny_ttl_s": 5}},
        "failed_auth_backoff": {"after_failures": 5, "base_s": 10, "max_s": 60},
        "client_ip": {"from": "x-forwarded-for"},
        "health_path": "/health"
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Publishes `next` beside the current key, waits until Envoy has fetched it, switches the
/// clients to tokens signed with it, then retires the old key. Returns a note for the report.
fn rotate(shared: &Shared, idp: &JwksStub, envoy: &Envoy, from: FixtureKey, next: FixtureKey) {
    let fetched = envoy.stat("authgate.jwks_fetch_success");
    idp.set_jwks(jwks(&[from, next]));
    // The refresh is every 5 s; then each worker adopts the set within a 100 ms tick.
    let seen = envoy.wait_stat(
        "authgate.jwks_fetch_success",
        fetched + 1,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pool = Arc::new(Pool::sign(next));
    *shared.pool.write().unwrap_or_else(|p| p.into_inner()) = pool;
    // Requests already under way with old tokens finish long before the next refresh.
    std::thread::sleep(Duration::from_secs(1));
    idp.set_jwks(jwks(&[next]));
    println!(
        "  rotated the JWKS: {} -> {} ({})",
        from.kid(),
        next.kid(),
        match seen {
            Ok(_) => "fetched".to_string(),
            Err(e) => e,
        }
    );
}

fn main() -> ExitCode {
    let seconds = env_u64("SOAK_SECONDS", 600);
    let threads = env_u64("SOAK_THREADS", 6).max(1) as usize;
    let report_every = Duration::from_secs(env_u64("SOAK_REPORT_SECONDS", 30).max(1));
    let duration = Duration::from_secs(seconds);
    // RSS is measured against the level reached after warm-up.
    let warm_up = Duration::from_secs((seconds / 4).clamp(5, 60));

    let dir = tempfile::Builder::new()
        .prefix("authgate-soak-")
        .tempdir()
        .unwrap_or_else(|e| fail_setup(&format!("temp dir: {e}")));
    let upstream = Upstream::start();
    let idp = JwksStub::start(jwks(&[ROTATION[0]]));
    let authz = AuthzService::start(&dir.path().join("authz.sqlite"));
    let (agent, _) = authz.create_token("agent@example.com", 86_400);
    let (revoked_agent, revoked_sha) = authz.create_token("revoked@example.com", 86_400);
    authz.revoke(&revoked_sha);
    let config = EnvoyConfig::new(&plugin(), upstream.port())
        .idp(idp.port())
        .cluster("authz", authz.port())
        .concurrency(2);
    let mut envoy = Envoy::start(&config).unwrap_or_else(|e| fail_setup(&format!("envoy: {e}")));
    if envoy
        .wait_stat("authgate.jwks_fetch_success", 1, Duration::from_secs(10))
        .is_err()
    {
        fail_setup("Envoy did not fetch the JWKS");
    }
    let shared = Arc::new(Shared {
        pool: RwLock::new(Arc::new(Pool::sign(ROTATION[0]))),
        agent,
        revoked_agent,
        base: envoy.url(""),
        next_address: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
    });
    println!(
        "authgate soak: {seconds} s, {threads} client threads, Envoy with 2 workers on :{}, \
         RSS bound +{:.0} MiB after a {} s warm-up",
        envoy.port(),
        mib(RSS_GROWTH_BOUND),
        warm_up.as_secs()
    );

    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || client(shared, t))
        })
        .collect();

    let started = Instant::now();
    let rotations: Vec<Duration> = (1..=3).map(|i| duration * i / 4).collect();
    let mut rotated = 0usize;
    let mut next_report = report_every;
    let mut baseline: Option<u64> = None;
    let mut peak_after_warm_up = 0u64;
    let mut last_requests = 0u64;
    let mut last_report = Instant::now();
    let mut envoy_died = false;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = started.elapsed();
        if !envoy.is_running() {
            envoy_died = true;
            println!("Envoy exited; log tail:\n{}", envoy.log_tail(40));
            break;
        }
        let rss = envoy.rss_bytes().unwrap_or(0);
        if elapsed >= warm_up {
            baseline.get_or_insert(rss);
            peak_after_warm_up = peak_after_warm_up.max(rss);
        }
        if rotated < rotations.len() && elapsed >= rotations[rotated] {
            let from = ROTATION[rotated % ROTATION.len()];
            let next = ROTATION[(rotated + 1) % ROTATION.len()];
            rotate(&shared, &idp, &envoy, from, next);
            rotated += 1;
        }
        // The last report comes after the loop.
        if elapsed >= next_report && elapsed < duration {
            next_report += report_every;
            let tally = lock(&shared.tally);
            let rate =
                (tally.requests - last_requests) as f64 / last_report.elapsed().as_secs_f64();
            last_requests = tally.requests;
            last_report = Instant::now();
            report(&tally, &envoy, elapsed, rate, rss, baseline);
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    for client in clients {
        let _ = client.join();
    }

    let tally = lock(&shared.tally);
    let rss = envoy.rss_bytes().unwrap_or(0);
    report(&tally, &envoy, started.elapsed(), 0.0, rss, baseline);
    let pool_kid = current_pool(&shared).kid;
    let mut failures = Vec::new();
    if tally.unexpected > 0 {
        failures.push(format!("{} unexpected statuses", tally.unexpected));
    }
    if tally.errors > 0 {
        failures.push(format!("{} requests without a reply", tally.errors));
    }
    if envoy_died {
        failures.push("Envoy exited".to_string());
    }
    let growth = baseline.map(|b| peak_after_warm_up.saturating_sub(b));
    match growth {
        Some(g) if g > RSS_GROWTH_BOUND => failures.push(format!(
            "RSS grew {:.1} MiB after warm-up (bound {:.0} MiB)",
            mib(g),
            mib(RSS_GROWTH_BOUND)
        )),
        None => failures.push("the run ended before warm-up".to_string()),
        _ => {}
    }
    println!(
        "summary: {} requests in {:.0} s, {} JWKS rotations (signing with {pool_kid} at the end), \
         RSS after warm-up {:.1} MiB -> peak {:.1} MiB (+{:.1} MiB, bound +{:.0} MiB)",
        tally.requests,
        started.elapsed().as_secs_f64(),
        rotated,
        mib(baseline.unwrap_or(0)),
        mib(peak_after_warm_up),
        mib(growth.unwrap_or(0)),
        mib(RSS_GROWTH_BOUND)
    );
    for example in &tally.examples {
        println!("  e.g. {example}");
    }
    drop(tally);
    // Stop everything: Envoy first, then the servers it calls.
    drop(envoy);
    drop(authz);
    drop(idp);
    drop(upstream);
    if failures.is_empty() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: {}", failures.join("; "));
        ExitCode::FAILURE
    }
}

fn report(tally: &Tally, envoy: &Envoy, elapsed: Duration, rate: f64, rss: u64, base: Option<u64>) {
    let stats = envoy.stats();
    let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
    let kinds: Vec<String> = tally
        .per_kind
        .iter()
        .map(|(kind, n)| format!("{} {n}", kind.name()))
        .collect();
    let rate = if rate > 0.0 {
        format!(" ({rate:.0}/s)")
    } else {
        String::new()
    };
    let growth = base.map_or("warming up".to_string(), |b| {
        format!(
            "{:+.1} MiB since warm-up",
            (rss as f64 - b as f64) / f64::from(1 << 20)
        )
    });
    println!(
        "[{:>4} s] requests {}{rate} | unexpected {} | errors {} | envoy RSS {:.1} MiB ({growth})",
        elapsed.as_secs(),
        tally.requests,
        tally.unexpected,
        tally.errors,
        mib(rss)
    );
    println!("         outcomes: {}", kinds.join(", "));
    println!(
        "         filter: allowed {} denied {} rate_limited {} jwt_cache hit/miss {}/{} \
         authz calls {} errors {} jwks fetches {} failed {}",
        stat("authgate.allowed"),
        stat("authgate.denied"),
        stat("authgate.rate_limited"),
        stat("authgate.jwt_cache_hit"),
        stat("authgate.jwt_cache_miss"),
        stat("authgate.authz_call"),
        stat("authgate.authz_error"),
        stat("authgate.jwks_fetch_success"),
        stat("authgate.jwks_fetch_failed")
    );
}

fn fail_setup(why: &str) -> ! {
    eprintln!("authgate soak: setup failed: {why}");
    std::process::exit(2)
}
