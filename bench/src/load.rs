//! The load generator: a closed loop over N keep-alive HTTP/1.1 connections in one thread (one
//! epoll loop, as wrk does), so it fits on the one core the benchmark gives it. Each request
//! carries `authorization: Bearer <token>`, cycling through a token list in order, which is how
//! the uncached variants make every request present a token the filter has not seen recently.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::http1::{parse_response, Parsed};

/// When the load stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Measure for this long after the warm-up.
    After(Duration),
    /// Send exactly this many requests (no warm-up), then wait for their responses.
    Requests(u64),
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub addr: SocketAddr,
    pub connections: usize,
    pub path: String,
    /// Cycled in order, one per request; empty: no authorization header.
    pub tokens: Vec<String>,
    pub warmup: Duration,
    pub stop: Stop,
    /// Give up when no response at all arrives for this long.
    pub stall_timeout: Duration,
    /// Sent as a JSON body with every request (a POST then; a GET without it).
    pub body: Option<Vec<u8>>,
}

/// What a run measured. Latencies and `rps` cover the measured phase only; `statuses` and
/// `errors` cover warm-up too, so a single bad response anywhere shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub connections: usize,
    pub requests: u64,
    pub warmup_requests: u64,
    pub elapsed_s: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// Responses by status, warm-up included.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport or protocol failures (reset, close mid-response, unparsable response).
    pub errors: u64,
    pub first_error: Option<String>,
    pub distinct_tokens: usize,
    /// Requests sent, warm-up included (each took the next token).
    pub requests_sent: u64,
    /// The generator's own CPU time, so the harness can tell other work on the machine apart.
    pub cpu_s: f64,
}

impl LoadReport {
    /// Responses whose status is not 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    sent_at: Instant,
    in_flight: bool,
}

struct Generator<'a> {
    options: &'a LoadOptions,
    /// Request line and fixed headers, built once.
    request_head: Vec<u8>,
    poll: Poll,
    conns: Vec<Conn>,
    next_token: usize,
    sent: u64,
    /// No new request is started once this is false.
    sending: bool,
    started: Instant,
    measure_from: Instant,
    measure_until: Option<Instant>,
    last_response: Instant,
    latencies_us: Vec<u32>,
    report: LoadReport,
}

/// Runs the load and reports. `Err` when it could not run at all (no connection, a stall).
pub fn run(options: &LoadOptions) -> Result<LoadReport, String> {
    let started = Instant::now();
    let (measure_from, measure_until) = match options.stop {
        Stop::After(duration) => {
            let from = started + options.warmup;
            (from, Some(from + duration))
        }
        Stop::Requests(_) => (started, None),
    };
    let mut generator = Generator {
        options,
        request_head: match &options.body {
            None => format!(
                "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: authgate-load\r\n",
                options.path, options.addr
            ),
            Some(body) => format!(
                "POST {} HTTP/1.1\r\nhost: {}\r\nuser-agent: authgate-load\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n",
                options.path,
                options.addr,
                body.len()
            ),
        }
        .into_bytes(),
        poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
        conns: Vec::with_capacity(options.connections),
        next_token: 0,
        sent: 0,
        sending: true,
        started,
        measure_from,
        measure_until,
        last_response: started,
        latencies_us: Vec::with_capacity(1 << 20),
        report: LoadReport {
            connections: options.connections,
            distinct_tokens: options.tokens.len(),
            ..LoadReport::default()
        },
    };
    for index in 0..options.connections {
        let stream = generator.connect(index)?;
        generator.conns.push(Conn {
            stream,
            out: Vec::with_capacity(2048),
            written: 0,
            input: Vec::with_capacity(4096),
            sent_at: started,
            in_flight: false,
        });
    }
    for index in 0..options.connections {
        generator.send_next(index);
    }
    generator.event_loop()?;
    Ok(generator.finish())
}

impl Generator<'_> {
    fn connect(&mut self, index: usize) -> Result<TcpStream, String> {
        let addr = self.options.addr;
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(stream);
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        Ok(stream)
    }

    fn event_loop(&mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if let Some(until) = self.measure_until {
                if now >= until {
                    return Ok(());
                }
            }
            if let Stop::Requests(total) = self.options.stop {
                if self.sent >= total && self.conns.iter().all(|c| !c.in_flight) {
                    return Ok(());
                }
            }
            if now.duration_since(self.last_response) > self.options.stall_timeout {
                let in_flight = self.conns.iter().filter(|c| c.in_flight).count();
                return Err(format!(
                    "no response for {:?} ({in_flight} requests in flight, {} answered)",
                    self.options.stall_timeout,
                    self.report.requests + self.report.warmup_requests
                ));
            }
            let wait = self
                .measure_until
                .map(|until| until.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(format!("epoll wait: {e}"));
                }
            }
            for event in events.iter() {
                let index = event.token().0;
                if event.is_writable() {
                    self.flush(index);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.receive(index);
                }
            }
        }
    }

    /// Starts the next request on connection `index`, unless the run is stopping.
    fn send_next(&mut self, index: usize) {
        if let Stop::Requests(total) = self.options.stop {
            if self.sent >= total {
                self.sending = false;
            }
        }
        if !self.sending {
            return;
        }
        let conn = &mut self.conns[index];
        conn.out.clear();
        conn.out.extend_from_slice(&self.request_head);
        if !self.options.tokens.is_empty() {
            let token = &self.options.tokens[self.next_token % self.options.tokens.len()];
            self.next_token = self.next_token.wrapping_add(1);
            // A "name: value" line (a session cookie) goes as that header, anything else as
            // a bearer token.
            if !token.contains(": ") {
                conn.out.extend_from_slice(b"authorization: Bearer ");
            }
            conn.out.extend_from_slice(token.as_bytes());
            conn.out.extend_from_slice(b"\r\n");
        }
        conn.out.extend_from_slice(b"\r\n");
        if let Some(body) = &self.options.body {
            conn.out.extend_from_slice(body);
        }
        conn.written = 0;
        conn.in_flight = true;
        conn.sent_at = Instant::now();
        self.sent += 1;
        self.flush(index);
    }

    fn flush(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        while conn.written < conn.out.len() {
            match conn.stream.write(&conn.out[conn.written..]) {
                Ok(0) => break,
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(index, format!("write: {e}"));
                    return;
                }
            }
        }
    }

    /// Reads everything available (mio is edge-triggered) and completes responses.
    fn receive(&mut self, index: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let read = self.conns[index].stream.read(&mut buf);
            match read {
                Ok(0) => {
                    let conn = &self.conns[index];
                    if conn.in_flight || !conn.input.is_empty() {
                        self.fail(index, "connection closed by the server mid-request".into());
                    } else {
                        self.reconnect(index);
                    }
                    return;
                }
                Ok(n) => {
                    self.conns[index].input.extend_from_slice(&buf[..n]);
                    if !self.complete_responses(index) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(index, format!("read: {e}"));
                    return;
                }
            }
        }
    }

    /// Handles every complete response in the input; false when the connection was replaced.
    fn complete_responses(&mut self, index: usize) -> bool {
        loop {
            match parse_response(&self.conns[index].input) {
                Parsed::Incomplete => return true,
                Parsed::Invalid(e) => {
                    self.fail(index, format!("bad response: {e}"));
                    return false;
                }
                Parsed::Complete { status, len, close } => {
                    let now = Instant::now();
                    let conn = &mut self.conns[index];
                    conn.input.drain(..len);
                    if !conn.in_flight {
                        self.fail(index, "response without a request".into());
                        return false;
                    }
                    conn.in_flight = false;
                    let latency = now.duration_since(conn.sent_at);
                    self.record(status, latency, now);
                    if close {
                        self.reconnect(index);
                        return false;
                    }
                    self.send_next(index);
                }
            }
        }
    }

    fn record(&mut self, status: u16, latency: Duration, now: Instant) {
        self.last_response = now;
        *self.report.statuses.entry(status).or_default() += 1;
        let measured = now >= self.measure_from && self.measure_until.is_none_or(|u| now < u);
        if measured {
            self.report.requests += 1;
            let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
            self.latencies_us.push(micros);
        } else {
            self.report.warmup_requests += 1;
        }
    }

    fn fail(&mut self, index: usize, error: String) {
        self.report.errors += 1;
        self.report.first_error.get_or_insert(error);
        self.reconnect(index);
    }

    /// A fresh connection in slot `index` that goes on with the next request.
    fn reconnect(&mut self, index: usize) {
        let _ = self
            .poll
            .registry()
            .deregister(&mut self.conns[index].stream);
        match self.connect(index) {
            Ok(stream) => {
                let conn = &mut self.conns[index];
                conn.stream = stream;
                conn.input.clear();
                conn.in_flight = false;
                self.send_next(index);
            }
            Err(e) => {
                // Leave the slot idle; the stall timeout ends a run with no live connection.
                self.report.errors += 1;
                self.report.first_error.get_or_insert(e);
                self.conns[index].in_flight = false;
            }
        }
    }

    fn finish(mut self) -> LoadReport {
        let elapsed = match self.measure_until {
            Some(until) => until.saturating_duration_since(self.measure_from),
            None => self.last_response.saturating_duration_since(self.started),
        };
        let mut report = std::mem::take(&mut self.report);
        report.requests_sent = self.sent;
        report.cpu_s =
            crate::cpu::process_cpu_time(std::process::id()).map_or(0.0, |t| t.as_secs_f64());
        report.elapsed_s = elapsed.as_secs_f64();
        if report.elapsed_s > 0.0 {
            report.rps = report.requests as f64 / report.elapsed_s;
        }
        let latencies = &mut self.latencies_us;
        latencies.sort_unstable();
        report.p50_us = percentile(latencies, 0.50);
        report.p90_us = percentile(latencies, 0.90);
        report.p99_us = percentile(latencies, 0.99);
        report.max_us = latencies.last().copied().map(u64::from).unwrap_or(0);
        if !latencies.is_empty() {
            let sum: u64 = latencies.iter().map(|&l| u64::from(l)).sum();
            report.mean_us = sum as f64 / latencies.len() as f64;
        }
        report
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u32], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    /// A tiny keep-alive server: proves the loop sends the tokens in order and counts statuses.
    #[test]
    fn cycles_tokens_over_keep_alive_connections() {
        use std::io::BufRead;
        use std::sync::mpsc;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (seen_tx, seen_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen_tx.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                    let mut writer = stream;
                    let mut token = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        if let Some(t) = line.strip_prefix("authorization: Bearer ") {
                            token = t.trim().to_string();
                        }
                        if line == "\r\n" {
                            let status = if token == "bad" { 403 } else { 200 };
                            let _ = seen.send(token.clone());
                            let reply =
                                format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
                            if writer.write_all(reply.as_bytes()).is_err() {
                                return;
                            }
                        }
                        line.clear();
                    }
                });
            }
        });
        let options = LoadOptions {
            addr,
            connections: 3,
            path: "/x".into(),
            tokens: vec!["a".into(), "b".into(), "bad".into(), "c".into()],
            warmup: Duration::ZERO,
            stop: Stop::Requests(40),
            stall_timeout: Duration::from_secs(5),
            body: None,
        };
        let report = run(&options).expect("run");
        assert_eq!(report.requests, 40, "{report:?}");
        assert_eq!(report.requests_sent, 40);
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(report.statuses.get(&403), Some(&10));
        assert_eq!(report.non_2xx(), 10);
        let seen: Vec<String> = seen_rx.try_iter().collect();
        assert_eq!(seen.len(), 40);
        for token in ["a", "b", "bad", "c"] {
            assert_eq!(seen.iter().filter(|t| *t == token).count(), 10, "{token}");
        }
    }
}
