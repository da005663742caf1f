//! Credentials the upstream stopped accepting (`enterprise.cache.evict_on_upstream`), as every
//! worker learns of them: a short list in Envoy's shared data, each record a credential hash and
//! when it was refused. The worker that saw the refusal drops its decisions at once; the others
//! on their next tick (≤ 100 ms).

use crate::core::jwt::token_cache::TokenHash;

/// The shared-data key holding the list.
pub const SHARED_KEY: &str = "authgate.v1.evicted-credentials";

const RECORD_BYTES: usize = 32 + 8;
/// Records older than this are dropped when a new one is written: every worker has ticked
/// many times since.
const KEEP_MS: u64 = 10_000;
/// At most this many records: a flood of refusals cannot grow the shared value.
const MAX_RECORDS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    pub credential: TokenHash,
    pub at_ms: u64,
}

pub fn decode(bytes: &[u8]) -> Vec<Eviction> {
    bytes
        .chunks_exact(RECORD_BYTES)
        .map(|record| {
            let mut credential = [0u8; 32];
            credential.copy_from_slice(&record[..32]);
            let mut at = [0u8; 8];
            at.copy_from_slice(&record[32..]);
            Eviction {
                credential,
                at_ms: u64::from_le_bytes(at),
            }
        })
        .collect()
}

/// The list with `eviction` added, records older than `KEEP_MS` before it dropped, and at most
/// `MAX_RECORDS` kept (the newest).
pub fn append(existing: &[u8], eviction: Eviction) -> Vec<u8> {
    let mut records: Vec<Eviction> = decode(existing)
        .into_iter()
        .filter(|r| r.at_ms.saturating_add(KEEP_MS) >= eviction.at_ms)
        .collect();
    records.push(eviction);
    let skip = records.len().saturating_sub(MAX_RECORDS);
    let mut out = Vec::with_capacity((records.len() - skip) * RECORD_BYTES);
    for record in &records[skip..] {
        out.extend_from_slice(&record.credential);
        out.extend_from_slice(&record.at_ms.to_le_bytes());
    }
    out
}

/// What one worker has already applied: records up to `seen_ms`, and those exactly at it.
#[derive(Debug, Default)]
pub struct Applied {
    seen_ms: u64,
    at_seen: Vec<TokenHash>,
}

impl Applied {
    /// The records in `list` this worker has not applied yet; marks them applied.
    pub fn take_new(&mut self, list: &[Eviction]) -> Vec<TokenHash> {
        let fresh: Vec<Eviction> = list
            .iter()
            .filter(|r| {
                r.at_ms > self.seen_ms
                    || (r.at_ms == self.seen_ms && !self.at_seen.contains(&r.credential))
            })
            .copied()
            .collect();
        for record in &fresh {
            if record.at_ms > self.seen_ms {
                self.seen_ms = record.at_ms;
                self.at_seen.clear();
            }
            if record.at_ms == self.seen_ms {
                self.at_seen.push(record.credential);
            }
        }
        fresh.into_iter().map(|r| r.credential).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(credential: u8, at_ms: u64) -> Eviction {
        Eviction {
            credential: [credential; 32],
            at_ms,
        }
    }

    #[test]
    fn records_round_trip_old_ones_expire_and_the_list_is_bounded() {
        let list = append(&append(&[], at(1, 1_000)), at(2, 2_000));
        assert_eq!(decode(&list), vec![at(1, 1_000), at(2, 2_000)]);
        let later = append(&list, at(3, 11_500));
        assert_eq!(decode(&later), vec![at(2, 2_000), at(3, 11_500)]);
        let mut flood = Vec::new();
        for i in 0..1_000u64 {
            flood = append(&flood, at((i % 200) as u8, 50_000 + i));
        }
        assert_eq!(decode(&flood).len(), MAX_RECORDS);
        assert_eq!(decode(&flood).last(), Some(&at((999 % 200) as u8, 50_999)));
        assert!(decode(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn each_worker_applies_each_record_once() {
        let mut applied = Applied::default();
        let first = [at(1, 1_000), at(2, 1_000)];
        assert_eq!(applied.take_new(&first), vec![[1; 32], [2; 32]]);
        assert!(applied.take_new(&first).is_empty());
        let more = [at(1, 1_000), at(2, 1_000), at(3, 1_000), at(4, 1_500)];
        assert_eq!(applied.take_new(&more), vec![[3; 32], [4; 32]]);
        assert!(applied.take_new(&more).is_empty());
    }
}
