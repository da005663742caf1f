//! `probe-authz URL`: sends the authorization service a sample request in the authgate dialect
//! and checks that its answer has the shape authgate reads, and how long it took.

use std::io::Read as _;
use std::time::{Duration, Instant};

use authgate::core::authz::Answer;
use authgate::core::config::Config;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{option, Outcome};

/// Above this, authgate's default 5 s timeout is not far off: worth a warning.
const SLOW_MS: u128 = 1_000;

pub fn run(args: &[String]) -> Outcome {
    let Some(url) = args.first().filter(|u| u.starts_with("http")) else {
        return Outcome::Usage("probe-authz needs the service's http(s) URL".to_string());
    };
    let timeout_ms = match option(args, "--timeout-ms").map(str::parse::<u64>) {
        None => 5_000,
        Some(Ok(ms)) => ms,
        Some(Err(_)) => return Outcome::Usage("--timeout-ms takes milliseconds".to_string()),
    };
    // Only the parser is needed; the cluster name does not matter here.
    let Some(enterprise) =
        Config::parse(br#"{"enterprise": {"cluster": "probe", "authority": "probe"}}"#)
            .ok()
            .and_then(|c| c.enterprise)
    else {
        return Outcome::Usage("internal: no enterprise parser".to_string());
    };
    let body = json!({
        "user_email": "doctor@authgate.invalid",
        "client_ip": "192.0.2.1",
        "subject": {"kind": "jwt", "id": "authgate-doctor", "issuer": "https://authgate.invalid",
                    "token_sha256": hex::encode(Sha256::digest(b"authgate-doctor-probe")),
                    "roles": [], "scopes": []},
        "request": {"method": "GET", "host": "authgate.invalid", "path": "/authgate-doctor/probe"}
    });
    let mut request = ureq::post(url)
        .timeout(Duration::from_millis(timeout_ms))
        .set("content-type", "application/json")
        .set("x-request-id", "authgate-doctor-probe");
    if let Some(authority) = option(args, "--authority") {
        request = request.set("host", authority);
    }
    let started = Instant::now();
    let (status, response) = match request.send_string(&body.to_string()) {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(ureq::Error::Transport(error)) => {
            println!("✗ no answer: {error} — authgate would apply failure_mode");
            return Outcome::NotFine;
        }
    };
    let mut bytes = Vec::new();
    let limit = enterprise.max_response_bytes as u64 + 1;
    if response
        .into_reader()
        .take(limit)
        .read_to_end(&mut bytes)
        .is_err()
    {
        println!("✗ HTTP {status}: the body could not be read");
        return Outcome::NotFine;
    }
    let elapsed = started.elapsed().as_millis();
    let body = ((bytes.len() as u64) < limit).then_some(bytes.as_slice());
    match enterprise.read_answer(status, body) {
        Ok(answer) => {
            let what = match answer {
                Answer::Allow {
                    headers,
                    ttl_s,
                    dropped_headers,
                } => format!(
                    "allow (cache_ttl_s {}, {} header(s) for the upstream, {} dropped: \
                     not in enterprise.upstream_headers)",
                    ttl_s.map_or("default".to_string(), |t| t.to_string()),
                    headers.len(),
                    dropped_headers
                ),
                Answer::Deny { reason } => format!("deny: {reason}"),
                Answer::SessionExpired { reauth_url } => format!(
                    "session expired, reauth_url {}",
                    reauth_url
                        .as_deref()
                        .unwrap_or("(none: session.reauth_url is used)")
                ),
            };
            println!("✓ HTTP {status} in {elapsed} ms: {what}");
            if elapsed > SLOW_MS {
                println!("! slow: {elapsed} ms per decision (authgate caches, but misses wait this long)");
            }
            Outcome::Fine
        }
        Err(error) => {
            println!(
                "✗ the answer is unusable: {} (in {elapsed} ms) — authgate would apply failure_mode",
                error.describe()
            );
            Outcome::NotFine
        }
    }
}
