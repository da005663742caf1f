//! Verified tokens per VM, keyed by the token itself: a token already seen is never verified
//! again (signature checks cost hundreds of microseconds in Wasm) and not even hashed with
//! SHA-256 (≈ 3 µs per request in Wasm for a 700-byte token, most of what the cached path would
//! cost). Entries are keyed by a seeded non-cryptographic 64-bit hash of the token and hold the
//! token, which a lookup compares in full: two tokens with the same hash only displace each
//! other (a cache miss, never a wrong identity), and only verified tokens get in, so nobody can
//! fill the cache at will. Bounded in entries and in bytes; least recently used goes first.

use std::num::NonZeroUsize;
use std::rc::Rc;

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use lru::LruCache;

use crate::core::identity::Identity;

/// Enough for every active user of a busy gateway.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// The tokens themselves may not hold more than this (a flood of large tokens stays bounded).
pub const MAX_TOKEN_BYTES_CACHED: usize = 16 << 20;

pub type TokenHash = [u8; 32];

/// A verified token and what it grants, computed once when it was verified.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub provider: usize,
    /// Seconds since the epoch after which the token counts as expired (`exp` + leeway).
    pub expires_after: Option<i64>,
    pub kid: Option<String>,
    pub identity: Rc<Identity>,
}

pub struct TokenCache {
    entries: LruCache<u64, (Box<str>, CachedToken), FixedState>,
    hasher: FixedState,
    bytes: usize,
    max_bytes: usize,
    evictions: u64,
}

impl TokenCache {
    /// `seed` keys the bucket hash; the shell passes a random one.
    pub fn new(capacity: usize, seed: u64) -> Self {
        TokenCache::with_limits(capacity, MAX_TOKEN_BYTES_CACHED, seed)
    }

    pub fn with_limits(capacity: usize, max_bytes: usize, seed: u64) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TokenCache {
            entries: LruCache::with_hasher(capacity, FixedState::with_seed(seed)),
            hasher: FixedState::with_seed(seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15),
            bytes: 0,
            max_bytes,
            evictions: 0,
        }
    }

    fn key(&self, token: &str) -> u64 {
        self.hasher.hash_one(token)
    }

    pub fn get(&mut self, token: &str) -> Option<&CachedToken> {
        let key = self.key(token);
        match self.entries.get(&key) {
            Some((cached, entry)) if same_bytes(cached.as_bytes(), token.as_bytes()) => Some(entry),
            _ => None,
        }
    }

    pub fn insert(&mut self, token: &str, entry: CachedToken) {
        self.bytes += token.len();
        let key = self.key(token);
        if let Some((pushed_out, (old, _))) = self.entries.push(key, (token.into(), entry)) {
            self.bytes -= old.len();
            if pushed_out != key {
                self.evictions += 1;
            }
        }
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, (old, _))) => {
                    self.bytes -= old.len();
                    self.evictions += 1;
                }
                None => break,
            }
        }
    }

    /// Entries pushed out to make room, since the cache was made (for stats).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// After a key set changes, tokens signed by keys no longer published must be checked again.
    pub fn forget_unlisted_kids(&mut self, provider: usize, still_listed: impl Fn(&str) -> bool) {
        let stale: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, (_, t))| {
                t.provider == provider && !t.kid.as_deref().is_some_and(&still_listed)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some((token, _)) = self.entries.pop(&key) {
                self.bytes -= token.len();
            }
        }
    }
}

/// `a == b`, eight bytes at a time. Hand-written because slice equality in Wasm calls
/// compiler-builtins' `memcmp`, which compares one byte at a time: for a 700-byte token that was
/// a fifth of a cached decision in V8.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = a_words.remainder() == b_words.remainder();
    tails_equal
        && a_words.zip(b_words).all(|(x, y)| {
            let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().unwrap_or([0; 8]));
            word(x) == word(y)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(provider: usize, kid: Option<&str>) -> CachedToken {
        CachedToken {
            provider,
            expires_after: None,
            kid: kid.map(str::to_string),
            identity: Rc::default(),
        }
    }

    #[test]
    fn bounded_and_evicts_least_recent() {
        let mut cache = TokenCache::new(2, 7);
        cache.insert("a.b.c", entry(0, None));
        cache.insert("d.e.f", entry(0, None));
        assert!(cache.get("a.b.c").is_some());
        cache.insert("g.h.i", entry(0, None));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("d.e.f").is_none());
        // A prefix or an extension of a cached token is another token.
        assert!(cache.get("a.b.").is_none());
        assert!(cache.get("a.b.cc").is_none());
    }

    #[test]
    fn a_hash_collision_is_a_miss_not_the_other_tokens_identity() {
        let mut cache = TokenCache::new(8, 3);
        let key = cache.key("a.b.c");
        cache.entries.push(key, ("x.y.z".into(), entry(0, None)));
        assert!(cache.get("a.b.c").is_none());
        cache.insert("a.b.c", entry(1, None));
        assert_eq!(cache.get("a.b.c").map(|e| e.provider), Some(1));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn same_bytes_is_equality() {
        let long = "x".repeat(700);
        for (a, b) in [
            ("", ""),
            ("abc", "abc"),
            ("abcdefgh", "abcdefgh"),
            (long.as_str(), long.as_str()),
        ] {
            assert!(same_bytes(a.as_bytes(), b.as_bytes()), "{a:?}");
        }
        let mut changed = long.clone().into_bytes();
        for at in [0, 7, 8, 350, 695, 699] {
            changed[at] = b'y';
            assert!(!same_bytes(long.as_bytes(), &changed), "differs at {at}");
            changed[at] = b'x';
        }
        assert!(!same_bytes(b"abcdefgh", b"abcdefg"));
        assert!(!same_bytes(b"abcdefghi", b"abcdefghj"));
    }

    #[test]
    fn bounded_in_bytes_too() {
        let mut cache = TokenCache::with_limits(100, 10, 0);
        cache.insert("aaaa", entry(0, None));
        cache.insert("bbbb", entry(0, None));
        cache.insert("cccc", entry(0, None));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("aaaa").is_none());
        cache.insert("cccc", entry(1, None));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn forgets_tokens_of_removed_keys_only_for_that_provider() {
        let mut cache = TokenCache::new(8, 0);
        cache.insert("t1", entry(0, Some("old")));
        cache.insert("t2", entry(0, Some("new")));
        cache.insert("t3", entry(1, Some("old")));
        cache.forget_unlisted_kids(0, |kid| kid == "new");
        assert!(cache.get("t1").is_none());
        assert!(cache.get("t2").is_some());
        assert!(cache.get("t3").is_some());
    }
}
