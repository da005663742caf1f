//! JWKS / IdP stub: serves a JWKS at `/jwks` and an OIDC discovery document at
//! `/.well-known/openid-configuration`, controlled from the test thread: swap the key set
//! (rotation), make `/jwks` fail in several ways, count requests, and start "down" (the port is
//! bound but not listening, so connections are refused) to come up later on the same port.
//! It can also go down again ([`JwksStub::go_down`]) and reset every connection without a reply
//! ([`JwksMode::Reset`]); [`StubPort`] does that port juggling for the authorization stub too.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};

use crate::http_server::{bind_and_serve, serve, Handler, Incoming, Outgoing, Served};
use crate::wait::wait_until;

/// How `/jwks` answers.
#[derive(Clone, Debug, PartialEq)]
pub enum JwksMode {
    /// 200 with the current key set.
    Ok,
    /// This status with a small JSON error body.
    Status(u16),
    /// 200 with an HTML page instead of JSON.
    Garbage,
    /// 200 with `{"keys":[]}`.
    EmptyKeys,
    /// The current key set with status 200, after this delay (for callout timeouts).
    Delay(Duration),
    /// 200 with the current key set padded to about this many bytes
    /// (`{"keys":[…],"pad":"xx…"}`): a valid JWKS, only too big.
    Oversized(usize),
    /// Every connection is accepted and then reset (RST) without a reply; `/jwks` requests are
    /// not counted, see [`JwksStub::reset_connections`].
    Reset,
}

struct State {
    jwks: Value,
    mode: JwksMode,
    issuer: String,
    jwks_uri: String,
    /// More members of the discovery document (sign-in endpoints).
    discovery_extra: Value,
}

struct Shared {
    state: Mutex<State>,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

pub struct JwksStub {
    shared: Arc<Shared>,
    port: u16,
    /// Parked (down), serving HTTP, or resetting connections.
    listening: StubPort,
}

impl JwksStub {
    /// Starts serving `jwks` on a free port.
    pub fn start(jwks: Value) -> JwksStub {
        JwksStub::start_on(0, jwks).unwrap_or_else(|e| panic!("JWKS stub: {e}"))
    }

    /// Starts serving `jwks` on 127.0.0.1:`port` (0 = any free port).
    pub fn start_on(port: u16, jwks: Value) -> Result<JwksStub, String> {
        let shared = Shared::new(jwks);
        let served = bind_and_serve(port, handler(Arc::clone(&shared)))?;
        Ok(JwksStub {
            port: served.port(),
            shared,
            listening: StubPort::serving(served),
        })
    }

    /// Reserves a free port without listening on it: connections to it are refused until
    /// [`JwksStub::come_up`].
    pub fn start_down(jwks: Value) -> JwksStub {
        let park = || -> std::io::Result<(Socket, u16)> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())?;
            let port = socket
                .local_addr()?
                .as_socket()
                .map(|a| a.port())
                .unwrap_or(0);
            Ok((socket, port))
        };
        let (socket, port) = park().unwrap_or_else(|e| panic!("JWKS stub: reserve a port: {e}"));
        JwksStub {
            shared: Shared::new(jwks),
            port,
            listening: StubPort::parked(socket, port),
        }
    }

    /// Starts listening on the reserved port (no-op when already up). In [`JwksMode::Reset`]
    /// it listens only to reset connections.
    pub fn come_up(&self) {
        let outcome = if lock(&self.shared.state).mode == JwksMode::Reset {
            self.listening.reset()
        } else {
            self.listening.serve(handler(Arc::clone(&self.shared)))
        };
        if let Err(e) = outcome {
            panic!("JWKS stub: come up on {}: {e}", self.port);
        }
    }

    /// Stops listening and closes every open connection; the port stays reserved, so
    /// connections are refused until [`JwksStub::come_up`] (no-op when already down).
    pub fn go_down(&self) {
        if let Err(e) = self.listening.park() {
            panic!("JWKS stub: go down on {}: {e}", self.port);
        }
    }

    /// Listening (serving, or resetting in [`JwksMode::Reset`]).
    pub fn is_up(&self) -> bool {
        self.listening.is_up()
    }

    /// Connections reset so far in [`JwksMode::Reset`].
    pub fn reset_connections(&self) -> usize {
        self.listening.resets()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the key set served from now on (rotation).
    pub fn set_jwks(&self, jwks: Value) {
        lock(&self.shared.state).jwks = jwks;
    }

    /// How `/jwks` answers from now on. Switching to or from [`JwksMode::Reset`] while up swaps
    /// what listens on the port (open connections are closed); while down, it applies at
    /// [`JwksStub::come_up`].
    pub fn set_mode(&self, mode: JwksMode) {
        let resetting = mode == JwksMode::Reset;
        if resetting && self.listening.is_serving() {
            if let Err(e) = self.listening.reset() {
                panic!("JWKS stub: reset on {}: {e}", self.port);
            }
        }
        lock(&self.shared.state).mode = mode;
        if !resetting && self.listening.is_resetting() {
            if let Err(e) = self.listening.serve(handler(Arc::clone(&self.shared))) {
                panic!("JWKS stub: serve on {}: {e}", self.port);
            }
        }
    }

    /// `issuer` and `jwks_uri` of the discovery document
    /// (defaults: `https://idp.test` and `http://idp/jwks`).
    pub fn set_discovery(&self, issuer: &str, jwks_uri: &str) {
        let mut state = lock(&self.shared.state);
        state.issuer = issuer.to_string();
        state.jwks_uri = jwks_uri.to_string();
    }

    /// More members of the discovery document from now on (e.g. `authorization_endpoint`).
    pub fn set_discovery_extra(&self, members: Value) {
        lock(&self.shared.state).discovery_extra = members;
    }

    /// Requests to `/jwks` received so far (whatever the mode answered).
    pub fn requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Requests to `/.well-known/openid-configuration` received so far.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// Waits until `/jwks` has been requested at least `n` times; returns the count reached.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Result<usize, String> {
        wait_until(timeout, Duration::from_millis(20), || {
            let seen = self.requests();
            (seen >= n).then_some(seen)
        })
        .ok_or_else(|| {
            format!(
                "JWKS stub: expected >= {n} /jwks requests within {timeout:?}, saw {}",
                self.requests()
            )
        })
    }
}

impl Shared {
    fn new(jwks: Value) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                jwks,
                mode: JwksMode::Ok,
                issuer: "https://idp.test".into(),
                jwks_uri: "http://idp/jwks".into(),
                discovery_extra: json!({}),
            }),
            jwks_requests: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
        })
    }
}

fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |req: Incoming| {
        let path = req.url.split('?').next().unwrap_or("");
        match path {
            "/jwks" => {
                shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
                let (mode, jwks) = {
                    let state = lock(&shared.state);
                    (state.mode.clone(), state.jwks.clone())
                };
                match mode {
                    JwksMode::Ok => Outgoing::json(200, jwks.to_string()),
                    JwksMode::Status(code) => {
                        Outgoing::json(code, json!({"error": "stub failure"}).to_string())
                    }
                    JwksMode::Garbage => Outgoing {
                        status: 200,
                        content_type: "text/html",
                        body: "<html><body><h1>Sign in</h1></body></html>".into(),
                    },
                    JwksMode::EmptyKeys => Outgoing::json(200, json!({"keys": []}).to_string()),
                    JwksMode::Delay(delay) => {
                        std::thread::sleep(delay);
                        Outgoing::json(200, jwks.to_string())
                    }
                    JwksMode::Oversized(bytes) => Outgoing::json(200, padded(&jwks, bytes)),
                    // Only reached by a request read just before the switch to resetting.
                    JwksMode::Reset => {
                        Outgoing::json(503, json!({"error": "resetting"}).to_string())
                    }
                }
            }
            "/.well-known/openid-configuration" => {
                shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
                let state = lock(&shared.state);
                let mut doc = json!({"issuer": state.issuer, "jwks_uri": state.jwks_uri});
                if let (Some(doc), Some(extra)) =
                    (doc.as_object_mut(), state.discovery_extra.as_object())
                {
                    doc.extend(extra.clone());
                }
                Outgoing::json(200, doc.to_string())
            }
            _ => Outgoing::json(404, json!({"error": "not found"}).to_string()),
        }
    })
}

/// `jwks` with a `"pad"` member that brings its JSON text to about `bytes` bytes.
fn padded(jwks: &Value, bytes: usize) -> String {
    let mut padded = jwks.clone();
    let frame = {
        padded["pad"] = json!("");
        padded.to_string().len()
    };
    padded["pad"] = json!("x".repeat(bytes.saturating_sub(frame)));
    padded.to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What holds a stub's port: parked (bound, not listening: connections are refused), an HTTP
/// server, or a loop that accepts connections and resets them without a reply. Switching closes
/// whatever held the port before (listener and open connections) and binds it again.
pub(crate) struct StubPort {
    port: u16,
    state: Mutex<Holder>,
    resets: Arc<AtomicUsize>,
}

// The values are never read: each one keeps the port (and its threads) until it is dropped.
#[allow(dead_code)]
enum Holder {
    Parked(Socket),
    Serving(Served),
    Resetting(Resetter),
    /// Only while switching.
    Nothing,
}

impl StubPort {
    pub(crate) fn serving(served: Served) -> StubPort {
        StubPort {
            port: served.port(),
            state: Mutex::new(Holder::Serving(served)),
            resets: Arc::default(),
        }
    }

    pub(crate) fn parked(socket: Socket, port: u16) -> StubPort {
        StubPort {
            port,
            state: Mutex::new(Holder::Parked(socket)),
            resets: Arc::default(),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        !matches!(*lock(&self.state), Holder::Parked(_) | Holder::Nothing)
    }

    pub(crate) fn is_serving(&self) -> bool {
        matches!(*lock(&self.state), Holder::Serving(_))
    }

    pub(crate) fn is_resetting(&self) -> bool {
        matches!(*lock(&self.state), Holder::Resetting(_))
    }

    pub(crate) fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }

    /// Refuse connections (no-op when parked).
    pub(crate) fn park(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        if matches!(*state, Holder::Parked(_)) {
            return Ok(());
        }
        let socket = self.rebind(&mut state)?;
        *state = Holder::Parked(socket);
        Ok(())
    }

    /// Serve HTTP with `handler` (no-op when already serving).
    pub(crate) fn serve(&self, handler: Handler) -> Result<(), String> {
        let mut state = lock(&self.state);
        if matches!(*state, Holder::Serving(_)) {
            return Ok(());
        }
        let listener = listen(self.rebind(&mut state)?)?;
        *state = Holder::Serving(serve(listener, handler)?);
        Ok(())
    }

    /// Reset every connection (no-op when already resetting).
    pub(crate) fn reset(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        if matches!(*state, Holder::Resetting(_)) {
            return Ok(());
        }
        let listener = listen(self.rebind(&mut state)?)?;
        *state = Holder::Resetting(Resetter::start(listener, Arc::clone(&self.resets))?);
        Ok(())
    }

    /// Closes what holds the port now and binds a fresh socket to it (not listening yet). The old
    /// listener is closed once its thread is joined; a bind is still retried briefly.
    fn rebind(&self, state: &mut Holder) -> Result<Socket, String> {
        // Dropping the holder joins its accept thread and shuts its connections down.
        drop(std::mem::replace(state, Holder::Nothing));
        let mut last = String::new();
        let bound =
            wait_until(
                Duration::from_secs(3),
                Duration::from_millis(20),
                || match bind_reusable(self.port) {
                    Ok(socket) => Some(socket),
                    Err(e) => {
                        last = e.to_string();
                        None
                    }
                },
            );
        bound.ok_or_else(|| format!("bind 127.0.0.1:{}: {last}", self.port))
    }
}

/// A socket bound to 127.0.0.1:`port` with `SO_REUSEADDR` (connections of the previous holder
/// may still be in TIME_WAIT), not listening.
fn bind_reusable(port: u16) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into())?;
    Ok(socket)
}

fn listen(socket: Socket) -> Result<TcpListener, String> {
    socket.listen(128).map_err(|e| format!("listen: {e}"))?;
    Ok(socket.into())
}

/// Accepts connections and resets each one (SO_LINGER 0, then close) without a reply, after
/// giving the client a moment to send its request.
struct Resetter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Resetter {
    fn start(listener: TcpListener, count: Arc<AtomicUsize>) -> Result<Resetter, String> {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("stub-reset".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            reset(stream);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .map_err(|e| format!("spawn: {e}"))?;
        Ok(Resetter {
            stop,
            thread: Some(thread),
        })
    }
}

fn reset(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut request = [0u8; 4096];
    let _ = stream.read(&mut request);
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

impl Drop for Resetter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Req;
    use crate::fixtures::{jwks, FixtureKey};

    #[test]
    fn goes_down_resets_and_comes_back_on_the_same_port() {
        let stub = JwksStub::start(jwks(&[FixtureKey::Rsa1]));
        let url = format!("http://127.0.0.1:{}/jwks", stub.port());
        let get = || Req::get(&url).timeout(Duration::from_secs(5)).try_send();
        assert_eq!(get().map(|r| r.status), Ok(200));

        stub.set_mode(JwksMode::Oversized(2 << 20));
        let reply = get().unwrap_or_else(|e| panic!("{e}"));
        let body = reply.json().unwrap_or_default();
        assert_eq!(body["keys"][0]["kid"], "rsa-1");
        assert!((2 << 20..(2 << 20) + 100).contains(&reply.body.len()));

        stub.set_mode(JwksMode::Reset);
        assert!(stub.is_up());
        assert!(get().is_err(), "a reset connection gives no reply");
        assert!(stub.reset_connections() >= 1);
        assert_eq!(stub.requests(), 2, "resets are not /jwks requests");

        stub.set_mode(JwksMode::Ok);
        assert_eq!(get().map(|r| r.status), Ok(200));

        stub.go_down();
        assert!(!stub.is_up());
        let refused = std::net::TcpStream::connect(("127.0.0.1", stub.port()));
        assert!(refused.is_err(), "connections are refused while down");
        stub.set_mode(JwksMode::Reset);
        assert!(!stub.is_up(), "a mode change does not bring it up");
        stub.set_mode(JwksMode::Status(500));
        stub.come_up();
        assert_eq!(get().map(|r| r.status), Ok(500));
        stub.go_down();
        stub.go_down();
        stub.set_mode(JwksMode::Ok);
        stub.come_up();
        assert_eq!(get().map(|r| r.status), Ok(200));
    }
}
