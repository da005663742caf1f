//! A small HTTP/1.1 server for the stub servers: one thread per connection, keep-alive, each
//! request answered on its connection's thread (so a deliberately slow reply blocks only its own
//! connection). Written on std sockets because tiny_http, used before, now and then left a
//! request on a reused upstream connection unanswered under concurrent load (8 concurrent
//! requests through Envoy: 8 sent upstream, 4 ever handled).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bodies beyond this are refused (the stubs never need more).
const MAX_BODY: usize = 64 << 20;

/// What a handler sees of a request.
pub(crate) struct Incoming {
    pub method: String,
    pub url: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub(crate) struct Outgoing {
    /// [`NO_REPLY`] closes the connection without answering.
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The status a handler returns to have the connection closed unanswered (a server going down
/// mid-request).
pub(crate) const NO_REPLY: u16 = 0;

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

pub(crate) struct Served {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Open connections, shut down on drop so their threads end.
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Served {
    pub fn port(&self) -> u16 {
        self.port
    }
}

pub(crate) fn bind_and_serve(port: u16, handler: Handler) -> Result<Served, String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot bind 127.0.0.1:{port}: {e}"))?;
    serve(listener, handler)
}

pub(crate) fn serve(listener: TcpListener, handler: Handler) -> Result<Served, String> {
    let port = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port();
    let stop = Arc::new(AtomicBool::new(false));
    let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let (stop_flag, open) = (Arc::clone(&stop), Arc::clone(&connections));
    let thread = std::thread::Builder::new()
        .name("stub-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let (Ok(mut list), Ok(copy)) = (open.lock(), stream.try_clone()) {
                    list.retain(|s| s.peer_addr().is_ok());
                    list.push(copy);
                }
                let handler = Arc::clone(&handler);
                let _ = std::thread::Builder::new()
                    .name("stub-conn".into())
                    .spawn(move || serve_connection(stream, handler.as_ref()));
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
    Ok(Served {
        port,
        stop,
        thread: Some(thread),
        connections,
    })
}

fn serve_connection(stream: TcpStream, handler: &(dyn Fn(Incoming) -> Outgoing + Send + Sync)) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    // Without it Nagle and Envoy's delayed ACKs add ~40 ms to every proxied request.
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(incoming) = read_request(&mut reader) {
        let close = incoming
            .headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        let out = handler(incoming);
        if out.status == NO_REPLY {
            break;
        }
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}\r\n",
            out.status,
            reason(out.status),
            out.content_type,
            out.body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        let mut response = head.into_bytes();
        response.extend_from_slice(out.body.as_bytes());
        let written = writer.write_all(&response).and_then(|()| writer.flush());
        if written.is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// One request from the connection; None at its end or on anything unparseable.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Incoming> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let url = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        // Field values may hold bytes that are not UTF-8 (obs-text); shown lossily.
        let mut raw = Vec::new();
        reader.read_until(b'\n', &mut raw).ok()?;
        let header = String::from_utf8_lossy(&raw);
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let length: usize = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
        if length > MAX_BODY {
            return None;
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Incoming {
        method,
        url,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size_text = size_line.trim().split(';').next()?;
        let size = usize::from_str_radix(size_text, 16).ok()?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let mut trailer = String::new();
                reader.read_line(&mut trailer).ok()?;
                if trailer.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return None;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Ok(list) = self.connections.lock() {
            for stream in list.iter() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}
