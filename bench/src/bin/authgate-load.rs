//! `authgate-load`: the benchmark's load generator (closed loop, keep-alive HTTP/1.1, one thread).
//! The harness runs it under `taskset -c 1`; it prints one JSON [`LoadReport`] on stdout.
//!
//! ```text
//! authgate-load --addr 127.0.0.1:PORT [--connections 32] [--path /bench] [--tokens FILE]
//!               [--warmup-ms 1000] (--duration-ms 5000 | --requests N) [--stall-ms 10000]
//!               [--body JSON]
//! ```
//! `--tokens`: one token per line, sent as `authorization: Bearer <token>` in order, cycling.
//! `--body`: every request is a POST with this JSON body (an MCP call, for the MCP variant).

use std::process::ExitCode;
use std::time::Duration;

use authgate_bench::load::{run, LoadOptions, Stop};

const USAGE: &str = "usage: authgate-load --addr HOST:PORT [--connections N] [--path P] \
[--tokens FILE] [--warmup-ms MS] (--duration-ms MS | --requests N) [--stall-ms MS] [--body JSON]";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()).and_then(|options| run(&options)) {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("authgate-load: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("authgate-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: Vec<String>) -> Result<LoadOptions, String> {
    let mut addr = None;
    let mut connections = 32;
    let mut path = "/bench".to_string();
    let mut tokens = Vec::new();
    let mut warmup_ms = 1000;
    let mut stop = None;
    let mut stall_ms = 10_000;
    let mut body = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value}: not a number\n{USAGE}"))
        };
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr {value}: {e}"))?),
            "--connections" => connections = number()?.max(1) as usize,
            "--path" => path = value,
            "--tokens" => {
                let text = std::fs::read_to_string(&value)
                    .map_err(|e| format!("--tokens {value}: {e}"))?;
                tokens = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "--warmup-ms" => warmup_ms = number()?,
            "--duration-ms" => stop = Some(Stop::After(Duration::from_millis(number()?))),
            "--requests" => stop = Some(Stop::Requests(number()?)),
            "--stall-ms" => stall_ms = number()?,
            "--body" => body = Some(value.into_bytes()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let stop = stop.ok_or_else(|| format!("--duration-ms or --requests is required\n{USAGE}"))?;
    Ok(LoadOptions {
        addr: addr.ok_or_else(|| format!("--addr is required\n{USAGE}"))?,
        connections,
        path,
        tokens,
        warmup: match stop {
            Stop::After(_) => Duration::from_millis(warmup_ms),
            Stop::Requests(_) => Duration::ZERO,
        },
        stop,
        stall_timeout: Duration::from_millis(stall_ms),
        body,
    })
}
