//! `authgate-bench`: runs every variant of `variants::all()` in interleaved rounds, the memory
//! flood, and writes `latest.md` / `latest.json`. `make bench` runs it in full, `make
//! bench-smoke` as one short round that fails loudly when a variant does not start or answers
//! anything but 200.
//!
//! ```text
//! authgate-bench [--smoke] [--rounds 3] [--duration 5] [--warmup 1] [--tokens 20000]
//!                [--flood 20000] [--connections 32] [--out bench/results] [--only k1,k2] [--no-pin]
//!                [--quiet-wait 15] [--quiet-budget 120] [--retries 2] [--time-budget 480]
//! ```
//! Other jobs on the machine skew the numbers, so before each run it waits (up to `--quiet-wait`
//! s, `--quiet-budget` s in all) until the machine is idle, and a run that other work disturbed
//! anyway (over 10 % of a core where it matters) is repeated, up to `--retries` times while the whole benchmark
//! stays within `--time-budget`; the least disturbed attempt counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use authgate_bench::cpu;
use authgate_bench::envoy_proc::{self, EnvoyProcess};
use authgate_bench::load::LoadReport;
use authgate_bench::procs::ChildGuard;
use authgate_bench::report::{self, Flood, Meta, Results, VariantRun};
use authgate_bench::tokens;
use authgate_bench::variants::{self, Credential, Kind, Setup, Variant};
use authgate_integration::client::Req;
use authgate_integration::{AuthzStore, FixtureKey};

/// Envoy's CPU; the load generator and the authorization service share the other one.
const ENVOY_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
const BENCH_PATH: &str = "/v1/bench";
/// Other work above this share of one core during a run makes it worth repeating.
const NOISY_SHARE: f64 = 0.10;

struct Args {
    smoke: bool,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    /// Pause between ready and the idle RSS reading.
    settle: Duration,
    tokens: usize,
    flood: usize,
    connections: usize,
    out: PathBuf,
    only: Option<Vec<String>>,
    pin: bool,
    /// Before each run, wait up to this long for other work on the machine to stop...
    quiet_wait: Duration,
    /// ...spending at most this much waiting in the whole benchmark.
    quiet_budget: Duration,
    /// Repeat a run disturbed by other work at most this many times...
    retries: usize,
    /// ...while the whole benchmark still fits in this.
    time_budget: Duration,
}

const USAGE: &str = "usage: authgate-bench [--smoke] [--rounds N] [--duration S] [--warmup S] \
[--tokens N] [--flood N] [--connections N] [--out DIR] [--only key,key] [--no-pin] \
[--quiet-wait S] [--quiet-budget S] [--retries N] [--time-budget S]";

fn parse_args() -> Result<Args, String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let smoke = raw.iter().any(|a| a == "--smoke");
    let repo = authgate_integration::repo_root();
    let mut args = if smoke {
        Args {
            smoke,
            rounds: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(250),
            settle: Duration::from_millis(100),
            tokens: 1000,
            flood: 1000,
            connections: 32,
            out: repo.join("target/bench-smoke"),
            only: None,
            pin: true,
            quiet_wait: Duration::ZERO,
            quiet_budget: Duration::ZERO,
            retries: 0,
            time_budget: Duration::from_secs(120),
        }
    } else {
        Args {
            smoke,
            rounds: 3,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            settle: Duration::from_millis(500),
            tokens: 20_000,
            flood: 20_000,
            connections: 32,
            out: repo.join("bench/results"),
            only: None,
            pin: true,
            quiet_wait: Duration::from_secs(15),
            quiet_budget: Duration::from_secs(120),
            retries: 2,
            time_budget: Duration::from_secs(480),
        }
    };
    let mut iter = raw.into_iter();
    while let Some(flag) = iter.next() {
        if flag == "--smoke" {
            continue;
        }
        if flag == "--no-pin" {
            args.pin = false;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = iter
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|n| *n >= 0.0)
                .ok_or_else(|| format!("{flag} {value}: not a number >= 0\n{USAGE}"))
        };
        match flag.as_str() {
            "--rounds" => args.rounds = number()? as usize,
            "--duration" => args.duration = Duration::from_secs_f64(number()?),
            "--warmup" => args.warmup = Duration::from_secs_f64(number()?),
            "--tokens" => args.tokens = number()? as usize,
            "--flood" => args.flood = number()? as usize,
            "--connections" => args.connections = number()? as usize,
            "--out" => args.out = PathBuf::from(&value),
            "--quiet-wait" => args.quiet_wait = Duration::from_secs_f64(number()?),
            "--quiet-budget" => args.quiet_budget = Duration::from_secs_f64(number()?),
            "--retries" => args.retries = number()? as usize,
            "--time-budget" => args.time_budget = Duration::from_secs_f64(number()?),
            "--only" => args.only = Some(value.split(',').map(str::to_string).collect()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The files the benchmark runs.
struct Tools {
    envoy: PathBuf,
    authgate_wasm: PathBuf,
    noop_wasm: PathBuf,
    noop_trimmed_wasm: PathBuf,
    noop_no_response_wasm: PathBuf,
    load: PathBuf,
    authz: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let bin_dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
        let from_env = |name: &str, default: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| authgate_integration::repo_root().join(default))
        };
        let noop_wasm = from_env(
            "AUTHGATE_NOOP_WASM",
            "target/wasm32-wasip1/release/authgate_noop_filter.wasm",
        );
        let noop_trimmed_wasm = from_env(
            "AUTHGATE_NOOP_TRIMMED_WASM",
            "target/authgate_noop_filter.trimmed.wasm",
        );
        let noop_no_response_wasm = from_env(
            "AUTHGATE_NOOP_NO_RESPONSE_WASM",
            "target/authgate_noop_filter.no-response-headers.wasm",
        );
        let tools = Tools {
            envoy: authgate_integration::envoy::envoy_bin(),
            authgate_wasm: authgate_integration::envoy::wasm_path(),
            noop_wasm,
            noop_trimmed_wasm,
            noop_no_response_wasm,
            load: bin_dir.join("authgate-load"),
            authz: bin_dir.join("authgate-authz"),
        };
        for (what, path) in [
            ("Envoy (make setup)", &tools.envoy),
            ("authgate.wasm (make build)", &tools.authgate_wasm),
            ("the no-op filter (make noop-filter)", &tools.noop_wasm),
            (
                "the trimmed no-op filter (make noop-filter)",
                &tools.noop_trimmed_wasm,
            ),
            (
                "the no-op filter without response headers (make noop-filter)",
                &tools.noop_no_response_wasm,
            ),
            ("authgate-load (cargo build -p authgate-bench)", &tools.load),
            (
                "authgate-authz (cargo build -p authgate-integration --bins)",
                &tools.authz,
            ),
        ] {
            if !path.exists() {
                return Err(format!("{what} not found at {}", path.display()));
            }
        }
        Ok(tools)
    }
}

/// The reference authorization service, as its own process.
struct AuthzProcess {
    guard: ChildGuard,
    port: u16,
    /// Kept open (never read again: it prints nothing more) so it never writes to a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

fn start_authz(tools: &Tools, db: &Path, cpu: Option<usize>) -> Result<AuthzProcess, String> {
    let mut command = pinned(cpu, &tools.authz);
    command
        .args(["serve", "--port", "0", "--db"])
        .arg(db)
        .stderr(Stdio::inherit());
    let (guard, stdout) = ChildGuard::spawn("authgate-authz", &mut command, true)?;
    // It prints "authgate-authz: serving DB on 127.0.0.1:PORT (…)" once it listens.
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(stdout.ok_or("authgate-authz: no stdout")?);
    std::io::BufRead::read_line(&mut reader, &mut line)
        .map_err(|e| format!("authgate-authz: {e}"))?;
    let port = line
        .split(" on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse::<u16>().ok())
        .ok_or_else(|| format!("authgate-authz did not say its port: {line:?}"))?;
    let health = Req::get(format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(5))
        .try_send()?;
    if health.status != 200 {
        return Err(format!("authgate-authz /health: {health}"));
    }
    Ok(AuthzProcess {
        guard,
        port,
        _stdout: reader,
    })
}

fn pinned(cpu: Option<usize>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu.to_string()]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// The credentials of every kind, and the token files the load generator cycles through.
struct Credentials {
    files: BTreeMap<Credential, PathBuf>,
    /// A valid credential of each kind for the single probe request (never one of the cycled).
    probes: BTreeMap<Credential, String>,
    rs256_count: usize,
}

fn make_credentials(args: &Args, dir: &Path, agent_token: &str) -> Result<Credentials, String> {
    let started = Instant::now();
    let rs256_count = args.tokens.max(args.flood);
    let repeated = tokens::one(FixtureKey::Rsa1, usize::MAX);
    let mut files = BTreeMap::new();
    let mut probes = BTreeMap::new();
    for (credential, key, count) in [
        (Credential::DistinctRs256, FixtureKey::Rsa1, rs256_count),
        (Credential::DistinctEs256, FixtureKey::Ec1, args.tokens),
        (Credential::DistinctEdDsa, FixtureKey::Ed1, args.tokens),
    ] {
        let list = tokens::distinct(key, count);
        files.insert(credential, tokens::write(dir, &format!("{key:?}"), &list)?);
        probes.insert(credential, tokens::one(key, usize::MAX - 1));
    }
    files.insert(
        Credential::RepeatedRs256,
        tokens::write(dir, "repeated", std::slice::from_ref(&repeated))?,
    );
    probes.insert(Credential::RepeatedRs256, repeated);
    files.insert(
        Credential::AgentToken,
        tokens::write(dir, "agent", &[agent_token.to_string()])?,
    );
    let cookie = variants::session_cookie()?;
    files.insert(
        Credential::SessionCookie,
        tokens::write(dir, "session", std::slice::from_ref(&cookie))?,
    );
    probes.insert(Credential::SessionCookie, cookie);
    probes.insert(Credential::AgentToken, agent_token.to_string());
    eprintln!(
        "bench: signed {rs256_count} RS256, {n} ES256 and {n} EdDSA tokens in {:.1} s",
        started.elapsed().as_secs_f64(),
        n = args.tokens
    );
    Ok(Credentials {
        files,
        probes,
        rs256_count,
    })
}

enum LoadStop {
    For(Duration),
    Requests(usize),
}

/// Everything one round of one variant needs.
struct Bench<'a> {
    args: &'a Args,
    tools: &'a Tools,
    setup: &'a Setup,
    credentials: &'a Credentials,
    envoy_cpu: Option<usize>,
    client_cpu: Option<usize>,
    authz_pid: u32,
    scratch: &'a Path,
}

impl Bench<'_> {
    fn start_envoy(&self, variant: &Variant) -> Result<EnvoyProcess, String> {
        self.start_envoy_on(variant, self.envoy_cpu)
    }

    /// Starts `variant`'s Envoy pinned to `cpu`, or free to use every CPU.
    fn start_envoy_on(
        &self,
        variant: &Variant,
        cpu: Option<usize>,
    ) -> Result<EnvoyProcess, String> {
        EnvoyProcess::start(
            &self.tools.envoy,
            &variant.bootstrap(self.setup),
            variant.key,
            cpu,
            Duration::from_secs(30),
        )
    }

    /// authgate's time to ready with Envoy free to use every CPU (V8 compiles the module on
    /// background threads): the median of three starts.
    fn ready_on_all_cpus(&self) -> Option<f64> {
        let variant = variants::all()
            .into_iter()
            .find(|v| v.kind == Kind::AuthgateCached)?;
        let starts: Vec<f64> = (0..3)
            .filter_map(|_| {
                let envoy = self.start_envoy_on(&variant, None).ok()?;
                Some(envoy.time_to_ready.as_secs_f64())
            })
            .collect();
        report::median(starts)
    }

    fn run_variant(&self, variant: &Variant, round: usize) -> VariantRun {
        let mut run = VariantRun {
            round,
            ..VariantRun::default()
        };
        let envoy = match self.start_envoy(variant) {
            Ok(envoy) => envoy,
            Err(e) => {
                run.errors.push(e);
                return run;
            }
        };
        run.time_to_ready_s = Some(envoy.time_to_ready.as_secs_f64());
        std::thread::sleep(self.args.settle);
        run.idle_rss_bytes = envoy.rss_bytes();
        if let Err(e) = self.probe(variant, &envoy) {
            run.errors.push(e);
            return run;
        }
        let before = envoy.counters();
        let cpu_before = envoy.cpu_time();
        let authz_before = cpu::process_cpu_time(self.authz_pid);
        let cores_before = self.core_busy();
        let loaded = self.run_load(
            &envoy,
            &self.credentials.files[&variant.credential],
            variant.body(),
            self.args.warmup,
            LoadStop::For(self.args.duration),
        );
        let cpu_after = envoy.cpu_time();
        let authz_after = cpu::process_cpu_time(self.authz_pid);
        let cores_after = self.core_busy();
        let after = envoy.counters();
        run.counter_deltas = after
            .iter()
            .filter_map(|(name, &value)| {
                let delta = value.saturating_sub(before.get(name).copied().unwrap_or(0));
                (delta > 0).then(|| (name.clone(), delta))
            })
            .collect();
        if let (Some(a), Some(b)) = (cpu_after, cpu_before) {
            run.envoy_cpu_s = Some(a.saturating_sub(b).as_secs_f64());
        }
        let authz_s = match (authz_after, authz_before) {
            (Some(a), Some(b)) => a.saturating_sub(b).as_secs_f64(),
            _ => 0.0,
        };
        if variant.uses_authz() {
            run.authz_service_cpu_s = Some(authz_s);
        }
        match loaded {
            Ok((load, wall)) => {
                run.load_wall_s = Some(wall.as_secs_f64());
                // What each core did besides our processes on it.
                let busy = |i: usize| match (cores_after[i], cores_before[i]) {
                    (Some(a), Some(b)) => Some(a.saturating_sub(b).as_secs_f64()),
                    _ => None,
                };
                let envoy_s = run.envoy_cpu_s.unwrap_or(0.0);
                let client_s = authz_s + load.cpu_s;
                if self.envoy_cpu.is_some() {
                    run.other_cpu_envoy_core_s = busy(0).map(|b| (b - envoy_s).max(0.0));
                    run.other_cpu_client_core_s = busy(1).map(|b| (b - client_s).max(0.0));
                } else {
                    let other = busy(0).map(|b| (b - envoy_s - client_s).max(0.0));
                    run.other_cpu_envoy_core_s = other;
                }
                run.errors.extend(load_problems(&load));
                run.load = Some(load);
            }
            Err(e) => run.errors.push(e),
        }
        if !envoy.is_running() {
            run.errors.push(format!(
                "envoy exited during the load; log tail:\n{}",
                envoy.log_tail(30)
            ));
        }
        run
    }

    /// Busy time so far of Envoy's core and of the client core when pinned (else of the whole
    /// machine, in the first slot).
    fn core_busy(&self) -> [Option<Duration>; 2] {
        let busy = |cpu| cpu::cpu_busy_and_total(cpu).map(|(busy, _)| busy);
        match (self.envoy_cpu, self.client_cpu) {
            (Some(envoy), Some(client)) => [busy(Some(envoy)), busy(Some(client))],
            _ => [busy(None), None],
        }
    }

    /// Runs the load generator (pinned) and returns its report and its wall time.
    fn run_load(
        &self,
        envoy: &EnvoyProcess,
        tokens: &Path,
        body: Option<&str>,
        warmup: Duration,
        stop: LoadStop,
    ) -> Result<(LoadReport, Duration), String> {
        let scratch = self.scratch;
        let stdout_path = scratch.join("load.out");
        let stderr_path = scratch.join("load.err");
        let stdout = std::fs::File::create(&stdout_path).map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut command = pinned(self.client_cpu, &self.tools.load);
        command
            .args(["--addr", &envoy.addr().to_string()])
            .args(["--connections", &self.args.connections.to_string()])
            .args(["--path", BENCH_PATH])
            .arg("--tokens")
            .arg(tokens)
            .args(["--warmup-ms", &warmup.as_millis().to_string()])
            .args(body.iter().flat_map(|b| ["--body", b]))
            .stdout(stdout)
            .stderr(stderr);
        let limit = match stop {
            LoadStop::For(duration) => {
                command.args(["--duration-ms", &duration.as_millis().to_string()]);
                warmup + duration + Duration::from_secs(60)
            }
            LoadStop::Requests(n) => {
                command.args(["--requests", &n.to_string()]);
                Duration::from_secs(1200)
            }
        };
        let started = Instant::now();
        let (guard, _) = ChildGuard::spawn("authgate-load", &mut command, false)?;
        let status = guard.wait_timeout(limit)?;
        let wall = started.elapsed();
        let text = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        if !status.success() {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!("load generator failed ({status}): {}", err.trim()));
        }
        let report = serde_json::from_str(text.trim())
            .map_err(|e| format!("load generator output {text:?}: {e}"))?;
        Ok((report, wall))
    }

    /// One allowed request (must be 200) and one without a credential (must be the variant's
    /// denial, which proves its filter is in the chain).
    fn probe(&self, variant: &Variant, envoy: &EnvoyProcess) -> Result<(), String> {
        let token = &self.credentials.probes[&variant.credential];
        let with_token = |body: Option<&str>| {
            let request = match body {
                Some(body) => Req::post(envoy.url(BENCH_PATH))
                    .header("content-type", "application/json")
                    .body(body),
                None => Req::get(envoy.url(BENCH_PATH)),
            };
            match token.split_once(": ") {
                Some((name, value)) => request.header(name, value),
                None => request.bearer(token),
            }
        };
        // The MCP variant must judge the call on its body: the same POST naming a deploy_*
        // tool is refused (the token lacks that scope), so a read that fell through to the
        // headers would show here.
        if variant.kind == Kind::AuthgateMcp {
            let deploy = variant
                .body()
                .unwrap_or_default()
                .replace("read_docs", "deploy_prod");
            let refused = with_token(Some(&deploy))
                .timeout(Duration::from_secs(10))
                .try_send()
                .map_err(|e| format!("probe of a deploy_* call: {e}"))?;
            if refused.status != 403 {
                return Err(format!(
                    "probe of a deploy_* call: expected 403, got {refused}"
                ));
            }
        }
        let allowed = with_token(variant.body())
            .timeout(Duration::from_secs(10))
            .try_send()
            .map_err(|e| format!("probe with a credential: {e}"))?;
        if allowed.status != 200 {
            return Err(format!(
                "probe with a valid credential: expected 200, got {allowed}\nenvoy log:\n{}",
                envoy.log_tail(20)
            ));
        }
        let denied = Req::get(envoy.url(BENCH_PATH))
            .timeout(Duration::from_secs(10))
            .try_send()
            .map_err(|e| format!("probe without a credential: {e}"))?;
        if denied.status != variant.status_without_credential {
            return Err(format!(
                "probe without a credential: expected {}, got {denied}",
                variant.status_without_credential
            ));
        }
        Ok(())
    }

    /// A fresh authgate Envoy, its idle RSS, `count` distinct RS256 tokens, its RSS after.
    fn flood(&self, count: usize) -> Flood {
        let mut flood = Flood {
            tokens: count as u64,
            ..Flood::default()
        };
        let Some(variant) = variants::all()
            .into_iter()
            .find(|v| v.kind == Kind::AuthgateCached)
        else {
            flood.errors.push("no authgate variant".into());
            return flood;
        };
        let envoy = match self.start_envoy(&variant) {
            Ok(envoy) => envoy,
            Err(e) => {
                flood.errors.push(e);
                return flood;
            }
        };
        std::thread::sleep(self.args.settle.max(Duration::from_millis(500)));
        flood.idle_rss_bytes = envoy.rss_bytes();
        let before = envoy.counters();
        let loaded = self.run_load(
            &envoy,
            &self.credentials.files[&Credential::DistinctRs256],
            None,
            Duration::ZERO,
            LoadStop::Requests(count),
        );
        std::thread::sleep(Duration::from_millis(500));
        flood.after_rss_bytes = envoy.rss_bytes();
        let misses = |c: &BTreeMap<String, u64>| c.get("authgate.jwt_cache_miss").copied();
        flood.jwt_cache_misses = misses(&envoy.counters())
            .unwrap_or(0)
            .saturating_sub(misses(&before).unwrap_or(0));
        match loaded {
            Ok((load, _)) => {
                flood.errors.extend(load_problems(&load));
                if load.statuses.get(&200).copied().unwrap_or(0) != count as u64 {
                    flood.errors.push(format!(
                        "expected {count} responses 200: {:?}",
                        load.statuses
                    ));
                }
                flood.load = Some(load);
            }
            Err(e) => flood.errors.push(e),
        }
        if flood.jwt_cache_misses < count as u64 {
            flood.errors.push(format!(
                "only {} of {count} tokens were verified (authgate.jwt_cache_miss)",
                flood.jwt_cache_misses
            ));
        }
        flood
    }
}

/// What makes a load run not count: failures, non-2xx answers, nothing answered.
fn load_problems(load: &LoadReport) -> Vec<String> {
    let mut problems = Vec::new();
    if load.errors > 0 {
        problems.push(format!(
            "{} transport errors (first: {})",
            load.errors,
            load.first_error.as_deref().unwrap_or("?")
        ));
    }
    let non_200: BTreeMap<u16, u64> = load
        .statuses
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(s, n)| (*s, *n))
        .collect();
    if !non_200.is_empty() {
        problems.push(format!("responses other than 200: {non_200:?}"));
    }
    if load.requests == 0 {
        problems.push("no response in the measured phase".into());
    }
    problems
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: FAILED (see the report above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole benchmark; `Ok(false)` when some variant failed (the report is written anyway).
fn run(args: &Args) -> Result<bool, String> {
    let started = Instant::now();
    let tools = Tools::find()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let has_taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let pin = args.pin && cpus >= 2 && has_taskset;
    if args.pin && !pin {
        eprintln!("bench: WARNING: not pinning ({cpus} CPUs, taskset found: {has_taskset})");
    }
    let (envoy_cpu, client_cpu) = if pin {
        (Some(ENVOY_CPU), Some(CLIENT_CPU))
    } else {
        (None, None)
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = loadavg
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load1 > 0.5 {
        eprintln!(
            "bench: WARNING: load average {load1} at start: other work will skew the numbers"
        );
    }

    let scratch = tempfile::Builder::new()
        .prefix("authgate-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let db = scratch.path().join("authz.sqlite");
    let agent = AuthzStore::open(&db)?.create_token("bench@example.com", 24 * 3600)?;
    let authz = start_authz(&tools, &db, client_cpu)?;
    let credentials = make_credentials(args, scratch.path(), &agent.token)?;
    let setup = Setup {
        authgate_wasm: tools.authgate_wasm.clone(),
        noop_wasm: tools.noop_wasm.clone(),
        noop_trimmed_wasm: tools.noop_trimmed_wasm.clone(),
        noop_no_response_wasm: tools.noop_no_response_wasm.clone(),
        authz_port: authz.port,
    };
    let mut variants = variants::all();
    if let Some(only) = &args.only {
        variants.retain(|v| only.iter().any(|k| k == v.key));
        if variants.is_empty() {
            return Err(format!("--only {only:?} matches no variant"));
        }
    }

    // Every bootstrap must pass `envoy --mode validate` before anything is measured.
    let configs = authgate_integration::repo_root().join("target/bench-configs");
    std::fs::create_dir_all(&configs).map_err(|e| format!("{}: {e}", configs.display()))?;
    for variant in &variants {
        let path = envoy_proc::write_bootstrap(&configs, variant.key, &variant.bootstrap(&setup))?;
        envoy_proc::validate(&tools.envoy, &path)?;
    }
    eprintln!(
        "bench: {} bootstraps pass envoy --mode validate (written to {})",
        variants.len(),
        configs.display()
    );

    let bench = Bench {
        args,
        tools: &tools,
        setup: &setup,
        credentials: &credentials,
        envoy_cpu,
        client_cpu,
        authz_pid: authz.guard.pid(),
        scratch: scratch.path(),
    };
    let mut runs: BTreeMap<&'static str, Vec<VariantRun>> = BTreeMap::new();
    let mut quiet_budget = args.quiet_budget;
    let mut wait_for_quiet = || {
        let max = args.quiet_wait.min(quiet_budget);
        if max.is_zero() {
            return (Duration::ZERO, None);
        }
        let (waited, quiet) = cpu::wait_for_quiet(max);
        quiet_budget = quiet_budget.saturating_sub(waited);
        (waited, Some(quiet))
    };
    let total_runs = args.rounds * variants.len();
    let rounds_started = Instant::now();
    let mut runs_done = 0usize;
    for round in 0..args.rounds {
        // Each round starts one variant later, so no variant always runs first or last.
        let offset = round % variants.len();
        for variant in variants[offset..].iter().chain(&variants[..offset]) {
            let mut kept: Option<VariantRun> = None;
            let mut attempts = 0;
            while attempts <= args.retries {
                if attempts > 0 {
                    // Repeat only while the rest still fits: every run left (this one again
                    // included) at the pace so far, and the flood.
                    let per_run = rounds_started.elapsed() / (runs_done + attempts) as u32;
                    let left = per_run * (total_runs - runs_done) as u32;
                    if started.elapsed() + left + Duration::from_secs(30) > args.time_budget {
                        break;
                    }
                }
                attempts += 1;
                let (waited, quiet) = wait_for_quiet();
                let mut run = bench.run_variant(variant, round);
                run.waited_for_quiet_s = waited.as_secs_f64();
                run.machine_was_quiet = quiet;
                let disturbance = run.disturbance().unwrap_or(0.0);
                // A failure is the variant's own, not noise: it is kept and never retried.
                let settled = !run.ok() || disturbance <= NOISY_SHARE;
                let less_disturbed = kept
                    .as_ref()
                    .is_none_or(|k| run.ok() && disturbance < k.disturbance().unwrap_or(f64::MAX));
                if less_disturbed {
                    kept = Some(run);
                }
                if settled {
                    break;
                }
            }
            let Some(mut run) = kept else { continue };
            run.attempts = attempts;
            runs_done += 1;
            eprintln!(
                "bench: round {}/{} {:<26} {}",
                round + 1,
                args.rounds,
                variant.key,
                describe(&run)
            );
            runs.entry(variant.key).or_default().push(run);
        }
    }
    let flood = (args.only.is_none() || variants.iter().any(|v| v.kind == Kind::AuthgateCached))
        .then(|| {
            wait_for_quiet();
            let flood = bench.flood(args.flood.min(credentials.rs256_count));
            eprintln!(
                "bench: flood of {} tokens: RSS growth {:?} MiB {}",
                flood.tokens,
                flood.growth_mib().map(|g| (g * 10.0).round() / 10.0),
                flood.errors.join("; ")
            );
            flood
        });
    let ready_on_all_cpus = (pin && !args.smoke)
        .then(|| bench.ready_on_all_cpus())
        .flatten();
    drop(authz);

    let results_by_variant = report::summarize(&variants, &runs);
    let authgate_wasm_bytes = file_size(&tools.authgate_wasm);
    let targets = report::targets(
        &results_by_variant,
        flood.as_ref(),
        authgate_wasm_bytes,
        ready_on_all_cpus,
    );
    let all_ok = runs.values().flatten().all(VariantRun::ok)
        && flood.as_ref().is_none_or(|f| f.errors.is_empty());
    let results = Results {
        meta: Meta {
            date: today(),
            smoke: args.smoke,
            git: git_description(),
            envoy: envoy_version(&tools.envoy),
            machine: machine(cpus),
            pinned: pin,
            rounds: args.rounds,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            connections: args.connections,
            distinct_tokens_per_alg: args.tokens,
            total_wall_s: started.elapsed().as_secs_f64(),
            load_average_at_start: loadavg
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        },
        authgate_wasm_bytes,
        noop_wasm_bytes: file_size(&tools.noop_wasm),
        authgate_ready_on_all_cpus_s: ready_on_all_cpus,
        variants: results_by_variant,
        flood,
        targets,
    };
    let markdown = report::markdown(&results);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let md_path = args.out.join("latest.md");
    let json_path = args.out.join("latest.json");
    std::fs::write(&md_path, &markdown).map_err(|e| format!("{}: {e}", md_path.display()))?;
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    println!("{markdown}");
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        md_path.display(),
        json_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(all_ok)
}

fn describe(run: &VariantRun) -> String {
    match (&run.load, run.errors.first()) {
        (_, Some(e)) => format!("FAILED: {e}"),
        (Some(load), None) => format!(
            "{:>8.0} rps  p50 {:>6} µs  p99 {:>6} µs  ready {:.2} s  disturbed {:>3.0} %{}",
            load.rps,
            load.p50_us,
            load.p99_us,
            run.time_to_ready_s.unwrap_or(0.0),
            100.0 * run.disturbance().unwrap_or(0.0),
            if run.attempts > 1 {
                format!("  (attempt {})", run.attempts)
            } else {
                String::new()
            }
        ),
        (None, None) => "no result".into(),
    }
}

fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Today (UTC) as YYYY-MM-DD.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn git_description() -> String {
    let repo = authgate_integration::repo_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash} + uncommitted changes")
            } else {
                hash
            }
        }
        None => "unknown".into(),
    }
}

fn envoy_version(envoy: &Path) -> String {
    let output = Command::new(envoy).arg("--version").output();
    let text = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "<path>  version: <hash>/1.40.0/Clean/RELEASE/BoringSSL"
    let version = text
        .split("version: ")
        .nth(1)
        .and_then(|v| v.split('/').nth(1));
    version.map_or_else(
        || "Envoy (unknown version)".into(),
        |v| format!("Envoy {v}"),
    )
}

fn machine(cpus: usize) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    format!("{cpus} × {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let date = today();
        assert_eq!(date.len(), 10, "{date}");
        assert!(date.starts_with("20"), "{date}");
    }
}
