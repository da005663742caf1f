//! Requests whose LLM-shaped session reply waits for their body (`model`, `stream`), and how much
//! body each paused request has received: a reply can be due before or after the body is in.

use std::collections::HashMap;

use crate::core::replies::llm::{LlmReply, MAX_BODY_BYTES};

/// How the body is to be read once the reply can be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// Read this many bytes.
    Read(usize),
    /// Past the bound: build without it (from `Accept` and defaults).
    Skip,
}

#[derive(Default)]
pub struct BodyWait {
    /// Bytes received so far, and whether that is all of it.
    seen: HashMap<u32, (usize, bool)>,
    due: HashMap<u32, LlmReply>,
}

impl BodyWait {
    /// Records body progress for a paused request; returns the due reply if it can go now.
    pub fn progress(
        &mut self,
        id: u32,
        size: usize,
        complete: bool,
    ) -> Option<(LlmReply, BodyRead)> {
        self.seen.insert(id, (size, complete));
        self.ready(id)
    }

    /// The request's trailers came: the body received so far is all of it.
    pub fn finish(&mut self, id: u32) -> Option<(LlmReply, BodyRead)> {
        let size = self.seen.get(&id).map_or(0, |(size, _)| *size);
        self.progress(id, size, true)
    }

    /// A reply became due: it goes now if the body is in, else when it is.
    pub fn offer(&mut self, id: u32, reply: LlmReply) -> Option<(LlmReply, BodyRead)> {
        self.due.insert(id, reply);
        self.ready(id)
    }

    fn ready(&mut self, id: u32) -> Option<(LlmReply, BodyRead)> {
        let (size, complete) = *self.seen.get(&id)?;
        let read = if size > MAX_BODY_BYTES {
            BodyRead::Skip
        } else if complete {
            BodyRead::Read(size)
        } else {
            return None;
        };
        let reply = self.due.remove(&id)?;
        self.seen.remove(&id);
        Some((reply, read))
    }

    /// The due reply, withdrawn (it will be sent without the body).
    pub fn take(&mut self, id: u32) -> Option<LlmReply> {
        self.due.remove(&id)
    }

    pub fn is_waiting(&self, id: u32) -> bool {
        self.due.contains_key(&id)
    }

    pub fn forget(&mut self, id: u32) {
        self.seen.remove(&id);
        self.due.remove(&id);
    }
}
