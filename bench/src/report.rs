//! Results: every measurement of every round, the medians and ratios computed from them, the
//! issue's targets checked against them, and the markdown table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::load::LoadReport;
use crate::variants::{JwtBaseline, Kind, Variant};

pub const MIB: f64 = 1024.0 * 1024.0;
/// authgate's token cache per VM (`src/core/token_cache.rs`), LRU.
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// One variant in one round.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VariantRun {
    pub round: usize,
    pub time_to_ready_s: Option<f64>,
    pub idle_rss_bytes: Option<u64>,
    pub load: Option<LoadReport>,
    /// Envoy's CPU time (all threads) while the load generator ran, warm-up included.
    pub envoy_cpu_s: Option<f64>,
    /// Wall time of the load generator's run, warm-up included.
    pub load_wall_s: Option<f64>,
    /// CPU time of the reference authorization service during the load (variants that use it).
    pub authz_service_cpu_s: Option<f64>,
    /// CPU time that other processes took during the load on Envoy's core (unpinned: on the
    /// whole machine), and on the core of the load generator and the authorization service.
    pub other_cpu_envoy_core_s: Option<f64>,
    pub other_cpu_client_core_s: Option<f64>,
    /// 1 + how many times this run was repeated because other work disturbed it.
    pub attempts: usize,
    /// Counters that changed during the load: authgate's (`authgate.*`) and
    /// `cluster.authz.upstream_rq_total`.
    pub counter_deltas: BTreeMap<String, u64>,
    /// How long the harness waited for the machine to be idle before this run, and whether it
    /// was (`None`: not checked). Other work on the machine skews a run.
    pub waited_for_quiet_s: f64,
    pub machine_was_quiet: Option<bool>,
    /// Why this run does not count; empty when it does.
    pub errors: Vec<String>,
}

impl VariantRun {
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.load.is_some()
    }

    /// How much other work could have changed this run, as a share of one core: other work on
    /// Envoy's core, and on the client core too unless Envoy was saturated (then the client
    /// side was not the limit).
    pub fn disturbance(&self) -> Option<f64> {
        let wall = self.load_wall_s?;
        let on_envoy = self.other_cpu_envoy_core_s? / wall;
        let envoy_saturated = self.envoy_cpu_s.is_some_and(|cpu| cpu / wall >= 0.9);
        let on_client = self.other_cpu_client_core_s.unwrap_or(0.0) / wall;
        Some(if envoy_saturated {
            on_envoy
        } else {
            on_envoy.max(on_client)
        })
    }

    fn rps(&self) -> Option<f64> {
        self.ok()
            .then(|| self.load.as_ref().map(|l| l.rps))
            .flatten()
    }

    fn counter(&self, name: &str) -> u64 {
        self.counter_deltas.get(name).copied().unwrap_or(0)
    }
}

/// Medians across rounds (successful runs only) and ratios to the baselines.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub ok_runs: usize,
    pub rps: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub ratio_to_direct: Option<f64>,
    pub ratio_to_noop_wasm: Option<f64>,
    /// `(baseline key, ratio)`.
    pub ratio_to_jwt_authn: Option<(String, f64)>,
    pub envoy_cpu_us_per_request: Option<f64>,
    pub envoy_busy_pct: Option<f64>,
    pub time_to_ready_s: Option<f64>,
    pub idle_rss_mib: Option<f64>,
    /// authgate's token cache hits / (hits + misses) during the load, in percent.
    pub jwt_cache_hit_pct: Option<f64>,
    /// Requests to the authorization service per request served (variants that use it).
    pub authz_calls_per_request: Option<f64>,
    pub authz_service_busy_pct: Option<f64>,
    /// Other processes' CPU during the load, in % of one core: on Envoy's core, on the other.
    pub other_work_envoy_core_pct: Option<f64>,
    pub other_work_client_core_pct: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VariantResult {
    pub key: String,
    pub label: String,
    pub credential: String,
    pub runs: Vec<VariantRun>,
    pub summary: Summary,
}

/// The 20k-distinct-token flood through authgate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Flood {
    pub tokens: u64,
    pub idle_rss_bytes: Option<u64>,
    pub after_rss_bytes: Option<u64>,
    pub load: Option<LoadReport>,
    pub jwt_cache_misses: u64,
    pub errors: Vec<String>,
}

impl Flood {
    pub fn growth_mib(&self) -> Option<f64> {
        let (idle, after) = (self.idle_rss_bytes?, self.after_rss_bytes?);
        Some((after as f64 - idle as f64) / MIB)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    /// `None` when it could not be measured.
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    pub date: String,
    pub smoke: bool,
    pub git: String,
    pub envoy: String,
    pub machine: String,
    pub pinned: bool,
    pub rounds: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub distinct_tokens_per_alg: usize,
    pub total_wall_s: f64,
    /// `/proc/loadavg` when the run started: other work skews the numbers.
    pub load_average_at_start: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub meta: Meta,
    pub authgate_wasm_bytes: Option<u64>,
    pub noop_wasm_bytes: Option<u64>,
    /// authgate's time to ready when Envoy is not pinned to one CPU (median of three starts).
    pub authgate_ready_on_all_cpus_s: Option<f64>,
    pub variants: Vec<VariantResult>,
    pub flood: Option<Flood>,
    pub targets: Vec<Target>,
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Summaries for every variant: medians of its own runs, and each ratio as the median of the
/// per-round ratios (a run is compared with the baseline's run of the same round).
pub fn summarize(
    variants: &[Variant],
    runs: &BTreeMap<&'static str, Vec<VariantRun>>,
) -> Vec<VariantResult> {
    let key_of = |kind: Kind| variants.iter().find(|v| v.kind == kind).map(|v| v.key);
    let ratio_to = |own: &[VariantRun], baseline: Option<&'static str>| -> Option<f64> {
        let baseline = runs.get(baseline?)?;
        let ratios = own
            .iter()
            .filter_map(|run| {
                let base = baseline.iter().find(|b| b.round == run.round)?.rps()?;
                Some(run.rps()? / base)
            })
            .collect();
        median(ratios)
    };
    variants
        .iter()
        .map(|variant| {
            let own = runs.get(variant.key).map(Vec::as_slice).unwrap_or_default();
            let ok: Vec<&VariantRun> = own.iter().filter(|r| r.ok()).collect();
            let loads: Vec<&LoadReport> = ok.iter().filter_map(|r| r.load.as_ref()).collect();
            let jwt_baseline = variant.jwt_baseline.map(|b| match b {
                JwtBaseline::Cached => Kind::JwtAuthnCached,
                JwtBaseline::Uncached => Kind::JwtAuthn,
            });
            let jwt_key = jwt_baseline.and_then(key_of);
            let hit_pct = |r: &&VariantRun| {
                let hits = r.counter("authgate.jwt_cache_hit") as f64;
                let misses = r.counter("authgate.jwt_cache_miss") as f64;
                (hits + misses > 0.0).then(|| 100.0 * hits / (hits + misses))
            };
            let summary = Summary {
                ok_runs: ok.len(),
                rps: median(loads.iter().map(|l| l.rps).collect()),
                p50_us: median(loads.iter().map(|l| l.p50_us as f64).collect()),
                p99_us: median(loads.iter().map(|l| l.p99_us as f64).collect()),
                ratio_to_direct: ratio_to(own, key_of(Kind::Direct)),
                ratio_to_noop_wasm: ratio_to(own, key_of(Kind::NoopWasm)),
                ratio_to_jwt_authn: jwt_key
                    .and_then(|key| Some((key.to_string(), ratio_to(own, Some(key))?))),
                envoy_cpu_us_per_request: median(
                    ok.iter()
                        .filter_map(|r| {
                            let load = r.load.as_ref()?;
                            let requests = (load.requests + load.warmup_requests) as f64;
                            Some(r.envoy_cpu_s? * 1e6 / requests)
                        })
                        .collect(),
                ),
                envoy_busy_pct: median(
                    ok.iter()
                        .filter_map(|r| Some(100.0 * r.envoy_cpu_s? / r.load_wall_s?))
                        .collect(),
                ),
                time_to_ready_s: median(own.iter().filter_map(|r| r.time_to_ready_s).collect()),
                idle_rss_mib: median(
                    own.iter()
                        .filter_map(|r| Some(r.idle_rss_bytes? as f64 / MIB))
                        .collect(),
                ),
                jwt_cache_hit_pct: variant
                    .is_authgate
                    .then(|| median(ok.iter().filter_map(hit_pct).collect()))
                    .flatten(),
                authz_calls_per_request: variant
                    .uses_authz()
                    .then(|| {
                        median(
                            ok.iter()
                                .filter_map(|r| {
                                    let load = r.load.as_ref()?;
                                    let served = (load.requests + load.warmup_requests) as f64;
                                    let calls = r.counter("cluster.authz.upstream_rq_total");
                                    Some(calls as f64 / served)
                                })
                                .collect(),
                        )
                    })
                    .flatten(),
                authz_service_busy_pct: median(
                    ok.iter()
                        .filter_map(|r| Some(100.0 * r.authz_service_cpu_s? / r.load_wall_s?))
                        .collect(),
                ),
                other_work_envoy_core_pct: median(
                    ok.iter()
                        .filter_map(|r| Some(100.0 * r.other_cpu_envoy_core_s? / r.load_wall_s?))
                        .collect(),
                ),
                other_work_client_core_pct: median(
                    ok.iter()
                        .filter_map(|r| Some(100.0 * r.other_cpu_client_core_s? / r.load_wall_s?))
                        .collect(),
                ),
            };
            VariantResult {
                key: variant.key.to_string(),
                label: variant.label.to_string(),
                credential: format!("{:?}", variant.credential),
                runs: own.to_vec(),
                summary,
            }
        })
        .collect()
}

/// The targets, each with what this run measured.
pub fn targets(
    results: &[VariantResult],
    flood: Option<&Flood>,
    wasm_bytes: Option<u64>,
    ready_on_all_cpus: Option<f64>,
) -> Vec<Target> {
    let rps = |key: &str| results.iter().find(|r| r.key == key)?.summary.rps;
    let per_round_ratio = |key: &str, baseline: &str| -> Option<f64> {
        let own = &results.iter().find(|r| r.key == key)?.runs;
        let base = &results.iter().find(|r| r.key == baseline)?.runs;
        median(
            own.iter()
                .filter_map(|run| {
                    let b = base.iter().find(|b| b.round == run.round)?;
                    Some(run.rps()? / b.rps()?)
                })
                .collect(),
        )
    };
    let ratio_target = |name: &str, key: &str, baseline: &str, at_least: f64| {
        let ratio = per_round_ratio(key, baseline);
        Target {
            target: format!("{name} ≥ {at_least} × {baseline}"),
            measured: match (ratio, rps(key), rps(baseline)) {
                (Some(r), Some(a), Some(b)) => format!("{r:.2} ({a:.0} vs {b:.0} RPS)"),
                _ => "not measured".into(),
            },
            met: ratio.map(|r| r >= at_least),
        }
    };
    let mut out = vec![
        ratio_target(
            "cached path (authgate_cached)",
            "authgate_cached",
            "noop_wasm",
            0.95,
        ),
        // Not the targets: the floors when the no-op is built like authgate, and when it
        // also makes authgate's host calls (what authgate's own logic costs on top of those).
        ratio_target(
            "cached path (authgate_cached)",
            "authgate_cached",
            "noop_wasm_trimmed",
            0.95,
        ),
        ratio_target(
            "cached path (authgate_cached)",
            "authgate_cached",
            "noop_host_calls",
            0.95,
        ),
        // A sign-in session cookie, opened once and then cached like a verified token.
        ratio_target(
            "session cookie (authgate_session)",
            "authgate_session",
            "authgate_cached",
            0.95,
        ),
        // Reading an MCP call's body through the companion before deciding, against the same
        // POST decided at its headers.
        ratio_target(
            "MCP call judged on its body (authgate_mcp)",
            "authgate_mcp",
            "authgate_post",
            0.8,
        ),
        // What exporting the response-headers callback (evict_on_upstream, off here) costs a
        // filter that returns at once from it.
        ratio_target(
            "response-headers export (noop_wasm_trimmed)",
            "noop_wasm_trimmed",
            "noop_wasm_no_response_headers",
            0.95,
        ),
        ratio_target(
            "uncached RS256 (authgate_rs256)",
            "authgate_rs256",
            "jwt_authn",
            0.5,
        ),
        ratio_target(
            "enterprise, warm (authgate_enterprise)",
            "authgate_enterprise",
            "ext_authz",
            4.0,
        ),
        ratio_target(
            "enterprise, warm (authgate_enterprise)",
            "authgate_enterprise",
            "jwt_authn_ext_authz",
            3.0,
        ),
    ];
    let growth = flood.and_then(Flood::growth_mib);
    out.push(Target {
        target: format!(
            "RSS growth after {} distinct RS256 tokens ≤ 64 MiB",
            flood.map(|f| f.tokens).unwrap_or(0)
        ),
        measured: growth.map_or("not measured".into(), |g| format!("{g:+.1} MiB")),
        met: growth.map(|g| g <= 64.0),
    });
    out.push(Target {
        target: "authgate.wasm ≤ 1 MiB".into(),
        measured: wasm_bytes.map_or("not measured".into(), |b| {
            format!("{b} bytes ({:.2} MiB)", b as f64 / MIB)
        }),
        met: wasm_bytes.map(|b| (b as f64) <= MIB),
    });
    let ready = results
        .iter()
        .find(|r| r.key == "authgate_cached")
        .and_then(|r| r.summary.time_to_ready_s);
    out.push(Target {
        target: "Envoy ready ≤ 0.5 s with authgate loaded".into(),
        measured: ready.map_or("not measured".into(), |s| format!("{s:.2} s (median)")),
        met: ready.map(|s| s <= 0.5),
    });
    // Not the setup: the benchmark pins Envoy to one CPU, so V8 compiles on one core.
    if let Some(s) = ready_on_all_cpus {
        out.push(Target {
            target: "Envoy ready ≤ 0.5 s with authgate loaded, Envoy not pinned (2 CPUs)".into(),
            measured: format!("{s:.2} s (median of 3 starts)"),
            met: Some(s <= 0.5),
        });
    }
    out
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The main table (also quoted in the README).
pub fn main_table(results: &Results) -> String {
    let mut out = String::from(
        "| variant | RPS | p50 µs | p99 µs | × direct | × no-op Wasm | × jwt_authn | Envoy CPU µs/req | notes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for result in &results.variants {
        let s = &result.summary;
        let jwt = s
            .ratio_to_jwt_authn
            .as_ref()
            .map_or("–".into(), |(key, ratio)| {
                let which = if key == "jwt_authn" {
                    "uncached"
                } else {
                    "cached"
                };
                format!("{ratio:.2} ({which})")
            });
        let mut notes = Vec::new();
        if let Some(hit) = s.jwt_cache_hit_pct {
            notes.push(format!("token cache hits {hit:.1} %"));
        }
        if let Some(calls) = s.authz_calls_per_request {
            notes.push(format!("authz calls/req {calls:.2}"));
        }
        if let Some(busy) = s.envoy_busy_pct {
            notes.push(format!("Envoy busy {busy:.0} %"));
        }
        if let Some(busy) = s.authz_service_busy_pct {
            notes.push(format!("authz service busy {busy:.0} %"));
        }
        if let Some(other) = s.other_work_envoy_core_pct.filter(|p| *p >= 5.0) {
            notes.push(format!("other work on Envoy's core {other:.0} %"));
        }
        if let Some(other) = s.other_work_client_core_pct.filter(|p| *p >= 5.0) {
            notes.push(format!("on the client core {other:.0} %"));
        }
        for run in result.runs.iter().filter(|r| !r.ok()) {
            let first = run
                .errors
                .first()
                .map(String::as_str)
                .unwrap_or("no load result");
            let first: String = first
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(160)
                .collect();
            notes.push(format!("**FAILED** round {}: {first}", run.round + 1));
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            result.label,
            s.rps.map_or("–".into(), thousands),
            opt(s.p50_us, 0),
            opt(s.p99_us, 0),
            opt(s.ratio_to_direct, 2),
            opt(s.ratio_to_noop_wasm, 2),
            jwt,
            opt(s.envoy_cpu_us_per_request, 1),
            notes.join("; ")
        );
    }
    out
}

/// The whole report as markdown.
pub fn markdown(results: &Results) -> String {
    let m = &results.meta;
    let mut out = String::new();
    let title = if m.smoke {
        "Benchmark smoke run"
    } else {
        "Benchmark"
    };
    let _ = writeln!(out, "# authgate {title}, {}\n", m.date);
    if m.smoke {
        out.push_str(
            "**Smoke run: one short round that proves the harness works; its numbers mean \
             nothing.**\n\n",
        );
    }
    let pinning = if m.pinned {
        "Envoy pinned to CPU 0 (`taskset -c 0`), the load generator and the reference \
         authorization service to CPU 1"
    } else {
        "**not pinned** (fewer than 2 CPUs, no `taskset`, or `--no-pin`)"
    };
    let _ = writeln!(
        out,
        "{} (`--concurrency 1`), {pinning}. Load: `authgate-load`, closed loop, {} keep-alive \
         HTTP/1.1 connections. {} interleaved round(s); in each, every variant gets a fresh Envoy, \
         {} s of warm-up, then {} s measured. Medians across rounds; each ratio is the median of \
         the per-round ratios. Every route answers with `direct_response` 200 after the filters. \
         The distinct-token variants cycle in order through {} tokens per algorithm, {} \
         Machine: {}; git {}; load average at start {}; whole run {:.0} s.\n",
        m.envoy,
        m.connections,
        m.rounds,
        m.warmup_s,
        m.duration_s,
        thousands(m.distinct_tokens_per_alg as f64),
        if m.distinct_tokens_per_alg > TOKEN_CACHE_CAPACITY {
            "more than authgate's per-VM token cache holds (10,000, LRU), so every token has \
             been evicted before it comes round again (the hit rate in the notes shows it)."
        } else {
            "fewer than authgate's per-VM token cache holds (10,000), so after the first pass \
             they hit the cache."
        },
        m.machine,
        m.git,
        m.load_average_at_start,
        m.total_wall_s
    );
    let disturbed: Vec<&str> = results
        .variants
        .iter()
        .filter(|r| {
            let s = &r.summary;
            s.other_work_envoy_core_pct.unwrap_or(0.0) > 10.0
                || (s.envoy_busy_pct.unwrap_or(100.0) < 90.0
                    && s.other_work_client_core_pct.unwrap_or(0.0) > 10.0)
        })
        .map(|r| r.key.as_str())
        .collect();
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "**Warning: other work on the machine disturbed {} of {} variants ({}), even after \
             retries: their RPS and ratios are skewed (Envoy CPU µs/req much less so). Rerun \
             `make bench` on an idle machine.**\n",
            disturbed.len(),
            results.variants.len(),
            disturbed.join(", ")
        );
    }
    out.push_str(&main_table(results));
    out.push_str(
        "\n`× jwt_authn` compares with jwt_authn with its cache for the one-token variants and \
         without it for the distinct-token ones. Envoy CPU µs/req is Envoy's CPU time (all \
         threads) during the load divided by the requests it served; `Envoy busy` near 100 % \
         means Envoy, not the load generator or the authorization service, was the limit. \
         `other work on Envoy's core` / `on the client core` is CPU time that processes outside \
         the benchmark took on that core during the load, in % of one core (shown from 5 %). A \
         run disturbed by more than 10 % (on Envoy's core; on the client core too when Envoy was \
         not saturated) is repeated while the time budget allows, and the least disturbed \
         attempt is kept. `authz calls/req` counts requests to the authorization service.\n\n",
    );

    out.push_str("## Startup and memory\n\n| variant | time to ready (s) | idle RSS (MiB) |\n| --- | ---: | ---: |\n");
    for result in &results.variants {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            result.label,
            opt(result.summary.time_to_ready_s, 2),
            opt(result.summary.idle_rss_mib, 1)
        );
    }
    out.push_str(
        "\nTime to ready: from starting Envoy until admin `/ready` answers 200. Idle RSS: VmRSS \
         shortly after ready, before any request. Medians of the rounds' starts.\n\n",
    );
    let size = |bytes: Option<u64>| {
        bytes.map_or("missing".into(), |b| {
            format!("{b} bytes ({:.2} MiB)", b as f64 / MIB)
        })
    };
    let _ = writeln!(
        out,
        "Wasm size: `authgate.wasm` {}; no-op filter {}.\n",
        size(results.authgate_wasm_bytes),
        size(results.noop_wasm_bytes)
    );
    if let Some(flood) = &results.flood {
        let mib = |b: Option<u64>| opt(b.map(|b| b as f64 / MIB), 1);
        let load = flood.load.as_ref();
        let _ = writeln!(
            out,
            "Memory flood: {} distinct RS256 tokens through authgate (RS256 config, fresh Envoy): \
             RSS {} MiB idle → {} MiB after, growth {} MiB (target ≤ 64 MiB); {} token cache \
             misses; {} responses 200 in {:.1} s.{}\n",
            thousands(flood.tokens as f64),
            mib(flood.idle_rss_bytes),
            mib(flood.after_rss_bytes),
            opt(flood.growth_mib(), 1),
            flood.jwt_cache_misses,
            load.and_then(|l| l.statuses.get(&200).copied())
                .unwrap_or(0),
            load.map_or(0.0, |l| l.elapsed_s),
            if flood.errors.is_empty() {
                String::new()
            } else {
                format!(" **FAILED**: {}", flood.errors.join("; "))
            }
        );
    }
    out.push_str("## Targets (issue 6)\n\n| target | measured | met |\n| --- | --- | --- |\n");
    for target in &results.targets {
        let met = match target.met {
            _ if m.smoke => "(smoke)",
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(out, "| {} | {} | {met} |", target.target, target.measured);
    }
    if m.smoke {
        out.push_str("\n(Smoke run: targets are listed, not judged.)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let variants = crate::variants::all();
        let run = |round, rps| VariantRun {
            round,
            load: Some(LoadReport {
                rps,
                ..LoadReport::default()
            }),
            ..VariantRun::default()
        };
        let mut runs = BTreeMap::new();
        runs.insert("direct", vec![run(0, 100.0), run(1, 200.0), run(2, 100.0)]);
        runs.insert("noop_wasm", vec![run(0, 80.0), run(1, 100.0), run(2, 90.0)]);
        let results = summarize(&variants, &runs);
        let noop = results.iter().find(|r| r.key == "noop_wasm").expect("noop");
        assert_eq!(noop.summary.ratio_to_direct, Some(0.8));
        assert_eq!(noop.summary.rps, Some(90.0));
        let direct = results.iter().find(|r| r.key == "direct").expect("direct");
        assert_eq!(direct.summary.ratio_to_direct, Some(1.0));
        assert_eq!(direct.summary.ratio_to_jwt_authn, None);
    }
}
