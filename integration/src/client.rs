//! HTTP client helpers (ureq 2). A 4xx/5xx is a reply like any other, never an error; redirects
//! are not followed (a 302 is returned as is).

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// A request to send.
#[derive(Clone, Debug)]
pub struct Req {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    timeout: Duration,
}

/// What came back.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Lowercased names; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Req {
    pub fn new(method: &str, url: impl Into<String>) -> Req {
        Req {
            method: method.to_string(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(15),
        }
    }

    pub fn get(url: impl Into<String>) -> Req {
        Req::new("GET", url)
    }

    pub fn post(url: impl Into<String>) -> Req {
        Req::new("POST", url)
    }

    pub fn options(url: impl Into<String>) -> Req {
        Req::new("OPTIONS", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<String>) -> Req {
        self.body = Some(body.into());
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, body: &Value) -> Req {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    pub fn timeout(mut self, timeout: Duration) -> Req {
        self.timeout = timeout;
        self
    }

    /// Sends; panics (with the method and URL) only when no HTTP reply came at all.
    pub fn send(&self) -> Reply {
        self.try_send()
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.url))
    }

    /// Sends; `Err` only on a transport failure (refused, reset, timeout, bad URL).
    pub fn try_send(&self) -> Result<Reply, String> {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(self.timeout)
            .build();
        let mut request = agent.request(&self.method, &self.url);
        for (name, value) in &self.headers {
            request = request.set(name, value);
        }
        let result = match &self.body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
        };
        let status = response.status();
        let mut headers = Vec::new();
        for name in response.headers_names() {
            for value in response.all(&name) {
                headers.push((name.to_ascii_lowercase(), value.to_string()));
            }
        }
        let body = response
            .into_string()
            .map_err(|e| format!("reading body: {e}"))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// `GET url`.
pub fn get(url: impl Into<String>) -> Reply {
    Req::get(url).send()
}

impl Reply {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// A string member of a JSON body (`None` when absent, not a string, or not JSON).
    pub fn json_str(&self, member: &str) -> Option<String> {
        self.json()?.get(member)?.as_str().map(str::to_string)
    }

    /// For replies from the echo upstream: a header the upstream received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let json = self.json()?;
        json.get("headers")?
            .get(name.to_ascii_lowercase())?
            .as_str()
            .map(str::to_string)
    }

    /// For replies from the echo upstream: whether the reply really came from it (its JSON shape).
    pub fn is_from_upstream(&self) -> bool {
        self.json()
            .map(|j| j.get("headers").is_some() && j.get("method").is_some())
            .unwrap_or(false)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (name, value) in &self.headers {
            write!(f, "\n  {name}: {value}")?;
        }
        let body: String = self.body.chars().take(2000).collect();
        write!(f, "\n  body: {body}")
    }
}

/// One HTTP/1.1 request written byte for byte on a new connection (`target` unparsed, as a
/// client may send it: `//a/./b`, `/%61`; headers raw, each ending in CRLF); the status and body.
/// For what a URL library would normalise or refuse before sending.
pub fn raw_request(port: u16, request_line: &str, extra_headers: &[u8]) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = format!("{request_line} HTTP/1.1\r\nconnection: close\r\n").into_bytes();
    if !extra_headers
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"host:"))
    {
        request.extend_from_slice(b"host: gw.test\r\n");
    }
    request.extend_from_slice(extra_headers);
    request.extend_from_slice(b"\r\n");
    stream
        .write_all(&request)
        .unwrap_or_else(|e| panic!("write request: {e}"));
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    let _ = reader.read_line(&mut status_line);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// `integration/sdk/h2_trailers.py`: one h2c POST of `path` with `authorization: Bearer token`,
/// its further arguments (`--body`, `--frames`, extra `name=value` headers), then request
/// trailers unless `trailers` is false; the reply as the client saw it (JSON).
pub fn h2_post(
    port: u16,
    path: &str,
    token: &str,
    args: &[&str],
    trailers: bool,
) -> serde_json::Value {
    let mut command = std::process::Command::new(crate::repo_root().join(".venv/bin/python"));
    command
        .arg(crate::repo_root().join("integration/sdk/h2_trailers.py"))
        .arg(port.to_string())
        .arg(path)
        .arg(format!("authorization=Bearer {token}"))
        .args(args);
    if !trailers {
        command.arg("--no-trailers");
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("h2 client: {e}"));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "h2 client output ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
