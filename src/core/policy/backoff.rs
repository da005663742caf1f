//! Failed-auth backoff per client: after `after_failures` consecutive failed credential checks
//! the client is refused (429) for `base_s`, then twice as long after each further failure, up
//! to `max_s`. A successful check resets the count.
//!
//! The counts live in Envoy shared data so every worker sees them, updated with compare-and-swap.
//! Shared data has no delete, so the table is a fixed number of slots: each client hashes to two
//! of them (two choices keep collisions rare), and a client that finds neither free takes over the
//! least valuable one (forgotten, then unblocked, then the block that ends soonest). A flood of
//! distinct addresses therefore costs a fixed footprint, never memory that grows.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::core::config_error::ConfigError;

pub mod raw {
    //! The failed_auth_backoff section exactly as written.
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FailedAuthBackoff {
        pub after_failures: Option<u32>,
        pub base_s: Option<u64>,
        pub max_s: Option<u64>,
        pub slots: Option<u32>,
    }
}

const DEFAULT_AFTER_FAILURES: u32 = 5;
const DEFAULT_BASE_S: u64 = 2;
const DEFAULT_MAX_S: u64 = 300;
/// 16,384 slots of 28 bytes: well under 1 MiB of shared data, and room for that many
/// misbehaving clients at once.
const DEFAULT_SLOTS: u32 = 16_384;
const MAX_SLOTS: u32 = 1 << 20;
/// Bounded retries: under heavy contention a lost update is better than a stalled request.
const CAS_ATTEMPTS: usize = 8;
const KEY_PREFIX: &str = "authgate.v1.backoff.";
/// Shared data holding the deployment's slot-hashing secret (written by the first VM to need it).
const SECRET_KEY: &str = "authgate.v1.backoff-secret";
/// The client key of every request whose address cannot be read: one bucket, never none.
pub const UNKNOWN_CLIENT: &str = "unknown";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub after_failures: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub slots: u32,
}

/// Shared data as the core sees it; the shell backs it with Envoy's shared data.
pub trait SharedStore {
    /// The value and its CAS token, or (None, None) when the key was never written.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes if `cas` still matches (None: unconditionally). False when another worker won.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Where a client's record may live, and the tag that tells it apart from others in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSlot {
    tag: u64,
    slots: [u32; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Refused for this many more seconds (at least 1).
    Blocked { retry_after_s: u64 },
    /// May try; `failures` is the current count.
    Clear { failures: u32 },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    tag: u64,
    failures: u32,
    blocked_until_ms: u64,
    last_failure_ms: u64,
}

const ENTRY_LEN: usize = 28;

impl Entry {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[..8].copy_from_slice(&self.tag.to_le_bytes());
        out[8..12].copy_from_slice(&self.failures.to_le_bytes());
        out[12..20].copy_from_slice(&self.blocked_until_ms.to_le_bytes());
        out[20..].copy_from_slice(&self.last_failure_ms.to_le_bytes());
        out
    }

    /// Anything that is not a record we wrote reads as an empty slot.
    fn decode(bytes: Option<&[u8]>) -> Entry {
        let Some(bytes) = bytes.filter(|b| b.len() == ENTRY_LEN) else {
            return Entry::default();
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let mut failures = [0u8; 4];
        failures.copy_from_slice(&bytes[8..12]);
        Entry {
            tag: u64_at(0),
            failures: u32::from_le_bytes(failures),
            blocked_until_ms: u64_at(12),
            last_failure_ms: u64_at(20),
        }
    }
}

struct Slot {
    key: String,
    entry: Entry,
    cas: Option<u32>,
}

impl Backoff {
    pub fn compile(raw: raw::FailedAuthBackoff) -> Result<Backoff, ConfigError> {
        let after_failures = raw.after_failures.unwrap_or(DEFAULT_AFTER_FAILURES);
        if after_failures == 0 {
            return Err(ConfigError::new(
                "failed_auth_backoff.after_failures",
                "must be at least 1",
            ));
        }
        let base_s = raw.base_s.unwrap_or(DEFAULT_BASE_S);
        if !(1..=86_400).contains(&base_s) {
            return Err(ConfigError::new(
                "failed_auth_backoff.base_s",
                "must be 1..=86400",
            ));
        }
        let max_s = raw.max_s.unwrap_or(DEFAULT_MAX_S.max(base_s));
        if max_s < base_s || max_s > 86_400 {
            return Err(ConfigError::new(
                "failed_auth_backoff.max_s",
                "must be at least base_s and at most 86400",
            ));
        }
        let slots = raw.slots.unwrap_or(DEFAULT_SLOTS);
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(ConfigError::new(
                "failed_auth_backoff.slots",
                format!("must be 1..={MAX_SLOTS}"),
            ));
        }
        Ok(Backoff {
            after_failures,
            base_ms: base_s * 1000,
            max_ms: max_s * 1000,
            slots,
        })
    }

    /// The client's slots, hashed under the deployment's secret: without it, nobody can pick
    /// addresses that land on a victim's slots.
    pub fn locate(&self, secret: &[u8], client: &str) -> ClientSlot {
        let digest = Sha256::new()
            .chain_update(secret)
            .chain_update([0])
            .chain_update(client.as_bytes())
            .finalize();
        let word = |at: usize| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&digest[at..at + 4]);
            u32::from_le_bytes(bytes)
        };
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&digest[8..16]);
        ClientSlot {
            // Tag 0 marks an empty slot.
            tag: u64::from_le_bytes(tag).max(1),
            slots: [word(0) % self.slots, word(4) % self.slots],
        }
    }

    pub fn standing(&self, store: &dyn SharedStore, client: ClientSlot, now_ms: u64) -> Standing {
        let Some(entry) = self.read(store, client).iter().find_map(|slot| {
            (slot.entry.tag == client.tag && self.remembered(&slot.entry, now_ms))
                .then_some(slot.entry)
        }) else {
            return Standing::Clear { failures: 0 };
        };
        if entry.blocked_until_ms > now_ms {
            let remaining_ms = entry.blocked_until_ms - now_ms;
            return Standing::Blocked {
                retry_after_s: remaining_ms.div_ceil(1000).max(1),
            };
        }
        Standing::Clear {
            failures: entry.failures,
        }
    }

    /// Counts a failed check. Returns the block it started, in seconds, if it started one.
    /// Not counted when both of the client's slots hold other clients' blocks.
    pub fn record_failure(
        &self,
        store: &mut dyn SharedStore,
        client: ClientSlot,
        now_ms: u64,
    ) -> Option<u64> {
        for _ in 0..CAS_ATTEMPTS {
            let slots = self.read(&*store, client);
            let slot = self.slot_for(&slots, client, now_ms)?;
            let previous = if slot.entry.tag == client.tag && self.remembered(&slot.entry, now_ms) {
                slot.entry
            } else {
                Entry::default()
            };
            let failures = previous.failures.saturating_add(1);
            let block_ms = self.block_ms(failures);
            let updated = Entry {
                tag: client.tag,
                failures,
                blocked_until_ms: block_ms.map_or(previous.blocked_until_ms, |ms| now_ms + ms),
                last_failure_ms: now_ms,
            };
            if store.set(&slot.key, &updated.encode(), slot.cas) {
                return block_ms.map(|ms| ms / 1000);
            }
        }
        None
    }

    /// None below the threshold; then base, doubling per further failure, capped at max.
    fn block_ms(&self, failures: u32) -> Option<u64> {
        let beyond = failures.checked_sub(self.after_failures)?;
        let factor = 1u64.checked_shl(beyond.min(40)).unwrap_or(u64::MAX);
        Some(self.base_ms.saturating_mul(factor).min(self.max_ms))
    }

    /// Failures are forgotten `max_s` after the last failure or the end of the last block.
    fn remembered(&self, entry: &Entry, now_ms: u64) -> bool {
        entry.tag != 0
            && now_ms
                < entry
                    .last_failure_ms
                    .max(entry.blocked_until_ms)
                    .saturating_add(self.max_ms)
    }

    fn read(&self, store: &dyn SharedStore, client: ClientSlot) -> Vec<Slot> {
        let mut indexes = vec![client.slots[0]];
        if client.slots[1] != client.slots[0] {
            indexes.push(client.slots[1]);
        }
        indexes
            .into_iter()
            .map(|index| {
                let key = format!("{KEY_PREFIX}{index}");
                let (value, cas) = store.get(&key);
                Slot {
                    entry: Entry::decode(value.as_deref()),
                    key,
                    cas,
                }
            })
            .collect()
    }

    /// The client's own slot, else the one whose record matters least. A block in force is
    /// never evicted: a flood of new addresses must not free a blocked client.
    fn slot_for<'a>(&self, slots: &'a [Slot], client: ClientSlot, now_ms: u64) -> Option<&'a Slot> {
        if let Some(own) = slots.iter().find(|s| s.entry.tag == client.tag) {
            return Some(own);
        }
        slots
            .iter()
            .filter(|slot| {
                slot.entry.blocked_until_ms <= now_ms || !self.remembered(&slot.entry, now_ms)
            })
            .min_by_key(|slot| {
                if self.remembered(&slot.entry, now_ms) {
                    (1, slot.entry.failures)
                } else {
                    (0, 0)
                }
            })
    }
}

/// The deployment's secret for slot hashing, shared by every VM: the stored one, else
/// `candidate` (fresh randomness from the shell), stored for the others.
pub fn deployment_secret(store: &mut dyn SharedStore, candidate: &[u8; 32]) -> Vec<u8> {
    match store.get(SECRET_KEY) {
        (Some(secret), _) if secret.len() == 32 => secret,
        _ => {
            // Two VMs racing here may each use their own candidate once; the later write is
            // what every request reads from then on.
            store.set(SECRET_KEY, candidate, None);
            candidate.to_vec()
        }
    }
}

/// Shared data kept in memory: for tests, and for running the core outside Envoy.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: HashMap<String, (Vec<u8>, u32)>,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.data.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let current = self.data.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        let next = current.unwrap_or(0).wrapping_add(1);
        self.data.insert(key.to_string(), (value.to_vec(), next));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(slots: u32) -> Backoff {
        Backoff {
            after_failures: 3,
            base_ms: 2_000,
            max_ms: 10_000,
            slots,
        }
    }

    #[test]
    fn blocks_after_the_threshold_doubling_to_the_cap() {
        let b = backoff(64);
        let mut store = MemoryStore::default();
        let client = b.locate(&[7; 32], "203.0.113.7");
        let mut now = 1_000_000;
        assert_eq!(b.record_failure(&mut store, client, now), None);
        assert_eq!(b.record_failure(&mut store, client, now), None);
        assert_eq!(
            b.standing(&store, client, now),
            Standing::Clear { failures: 2 }
        );
        let mut blocks = Vec::new();
        for _ in 0..5 {
            blocks.push(b.record_failure(&mut store, client, now));
            let Standing::Blocked { retry_after_s } = b.standing(&store, client, now) else {
                panic!("expected a block");
            };
            assert_eq!(Some(retry_after_s), *blocks.last().unwrap());
            now += retry_after_s * 1000;
            assert!(matches!(
                b.standing(&store, client, now),
                Standing::Clear { .. }
            ));
        }
        assert_eq!(blocks, [Some(2), Some(4), Some(8), Some(10), Some(10)]);
        // Nothing but time lowers the count: the next failure blocks again at once.
        assert_eq!(b.record_failure(&mut store, client, now), Some(10));
    }

    #[test]
    fn slots_depend_on_the_deployment_secret() {
        let b = backoff(1 << 20);
        let one = b.locate(&[1; 32], "203.0.113.7");
        assert_eq!(one, b.locate(&[1; 32], "203.0.113.7"));
        assert_ne!(one, b.locate(&[2; 32], "203.0.113.7"));
        let mut store = MemoryStore::default();
        let first = deployment_secret(&mut store, &[5; 32]);
        assert_eq!(first, vec![5; 32]);
        assert_eq!(
            deployment_secret(&mut store, &[6; 32]),
            first,
            "the stored one wins"
        );
    }

    #[test]
    fn failures_are_forgotten_after_max_s() {
        let b = backoff(64);
        let mut store = MemoryStore::default();
        let client = b.locate(&[7; 32], "198.51.100.1");
        b.record_failure(&mut store, client, 0);
        b.record_failure(&mut store, client, 0);
        b.record_failure(&mut store, client, 9_000);
        assert!(matches!(
            b.standing(&store, client, 9_000),
            Standing::Blocked { .. }
        ));
        // The block ends at 11 s; the record counts for max_s (10 s) after that.
        assert_eq!(
            b.standing(&store, client, 20_999),
            Standing::Clear { failures: 3 }
        );
        assert_eq!(
            b.standing(&store, client, 21_000),
            Standing::Clear { failures: 0 }
        );
        assert_eq!(b.record_failure(&mut store, client, 21_000), None);
    }

    #[test]
    fn a_flood_of_clients_keeps_the_footprint_and_spares_blocked_ones() {
        let b = backoff(8);
        let mut store = MemoryStore::default();
        let attacker = b.locate(&[7; 32], "192.0.2.66");
        for _ in 0..3 {
            b.record_failure(&mut store, attacker, 0);
        }
        for i in 0..10_000 {
            let other = b.locate(&[7; 32], &format!("10.0.{}.{}", i / 256, i % 256));
            b.record_failure(&mut store, other, 1);
        }
        assert!(store.len() <= 8);
        assert!(matches!(
            b.standing(&store, attacker, 1),
            Standing::Blocked { .. }
        ));
    }

    #[test]
    fn garbage_in_a_slot_reads_as_empty() {
        assert_eq!(Entry::decode(Some(b"nonsense")), Entry::default());
        let entry = Entry {
            tag: 7,
            failures: 2,
            blocked_until_ms: 3,
            last_failure_ms: 4,
        };
        assert_eq!(Entry::decode(Some(&entry.encode())), entry);
    }
}
