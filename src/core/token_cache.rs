//! Verified tokens per VM, keyed by the SHA-256 of the token: a token already seen is never
//! verified again (signature checks cost hundreds of microseconds in Wasm). Bounded, LRU.

use std::num::NonZeroUsize;
use std::rc::Rc;

use lru::LruCache;

use crate::core::identity::Identity;

/// Enough for every active user of a busy gateway; about 1 KiB each.
pub const DEFAULT_CAPACITY: usize = 10_000;

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
    entries: LruCache<TokenHash, CachedToken>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TokenCache {
            entries: LruCache::new(capacity),
        }
    }

    pub fn get(&mut self, hash: &TokenHash) -> Option<&CachedToken> {
        self.entries.get(hash)
    }

    pub fn insert(&mut self, hash: TokenHash, token: CachedToken) {
        self.entries.put(hash, token);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// After a key set changes, tokens signed by keys no longer published must be checked again.
    pub fn forget_unlisted_kids(&mut self, provider: usize, still_listed: impl Fn(&str) -> bool) {
        let stale: Vec<TokenHash> = self
            .entries
            .iter()
            .filter(|(_, t)| t.provider == provider && !t.kid.as_deref().is_some_and(&still_listed))
            .map(|(hash, _)| *hash)
            .collect();
        for hash in stale {
            self.entries.pop(&hash);
        }
    }
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
        let mut cache = TokenCache::new(2);
        cache.insert([1; 32], entry(0, None));
        cache.insert([2; 32], entry(0, None));
        assert!(cache.get(&[1; 32]).is_some());
        cache.insert([3; 32], entry(0, None));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&[2; 32]).is_none());
    }

    #[test]
    fn forgets_tokens_of_removed_keys_only_for_that_provider() {
        let mut cache = TokenCache::new(8);
        cache.insert([1; 32], entry(0, Some("old")));
        cache.insert([2; 32], entry(0, Some("new")));
        cache.insert([3; 32], entry(1, Some("old")));
        cache.forget_unlisted_kids(0, |kid| kid == "new");
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.get(&[2; 32]).is_some());
        assert!(cache.get(&[3; 32]).is_some());
    }
}
