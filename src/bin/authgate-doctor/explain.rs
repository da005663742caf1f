//! `explain TOKEN`: decodes a token without trusting it, then runs the filter's own checks and
//! decision on it, saying which check passes or fails and why.

use std::time::{SystemTime, UNIX_EPOCH};

use authgate::core::config::Config;
use authgate::core::engine::{self, Context, Effects, State, Step};
use authgate::core::jwt;
use authgate::core::jwt::jwks::KeySet;
use authgate::core::jwt::provider::{JwksSource, Provider};
use authgate::core::metrics::Recorded;
use authgate::core::policy::backoff::MemoryStore;
use authgate::core::request::Request;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{load_config, option, read_file, Outcome};

pub fn run(args: &[String]) -> Outcome {
    let Some(token) = args.first().filter(|t| !t.starts_with("--")) else {
        return Outcome::Usage("explain needs a token".to_string());
    };
    let Some(config_path) = option(args, "--config") else {
        return Outcome::Usage("explain needs --config CONFIG.json".to_string());
    };
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    let now_s = match option(args, "--now") {
        Some(text) => match text.parse::<i64>() {
            Ok(now) => now,
            Err(_) => return Outcome::Usage("--now takes unix seconds".to_string()),
        },
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    };
    let fingerprint = hex::encode(&Sha256::digest(token.as_bytes())[..6]);
    println!("credential {fingerprint} ({} bytes)", token.len());

    let mut state = State::new(&config);
    match jwt::inspect(token) {
        Ok(inspected) => {
            describe_claims(token, now_s);
            let issuer = inspected.claimed_issuer().unwrap_or_default().to_string();
            match config.providers.iter().position(|p| p.issuer == issuer) {
                Some(index) => {
                    let provider = &config.providers[index];
                    println!("✓ iss matches provider {:?}", provider.name);
                    match keys_for(provider, option(args, "--jwks")) {
                        Ok(keys) => {
                            check_token(inspected, provider, &keys, now_s);
                            if let Some(slot) = state.keys.get_mut(index) {
                                slot.install(keys, 0, None);
                            }
                        }
                        Err(why) => println!("? keys: {why}"),
                    }
                }
                None => {
                    let known: Vec<&str> =
                        config.providers.iter().map(|p| p.issuer.as_str()).collect();
                    println!("✗ no provider has issuer {issuer:?} (configured: {known:?})");
                }
            }
        }
        Err(error) => {
            println!("· not a usable JWT ({error}); judged as whatever else the route accepts")
        }
    }
    decide(&config, &mut state, token, args, now_s)
}

/// The unverified header and the claims that matter, with times relative to now.
fn describe_claims(token: &str, now_s: i64) {
    let part = |i: usize| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(token.split('.').nth(i)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = part(0).unwrap_or_default();
    let claims = part(1).unwrap_or_default();
    println!(
        "  header: alg={} kid={}",
        header["alg"],
        header.get("kid").unwrap_or(&Value::Null)
    );
    for name in ["iss", "sub", "aud", "email", "scope", "scp"] {
        if let Some(value) = claims.get(name) {
            println!("  {name}: {value}");
        }
    }
    for name in ["exp", "nbf", "iat"] {
        if let Some(at) = claims.get(name).and_then(Value::as_i64) {
            let delta = at - now_s;
            let when = if delta >= 0 {
                format!("in {delta} s")
            } else {
                format!("{} s ago", -delta)
            };
            println!("  {name}: {at} ({when})");
        }
    }
}

/// The provider's keys: `--jwks` (file or URL), else its local JWKS, else its remote URI.
fn keys_for(provider: &Provider, jwks: Option<&str>) -> Result<KeySet, String> {
    let body = match (jwks, &provider.jwks) {
        (Some(source), _) if source.starts_with("http://") || source.starts_with("https://") => {
            fetch(source)?
        }
        (Some(path), _) => read_file(path)?,
        (None, JwksSource::Local(keys)) => return Ok(keys.clone()),
        (None, JwksSource::Remote(remote)) => {
            let scheme = if remote.authority.ends_with(":80") {
                "http"
            } else {
                "https"
            };
            fetch(&format!("{scheme}://{}{}", remote.authority, remote.path))?
        }
    };
    KeySet::parse(&body).map_err(|e| format!("JWKS unusable: {e}"))
}

fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let response = ureq::get(url)
        .timeout(std::time::Duration::from_secs(5))
        .call()
        .map_err(|e| format!("fetching {url}: {e} (pass --jwks FILE)"))?;
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader().take(4 << 20), &mut body)
        .map_err(|e| format!("reading {url}: {e}"))?;
    Ok(body)
}

use std::io::Read as _;

fn check_token(inspected: jwt::Inspected<'_>, provider: &Provider, keys: &KeySet, now_s: i64) {
    match inspected.kid() {
        Some(kid) if keys.has_kid(kid) => println!("✓ kid {kid:?} is in the key set"),
        Some(kid) => println!("✗ kid {kid:?} is not in the key set (a rotation not fetched yet?)"),
        None => println!("· no kid: up to 4 keys of the right type are tried"),
    }
    match jwt::verify(inspected, provider, keys, now_s) {
        Ok(_) => println!(
            "✓ signature, iss, aud, exp, nbf and iat all pass (leeway {} s)",
            provider.clock_skew_s
        ),
        Err(error) => println!("✗ {error}"),
    }
}

/// Runs the filter's decision for the request `--method --path --host` carrying the token.
fn decide(config: &Config, state: &mut State, token: &str, args: &[String], now_s: i64) -> Outcome {
    let method = option(args, "--method")
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let path = option(args, "--path").unwrap_or("/");
    let host = option(args, "--host").unwrap_or("localhost");
    let bearer = format!("Bearer {token}");
    // An MCP request: its JSON-RPC body (`--body JSON`, or `--body @FILE`).
    let body = match option(args, "--body") {
        Some(file) if file.starts_with('@') => match std::fs::read(&file[1..]) {
            Ok(body) => Some(body),
            Err(e) => return Outcome::Usage(format!("--body {file}: {e}")),
        },
        Some(text) => Some(text.as_bytes().to_vec()),
        None => None,
    };
    let headers = [
        (":method", method.as_str()),
        (":path", path),
        (":authority", host),
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let request = Request::new(&headers)
        .with_source_address(Some("127.0.0.1:1"))
        .with_end_of_stream(body.is_none())
        .with_body(body.as_deref());
    if let Some(index) = authgate::core::policy::rules::matching_rule(&config.rules, &request) {
        println!("  rule: rules[{index}] matches {method} {host}{path}");
    }
    let ctx = Context {
        now_ms: u64::try_from(now_s).unwrap_or(0).saturating_mul(1000),
        may_wait: false,
        log: true,
    };
    let effects = Effects {
        metrics: &mut Recorded::default(),
        shared: &mut MemoryStore::default(),
        random: &mut authgate::core::random::OsRandom,
    };
    let decision = engine::decide(config, state, &request, ctx, effects);
    println!("  decision: {}", decision.log);
    match decision.step {
        Step::Continue { add, .. } => {
            println!("✓ allowed; headers sent upstream:");
            for (name, value) in add.iter() {
                println!("    {name}: {value}");
            }
            Outcome::Fine
        }
        Step::CallAuthz(_) => {
            println!("✓ local checks pass; the enterprise authorization service decides the rest");
            Outcome::Fine
        }
        Step::Respond(reply) => {
            println!("✗ answered {}: {}", reply.status, reply.body);
            // The challenge tells a client (an MCP client among them) where to get a token.
            for (name, value) in &reply.headers {
                if name == "www-authenticate" {
                    println!("  WWW-Authenticate: {value}");
                }
            }
            Outcome::NotFine
        }
        Step::SessionReply(reply) => {
            println!(
                "✗ session expired: answered {} shaped for the client",
                reply.status
            );
            Outcome::NotFine
        }
        Step::WaitForKeys { .. } => {
            println!("✗ the provider's keys are not available");
            Outcome::NotFine
        }
        Step::SignIn(_) | Step::Renew(_) => {
            println!("✗ a sign-in callback, answered by the gateway itself");
            Outcome::NotFine
        }
        Step::ReadBody => {
            println!("? an MCP rule decides on the JSON-RPC body: pass it with --body JSON");
            Outcome::NotFine
        }
    }
}
