//! Requests whose LLM-shaped session reply waits for their body (`model`, `stream`): how much
//! body each has buffered, its scan so far, and the reply once it is due. The body is scanned as
//! it arrives and each scanned chunk dropped (the request is answered here, never forwarded), so
//! a body of any size is read in bounded memory and Envoy's buffer limit is never reached.

use std::collections::HashMap;

use crate::core::replies::body_scan::{BodyFacts, BodyScan};
use crate::core::replies::llm::LlmReply;

#[derive(Default)]
struct Body {
    /// Bytes in the host's buffer not scanned yet.
    buffered: usize,
    /// The stream ended (end of stream, or trailers).
    complete: bool,
    scan: BodyScan,
    due: Option<LlmReply>,
}

#[derive(Default)]
pub struct BodyWait {
    bodies: HashMap<u32, Body>,
}

/// What the shell does with a request's buffered body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    /// Nothing: no reply is due yet (the body may still go upstream), or nothing is buffered.
    Keep,
    /// Read these bytes for the scan, then drop them from the buffer.
    ScanAndDrop(usize),
    /// Drop these bytes unread: the scan already has its answer.
    Drop(usize),
}

impl BodyWait {
    /// A body callback: the host buffers `size` bytes for the request now; `complete` when the
    /// stream ended with them.
    pub fn arrived(&mut self, id: u32, size: usize, complete: bool) {
        let body = self.bodies.entry(id).or_default();
        body.buffered = size;
        body.complete |= complete;
    }

    /// The request's trailers came: the body so far is all of it.
    pub fn finished(&mut self, id: u32) {
        self.bodies.entry(id).or_default().complete = true;
    }

    /// A reply became due: it waits for the body's end.
    pub fn offer(&mut self, id: u32, reply: LlmReply) {
        self.bodies.entry(id).or_default().due = Some(reply);
    }

    /// What to do with the buffered bytes: only a request whose reply is due gives up its body.
    pub fn consume(&self, id: u32) -> Consume {
        match self.bodies.get(&id) {
            Some(body) if body.due.is_some() && body.buffered > 0 => {
                if body.scan.wants_more() {
                    Consume::ScanAndDrop(body.buffered)
                } else {
                    Consume::Drop(body.buffered)
                }
            }
            _ => Consume::Keep,
        }
    }

    /// The buffered bytes were scanned (`bytes`, when read) and dropped from the host's buffer.
    pub fn consumed(&mut self, id: u32, bytes: Option<&[u8]>) {
        if let Some(body) = self.bodies.get_mut(&id) {
            if let Some(bytes) = bytes {
                body.scan.feed(bytes);
            }
            body.buffered = 0;
        }
    }

    /// The due reply and what the body said, once the body has ended.
    pub fn take_ready(&mut self, id: u32) -> Option<(LlmReply, BodyFacts)> {
        let body = self.bodies.get(&id)?;
        if !body.complete || body.due.is_none() || body.buffered > 0 {
            return None;
        }
        let mut body = self.bodies.remove(&id)?;
        let facts = body.scan.finish();
        body.due.take().map(|reply| (reply, facts))
    }

    /// The due reply, withdrawn (it will be sent without the body).
    pub fn take(&mut self, id: u32) -> Option<LlmReply> {
        self.bodies.remove(&id).and_then(|body| body.due)
    }

    pub fn is_waiting(&self, id: u32) -> bool {
        self.bodies.get(&id).is_some_and(|body| body.due.is_some())
    }

    pub fn forget(&mut self, id: u32) {
        self.bodies.remove(&id);
    }
}
