//! Requests an MCP rule decides on their JSON-RPC body (`Step::ReadBody`): handed on to the
//! companion, which holds them, while their body is copied here (each chunk moves on to the
//! companion's hold); decided once it is all in, then released or answered. Bounded per request
//! (`mcp.max_body_bytes`) and per VM.

use std::collections::HashMap;

/// Body bytes one VM keeps for requests being read at once; beyond it a request is refused
/// (503 overloaded) rather than let memory grow with the number of clients.
const MAX_READ_BYTES_PER_VM: usize = 64 << 20;

pub struct Read {
    /// The request headers as they came (the decision is made again from them, with the body).
    pub header_block: Vec<u8>,
    /// The client's address, read while the request's context was current.
    pub source: Option<String>,
    /// The mark the companion holds the request under.
    pub nonce: String,
    /// Credential headers taken off the marked request, put back when it is released.
    pub credentials: Vec<(String, String)>,
    /// The client's `:path` and `:authority` (the marked request carries the held ones
    /// meanwhile).
    pub path: String,
    pub authority: String,
    pub body: Vec<u8>,
    pub complete: bool,
    /// Decided: the body waits no more (an authorization answer or keys may still be due).
    pub decided: bool,
    pub started_ms: u64,
}

/// What a body chunk came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Kept; more is to come.
    More,
    /// The body is complete: decide now.
    Complete,
    /// Past `mcp.max_body_bytes`.
    TooLarge,
    /// Past the VM's bound for bodies being read.
    Overloaded,
    /// The host would not show the chunk.
    Unreadable,
    /// Not a request being read (or already decided).
    Unknown,
}

#[derive(Default)]
pub struct BodyReads {
    reads: HashMap<u32, Read>,
    bytes: usize,
}

impl BodyReads {
    pub fn start(&mut self, context_id: u32, read: Read) {
        self.reads.insert(context_id, read);
    }

    pub fn len(&self) -> usize {
        self.reads.len()
    }

    pub fn contains(&self, context_id: u32) -> bool {
        self.reads.contains_key(&context_id)
    }

    /// Appends a chunk (`complete`: the stream ended with it).
    pub fn append(&mut self, context_id: u32, chunk: &[u8], complete: bool, max: usize) -> Chunk {
        let Some(read) = self.reads.get_mut(&context_id).filter(|r| !r.decided) else {
            return Chunk::Unknown;
        };
        if read.body.len().saturating_add(chunk.len()) > max {
            return Chunk::TooLarge;
        }
        if self.bytes.saturating_add(chunk.len()) > MAX_READ_BYTES_PER_VM {
            return Chunk::Overloaded;
        }
        read.body.extend_from_slice(chunk);
        self.bytes += chunk.len();
        read.complete |= complete;
        if read.complete {
            read.decided = true;
            Chunk::Complete
        } else {
            Chunk::More
        }
    }

    /// Requests whose body has not ended though they started before `started_before_ms`.
    pub fn unfinished_since(&self, started_before_ms: u64) -> Vec<u32> {
        self.reads
            .iter()
            .filter(|(_, read)| !read.decided && read.started_ms < started_before_ms)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn get(&self, context_id: u32) -> Option<&Read> {
        self.reads.get(&context_id)
    }

    pub fn remove(&mut self, context_id: u32) -> Option<Read> {
        let read = self.reads.remove(&context_id)?;
        self.bytes = self.bytes.saturating_sub(read.body.len());
        Some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read() -> Read {
        Read {
            header_block: Vec::new(),
            source: None,
            nonce: "n".into(),
            credentials: Vec::new(),
            path: "/mcp".into(),
            authority: "gw.test".into(),
            body: Vec::new(),
            complete: false,
            decided: false,
            started_ms: 0,
        }
    }

    #[test]
    fn chunks_add_up_to_a_bounded_body() {
        let mut reads = BodyReads::default();
        reads.start(1, read());
        assert_eq!(reads.append(1, b"{\"a\":", false, 10), Chunk::More);
        assert_eq!(reads.append(1, b"123456", false, 10), Chunk::TooLarge);
        assert_eq!(reads.append(1, b"1}", true, 10), Chunk::Complete);
        // Decided: later chunks (trailers' end) change nothing.
        assert_eq!(reads.append(1, b"", true, 10), Chunk::Unknown);
        assert_eq!(
            reads.get(1).map(|r| r.body.clone()),
            Some(b"{\"a\":1}".to_vec())
        );
        assert_eq!(reads.append(2, b"x", true, 10), Chunk::Unknown);
        assert_eq!(reads.unfinished_since(1), Vec::<u32>::new());
        reads.start(3, read());
        assert_eq!(reads.unfinished_since(1), vec![3]);
        assert!(reads.remove(1).is_some() && reads.remove(3).is_some() && reads.bytes == 0);
    }
}
