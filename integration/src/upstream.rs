//! Echo upstream: answers every request `200` with JSON
//! `{"method": …, "path": …, "headers": {lowercase name: value}, "body": …}`, so tests can assert
//! on the headers authgate added or removed. Repeated headers are joined with `,`. A query
//! parameter `upstream_status=N` makes it answer with status N instead (an upstream that stopped
//! accepting a credential).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::http_server::{bind_and_serve, Handler, Incoming, Outgoing, Served};

pub struct Upstream {
    served: Served,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> Upstream {
        Upstream::start_on(0).unwrap_or_else(|e| panic!("echo upstream: {e}"))
    }

    /// Starts on 127.0.0.1:`port` (0 = any free port).
    pub fn start_on(port: u16) -> Result<Upstream, String> {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let handler: Handler = Arc::new(move |req: Incoming| {
            counter.fetch_add(1, Ordering::SeqCst);
            echo(req)
        });
        Ok(Upstream {
            served: bind_and_serve(port, handler)?,
            requests,
        })
    }

    pub fn port(&self) -> u16 {
        self.served.port()
    }

    /// How many requests reached the upstream so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn echo(req: Incoming) -> Outgoing {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers {
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let status = req
        .url
        .split_once('?')
        .and_then(|(_, query)| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("upstream_status="))
        })
        .and_then(|status| status.parse().ok())
        .unwrap_or(200);
    let body = json!({"method": req.method, "path": req.url, "headers": headers, "body": req.body});
    Outgoing::json(status, body.to_string())
}
