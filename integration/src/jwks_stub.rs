//! JWKS / IdP stub: serves a JWKS at `/jwks` and an OIDC discovery document at
//! `/.well-known/openid-configuration`, controlled from the test thread: swap the key set
//! (rotation), make `/jwks` fail in several ways, count requests, and start "down" (the port is
//! bound but not listening, so connections are refused) to come up later on the same port.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
}

struct State {
    jwks: Value,
    mode: JwksMode,
    issuer: String,
    jwks_uri: String,
}

struct Shared {
    state: Mutex<State>,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

pub struct JwksStub {
    shared: Arc<Shared>,
    port: u16,
    /// Bound, not listening: what keeps the port while the stub is "down".
    parked: Mutex<Option<Socket>>,
    served: Mutex<Option<Served>>,
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
            parked: Mutex::new(None),
            served: Mutex::new(Some(served)),
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
            parked: Mutex::new(Some(socket)),
            served: Mutex::new(None),
        }
    }

    /// Starts listening on the reserved port (no-op when already up).
    pub fn come_up(&self) {
        let Some(socket) = lock(&self.parked).take() else {
            return;
        };
        if let Err(e) = socket.listen(128) {
            panic!("JWKS stub: listen on {}: {e}", self.port);
        }
        let listener: TcpListener = socket.into();
        let served = serve(listener, handler(Arc::clone(&self.shared)))
            .unwrap_or_else(|e| panic!("JWKS stub: {e}"));
        *lock(&self.served) = Some(served);
    }

    pub fn is_up(&self) -> bool {
        lock(&self.served).is_some()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the key set served from now on (rotation).
    pub fn set_jwks(&self, jwks: Value) {
        lock(&self.shared.state).jwks = jwks;
    }

    pub fn set_mode(&self, mode: JwksMode) {
        lock(&self.shared.state).mode = mode;
    }

    /// `issuer` and `jwks_uri` of the discovery document
    /// (defaults: `https://idp.test` and `http://idp/jwks`).
    pub fn set_discovery(&self, issuer: &str, jwks_uri: &str) {
        let mut state = lock(&self.shared.state);
        state.issuer = issuer.to_string();
        state.jwks_uri = jwks_uri.to_string();
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
                }
            }
            "/.well-known/openid-configuration" => {
                shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
                let state = lock(&shared.state);
                let doc = json!({"issuer": state.issuer, "jwks_uri": state.jwks_uri});
                Outgoing::json(200, doc.to_string())
            }
            _ => Outgoing::json(404, json!({"error": "not found"}).to_string()),
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
