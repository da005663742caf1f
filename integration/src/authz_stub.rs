//! Fault-injecting authorization stub: records every request (any method, any path) and answers
//! according to a mode set from the test thread — a JSON decision, an error status, garbage, HTML,
//! an oversized body, a wrong shape, or any of these after a delay; it can also reset every
//! connection without a reply ([`AuthzMode::Reset`]) and go down (connections refused) and come
//! back on the same port. Also stands in for OpenFGA's check API
//! (`Json(json!({"allowed": true}))`; the recorded path shows `/stores/<id>/check`).
//!
//! Each connection is served on its own thread (the std-socket server of the other stubs), so a
//! delayed answer does not hold up other connections; dropping the stub (or taking it down)
//! interrupts delays (they sleep in short steps) and closes its connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http_server::{bind_and_serve, Handler, Incoming, Outgoing, NO_REPLY};
use crate::jwks_stub::StubPort;
use crate::wait::wait_until;

/// How often a delayed answer checks whether the stub is being dropped.
const DELAY_STEP: Duration = Duration::from_millis(20);

/// How the stub answers.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthzMode {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with a small JSON error body.
    Status(u16),
    /// 200 with `not json{`.
    Garbage,
    /// 200 with a valid JSON body of about this many bytes (`{"authorized":true,"pad":"xx…"}`).
    Oversized(usize),
    /// Sleeps, then answers as the inner mode.
    Delay(Duration, Box<AuthzMode>),
    /// 200 with `{"authorized":"yes"}` (a string where a bool belongs).
    WrongShape,
    /// 200 `text/html`: a login page, as a misrouted request would get.
    Html,
    /// Every connection is accepted and reset (RST) without a reply; nothing is recorded (see
    /// [`AuthzStub::reset_connections`]).
    Reset,
}

impl AuthzMode {
    /// `Json({"authorized": true})`.
    pub fn allow() -> AuthzMode {
        AuthzMode::Json(json!({"authorized": true}))
    }

    /// `Json({"authorized": false, "reason": reason})`.
    pub fn deny(reason: &str) -> AuthzMode {
        AuthzMode::Json(json!({"authorized": false, "reason": reason}))
    }

    /// `inner` after `delay`.
    pub fn delayed(delay: Duration, inner: AuthzMode) -> AuthzMode {
        AuthzMode::Delay(delay, Box::new(inner))
    }
}

/// One request as the stub received it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent (path and query string).
    pub path: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Lossy UTF-8.
    pub body: String,
}

impl RecordedRequest {
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
}

struct Shared {
    mode: Mutex<AuthzMode>,
    requests: Mutex<Vec<RecordedRequest>>,
}

pub struct AuthzStub {
    shared: Arc<Shared>,
    port: u16,
    listening: StubPort,
    /// Set when the current server stops (drop, down, reset): its delays end at once.
    stopping: Mutex<Arc<AtomicBool>>,
}

impl AuthzStub {
    /// Starts on a free port of 127.0.0.1; panics when it cannot (test helper).
    pub fn start(mode: AuthzMode) -> AuthzStub {
        AuthzStub::start_on(0, mode).unwrap_or_else(|e| panic!("authz stub: {e}"))
    }

    /// Starts on 127.0.0.1:`port` (0 = any free port).
    pub fn start_on(port: u16, mode: AuthzMode) -> Result<AuthzStub, String> {
        let shared = Arc::new(Shared {
            mode: Mutex::new(AuthzMode::allow()),
            requests: Mutex::new(Vec::new()),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let served = bind_and_serve(port, handler(&shared, &stopping))?;
        let stub = AuthzStub {
            port: served.port(),
            listening: StubPort::serving(served),
            shared,
            stopping: Mutex::new(stopping),
        };
        stub.set_mode(mode);
        Ok(stub)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// How requests are answered from now on (a request already delayed keeps its old mode).
    /// Switching to or from [`AuthzMode::Reset`] while up swaps what listens on the port (open
    /// connections are closed); while down, it applies at [`AuthzStub::come_up`].
    pub fn set_mode(&self, mode: AuthzMode) {
        let resetting = mode == AuthzMode::Reset;
        if resetting && self.listening.is_serving() {
            self.stop_current();
            if let Err(e) = self.listening.reset() {
                panic!("authz stub: reset on {}: {e}", self.port);
            }
        }
        *lock(&self.shared.mode) = mode;
        if !resetting && self.listening.is_resetting() {
            self.serve();
        }
    }

    /// Stops listening and closes every open connection (delayed answers are abandoned); the port
    /// stays reserved, so connections are refused until [`AuthzStub::come_up`].
    pub fn go_down(&self) {
        self.stop_current();
        if let Err(e) = self.listening.park() {
            panic!("authz stub: go down on {}: {e}", self.port);
        }
    }

    /// Listens again on the same port, answering as the current mode (no-op when up).
    pub fn come_up(&self) {
        if self.listening.is_up() {
            return;
        }
        if *lock(&self.shared.mode) == AuthzMode::Reset {
            if let Err(e) = self.listening.reset() {
                panic!("authz stub: reset on {}: {e}", self.port);
            }
        } else {
            self.serve();
        }
    }

    /// Listening (answering, or resetting in [`AuthzMode::Reset`]).
    pub fn is_up(&self) -> bool {
        self.listening.is_up()
    }

    /// Connections reset so far in [`AuthzMode::Reset`].
    pub fn reset_connections(&self) -> usize {
        self.listening.resets()
    }

    /// Every request received so far, oldest first (recorded on arrival, before any delay).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `n` requests arrived; returns the count reached.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Result<usize, String> {
        wait_until(timeout, Duration::from_millis(20), || {
            let seen = self.request_count();
            (seen >= n).then_some(seen)
        })
        .ok_or_else(|| {
            format!(
                "authz stub: expected >= {n} requests within {timeout:?}, saw {}",
                self.request_count()
            )
        })
    }

    /// Serves HTTP on the port with a fresh stop flag.
    fn serve(&self) {
        let stopping = Arc::new(AtomicBool::new(false));
        *lock(&self.stopping) = Arc::clone(&stopping);
        if let Err(e) = self.listening.serve(handler(&self.shared, &stopping)) {
            panic!("authz stub: serve on {}: {e}", self.port);
        }
    }

    /// Ends the delays of the server that is about to stop.
    fn stop_current(&self) {
        lock(&self.stopping).store(true, Ordering::SeqCst);
    }
}

impl Drop for AuthzStub {
    fn drop(&mut self) {
        self.stop_current();
    }
}

fn handler(shared: &Arc<Shared>, stopping: &Arc<AtomicBool>) -> Handler {
    let (shared, stopping) = (Arc::clone(shared), Arc::clone(stopping));
    Arc::new(move |request: Incoming| handle(&shared, request, &stopping))
}

fn handle(shared: &Shared, request: Incoming, stopping: &AtomicBool) -> Outgoing {
    let recorded = RecordedRequest {
        method: request.method,
        path: request.url,
        headers: request.headers,
        body: request.body,
    };
    lock(&shared.requests).push(recorded);
    let mode = lock(&shared.mode).clone();
    // None: the stub is stopping mid-delay: the connection is closed unanswered, as a server
    // that goes down would (answering raced with the close).
    let (status, content_type, body) =
        answer(&mode, stopping).unwrap_or((NO_REPLY, "application/json", String::new()));
    Outgoing {
        status,
        content_type,
        body,
    }
}

fn answer(mode: &AuthzMode, stopping: &AtomicBool) -> Option<(u16, &'static str, String)> {
    const JSON: &str = "application/json";
    match mode {
        AuthzMode::Json(body) => Some((200, JSON, body.to_string())),
        AuthzMode::Status(code) => {
            Some((*code, JSON, json!({"error": "stub failure"}).to_string()))
        }
        AuthzMode::Garbage => Some((200, JSON, "not json{".to_string())),
        AuthzMode::Oversized(bytes) => Some((200, JSON, oversized(*bytes))),
        AuthzMode::WrongShape => Some((200, JSON, json!({"authorized": "yes"}).to_string())),
        AuthzMode::Html => Some((
            200,
            "text/html",
            "<!doctype html><html><body><h1>Sign in</h1><form></form></body></html>".to_string(),
        )),
        // Only reached by a request read just before the switch to resetting.
        AuthzMode::Reset => Some((503, JSON, json!({"error": "resetting"}).to_string())),
        AuthzMode::Delay(delay, inner) => {
            sleep_unless_stopping(*delay, stopping).then(|| answer(inner, stopping))?
        }
    }
}

/// `{"authorized":true,"pad":"xx…"}` padded to `bytes` (or the smallest such body).
fn oversized(bytes: usize) -> String {
    let frame = json!({"authorized": true, "pad": ""}).to_string();
    let pad = "x".repeat(bytes.saturating_sub(frame.len()));
    json!({"authorized": true, "pad": pad}).to_string()
}

/// Sleeps `delay` in short steps; false when the stub started stopping meanwhile.
fn sleep_unless_stopping(delay: Duration, stopping: &AtomicBool) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        if stopping.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(DELAY_STEP.min(deadline - now));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Req;

    #[test]
    fn a_delayed_answer_does_not_block_other_requests() {
        let stub = AuthzStub::start(AuthzMode::delayed(
            Duration::from_secs(3),
            AuthzMode::allow(),
        ));
        let slow_url = stub.url("/api/authorize");
        let slow = std::thread::spawn(move || Req::post(slow_url).body("{\"slow\":1}").send());
        stub.wait_requests(1, Duration::from_secs(5))
            .expect("the slow request arrived");

        stub.set_mode(AuthzMode::deny("nope"));
        let started = Instant::now();
        let fast = Req::post(stub.url("/api/authorize")).body("{}").send();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(
            fast.json(),
            Some(json!({"authorized": false, "reason": "nope"}))
        );

        let slow = slow.join().expect("slow client");
        assert_eq!(slow.status, 200);
        assert_eq!(slow.json(), Some(json!({"authorized": true})));
        assert_eq!(stub.requests()[0].body, "{\"slow\":1}");
    }

    #[test]
    fn drop_returns_promptly_while_a_delay_sleeps() {
        let stub = AuthzStub::start(AuthzMode::delayed(
            Duration::from_secs(60),
            AuthzMode::allow(),
        ));
        let url = stub.url("/");
        let client = std::thread::spawn(move || {
            Req::post(url)
                .body("{}")
                .timeout(Duration::from_secs(10))
                .try_send()
        });
        stub.wait_requests(1, Duration::from_secs(5))
            .expect("request arrived");
        let started = Instant::now();
        drop(stub);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        let outcome = client.join().expect("client thread");
        assert!(
            outcome.as_ref().map_or(true, |r| r.status != 200),
            "{outcome:?}"
        );
    }

    #[test]
    fn every_mode_answers_as_documented() {
        let stub = AuthzStub::start(AuthzMode::Status(503));
        let send = || Req::post(stub.url("/api/authorize")).body("{}").send();
        let reply = send();
        assert_eq!(reply.status, 503);
        assert!(reply.json_str("error").is_some(), "{reply}");

        stub.set_mode(AuthzMode::Garbage);
        let reply = send();
        assert_eq!((reply.status, reply.body.as_str()), (200, "not json{"));

        stub.set_mode(AuthzMode::WrongShape);
        assert_eq!(send().json(), Some(json!({"authorized": "yes"})));

        stub.set_mode(AuthzMode::Oversized(100_000));
        let reply = send();
        let body = reply.json().expect("valid JSON");
        assert_eq!(body["authorized"], true);
        assert!(
            (100_000..100_100).contains(&reply.body.len()),
            "{}",
            reply.body.len()
        );

        stub.set_mode(AuthzMode::delayed(
            Duration::from_millis(50),
            AuthzMode::Status(500),
        ));
        assert_eq!(send().status, 500);
        assert_eq!(stub.request_count(), 5);
        stub.clear();
        assert_eq!(stub.request_count(), 0);
    }

    #[test]
    fn html_reset_down_and_back_on_the_same_port() {
        let stub = AuthzStub::start(AuthzMode::Html);
        let send = || {
            Req::post(stub.url("/api/authorize"))
                .body("{}")
                .timeout(Duration::from_secs(5))
                .try_send()
        };
        let reply = send().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("text/html"));
        assert!(reply.body.contains("<html>"));

        stub.set_mode(AuthzMode::Reset);
        assert!(send().is_err(), "a reset connection gives no reply");
        assert!(stub.reset_connections() >= 1);
        assert_eq!(stub.request_count(), 1, "resets are not recorded");

        stub.set_mode(AuthzMode::allow());
        assert_eq!(send().map(|r| r.status), Ok(200));

        stub.go_down();
        assert!(!stub.is_up());
        assert!(std::net::TcpStream::connect(("127.0.0.1", stub.port())).is_err());
        stub.set_mode(AuthzMode::Status(500));
        stub.come_up();
        assert_eq!(send().map(|r| r.status), Ok(500));
        assert_eq!(stub.request_count(), 3);
    }

    #[test]
    fn going_down_cuts_a_delayed_answer() {
        let stub = AuthzStub::start(AuthzMode::delayed(
            Duration::from_secs(30),
            AuthzMode::allow(),
        ));
        let url = stub.url("/");
        let client = std::thread::spawn(move || {
            Req::post(url)
                .body("{}")
                .timeout(Duration::from_secs(10))
                .try_send()
        });
        stub.wait_requests(1, Duration::from_secs(5))
            .expect("request arrived");
        let started = Instant::now();
        stub.go_down();
        let outcome = client.join().expect("client thread");
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        stub.set_mode(AuthzMode::allow());
        stub.come_up();
        let reply = Req::post(stub.url("/")).body("{}").send();
        assert_eq!(reply.json(), Some(json!({"authorized": true})));
    }

    #[test]
    fn records_openfga_checks() {
        let stub = AuthzStub::start(AuthzMode::Json(json!({"allowed": true})));
        let check = json!({"tuple_key": {"user": "user:alice", "relation": "can_invoke",
                           "object": "model:gpt"}});
        let reply = Req::post(stub.url("/stores/01STORE/check"))
            .header("authorization", "Bearer fga-key")
            .json(&check)
            .send();
        assert_eq!(reply.json(), Some(json!({"allowed": true})));
        let recorded = &stub.requests()[0];
        assert_eq!(recorded.method, "POST");
        assert_eq!(recorded.path, "/stores/01STORE/check");
        assert_eq!(recorded.header("Authorization"), Some("Bearer fga-key"));
        assert_eq!(recorded.json(), Some(check));
    }
}
