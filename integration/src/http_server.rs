//! A tiny_http server run in the background, each request handled on its own thread (so a
//! deliberately slow reply never blocks the next request). Shared by the stub servers.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a handler sees of a request.
pub(crate) struct Incoming {
    pub method: String,
    pub url: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a handler answers.
pub(crate) struct Outgoing {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Outgoing {
    pub fn json(status: u16, body: String) -> Self {
        Outgoing {
            status,
            content_type: "application/json",
            body,
        }
    }
}

pub(crate) type Handler = Arc<dyn Fn(Incoming) -> Outgoing + Send + Sync>;

/// A running server; stops (and joins its accept loop) when dropped.
pub(crate) struct Served {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    pub fn port(&self) -> u16 {
        self.server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .unwrap_or(0)
    }
}

/// Binds 127.0.0.1:`port` (0 = any free port) and serves.
pub(crate) fn bind_and_serve(port: u16, handler: Handler) -> Result<Served, String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot bind 127.0.0.1:{port}: {e}"))?;
    serve(listener, handler)
}

/// Serves on an already listening socket.
pub(crate) fn serve(listener: TcpListener, handler: Handler) -> Result<Served, String> {
    let server = Arc::new(
        tiny_http::Server::from_listener(listener, None).map_err(|e| format!("tiny_http: {e}"))?,
    );
    let accept = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("stub-http".into())
        .spawn(move || {
            for request in accept.incoming_requests() {
                let handler = Arc::clone(&handler);
                let _ = std::thread::Builder::new()
                    .name("stub-request".into())
                    .spawn(move || handle(request, handler.as_ref()));
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
    Ok(Served {
        server,
        thread: Some(thread),
    })
}

fn handle(mut request: tiny_http::Request, handler: &(dyn Fn(Incoming) -> Outgoing + Send + Sync)) {
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let incoming = Incoming {
        method: request.method().as_str().to_string(),
        url: request.url().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect(),
        body,
    };
    let out = handler(incoming);
    let mut response = tiny_http::Response::from_string(out.body).with_status_code(out.status);
    if let Ok(header) = tiny_http::Header::from_bytes("content-type", out.content_type) {
        response = response.with_header(header);
    }
    let _ = request.respond(response);
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
