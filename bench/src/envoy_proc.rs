//! One Envoy for one benchmark variant: the bootstrap written to a temp dir, the process pinned
//! to a CPU with `taskset`, its time to ready measured, its memory and CPU time read from /proc.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use authgate_integration::client::Req;
use serde_json::Value;

use crate::procs::ChildGuard;

/// A running Envoy; killed when dropped.
pub struct EnvoyProcess {
    guard: ChildGuard,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    port: u16,
    /// From spawn until admin `/ready` answered 200.
    pub time_to_ready: Duration,
}

/// Writes `bootstrap` as `<dir>/<name>.json` and returns the path.
pub fn write_bootstrap(dir: &Path, name: &str, bootstrap: &Value) -> Result<PathBuf, String> {
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(bootstrap).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

/// `envoy --mode validate` on a bootstrap file; `Err` carries Envoy's output.
pub fn validate(envoy_bin: &Path, bootstrap: &Path) -> Result<(), String> {
    let output = Command::new(envoy_bin)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(bootstrap)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", envoy_bin.display()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "envoy --mode validate {}: {}\n{}{}",
        bootstrap.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

impl EnvoyProcess {
    /// Starts Envoy (`--concurrency 1`, pinned to `cpu` when given) and waits, at most
    /// `timeout`, until admin `/ready` is 200 and the listener accepts connections.
    pub fn start(
        envoy_bin: &Path,
        bootstrap: &Value,
        name: &str,
        cpu: Option<usize>,
        timeout: Duration,
    ) -> Result<EnvoyProcess, String> {
        let dir = tempfile::Builder::new()
            .prefix("authgate-bench-envoy-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let config = write_bootstrap(dir.path(), name, bootstrap)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(envoy_bin);
                c
            }
            None => Command::new(envoy_bin),
        };
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--use-dynamic-base-id"])
            .args(["--log-level", "warn"])
            .arg("--admin-address-path")
            .arg(dir.path().join("admin.txt"))
            .stdout(log)
            .stderr(log_err);
        let spawned_at = Instant::now();
        let (guard, _) = ChildGuard::spawn(&format!("envoy ({name})"), &mut command, false)?;
        let deadline = spawned_at + timeout;
        let mut admin = None;
        loop {
            if let Some(status) = guard.try_wait() {
                return Err(format!(
                    "envoy ({name}) exited during startup ({status}); log tail:\n{}",
                    log_tail(dir.path(), 40)
                ));
            }
            if admin.is_none() {
                admin = std::fs::read_to_string(dir.path().join("admin.txt"))
                    .ok()
                    .and_then(|text| text.trim().parse::<SocketAddr>().ok());
            }
            if let Some(admin) = admin {
                if is_ready(admin) {
                    let time_to_ready = spawned_at.elapsed();
                    let port = wait_listener(admin, deadline).ok_or_else(|| {
                        format!("envoy ({name}) ready but its listener never accepted")
                    })?;
                    return Ok(EnvoyProcess {
                        guard,
                        dir,
                        admin,
                        port,
                        time_to_ready,
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "envoy ({name}) not ready within {timeout:?}; log tail:\n{}",
                    log_tail(dir.path(), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Resident memory (VmRSS) in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.guard.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// User + system CPU time of all its threads so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        crate::cpu::process_cpu_time(self.guard.pid())
    }

    /// The counters the report uses: `wasmcustom.*` (authgate's, keyed without the prefix) and
    /// `cluster.authz.upstream_rq_total` (requests to the authorization service, by ext_authz or
    /// by authgate).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        // ^wasmcustom\.|^cluster\.authz\.upstream_rq_total$
        let filter = "%5Ewasmcustom%5C.%7C%5Ecluster%5C.authz%5C.upstream_rq_total%24";
        let reply = Req::get(format!("http://{}/stats?filter={filter}", self.admin))
            .timeout(Duration::from_secs(5))
            .try_send();
        let Ok(reply) = reply else {
            return BTreeMap::new();
        };
        parse_counters(&reply.body)
    }

    /// The last lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(self.dir.path(), lines)
    }

    /// Still running?
    pub fn is_running(&self) -> bool {
        self.guard.try_wait().is_none()
    }
}

/// `name: value` lines with integer values; `wasmcustom.` is dropped from names.
fn parse_counters(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            let name = name.trim();
            let name = name.strip_prefix("wasmcustom.").unwrap_or(name);
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn is_ready(admin: SocketAddr) -> bool {
    Req::get(format!("http://{admin}/ready"))
        .timeout(Duration::from_secs(2))
        .try_send()
        .is_ok_and(|r| r.status == 200)
}

/// The `main` listener's port, once it accepts a connection.
fn wait_listener(admin: SocketAddr, deadline: Instant) -> Option<u16> {
    loop {
        let port = Req::get(format!("http://{admin}/listeners?format=json"))
            .timeout(Duration::from_secs(2))
            .try_send()
            .ok()
            .and_then(|r| r.json())
            .and_then(|json| listener_port(&json));
        if let Some(port) = port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Some(port);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
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

fn log_tail(dir: &Path, lines: usize) -> String {
    let text = std::fs::read(dir.join("envoy.log"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters() {
        let counters = parse_counters(
            "cluster.authz.upstream_rq_total: 7\nwasmcustom.authgate.jwt_cache_hit: 5\n\
             wasmcustom.authgate.authz_latency_ms: P0(nan,1)\n",
        );
        assert_eq!(counters.get("cluster.authz.upstream_rq_total"), Some(&7));
        assert_eq!(counters.get("authgate.jwt_cache_hit"), Some(&5));
        assert_eq!(counters.len(), 2);
    }
}
