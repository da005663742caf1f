//! A real OpenID Provider for tests: `integration/oidc/provider.mjs` (npm `oidc-provider`, `make
//! oidc`), with a confidential client for the gateway and three accounts (alice and carol with
//! verified emails, bob without), password `<sub>-pw`. Stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::repo_root;

/// The IdP listens on another loopback address: a browser keeps its cookies apart from the
/// gateway's (cookies ignore ports), and the redirect back is cross-site, as in production.
pub const IDP_HOST: &str = "127.0.0.2";

/// `integration/oidc/provider.mjs`.
pub struct Idp {
    child: Child,
    pub issuer: String,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Idp {
    /// Starts the IdP with its files in `dir`; `gateway` is the gateway's origin.
    pub fn start(dir: &Path, gateway: &str) -> Idp {
        Idp::start_with(
            dir,
            json!({
                "clients": [{"client_id": "authgate", "client_secret": "authgate-secret",
                             "redirect_uris": [format!("{gateway}/auth/callback")],
                             "post_logout_redirect_uris": [format!("{gateway}/")],
                             "token_endpoint_auth_method": "client_secret_basic"}],
                "accounts": accounts()
            }),
        )
    }

    /// An authorization server for MCP clients: open dynamic client registration, resource
    /// indicators for `resources`, JWT access tokens carrying `scopes` (integration/oidc
    /// README, "MCP / OAuth 2.1 mode").
    pub fn start_for_mcp(dir: &Path, resources: &[String], scopes: &[&str]) -> Idp {
        Idp::start_with(
            dir,
            json!({"clients": [], "accounts": accounts(),
                   "mcp": {"resources": resources, "scopes": scopes}}),
        )
    }

    fn start_with(dir: &Path, op: serde_json::Value) -> Idp {
        let config = dir.join("op.json");
        std::fs::write(&config, op.to_string()).unwrap_or_else(|e| panic!("op.json: {e}"));
        // One retry: under a loaded CI machine a start was once seen to stall without a word.
        match Idp::spawn(dir, &config) {
            Ok(idp) => idp,
            Err(first) => Idp::spawn(dir, &config).unwrap_or_else(|second| {
                panic!("the OpenID Provider did not start: {first}; then: {second}")
            }),
        }
    }

    fn spawn(dir: &Path, config: &Path) -> Result<Idp, String> {
        let port_file = dir.join("op.port");
        let log_file = dir.join("op.log");
        let log = std::fs::File::create(&log_file).map_err(|e| format!("op.log: {e}"))?;
        let mut child = Command::new("node")
            .arg(repo_root().join("integration/oidc/provider.mjs"))
            .arg("--config")
            .arg(config)
            .args(["--host", IDP_HOST, "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the OpenID Provider (make oidc): {e}"))?;
        let started = Instant::now();
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                return Ok(Idp {
                    child,
                    issuer: format!("http://{IDP_HOST}:{port}"),
                    port,
                    log: log_file,
                });
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                return Err(format!("exited: {exited}, log: {}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Idp {
    /// The last `lines` of the provider's log, for a failing test's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// alice and carol with verified emails, bob without; password `<sub>-pw`.
fn accounts() -> serde_json::Value {
    let account = |sub: &str, verified: bool| {
        json!({"sub": sub, "email": format!("{sub}@example.com"), "email_verified": verified,
               "name": sub, "password": format!("{sub}-pw")})
    };
    json!([
        account("alice", true),
        account("carol", true),
        account("bob", false)
    ])
}
