//! `authgate-doctor info --admin URL`: what a running gateway's stats say, read from Envoy's
//! admin API twice, `--interval` seconds apart (default 1): cache hit rates and sizes, denials
//! per second by reason (expected client errors apart from faults), each remote provider's key
//! age, and the authorization service's latency percentiles.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{option, Outcome};

const PREFIX: &str = "wasmcustom.authgate.";

/// Denials a client caused (a missing or bad credential, a policy, a path): expected traffic.
const CLIENT_DENIALS: [&str; 8] = [
    "denied.missing_credential",
    "denied.invalid_token",
    "denied.forbidden",
    "denied.insufficient_scope",
    "denied.no_rule",
    "denied.bad_request",
    "rate_limited",
    "session_expired",
];

/// Answers that mean something is wrong on the gateway's side.
const FAULTS: [&str; 5] = [
    "denied.authorization_unavailable",
    "jwks_unavailable",
    "overloaded",
    "authz_error",
    "authz_timeout",
];

struct Sample {
    values: BTreeMap<String, u64>,
    /// Histogram name (without the prefix) → (quantile, cumulative value).
    quantiles: BTreeMap<String, Vec<(f64, f64)>>,
}

pub fn run(args: &[String]) -> Outcome {
    let Some(admin) = option(args, "--admin") else {
        return Outcome::Usage(
            "info needs --admin http://HOST:PORT (Envoy's admin address)".into(),
        );
    };
    let interval = match option(args, "--interval").map(str::parse::<f64>) {
        None => 1.0,
        Some(Ok(s)) if (0.1..=60.0).contains(&s) => s,
        Some(_) => return Outcome::Usage("--interval takes seconds between 0.1 and 60".into()),
    };
    let admin = admin.trim_end_matches('/');
    let first = match sample(admin) {
        Ok(sample) => sample,
        Err(error) => {
            println!("✗ cannot read {admin}/stats: {error}");
            return Outcome::NotFine;
        }
    };
    std::thread::sleep(Duration::from_secs_f64(interval));
    let second = match sample(admin) {
        Ok(sample) => sample,
        Err(error) => {
            println!("✗ cannot read {admin}/stats: {error}");
            return Outcome::NotFine;
        }
    };
    if !second.values.keys().any(|k| k == "allowed") {
        println!("✗ {admin} shows no authgate stats: is authgate loaded in this Envoy?");
        return Outcome::NotFine;
    }
    report(&first, &second, interval);
    Outcome::Fine
}

fn sample(admin: &str) -> Result<Sample, String> {
    let url = format!("{admin}/stats?format=json&filter=^wasmcustom\\.authgate\\.");
    let text = ureq::get(&url)
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let mut values = BTreeMap::new();
    let mut quantiles = BTreeMap::new();
    for stat in body["stats"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) {
            if let Some(name) = name.strip_prefix(PREFIX) {
                values.insert(name.to_string(), value);
            }
        }
        let histograms = &stat["histograms"];
        let supported: Vec<f64> = histograms["supported_quantiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        for computed in histograms["computed_quantiles"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(name) = computed["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(PREFIX))
            else {
                continue;
            };
            let cumulative: Vec<(f64, f64)> = computed["values"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(&supported)
                .filter_map(|(v, q)| Some((*q, v["cumulative"].as_f64()?)))
                .collect();
            quantiles.insert(name.to_string(), cumulative);
        }
    }
    Ok(Sample { values, quantiles })
}

fn report(first: &Sample, second: &Sample, interval: f64) {
    let now = |name: &str| second.values.get(name).copied().unwrap_or(0);
    let rate = |name: &str| {
        let before = first.values.get(name).copied().unwrap_or(0);
        now(name).saturating_sub(before) as f64 / interval
    };
    let hit_rate = |hit: &str, miss: &str| {
        let (h, m) = (now(hit), now(miss));
        if h + m == 0 {
            "no lookups yet".to_string()
        } else {
            format!(
                "{:.1}% of {} lookups",
                100.0 * h as f64 / (h + m) as f64,
                h + m
            )
        }
    };
    println!(
        "requests: {} allowed, {} denied in all",
        now("allowed"),
        now("denied")
    );
    println!(
        "  now: {:.1} allowed/s, {:.1} denied/s (over {interval} s)",
        rate("allowed"),
        rate("denied")
    );
    println!(
        "token cache: {} hit; {} tokens held; {} evicted for room",
        hit_rate("jwt_cache_hit", "jwt_cache_miss"),
        now("jwt_cache_size"),
        now("jwt_cache_evictions")
    );
    println!(
        "decision cache: {} hit; {} decisions held; {} evicted for room, {} dropped on upstream refusals",
        hit_rate("authz_cache_hit", "authz_cache_miss"),
        now("authz_cache_size"),
        now("authz_cache_evictions"),
        now("authz_evicted_upstream")
    );
    println!("denials by reason (total, per second now):");
    println!("  expected (the client's credential, policy or path):");
    for name in CLIENT_DENIALS {
        println!("    {name:<36} {:>8} {:>8.1}/s", now(name), rate(name));
    }
    println!("  faults (the gateway, its keys or the authorization service):");
    for name in FAULTS {
        println!("    {name:<36} {:>8} {:>8.1}/s", now(name), rate(name));
    }
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let fetched: Vec<(&str, u64)> = second
        .values
        .iter()
        .filter_map(|(name, at)| Some((name.strip_prefix("jwks_fetched_at_s.")?, *at)))
        .collect();
    if fetched.is_empty() {
        println!("keys: no remote JWKS provider");
    }
    for (provider, at) in fetched {
        if at == 0 {
            println!("keys: provider {provider}: not fetched yet");
        } else {
            println!(
                "keys: provider {provider}: fetched {} s ago",
                unix_now.saturating_sub(at)
            );
        }
    }
    match second.quantiles.get("authz_latency_ms") {
        Some(values) if values.iter().any(|(_, v)| !v.is_nan()) => {
            let pick = |q: f64| {
                values
                    .iter()
                    .find(|(quantile, _)| (*quantile - q).abs() < 1e-9)
                    .map_or("-".to_string(), |(_, v)| format!("{v:.1} ms"))
            };
            println!(
                "authorization service latency: p50 {}, p90 {}, p99 {}, max {}",
                pick(50.0),
                pick(90.0),
                pick(99.0),
                pick(100.0)
            );
        }
        _ => println!("authorization service latency: no calls recorded yet"),
    }
}
